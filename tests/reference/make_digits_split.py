"""The held-out digits hyper-cleaning split of issue 21, as index lists.

tests/f32_refinement.rs rebuilds the issue's configuration from the bundled digits
(data/digits.csv.gz, which is scikit-learn's load_digits, row for row) and this file's
lists: NumPy's generator is not reimplemented in Rust. The recipe, from the issue:

    rng = np.random.default_rng(1); p = rng.permutation(1797)
    train p[:800], validation p[800:1100], test p[1100:]
    flip = rng.random(800) < 0.5; flipped labels (y + rng.integers(1, 10, flip.sum())) % 10

Run from the repository root: python3 tests/reference/make_digits_split.py
"""
import gzip
import json

import numpy as np

rows = np.loadtxt(gzip.open("data/digits.csv.gz", "rt"), delimiter=",")
y = rows[:, 0].astype(int)
rng = np.random.default_rng(1)
p = rng.permutation(len(y))
train = p[:800]
labels = y[train].copy()
flip = rng.random(800) < 0.5
labels[flip] = (labels[flip] + rng.integers(1, 10, flip.sum())) % 10
with open("tests/reference/digits_seed1_split.json", "w") as f:
    json.dump({"permutation": p.tolist(), "train_labels": labels.tolist()}, f)
    f.write("\n")
