"""hg.hypergradient and hg.run against `hypergrad grad --json` / `run --json` on the same
numbers (the arrays written to CSV or LIBSVM files), and dense against sparse input."""

import json
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import hypergrad as hg
from conftest import write_csv, write_libsvm

FLOAT_KEYS = ("outer_loss", "inner_grad_norm", "residual_norm", "error_bound")
INT_KEYS = ("inner_iters", "linear_iters", "p")
SAME_KEYS = ("problem", "method", "hyper", "device", "criterion", "sparse", "support_size")


def assert_same_report(py, cli_out, rtol=1e-9):
    for key in ("theta", "hypergradient"):
        np.testing.assert_allclose(py[key], cli_out[key], rtol=rtol, atol=1e-12, err_msg=key)
    for key in FLOAT_KEYS:
        if cli_out.get(key) is None:
            assert py.get(key) is None, key
        else:
            np.testing.assert_allclose(py[key], cli_out[key], rtol=max(rtol, 1e-8), atol=1e-12, err_msg=key)
    for key in INT_KEYS + SAME_KEYS:
        assert py.get(key) == cli_out.get(key), key
    assert set(cli_out) - {"train", "val"} <= set(py), set(cli_out) - set(py)


def test_info_and_version(cli):
    info = hg.info()
    assert isinstance(info, dict)
    assert info["version"] == hg.__version__
    cli_info = cli.json("info", "--json")
    assert set(cli_info) == set(info)
    assert cli_info["version"] == info["version"]
    code, out, _ = cli("--version")
    assert code == 0 and hg.__version__ in out


SMOOTH_CASES = [
    # problem, data, kwargs, CLI flags
    ("ridge", "diabetes", dict(theta=0.5, method="cg"), ["--theta", "0.5", "--method", "cg"]),
    ("ridge", "diabetes", dict(theta=np.linspace(-1, 1, 10), hyper="per-feature", method="exact"),
     ["--hyper", "per-feature", "--method", "exact"]),
    ("logreg", "diabetes", dict(theta=-1.0, method="cg", inner_tol=1e-9),
     ["--theta", "-1", "--method", "cg", "--inner-tol", "1e-9"]),
    ("softmax", "digits", dict(hyper="per-class", method="cg", standardize=True),
     ["--hyper", "per-class", "--method", "cg", "--standardize"]),
    ("hyperclean", "digits", dict(method="cg", l2=0.05, standardize=True),
     ["--method", "cg", "--l2", "0.05", "--standardize"]),
    # networks (SPEC §8): the model options as **options
    ("softmax", "digits", dict(theta=-4.0, hyper="per-layer", method="cg", model="mlp:12",
                               activation="tanh", standardize=True),
     ["--theta", "-4", "--hyper", "per-layer", "--method", "cg", "--model", "mlp:12",
      "--activation", "tanh", "--standardize"]),
    ("softmax", "digits", dict(theta=-3.0, method="exact", model="mlp:6,5", activation="tanh",
                               seed=2, standardize=True),
     ["--theta", "-3", "--method", "exact", "--model", "mlp:6,5", "--activation", "tanh",
      "--seed", "2", "--standardize"]),
    ("softmax", "digits", dict(theta=-4.0, hyper="per-layer", method="neumann", model="mlp:8",
                               inner_solver="sgd", batch_size=32, inner_tol=1e-2,
                               standardize=True),
     ["--theta", "-4", "--hyper", "per-layer", "--method", "neumann", "--model", "mlp:8",
      "--inner-solver", "sgd", "--batch-size", "32", "--inner-tol", "1e-2", "--standardize"]),
    ("softmax", "digits", dict(theta=-4.0, hyper="per-layer", method="neumann", model="mlp:8",
                               inner_solver="adam", inner_lr=0.01, batch_size=32, inner_tol=1e-2,
                               standardize=True),
     ["--theta", "-4", "--hyper", "per-layer", "--method", "neumann", "--model", "mlp:8",
      "--inner-solver", "adam", "--inner-lr", "0.01", "--batch-size", "32", "--inner-tol", "1e-2",
      "--standardize"]),
    ("hyperclean", "digits", dict(method="nhgd", model="mlp:300", activation="relu",
                                  curvature="kfac", standardize=True),
     ["--method", "nhgd", "--model", "mlp:300", "--activation", "relu", "--curvature", "kfac",
      "--standardize"]),
    # dataset distillation (SPEC §9): θ the synthetic rows, the linear model or a network
    ("distill", "digits", dict(method="cg", images_per_class=2, l2=0.05, standardize=True),
     ["--method", "cg", "--images-per-class", "2", "--l2", "0.05", "--standardize"]),
    ("distill", "digits", dict(method="exact", model="mlp:8", activation="tanh",
                               standardize=True),
     ["--method", "exact", "--model", "mlp:8", "--activation", "tanh", "--standardize"]),
]


def _smooth_data(name, problem, diabetes, digits):
    if name == "diabetes":
        x, y, xv, yv = diabetes
        if problem == "logreg":
            y, yv = np.where(y > 0, 1.0, -1.0), np.where(yv > 0, 1.0, -1.0)
        return x, y, xv, yv
    x, y, xv, yv = digits[:4]
    return x[:300], y[:300], xv[:200], yv[:200]


@pytest.mark.parametrize("problem,data,kwargs,flags", SMOOTH_CASES)
def test_grad_smooth_matches_cli(problem, data, kwargs, flags, cli, tmp_path, diabetes, digits):
    x, y, xv, yv = _smooth_data(data, problem, diabetes, digits)
    py = hg.hypergradient(problem, x, y, xv, yv, device="cpu", **kwargs)
    extra = []
    if isinstance(kwargs.get("theta"), np.ndarray):
        path = tmp_path / "theta.txt"
        np.savetxt(path, kwargs["theta"])
        extra = ["--theta-file", path]
    out = cli.json("grad", "--problem", problem, "--train", write_csv(tmp_path / "tr.csv", x, y),
                   "--val", write_csv(tmp_path / "va.csv", xv, yv), "--device", "cpu", "--json",
                   *flags, *extra)
    assert_same_report(py, out)


@pytest.mark.parametrize("problem", ["lasso", "enet", "wlasso"])
@pytest.mark.parametrize("storage", ["dense", "sparse"])
def test_grad_l1_matches_cli(problem, storage, cli, tmp_path, diabetes, sparse_regression):
    if storage == "dense":
        x, y, xv, yv = diabetes
        write = write_csv
    else:
        x, y, xv, yv = sparse_regression
        write = write_libsvm
    py = hg.hypergradient(problem, x, y, xv, yv, method="implicit-forward")
    out = cli.json("grad", "--problem", problem, "--method", "implicit-forward", "--json",
                   "--train", write(tmp_path / "tr", x, y), "--val", write(tmp_path / "va", xv, yv))
    assert py["sparse"] == (storage == "sparse")
    assert_same_report(py, out, rtol=1e-8)


def test_run_softmax_matches_cli(cli, tmp_path, digits):
    x, y, xv, yv, xt, yt = digits
    x, y = x[:300], y[:300]
    py = hg.run("softmax", x, y, xv, yv, X_test=xt, y_test=yt, theta=-2.0, outer_steps=3,
                outer_opt="adam", standardize=True, device="cpu")
    trace = tmp_path / "trace.jsonl"
    out = cli.json("run", "--problem", "softmax", "--train", write_csv(tmp_path / "tr.csv", x, y),
                   "--val", write_csv(tmp_path / "va.csv", xv, yv),
                   "--test", write_csv(tmp_path / "te.csv", xt, yt), "--theta", "-2",
                   "--outer-steps", "3", "--outer-opt", "adam", "--standardize", "--device", "cpu",
                   "--json", "--trace", trace)
    np.testing.assert_allclose(py["theta"], out["theta"], rtol=1e-9)
    assert len(py["trace"]) == 4 and [r["step"] for r in py["trace"]] == [0, 1, 2, 3]
    cli_trace = [__import__("json").loads(line) for line in open(trace)]
    for a, b in zip(py["trace"], cli_trace):
        np.testing.assert_allclose(a["outer_loss"], b["outer_loss"], rtol=1e-9)
        np.testing.assert_allclose(a["test_accuracy"], b["test_accuracy"])
    final = out["final"]
    np.testing.assert_allclose(py["outer_loss"], final["outer_loss"], rtol=1e-9)
    np.testing.assert_allclose(py["test_loss"], final["test_loss"], rtol=1e-9)
    assert py["test_accuracy"] == final["test_accuracy"]
    assert py["coef"].shape == (10 * 64,)


def test_run_network_matches_cli(cli, tmp_path, digits):
    x, y, xv, yv, xt, yt = digits
    x, y = x[:300], y[:300]
    kwargs = dict(model="mlp:10", activation="relu", method="nhgd", outer_steps=3,
                  standardize=True, device="cpu")
    py = hg.run("hyperclean", x, y, xv, yv, X_test=xt, y_test=yt, **kwargs)
    out = cli.json("run", "--problem", "hyperclean", "--train", write_csv(tmp_path / "tr.csv", x, y),
                   "--val", write_csv(tmp_path / "va.csv", xv, yv),
                   "--test", write_csv(tmp_path / "te.csv", xt, yt), "--model", "mlp:10",
                   "--activation", "relu", "--method", "nhgd", "--outer-steps", "3",
                   "--standardize", "--device", "cpu", "--json")
    np.testing.assert_allclose(py["theta"], out["theta"], rtol=1e-9)
    assert py["model"] == out["model"] == "mlp:10" and py["activation"] == "relu"
    assert py["layer_sizes"] == out["layer_sizes"] == [64, 10, 10]
    assert py["coef"].shape == (10 * 65 + 10 * 11,)
    assert py["test_accuracy"] == out["final"]["test_accuracy"]


def test_run_lasso_matches_cli(cli, tmp_path, sparse_regression):
    x, y, xv, yv = sparse_regression
    py = hg.run("lasso", x, y, xv, yv, outer_opt="hoag", outer_steps=8)
    out = cli.json("run", "--problem", "lasso", "--train", write_libsvm(tmp_path / "tr", x, y),
                   "--val", write_libsvm(tmp_path / "va", xv, yv), "--outer-opt", "hoag",
                   "--outer-steps", "8", "--json")
    np.testing.assert_allclose(py["best_theta"], out["best_theta"], rtol=1e-8)
    np.testing.assert_allclose(py["theta"], out["best_theta"], rtol=1e-8)
    np.testing.assert_allclose(py["outer_loss"], out["best_loss"], rtol=1e-8)
    assert py["evaluations"] == out["evaluations"] == len(py["trace"])
    # coef: the lasso fit at the best λ, whose validation MSE is the best loss.
    r = yv - xv @ py["coef"]
    np.testing.assert_allclose(r @ r / len(yv), py["outer_loss"], rtol=1e-6)


def test_run_trace_file_and_records(tmp_path, diabetes):
    x, y, xv, yv = diabetes
    path = tmp_path / "t.jsonl"
    res = hg.run("ridge", x, y, xv, yv, outer_steps=4, trace=path)
    lines = open(path).read().splitlines()
    assert len(lines) == len(res["trace"]) == 5
    for record in res["trace"]:
        for key in ("step", "seconds", "theta_norm", "outer_loss", "hypergradient_norm"):
            assert key in record


@pytest.mark.parametrize("problem", ["lasso", "enet", "wlasso"])
def test_dense_and_sparse_agree(problem, sparse_regression):
    x, y, xv, yv = sparse_regression
    dense = hg.hypergradient(problem, x.toarray(), y, xv.toarray(), yv)
    for fmt in ("csr", "csc"):
        sparse = hg.hypergradient(problem, x.asformat(fmt), y, xv.asformat(fmt), yv)
        assert sparse["sparse"] and not dense["sparse"]
        np.testing.assert_allclose(sparse["hypergradient"], dense["hypergradient"], rtol=1e-7, atol=1e-12)
        np.testing.assert_allclose(sparse["outer_loss"], dense["outer_loss"], rtol=1e-9)
    # float32 and Fortran order give the float64 answer on the float32 numbers
    x32 = np.asfortranarray(x.toarray().astype(np.float32))
    a = hg.hypergradient(problem, x32, y, xv.toarray(), yv)
    b = hg.hypergradient(problem, x32.astype(np.float64), y, xv.toarray(), yv)
    np.testing.assert_allclose(a["hypergradient"], b["hypergradient"], rtol=1e-12)


def test_sparse_matrix_is_not_densified(sparse_regression):
    x, y, xv, yv = sparse_regression
    res = hg.hypergradient("lasso", sp.csc_matrix(x), y, xv, yv)
    assert res["sparse"] is True and res["nnz_train"] == x.nnz


def test_layouts_and_dtypes_agree(diabetes):
    """C and Fortran order, float64 and float32 (the float32 numbers, computed in float64),
    a strided view: the same hypergradient."""
    x, y, xv, yv = diabetes
    ref = hg.hypergradient("ridge", x, y, xv, yv, theta=0.2)
    for variant in (np.asfortranarray(x), np.ascontiguousarray(x), np.repeat(x, 2, axis=1)[:, ::2]):
        np.testing.assert_array_equal(variant, x)
        out = hg.hypergradient("ridge", variant, y, xv, yv, theta=0.2)
        np.testing.assert_allclose(out["hypergradient"], ref["hypergradient"], rtol=1e-12)
    x32 = x.astype(np.float32)
    a = hg.hypergradient("ridge", np.asfortranarray(x32), y, xv, yv, theta=0.2)
    b = hg.hypergradient("ridge", x32.astype(np.float64), y, xv, yv, theta=0.2)
    np.testing.assert_allclose(a["hypergradient"], b["hypergradient"], rtol=1e-12)
    # integer and bool labels are exact in float64
    yi = np.where(y > 0, 1, -1)
    a = hg.hypergradient("logreg", x, yi, xv, np.where(yv > 0, 1, -1))
    b = hg.hypergradient("logreg", x, yi.astype(float), xv, np.where(yv > 0, 1.0, -1.0))
    np.testing.assert_allclose(a["hypergradient"], b["hypergradient"], rtol=1e-12)


def test_run_that_diverges_raises_with_the_command_lines_line(tmp_path, diabetes):
    x, y, xv, yv = diabetes
    ck, trace = tmp_path / "ck.json", tmp_path / "t.jsonl"
    # Adam steps of 300 take θ = log λ past exp's range within a few steps.
    with pytest.raises(RuntimeError, match=r"^numerical failure: outer step (\d+): .*lower --outer-lr") as err:
        hg.run("ridge", x, y, xv, yv, outer_steps=10, outer_lr=300.0, checkpoint=ck, trace=trace)
    message = str(err.value)
    assert "\n" not in message
    step = int(re.search(r"outer step (\d+)", message).group(1))
    records = [json.loads(line) for line in trace.read_text().splitlines()]
    assert records[-1]["step"] == step and message.endswith(records[-1]["stopped"])
    # The binary checkpoint's header is JSON after 8 magic bytes and a u32 length (issue 24).
    raw = ck.read_bytes()
    header = json.loads(raw[12 : 12 + int.from_bytes(raw[8:12], "little")])
    assert header["step"] == step - 1  # the last finite step
    with pytest.raises(RuntimeError, match=r"outer step 0: the inner iterate is not finite.*--inner-lr"):
        hg.run("ridge", x, y, xv, yv, method="soba", inner_lr=1e10, outer_steps=3)


def test_run_warns_when_the_sample_weights_saturate(digits):
    x, y, xv, yv, _, _ = digits
    with pytest.warns(RuntimeWarning, match=r"step 1: .* of the weights σ\(θ\) .*saturated.*--outer-lr"):
        res = hg.run("hyperclean", x, y, xv, yv, outer_steps=2, outer_lr=1e30)
    assert res["saturation_warning"].startswith("step 1: ")
    assert [r["saturated_fraction"] > 0.99 for r in res["trace"]] == [False, True, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = hg.run("hyperclean", x, y, xv, yv, outer_steps=2)
    assert res["saturation_warning"] is None


def test_run_resumes_from_a_checkpoint(tmp_path, diabetes):
    x, y, xv, yv = diabetes
    ck = tmp_path / "ck.json"
    full = hg.run("ridge", x, y, xv, yv, outer_steps=6)
    hg.run("ridge", x, y, xv, yv, outer_steps=3, checkpoint=ck)
    resumed = hg.run("ridge", x, y, xv, yv, outer_steps=6, checkpoint=ck)
    assert resumed["resumed_from"] is not None
    np.testing.assert_allclose(resumed["theta"], full["theta"], rtol=1e-9)
