//! What the stochastic estimators need from an inner model, and nothing else: the estimators
//! ([`super::StochasticEstimator`]) are written once against this trait and never name a model.
//!
//! | need | used by | linear models ([`super::glm`]) | networks ([`super::mlp`]) |
//! |---|---|---|---|
//! | a mini-batch SGD step `w ← w − η((1/b)Σ_p s_p ∇ℓ_p(w) + r ⊙ w)` that leaves what the per-sample gradients are made of | every method | the fused SGD kernel; the b×c factors `G` | forward and backward pass; the tape and deltas |
//! | the damped Fisher `Ĥ`: start, one step's update, `Ĥ⁻¹a`, `Ĥv` | `nhgd` | [`FisherTracker`](crate::hypergrad::fisher::FisherTracker) (dense, lowrank, one-layer kfac), damped by `R` | per-layer kfac or the tracker over all P, damped by `D` |
//! | a sampled Hessian `H_B v + R v` on a batch of the fixed partition | `stocbio`, `amigo`, `soba` | the batch as its own design | the R-operator on the batch's rows |
//! | the default SGD step | every method | `1/(L̂ + max r)`, `L̂` a bound | `1/(1.05 |λ|)` at `w₀`, a heuristic |
//!
//! The validation gradient `a = ∇_w f(w)`, the mixed product `B(w)ᵀq` and `‖∇g(w)‖` come from
//! the model's [`Bilevel`] side; dataset distillation passes its own `B` and θ
//! ([`super::StochasticEstimator::estimate_with`]).

use super::StochasticOptions;
use crate::backend::FisherOps;
use crate::data::Dataset;
use crate::error::Result;
use crate::hypergrad::fisher::{FisherSpec, Regulariser};
use crate::problem::{Bilevel, Buf, InnerProblem};

/// Which per-row weight a curvature update reads for each sampled row (hyper-cleaning's
/// `s_p`; none when the rows are unweighted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepWeights {
    /// Nothing from the host: unweighted rows, or the model reads `s_p` on the backend.
    None,
    /// `s_p` (the linear kfac's gradient factor).
    Plain,
    /// `√s_p` (the per-sample gradient rows of dense and lowrank, `U_p = √s_p g_p`).
    Sqrt,
}

/// One SGD step's inputs to [`StochasticModel::update_curvature`], all on the backend.
pub struct StepView<'a, M: StochasticModel + ?Sized> {
    pub rows: &'a <M::B as crate::backend::Backend>::Rows,
    /// What [`StochasticModel::sgd_forward`] left for this step.
    pub state: &'a M::StepState,
    /// `√s_p` or `s_p` per batch position, as [`StochasticModel::step_weights`] asked.
    pub weights: Option<&'a Buf<M>>,
    /// The r×b sketch of `lowrank`.
    pub sketch: Option<&'a Buf<M>>,
}

/// An inner model the stochastic estimators run on (module docs).
pub trait StochasticModel: Bilevel + InnerProblem<B: FisherOps> {
    /// What an SGD step leaves for the curvature update (kept in a ring of two slots while the
    /// second queue reads it).
    type StepState;
    /// NHGD's curvature state `Ĥ`.
    type Curvature;
    /// What `Ĥ` is damped with, made once per estimate.
    type Damping;
    /// A batch of the fixed partition, for the sampled Hessians.
    type Chunk;

    /// Refuses the options this model cannot take (beyond the checks every model shares).
    fn check_options(&self, opts: &StochasticOptions) -> Result<()>;
    /// The Fisher spec's shape: `(c, d)` for a linear model (kfac's factors), `(1, P)` else.
    fn fisher_shape(&self) -> (usize, usize);
    /// The training rows as they must be given to [`super::StochasticEstimator::new`].
    fn check_training_rows(&self, train: &Dataset) -> Result<()>;

    // ---- SGD ---------------------------------------------------------------------------

    /// What the default step is computed from, once (and again when the rows move):
    /// `L̂` for the linear models, the step itself for networks.
    fn step_basis(&self, w0: &Buf<Self>) -> Result<f64>;
    /// The default SGD step at the current θ from [`Self::step_basis`]'s value.
    fn default_step(&self, basis: f64) -> f64;
    /// An empty step state for batches of `batch` rows.
    fn new_step_state(&self, batch: usize) -> Result<Self::StepState>;
    /// The first part of an SGD step on `rows`: everything the curvature update reads is in
    /// `state` after it (the linear models also move `w` here, in one fused kernel).
    fn sgd_forward(
        &self,
        rows: &<Self::B as crate::backend::Backend>::Rows,
        eta: f64,
        w: &mut Buf<Self>,
        state: &mut Self::StepState,
    ) -> Result<()>;
    /// The rest of the step: `w` moves (networks; nothing for the linear models). `scratch`
    /// has P entries.
    fn sgd_finish(
        &self,
        rows: &<Self::B as crate::backend::Backend>::Rows,
        eta: f64,
        w: &mut Buf<Self>,
        state: &Self::StepState,
        scratch: &mut Buf<Self>,
    ) -> Result<()>;

    // ---- NHGD's curvature --------------------------------------------------------------

    /// The host row weights `s_i` (hyper-cleaning), if any.
    fn row_weights(&self) -> Option<&[f64]>;
    /// Which weight the update of `spec`'s representation reads per sampled row.
    fn step_weights(&self, spec: &FisherSpec) -> StepWeights;
    /// The damping of `Ĥ` at the current θ.
    fn damping(&self) -> Result<Self::Damping>;
    /// The damping as a regulariser (for `--fisher-update auto`'s timing).
    fn regulariser<'a>(&'a self, damping: &'a Self::Damping) -> Regulariser<'a, Self::B>;
    /// The state before the first step (on the main queue).
    fn start_curvature(
        &self,
        spec: &FisherSpec,
        damping: &Self::Damping,
    ) -> Result<Self::Curvature>;
    /// The entries of the per-sample gradient scratch the update needs (0 if none).
    fn gradient_rows_len(&self, spec: &FisherSpec) -> usize;
    /// Adds one step's per-sample gradients, on `queue`.
    fn update_curvature(
        &self,
        queue: &Self::B,
        spec: &FisherSpec,
        curvature: &mut Self::Curvature,
        step: &StepView<'_, Self>,
        grads: &mut Buf<Self>,
    ) -> Result<()>;
    /// `q = Ĥ⁻¹ a` and the linear solve's iterations.
    fn apply_inverse(
        &self,
        curvature: &Self::Curvature,
        damping: &Self::Damping,
        a: &Buf<Self>,
        linear_tol: f64,
    ) -> Result<(Buf<Self>, usize)>;
    /// Whether [`Self::apply`] can form `Ĥv` (not for the Woodbury inverse).
    fn has_operator(&self, curvature: &Self::Curvature) -> bool;
    /// `out ← Ĥ v`.
    fn apply(
        &self,
        curvature: &Self::Curvature,
        damping: &Self::Damping,
        v: &Buf<Self>,
        out: &mut Buf<Self>,
    ) -> Result<()>;

    // ---- sampled Hessians (stocbio, amigo, soba) ----------------------------------------

    /// The batch of training rows `rows` (of `train`).
    fn chunk(&self, train: &Dataset, rows: &[usize]) -> Result<Self::Chunk>;
    /// Brings the chunks' row weights to the current θ (before their Hessians are used); the
    /// chunks are consecutive batches of `batch` rows of the partition (the last may be
    /// shorter).
    fn refresh_chunks(&self, chunks: &mut [Self::Chunk], batch: usize) -> Result<()>;
    /// `out ← H_B(w) v + R v`, the mini-batch Hessian of `chunk` at `w` plus the regulariser.
    fn chunk_hvp(
        &self,
        chunk: &Self::Chunk,
        w: &Buf<Self>,
        v: &Buf<Self>,
        out: &mut Buf<Self>,
    ) -> Result<()>;
}
