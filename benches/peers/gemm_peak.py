#!/usr/bin/env python3
"""hypergrad's CPU GEMM (faer, as `hypergrad bench kernels` measures its GEMM ceiling) against
the fastest GEMM on the machine that we know of (PyTorch's, i.e. MKL), f32, same threads,
interleaved rounds, medians.

    target/torch-venv/bin/python benches/peers/gemm_peak.py --side 1024 --threads 1 --rounds 5

Each round runs `hypergrad bench kernels --device cpu --gemm-side S --json` (its
"ceiling: GEMM (f32)" row, the median of its repetitions) and then S×S×S `torch.mm` in f32
(median of --reps timed calls after one warm-up), one after the other, so that a change in
the machine's load hits both.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def ours(binary, side, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([binary, "bench", "kernels", "--device", "cpu", "--gemm-side", str(side),
                          "--n", "4096", "--d", "64", "--json"],
                         check=True, capture_output=True, text=True, env=env).stdout
    rows = json.loads(out)["kernels"]
    return next(r["tflop_per_s"] for r in rows if r["kernel"] == "ceiling: GEMM (f32)") * 1e3


def torch_mm(side, threads, reps):
    import torch
    torch.set_num_threads(threads)
    a = torch.randn(side, side, dtype=torch.float32)
    b = torch.randn(side, side, dtype=torch.float32)
    torch.mm(a, b)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * side ** 3 / statistics.median(times) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--side", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "hypergrad"))
    args = p.parse_args()
    import torch
    rounds = []
    for r in range(args.rounds):
        rounds.append((ours(args.binary, args.side, args.threads),
                       torch_mm(args.side, args.threads, args.reps), os.getloadavg()[0]))
        print(f"round {r + 1}: hypergrad {rounds[-1][0]:.1f} GFLOP/s, PyTorch {rounds[-1][1]:.1f} "
              f"GFLOP/s, load {rounds[-1][2]:.2f}", file=sys.stderr)
    ours_med = statistics.median(x[0] for x in rounds)
    peer_med = statistics.median(x[1] for x in rounds)
    print(json.dumps({"side": args.side, "threads": args.threads, "torch": torch.__version__,
                      "hypergrad_gflops": ours_med, "pytorch_gflops": peer_med,
                      "fraction_of_pytorch": ours_med / peer_med,
                      "load_averages": [x[2] for x in rounds],
                      "date": time.strftime("%Y-%m-%d %H:%M")}))


if __name__ == "__main__":
    main()
