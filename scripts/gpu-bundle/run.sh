#!/usr/bin/env bash
# Runs burn-qnn's GPU benchmarks from this folder, on a machine without Rust or network, and
# writes the results (results.json, results.md, the logs and criterion's estimates) into RESULTS.
#
# Usage: run.sh RESULTS [--quick]
#   --quick: small shapes, width 0.25 and short measurements: what a software rasterizer (Mesa's
#            lavapipe) runs in a few minutes, to check the bundle without a GPU.
#
# Parts, each with a time limit so that the whole run stays within 8 minutes:
#   wgpu (Vulkan)  the `gpu` bench on burn::backend::Wgpu: the Vulkan loader of the system, or
#                  the one in lib/ where the system has none;
#   cuda           the same bench on burn::backend::Cuda, where the bundle was built with CUDA
#                  and the machine has an NVIDIA driver;
#   pytorch        pytorch_peer.py, where python3 imports torch;
#   summary        summarize.py: results.json and results.md.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ] || [ $# -gt 2 ] || { [ $# -eq 2 ] && [ "$2" != "--quick" ]; }; then
    echo "usage: $0 RESULTS [--quick]" >&2
    exit 2
fi
mkdir -p "$1" || exit 1
results=$(cd "$1" && pwd)
quick=${2:-}
started=$(date +%s)
log() { echo "== $* ($(($(date +%s) - started)) s)" | tee -a "$results/run.log"; }

if [ -n "$quick" ]; then
    export BURN_QNN_BENCH_SHAPES=small BURN_QNN_BENCH_SECONDS=${BURN_QNN_BENCH_SECONDS:-0.5}
    bench_limit=900 peer_args=(--quick)
else
    export BURN_QNN_BENCH_SECONDS=${BURN_QNN_BENCH_SECONDS:-2}
    bench_limit=190 peer_args=()
fi
: >"$results/run.log"
log "bundle $(cat "$here/VERSION" 2>/dev/null), results in $results${quick:+ (quick)}"

{
    echo "host: $(uname -srm)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) threads"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader |
            sed 's/^/gpu: /'
    else
        echo "gpu: nvidia-smi not found"
    fi
} >"$results/machine.txt" 2>&1
cat "$results/machine.txt" | tee -a "$results/run.log"

# The Vulkan loader: the system's, else the bundled one.
if ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 '; then
    log "Vulkan loader: the system's"
else
    export LD_LIBRARY_PATH="$here/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    log "Vulkan loader: bundled (lib/), the system has none"
fi
# NVIDIA's Vulkan driver manifest: containers often have the driver library without it.
manifests="/etc/vulkan/icd.d /usr/share/vulkan/icd.d /usr/local/share/vulkan/icd.d"
if ! grep -qsl nvidia $(for d in $manifests; do echo "$d"/*.json; done) 2>/dev/null &&
    ldconfig -p 2>/dev/null | grep -q 'libGLX_nvidia\.so\.0 '; then
    cat >"$results/nvidia_icd.json" <<'JSON'
{ "file_format_version": "1.0.0", "ICD": { "library_path": "libGLX_nvidia.so.0", "api_version": "1.3" } }
JSON
    export VK_DRIVER_FILES="$results/nvidia_icd.json" VK_ICD_FILENAMES="$results/nvidia_icd.json"
    log "Vulkan driver manifest: written for libGLX_nvidia.so.0 (the system has none)"
fi

# Runs the bench on one runtime within its time limit; partial results stay.
run_bench() {
    local runtime=$1
    log "$runtime: the gpu bench (limit ${bench_limit} s, log $runtime.log)"
    BURN_QNN_GPU_RUNTIME=$runtime CRITERION_HOME="$results/criterion" \
        timeout --kill-after=10 "$bench_limit" "$here/bin/gpu-bench" --bench --noplot \
        >"$results/$runtime.log" 2>&1
    local status=$?
    grep -m1 -E '^(adapter|runtime):' "$results/$runtime.log" | tee -a "$results/run.log"
    case $status in
    0) log "$runtime: done" ;;
    124 | 137) log "$runtime: stopped at its time limit, exit $status (later benchmarks missing)" ;;
    *) log "$runtime: failed, exit $status; its log ends:" && tail -5 "$results/$runtime.log" | tee -a "$results/run.log" ;;
    esac
}

run_bench wgpu
if ! grep -qx cuda "$here/FEATURES" 2>/dev/null; then
    log "cuda: skipped (the bundle was built without CUDA)"
elif ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; then
    log "cuda: skipped (no NVIDIA driver: libcuda not found)"
else
    run_bench cuda
fi

if command -v python3 >/dev/null && python3 -c 'import torch' 2>/dev/null; then
    log "pytorch: the float simulation peer (limit 100 s, log pytorch.log)"
    timeout --kill-after=10 100 python3 "$here/pytorch_peer.py" --out "$results/pytorch.json" \
        "${peer_args[@]}" >"$results/pytorch.log" 2>&1
    status=$?
    [ $status -eq 0 ] && log "pytorch: done" || log "pytorch: failed, exit $status (see pytorch.log)"
else
    log "pytorch: skipped (python3 cannot import torch)"
fi

if command -v python3 >/dev/null; then
    python3 "$here/summarize.py" "$results" 2>&1 | tee -a "$results/run.log"
else
    log "summary: skipped (no python3); criterion's estimates are under criterion/"
fi
log "finished"
