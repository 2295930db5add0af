//! `forward`: forward-mode differentiation of the same T gradient steps as [`super::unroll`],
//! carrying the Jacobian `J_k = ∂w_k/∂θ` (P×p, stored as p vectors of length P):
//! `J_0 = 0`, `J_{k+1} = (I − ηH(w_k)) J_k − η B(w_k)`, and `h = J_Tᵀ ∇f(w_T)`.
//! Costs p Hessian-vector products per step (one batched product), against one for reverse
//! mode, but needs no stored trajectory and yields `J_T`, from which an a posteriori bound
//! follows ([`super::bound::forward`]).

use super::{bound, Hypergradient, Method, Options};
use crate::backend::Backend;
use crate::error::Result;
use crate::problem::{Bilevel, Buf};
use crate::solver::linear::duplicate;

/// `forward` from `start` with step `eta` for `opts.unroll_steps` steps, with the bound of
/// [`bound::forward`]; `threshold` is the inner tolerance it is judged against.
pub fn hypergradient<P: Bilevel>(
    problem: &P,
    start: &Buf<P>,
    eta: f64,
    opts: &Options,
    threshold: f64,
) -> Result<Hypergradient> {
    let b = problem.backend();
    let fwd = run(problem, start, eta, opts.unroll_steps)?;
    let mut grad = b.zeros(problem.inner_dim())?;
    problem.inner_value_grad(&fwd.w, Some(&mut grad))?;
    let grad_norm = b.nrm2(&grad)?;
    let j_norm = b.nrm2(&fwd.jacobian)?;
    let error_bound = match problem.bound_constants(&fwd.w)? {
        Some(constants) => {
            // Inflate the measured residuals by their rounding error.
            let precision = b.precision();
            let scale = problem.smoothness_bound();
            let rho = jacobian_residual(problem, &fwd.w, &fwd.jacobian)?
                + precision
                    .rounding_allowance(b.len(&fwd.jacobian), scale * j_norm + constants.b_norm);
            let grad_norm_bounded = grad_norm
                + precision.rounding_allowance(problem.inner_dim(), scale * b.nrm2(&fwd.w)?);
            bound::forward(
                &constants,
                grad_norm_bounded,
                rho,
                j_norm,
                b.nrm2(&fwd.outer_grad)?,
            )
        }
        None => None,
    };
    Ok(Hypergradient {
        method: Method::Forward,
        theta: problem.theta().to_vec(),
        outer_loss: fwd.outer_loss,
        hypergradient: fwd.hypergradient,
        inner_grad_norm: grad_norm,
        residual_norm: None,
        refinement: Default::default(),
        error_bound,
        inner_iters: opts.unroll_steps,
        linear_iters: opts.unroll_steps,
        inner_converged: grad_norm <= threshold,
        seconds: 0.0,
        extra: (),
        w: b.download(&fwd.w)?,
    })
}

/// Result of the forward recursion.
pub struct ForwardResult<B: Backend> {
    pub hypergradient: Vec<f64>,
    pub outer_loss: f64,
    pub w: B::Buf,
    /// The Jacobian `J_T`, p vectors of length P.
    pub jacobian: B::Buf,
    /// `∇f(w_T)`.
    pub outer_grad: B::Buf,
}

/// T steps of size `step` from `w0`, propagating the Jacobian alongside.
pub fn run<P: Bilevel>(
    problem: &P,
    w0: &Buf<P>,
    step: f64,
    steps: usize,
) -> Result<ForwardResult<P::B>> {
    let b = problem.backend();
    let dim = problem.inner_dim();
    let p = problem.hyper_dim();
    let mut w = duplicate(b, w0)?;
    let mut grad = b.zeros(dim)?;
    let mut jacobian = b.zeros(p * dim)?;
    let mut hj = b.zeros(p * dim)?;
    for _ in 0..steps {
        let hessian = problem.hessian(&w)?;
        problem.hvp(&hessian, &jacobian, &mut hj)?;
        b.axpy(-step, &hj, &mut jacobian)?;
        problem.cross_add(&w, -step, &mut jacobian)?;
        problem.inner_value_grad(&w, Some(&mut grad))?;
        b.axpy(-step, &grad, &mut w)?;
    }
    let mut outer_grad = b.zeros(dim)?;
    let outer_loss = problem.outer_value_grad(&w, Some(&mut outer_grad))?;
    let hypergradient = b.batched_dot(&jacobian, &outer_grad)?;
    Ok(ForwardResult {
        hypergradient,
        outer_loss,
        w,
        jacobian,
        outer_grad,
    })
}

/// `‖H(w)J + B(w)‖_F`, the residual of the Jacobian's defining equation at `w`.
pub fn jacobian_residual<P: Bilevel>(problem: &P, w: &Buf<P>, jacobian: &Buf<P>) -> Result<f64> {
    let b = problem.backend();
    let mut r = b.zeros(b.len(jacobian))?;
    let hessian = problem.hessian(w)?;
    problem.hvp(&hessian, jacobian, &mut r)?;
    problem.cross_add(w, 1.0, &mut r)?;
    b.nrm2(&r)
}
