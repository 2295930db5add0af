//! Matrix-free linear algebra on a backend: conjugate gradient and power iteration.

use crate::backend::Backend;
use crate::error::{Error, Result};

/// A copy of a backend buffer.
pub fn duplicate<B: Backend>(b: &B, x: &B::Buf) -> Result<B::Buf> {
    let mut y = b.zeros(b.len(x))?;
    b.copy(x, &mut y)?;
    Ok(y)
}

/// Outcome of [`conjugate_gradient`].
#[derive(Clone, Copy, Debug)]
pub struct CgReport {
    /// Iterations done (one operator application each).
    pub iters: usize,
    /// `‖rhs − A x‖` at exit, recomputed from `x` (one more operator application), never
    /// the recursively updated residual: in low precision the recurrence drifts from the
    /// true residual, and a solve judged by the recurrence can stop far from its target.
    pub residual_norm: f64,
    /// Whether the recomputed residual is within `tol ‖rhs‖` (or the precision's floor).
    pub converged: bool,
}

/// Solves `A x = rhs` for symmetric positive definite `A` given as `apply(v, out): out ← A v`,
/// starting from the `x` passed in, until `‖rhs − A x‖ ≤ tol ‖rhs‖` or `max_iters`.
///
/// An operator that is not positive definite is an error, not a number: a direction with
/// `pᵀAp ≤ 0`, and also one whose curvature `pᵀAp/‖p‖²` is below u (the backend's unit
/// round-off) times the largest curvature met so far. Both quotients lie in `[λ_min, λ_max]`,
/// so the second means a condition number above 1/u: A is singular in this precision (a
/// network with dead units, a flat direction) and the step along p would be noise scaled by
/// 1/(pᵀAp), which is how a silent 1e237 came out of a relu network's CG.
pub fn conjugate_gradient<B, F>(
    b: &B,
    mut apply: F,
    rhs: &B::Buf,
    x: &mut B::Buf,
    tol: f64,
    max_iters: usize,
) -> Result<CgReport>
where
    B: Backend,
    F: FnMut(&B::Buf, &mut B::Buf) -> Result<()>,
{
    let n = b.len(rhs);
    let mut r = b.zeros(n)?;
    apply(x, &mut r)?;
    b.axpby(1.0, rhs, -1.0, &mut r)?; // r = rhs − A x
    let rhs_norm = b.nrm2(rhs)?;
    // Below u‖rhs‖ the recursively updated residual no longer says anything about the true
    // one (rounding dominates), so even tol = 0 ("run to the cap") stops there.
    let floor = b.precision().epsilon() * rhs_norm;
    let target = (tol * rhs_norm).max(floor);
    let mut rs = b.dot(&r, &r)?;
    let mut p = duplicate(b, &r)?;
    // ‖p‖² by its recurrence (p = r + βp_prev with r ⟂ p_prev): no extra reduction.
    let mut pp = rs;
    let mut largest_curvature = 0.0_f64;
    let unit_roundoff = b.precision().epsilon();
    let mut ap = b.zeros(n)?;
    let mut iters = 0;
    while rs.sqrt() > target && iters < max_iters {
        apply(&p, &mut ap)?;
        let curvature = b.dot(&p, &ap)?;
        let rayleigh = curvature / pp;
        largest_curvature = largest_curvature.max(rayleigh);
        if !(curvature > 0.0) || rayleigh <= unit_roundoff * largest_curvature {
            // A breakdown next to the solution is convergence; elsewhere A is indefinite, or
            // singular in this precision.
            if rs.sqrt() <= floor.sqrt() * rhs_norm.sqrt() {
                break;
            }
            return Err(Error::Numerical(if curvature > 0.0 {
                format!(
                    "conjugate gradient met pᵀAp/‖p‖² = {rayleigh:e}, below the unit round-off times the largest curvature met ({largest_curvature:e}): the operator is singular in this precision"
                )
            } else {
                format!(
                    "conjugate gradient met pᵀAp = {curvature:e} ≤ 0: the operator is not positive definite"
                )
            }));
        }
        let alpha = rs / curvature;
        b.axpy(alpha, &p, x)?;
        b.axpy(-alpha, &ap, &mut r)?;
        let rs_next = b.dot(&r, &r)?;
        let beta = rs_next / rs;
        b.axpby(1.0, &r, beta, &mut p)?; // p = r + β p
        pp = rs_next + beta * beta * pp;
        rs = rs_next;
        iters += 1;
    }
    let residual_norm = true_residual_norm(b, &mut apply, rhs, x, &mut r)?;
    Ok(CgReport {
        iters,
        residual_norm,
        // The recomputed residual also carries the rounding of one product (≈ u‖A‖‖x‖),
        // which the recurrence does not: allow the floor twice.
        converged: residual_norm <= target.max(2.0 * floor),
    })
}

/// `‖rhs − A x‖`, computed afresh into `scratch` (length of `rhs`).
pub fn true_residual_norm<B, F>(
    b: &B,
    apply: &mut F,
    rhs: &B::Buf,
    x: &B::Buf,
    scratch: &mut B::Buf,
) -> Result<f64>
where
    B: Backend,
    F: FnMut(&B::Buf, &mut B::Buf) -> Result<()>,
{
    apply(x, scratch)?;
    b.axpby(1.0, rhs, -1.0, scratch)?; // r = rhs − A x
    b.nrm2(scratch)
}

/// A deterministic, well-spread start vector for iterative eigen-solvers.
pub fn start_vector(len: usize) -> Vec<f64> {
    // Weyl sequence: fractional parts of e·φ, centred; no entry is zero and no structure of the
    // problem is likely to be orthogonal to it.
    const PHI: f64 = 0.618_033_988_749_894_9;
    (0..len)
        .map(|e| ((e as f64 + 1.0) * PHI).fract() - 0.5 + 1e-3)
        .collect()
}

/// Estimates `λ_max(A)` of a symmetric positive semi-definite operator by `iters` steps of
/// power iteration (the Rayleigh quotient of the last iterate, a lower estimate).
pub fn largest_eigenvalue<B, F>(b: &B, mut apply: F, len: usize, iters: usize) -> Result<f64>
where
    B: Backend,
    F: FnMut(&B::Buf, &mut B::Buf) -> Result<()>,
{
    let mut v = b.upload(&start_vector(len))?;
    let mut av = b.zeros(len)?;
    let norm = b.nrm2(&v)?;
    b.scal(1.0 / norm, &mut v)?;
    let mut lambda = 0.0;
    for _ in 0..iters.max(1) {
        apply(&v, &mut av)?;
        lambda = b.dot(&v, &av)?;
        let norm = b.nrm2(&av)?;
        if !(norm > 0.0) {
            break;
        }
        b.copy(&av, &mut v)?;
        b.scal(1.0 / norm, &mut v)?;
    }
    Ok(lambda)
}
