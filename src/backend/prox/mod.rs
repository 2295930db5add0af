//! The ℓ1 problems' primitives (sparse models, SPEC §2–3), an op family beside the core
//! [`Backend`]: the trait [`ProxOps`] here, its CPU twin in [`cpu`], its CUDA implementation
//! in [`cuda`] (kernels in `cuda/prox.cu`). What `crate::l1` builds its solvers and its
//! three hypergradients from, written once over it:
//!
//! * the design by columns ([`ProxOps::Cols`]): `X_C v` and `X_Cᵀ r` on a set C of columns;
//! * the proximal-gradient step and its forward-mode Jacobian (ISTA/FISTA);
//! * the sequential sweeps of coordinate descent: the solver's, the solver's with its
//!   forward-mode Jacobian, and the Jacobian recursion on a fixed support (`implicit-forward`).
//!
//! **Sparse designs on CUDA are densified on the device** (column-major f32, `n·d·4` bytes,
//! refused with one line when they do not fit the device): every coordinate step reads one
//! column of `n` contiguous floats, which a block reads coalesced, and the same kernels then
//! serve dense and sparse designs. cuSPARSE was the alternative; cudarc exposes it only as raw
//! bindings behind a feature this crate does not enable, and its SpMV does not fit the
//! one-column-at-a-time access of coordinate descent (one launch per coordinate). `bench
//! kernels` has a row for the densified sweep (`prox cd sweep`), so that the choice is
//! measured against the device's copy rate when a GPU is lent. The CPU keeps sparse designs
//! sparse (CSC).

use crate::l1::{Design, L1Kind};

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

/// The ℓ1 penalty as the sweeps read it: `λ_j = l1[j]`, `λ₂ = l2`, and `kind`, which fixes
/// the chain-rule factors `∂λ_j/∂θ_k` (`λ_j` for k = 0 in `lasso`/`enet`, for k = j in
/// `wlasso`, else 0) and `∂λ₂/∂θ_k` (`λ₂` for k = 1 in `enet`, else 0).
pub struct SweepPenalty<'a, B: Backend + ?Sized> {
    pub kind: L1Kind,
    pub l1: &'a B::Buf,
    pub l2: f64,
}

/// `∂λ_j/∂θ_k` over `λ_j` (1 or 0) for the penalty `kind`.
#[inline]
pub fn dl1_factor(kind: L1Kind, j: usize, k: usize) -> bool {
    match kind {
        L1Kind::Lasso | L1Kind::Enet => k == 0,
        L1Kind::Wlasso => k == j,
    }
}

/// Whether `∂λ₂/∂θ_k` is `λ₂` (else 0).
#[inline]
pub fn dl2_factor(kind: L1Kind, k: usize) -> bool {
    kind == L1Kind::Enet && k == 1
}

/// The shapes of [`ProxOps::cd_sweep`]'s operands for an n×d design: `lips`, `λ` and `w` have
/// d entries, `r` n.
pub(crate) fn check_sweep<B: Backend + ?Sized>(
    b: &B,
    what: &str,
    (n, d): (usize, usize),
    [lips, l1, w]: [&B::Buf; 3],
    r: &B::Buf,
) -> Result<()> {
    for (name, buf) in [("lips", lips), ("l1", l1), ("w", w)] {
        check_len(&format!("{what} {name}"), b.len(buf), d)?;
    }
    check_len(&format!("{what} r"), b.len(r), n)
}

/// The shapes of [`ProxOps::cd_forward_sweep`]'s operands: those of [`check_sweep`], and p
/// blocks of d in `jac`, of n in `jr`, p entries in `live`. Returns p.
pub(crate) fn check_forward_sweep<B: Backend + ?Sized>(
    b: &B,
    kind: L1Kind,
    (n, d): (usize, usize),
    [lips, l1, w, r]: [&B::Buf; 4],
    [jac, jr, live]: [&B::Buf; 3],
) -> Result<usize> {
    let p = kind.hyper_dim(d);
    check_sweep(b, "cd_forward_sweep", (n, d), [lips, l1, w], r)?;
    check_len("cd_forward_sweep jac", b.len(jac), p * d)?;
    check_len("cd_forward_sweep jr", b.len(jr), p * n)?;
    check_len("cd_forward_sweep live", b.len(live), p)?;
    Ok(p)
}

/// The number of columns a coordinate set names: `len(coords)`, or all `d`.
pub(crate) fn coords_len<B: Backend + ?Sized>(b: &B, coords: Option<&B::Rows>, d: usize) -> usize {
    coords.map_or(d, |c| b.rows_len(c))
}

/// The proximal-gradient and coordinate-descent primitives of the ℓ1 problems.
pub trait ProxOps: Backend {
    /// An n×d design held by columns (CPU: the host [`Design`], dense or CSC; CUDA: dense
    /// column-major f32, see the module documentation).
    type Cols: Send + Sync;

    /// Copies a design in. Errors: a design that does not fit the device.
    fn upload_cols(&self, x: &Design) -> Result<Self::Cols>;

    /// `(n, d)` of a design.
    fn cols_shape(&self, x: &Self::Cols) -> (usize, usize);

    /// `out ← out + Σ_a (α v_a) x_{C_a}` over the columns `C = coords` (all d in order when
    /// `None`), skipping the columns with `v_a = 0`; `v` has `|C|` entries, `out` n.
    fn cols_gemv(
        &self,
        x: &Self::Cols,
        coords: Option<&Self::Rows>,
        alpha: f64,
        v: &Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// `out_a ← x_{C_a}ᵀ r` over the columns `C = coords` (all d when `None`).
    fn cols_gemv_t(
        &self,
        x: &Self::Cols,
        coords: Option<&Self::Rows>,
        r: &Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// One cyclic sweep of proximal coordinate descent over the columns `coords` (all d when
    /// `None`) with `L_j = lips[j] > 0` (the others are skipped): for each j in turn
    ///
    /// ```text
    /// u = x_jᵀr/n + L_j w_j,   w_j⁺ = ST(u, λ_j)/(L_j + λ₂),   r ← r − x_j (w_j⁺ − w_j)
    /// ```
    ///
    /// with `r = y − Xw` kept in step. Returns `(max_j |w_j⁺ − w_j|, max_j |w_j⁺|)` over the
    /// swept coordinates.
    fn cd_sweep(
        &self,
        x: &Self::Cols,
        coords: Option<&Self::Rows>,
        lips: &Self::Buf,
        pen: &SweepPenalty<Self>,
        w: &mut Self::Buf,
        r: &mut Self::Buf,
    ) -> Result<(f64, f64)>;

    /// [`ProxOps::cd_sweep`] over all d columns with the forward-mode Jacobian `J = ∂w/∂θ`
    /// (p blocks of d in `jac`) and `R = −XJ` (p blocks of n in `jr`): after coordinate j,
    /// for each live column k,
    ///
    /// ```text
    /// J_jk⁺ = 1{w_j⁺ ≠ 0} (x_jᵀR_k/n + L_j J_jk − s_j ∂λ_j/∂θ_k − w_j⁺ ∂λ₂/∂θ_k)/(L_j + λ₂),
    /// R_k ← R_k − x_j (J_jk⁺ − J_jk).
    /// ```
    ///
    /// `live[k] ≠ 0` marks the columns that can be nonzero; a `wlasso` column k < d becomes
    /// live once `w_k⁺ ≠ 0` (until then nothing feeds it and it stays exactly 0).
    #[allow(clippy::too_many_arguments)]
    fn cd_forward_sweep(
        &self,
        x: &Self::Cols,
        lips: &Self::Buf,
        pen: &SweepPenalty<Self>,
        w: &mut Self::Buf,
        r: &mut Self::Buf,
        jac: &mut Self::Buf,
        jr: &mut Self::Buf,
        live: &mut Self::Buf,
    ) -> Result<()>;

    /// One Gauss–Seidel sweep of the coordinate-descent Jacobian recursion on a fixed support
    /// `S = coords` with the signs fixed (`implicit-forward`), for the `c = len(jac)/|S|`
    /// columns at once: for each column block k and each a in turn (`j = S_a`)
    ///
    /// ```text
    /// J_ak⁺ = (x_jᵀR_k/n + L_a J_ak − b_ak)/(L_a + λ₂),   R_k ← R_k − x_j (J_ak⁺ − J_ak)
    /// ```
    ///
    /// with `lips` the |S| constants `L_a = ‖x_{S_a}‖²/n`, `b` and `jac` c blocks of |S|, `res`
    /// c blocks of n (`R_k = −X_S J_k`). Returns `(max |ΔJ|, max |J⁺|)`.
    #[allow(clippy::too_many_arguments)]
    fn cd_jacobian_sweep(
        &self,
        x: &Self::Cols,
        coords: &Self::Rows,
        lips: &Self::Buf,
        b: &Self::Buf,
        l2: f64,
        jac: &mut Self::Buf,
        res: &mut Self::Buf,
    ) -> Result<(f64, f64)>;

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
