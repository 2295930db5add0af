#!/bin/bash
# The inner-solver table of README ("Inner solvers") and BENCHMARKS.md: each solver and
# tolerance on a small network (synthetic:softmax, mlp:4, per-layer θ = −3), `grad --method cg`,
# 5 interleaved rounds (each round runs every configuration once); prints, per configuration,
# the inner iterations (epochs for sgd and adam; seeded, the same every round), whether the
# solve converged, and the median and the runs of the whole command's `seconds`.
# Usage: benches/inner_solvers.sh [path to the hypergrad binary]   (default target/release)
set -euo pipefail
bin="${1:-target/release/hypergrad}"
data="synthetic:softmax:n=200,d=5,c=3,seed=4"
configs=(
    "sgd 1e-3" "sgd 1e-4" "sgd 1e-5"
    "adam 1e-3" "adam 1e-4" "adam 1e-5"
    "adam 1e-3 --inner-lr 0.03" "adam 1e-4 --inner-lr 0.03" "adam 1e-5 --inner-lr 0.03"
    "lbfgs 1e-4" "newton 1e-4"
)
out=$(mktemp)
for _ in 1 2 3 4 5; do
    for cfg in "${configs[@]}"; do
        read -r -a words <<<"$cfg"
        "$bin" grad --problem softmax --train "$data" --model mlp:4 --hyper per-layer --theta -3 \
            --method cg --batch-size 32 --inner-iters 20000 --device cpu --json \
            --inner-solver "${words[0]}" --inner-tol "${words[1]}" "${words[@]:2}" |
            python3 -c "import json, sys; r = json.load(sys.stdin); print('$cfg' + '|' + str(r['inner_iters']) + '|' + str(r['inner_converged']) + '|' + str(r['seconds']))" >>"$out"
    done
done
python3 - "$out" <<'PY'
import collections, statistics, sys
runs, last = collections.defaultdict(list), {}
for line in open(sys.argv[1]):
    cfg, iters, converged, seconds = line.strip().split("|")
    runs[cfg].append(float(seconds))
    last[cfg] = (iters, converged)
for cfg, seconds in runs.items():
    iters, converged = last[cfg]
    print(f"{cfg:28s} {iters:>6s} iterations  converged {converged:5s}  median {statistics.median(seconds):.4f} s"
          f"  runs {', '.join(f'{s:.4f}' for s in seconds)}")
PY
rm -f "$out"
