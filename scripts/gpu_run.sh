#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the CUDA parity suite, the same under compute-sanitizer
# (memcheck, racecheck), and the kernel benchmark. Results go to $OUT (or ./gpu-results).
# Expects .bin/ from scripts/gpu_bundle.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-results}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
.bin/hypergrad info | tee "$out/info.txt"
.bin/cuda_parity --test-threads=1 2>&1 | tee "$out/parity.log"
sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$sanitizer" ]; then
    for tool in memcheck racecheck; do
        # The kernel-level tests only (the estimator tests repeat the same kernels many times).
        "$sanitizer" --tool "$tool" --error-exitcode 9 .bin/cuda_parity --test-threads=1 \
            --skip estimators > "$out/sanitizer-$tool.log" 2>&1
        echo "compute-sanitizer $tool: exit $?" | tee -a "$out/sanitizer.txt"
        tail -5 "$out/sanitizer-$tool.log"
    done
else
    echo "compute-sanitizer not found" | tee "$out/sanitizer.txt"
fi
.bin/hypergrad bench kernels | tee "$out/bench.txt"
.bin/hypergrad bench kernels --json > "$out/bench.json"
# NHGD (issue 4): the main job on the GPU, the outer step per curvature representation against
# the plain SGD loop and the GEMM rate, and the PyTorch peer on data of the same shape.
.bin/hypergrad run --device cuda --json > "$out/main_job.json" 2> "$out/main_job.err"
echo "main job: exit $?" | tee -a "$out/nhgd.txt"
.bin/hypergrad bench nhgd --device cuda --dense | tee -a "$out/nhgd.txt"
.bin/hypergrad bench nhgd --device cuda --dense --json > "$out/nhgd.json"
for curvature in none kfac lowrank dense dense-accumulate; do
    python3 benches/peers/nhgd_torch.py --device cuda --n 50000 --d 785 --c 10 --m 10000 \
        --T 100 --b 64 --rank 64 --curvature "$curvature" --repeats 5 \
        --out "$out/torch_$curvature.json" | tee -a "$out/nhgd.txt"
done
