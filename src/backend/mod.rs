//! Backends: where the numbers live and the few primitives every estimator is built from.
//!
//! An estimator (CG, Neumann, unrolling, ...) is host logic written once against the
//! [`Backend`] trait. A backend owns buffers ([`Backend::Buf`], a flat vector of its scalar
//! type) and data matrices ([`Backend::Design`], n×d row-major), and implements
//!
//! * BLAS-1 and reductions (`axpy`, `dot`, ...), scalars passed and returned as `f64`;
//! * row-streaming kernels of generalised linear models (GLMs): loss + gradient, the per-row
//!   curvature, and batched Hessian-vector products that read the data matrix once for a whole
//!   batch of vectors;
//! * the small gather/scatter operations that map hyper-parameters onto inner variables
//!   ([`Groups`]).
//!
//! # Layout conventions (shared by every backend)
//!
//! The inner variable of a GLM with `c` outputs and `d` features is stored class-major: a
//! `c×d` row-major matrix `W` (so `z_i = W x_i`), flattened to `P = c·d` entries, entry
//! `k·d + j` being `W[k, j]`. A *batch* of `m` such vectors is `m` of them back to back
//! (vector `b` occupies `[b·P, (b+1)·P)`), which is also an `(m·c)×d` row-major matrix: the
//! kernels exploit this to read each row `x_i` once for all vectors.
//!
//! The CPU backend ([`cpu::CpuBackend`]) is the readable reference implementation of every
//! primitive, in `f32` or `f64`.

pub mod cpu;
mod cpu_sparse;
pub mod cuda;
pub mod mlp;
mod shape;
mod skinny;
pub mod sparse;

use crate::error::Result;

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
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::F64 => "f64",
        })
    }
}

/// The per-row loss `ℓ(z_i, y_i)` of a GLM, `z_i = W x_i ∈ R^c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// `ℓ = ½ (z − y)²`, `c = 1`.
    Squared,
    /// `ℓ = log(1 + exp(−y z))`, `y ∈ {−1, +1}`, `c = 1`.
    Logistic,
    /// Softmax cross-entropy `ℓ = logsumexp(z) − z_y`, `y ∈ {0, …, c−1}`.
    Softmax { classes: usize },
}

impl Loss {
    /// Number of outputs `c` per row.
    pub fn outputs(self) -> usize {
        match self {
            Loss::Squared | Loss::Logistic => 1,
            Loss::Softmax { classes } => classes,
        }
    }

    /// `sup_z ‖∇²_z ℓ(z, y)‖₂`: 1 (squared), ¼ (logistic), ½ (softmax, by Gershgorin on
    /// `diag(p) − ppᵀ`, whose row sums of absolute values are `2 p_k (1 − p_k) ≤ ½`).
    pub fn max_curvature(self) -> f64 {
        match self {
            Loss::Squared => 1.0,
            Loss::Logistic => 0.25,
            Loss::Softmax { .. } => 0.5,
        }
    }

    /// Lipschitz constant of `z ↦ ∇²_z ℓ(z, y)` in the spectral norm.
    ///
    /// * squared: the Hessian is constant, 0;
    /// * logistic: `ℓ''' = σ(1−σ)(1−2σ)`, whose maximum modulus is `1/(6√3)`;
    /// * softmax: the directional derivative of `S(z) = diag(p) − ppᵀ` along `u` is
    ///   `diag(δ) − δpᵀ − pδᵀ` with `δ = S(z)u`, `‖δ‖ ≤ ½‖u‖`, `‖p‖ ≤ 1`, so its norm is at
    ///   most `‖δ‖∞ + 2‖δ‖‖p‖ ≤ 3/2 ‖u‖`.
    pub fn curvature_lipschitz(self) -> f64 {
        match self {
            Loss::Squared => 0.0,
            Loss::Logistic => 1.0 / (6.0 * 3f64.sqrt()),
            Loss::Softmax { .. } => 1.5,
        }
    }

    /// Lipschitz constant of `z ↦ ∇_z ℓ(z, y)` (equal to [`Loss::max_curvature`]).
    pub fn gradient_lipschitz(self) -> f64 {
        self.max_curvature()
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

/// The curvature of a GLM's data term at a point, row by row, as a batched HVP needs it:
/// row `i` contributes `x_i x_iᵀ ⊗ C_i` with
/// `C_i = row_scale_i · ℓ''(z_i)` (one output) or `C_i = row_scale_i · (diag(p_i) − p_i p_iᵀ)`
/// (softmax). For one output the factor `ℓ''(z_i)` is already folded into `row_scale`.
pub struct Curvature<B: Backend + ?Sized> {
    pub loss: Loss,
    /// `n` entries.
    pub row_scale: B::Buf,
    /// Softmax probabilities `p_i`, `n×c`; `None` for one-output losses.
    pub probs: Option<B::Buf>,
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

    // ---- GLM row kernels (see the module docs for the layout) ------------------------------

    /// Returns `Σ_i s_i ℓ(z_i, y_i)` with `z_i = W x_i` and `s_i` the row weights (1 if none);
    /// if `grad` is given, writes `grad ← grad_scale · Σ_i s_i ∇_z ℓ(z_i, y_i) ⊗ x_i` (`c×d`).
    #[allow(clippy::too_many_arguments)]
    fn glm_value_grad(
        &self,
        x: &Self::Design,
        loss: Loss,
        y: &Self::Buf,
        row_weights: Option<&Self::Buf>,
        w: &Self::Buf,
        grad_scale: f64,
        grad: Option<&mut Self::Buf>,
    ) -> Result<f64>;

    /// The per-row curvature at `W`, with row `i` scaled by `scale · s_i`.
    fn glm_curvature(
        &self,
        x: &Self::Design,
        loss: Loss,
        y: &Self::Buf,
        row_weights: Option<&Self::Buf>,
        w: &Self::Buf,
        scale: f64,
    ) -> Result<Curvature<Self>>;

    /// Batched Hessian-vector product of the data term: for each of the `m` vectors `V_b` of
    /// the batch `v`, `out_b ← Σ_i C_i (V_b x_i) ⊗ x_i`. Reads `x` once for the whole batch.
    fn glm_hvp(
        &self,
        x: &Self::Design,
        curvature: &Curvature<Self>,
        v: &Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// Unweighted per-row gradient factors `G_i = ∇_z ℓ(W x_i, y_i)` (`n×c`): the per-sample
    /// gradient of row `i` is `G_i ⊗ x_i`.
    fn glm_row_factors(
        &self,
        x: &Self::Design,
        loss: Loss,
        y: &Self::Buf,
        w: &Self::Buf,
    ) -> Result<Self::Buf>;

    /// `r_i = ⟨Q x_i, G_i⟩ = Σ_k (Q x_i)_k G_ik` for `Q` of the inner variable's shape (`c×d`)
    /// and factors `G` (`n×c`): the pairing of `Q` with each per-sample gradient.
    fn glm_row_pairing(&self, x: &Self::Design, q: &Self::Buf, g: &Self::Buf) -> Result<Vec<f64>>;

    /// `batch_i ← batch_i + coef_i · G_i ⊗ x_i` for every row `i`: a batch of `n` vectors
    /// (`c×d` each) receives the per-sample gradients, scaled.
    fn glm_add_row_outer(
        &self,
        x: &Self::Design,
        coef: &[f64],
        g: &Self::Buf,
        batch: &mut Self::Buf,
    ) -> Result<()>;

    // ---- hyper-parameter groups ----------------------------------------------------------

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

    // ---- dense linear algebra (row-major) -----------------------------------------------

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

    /// `A[i, i] ← diag_i` (or `1/diag_i` when `invert`) for the `p = len(diag)` diagonal
    /// entries of a p×p matrix; the other entries are left as they are.
    fn set_diagonal(&self, a: &mut Self::Buf, diag: &Self::Buf, invert: bool) -> Result<()>;

    /// `A[i, i] ← A[i, i] + diag_i` for the `p = len(diag)` diagonal entries of a p×p matrix:
    /// `F + R` for a diagonal `R`, without touching the rest of `F`.
    fn add_diagonal(&self, a: &mut Self::Buf, diag: &Self::Buf) -> Result<()>;

    /// `C ← α AᵀA + β C` for `A` (m×p) and `C` (p×p): accumulates `Σ_r a_r a_rᵀ`, the empirical
    /// Fisher's outer products when the rows of `A` are per-sample gradients. All of `C` is
    /// written.
    fn syrk(&self, alpha: f64, a: &Self::Buf, m: usize, beta: f64, c: &mut Self::Buf)
        -> Result<()>;

    /// The largest dimension at which this backend solves a dense SPD system faster by
    /// [`Backend::spd_solve`] than by matrix-free CG (used by NHGD's accumulated Fisher).
    /// 0 on the CPU by default: CG took half the time of faer's Cholesky on digits (P = 640)
    /// and under half at the MNIST shape (P = 7,850), with the same result (BENCHMARKS.md);
    /// `HYPERGRAD_CPU_DIRECT_SOLVE_MAX_DIM` or
    /// `CpuBackend::with_direct_solve_max_dim` opts in. On CUDA, cuSOLVER's `potrf` avoids
    /// CG's host round trip per iteration.
    fn direct_solve_max_dim(&self) -> usize {
        0
    }

    /// Solves `A X = B` for a symmetric positive definite `A` (dim×dim) by Cholesky, in place:
    /// `b` holds `nrhs` right-hand sides as rows (nrhs×dim, row-major) and becomes the
    /// solutions; `a` is overwritten by the factorisation's workspace. One factorisation per
    /// call, on the backend (cuSOLVER on CUDA), so that a d×d solve costs d³/3 flops where
    /// it runs rather than a round trip through the host. A matrix that is not positive
    /// definite is a numerical error: at once on the CPU; on a device, from the next
    /// synchronising call (a download, a reduction), so that the solve makes no host round
    /// trip.
    fn spd_solve(&self, a: &mut Self::Buf, b: &mut Self::Buf, nrhs: usize) -> Result<()>;

    /// K-FAC's factored Tikhonov damping, in place on the factors `XX` (d×d) and `GG` (c×c):
    /// with λ̄ the mean of `lambda` (one λ per class) and π = √(λ̄ (tr XX / d) / (tr GG / c))
    /// (√λ̄ when either trace is zero), `XX ← XX + πI` and `GG ← GG + diag(λ)/π`, so that the
    /// cross term of (GG + Λ/π) ⊗ (XX + πI) is Λ ⊗ I = R exactly. On the backend (traces and
    /// π included), so that K-FAC's solve makes no host round trip.
    fn kfac_damp(&self, xx: &mut Self::Buf, gg: &mut Self::Buf, lambda: &Self::Buf) -> Result<()>;

    /// Rank-m Woodbury update of a symmetric positive definite inverse, in place:
    /// `A ← (A⁻¹ + α UᵀU)⁻¹ = A − A Uᵀ (I/α + U A Uᵀ)⁻¹ U A` for `A` (p×p), `U` (m×p), `α > 0`.
    fn woodbury_update(&self, a: &mut Self::Buf, u: &Self::Buf, m: usize, alpha: f64)
        -> Result<()>;

    // ---- stochastic GLM kernels (mini-batches) -------------------------------------------

    /// Fused mini-batch SGD step on a GLM's inner problem. For the b rows `r_p` of `rows`:
    /// `factors_p ← G_p = ∇_z ℓ(W x_{r_p}, y_{r_p})` (unweighted, `b×c`), then
    /// `W ← W − η ((1/b) Σ_p s_{r_p} G_p ⊗ x_{r_p} + reg ⊙ W)`. The factors stay on the backend
    /// for the curvature estimate that reuses them.
    #[allow(clippy::too_many_arguments)]
    fn glm_sgd_step(
        &self,
        x: &Self::Design,
        loss: Loss,
        y: &Self::Buf,
        row_weights: Option<&Self::Buf>,
        rows: &Self::Rows,
        reg: &Self::Buf,
        step: f64,
        w: &mut Self::Buf,
        factors: &mut Self::Buf,
    ) -> Result<()>;

    /// The per-sample gradients of a batch as b vectors of length `c·d`:
    /// `out_p = scale_p · G_p ⊗ x_{r_p}` (`scale_p = 1` if `scale` is `None`).
    fn glm_per_sample_gradients(
        &self,
        x: &Self::Design,
        rows: &Self::Rows,
        factors: &Self::Buf,
        scale: Option<&Self::Buf>,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// Kronecker factors of the Fisher of a linear softmax model over a batch:
    /// `xx ← α Σ_p x_{r_p} x_{r_p}ᵀ + β xx` (d×d) and `gg ← α Σ_p s_p G_p G_pᵀ + β gg` (c×c).
    #[allow(clippy::too_many_arguments)]
    fn glm_kfac_factors(
        &self,
        x: &Self::Design,
        rows: &Self::Rows,
        factors: &Self::Buf,
        scale: Option<&Self::Buf>,
        alpha: f64,
        beta: f64,
        xx: &mut Self::Buf,
        gg: &mut Self::Buf,
    ) -> Result<()>;
}
