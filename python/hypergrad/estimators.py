"""scikit-learn estimators on top of :func:`hypergrad.run`.

* :class:`LassoHO`, :class:`ElasticNetHO`, :class:`WeightedLassoHO`: the lasso, the elastic
  net and the weighted lasso, whose penalties are chosen by an outer search (HOAG by
  default) with hypergradients, on a held-out split (``criterion="holdout"``) or K-fold
  cross-validation (``criterion="cv"``). No intercept: centre ``X`` and ``y`` to get one.
  ``alpha_`` is λ of the objective (1/2n)‖y − Xw‖² + λ‖w‖₁, i.e. scikit-learn's ``alpha``
  for the same data.
* :class:`HyperCleaner`: a softmax classifier (linear, or a multilayer perceptron with
  ``model="mlp:H1,…"``) trained with one weight σ(θ_i) per training row, the weights learnt
  on clean validation rows.

The parameters follow scikit-learn's conventions (``get_params``/``set_params``, ``clone``,
``Pipeline``, ``GridSearchCV``); fitted attributes end in ``_``. Every estimator passes
scikit-learn's ``check_estimator`` (see each class's notes for the checks it is excused
from and why).
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted
from sklearn.utils.validation import validate_data as _sk_validate_data

from . import _api, _native

__all__ = ["LassoHO", "ElasticNetHO", "WeightedLassoHO", "HyperCleaner", "holdout_indices",
           "cv_folds"]


def _seed(random_state):
    """An int seed for the Rust side: ``random_state`` itself (an int ≥ 0; ``None`` is 0), or
    one drawn from a ``numpy.random.RandomState``."""
    if random_state is None or (isinstance(random_state, numbers.Integral)
                                and not isinstance(random_state, bool)):
        seed = 0 if random_state is None else int(random_state)
        if seed < 0:
            raise ValueError(f"invalid value for random_state: must be >= 0, got {seed}")
        return seed
    rs = check_random_state(random_state)
    return int(rs.randint(0, 2**31 - 1))


def holdout_indices(n, val_fraction, random_state=0):
    """The rows ``(train, val)`` of the held-out split that :class:`LassoHO` and
    :class:`HyperCleaner` make.

    The library's own split (the command line's ``--split 1−f,f --seed s``): the rows are
    shuffled by the library's seeded generator and the last ``round(f·n)`` of that order are
    held out (rounding half away from zero); each part keeps the shuffled order.

    Parameters
    ----------
    n : int
        Number of rows, at least 2.
    val_fraction : float
        f in (0, 1), the fraction held out.
    random_state : int, RandomState or None, default=0
        The seed s (``None`` is 0; a ``RandomState`` draws one).

    Returns
    -------
    train, val : ndarray of int64
        0-based row indices.
    """
    if not (isinstance(val_fraction, numbers.Real) and not isinstance(val_fraction, bool)
            and 0.0 < float(val_fraction) < 1.0):
        raise ValueError(f"invalid value for val_fraction: must be in (0, 1), got {val_fraction!r}")
    if n < 2:
        raise ValueError(f"a held-out split needs at least 2 rows, got n_samples = {n}")
    f = float(val_fraction)
    try:
        train, val = _native.split_indices(int(n), [1.0 - f, f], _seed(random_state))
    except ValueError as err:
        raise ValueError(
            f"invalid value for val_fraction: {val_fraction!r} of {n} rows leaves a part "
            f"empty ({err})"
        ) from None
    return np.asarray(train, dtype=np.int64), np.asarray(val, dtype=np.int64)


def cv_folds(n, k, random_state=0):
    """The K folds that ``criterion="cv"`` uses, from the library (``--folds K --seed s``).

    The rows are shuffled by the library's seeded generator; fold f holds positions
    ⌊f·n/K⌋ … ⌊(f+1)·n/K⌋ − 1 of that order. Give them to scikit-learn
    (``LassoCV(cv=cv_folds(n, 5))``) to compare on the same folds.

    Parameters
    ----------
    n : int
        Number of rows.
    k : int
        Number of folds, 2 ≤ K ≤ n.
    random_state : int, RandomState or None, default=0
        The seed s.

    Returns
    -------
    list of (train, held_out)
        Sorted 0-based row indices (int64 arrays), one pair per fold.
    """
    folds = _native.fold_indices(int(n), int(k), _seed(random_state))
    return [(np.asarray(fit, dtype=np.int64), np.asarray(held, dtype=np.int64))
            for fit, held in folds]


def _rows(x, idx):
    """Rows ``idx`` of a dense array or a sparse matrix (kept sparse)."""
    if _api._is_sparse(x) and x.format not in ("csr", "csc"):
        x = x.tocsr()
    return x[idx]


def _plain(value):
    """A NumPy scalar as the Python one (its repr is 9, not np.int64(9))."""
    return value.item() if isinstance(value, np.generic) else value


def _check_lengths(x, y, names=("X", "y")):
    n, m = x.shape[0], y.shape[0]
    if n != m:
        raise ValueError(
            f"dimension mismatch: {names[0]} has {n} rows but {names[1]} has {m} labels"
        )


def _check_finite_labels(y, name="y"):
    """The first NaN or inf of float labels, named by the argument and its 0-based row."""
    y = np.asarray(y)
    if y.dtype.kind != "f" or np.isfinite(y).all():
        return
    i = int(np.argmax(~np.isfinite(y)))
    raise ValueError(
        f"numerical failure: {name}: label {_api._number(y[i])} at row {i} is not finite"
    )


def _precheck(X, y, names=("X", "y")):
    """Before scikit-learn's validation, whose messages neither name a row nor say which
    labels: lengths that differ, and a NaN or inf among 1-D float labels (named at its row)."""
    if y is None:
        return
    n = getattr(X, "shape", None)
    n = n[0] if n else (len(X) if hasattr(X, "__len__") else None)
    try:
        ya = np.asarray(y)
    except ValueError:
        return
    if n is not None and ya.ndim >= 1 and ya.shape[0] != n:
        raise ValueError(
            f"dimension mismatch: {names[0]} has {n} rows but {names[1]} has {ya.shape[0]} labels"
        )
    if ya.ndim == 1:
        _check_finite_labels(ya, names[1])


def _check_not_complex(x, name):
    # scikit-learn's message for it prints the whole array over many lines.
    dtype = getattr(x, "dtype", None)
    if dtype is not None and np.dtype(dtype).kind == "c":
        raise ValueError(f"{name}: Complex data not supported (dtype {dtype}); give real values")


def _one_line_errors(function, *args, **kwargs):
    """``function(*args, **kwargs)`` (scikit-learn's validation), its errors on one line."""
    try:
        return function(*args, **kwargs)
    except (ValueError, TypeError) as err:
        message = _api._one_line(err)
        if message == str(err):
            raise
        raise type(err)(message) from None


def validate_data(estimator, X, *args, **kwargs):
    """scikit-learn's ``validate_data``, complex data refused and its messages on one line."""
    _check_not_complex(X, "X")
    return _one_line_errors(_sk_validate_data, estimator, X, *args, **kwargs)


def _int_param(name, value, low):
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low):
        raise ValueError(f"invalid value for {name}: must be an integer >= {low}, got {value!r}")
    return int(value)


def _options(estimator, explicit):
    """``explicit`` (the run options that parameters set) with ``estimator.options`` added:
    the library's other options by their keyword (``hypergrad.run``'s ``**options``)."""
    extra = {} if estimator.options is None else estimator.options
    if not isinstance(extra, dict):
        raise TypeError(f"options: expected a dict or None, got {type(extra).__name__}")
    taken = sorted(set(extra) & set(explicit))
    if taken:
        raise TypeError(
            f"options: {', '.join(taken)} {'is' if len(taken) == 1 else 'are'} set by the "
            "estimator's parameters; set the parameter instead"
        )
    return dict(explicit, **extra)


def _renamed(err, pairs):
    """``err``'s message with the run options named as the estimator's parameters."""
    message = str(err)
    for option, param in pairs:
        message = message.replace(f"invalid value for {option}:", f"invalid value for {param}:")
    return type(err)(message)


# The options of `run` that the ℓ1 estimators' parameters set, and the parameter's name.
_L1_PARAMS = (("outer_opt", "search"), ("outer_steps", "max_steps"), ("inner_tol", "tol"),
              ("folds", "cv"), ("seed", "random_state"))

_L1_NOTES = """
    Notes
    -----
    ``coef_`` is the model at ``alpha_`` trained on the training rows of the criterion (all
    rows for ``criterion="cv"``). A float32 ``X`` is computed in float64 (the ℓ1 solvers have
    no float32 path); sparse ``X`` (any SciPy format, stored as CSR) stays sparse.
    The ℓ1 search is stopped early by ``callback`` returning ``False``: the result is then the
    best penalty met so far.

    Of scikit-learn's estimator checks, none is skipped.
"""

_L1_PARAMETERS = """
    Parameters
    ----------
    criterion : {"holdout", "cv"}, default="holdout"
        What the search minimises: the mean squared error F(λ) = (1/|V|)‖y_V − X_V ŵ(λ)‖² on
        held-out rows V, the model ŵ(λ) trained on the others; or its mean over ``cv`` folds.
    val_fraction : float, default=0.25
        Fraction of the rows held out (``criterion="holdout"``), drawn by the library's
        generator from ``random_state`` (see :func:`holdout_indices`).
    cv : int, default=5
        Number of folds K (``criterion="cv"``), drawn as :func:`cv_folds` lists them.
    method : {"implicit-forward", "implicit", "forward"}, default="implicit-forward"
        How ∇F(λ) is computed: implicit differentiation restricted to the support of ŵ,
        after (``implicit-forward``) or without a forward pass, or forward-mode
        differentiation of the coordinate descent.
    search : {"hoag", "adam", "grid", "random"}, default="hoag"
        The outer search over θ = log λ: HOAG (hypergradient steps with inner tolerances
        tightened as it goes), Adam on θ, or a grid / random search (no hypergradient).
    max_steps : int, default=50
        Outer steps (or grid / random points).
    tol : float, default=1e-4
        The inner solves' relative duality gap (scikit-learn's ``tol``); HOAG tightens its
        own schedule beyond it.
    random_state : int, RandomState or None, default=0
        Seed of the held-out split, of the folds and of the random search.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the solves run. ``"cuda"`` is refused with a ``ValueError`` by a library whose
        ℓ1 path is CPU-only.
    options : dict or None, default=None
        Any other option of :func:`hypergrad.run` by its keyword (``l1_solver``,
        ``outer_lr``, ``cold_start``, ``inner_iters``, …). An option that a parameter above
        sets is refused here.
    callback : callable or None, default=None
        Called with each evaluation's trace record (a dict) as the search goes; returning
        ``False`` stops the search.
    verbose : bool or int, default=0
        Draw a progress bar on stderr.
"""


class _L1HO(RegressorMixin, BaseEstimator):
    """Shared by the ℓ1 estimators; ``_problem`` names the library's problem."""

    _problem = None

    def __init__(self, criterion="holdout", val_fraction=0.25, cv=5, method="implicit-forward",
                 search="hoag", max_steps=50, tol=1e-4, random_state=0, device="auto",
                 options=None, callback=None, verbose=0):
        self.criterion = criterion
        self.val_fraction = val_fraction
        self.cv = cv
        self.method = method
        self.search = search
        self.max_steps = max_steps
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.options = options
        self.callback = callback
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _check_params(self):
        if self.criterion not in ("holdout", "cv"):
            raise ValueError(
                f"invalid value for criterion: unknown value {self.criterion!r} (use holdout, cv)"
            )
        if self.criterion == "cv" and not (
            isinstance(self.cv, numbers.Integral) and not isinstance(self.cv, bool)
            and self.cv >= 2
        ):
            raise ValueError(f"invalid value for cv: the number of folds must be an integer >= 2, got {self.cv!r}")
        _int_param("max_steps", self.max_steps, 0)
        if not (isinstance(self.tol, numbers.Real) and not isinstance(self.tol, bool)
                and self.tol > 0):
            raise ValueError(f"invalid value for tol: must be > 0, got {self.tol!r}")

    def _validate(self, X, y="no_validation", reset=True):
        """X (and y) as scikit-learn validates them: any numeric dtype (float32 kept, others
        as float64), sparse kept sparse (as CSR or CSC), the width checked against the fit's;
        then NaN and inf named at their 0-based position."""
        kwargs = dict(reset=reset, accept_sparse=("csr", "csc"),
                      dtype=[np.float64, np.float32], ensure_all_finite=False)
        if isinstance(y, str) and y == "no_validation":
            X = validate_data(self, X, **kwargs)
        else:
            _precheck(X, y)
            X, y = validate_data(self, X, y, y_numeric=True, **kwargs)
            _check_finite_labels(y, "y")
        _api._check_finite(X, "X")
        return X, y

    def fit(self, X, y):
        """Search the penalty on ``X``, ``y`` and fit ``coef_`` at the best one.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self
        """
        self._check_params()
        X, y = self._validate(X, y, reset=True)
        y = np.ascontiguousarray(y, dtype=np.float64)
        if X.shape[0] < 2:
            raise ValueError(
                f"a held-out split or folds need at least 2 rows, got n_samples = {X.shape[0]}"
            )
        seed = _seed(self.random_state)
        options = _options(self, dict(
            method=self.method, outer_steps=int(self.max_steps), outer_opt=self.search,
            inner_tol=float(self.tol), device=self.device, seed=seed))
        run = dict(callback=self.callback, verbose=bool(self.verbose))
        try:
            if self.criterion == "holdout":
                train, val = holdout_indices(X.shape[0], self.val_fraction, seed)
                result = _api.run(self._problem, _rows(X, train), y[train], _rows(X, val),
                                  y[val], **options, **run)
                self.train_indices_, self.val_indices_ = train, val
            else:
                # The folds are made from the training rows; the validation argument is unused.
                head = np.arange(1)
                result = _api.run(self._problem, X, y, _rows(X, head), y[head],
                                  folds=int(self.cv), **options, **run)
        except (ValueError, TypeError) as err:
            raise _renamed(err, _L1_PARAMS) from None
        theta = np.asarray(result["theta"], dtype=np.float64)
        self.theta_ = theta
        self.coef_ = np.asarray(result["coef"], dtype=np.float64)
        self.best_loss_ = float(result["outer_loss"])
        self.trace_ = result["trace"]
        self.n_iter_ = int(result.get("evaluations", len(self.trace_)))
        self.result_ = result
        self._set_penalties(np.exp(theta))
        return self

    def _set_penalties(self, lam):
        self.alpha_ = float(lam[0])

    def predict(self, X):
        """``X @ coef_`` (no intercept).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,), float64
        """
        check_is_fitted(self, "coef_")
        X, _ = self._validate(X, reset=False)
        return np.asarray(X @ self.coef_, dtype=np.float64).ravel()


class LassoHO(_L1HO):
    __doc__ = """Lasso whose λ is chosen by hypergradient descent.

    Fits w minimising (1/2n)‖y − Xw‖² + λ‖w‖₁ (scikit-learn's ``Lasso`` with
    ``alpha = λ`` and ``fit_intercept=False``), λ = exp(θ) chosen by an outer search on the
    held-out or cross-validated squared error.
""" + _L1_PARAMETERS + """
    Attributes
    ----------
    alpha_ : float
        The chosen λ.
    coef_ : ndarray of shape (n_features,)
        The lasso at ``alpha_``.
    theta_ : ndarray of shape (1,)
        log λ.
    best_loss_ : float
        The criterion at ``alpha_``.
    n_iter_ : int
        Criterion evaluations.
    trace_ : list of dict
        One record per evaluation.
    train_indices_, val_indices_ : ndarray
        The held-out split (``criterion="holdout"``).
    n_features_in_ : int
""" + _L1_NOTES

    _problem = "lasso"


class ElasticNetHO(_L1HO):
    __doc__ = """Elastic net with both penalties chosen by hypergradient descent.

    Fits w minimising (1/2n)‖y − Xw‖² + λ₁‖w‖₁ + ½λ₂‖w‖², (λ₁, λ₂) = exp(θ) chosen by an
    outer search (scikit-learn's ``ElasticNet`` with ``alpha = λ₁ + λ₂`` and
    ``l1_ratio = λ₁/(λ₁ + λ₂)``).
""" + _L1_PARAMETERS + """
    Attributes
    ----------
    alpha_ : float
        λ₁.
    l2_ : float
        λ₂.
    coef_, theta_, best_loss_, n_iter_, trace_, train_indices_, val_indices_, n_features_in_
        As :class:`LassoHO`'s (``theta_`` has 2 entries).
""" + _L1_NOTES

    _problem = "enet"

    def _set_penalties(self, lam):
        self.alpha_ = float(lam[0])
        self.l2_ = float(lam[1])


class WeightedLassoHO(_L1HO):
    __doc__ = """Weighted lasso with one penalty per feature chosen by hypergradient descent.

    Fits w minimising (1/2n)‖y − Xw‖² + Σ_j λ_j |w_j|, λ = exp(θ) ∈ ℝᵈ chosen by an outer
    search.
""" + _L1_PARAMETERS + """
    Attributes
    ----------
    alphas_ : ndarray of shape (n_features,)
        The λ_j.
    coef_, theta_, best_loss_, n_iter_, trace_, train_indices_, val_indices_, n_features_in_
        As :class:`LassoHO`'s (``theta_`` has n_features entries).
""" + _L1_NOTES

    _problem = "wlasso"

    def _set_penalties(self, lam):
        self.alphas_ = np.asarray(lam, dtype=np.float64)


def _block(n):
    """Rows per block of the standardisation: its float64 temporaries (twice a float32 row)
    stay at most 1/16 of a float32 ``x`` (and at least 256 rows, a negligible size)."""
    return max(256, -(-n // 16))


def _standardize_stats(x):
    """Mean and scale of each column as the library's ``--standardize`` computes them
    (population standard deviation; a constant column keeps its value as mean and scale 1),
    accumulated in float64 over blocks of rows, so that a float32 ``x`` is never copied
    whole to float64."""
    n, d = x.shape
    mean = np.zeros(d)
    scale = np.ones(d)
    if n == 0:
        return mean, scale
    step = _block(n)
    first = np.asarray(x[0], dtype=np.float64)
    constant = np.ones(d, dtype=bool)
    total = np.zeros(d)
    for a in range(0, n, step):
        block = x[a:a + step]
        constant &= np.all(block == x[:1], axis=0)
        total += block.sum(axis=0, dtype=np.float64)
    mean = np.where(constant, first, total / n)
    squares = np.zeros(d)
    for a in range(0, n, step):
        centred = x[a:a + step] - mean
        squares += np.einsum("ij,ij->j", centred, centred)
    std = np.sqrt(squares / n)
    ok = ~constant & (std > 0) & np.isfinite(std)
    scale = np.where(ok, std, 1.0)
    return mean, scale


def _standardized(x, mean, scale):
    """``(x − mean)/scale`` in ``x``'s dtype, block by block (no float64 copy of a float32
    ``x``)."""
    out = np.empty(x.shape, dtype=x.dtype)
    step = _block(x.shape[0])
    for a in range(0, x.shape[0], step):
        out[a:a + step] = (x[a:a + step] - mean) / scale
    return out


# The options of `run` that HyperCleaner's parameters set under another name.
_CLEAN_PARAMS = (("seed", "random_state"),)


class HyperCleaner(ClassifierMixin, BaseEstimator):
    """Label cleaning by hypergradient descent.

    A softmax classifier is trained with weight σ(θ_i) on training row i,

        ŵ(θ) = argmin_w (1/n) Σ_i σ(θ_i) ℓ(w; x_i, y_i) + (l2/2)‖w‖²,

    ℓ the cross-entropy of the logits z = W x (linear model) or of a network's output, and θ
    is learnt by descent on the validation loss F(θ) = (1/m) Σ_j ℓ(ŵ(θ); x_j, y_j) of clean
    rows. Rows whose labels are wrong end up with small weights.

    Parameters
    ----------
    method : str, default="nhgd"
        How ∇F(θ) is computed: ``"nhgd"`` (stochastic, with a curvature model), the other
        stochastic methods (``"stocbio"``, ``"amigo"``, ``"soba"``), or a deterministic one
        (``"cg"``, ``"neumann"``, ``"exact"``, ``"unroll"``, …) that solves the inner problem
        first.
    curvature : {"kfac", "dense", "lowrank"} or None, default=None
        NHGD's curvature model of the inner Hessian (``None``: the library's default).
    outer_steps : int, default=20
        Outer steps T: θ is updated T times (T + 1 hypergradients).
    batch_size : int or None, default=None
        Rows per mini-batch of the stochastic methods. ``None``: 64, or every training row
        when there are fewer (a batch is never larger than the training part).
    inner_steps : int or None, default=None
        SGD steps on w per outer step of the stochastic methods (``None``: the library's
        100).
    l2 : float, default=0.01
        The ridge weight l2 in ŵ(θ)'s objective (on the weight matrices of a network).
    standardize : bool, default=True
        z-score the features, x ↦ (x − mean)/scale, with the training rows' statistics.
    model : str, default="linear"
        ``"linear"`` (logits W x, no intercept) or ``"mlp:H1[,H2,…]"``, a multilayer
        perceptron with biases whose w₀ is drawn from ``random_state``.
    activation : {"tanh", "relu"}, default="tanh"
        The network's activation.
    inner_solver : str or None, default=None
        The inner solve of the deterministic methods: ``"newton"``, ``"lbfgs"``, ``"gd"``,
        ``"agd"``, ``"sgd"``, ``"adam"`` (``None``: Newton-CG). The stochastic methods train
        with their own SGD loop and ignore it.
    inner_tol : float or None, default=None
        The inner solve's gradient-norm tolerance (``None``: 1e-10).
    precision : {"f32", "f64"} or None, default=None
        Arithmetic of the computation. ``None``: ``"f32"`` for a float32 ``X`` (which then
        stays float32 up to the library), the library's default (f64 on the CPU) otherwise.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where the computation runs.
    random_state : int, RandomState or None, default=0
        Seed of the mini-batches, of a network's w₀ and of the held-out split.
    options : dict or None, default=None
        Any other option of :func:`hypergrad.run` by its keyword (``outer_opt``,
        ``outer_lr``, ``rank``, ``ema``, ``fisher_update``, …). An option that a parameter
        above sets is refused here.
    callback : callable or None, default=None
        Called with each outer step's trace record (a dict) as the run goes; returning
        ``False`` ends the run there, as if that step were the last.
    verbose : bool or int, default=0
        Draw a progress bar on stderr.

    Attributes
    ----------
    classes_ : ndarray
        The labels, sorted (any type: ``numpy.unique(y)``).
    sample_weight_ : ndarray of shape (n_train,)
        σ(θ), one weight per training row.
    theta_ : ndarray of shape (n_train,)
    coef_ : ndarray
        Linear: (n_classes, n_features), logits ``coef_ @ x`` of the standardised x. Network:
        its parameters layer by layer, each an ``n_l × (n_{l−1} + 1)`` row-major block whose
        last column is the bias.
    layer_sizes_ : list of int or None
        The network's widths (n_features, H1, …, n_classes); ``None`` for the linear model.
    activation_ : str or None
    mean_, scale_ : ndarray of shape (n_features,)
        The standardisation (0 and 1 when it is off).
    trace_ : list of dict
        One record per outer step.
    n_features_in_ : int

    Notes
    -----
    ``fit(X, y, X_val, y_val)``: the validation labels must be among the training labels.
    Without ``X_val``, a quarter of the rows is held out by the library's split (see
    :func:`holdout_indices`). Sparse ``X`` is densified (the computation is dense).

    Of scikit-learn's estimator checks, none is skipped.
    """

    def __init__(self, method="nhgd", curvature=None, outer_steps=20, batch_size=None,
                 inner_steps=None, l2=0.01, standardize=True, model="linear",
                 activation="tanh", inner_solver=None, inner_tol=None, precision=None,
                 device="auto", random_state=0, options=None, callback=None, verbose=0):
        self.method = method
        self.curvature = curvature
        self.outer_steps = outer_steps
        self.batch_size = batch_size
        self.inner_steps = inner_steps
        self.l2 = l2
        self.standardize = standardize
        self.model = model
        self.activation = activation
        self.inner_solver = inner_solver
        self.inner_tol = inner_tol
        self.precision = precision
        self.device = device
        self.random_state = random_state
        self.options = options
        self.callback = callback
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _validate_X(self, X, name="X", reset=False):
        """X as scikit-learn validates it (float32 kept, other numbers as float64, sparse
        densified), then NaN and inf named at their 0-based position."""
        if name == "X":
            X = validate_data(self, X, reset=reset, accept_sparse=True,
                              dtype=[np.float64, np.float32], ensure_all_finite=False)
        else:
            _check_not_complex(X, name)
            X = _one_line_errors(check_array, X, accept_sparse=True, dtype=[np.float64, np.float32],
                                 ensure_all_finite=False, input_name=name)
        if _api._is_sparse(X):
            X = X.toarray()
        _api._check_finite(X, name)
        # Row-major (what the library reads anyway): NumPy's column statistics round
        # differently on a Fortran-ordered array, and the fit would then depend on the layout.
        return np.ascontiguousarray(X)

    def _transform(self, X):
        X = np.asarray(X)
        if not self.standardize:
            return X
        return _standardized(X, self.mean_, self.scale_)

    def fit(self, X, y, X_val=None, y_val=None):
        """Learn the weights and train the classifier with them.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            Training rows (their labels possibly corrupted).
        y : array-like of shape (n_samples,)
            Their labels, of any type.
        X_val : array-like of shape (n_val, n_features) or None, default=None
            Clean validation rows; ``None`` holds out a quarter of ``X``.
        y_val : array-like of shape (n_val,) or None, default=None
            Their labels, each one of ``y``'s.

        Returns
        -------
        self
        """
        if (X_val is None) != (y_val is None):
            raise ValueError("X_val and y_val go together: give both or neither")
        outer_steps = _int_param("outer_steps", self.outer_steps, 0)
        _precheck(X, y)
        X, y = validate_data(self, X, y, reset=True, accept_sparse=True,
                             dtype=[np.float64, np.float32], ensure_all_finite=False)
        X = self._validate_X(X, "X", reset=False)
        check_classification_targets(y)
        seed = _seed(self.random_state)
        if X_val is None:
            if X.shape[0] < 2:
                raise ValueError(
                    f"a held-out split needs at least 2 rows, got n_samples = {X.shape[0]}"
                )
            train, val = holdout_indices(X.shape[0], 0.25, seed)
            X, X_val, y, y_val = X[train], X[val], y[train], y[val]
        else:
            X_val = self._validate_X(X_val, "X_val")
            y_val = np.asarray(y_val)
            if y_val.ndim != 1:
                raise ValueError(f"y_val: expected a 1-D array of labels, got shape {y_val.shape}")
            _check_lengths(X_val, y_val, ("X_val", "y_val"))
            _api._check_widths([("X", X), ("X_val", X_val)])  # before the standardisation
        _check_finite_labels(y, "y")
        _check_finite_labels(y_val, "y_val")
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y: hyper-cleaning needs at least 2 classes, got {len(classes)}")
        pos = np.clip(np.searchsorted(classes, y_val), 0, len(classes) - 1)
        bad = classes[pos] != y_val
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"y_val: label {_plain(y_val[i])!r} at row {i} is not one of the training "
                f"labels ({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''})"
            )
        d = X.shape[1]
        if self.standardize:
            self.mean_, self.scale_ = _standardize_stats(X)
        else:
            self.mean_, self.scale_ = np.zeros(d), np.ones(d)
        Xs, Xvs = self._transform(X), self._transform(X_val)
        n_train = y_idx.shape[0]
        # A batch is never larger than the training part (the library refuses one that is).
        batch_size = self.batch_size
        if batch_size is None:
            batch_size = min(_LIBRARY_BATCH_SIZE, n_train)
        precision = self.precision
        if precision is None and X.dtype == np.float32:
            precision = "f32"
        options = _options(self, dict(
            method=self.method, curvature=self.curvature, outer_steps=outer_steps,
            batch_size=batch_size, inner_steps=self.inner_steps, l2=self.l2,
            model=self.model, activation=self.activation, inner_solver=self.inner_solver,
            inner_tol=self.inner_tol, precision=precision, device=self.device, seed=seed))
        try:
            result = _api.run("hyperclean", Xs, y_idx, Xvs, pos, callback=self.callback,
                              verbose=bool(self.verbose), **options)
        except (ValueError, TypeError) as err:
            raise _renamed(err, _CLEAN_PARAMS) from None
        theta = np.asarray(result["theta"], dtype=np.float64)
        self.classes_ = classes
        self.theta_ = theta
        self.sample_weight_ = 1.0 / (1.0 + np.exp(-theta))
        sizes = result.get("layer_sizes")
        self.layer_sizes_ = None if sizes is None else [int(v) for v in sizes]
        self.activation_ = result.get("activation")
        coef = np.asarray(result["coef"], dtype=np.float64)
        self.coef_ = coef if sizes is not None else coef.reshape(len(classes), d)
        self.trace_ = result["trace"]
        self.result_ = result
        return self

    def _rows(self, X):
        check_is_fitted(self, "coef_")
        return self._transform(self._validate_X(X, "X", reset=False))

    def _network_proba(self, X):
        """The fitted network's class probabilities, by its forward pass in Rust."""
        xs = np.ascontiguousarray(self._rows(X), dtype=np.float64)
        return _native.network_probabilities(self.layer_sizes_, self.activation_,
                                             np.ascontiguousarray(self.coef_), xs)

    def _logits(self, X):
        if self.layer_sizes_ is not None:
            with np.errstate(divide="ignore"):
                return np.log(self._network_proba(X))
        return np.asarray(self._rows(X) @ self.coef_.T, dtype=np.float64)

    def decision_function(self, X):
        """The logits of the (standardised) rows.

        ``coef_ @ x`` for the linear model, the log-probabilities (the logits up to a per-row
        constant) for a network.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes: then the
        second class's logit minus the first's (> 0 predicts ``classes_[1]``).
        """
        check_is_fitted(self, "coef_")
        z = self._logits(X)
        if len(self.classes_) == 2:
            return z[:, 1] - z[:, 0]
        return z

    def predict(self, X):
        """The class with the largest logit (the first on ties).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,), of ``classes_``' type
        """
        check_is_fitted(self, "coef_")
        return self.classes_[np.argmax(self._logits(X), axis=1)]

    def predict_proba(self, X):
        """Class probabilities, softmax of the logits.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_classes), columns in ``classes_``' order
        """
        check_is_fitted(self, "coef_")
        if self.layer_sizes_ is not None:
            return self._network_proba(X)
        z = self._logits(X)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)


# `--batch-size`'s default in the library.
_LIBRARY_BATCH_SIZE = 64
