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
//!
//! Mini-batch SGD and Adam (src/solver/minibatch.rs): a step on a mini-batch is the gradient
//! step of the same problem built on those rows alone, and the mini-batch gradient is that
//! problem's gradient (linear model and network); an epoch of Adam over one whole batch is the
//! textbook Adam step (the outer loop's host implementation); on the convex problems both
//! converge to within the strong-convexity bound ‖∇g‖/μ of Newton-CG's minimiser; both train a
//! network from their default steps (Adam to 1e-4, which needs its batch growth); a diverging
//! step is halved back; capped, they report where they stopped; problems that are not made of
//! rows refuse them.

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
use hypergrad::solver::{self, InnerOptions, MiniBatch, Solver};
use mlp_common::{teacher_data, RefNet};

fn inner(solver: Solver, tol: f64, max_iters: usize) -> InnerOptions {
    InnerOptions {
        solver,
        tol,
        max_iters,
        minibatch: Default::default(),
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
    network_problem_on(seed, &(0..60).collect::<Vec<_>>())
}

/// [`network_problem`] with only the given rows of its 60 training rows (same seed and θ).
fn network_problem_on(seed: u64, rows: &[usize]) -> MlpBilevel<B64> {
    let (all, _) = teacher_data(&RefNet::new(&[3, 8, 3], Activation::Tanh), 80, 2.0, seed);
    let train = all.select(rows);
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
        // δ = 1e-4 balances the central difference's truncation (∝ δ², 5.5e-8 relative on
        // seed 0) against the inner solves' error over 2δ (at δ = 1e-5 it reached 1.8e-5,
        // above the test's 1e-5, once L-BFGS's γ was rounded differently).
        let delta = 1e-4;
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

// ---- mini-batch SGD and Adam (src/solver/minibatch.rs) --------------------------------------

fn sgd_options(tol: f64, epochs: usize, batch: usize, step: Option<f64>) -> InnerOptions {
    minibatch_options(Solver::Sgd, tol, epochs, batch, step)
}

fn adam_options(tol: f64, epochs: usize, batch: usize, step: Option<f64>) -> InnerOptions {
    minibatch_options(Solver::Adam, tol, epochs, batch, step)
}

fn minibatch_options(
    solver: Solver,
    tol: f64,
    epochs: usize,
    batch: usize,
    step: Option<f64>,
) -> InnerOptions {
    InnerOptions {
        minibatch: MiniBatch {
            batch,
            step,
            seed: 3,
        },
        ..inner(solver, tol, epochs)
    }
}

/// `∇g_R(w)` from `reference`, the same problem built on the rows `R` alone.
fn reference_gradient<P: InnerProblem<B = B64>>(reference: &P, w: &[f64]) -> Vec<f64> {
    let b = reference.backend();
    let mut g = b.zeros(w.len()).unwrap();
    reference
        .inner_value_grad(&b.upload(w).unwrap(), Some(&mut g))
        .unwrap();
    b.download(&g).unwrap()
}

/// `w − η ∇g_R(w)` from `reference`, the same problem built on the rows `R` alone.
fn reference_step<P: InnerProblem<B = B64>>(reference: &P, w: &[f64], eta: f64) -> Vec<f64> {
    let g = reference_gradient(reference, w);
    w.iter().zip(&g).map(|(w, g)| w - eta * g).collect()
}

/// The mini-batch gradient of `problem` on `rows` at `w`, into a buffer that held garbage.
fn batch_gradient_on<P: InnerProblem<B = B64>>(problem: &P, rows: &[usize], w: &[f64]) -> Vec<f64> {
    let b = problem.backend();
    let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let rows = b.upload_rows(&idx, problem.train_rows()).unwrap();
    let mut out = b.upload(&vec![7.0; w.len()]).unwrap();
    problem
        .batch_gradient(&b.upload(w).unwrap(), &rows, &mut out)
        .unwrap();
    b.download(&out).unwrap()
}

/// One step of `problem` on `rows`, from `w`.
fn step_on<P: InnerProblem<B = B64>>(problem: &P, rows: &[usize], w: &[f64], eta: f64) -> Vec<f64> {
    let b = problem.backend();
    let idx: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let rows = b.upload_rows(&idx, problem.train_rows()).unwrap();
    let mut wb = b.upload(w).unwrap();
    problem.sgd_step(&mut wb, &rows, eta).unwrap();
    b.download(&wb).unwrap()
}

#[test]
fn an_sgd_step_and_the_batch_gradient_are_those_of_the_problem_on_its_rows() {
    let rows = [4, 0, 17, 9, 4, 30, 22];
    let eta = 0.3;
    // A linear model (softmax, one λ per class): the reference is the problem on those rows.
    let inst = instance(ProblemKind::Softmax, HyperLayout::PerClass, 2);
    let p = &inst.problem;
    let theta = p.theta().to_vec();
    let sub = softmax_problem(
        B64::new(),
        (&inst.train.select(&rows), &inst.val),
        inst.l2,
        &theta,
    );
    let w: Vec<f64> = (0..p.inner_dim())
        .map(|i| 0.1 * ((i * 7 % 5) as f64 - 2.0))
        .collect();
    let got = step_on(p, &rows, &w, eta);
    let want = reference_step(&sub, &w, eta);
    assert!(
        max_abs_diff(&got, &want) < 1e-13,
        "linear: {got:?} vs {want:?}"
    );
    let grad = batch_gradient_on(p, &rows, &w);
    let want = reference_gradient(&sub, &w);
    assert!(max_abs_diff(&grad, &want) < 1e-13, "linear batch gradient");
    // A network, from its w₀.
    let net = network_problem(0);
    let sub = network_problem_on(0, &rows);

    let w = net
        .backend()
        .download(&net.initial_point().unwrap())
        .unwrap();
    let got = step_on(&net, &rows, &w, eta);
    let want = reference_step(&sub, &w, eta);
    assert!(max_abs_diff(&got, &want) < 1e-13, "network step differs");
    let grad = batch_gradient_on(&net, &rows, &w);
    let want = reference_gradient(&sub, &w);
    assert!(max_abs_diff(&grad, &want) < 1e-13, "network batch gradient");
}

#[test]
fn sgd_and_adam_reach_newtons_minimiser_on_a_convex_problem() {
    for (kind, layout) in [
        (ProblemKind::Softmax, HyperLayout::PerClass),
        (ProblemKind::Hyperclean, HyperLayout::PerSample),
    ] {
        let inst = instance(kind, layout, 1);
        let p = &inst.problem;
        let b = p.backend();
        let newton = solver::solve(p, None, &inner(Solver::Newton, 1e-12, 200)).unwrap();
        let wn = b.download(&newton.w).unwrap();
        for opts in [
            sgd_options(1e-4, 20_000, 8, None),
            adam_options(1e-5, 20_000, 8, None),
        ] {
            let what = format!("{kind:?} {:?}", opts.solver);
            let sol = solver::solve(p, None, &opts).unwrap();
            assert!(
                sol.converged,
                "{what}: ‖∇g‖ = {} after {} epochs",
                sol.grad_norm, sol.iters
            );
            let ws = b.download(&sol.w).unwrap();
            // Strong convexity: ‖w − ŵ‖ ≤ ‖∇g(w)‖/μ (Newton's ŵ is exact to 1e-12 relative).
            let err = ws
                .iter()
                .zip(&wn)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt();
            let bound = sol.grad_norm / p.strong_convexity();
            assert!(
                err <= bound * (1.0 + 1e-6),
                "{what}: {err:.2e} from Newton's ŵ, bound {bound:.2e}"
            );
            assert!(err > 0.0 && sol.value >= newton.value - 1e-12);
        }
    }
}

/// SGD and Adam to 1e-4 from their default steps, with batches of 16 of the 60 rows. Without
/// the batch growth of a stall (step halving alone), Adam stalled at 3·10⁻³ to 4·10⁻³ relative
/// here (its halvings exhausted), and SGD needed 1,495 and 2,888 epochs to 1e-3.
#[test]
fn sgd_and_adam_train_a_network_to_tolerance_from_their_default_steps() {
    for seed in 0..2 {
        let p = network_problem(seed);
        let w0 = p.initial_point().unwrap();
        let g0 = p.inner_value_grad(&w0, None).unwrap();
        for opts in [
            sgd_options(1e-4, 20_000, 16, None),
            adam_options(1e-4, 20_000, 16, None),
        ] {
            let what = format!("seed {seed} {:?}", opts.solver);
            let sol = solver::solve(&p, None, &opts).unwrap();
            assert!(
                sol.converged,
                "{what}: ‖∇g‖ = {} after {} epochs",
                sol.grad_norm, sol.iters
            );
            assert!(sol.value < g0, "{what}: g rose from {g0} to {}", sol.value);
        }
    }
}

/// With one batch of all rows, an epoch is one Adam step: the first moves w₀ as the outer
/// loop's textbook Adam (host f64, bias-corrected moments) moves it along ∇g(w₀).
#[test]
fn an_adam_epoch_over_one_whole_batch_is_the_textbook_adam_step() {
    let p = network_problem(0);
    let b = p.backend();
    let w0 = p.initial_point().unwrap();
    let mut grad = b.zeros(p.inner_dim()).unwrap();
    p.inner_value_grad(&w0, Some(&mut grad)).unwrap();
    let lr = 1e-3;
    let mut want = b.download(&w0).unwrap();
    let (mut m, mut v) = (vec![0.0; want.len()], vec![0.0; want.len()]);
    hypergrad::outer::Adam::new(lr).step(1, &mut m, &mut v, &mut want, &b.download(&grad).unwrap());
    let sol = solver::solve(&p, None, &adam_options(1e-12, 1, 1000, Some(lr))).unwrap();
    assert_eq!(sol.iters, 1);
    let got = b.download(&sol.w).unwrap();
    assert!(
        max_abs_diff(&got, &want) < 1e-14,
        "{:e}",
        max_abs_diff(&got, &want)
    );
    // Every coordinate moved by lr·|g|/(|g| + ε): about lr (the step was accepted).
    let w0 = b.download(&w0).unwrap();
    assert!(got
        .iter()
        .zip(&w0)
        .all(|(a, b)| (a - b).abs() <= lr * (1.0 + 1e-12)));
}

#[test]
fn capped_minibatch_solvers_report_where_they_stopped_and_a_diverging_step_is_halved() {
    let p = network_problem(1);
    let b = p.backend();
    let w0 = p.initial_point().unwrap();
    let g0 = p.inner_value_grad(&w0, None).unwrap();
    for solver in [Solver::Sgd, Solver::Adam] {
        let what = format!("{solver:?}");
        let sol = solver::solve(&p, None, &minibatch_options(solver, 1e-12, 3, 16, None)).unwrap();
        assert!(!sol.converged, "{what}");
        assert_eq!(sol.iters, 3, "{what}");
        let mut grad = b.zeros(p.inner_dim()).unwrap();
        let value = p.inner_value_grad(&sol.w, Some(&mut grad)).unwrap();
        assert!(
            (b.nrm2(&grad).unwrap() - sol.grad_norm).abs() <= 1e-12 * sol.grad_norm.max(1.0),
            "{what}"
        );
        assert_eq!(value, sol.value, "{what}");
        // Capped in the middle of a stall (a step too large to be accepted, not yet halved):
        // the point returned is the one its value and gradient norm describe (w₀ here).
        let stalled = solver::solve(
            &p,
            None,
            &minibatch_options(solver, 1e-12, 2, 16, Some(1e6)),
        )
        .unwrap();
        let mut grad = b.zeros(p.inner_dim()).unwrap();
        let value = p.inner_value_grad(&stalled.w, Some(&mut grad)).unwrap();
        assert_eq!(value, stalled.value, "{what}");
        assert_eq!(b.nrm2(&grad).unwrap(), stalled.grad_norm, "{what}");
        // A step of 1e6 overshoots every epoch at first; the halvings bring g below g(w₀).
        let sol = solver::solve(
            &p,
            None,
            &minibatch_options(solver, 1e-12, 80, 16, Some(1e6)),
        )
        .unwrap();
        assert!(
            sol.value.is_finite() && sol.value < g0,
            "{what}: g = {} (g(w₀) = {g0})",
            sol.value
        );
    }
}

#[test]
fn minibatch_solvers_refuse_problems_without_rows_and_bad_settings() {
    use hypergrad::data::synthetic::QuadraticSpec;
    use hypergrad::problem::QuadraticBilevel;
    let spec = QuadraticSpec {
        m: 40,
        nx: 4,
        nw: 4,
        noise: 0.01,
        seed: 1,
    };
    let q = QuadraticBilevel::new(spec.generate()).unwrap();
    let p = network_problem(0);
    for solver in [Solver::Sgd, Solver::Adam] {
        let err = solver::solve(&q, None, &minibatch_options(solver, 1e-6, 10, 8, None))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("--inner-solver"), "{err}");
        let err = solver::solve(&p, None, &minibatch_options(solver, 1e-6, 10, 0, None))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("--batch-size"), "{err}");
        let err = solver::solve(
            &p,
            None,
            &minibatch_options(solver, 1e-6, 10, 8, Some(-1.0)),
        )
        .err()
        .expect("refused");
        assert!(err.to_string().contains("--inner-lr"), "{err}");
    }
}
