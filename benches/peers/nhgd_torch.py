#!/usr/bin/env python3
"""PyTorch peer of hypergrad's NHGD outer step (hyper-cleaning of a linear softmax model).

It times the same algorithm as `src/hypergrad/stochastic.rs` + `src/hypergrad/fisher.rs`,
written as idiomatic batched PyTorch (no Python loop over samples), so that the Rust/CUDA
implementation can be compared with it on the same GPU and the same data.

Problem
-------
Training rows X (n×d), labels y in 0..c−1; validation rows X' (m×d), y'. Inner variable W
(c×d, class-major: vec index k·d + j). Hyper-parameters θ (n), row weights s = σ(θ).

    g(W) = (1/n) Σ_i s_i CE(W x_i, y_i) + (C/2) ‖W‖_F²        C = --l2
    f(W) = (1/m) Σ_i CE(W x'_i, y'_i)

One outer step (what is timed)
------------------------------
1. T steps of mini-batch SGD, batches of b consecutive entries of seeded permutations of the
   rows (a new permutation when one is used up; a batch may straddle two):
       G_p = softmax(W x_p) − onehot(y_p)                 (b×c, unweighted)
       W  ← W − η ((1/b) Σ_p s_p G_p x_pᵀ + C W),        η = 1/(L + C),
   L = 1.05 · λ_max(0.5 · XᵀX / n) by power iteration (once, outside the timing).
2. The step's per-sample gradients g_p = G_p ⊗ x_p (length P = c·d, class-major) update the
   damped empirical Fisher Ĥ = R + (1/N) Σ_{all T·b samples} s_p g_p g_pᵀ, R = C·I, N = T·b.
   U_t is the b×P matrix of rows √s_p g_p. `--curvature`:
     dense             A = Ĥ⁻¹, A₀ = R⁻¹;  A ← A − A U_tᵀ (N I + U_t A U_tᵀ)⁻¹ U_t A  (Woodbury)
     dense-accumulate  F ← F + (1/N) U_tᵀ U_t;  at the end q solves (F + R) q = a (Cholesky)
     kfac              XX ← XX + (1/N) Σ x xᵀ,  GG ← GG + (1/N) Σ s G Gᵀ;  at the end
                       π = √(C (tr XX / d) / (tr GG / c)),
                       Q = (GG + (C/π) I_c)⁻¹ V (XX + π I_d)⁻¹,  V = a as c×d
     lowrank           U_sk (r×P) ← U_sk + N^{-1/2} S_t U_t,  S_t r×b of independent ±1/√r;
                       q = R⁻¹a − R⁻¹U_skᵀ (I + U_sk R⁻¹ U_skᵀ)⁻¹ U_sk R⁻¹ a
     none              no tracking; q = R⁻¹ a (the plain-SGD baseline)
3. a = ∇_W f(W) on the whole validation set (torch.func), q as above, and for every
   training row h_i = −(s_i (1 − s_i) / n) ⟨Q x_i, G_i(W)⟩ with Q = q as c×d, at the final W.

W is carried from one outer step to the next (hypergrad's default warm start); θ is fixed
(--theta, default 0, or a `theta` array in --data), so each step estimates the same
hypergradient with fresh batches. Separately, the T-step SGD loop alone (batch drawing
included, no curvature) is timed the same way: one warm-up, then --repeats timed runs.

Implementation notes: the per-sample factors G are written in closed form (softmax − one-hot,
checked against torch.func.vmap(grad) by --check), batches and sketches are drawn on the
device, and the timed region makes no host synchronisation (cholesky_ex, no .item()).
Matmuls run in full float32 (PyTorch's default, no TF32). By default everything runs on one
CUDA stream; --side-stream runs the curvature update on a second stream, overlapping the
next SGD step, as the Rust loop does.

`--graph` (CUDA only) is the peer a PyTorch user who cares about speed would write: the whole
outer step after the row draw (T SGD steps, the curvature update, a, q and h) is captured once
with torch.cuda.graph into static buffers and replayed every outer step; the row indices and
sketch signs are drawn eagerly (randperm) into fixed buffers before each replay, and the
timing includes that draw. The plain SGD loop is captured the same way. Every solve is
`cholesky_ex` plus two triangular solves (cuBLAS trsm), which capture; the curvature state is
reset inside the graph. The JSON reports the graphed and the eager timings side by side, and
`graph_vs_eager_rel_err`: the relative difference of h between a replay and an eager outer
step from the same W and the same rows.

Commands
--------
    python3 benches/peers/nhgd_torch.py --check
    python3 benches/peers/nhgd_torch.py --graph --curvature none,kfac,lowrank,dense,dense-accumulate
    python3 benches/peers/nhgd_torch.py --n 50000 --d 785 --c 10 --m 10000 --T 100 --b 64 \\
        --curvature dense --rank 64 --repeats 5 --device cuda --seed 0 \\
        [--data FILE.npz] [--save-data FILE.npz] [--out results.json] [--side-stream]

`--data FILE.npz` reads arrays X, y, Xv, yv (and optionally theta) so the Rust side and this
script can share the data; `--save-data` writes the generated data in that format. One JSON
line goes to stdout (and to --out).
"""

import argparse
import json
import math
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

CURVATURES = ("dense", "dense-accumulate", "kfac", "lowrank", "none")


# ----------------------------------------------------------------------------- data


def make_synthetic(n, d, c, m, seed):
    """Well-specified softmax data: x ~ N(0, I/d) with a bias column of ones, y ~ softmax(W* x)."""
    rng = np.random.default_rng(seed)
    w_star = 2.0 * rng.standard_normal((c, d))

    def draw(rows):
        x = rng.standard_normal((rows, d)) / math.sqrt(d)
        x[:, -1] = 1.0
        logits = x @ w_star.T
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        u = rng.random((rows, 1))
        y = np.minimum((p.cumsum(axis=1) < u).sum(axis=1), c - 1)
        return x.astype(np.float32), y.astype(np.int64)

    x, y = draw(n)
    xv, yv = draw(m)
    return {"X": x, "y": y, "Xv": xv, "yv": yv}


def load_data(path):
    with np.load(path) as z:
        data = {k: z[k] for k in ("X", "y", "Xv", "yv")}
        if "theta" in z.files:
            data["theta"] = z["theta"]
    return data


class Problem:
    """The data on the device, with everything that does not change between outer steps."""

    def __init__(self, data, c, l2, theta, device, dtype):
        self.X = torch.as_tensor(data["X"], dtype=dtype, device=device)
        self.Xv = torch.as_tensor(data["Xv"], dtype=dtype, device=device)
        self.y = torch.as_tensor(data["y"], dtype=torch.long, device=device)
        self.yv = torch.as_tensor(data["yv"], dtype=torch.long, device=device)
        self.n, self.d = self.X.shape
        self.m = self.Xv.shape[0]
        self.c = c
        self.P = c * self.d
        self.C = float(l2)
        self.Y = F.one_hot(self.y, c).to(dtype)  # n×c, so the inner loop needs no one_hot
        th = data.get("theta")
        th = torch.full((self.n,), float(theta)) if th is None else torch.as_tensor(th)
        self.theta = th.to(device=device, dtype=dtype)
        self.s = torch.sigmoid(self.theta)
        self.eta = 1.0 / (largest_curvature(self.X) + self.C)


def largest_curvature(X, iters=100):
    """L = 1.05 · λ_max(0.5 XᵀX / n), by power iteration (once, outside the timing)."""
    n, d = X.shape
    gen = torch.Generator(device=X.device).manual_seed(12345)
    v = torch.randn(d, generator=gen, device=X.device, dtype=X.dtype)
    v /= v.norm()
    for _ in range(iters):
        w = 0.5 * (X.T @ (X @ v)) / n
        v = w / w.norm()
    lam = (v @ (0.5 * (X.T @ (X @ v)) / n)).item()
    return 1.05 * lam


# ----------------------------------------------------------------------------- sampling


def step_generator(seed, step, device):
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + step)


def draw_batches(n, T, b, gen, device):
    """T×b row indices: consecutive slices of freshly drawn permutations of 0..n−1."""
    perms = -(-T * b // n)  # ceil
    order = torch.cat([torch.randperm(n, generator=gen, device=device) for _ in range(perms)])
    return order[: T * b].view(T, b)


def draw_signs(T, r, b, gen, device, dtype):
    """T sketches S_t (r×b) of independent ±1/√r entries."""
    bits = torch.randint(0, 2, (T, r, b), generator=gen, device=device)
    return (2 * bits - 1).to(dtype) / math.sqrt(r)


# ----------------------------------------------------------------------------- inner loop


def sgd_step(W, xb, Yb, sb, eta, C):
    """One weighted SGD step in place; returns the unweighted factors G (b×c) at the old W."""
    G = torch.softmax(xb @ W.T, dim=1) - Yb
    b = xb.shape[0]
    # W ← (1 − ηC) W − (η/b) (s ⊙ G)ᵀ X_b, one fused GEMM
    W.addmm_((G * sb[:, None]).T, xb, beta=1.0 - eta * C, alpha=-eta / b)
    return G


def per_sample_rows(xb, G, sb):
    """U (b×P): row p is √s_p g_p, g_p = G_p ⊗ x_p in the class-major layout k·d + j."""
    return (sb.sqrt()[:, None, None] * G[:, :, None] * xb[:, None, :]).flatten(1)


def inner_loop(prob, W, batches, signs, trackers, side_stream=None, record_streams=True):
    """T SGD steps on W (in place), each step's factors handed to every tracker.

    `record_streams=False` inside a CUDA graph capture: the graph's memory comes from its own
    pool and is not reused while the graph lives, so the side stream needs no record."""
    main = torch.cuda.current_stream() if side_stream is not None else None
    for t in range(batches.shape[0]):
        idx = batches[t]
        xb, Yb, sb = prob.X[idx], prob.Y[idx], prob.s[idx]
        G = sgd_step(W, xb, Yb, sb, prob.eta, prob.C)
        sign = None if signs is None else signs[t]
        if not trackers:
            continue
        if side_stream is None:
            for tr in trackers:
                tr.update(xb, G, sb, sign)
        else:
            # The curvature update of step t overlaps SGD step t + 1 (as in the Rust loop).
            side_stream.wait_stream(main)
            with torch.cuda.stream(side_stream):
                for tr in trackers:
                    tr.update(xb, G, sb, sign)
            if record_streams:
                for tensor in (xb, G, sb) + (() if sign is None else (sign,)):
                    tensor.record_stream(side_stream)
    if side_stream is not None:
        main.wait_stream(side_stream)
    return W


# ----------------------------------------------------------------------------- curvature


def chol(M):
    """Cholesky factor without the host synchronisation of torch.linalg.cholesky's check."""
    return torch.linalg.cholesky_ex(M)[0]


def chol_solve(B, L):
    """(L Lᵀ)⁻¹ B by two triangular solves (cuBLAS trsm): unlike torch.cholesky_solve, which may
    take a MAGMA path on CUDA, these capture into a CUDA graph."""
    Z = torch.linalg.solve_triangular(L, B, upper=False)
    return torch.linalg.solve_triangular(L.mT, Z, upper=True)


class NoCurvature:
    def __init__(self, prob, N):
        self.C = prob.C

    def reset(self):
        pass

    def update(self, xb, G, sb, sign):
        pass

    def solve(self, a):
        return a / self.C


class DenseWoodbury:
    """A = Ĥ⁻¹ (P×P), rank-b Woodbury update per step."""

    def __init__(self, prob, N):
        self.N = float(N)
        self.A0 = torch.eye(prob.P, dtype=prob.X.dtype, device=prob.X.device) / prob.C
        self.A = self.A0.clone()

    def reset(self):
        self.A.copy_(self.A0)

    def update(self, xb, G, sb, sign):
        U = per_sample_rows(xb, G, sb)  # b×P
        AU = self.A @ U.T  # P×b (A symmetric, so U A = AUᵀ)
        M = U @ AU
        M.diagonal().add_(self.N)  # N I + U A Uᵀ
        Z = chol_solve(AU.T, chol(M))  # b×P
        self.A.addmm_(AU, Z, alpha=-1.0)

    def solve(self, a):
        return self.A @ a


class DenseAccumulate:
    """F (P×P) accumulated per step, (F + R) q = a solved once by Cholesky."""

    def __init__(self, prob, N):
        self.N = float(N)
        self.C = prob.C
        self.F = torch.zeros(prob.P, prob.P, dtype=prob.X.dtype, device=prob.X.device)

    def reset(self):
        self.F.zero_()

    def update(self, xb, G, sb, sign):
        U = per_sample_rows(xb, G, sb)
        self.F.addmm_(U.T, U, alpha=1.0 / self.N)

    def solve(self, a):
        H = self.F.clone()
        H.diagonal().add_(self.C)
        return chol_solve(a[:, None], chol(H))[:, 0]


class Kfac:
    """Kronecker factors XX (d×d), GG (c×c); factored Tikhonov damping at the end."""

    def __init__(self, prob, N):
        self.N = float(N)
        self.C = prob.C
        self.c, self.d = prob.c, prob.d
        kw = dict(dtype=prob.X.dtype, device=prob.X.device)
        self.XX = torch.zeros(self.d, self.d, **kw)
        self.GG = torch.zeros(self.c, self.c, **kw)

    def reset(self):
        self.XX.zero_()
        self.GG.zero_()

    def update(self, xb, G, sb, sign):
        self.XX.addmm_(xb.T, xb, alpha=1.0 / self.N)
        self.GG.addmm_((G * sb[:, None]).T, G, alpha=1.0 / self.N)

    def damped_factors(self):
        pi = torch.sqrt(self.C * (self.XX.trace() / self.d) / (self.GG.trace() / self.c))
        eye_c = torch.eye(self.c, dtype=self.GG.dtype, device=self.GG.device)
        eye_d = torch.eye(self.d, dtype=self.XX.dtype, device=self.XX.device)
        return self.GG + (self.C / pi) * eye_c, self.XX + pi * eye_d

    def solve(self, a):
        Gd, Xd = self.damped_factors()
        V = a.view(self.c, self.d)
        Q = chol_solve(V, chol(Gd))  # Gd⁻¹ V
        Q = chol_solve(Q.T, chol(Xd)).T  # (Gd⁻¹ V) Xd⁻¹, Xd symmetric
        return Q.reshape(-1)


class Lowrank:
    """Random sketch U_sk (r×P) of the Fisher; R + U_skᵀU_sk applied by Woodbury."""

    def __init__(self, prob, N, rank):
        self.scale = 1.0 / math.sqrt(N)
        self.C = prob.C
        self.U = torch.zeros(rank, prob.P, dtype=prob.X.dtype, device=prob.X.device)

    def reset(self):
        self.U.zero_()

    def update(self, xb, G, sb, sign):
        U_t = per_sample_rows(xb, G, sb)
        self.U.addmm_(sign, U_t, alpha=self.scale)

    def solve(self, a):
        U, C = self.U, self.C
        K = (U @ U.T) / C
        K.diagonal().add_(1.0)  # I + U R⁻¹ Uᵀ
        z = chol_solve((U @ a)[:, None] / C, chol(K))[:, 0]
        return a / C - (U.T @ z) / C


def make_tracker(name, prob, N, rank):
    if name == "lowrank":
        return Lowrank(prob, N, rank)
    return {
        "none": NoCurvature,
        "dense": DenseWoodbury,
        "dense-accumulate": DenseAccumulate,
        "kfac": Kfac,
    }[name](prob, N)


# ----------------------------------------------------------------------------- outer step


def outer_loss(W, Xv, yv):
    return F.cross_entropy(Xv @ W.T, yv)


outer_grad_and_value = torch.func.grad_and_value(outer_loss)


def hypergradient(prob, W, Q):
    """h_i = −(s_i (1 − s_i) / n) ⟨Q x_i, G_i(W)⟩ for every training row (n)."""
    G = torch.softmax(prob.X @ W.T, dim=1) - prob.Y  # n×c
    XQ = prob.X @ Q.T  # n×c, row i = Q x_i
    return -(prob.s * (1 - prob.s) / prob.n) * (XQ * G).sum(dim=1)


def outer_step(prob, W, args, step, side_stream=None):
    """Steps 1–3 of the header; W (the inner iterate) is updated in place."""
    device = prob.X.device
    gen = step_generator(args.seed, step, device)
    batches = draw_batches(prob.n, args.T, args.b, gen, device)
    signs = None
    if args.curvature == "lowrank":
        signs = draw_signs(args.T, args.rank, args.b, gen, device, prob.X.dtype)
    tracker = make_tracker(args.curvature, prob, args.T * args.b, args.rank)
    inner_loop(prob, W, batches, signs, [tracker], side_stream)
    a, loss = outer_grad_and_value(W, prob.Xv, prob.yv)
    q = tracker.solve(a.reshape(-1))
    h = hypergradient(prob, W, q.view(prob.c, prob.d))
    return h, loss


class GraphedOuterStep:
    """The outer step (or, with `curvature=None`, the plain SGD loop) captured once as a CUDA
    graph into static buffers and replayed; what changes between replays (W, the rows, the
    sketch signs) lives in device memory.

    Per call: the rows and signs are drawn eagerly from the step's generator (the same draws,
    in the same order, as `outer_step`) into the fixed buffers, then the graph is replayed.
    """

    def __init__(self, prob, W, args, curvature, side_stream=None):
        device, dtype = prob.X.device, prob.X.dtype
        self.prob, self.W, self.args, self.curvature = prob, W, args, curvature
        self.side = side_stream
        self.batches = torch.zeros(args.T, args.b, dtype=torch.long, device=device)
        self.signs = None
        if curvature == "lowrank":
            self.signs = torch.zeros(args.T, args.rank, args.b, dtype=dtype, device=device)
        self.trackers = []
        if curvature is not None:
            self.trackers = [make_tracker(curvature, prob, args.T * args.b, args.rank)]
        # Warm up on a side stream (as torch.cuda.graph asks: lazy initialisations, cuBLAS and
        # cuSOLVER handles and workspaces happen outside the capture), then restore W.
        saved = W.clone()
        self.draw(999_999)  # any step: the warm-up's rows are thrown away
        warm = torch.cuda.Stream(device)
        warm.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(warm):
            for _ in range(3):
                self.body()
        torch.cuda.current_stream(device).wait_stream(warm)
        W.copy_(saved)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self.body()
        torch.cuda.synchronize(device)
        W.copy_(saved)

    def draw(self, step):
        args, prob = self.args, self.prob
        gen = step_generator(args.seed, step, prob.X.device)
        self.batches.copy_(draw_batches(prob.n, args.T, args.b, gen, prob.X.device))
        if self.signs is not None:
            self.signs.copy_(draw_signs(args.T, args.rank, args.b, gen, prob.X.device,
                                        prob.X.dtype))

    def body(self):
        prob, W = self.prob, self.W
        for tr in self.trackers:
            tr.reset()
        inner_loop(prob, W, self.batches, self.signs, self.trackers, self.side,
                   record_streams=False)
        if self.curvature is None:
            return W
        a, loss = outer_grad_and_value(W, prob.Xv, prob.yv)
        q = self.trackers[0].solve(a.reshape(-1))
        return hypergradient(prob, W, q.view(prob.c, prob.d)), loss

    def __call__(self, step):
        self.draw(step)
        self.graph.replay()
        return self.out


def sgd_loop(prob, W, args, step):
    """The baseline: the same T SGD steps (batch drawing included), no curvature."""
    gen = step_generator(args.seed, step, prob.X.device)
    batches = draw_batches(prob.n, args.T, args.b, gen, prob.X.device)
    inner_loop(prob, W, batches, None, [])
    return W


# ----------------------------------------------------------------------------- timing


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats, device):
    """One warm-up call, then `repeats` timed calls; returns (median seconds, last result)."""
    times, result = [], None
    for i in range(1 + repeats):
        synchronize(device)
        t0 = time.perf_counter()
        result = fn(i)
        synchronize(device)
        if i > 0:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def benchmark(args):
    device = torch.device(args.device)
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    if args.data:
        data = load_data(args.data)
        c = int(max(data["y"].max(), data["yv"].max())) + 1 if args.c is None else args.c
    else:
        c = 10 if args.c is None else args.c
        data = make_synthetic(args.n, args.d, c, args.m, args.seed)
    if args.save_data:
        np.savez(args.save_data, **data)
    prob = Problem(data, c, args.l2, args.theta, device, dtype)
    side = None
    if args.side_stream and device.type == "cuda":
        side = torch.cuda.Stream(device)

    W0 = torch.zeros(prob.c, prob.d, dtype=dtype, device=device)
    W = W0.clone()
    outer_s, (h, loss) = timed(lambda i: outer_step(prob, W, args, i, side), args.repeats, device)
    W_sgd = W0.clone()
    sgd_s, _ = timed(lambda i: sgd_loop(prob, W_sgd, args, i), args.repeats, device)
    graphed = {}
    if args.graph:
        graphed = graphed_timings(prob, W0, args, side, device)
        graphed["graph_speedup_outer"] = outer_s / graphed["graph_outer_step_seconds_median"]

    return {
        "peer": "pytorch",
        "torch_version": torch.__version__,
        "device": device_name(device),
        "n": prob.n,
        "d": prob.d,
        "c": prob.c,
        "m": prob.m,
        "T": args.T,
        "b": args.b,
        "curvature": args.curvature,
        "rank": args.rank if args.curvature == "lowrank" else None,
        "outer_step_seconds_median": outer_s,
        "sgd_loop_seconds_median": sgd_s,
        "ratio_to_sgd": outer_s / sgd_s,
        "hypergradient_norm": torch.linalg.vector_norm(h).item(),
        "outer_loss": loss.item(),
        "dtype": args.dtype,
        "repeats": args.repeats,
        "l2": prob.C,
        "eta": prob.eta,
        "side_stream": side is not None,
        "seed": args.seed,
        "graph": bool(args.graph),
        **graphed,
    }


def graphed_timings(prob, W0, args, side, device):
    """The graphed outer step and SGD loop, timed as the eager ones are (interleaving is the
    caller's: the eager timings were taken just before, on the same data), and a replay's h
    against an eager step's from the same W and rows."""
    if device.type != "cuda":
        raise SystemExit("--graph needs --device cuda (torch.cuda.graph)")
    W = W0.clone()
    step = GraphedOuterStep(prob, W, args, args.curvature, side)
    outer_s, _ = timed(lambda i: step(i), args.repeats, device)
    W_sgd = W0.clone()
    loop = GraphedOuterStep(prob, W_sgd, args, None)
    sgd_s, _ = timed(lambda i: loop(i), args.repeats, device)
    # Same W, same rows: a replay against the eager step.
    start = W.clone()
    h_graph, loss_graph = (t.clone() for t in step(10_000))
    W_eager = start.clone()
    h_eager, loss_eager = outer_step(prob, W_eager, args, 10_000, side)
    return {
        "graph_outer_step_seconds_median": outer_s,
        "graph_sgd_loop_seconds_median": sgd_s,
        "graph_speedup_outer": None,  # filled below, eager / graphed
        "graph_vs_eager_rel_err": rel_err(h_graph, h_eager),
        "graph_vs_eager_loss_diff": abs(loss_graph.item() - loss_eager.item()),
        "graph_w_rel_err": rel_err(W, W_eager),
    }


# ----------------------------------------------------------------------------- --check


class Recorder:
    """A 'tracker' that keeps every step's inputs, for the explicit references of --check."""

    def __init__(self):
        self.steps = []

    def update(self, xb, G, sb, sign):
        sign = None if sign is None else sign.clone()
        self.steps.append((xb.clone(), G.clone(), sb.clone(), sign))


def rel_err(x, ref):
    return (torch.linalg.norm(x - ref) / torch.linalg.norm(ref)).item()


def run_check(seed=0):
    """Small float64 CPU case; every representation against its dense definition."""
    torch.manual_seed(seed)
    n, d, c, m, T, b, r, l2 = 300, 20, 4, 100, 10, 8, 16, 0.01
    dtype, device = torch.float64, torch.device("cpu")
    data = make_synthetic(n, d, c, m, seed)
    data["theta"] = np.random.default_rng(seed + 1).standard_normal(n)  # non-uniform weights
    prob = Problem(data, c, l2, 0.0, device, dtype)
    N, P = T * b, prob.P
    failures = []

    def require(ok, what, value):
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {value:.3e}")
        if not ok:
            failures.append(what)

    # Batches: consecutive slices of permutations, a new one when one is used up.
    gen = step_generator(seed, 0, device)
    batches = draw_batches(30, 10, 8, gen, device).reshape(-1)
    whole = all(
        torch.equal(batches[k : k + 30].sort().values, torch.arange(30)) for k in (0, 30)
    )
    require(whole, "batches cover each permutation once (n=30, T·b=80)", 0.0)

    # The closed-form per-sample gradients and SGD step against autograd.
    W = 0.1 * torch.randn(c, d, dtype=dtype)
    idx = torch.arange(b)
    xb, yb, Yb, sb = prob.X[idx], prob.y[idx], prob.Y[idx], prob.s[idx]
    G = torch.softmax(xb @ W.T, dim=1) - Yb
    ce = lambda W, x, y: F.cross_entropy((W @ x)[None], y[None])
    g_auto = torch.func.vmap(torch.func.grad(ce), in_dims=(None, 0, 0))(W, xb, yb)
    e = rel_err(per_sample_rows(xb, G, sb), (sb.sqrt()[:, None, None] * g_auto).flatten(1))
    require(e < 1e-12, "per-sample rows vs torch.func.vmap(grad)", e)

    def batch_loss(W):
        ce_b = F.cross_entropy(xb @ W.T, yb, reduction="none")
        return (sb * ce_b).mean() + 0.5 * l2 * (W * W).sum()

    W_ref = W - prob.eta * torch.func.grad(batch_loss)(W)
    W_sgd = W.clone()
    sgd_step(W_sgd, xb, Yb, sb, prob.eta, prob.C)
    require(rel_err(W_sgd, W_ref) < 1e-12, "SGD step vs autograd", rel_err(W_sgd, W_ref))

    # One inner loop feeding every representation the same gradients.
    gen = step_generator(seed, 1, device)
    batches = draw_batches(n, T, b, gen, device)
    signs = draw_signs(T, r, b, gen, device, dtype)
    trackers = {name: make_tracker(name, prob, N, r) for name in CURVATURES}
    rec = Recorder()
    W = torch.zeros(c, d, dtype=dtype)
    inner_loop(prob, W, batches, signs, list(trackers.values()) + [rec])
    a, _ = outer_grad_and_value(W, prob.Xv, prob.yv)
    a = a.reshape(-1)
    q = {name: tr.solve(a) for name, tr in trackers.items()}

    # References accumulated explicitly from the recorded gradients.
    Us = [per_sample_rows(x, g, s) for x, g, s, _ in rec.steps]
    H = l2 * torch.eye(P, dtype=dtype) + sum(U.T @ U for U in Us) / N
    e = rel_err(trackers["dense"].A, torch.linalg.inv(H))
    require(e <= 1e-8, "dense Woodbury A vs inv(R + (1/N) Σ s g gᵀ)", e)
    e = rel_err(q["dense-accumulate"], q["dense"])
    require(e <= 1e-8, "dense-accumulate q vs dense q", e)

    kf = trackers["kfac"]
    XX = sum(x.T @ x for x, _, _, _ in rec.steps) / N
    GG = sum((g * s[:, None]).T @ g for _, g, s, _ in rec.steps) / N
    e = max(rel_err(kf.XX, XX), rel_err(kf.GG, GG))
    require(e < 1e-12, "kfac factors XX, GG vs their sums", e)
    pi = math.sqrt(l2 * (XX.trace().item() / d) / (GG.trace().item() / c))
    # class-major vec(Q) (index k·d + j): the class factor is the outer Kronecker factor
    eye_c, eye_d = torch.eye(c, dtype=dtype), torch.eye(d, dtype=dtype)
    H_kfac = torch.kron(GG + (l2 / pi) * eye_c, XX + pi * eye_d)
    e = rel_err(q["kfac"], torch.linalg.solve(H_kfac, a))
    require(e <= 1e-10, "kfac q vs dense Kronecker solve", e)

    U_sk = sum(sg @ U for (_, _, _, sg), U in zip(rec.steps, Us)) / math.sqrt(N)
    e = rel_err(trackers["lowrank"].U, U_sk)
    require(e < 1e-12, "lowrank sketch vs N^{-1/2} Σ S_t U_t", e)
    H_lr = l2 * torch.eye(P, dtype=dtype) + U_sk.T @ U_sk
    e = rel_err(q["lowrank"], torch.linalg.solve(H_lr, a))
    require(e <= 1e-10, "lowrank q vs dense solve of R + U_skᵀU_sk", e)
    require(rel_err(q["none"], a / l2) < 1e-15, "none q = R⁻¹a", rel_err(q["none"], a / l2))

    # h = −∂_θ ⟨∇_W g(W, θ), q⟩ by autograd (the mixed second derivative).
    def inner_grad_dot_q(theta):
        def g(W):
            ce_all = F.cross_entropy(prob.X @ W.T, prob.y, reduction="none")
            return (torch.sigmoid(theta) * ce_all).mean() + 0.5 * l2 * (W * W).sum()

        return torch.func.grad(g)(W).reshape(-1) @ q["dense"]

    h_ref = -torch.func.grad(inner_grad_dot_q)(prob.theta)
    h = hypergradient(prob, W, q["dense"].view(c, d))
    e = rel_err(h, h_ref)
    require(e <= 1e-10, "hypergradient vs autograd −∂θ⟨∇_W g, q⟩", e)

    # The timed path runs end to end for every representation.
    args = argparse.Namespace(seed=seed, T=T, b=b, rank=r, curvature=None)
    for name in CURVATURES:
        args.curvature = name
        h, loss = outer_step(prob, torch.zeros(c, d, dtype=dtype), args, 0)
        finite = bool(torch.isfinite(h).all()) and math.isfinite(loss.item())
        require(finite, f"outer_step {name} finite (outer loss)", loss.item())

    if failures:
        print(f"{len(failures)} check(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


# ----------------------------------------------------------------------------- CLI


def curvature_list(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in CURVATURES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown curvature {', '.join(unknown) or repr(text)}; choose from {', '.join(CURVATURES)}")
    return names


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=50000, help="training rows (synthetic data)")
    p.add_argument("--d", type=int, default=785, help="features, bias column included")
    p.add_argument("--c", type=int, default=None, help="classes (default 10, or from --data)")
    p.add_argument("--m", type=int, default=10000, help="validation rows (synthetic data)")
    p.add_argument("--T", type=int, default=100, help="inner SGD steps per outer step")
    p.add_argument("--b", type=int, default=64, help="mini-batch size")
    p.add_argument("--curvature", type=curvature_list, default=["dense"],
                   help=f"one or more of {','.join(CURVATURES)}, comma-separated; one JSON line each "
                        "(one process: torch and the data are set up once)")
    p.add_argument("--rank", type=int, default=64, help="sketch rank of lowrank")
    p.add_argument("--l2", type=float, default=0.01, help="the fixed ridge C of the inner loss")
    p.add_argument("--theta", type=float, default=0.0, help="every θ_i (s_i = σ(θ_i))")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", help="npz with X, y, Xv, yv (and optionally theta)")
    p.add_argument("--save-data", help="write the (generated) data to this npz")
    p.add_argument("--out", help="also write the JSON line to this file")
    p.add_argument("--side-stream", action="store_true",
                   help="run the curvature update on a second CUDA stream (as the Rust loop does)")
    p.add_argument("--graph", action="store_true",
                   help="also time the outer step and the SGD loop captured with torch.cuda.graph "
                        "(CUDA only; see the module doc)")
    p.add_argument("--check", action="store_true", help="run the float64 CPU self-check and exit")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.check:
        return run_check(args.seed)
    lines = []
    for curvature in args.curvature:
        line = json.dumps(benchmark(argparse.Namespace(**{**vars(args), "curvature": curvature})))
        print(line, flush=True)
        lines.append(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
