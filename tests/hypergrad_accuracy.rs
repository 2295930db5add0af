//! Accuracy of the hypergradient methods on every problem and hyper-parameter layout, on
//! random data from the synthetic generators, in f64:
//!
//! * `exact` against finite differences of `F(θ) = f(w*(θ))`;
//! * `cg` with default options against `exact`;
//! * `neumann` and `fixed-point` converging to `exact` as K grows;
//! * `unroll` = `forward`, and `unroll` against finite differences of `θ ↦ f(w_T(θ))` (whole
//!   and truncated);
//! * `cg` with `linear_tol = 0` (run to the iteration cap) against `exact`.
//!
//! Set `HYPERGRAD_TEST_VERBOSE=1` and pass `-- --nocapture` to see the measured errors.

#[macro_use]
mod common;

use common::*;
use hypergrad::backend::Precision;
use hypergrad::data::rng::Rng;
use hypergrad::hypergrad::{compute, default_step, unroll, Hypergradient, Method, Options};
use hypergrad::problem::{Bilevel, HyperLayout, ProblemKind};

/// Random instances per problem/layout and check.
const SEEDS: [u64; 5] = [11, 12, 13, 14, 15];

/// Step of the finite differences. θ is a log-λ or a logit, so F varies on a scale of order 1
/// in θ and its derivatives are of the size of F itself. With the fourth-order stencil of
/// [`central_difference`] and h = 1e-3 the truncation error is about h⁴|F⁽⁵⁾|/30 ≈ 3e-14·|F|,
/// and the evaluation error δ of F (inner problem solved to 1e-13 relative gradient, plus
/// rounding, δ ≲ 1e-13·|F|) contributes about 1.5δ/h ≈ 1.5e-10·|F|. Both are far below the
/// 1e-5 tolerance; a larger h would let truncation grow as h⁴, a smaller one rounding as 1/h.
const FD_STEP: f64 = 1e-3;

fn opts(method: Method) -> Options {
    Options::new(method, Precision::F64)
}

fn run(problem: &Problem64, o: &Options, w0: Option<&Vec<f64>>) -> Hypergradient {
    compute(problem, o, w0).unwrap_or_else(|e| panic!("{} failed: {e}", o.method.name()))
}

fn label(kind: ProblemKind, layout: HyperLayout, seed: u64) -> String {
    format!("{}/{} seed {seed}", kind.name(), layout.name())
}

/// `exact` (tight inner solve) against fourth-order central differences of F. Tolerance 1e-5
/// relative in the 2-norm: the FD error budget above is ~1e-10, so this leaves room for a
/// hypergradient whose norm is well below |F| while still catching any wrong term (a wrong
/// sign or factor is an O(1) error).
fn exact_vs_fd(kind: ProblemKind, layout: HyperLayout) {
    for seed in SEEDS {
        let mut inst = instance(kind, layout, seed);
        let theta = inst.problem.theta().to_vec();
        let h = run(&inst.problem, &tight(opts(Method::Exact)), None);
        assert!(
            h.inner_converged,
            "{}: tight inner solve did not converge",
            label(kind, layout, seed)
        );
        let fd = central_difference(&mut inst.problem, &theta, FD_STEP, outer_at_solution);
        let e = rel_err(&h.hypergradient, &fd);
        note(|| format!("exact vs FD {}: {e:.2e}", label(kind, layout, seed)));
        assert!(
            e <= 1e-5,
            "{}: exact vs FD relative error {e:e}\n exact {:?}\n fd    {:?}",
            label(kind, layout, seed),
            h.hypergradient,
            fd
        );
    }
}

/// `cg` with every option at its default (what a user who changes nothing gets) against
/// `exact` at a tight inner tolerance: SPEC §6 promises about 1e-6 relative.
fn cg_default_vs_exact(kind: ProblemKind, layout: HyperLayout) {
    for seed in SEEDS {
        let inst = instance(kind, layout, seed);
        let reference = run(&inst.problem, &tight(opts(Method::Exact)), None);
        let h = run(&inst.problem, &opts(Method::Cg), None);
        let e = rel_err(&h.hypergradient, &reference.hypergradient);
        note(|| format!("default cg vs exact {}: {e:.2e}", label(kind, layout, seed)));
        assert!(
            e <= 1e-6,
            "{}: default cg vs exact relative error {e:e}",
            label(kind, layout, seed)
        );
    }
}

/// Errors of `method` (default step) against `exact` at K = 5, 20, 100, 500, with the same
/// (tight) inner options so that both use the same ŵ and only the linear solve differs: the
/// errors must decrease strictly (the iteration contracts by ‖I − ηH‖ < 1 per step) until
/// they reach rounding level, and the last be ≤ 1e-6 relative.
fn converges_to_exact(method: Method, kind: ProblemKind, layout: HyperLayout) {
    for seed in SEEDS {
        let inst = instance(kind, layout, seed);
        let reference = run(&inst.problem, &tight(opts(Method::Exact)), None);
        let errors: Vec<f64> = [5, 20, 100, 500]
            .iter()
            .map(|&k| {
                let mut o = tight(opts(method));
                o.linear_iters = Some(k);
                let h = run(&inst.problem, &o, None);
                rel_err(&h.hypergradient, &reference.hypergradient)
            })
            .collect();
        let what = format!("{} {}", method.name(), label(kind, layout, seed));
        note(|| format!("{what}: errors {errors:?}"));
        // Strictly decreasing until the error reaches the rounding floor of f64 (a few
        // 1e-16 relative: from there on the iteration sits at its fixed point).
        const FLOOR: f64 = 1e-13;
        assert!(
            errors
                .windows(2)
                .all(|w| w[1] < w[0] || w[0].max(w[1]) <= FLOOR),
            "{what}: errors at K = 5, 20, 100, 500 do not decrease: {errors:?}"
        );
        assert!(
            errors[3] <= 1e-6,
            "{what}: error at K = 500 is {:e} (errors {errors:?})",
            errors[3]
        );
    }
}

fn neumann_converges(kind: ProblemKind, layout: HyperLayout) {
    converges_to_exact(Method::Neumann, kind, layout)
}

fn fixed_point_converges(kind: ProblemKind, layout: HyperLayout) {
    converges_to_exact(Method::FixedPoint, kind, layout)
}

/// A random start `w0` for trajectories (entries N(0, 0.5²)).
fn random_w0(problem: &Problem64, rng: &mut Rng) -> Vec<f64> {
    let dim = hypergrad::problem::InnerProblem::inner_dim(problem);
    (0..dim).map(|_| 0.5 * rng.normal()).collect()
}

/// `unroll` and `forward` compute the same derivative of θ ↦ f(w_T(θ)) (reverse vs forward
/// mode through the same T steps, same step and w0), so they agree to rounding: both sum the
/// same O(T) products in a different order, ≲ T·1e-16 relative; 1e-10 leaves margin for
/// moderate cancellation and still catches any missing or misplaced term.
fn unroll_equals_forward(kind: ProblemKind, layout: HyperLayout) {
    for seed in SEEDS {
        let inst = instance(kind, layout, seed);
        let mut rng = Rng::new(seed + 100);
        let w0 = random_w0(&inst.problem, &mut rng);
        for (t, step, start) in [
            (40, None, None),
            (25, None, Some(&w0)),
            (
                60,
                Some(0.7 * default_step(&inst.problem).unwrap()),
                Some(&w0),
            ),
        ] {
            let mut o = opts(Method::Unroll);
            o.unroll_steps = t;
            o.step = step;
            let hu = run(&inst.problem, &o, start);
            o.method = Method::Forward;
            let hf = run(&inst.problem, &o, start);
            let e = rel_err(&hu.hypergradient, &hf.hypergradient);
            note(|| {
                format!(
                    "unroll vs forward {} T={t}: {e:.2e}",
                    label(kind, layout, seed)
                )
            });
            assert!(
                e <= 1e-10,
                "{}: unroll vs forward (T = {t}, w0 {}) relative difference {e:e}",
                label(kind, layout, seed),
                if start.is_some() { "random" } else { "0" }
            );
            assert!(
                (hu.outer_loss - hf.outer_loss).abs() <= 1e-12 * hu.outer_loss.abs(),
                "{}: unroll and forward end at different f(w_T)",
                label(kind, layout, seed)
            );
        }
    }
}

/// `f(w_T)` after `steps` fixed-size gradient steps from `start` at the problem's current θ.
fn f_after(problem: &Problem64, start: &Vec<f64>, step: f64, steps: usize) -> f64 {
    let path = unroll::trajectory(problem, start, step, steps).unwrap();
    problem.outer_value_grad(&path.points[steps], None).unwrap()
}

/// `unroll` is the exact derivative of θ ↦ f(w_T(θ)): compare with central differences of that
/// map (w_T from the library's own fixed-step trajectory, the step held fixed as θ moves: the
/// default step depends on θ, so an explicit step is used). Then truncation: `truncate = T` is
/// no truncation, and `truncate = K < T` is the exact derivative of the map in which θ acts
/// only on the last K steps (the first T − K steps run at the base θ), which is checked by
/// finite differences too, and differs from the full derivative.
///
/// The map is evaluated without any tolerance (a fixed number of steps), so δ ≈ 1e-15·|f| and
/// the FD error with h = 1e-3 is ≲ 1e-11 relative; the tolerance 1e-7 allows a hypergradient
/// much smaller than |f|.
fn unroll_vs_fd(kind: ProblemKind, layout: HyperLayout) {
    const T: usize = 30;
    const K: usize = 8;
    for seed in SEEDS {
        let mut inst = instance(kind, layout, seed);
        let theta = inst.problem.theta().to_vec();
        let mut rng = Rng::new(seed + 200);
        let w0 = random_w0(&inst.problem, &mut rng);
        let step = 0.8 * default_step(&inst.problem).unwrap();
        let mut o = opts(Method::Unroll);
        o.unroll_steps = T;
        o.step = Some(step);
        let full = run(&inst.problem, &o, Some(&w0));

        let fd = central_difference(&mut inst.problem, &theta, FD_STEP, |p, t| {
            p.set_theta(t).unwrap();
            f_after(p, &w0, step, T)
        });
        let e = rel_err(&full.hypergradient, &fd);
        note(|| format!("unroll vs FD {}: {e:.2e}", label(kind, layout, seed)));
        assert!(
            e <= 1e-7,
            "{}: unroll vs FD of f(w_T) relative error {e:e}\n unroll {:?}\n fd     {:?}",
            label(kind, layout, seed),
            full.hypergradient,
            fd
        );

        o.truncate = Some(T);
        let same = run(&inst.problem, &o, Some(&w0));
        let e = rel_err(&same.hypergradient, &full.hypergradient);
        assert!(
            e <= 1e-14,
            "{}: truncate = T differs from no truncation by {e:e}",
            label(kind, layout, seed)
        );

        o.truncate = Some(K);
        let truncated = run(&inst.problem, &o, Some(&w0));
        let e = rel_err(&truncated.hypergradient, &full.hypergradient);
        note(|| format!("truncated vs full {}: {e:.2e}", label(kind, layout, seed)));
        assert!(
            e >= 1e-6,
            "{}: truncate = {K} < T = {T} gives the full derivative (difference {e:e})",
            label(kind, layout, seed)
        );

        // The map θ' ↦ f(w_T) with w_{T−K} computed at the base θ and the last K steps at θ'.
        inst.problem.set_theta(&theta).unwrap();
        let path = unroll::trajectory(&inst.problem, &w0, step, T - K).unwrap();
        let mid = path.points[T - K].clone();
        let fd_trunc = central_difference(&mut inst.problem, &theta, FD_STEP, |p, t| {
            p.set_theta(t).unwrap();
            f_after(p, &mid, step, K)
        });
        let e = rel_err(&truncated.hypergradient, &fd_trunc);
        note(|| format!("truncated vs FD {}: {e:.2e}", label(kind, layout, seed)));
        assert!(
            e <= 1e-7,
            "{}: truncated unroll vs FD of the last-{K}-steps map: relative error {e:e}",
            label(kind, layout, seed)
        );
    }
}

for_each_config!(exact_vs_fd);
for_each_config!(cg_default_vs_exact);
for_each_config!(neumann_converges);
for_each_config!(fixed_point_converges);
for_each_config!(unroll_equals_forward);
for_each_config!(unroll_vs_fd);

/// `linear_tol = 0` is a valid option (`Options::validate` accepts any finite value ≥ 0; on the
/// command line `--linear-tol 0`): CG then runs until `linear_iters` or until its residual
/// vanishes, and must return the solution, as accurate as `exact`, not an error. (Once the
/// recursively updated residual underflows, `pᵀAp` rounds to 0; that is convergence, not a
/// Hessian that fails to be positive definite.)
fn cg_zero_tolerance(kind: ProblemKind, layout: HyperLayout) {
    for seed in SEEDS {
        let inst = instance(kind, layout, seed);
        let reference = run(&inst.problem, &tight(opts(Method::Exact)), None);
        let mut o = tight(opts(Method::Cg));
        o.linear_tol = 0.0;
        o.linear_iters = Some(2000);
        let h = compute(&inst.problem, &o, None).unwrap_or_else(|e| {
            panic!(
                "{}: cg with linear_tol = 0, linear_iters = 2000 failed: {e}",
                label(kind, layout, seed)
            )
        });
        let e = rel_err(&h.hypergradient, &reference.hypergradient);
        assert!(
            e <= 1e-10,
            "{}: cg with linear_tol = 0 vs exact: {e:e}",
            label(kind, layout, seed)
        );
    }
}

for_each_config!(cg_zero_tolerance);
