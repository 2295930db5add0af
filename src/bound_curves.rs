//! The error-bound curves of Ehrhardt & Roberts' quadratic problem (`hypergrad bench
//! bounds`): for CG with k = 0, 1, …, K iterations, the true error `‖h_k − ∇F‖`, the
//! a posteriori bound of SPEC §4 that every hypergradient reports, and Ehrhardt & Roberts'
//! a priori bound ([`bound::a_priori_cg`]).
//!
//! `h_k` is what `hypergrad grad --problem quadratic --method cg --linear-iters k
//! --linear-tol 0` returns: the library's inner solve, then k CG iterations from q₀ = 0. The
//! true `∇F` is the closed form ([`QuadraticBilevel::closed_form`], least squares by QR),
//! independent of every method. Below about 1e-12 the "true error" is the rounding
//! difference between two f64 computations of ∇F, not an error of either.

use serde::Serialize;

use crate::backend::Precision;
use crate::error::{Error, Result};
use crate::hypergrad::bound::{self, APriori};
use crate::hypergrad::{self, Method, Options};
use crate::problem::quadratic::QuadraticConstants;
use crate::problem::QuadraticBilevel;
use crate::solver::{self, InnerOptions};

/// One row of the curves: CG stopped after `iterations`.
#[derive(Clone, Debug, Serialize)]
pub struct CurvePoint {
    /// k, the CG iterations asked for.
    pub iterations: usize,
    /// The iterations CG did (fewer once its residual reaches the rounding floor `u‖∇f‖`).
    pub cg_iterations: usize,
    /// `R = ‖H q_k − ∇f(x̂)‖`, measured.
    pub residual_norm: f64,
    /// `‖h_k − ∇F‖` against the closed form.
    pub true_error: f64,
    /// SPEC §4's bound as `grad` reports it (with its floating-point allowances).
    pub a_posteriori: f64,
    /// The same formula on the raw R and ‖∇g‖, as Ehrhardt & Roberts' code evaluates it
    /// (`‖B‖R/μ + ‖B‖ L_f ‖∇g‖/μ²` here, L_H = L_B = 0): what their reported point measures.
    pub a_posteriori_raw: f64,
    /// Ehrhardt & Roberts' a priori bound after k iterations.
    pub a_priori: f64,
}

/// The curves with what they were computed at.
#[derive(Clone, Debug, Serialize)]
pub struct Curves {
    pub spec: String,
    pub constants: QuadraticConstants,
    /// `κ = L/μ` of H.
    pub condition_number: f64,
    /// `‖∇F(w)‖` (closed form).
    pub hypergradient_norm: f64,
    /// `‖∇g(x̂)‖` and `ε = ‖x̂ − x*‖` of the inner solve every point shares.
    pub inner_grad_norm: f64,
    pub inner_error: f64,
    pub inner_iters: usize,
    pub points: Vec<CurvePoint>,
}

/// The curves for k = 0, …, `max_iters` at the problem's current w, the inner problem solved
/// with `inner` (the same solve for every k).
pub fn cg_curves(
    problem: &QuadraticBilevel,
    inner: InnerOptions,
    max_iters: usize,
) -> Result<Curves> {
    let reference = problem.closed_form();
    let constants = problem.constants();
    let x_hat = solver::solve(problem, None, &inner)?;
    let inner_error = distance(&x_hat.w, &reference.x);
    let a_priori = APriori {
        mu: constants.mu,
        l: constants.l_g,
        l_f: constants.l_f,
        l_b: 0.0,
        b_norm: constants.b_norm,
        outer_grad_norm: norm(&reference.outer_grad),
        eps: inner_error,
    };
    // Every h_k starts from x̂ and takes no inner step: all points share one inner solution,
    // so the curves show the linear solve alone.
    let mut opts = Options::new(Method::Cg, Precision::F64);
    opts.inner = InnerOptions {
        max_iters: 0,
        ..inner
    };
    opts.linear_tol = 0.0;
    let mut points = Vec::with_capacity(max_iters + 1);
    for k in 0..=max_iters {
        opts.linear_iters = Some(k);
        let h = hypergrad::compute(problem, &opts, Some(&x_hat.w))?;
        let residual = h.residual_norm.unwrap_or(f64::NAN);
        let a_posteriori = h.error_bound.ok_or_else(|| {
            Error::Numerical(format!("no a posteriori bound at k = {k} (μ ≤ L_H ε)"))
        })?;
        let mu = constants.mu;
        points.push(CurvePoint {
            iterations: k,
            cg_iterations: h.linear_iters,
            residual_norm: residual,
            true_error: distance(&h.hypergradient, &reference.hypergradient),
            a_posteriori,
            a_posteriori_raw: constants.b_norm
                * (residual + constants.l_f * h.inner_grad_norm / mu)
                / mu,
            a_priori: bound::a_priori_cg(&a_priori, k),
        });
    }
    Ok(Curves {
        spec: problem.data().spec.name(),
        constants,
        condition_number: constants.l_g / constants.mu,
        hypergradient_norm: norm(&reference.hypergradient),
        inner_grad_norm: x_hat.grad_norm,
        inner_error,
        inner_iters: x_hat.iters,
        points,
    })
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}
