//! The multilayer perceptron's primitives (SPEC §8), an op family beside the core
//! [`Backend`]: a trait here, its CPU twin in [`cpu`], its CUDA implementation in [`cuda`]
//! (cuBLAS GEMMs and the kernels of `cuda/mlp.cu`; parity with the CPU in
//! `tests/mlp_cuda_parity.rs`). The derivatives with respect to the input rows (dataset
//! distillation) are a second family, [`input::MlpInputOps`], with the same two
//! implementations (`input_cpu.rs`, `input_cuda.rs`).
//!
//! # The network
//!
//! ```text
//! a₀ = x,   a_l = φ(W_l a_{l−1} + b_l)  (l < L),   z = W_L a_{L−1} + b_L  (the c logits),
//! ℓ_i = CE(z_i, y_i) = logsumexp(z_i) − z_{i,y_i}
//! ```
//!
//! with φ = tanh or relu ([`Activation`]) and layer sizes `d = n₀, n₁, …, n_L = c`
//! ([`Network`]).
//!
//! # Parameter layout
//!
//! Layer `l` (1-based) owns the block `Θ_l = [W_l | b_l]`, an `n_l × (n_{l−1} + 1)` row-major
//! matrix whose last column is the bias; the blocks follow each other, layer 1 first, so
//! `P = Σ_l n_l (n_{l−1} + 1)` and entry `[k, j]` of block `l` is `w[offset(l) + k (n_{l−1}+1) + j]`.
//! It is the class-major layout of the linear models (`c×d`, entry `k·d + j`) applied to every
//! layer with the constant 1 appended to its input: with `ã = [a; 1]`, `z_l = Θ_l ã_{l−1}`,
//! and a per-sample gradient block is `δ_l ⊗ ã_{l−1}`, which is what K-FAC factorises.
//! A network with no hidden layer is the linear softmax model with an intercept.
//!
//! # Data
//!
//! A design matrix handed to these primitives holds the rows with the constant 1 appended as
//! its last column (`n × (d+1)`, uploaded once by the problem), so the first layer is one
//! GEMM like the others. Row-major matrices of activations keep the same convention: the
//! tape's hidden activations are `Ã_l = [A_l | 1]`.
//!
//! # Derivatives
//!
//! Backward (unweighted, per row): `δ_L = p − e_y`, `δ_{l−1} = (Θ_lᵀ δ_l)_{:n_{l−1}} ⊙ φ'(z_{l−1})`,
//! `∇_{Θ_l} ℓ = δ_l ⊗ ã_{l−1}`.
//!
//! Hessian-vector products by Pearlmutter's R-operator `R{·} = d/dt (·)(w + t v)|₀`: one
//! forward R-pass `R z_1 = V_1 x̃`, `R a_l = φ'(z_l) ⊙ R z_l`,
//! `R z_{l+1} = Θ_{l+1} [R a_l; 0] + V_{l+1} ã_l`, `R δ_L = (diag p − p pᵀ) R z_L`, and one
//! backward R-pass `R δ_{l−1} = (Θ_lᵀ R δ_l + V_lᵀ δ_l)_{:n_{l−1}} ⊙ φ'(z_{l−1})
//! + (Θ_lᵀ δ_l)_{:n_{l−1}} ⊙ φ''(z_{l−1}) ⊙ R z_{l−1}`, giving
//! `(∇²ℓ v)_{Θ_l} = R δ_l ⊗ ã_{l−1} + δ_l ⊗ [R a_{l−1}; 0]`. This is the exact Hessian (the
//! φ'' term and the `V_lᵀ δ_l` term are what Gauss–Newton drops).
//!
//! The directional derivatives `⟨∇_w ℓ_i, q⟩` of all rows come from the forward R-pass
//! alone: `⟨∇_w ℓ_i, q⟩ = (p_i − e_{y_i})ᵀ R z_{L,i}` with `R` along `q`.

pub mod cpu;
pub mod cuda;
pub mod input;
mod input_cpu;
mod input_cuda;

pub use input::MlpInputOps;

use super::shape::check_len;
use super::Backend;
use crate::error::{Error, Result};

/// The hidden layers' activation φ (`--activation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Tanh,
    Relu,
}

impl Activation {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Tanh => "tanh",
            Activation::Relu => "relu",
        }
    }

    /// `φ(z)`.
    #[inline]
    pub fn apply(self, z: f64) -> f64 {
        match self {
            Activation::Tanh => z.tanh(),
            Activation::Relu => z.max(0.0),
        }
    }

    /// `φ'(z)` written in terms of `a = φ(z)` (the tape keeps `a`, not `z`):
    /// tanh' = 1 − a², relu' = 1\[a > 0\] (0 at the kink).
    #[inline]
    pub fn derivative(self, a: f64) -> f64 {
        match self {
            Activation::Tanh => 1.0 - a * a,
            Activation::Relu => {
                if a > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// `φ''(z)` in terms of `a = φ(z)`: tanh'' = −2a(1 − a²), relu'' = 0 (almost everywhere).
    #[inline]
    pub fn second_derivative(self, a: f64) -> f64 {
        match self {
            Activation::Tanh => -2.0 * a * (1.0 - a * a),
            Activation::Relu => 0.0,
        }
    }
}

/// The most parameters a network may have (2³⁰, 8 GiB of f64 for each copy of w).
const MAX_PARAMS: usize = 1 << 30;

/// The shape of a network: `sizes = [d, n₁, …, n_{L−1}, c]` and the activation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Network {
    sizes: Vec<usize>,
    activation: Activation,
}

impl Network {
    /// `d` inputs, the hidden widths, `c` outputs. Every size must be at least 1.
    pub fn new(
        inputs: usize,
        hidden: &[usize],
        outputs: usize,
        activation: Activation,
    ) -> Result<Network> {
        let mut sizes = Vec::with_capacity(hidden.len() + 2);
        sizes.push(inputs);
        sizes.extend_from_slice(hidden);
        sizes.push(outputs);
        if let Some(pos) = sizes.iter().position(|&s| s == 0) {
            return Err(Error::option(
                "--model",
                format!("layer {pos} of the network has width 0 (sizes {sizes:?})"),
            ));
        }
        // P = Σ fan_out·(fan_in + 1), counted without overflow: a width like 99999999999
        // must be refused here, not end in an allocation that aborts.
        let params = sizes.windows(2).try_fold(0usize, |total, fans| {
            fans[1]
                .checked_mul(fans[0].checked_add(1)?)
                .and_then(|block| total.checked_add(block))
        });
        match params {
            Some(p) if p <= MAX_PARAMS => {}
            _ => {
                let p = params.map_or("more than 2^64".to_string(), |p| p.to_string());
                return Err(Error::option(
                    "--model",
                    format!(
                        "a network of sizes {sizes:?} has {p} parameters, more than \
                         2^30 = {MAX_PARAMS} (8 GiB of f64 for each copy of w); use narrower layers"
                    ),
                ));
            }
        }
        Ok(Network { sizes, activation })
    }

    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// `[d, n₁, …, c]`.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// L, the number of affine layers (hidden layers + 1).
    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    /// `d`, the input features (without the appended 1).
    pub fn inputs(&self) -> usize {
        self.sizes[0]
    }

    /// `c`, the outputs.
    pub fn outputs(&self) -> usize {
        self.sizes[self.sizes.len() - 1]
    }

    /// `(fan_in, fan_out)` of layer `l` (0-based), fan_in without the bias.
    pub fn fans(&self, l: usize) -> (usize, usize) {
        (self.sizes[l], self.sizes[l + 1])
    }

    /// Entries of layer `l`'s block `Θ_l`: `fan_out · (fan_in + 1)`.
    pub fn block_len(&self, l: usize) -> usize {
        let (i, o) = self.fans(l);
        o * (i + 1)
    }

    /// Where layer `l`'s block starts in `w`.
    pub fn offset(&self, l: usize) -> usize {
        (0..l).map(|k| self.block_len(k)).sum()
    }

    /// `P`, the number of parameters.
    pub fn dim(&self) -> usize {
        self.offset(self.layers())
    }

    /// The offset of the output layer's bias (its `c` entries are `c` apart: the last column
    /// of the last block).
    pub fn output_bias(&self) -> (usize, usize) {
        let l = self.layers() - 1;
        let (i, _) = self.fans(l);
        (self.offset(l) + i, i + 1)
    }

    /// Whether entry `e` of `w` is a bias (the last column of its block).
    pub fn is_bias(&self, e: usize) -> bool {
        let mut start = 0;
        for l in 0..self.layers() {
            let len = self.block_len(l);
            if e < start + len {
                let (i, _) = self.fans(l);
                return (e - start) % (i + 1) == i;
            }
            start += len;
        }
        false
    }

    /// The layer (0-based) that entry `e` of `w` belongs to.
    pub fn layer_of(&self, e: usize) -> usize {
        let mut start = 0;
        for l in 0..self.layers() {
            start += self.block_len(l);
            if e < start {
                return l;
            }
        }
        self.layers() - 1
    }
}

/// The shapes every backend's primitives check before a pass over a design of `n` rows and
/// `d` columns: `d` is the features plus the constant 1, `w` has P entries, the labels and the
/// row weights one per design row. (Mini-batch indices are checked by each backend, which
/// knows where they live.)
pub(crate) fn check_pass_shapes(
    net: &Network,
    (n, d): (usize, usize),
    w_len: usize,
    y_len: usize,
    weights_len: Option<usize>,
) -> Result<()> {
    if d != net.inputs() + 1 {
        return Err(Error::Dimension(format!(
            "the network's design has {d} columns, expected {} features plus the constant 1",
            net.inputs()
        )));
    }
    check_len("network parameters", w_len, net.dim())?;
    check_len("labels", y_len, n)?;
    if let Some(len) = weights_len {
        check_len("row weights", len, n)?;
    }
    Ok(())
}

/// A pass runs over at least one row, on every backend (a CUDA launch over none has no
/// meaning, and the CPU twin refuses it too so the two agree).
pub(crate) fn check_pass_rows(rows: usize) -> Result<usize> {
    if rows == 0 {
        return Err(Error::Dimension(
            "a network pass needs at least one row".into(),
        ));
    }
    Ok(rows)
}

/// The rows a primitive works on: the design (with the constant 1 appended), the labels, the
/// row weights `s_i` of a weighted loss (`None`: all 1), and optionally a mini-batch of row
/// indices (then every per-row quantity is per batch position, in the batch's order).
pub struct MlpData<'a, B: Backend + ?Sized> {
    pub x: &'a B::Design,
    pub y: &'a B::Buf,
    pub weights: Option<&'a B::Buf>,
    pub rows: Option<&'a B::Rows>,
}

impl<B: Backend + ?Sized> Clone for MlpData<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Backend + ?Sized> Copy for MlpData<'_, B> {}

/// What the forward pass leaves for the derivatives: the activations of the hidden layers and
/// the output probabilities, for the `n` rows of the pass.
pub struct Tape<B: Backend + ?Sized> {
    /// Rows in the pass.
    pub n: usize,
    /// The mini-batch's input rows `X̃_B` (`n × (d+1)`), gathered once; `None` when the pass
    /// ran over the whole design (which is then the input), unless the backend had to convert
    /// it (CUDA widens a bf16 design into f32 here).
    pub input: Option<B::Buf>,
    /// `Ã_l = [φ(Z_l) | 1]` (`n × (n_l + 1)`) for the hidden layers `l = 1, …, L−1`.
    pub hidden: Vec<B::Buf>,
    /// `softmax(z_i)`, `n × c`.
    pub probs: B::Buf,
    /// `CE(z_i, y_i)` per row (unweighted), `n` entries.
    pub losses: B::Buf,
}

/// The unweighted pre-activation gradients `δ_l = ∂ℓ_i/∂z_l` of every row (`n × n_l` per
/// layer, layer 1 first).
pub struct Deltas<B: Backend + ?Sized> {
    pub layers: Vec<B::Buf>,
}

/// The network primitives. Scalars cross as `f64`; per-row sums accumulate in `f64`.
pub trait MlpOps: Backend {
    /// The forward pass of `net` with parameters `w` over the rows of `data`.
    fn mlp_forward(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        w: &Self::Buf,
    ) -> Result<Tape<Self>>;

    /// `Σ_i s_i CE(z_i, y_i)` over the tape's rows.
    fn mlp_loss(&self, data: MlpData<'_, Self>, tape: &Tape<Self>) -> Result<f64>;

    /// The backward pass: the unweighted `δ_l` of every row (see the module docs).
    fn mlp_backward(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        w: &Self::Buf,
    ) -> Result<Deltas<Self>>;

    /// `grad ← scale Σ_i s_i ∇_w ℓ_i` (P entries), `∇_{Θ_l} ℓ_i = δ_{l,i} ⊗ ã_{l−1,i}`.
    fn mlp_gradient(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        scale: f64,
        grad: &mut Self::Buf,
    ) -> Result<()>;

    /// The per-sample gradients as `n` vectors of P entries, `out_i = coef_i ∇_w ℓ_i`
    /// (`coef_i = 1` if `None`; the row weights of `data` are not applied).
    fn mlp_per_sample_gradients(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        coef: Option<&Self::Buf>,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// `r_i = ⟨∇_w ℓ_i, q⟩` for every row of the tape, by one forward R-pass along `q`
    /// (unweighted).
    fn mlp_directional(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        w: &Self::Buf,
        q: &Self::Buf,
    ) -> Result<Vec<f64>>;

    /// Hessian-vector products for the `m` vectors of the batch `v` (`m·P` entries), exact,
    /// by the R-operator: `out_b ← scale Σ_i s_i ∇²_w ℓ_i v_b + shift (uᵀv_b) u`, where `u` is
    /// the unit vector with equal entries on the output bias (`1/√c` each) and 0 elsewhere:
    /// the direction along which the softmax cross-entropy does not change, so that a caller
    /// can give the Hessian curvature there (`shift = 0` leaves it exact).
    #[allow(clippy::too_many_arguments)]
    fn mlp_hvp(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        w: &Self::Buf,
        scale: f64,
        shift: f64,
        v: &Self::Buf,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// K-FAC factors of every layer over the tape's rows:
    /// `aa_l ← α Σ_i ã_{l−1,i} ã_{l−1,i}ᵀ + β aa_l` (`(n_{l−1}+1)²`, the 1 appended) and
    /// `gg_l ← α Σ_i s_i δ_{l,i} δ_{l,i}ᵀ + β gg_l` (`n_l²`).
    #[allow(clippy::too_many_arguments)]
    fn mlp_kfac_factors(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        alpha: f64,
        beta: f64,
        aa: &mut [Self::Buf],
        gg: &mut [Self::Buf],
    ) -> Result<()>;

    /// `dst[dst_offset..][..len] ← src[src_offset..][..len]`: moves a layer's block between a
    /// whole parameter vector and a buffer of its own.
    fn copy_range(
        &self,
        src: &Self::Buf,
        src_offset: usize,
        dst: &mut Self::Buf,
        dst_offset: usize,
        len: usize,
    ) -> Result<()>;
}
