//! L-BFGS (Nocedal & Wright, Algorithms 7.4 and 7.5): `w ← w − t p` with `p = H_k ∇g(w)`, `H_k`
//! the inverse-Hessian approximation built by the two-loop recursion from the last
//! [`MEMORY`] pairs `s = w_{k+1} − w_k`, `y = ∇g(w_{k+1}) − ∇g(w_k)`, scaled by
//! `γ = sᵀy / yᵀy`, and `t` chosen by Armijo backtracking from 1.
//!
//! One gradient a step and no Hessian-vector product: the tool for a large network trained to
//! a tight tolerance, where each Newton step's CG grows as the forcing term shrinks (for
//! mnist_5k with `mlp:300`, P = 238,510, Newton-CG to 1e-6 did not finish in 30 minutes).
//!
//! The inner problem of a network is not convex, and backtracking does not enforce the Wolfe
//! curvature condition, so a pair with `sᵀy ≤ ε ‖s‖ ‖y‖` is not stored (the damping-free
//! safeguard of Nocedal & Wright §7.2 and Li & Fukushima): every stored pair has `sᵀy > 0`,
//! `H_k` stays positive definite and `p` an ascent direction of `g`. When no step along `p`
//! decreases `g`, the memory is dropped and the steepest-descent step tried; when that fails
//! too, the precision of `g` is exhausted and the solver stops, reporting the gradient norm.

use std::collections::VecDeque;

use super::{backtrack, check_finite, start, InnerSolution, Solver};
use crate::backend::Backend;
use crate::error::Result;
use crate::problem::{Buf, InnerProblem};

/// Pairs kept: the usual 5–20 (Nocedal & Wright §7.2); 10 costs 20 vectors of P entries.
pub const MEMORY: usize = 10;
/// A pair is stored only if `sᵀy > CURVATURE_FLOOR · ‖s‖ ‖y‖`.
const CURVATURE_FLOOR: f64 = 1e-10;

/// One stored pair with `ρ = 1 / sᵀy` and `yᵀy` (known when the pair is stored: the scaling
/// `γ` of the next two-loop recursion needs it, and a device would read it back again).
struct Pair<B: Backend> {
    s: B::Buf,
    y: B::Buf,
    rho: f64,
    yy: f64,
}

/// L-BFGS from `w` until `‖∇g‖ ≤ threshold`.
pub fn lbfgs<P: InnerProblem>(
    problem: &P,
    mut w: Buf<P>,
    threshold: f64,
    max_iters: usize,
) -> Result<InnerSolution<P::B>> {
    let b = problem.backend();
    let dim = problem.inner_dim();
    let (mut grad, mut value, mut grad_norm) = start(problem, &w, Solver::Lbfgs)?;
    let mut memory: VecDeque<Pair<P::B>> = VecDeque::with_capacity(MEMORY);
    let mut direction = b.zeros(dim)?;
    let mut trial = b.zeros(dim)?;
    let mut grad_trial = b.zeros(dim)?;
    let mut iters = 0;
    while grad_norm > threshold && iters < max_iters {
        let mut step = None;
        // The quasi-Newton direction, then (memory dropped) steepest descent.
        for _attempt in 0..2 {
            let first_step = if memory.is_empty() {
                // No curvature known: a first step of length 1 along −∇g (N&W §7.2 scale the
                // first direction the same way).
                1.0 / grad_norm.max(f64::MIN_POSITIVE)
            } else {
                1.0
            };
            two_loop(b, &memory, &grad, &mut direction)?;
            let slope = b.dot(&grad, &direction)?;
            if !(slope > 0.0) {
                // Not an ascent direction of g (cannot happen with sᵀy > 0, but rounding).
                memory.clear();
                continue;
            }
            step = backtrack(
                problem,
                &w,
                &direction,
                slope,
                (value, grad_norm),
                first_step,
                &mut trial,
                &mut grad_trial,
            )?;
            if step.is_some() || memory.is_empty() {
                break;
            }
            memory.clear();
        }
        iters += 1;
        let Some((t, value_trial)) = step else {
            // Not even steepest descent decreases g measurably: its precision is exhausted.
            break;
        };
        // s = w_new − w = −t p and y = ∇g(w_new) − ∇g(w), formed in the buffers they reuse.
        // The oldest pair's buffers once the memory is full, fresh ones before.
        let recycled = if memory.len() == MEMORY {
            memory.pop_front()
        } else {
            None
        };
        let (mut s, mut y) = match recycled {
            Some(oldest) => (oldest.s, oldest.y),
            None => (b.zeros(dim)?, b.zeros(dim)?),
        };
        b.copy(&direction, &mut s)?;
        b.scal(-t, &mut s)?;
        b.copy(&grad_trial, &mut y)?;
        b.axpy(-1.0, &grad, &mut y)?;
        std::mem::swap(&mut w, &mut trial);
        std::mem::swap(&mut grad, &mut grad_trial);
        value = value_trial;
        grad_norm = b.nrm2(&grad)?;
        check_finite(value, grad_norm, Solver::Lbfgs)?;
        let sy = b.dot(&s, &y)?;
        let y_norm = b.nrm2(&y)?;
        if sy > CURVATURE_FLOOR * b.nrm2(&s)? * y_norm {
            memory.push_back(Pair {
                s,
                y,
                rho: 1.0 / sy,
                yy: y_norm * y_norm,
            });
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

/// `p = H_k g` by the two-loop recursion (Nocedal & Wright, Algorithm 7.4), `H_k⁰ = γ I` with
/// `γ = sᵀy / yᵀy` of the newest pair (`I` with no pair).
fn two_loop<B: Backend>(
    b: &B,
    memory: &VecDeque<Pair<B>>,
    g: &B::Buf,
    p: &mut B::Buf,
) -> Result<()> {
    b.copy(g, p)?;
    let mut alphas = Vec::with_capacity(memory.len());
    for pair in memory.iter().rev() {
        let alpha = pair.rho * b.dot(&pair.s, p)?;
        b.axpy(-alpha, &pair.y, p)?;
        alphas.push(alpha);
    }
    if let Some(newest) = memory.back() {
        let gamma = 1.0 / (newest.rho * newest.yy);
        b.scal(gamma, p)?;
    }
    for (pair, alpha) in memory.iter().zip(alphas.into_iter().rev()) {
        let beta = pair.rho * b.dot(&pair.y, p)?;
        b.axpy(alpha - beta, &pair.s, p)?;
    }
    Ok(())
}
