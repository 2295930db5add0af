#!/usr/bin/env bash
# Checks scripts/gpu_check.sh's shell logic on a machine without a GPU, so that no GPU minute is
# spent on a typo: fake binaries (hypergrad, the parity suites parity_core, parity_glm,
# parity_fisher, parity_estimators, l1_device and mlp_cuda_parity, nvidia-smi,
# compute-sanitizer, ncu, and a python that stands in for PyTorch's) answer like the real ones,
# and each run makes one of them fail or hang. Every run must end with the summary table, name
# the failing stage, and keep the earlier stages' logs.
# Run: bash tests/gpu_check_script.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fake="$work/fake"
mkdir -p "$fake/bin" "$fake/path"

# A fake binary misbehaves when HG_FAKE_FAIL names it: "NAME" exits 3, "NAME:hang" sleeps.
misbehave='
case "${HG_FAKE_FAIL:-}" in
    "$me") echo "$me: planted failure" >&2; exit 3 ;;
    "$me:hang") sleep 60 ;;
esac'

cat > "$fake/bin/hypergrad" <<EOF
#!/usr/bin/env bash
me="hypergrad-\$1"
$misbehave
case "\$1 \${2:-}" in
    "info ") printf 'hypergrad 0.1.0\nkernels    PTX for compute_90 compiled by nvcc at build time (fake)\ncuda       ready (kernels loaded)\n' ;;
    "info --json") echo '{"kernels":{"compiler":"nvcc"}}' ;;
    "run "*) echo '{"device":"fake-'"\${3:-}"'","final":{"seconds":1.5,"test_accuracy":0.8,"outer_loss":0.6},"retrain_test_accuracy":0.7,"cleaning":{"with_cleaning":0.827}}' ;;
    "grad --device")
        # Stage 10: the dense network does not fit the device; cg in f32 is refined.
        if [[ "\$*" == *mlp:4000* ]]; then
            echo "error: out of memory: the run needs about 10.1 TB of device memory (fake) and 79.0 GB is available: lower it with --curvature kfac (or lowrank)" >&2
            exit 1
        fi
        echo '{"device":"fake","hypergradient":[1.0],"residual_norm":1e-6,"refinements":1,"solve_accurate":true}' ;;
    "grad "*) echo '{"device":"fake","hypergradient":[1.0,2.0],"outer_loss":0.5}' ;;
    "bench kernels") echo '{"device":"fake","kernels":[{"kernel":"copy","shape":"n","seconds":1,"gb_per_s":100.0,"tflop_per_s":null,"ceiling":"device copy","fraction_of_ceiling":1.0},{"kernel":"hvp","shape":"n","seconds":1,"gb_per_s":70.0,"tflop_per_s":null,"ceiling":"device copy","fraction_of_ceiling":0.7}]}' ;;
    "bench nhgd") echo '{"device":"fake","cases":[{"case":"sgd loop only","outer_step_seconds":0.01,"ratio_to_sgd_loop":1.0},{"case":"nhgd kfac","outer_step_seconds":0.012,"ratio_to_sgd_loop":1.2}]}' ;;
    *) echo "fake hypergrad: unexpected arguments \$*" >&2; exit 2 ;;
esac
EOF

parity_suites="parity_core parity_glm parity_fisher parity_estimators l1_device"
for suite in $parity_suites mlp_cuda_parity; do
    cat > "$fake/bin/$suite" <<EOF
#!/usr/bin/env bash
if [ "\$1" = --list ]; then printf 'a: test\\nb::c: test\\ncpu_f32_stand_in::d: test\\n'; exit 0; fi
me=$suite
$misbehave
echo "running 1 test"
echo "test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.10s"
EOF
done

cat > "$fake/path/nvidia-smi" <<EOF
#!/usr/bin/env bash
me=nvidia-smi
$misbehave
echo "NVIDIA H100 80GB HBM3, 580.159.04"
EOF

cat > "$fake/path/compute-sanitizer" <<EOF
#!/usr/bin/env bash
me=compute-sanitizer
$misbehave
tool=memcheck
while [ \$# -gt 0 ]; do
    case \$1 in
        --tool) tool=\$2; shift 2 ;;
        --*) shift 2 ;;
        *) break ;;
    esac
done
"\$@" > /dev/null
rc=\$?
if [ "\$tool" = racecheck ]; then echo "========= RACECHECK SUMMARY: 0 hazards displayed (0 errors, 0 warnings)"
else echo "========= ERROR SUMMARY: 0 errors"; fi
exit \$rc
EOF

cat > "$fake/path/ncu" <<EOF
#!/usr/bin/env bash
me=ncu
$misbehave
echo "  glm_rows_f32_k1 (264, 1, 1)x(256, 1, 1), Context 1, Stream 13, Device 0, CC 9.0"
echo "    DRAM Throughput                   %        31.05"
echo "    Compute (SM) Throughput           %        45.22"
echo "    Achieved Occupancy                %        22.49"
EOF

# The PyTorch peers: fake benches/peers/nhgd_torch.py and nhgd_mlp_torch.py are not needed,
# python is faked instead for those calls only (the summaries run the real python3).
cat > "$fake/path/python-peer" <<EOF
#!/usr/bin/env bash
if [ "\${1:-}" = - ]; then exec python3 "\$@"; fi
me=torch
$misbehave
case "\${1:-}" in
    *nhgd_mlp_torch.py) echo '{"device":"cuda","cases":{"none":{"outer_step_seconds":0.04,"graph_outer_step_seconds":0.004},"kfac":{"outer_step_seconds":0.05,"graph_outer_step_seconds":0.006}}}' ;;
    *) for c in none kfac; do echo '{"curvature":"'\$c'","outer_step_seconds_median":0.05,"graph_outer_step_seconds_median":0.003}'; done ;;
esac
EOF
chmod +x "$fake/bin/"* "$fake/path/"*

failures=0
# check NAME STAGES STATUS [env VAR=VALUE...]: runs the script, and every stage named in the
# comma-separated STAGES must report STATUS.
check() {
    local name=$1 want_stages=$2 want_status=$3
    shift 3
    local out="$work/out-$name"
    mkdir -p "$out"
    local log="$work/log-$name"
    env PATH="$fake/path:$PATH" OUT="$out" HG_BIN="$fake/bin" HG_PYTHON="$fake/path/python-peer" HG_LIB_SEARCH="$work" \
        "$@" bash "$root/scripts/gpu_check.sh" > "$log" 2>&1 || true
    if ! grep -q '== gpu_check summary' "$log"; then
        echo "FAIL $name: no summary table"; failures=$((failures + 1)); return
    fi
    local files
    files=$(find "$out" -type f | wc -l)
    if ((files > 8)); then
        echo "FAIL $name: $files files in \$OUT (at most 8 come back)"; failures=$((failures + 1)); return
    fi
    local stage line
    for stage in ${want_stages//,/ }; do
        line=$(grep -E "^$stage " "$out/summary.txt" || true)
        if [[ $line != *" $want_status"* ]]; then
            echo "FAIL $name: stage $stage is not '$want_status': ${line:-missing}"
            failures=$((failures + 1)); return
        fi
    done
    echo "ok   $name: $(wc -l < "$out/summary.txt") stages; $line"
}

check all-pass info,parity,main,kernels,nhgd,sanitizer,distill,mlp,faults,l1,profile ok
check faults-fail faults FAIL env HG_FAKE_FAIL=hypergrad-grad HG_STAGES=10
check info-fails info FAIL env HG_FAKE_FAIL=hypergrad-info
for suite in $parity_suites; do
    check "$suite-fails" parity FAIL env HG_FAKE_FAIL="$suite" HG_STAGES=2
done
check sanitizer-suite-fails sanitizer FAIL env HG_FAKE_FAIL=parity_fisher HG_STAGES=6
check main-fails main FAIL env HG_FAKE_FAIL=hypergrad-run HG_STAGES=3
check kernels-fail kernels FAIL env HG_FAKE_FAIL=hypergrad-bench HG_STAGES=4
check torch-fails nhgd FAIL env HG_FAKE_FAIL=torch HG_STAGES=5
check sanitizer-fails sanitizer FAIL env HG_FAKE_FAIL=compute-sanitizer HG_STAGES=6
check profile-fails profile FAIL env HG_FAKE_FAIL=ncu HG_STAGES=7
check distill-fails distill FAIL env HG_FAKE_FAIL=hypergrad-grad HG_STAGES=8
check l1-fails l1 FAIL env HG_FAKE_FAIL=hypergrad-grad HG_STAGES=11
check mlp-parity-fails mlp FAIL env HG_FAKE_FAIL=mlp_cuda_parity HG_STAGES=9
check mlp-bench-fails mlp FAIL env HG_FAKE_FAIL=hypergrad-bench HG_STAGES=9
check mlp-torch-fails mlp FAIL env HG_FAKE_FAIL=torch HG_STAGES=9
check mlp-streams-fail mlp FAIL env HG_FAKE_FAIL=compute-sanitizer HG_STAGES=9
# A hanging stage is cut by the overall budget, and the later stages still report.
check parity-hangs parity TIMEOUT env HG_FAKE_FAIL=parity_core:hang HG_BUDGET_S=4 "HG_STAGES=2 4"
check after-hang kernels ok env HG_FAKE_FAIL=parity_core:hang HG_BUDGET_S=4 "HG_STAGES=2 4"

# The parity stage's summary line gives a count per family (the fakes list two CUDA tests and
# one stand-in each), and names the failing family.
line=$(grep -E '^parity ' "$work/out-all-pass/summary.txt" || true)
for suite in $parity_suites; do
    if [[ $line != *"$suite: ok 2/2 passed"* ]]; then
        echo "FAIL parity summary: '$suite: ok 2/2 passed' missing from: ${line:-no parity line}"
        failures=$((failures + 1))
    fi
done
line=$(grep -E '^parity ' "$work/out-parity_glm-fails/summary.txt" || true)
if [[ $line != *"parity_glm: FAIL 0/2 passed"* || $line != *"parity_fisher: ok 2/2 passed"* ]]; then
    echo "FAIL parity summary: the failing family is not named: ${line:-no parity line}"
    failures=$((failures + 1))
fi
# The sanitizer stage adds up the summaries of every binary it ran.
line=$(grep -E '^sanitizer ' "$work/out-all-pass/summary.txt" || true)
for needle in "memcheck: ok 0 errors in 4 of 4 runs" "racecheck: ok 0 hazards in 3 of 3 runs"; do
    if [[ $line != *"$needle"* ]]; then
        echo "FAIL sanitizer summary: '$needle' missing from: ${line:-no sanitizer line}"
        failures=$((failures + 1))
    fi
done

# The mlp stage's summary line carries the parity count, kfac's ratio to the SGD loop and the
# peer's time over ours, and the same bench with the pool trimmed (the fake binaries' numbers).
line=$(grep -E '^mlp ' "$work/out-all-pass/summary.txt" || true)
for needle in "parity 2/2 passed" "kfac 12.0ms sgd×1.20 torch 50.0ms (4.2x) graphed 6.00ms (0.5x)" "none 10.0ms" \
    "pool trim: none 10.0ms (kept 10.0), kfac 12.0ms (kept 12.0)" "streams: memcheck ok, 0 errors"; do
    if [[ $line != *"$needle"* ]]; then
        echo "FAIL mlp summary: '$needle' missing from: ${line:-no mlp line}"
        failures=$((failures + 1))
    fi
done

# The nhgd stage's summary line puts the peer's eager and graphed times beside ours.
line=$(grep -E '^nhgd ' "$work/out-all-pass/summary.txt" || true)
for needle in "kfac 12.0ms sgd×1.20 torch 50.0ms (4.2x) graphed 3.00ms (0.2x)"; do
    if [[ $line != *"$needle"* ]]; then
        echo "FAIL nhgd summary: '$needle' missing from: ${line:-no nhgd line}"
        failures=$((failures + 1))
    fi
done

if ((failures)); then
    echo "$failures check(s) of gpu_check.sh failed"
    exit 1
fi
echo "gpu_check.sh: all checks passed"
