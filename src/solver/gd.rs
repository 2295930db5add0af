//! First-order inner solvers: gradient descent and Nesterov's accelerated gradient, both with
//! a backtracking estimate `L` of the local Lipschitz constant (step `1/L`).

use super::{check_finite, linear, start, step_test, InnerSolution, Solver, StepTest};
use crate::backend::Backend;
use crate::error::Result;
use crate::problem::{Buf, InnerProblem};

/// Largest number of step doublings/halvings in one backtracking search.
const MAX_BACKTRACKS: usize = 60;

/// Gradient descent (`accelerated = false`) or FISTA-style accelerated gradient with function
/// restart (`accelerated = true`, O'Donoghue & Candès 2015), from `w`, until
/// `‖∇g‖ ≤ threshold`.
pub fn gradient_descent<P: InnerProblem>(
    problem: &P,
    mut w: Buf<P>,
    threshold: f64,
    max_iters: usize,
    accelerated: bool,
) -> Result<InnerSolution<P::B>> {
    let b = problem.backend();
    let solver = if accelerated { Solver::Agd } else { Solver::Gd };
    let precision = b.precision();
    let dim = problem.inner_dim();
    // y: the point the step is taken from (= w for plain GD).
    let mut y = linear::duplicate(b, &w)?;
    let (mut grad_y, mut value_y, mut grad_norm) = start(problem, &y, solver)?;
    let mut value_w = value_y;
    let mut grad_w = linear::duplicate(b, &grad_y)?;
    // The backtracking below finds the local L; a known bound only sets where it starts (1
    // where none is known, as for a network).
    let bound = problem.smoothness_bound();
    let mut lipschitz = if bound.is_finite() { bound / 16.0 } else { 1.0 };
    let mut grow_step = true;
    let mut momentum_t = 1.0_f64;
    let mut trial = b.zeros(dim)?;
    let mut grad_trial = b.zeros(dim)?;
    let mut iters = 0;
    while grad_norm > threshold && iters < max_iters {
        // Backtracking: the largest step 1/L with the sufficient decrease of a 1/L-smooth
        // function, g(y − ∇g(y)/L) ≤ g(y) − ‖∇g(y)‖²/(2L).
        if grow_step {
            lipschitz /= 2.0;
        }
        let grad_y_norm = b.nrm2(&grad_y)?;
        let mut value_trial = f64::INFINITY;
        let mut outcome = StepTest::Reject;
        for _ in 0..MAX_BACKTRACKS {
            b.copy(&y, &mut trial)?;
            b.axpy(-1.0 / lipschitz, &grad_y, &mut trial)?;
            value_trial = problem.inner_value_grad(&trial, Some(&mut grad_trial))?;
            let decrease = grad_y_norm * grad_y_norm / (2.0 * lipschitz);
            outcome = step_test(
                precision,
                value_y,
                value_trial,
                decrease,
                grad_y_norm,
                b.nrm2(&grad_trial)?,
            );
            if outcome != StepTest::Reject {
                break;
            }
            lipschitz *= 2.0;
        }
        if outcome == StepTest::Reject {
            break; // no step makes measurable progress: the precision floor
        }
        // At the precision floor the step stays as it is rather than growing into overshoot.
        grow_step = outcome == StepTest::Decrease;
        iters += 1;
        let restart = accelerated && value_trial > value_w;
        if !accelerated || restart {
            // Plain step (or momentum reset): y ← new point.
            momentum_t = 1.0;
            b.copy(&trial, &mut w)?;
            b.copy(&trial, &mut y)?;
            b.copy(&grad_trial, &mut grad_y)?;
            b.copy(&grad_trial, &mut grad_w)?;
            value_w = value_trial;
            value_y = value_trial;
        } else {
            // y ← x_new + ((t − 1)/t_next)(x_new − x_old).
            let t_next = 0.5 * (1.0 + (1.0 + 4.0 * momentum_t * momentum_t).sqrt());
            let beta = (momentum_t - 1.0) / t_next;
            momentum_t = t_next;
            b.copy(&trial, &mut y)?;
            b.axpy(beta, &trial, &mut y)?;
            b.axpy(-beta, &w, &mut y)?;
            b.copy(&trial, &mut w)?;
            b.copy(&grad_trial, &mut grad_w)?;
            value_w = value_trial;
            value_y = problem.inner_value_grad(&y, Some(&mut grad_y))?;
        }
        grad_norm = b.nrm2(&grad_w)?;
        check_finite(value_w, grad_norm, solver)?;
    }
    Ok(InnerSolution {
        w,
        value: value_w,
        grad_norm,
        iters,
        converged: grad_norm <= threshold,
    })
}
