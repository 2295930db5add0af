//! Newton-CG: `w ← w − t p` with `H(w) p = ∇g(w)` solved by conjugate gradient to a relative
//! accuracy that tightens as the gradient shrinks (an inexact Newton method with forcing term
//! `η_k = min(½, ‖∇g(w_k)‖ / ‖∇g(w_0)‖)`, superlinear near the optimum), and `t` chosen by
//! Armijo backtracking.

use super::{check_finite, linear, step_test, InnerSolution, Solver, StepTest};
use crate::backend::Backend;
use crate::error::Result;
use crate::problem::{Buf, InnerProblem};

const ARMIJO: f64 = 1e-4;
const MAX_HALVINGS: usize = 40;

/// Newton-CG from `w` until `‖∇g‖ ≤ threshold`.
pub fn newton_cg<P: InnerProblem>(
    problem: &P,
    mut w: Buf<P>,
    threshold: f64,
    max_iters: usize,
) -> Result<InnerSolution<P::B>> {
    let b = problem.backend();
    let dim = problem.inner_dim();
    let mut grad = b.zeros(dim)?;
    let mut value = problem.inner_value_grad(&w, Some(&mut grad))?;
    let mut grad_norm = b.nrm2(&grad)?;
    check_finite(value, grad_norm, Solver::Newton)?;
    let first_norm = grad_norm.max(f64::MIN_POSITIVE);
    let mut step = b.zeros(dim)?;
    let mut trial = b.zeros(dim)?;
    let mut grad_trial = b.zeros(dim)?;
    let mut iters = 0;
    while grad_norm > threshold && iters < max_iters {
        let hessian = problem.hessian(&w)?;
        let forcing = (grad_norm / first_norm).min(0.5);
        b.fill(&mut step, 0.0)?;
        linear::conjugate_gradient(
            b,
            |v, out| problem.hvp(&hessian, v, out),
            &grad,
            &mut step,
            forcing,
            10 * dim + 100,
        )?;
        let slope = b.dot(&grad, &step)?; // > 0: −p is a descent direction
        let mut t = 1.0;
        let mut accepted = false;
        for _ in 0..MAX_HALVINGS {
            b.copy(&w, &mut trial)?;
            b.axpy(-t, &step, &mut trial)?;
            let value_trial = problem.inner_value_grad(&trial, Some(&mut grad_trial))?;
            let test = step_test(
                b.precision(),
                value,
                value_trial,
                ARMIJO * t * slope,
                grad_norm,
                b.nrm2(&grad_trial)?,
            );
            if test != StepTest::Reject {
                std::mem::swap(&mut w, &mut trial);
                std::mem::swap(&mut grad, &mut grad_trial);
                value = value_trial;
                accepted = true;
                break;
            }
            t *= 0.5;
        }
        iters += 1;
        grad_norm = b.nrm2(&grad)?;
        check_finite(value, grad_norm, Solver::Newton)?;
        if !accepted {
            // No decrease is measurable any more: the precision of g is exhausted.
            break;
        }
    }
    Ok(InnerSolution {
        w,
        value,
        grad_norm,
        iters,
        converged: grad_norm <= threshold,
    })
}
