//! Implicit differentiation, written once: given the inner solution `ŵ` and *some* solver of
//! `H(ŵ) q = ∇_w f(ŵ)`, return `h = −B(ŵ)ᵀ q̂` with its residual and error bound (SPEC §1, §4).
//! `exact`, `cg`, `neumann` and `fixed-point` differ only in the linear solver they pass in.
//! `cg`'s solve is refined in f32 ([`super::refine`]): its normwise stopping test can pass with
//! `q` wrong where `h` reads it. `neumann` and `fixed-point` are truncated on purpose (their
//! error is the method's, and the bound accounts for it), and `exact` factorises in f64.

use super::refine::{self, LinearSystem, Refinement};
use super::{bound, Hypergradient, Method};
use crate::backend::Backend;
use crate::error::Result;
use crate::problem::{Bilevel, Buf};
use crate::solver::InnerSolution;

/// What a linear solver returns: `q̂ ≈ H⁻¹a` and the iterations it took.
pub struct LinearSolution<B: Backend> {
    pub q: B::Buf,
    pub iters: usize,
}

/// The hypergradient at the inner solution `inner` with the linear system solved by `solve`,
/// which receives the problem, `H(ŵ)` and the right-hand side `a = ∇_w f(ŵ)`.
pub fn hypergradient<P, S>(
    problem: &P,
    method: Method,
    inner: &InnerSolution<P::B>,
    mut solve: S,
) -> Result<Hypergradient>
where
    P: Bilevel,
    S: FnMut(&P, &P::Hessian, &Buf<P>) -> Result<LinearSolution<P::B>>,
{
    let b = problem.backend();
    let dim = problem.inner_dim();
    let mut outer_grad = b.zeros(dim)?;
    let outer_loss = problem.outer_value_grad(&inner.w, Some(&mut outer_grad))?;
    let hessian = problem.hessian(&inner.w)?;
    let mut solution = solve(problem, &hessian, &outer_grad)?;
    let mut h: Vec<f64> = problem
        .cross_t(&inner.w, &solution.q)?
        .iter()
        .map(|v| -v)
        .collect();

    // R = ‖H q̂ − a‖, measured (never the solver's own recursive estimate), after refinement.
    let policy = match method {
        Method::Cg => Refinement::for_precision(b.precision()),
        _ => Refinement::for_precision(crate::backend::Precision::F64),
    };
    let (check, refinement_iters) = refine::refine(
        b,
        policy,
        &outer_grad,
        &mut solution.q,
        &mut h,
        &mut LinearSystem {
            apply: |v: &Buf<P>, out: &mut Buf<P>| problem.hvp(&hessian, v, out),
            solve: |r: &Buf<P>| solve(problem, &hessian, r).map(|s| (s.q, s.iters)),
            cross_t: |d: &Buf<P>| problem.cross_t(&inner.w, d),
        },
    )?;
    let residual = check.residual_norm;
    let q = &solution.q;

    let q_norm = b.nrm2(q)?;
    let error_bound = match problem.bound_constants(&inner.w)? {
        Some(constants) => {
            let precision = b.precision();
            let scale = problem.smoothness_bound();
            let residual_allowance =
                precision.rounding_allowance(dim, scale * q_norm + b.nrm2(&outer_grad)?);
            let grad_allowance = precision.rounding_allowance(dim, scale * b.nrm2(&inner.w)?);
            bound::implicit(
                &constants,
                inner.grad_norm + grad_allowance,
                residual + residual_allowance,
                q_norm,
            )
        }
        None => None,
    };
    Ok(Hypergradient {
        method,
        theta: problem.theta().to_vec(),
        outer_loss,
        hypergradient: h,
        inner_grad_norm: inner.grad_norm,
        residual_norm: Some(residual),
        refinement: check.report,
        error_bound,
        inner_iters: inner.iters,
        linear_iters: solution.iters + refinement_iters,
        inner_converged: inner.converged,
        seconds: 0.0,
        extra: (),
        w: b.download(&inner.w)?,
    })
}
