#!/usr/bin/env python3
"""ℓ1 peer benchmark: time to reach the held-out MSE of a 100-point LassoCV grid.

For each problem (a leukemia-shaped dense design, 38 × 7,129 with 34 extra test rows, and a
sparse text-like design, 20,000 × 40,000 with 5,000 extra test rows), this script

1. generates the data (seeded numpy), writes train / val / test LIBSVM files, and reads them
   back, so that every tool works on exactly the same numbers;
2. runs scikit-learn's ``LassoCV`` (100 alphas, default eps=1e-3 and tol, no intercept) with
   the single split ``cv=[(train, val)]``; the target T is the smallest held-out MSE on its
   grid; its time is the whole ``fit`` (path + refit, which is what a user pays);
3. runs sparho's ``hoag_search`` (``SklearnLasso`` inner solver, ``HeldOutMSE`` on the same
   split, implicit-forward hypergradients, exponential inner-tolerance schedule) and records
   the time of the first criterion evaluation with held-out MSE ≤ T;
4. runs ours (``cargo bench --bench l1_peers``: HOAG with implicit-forward on prox-CD) on the
   files and takes the same time-to-target;
5. reports, for each tool, the best held-out MSE and the test MSE of its chosen λ (a Lasso fit
   on the training rows at that λ with tol=1e-10, the same for every tool).

With ``--criterion cv`` (or ``both``, the default) the same is done for 5-fold
cross-validation on all problem rows (train + val): ``LassoCV(cv=5)``'s folds (consecutive
blocks, no shuffle) are given to every tool, the target is the smallest mean-over-folds MSE
on its grid, sparho uses ``CrossVal`` with warm start, ours ``--folds-file``; the test MSE is
that of a fit on all problem rows at the chosen λ.

The objective is the same everywhere: (1/2n)‖y − Xw‖² + λ‖w‖₁ (scikit-learn's alpha = λ),
criterion (1/m)‖y' − X'w‖². Single-threaded tools on one machine, one run.

Usage: python lasso_peers.py [--out DIR] [--only leukemia|text] [--criterion heldout|cv|both]
                             [--json FILE]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.datasets import dump_svmlight_file, load_svmlight_file
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, LassoCV

import sparho
from sklearn.model_selection import KFold
from sparho import L1, CrossVal, HeldOutMSE, Problem, SquaredLoss, hoag_search, implicit_forward
from sparho.adapters import SklearnLasso

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def leukemia_like(seed=0):
    """72 × 7,129 dense Gaussian design with AR(1) correlation 0.9 between neighbouring
    genes, standardised columns; 10 true genes; noise for SNR ≈ 3. Rows 0..37 are the
    problem (19 train, 19 val), rows 38..71 the test set."""
    rng = np.random.default_rng(seed)
    n, d, rho = 72, 7129, 0.9
    z = rng.standard_normal((n, d))
    x = np.empty_like(z)
    x[:, 0] = z[:, 0]
    for j in range(1, d):
        x[:, j] = rho * x[:, j - 1] + np.sqrt(1 - rho * rho) * z[:, j]
    x = (x - x.mean(0)) / x.std(0)
    w = np.zeros(d)
    w[rng.choice(d, 10, replace=False)] = rng.choice([-1, 1], 10) * rng.uniform(1, 3, 10)
    signal = x @ w
    y = signal + rng.standard_normal(n) * signal.std() / 3
    return x, y, (19, 19, 34)


def text_like(seed=0):
    """25,000 × 40,000 sparse tf-idf-like design: about 60 distinct terms per row drawn from
    a Zipf-like vocabulary (p_j ∝ (j + 10)^-1.1), values (1 + log count)·idf, rows scaled to
    unit norm; 200 true terms; noise for SNR ≈ 2. Rows 0..19,999 are the problem (14,000
    train, 6,000 val), the last 5,000 the test set."""
    rng = np.random.default_rng(seed)
    n, d, per_row = 25_000, 40_000, 70
    p = (np.arange(d) + 10.0) ** -1.1
    p /= p.sum()
    cols = rng.choice(d, size=(n, per_row), p=p)
    rows = np.repeat(np.arange(n), per_row)
    x = sp.csr_matrix((np.ones(n * per_row), (rows, cols.ravel())), shape=(n, d))
    x.sum_duplicates()
    x.data = 1.0 + np.log(x.data)
    df = np.bincount(x.indices, minlength=d)
    idf = np.log((1 + n) / (1 + df)) + 1
    x = x @ sp.diags(idf)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
    x = sp.diags(1 / np.maximum(norms, 1e-12)) @ x
    x = sp.csr_matrix(x)
    w = np.zeros(d)
    w[rng.choice(2000, 200, replace=False)] = rng.standard_normal(200) * 2
    signal = x @ w
    y = signal + rng.standard_normal(n) * signal.std() / 2
    return x, y, (14_000, 6_000, 5_000)


def write_and_reload(name, x, y, sizes, out):
    ntr, nva, nte = sizes
    parts = {"train": slice(0, ntr), "val": slice(ntr, ntr + nva), "test": slice(ntr + nva, ntr + nva + nte)}
    parts["trval"] = slice(0, ntr + nva)
    files, data = {}, {}
    d = x.shape[1]
    for part, sl in parts.items():
        path = os.path.join(out, f"{name}_{part}.svm")
        dump_svmlight_file(x[sl], y[sl], path, zero_based=False)
        xr, yr = load_svmlight_file(path, n_features=d, zero_based=False)
        files[part] = path
        data[part] = (xr.tocsc() if sp.issparse(x) else xr.toarray(), yr)
    return files, data


def mse(x, y, w):
    r = y - x @ w
    return float(r @ r) / len(y)


def test_mse(data, lam):
    xtr, ytr = data["train"]
    est = Lasso(alpha=lam, fit_intercept=False, tol=1e-10, max_iter=100_000).fit(xtr, ytr)
    return mse(data["val"][0], data["val"][1], est.coef_), mse(data["test"][0], data["test"][1], est.coef_)


def test_mse_cv(data, lam):
    x, y = data["trval"]
    est = Lasso(alpha=lam, fit_intercept=False, tol=1e-10, max_iter=100_000).fit(x, y)
    return None, mse(data["test"][0], data["test"][1], est.coef_)


def cv_folds(n, k=5):
    return [(tr, va) for tr, va in KFold(n_splits=k).split(np.arange(n))]


def run_lassocv_cv(data, folds):
    x, y = data["trval"]
    kwargs = dict(cv=folds, fit_intercept=False, n_jobs=1)
    try:
        est = LassoCV(alphas=100, **kwargs)
    except TypeError:
        est = LassoCV(n_alphas=100, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        est.fit(x, y)
        seconds = time.perf_counter() - t0
    path = est.mse_path_.mean(axis=1)
    return {"seconds": seconds, "target": float(path.min()), "lambda": float(est.alphas_[int(np.argmin(path))]), "grid_min": float(est.alphas_.min())}


def run_sparho_cv(data, folds, target, n_iter):
    x, y = data["trval"]
    problem = Problem(SquaredLoss(), L1(), x, y)
    crit = Timed(CrossVal(folds=tuple((np.asarray(a, dtype=np.int32), np.asarray(b, dtype=np.int32)) for a, b in folds), warm_start=True))
    lam_max = max(float(np.max(np.abs(x[tr].T @ y[tr]))) / len(tr) for tr, _ in folds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crit.t0 = time.perf_counter()
        hoag_search(problem, lam_max / 10, solver=SklearnLasso(), criterion=crit,
                    hypergrad=implicit_forward, n_iter=n_iter, tolerance_decrease="exponential")
        total = time.perf_counter() - crit.t0
    reached = next((t for t, v, _ in crit.log if v <= target), None)
    best = min(crit.log, key=lambda e: e[1])
    return {"seconds_to_target": reached, "best_loss": best[1], "lambda": best[2],
            "total_seconds": total, "evaluations": len(crit.log)}


def run_ours_cv(files, folds, n, target, steps, out):
    ids = np.empty(n, dtype=int)
    for f, (_, va) in enumerate(folds):
        ids[va] = f
    path = os.path.join(out, "folds.txt")
    np.savetxt(path, ids, fmt="%d")
    cmd = ["cargo", "bench", "-q", "--bench", "l1_peers", "--", "--train", files["trval"],
           "--folds-file", path, "--target", repr(target), "--steps", str(steps)]
    out_ = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    res = json.loads(out_.stdout.strip().splitlines()[-1])
    res.pop("trace", None)
    return res


def stack(data):
    xtr, ytr = data["train"]
    xva, yva = data["val"]
    x = sp.vstack([xtr, xva]).tocsc() if sp.issparse(xtr) else np.vstack([xtr, xva])
    return x, np.concatenate([ytr, yva]), len(ytr), len(yva)


def run_lassocv(data):
    x, y, ntr, nva = stack(data)
    split = [(np.arange(ntr), np.arange(ntr, ntr + nva))]
    kwargs = dict(cv=split, fit_intercept=False, n_jobs=1)
    try:
        est = LassoCV(alphas=100, **kwargs)
    except TypeError:
        est = LassoCV(n_alphas=100, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        est.fit(x, y)
        seconds = time.perf_counter() - t0
    path = est.mse_path_.ravel()
    target = float(path.min())
    return {"seconds": seconds, "target": target, "lambda": float(est.alphas_[int(np.argmin(path))]), "grid_min": float(est.alphas_.min())}


class Timed:
    """Wraps a sparho criterion and timestamps every evaluation."""

    def __init__(self, inner):
        self.inner = inner
        self.t0 = None
        self.log = []

    def value(self, *a, **k):
        v = self.inner.value(*a, **k)
        self.log.append((time.perf_counter() - self.t0, float(v), None))
        return v

    def value_and_hypergrad(self, problem, hp, *a, **k):
        r = self.inner.value_and_hypergrad(problem, hp, *a, **k)
        self.log.append((time.perf_counter() - self.t0, float(r.value), float(np.asarray(hp).ravel()[0])))
        return r


def run_sparho(data, target, n_iter):
    x, y, ntr, nva = stack(data)
    problem = Problem(SquaredLoss(), L1(), x, y)
    crit = Timed(HeldOutMSE(idx_train=np.arange(ntr), idx_val=np.arange(ntr, ntr + nva)))
    xtr, ytr = data["train"]
    lam_max = float(np.max(np.abs(xtr.T @ ytr))) / ntr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crit.t0 = time.perf_counter()
        res = hoag_search(problem, lam_max / 10, solver=SklearnLasso(), criterion=crit,
                          hypergrad=implicit_forward, n_iter=n_iter,
                          tolerance_decrease="exponential")
        total = time.perf_counter() - crit.t0
    reached = next((t for t, v, _ in crit.log if v <= target), None)
    best = min(crit.log, key=lambda e: e[1])
    return {"seconds_to_target": reached, "best_loss": best[1], "lambda": best[2],
            "total_seconds": total, "evaluations": len(crit.log)}


def run_ours(files, target, steps):
    cmd = ["cargo", "bench", "-q", "--bench", "l1_peers", "--", "--train", files["train"],
           "--val", files["val"], "--target", repr(target), "--steps", str(steps)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_wall_seconds"] = wall
    res.pop("trace", None)
    return res


def heldout(data, files, args):
    print("-- held-out criterion (train / val split)", flush=True)
    lcv = run_lassocv(data)
    lcv["val_mse"], lcv["test_mse"] = test_mse(data, lcv["lambda"])
    print(f"LassoCV: {lcv['seconds']:.3f} s, target held-out MSE {lcv['target']:.6g} at λ={lcv['lambda']:.4g}", flush=True)
    ours = run_ours(files, lcv["target"], args.steps)
    ours["val_mse"], ours["test_mse"] = test_mse(data, ours["best_lambda"])
    print(f"ours:    to target {ours['seconds_to_target']} s, best {ours['best_loss']:.6g} (λ={ours['best_lambda']:.4g}), search {ours['search_seconds']:.3f} s, load {ours['load_seconds']:.3f} s", flush=True)
    sph = run_sparho(data, lcv["target"], args.steps)
    if sph["lambda"] is not None:
        sph["val_mse"], sph["test_mse"] = test_mse(data, sph["lambda"])
    print(f"sparho:  to target {sph['seconds_to_target']} s, best {sph['best_loss']:.6g}, total {sph['total_seconds']:.3f} s, {sph['evaluations']} evaluations", flush=True)
    for k, v in (("LassoCV", lcv), ("ours", ours), ("sparho", sph)):
        if "test_mse" in v:
            print(f"  {k:8s} chosen λ: val MSE {v['val_mse']:.6g}, test MSE {v['test_mse']:.6g}")
    t_ours = ours["seconds_to_target"]
    if t_ours:
        print(f"  speed-up vs LassoCV {lcv['seconds'] / t_ours:.1f}x" + (
            f", vs sparho {sph['seconds_to_target'] / t_ours:.1f}x" if sph["seconds_to_target"] else ", sparho did not reach the target"))
    return {"lassocv": lcv, "ours": ours, "sparho": sph}


def cross_validated(data, files, args):
    print("-- 5-fold cross-validation on train + val", flush=True)
    n = len(data["trval"][1])
    folds = cv_folds(n)
    lcv = run_lassocv_cv(data, folds)
    lcv["test_mse"] = test_mse_cv(data, lcv["lambda"])[1]
    print(f"LassoCV(cv=5): {lcv['seconds']:.3f} s, target CV MSE {lcv['target']:.6g} at λ={lcv['lambda']:.4g}", flush=True)
    ours = run_ours_cv(files, folds, n, lcv["target"], args.steps, args.out)
    ours["test_mse"] = test_mse_cv(data, ours["best_lambda"])[1]
    print(f"ours:    to target {ours['seconds_to_target']} s, best {ours['best_loss']:.6g} (λ={ours['best_lambda']:.4g}), search {ours['search_seconds']:.3f} s", flush=True)
    sph = run_sparho_cv(data, folds, lcv["target"], args.steps)
    if sph["lambda"] is not None:
        sph["test_mse"] = test_mse_cv(data, sph["lambda"])[1]
    print(f"sparho:  to target {sph['seconds_to_target']} s, best {sph['best_loss']:.6g}, total {sph['total_seconds']:.3f} s, {sph['evaluations']} evaluations", flush=True)
    for k, v in (("LassoCV", lcv), ("ours", ours), ("sparho", sph)):
        if "test_mse" in v:
            print(f"  {k:8s} chosen λ: test MSE {v['test_mse']:.6g}")
    t_ours = ours["seconds_to_target"]
    if t_ours:
        print(f"  speed-up vs LassoCV {lcv['seconds'] / t_ours:.1f}x" + (
            f", vs sparho {sph['seconds_to_target'] / t_ours:.1f}x" if sph["seconds_to_target"] else ", sparho did not reach the target"))
    return {"lassocv": lcv, "ours": ours, "sparho": sph}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/hypergrad_l1_peers")
    ap.add_argument("--only", choices=["leukemia", "text"])
    ap.add_argument("--json")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--criterion", choices=["heldout", "cv", "both"], default="both")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    # Build ours first so that compilation is not timed.
    subprocess.run(["cargo", "bench", "-q", "--bench", "l1_peers", "--no-run"], cwd=REPO, check=True)
    import sklearn
    report = {"machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs",
              "python": sys.version.split()[0], "sklearn": sklearn.__version__,
              "sparho": sparho.__version__, "problems": {}}
    gens = {"leukemia": leukemia_like, "text": text_like}
    for name, gen in gens.items():
        if args.only and name != args.only:
            continue
        x, y, sizes = gen()
        files, data = write_and_reload(name, x, y, sizes, args.out)
        nnz = data["train"][0].nnz if sp.issparse(data["train"][0]) else data["train"][0].size
        print(f"== {name}: train {data['train'][0].shape}, val {data['val'][0].shape[0]} rows, nnz(train) {nnz}", flush=True)
        entry = {"shape": list(x.shape), "sizes": sizes, "nnz_train": int(nnz)}
        if args.criterion in ("heldout", "both"):
            entry.update(heldout(data, files, args))
        if args.criterion in ("cv", "both"):
            entry["cv5"] = cross_validated(data, files, args)
        report["problems"][name] = entry
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
