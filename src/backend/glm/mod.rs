//! The generalised linear models' primitives (SPEC §1), an op family beside the core
//! [`Backend`]: the trait [`GlmOps`] here, its CPU twin in [`cpu`] (rayon over blocks of
//! rows), its CUDA implementation in [`cuda`] (the fused row kernel of `cuda/glm_rows.cu`,
//! the mini-batch kernels of `cuda/glm_batch.cu`, cuBLAS where a
//! GEMM pays; parity in `tests/parity_glm.rs`).
//!
//! Each kernel streams the data matrix: a row `x_i` is read once for everything done with it
//! (`z_i = W x_i` for every vector of a batch, the loss's per-row coefficients, and the
//! accumulation `acc += u_i ⊗ x_i`), which is what makes a batch of Hessian-vector products
//! cost one read of X.
//!
//! # Layout
//!
//! The inner variable of a GLM with `c` outputs and `d` features is stored class-major: a
//! `c×d` row-major matrix `W` (so `z_i = W x_i`), flattened to `P = c·d` entries, entry
//! `k·d + j` being `W[k, j]`. A *batch* of `m` such vectors is `m` of them back to back
//! (vector `b` occupies `[b·P, (b+1)·P)`), which is also an `(m·c)×d` row-major matrix: the
//! kernels exploit this to read each row `x_i` once for all vectors.

pub mod cpu;
pub mod cuda;

use super::shape::{check_len, per_part};
use super::Backend;
use crate::error::{Error, Result};

/// The shapes every backend checks before a pass over a design of `n` rows and `d` columns:
/// the labels and the row weights one per row, `W` `c×d`. Returns `(c, d)`.
pub(crate) fn check_operands(
    loss: Loss,
    (n, d): (usize, usize),
    y_len: usize,
    weights_len: Option<usize>,
    w_len: usize,
) -> Result<(usize, usize)> {
    let c = loss.outputs();
    check_len("labels", y_len, n)?;
    check_len("inner variable", w_len, c * d)?;
    if let Some(len) = weights_len {
        check_len("row weights", len, n)?;
    }
    Ok((c, d))
}

/// An SGD step's further operands on a batch of `batch` rows: the regulariser diagonal
/// (`c·d`) and the factors it leaves (`batch × c`); the batch must not be empty.
pub(crate) fn check_sgd_operands(
    (c, d): (usize, usize),
    batch: usize,
    reg_len: usize,
    factors_len: usize,
) -> Result<()> {
    check_len("regulariser diagonal", reg_len, c * d)?;
    check_len("per-sample factors", factors_len, batch * c)?;
    if batch == 0 {
        return Err(Error::Dimension(
            "an SGD step needs a non-empty batch".into(),
        ));
    }
    Ok(())
}

/// The per-sample operands of a batch of `batch` rows: the factors (`batch × c`) and the
/// optional scale, one per row. Returns `c`.
pub(crate) fn check_per_sample(
    batch: usize,
    factors_len: usize,
    scale_len: Option<usize>,
) -> Result<usize> {
    let c = per_part("per-sample factors", factors_len, batch)?;
    if let Some(len) = scale_len {
        check_len("per-sample scale", len, batch)?;
    }
    Ok(c)
}

/// The operands of [`GlmOps::glm_softmax_curvature_rows`]: `probs` and `a` both `n×c` with
/// `c ≥ 1`. Returns `n`.
pub(crate) fn check_softmax_rows(classes: usize, probs_len: usize, a_len: usize) -> Result<usize> {
    if classes == 0 {
        return Err(Error::Dimension("softmax curvature rows: 0 classes".into()));
    }
    let n = per_part("softmax probabilities", probs_len, classes)?;
    check_len("softmax curvature rows", a_len, probs_len)?;
    Ok(n)
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

/// The row kernels of a GLM (see the module docs for the layout).
pub trait GlmOps: Backend {
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

    /// `a_i ← (diag p_i − p_i p_iᵀ) a_i = p_i ⊙ (a_i − (p_iᵀ a_i) 1)` for every row `i` of the
    /// `n×c` matrices `a` and `probs` (the `p_i` of [`Curvature::probs`]): the softmax
    /// cross-entropy's Hessian in the logits, applied row by row and not summed over rows as
    /// in [`GlmOps::glm_hvp`] (the cross derivative of dataset distillation moves each row's
    /// logits by its own vector). `p_iᵀ a_i` accumulates in f64.
    fn glm_softmax_curvature_rows(
        &self,
        probs: &Self::Buf,
        classes: usize,
        a: &mut Self::Buf,
    ) -> Result<()>;

    // ---- mini-batches (the stochastic inner loops) --------------------------------------

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

    /// The mini-batch gradient that [`Self::glm_sgd_step`] steps along, for a solver that
    /// does more with it than one step (Adam): for the b rows `r_p` of `rows`,
    /// `factors_p ← G_p` as there, and `out ← (1/b) Σ_p s_{r_p} G_p ⊗ x_{r_p} + reg ⊙ W`.
    #[allow(clippy::too_many_arguments)]
    fn glm_batch_gradient(
        &self,
        x: &Self::Design,
        loss: Loss,
        y: &Self::Buf,
        row_weights: Option<&Self::Buf>,
        rows: &Self::Rows,
        reg: &Self::Buf,
        w: &Self::Buf,
        out: &mut Self::Buf,
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
