"""Issue 25: the estimators at scikit-learn's standard — its estimator checks, small data,
classifier conventions, float32 kept, parameters and options, progress (callback, verbose),
errors named as Python names them — and issue 22 item 6: the split and the folds from Rust."""

import io
import tracemalloc

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import cross_val_score
from sklearn.utils.estimator_checks import parametrize_with_checks

import hypergrad as hg
from conftest import write_csv
from hypergrad import _api
from hypergrad.estimators import cv_folds, holdout_indices

ESTIMATORS = [hg.LassoHO(max_steps=5), hg.ElasticNetHO(max_steps=5),
              hg.WeightedLassoHO(max_steps=5), hg.HyperCleaner(outer_steps=5)]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def regression():
    return make_regression(n_samples=120, n_features=15, n_informative=5, noise=5.0,
                           random_state=0)


@pytest.fixture(scope="module")
def blobs():
    x, y = make_classification(n_samples=200, n_features=6, n_informative=4, n_redundant=0,
                               n_classes=3, random_state=0)
    return x, y


# ---- small data: the batch never larger than the fold ---------------------------------------


def test_hypercleaner_fits_small_folds(blobs):
    x, y = blobs
    # 30 rows in 5 folds: 24 training rows, of which 18 after the held-out quarter
    scores = cross_val_score(hg.HyperCleaner(outer_steps=3), x[:30], y[:30], cv=5)
    assert np.all(np.isfinite(scores))
    est = hg.HyperCleaner(outer_steps=1, curvature="kfac").fit(x[:12], y[:12])
    assert est.sample_weight_.shape == (9,)
    # an explicit batch larger than the training part is the library's refusal, by its name
    with pytest.raises(ValueError, match="invalid value for batch_size"):
        hg.HyperCleaner(outer_steps=1, batch_size=500).fit(x[:40], y[:40])


# ---- classifier conventions ------------------------------------------------------------------


def test_binary_decision_function_and_roc_auc(blobs):
    x, y = blobs
    yb = np.where(y == 0, "no", "yes")
    est = hg.HyperCleaner(outer_steps=3).fit(x, yb)
    z = est.decision_function(x)
    assert z.shape == (len(x),)
    np.testing.assert_array_equal(est.predict(x), est.classes_[(z > 0).astype(int)])
    p = est.predict_proba(x)
    assert p.shape == (len(x), 2)
    auc = cross_val_score(hg.HyperCleaner(outer_steps=3), x, yb, cv=3, scoring="roc_auc")
    assert np.all(np.isfinite(auc)) and auc.mean() > 0.7
    multi = hg.HyperCleaner(outer_steps=1).fit(x, y)
    assert multi.decision_function(x).shape == (len(x), 3)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_not_fitted_error(estimator, blobs):
    x, _ = blobs
    for method in ("predict", "decision_function", "predict_proba"):
        if hasattr(estimator, method):
            with pytest.raises(NotFittedError):
                getattr(clone(estimator), method)(x)


def test_labels_of_any_type_and_integer_and_bool_x(blobs):
    x, y = blobs
    xi = np.round(x * 3).astype(np.int32)
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
    a = hg.HyperCleaner(outer_steps=2).fit(xi, names)
    b = hg.HyperCleaner(outer_steps=2).fit(xi.astype(np.float64), y)
    assert list(a.classes_) == ["setosa", "versicolor", "virginica"]
    np.testing.assert_array_equal(a.theta_, b.theta_)
    np.testing.assert_array_equal(a.predict(xi), a.classes_[b.predict(xi)])
    flags = hg.HyperCleaner(outer_steps=1).fit(x > 0, y > 0)
    assert flags.classes_.dtype == bool and flags.predict(x > 0).dtype == bool


def test_predict_validates_its_input(blobs, regression):
    x, y = blobs
    est = hg.HyperCleaner(outer_steps=1).fit(x, y)
    bad = x.copy()
    bad[4, 2] = np.nan
    for method in (est.predict, est.predict_proba, est.decision_function):
        with pytest.raises(ValueError, match="NaN at row 4, column 2"):
            method(bad)
    with pytest.raises(ValueError, match="NaN at row 4, column 2"):
        est.score(bad, y)
    with pytest.raises(ValueError, match="X has 5 features, but HyperCleaner is expecting 6"):
        est.score(x[:, :5], y)
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        hg.HyperCleaner(outer_steps=1).fit(x, x[:, 0])


# ---- float32 stays float32 -------------------------------------------------------------------


def test_float32_stays_float32(blobs):
    x, y = blobs
    x32 = x.astype(np.float32)
    est = hg.HyperCleaner(outer_steps=2).fit(x32, y)
    assert est.result_["device"] == "cpu-f32"
    assert est._transform(x32).dtype == np.float32
    # asked otherwise, f64; and a float64 X keeps the library's default (f64 on the CPU)
    assert hg.HyperCleaner(outer_steps=2, precision="f64").fit(x32, y).result_["device"] == "cpu-f64"
    assert hg.HyperCleaner(outer_steps=2, device="cpu").fit(x, y).result_["device"] == "cpu-f64"
    # the standardisation computes in x's dtype: no float64 copy of X on the Python side
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((6000, 40)).astype(np.float32)
    yb = (xb[:, 0] > 0).astype(int)
    xv, yv = xb[:500], yb[:500]
    hg.HyperCleaner(outer_steps=0).fit(xb, yb, xv, yv)  # warm-up: imports, caches
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        hg.HyperCleaner(outer_steps=0).fit(xb, yb, xv, yv)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # the standardised float32 copies of X and X_val (1.08 X) and float64 blocks of n/16 rows; one
    # float64 copy of X alone would be 2 X
    assert peak < 1.6 * xb.nbytes, (peak, xb.nbytes)


# ---- parameters and options ------------------------------------------------------------------


def test_explicit_parameters_and_the_options_dict(blobs):
    x, y = blobs
    est = hg.HyperCleaner(outer_steps=2, batch_size=16, inner_steps=7,
                          options={"outer_opt": "sgd", "outer_lr": 0.05})
    twin = clone(est)
    assert twin.get_params()["options"] == {"outer_opt": "sgd", "outer_lr": 0.05}
    assert twin.batch_size == 16 and twin.inner_steps == 7
    a = twin.fit(x, y)
    b = hg.HyperCleaner(outer_steps=2, batch_size=16, inner_steps=7).fit(x, y)
    assert np.abs(a.theta_ - b.theta_).max() > 0  # the options reach the run
    same = hg.run("hyperclean", *_clean_split(a, x, y), method="nhgd", outer_steps=2,
                  batch_size=16, inner_steps=7, outer_opt="sgd", outer_lr=0.05, seed=0)
    np.testing.assert_array_equal(a.theta_, same["theta"])
    with pytest.raises(TypeError, match="options: batch_size is set by the estimator's parameters"):
        hg.HyperCleaner(options={"batch_size": 8}).fit(x, y)
    with pytest.raises(TypeError, match="unknown option 'bogus'"):
        hg.HyperCleaner(outer_steps=1, options={"bogus": 1}).fit(x, y)
    with pytest.raises(ValueError, match="invalid value for random_state"):
        hg.HyperCleaner(outer_steps=1, random_state=-3).fit(x, y)


def _clean_split(est, x, y):
    """The rows HyperCleaner trains and validates on without X_val, standardised as it does."""
    train, val = holdout_indices(len(y), 0.25, 0)
    return est._transform(x[train]), y[train], est._transform(x[val]), y[val]


def test_l1_device_passes_through(regression):
    x, y = regression
    assert hg.LassoHO(max_steps=2, device="cpu").fit(x, y).coef_.shape == (15,)
    # until the ℓ1 path runs on CUDA, and on a machine without a GPU after, a refusal that
    # names the device, raised as an exception
    with pytest.raises((ValueError, RuntimeError), match="(?i)cuda|device"):
        hg.LassoHO(max_steps=2, device="cuda").fit(x, y)


# ---- progress --------------------------------------------------------------------------------


def test_run_callback_sees_every_step_and_can_stop(blobs):
    x, y = blobs
    xs, ys, xv, yv = x[:150], y[:150], x[150:], y[150:]
    seen = []
    full = hg.run("softmax", xs, ys, xv, yv, method="cg", outer_steps=6, outer_opt="adam",
                  callback=lambda r: seen.append(r))
    assert [r["step"] for r in seen] == list(range(7))
    assert [r["outer_loss"] for r in seen] == [r["outer_loss"] for r in full["trace"]]
    assert not full["stopped_by_callback"]
    stopped = hg.run("softmax", xs, ys, xv, yv, method="cg", outer_steps=6, outer_opt="adam",
                     callback=lambda r: r["step"] < 3)
    short = hg.run("softmax", xs, ys, xv, yv, method="cg", outer_steps=3, outer_opt="adam")
    assert stopped["stopped_by_callback"] and len(stopped["trace"]) == 4
    np.testing.assert_array_equal(stopped["theta"], short["theta"])
    np.testing.assert_array_equal(stopped["coef"], short["coef"])

    class Boom(Exception):
        pass

    def boom(record):
        raise Boom(record["step"])

    with pytest.raises(Boom):
        hg.run("softmax", xs, ys, xv, yv, method="cg", outer_steps=6, callback=boom)
    with pytest.raises(TypeError, match="callback"):
        hg.run("softmax", xs, ys, xv, yv, callback=3)


def test_l1_callback_stops_at_the_best_so_far(regression):
    x, y = regression
    full = hg.LassoHO(max_steps=30).fit(x, y)
    stopped = hg.LassoHO(max_steps=30, callback=lambda r: len(r) and r["step"] < 2).fit(x, y)
    assert stopped.n_iter_ == 3 < full.n_iter_
    best = min(stopped.trace_, key=lambda r: r["outer_loss"])
    np.testing.assert_allclose(stopped.theta_, best["theta"], rtol=0)
    assert stopped.best_loss_ == best["outer_loss"]
    # coef_ is the lasso at that λ on the training rows: its held-out MSE is the criterion
    va = stopped.val_indices_
    r = y[va] - x[va] @ stopped.coef_
    np.testing.assert_allclose(r @ r / len(va), stopped.best_loss_, rtol=1e-6)


def test_verbose_draws_progress(blobs, capsys):
    x, y = blobs
    hg.HyperCleaner(outer_steps=3, verbose=1).fit(x, y)
    err = capsys.readouterr().err
    assert err.count("step ") == 4 and "step 3/3" in err and "outer loss" in err
    bar = _api._Progress(4, stream=io.StringIO())
    bar.update({"step": 4, "outer_loss": 1.5, "seconds": 0.25})
    assert "[" + "#" * bar.WIDTH + "] step 4/4  outer loss 1.5" in bar.stream.getvalue()


# ---- errors named as Python names them -------------------------------------------------------


def test_errors_name_the_argument_and_count_from_zero(regression, blobs):
    x, y = regression
    bad_y = y.copy()
    bad_y[7] = np.inf
    with pytest.raises(ValueError, match=r"^numerical failure: y: label inf at row 7 is not finite$"):
        hg.LassoHO(max_steps=1).fit(x, bad_y)
    with pytest.raises(ValueError, match=r"^numerical failure: y_val: label inf at row 7 is not finite$"):
        hg.hypergradient("ridge", x, y, x, bad_y)
    xc, yc = blobs
    with pytest.raises(ValueError, match=r"^y: label 3 at row 0 is not -1 or \+1"):
        hg.hypergradient("logreg", xc, np.full(len(yc), 3.0), xc, np.ones(len(yc)))
    bad_x = x.copy()
    bad_x[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN at row 3, column 2$"):
        hg.LassoHO(max_steps=1).fit(bad_x, y)


# ---- issue 22 item 6: the split and the folds from Rust --------------------------------------


def test_lasso_holdout_is_the_clis_split(cli, tmp_path, regression):
    """LassoHO's held-out split is the command line's --split 0.75,0.25 --seed: the same rows
    in the same order, hence the same search."""
    x, y = regression
    est = hg.LassoHO(max_steps=8, random_state=3).fit(x, y)
    out = cli.json("run", "--problem", "lasso", "--train", write_csv(tmp_path / "all.csv", x, y),
                   "--split", "0.75,0.25", "--seed", "3", "--method", "implicit-forward", "--outer-opt", "hoag",
                   "--outer-steps", "8", "--inner-tol", "1e-4", "--json")
    np.testing.assert_allclose(est.theta_, out["best_theta"], rtol=1e-10)
    np.testing.assert_allclose(est.best_loss_, out["best_loss"], rtol=1e-10)
    train, val = holdout_indices(len(y), 0.25, 3)
    np.testing.assert_array_equal(est.train_indices_, train)
    assert len(val) == 30 and sorted(np.concatenate([train, val])) == list(range(len(y)))


def test_cv_folds_are_the_libraries(regression):
    x, y = regression
    folds = cv_folds(len(y), 4, 2)
    held = np.concatenate([h for _, h in folds])
    assert sorted(held) == list(range(len(y)))
    for fit, h in folds:
        assert len(h) == 30 and len(np.intersect1d(fit, h)) == 0
    # the criterion the search reports is the mean MSE on these folds
    est = hg.LassoHO(criterion="cv", cv=4, max_steps=5, tol=1e-10, random_state=2).fit(x, y)
    from sklearn.linear_model import Lasso

    def fold_mse(fit, h):
        w = Lasso(alpha=est.alpha_, fit_intercept=False, tol=1e-12,
                  max_iter=100_000).fit(x[fit], y[fit]).coef_
        r = y[h] - x[h] @ w
        return r @ r / len(h)

    np.testing.assert_allclose(np.mean([fold_mse(f, h) for f, h in folds]), est.best_loss_,
                               rtol=1e-4)


# ---- documentation ---------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [hg.LassoHO, hg.ElasticNetHO, hg.WeightedLassoHO, hg.HyperCleaner,
                                 hg.run, hg.hypergradient, holdout_indices, cv_folds],
                         ids=lambda o: o.__name__)
def test_docstrings_document_every_parameter(obj):
    """numpy-style: a Parameters section naming every parameter with its default, and no
    reference to files a user does not have."""
    import inspect
    import re

    doc = inspect.getdoc(obj)
    assert "SPEC" not in doc and ".rs" not in doc
    assert "Parameters\n----------" in doc
    target = obj.__init__ if inspect.isclass(obj) else obj
    for name, param in inspect.signature(target).parameters.items():
        if name in ("self",):
            continue
        if param.kind is param.VAR_KEYWORD:
            assert f"**{name}" in doc, name
            continue
        line = re.search(rf"^\s*(\w+, )*{name}(, \w+)* :(.*)$", doc, re.M)
        assert line, f"{obj.__name__}: {name} is not documented"
        if param.default is not inspect.Parameter.empty:
            assert "default=" in line.group(3), f"{obj.__name__}: {name} has no default"


def test_package_has_type_information():
    import os

    import hypergrad

    root = os.path.dirname(hypergrad.__file__)
    for name in ("py.typed", "__init__.pyi", "_api.pyi", "estimators.pyi", "_native.pyi"):
        assert os.path.isfile(os.path.join(root, name)), name
