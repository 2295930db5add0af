//! Derivatives of the network's per-row gradients with respect to its input rows: the op
//! family that dataset distillation with a network needs (SPEC §9), where the training rows
//! are the hyper-parameters. A trait beside [`MlpOps`] (its CPU twin in `input_cpu.rs`), so
//! that a backend gains it without touching the network primitives.
//!
//! # The mixed second derivative `∂_x ∇_w ℓ`
//!
//! Take one row's loss `ℓ(w, x) = CE(z(w; x), y)` as a function of the weights and of the row
//! `x` (d entries, `x̃ = [x; 1]`), with the notation of [`super`]. Its mixed second derivative
//! `∂_x ∇_w ℓ` is a P×d matrix; both products with it are R-passes, one per row batch:
//!
//! **Along an input perturbation `u`** (`R = d/dt (·)(w, x + t u)`; the weights do not move):
//! the input is the only thing that changes, `R x̃ = [u; 0]` (the appended 1 is constant), so
//! the forward R-pass is
//!
//! ```text
//! R z_1 = Θ_1 [u; 0],   R a_l = φ'(z_l) ⊙ R z_l,   R z_{l+1} = Θ_{l+1} [R a_l; 0],
//! R δ_L = (diag p − p pᵀ) R z_L,
//! ```
//!
//! and the backward R-pass is the Hessian-vector product's with `V = 0`,
//! `R δ_{l−1} = (Θ_lᵀ R δ_l)_{:n_{l−1}} ⊙ φ'(z_{l−1}) + (Θ_lᵀ δ_l)_{:n_{l−1}} ⊙ φ''(z_{l−1}) ⊙ R z_{l−1}`,
//! giving
//!
//! ```text
//! (∂_x ∇_w ℓ [u])_{Θ_l} = R δ_l ⊗ ã_{l−1} + δ_l ⊗ R ã_{l−1},   R ã_0 = [u; 0],  R ã_l = [R a_l; 0].
//! ```
//!
//! Compared with `∇²_w ℓ v`, the `V` terms are gone and layer 1 gains `δ_1 ⊗ [u; 0]`: the
//! input enters the first block's gradient `δ_1 ⊗ x̃` linearly.
//!
//! **Its transpose**, for `q` in weight space: second derivatives commute, so
//!
//! ```text
//! (∂_x ∇_w ℓ)ᵀ q = ∇_x ⟨∇_w ℓ, q⟩ = R_q{∇_x ℓ},     R_q = d/dt (·)(w + t q, x),
//! ```
//!
//! the input component of the joint `(w, x)` Hessian applied to `(q, 0)`. Backpropagation
//! reaches the input with `∇_x ℓ = (Θ_1ᵀ δ_1)_{:d}` (no activation at the input), so
//!
//! ```text
//! (∂_x ∇_w ℓ)ᵀ q = (Θ_1ᵀ R δ_1 + Q_1ᵀ δ_1)_{:d},
//! ```
//!
//! with `R δ_1` from the Hessian-vector product's R-pass along `V = q`, continued one layer
//! further than the weight gradient needs. Neither product forms the P×d blocks: each costs one
//! forward and one backward R-pass over the rows, as one Hessian-vector product does.

use super::{Deltas, MlpData, MlpOps, Network, Tape};
use crate::error::Result;

/// The input-derivative primitives of a network (module docs). As for [`MlpOps`], per-row
/// quantities are per position of the pass (`data.rows` selects them), the tape and deltas are
/// those of `w` on the same rows, and `s_i` are the rows' weights (1 without).
pub trait MlpInputOps: MlpOps {
    /// `out ← scale Σ_i s_i ∂_{x_i}(∇_w ℓ_i)[u_i]` (P entries): the weight-gradient's change
    /// when the input rows move by `u` (n×d row-major, one row per position of the pass, the
    /// appended 1 not included).
    #[allow(clippy::too_many_arguments)]
    fn mlp_input_cross(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        w: &Self::Buf,
        scale: f64,
        u: &Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// `out_i ← scale s_i ∇_{x_i} ⟨∇_w ℓ_i, q⟩` (n×d row-major) for `q` of P entries: the
    /// transpose of [`MlpInputOps::mlp_input_cross`], row by row.
    #[allow(clippy::too_many_arguments)]
    fn mlp_input_cross_t(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        w: &Self::Buf,
        scale: f64,
        q: &Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;
}
