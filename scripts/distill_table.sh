#!/usr/bin/env bash
# Vicol et al. (ICML 2022) Table 3 observable with `hypergrad run --problem distill`:
# cold start vs warm start vs warm start + --retrain, on digits and mnist_5k, K = 1 and 10.
# Inner configuration: truncated — T = 10 unrolled gradient steps per outer step
# (--method unroll --unroll-steps 10), from w₀ (cold) or from the last step's w (warm).
# Usage: scripts/distill_table.sh [HYPERGRAD_BINARY] [OUTER_STEPS] [MODEL OPTIONS ...]
# The model options are added to every run: none for the linear model, e.g.
# `--model mlp:16 --step 0.3` for a network (which has no default unroll step).
set -euo pipefail
HG=${1:-target/release/hypergrad}
STEPS=${2:-500}
MODEL=("${@:3}")
echo "| data | K | cold start | warm start | warm start + retrain | cold start + retrain |"
echo "|---|---|---|---|---|---|"
for data in digits mnist_5k; do
  for k in 1 10; do
    row="| $data | $k"
    for start in --cold-start --warm-start; do
      out=$("$HG" run --problem distill --train "$data" --standardize --device cpu \
        --images-per-class "$k" --method unroll --unroll-steps 10 \
        --outer-steps "$STEPS" "$start" --retrain --json ${MODEL[@]+"${MODEL[@]}"})
      read -r acc re <<<"$(python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(100*d["final"]["test_accuracy"], 100*d["retrain_test_accuracy"])' <<<"$out")"
      name=${start#--}; name=${name%-start}; eval "${name}_acc=$acc; ${name}_re=$re"
    done
    printf '%s | %.1f | %.1f | %.1f | %.1f |\n' "$row" "$cold_acc" "$warm_acc" "$warm_re" "$cold_re"
  done
done
