//! `neumann`: `q = η Σ_{k=0}^{K} (I − ηH)^k ∇_w f`, the truncated Neumann series of
//! `H⁻¹ = η Σ_k (I − ηH)^k` (convergent for `0 < η < 2/λ_max(H)`).

use super::implicit::LinearSolution;
use crate::backend::Backend;
use crate::error::Result;
use crate::problem::{Bilevel, Buf};
use crate::solver::linear::duplicate;

/// The K-term Neumann approximation of `H⁻¹ a` (K Hessian-vector products).
pub fn solve<P: Bilevel>(
    problem: &P,
    hessian: &P::Hessian,
    rhs: &Buf<P>,
    step: f64,
    terms: usize,
) -> Result<LinearSolution<P::B>> {
    let b = problem.backend();
    let dim = problem.inner_dim();
    let mut power = duplicate(b, rhs)?; // v_k = (I − ηH)^k a
    let mut q = duplicate(b, rhs)?;
    b.scal(step, &mut q)?; // η v_0
    let mut hv = b.zeros(dim)?;
    for _ in 0..terms {
        problem.hvp(hessian, &power, &mut hv)?;
        b.axpy(-step, &hv, &mut power)?;
        b.axpy(step, &power, &mut q)?;
    }
    Ok(LinearSolution { q, iters: terms })
}
