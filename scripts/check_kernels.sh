#!/usr/bin/env bash
# Compiles every cuda/*.cu to PTX and assembles it for sm_90 with `ptxas -v`; prints one row
# per kernel (registers, stack, spill stores/loads, static shared memory) and fails if
#   * a file includes anything but "common.cuh" (the shared helpers, which build.rs pastes into
#     the source for NVRTC; NVRTC has no system headers),
#   * nvcc or ptxas reports an error,
#   * a PTX file's .version is above 9.0 (the R580 driver rejects newer PTX),
#   * any kernel spills registers (spill stores or loads ≠ 0); a stack frame only warns.
# NVCC: nvcc to use (default: `nvcc` on PATH, else $CUDA_HOME/bin/nvcc); ptxas is taken from
# the same directory. HYPERGRAD_CUDA_ARCH: virtual architecture (default compute_90).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
arch="${HYPERGRAD_CUDA_ARCH:-compute_90}"
nvcc="${NVCC:-}"
if [[ -z "$nvcc" ]]; then
    if command -v nvcc >/dev/null 2>&1; then nvcc=nvcc
    elif [[ -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]]; then nvcc="$CUDA_HOME/bin/nvcc"
    else echo "check_kernels: no nvcc (set NVCC or CUDA_HOME)" >&2; exit 2; fi
fi
nvcc="$(command -v "$nvcc")"
ptxas="$(dirname "$nvcc")/ptxas"
[[ -x "$ptxas" ]] || { echo "check_kernels: no ptxas next to $nvcc" >&2; exit 2; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
status=0

shopt -s nullglob
sources=("$root"/cuda/*.cu)
if grep -n '^[[:space:]]*#[[:space:]]*include' "$root"/cuda/*.cuh; then
    echo "FAIL: a header includes another (build.rs pastes one level only)" >&2; status=1
fi
(( ${#sources[@]} > 0 )) || { echo "check_kernels: no cuda/*.cu" >&2; exit 2; }

echo "nvcc: $("$nvcc" --version | grep -i release)  arch: $arch -> sm_90"
printf '%-28s %-12s %5s %6s %7s %7s %6s\n' kernel file regs stack spill_st spill_ld smem
for src in "${sources[@]}"; do
    name="$(basename "$src" .cu)"
    if grep -n '^[[:space:]]*#[[:space:]]*include' "$src" | grep -v '#include "common.cuh"$'; then
        echo "FAIL $name.cu: only #include \"common.cuh\" is allowed (NVRTC)" >&2; status=1
    fi
    "$nvcc" -ptx -O3 -arch="$arch" -I "$root/cuda" -o "$work/$name.ptx" "$src"
    version="$(awk '$1 == ".version" { print $2; exit }' "$work/$name.ptx")"
    if ! awk -v v="$version" 'BEGIN { split(v, p, "."); exit !(p[1] < 9 || (p[1] == 9 && p[2] <= 0)) }'; then
        echo "FAIL $name.cu: PTX .version $version > 9.0" >&2; status=1
    fi
    if ! "$ptxas" -arch=sm_90 -v -o "$work/$name.cubin" "$work/$name.ptx" 2>"$work/$name.log"; then
        cat "$work/$name.log" >&2; echo "FAIL $name.cu: ptxas" >&2; exit 1
    fi
    # One row per entry: the name line, then "N bytes stack frame, S bytes spill stores, L
    # bytes spill loads", then "Used R registers, ..., M bytes smem".
    awk -v file="$name.cu" '
        /Compiling entry function/ { k = $0; sub(/.*function \047/, "", k); sub(/\047.*/, "", k) }
        /bytes stack frame/ { st = $1; ss = $5; sl = $9 }
        /Used [0-9]+ registers/ {
            r = $0; sub(/.*Used /, "", r); sub(/ registers.*/, "", r)
            sm = 0; if (match($0, /[0-9]+ bytes smem/)) { sm = substr($0, RSTART, RLENGTH); sub(/ .*/, "", sm) }
            printf "%-28s %-12s %5s %6s %7s %7s %6s\n", k, file, r, st, ss, sl, sm
            if (ss != 0 || sl != 0) bad = 1
            if (st != 0) printf "WARN %s: %s-byte stack frame (local memory)\n", k, st > "/dev/stderr"
        }
        END { exit bad }' "$work/$name.log" || { echo "FAIL $name.cu: register spills" >&2; status=1; }
done
if (( status == 0 )); then echo "check_kernels: OK"; else echo "check_kernels: FAILED" >&2; fi
exit "$status"
