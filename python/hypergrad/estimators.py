"""scikit-learn estimators on top of :func:`hypergrad.run` (SPEC §7).

* :class:`LassoHO`, :class:`ElasticNetHO`, :class:`WeightedLassoHO`: the ℓ1 problems of SPEC
  §2 (``lasso``, ``enet``, ``wlasso``), whose penalties are chosen by an outer search (HOAG by
  default) with hypergradients, on a held-out split (``criterion="holdout"``) or K-fold
  cross-validation (``criterion="cv"``). No intercept, as in SPEC §2: centre ``X`` and ``y``
  to get one. ``alpha_`` is λ of the objective (1/2n)‖y − Xw‖² + λ‖w‖₁, i.e. scikit-learn's
  ``alpha`` for the same data.
* :class:`HyperCleaner`: a softmax classifier (linear, or a multilayer perceptron with
  ``model="mlp:H1,…"``) trained with one weight σ(θ_i) per training row, the weights learnt
  on clean validation rows (``hyperclean``).

The parameters follow scikit-learn's conventions (``get_params``/``set_params``, ``clone``,
``Pipeline``, ``GridSearchCV``); fitted attributes end in ``_``.
"""

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from . import _api, _native

__all__ = ["LassoHO", "ElasticNetHO", "WeightedLassoHO", "HyperCleaner", "holdout_indices",
           "cv_folds"]


def _seed(random_state):
    """An int seed for the Rust side, and a NumPy RandomState for the splits made here."""
    if random_state is None or isinstance(random_state, (int, np.integer)):
        seed = 0 if random_state is None else int(random_state)
        if seed < 0:
            raise ValueError(f"invalid value for random_state: must be >= 0, got {seed}")
        return seed, check_random_state(random_state)
    rs = check_random_state(random_state)
    return int(rs.randint(0, 2**31 - 1)), rs


def holdout_indices(n, val_fraction, random_state=0):
    """The rows (train, val) of the held-out split :class:`LassoHO` and :class:`HyperCleaner`
    make: ``round(val_fraction·n)`` validation rows (at least one, at most n − 1), drawn by
    ``check_random_state(random_state).permutation(n)``; each part sorted."""
    if not (isinstance(val_fraction, (float, int, np.floating, np.integer))
            and 0.0 < float(val_fraction) < 1.0):
        raise ValueError(f"invalid value for val_fraction: must be in (0, 1), got {val_fraction!r}")
    if n < 2:
        raise ValueError(f"a held-out split needs at least 2 rows, got {n}")
    n_val = min(max(int(round(float(val_fraction) * n)), 1), n - 1)
    perm = check_random_state(random_state).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


_MASK = (1 << 64) - 1

# `--batch-size`'s default (Settings::default() in src/api/settings.rs).
_LIBRARY_BATCH_SIZE = 64


def _rust_permutation(n, seed):
    """``Rng::new(seed).permutation(n)`` of the Rust library (xoshiro256++ seeded by
    splitmix64; Fisher–Yates with Lemire's unbiased bounded draws)."""
    sm = seed & _MASK
    s = []
    for _ in range(4):
        sm = (sm + 0x9E3779B97F4A7C15) & _MASK
        z = sm
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
        s.append(z ^ (z >> 31))

    def rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & _MASK

    def next_u64():
        result = (rotl((s[0] + s[3]) & _MASK, 23) + s[0]) & _MASK
        t = (s[1] << 17) & _MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def below(m):
        prod = next_u64() * m
        low = prod & _MASK
        if low < m:
            threshold = ((-m) & _MASK) % m
            while low < threshold:
                prod = next_u64() * m
                low = prod & _MASK
        return prod >> 64

    p = list(range(n))
    for i in range(n - 1, 0, -1):
        j = below(i + 1)
        p[i], p[j] = p[j], p[i]
    return np.asarray(p, dtype=np.int64)


def cv_folds(n, k, random_state=0):
    """The K folds ``criterion="cv"`` uses, as ``[(train_rows, held_out_rows), ...]`` (each
    sorted): the rows shuffled by the Rust library's seeded generator, fold f holding
    positions ⌊f·n/K⌋ … ⌊(f+1)·n/K⌋ − 1 of that order. Give them to scikit-learn
    (``LassoCV(cv=cv_folds(n, 5))``) to compare on the same folds."""
    seed, _ = _seed(random_state)
    if not 2 <= k <= n:
        raise ValueError(f"invalid value for --folds: needs 2 ≤ K ≤ n = {n}, got {k}")
    perm = _rust_permutation(n, seed)
    folds = []
    for f in range(k):
        lo, hi = f * n // k, (f + 1) * n // k
        held = np.sort(perm[lo:hi])
        fit = np.sort(np.concatenate([perm[:lo], perm[hi:]]))
        folds.append((fit, held))
    return folds


def _rows(x, idx):
    """Rows ``idx`` of a dense array or a sparse matrix (kept sparse)."""
    if _api._is_sparse(x) and x.format not in ("csr", "csc"):
        x = x.tocsr()
    return x[idx]


def _n_rows(x):
    if _api._is_sparse(x) or isinstance(x, np.ndarray):
        return x.shape[0] if x.ndim >= 1 else 0
    return len(x)


def _plain(value):
    """A NumPy scalar as the Python one (its repr is 9, not np.int64(9))."""
    return value.item() if isinstance(value, np.generic) else value


def _check_lengths(x, y, names=("X", "y")):
    n, m = x.shape[0], y.shape[0]
    if n != m:
        raise ValueError(
            f"dimension mismatch: {names[0]} has {n} rows but {names[1]} has {m} labels"
        )


# The options of `run` that the ℓ1 estimators' parameters set.
_L1_PARAMS = (("outer_opt", "search"), ("outer_steps", "max_steps"), ("inner_tol", "tol"),
              ("folds", "cv"), ("seed", "random_state"))


class _L1HO(RegressorMixin, BaseEstimator):
    """Shared by the ℓ1 estimators; ``_problem`` names the SPEC §2 problem."""

    _problem = None

    def __init__(self, criterion="holdout", val_fraction=0.25, cv=5, method="implicit-forward",
                 search="hoag", max_steps=50, tol=1e-4, random_state=0, device="auto"):
        self.criterion = criterion
        self.val_fraction = val_fraction
        self.cv = cv
        self.method = method
        self.search = search
        self.max_steps = max_steps
        self.tol = tol
        self.random_state = random_state
        self.device = device

    def _check_params(self):
        if self.criterion not in ("holdout", "cv"):
            raise ValueError(
                f"invalid value for criterion: unknown value {self.criterion!r} (use holdout, cv)"
            )
        if self.criterion == "cv" and not (
            isinstance(self.cv, (int, np.integer)) and not isinstance(self.cv, bool)
            and self.cv >= 2
        ):
            raise ValueError(f"invalid value for cv: the number of folds must be an integer >= 2, got {self.cv!r}")
        if not (isinstance(self.max_steps, (int, np.integer)) and not isinstance(self.max_steps, bool)
                and self.max_steps >= 0):
            raise ValueError(f"invalid value for max_steps: must be an integer >= 0, got {self.max_steps!r}")
        if not (isinstance(self.tol, (int, float, np.floating, np.integer)) and self.tol > 0):
            raise ValueError(f"invalid value for tol: must be > 0, got {self.tol!r}")

    def fit(self, X, y):
        """Searches the penalty on ``X``, ``y`` and fits ``coef_`` at the best one.

        ``criterion="holdout"``: the search minimises the MSE on ``val_fraction`` of the rows
        (drawn with ``random_state``, see :func:`holdout_indices`), the model being trained on
        the others; ``criterion="cv"``: the mean MSE over ``cv`` folds of all rows (the folds
        drawn by the Rust library from ``random_state``: :func:`cv_folds` lists them). ``coef_`` is the model trained at
        the best penalty on the training rows of the criterion (all rows for ``cv``)."""
        self._check_params()
        seed, rs = _seed(self.random_state)
        Xd = X if (_api._is_sparse(X) or isinstance(X, np.ndarray)) else np.asarray(X)
        _api._design(Xd, "X")  # type checks first, with their messages
        yv = _api._labels(y, "y")
        _check_lengths(Xd, yv)
        # Before the split: a NaN is named at its row of X, not of the part it lands in.
        _api._check_finite(Xd, "X")
        _api._check_finite_labels(yv, "X")
        options = dict(method=self.method, outer_steps=int(self.max_steps),
                       outer_opt=self.search, inner_tol=float(self.tol), device=self.device,
                       seed=seed)
        try:
            if self.criterion == "holdout":
                train, val = holdout_indices(Xd.shape[0], self.val_fraction, rs)
                result = _api.run(self._problem, _rows(Xd, train), yv[train], _rows(Xd, val),
                                  yv[val], **options)
                self.train_indices_, self.val_indices_ = train, val
            else:
                # The folds are made from the training rows; the validation argument is unused.
                head = np.arange(min(1, Xd.shape[0]))
                result = _api.run(self._problem, Xd, yv, _rows(Xd, head), yv[head],
                                  folds=int(self.cv), **options)
        except ValueError as err:
            # Name the estimator's parameters, not the options they map to.
            message = str(err)
            for option, param in _L1_PARAMS:
                message = message.replace(f"invalid value for {option}:", f"invalid value for {param}:")
            raise ValueError(message) from None
        theta = np.asarray(result["theta"], dtype=np.float64)
        self.theta_ = theta
        self.coef_ = np.asarray(result["coef"], dtype=np.float64)
        self.best_loss_ = float(result["outer_loss"])
        self.trace_ = result["trace"]
        self.n_iter_ = int(result.get("evaluations", len(self.trace_)))
        self.n_features_in_ = int(Xd.shape[1])
        self.result_ = result
        self._set_penalties(np.exp(theta))
        return self

    def _set_penalties(self, lam):
        self.alpha_ = float(lam[0])

    def predict(self, X):
        """``X @ coef_`` (no intercept)."""
        check_is_fitted(self, "coef_")
        Xd = X if (_api._is_sparse(X) or isinstance(X, np.ndarray)) else np.asarray(X)
        _api._design(Xd, "X")
        if Xd.shape[1] != self.n_features_in_:
            raise ValueError(
                f"dimension mismatch: X has {Xd.shape[1]} features but the model was fitted "
                f"with {self.n_features_in_}"
            )
        _api._check_finite(Xd, "X")
        return np.asarray(Xd @ self.coef_, dtype=np.float64).ravel()


class LassoHO(_L1HO):
    """Lasso whose λ is chosen by hypergradient descent (SPEC §2 ``lasso``).

    Objective (1/2n)‖y − Xw‖² + λ‖w‖₁ (scikit-learn's ``Lasso`` with ``alpha = λ`` and
    ``fit_intercept=False``). Parameters: ``criterion`` ``"holdout"`` or ``"cv"``,
    ``val_fraction`` (holdout), ``cv`` (folds), ``method`` (``implicit-forward``,
    ``implicit``, ``forward``), ``search`` (``hoag``, ``adam``, ``grid``, ``random``),
    ``max_steps`` (outer steps, or grid points), ``tol`` (the inner solves' relative duality
    gap, scikit-learn's ``tol``; HOAG tightens its own schedule beyond it), ``random_state``,
    ``device``.

    Fitted: ``alpha_``, ``coef_``, ``n_iter_`` (criterion evaluations), ``trace_`` (one record
    per evaluation), ``best_loss_`` (the criterion at ``alpha_``), ``theta_`` (log λ).
    """

    _problem = "lasso"


class ElasticNetHO(_L1HO):
    """Elastic net (SPEC §2 ``enet``: lasso + ½λ₂‖w‖²) with both penalties chosen by
    hypergradient descent. Parameters as :class:`LassoHO`. Fitted: ``alpha_`` (the ℓ1 weight
    λ₁), ``l2_`` (λ₂), ``coef_``, ``n_iter_``, ``trace_``, ``best_loss_``, ``theta_``."""

    _problem = "enet"

    def _set_penalties(self, lam):
        self.alpha_ = float(lam[0])
        self.l2_ = float(lam[1])


class WeightedLassoHO(_L1HO):
    """Weighted lasso (SPEC §2 ``wlasso``: Σ_j λ_j |w_j|) with one λ per feature chosen by
    hypergradient descent. Parameters as :class:`LassoHO`. Fitted: ``alphas_`` (one per
    feature), ``coef_``, ``n_iter_``, ``trace_``, ``best_loss_``, ``theta_``."""

    _problem = "wlasso"

    def _set_penalties(self, lam):
        self.alphas_ = np.asarray(lam, dtype=np.float64)


def _standardize_stats(x):
    """Mean and scale of each column as the Rust library's ``--standardize`` computes them
    (population standard deviation; a constant column keeps its value as mean and scale 1)."""
    n = x.shape[0]
    mean = np.zeros(x.shape[1])
    scale = np.ones(x.shape[1])
    if n == 0:
        return mean, scale
    constant = np.all(x == x[:1], axis=0)
    mean = np.where(constant, x[0], x.mean(axis=0))
    std = np.sqrt(((x - mean) ** 2).mean(axis=0))
    ok = ~constant & (std > 0) & np.isfinite(std)
    scale = np.where(ok, std, 1.0)
    return mean, scale


class HyperCleaner(ClassifierMixin, BaseEstimator):
    """Label cleaning by hypergradient descent (SPEC §2 ``hyperclean``).

    A softmax classifier (``standardize=True`` z-scores the features with the training rows'
    statistics) is trained with weight σ(θ_i) on training row i and ridge penalty ``l2``; θ is
    learnt so that the model does well on clean validation rows. Rows whose labels are wrong
    end up with small weights.

    Parameters: ``method`` (``nhgd`` and the other SPEC §3 methods), ``curvature`` (NHGD's
    ``dense``, ``kfac``, ``lowrank``; ``None`` is the library's default), ``outer_steps``,
    ``l2`` (C), ``standardize``, ``model`` (``"linear"``: no intercept; ``"mlp:H1[,H2,…]"``: a
    multilayer perceptron with biases, SPEC §8, w₀ drawn from ``random_state``, ``l2`` on its
    weight matrices), ``activation`` (``"tanh"`` or ``"relu"``; networks only),
    ``inner_solver`` and ``inner_tol`` (the inner solve of the deterministic methods such as
    ``cg``: ``newton``, ``lbfgs``, ``gd``, ``agd``, or the mini-batch ``sgd`` and ``adam``;
    ``None`` is the library's default, Newton-CG to 1e-10 in f64; NHGD and the other
    stochastic methods train with their own SGD loop and ignore them), ``device``,
    ``random_state``. The estimator has no batch size: the stochastic methods draw the
    library's mini-batches of 64 rows, or all the training rows when there are fewer.

    ``fit(X, y, X_val, y_val)``: any labels (``classes_ = numpy.unique(y)``); the validation
    labels must be among them. Without ``X_val``, a quarter of the training rows (drawn with
    ``random_state``) is held out for validation.

    Fitted: ``sample_weight_`` (σ(θ), one per training row), ``coef_`` (linear: c × d,
    class-major, logits ``z = coef_ @ x`` of the standardised x; network: its P parameters in
    the layout of SPEC §8, layer by layer, each an ``n_l × (n_{l−1} + 1)`` row-major block
    whose last column is the bias), ``layer_sizes_`` (network: d, H1, …, c; ``None`` for the
    linear model), ``classes_``, ``trace_``, ``theta_``, ``mean_`` and ``scale_`` (the
    standardisation; 0 and 1 when it is off). ``predict``/``predict_proba``/``score`` run the
    fitted network's forward pass in Rust (``hypergrad._native.network_probabilities``).
    """

    def __init__(self, method="nhgd", curvature=None, outer_steps=20, l2=0.01, standardize=True,
                 model="linear", activation="tanh", inner_solver=None, inner_tol=None,
                 device="auto", random_state=0):
        self.method = method
        self.curvature = curvature
        self.outer_steps = outer_steps
        self.l2 = l2
        self.standardize = standardize
        self.model = model
        self.activation = activation
        self.inner_solver = inner_solver
        self.inner_tol = inner_tol
        self.device = device
        self.random_state = random_state

    def _dense(self, X, name):
        if _api._is_sparse(X):
            X = X.toarray()
        elif not isinstance(X, np.ndarray):
            X = np.asarray(X)
        _api._design(X, name)
        # Before the standardisation, which would spread a NaN over its column (and before
        # predict's argmax, which would make it class 0).
        _api._check_finite(X, name)
        # Row-major float64 (what the library copies it to anyway): NumPy's column means and
        # deviations round differently on a Fortran-ordered array, and the fit would then
        # depend on the layout in the last bits.
        return np.ascontiguousarray(X, dtype=np.float64)

    def _transform(self, X):
        X = np.asarray(X, dtype=np.float64)
        return (X - self.mean_) / self.scale_

    def fit(self, X, y, X_val=None, y_val=None):
        if (X_val is None) != (y_val is None):
            raise ValueError("X_val and y_val go together: give both or neither")
        seed, rs = _seed(self.random_state)
        X = self._dense(X, "X")
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y: expected a 1-D array of labels, got shape {y.shape}")
        _check_lengths(X, y)
        if X_val is None:
            train, val = holdout_indices(X.shape[0], 0.25, rs)
            X, X_val, y, y_val = X[train], X[val], y[train], y[val]
        else:
            X_val = self._dense(X_val, "X_val")
            y_val = np.asarray(y_val)
            if y_val.ndim != 1:
                raise ValueError(f"y_val: expected a 1-D array of labels, got shape {y_val.shape}")
            _check_lengths(X_val, y_val, ("X_val", "y_val"))
            _api._check_widths([("X", X), ("X_val", X_val)])  # before the standardisation
        if y.shape[0] == 0:
            raise ValueError("y: there are no training rows")
        _api._check_finite_labels(y, "X")
        _api._check_finite_labels(y_val, "X_val")
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y: hyper-cleaning needs at least 2 classes, got {len(classes)}")
        pos = np.searchsorted(classes, y_val)
        pos = np.clip(pos, 0, len(classes) - 1)
        bad = classes[pos] != y_val
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(
                f"y_val: label {_plain(y_val[i])!r} at row {i} is not one of the training "
                f"labels ({', '.join(map(str, classes[:10]))}{', ...' if len(classes) > 10 else ''})"
            )
        d = X.shape[1]
        if self.standardize:
            self.mean_, self.scale_ = _standardize_stats(np.asarray(X, dtype=np.float64))
        else:
            self.mean_, self.scale_ = np.zeros(d), np.ones(d)
        Xs = self._transform(X) if self.standardize else X
        Xvs = self._transform(X_val) if self.standardize else X_val
        # The library's mini-batch (64 rows) is refused by the stochastic methods when the
        # training part is smaller; the estimator has no batch size to set, so it takes them all.
        n_train = y_idx.shape[0]
        batch_size = n_train if n_train < _LIBRARY_BATCH_SIZE else None
        result = _api.run("hyperclean", Xs, y_idx, Xvs, pos, method=self.method,
                          curvature=self.curvature, outer_steps=int(self.outer_steps),
                          batch_size=batch_size,
                          l2=float(self.l2), model=self.model, activation=self.activation,
                          inner_solver=self.inner_solver, inner_tol=self.inner_tol,
                          device=self.device, seed=seed)
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
        self.n_features_in_ = d
        self.result_ = result
        return self

    def _rows(self, X):
        check_is_fitted(self, "coef_")
        X = self._dense(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"dimension mismatch: X has {X.shape[1]} features but the model was fitted "
                f"with {self.n_features_in_}"
            )
        return self._transform(X)

    def _network_proba(self, X):
        """The fitted network's class probabilities, by its forward pass in Rust."""
        xs = np.ascontiguousarray(self._rows(X), dtype=np.float64)
        return _native.network_probabilities(self.layer_sizes_, self.activation_,
                                             np.ascontiguousarray(self.coef_), xs)

    def decision_function(self, X):
        """The logits of the (standardised) rows, n × c: ``coef_ @ x`` for the linear model,
        the log-probabilities (the logits up to a per-row constant) for a network."""
        if getattr(self, "layer_sizes_", None) is not None:
            with np.errstate(divide="ignore"):
                return np.log(self._network_proba(X))
        return self._rows(X) @ self.coef_.T

    def predict(self, X):
        """The class with the largest logit (the first on ties)."""
        if getattr(self, "layer_sizes_", None) is not None:
            return self.classes_[np.argmax(self._network_proba(X), axis=1)]
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]

    def predict_proba(self, X):
        if getattr(self, "layer_sizes_", None) is not None:
            return self._network_proba(X)
        z = self.decision_function(X)
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)
