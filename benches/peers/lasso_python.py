#!/usr/bin/env python3
"""The Python package's LassoHO against LassoCV and sparho, all called from Python in one
process, on the text-like sparse problem of ``lasso_peers.py``; and the cost of the Python
layer: the same search run by the command line on the same rows.

1. Generates the text-like problem (``lasso_peers.text_like``: 20,000 problem rows, 40,000
   sparse columns; the 5,000 test rows are not used here) as a SciPy CSR matrix.
2. ``hg.LassoHO(val_fraction=0.3, max_steps=30).fit(X, y)``: HOAG with implicit-forward
   hypergradients on 14,000 training rows, held-out MSE on 6,000 validation rows (drawn with
   ``random_state=0``). Timed: the whole ``fit``; inside it, the call into the extension
   (``_native.run``), and inside that the search as Rust clocks it (the result's
   ``seconds``).
3. ``LassoCV(cv=[(train, val)], alphas=100, fit_intercept=False)`` on the same split; its
   target T is the smallest held-out MSE on its grid. Timed: the whole ``fit``.
4. sparho's ``hoag_search`` on the same split (``lasso_peers.run_sparho``: ``SklearnLasso``,
   ``HeldOutMSE``, implicit-forward, 30 iterations): total time and time to reach T.
5. The command line on the same rows (written to LIBSVM files): ``hypergrad run --problem
   lasso --outer-opt hoag --outer-steps 30 --inner-tol 1e-4 --json``; its ``seconds`` is the
   same search clocked by Rust, its process time adds reading the files.

Python-layer overhead = (fit time − time inside ``_native.run``) / time inside
``_native.run``: argument checks, the row split, the CSR → (indptr, indices, data) arrays and
the JSON of the result. The extension's own share (copying the arrays into Rust, the final
refit of ``coef_``, serialising the result) is the difference between the ``_native.run`` time
and the search's ``seconds``, and is reported separately.

Usage: python benches/peers/lasso_python.py [--repeats 3] [--json FILE]
(needs ``pip install ./python scikit-learn scipy sparho`` and ``cargo build --release``)
"""

import argparse
import json
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import platform
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import scipy.sparse as sp

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import hypergrad as hg  # noqa: E402
from hypergrad import _api  # noqa: E402

try:
    import lasso_peers  # noqa: E402  (imports sparho)
    SPARHO = True
except ImportError as e:  # sparho missing
    print(f"sparho cannot be imported ({e}); its row is skipped", flush=True)
    SPARHO = False


class NativeClock:
    """Wraps ``_native.run`` and records the wall time of each call."""

    def __init__(self):
        self.inner = _api._native.run
        self.seconds = []

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds.append(time.perf_counter() - t0)


def write_libsvm(path, x, y):
    x = sp.csr_matrix(x)
    x.sort_indices()
    with open(path, "w") as f:
        for i, label in enumerate(y):
            lo, hi = x.indptr[i], x.indptr[i + 1]
            items = " ".join(f"{j + 1}:{float(v)!r}" for j, v in zip(x.indices[lo:hi], x.data[lo:hi]))
            f.write(f"{float(label)!r} {items}".rstrip() + "\n")


def cli_binary():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target"))
    path = os.environ.get("HYPERGRAD_BIN", os.path.join(target, "release", "hypergrad"))
    if not os.path.exists(path):
        sys.exit(f"{path} not found: cargo build --release first (or set HYPERGRAD_BIN)")
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--json")
    args = ap.parse_args()
    x, y, (ntr, nva, _) = lasso_peers.text_like() if SPARHO else _text_like()
    n = ntr + nva
    X, Y = sp.csr_matrix(x[:n]), np.asarray(y[:n])
    print(f"text-like problem: {X.shape[0]} rows × {X.shape[1]} columns, {X.nnz} stored entries", flush=True)

    report = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
              "python": sys.version.split()[0], "hypergrad": hg.__version__,
              "steps": args.steps, "runs": []}
    # The estimator's split, written to LIBSVM files for the command line.
    from hypergrad.estimators import holdout_indices

    tr, va = holdout_indices(n, 0.3, 0)
    tmp = tempfile.mkdtemp(prefix="hg_lasso_python_")
    ftr, fva = os.path.join(tmp, "train.svm"), os.path.join(tmp, "val.svm")
    write_libsvm(ftr, X[tr], Y[tr])
    write_libsvm(fva, X[va], Y[va])
    cmd = [cli_binary(), "run", "--problem", "lasso", "--train", ftr, "--val", fva,
           "--outer-opt", "hoag", "--outer-steps", str(args.steps), "--inner-tol", "1e-4", "--json"]

    # LassoHO.fit and the command line, alternating, so that both see the same load.
    clock = NativeClock()
    fits, clis = [], []
    for r in range(args.repeats):
        _api._native.run = clock
        clock.seconds.clear()
        est = hg.LassoHO(val_fraction=0.3, max_steps=args.steps, random_state=0)
        t0, c0 = time.perf_counter(), time.process_time()
        est.fit(X, Y)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        _api._native.run = clock.inner
        native = clock.seconds[-1]
        search = est.result_["seconds"]
        assert np.array_equal(est.train_indices_, tr)
        fits.append({"fit_seconds": wall, "fit_cpu_seconds": cpu, "native_seconds": native,
                     "search_seconds": search, "alpha": est.alpha_, "best_loss": est.best_loss_,
                     "evaluations": est.n_iter_,
                     "trace": [(e["seconds"], e["outer_loss"]) for e in est.trace_]})
        print(f"LassoHO.fit #{r}: {wall:.3f} s wall ({cpu:.3f} s CPU); _native.run {native:.3f} s; "
              f"search (Rust clock) {search:.3f} s; alpha_ {est.alpha_:.6g}, held-out MSE "
              f"{est.best_loss_:.7g}, {est.n_iter_} evaluations", flush=True)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        res = json.loads(out.stdout.strip().splitlines()[-1])
        clis.append({"process_seconds": wall, "search_seconds": res["seconds"],
                     "best_theta": res["best_theta"], "best_loss": res["best_loss"]})
        print(f"CLI run #{r}: process {wall:.3f} s (reads the LIBSVM files), search {res['seconds']:.3f} s; "
              f"alpha {np.exp(res['best_theta'][0]):.6g}, held-out MSE {res['best_loss']:.7g}", flush=True)
    report["lassoho"] = fits
    report["cli"] = clis

    # LassoCV on the same split.
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LassoCV

    kwargs = dict(cv=[(tr, va)], fit_intercept=False, n_jobs=1)
    try:
        lcv = LassoCV(alphas=100, **kwargs)
    except TypeError:
        lcv = LassoCV(n_alphas=100, **kwargs)
    Xc = X.tocsc()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0, c0 = time.perf_counter(), time.process_time()
        lcv.fit(Xc, Y)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    target = float(np.asarray(lcv.mse_path_).min())
    report["lassocv"] = {"fit_seconds": wall, "fit_cpu_seconds": cpu, "target": target,
                         "alpha": float(lcv.alpha_)}
    for fit in fits:
        hits = [t for t, loss in fit.pop("trace") if loss <= target]
        fit["search_seconds_to_target"] = hits[0] if hits else None
    print("LassoHO: search time to LassoCV's target (Rust clock, reported criterion): "
          + ", ".join(f"{f['search_seconds_to_target']}" for f in fits), flush=True)
    print(f"LassoCV.fit: {wall:.3f} s wall ({cpu:.3f} s CPU); target held-out MSE {target:.7g} at alpha {lcv.alpha_:.6g}", flush=True)

    if SPARHO:
        data = {"train": (Xc[tr], Y[tr]), "val": (Xc[va], Y[va])}
        sph = lasso_peers.run_sparho(data, target, args.steps)
        sph.pop("entries", None)
        report["sparho"] = sph
        print(f"sparho hoag_search: total {sph['total_seconds']:.3f} s, to target {sph['seconds_to_target']} s, "
              f"best {sph['best_loss']:.7g}, {sph['evaluations']} evaluations", flush=True)
    else:
        report["sparho"] = None

    med = lambda key, rows: float(np.median([r[key] for r in rows]))  # noqa: E731
    fit, native, search = med("fit_seconds", fits), med("native_seconds", fits), med("search_seconds", fits)
    layer = (fit - native) / native
    print(f"median LassoHO.fit {fit:.3f} s; _native.run {native:.3f} s; search {search:.3f} s; "
          f"Python layer {100 * layer:.2f}% of the Rust call; extension outside the search "
          f"{100 * (native - search) / search:.1f}% of the search; CLI search {med('search_seconds', clis):.3f} s, "
          f"CLI process {med('process_seconds', clis):.3f} s", flush=True)
    report["summary"] = {"fit_seconds": fit, "native_seconds": native, "search_seconds": search,
                         "python_layer_fraction": layer,
                         "cli_search_seconds": med("search_seconds", clis),
                         "cli_process_seconds": med("process_seconds", clis),
                         "lassocv_over_fit": report["lassocv"]["fit_seconds"] / fit}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


def _text_like():
    raise SystemExit("lasso_peers.py needs sparho; install it (pip install sparho)")


if __name__ == "__main__":
    main()
