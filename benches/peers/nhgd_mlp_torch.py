#!/usr/bin/env python3
"""PyTorch peer of `hypergrad bench nhgd --model mlp:H1[,H2,…]`: one NHGD outer step of
hyper-cleaning with a multilayer perceptron as the inner model, K-FAC curvature, against the
same outer step with no curvature (the plain SGD loop).

What is matched (src/hypergrad/nhgd_mlp.rs, src/cli/bench_nhgd.rs)
------------------------------------------------------------------
* Data: synthetic softmax data of the shape given (defaults n = 50,000 training rows,
  m = 10,000 validation rows, d = 785 inputs, c = 10 classes; float32 by default). The values
  are not hypergrad's generator's (the timings do not depend on them), the shapes are.
* Network (SPEC §8): a₀ = x, a_l = tanh(W_l a_{l−1} + b_l), z = W_L a_{L−1} + b_L, biases on
  every layer; Glorot-uniform weights, zero biases. Row weights s = σ(θ), θ = 0, C = 0.01 on
  the weight matrices (biases unpenalised).
* Inner loop: T SGD steps (default 100) of batch b (default 64), rows from seeded
  permutations, w ← w − η ((1/b) Σ_p s_p ∇ℓ_p + C·W), η = --inner-lr (0.05, as the Rust
  bench's default), w carried between outer steps (warm start).
* K-FAC (`kfac`): per layer AA_l += (1/N) Σ_p ã ãᵀ (ã the layer's input with 1 appended) and
  GG_l += (1/N) Σ_p s_p δ δᵀ (δ = ∂ℓ_p/∂z_l, unweighted), N = T·b, fed from the same forward
  and backward pass as the SGD step (the pre-activations are inputs of torch.autograd.grad,
  so one backward gives the parameter gradient and every δ). At the end, per layer,
  π = √(λ (tr AA/(n_{l−1}+1)) / (tr GG/n_l)) and Q_l = (GG + (λ/π) I)⁻¹ V_l (AA + π I)⁻¹
  (Cholesky solves), V_l the layer's block of a = ∇_w f, λ = C.
* `none` (the Rust bench's `sgd loop only`): the same loop without the factor updates, q = 0.
* Both cases then compute a = ∇_w f on all m validation rows and h_i = −(s_i(1 − s_i)/n)
  ⟨∇ℓ_i, q⟩ for all n training rows by one forward-mode pass (torch.func.jvp of the logits
  along q: ⟨∇ℓ_i, q⟩ = (p_i − e_{y_i})ᵀ R z_i), as the Rust side's forward R-pass does.
* Timing: one warm-up outer step, then --repeats timed ones; medians; on CUDA the clock
  stops after a synchronisation. The timed step makes no host synchronisation (π stays a
  tensor, `cholesky_ex`, triangular solves).
* `--graph` (CUDA only): the outer step after the row draw is also captured once with
  torch.cuda.graph (forward, backward, the SGD update, the K-FAC factors, a, the solves and
  the jvp, into static buffers) and replayed; the rows are drawn eagerly into a fixed buffer
  before each replay, inside the timing. The JSON gives the graphed medians beside the eager
  ones and the relative difference of h between a replay and an eager step from the same
  weights and rows.

`--check` verifies, on a small problem, that the K-FAC factors' per-sample gradient
structure δ ⊗ ã is the per-sample gradient torch.func.vmap(grad) computes, and that the jvp
gives ⟨∇ℓ_i, q⟩ of those per-sample gradients.

    python3 benches/peers/nhgd_mlp_torch.py --hidden 300 --n 50000 --m 10000 --d 785 \\
        --T 100 --b 64 --repeats 5 [--device cuda] [--dtype float64] [--threads N]

One JSON line goes to stdout.
"""

import argparse
import json
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp, vmap


def make_data(n, m, d, c, seed, device, dtype):
    gen = torch.Generator().manual_seed(seed)
    w_star = 3.0 / math.sqrt(d) * torch.randn(c, d, generator=gen, dtype=torch.float64)

    def draw(rows):
        x = torch.randn(rows, d, generator=gen, dtype=torch.float64)
        y = torch.multinomial(torch.softmax(x @ w_star.T, dim=1), 1, generator=gen).squeeze(1)
        return x.to(device=device, dtype=dtype), y.to(device)

    return draw(n) + draw(m)


class MLP(torch.nn.Module):
    def __init__(self, sizes, activation):
        super().__init__()
        self.layers = torch.nn.ModuleList(
            torch.nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.phi = torch.tanh if activation == "tanh" else torch.relu
        for layer in self.layers:
            if activation == "tanh":
                torch.nn.init.xavier_uniform_(layer.weight)
            else:
                torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            torch.nn.init.zeros_(layer.bias)

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = self.phi(layer(x))
        return self.layers[-1](x)

    def forward_tape(self, x):
        """Logits, each layer's input with 1 appended, and the pre-activations (for K-FAC)."""
        inputs, pre = [], []
        ones = torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        for l, layer in enumerate(self.layers):
            inputs.append(torch.cat([x, ones], dim=1))
            z = layer(x)
            pre.append(z)
            x = self.phi(z) if l + 1 < len(self.layers) else z
        return x, inputs, pre


def chol_solve(B, L):
    """(L Lᵀ)⁻¹ B by two triangular solves (cuBLAS trsm), which capture into a CUDA graph."""
    Z = torch.linalg.solve_triangular(L, B, upper=False)
    return torch.linalg.solve_triangular(L.mT, Z, upper=True)


class Graphed:
    """`Outer.step(case)` captured once with torch.cuda.graph and replayed: the rows go into a
    fixed buffer (drawn eagerly before each replay), the weights and factors are updated in
    place, h is a static output."""

    def __init__(self, outer, case):
        self.outer, self.case = outer, case
        device = outer.device
        self.rows = outer.batches().clone()
        saved = [p.detach().clone() for p in outer.params]
        warm = torch.cuda.Stream(device)
        warm.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(warm):
            for _ in range(3):
                outer.step(case, self.rows)
        torch.cuda.current_stream(device).wait_stream(warm)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.h = outer.step(case, self.rows)
        torch.cuda.synchronize(device)
        self.restore(saved)

    def restore(self, values):
        with torch.no_grad():
            for p, v in zip(self.outer.params, values):
                p.copy_(v)

    def __call__(self, rows=None):
        self.rows.copy_(self.outer.batches() if rows is None else rows)
        self.graph.replay()
        return self.h


def per_sample_loss(model, params, x, y):
    z = functional_call(model, params, (x[None],))
    return F.cross_entropy(z, y[None])


class Outer:
    def __init__(self, args, device, dtype):
        self.args = args
        sizes = [args.d, *args.hidden, args.c]
        torch.manual_seed(args.seed)
        self.model = MLP(sizes, args.activation).to(device=device, dtype=dtype)
        self.X, self.y, self.Xv, self.yv = make_data(args.n, args.m, args.d, args.c,
                                                     args.seed, device, dtype)
        self.Y = F.one_hot(self.y, args.c).to(dtype)
        self.s = torch.sigmoid(torch.zeros(args.n, device=device, dtype=dtype))
        self.device, self.dtype = device, dtype
        self.weights = [l.weight for l in self.model.layers]
        self.params = [p for l in self.model.layers for p in (l.weight, l.bias)]
        self.gen = torch.Generator(device=device).manual_seed(args.seed)
        layers = self.model.layers
        kw = dict(device=device, dtype=dtype)
        # The K-FAC factors, allocated once and zeroed at the start of every outer step.
        self.AA = [torch.zeros(l.in_features + 1, l.in_features + 1, **kw) for l in layers]
        self.GG = [torch.zeros(l.out_features, l.out_features, **kw) for l in layers]

    def batches(self):
        n, T, b = self.args.n, self.args.T, self.args.b
        perms = -(-T * b // n)
        order = torch.cat([torch.randperm(n, generator=self.gen, device=self.device)
                           for _ in range(perms)])
        return order[: T * b].view(T, b)

    def step(self, curvature, batches=None):
        """One outer step: T SGD steps (with the K-FAC factors for `kfac`), a = ∇_w f, q, h.
        `batches` (T×b) are the rows; drawn here when not given."""
        a, T, b, C = self.args, self.args.T, self.args.b, self.args.l2
        N = T * b
        eta = a.inner_lr
        layers = self.model.layers
        AA, GG = self.AA, self.GG
        if curvature == "kfac":
            for M in AA + GG:
                M.zero_()
        for idx in (self.batches() if batches is None else batches):
            xb, yb, sb = self.X[idx], self.y[idx], self.s[idx]
            z, inputs, pre = self.model.forward_tape(xb)
            loss = (sb * F.cross_entropy(z, yb, reduction="none")).sum()
            grads = torch.autograd.grad(loss, self.params + pre)
            with torch.no_grad():
                gparams, gpre = grads[: len(self.params)], grads[len(self.params):]
                # w ← (1 − ηC) w − (η/b) Σ s_p ∇ℓ_p (C on the weight matrices only)
                for w in self.weights:
                    w.mul_(1.0 - eta * C)
                for p, g in zip(self.params, gparams):
                    p.sub_(g, alpha=eta / b)
                if curvature == "kfac":
                    for l in range(len(layers)):
                        AA[l].addmm_(inputs[l].T, inputs[l], alpha=1.0 / N)
                        # gpre = s_p δ_p: Σ s δ δᵀ = Σ gpre gpreᵀ / s
                        GG[l].addmm_((gpre[l] / sb[:, None]).T, gpre[l], alpha=1.0 / N)
        # a = ∇_w f on the validation rows
        fval = F.cross_entropy(self.model(self.Xv), self.yv)
        avec = torch.autograd.grad(fval, self.params)
        with torch.no_grad():
            if curvature == "kfac":
                q = []
                for l, layer in enumerate(layers):
                    V = torch.cat([avec[2 * l], avec[2 * l + 1][:, None]], dim=1)
                    dA, dG = AA[l].shape[0], GG[l].shape[0]
                    # π stays on the device: no host synchronisation inside the step
                    pi = torch.sqrt(C * (AA[l].trace() / dA) / (GG[l].trace() / dG))
                    eyeA = torch.eye(dA, device=self.device, dtype=self.dtype)
                    eyeG = torch.eye(dG, device=self.device, dtype=self.dtype)
                    LA = torch.linalg.cholesky_ex(AA[l] + pi * eyeA)[0]
                    LG = torch.linalg.cholesky_ex(GG[l] + (C / pi) * eyeG)[0]
                    VX = chol_solve(V.T, LA).T                    # V (AA + πI)⁻¹
                    Q = chol_solve(VX, LG)                        # (GG + λ/π I)⁻¹ · that
                    q += [Q[:, :-1], Q[:, -1]]
            else:
                q = [torch.zeros_like(p) for p in self.params]
        # h_i = −(s_i(1−s_i)/n) (p_i − e_{y_i})ᵀ R z_i, R along q: one forward-mode pass
        names = [n for n, _ in self.model.named_parameters()]
        primals = {k: p.detach() for k, p in zip(names, self.params)}
        tangents = dict(zip(names, q))
        z, rz = jvp(lambda p: functional_call(self.model, p, (self.X,)), (primals,), (tangents,))
        with torch.no_grad():
            h = -(self.s * (1 - self.s) / a.n) * ((torch.softmax(z, 1) - self.Y) * rz).sum(1)
        return h


def check(device):
    """Per-sample gradients by vmap(grad) against δ ⊗ ã (the K-FAC structure), and the jvp."""
    args = argparse.Namespace(n=64, m=32, d=7, c=3, hidden=[5, 4], activation="tanh",
                              seed=1, T=2, b=8, l2=0.01, inner_lr=0.05)
    o = Outer(args, device, torch.float64)
    xb, yb = o.X[:8], o.y[:8]
    z, inputs, pre = o.model.forward_tape(xb)
    loss = F.cross_entropy(z, yb, reduction="sum")
    gpre = torch.autograd.grad(loss, pre)
    params = {k: v.detach() for k, v in o.model.named_parameters()}
    ps = vmap(grad(per_sample_loss, argnums=1), in_dims=(None, None, 0, 0))(o.model, params,
                                                                            xb, yb)
    for l in range(len(o.model.layers)):
        block = torch.einsum("pk,pj->pkj", gpre[l], inputs[l])
        torch.testing.assert_close(block[:, :, :-1], ps[f"layers.{l}.weight"])
        torch.testing.assert_close(block[:, :, -1], ps[f"layers.{l}.bias"])
    tangents = {k: torch.randn_like(v) for k, v in params.items()}
    zz, rz = jvp(lambda p: functional_call(o.model, p, (xb,)), (params,), (tangents,))
    dots = sum((ps[k] * tangents[k]).flatten(1).sum(1) for k in params)
    Yb = F.one_hot(yb, 3).double()
    torch.testing.assert_close(((torch.softmax(zz, 1) - Yb) * rz).sum(1), dots)
    print("check passed: vmap(grad) per-sample gradients = δ ⊗ ã per layer; jvp = ⟨∇ℓ_i, q⟩")


def graphed_case(o, case, repeats, sync):
    """The graphed step's median (same warm-up and repeats as the eager one), and a replay's h
    against an eager step's from the same weights and rows."""
    g = Graphed(o, case)
    g()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        h = g()
        sync()
        times.append(time.perf_counter() - t0)
        if not torch.isfinite(h).all():
            raise SystemExit(f"{case} (graph): non-finite hypergradient")
    start = [p.detach().clone() for p in o.params]
    rows = o.batches().clone()
    h_graph = g(rows).clone()
    g.restore(start)
    h_eager = o.step(case, rows)
    err = (torch.linalg.norm(h_graph - h_eager) / torch.linalg.norm(h_eager)).item()
    return {"graph_outer_step_seconds": statistics.median(times),
            "graph_outer_step_seconds_all": times, "graph_vs_eager_rel_err": err}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", default="300", help="hidden widths, e.g. 300 or 128,64")
    p.add_argument("--activation", choices=("tanh", "relu"), default="tanh")
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--m", type=int, default=10_000)
    p.add_argument("--d", type=int, default=785)
    p.add_argument("--c", type=int, default=10)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--b", type=int, default=64)
    p.add_argument("--l2", type=float, default=0.01)
    p.add_argument("--inner-lr", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    p.add_argument("--cases", default="none,kfac")
    p.add_argument("--graph", action="store_true",
                   help="also time the step captured with torch.cuda.graph (CUDA only)")
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    if args.graph and args.device != "cuda" and not args.device.startswith("cuda:"):
        raise SystemExit("--graph needs --device cuda (torch.cuda.graph)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.check:
        check(device)
        return
    args.hidden = [int(h) for h in str(args.hidden).split(",")]
    dtype = getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results = {}
    for case in args.cases.split(","):
        o = Outer(args, device, dtype)
        o.step(case)  # warm-up
        sync()
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            h = o.step(case)
            sync()
            times.append(time.perf_counter() - t0)
            if not torch.isfinite(h).all():
                raise SystemExit(f"{case}: non-finite hypergradient")
        results[case] = {"outer_step_seconds": statistics.median(times),
                         "outer_step_seconds_all": times}
        if args.graph:
            results[case].update(graphed_case(o, case, args.repeats, sync))
    P = sum(p.numel() for p in o.params)
    print(json.dumps({
        "peer": "pytorch", "torch": torch.__version__, "device": str(device),
        "dtype": args.dtype, "threads": torch.get_num_threads(),
        "machine": platform.machine(), "hidden": args.hidden, "activation": args.activation,
        "n": args.n, "m": args.m, "d": args.d, "c": args.c, "P": P, "T": args.T, "b": args.b,
        "inner_lr": args.inner_lr, "repeats": args.repeats, "cases": results,
        "kfac_vs_none": results.get("kfac", {}).get("outer_step_seconds", math.nan)
        / results.get("none", {}).get("outer_step_seconds", math.nan),
    }))


if __name__ == "__main__":
    main()
