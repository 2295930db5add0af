#!/usr/bin/env bash
# Every GPU check of issue 9 in one command, for a GPU machine with no Rust toolchain and a
# short lease (device tool: run(command="bash scripts/gpu_check.sh", carry=[".bin"])).
# Expects .bin/ from scripts/gpu_bundle.sh. Stages, in order, each under its own timeout and
# inside one overall budget (HG_BUDGET_S, default 300 s), each writing its log to $OUT (or
# ./gpu-results) as soon as it is done, so a stage that runs out of time leaves the earlier
# stages' files:
#   1 info       nvidia-smi, driver and CUDA versions, hypergrad info (kernels from nvcc PTX)
#   2 parity     the CUDA parity suites against the CPU backend, one binary per op family
#                (parity_core, parity_glm, parity_fisher, parity_estimators, l1_device; the
#                network family's is stage 9's), with a count per family
#   3 main       the main job on the GPU, and on this machine's CPU in f64; the CPU f64 run
#                of the machine that built the bundle (.bin/main_job_cpu_build_host.json)
#   4 kernels    hypergrad bench kernels at the GPU sizes (copy and GEMM ceilings, same run)
#   5 nhgd       hypergrad bench nhgd --dense on MNIST's shape, and the PyTorch peer, eager
#                and captured with torch.cuda.graph (--graph), side by side
#   6 sanitizer  compute-sanitizer memcheck (kernel tests, small shapes), racecheck (kernels
#                that use shared memory)
#   8 distill    dataset distillation on the GPU against the CPU: CG and unroll hypergradients
#                with the linear model and with a network (mlp:16, issue 22: MlpInputOps and
#                the linear B products on the device), a short warm-start run with --retrain
#                (runs before 7, the slowest stage)
#   9 mlp        networks (issue 12): the MLP parity suite (tests/mlp_cuda_parity.rs), then
#                hypergrad bench nhgd --model mlp:300 on MNIST's shape and the PyTorch peer
#                (benches/peers/nhgd_mlp_torch.py, eager and --graph) on the same card; targets: the kfac outer
#                step ≤ 1.5× the plain SGD loop, ≥ 2× faster than the peer's; last, the NHGD
#                loops' two streams under memcheck --track-stream-ordered-races all
#  11 l1        the ℓ1 problems on the GPU (issue 22) against this machine's CPU in f64:
#                lasso, enet, wlasso × forward, implicit, implicit-forward (held-out, then
#                3-fold CV), and a 10-step HOAG search; the relative differences
#   7 profile    Nsight Compute, one launch of each kernel that misses its target (the fused
#                row kernel for HVP k = 1, 8 and the SGD step, and the SGD apply): speed of
#                light, occupancy, launch statistics
# Only 8 files come back from $OUT: one log per stage 1-6 (those of 7, 8 and 9 go into
# details.tar.gz), summary.txt, and details.tar.gz.
# The table at the end is what matters if only the output's tail comes back.
#
# HG_BIN (default .bin) is where the binaries are; HG_STAGES (default "1 2 3 4 5 6 8 9 10 11 7") picks
# stages; HG_LIB_SEARCH (default /) is where the CUDA libraries are looked for.
# tests/gpu_check_script.sh runs this script against fake binaries on a CPU machine.
set -uo pipefail
cd "$(dirname "$0")/.."

out="${OUT:-gpu-results}"
bin="${HG_BIN:-.bin}"
budget="${HG_BUDGET_S:-300}"
stages="${HG_STAGES:-1 2 3 4 5 6 8 9 10 11 7}"
python="${HG_PYTHON:-python3}"
# The parity binaries of stage 2, one per op family (tests/parity_*.rs, tests/l1_device.rs;
# networks, tests/mlp_cuda_parity.rs, are stage 9's), and the kernel-level ones that stage 6
# runs under compute-sanitizer.
parity_suites="parity_core parity_glm parity_fisher parity_estimators l1_device"
sanitizer_suites="parity_core parity_glm parity_fisher parity_estimators"
mkdir -p "$out"
detail="$(mktemp -d)"
summary="$out/summary.txt"
: > "$summary"
start=$SECONDS

# The CUDA libraries the binaries load at run time (cuBLAS, NVRTC): the toolkit's folders and
# the pip wheels' (PyTorch brings its own), wherever this image keeps them.
lib_dirs=$(
    {
        # The driver's own folder first: the toolkit's stubs/libcuda.so answers every call with
        # CUDA_ERROR_STUB_LIBRARY (seen on the first GPU run).
        ls -d /usr/local/nvidia/lib64 /usr/local/nvidia/lib 2>/dev/null
        ls -d /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib 2>/dev/null
        find "${HG_LIB_SEARCH:-/}" -xdev \( -name 'libcublas.so*' -o -name 'libnvrtc.so*' \) -printf '%h\n' 2>/dev/null
    } | grep -v '/stubs' | awk '!seen[$0]++' | paste -sd: -
)
export LD_LIBRARY_PATH="${lib_dirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Seconds a stage may take: its own limit, cut to what is left of the overall budget.
stage_limit() {
    local own=$1 left=$((budget - (SECONDS - start)))
    ((left < 5)) && left=5
    echo $((own < left ? own : left))
}

# Records one stage's result: a line in the summary, echoed, and the details archived.
report() {
    local stage=$1 status=$2 text=$3
    printf '%-10s %-8s %5ss  %s\n' "$stage" "$status" "$((SECONDS - start))" "$text" | tee -a "$summary"
    tar -czf "$out/details.tar.gz" -C "$detail" . 2>/dev/null
}

# Status word of an exit code from `timeout`.
status_of() {
    case $1 in
        0) echo ok ;;
        124 | 137) echo TIMEOUT ;;
        *) echo "FAIL($1)" ;;
    esac
}

# Runs a command under `timeout LIMIT`, its output appended to LOG; returns its exit code.
run_logged() {
    local limit=$1 log=$2
    shift 2
    echo "\$ $*" >> "$log"
    timeout -k 5 "$limit" "$@" >> "$log" 2>&1
}

want() { [[ " $stages " == *" $1 "* ]]; }

# ---- 1 info -----------------------------------------------------------------------------
if want 1; then
    log="$out/1-info.log"
    : > "$log"
    limit=$(stage_limit 30)
    run_logged "$limit" "$log" nvidia-smi
    run_logged "$limit" "$log" nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    nvcc --version >> "$log" 2>&1 || echo "nvcc: not on PATH" >> "$log"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >> "$log"
    run_logged "$limit" "$log" "$bin/hypergrad" info
    rc=$?
    run_logged "$limit" "$log" "$bin/hypergrad" info --json
    gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
    cuda=$(grep -m1 '^cuda ' "$log" | sed 's/^cuda *//')
    kernels=$(grep -m1 '^kernels ' "$log" | sed 's/^kernels *//' | cut -c1-60)
    status=$(status_of $rc)
    [[ $status == ok && $cuda != ready* ]] && status=FAIL
    report info "$status" "${gpu:-no nvidia-smi}; cuda: ${cuda:-?}; ${kernels:-?}"
fi

# ---- 2 parity ---------------------------------------------------------------------------
# Every primitive and estimator of the CUDA backend against CPU f64, one binary per op family
# (tests/parity_{core,glm,fisher,estimators}.rs), and the ℓ1 prox path (tests/l1_device.rs);
# the summary gives each family's count. Each test runs in its own process (four at a time):
# a kernel fault poisons its CUDA context, and with it every test sharing the process. A
# suite that says SKIPPED found no device: a failure. The CPU stand-ins are left to CI.
if want 2; then
    log="$out/2-parity.log"
    : > "$log"
    text=""
    worst=0
    failed=""
    for suite in $parity_suites; do
        if [[ ! -x "$bin/$suite" ]]; then
            text+="$suite: missing; "
            worst=1
            continue
        fi
        dir="$detail/$suite"
        mkdir -p "$dir"
        : > "$dir/rc"
        "$bin/$suite" --list 2>/dev/null | sed -n 's/: test$//p' | grep -v '^cpu_f32_stand_in::' > "$dir/tests"
        timeout -k 5 "$(stage_limit 150)" xargs -P 4 -I{} bash -c \
            'timeout -k 5 120 "$0" --exact "$1" --test-threads=1 > "$2/$1.log" 2>&1; echo "$1 $?" >> "$2/rc"' \
            "$bin/$suite" {} "$dir" < "$dir/tests"
        rc=$?
        total=$(wc -l < "$dir/tests")
        passed=$(awk '$2 == 0' "$dir/rc" | wc -l)
        bad=$(awk '$2 != 0 {print $1 "(" $2 ")"}' "$dir/rc" | paste -sd, -)
        missing=$(sort "$dir/tests" | comm -23 - <(awk '{print $1}' "$dir/rc" | sort) | paste -sd, -)
        {
            echo "== $suite: $passed of $total passed"
            sort "$dir/rc"
            for name in $(awk '$2 != 0 {print $1}' "$dir/rc"); do
                echo "---- $name ----"
                tail -n 60 "$dir/$name.log"
            done
        } >> "$log"
        skipped=$(cat "$dir"/*.log 2>/dev/null | grep -ac 'SKIPPED')
        status=ok
        if ((rc == 124 || rc == 137)); then status=TIMEOUT
        elif [[ -n $bad || -n $missing || $total == 0 || $skipped != 0 ]]; then status=FAIL; fi
        [[ $status != ok && $worst == 0 ]] && worst=1
        ((rc == 124 || rc == 137)) && worst=124
        note=""
        ((skipped > 0)) && note=" (SKIPPED, no device: $skipped)"
        text+="$suite: $status $passed/$total passed$note; "
        failed+="${bad:+$bad,}${missing:+not run: $missing,}"
    done
    report parity "$(status_of $worst)" "${text%; }${failed:+ | failed: ${failed%,}}"
fi

# ---- 3 main job -------------------------------------------------------------------------
# The README's main job (NHGD label cleaning of the bundled MNIST sample) on the GPU in f32 and
# on this machine's CPU in f64, both with --json; plus the build host's CPU f64 run.
if want 3; then
    log="$out/3-main.log"
    : > "$log"
    t0=$EPOCHREALTIME
    run_logged "$(stage_limit 90)" "$detail/main_cuda.json" "$bin/hypergrad" run --device cuda --json
    rc_gpu=$?
    t1=$EPOCHREALTIME
    run_logged "$(stage_limit 120)" "$detail/main_cpu.json" "$bin/hypergrad" run --device cpu --json
    rc_cpu=$?
    t2=$EPOCHREALTIME
    cat "$detail/main_cuda.json" "$detail/main_cpu.json" >> "$log"
    echo "wall seconds: gpu $t0 $t1, cpu $t1 $t2" >> "$log"
    line=$("$python" - "$detail/main_cuda.json" "$detail/main_cpu.json" "$bin/main_job_cpu_build_host.json" \
        "$t0" "$t1" "$t2" <<'EOF' 2>> "$log"
import json, sys
def last_json(path):
    try:
        lines = [l for l in open(path) if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except OSError:
        return None
def describe(tag, r, wall=None):
    if r is None:
        return f"{tag}: no result"
    last = r.get("final") or {}
    cleaning = r.get("cleaning") or {}
    acc = cleaning.get("with_cleaning", last.get("test_accuracy"))
    acc_s = f"{100 * acc:.2f}%" if isinstance(acc, (int, float)) else "?"
    loop = last.get("seconds")
    loop_s = f"{loop:.2f}s" if isinstance(loop, (int, float)) else "?"
    wall_s = f" (wall {wall:.1f}s)" if wall else ""
    return f"{tag} {r.get('device', '?')} loop {loop_s}{wall_s} acc {acc_s}"
t0, t1, t2 = (float(t) for t in sys.argv[4:7])
gpu, cpu, host = (last_json(p) for p in sys.argv[1:4])
print("; ".join([describe("gpu", gpu, t1 - t0), describe("cpu", cpu, t2 - t1),
                 describe("build host", host)]))
EOF
    )
    worst=$rc_gpu
    ((worst == 0)) && worst=$rc_cpu
    report main "$(status_of $worst)" "${line:-could not summarise (see 3-main.log)}"
fi

# ---- 4 kernel benchmark -----------------------------------------------------------------
if want 4; then
    log="$out/4-kernels.log"
    : > "$log"
    run_logged "$(stage_limit 90)" "$detail/kernels.json" "$bin/hypergrad" bench kernels --device cuda --json
    rc=$?
    cat "$detail/kernels.json" >> "$log"
    line=$("$python" - "$detail/kernels.json" <<'EOF' 2>> "$log"
import json, sys
rows = None
for l in open(sys.argv[1]):
    if l.startswith("{"):
        rows = json.loads(l)
if rows is None:
    sys.exit(1)
table = rows.get("rows", rows.get("kernels", []))
print(f"{'kernel':<34} {'shape':<28} {'rate':>12} {'of ceiling':>10}", file=sys.stderr)
worst = []
for r in table:
    rate = f"{r['gb_per_s']:.0f} GB/s" if r.get("gb_per_s") else (
        f"{r['tflop_per_s']:.1f} TF/s" if r.get("tflop_per_s") else "-")
    frac = r.get("fraction_of_ceiling")
    frac_s = "-" if frac is None else f"{frac:.0%}"
    print(f"{r['kernel']:<34} {r['shape']:<28} {rate:>12} {frac_s:>10}", file=sys.stderr)
    if frac is not None:
        worst.append((frac, r["kernel"]))
worst.sort()
print(f"{len(table)} kernels; lowest: " + ", ".join(f"{k} {f:.0%}" for f, k in worst[:3]))
EOF
    )
    report kernels "$(status_of $rc)" "${line:-no result (see 4-kernels.log)}"
fi

# ---- 5 NHGD outer step: hypergrad and the PyTorch peer, same card, same run -------------
if want 5; then
    log="$out/5-nhgd.log"
    : > "$log"
    run_logged "$(stage_limit 120)" "$detail/nhgd.json" "$bin/hypergrad" bench nhgd --device cuda --dense --json
    rc=$?
    cat "$detail/nhgd.json" >> "$log"
    run_logged "$(stage_limit 120)" "$detail/nhgd_torch.json" env PYTHONUNBUFFERED=1 "$python" \
        benches/peers/nhgd_torch.py --device cuda --n 50000 --d 785 --c 10 --m 10000 --T 100 \
        --b 64 --rank 64 --curvature none,kfac,lowrank,dense-accumulate,dense --repeats 5 --graph
    rc_torch=$?
    cat "$detail/nhgd_torch.json" >> "$log"
    line=$("$python" - "$detail/nhgd.json" "$detail/nhgd_torch.json" <<'EOF' 2>> "$log"
import json, sys
ours, peer = None, {}
for l in open(sys.argv[1]):
    if l.startswith("{"):
        ours = json.loads(l)
for l in open(sys.argv[2]):
    if l.startswith("{"):
        r = json.loads(l)
        peer[r["curvature"]] = (r["outer_step_seconds_median"],
                                r.get("graph_outer_step_seconds_median"))
names = {"sgd loop only": "none", "nhgd kfac": "kfac", "nhgd lowrank": "lowrank",
         "nhgd dense woodbury": "dense", "nhgd dense accumulate": "dense-accumulate"}
parts = []
for case in (ours or {}).get("cases", []):
    key = names.get(case["case"], case["case"])
    s = case["outer_step_seconds"]
    torch_s, graph_s = peer.get(key, (None, None))
    vs = f" torch {1e3 * torch_s:.1f}ms ({torch_s / s:.1f}x)" if torch_s else ""
    vs += f" graphed {1e3 * graph_s:.2f}ms ({graph_s / s:.1f}x)" if graph_s else ""
    parts.append(f"{key} {1e3 * s:.1f}ms sgd×{case['ratio_to_sgd_loop']:.2f}{vs}")
print("; ".join(parts) if parts else "no hypergrad result; torch: " +
      ", ".join(f"{k} {1e3 * v[0]:.1f}ms" for k, v in peer.items()))
EOF
    )
    worst=$rc
    ((worst == 0)) && worst=$rc_torch
    report nhgd "$(status_of $worst)" "${line:-no result (see 5-nhgd.log)}"
fi

# ---- 6 compute-sanitizer ------------------------------------------------------------------
# memcheck on the kernel-level parity tests with small shapes (every family's binary, the
# end-to-end estimator runs skipped); racecheck only on the tests of kernels that use shared
# memory (reductions, the fused row kernel, the Fisher kernels). Each tool has one time limit
# for all the binaries it runs; its summary line adds up their errors (hazards).
if want 6; then
    log="$out/6-sanitizer.log"
    : > "$log"
    sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
    if [[ -z "$sanitizer" ]]; then
        report sanitizer skipped "compute-sanitizer not found"
    else
        text=""
        worst=0
        export HYPERGRAD_PARITY_SMALL=1
        for tool in memcheck racecheck; do
            tlog="$detail/sanitizer-$tool.log"
            : > "$tlog"
            deadline=$((SECONDS + $(stage_limit 90)))
            rc=0
            runs=0
            for suite in $sanitizer_suites; do
                case $tool:$suite in
                    memcheck:*) filter=(--skip estimators --skip nhgd_loop --skip cpu_f32_stand_in --skip wide_features) ;;
                    racecheck:parity_core) filter=(--skip cpu_f32_stand_in memory_and_blas1) ;;
                    racecheck:parity_glm) filter=(--skip cpu_f32_stand_in glm_value_grad glm_curvature glm_row_factors glm_per_sample) ;;
                    racecheck:parity_fisher) filter=(--skip cpu_f32_stand_in woodbury) ;;
                    *) continue ;;
                esac
                left=$((deadline - SECONDS))
                ((left < 5)) && left=5
                run_logged "$left" "$tlog" "$sanitizer" --tool "$tool" --error-exitcode 9 \
                    "$bin/$suite" --test-threads=1 "${filter[@]}"
                r=$?
                runs=$((runs + 1))
                ((r != 0 && rc == 0)) && rc=$r
            done
            tail -n 40 "$tlog" >> "$log"
            summaries=$(grep -aoE '(ERROR SUMMARY|RACECHECK SUMMARY): [0-9]+ (error|hazard)s?' "$tlog")
            errors=""
            if [[ -n $summaries ]]; then
                errors=$(awk -v runs="$runs" '{s += $3; kind = $4} END {sub(/s$/, "", kind); print s + 0, kind "s in", NR, "of", runs, "runs"}' <<< "$summaries")
            fi
            refused=$(grep -aim1 'not supported\|unable to\|error 999' "$tlog" | cut -c1-80)
            ((rc != 0 && worst == 0)) && worst=$rc
            text+="$tool: $(status_of $rc) ${errors:-${refused:-no summary}}; "
        done
        report sanitizer "$(status_of $worst)" "${text%; }"
    fi
fi

# ---- 10 faults --------------------------------------------------------------------------
# Issue 21 on the device: a dense curvature that cannot fit the GPU is refused before it is
# allocated, in one line naming the device's memory (exit 1, no abort); and an f32 `cg` solve
# on the GPU is refined to an accurate end (`solve_accurate`), with its residual.
if want 10; then
    flog="$detail/faults.log"
    : > "$flog"
    run_logged "$(stage_limit 60)" "$flog" "$bin/hypergrad" grad --device cuda --problem hyperclean \
        --train mnist_5k --method nhgd --curvature dense --model mlp:4000 --json
    rc_oom=$?
    oom_lines=$(grep -c 'out of memory: .*device memory' "$flog")
    run_logged "$(stage_limit 60)" "$detail/faults_cg.json" "$bin/hypergrad" grad --device cuda \
        --problem hyperclean --train digits --standardize --method cg --l2 0.001 --json
    rc_cg=$?
    refined=$("$python" - "$detail/faults_cg.json" <<'EOF' 2>> "$flog" || echo "cg f32: no result"
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("{")]
r = json.loads(lines[-1]) if lines else {}
print(f"cg f32: residual {r.get('residual_norm')}, {r.get('refinements')} rounds, "
      f"accurate {r.get('solve_accurate')}")
EOF
)
    problems=""
    ((rc_oom == 1 && oom_lines == 1)) || problems+="oom: exit $rc_oom, $oom_lines lines; "
    ((rc_cg == 0)) && [[ $refined == *"accurate True"* ]] || problems+="cg: exit $rc_cg; "
    status=ok
    [[ -z $problems ]] || status="FAIL(${problems%; })"
    report faults "$status" "dense mlp:4000 on the device: exit $rc_oom; $refined"
fi

# ---- 11 l1 ------------------------------------------------------------------------------
# The ℓ1 problems on the device (issue 22): every problem × method through the CLI on CUDA
# and on this machine's CPU in f64 (diabetes, held-out and 3-fold CV; f32 stops the inner
# solve at a relative gap of 1e-6), and a 10-step HOAG search on each device. The summary
# gives the largest relative hypergradient difference (expected ≲ 5e-3, the f32 bound of
# tests/l1_cli.rs) and the two searches' best criteria.
if want 11; then
    llog="$detail/l1.log"
    : > "$llog"
    rc=0
    for dev in cuda cpu; do
        for problem in lasso enet wlasso; do
            for method in forward implicit implicit-forward; do
                for folds in 0 3; do
                    extra=()
                    ((folds > 0)) && extra=(--folds "$folds")
                    run_logged "$(stage_limit 20)" "$detail/l1_${problem}_${method}_${folds}_$dev.json" \
                        "$bin/hypergrad" grad --problem "$problem" --train diabetes --method "$method" \
                        --inner-tol 1e-6 --linear-tol 1e-6 "${extra[@]}" --device "$dev" --json
                    r=$?
                    ((r != 0 && rc == 0)) && rc=$r
                done
            done
        done
        run_logged "$(stage_limit 60)" "$detail/l1_run_$dev.json" "$bin/hypergrad" run --problem lasso \
            --train diabetes --outer-opt hoag --outer-steps 10 --inner-tol 1e-6 --device "$dev" --json
        r=$?
        ((r != 0 && rc == 0)) && rc=$r
    done
    line=$("$python" - "$detail" <<'EOF' 2>> "$llog"
import json, sys
d = sys.argv[1]
def load(name):
    try:
        lines = [l for l in open(f"{d}/{name}.json") if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except OSError:
        return None
worst, missing = 0.0, []
for problem in ("lasso", "enet", "wlasso"):
    for method in ("forward", "implicit", "implicit-forward"):
        for folds in (0, 3):
            key = f"l1_{problem}_{method}_{folds}"
            g, c = load(f"{key}_cuda"), load(f"{key}_cpu")
            if g is None or c is None:
                missing.append(key)
                continue
            a, b = g["hypergradient"], c["hypergradient"]
            scale = max([abs(v) for v in b] + [1e-3])
            worst = max([worst] + [abs(x - y) / scale for x, y in zip(a, b)])
parts = [f"18 grads, worst rel diff cuda vs cpu-f64 {worst:.1e}"]
if missing:
    parts.append(f"no result: {', '.join(missing)}")
for dev in ("cuda", "cpu"):
    r = load(f"l1_run_{dev}")
    parts.append(f"hoag {dev} best {r['best_loss']:.4g}" if r and "best_loss" in r else f"hoag {dev}: no result")
print("; ".join(parts))
EOF
    )
    cat "$detail"/l1_*.json >> "$llog" 2>/dev/null
    report l1 "$(status_of $rc)" "${line:-could not summarise (see details.tar.gz l1.log)}"
fi

# ---- 7 profile -----------------------------------------------------------------------------
# Why a kernel misses its target, from the hardware counters rather than a guess: one profiled
# launch of each kernel of the kernel benchmark at its GPU sizes (the others run unprofiled).
# ---- 8 distill --------------------------------------------------------------------------
# Dataset distillation (SPEC §9) on the GPU against this machine's CPU in f64: the CG and
# unroll hypergradients of digits with K = 1 (relative difference), with the linear model (its
# B products on the device) and with an mlp:16 network (the input derivatives, MlpInputOps, on
# the device), and a 50-step warm-start run with --retrain (final F, test and retrain
# accuracy). Its log goes into details.tar.gz.
if want 8; then
    dlog="$detail/distill.log"
    : > "$dlog"
    rc=0
    common=(--problem distill --train digits --standardize)
    for dev in cuda cpu; do
        for method in cg unroll; do
            for model in linear mlp:16; do
                run_logged "$(stage_limit 30)" "$detail/distill_grad_${method}_${model/:/}_$dev.json" \
                    "$bin/hypergrad" grad "${common[@]}" --model "$model" --method "$method" \
                    --device "$dev" --json
                r=$?
                ((r != 0 && rc == 0)) && rc=$r
            done
        done
        run_logged "$(stage_limit 60)" "$detail/distill_run_$dev.json" "$bin/hypergrad" run \
            "${common[@]}" --images-per-class 10 --method unroll --unroll-steps 10 \
            --outer-steps 50 --warm-start --retrain --device "$dev" --json
        r=$?
        ((r != 0 && rc == 0)) && rc=$r
    done
    line=$("$python" - "$detail" <<'EOF' 2>> "$dlog"
import json, math, sys
d = sys.argv[1]
def load(name):
    try:
        lines = [l for l in open(f"{d}/{name}.json") if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except OSError:
        return None
parts = []
for model in ("linear", "mlp16"):
    for method in ("cg", "unroll"):
        g = load(f"distill_grad_{method}_{model}_cuda")
        c = load(f"distill_grad_{method}_{model}_cpu")
        if g is None or c is None:
            parts.append(f"{model} {method}: no result")
            continue
        a, b = g["hypergradient"], c["hypergradient"]
        diff = math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))
        norm = math.sqrt(sum(y * y for y in b)) or 1.0
        parts.append(f"{model} {method} grad rel diff {diff / norm:.1e}")
for dev in ("cuda", "cpu"):
    r = load(f"distill_run_{dev}")
    if r is None:
        parts.append(f"run {dev}: no result")
        continue
    f = r["final"]
    parts.append(f"run {dev} F {f['outer_loss']:.4f} acc {100 * f['test_accuracy']:.1f}% "
                 f"retrain {100 * r.get('retrain_test_accuracy', float('nan')):.1f}% {f['seconds']:.2f}s")
print("; ".join(parts))
EOF
    )
    cat "$detail"/distill_*.json >> "$dlog" 2>/dev/null
    report distill "$(status_of $rc)" "${line:-could not summarise (see details.tar.gz distill.log)}"
fi

# ---- 9 mlp ------------------------------------------------------------------------------
# Networks on the GPU: every test of tests/mlp_cuda_parity.rs in its own process (as stage 2;
# SKIPPED means no device: a failure), then one NHGD outer step of hyper-cleaning with an
# mlp:300 inner model on MNIST's shape (kfac with its update on the second stream and on the
# main one, kfac-1q, and lowrank, against the plain SGD loop) and the
# PyTorch peer's (torch.func per-sample gradients, K-FAC from hooks) on the same card. The
# summary gives each case's time, its ratio to the SGD loop (kfac's target: ≤ 1.5) and the
# peer's time over ours (target ≥ 2), the bench again with the CUDA memory pool trimmed at
# every sync (HYPERGRAD_CUDA_POOL=trim: what keeping it saves), then the NHGD loops' two
# streams under memcheck. Its
# log goes into details.tar.gz.
if want 9; then
    mlog="$detail/mlp.log"
    : > "$mlog"
    suite=mlp_cuda_parity
    parity="missing"
    rc_parity=1
    if [[ -x "$bin/$suite" ]]; then
        dir="$detail/$suite"
        mkdir -p "$dir"
        : > "$dir/rc"
        "$bin/$suite" --list 2>/dev/null | sed -n 's/: test$//p' | grep -v '^cpu_f32_stand_in::' > "$dir/tests"
        timeout -k 5 "$(stage_limit 150)" xargs -P 4 -I{} bash -c \
            'timeout -k 5 120 "$0" --exact "$1" --test-threads=1 > "$2/$1.log" 2>&1; echo "$1 $?" >> "$2/rc"' \
            "$bin/$suite" {} "$dir" < "$dir/tests"
        rc_parity=$?
        total=$(wc -l < "$dir/tests")
        passed=$(awk '$2 == 0' "$dir/rc" | wc -l)
        bad=$(awk '$2 != 0 {print $1 "(" $2 ")"}' "$dir/rc" | paste -sd, -)
        skipped=$(cat "$dir"/*.log 2>/dev/null | grep -ac 'SKIPPED')
        {
            echo "== $suite: $passed of $total passed"
            sort "$dir/rc"
            for name in $(awk '$2 != 0 {print $1}' "$dir/rc"); do
                echo "---- $name ----"
                tail -n 60 "$dir/$name.log"
            done
        } >> "$mlog"
        parity="$passed/$total passed${bad:+ (failed: $bad)}"
        ((skipped > 0)) && parity+=" (SKIPPED, no device: $skipped)"
        if ((rc_parity == 0)) && [[ -n $bad || $total == 0 || $passed != "$total" || $skipped != 0 ]]; then
            rc_parity=1
        fi
    fi
    run_logged "$(stage_limit 150)" "$detail/nhgd_mlp.json" "$bin/hypergrad" bench nhgd \
        --model mlp:300 --device cuda --json
    rc=$?
    run_logged "$(stage_limit 150)" "$detail/nhgd_mlp_torch.json" env PYTHONUNBUFFERED=1 "$python" \
        benches/peers/nhgd_mlp_torch.py --device cuda --hidden 300 --n 50000 --m 10000 --d 785 \
        --T 100 --b 64 --repeats 5 --cases none,kfac --graph
    rc_torch=$?
    # The same bench with the memory pool handing freed memory back at every sync (the
    # driver's default; hypergrad keeps it, src/backend/cuda/mod.rs keep_pool_memory).
    run_logged "$(stage_limit 150)" "$detail/nhgd_mlp_trim.json" env HYPERGRAD_CUDA_POOL=trim \
        "$bin/hypergrad" bench nhgd --model mlp:300 --device cuda --json
    cat "$detail/nhgd_mlp.json" "$detail/nhgd_mlp_torch.json" "$detail/nhgd_mlp_trim.json" >> "$mlog"
    line=$("$python" - "$detail/nhgd_mlp.json" "$detail/nhgd_mlp_torch.json" "$detail/nhgd_mlp_trim.json" <<'EOF' 2>> "$mlog"
import json, sys
def last_json(path):
    try:
        lines = [l for l in open(path) if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except OSError:
        return None
ours, peer = last_json(sys.argv[1]), last_json(sys.argv[2])
peer_cases = (peer or {}).get("cases", {})
names = {"sgd loop only": "none", "nhgd kfac": "kfac", "nhgd kfac, one queue": "kfac-1q",
         "nhgd lowrank": "lowrank"}
parts = []
for case in (ours or {}).get("cases", []):
    key = names.get(case["case"], case["case"])
    s = case["outer_step_seconds"]
    torch_s = (peer_cases.get(key) or {}).get("outer_step_seconds")
    graph_s = (peer_cases.get(key) or {}).get("graph_outer_step_seconds")
    vs = f" torch {1e3 * torch_s:.1f}ms ({torch_s / s:.1f}x)" if torch_s else ""
    vs += f" graphed {1e3 * graph_s:.2f}ms ({graph_s / s:.1f}x)" if graph_s else ""
    parts.append(f"{key} {1e3 * s:.1f}ms sgd×{case['ratio_to_sgd_loop']:.2f}{vs}")
trim = {c["case"]: c["outer_step_seconds"] for c in (last_json(sys.argv[3]) or {}).get("cases", [])}
kept = {c["case"]: c["outer_step_seconds"] for c in (ours or {}).get("cases", [])}
if trim and kept:
    parts.append("pool trim: " + ", ".join(
        f"{names.get(k, k)} {1e3 * v:.1f}ms (kept {1e3 * kept[k]:.1f})" for k, v in trim.items() if k in kept))
print("; ".join(parts) if parts else "no hypergrad result; torch: " +
      ", ".join(f"{k} {1e3 * v['outer_step_seconds']:.1f}ms" for k, v in peer_cases.items()))
EOF
    )
    # The two queues under memcheck with stream-ordered race tracking: a buffer freed on one
    # stream while the other still reads it (what the network loop's held tapes and the
    # linear loop's double-buffered factors prevent) is reported whatever the timing. One
    # NHGD-loop test of each model, small shapes; last, so the timings above are not slowed.
    streams="streams: no compute-sanitizer"
    rc_streams=0
    sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
    if [[ -n "$sanitizer" ]]; then
        slog="$detail/sanitizer-streams.log"
        : > "$slog"
        for test in parity_estimators:nhgd_loop_matches_the_cpu_and_makes_no_host_traffic_inside \
            mlp_cuda_parity:nhgd_second_queue_is_the_one_queue_loop; do
            run_logged "$(stage_limit 90)" "$slog" env HYPERGRAD_PARITY_SMALL=1 "$sanitizer" \
                --tool memcheck --track-stream-ordered-races all --error-exitcode 9 \
                "$bin/${test%%:*}" --exact "${test#*:}" --test-threads=1
            r=$?
            ((r != 0 && rc_streams == 0)) && rc_streams=$r
        done
        errors=$(grep -aoE 'ERROR SUMMARY: [0-9]+ error' "$slog" | awk '{s += $3} END {print s + 0}')
        streams="streams: memcheck $(status_of $rc_streams), $errors errors"
        tail -n 40 "$slog" >> "$mlog"
    fi
    worst=$rc_parity
    ((worst == 0)) && worst=$rc
    ((worst == 0)) && worst=$rc_torch
    ((worst == 0)) && worst=$rc_streams
    report mlp "$(status_of $worst)" "parity $parity | ${line:-no result (see details.tar.gz mlp.log)} | $streams"
fi

if want 7; then
    plog="$detail/profile.log"
    : > "$plog"
    ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
    if [[ -z "$ncu" ]]; then
        report profile skipped "ncu not found"
    else
        # KERNEL:SKIP — one launch each; SKIP passes over earlier launches of the same kernel
        # (k16 is the softmax SGD step: launches 0-1 are b = 1024, 2-3 the b = n one).
        rc=0
        for spec in glm_rows_f32_k1:0 glm_rows_f32_k8:0 glm_rows_f32_k16:2 hg_sgd_apply:2; do
            run_logged "$(stage_limit 40)" "$plog" "$ncu" --clock-control none \
                -k "regex:^${spec%%:*}\$" --launch-skip "${spec##*:}" -c 1 \
                --section SpeedOfLight --section Occupancy --section LaunchStats \
                "$bin/hypergrad" bench kernels --device cuda --reps 1
            r=$?
            ((r != 0 && rc == 0)) && rc=$r
        done
        kernels=$(grep -acE '^  [a-z_0-9]+ \(' "$plog")
        line=$(awk '/^  [a-z_0-9]+ \(/ {name = $1; next}
            /DRAM Throughput/ {printf "%s dram %s%%; ", name, $NF}
            /Compute \(SM\) Throughput/ {printf "sm %s%%; ", $NF}
            /Achieved Occupancy/ {printf "occupancy %s%% | ", $NF}' "$plog" | cut -c1-600)
        report profile "$(status_of $rc)" "$kernels profiled; ${line:-no counters (see details.tar.gz profile.log)}"
    fi
fi

echo
echo "== gpu_check summary ($((SECONDS - start)) s; logs in $out) =="
cat "$summary"
