//! The a posteriori error bounds of SPEC §4 (Ehrhardt & Roberts, "Analyzing inexact
//! hypergradients for bilevel learning").
//!
//! Write `ε = G/μ` for the inner error: strong convexity gives `‖ŵ − w*‖ ≤ ‖∇g(ŵ)‖/μ`.
//!
//! **Implicit estimators** return `h = −B(ŵ)ᵀq̂`. With `R = ‖H(ŵ)q̂ − ∇f(ŵ)‖`,
//! `H(w*)(q̂ − q*) = [H(ŵ)q̂ − ∇f(ŵ)] + [H(w*) − H(ŵ)]q̂ + [∇f(ŵ) − ∇f(w*)]`, so
//! `‖q̂ − q*‖ ≤ D = (R + L_f ε + L_H ε ‖q̂‖)/(μ − L_H ε)` (SPEC's conservative denominator),
//! and `h − ∇F = −B(ŵ)ᵀ(q̂ − q*) − (B(ŵ) − B(w*))ᵀq*` gives
//! `‖h − ∇F‖ ≤ ‖B(ŵ)‖ D + L_B ε (‖q̂‖ + D)`.
//!
//! **Forward mode** returns `h = J_Tᵀ∇f(w_T)` with a Jacobian estimate `J_T` (P×p), while
//! `∇F = J*ᵀ∇f(w*)`, `J* = −H(w*)⁻¹B(w*)`. From
//! `H(w*)(J_T − J*) = [H(w_T)J_T + B(w_T)] + [H(w*) − H(w_T)]J_T + [B(w*) − B(w_T)]`:
//! `‖J_T − J*‖ ≤ Δ = (ρ + L_H ε ‖J_T‖ + L_B ε)/μ` with `ρ = ‖H(w_T)J_T + B(w_T)‖_F`, and
//! `‖h − ∇F‖ ≤ Δ ‖∇f(w_T)‖ + (‖J_T‖ + Δ) L_f ε`. Frobenius norms bound the spectral ones.
//!
//! Both bounds account for the floating-point error of the quantities they are computed from
//! by inflating the measured residuals by a multiple of the unit round-off
//! ([`crate::backend::Precision::rounding_allowance`]).

use crate::problem::BoundConstants;

/// The implicit bound `‖B‖D + L_B ε (‖q̂‖ + D)`; `None` when `L_H ε ≥ μ` (no valid bound).
pub fn implicit(
    c: &BoundConstants,
    inner_grad_norm: f64,
    residual: f64,
    q_norm: f64,
) -> Option<f64> {
    let eps = inner_grad_norm / c.mu;
    let denominator = c.mu - c.l_h * eps;
    if !(denominator > 0.0) || !eps.is_finite() {
        return None;
    }
    let d = (residual + c.l_f * eps + c.l_h * eps * q_norm) / denominator;
    let bound = c.b_norm * d + c.l_b * eps * (q_norm + d);
    bound.is_finite().then_some(bound)
}

/// The forward-mode bound `Δ‖∇f‖ + (‖J‖ + Δ) L_f ε`.
pub fn forward(
    c: &BoundConstants,
    inner_grad_norm: f64,
    jacobian_residual: f64,
    jacobian_norm: f64,
    outer_grad_norm: f64,
) -> Option<f64> {
    let eps = inner_grad_norm / c.mu;
    if !(c.mu > 0.0) || !eps.is_finite() {
        return None;
    }
    let delta = (jacobian_residual + c.l_h * eps * jacobian_norm + c.l_b * eps) / c.mu;
    let bound = delta * outer_grad_norm + (jacobian_norm + delta) * c.l_f * eps;
    bound.is_finite().then_some(bound)
}

/// What Ehrhardt & Roberts' a priori bound for CG ([`a_priori_cg`]) is computed from: the
/// constants of the problem and the exact inner solution's quantities, which an a priori
/// bound may assume known.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct APriori {
    /// `μ` and `L`: `μI ⪯ H ⪯ LI`.
    pub mu: f64,
    pub l: f64,
    /// `L_f`, `L_B` of SPEC §4.
    pub l_f: f64,
    pub l_b: f64,
    /// `‖B(w*)‖` and `‖∇f(w*)‖` at the exact inner solution.
    pub b_norm: f64,
    pub outer_grad_norm: f64,
    /// `ε = ‖ŵ − w*‖`, the inner error.
    pub eps: f64,
}

/// Ehrhardt & Roberts' a priori bound on `‖h_k − ∇F‖` for `h_k = −B(ŵ)ᵀq_k`, `q_k` the k-th
/// CG iterate on `H q = ∇f(ŵ)` from `q₀ = 0`, for problems whose Hessian does not depend on w
/// (`L_H = 0`; their code, `compare_inexact_ad` in `quadratic_problem_example_v2.py`, evaluates
/// it in this form for their quadratic problem):
///
/// ```text
/// ρ   = (√L − √μ)/(√L + √μ)
/// δ_k = 2 (L/μ)^{3/2} ρ^k (‖∇f(w*)‖ + L_f ε)        ≥ ‖H q_k − ∇f(ŵ)‖
/// ‖h_k − ∇F‖ ≤ ‖B(w*)‖ δ_k/μ + L_B ε δ_k/μ + L_B ε ‖∇f(w*)‖/μ + L_f L_B ε²/μ + ‖B(w*)‖ L_f ε/μ
/// ```
///
/// δ_k is CG's rate in the H-norm (Nocedal & Wright eq. 5.36, `‖q_k − q̂‖_H ≤ 2ρ^k ‖q̂‖_H`)
/// turned into a residual by `√μ‖v‖ ≤ ‖v‖_H ≤ √L‖v‖` and `‖q̂‖ ≤ ‖∇f(ŵ)‖/μ`; the last line is
/// `‖q_k − q*‖ ≤ (δ_k + L_f ε)/μ` (H constant) carried through
/// `h_k − ∇F = −B(ŵ)ᵀ(q_k − q*) − (B(ŵ) − B(w*))ᵀq*`, with `‖B(ŵ)‖ ≤ ‖B(w*)‖ + L_B ε`.
pub fn a_priori_cg(c: &APriori, k: usize) -> f64 {
    let (sl, sm) = (c.l.sqrt(), c.mu.sqrt());
    let rho = (sl - sm) / (sl + sm);
    let delta =
        2.0 * (c.l / c.mu).powf(1.5) * rho.powf(k as f64) * (c.outer_grad_norm + c.l_f * c.eps);
    (c.b_norm * delta
        + c.l_b * c.eps * delta
        + c.l_b * c.eps * c.outer_grad_norm
        + c.l_f * c.l_b * c.eps * c.eps
        + c.b_norm * c.l_f * c.eps)
        / c.mu
}
