"""The functions ``info``, ``hypergradient`` and ``run``.

This layer checks the *types* of the arguments (NumPy arrays of float32/float64 in C or
Fortran order, SciPy sparse matrices, labels) and hands them to the Rust extension
``hypergrad._native``; the *values* (shapes, finiteness, labels that fit the problem, option
names and ranges) are checked by the Rust library, so a bad input raises ``ValueError`` or
``TypeError`` with the one-line message the command line gives for it, rows and columns
counted from 0 and the argument named as here.
"""

import json
import os
import sys
import warnings

import numpy as np

from . import _native

__all__ = ["info", "hypergradient", "run"]

# Result entries that are vectors: returned as float64 NumPy arrays.
_VECTOR_KEYS = ("theta", "hypergradient", "best_theta", "coef")


def _is_sparse(x):
    """Whether ``x`` is a SciPy sparse matrix or array (without importing SciPy)."""
    sparse = sys.modules.get("scipy.sparse")
    return sparse is not None and sparse.issparse(x)


def _dtype_error(name, dtype):
    return TypeError(
        f"{name}: expected float32 or float64 values, got dtype {dtype} "
        f"(convert with {name}.astype(numpy.float64))"
    )


def _design(x, name="X"):
    """``x`` as the extension takes it: a 2-D float32/float64 ndarray (C or Fortran order, not
    copied), or a sparse matrix as ``(n_rows, n_cols, indptr, indices, data)`` of its CSR form
    (a CSC matrix is converted to CSR, never densified)."""
    if _is_sparse(x):
        if x.ndim != 2:
            raise ValueError(f"{name}: expected a 2-D sparse matrix, got {x.ndim}-D")
        if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):
            raise _dtype_error(name, x.dtype)
        if x.format != "csr":
            x = x.tocsr()
        if not x.has_canonical_format:
            x = x.copy()
            x.sum_duplicates()
        n_rows, n_cols = x.shape
        return (
            int(n_rows),
            int(n_cols),
            np.ascontiguousarray(x.indptr, dtype=np.int64),
            np.ascontiguousarray(x.indices, dtype=np.int64),
            np.ascontiguousarray(x.data, dtype=np.float64),
        )
    if not isinstance(x, np.ndarray):
        if x is None:
            raise TypeError(f"{name}: expected a NumPy array or a SciPy sparse matrix, got None")
        try:
            x = np.asarray(x)
        except ValueError as err:  # a ragged list, ...
            raise ValueError(f"{name}: {_one_line(err)}") from None
    if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):
        raise _dtype_error(name, x.dtype)
    if x.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array (n_samples, n_features), got shape {x.shape}"
        )
    if x.dtype.byteorder not in ("=", "|"):
        x = x.astype(x.dtype.newbyteorder("="))
    if not (x.flags.c_contiguous or x.flags.f_contiguous):
        # A strided view: the extension copies it anyway, in row-major order.
        x = np.ascontiguousarray(x)
    return x


def _one_line(err):
    return " ".join(str(err).split())


def _check_finite(x, name="X"):
    """Raises the library's ``ValueError`` for the first NaN or inf of ``x`` (a dense array
    or a sparse matrix), its position counted from 0. For the estimators, which split or
    standardise the rows before the library sees them (a NaN would then be reported at a
    row of the split, or spread over a whole column by the standardisation)."""
    if _is_sparse(x):
        values = x.data
        if np.isfinite(values).all():
            return
        coo = x.tocoo()
        k = int(np.argmax(~np.isfinite(coo.data)))
        row, col, value = int(coo.row[k]), int(coo.col[k]), coo.data[k]
    else:
        x = np.asarray(x)
        if np.isfinite(x).all():
            return
        row, col = (int(i) for i in np.argwhere(~np.isfinite(x))[0])
        value = x[row, col]
    raise ValueError(
        f"numerical failure: dataset '{name}': x has the non-finite value {_number(value)} "
        f"at row {row}, column {col}"
    )


def _check_finite_labels(y, name="X"):
    """As :func:`_check_finite` for the labels (float ``y``), the dataset named by its rows."""
    y = np.asarray(y)
    if y.dtype.kind != "f" or np.isfinite(y).all():
        return
    i = int(np.argmax(~np.isfinite(y)))
    raise ValueError(
        f"numerical failure: dataset '{name}': label {_number(y[i])} at row {i} is not finite"
    )


def _number(v):
    """A non-finite value as the library writes it: NaN, inf, -inf."""
    return "NaN" if np.isnan(v) else ("inf" if v > 0 else "-inf")


def _check_problem(problem):
    if not isinstance(problem, str):
        raise TypeError(
            f"problem: expected a problem name (a str such as 'ridge'), got {type(problem).__name__}"
        )


def _check_widths(parts):
    """Every design has columns, and as many as the training one (the command line pads
    narrower LIBSVM files with zero columns; arrays of different widths are a mistake)."""
    (name0, x0), *others = parts
    d = x0[1] if isinstance(x0, tuple) else x0.shape[1]
    if d == 0:
        raise ValueError(f"dimension mismatch: {name0} has no columns (features)")
    for name, x in others:
        dx = x[1] if isinstance(x, tuple) else x.shape[1]
        if dx != d:
            raise ValueError(
                f"dimension mismatch: {name0} has {d} columns but {name} has {dx}"
            )


def _labels(y, name="y"):
    """``y`` as a 1-D float64 array (ints and bools are exact in float64)."""
    if y is None:
        raise TypeError(f"{name}: expected a 1-D array of labels, got None")
    if _is_sparse(y):
        raise TypeError(f"{name}: expected a dense 1-D array of labels, got a sparse matrix")
    try:
        y = np.asarray(y)
    except ValueError as err:
        raise ValueError(f"{name}: {_one_line(err)}") from None
    if y.dtype.kind not in "biuf":
        raise TypeError(
            f"{name}: expected numeric labels, got dtype {y.dtype} "
            "(map class names to 0..c-1, e.g. with numpy.unique(y, return_inverse=True))"
        )
    if y.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got shape {y.shape}")
    return np.ascontiguousarray(y, dtype=np.float64)


def _theta(theta):
    """``None`` (the problem's default), a number, or a 1-D float64 array."""
    if theta is None:
        return None
    if isinstance(theta, (bool, np.bool_)):
        raise TypeError("invalid value for theta: expected a number or a 1-D array, got a bool")
    if isinstance(theta, (int, float, np.integer, np.floating)):
        return float(theta)
    arr = np.asarray(theta)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"invalid value for theta: expected numbers, got dtype {arr.dtype}")
    if arr.ndim == 0:
        return float(arr)
    if arr.ndim != 1:
        raise ValueError(f"invalid value for theta: expected a 1-D array, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def _options(options):
    """``**options`` for the extension: ``None`` keeps the default; paths become strings;
    NumPy scalars become Python ones."""
    out = {}
    for key, value in options.items():
        if value is None:
            continue
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, np.bool_):
            value = bool(value)
        elif isinstance(value, np.integer):
            value = int(value)
        elif isinstance(value, np.floating):
            value = float(value)
        out[key] = value
    return out


def _arrays(result):
    for key in _VECTOR_KEYS:
        value = result.get(key)
        if isinstance(value, list):
            result[key] = np.asarray(value, dtype=np.float64)
    return result


def info():
    """What ``hypergrad info --json`` shows.

    Returns
    -------
    dict
        ``version``, the build, the kernels, and the ``backends`` (CPU threads and
        precisions; the CUDA devices found, if any).
    """
    return json.loads(_native.info())


# The parameters `hypergradient` and `run` share, written once and put into both docstrings
# (at their ``%(shared_parameters)s`` marker) below each function.
_SHARED_PARAMETERS = """    problem : str
        ``"ridge"``, ``"logreg"``, ``"softmax"``, ``"hyperclean"`` (smooth inner problems),
        ``"lasso"``, ``"enet"``, ``"wlasso"`` (ℓ1), ``"distill"`` or ``"quadratic"``.
    X, X_val : ndarray of shape (n, d) or sparse matrix
        Training and validation rows: float32 or float64 (a float32 array is passed without
        a float64 copy on the Python side), C or Fortran order; SciPy CSR/CSC matrices stay
        sparse for the ℓ1 problems.
    y, y_val : array-like of shape (n,)
        Their labels: targets (ridge, ℓ1), ±1 (logreg), class indices 0…c−1 (softmax,
        hyperclean).
    theta : float, array-like of shape (p,) or None, default=None
        The hyperparameters θ (λ = exp(θ)): a number sets every entry. ``None``: 0 for the
        smooth problems, log(λ_max/10) for the ℓ1 problems, with λ_max = ‖Xᵀy‖∞/n.
    hyper : str or None, default=None
        The hyperparameter's shape for the smooth problems: ``"scalar"`` (one λ),
        ``"per-feature"`` or ``"per-class"``; the inner objective is
        L(w) + ½ Σ_j λ_j w_j². ``None``: the problem's default.
    method : str or None, default=None
        How ∇F(θ) is computed: ``"exact"`` (dense solve), ``"cg"``, ``"neumann"``,
        ``"unroll"``, ``"nhgd"``, ``"stocbio"``, ``"amigo"``, ``"soba"`` (smooth problems),
        ``"implicit-forward"``, ``"implicit"``, ``"forward"`` (ℓ1). ``None``: the
        problem's default.
    device : {"auto", "cpu", "cuda"}, default="auto"
        Where it runs; ``"auto"`` takes CUDA when a device is usable and says why not in
        ``device_note`` otherwise.
    **options
        The command line's other long options with ``_`` for ``-``, e.g. ``inner_tol``
        (the inner solve's gradient-norm tolerance), ``inner_solver``, ``l2`` (the fixed
        ridge weight of hyperclean), ``batch_size`` and ``inner_steps`` (the stochastic
        methods' mini-batch and SGD steps), ``curvature`` (NHGD: ``kfac``, ``dense``,
        ``lowrank``), ``rank``, ``ema``, ``model`` (``"linear"`` or ``"mlp:H1,…"``),
        ``activation``, ``standardize``, ``precision`` (``"f32"``/``"f64"``), ``seed``,
        ``folds`` (ℓ1 cross-validation), ``threads``. An unknown name raises ``TypeError``
        listing every name; ``None`` keeps an option's default."""


def _with_shared_parameters(function):
    """``function`` with the shared parameters in its docstring's Parameters section."""
    function.__doc__ = function.__doc__.replace("    %(shared_parameters)s", _SHARED_PARAMETERS)
    return function


@_with_shared_parameters
def hypergradient(problem, X, y, X_val, y_val, *, theta=None, hyper=None, method=None,
                  device="auto", **options):
    """One hypergradient ∇F(θ) of the validation loss, ``hypergrad grad --json`` on arrays.

    F(θ) = f(ŵ(θ); X_val, y_val) with ŵ(θ) = argmin_w g(w, θ; X, y), and
    ∇F(θ) = ∂_θF − ∂²_{θw}g [∂²_{ww}g]⁻¹ ∇_w f, computed by ``method``.

    Parameters
    ----------
    %(shared_parameters)s

    Returns
    -------
    dict
        ``outer_loss`` F(θ), ``theta`` and ``hypergradient`` (NumPy arrays), the inner
        solve's diagnostics (``inner_grad_norm``, ``inner_iters``, …) and, where the method
        has one, ``error_bound`` (a bound on ‖∇F − ĥ‖).
    """
    _check_problem(problem)
    opts = _options(dict(options, hyper=hyper, method=method, device=device))
    x, x_val = _design(X, "X"), _design(X_val, "X_val")
    _check_widths([("X", x), ("X_val", x_val)])
    text = _native.hypergradient(
        problem,
        x,
        _labels(y, "y"),
        x_val,
        _labels(y_val, "y_val"),
        _theta(theta),
        opts,
    )
    return _arrays(json.loads(text))


class _Progress:
    """The progress of a run on ``stream`` (stderr): one bar redrawn in place on a terminal,
    as the command line draws it, or one line per step elsewhere (a log, a notebook)."""

    WIDTH = 24

    def __init__(self, total, stream=None):
        self.total = max(int(total), 0)
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.drawn = False

    def update(self, record):
        step = int(record.get("step", 0))
        done = min((step + 1) / (self.total + 1), 1.0)
        bar = "#" * int(round(self.WIDTH * done))
        loss = record.get("outer_loss")
        loss = "nan" if loss is None else f"{loss:.6g}"
        line = (f"[{bar:<{self.WIDTH}}] step {step}/{self.total}  outer loss {loss}  "
                f"{record.get('seconds', 0.0):.1f} s")
        if self.tty:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.drawn = True

    def close(self):
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _best_record(trace):
    """The record of the best θ an ℓ1 search met, by its own rule: the lowest criterion over
    the evaluations at the final tolerance once there are any (``phase == "refine"``), over
    every evaluation but the refinement's intermediate ones otherwise."""
    usable = [r for r in trace if r.get("phase") != "refine-intermediate"]
    refined = [r for r in usable if r.get("phase") == "refine"]
    candidates = refined or usable
    if not candidates:
        return None
    return min(candidates, key=lambda r: r["outer_loss"])


@_with_shared_parameters
def run(problem, X, y, X_val, y_val, *, X_test=None, y_test=None, theta=None, hyper=None,
        method=None, outer_steps=20, outer_opt=None, device="auto", trace=None,
        checkpoint=None, callback=None, verbose=False, **options):
    """Bilevel optimisation, ``hypergrad run --json`` on arrays.

    θ is updated ``outer_steps`` times from the hypergradients, θ ← θ − lr·ĥ(θ) (or Adam, or
    MAID); the ℓ1 problems run a search instead (HOAG, Adam, grid, random).

    Parameters
    ----------
    %(shared_parameters)s
    X_test, y_test : array-like or None, default=None
        Test rows, scored at every step (``test_loss``, ``test_accuracy``).
    outer_steps : int, default=20
        Outer steps T (T + 1 hypergradients), or the search's evaluations.
    outer_opt : str or None, default=None
        ``"sgd"``, ``"adam"``, ``"maid"``; ``"hoag"``, ``"adam"``, ``"grid"``,
        ``"random"`` for the ℓ1 problems. ``None``: the problem's default.
    trace : str, path or None, default=None
        A JSONL file written as the run goes, one record per step.
    checkpoint : str, path or None, default=None
        A file the run saves after every step and resumes from.
    callback : callable or None, default=None
        ``callback(record)`` after every outer step (every evaluation of an ℓ1 search) with
        that step's trace record, a dict, as the run goes. Returning ``False`` (not
        ``None``) ends the run there, with a result as if that step were the last
        (``"stopped_by_callback": True``; an ℓ1 search returns its best θ so far); an
        exception it raises ends the run and propagates. The GIL is taken only to call it.
    verbose : bool, default=False
        Draw a progress bar on stderr (one line per step where stderr is not a terminal).

    Returns
    -------
    dict
        That of ``run --json``, plus ``trace`` (the list of per-step records), ``theta``
        (the final θ, a NumPy array), ``coef`` (the inner solution at that θ),
        ``outer_loss``, ``stopped_by_callback`` and, with test rows, ``test_loss`` and
        ``test_accuracy``.

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C, within about a second.
    RuntimeError
        A run that diverges (a non-finite θ, hypergradient, loss or inner iterate), with a
        one-line message naming the step and the option to lower.

    Warns
    -----
    RuntimeWarning
        Weights σ(θ) that saturate (hyperclean).
    """
    _check_problem(problem)
    if (X_test is None) != (y_test is None):
        raise ValueError("X_test and y_test go together: give both or neither")
    opts = _options(dict(options, hyper=hyper, method=method, device=device,
                         outer_steps=outer_steps, outer_opt=outer_opt, trace=trace,
                         checkpoint=checkpoint))
    x, x_val = _design(X, "X"), _design(X_val, "X_val")
    x_test = None if X_test is None else _design(X_test, "X_test")
    if x_test is not None and (x_test[0] if isinstance(x_test, tuple) else x_test.shape[0]) == 0:
        # The command line refuses an empty --test file; without this, the run would
        # silently report no test_loss.
        raise ValueError("dimension mismatch: X_test has no rows (give test rows, or no X_test)")
    _check_widths([("X", x), ("X_val", x_val)] + ([] if x_test is None else [("X_test", x_test)]))
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable or None, got {type(callback).__name__}")
    progress = _Progress(outer_steps) if verbose else None
    said_stop = []

    def on_step(text):
        record = json.loads(text)
        if progress is not None:
            progress.update(record)
        if callback is None:
            return None
        answer = callback(record)
        if answer is False:
            said_stop.append(record)
        return answer is not False

    labels = _labels(y, "y")
    labels_val = _labels(y_val, "y_val")
    labels_test = None if y_test is None else _labels(y_test, "y_test")
    try:
        text, trace_text = _native.run(
            problem, x, labels, x_val, labels_val, x_test, labels_test, _theta(theta), opts,
            on_step if (callback is not None or verbose) else None,
        )
    finally:
        if progress is not None:
            progress.close()
    result = json.loads(text)
    records = json.loads(trace_text)
    if result is None:
        # An ℓ1 search the callback stopped: it has no early end of its own, so the result
        # is its best θ so far (its rule), with the model trained there by a search of no
        # steps started at that θ.
        best = _best_record(records)
        if best is None:
            raise RuntimeError("the callback stopped the run before its first evaluation")
        finish = dict(opts, outer_steps=0, trace=None)
        finish.pop("checkpoint", None)
        text, _ = _native.run(problem, x, labels, x_val, labels_val, x_test, labels_test,
                              np.asarray(best["theta"], dtype=np.float64), finish, None)
        result = json.loads(text)
        result["best_theta"] = best["theta"]
        result["best_loss"] = best["outer_loss"]
        result["outer_loss"] = best["outer_loss"]
        result["evaluations"] = len(records)
        result.pop("final", None)
    result["trace"] = records
    result["stopped_by_callback"] = bool(said_stop)
    if result.get("saturation_warning"):
        # Saturated weights σ(θ) do not stop a run; the command line warns on stderr.
        warnings.warn(result["saturation_warning"], RuntimeWarning, stacklevel=2)
    if "theta" not in result and "best_theta" in result:
        # The ℓ1 searches report the best θ they met, its criterion, and the test loss and
        # the coefficients at it.
        result["theta"] = result["best_theta"]
        result.setdefault("outer_loss", result.get("best_loss"))
    final = result.get("final") or (result["trace"][-1] if result["trace"] else {})
    for key in ("outer_loss", "test_loss", "test_accuracy"):
        if result.get(key) is None and final.get(key) is not None:
            result[key] = final[key]
    return _arrays(result)
