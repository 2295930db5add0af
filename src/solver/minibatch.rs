//! Mini-batch SGD (`--inner-solver sgd`): the inner solver a network is usually trained with,
//! for the deterministic methods too, with the stopping rule of every solver here.
//!
//! Each epoch draws a seeded permutation of the `n` training rows and takes `⌈n/b⌉` steps
//! `w ← w − η ∇ĝ_B(w)` on mini-batches of `b` rows ([`InnerProblem::sgd_step`]: the unbiased
//! estimate of `∇g`, NHGD's inner step); the short last batch of `r < b` rows steps by
//! `η r/b`, so that every row weighs `η/b` in every epoch and, `w` held still, an epoch's
//! steps add up to exactly `η (n/b) ∇g(w)`: as `η` shrinks an epoch becomes a gradient step,
//! whatever the permutation. After each epoch the full `g` and `‖∇g‖` are measured, and:
//!
//! * the solve stops when `‖∇g(w)‖ ≤ tol · ‖∇g(w₀)‖`, checked once an epoch, or after
//!   `max_iters` epochs (`--inner-iters` counts epochs here), and reports the gradient norm
//!   it ended at, as every solver does;
//! * when [`PATIENCE`] epochs in a row end above the lowest `g` so far (or one ends with a
//!   non-finite `g`), the iterate returns to that lowest point and `η` is halved. A constant
//!   step leaves SGD in a noise ball of radius proportional to `η`; halving when the one
//!   quantity measured exactly stops improving is the step decay that lets it reach a
//!   tolerance, and it also tames a first step that diverges. Once `η` has been halved
//!   [`MAX_HALVINGS`] times the solve stops: no step makes progress in this precision.
//!
//! SGD converges at the rate of gradient descent on `g`'s condition number, so it is for
//! moderate tolerances (1e-3 to 1e-5 relative); `newton` and `lbfgs` are for tight ones.
//!
//! The first `η` is `--inner-lr`, else `1/L` with `L` the problem's smoothness bound (the
//! linear models), else `1/(1.05 |λ|)` with `λ` the eigenvalue of largest magnitude of
//! `H(w₀)` by power iteration (a network, as NHGD's default step).

use super::{check_finite, linear, start, InnerSolution, Solver};
use crate::backend::Backend;
use crate::data::rng::Rng;
use crate::error::{Error, Result};
use crate::problem::{not_made_of_rows, Buf, InnerProblem};

/// Most halvings of the step before the solve stops for want of progress.
pub const MAX_HALVINGS: usize = 40;
/// Epochs in a row that may end above the best `g` before the step is halved.
pub const PATIENCE: usize = 3;

/// The mini-batch settings of [`sgd`] (`--batch-size`, `--inner-lr`, `--seed`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MiniBatch {
    /// Rows per step (all rows if larger than `n`).
    pub batch: usize,
    /// The first step `η`; `None`: from the curvature (module docs).
    pub step: Option<f64>,
    /// Seeds the epochs' permutations.
    pub seed: u64,
}

impl Default for MiniBatch {
    fn default() -> Self {
        MiniBatch {
            batch: 64,
            step: None,
            seed: 0,
        }
    }
}

/// Mini-batch SGD from `w` until `‖∇g‖ ≤ threshold` or `max_epochs` epochs.
pub fn sgd<P: InnerProblem>(
    problem: &P,
    mut w: Buf<P>,
    threshold: f64,
    max_epochs: usize,
    opts: &MiniBatch,
) -> Result<InnerSolution<P::B>> {
    let b = problem.backend();
    let n = problem.train_rows();
    if n == 0 {
        return Err(not_made_of_rows());
    }
    if opts.batch == 0 {
        return Err(Error::option("--batch-size", "must be at least 1"));
    }
    let batch = opts.batch.min(n);
    let (mut grad, mut value, mut grad_norm) = start(problem, &w, Solver::Sgd)?;
    let mut eta = match opts.step {
        Some(step) if step > 0.0 && step.is_finite() => step,
        Some(step) => {
            return Err(Error::option(
                "--inner-lr",
                format!("must be > 0, got {step}"),
            ))
        }
        None => default_step(problem, &w)?,
    };
    // The last point an epoch ended at with a lower g: where an epoch that fails restarts.
    let mut kept = linear::duplicate(b, &w)?;
    let mut rng = Rng::new(opts.seed);
    let (mut epochs, mut halvings, mut stalled) = (0, 0, 0);
    while grad_norm > threshold && epochs < max_epochs && halvings <= MAX_HALVINGS {
        let order: Vec<u32> = rng.permutation(n).into_iter().map(|r| r as u32).collect();
        for rows in &b.upload_batches(&order, batch, n)? {
            // The short last batch steps by η·|B|/b, so that each row weighs η/b in every
            // epoch and, w held still, an epoch's steps add up to η (n/b) ∇g(w) exactly.
            problem.sgd_step(&mut w, rows, eta * b.rows_len(rows) as f64 / batch as f64)?;
        }
        epochs += 1;
        let trial_value = problem.inner_value_grad(&w, Some(&mut grad))?;
        let trial_norm = b.nrm2(&grad)?;
        let finite = trial_value.is_finite() && trial_norm.is_finite();
        if finite && (trial_value < value || trial_norm <= threshold) {
            (value, grad_norm) = (trial_value, trial_norm);
            b.copy(&w, &mut kept)?;
            stalled = 0;
        } else {
            stalled += 1;
            if !finite || stalled >= PATIENCE {
                b.copy(&kept, &mut w)?;
                eta *= 0.5;
                halvings += 1;
                stalled = 0;
            }
        }
    }
    // The epochs since the last accepted one may have left w above g(kept): return the point
    // that value and grad_norm describe.
    b.copy(&kept, &mut w)?;
    check_finite(value, grad_norm, Solver::Sgd)?;
    Ok(InnerSolution {
        w,
        value,
        grad_norm,
        iters: epochs,
        converged: grad_norm <= threshold,
    })
}

/// The first step when `--inner-lr` is not given (module docs).
fn default_step<P: InnerProblem>(problem: &P, w: &Buf<P>) -> Result<f64> {
    let bound = problem.smoothness_bound();
    if bound > 0.0 && bound.is_finite() {
        return Ok(1.0 / bound);
    }
    step_from_curvature(problem, w)
}

/// `1/(1.05 |λ|)`, `λ` the eigenvalue of largest magnitude of the curvature at `w`
/// ([`InnerProblem::step_curvature`]; 50 steps of power iteration): the SGD step of a problem
/// with no global curvature bound (a network), here and in NHGD's inner loop. At a point away
/// from a minimiser `H` may be indefinite and `λ` negative; its magnitude bounds the curvature
/// either way. A heuristic, where the linear models' `1/L` is a bound.
pub fn step_from_curvature<P: InnerProblem>(problem: &P, w: &Buf<P>) -> Result<f64> {
    let h = problem.step_curvature(w)?;
    let top = linear::largest_eigenvalue(
        problem.backend(),
        |v, out| problem.hvp(&h, v, out),
        problem.inner_dim(),
        50,
    )?
    .abs();
    if !(top > 0.0 && top.is_finite()) {
        return Err(Error::Numerical(format!(
            "the curvature {top} at w₀ gives no SGD step; give --inner-lr"
        )));
    }
    Ok(1.0 / (1.05 * top))
}
