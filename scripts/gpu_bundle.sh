#!/usr/bin/env bash
# Builds what the GPU machine needs (it has CUDA but no Rust toolchain) into .bin/ (git-ignored):
# the release binary and the CUDA test binaries (one per op family: parity_core, parity_glm,
# parity_fisher, parity_estimators, mlp_cuda_parity, l1_device),
# kernels compiled to PTX by the pinned nvcc, stripped; and the main job's CPU f64 result on
# this machine, which
# scripts/gpu_check.sh shows next to the GPU's. Then, with the device tool:
#   run(command="bash scripts/gpu_check.sh", carry=[".bin"])
# Fails if .bin/ exceeds 48 MiB: the device tool carries at most 64 MiB with the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${NVCC:?set NVCC to the pinned nvcc 13.0 (see .ci/run)}"
export NVCC
limit_mib=48

suites="parity_core parity_glm parity_fisher parity_estimators mlp_cuda_parity l1_device"

cargo build --release
# The test binaries' paths, from cargo's JSON messages.
test_bins=$(cargo test --release $(printf -- '--test %s ' $suites) --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json, sys
names = set(sys.argv[1:])
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in names:
        print(m["target"]["name"], m["executable"])' $suites)
grep -q '^hypergrad nvcc' <(target/release/hypergrad info --json | python3 -c 'import json, sys
print("hypergrad", json.load(sys.stdin)["kernels"]["compiler"])') ||
    { echo "gpu_bundle: the kernels were not compiled by nvcc (is NVCC right?)" >&2; exit 1; }

rm -rf .bin
mkdir -p .bin
strip -o .bin/hypergrad target/release/hypergrad
while read -r name path; do
    strip -o ".bin/$name" "$path"
done <<< "$test_bins"
for name in $suites; do
    [[ -x .bin/$name ]] || { echo "gpu_bundle: test binary $name was not built" >&2; exit 1; }
done

# The main job on this machine's CPU in f64, carried so the GPU run is shown next to it.
.bin/hypergrad run --device cpu --json > .bin/main_job_cpu_build_host.json

grep -qx '/.bin/' .git/info/exclude 2>/dev/null || echo '/.bin/' >> .git/info/exclude
ls -la .bin
size_kib=$(du -sk .bin | cut -f1)
if ((size_kib > limit_mib * 1024)); then
    echo "gpu_bundle: .bin is $((size_kib / 1024)) MiB, over the ${limit_mib} MiB that may travel to the GPU machine" >&2
    exit 1
fi
echo "gpu_bundle: .bin is $((size_kib / 1024)) MiB (limit ${limit_mib} MiB)"
