//! The ℓ1 problems' proximal primitives (sparse models, SPEC §6), an op family beside the core
//! [`Backend`]: the proximal-gradient step and its forward-mode Jacobian, the trait
//! [`ProxOps`] here, its CPU twin in [`cpu`], its CUDA implementation in [`cuda`] (kernels
//! in `cuda/prox.cu`). Everything else the ℓ1 solvers need on a device (`Xᵀ(Xw − y)` and
//! batched `XᵀXv` from [`super::GlmOps`], BLAS-1 from the core) is another family's.

pub mod cpu;
pub mod cuda;

use super::shape::check_len;
use super::Backend;
use crate::error::Result;

/// The shapes of [`ProxOps::prox_step`]'s operands, checked alike by every backend: `v`,
/// `grad` and `l1` have the `d` entries of `w`. Returns `d`.
pub(crate) fn check_step<B: Backend + ?Sized>(
    b: &B,
    [v, grad, l1]: [&B::Buf; 3],
    w: &B::Buf,
) -> Result<usize> {
    let d = b.len(w);
    for (what, buf) in [("v", v), ("grad", grad), ("l1", l1)] {
        check_len(&format!("prox_step {what}"), b.len(buf), d)?;
    }
    Ok(d)
}

/// The shapes of [`ProxOps::prox_jacobian`]'s operands, checked alike by every backend: the
/// vectors `v`, `gsm`, `l1` have the `d` entries of `w`, the blocks `jv`, `dgrad`, `dl1`, `jw`
/// `d·m` for the `m = len(deta) = len(dl2)` directions. Returns `(d, m)`.
pub(crate) fn check_jacobian<B: Backend + ?Sized>(
    b: &B,
    [w, v, gsm, l1]: [&B::Buf; 4],
    [jv, dgrad, dl1, jw]: [&B::Buf; 4],
    deta: &[f64],
    dl2: &[f64],
) -> Result<(usize, usize)> {
    let (d, m) = (b.len(w), deta.len());
    check_len("prox_jacobian dl2", dl2.len(), m)?;
    for (what, buf) in [("v", v), ("gsm", gsm), ("l1", l1)] {
        check_len(&format!("prox_jacobian {what}"), b.len(buf), d)?;
    }
    for (what, buf) in [("jv", jv), ("dgrad", dgrad), ("dl1", dl1), ("jw", jw)] {
        check_len(&format!("prox_jacobian {what}"), b.len(buf), d * m)?;
    }
    Ok((d, m))
}

/// The proximal-gradient primitives of the ℓ1 problems.
pub trait ProxOps: Backend {
    /// `w_j ← ST(v_j − η grad_j, η λ_j)`, `ST(z, t) = sign(z) max(|z| − t, 0)`.
    fn prox_step(
        &self,
        v: &Self::Buf,
        grad: &Self::Buf,
        l1: &Self::Buf,
        eta: f64,
        w: &mut Self::Buf,
    ) -> Result<()>;

    /// The Jacobian of [`ProxOps::prox_step`] for a batch of `m = deta.len()` directions,
    /// each a block of `d = len(w)` entries of `jv`, `dgrad`, `dl1` and `jw`:
    ///
    /// ```text
    /// jw[k,j] = 1{w_j ≠ 0} (jv[k,j] − η (dgrad[k,j] + dl2_k v_j) − gsm_j deta_k
    ///                       − s_j (λ_j deta_k + η dl1[k,j]))
    /// ```
    ///
    /// with `s_j = sign(w_j)`, `v` the point the step was taken from, `gsm` the smooth
    /// gradient at `v`, `dgrad = (XᵀX/n + λ₂) jv`, `deta_k = ∂η/∂θ_k`, `dl2_k = ∂λ₂/∂θ_k`.
    #[allow(clippy::too_many_arguments)]
    fn prox_jacobian(
        &self,
        w: &Self::Buf,
        v: &Self::Buf,
        jv: &Self::Buf,
        dgrad: &Self::Buf,
        gsm: &Self::Buf,
        l1: &Self::Buf,
        dl1: &Self::Buf,
        eta: f64,
        deta: &[f64],
        dl2: &[f64],
        jw: &mut Self::Buf,
    ) -> Result<()>;
}
