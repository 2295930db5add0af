"""Bad input raises ValueError or TypeError with a one-line message (the command line's,
where the command line can meet the same mistake); nothing crashes the interpreter."""

import re

import numpy as np
import pytest
import scipy.sparse as sp

import hypergrad as hg
from conftest import write_csv

rng = np.random.default_rng(0)
X = rng.standard_normal((20, 3))
Y = X @ np.array([1.0, 2.0, 3.0])


def grad(problem="ridge", x=X, y=Y, xv=X, yv=Y, **kw):
    return hg.hypergradient(problem, x, y, xv, yv, **kw)


BAD = [
    # name, call, exception, words the message contains
    ("rows vs labels", lambda: grad(y=Y[:-1]), ValueError, "x has 20 rows but y has 19 labels"),
    ("NaN in X", lambda: grad(x=np.where(X > 1.5, np.nan, X)), ValueError, "non-finite value NaN at row"),
    ("inf in X_val", lambda: grad(xv=np.where(X > 1.5, np.inf, X)), ValueError, "non-finite value inf"),
    ("inf in y", lambda: grad(y=np.where(Y > 1, np.inf, Y)), ValueError, "is not finite"),
    ("NaN in sparse X", lambda: grad("lasso", x=sp.csr_matrix(np.where(X > 1.5, np.nan, X))), ValueError, "finite"),
    ("0/1 labels for logreg", lambda: grad("logreg", y=(Y > 0) * 1.0, yv=np.sign(Y)), ValueError, "is not -1 or +1"),
    ("real labels for softmax", lambda: grad("softmax"), ValueError, "is not a class index"),
    ("unknown option", lambda: grad(foo=1), TypeError, "unknown option 'foo'"),
    ("option of the wrong type", lambda: grad(inner_tol="x"), ValueError, "invalid value for inner_tol"),
    ("option out of range", lambda: grad(batch_size=-1), ValueError, "invalid value for batch_size"),
    ("option value not a scalar", lambda: grad(inner_tol=[1e-3]), TypeError, "invalid value for inner_tol"),
    ("unknown problem", lambda: grad("foo"), ValueError, "invalid value for --problem: unknown value 'foo'"),
    ("unknown method", lambda: grad(method="bar"), ValueError, "invalid value for method"),
    ("smooth method for lasso", lambda: grad("lasso", method="cg"), ValueError, "cg is a smooth-problem method"),
    ("layout of another problem", lambda: grad(hyper="per-class"), ValueError, "per-class is not a layout of ridge"),
    ("θ of the wrong length", lambda: grad(theta=np.zeros(5)), ValueError, "θ has 5 entries"),
    ("θ not finite", lambda: grad(theta=float("nan")), ValueError, "not a finite number"),
    ("θ a bool", lambda: grad(theta=True), TypeError, "theta"),
    ("integer X", lambda: grad(x=X.astype(np.int64)), TypeError, "expected float32 or float64"),
    ("integer sparse X", lambda: grad("lasso", x=sp.csr_matrix(X.astype(np.int64))), TypeError, "expected float32 or float64"),
    ("string X", lambda: grad(x="abc"), TypeError, "expected float32 or float64"),
    ("None X", lambda: grad(x=None), TypeError, "got None"),
    ("complex X", lambda: grad(x=X.astype(complex)), TypeError, "complex"),
    ("1-D X", lambda: grad(x=X[:, 0]), ValueError, "expected a 2-D array"),
    ("2-D y", lambda: grad(y=Y[:, None]), ValueError, "expected a 1-D array of labels"),
    ("string labels", lambda: grad("softmax", y=np.array(["a"] * 20)), TypeError, "numeric labels"),
    ("empty X", lambda: grad(x=X[:0], y=Y[:0]), ValueError, "at least one row"),
    ("no columns", lambda: grad(x=X[:, :0], xv=X[:, :0]), ValueError, "no columns"),
    ("X_val narrower than X", lambda: grad(xv=X[:, :2]), ValueError, "X has 3 columns but X_val has 2"),
    ("outer optimiser of the other family", lambda: hg.run("ridge", X, Y, X, Y, outer_opt="hoag"), ValueError, "invalid value for outer_opt"),
    ("X_test without y_test", lambda: hg.run("ridge", X, Y, X, Y, X_test=X), ValueError, "X_test and y_test"),
    ("negative outer steps", lambda: hg.run("ridge", X, Y, X, Y, outer_steps=-3), ValueError, "outer_steps"),
]


@pytest.mark.parametrize("name,call,exc,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, call, exc, words):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert words in message
    assert "\n" not in message and message == message.strip()


def test_cuda_without_a_gpu_is_a_runtime_error():
    info = hg.info()
    if info.get("backends", {}).get("cuda", {}).get("available"):
        pytest.skip("a CUDA device is available here")
    with pytest.raises(RuntimeError, match="cuda"):
        grad(device="cuda")


CLI_SAME = [
    # problem, labels (train), kwargs, CLI flags
    ("logreg", np.where(np.arange(20) % 2 == 0, 0.0, 1.0), {}, []),
    ("softmax", np.where(np.arange(20) % 2 == 0, -1.0, 1.0), {}, []),
    ("lasso", Y, dict(method="cg"), ["--method", "cg"]),
    ("ridge", Y, dict(hyper="per-class"), ["--hyper", "per-class"]),
    ("ridge", Y, dict(method="implicit"), ["--method", "implicit"]),
]


@pytest.mark.parametrize("problem,y,kwargs,flags", CLI_SAME)
def test_message_is_the_clis(problem, y, kwargs, flags, cli, tmp_path):
    yv = np.where(np.arange(20) % 2 == 0, -1.0, 1.0) if problem == "logreg" else y
    with pytest.raises((ValueError, TypeError)) as info:
        hg.hypergradient(problem, X, y, X, yv, **kwargs)
    train = write_csv(tmp_path / "train.csv", X, y)
    code, _, stderr = cli("grad", "--problem", problem, "--train", train,
                          "--val", write_csv(tmp_path / "val.csv", X, yv), *flags)
    assert code != 0
    cli_message = stderr.strip().splitlines()[-1].removeprefix("error: ")
    # the same words; an option is named by its keyword (hyper) instead of its flag (--hyper),
    # and a row is counted from 0 (SPEC §7) where the command line counts a file's rows from 1
    for flag, keyword in (("--method", "method"), ("--hyper", "hyper")):
        cli_message = cli_message.replace(f"invalid value for {flag}:", f"invalid value for {keyword}:")
    cli_message = re.sub(r"at row (\d+)", lambda m: f"at row {int(m.group(1)) - 1}", cli_message)
    # and a bad label is named by the argument that holds it (issue 25), not the dataset
    cli_message = cli_message.replace(f"dataset '{train}': label", "y: label")
    assert str(info.value) == cli_message.replace(train, "X")


def test_interpreter_survives_many_errors():
    for _ in range(50):
        with pytest.raises(ValueError):
            grad(x=np.full((4, 3), np.nan), y=np.zeros(4))
    assert grad()["outer_loss"] >= 0
