#!/usr/bin/env bash
# Fuzzes every reader and parser for longer than CI does (tests/fuzz_readers.rs), and keeps
# every input that breaks the contract under tests/fuzz/regressions/, which the test replays on
# every run from then on: check those files in with the fix.
#
#   scripts/fuzz.sh [CASES_PER_TARGET] [SEED]      (defaults: 500000, a seed from the clock)
#
# CI runs the same test with 50000 cases per target and a fixed seed.
#
# A panic, a bad message or a slow case is saved by the test itself. If the test process dies
# (an abort, an out-of-memory kill), the inputs it was working on are still in their scratch
# files (target/tmp/fuzz/TARGET-PID/case-N.EXT), and this script copies them into
# tests/fuzz/regressions/ as well.
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-500000}"
seed="${2:-$(date +%s)}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
regressions="$PWD/tests/fuzz/regressions"
scratch="$CARGO_TARGET_DIR/tmp/fuzz"
rm -rf "$scratch"
echo "fuzzing with $cases cases per target, seed $seed"
start=$(date +%s)
status=0
# fuzz_cli_grad (ignored in the default run) sends HG_FUZZ_CLI_CASES mutated files through
# `hypergrad grad`, one process each.
HG_FUZZ_CASES="$cases" HG_FUZZ_SEED="$seed" HG_FUZZ_SAVE_DIR="$regressions" \
    HG_FUZZ_CLI_CASES="${HG_FUZZ_CLI_CASES:-$(( cases / 100 ))}" \
    cargo test --release --test fuzz_readers -- --include-ignored fuzz_ || status=$?
if [ "$status" -ne 0 ] && [ -d "$scratch" ]; then
    # Scratch folders left behind belong to targets that did not finish: their case file is
    # the input they died on.
    for case in "$scratch"/*/case-*; do
        [ -e "$case" ] || continue
        target="$(basename "$(dirname "$case")")"
        target="${target%%-*}"
        name="$(basename "$case")"
        ext="${name#*.}"
        sum="$(sha256sum "$case" | cut -c1-16)"
        cp "$case" "$regressions/$target-$sum.$ext"
        echo "kept $regressions/$target-$sum.$ext (the process died on it)"
    done
fi
echo "fuzzing took $(( $(date +%s) - start )) s (exit status $status)"
exit "$status"
