//! The linear models (ridge, logreg, softmax, hyperclean; and distillation's softmax on its
//! synthetic rows) as a [`StochasticModel`].
//!
//! * SGD: the fused kernel `glm_sgd_step` moves `w` and leaves the batch's b×c factors `G`
//!   (the per-sample gradient of row p is `G_p ⊗ x_p`, class-major).
//! * `Ĥ = F + R` in a [`FisherTracker`]: dense (Woodbury or accumulate), lowrank, or kfac with
//!   the two Kronecker factors of the one layer; `R` the regulariser's Hessian.
//! * The default step `1/(L̂ + max r)`, `L̂` the largest eigenvalue of the data term's
//!   curvature majorant `ℓ''_max (1/n) Σ x xᵀ` (every row weight at its bound 1): an upper
//!   bound over θ.
//! * A chunk of the fixed partition is uploaded as its own design matrix.

use super::model::{StepView, StepWeights, StochasticModel};
use super::StochasticOptions;
use crate::backend::{Curvature, FisherOps, GlmOps};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::hypergrad::fisher::{
    FisherSpec, FisherTracker, Regulariser, Representation, StepInputs,
};
use crate::problem::{GlmBilevel, InnerProblem};
use crate::solver::linear;

/// A batch of the fixed partition, as its own design matrix.
pub struct GlmChunk<B: GlmOps> {
    x: B::Design,
    y: B::Buf,
    rows: Vec<usize>,
    weights: Option<B::Buf>,
}

impl<B: GlmOps + FisherOps> StochasticModel for GlmBilevel<B> {
    type StepState = B::Buf;
    type Curvature = FisherTracker<B>;
    /// `R` is the problem's own regulariser: nothing to make.
    type Damping = ();
    type Chunk = GlmChunk<B>;

    fn check_options(&self, opts: &StochasticOptions) -> Result<()> {
        if opts.method == crate::hypergrad::Method::Nhgd
            && opts.representation == Representation::Kfac
            && self.shape().0 < 2
        {
            return Err(Error::option(
                "--curvature",
                "kfac is for the softmax models (softmax, hyperclean)",
            ));
        }
        Ok(())
    }

    fn fisher_shape(&self) -> (usize, usize) {
        self.shape()
    }

    fn check_training_rows(&self, train: &Dataset) -> Result<()> {
        if train.n() != self.train_view().n || train.d() != self.shape().1 {
            return Err(Error::Dimension(
                "the training rows given to the stochastic estimator are not the problem's".into(),
            ));
        }
        Ok(())
    }

    fn step_basis(&self, _w0: &B::Buf) -> Result<f64> {
        let b = self.backend();
        let view = self.train_view();
        let (c, d) = self.shape();
        let majorant = Curvature {
            loss: crate::backend::Loss::Squared,
            row_scale: b.upload(&vec![view.loss.max_curvature() / view.n as f64; view.n])?,
            probs: None,
        };
        let estimate = linear::largest_eigenvalue(
            b,
            |v, out| b.glm_hvp(view.x, &majorant, v, out),
            c * d,
            50,
        )?;
        if !(estimate > 0.0 && estimate.is_finite()) {
            return Err(Error::Numerical(format!(
                "the curvature estimate {estimate} of the training data is not a positive number"
            )));
        }
        Ok(1.05 * estimate)
    }

    fn default_step(&self, data_curvature: f64) -> f64 {
        let r_max = self.train_view().lambda.iter().copied().fold(0.0, f64::max);
        1.0 / (data_curvature + r_max)
    }

    fn new_step_state(&self, batch: usize) -> Result<B::Buf> {
        self.backend().zeros(batch * self.shape().0)
    }

    fn sgd_forward(
        &self,
        rows: &B::Rows,
        eta: f64,
        w: &mut B::Buf,
        factors: &mut B::Buf,
    ) -> Result<()> {
        let view = self.train_view();
        self.backend().glm_sgd_step(
            view.x,
            view.loss,
            view.y,
            view.weights,
            rows,
            view.reg_diag,
            eta,
            w,
            factors,
        )
    }

    fn sgd_finish(
        &self,
        _rows: &B::Rows,
        _eta: f64,
        _w: &mut B::Buf,
        _factors: &B::Buf,
        _scratch: &mut B::Buf,
    ) -> Result<()> {
        // The fused step already moved w.
        Ok(())
    }

    fn row_weights(&self) -> Option<&[f64]> {
        self.train_view().weights_host
    }

    fn step_weights(&self, spec: &FisherSpec) -> StepWeights {
        // kfac's gradient factor reads s_p; the gradient rows of dense and lowrank √s_p.
        match spec.representation {
            Representation::Kfac => StepWeights::Plain,
            _ => StepWeights::Sqrt,
        }
    }

    fn damping(&self) -> Result<()> {
        Ok(())
    }

    fn regulariser<'a>(&'a self, _damping: &'a ()) -> Regulariser<'a, B> {
        let view = self.train_view();
        Regulariser {
            backend: self.backend(),
            diag: view.reg_diag,
            groups: view.groups,
            lambda: view.lambda,
        }
    }

    fn start_curvature(&self, spec: &FisherSpec, _damping: &()) -> Result<FisherTracker<B>> {
        FisherTracker::start(self.backend(), spec, self.train_view().reg_diag)
    }

    fn gradient_rows_len(&self, spec: &FisherSpec) -> usize {
        let (c, d) = self.shape();
        if spec.needs_gradients() {
            spec.batch * c * d
        } else {
            0
        }
    }

    fn update_curvature(
        &self,
        queue: &B,
        spec: &FisherSpec,
        tracker: &mut FisherTracker<B>,
        step: &StepView<'_, Self>,
        grads: &mut B::Buf,
    ) -> Result<()> {
        let (sqrt_weights, weights) = match self.step_weights(spec) {
            StepWeights::Plain => (None, step.weights),
            _ => (step.weights, None),
        };
        let inputs = StepInputs {
            x: self.train_view().x,
            rows: step.rows,
            factors: step.state,
            sqrt_weights,
            weights,
            sketch: step.sketch,
        };
        tracker.update(queue, spec, &inputs, grads)
    }

    fn apply_inverse(
        &self,
        tracker: &FisherTracker<B>,
        damping: &(),
        a: &B::Buf,
        linear_tol: f64,
    ) -> Result<(B::Buf, usize)> {
        tracker.apply_inverse(self.backend(), &self.regulariser(damping), a, linear_tol)
    }

    fn has_operator(&self, tracker: &FisherTracker<B>) -> bool {
        tracker.has_operator()
    }

    fn apply(
        &self,
        tracker: &FisherTracker<B>,
        damping: &(),
        v: &B::Buf,
        out: &mut B::Buf,
    ) -> Result<()> {
        tracker.apply(self.backend(), &self.regulariser(damping), v, out)
    }

    fn chunk(&self, train: &Dataset, rows: &[usize]) -> Result<GlmChunk<B>> {
        let b = self.backend();
        let part = train.select(rows);
        Ok(GlmChunk {
            x: b.upload_design(&part.x)?,
            y: b.upload(&part.y)?,
            rows: rows.to_vec(),
            weights: None,
        })
    }

    /// Row weights of every chunk at the current θ (hyper-cleaning), in one host copy: the
    /// chunks are consecutive batches of `batch` rows (the last may be shorter), which is how
    /// `upload_parts` cuts.
    fn refresh_chunks(&self, chunks: &mut [GlmChunk<B>], batch: usize) -> Result<()> {
        if let Some(s) = self.train_view().weights_host {
            let w: Vec<f64> = chunks
                .iter()
                .flat_map(|chunk| chunk.rows.iter().map(|&r| s[r]))
                .collect();
            let parts = self.backend().upload_parts(&w, batch)?;
            for (chunk, weights) in chunks.iter_mut().zip(parts) {
                chunk.weights = Some(weights);
            }
        }
        Ok(())
    }

    fn chunk_hvp(
        &self,
        chunk: &GlmChunk<B>,
        w: &B::Buf,
        v: &B::Buf,
        out: &mut B::Buf,
    ) -> Result<()> {
        let b = self.backend();
        let view = self.train_view();
        let curvature = b.glm_curvature(
            &chunk.x,
            view.loss,
            &chunk.y,
            chunk.weights.as_ref(),
            w,
            1.0 / chunk.rows.len() as f64,
        )?;
        b.glm_hvp(&chunk.x, &curvature, v, out)?;
        b.mul_add(1.0, view.reg_diag, v, out)
    }
}
