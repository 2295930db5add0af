//! The mini-batch inner solvers, mini-batch SGD (`--inner-solver sgd`) and Adam
//! (`--inner-solver adam`): what a network is usually trained with, here for the deterministic
//! methods too, with the stopping rule of every solver here.
//!
//! Each epoch draws a seeded permutation of the `n` training rows and takes `⌈n/b⌉` steps on
//! mini-batches of `b` rows, each from the unbiased estimate `ĝ_B(w)` of `∇g(w)` on its rows:
//!
//! * **SGD**: `w ← w − η ĝ_B(w)` ([`InnerProblem::sgd_step`], NHGD's inner step);
//! * **Adam** (Kingma & Ba 2015, `β₁ = 0.9`, `β₂ = 0.999`, `ε = 1e-8`): the moments
//!   `m ← β₁m + (1−β₁)ĝ`, `v ← β₂v + (1−β₂)ĝ²` and `w ← w − η m̂/(√v̂ + ε)` with the bias
//!   corrections `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)` ([`InnerProblem::batch_gradient`], then
//!   [`Backend::adam_update`]). Each coordinate moves by about `η` whatever the gradient's
//!   scale, which is what makes it the usual choice for networks whose layers differ in scale.
//!
//! The short last batch of `r < b` rows steps by `η r/b`, so that every row weighs `η/b` in
//! every epoch; for SGD, `w` held still, an epoch's steps then add up to exactly
//! `η (n/b) ∇g(w)`: as `η` shrinks an epoch becomes a gradient step, whatever the
//! permutation. After each epoch the full `g` and `‖∇g‖` are measured, and:
//!
//! * the solve stops when `‖∇g(w)‖ ≤ tol · ‖∇g(w₀)‖`, checked once an epoch, or after
//!   `max_iters` epochs (`--inner-iters` counts epochs here), and reports the gradient norm
//!   it ended at, as every solver does;
//! * when [`PATIENCE`] epochs in a row end above the lowest `g` so far, the iterate returns to
//!   that lowest point and the batch doubles (up to all `n` rows); once the batch is whole, `η`
//!   is halved instead. Near `ŵ` the mini-batch noise, not the gradient, sets the steps: a
//!   constant step leaves SGD in a noise ball of radius proportional to `η`, and Adam's
//!   steps, `η·m̂/√v̂` with `v̂` measuring that noise, do not shrink with the gradient at all.
//!   A larger batch removes the noise as a smaller step would without slowing the descent
//!   (Smith et al., ICLR 2018, "Don't decay the learning rate, increase the batch size"),
//!   and full-batch SGD and Adam converge, with `η` halved when even they stall. Measured on
//!   the network of `tests/mlp_cli.rs` (`mlp:4`, b = 32, 2026-11-28): with halving alone, SGD
//!   took 8,456 epochs to 1e-3 and did not reach 1e-4 in 20,000 (at `5fef3fd`); with the
//!   batch doubled first, 513 and 1,579 epochs; Adam, with halving alone (a development build,
//!   not kept), stalled at 2·10⁻³ to 4·10⁻³ relative on tests/inner_solvers.rs's problems,
//!   its halvings exhausted;
//! * an epoch that ends with a non-finite `g` (a diverging step) returns to the lowest point
//!   and halves `η` at once, whatever the batch. Once `η` has been halved [`MAX_HALVINGS`]
//!   times the solve stops: no step makes progress in this precision;
//! * Adam restarts from zero moments. (Keeping `v` and the step count across a restart took
//!   3–6× more epochs on the tests' problems in a development build, not kept: a `v`
//!   averaged over the smaller, noisier batches keeps the steps small for about `1/(1−β₂)`
//!   steps after the batch has grown.)
//!
//! Both converge at the rate of first-order methods on `g`'s conditioning, so they are for
//! moderate tolerances (1e-3 to 1e-5 relative); `newton` and `lbfgs` are for tight ones.
//!
//! The first `η` is `--inner-lr`; else, for SGD, `1/L` with `L` the problem's smoothness bound
//! (the linear models), or `1/(1.05 |λ|)` with `λ` the eigenvalue of largest magnitude of
//! `H(w₀)` by power iteration (a network, as NHGD's default step); for Adam,
//! [`ADAM_DEFAULT_LR`].

use super::{check_finite, linear, start, InnerSolution, Solver};
use crate::backend::{AdamCoefficients, Backend};
use crate::data::rng::Rng;
use crate::error::{Error, Result};
use crate::problem::{not_made_of_rows, Buf, InnerProblem};

/// Most halvings of the step before the solve stops for want of progress (batch doublings
/// not counted: there are at most log₂ n of them).
pub const MAX_HALVINGS: usize = 40;
/// Epochs in a row that may end above the best `g` before the batch grows (or, the batch
/// whole, the step is halved).
pub const PATIENCE: usize = 3;
/// Adam's first step when `--inner-lr` is not given (Kingma & Ba's default).
pub const ADAM_DEFAULT_LR: f64 = 1e-3;
/// Adam's `(β₁, β₂, ε)` (Kingma & Ba's defaults, as the outer loop's Adam).
pub const ADAM_MOMENTS: (f64, f64, f64) = (0.9, 0.999, 1e-8);

/// The mini-batch settings of [`sgd`] and [`adam`] (`--batch-size`, `--inner-lr`, `--seed`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MiniBatch {
    /// Rows per step at the start (all rows if larger than `n`); a stall doubles it (module
    /// docs).
    pub batch: usize,
    /// The first step `η`; `None`: the rule's default (module docs).
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
    w: Buf<P>,
    threshold: f64,
    max_epochs: usize,
    opts: &MiniBatch,
) -> Result<InnerSolution<P::B>> {
    epochs(problem, w, (threshold, max_epochs), opts, Rule::Sgd)
}

/// Adam from `w` until `‖∇g‖ ≤ threshold` or `max_epochs` epochs.
pub fn adam<P: InnerProblem>(
    problem: &P,
    w: Buf<P>,
    threshold: f64,
    max_epochs: usize,
    opts: &MiniBatch,
) -> Result<InnerSolution<P::B>> {
    let b = problem.backend();
    let n = problem.inner_dim();
    let rule = Rule::Adam {
        grad: b.zeros(n)?,
        m: b.zeros(n)?,
        v: b.zeros(n)?,
        t: 0,
    };
    epochs(problem, w, (threshold, max_epochs), opts, rule)
}

/// How a mini-batch moves the iterate.
enum Rule<P: InnerProblem> {
    /// `w ← w − η ĝ`.
    Sgd,
    /// Adam: the batch gradient's buffer, the moments and the steps taken since they were
    /// last zero.
    Adam {
        grad: Buf<P>,
        m: Buf<P>,
        v: Buf<P>,
        t: u64,
    },
}

impl<P: InnerProblem> Rule<P> {
    fn solver(&self) -> Solver {
        match self {
            Rule::Sgd => Solver::Sgd,
            Rule::Adam { .. } => Solver::Adam,
        }
    }

    /// One step of rate `eta` on the mini-batch `rows`.
    fn step(
        &mut self,
        problem: &P,
        w: &mut Buf<P>,
        rows: &<P::B as Backend>::Rows,
        eta: f64,
    ) -> Result<()> {
        match self {
            Rule::Sgd => problem.sgd_step(w, rows, eta),
            Rule::Adam { grad, m, v, t } => {
                problem.batch_gradient(w, rows, grad)?;
                *t += 1;
                let k = AdamCoefficients::at(eta, ADAM_MOMENTS, *t);
                problem.backend().adam_update(k, grad, (m, v), w)
            }
        }
    }

    /// Forgets the path: the iterate has gone back to an earlier point (module docs).
    fn restart(&mut self, b: &P::B) -> Result<()> {
        if let Rule::Adam { m, v, t, .. } = self {
            b.fill(m, 0.0)?;
            b.fill(v, 0.0)?;
            *t = 0;
        }
        Ok(())
    }

    /// The first step when `--inner-lr` is not given (module docs).
    fn default_step(&self, problem: &P, w: &Buf<P>) -> Result<f64> {
        match self {
            Rule::Sgd => sgd_default_step(problem, w),
            Rule::Adam { .. } => Ok(ADAM_DEFAULT_LR),
        }
    }
}

/// The epochs of [`sgd`] and [`adam`] (module docs).
fn epochs<P: InnerProblem>(
    problem: &P,
    mut w: Buf<P>,
    (threshold, max_epochs): (f64, usize),
    opts: &MiniBatch,
    mut rule: Rule<P>,
) -> Result<InnerSolution<P::B>> {
    let b = problem.backend();
    let n = problem.train_rows();
    if n == 0 {
        return Err(not_made_of_rows());
    }
    if opts.batch == 0 {
        return Err(Error::option("--batch-size", "must be at least 1"));
    }
    let mut batch = opts.batch.min(n);
    let solver = rule.solver();
    let (mut grad, mut value, mut grad_norm) = start(problem, &w, solver)?;
    let mut eta = match opts.step {
        Some(step) if step > 0.0 && step.is_finite() => step,
        Some(step) => {
            return Err(Error::option(
                "--inner-lr",
                format!("must be > 0, got {step}"),
            ))
        }
        None => rule.default_step(problem, &w)?,
    };
    // The last point an epoch ended at with a lower g: where an epoch that fails restarts.
    let mut kept = linear::duplicate(b, &w)?;
    let mut rng = Rng::new(opts.seed);
    let (mut epochs, mut halvings, mut stalled) = (0, 0, 0);
    while grad_norm > threshold && epochs < max_epochs && halvings <= MAX_HALVINGS {
        let order: Vec<u32> = rng.permutation(n).into_iter().map(|r| r as u32).collect();
        for rows in &b.upload_batches(&order, batch, n)? {
            // The short last batch steps by η·|B|/b, so that each row weighs η/b in every
            // epoch and, for SGD with w held still, an epoch's steps add up to η (n/b) ∇g(w).
            rule.step(
                problem,
                &mut w,
                rows,
                eta * b.rows_len(rows) as f64 / batch as f64,
            )?;
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
                rule.restart(b)?;
                if finite && batch < n {
                    batch = (2 * batch).min(n);
                } else {
                    eta *= 0.5;
                    halvings += 1;
                }
                stalled = 0;
            }
        }
    }
    // The epochs since the last accepted one may have left w above g(kept): return the point
    // that value and grad_norm describe.
    b.copy(&kept, &mut w)?;
    check_finite(value, grad_norm, solver)?;
    Ok(InnerSolution {
        w,
        value,
        grad_norm,
        iters: epochs,
        converged: grad_norm <= threshold,
    })
}

/// SGD's first step when `--inner-lr` is not given (module docs).
fn sgd_default_step<P: InnerProblem>(problem: &P, w: &Buf<P>) -> Result<f64> {
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
