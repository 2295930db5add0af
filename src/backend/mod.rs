//! Backends: where the numbers live and the primitives every estimator is built from.
//!
//! An estimator (CG, Neumann, unrolling, ...) is host logic written once against traits. The
//! core trait, [`Backend`], is what every model needs: buffers ([`Backend::Buf`], a flat
//! vector of the backend's scalar type), data matrices ([`Backend::Design`], n×d row-major)
//! and mini-batches of row indices ([`Backend::Rows`]), two queues that may run side by
//! side, BLAS-1, element-wise updates (`mul_add`, Adam's step: any solver generic over the
//! backend may need them) and reductions (scalars passed and returned as `f64`), the grouped BLAS-1
//! that maps hyper-parameters onto inner variables ([`Groups`]), and the dense GEMM and SYRK.
//!
//! Everything particular to a model or a method is an *op family* beside it: a trait with the
//! core as supertrait, its CPU twin and its CUDA implementation side by side in one folder,
//!
//! | family | trait | what |
//! |---|---|---|
//! | [`glm`] | [`GlmOps`] | row-streaming kernels of generalised linear models: loss and gradient, curvature, batched HVPs, per-sample gradients, fused SGD, K-FAC factors |
//! | [`fisher`] | [`FisherOps`] | the dense curvature inverses of NHGD: diagonal shifts, Cholesky solves, K-FAC damping, Woodbury updates |
//! | [`mlp`] | [`MlpOps`] | the multilayer perceptron's passes, R-passes and K-FAC factors (and [`mlp::MlpInputOps`], its derivatives in the input rows) |
//! | [`prox`] | [`ProxOps`] | the ℓ1 problems: the proximal-gradient step and its Jacobian, the design by columns, the sweeps of coordinate descent |
//!
//! and every backend implements every family (the CUDA parity tests in `tests/` check each
//! against its CPU twin). The core's own implementations are [`cpu::CpuBackend`], the
//! readable reference in `f32` or `f64`, and [`cuda::CudaBackend`].

pub mod cpu;
pub mod cuda;
pub mod fisher;
pub mod glm;
pub mod mlp;
pub mod prox;
mod real;
mod shape;
mod skinny;

pub use fisher::FisherOps;
pub use glm::{Curvature, GlmOps, Loss};
pub use mlp::MlpOps;
pub use prox::ProxOps;

use crate::error::Result;

/// The coefficients of Adam's step `t` (Kingma & Ba 2015, Algorithm 1 in the paper's
/// "more efficient" form, §2): the bias corrections of the moments are folded into the step
/// `s` and the floor `ε̂`, so that a backend applies one expression at every step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamCoefficients {
    pub beta1: f64,
    pub beta2: f64,
    /// `s = η √(1−β₂ᵗ) / (1−β₁ᵗ)`.
    pub step: f64,
    /// `ε̂ = ε √(1−β₂ᵗ)`.
    pub eps: f64,
}

impl AdamCoefficients {
    /// Step `t ≥ 1` at rate `lr`: `w − s·m/(√v + ε̂)` is then the textbook
    /// `w − η m̂/(√v̂ + ε)` with `m̂ = m/(1−β₁ᵗ)`, `v̂ = v/(1−β₂ᵗ)`.
    pub fn at(lr: f64, (beta1, beta2, eps): (f64, f64, f64), t: u64) -> AdamCoefficients {
        let t = t.max(1).min(i32::MAX as u64) as i32;
        let root = (1.0 - beta2.powi(t)).sqrt();
        AdamCoefficients {
            beta1,
            beta2,
            step: lr * root / (1.0 - beta1.powi(t)),
            eps: eps * root,
        }
    }
}

/// Floating-point precision of a backend's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    F64,
}

impl Precision {
    /// Unit round-off of the precision (machine epsilon).
    pub fn epsilon(self) -> f64 {
        match self {
            Precision::F32 => f32::EPSILON as f64,
            Precision::F64 => f64::EPSILON,
        }
    }

    /// The floating-point allowance added to a residual measured in this precision: the
    /// residual of an exact solution, evaluated on vectors of length `len`, is of order
    /// `u √len` times the magnitudes that were combined (`u` the unit round-off). The error
    /// bounds of SPEC §4 inflate their measured residuals by it.
    pub fn rounding_allowance(self, len: usize, magnitude: f64) -> f64 {
        8.0 * self.epsilon() * (len as f64).sqrt() * magnitude
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
        })
    }
}

/// How the `p` hyper-parameters of a regulariser map onto the `P` inner variables:
/// entry `e` of `w` belongs to group `g(e)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Groups {
    /// One group: `g(e) = 0`.
    Shared,
    /// One group per entry: `g(e) = e`.
    Each,
    /// Consecutive blocks of `block` entries: `g(e) = e / block` (per-class for `c×d` weights).
    Blocks { block: usize },
}

impl Groups {
    /// Group of entry `e`.
    #[inline]
    pub fn of(self, e: usize) -> usize {
        match self {
            Groups::Shared => 0,
            Groups::Each => e,
            Groups::Blocks { block } => e / block,
        }
    }

    /// Number of groups for `len` entries.
    pub fn count(self, len: usize) -> usize {
        match self {
            Groups::Shared => 1,
            Groups::Each => len,
            Groups::Blocks { block } => len.div_ceil(block),
        }
    }
}

/// Markers per handle available to [`Backend::signal`].
pub const QUEUE_MARKERS: usize = 4;

/// A compute backend: buffers plus the primitives the estimators are written in.
///
/// Scalars cross the trait as `f64` whatever the backend's precision; reductions accumulate
/// in `f64`. Every method returns `Result` so that a device backend can report failures.
pub trait Backend: Send + Sync {
    /// A flat vector of scalars owned by the backend.
    type Buf: Send + Sync;
    /// A dense n×d data matrix owned by the backend.
    type Design: Send + Sync;
    /// A list of row indices (a mini-batch) owned by the backend.
    type Rows: Send + Sync;

    /// Human-readable name, e.g. `cpu-f64`.
    fn name(&self) -> String;
    /// Precision of the buffers.
    fn precision(&self) -> Precision;
    /// Bytes this backend's buffers may still take, and where they live (`"host"`, `"device"`):
    /// what a [`crate::memory::MemoryPlan`] is checked against before a run allocates. `None`
    /// where it cannot be known.
    fn memory_room(&self) -> Option<(u64, &'static str)> {
        crate::memory::available_host_bytes().map(|bytes| (bytes, "host"))
    }
    /// Waits until all queued work is done (a no-op on the CPU; for timing).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    // ---- queues -------------------------------------------------------------------------

    /// A second handle on the same device and buffers whose work may run concurrently with
    /// this one's (a second CUDA stream), ordered against it only by [`Backend::signal`] and
    /// [`Backend::wait_for`]. The CPU runs every call to completion in order, so its fork is a
    /// clone and the markers are no-ops.
    fn fork(&self) -> Result<Self>
    where
        Self: Sized;
    /// Records marker `slot` (`< QUEUE_MARKERS`) at the current end of this handle's queue.
    fn signal(&self, _slot: usize) -> Result<()> {
        Ok(())
    }
    /// Makes later work of this handle wait until `other` has passed its marker `slot`,
    /// without blocking the host.
    fn wait_for(&self, _other: &Self, _slot: usize) -> Result<()>
    where
        Self: Sized,
    {
        Ok(())
    }
    /// `(syncs, transfers)` with the host made so far by this backend and its forks: calls
    /// that wait for the device and host↔device copies. Zero for the CPU, where there is no
    /// device to wait for.
    fn host_traffic(&self) -> (u64, u64) {
        (0, 0)
    }

    // ---- memory -------------------------------------------------------------------------

    /// A buffer of `len` zeros.
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    /// Copy host values in (rounded to the backend's precision).
    fn upload(&self, host: &[f64]) -> Result<Self::Buf>;
    /// Copy a buffer out to the host.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f64>>;
    /// Number of entries of a buffer.
    fn len(&self, buf: &Self::Buf) -> usize;
    /// Copy a row-major n×d matrix in.
    fn upload_design(&self, x: &ndarray::Array2<f64>) -> Result<Self::Design>;
    /// `(n, d)` of a design matrix.
    fn design_shape(&self, x: &Self::Design) -> (usize, usize);
    /// Copy a mini-batch of row indices in; every index must be below `n`.
    fn upload_rows(&self, rows: &[u32], n: usize) -> Result<Self::Rows>;
    /// Number of indices of a mini-batch.
    fn rows_len(&self, rows: &Self::Rows) -> usize;
    /// Copy many mini-batches in at once: `rows` is their indices back to back, cut into
    /// consecutive batches of `batch` (the last may be shorter); every index must be below `n`.
    /// Same batches as one `upload_rows` each, but a device backend makes one host copy for
    /// all of them (an inner loop's T batches are prepared in O(1) transfers).
    fn upload_batches(&self, rows: &[u32], batch: usize, n: usize) -> Result<Vec<Self::Rows>>;
    /// Copy many buffers in at once: `host` cut into consecutive parts of `part` entries (the
    /// last may be shorter). Same values as one `upload` each, in one host copy on a device.
    fn upload_parts(&self, host: &[f64], part: usize) -> Result<Vec<Self::Buf>>;

    // ---- BLAS-1 and reductions ---------------------------------------------------------------

    /// `dst ← src`.
    fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf) -> Result<()>;
    /// `x ← value`.
    fn fill(&self, x: &mut Self::Buf, value: f64) -> Result<()>;
    /// `x ← αx`.
    fn scal(&self, alpha: f64, x: &mut Self::Buf) -> Result<()>;
    /// `y ← αx + y`.
    fn axpy(&self, alpha: f64, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// `y ← αx + βy`.
    fn axpby(&self, alpha: f64, x: &Self::Buf, beta: f64, y: &mut Self::Buf) -> Result<()>;
    /// `xᵀy`.
    fn dot(&self, x: &Self::Buf, y: &Self::Buf) -> Result<f64>;
    /// `‖x‖₂`.
    fn nrm2(&self, x: &Self::Buf) -> Result<f64> {
        Ok(self.dot(x, x)?.sqrt())
    }
    /// `y_b ← y_b + α a ⊙ x_b` for every block `b` of a batch: `x` and `y` hold `m` vectors of
    /// `len(a)` entries (the regulariser's diagonal applied to a batch).
    fn mul_add(&self, alpha: f64, a: &Self::Buf, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// `[x_bᵀ v]_b` for the `m = len(batch)/len(v)` vectors of a batch.
    fn batched_dot(&self, batch: &Self::Buf, v: &Self::Buf) -> Result<Vec<f64>>;
    /// One Adam step on `w` from the gradient `grad`, entry by entry:
    /// `m ← β₁m + (1−β₁)g`, `v ← β₂v + (1−β₂)g²`, `w ← w − s·m/(√v + ε̂)` with the
    /// coefficients of [`AdamCoefficients`] (the inner solver `--inner-solver adam`).
    fn adam_update(
        &self,
        coefficients: AdamCoefficients,
        grad: &Self::Buf,
        moments: (&mut Self::Buf, &mut Self::Buf),
        w: &mut Self::Buf,
    ) -> Result<()>;

    // ---- hyper-parameter groups (grouped BLAS-1) --------------------------------------

    /// `[Σ_{e ∈ group l} x_e y_e]_l` for the `groups.count(len)` groups.
    fn group_dot(&self, groups: Groups, x: &Self::Buf, y: &Self::Buf) -> Result<Vec<f64>>;
    /// The length-`len` vector with entry `e` equal to `values[g(e)]`.
    fn group_expand(&self, groups: Groups, values: &[f64], len: usize) -> Result<Self::Buf>;
    /// `batch[g(e)][e] += coef[g(e)] · w_e` for every entry `e`: adds the matrix whose column
    /// `l` is `coef_l (w restricted to group l)` to a batch of `groups.count(len(w))` vectors.
    fn group_scatter_add(
        &self,
        groups: Groups,
        coef: &[f64],
        w: &Self::Buf,
        batch: &mut Self::Buf,
    ) -> Result<()>;

    // ---- BLAS-3 (row-major) ----------------------------------------------------------------

    /// `C ← α op(A) op(B) + β C` with `op(A)` m×k, `op(B)` k×n, `C` m×n, all row-major;
    /// `op(X)` is `Xᵀ` when the flag is set (then X is stored k×m or n×k).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        transpose_a: bool,
        transpose_b: bool,
        dims: (usize, usize, usize),
        alpha: f64,
        a: &Self::Buf,
        b: &Self::Buf,
        beta: f64,
        c: &mut Self::Buf,
    ) -> Result<()>;

    /// `C ← α AᵀA + β C` for `A` (m×p) and `C` (p×p): accumulates `Σ_r a_r a_rᵀ`, the empirical
    /// Fisher's outer products when the rows of `A` are per-sample gradients. All of `C` is
    /// written.
    fn syrk(&self, alpha: f64, a: &Self::Buf, m: usize, beta: f64, c: &mut Self::Buf)
        -> Result<()>;
}
