//! `fixed-point`: Richardson iteration `q ← q − η(Hq − ∇_w f)` for K steps from `q₀`.
//!
//! Ehrhardt & Roberts show this is exactly the "inexact" reverse-mode AD of K inner gradient
//! steps `w ← w − η∇g(w, θ)` taken at the fixed point ŵ: the backward pass
//! `a ← (I − ηH)a`, `h ← h − ηBᵀa` accumulates `−Bᵀ η Σ_k (I − ηH)^k ∇f`, the K-step
//! iterate from `q₀ = 0`. So from zero, K steps equal [`super::neumann`] with K − 1 terms.

use super::implicit::LinearSolution;
use crate::backend::Backend;
use crate::error::Result;
use crate::problem::{Bilevel, Buf};
use crate::solver::linear::duplicate;

/// K Richardson steps from `q0` (zeros if `None`).
pub fn solve<P: Bilevel>(
    problem: &P,
    hessian: &P::Hessian,
    rhs: &Buf<P>,
    step: f64,
    steps: usize,
    q0: Option<&Buf<P>>,
) -> Result<LinearSolution<P::B>> {
    let b = problem.backend();
    let dim = problem.inner_dim();
    let mut q = match q0 {
        Some(q0) => duplicate(b, q0)?,
        None => b.zeros(dim)?,
    };
    let mut hq = b.zeros(dim)?;
    for _ in 0..steps {
        problem.hvp(hessian, &q, &mut hq)?;
        b.axpy(-1.0, rhs, &mut hq)?; // Hq − a
        b.axpy(-step, &hq, &mut q)?;
    }
    Ok(LinearSolution { q, iters: steps })
}
