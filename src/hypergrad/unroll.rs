//! `unroll`: the exact reverse-mode derivative of `θ ↦ f(w_T(θ))` through T gradient steps
//! `w_{k+1} = w_k − η∇_w g(w_k, θ)` from a given `w₀`, optionally truncated to the last K.
//!
//! Backward pass (adjoint `a_k = ∂f(w_T)/∂w_k`): `a_T = ∇f(w_T)`, and for k = T−1, …:
//! `h ← h − η B(w_k)ᵀ a_{k+1}`, `a_k = (I − ηH(w_k)) a_{k+1}`.

use super::{cg, implicit, Hypergradient, Method, Options};
use crate::backend::Backend;
use crate::error::Result;
use crate::problem::{Bilevel, Buf, InnerProblem};
use crate::solver::linear::duplicate;
use crate::solver::InnerSolution;

/// `unroll` from `start` with step `eta`: T = `opts.unroll_steps` steps, differentiated through
/// the last `opts.truncate` of them; `threshold` is the inner tolerance it is judged against.
pub fn hypergradient<P: Bilevel>(
    problem: &P,
    start: &Buf<P>,
    eta: f64,
    opts: &Options,
    threshold: f64,
) -> Result<Hypergradient> {
    let b = problem.backend();
    let steps = opts.unroll_steps;
    let path = trajectory(problem, start, eta, steps)?;
    let (h, outer_loss) = backward(problem, &path, eta, opts.truncate)?;
    let last = &path.points[steps];
    let error_bound = certify_by_reference(problem, last, path.final_grad_norm, &h)?;
    Ok(Hypergradient {
        method: Method::Unroll,
        theta: problem.theta().to_vec(),
        outer_loss,
        hypergradient: h,
        inner_grad_norm: path.final_grad_norm,
        residual_norm: None,
        refinement: Default::default(),
        error_bound,
        inner_iters: steps,
        linear_iters: opts.truncate.unwrap_or(steps).min(steps),
        inner_converged: path.final_grad_norm <= threshold,
        seconds: 0.0,
        extra: (),
        w: b.download(last)?,
    })
}

/// The iterates `w_0, …, w_T` of fixed-step gradient descent, and `‖∇g(w_T)‖`.
pub struct Trajectory<B: Backend> {
    pub points: Vec<B::Buf>,
    pub final_grad_norm: f64,
}

/// Runs `steps` gradient steps of size `step` from `w0`, keeping every iterate.
pub fn trajectory<P: InnerProblem>(
    problem: &P,
    w0: &Buf<P>,
    step: f64,
    steps: usize,
) -> Result<Trajectory<P::B>> {
    let b = problem.backend();
    let mut grad = b.zeros(problem.inner_dim())?;
    let mut points = Vec::with_capacity(steps + 1);
    points.push(duplicate(b, w0)?);
    for k in 0..steps {
        problem.inner_value_grad(&points[k], Some(&mut grad))?;
        let mut next = duplicate(b, &points[k])?;
        b.axpy(-step, &grad, &mut next)?;
        points.push(next);
    }
    problem.inner_value_grad(&points[steps], Some(&mut grad))?;
    Ok(Trajectory {
        points,
        final_grad_norm: b.nrm2(&grad)?,
    })
}

/// Reverse-mode derivative through the trajectory's last `truncate` steps (all if `None`).
/// Returns `(h, f(w_T))`.
pub fn backward<P: Bilevel>(
    problem: &P,
    trajectory: &Trajectory<P::B>,
    step: f64,
    truncate: Option<usize>,
) -> Result<(Vec<f64>, f64)> {
    let b = problem.backend();
    let steps = trajectory.points.len() - 1;
    let first = steps - truncate.unwrap_or(steps).min(steps);
    let mut adjoint = b.zeros(problem.inner_dim())?;
    let outer_loss = problem.outer_value_grad(&trajectory.points[steps], Some(&mut adjoint))?;
    let mut h = vec![0.0; problem.hyper_dim()];
    let mut ha = b.zeros(problem.inner_dim())?;
    for k in (first..steps).rev() {
        let w_k = &trajectory.points[k];
        for (hi, bi) in h.iter_mut().zip(problem.cross_t(w_k, &adjoint)?) {
            *hi -= step * bi;
        }
        if k > first {
            let hessian = problem.hessian(w_k)?;
            problem.hvp(&hessian, &adjoint, &mut ha)?;
            b.axpy(-step, &ha, &mut adjoint)?;
        }
    }
    Ok((h, outer_loss))
}

/// An a posteriori bound for an estimate `h` that has no `q̂` of its own (reverse mode through
/// a trajectory): by the triangle inequality `‖h − ∇F‖ ≤ ‖h − h_ref‖ + bound(h_ref)`, with
/// `h_ref` the CG hypergradient at the same inner point `w` and its own bound. It costs one
/// linear solve, skipped where the problem knows no bound constants (a network, whose
/// Hessian at the end of a trajectory need not even be positive definite).
fn certify_by_reference<P: Bilevel>(
    problem: &P,
    w: &Buf<P>,
    grad_norm: f64,
    h: &[f64],
) -> Result<Option<f64>> {
    if problem.bound_constants(w)?.is_none() {
        return Ok(None);
    }
    let b = problem.backend();
    let at_w = InnerSolution::<P::B> {
        w: duplicate(b, w)?,
        value: f64::NAN,
        grad_norm,
        iters: 0,
        converged: false,
    };
    let tol = Options::new(Method::Cg, b.precision()).linear_tol;
    let reference = implicit::hypergradient(problem, Method::Cg, &at_w, |p, hess, a| {
        cg::solve(p, hess, a, tol, 10_000)
    })?;
    let gap: f64 = h
        .iter()
        .zip(&reference.hypergradient)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    Ok(reference.error_bound.map(|e| gap + e))
}
