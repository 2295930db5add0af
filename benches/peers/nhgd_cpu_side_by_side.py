#!/usr/bin/env python3
"""hypergrad's NHGD outer step against the PyTorch peer (nhgd_torch.py) on the CPU, interleaved.

Both sides run the same algorithm (benches/peers/nhgd_torch.py's docstring states it): T SGD
steps of batch b on hyper-cleaning of a linear softmax model with the fixed ridge C = 0.01,
SGD step 1/(L + C), the damped empirical Fisher (damping R = C I) tracked as K-FAC, dense
Woodbury or dense accumulate, then q and the hypergradient on the validation rows. Each
round runs, per precision, `hypergrad bench nhgd` then the peer, one after the other, so
that a change in the machine's load hits both; the table gives, per case, the median over
rounds of each round's median outer step.

    target/torch-venv/bin/python benches/peers/nhgd_cpu_side_by_side.py \\
        --shape digits --rounds 5 --out benches/peers/nhgd_cpu-DATE.json

Shapes: digits (n = 800, m = 400, d = 64, T = 10, b = 128; P = 640) and mnist
(n = 20,000, m = 4,000, d = 785, T = 10, b = 128; P = 7,850: kfac only unless --dense, since
the dense P×P curvature needs 0.25 GB (f32) to 0.5 GB (f64) and 10²–10³ GFLOP per outer step:
seconds per step on two cores).
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
SHAPES = {
    "digits": dict(n=800, m=400, d=64, T=10, b=128, dense=True),
    "mnist": dict(n=20000, m=4000, d=785, T=10, b=128, dense=False),
}
# hypergrad's case names → the peer's curvature names.
CASES = {
    "nhgd kfac": "kfac",
    "nhgd dense woodbury": "dense",
    "nhgd dense accumulate": "dense-accumulate",
}


def env_with_threads(threads):
    """Both sides' thread pools at `threads` (rayon for hypergrad; OpenMP/MKL for PyTorch)."""
    env = dict(os.environ)
    if threads:
        for var in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    return env


def ours(binary, shape, precision, reps, threads):
    cmd = [binary, "bench", "nhgd", "--device", "cpu", "--precision", precision,
           "--n", str(shape["n"]), "--m", str(shape["m"]), "--d", str(shape["d"]),
           "--inner-steps", str(shape["T"]), "--batch-size", str(shape["b"]),
           "--reps", str(reps), "--json"]
    if shape["dense"]:
        cmd.append("--dense")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env=env_with_threads(threads)).stdout
    cases = json.loads(out)["cases"]
    return {c["case"]: c["outer_step_seconds"] for c in cases if c["case"] in CASES}


def peer(shape, precision, reps, threads):
    curvatures = [v for k, v in CASES.items() if shape["dense"] or "dense" not in k]
    cmd = [sys.executable, os.path.join(HERE, "nhgd_torch.py"), "--device", "cpu",
           "--n", str(shape["n"]), "--m", str(shape["m"]), "--d", str(shape["d"]),
           "--c", "10", "--T", str(shape["T"]), "--b", str(shape["b"]),
           "--curvature", ",".join(curvatures), "--repeats", str(reps),
           "--dtype", {"f32": "float32", "f64": "float64"}[precision]]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env=env_with_threads(threads)).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    by_curvature = {r["curvature"]: r["outer_step_seconds_median"] for r in rows}
    return {case: by_curvature[c] for case, c in CASES.items() if c in by_curvature}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=SHAPES, default="digits")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=5, help="timed outer steps per run")
    p.add_argument("--precision", default="f32,f64")
    p.add_argument("--threads", type=int, default=0,
                   help="threads of both sides (default: each library's own default)")
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "hypergrad"))
    p.add_argument("--dense", action="store_true",
                   help="also the dense cases (Woodbury, accumulate) at the mnist shape")
    p.add_argument("--only-dense", action="store_true", help="the dense cases only (no kfac)")
    p.add_argument("--out", help="write the raw rounds and the medians as JSON")
    args = p.parse_args()
    shape = dict(SHAPES[args.shape])
    if args.dense or args.only_dense:
        shape["dense"] = True
    if args.only_dense:
        CASES.pop("nhgd kfac")
    precisions = args.precision.split(",")
    rounds = {prec: {"hypergrad": [], "pytorch": []} for prec in precisions}
    loads = []
    for r in range(args.rounds):
        for prec in precisions:
            rounds[prec]["hypergrad"].append(ours(args.binary, shape, prec, args.reps, args.threads))
            rounds[prec]["pytorch"].append(peer(shape, prec, args.reps, args.threads))
        loads.append(os.getloadavg()[0])
        print(f"round {r + 1}/{args.rounds} done, load average {loads[-1]:.2f}", file=sys.stderr)
    medians = {}
    print(f"| case | precision | PyTorch ms | hypergrad ms | PyTorch ÷ hypergrad |")
    print(f"|---|---|---:|---:|---:|")
    for case in CASES:
        for prec in precisions:
            runs = rounds[prec]
            if case not in runs["hypergrad"][0] or case not in runs["pytorch"][0]:
                continue
            ours_ms = 1e3 * statistics.median(x[case] for x in runs["hypergrad"])
            peer_ms = 1e3 * statistics.median(x[case] for x in runs["pytorch"])
            medians[f"{case} {prec}"] = {"hypergrad_ms": ours_ms, "pytorch_ms": peer_ms}
            print(f"| {case} | {prec} | {peer_ms:.2f} | {ours_ms:.2f} | {peer_ms / ours_ms:.2f}× |")
    print(f"\nload average after each round: {', '.join(f'{x:.2f}' for x in loads)}",
          file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"shape": args.shape, **shape, "rounds": rounds, "medians": medians,
                       "load_averages": loads, "threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M"),
                       "cpu_count": os.cpu_count()}, f, indent=1)


if __name__ == "__main__":
    main()
