#!/usr/bin/env bash
# Builds, on this machine, a folder that benchmarks burn-qnn on a GPU machine without Rust or
# network: the `gpu` bench compiled and stripped (Vulkan through wgpu, and CUDA), the Vulkan
# loader (Debian's libvulkan1) for machines without one, the PyTorch peer, and run.sh.
#
# Usage: scripts/gpu-bundle.sh DIR        then, on the GPU machine: DIR/run.sh RESULTS
#   BURN_QNN_BUNDLE_CUDA=0 leaves CUDA out (a smaller, faster build).
# Needs: cargo, apt-get (root, Debian's package registry), strip.
set -euo pipefail
if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
dir=$(cd "$1" && pwd)
features=wgpu,train
[ "${BURN_QNN_BUNDLE_CUDA:-1}" = 0 ] || features=$features,cuda

echo "== build the gpu bench (features $features)"
cd "$root"
executable=$(cargo bench --features "$features" --bench gpu --no-run --message-format=json |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
if [ -z "$executable" ]; then
    echo "error: cargo did not report the bench's executable" >&2
    exit 1
fi

echo "== assemble $dir"
rm -rf "$dir/bin" "$dir/lib"
mkdir -p "$dir/bin" "$dir/lib"
strip -o "$dir/bin/gpu-bench" "$executable"
cp scripts/gpu-bundle/run.sh scripts/gpu-bundle/summarize.py scripts/gpu-bundle/pytorch_peer.py \
    scripts/gpu-bundle/README.md "$dir/"
tr ',' '\n' <<<"$features" >"$dir/FEATURES"
echo "burn-qnn $(git describe --always --dirty 2>/dev/null || echo unknown), built $(date -u +%F)" \
    >"$dir/VERSION"

echo "== Debian's Vulkan loader (libvulkan1)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download libvulkan1 >/dev/null 2>&1); then
    apt-get update -qq
    (cd "$work" && apt-get download libvulkan1 >/dev/null)
fi
dpkg-deb -x "$work"/libvulkan1_*.deb "$work/root"
cp -P "$work"/root/usr/lib/*/libvulkan.so.1* "$dir/lib/"
cp "$work/root/usr/share/doc/libvulkan1/copyright" "$dir/lib/COPYRIGHT-libvulkan1"

size=$(du -sm "$dir" | cut -f1)
echo "== $dir: ${size} MiB"
if [ "$size" -ge 64 ]; then
    echo "error: the bundle takes ${size} MiB, over 64 MiB" >&2
    exit 1
fi
echo "run it there: $dir/run.sh RESULTS   (--quick: small shapes, for software Vulkan)"
