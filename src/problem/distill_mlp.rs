//! `distill` with a network as the inner model (`--model mlp:…`, SPEC §8, §9). θ is the
//! synthetic set of [`Synthetic`] (N = K c rows `x_j`, labels `ỹ_j = ⌊j / K⌋`), the inner model
//! the multilayer perceptron of [`crate::backend::mlp`]:
//!
//! ```text
//! g(w, θ) = (1/N) Σ_j CE(z(w; x_j), ỹ_j) + (C/2) Σ_l ‖W_l‖²      (biases unpenalised)
//! f(w)    = (1/m) Σ_i CE(z(w; x'_i), y'_i)                        (real validation rows)
//! ```
//!
//! For a fixed θ this is the network `softmax` problem with a shared λ = C trained on the rows
//! θ, so [`MlpDistillBilevel`] keeps an [`MlpBilevel`] of that kind — w₀ from the seed, the
//! exact Hessian with the softmax shift's curvature κ, no error bound, the caveats of a
//! non-convex inner problem, all as documented there — and replaces its training rows when θ
//! moves. Only the cross derivative is new.
//!
//! # The cross derivative B = ∇²_{wθ} g
//!
//! The regulariser does not depend on θ, and row j's loss `ℓ_j(w, x_j)` depends on θ only
//! through `x_j`, so B (P × N d) has one P×d block per row, `(1/N) ∂_{x_j} ∇_w ℓ_j`:
//!
//! ```text
//! B v      = (1/N) Σ_j ∂_{x_j}(∇_w ℓ_j)[v_j]        (v_j = v[j d .. (j+1) d], P entries)
//! (Bᵀq)_j  = (1/N) ∇_{x_j} ⟨∇_w ℓ_j, q⟩              (d entries per row)
//! ```
//!
//! Both are one R-pass over the N rows ([`MlpInputOps`], derived in
//! [`crate::backend::mlp::input`]): `B v` is the Hessian-vector product's R-pass with the
//! weights fixed and the input moved (`R ã₀ = [v_j; 0]`); `Bᵀq` is the R-pass along the weight
//! direction q, continued through the first layer to the input:
//! `(Θ_1ᵀ R δ_1 + Q_1ᵀ δ_1)_{:d}`. B itself is formed only by [`Bilevel::cross_add`], which
//! the forward-mode recursion (`forward`) needs: its N d columns, one row at a time.

use crate::backend::mlp::{Activation, Deltas, MlpData, MlpInputOps, Network, Tape};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::problem::distill::Synthetic;
use crate::problem::mlp::MlpHessian;
use crate::problem::{Bilevel, BoundConstants, HyperLayout, InnerProblem, MlpBilevel, ProblemKind};

/// Dataset distillation with a network (see the module docs).
pub struct MlpDistillBilevel<B: MlpInputOps> {
    /// `softmax` with a shared λ = C on the synthetic rows (the current θ).
    mlp: MlpBilevel<B>,
    set: Synthetic,
}

impl<B: MlpInputOps> MlpDistillBilevel<B> {
    /// The problem with K synthetic rows per class of `classes` classes, the network's hidden
    /// widths and activation, outer loss on `val`, inner ridge `l2` = C > 0 on the weight
    /// matrices, at `theta` (K·c·d entries); `seed` draws w₀ (SPEC §8).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: B,
        classes: usize,
        k: usize,
        hidden: &[usize],
        activation: Activation,
        val: &Dataset,
        l2: f64,
        theta: &[f64],
        seed: u64,
    ) -> Result<Self> {
        let set = Synthetic::new(classes, k, val.d(), l2, theta)?;
        let mut mlp = MlpBilevel::new(
            backend,
            ProblemKind::Softmax,
            HyperLayout::Shared,
            hidden,
            activation,
            &set.dataset()?,
            val,
            l2,
            seed,
        )?;
        // λ = exp(θ_mlp) = C on every weight matrix, fixed.
        mlp.set_theta(&[l2.ln()])?;
        Ok(MlpDistillBilevel { mlp, set })
    }

    /// The network problem on the current synthetic rows (its θ is `ln C`).
    pub fn network_problem(&self) -> &MlpBilevel<B> {
        &self.mlp
    }

    pub fn network(&self) -> &Network {
        self.mlp.network()
    }

    /// The synthetic set (θ).
    pub fn synthetic_set(&self) -> &Synthetic {
        &self.set
    }

    /// The mean loss and accuracy of the network `w` on `data`.
    pub fn evaluate(&self, w: &B::Buf, data: &Dataset) -> Result<(f64, Option<f64>)> {
        self.mlp.evaluate(w, data)
    }

    /// The forward tape and backward deltas of `w` on `data`.
    fn pass(&self, data: MlpData<'_, B>, w: &B::Buf) -> Result<(Tape<B>, Deltas<B>)> {
        let b = self.mlp.backend();
        let net = self.mlp.network();
        let tape = b.mlp_forward(net, data, w)?;
        let deltas = b.mlp_backward(net, data, &tape, w)?;
        Ok((tape, deltas))
    }

    /// `B v` (P entries) at `w`, for `v` of p = N d entries (module docs).
    pub fn cross_apply(&self, w: &B::Buf, v: &[f64]) -> Result<Vec<f64>> {
        if v.len() != self.set.theta().len() {
            return Err(Error::Dimension(format!(
                "distill: v has {} entries, p = K·c·d = {}",
                v.len(),
                self.set.theta().len()
            )));
        }
        let b = self.mlp.backend();
        let data = self.mlp.train_data();
        let (tape, deltas) = self.pass(data, w)?;
        let mut out = b.zeros(self.mlp.inner_dim())?;
        let scale = 1.0 / self.set.rows() as f64;
        b.mlp_input_cross(
            self.network(),
            data,
            &tape,
            &deltas,
            w,
            scale,
            &b.upload(v)?,
            &mut out,
        )?;
        b.download(&out)
    }
}

impl<B: MlpInputOps> InnerProblem for MlpDistillBilevel<B> {
    type B = B;
    type Hessian = MlpHessian<B>;

    fn backend(&self) -> &B {
        self.mlp.backend()
    }
    fn inner_dim(&self) -> usize {
        self.mlp.inner_dim()
    }
    fn inner_value_grad(&self, w: &B::Buf, grad: Option<&mut B::Buf>) -> Result<f64> {
        self.mlp.inner_value_grad(w, grad)
    }
    fn hessian(&self, w: &B::Buf) -> Result<MlpHessian<B>> {
        self.mlp.hessian(w)
    }
    fn majorant(&self) -> Result<MlpHessian<B>> {
        self.mlp.majorant()
    }
    fn step_curvature(&self, w: &B::Buf) -> Result<MlpHessian<B>> {
        self.mlp.step_curvature(w)
    }
    fn hvp(&self, h: &MlpHessian<B>, v: &B::Buf, out: &mut B::Buf) -> Result<()> {
        self.mlp.hvp(h, v, out)
    }
    fn strong_convexity(&self) -> f64 {
        self.mlp.strong_convexity()
    }
    fn smoothness_bound(&self) -> f64 {
        self.mlp.smoothness_bound()
    }
    fn initial_point(&self) -> Result<B::Buf> {
        self.mlp.initial_point()
    }
}

impl<B: MlpInputOps> Bilevel for MlpDistillBilevel<B> {
    fn hyper_dim(&self) -> usize {
        self.set.theta().len()
    }

    fn theta(&self) -> &[f64] {
        self.set.theta()
    }

    fn set_theta(&mut self, theta: &[f64]) -> Result<()> {
        let mlp = &mut self.mlp;
        self.set.set(theta, |rows| mlp.replace_train(rows))
    }

    fn outer_value_grad(&self, w: &B::Buf, grad: Option<&mut B::Buf>) -> Result<f64> {
        self.mlp.outer_value_grad(w, grad)
    }

    /// `(Bᵀq)_j = (1/N) ∇_{x_j} ⟨∇_w ℓ_j, q⟩`, all rows by one R-pass; the rows' layout is θ's.
    fn cross_t(&self, w: &B::Buf, q: &B::Buf) -> Result<Vec<f64>> {
        let b = self.mlp.backend();
        let data = self.mlp.train_data();
        let (tape, deltas) = self.pass(data, w)?;
        let mut out = b.zeros(self.set.theta().len())?;
        let scale = 1.0 / self.set.rows() as f64;
        b.mlp_input_cross_t(self.network(), data, &tape, &deltas, w, scale, q, &mut out)?;
        b.download(&out)
    }

    /// `batch ← batch + α B`: column (j, l) of B is `(1/N) ∂_{x_j}(∇_w ℓ_j)[e_l]`, which only
    /// row j's pass carries, so each row is run alone (N single-row passes and N d R-passes of
    /// one row: O(P · N d), the size of B).
    fn cross_add(&self, w: &B::Buf, alpha: f64, batch: &mut B::Buf) -> Result<()> {
        let b = self.mlp.backend();
        let big_p = self.mlp.inner_dim();
        let (n, d) = (self.set.rows(), self.set.features());
        let mut host = b.download(batch)?;
        if host.len() != big_p * n * d {
            return Err(Error::Dimension(format!(
                "distill: the batch of B's columns has {} entries, P·p = {}",
                host.len(),
                big_p * n * d
            )));
        }
        let indices: Vec<u32> = (0..n as u32).collect();
        let singles = b.upload_batches(&indices, 1, n)?;
        let units: Vec<B::Buf> = (0..d)
            .map(|l| {
                let mut e = vec![0.0; d];
                e[l] = 1.0;
                b.upload(&e)
            })
            .collect::<Result<_>>()?;
        let mut column = b.zeros(big_p)?;
        for (j, row) in singles.iter().enumerate() {
            let data = MlpData {
                rows: Some(row),
                ..self.mlp.train_data()
            };
            let (tape, deltas) = self.pass(data, w)?;
            for (l, e) in units.iter().enumerate() {
                b.mlp_input_cross(
                    self.network(),
                    data,
                    &tape,
                    &deltas,
                    w,
                    alpha / n as f64,
                    e,
                    &mut column,
                )?;
                let start = (j * d + l) * big_p;
                for (h, c) in host[start..start + big_p]
                    .iter_mut()
                    .zip(b.download(&column)?)
                {
                    *h += c;
                }
            }
        }
        *batch = b.upload(&host)?;
        Ok(())
    }

    fn bound_constants(&self, _w: &B::Buf) -> Result<Option<BoundConstants>> {
        Ok(None)
    }
}
