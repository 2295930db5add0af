"""Python holds the same line as the command line (issue 21, item 4).

* 16 threads calling ``hg.hypergradient`` at once get the serial results, bit for bit.
* 1,000 fits leave the resident memory flat (within 10%).
* A pickled estimator predicts identically in another process.
* Every refusal is an exception: a sweep of bad inputs through the public functions, each
  case either working or raising ``ValueError``/``TypeError`` with a one-line message. The
  sweep runs in a child interpreter, restarted after a crash, so that a case which kills
  the interpreter fails as itself instead of taking the suite down. Sizes that cannot fit
  (a network of 10¹¹ weights, a rank of 10⁹, 10¹² unrolled steps) raise ``MemoryError``
  (or ``ValueError`` where a size cap refuses them first), planned before any allocation.
* Arrays in Fortran order, strided, reversed, big-endian or read-only work and give the
  bits that the C-ordered array gives.
"""

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import scipy.sparse as sp

import hypergrad as hg
from hypergrad.estimators import cv_folds, holdout_indices

HERE = os.path.dirname(os.path.abspath(__file__))

# ---- small data ------------------------------------------------------------------------------

_rng = np.random.default_rng(21)
XR = _rng.standard_normal((40, 4))
YR = XR @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * _rng.standard_normal(40)
XRV = _rng.standard_normal((20, 4))
YRV = XRV @ np.array([1.0, -2.0, 0.5, 0.0]) + 0.1 * _rng.standard_normal(20)
XC = _rng.standard_normal((80, 4))  # at least the library's mini-batch of 64 rows
YC = (np.arange(80) % 3).astype(np.float64)
XCV = _rng.standard_normal((30, 4))
YCV = (np.arange(30) % 3).astype(np.float64)


def _with(a, index, value):
    """A copy of ``a`` with ``a[index] = value``."""
    a = np.array(a, dtype=np.float64)
    a[index] = value
    return a


def _fingerprint(result):
    """Everything a hypergradient result says except how long it took, floats as their bits."""
    def bits(v):
        if isinstance(v, np.ndarray):
            return v.tobytes().hex()
        if isinstance(v, float):
            return v.hex()
        if isinstance(v, list):
            return [bits(u) for u in v]
        if isinstance(v, dict):
            return {k: bits(u) for k, u in v.items() if k != "seconds"}
        return v

    return json.dumps(bits(result), sort_keys=True)


# ---- 1. threads ------------------------------------------------------------------------------

THREAD_CASES = [
    ("ridge", XR, YR, XRV, YRV, dict(theta=0.3, method="cg")),
    ("ridge", XR, YR, XRV, YRV, dict(theta=np.linspace(-1, 1, 4), hyper="per-feature",
                                     method="exact")),
    ("softmax", XC, YC, XCV, YCV, dict(theta=-1.0, hyper="per-class", method="cg")),
    ("hyperclean", XC, YC, XCV, YCV, dict(method="nhgd", curvature="kfac", batch_size=16)),
    # The dense update named: `auto` picks Woodbury or accumulate by timing them, so under
    # load two calls may pick differently and differ in the last bits.
    ("hyperclean", XC, YC, XCV, YCV, dict(method="nhgd", curvature="dense",
                                          fisher_update="accumulate", batch_size=16)),
    ("lasso", XR, YR, XRV, YRV, dict(method="implicit-forward")),
]


def _thread_case(i):
    problem, x, y, xv, yv, kwargs = THREAD_CASES[i]
    return _fingerprint(hg.hypergradient(problem, x, y, xv, yv, device="cpu", **kwargs))


def test_16_threads_get_the_serial_results_bitwise():
    serial = [_thread_case(i) for i in range(len(THREAD_CASES))]
    assert serial == [_thread_case(i) for i in range(len(THREAD_CASES))]  # repeatable
    n_threads, rounds = 16, 3
    barrier = threading.Barrier(n_threads)
    got = [None] * n_threads
    errors = []

    def work(t):
        try:
            barrier.wait()
            out = []
            for r in range(rounds):
                for k in range(len(THREAD_CASES)):
                    i = (t + r + k) % len(THREAD_CASES)  # every thread in its own order
                    out.append((i, _thread_case(i)))
            got[t] = out
        except BaseException as err:  # reported below, with the thread that met it
            errors.append((t, err))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    mismatches = [(t, i) for t, out in enumerate(got) for i, fp in out if fp != serial[i]]
    assert not mismatches, f"{len(mismatches)} results differ from the serial ones: {mismatches[:5]}"


# ---- 2. memory -------------------------------------------------------------------------------


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
def test_rss_stays_flat_over_1000_fits():
    import gc

    net = hg.HyperCleaner(model="mlp:5", outer_steps=2).fit(XC, YC.astype(int), XCV,
                                                            YCV.astype(int))

    def once():
        hg.LassoHO(max_steps=3).fit(XR, YR).predict(XR)
        hg.hypergradient("ridge", XR, YR, XRV, YRV, theta=0.1, method="cg")
        net.predict_proba(XCV)  # an array made in Rust, returned to Python
        try:  # a refusal: its error state must not leak either
            hg.hypergradient("ridge", XR, YR[:-1], XRV, YRV)
        except ValueError:
            pass

    for _ in range(50):
        once()
    gc.collect()
    before = _rss_bytes()
    for _ in range(1000):
        once()
    gc.collect()
    after = _rss_bytes()
    assert after <= 1.10 * before, f"RSS grew from {before / 2**20:.1f} MiB to {after / 2**20:.1f} MiB"


# ---- 3. pickle -------------------------------------------------------------------------------

_PREDICT_IN_CHILD = textwrap.dedent("""
    import pickle, sys
    import numpy as np
    with open(sys.argv[1], "rb") as f:
        models, xc, xr = pickle.load(f)
    out = {}
    for name, model in models.items():
        x = xr if name.startswith("lasso") else xc
        out[name + ".predict"] = model.predict(x)
        if hasattr(model, "predict_proba"):
            out[name + ".predict_proba"] = model.predict_proba(x)
    np.savez(sys.argv[2], **out)
""")


def _predictions(models, xc, xr):
    out = {}
    for name, model in models.items():
        x = xr if name.startswith("lasso") else xc
        out[name + ".predict"] = model.predict(x)
        if hasattr(model, "predict_proba"):
            out[name + ".predict_proba"] = model.predict_proba(x)
    return out


def test_pickled_estimators_predict_identically_in_another_process(tmp_path):
    yc, ycv = YC.astype(int), YCV.astype(int)
    models = {
        "cleaner": hg.HyperCleaner(outer_steps=3).fit(XC, yc, XCV, ycv),
        "cleaner_kfac": hg.HyperCleaner(curvature="kfac", outer_steps=2).fit(XC, yc, XCV, ycv),
        "cleaner_mlp": hg.HyperCleaner(model="mlp:6", activation="relu", outer_steps=2)
        .fit(XC, yc, XCV, ycv),
        "lasso": hg.LassoHO(max_steps=5).fit(XR, YR),
        "lasso_cv": hg.LassoHO(criterion="cv", cv=3, max_steps=3).fit(XR, YR),
    }
    expected = _predictions(models, XCV, XRV)
    path, out = tmp_path / "models.pkl", tmp_path / "pred.npz"
    with open(path, "wb") as f:
        pickle.dump((models, XCV, XRV), f)
    proc = subprocess.run([sys.executable, "-c", _PREDICT_IN_CHILD, str(path), str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    assert set(got.files) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    # and in this process, from the pickle's bytes
    again = _predictions(pickle.loads(pickle.dumps(models)), XCV, XRV)
    for key, value in expected.items():
        np.testing.assert_array_equal(again[key], value, err_msg=key)


# ---- 4. every refusal is an exception --------------------------------------------------------


def grad(problem="ridge", x=XR, y=YR, xv=XRV, yv=YRV, **kw):
    return hg.hypergradient(problem, x, y, xv, yv, **kw)


def cgrad(problem="hyperclean", x=XC, y=YC, xv=XCV, yv=YCV, **kw):
    return hg.hypergradient(problem, x, y, xv, yv, **kw)


def run(problem="ridge", x=XR, y=YR, xv=XRV, yv=YRV, **kw):
    kw.setdefault("outer_steps", 2)
    return hg.run(problem, x, y, xv, yv, **kw)


def clean(x=XC, y=YC.astype(int), xv=XCV, yv=YCV.astype(int), **params):
    params.setdefault("outer_steps", 2)
    return hg.HyperCleaner(**params).fit(x, y, xv, yv)


def lasso(x=XR, y=YR, **params):
    params.setdefault("max_steps", 3)
    return hg.LassoHO(**params).fit(x, y)


NAN_XR = _with(XR, (5, 1), np.nan)  # position (5, 1), counted from 0 as Python counts
WIDE = 1000  # features of the huge network below: P ≈ 10¹¹, 800 GB in f64 on any machine
XH = _rng.standard_normal((20, WIDE))
YH = (np.arange(20) % 3).astype(np.float64)


# (id, call, expected: "works" or an exception type, words the message contains, xfail reason)
SWEEP = [
    # non-finite values, each named at its position (from 0, SPEC §7)
    ("nan-X", lambda: grad(x=NAN_XR), ValueError, "NaN at row 5, column 1"),
    ("inf-X_val", lambda: grad(xv=_with(XRV, (3, 0), np.inf)), ValueError, "dataset 'X_val': x has the non-finite value inf at row 3, column 0"),
    ("-inf-y", lambda: grad(y=_with(YR, 4, -np.inf)), ValueError, "label -inf at row 4 is not finite"),
    ("nan-y_val", lambda: grad(yv=_with(YRV, 0, np.nan)), ValueError, "label NaN at row 0"),
    ("nan-X_test", lambda: run(X_test=NAN_XR, y_test=YR), ValueError, "dataset 'X_test'"),
    ("nan-sparse-X", lambda: grad("lasso", x=sp.csr_matrix(NAN_XR)), ValueError, "dataset 'X': "),
    ("nan-sparse-X_val", lambda: grad("lasso", xv=sp.csc_matrix(_with(XRV, (2, 2), np.nan))), ValueError, "dataset 'X_val': "),
    ("nan-theta", lambda: grad(theta=np.array([np.nan])), ValueError, "theta"),
    ("inf-theta", lambda: grad(theta=np.inf), ValueError, "theta"),
    ("float32-nan", lambda: grad(x=NAN_XR.astype(np.float32)), ValueError, "NaN at row 5, column 1"),
    # shapes
    ("1-D X", lambda: grad(x=XR[:, 0]), ValueError, "expected a 2-D array"),
    ("3-D X", lambda: grad(x=XR[:, :, None]), ValueError, "expected a 2-D array"),
    ("2-D y", lambda: grad(y=YR[:, None]), ValueError, "1-D array of labels"),
    ("0-D y", lambda: grad(y=np.float64(1.0)), ValueError, "1-D array of labels"),
    ("ragged list X", lambda: grad(x=[[1.0, 2.0], [3.0]]), ValueError, "X: "),
    ("X_val narrower", lambda: grad(xv=XRV[:, :3]), ValueError, "X has 4 columns but X_val has 3"),
    ("X_test narrower", lambda: run(X_test=XRV[:, :3], y_test=YRV), ValueError, "X_test has 3"),
    ("sparse X_val narrower", lambda: grad("lasso", xv=sp.csr_matrix(XRV[:, :3])), ValueError, "X_val has 3"),
    # labels of the wrong length
    ("y short", lambda: grad(y=YR[:-1]), ValueError, "x has 40 rows but y has 39 labels"),
    ("y_val long", lambda: grad(yv=np.r_[YRV, 0.0]), ValueError, "'X_val': x has 20 rows but y has 21"),
    ("y_test short", lambda: run(X_test=XRV, y_test=YRV[:5]), ValueError, "'X_test'"),
    ("sparse y short", lambda: grad("lasso", x=sp.csr_matrix(XR), y=YR[:-2]), ValueError, "40 rows but 38 labels"),
    # labels that do not fit the problem
    ("0/1 labels for logreg", lambda: grad("logreg", y=(YR > 0) * 1.0, yv=np.sign(YRV)), ValueError, "not -1 or +1"),
    ("fractional class", lambda: cgrad("softmax", y=YC + 0.5), ValueError, "label 0.5 at row 0 is not a class index"),
    ("one class", lambda: cgrad("softmax", y=np.zeros(80)), ValueError, "at least 2 classes"),
    ("unseen validation class", lambda: cgrad("softmax", yv=np.full(30, 7.0)), ValueError, "validation label 7"),
    # option names and values
    ("unknown option", lambda: grad(foo=1), TypeError, "unknown option 'foo'"),
    ("misspelt option", lambda: grad(inner_tols=1e-3), TypeError, "unknown option 'inner_tols'"),
    ("unknown option, run", lambda: run(bar=2), TypeError, "unknown option 'bar'"),
    ("negative batch_size", lambda: cgrad(method="nhgd", batch_size=-1), ValueError, "invalid value for batch_size"),
    ("batch_size above n", lambda: cgrad(method="nhgd", batch_size=81), ValueError, "invalid value for batch_size"),
    ("batch_size 10**30", lambda: cgrad(method="nhgd", batch_size=10**30), ValueError, "batch_size"),
    ("outer_lr nan", lambda: run(outer_lr=float("nan")), ValueError, "invalid value for outer_lr"),
    ("outer_lr negative", lambda: run(outer_lr=-0.1), ValueError, "invalid value for outer_lr"),
    ("inner_tol nan", lambda: grad(inner_tol=float("nan")), ValueError, "invalid value for inner_tol"),
    ("inner_tol a string", lambda: grad(inner_tol="small"), ValueError, "invalid value for inner_tol"),
    ("inner_tol a list", lambda: grad(inner_tol=[1e-3]), TypeError, "invalid value for inner_tol"),
    ("l2 negative", lambda: cgrad(l2=-1.0), ValueError, "invalid value for l2"),
    ("l2 nan", lambda: cgrad(l2=float("nan")), ValueError, "invalid value for l2"),
    ("seed negative", lambda: grad(seed=-1), ValueError, "invalid value for seed"),
    ("threads 0", lambda: grad(threads=0), ValueError, "invalid value for threads"),
    ("ema 2", lambda: cgrad(method="nhgd", ema=2.0, batch_size=16), ValueError, "invalid value for ema"),
    ("rank 0", lambda: cgrad(method="nhgd", curvature="lowrank", rank=0, batch_size=16), ValueError, "invalid value for rank"),
    ("corrupt 2", lambda: run("hyperclean", XC, YC, XCV, YCV, corrupt=2.0), ValueError, "invalid value for corrupt"),
    ("negative outer_steps", lambda: run(outer_steps=-1), ValueError, "outer_steps"),
    ("folds 1", lambda: run("lasso", folds=1), ValueError, "folds"),
    ("unknown method", lambda: grad(method="bogus"), ValueError, "invalid value for method"),
    ("method an int", lambda: grad(method=3), ValueError, "invalid value for method"),
    ("unknown problem", lambda: grad("bogus"), ValueError, "unknown value 'bogus'"),
    ("problem None", lambda: grad(None), TypeError, "problem"),
    ("problem an int", lambda: run(3), TypeError, "problem"),
    ("unknown curvature", lambda: cgrad(method="nhgd", curvature="bogus"), ValueError, "invalid value for curvature"),
    ("unknown hyper", lambda: grad(hyper="bogus"), ValueError, "invalid value for hyper"),
    ("unknown device", lambda: grad(device="tpu"), ValueError, "invalid value for device"),
    ("unknown outer_opt", lambda: run(outer_opt="bogus"), ValueError, "invalid value for outer_opt"),
    ("model mlp:0", lambda: cgrad("softmax", model="mlp:0"), ValueError, "invalid value for model"),
    ("model mlp:x", lambda: cgrad("softmax", model="mlp:x"), ValueError, "invalid value for model"),
    ("unknown activation", lambda: cgrad("softmax", model="mlp:3", activation="sigmoid"), ValueError, "invalid value for activation"),
    ("trace into a missing folder", lambda: run(trace="/nonexistent/dir/t.jsonl"), ValueError, "/nonexistent/dir/t.jsonl"),
    ("X_test without y_test", lambda: run(X_test=XRV), ValueError, "X_test and y_test"),
    # θ
    ("theta a string", lambda: grad(theta="zero"), TypeError, "theta"),
    ("theta 2-D", lambda: grad(theta=np.zeros((1, 1))), ValueError, "theta"),
    ("theta of the wrong length", lambda: grad(theta=np.zeros(3)), ValueError, "θ has 3 entries"),
    ("theta a bool", lambda: grad(theta=True), TypeError, "theta"),
    # empty arrays
    ("0-row X", lambda: grad(x=XR[:0], y=YR[:0]), ValueError, "at least one row"),
    ("0-row X_val", lambda: grad(xv=XRV[:0], yv=YRV[:0]), ValueError, "at least one row"),
    ("0-row X_val, run", lambda: run(xv=XRV[:0], yv=YRV[:0]), ValueError, "at least one row"),
    ("0-row X_test", lambda: run(X_test=XRV[:0], y_test=YRV[:0]), ValueError, "X_test has no rows"),
    ("0-row sparse X_val", lambda: grad("lasso", xv=sp.csr_matrix(XRV[:0]), yv=YRV[:0]), ValueError, "no rows"),
    ("0-column X", lambda: grad(x=XR[:, :0], xv=XRV[:, :0]), ValueError, "no columns"),
    ("0 labels for 40 rows", lambda: grad(y=YR[:0]), ValueError, "40 rows but y has 0"),
    # dtypes
    ("object X", lambda: grad(x=XR.astype(object)), TypeError, "expected float32 or float64"),
    ("str X", lambda: grad(x=XR.astype(str)), TypeError, "expected float32 or float64"),
    ("complex X", lambda: grad(x=XR.astype(complex)), TypeError, "complex128"),
    ("bool X", lambda: grad(x=XR > 0), TypeError, "expected float32 or float64"),
    ("int X", lambda: grad(x=XR.astype(np.int32)), TypeError, "expected float32 or float64"),
    ("float16 X", lambda: grad(x=XR.astype(np.float16)), TypeError, "float16"),
    ("complex sparse X", lambda: grad("lasso", x=sp.csr_matrix(XR.astype(complex))), TypeError, "complex128"),
    ("object y", lambda: grad(y=YR.astype(object)), TypeError, "numeric labels"),
    ("complex y", lambda: grad(y=YR.astype(complex)), TypeError, "numeric labels"),
    ("str y", lambda: cgrad("softmax", y=YC.astype(str)), TypeError, "numeric labels"),
    ("sparse y", lambda: grad("lasso", y=sp.csr_matrix(YR)), TypeError, "dense 1-D array"),
    ("None X_val", lambda: grad(xv=None), TypeError, "got None"),
    ("None y", lambda: grad(y=None), TypeError, "got None"),
    # estimators: fit
    ("LassoHO nan X", lambda: lasso(x=NAN_XR), ValueError, "dataset 'X': x has the non-finite value NaN at row 5, column 1"),
    ("LassoHO inf y", lambda: lasso(y=_with(YR, 17, np.inf)), ValueError, "y: label inf at row 17 is not finite"),
    ("LassoHO nan sparse X", lambda: lasso(x=sp.csr_matrix(NAN_XR)), ValueError, "NaN at row 5, column 1"),
    ("LassoHO y short", lambda: lasso(y=YR[:-1]), ValueError, "X has 40 rows but y has 39"),
    ("LassoHO words X", lambda: lasso(x=np.full(XR.shape, "a", dtype=object)), ValueError, "could not convert"),
    ("LassoHO 1 row", lambda: lasso(x=XR[:1], y=YR[:1]), ValueError, "at least 2 rows"),
    ("LassoHO 0 rows", lambda: lasso(x=XR[:0], y=YR[:0]), ValueError, "0 sample(s)"),
    ("LassoHO max_steps -1", lambda: lasso(max_steps=-1), ValueError, "max_steps"),
    ("LassoHO tol 0", lambda: lasso(tol=0.0), ValueError, "tol"),
    ("LassoHO criterion", lambda: lasso(criterion="aic"), ValueError, "criterion"),
    ("LassoHO cv 1", lambda: lasso(criterion="cv", cv=1), ValueError, "cv"),
    ("LassoHO val_fraction", lambda: lasso(val_fraction=1.5), ValueError, "val_fraction"),
    ("LassoHO random_state", lambda: lasso(random_state=-1), ValueError, "random_state"),
    ("LassoHO method", lambda: lasso(method="cg"), ValueError, "method"),
    ("LassoHO search", lambda: lasso(search="bogus"), ValueError, "search"),
    ("ElasticNetHO nan X", lambda: hg.ElasticNetHO(max_steps=2).fit(NAN_XR, YR), ValueError, "NaN at row 5"),
    ("WeightedLassoHO y short", lambda: hg.WeightedLassoHO(max_steps=2).fit(XR, YR[:3]), ValueError, "3 labels"),
    ("HyperCleaner nan X", lambda: clean(x=_with(XC, (7, 3), np.nan)), ValueError, "dataset 'X': x has the non-finite value NaN at row 7, column 3"),
    ("HyperCleaner inf X_val", lambda: clean(xv=_with(XCV, (2, 0), np.inf)), ValueError, "dataset 'X_val': x has the non-finite value inf at row 2, column 0"),
    ("HyperCleaner nan X, own split", lambda: hg.HyperCleaner(outer_steps=1).fit(_with(XC, (7, 3), np.nan), YC.astype(int)), ValueError, "at row 7, column 3"),
    ("HyperCleaner nan label", lambda: clean(y=_with(YC, 9, np.nan)), ValueError, "label NaN at row 9 is not finite"),
    ("HyperCleaner unseen y_val", lambda: clean(yv=_with(YCV, 4, 9.0)), ValueError, "y_val: label 9.0 at row 4"),
    ("HyperCleaner one class", lambda: clean(y=np.zeros(80, int)), ValueError, "at least 2 classes"),
    ("HyperCleaner y short", lambda: clean(y=YC[:-1].astype(int)), ValueError, "X has 80 rows but y has 79"),
    ("HyperCleaner X_val alone", lambda: hg.HyperCleaner().fit(XC, YC, XCV), ValueError, "X_val and y_val"),
    ("HyperCleaner l2 nan", lambda: clean(l2=float("nan")), ValueError, "invalid value for l2"),
    ("HyperCleaner outer_steps -1", lambda: clean(outer_steps=-1), ValueError, "outer_steps"),
    ("HyperCleaner model", lambda: clean(model="mlp:-3"), ValueError, "invalid value for model"),
    ("HyperCleaner activation", lambda: clean(model="mlp:3", activation="swish"), ValueError, "invalid value for activation"),
    ("HyperCleaner method", lambda: clean(method="implicit"), ValueError, "invalid value for method"),
    ("HyperCleaner curvature", lambda: clean(curvature="diag"), ValueError, "invalid value for curvature"),
    ("HyperCleaner complex X", lambda: clean(x=XC.astype(complex)), ValueError, "Complex data not supported"),
    ("HyperCleaner X_val narrower", lambda: clean(xv=XCV[:, :3]), ValueError, "X has 4 columns but X_val has 3"),
    # estimators: predict
    ("LassoHO.predict nan", lambda: lasso().predict(NAN_XR), ValueError, "NaN at row 5, column 1"),
    ("LassoHO.predict narrower", lambda: lasso().predict(XR[:, :3]), ValueError, "3 features"),
    ("LassoHO.predict unfitted", lambda: hg.LassoHO().predict(XR), ValueError, "not fitted"),
    ("HyperCleaner.predict nan", lambda: clean().predict(_with(XCV, (3, 1), np.nan)), ValueError, "NaN at row 3, column 1"),
    ("HyperCleaner.predict_proba inf", lambda: clean().predict_proba(_with(XCV, (0, 0), np.inf)), ValueError, "inf at row 0, column 0"),
    ("HyperCleaner(mlp).predict nan", lambda: clean(model="mlp:3").predict(_with(XCV, (3, 1), np.nan)), ValueError, "NaN at row 3, column 1"),
    ("HyperCleaner.score narrower", lambda: clean().score(XCV[:, :2], YCV.astype(int)), ValueError, "2 features"),
    ("holdout_indices n=1", lambda: holdout_indices(1, 0.25), ValueError, "at least 2 rows"),
    ("cv_folds k > n", lambda: cv_folds(5, 10), ValueError, "folds"),
    # inputs that are odd but fine
    ("HyperCleaner on 30 rows (below the library's batch of 64)", lambda: clean(x=XC[:30], y=YC[:30].astype(int)), "works", None),
    ("HyperCleaner(kfac) on 20 rows, own split", lambda: hg.HyperCleaner(curvature="kfac", outer_steps=1).fit(XC[:20], YC[:20].astype(int)), "works", None),
    ("HyperCleaner(mlp) on 30 rows", lambda: clean(x=XC[:30], y=YC[:30].astype(int), model="mlp:3"), "works", None),
    ("LassoHO object X of numbers", lambda: lasso(x=XR.astype(object)), "works", None),
    ("LassoHO bool X", lambda: lasso(x=XR > 0), "works", None),
    ("list X", lambda: grad(x=XR.tolist()), "works", None),
    ("np.matrix X", lambda: grad(x=np.asmatrix(XR)), "works", None),
    ("one row", lambda: grad(x=XR[:1], y=YR[:1]), "works", None),
    ("one column", lambda: grad(x=XR[:, :1], xv=XRV[:, :1]), "works", None),
    ("float32 X", lambda: grad(x=XR.astype(np.float32)), "works", None),
    ("coo sparse X", lambda: grad("lasso", x=sp.coo_matrix(XR)), "works", None),
    ("sparse X for ridge", lambda: grad(x=sp.csr_matrix(XR)), "works", None),
    # known to kill the interpreter today: allocations the library cannot make
    ("huge network, hypergradient", lambda: hg.hypergradient("hyperclean", XH, YH, XH, YH, model="mlp:100000000", method="nhgd", batch_size=8), (MemoryError, ValueError), None),
    ("huge network, HyperCleaner.fit", lambda: hg.HyperCleaner(model="mlp:100000000", outer_steps=1).fit(XH, YH.astype(int), XH, YH.astype(int)), (MemoryError, ValueError), None),
    ("huge network, exact", lambda: hg.hypergradient("softmax", XH, YH, XH, YH, model="mlp:1000000", method="exact"), MemoryError, "method cg"),
    ("lowrank rank 10**9", lambda: cgrad(method="nhgd", curvature="lowrank", rank=10**9, batch_size=16), (MemoryError, ValueError), None),
    ("images_per_class 10**9", lambda: cgrad("distill", method="cg", images_per_class=10**9), (MemoryError, ValueError), None),
    ("unroll_steps 10**12", lambda: grad(method="unroll", unroll_steps=10**12), (MemoryError, ValueError), None),
    # θ that overflows λ = exp(θ): refused, but as a failure of the computation
    ("theta 1e308", lambda: grad(theta=1e308), ValueError, "invalid value for theta: λ = exp(θ) = inf"),
]
SWEEP = [case + (None,) * (5 - len(case)) for case in SWEEP]
_IDS = [case[0] for case in SWEEP]
assert len(set(_IDS)) == len(_IDS), "sweep ids must be unique"

# A runaway allocation in the child fails (or aborts) instead of filling the machine's memory:
# its address space is capped this far above what it holds after the imports (the huge cases
# above ask for 64 GB and more at once; the others for a few MB).
_HEADROOM = 16 << 30


def _sweep_child(start):
    """Runs the sweep from case ``start`` in this (child) interpreter, one JSON line per
    case before and after it, so that the parent knows which case a crash belongs to."""
    import resource

    with open("/proc/self/statm") as f:
        vsz = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vsz + _HEADROOM, resource.RLIM_INFINITY))
    for i in range(start, len(SWEEP)):
        print("@@" + json.dumps({"start": i}), flush=True)
        try:
            SWEEP[i][1]()
            record = {"done": i, "outcome": "works"}
        except BaseException as err:  # noqa: BLE001 - every outcome is recorded
            record = {"done": i, "outcome": "raised",
                      "types": [t.__name__ for t in type(err).__mro__], "message": str(err)}
        print("@@" + json.dumps(record), flush=True)


def _describe_exit(code):
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            return f"exit code {code}"
    return f"exit code {code}"


@pytest.fixture(scope="module")
def sweep():
    """The outcome of every case, run in child interpreters (a new one after each crash)."""
    if not os.path.exists("/proc/self/statm"):
        pytest.skip("the sweep's child sets its memory limit from /proc (Linux)")
    outcomes = {}
    start = 0
    code = (f"import sys; sys.path.insert(0, {HERE!r}); "
            "import test_reliability as t; t._sweep_child(int(sys.argv[1]))")
    # The sweep is about the Python layer: the child sees no GPU (a CUDA context would not
    # start under the address-space cap), keeps few malloc arenas (each reserves 64 MB of
    # address space), and prints no Rust backtraces.
    env = dict(os.environ, RUST_BACKTRACE="0", CUDA_VISIBLE_DEVICES="", MALLOC_ARENA_MAX="2")
    while start < len(SWEEP):
        try:
            proc = subprocess.run([sys.executable, "-c", code, str(start)], capture_output=True,
                                  text=True, timeout=240, env=env)
            stdout, stderr, exit_code = proc.stdout, proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as err:
            stdout = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
            stderr = err.stderr.decode() if isinstance(err.stderr, bytes) else (err.stderr or "")
            exit_code = None
        running = None
        for line in stdout.splitlines():
            if not line.startswith("@@"):
                continue
            record = json.loads(line[2:])
            if "start" in record:
                running = record["start"]
            else:
                outcomes[_IDS[record["done"]]] = record
                running = None
        if running is None:
            if exit_code != 0:
                raise RuntimeError(f"the sweep's child failed outside a case: {stderr[-2000:]}")
            break
        how = "hung (no answer in 240 s)" if exit_code is None else _describe_exit(exit_code)
        outcomes[_IDS[running]] = {"outcome": "crashed", "how": how,
                                   "stderr": stderr.strip().splitlines()[-3:]}
        start = running + 1
    return outcomes


def _param(case):
    name, _, _, _, xfail = case
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [_param(case) for case in SWEEP])
def test_every_refusal_is_an_exception(sweep, name):
    _, _, expected, words, _ = SWEEP[_IDS.index(name)]
    out = sweep[name]
    if out["outcome"] == "crashed":
        pytest.fail(f"the interpreter died: {out['how']}; stderr ends {out['stderr']}")
    if expected == "works":
        assert out["outcome"] == "works", out
        return
    assert out["outcome"] == "raised", f"expected {expected}, but it worked"
    allowed = expected if isinstance(expected, tuple) else (expected,)
    assert any(t.__name__ in out["types"] for t in allowed), out
    message = out["message"]
    assert message and "\n" not in message and message == message.strip(), repr(message)
    if words:
        assert words in message, message


# ---- 5. layouts that must work, and give the C-ordered array's bits ---------------------------


def _layouts(x):
    big_endian = x.astype(x.dtype.newbyteorder(">"))
    read_only = x.copy()
    read_only.flags.writeable = False
    return {
        "fortran": np.asfortranarray(x),
        "strided": np.repeat(x, 2, axis=1)[:, ::2],
        "every other row of a taller array": np.repeat(x, 2, axis=0)[::2],
        "negative strides": x[::-1].copy()[::-1],
        "big-endian": big_endian,
        "read-only": read_only,
    }


@pytest.mark.parametrize("problem,method,x,y,xv,yv", [
    ("ridge", "cg", XR, YR, XRV, YRV),
    ("softmax", "cg", XC, YC, XCV, YCV),
    ("hyperclean", "nhgd", XC, YC, XCV, YCV),
    ("lasso", "implicit-forward", XR, YR, XRV, YRV),
], ids=["ridge", "softmax", "hyperclean", "lasso"])
def test_non_contiguous_and_fortran_arrays_work(problem, method, x, y, xv, yv):
    extra = dict(batch_size=16) if method == "nhgd" else {}
    ref = _fingerprint(hg.hypergradient(problem, x, y, xv, yv, method=method, **extra))
    for name, variant in _layouts(x).items():
        np.testing.assert_array_equal(variant, x)
        for which in ("X", "X_val"):
            args = (variant, y, xv, yv) if which == "X" else (x, y, _layouts(xv)[name], yv)
            got = hg.hypergradient(problem, *args, method=method, **extra)
            assert _fingerprint(got) == ref, f"{name} {which}"
    # strided labels
    strided_y = np.repeat(y, 2)[::2]
    got = hg.hypergradient(problem, x, strided_y, xv, yv, method=method, **extra)
    assert _fingerprint(got) == ref, "strided y"
    # float32 in Fortran order is the float32 numbers in float64
    a = hg.hypergradient(problem, np.asfortranarray(x.astype(np.float32)), y, xv, yv,
                         method=method, **extra)
    b = hg.hypergradient(problem, x.astype(np.float32).astype(np.float64), y, xv, yv,
                         method=method, **extra)
    assert _fingerprint(a) == _fingerprint(b)


def test_estimators_take_fortran_and_strided_arrays():
    yc, ycv = YC.astype(int), YCV.astype(int)
    ref = hg.HyperCleaner(outer_steps=2).fit(XC, yc, XCV, ycv)
    ref_lasso = hg.LassoHO(max_steps=4).fit(XR, YR)
    for name, variant in _layouts(XC).items():
        got = hg.HyperCleaner(outer_steps=2).fit(variant, yc, _layouts(XCV)[name], ycv)
        np.testing.assert_array_equal(got.theta_, ref.theta_, err_msg=name)
        np.testing.assert_array_equal(got.predict(_layouts(XCV)[name]), ref.predict(XCV))
    for name, variant in _layouts(XR).items():
        got = hg.LassoHO(max_steps=4).fit(variant, YR)
        np.testing.assert_array_equal(got.coef_, ref_lasso.coef_, err_msg=name)


def test_small_training_sets_fit_with_every_row_in_the_batch():
    """The estimator has no batch size; below the library's 64 rows it uses them all (the
    library refuses a batch larger than the training rows, naming an option the estimator
    does not have)."""
    yc, ycv = YC[:30].astype(int), YCV.astype(int)
    est = hg.HyperCleaner(outer_steps=2).fit(XC[:30], yc, XCV, ycv)
    xs, xvs = (XC[:30] - est.mean_) / est.scale_, (XCV - est.mean_) / est.scale_
    res = hg.run("hyperclean", xs, yc, xvs, ycv, method="nhgd", outer_steps=2, l2=0.01, seed=0,
                 batch_size=30)
    np.testing.assert_array_equal(est.theta_, res["theta"])
    # with 64 rows or more nothing changes: the library's default batch
    x, y = XC, YC.astype(int)
    big = hg.HyperCleaner(outer_steps=1).fit(x, y, XCV, ycv)
    xs, xvs = (x - big.mean_) / big.scale_, (XCV - big.mean_) / big.scale_
    res = hg.run("hyperclean", xs, y, xvs, ycv, method="nhgd", outer_steps=1, l2=0.01, seed=0)
    np.testing.assert_array_equal(big.theta_, res["theta"])
