//! The stochastic baselines (stocBiO, AmIGO, SOBA) on a network, from the one estimator
//! family, against independent references built on the host from the problem's dense Hessian
//! (f64, CPU):
//!
//! * with one mini-batch of all n rows, `H_B = H`, and every baseline's `q` is the polynomial
//!   `q_K = β Σ_{k<K} (I − βH)^k a` (stocBiO's truncated Neumann series; K steps of AmIGO's
//!   or SOBA's `q ← q − β(Hq − a)` from 0 at a fixed `w`), formed here with the dense H;
//! * with mini-batches of b < n rows, each factor's `H_B` is drawn independently and uniformly
//!   from a partition of equal batches, whose mean is `H`: the estimate is unbiased for that
//!   polynomial, and the mean over R independent draws is within a few standard errors of it
//!   (the tolerance is estimated from the draws themselves);
//! * with enough terms, at the inner optimum of a strongly regularised problem, the baselines
//!   reach the IFT hypergradient of `--method exact` to the tolerance the contraction
//!   `(1 − β λ_min)^K` allows;
//! * the CLI runs `--model mlp:8 --method stocbio|amigo|soba` for softmax and hyperclean on the
//!   CPU; `--device cuda` fails only for want of a device on a machine without one, and
//!   distillation refuses the baselines for its stated reason.
//!
//! The inner SGD steps are given η = 10⁻³⁰⁰, so that `w` stays at the chosen point (each step
//! moves it by ~10⁻³⁰⁰, far below the rounding of its entries) and the references can be
//! formed at the same `w`.

mod cli_common;
mod mlp_common;

use cli_common::{assert_one_line_error, hypergrad as cli, json_of};
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::mlp::Activation;
use hypergrad::backend::{Backend, Precision};
use hypergrad::data::Dataset;
use hypergrad::hypergrad::stochastic::{StochasticEstimator, StochasticOptions};
use hypergrad::hypergrad::{compute, Method, Options};
use hypergrad::linalg::spd_inverse;
use hypergrad::problem::{Bilevel, HyperLayout, InnerProblem, MlpBilevel, ProblemKind};
use hypergrad::solver::{InnerOptions, Solver};
use mlp_common::{rel_err, teacher_data, RefNet};

type B64 = CpuBackend<f64>;

const SIZES: [usize; 3] = [3, 4, 3];
const N: usize = 200;

/// The training rows of [`problem_at_optimum`] (the estimator partitions them for its batches).
fn training_rows() -> Dataset {
    let net = RefNet::new(&SIZES, Activation::Tanh);
    let (all, _) = teacher_data(&net, N + 100, 2.0, 77);
    all.select(&(0..N).collect::<Vec<_>>())
}

/// A hyperclean problem (θ uneven, so the row weights differ) on teacher data, C = 0.1, and its
/// inner optimum by Newton from the teacher's parameters.
fn problem_at_optimum() -> (MlpBilevel<B64>, Vec<f64>, Vec<f64>) {
    let net = RefNet::new(&SIZES, Activation::Tanh);
    let (all, teacher) = teacher_data(&net, N + 100, 2.0, 77);
    let train = all.select(&(0..N).collect::<Vec<_>>());
    let val = all.select(&(N..N + 100).collect::<Vec<_>>());
    let mut p = MlpBilevel::new(
        B64::new(),
        ProblemKind::Hyperclean,
        HyperLayout::PerSample,
        &SIZES[1..2],
        Activation::Tanh,
        &train,
        &val,
        0.1,
        77,
    )
    .unwrap();
    let theta: Vec<f64> = (0..p.hyper_dim())
        .map(|i| -1.0 + 0.37 * (i % 5) as f64)
        .collect();
    p.set_theta(&theta).unwrap();
    let mut opts = Options::new(Method::Exact, Precision::F64);
    opts.inner = InnerOptions {
        solver: Solver::Newton,
        tol: 1e-12,
        max_iters: 500,
        minibatch: Default::default(),
    };
    let start = p.backend().upload(&teacher).unwrap();
    let exact = compute(&p, &opts, Some(&start)).unwrap();
    assert!(exact.inner_converged, "premise: the inner solve converges");
    (p, exact.w, exact.hypergradient)
}

/// The dense Hessian H (row-major P×P) of the problem at `w`, column by column.
fn dense_hessian(p: &MlpBilevel<B64>, w: &[f64]) -> Vec<f64> {
    let dim = p.inner_dim();
    let h = p.hessian(&w.to_vec()).unwrap();
    let mut m = vec![0.0; dim * dim];
    for j in 0..dim {
        let mut e = vec![0.0; dim];
        e[j] = 1.0;
        let mut col = vec![0.0; dim];
        p.hvp(&h, &e, &mut col).unwrap();
        for i in 0..dim {
            m[i * dim + j] = col[i];
        }
    }
    m
}

fn matvec(m: &[f64], v: &[f64]) -> Vec<f64> {
    let n = v.len();
    (0..n)
        .map(|i| (0..n).map(|j| m[i * n + j] * v[j]).sum())
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// The largest eigenvalue of the SPD matrix `m` by power iteration.
fn top_eigenvalue(m: &[f64], dim: usize) -> f64 {
    let mut v = vec![1.0; dim];
    let mut lambda = 0.0;
    for _ in 0..2000 {
        let u = matvec(m, &v);
        lambda = norm(&u) / norm(&v);
        let s = norm(&u);
        v = u.iter().map(|x| x / s).collect();
    }
    lambda
}

/// `q_K = β Σ_{k<K} (I − βH)^k a`.
fn polynomial(h: &[f64], a: &[f64], beta: f64, k: usize) -> Vec<f64> {
    let mut term = a.to_vec();
    let mut q: Vec<f64> = a.iter().map(|x| beta * x).collect();
    for _ in 1..k {
        let ht = matvec(h, &term);
        for (t, x) in term.iter_mut().zip(&ht) {
            *t -= beta * x;
        }
        for (qi, t) in q.iter_mut().zip(&term) {
            *qi += beta * t;
        }
    }
    q
}

/// Options of a baseline at a fixed `w` (module docs): `K` linear steps (SOBA: `K` joint
/// steps), mini-batches of `batch`, linear step β.
fn options(method: Method, batch: usize, k: usize, beta: f64) -> StochasticOptions {
    let mut opts = StochasticOptions::new(method);
    opts.batch = batch;
    opts.inner_lr = Some(1e-300);
    opts.linear_lr = Some(beta);
    opts.diagnostics = false;
    if method == Method::Soba {
        opts.inner_steps = k;
    } else {
        opts.inner_steps = 1;
        opts.linear_steps = k;
    }
    opts
}

/// One estimate of a fresh estimator restored to `w` (so AmIGO and SOBA start from q = 0);
/// `step` seeds the draw.
fn estimate_at(p: &MlpBilevel<B64>, w: &[f64], opts: StochasticOptions, step: u64) -> Vec<f64> {
    let mut est = StochasticEstimator::new(p, &training_rows(), opts).unwrap();
    est.restore(p.backend(), w, None).unwrap();
    let (result, _) = est.estimate(p, step).unwrap();
    assert_eq!(result.method, opts.method);
    assert_eq!(result.error_bound, None);
    let moved = rel_err(&p.backend().download(est.w()).unwrap(), w);
    assert!(moved < 1e-14, "w moved by {moved:e}");
    result.hypergradient
}

/// `h = −B(w)ᵀ q`.
fn hypergradient_of(p: &MlpBilevel<B64>, w: &[f64], q: &[f64]) -> Vec<f64> {
    p.cross_t(&w.to_vec(), &q.to_vec())
        .unwrap()
        .iter()
        .map(|v| -v)
        .collect()
}

fn outer_gradient(p: &MlpBilevel<B64>, w: &[f64]) -> Vec<f64> {
    let mut a = vec![0.0; p.inner_dim()];
    p.outer_value_grad(&w.to_vec(), Some(&mut a)).unwrap();
    a
}

const BASELINES: [Method; 3] = [Method::Stocbio, Method::Amigo, Method::Soba];

#[test]
fn with_one_batch_of_all_rows_each_baseline_is_its_polynomial() {
    let (p, w, _) = problem_at_optimum();
    let h = dense_hessian(&p, &w);
    let beta = 1.0 / (1.05 * top_eigenvalue(&h, p.inner_dim()));
    let a = outer_gradient(&p, &w);
    let k = 25;
    let want = hypergradient_of(&p, &w, &polynomial(&h, &a, beta, k));
    for method in BASELINES {
        let got = estimate_at(&p, &w, options(method, N, k, beta), 0);
        let err = rel_err(&got, &want);
        eprintln!("{method:?}, one batch, K = {k}: relative error {err:.2e}");
        // The same sums in another order: rounding only (f64, P = 31, K = 25 terms).
        assert!(err <= 1e-10, "{method:?}: {err:e}");
    }
}

#[test]
fn with_mini_batches_the_baselines_are_unbiased_for_their_polynomial() {
    let (p, w, _) = problem_at_optimum();
    let h = dense_hessian(&p, &w);
    let beta = 1.0 / (1.05 * top_eigenvalue(&h, p.inner_dim()));
    let a = outer_gradient(&p, &w);
    let (k, batch, draws) = (8, 50, 300);
    let want = hypergradient_of(&p, &w, &polynomial(&h, &a, beta, k));
    for method in BASELINES {
        let samples: Vec<Vec<f64>> = (0..draws)
            .map(|r| estimate_at(&p, &w, options(method, batch, k, beta), r as u64))
            .collect();
        let dim = want.len();
        let mean: Vec<f64> = (0..dim)
            .map(|i| samples.iter().map(|s| s[i]).sum::<f64>() / draws as f64)
            .collect();
        // tr(Cov)/R, the expected squared norm of the mean's error, from the draws.
        let total_variance: f64 = (0..dim)
            .map(|i| {
                samples
                    .iter()
                    .map(|s| (s[i] - mean[i]).powi(2))
                    .sum::<f64>()
                    / (draws - 1) as f64
            })
            .sum();
        let standard_error = (total_variance / draws as f64).sqrt();
        let spread = total_variance.sqrt();
        assert!(
            spread > 1e-3 * norm(&want),
            "{method:?}: the mini-batches should make the draws differ (spread {spread:e})"
        );
        let err: Vec<f64> = mean.iter().zip(&want).map(|(m, t)| m - t).collect();
        eprintln!(
            "{method:?}, b = {batch}, K = {k}, R = {draws}: ‖mean − polynomial‖ {:.3e}, standard error {standard_error:.3e}, one draw's spread {spread:.3e}, ‖polynomial‖ {:.3e}",
            norm(&err),
            norm(&want)
        );
        // E‖mean − want‖² = tr(Cov)/R for an unbiased estimate: by Markov's inequality a
        // distance above 5 standard errors has probability ≤ 1/25 (the draws are seeded, so
        // the outcome is fixed); a bias as large as one draw's spread would fail it.
        assert!(
            norm(&err) <= 5.0 * standard_error,
            "{method:?}: ‖mean − polynomial‖ = {:e} > 5 × standard error {standard_error:e} (one draw's spread {spread:e})",
            norm(&err)
        );
    }
}

#[test]
fn with_enough_terms_the_baselines_reach_the_ift_hypergradient() {
    let (p, w, exact) = problem_at_optimum();
    let dim = p.inner_dim();
    let h = dense_hessian(&p, &w);
    // H ≻ 0 at this optimum (C = 0.1, the shift curvature on the output bias): its inverse
    // exists, and λ_min = 1/λ_max(H⁻¹).
    let inverse = spd_inverse(&h, dim).expect("premise: H is positive definite at the optimum");
    let (l_max, l_min) = (top_eigenvalue(&h, dim), 1.0 / top_eigenvalue(&inverse, dim));
    let beta = 1.0 / (1.05 * l_max);
    let contraction = 1.0 - beta * l_min;
    // K terms leave ‖q_K − q*‖ ≤ contraction^K ‖q*‖; ask for 10⁻⁸.
    let k = ((1e-8f64).ln() / contraction.ln()).ceil() as usize;
    assert!(k <= 20_000, "premise: a well-conditioned H (K = {k})");
    let a = outer_gradient(&p, &w);
    let q_star = matvec(&inverse, &a);
    let dense = hypergradient_of(&p, &w, &q_star);
    // The dense solve is the IFT formula `exact` evaluates (its CG to its own tolerance).
    assert!(
        rel_err(&dense, &exact) <= 1e-6,
        "{:e}",
        rel_err(&dense, &exact)
    );
    for method in BASELINES {
        let got = estimate_at(&p, &w, options(method, N, k, beta), 0);
        let err = rel_err(&got, &dense);
        eprintln!(
            "{method:?}, K = {k} (β λ_min = {:.2e}): relative error {err:.2e} vs the dense solve, {:.2e} vs exact",
            beta * l_min,
            rel_err(&got, &exact)
        );
        // ‖h − h*‖ ≤ ‖B‖ 10⁻⁸ ‖q*‖; ‖B‖‖q*‖/‖h*‖ is the conditioning of −Bᵀ, a few here.
        assert!(err <= 1e-6, "{method:?} with K = {k}: {err:e}");
        assert!(rel_err(&got, &exact) <= 2e-6, "{method:?} vs exact");
    }
}

const DATA: &str = "synthetic:softmax:n=200,d=5,c=3,seed=4";

#[test]
fn the_cli_runs_the_baselines_on_a_network() {
    let no_gpu = hypergrad::backend::cuda::probe().devices.is_empty();
    for problem in ["softmax", "hyperclean"] {
        for method in ["stocbio", "amigo", "soba"] {
            let args = [
                "grad",
                "--problem",
                problem,
                "--train",
                DATA,
                "--model",
                "mlp:8",
                "--method",
                method,
                "--inner-steps",
                "20",
                "--batch-size",
                "16",
                "--json",
            ];
            let v = json_of(&cli(&args));
            assert_eq!(v["method"], method, "{problem} {method}");
            let h = v["hypergradient"].as_array().expect("an array");
            assert_eq!(
                h.len() as u64,
                v["p"].as_u64().unwrap(),
                "{problem} {method}"
            );
            assert!(
                h.iter().all(|x| x.as_f64().is_some_and(f64::is_finite)),
                "{problem} {method}: {h:?}"
            );
            assert!(v["error_bound"].is_null());
            if no_gpu {
                let mut on_cuda = args.to_vec();
                on_cuda.extend(["--device", "cuda"]);
                assert_one_line_error(&cli(&on_cuda), "--device cuda");
            }
        }
    }
    // Distillation keeps refusing them, for its stated reason.
    let out = cli(&[
        "grad",
        "--problem",
        "distill",
        "--train",
        DATA,
        "--model",
        "mlp:8",
        "--method",
        "soba",
    ]);
    assert_one_line_error(&out, "rows are θ and change every step");
}
