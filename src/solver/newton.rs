//! Newton-CG: `w ← w − t p` with `H(w) p = ∇g(w)` solved by conjugate gradient to a relative
//! accuracy that tightens as the gradient shrinks (an inexact Newton method with forcing term
//! `η_k = min(½, ‖∇g(w_k)‖ / ‖∇g(w_0)‖)`, superlinear near the optimum), and `t` chosen by
//! Armijo backtracking.
//!
//! Where `H(w)` is not positive definite (a network away from a minimum) CG stops at the first
//! direction of non-positive curvature and the step is the CG iterate reached so far, or the
//! gradient itself if that was the first direction: the line-search Newton-CG of Nocedal &
//! Wright (Algorithm 7.1). Every such `p` has `∇gᵀp > 0`, so `−p` descends; near a minimum
//! with `H ≻ 0` this is the inexact Newton method above. "Non-positive" includes curvature
//! below the rounding noise of a Hessian-vector product (`dᵀHd ≤ u · max Rayleigh quotient
//! seen · dᵀd`): a direction the Hessian does not measurably curve (a dead relu unit's bias)
//! would otherwise give a step of astronomical length. The convex problems, whose condition
//! numbers stay below `1/u`, never meet it.

use super::{backtrack, check_finite, linear, start, InnerSolution, Solver};
use crate::backend::Backend;
use crate::error::Result;
use crate::problem::{Buf, InnerProblem};

/// Newton-CG from `w` until `‖∇g‖ ≤ threshold`.
pub fn newton_cg<P: InnerProblem>(
    problem: &P,
    mut w: Buf<P>,
    threshold: f64,
    max_iters: usize,
) -> Result<InnerSolution<P::B>> {
    let b = problem.backend();
    let dim = problem.inner_dim();
    let (mut grad, mut value, mut grad_norm) = start(problem, &w, Solver::Newton)?;
    let first_norm = grad_norm.max(f64::MIN_POSITIVE);
    let mut step = b.zeros(dim)?;
    let mut trial = b.zeros(dim)?;
    let mut grad_trial = b.zeros(dim)?;
    let mut iters = 0;
    while grad_norm > threshold && iters < max_iters {
        let hessian = problem.hessian(&w)?;
        let forcing = (grad_norm / first_norm).min(0.5);
        b.fill(&mut step, 0.0)?;
        newton_direction(
            b,
            |v, out| problem.hvp(&hessian, v, out),
            &grad,
            &mut step,
            forcing,
            10 * dim + 100,
        )?;
        let slope = b.dot(&grad, &step)?; // > 0: −p is a descent direction
        let accepted = backtrack(
            problem,
            &w,
            &step,
            slope,
            (value, grad_norm),
            1.0,
            &mut trial,
            &mut grad_trial,
        )?;
        if let Some((_, value_trial)) = accepted {
            std::mem::swap(&mut w, &mut trial);
            std::mem::swap(&mut grad, &mut grad_trial);
            value = value_trial;
        }
        iters += 1;
        grad_norm = b.nrm2(&grad)?;
        check_finite(value, grad_norm, Solver::Newton)?;
        if accepted.is_none() {
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

/// CG on `H p = g` from `p = 0`, to `‖Hp − g‖ ≤ tol ‖g‖` or `max_iters`, stopped at the first
/// search direction `d` whose curvature is not measurably positive (`dᵀHd ≤ u ρ_max dᵀd`,
/// `ρ_max` the largest Rayleigh quotient of the directions so far): then `p` is the iterate
/// so far, or `g` itself when that happens on the first direction (Nocedal & Wright,
/// Algorithm 7.1).
fn newton_direction<B, F>(
    b: &B,
    mut apply: F,
    g: &B::Buf,
    p: &mut B::Buf,
    tol: f64,
    max_iters: usize,
) -> Result<()>
where
    B: Backend,
    F: FnMut(&B::Buf, &mut B::Buf) -> Result<()>,
{
    let mut r = linear::duplicate(b, g)?; // r = g − H·0
    let target = tol * b.nrm2(g)?;
    let mut rs = b.dot(&r, &r)?;
    let mut d = linear::duplicate(b, &r)?;
    let mut hd = b.zeros(b.len(g))?;
    let unit = b.precision().epsilon();
    let mut largest_rayleigh: f64 = 0.0;
    for iter in 0..max_iters {
        if rs.sqrt() <= target {
            break;
        }
        apply(&d, &mut hd)?;
        let curvature = b.dot(&d, &hd)?;
        let d_sq = b.dot(&d, &d)?;
        largest_rayleigh = largest_rayleigh.max(curvature / d_sq);
        if !(curvature > unit * largest_rayleigh * d_sq) {
            if iter == 0 {
                b.copy(g, p)?;
            }
            break;
        }
        let alpha = rs / curvature;
        b.axpy(alpha, &d, p)?;
        b.axpy(-alpha, &hd, &mut r)?;
        let rs_next = b.dot(&r, &r)?;
        b.axpby(1.0, &r, rs_next / rs, &mut d)?; // d = r + β d
        rs = rs_next;
    }
    Ok(())
}
