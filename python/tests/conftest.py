"""Shared helpers: the release binary of the command line, and writers of CSV and LIBSVM
files that hold exactly the numbers the arrays hold (17 significant digits)."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _find_cli():
    candidates = [os.environ.get("HYPERGRAD_BIN")]
    target = os.environ.get("CARGO_TARGET_DIR")
    if target:
        candidates.append(os.path.join(target, "release", "hypergrad"))
    candidates.append(os.path.join(REPO, "target", "release", "hypergrad"))
    candidates.append(shutil.which("hypergrad"))
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


@pytest.fixture(scope="session")
def cli():
    """Runs the command line; returns (exit code, stdout, stderr)."""
    path = _find_cli()
    if path is None:
        pytest.skip("the hypergrad binary is not built (cargo build --release, or set HYPERGRAD_BIN)")

    def call(*args):
        out = subprocess.run([path, *map(str, args)], capture_output=True, text=True)
        return out.returncode, out.stdout, out.stderr

    def json_of(*args):
        code, stdout, stderr = call(*args)
        assert code == 0, stderr
        return json.loads(stdout.strip().splitlines()[-1])

    call.json = json_of
    return call


def write_csv(path, x, y):
    """Label first, then the features, full precision."""
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    with open(path, "w") as f:
        for row, label in zip(x, y):
            f.write(",".join(repr(float(v)) for v in (label, *row)) + "\n")
    return str(path)


def write_libsvm(path, x, y):
    """1-based indices, stored entries only, full precision."""
    import scipy.sparse as sp

    x = sp.csr_matrix(x)
    x.sort_indices()
    with open(path, "w") as f:
        for i, label in enumerate(y):
            lo, hi = x.indptr[i], x.indptr[i + 1]
            items = " ".join(f"{j + 1}:{float(v)!r}" for j, v in zip(x.indices[lo:hi], x.data[lo:hi]))
            f.write(f"{float(label)!r} {items}".rstrip() + "\n")
    return str(path)


@pytest.fixture(scope="session")
def diabetes():
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    y = y - y.mean()
    return x[:300], y[:300], x[300:], y[300:]


@pytest.fixture(scope="session")
def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x[:1000], y[:1000], x[1000:1400], y[1000:1400], x[1400:], y[1400:]


@pytest.fixture(scope="session")
def sparse_regression():
    """A small text-like sparse regression problem (CSR), train and validation parts."""
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    n, d = 400, 300
    x = sp.random(n, d, density=0.05, format="csr", random_state=rng)
    w = np.zeros(d)
    w[rng.choice(d, 20, replace=False)] = rng.standard_normal(20)
    y = x @ w + 0.05 * rng.standard_normal(n)
    return x[:300], y[:300], x[300:], y[300:]
