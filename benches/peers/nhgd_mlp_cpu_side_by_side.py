#!/usr/bin/env python3
"""`hypergrad bench nhgd --model mlp:H` against the PyTorch peer nhgd_mlp_torch.py on the CPU,
interleaved: each round runs the Rust bench, then the peer, so that a change in the machine's
load hits both. The table gives, per case, the median over rounds of each run's median outer
step (the peer's docstring states what is matched).

    /work/main/target/torch-venv/bin/python benches/peers/nhgd_mlp_cpu_side_by_side.py \\
        --hidden 300 --n 10000 --m 2000 --rounds 3 --reps 3 --threads 1 --out FILE.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# hypergrad's case names → the peer's
CASES = {"sgd loop only": "none", "nhgd kfac": "kfac"}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", default="300")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--m", type=int, default=2_000)
    p.add_argument("--d", type=int, default=785)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--b", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="f32", choices=("f32", "f64"))
    p.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "hypergrad"))
    p.add_argument("--out")
    a = p.parse_args()
    env = dict(os.environ)
    for k in ("RAYON_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[k] = str(a.threads)
    rounds = []
    for r in range(a.rounds):
        rust = subprocess.run(
            [a.binary, "bench", "nhgd", "--device", "cpu", "--precision", a.precision,
             "--model", f"mlp:{a.hidden}", "--n", str(a.n), "--m", str(a.m), "--d", str(a.d),
             "--inner-steps", str(a.T), "--batch-size", str(a.b), "--reps", str(a.reps),
             "--json"], check=True, capture_output=True, text=True, env=env)
        rust = json.loads(rust.stdout.strip().splitlines()[-1])
        torch = subprocess.run(
            [sys.executable, os.path.join(HERE, "nhgd_mlp_torch.py"), "--hidden", a.hidden,
             "--n", str(a.n), "--m", str(a.m), "--d", str(a.d), "--T", str(a.T), "--b", str(a.b),
             "--repeats", str(a.reps), "--threads", str(a.threads),
             "--dtype", "float32" if a.precision == "f32" else "float64"],
            check=True, capture_output=True, text=True, env=env)
        torch = json.loads(torch.stdout.strip().splitlines()[-1])
        rounds.append({"hypergrad": rust, "pytorch": torch,
                       "loadavg": os.getloadavg()})
        print(f"round {r + 1}: load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    table = {}
    for case, peer in CASES.items():
        hg = [next(c["outer_step_seconds"] for c in x["hypergrad"]["cases"] if c["case"] == case)
              for x in rounds]
        pt = [x["pytorch"]["cases"][peer]["outer_step_seconds"] for x in rounds]
        table[case] = {"hypergrad_s": statistics.median(hg), "pytorch_s": statistics.median(pt),
                       "hypergrad_rounds": hg, "pytorch_rounds": pt}
    for side in ("hypergrad_s", "pytorch_s"):
        table.setdefault("kfac_over_plain", {})[side] = (
            table["nhgd kfac"][side] / table["sgd loop only"][side])
    print("| case | hypergrad s | PyTorch s | PyTorch ÷ hypergrad |")
    print("|---|---:|---:|---:|")
    for case in CASES:
        t = table[case]
        print(f"| {case} | {t['hypergrad_s']:.3f} | {t['pytorch_s']:.3f} | "
              f"{t['pytorch_s'] / t['hypergrad_s']:.2f}× |")
    k = table["kfac_over_plain"]
    print(f"kfac ÷ plain: hypergrad {k['hypergrad_s']:.2f}×, PyTorch {k['pytorch_s']:.2f}×")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "table": table, "rounds": rounds}, f, indent=1)


if __name__ == "__main__":
    main()
