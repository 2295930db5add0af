//! Inner solvers for `min_w g(w, θ)`: gradient descent, accelerated gradient, Newton-CG,
//! L-BFGS, and the mini-batch solvers SGD and Adam.
//!
//! All stop when `‖∇g(w)‖ ≤ tol · ‖∇g(w₀)‖` (a scale-free criterion: the gradient at the
//! problem's initial point — the origin for the linear models, the seeded `w₀` of a network —
//! sets the problem's scale) or after `max_iters` iterations, and report the final gradient
//! norm, which the error bound of SPEC §4 uses whatever the stopping reason.

pub mod gd;
pub mod lbfgs;
pub mod linear;
pub mod minibatch;
pub mod newton;

pub use minibatch::MiniBatch;

use crate::backend::{Backend, Precision};
use crate::error::{Error, Result};
use crate::problem::{Buf, InnerProblem};

/// Which inner solver to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Solver {
    /// Gradient descent with backtracking on the step.
    Gd,
    /// Nesterov's accelerated gradient (FISTA momentum) with backtracking and adaptive restart.
    Agd,
    /// Newton's method with the Newton system solved inexactly by CG (Hessian-vector
    /// products only), and an Armijo line search. The default: it reaches tight tolerances in
    /// a handful of steps, which the reference hypergradients need.
    Newton,
    /// L-BFGS with Armijo backtracking (memory [`lbfgs::MEMORY`]): one gradient a step, no
    /// Hessian-vector product; for large networks trained to a tight tolerance.
    Lbfgs,
    /// Mini-batch SGD, the gradient checked once an epoch, the step halved when an epoch
    /// does not lower `g` ([`minibatch`]); for problems made of training rows.
    Sgd,
    /// Adam on mini-batches, with SGD's epochs, checks and step halving ([`minibatch`]).
    Adam,
}

impl Solver {
    pub fn name(self) -> &'static str {
        match self {
            Solver::Gd => "gd",
            Solver::Agd => "agd",
            Solver::Newton => "newton",
            Solver::Lbfgs => "lbfgs",
            Solver::Sgd => "sgd",
            Solver::Adam => "adam",
        }
    }

    /// Whether `max_iters` counts epochs (passes over the training rows) rather than steps.
    pub fn counts_epochs(self) -> bool {
        matches!(self, Solver::Sgd | Solver::Adam)
    }
}

/// Options of the inner solve.
#[derive(Clone, Copy, Debug)]
pub struct InnerOptions {
    pub solver: Solver,
    /// Relative gradient tolerance: stop when `‖∇g(w)‖ ≤ tol · ‖∇g(0)‖`.
    pub tol: f64,
    /// Most iterations (epochs for [`Solver::Sgd`] and [`Solver::Adam`]).
    pub max_iters: usize,
    /// The mini-batch settings of [`Solver::Sgd`] and [`Solver::Adam`].
    pub minibatch: MiniBatch,
}

impl InnerOptions {
    /// Defaults that make the reference hypergradients accurate in the given precision:
    /// Newton-CG to `1e-10` relative in f64, `1e-5` in f32.
    pub fn default_for(precision: Precision) -> Self {
        InnerOptions {
            solver: Solver::Newton,
            tol: match precision {
                Precision::F64 => 1e-10,
                Precision::F32 => 1e-5,
            },
            max_iters: 1000,
            minibatch: MiniBatch::default(),
        }
    }
}

/// Outcome of an inner solve.
pub struct InnerSolution<B: Backend> {
    pub w: B::Buf,
    /// `g(w)`.
    pub value: f64,
    /// `‖∇g(w)‖` at the returned point.
    pub grad_norm: f64,
    pub iters: usize,
    pub converged: bool,
}

/// Solves the inner problem from `w0` (the problem's [`InnerProblem::initial_point`] if
/// `None`: zeros for the linear models).
pub fn solve<P: InnerProblem>(
    problem: &P,
    w0: Option<&Buf<P>>,
    opts: &InnerOptions,
) -> Result<InnerSolution<P::B>> {
    if !(opts.tol >= 0.0 && opts.tol.is_finite()) {
        return Err(Error::option(
            "--inner-tol",
            format!("must be a finite number ≥ 0, got {}", opts.tol),
        ));
    }
    let b = problem.backend();
    let w = match w0 {
        Some(w0) => linear::duplicate(b, w0)?,
        None => problem.initial_point()?,
    };
    let threshold = opts.tol * gradient_scale(problem)?;
    match opts.solver {
        Solver::Gd => gd::gradient_descent(problem, w, threshold, opts.max_iters, false),
        Solver::Agd => gd::gradient_descent(problem, w, threshold, opts.max_iters, true),
        Solver::Newton => newton::newton_cg(problem, w, threshold, opts.max_iters),
        Solver::Lbfgs => lbfgs::lbfgs(problem, w, threshold, opts.max_iters),
        Solver::Sgd => minibatch::sgd(problem, w, threshold, opts.max_iters, &opts.minibatch),
        Solver::Adam => minibatch::adam(problem, w, threshold, opts.max_iters, &opts.minibatch),
    }
}

/// `‖∇g(w₀)‖` at the problem's [`InnerProblem::initial_point`] (the origin for the linear
/// models), the scale of the stopping criterion (1 if it vanishes, when `w₀` is the solution).
pub fn gradient_scale<P: InnerProblem>(problem: &P) -> Result<f64> {
    let b = problem.backend();
    let start = problem.initial_point()?;
    let mut grad = b.zeros(problem.inner_dim())?;
    problem.inner_value_grad(&start, Some(&mut grad))?;
    let norm = b.nrm2(&grad)?;
    Ok(if norm > 0.0 { norm } else { 1.0 })
}

/// How a trial point of a line search fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StepTest {
    /// The sufficient-decrease (Armijo) condition holds.
    Decrease,
    /// The decrease the step should earn is below the rounding error of `g` (we are at the
    /// precision floor of the objective), but `g` did not measurably rise and the gradient
    /// norm fell: accept, without growing the step any further.
    NoisyProgress,
    Reject,
}

/// The line-search test shared by the solvers. Near the optimum the decrease a step earns,
/// `O(‖∇g‖²)`, falls below the precision of `g` itself (`u|g|`); from there on progress is
/// judged by the gradient norm, which keeps shrinking well past that point.
fn step_test(
    precision: Precision,
    value: f64,
    value_trial: f64,
    required_decrease: f64,
    grad_norm: f64,
    grad_norm_trial: f64,
) -> StepTest {
    let slack = 64.0 * precision.epsilon() * value.abs().max(f64::MIN_POSITIVE);
    if value_trial <= value - required_decrease {
        StepTest::Decrease
    } else if value_trial <= value + slack && grad_norm_trial < grad_norm {
        StepTest::NoisyProgress
    } else {
        StepTest::Reject
    }
}

/// `(∇g(w), g(w), ‖∇g(w)‖)` at a solver's starting point; a non-finite start is an error
/// naming the solver.
fn start<P: InnerProblem>(problem: &P, w: &Buf<P>, solver: Solver) -> Result<(Buf<P>, f64, f64)> {
    let b = problem.backend();
    let mut grad = b.zeros(problem.inner_dim())?;
    let value = problem.inner_value_grad(w, Some(&mut grad))?;
    let grad_norm = b.nrm2(&grad)?;
    check_finite(value, grad_norm, solver)?;
    Ok((grad, value, grad_norm))
}

/// Sufficient-decrease constant of the line searches (Nocedal & Wright's usual 1e-4).
const ARMIJO: f64 = 1e-4;
/// Most step halvings of one line search.
const MAX_HALVINGS: usize = 40;

/// Armijo backtracking along `−direction` from `w` (where `g = value`, `‖∇g‖ = grad_norm` and
/// `slope = ∇gᵀ direction > 0`): `t` starts at `first` and halves until `w − t·direction`
/// passes [`step_test`] with the decrease `ARMIJO·t·slope`. On success `trial` and
/// `grad_trial` hold that point and its gradient, and `(t, g(trial))` is returned; `None`
/// when no step decreases `g` measurably.
#[allow(clippy::too_many_arguments)]
fn backtrack<P: InnerProblem>(
    problem: &P,
    w: &Buf<P>,
    direction: &Buf<P>,
    slope: f64,
    (value, grad_norm): (f64, f64),
    first: f64,
    trial: &mut Buf<P>,
    grad_trial: &mut Buf<P>,
) -> Result<Option<(f64, f64)>> {
    let b = problem.backend();
    let mut t = first;
    for _ in 0..MAX_HALVINGS {
        b.copy(w, trial)?;
        b.axpy(-t, direction, trial)?;
        let value_trial = problem.inner_value_grad(trial, Some(grad_trial))?;
        let test = step_test(
            b.precision(),
            value,
            value_trial,
            ARMIJO * t * slope,
            grad_norm,
            b.nrm2(grad_trial)?,
        );
        if test != StepTest::Reject {
            return Ok(Some((t, value_trial)));
        }
        t *= 0.5;
    }
    Ok(None)
}

/// Fails on a non-finite objective (divergence or overflow) with a clear message.
fn check_finite(value: f64, grad_norm: f64, solver: Solver) -> Result<()> {
    if value.is_finite() && grad_norm.is_finite() {
        Ok(())
    } else {
        Err(Error::Numerical(format!(
            "the {} inner solver produced a non-finite objective (g = {value}, ‖∇g‖ = {grad_norm}); \
             check the data scale and θ",
            solver.name()
        )))
    }
}
