#!/usr/bin/env bash
# Builds and runs the wgpu XNOR bench on the machine's GPU through Vulkan, in a few minutes.
# Usage: scripts/gpu-bench.sh [extra criterion args]. Results: target/criterion and stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== adapter"
(vulkaninfo --summary 2>/dev/null || true) | grep -E "deviceName|driverName" || true
echo "== build"
cargo bench --features wgpu --bench wgpu_xnor_matmul --no-run
echo "== bench"
cargo bench --features wgpu --bench wgpu_xnor_matmul -- "$@"
