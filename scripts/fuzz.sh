#!/usr/bin/env bash
# A long run of the fuzz harness (tests/fuzz.rs) in release, under a memory limit.
#
#   scripts/fuzz.sh [INPUTS_PER_PARSER] [MEMORY_LIMIT_KIB] [SEED]
#
# Defaults: 1000000 inputs a parser, 4 GiB of address space (`ulimit -v`), seed 24301.
# Prints, for each parser, the inputs tried, how many were accepted, the largest allocation
# and the failures; failing inputs are written to target/fuzz-failures/. Exits non-zero if any
# parser panicked, allocated past its bound or rejected a valid input.
set -euo pipefail
cd "$(dirname "$0")/.."
inputs=${1:-1000000}
limit_kib=${2:-4194304}
seed=${3:-24301}

# Build first, outside the limit (the compiler needs more).
binary=$(cargo test --release --test fuzz --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [ -z "$binary" ]; then
    echo "fuzz.sh: could not build the fuzz harness; run cargo test --release --test fuzz --no-run" >&2
    exit 1
fi
echo "fuzz.sh: $inputs inputs a parser, seed $seed, address space limited to $limit_kib KiB"
started=$(date +%s)
(
    ulimit -v "$limit_kib"
    BURN_QNN_FUZZ_INPUTS=$inputs BURN_QNN_FUZZ_SEED=$seed \
        "$binary" --nocapture --test-threads 1
)
echo "fuzz.sh: done in $(( $(date +%s) - started )) s"
