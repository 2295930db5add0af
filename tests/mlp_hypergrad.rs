//! Hypergradients of the network problems (SPEC §8) in f64 on small networks:
//!
//! * `exact` and `cg` against central differences of `F(θ) = f(ŵ(θ))`, each `F(θ ± δ e_j)`
//!   solved by Newton-CG warm-started from `ŵ(θ)` to a tight tolerance (so that both land on
//!   the same local minimiser), for softmax (shared and per-layer λ) and hyperclean, tanh and
//!   relu;
//! * `unroll` against `forward` (two independent code paths through `B`: per-row directional
//!   derivatives against per-sample gradients) and against central differences of
//!   `θ ↦ f(w_T(θ))`;
//! * what a network cannot give: an error bound (null), a global step (refused with a message
//!   naming `--step`), a hypergradient where `H(ŵ)` is not positive definite (a numerical
//!   error, never a number);
//! * `w₀` as SPEC §8 draws it, and the inputs a network problem refuses.

mod mlp_common;

use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::mlp::Activation;
use hypergrad::backend::{Backend, Precision};
use hypergrad::data::Dataset;
use hypergrad::hypergrad::{compute, exact, Method, Options};
use hypergrad::problem::mlp::initial_weights;
use hypergrad::problem::{Bilevel, HyperLayout, InnerProblem, MlpBilevel, ProblemKind};
use hypergrad::solver::{self, InnerOptions, Solver};
use hypergrad::Error;
use mlp_common::{rel_err, teacher_data, RefNet};

type B64 = CpuBackend<f64>;
type Problem = MlpBilevel<B64>;

/// Training and validation rows from a teacher network of the same shape.
fn data(sizes: &[usize], act: Activation, n: usize, m: usize, seed: u64) -> (Dataset, Dataset) {
    let (all, _) = teacher_data(&RefNet::new(sizes, act), n + m, 2.0, seed);
    let train = all.select(&(0..n).collect::<Vec<_>>());
    let val = all.select(&(n..n + m).collect::<Vec<_>>());
    (train, val)
}

fn problem(
    kind: ProblemKind,
    layout: HyperLayout,
    hidden: &[usize],
    act: Activation,
    seed: u64,
) -> Problem {
    problem_sized(kind, layout, hidden, act, seed, 24, 0.05)
}

/// [`problem`] with `n` training rows (16 validation rows) and hyperclean's `C = l2`.
fn problem_sized(
    kind: ProblemKind,
    layout: HyperLayout,
    hidden: &[usize],
    act: Activation,
    seed: u64,
    n: usize,
    l2: f64,
) -> Problem {
    let classes = 3;
    let mut sizes = vec![3];
    sizes.extend_from_slice(hidden);
    sizes.push(classes);
    let (train, val) = data(&sizes, act, n, 16, seed);
    let mut p = MlpBilevel::new(
        B64::new(),
        kind,
        layout,
        hidden,
        act,
        &train,
        &val,
        l2,
        seed,
    )
    .unwrap();
    // Uneven θ: λ between 0.03 and 0.1 (enough curvature for a strict local minimum), row
    // weights between 0.3 and 0.8.
    let theta: Vec<f64> = (0..p.hyper_dim())
        .map(|i| match kind {
            ProblemKind::Hyperclean => -0.8 + 0.45 * (i % 5) as f64,
            _ => (0.03f64).ln() + 0.4 * (i % 3) as f64,
        })
        .collect();
    p.set_theta(&theta).unwrap();
    p
}

/// Inner options for the references: Newton-CG to 1e-13 relative.
fn tight_inner() -> InnerOptions {
    InnerOptions {
        solver: Solver::Newton,
        tol: 1e-13,
        max_iters: 500,
        minibatch: Default::default(),
    }
}

fn opts(method: Method) -> Options {
    let mut o = Options::new(method, Precision::F64);
    o.inner = tight_inner();
    o.linear_tol = 1e-13;
    o
}

/// Central differences of `F(θ) = f(ŵ(θ))` along every coordinate of θ, the inner problem at
/// `θ ± δ e_j` solved from `w_hat`.
fn fd_hypergradient(problem: &mut Problem, w_hat: &[f64], delta: f64) -> Vec<f64> {
    let theta = problem.theta().to_vec();
    let start = problem.backend().upload(w_hat).unwrap();
    let mut out = Vec::with_capacity(theta.len());
    for j in 0..theta.len() {
        let mut value = |sign: f64| {
            let mut t = theta.clone();
            t[j] += sign * delta;
            problem.set_theta(&t).unwrap();
            let inner = solver::solve(problem, Some(&start), &tight_inner()).unwrap();
            assert!(inner.converged, "inner solve at θ{:+}δe_{j}", sign);
            problem.outer_value_grad(&inner.w, None).unwrap()
        };
        let (plus, minus) = (value(1.0), value(-1.0));
        out.push((plus - minus) / (2.0 * delta));
    }
    problem.set_theta(&theta).unwrap();
    out
}

/// `exact` and `cg` against central differences of `F`, and against each other.
fn check_against_fd(mut p: Problem, what: &str) {
    let exact = compute(&p, &opts(Method::Exact), None).unwrap();
    let cg = compute(&p, &opts(Method::Cg), None).unwrap();
    assert!(
        exact.inner_converged,
        "{what}: premise: the inner solve converges"
    );
    assert_eq!(exact.error_bound, None, "a network has no valid bound");
    assert!(exact.residual_norm.unwrap() <= 1e-10);
    let fd = fd_hypergradient(&mut p, &exact.w, 1e-5);
    let (e_exact, e_cg) = (
        rel_err(&exact.hypergradient, &fd),
        rel_err(&cg.hypergradient, &fd),
    );
    // δ = 1e-5: truncation O(δ²) ≈ 1e-10, rounding O(u F / δ) plus the inner solves' error
    // (‖∇g‖ ≤ 1e-13 relative) over δ, about 1e-8 relative.
    assert!(
        e_exact <= 1e-6 && e_cg <= 1e-6,
        "{what}: exact {e_exact:e}, cg {e_cg:e} against FD (‖FD‖ = {:e})",
        fd.iter().map(|v| v * v).sum::<f64>().sqrt()
    );
    let agree = rel_err(&cg.hypergradient, &exact.hypergradient);
    assert!(agree <= 1e-9, "{what}: cg vs exact {agree:e}");
}

#[test]
fn softmax_shared_matches_finite_differences() {
    let p = problem(
        ProblemKind::Softmax,
        HyperLayout::Shared,
        &[4],
        Activation::Tanh,
        5,
    );
    check_against_fd(p, "softmax shared [4] tanh");
    let p = problem(
        ProblemKind::Softmax,
        HyperLayout::Shared,
        &[3, 4],
        Activation::Tanh,
        6,
    );
    check_against_fd(p, "softmax shared [3, 4] tanh");
}

#[test]
fn softmax_per_layer_matches_finite_differences() {
    let p = problem(
        ProblemKind::Softmax,
        HyperLayout::PerLayer,
        &[4, 3],
        Activation::Tanh,
        5,
    );
    check_against_fd(p, "softmax per-layer [4, 3] tanh");
    let p = problem(
        ProblemKind::Softmax,
        HyperLayout::PerLayer,
        &[5],
        Activation::Tanh,
        8,
    );
    check_against_fd(p, "softmax per-layer [5] tanh");
}

#[test]
fn hyperclean_matches_finite_differences() {
    let p = problem(
        ProblemKind::Hyperclean,
        HyperLayout::PerSample,
        &[4],
        Activation::Tanh,
        5,
    );
    check_against_fd(p, "hyperclean [4] tanh");
}

/// A relu network's inner problem rarely has a smooth strict local minimum: a unit dead on
/// every training row leaves its (unpenalised) bias flat, so `H(ŵ)` is singular and `exact`
/// refuses it, and minima on a kink stall Newton-CG. Where the inner solve does converge, the
/// flat directions are flat for `f` and `B` too, CG never enters them, and its hypergradient
/// is `F`'s derivative.
#[test]
fn relu_hyperclean_cg_matches_finite_differences() {
    let mut p = problem_sized(
        ProblemKind::Hyperclean,
        HyperLayout::PerSample,
        &[4],
        Activation::Relu,
        5,
        60,
        0.05,
    );
    let cg = compute(&p, &opts(Method::Cg), None).unwrap();
    assert!(
        cg.inner_converged,
        "premise: the relu inner solve converges"
    );
    let fd = fd_hypergradient(&mut p, &cg.w, 1e-5);
    let err = rel_err(&cg.hypergradient, &fd);
    assert!(err <= 1e-6, "relu hyperclean: cg {err:e} against FD");
    match compute(&p, &opts(Method::Exact), None) {
        Ok(exact) => {
            let agree = rel_err(&exact.hypergradient, &cg.hypergradient);
            assert!(agree <= 1e-9, "exact vs cg {agree:e}");
        }
        Err(e) => assert!(e.to_string().contains("not positive definite"), "{e}"),
    }
}

/// `θ ↦ f(w_T(θ))` through T gradient steps of size η from `w₀`.
fn unrolled_objective(problem: &mut Problem, theta: &[f64], eta: f64, steps: usize) -> f64 {
    problem.set_theta(theta).unwrap();
    let b = problem.backend();
    let mut w = problem.initial_point().unwrap();
    let mut grad = b.zeros(problem.inner_dim()).unwrap();
    for _ in 0..steps {
        problem.inner_value_grad(&w, Some(&mut grad)).unwrap();
        b.axpy(-eta, &grad, &mut w).unwrap();
    }
    problem.outer_value_grad(&w, None).unwrap()
}

#[test]
fn unroll_equals_forward_and_finite_differences() {
    for (kind, layout, act) in [
        (
            ProblemKind::Softmax,
            HyperLayout::PerLayer,
            Activation::Tanh,
        ),
        (
            ProblemKind::Hyperclean,
            HyperLayout::PerSample,
            Activation::Tanh,
        ),
        (ProblemKind::Softmax, HyperLayout::Shared, Activation::Relu),
    ] {
        let mut p = problem(kind, layout, &[4], act, 7);
        let (eta, steps) = (0.5, 30);
        let mut o = opts(Method::Unroll);
        o.step = Some(eta);
        o.unroll_steps = steps;
        let unroll = compute(&p, &o, None).unwrap();
        o.method = Method::Forward;
        let forward = compute(&p, &o, None).unwrap();
        let err = rel_err(&unroll.hypergradient, &forward.hypergradient);
        assert!(err <= 1e-11, "{kind:?} {act:?}: unroll vs forward {err:e}");
        assert_eq!(unroll.error_bound, None);
        assert_eq!(forward.error_bound, None);
        let theta = p.theta().to_vec();
        let h = 1e-5;
        let fd: Vec<f64> = (0..theta.len())
            .map(|j| {
                let (mut plus, mut minus) = (theta.clone(), theta.clone());
                plus[j] += h;
                minus[j] -= h;
                (unrolled_objective(&mut p, &plus, eta, steps)
                    - unrolled_objective(&mut p, &minus, eta, steps))
                    / (2.0 * h)
            })
            .collect();
        let err = rel_err(&unroll.hypergradient, &fd);
        assert!(err <= 1e-6, "{kind:?} {act:?}: unroll vs FD {err:e}");
    }
}

#[test]
fn neumann_and_fixed_point_take_their_step_from_the_hessian_at_the_solution() {
    let p = problem(
        ProblemKind::Softmax,
        HyperLayout::PerLayer,
        &[4],
        Activation::Tanh,
        9,
    );
    let exact = compute(&p, &opts(Method::Exact), None).unwrap();
    for method in [Method::Neumann, Method::FixedPoint] {
        let mut o = opts(method);
        o.linear_iters = Some(20_000);
        let h = compute(&p, &o, None).unwrap();
        let err = rel_err(&h.hypergradient, &exact.hypergradient);
        assert!(err <= 1e-6, "{method:?} vs exact {err:e}");
    }
}

#[test]
fn trajectory_methods_without_a_step_are_refused() {
    let p = problem(
        ProblemKind::Softmax,
        HyperLayout::Shared,
        &[4],
        Activation::Tanh,
        3,
    );
    for method in [Method::Unroll, Method::Forward] {
        let err = compute(&p, &opts(method), None).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidOption {
                    option: "--step",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("--step"), "{err}");
    }
}

#[test]
fn a_hessian_that_is_not_positive_definite_is_an_error_never_a_number() {
    // Stop the inner solver at w₀ (no iterations): far from a minimum, with a small λ, the
    // Hessian of a tanh network is indefinite there.
    let mut p = problem(
        ProblemKind::Softmax,
        HyperLayout::Shared,
        &[6],
        Activation::Tanh,
        11,
    );
    p.set_theta(&[(1e-4f64).ln()]).unwrap();
    let w0 = p.initial_point().unwrap();
    let hessian = p.hessian(&w0).unwrap();
    let mut dense = exact::dense_hessian(&p, &hessian).unwrap();
    assert!(
        hypergrad::linalg::cholesky(&mut dense, p.inner_dim()).is_err(),
        "premise: H(w₀) is indefinite"
    );
    for method in [Method::Cg, Method::Exact] {
        let mut o = opts(method);
        o.inner.max_iters = 0;
        let err = compute(&p, &o, None).unwrap_err();
        assert!(
            matches!(err, Error::Numerical(_)) && err.to_string().contains("not positive definite"),
            "{method:?}: {err}"
        );
    }
}

#[test]
fn the_inner_solve_starts_from_the_seeded_initialisation() {
    for act in [Activation::Tanh, Activation::Relu] {
        let p = problem(ProblemKind::Softmax, HyperLayout::Shared, &[50], act, 13);
        let net = p.network().clone();
        let w0 = p.backend().download(&p.initial_point().unwrap()).unwrap();
        assert_eq!(w0, initial_weights(&net, 13).unwrap());
        assert_ne!(w0, initial_weights(&net, 14).unwrap(), "the seed draws w₀");
        let (fan_in, fan_out) = net.fans(0);
        let first: Vec<f64> = (0..fan_out)
            .flat_map(|k| w0[k * (fan_in + 1)..k * (fan_in + 1) + fan_in].to_vec())
            .collect();
        for (e, we) in w0.iter().enumerate() {
            if net.is_bias(e) {
                assert_eq!(*we, 0.0, "biases start at 0");
            }
        }
        match act {
            Activation::Tanh => {
                let bound = (6.0 / (fan_in + fan_out) as f64).sqrt();
                assert!(
                    first.iter().all(|v| v.abs() <= bound),
                    "Glorot-uniform range"
                );
            }
            Activation::Relu => {
                // He-normal: variance 2/fan_in; 150 draws give a sample variance within ±40%.
                let var = first.iter().map(|v| v * v).sum::<f64>() / first.len() as f64;
                let want = 2.0 / fan_in as f64;
                assert!(
                    (var / want - 1.0).abs() < 0.4,
                    "He variance {var} vs {want}"
                );
            }
        }
        // Without a start the solver begins at w₀ (a tanh network's origin is a saddle point
        // the solver would never leave): one solve from None and one from w₀ agree.
        let inner = InnerOptions {
            solver: Solver::Newton,
            tol: 1e-10,
            max_iters: 200,
            minibatch: Default::default(),
        };
        let a = solver::solve(&p, None, &inner).unwrap();
        let b = solver::solve(&p, Some(&p.initial_point().unwrap()), &inner).unwrap();
        assert_eq!(a.w, b.w);
        assert!(
            a.iters > 0
                && a.value
                    < p.inner_value_grad(&p.initial_point().unwrap(), None)
                        .unwrap()
        );
    }
}

#[test]
fn inputs_a_network_problem_refuses() {
    let (train, val) = data(&[3, 4, 3], Activation::Tanh, 20, 10, 1);
    let b = || B64::new();
    let make = |kind, layout, l2| {
        MlpBilevel::new(
            b(),
            kind,
            layout,
            &[4],
            Activation::Tanh,
            &train,
            &val,
            l2,
            0,
        )
    };
    let err = make(ProblemKind::Ridge, HyperLayout::Shared, 0.1)
        .err()
        .unwrap();
    assert!(err.to_string().contains("--model"), "{err}");
    let err = make(ProblemKind::Softmax, HyperLayout::PerClass, 0.1)
        .err()
        .unwrap();
    assert!(err.to_string().contains("--hyper"), "{err}");
    let err = make(ProblemKind::Hyperclean, HyperLayout::PerSample, 0.0)
        .err()
        .unwrap();
    assert!(err.to_string().contains("--l2"), "{err}");
    let mut p = make(ProblemKind::Softmax, HyperLayout::PerLayer, 0.1).unwrap();
    assert_eq!(p.hyper_dim(), 2);
    assert!(matches!(p.set_theta(&[0.0]), Err(Error::Dimension(_))));
    assert!(p.set_theta(&[0.0, f64::NAN]).is_err());
    let narrow = Dataset::new(
        ndarray::Array2::zeros((4, 2)),
        vec![0.0, 1.0, 2.0, 0.0],
        "narrow",
    )
    .unwrap();
    let err = MlpBilevel::new(
        b(),
        ProblemKind::Softmax,
        HyperLayout::Shared,
        &[4],
        Activation::Tanh,
        &train,
        &narrow,
        0.1,
        0,
    )
    .err()
    .unwrap();
    assert!(matches!(err, Error::Dimension(_)), "{err}");
    let err = MlpBilevel::new(
        b(),
        ProblemKind::Softmax,
        HyperLayout::Shared,
        &[0],
        Activation::Tanh,
        &train,
        &val,
        0.1,
        0,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("width 0"), "{err}");
}
