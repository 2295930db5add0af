//! The L-BFGS inner solver (src/solver/lbfgs.rs) against independent references:
//!
//! * on the strictly convex GLM problems (ridge, logreg, softmax, hyperclean) it reaches the
//!   minimiser Newton-CG reaches, in f64 and in f32;
//! * its curvature pairs pay: on an ill-conditioned ridge problem it needs a fraction of
//!   gradient descent's iterations (a two-loop recursion that lost its curvature would not);
//! * on a network (not convex) it drives ‖∇g‖ below the tolerance from w₀, with g below
//!   g(w₀), and the hypergradient at its ŵ matches central finite differences of the outer
//!   loss computed with the same solver;
//! * capped, it reports `converged = false` and the gradient norm where it stopped.

mod common;
#[path = "mlp_common/mod.rs"]
mod mlp_common;

use common::*;
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::mlp::Activation;
use hypergrad::backend::{Backend, GlmOps, Precision};
use hypergrad::data::Dataset;
use hypergrad::hypergrad::{compute, Method, Options};
use hypergrad::problem::{Bilevel, GlmBilevel, HyperLayout, InnerProblem, MlpBilevel, ProblemKind};
use hypergrad::solver::{self, InnerOptions, Solver};
use mlp_common::{teacher_data, RefNet};

fn inner(solver: Solver, tol: f64, max_iters: usize) -> InnerOptions {
    InnerOptions {
        solver,
        tol,
        max_iters,
    }
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

#[test]
fn lbfgs_reaches_newtons_minimiser_on_the_convex_problems() {
    let cases = [
        (ProblemKind::Ridge, HyperLayout::Shared),
        (ProblemKind::Logreg, HyperLayout::PerFeature),
        (ProblemKind::Softmax, HyperLayout::PerClass),
        (ProblemKind::Hyperclean, HyperLayout::PerSample),
    ];
    for (kind, layout) in cases {
        for seed in 0..3 {
            let inst = instance(kind, layout, seed);
            let p = &inst.problem;
            let b = p.backend();
            let newton = solver::solve(p, None, &inner(Solver::Newton, 1e-12, 200)).unwrap();
            let lbfgs = solver::solve(p, None, &inner(Solver::Lbfgs, 1e-10, 20_000)).unwrap();
            assert!(
                lbfgs.converged,
                "{kind:?} seed {seed}: ‖∇g‖ = {}",
                lbfgs.grad_norm
            );
            let (wn, wl) = (
                b.download(&newton.w).unwrap(),
                b.download(&lbfgs.w).unwrap(),
            );
            // ‖w − ŵ‖ ≤ ‖∇g(w)‖/μ; the tolerance is relative to ‖∇g(0)‖, so compare relatively.
            let err = max_abs_diff(&wl, &wn) / max_abs(&wn).max(1e-12);
            assert!(
                err < 1e-6,
                "{kind:?} seed {seed}: relative gap {err:.2e} to Newton's ŵ"
            );
            assert!(lbfgs.value <= newton.value + 1e-12 * newton.value.abs().max(1.0));
        }
    }
}

/// Softmax with one λ per class on `backend`, at `theta`.
fn softmax_problem<B: GlmOps>(
    backend: B,
    (train, val): (&Dataset, &Dataset),
    l2: f64,
    theta: &[f64],
) -> GlmBilevel<B> {
    let mut p = GlmBilevel::new(
        backend,
        ProblemKind::Softmax,
        HyperLayout::PerClass,
        train,
        val,
        l2,
    )
    .unwrap();
    p.set_theta(theta).unwrap();
    p
}

#[test]
fn lbfgs_in_f32_reaches_the_f64_minimiser() {
    let (train, val) = datasets(ProblemKind::Softmax, 60, 30, 6, 4);
    let reference = instance(ProblemKind::Softmax, HyperLayout::PerClass, 4);
    let theta = reference.problem.theta().to_vec();
    let p32 = softmax_problem(
        CpuBackend::<f32>::new(),
        (&train, &val),
        reference.l2,
        &theta,
    );
    let p64 = softmax_problem(B64::new(), (&train, &val), reference.l2, &theta);
    let exact = solver::solve(&p64, None, &inner(Solver::Newton, 1e-12, 200)).unwrap();
    let lbfgs = solver::solve(&p32, None, &inner(Solver::Lbfgs, 1e-5, 5_000)).unwrap();
    assert!(lbfgs.converged, "f32: ‖∇g‖ = {}", lbfgs.grad_norm);
    let w32 = p32.backend().download(&lbfgs.w).unwrap();
    let w64 = p64.backend().download(&exact.w).unwrap();
    let err = max_abs_diff(&w32, &w64) / max_abs(&w64);
    assert!(err < 1e-3, "f32 L-BFGS is {err:.2e} from the f64 minimiser");
}

#[test]
fn lbfgs_needs_a_fraction_of_gradient_descents_iterations_when_ill_conditioned() {
    // Strongly correlated features (ρ = 0.95) and a small λ: κ in the thousands.
    let (train, val) = datasets_rho(ProblemKind::Ridge, 120, 40, 30, 0.95, 7);
    let mut p = GlmBilevel::new(
        B64::new(),
        ProblemKind::Ridge,
        HyperLayout::Shared,
        &train,
        &val,
        0.0,
    )
    .unwrap();
    p.set_theta(&[(1e-3f64).ln()]).unwrap();
    let gd = solver::solve(&p, None, &inner(Solver::Gd, 1e-8, 200_000)).unwrap();
    let lbfgs = solver::solve(&p, None, &inner(Solver::Lbfgs, 1e-8, 200_000)).unwrap();
    assert!(gd.converged && lbfgs.converged);
    assert!(
        lbfgs.iters * 10 < gd.iters,
        "L-BFGS took {} iterations, gradient descent {}",
        lbfgs.iters,
        gd.iters
    );
}

/// A network problem (3 inputs, tanh hidden layer of 8, 3 classes) on data from a teacher
/// network of the same shape.
fn network_problem(seed: u64) -> MlpBilevel<B64> {
    let (all, _) = teacher_data(&RefNet::new(&[3, 8, 3], Activation::Tanh), 80, 2.0, seed);
    let train = all.select(&(0..60).collect::<Vec<_>>());
    let val = all.select(&(60..80).collect::<Vec<_>>());
    let mut p = MlpBilevel::new(
        B64::new(),
        ProblemKind::Softmax,
        HyperLayout::PerLayer,
        &[8],
        Activation::Tanh,
        &train,
        &val,
        0.0,
        seed,
    )
    .unwrap();
    p.set_theta(&[(0.05f64).ln(), (0.08f64).ln()]).unwrap();
    p
}

#[test]
fn lbfgs_trains_a_network_to_tolerance_and_its_hypergradient_matches_finite_differences() {
    for seed in 0..3 {
        let mut p = network_problem(seed);
        let b = p.backend().clone();
        let w0 = p.initial_point().unwrap();
        let g0 = p.inner_value_grad(&w0, None).unwrap();
        let opts_inner = inner(Solver::Lbfgs, 1e-11, 20_000);
        let sol = solver::solve(&p, None, &opts_inner).unwrap();
        assert!(sol.converged, "seed {seed}: ‖∇g‖ = {}", sol.grad_norm);
        assert!(
            sol.value < g0,
            "seed {seed}: g rose from {g0} to {}",
            sol.value
        );
        // The implicit hypergradient at L-BFGS's ŵ against central differences of
        // F(θ) = f(ŵ(θ)), each ŵ(θ ± δ e_i) warm-started from ŵ(θ) (the same local minimum).
        let mut opts = Options::new(Method::Exact, Precision::F64);
        opts.inner = opts_inner;
        let theta = p.theta().to_vec();
        let h = compute(&p, &opts, None).unwrap();
        let w_hat = b.download(&sol.w).unwrap();
        let w_hat = b.upload(&w_hat).unwrap();
        let delta = 1e-5;
        for i in 0..theta.len() {
            let mut f_at = |shift: f64| {
                let mut t = theta.clone();
                t[i] += shift;
                p.set_theta(&t).unwrap();
                let s = solver::solve(&p, Some(&w_hat), &opts_inner).unwrap();
                assert!(s.converged);
                p.outer_value_grad(&s.w, None).unwrap()
            };
            let fd = (f_at(delta) - f_at(-delta)) / (2.0 * delta);
            p.set_theta(&theta).unwrap();
            let got = h.hypergradient[i];
            assert!(
                (got - fd).abs() <= 1e-5 * fd.abs().max(1e-3),
                "seed {seed}, θ_{i}: implicit {got:.8e}, finite differences {fd:.8e}"
            );
        }
    }
}

#[test]
fn capped_lbfgs_reports_where_it_stopped() {
    let p = network_problem(1);
    let sol = solver::solve(&p, None, &inner(Solver::Lbfgs, 1e-12, 5)).unwrap();
    assert!(!sol.converged);
    assert_eq!(sol.iters, 5);
    let b = p.backend();
    let mut grad = b.zeros(p.inner_dim()).unwrap();
    p.inner_value_grad(&sol.w, Some(&mut grad)).unwrap();
    let norm = b.nrm2(&grad).unwrap();
    assert!((norm - sol.grad_norm).abs() <= 1e-12 * norm.max(1.0));
}
