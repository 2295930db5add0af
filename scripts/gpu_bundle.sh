#!/usr/bin/env bash
# Builds what the GPU machine needs (it has CUDA but no Rust toolchain) into .bin/: the
# release binary and the CUDA parity test binary, kernels compiled by the pinned nvcc.
# Then run scripts/gpu_run.sh there, e.g. with the device tool:
#   run(command="bash scripts/gpu_run.sh", carry=[".bin"])
set -euo pipefail
cd "$(dirname "$0")/.."
: "${NVCC:?set NVCC to the pinned nvcc 13.0 (see .ci/run)}"
export NVCC
cargo build --release
test_bin=$(cargo test --release --test cuda_parity --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda_parity":
        print(m["executable"])')
mkdir -p .bin
cp target/release/hypergrad .bin/hypergrad
cp "$test_bin" .bin/cuda_parity
grep -qx '/.bin/' .git/info/exclude 2>/dev/null || echo '/.bin/' >> .git/info/exclude
ls -la .bin
