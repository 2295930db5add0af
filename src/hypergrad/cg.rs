//! `cg`: `H q = ∇_w f` by conjugate gradient with Hessian-vector products.

use super::implicit::LinearSolution;
use crate::backend::Backend;
use crate::error::Result;
use crate::problem::{Bilevel, Buf};
use crate::solver::linear::conjugate_gradient;

/// Solves `H q = a` by CG from `q₀ = 0` to `‖Hq − a‖ ≤ tol ‖a‖` or `max_iters`.
pub fn solve<P: Bilevel>(
    problem: &P,
    hessian: &P::Hessian,
    rhs: &Buf<P>,
    tol: f64,
    max_iters: usize,
) -> Result<LinearSolution<P::B>> {
    let b = problem.backend();
    let mut q = b.zeros(problem.inner_dim())?;
    let report = conjugate_gradient(
        b,
        |v, out| problem.hvp(hessian, v, out),
        rhs,
        &mut q,
        tol,
        max_iters,
    )?;
    Ok(LinearSolution {
        q,
        iters: report.iters,
    })
}
