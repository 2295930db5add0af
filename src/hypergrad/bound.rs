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
//! by inflating the measured residuals by a multiple of the unit round-off ([`rounding`]).

use crate::problem::BoundConstants;

/// Floating-point allowance added to a measured residual: the residual of an exact solution,
/// evaluated in precision `u` on vectors of length `len`, is of order `u √len` times the
/// magnitudes that were combined.
pub fn rounding(epsilon: f64, len: usize, magnitude: f64) -> f64 {
    8.0 * epsilon * (len as f64).sqrt() * magnitude
}

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
