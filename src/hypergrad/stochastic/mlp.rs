//! The networks (`--model mlp:…`, SPEC §8; and distillation's network on its synthetic rows)
//! as a [`StochasticModel`].
//!
//! Each SGD step runs the network forward and backward over its b rows once; the same tape and
//! deltas give the step `w ← w − η ((1/b) Σ_p s_p ∇ℓ_p + r ⊙ w)` and the curvature update (at
//! the point the gradients were taken, as for the linear models):
//!
//! | representation | state | per step |
//! |---|---|---|
//! | `dense` | `(F + D)⁻¹` (Woodbury) or `F` (SYRK), P×P | rows `√s_p ∇ℓ_p` ([`FisherTracker::update_rows`]) |
//! | `lowrank` | sketch `U` (r×P) | `U ← U + N^{-½} S_t G_t` |
//! | `kfac` | per layer `AA_l` (`(n_{l−1}+1)²`), `GG_l` (`n_l²`) | `AA_l += α Σ ã ãᵀ`, `GG_l += α Σ s δ δᵀ` |
//!
//! `kfac` is block-diagonal over layers, each block `GG_l ⊗ AA_l` (the per-sample gradient
//! block is `δ_l ⊗ ã_{l−1}`), damped by its factored share of the layer's damping:
//! `(GG_l + λ_l/π_l I) ⊗ (AA_l + π_l I)`, whose cross term is `λ_l I` exactly
//! ([`kfac_solve`]).
//!
//! # The damping `D`
//!
//! `D = λ_l` on every entry of layer `l`, the biases included, where the regulariser `R` has 0
//! on the biases. `F + R` is singular for a network: along the softmax shift (every
//! per-sample gradient is orthogonal to it, see [`crate::problem::mlp`]) and along any bias
//! that the `T·b` samples leave unseen, and Woodbury needs `D⁻¹`. Giving each bias its
//! layer's λ keeps `F + D` positive definite, and makes `D_l = λ_l I` the Kronecker-friendly
//! damping of K-FAC's blocks. The shift direction's component of `q` meets `Bᵀ` as 0.
//!
//! # The SGD step
//!
//! A network has no global curvature bound, so the default η is `1/L̂` with `L̂` 1.05 times
//! the largest eigenvalue magnitude of `H(w₀)` (power iteration, once, when the estimator is
//! made, and again at every estimate of dataset distillation, whose rows move with θ;
//! `H(w₀)` may be indefinite): a heuristic, where the linear models' default is a bound;
//! `--inner-lr` chooses it.
//!
//! # Sampled Hessians
//!
//! `stocbio`, `amigo` and `soba` use the exact Hessian of a batch of the fixed partition by
//! the R-operator (`mlp_hvp` on the batch's rows, with the same shift along the softmax
//! direction as the full Hessian), plus `R`. `H` may be indefinite away from a minimiser; the
//! methods are what they are there, as with any non-convex inner problem.
//!
//! # Step state and the two queues
//!
//! A step's state is its tape and deltas, fresh buffers of the main queue. The estimator keeps
//! them in its ring of two slots (see [`super`]), so step t's are freed only when step t + 2
//! begins, after the main queue has waited for the side queue's marker of step t: dropping
//! them as soon as step t ends would let step t + 1's allocations reuse that memory while the
//! side queue still reads it.

use super::model::{StepView, StepWeights, StochasticModel};
use super::StochasticOptions;
use crate::backend::mlp::{Deltas, MlpData, MlpOps, Network, Tape};
use crate::backend::{Backend, FisherOps, Groups};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::hypergrad::fisher::{
    kfac_apply, kfac_solve, FisherSpec, FisherTracker, Regulariser, Representation,
};
use crate::problem::{InnerProblem, MlpBilevel};
use crate::solver::minibatch::step_from_curvature;

/// Largest P for which `dense` keeps a P×P matrix (P² f64 = 512 MiB at 8192).
pub const DENSE_MAX_DIM: usize = 8192;

/// `D`: `λ_l` on every entry of layer `l`, biases included (module docs).
pub fn damping(net: &Network, lambda: &[f64]) -> Vec<f64> {
    (0..net.dim()).map(|e| lambda[net.layer_of(e)]).collect()
}

/// The curvature `Ĥ = F + D` of a network as NHGD tracks it. [`MlpNhgd`] makes it on its main
/// queue and updates it on its curvature queue (module docs, "Two queues").
pub enum MlpCurvature<B: FisherOps> {
    /// `dense` or `lowrank` over all P parameters, fed per-sample gradient rows.
    Rows(FisherTracker<B>),
    /// Per-layer K-FAC factors `AA_l`, `GG_l`.
    Kfac { aa: Vec<B::Buf>, gg: Vec<B::Buf> },
}

/// One step's inputs to [`MlpCurvature::update`].
pub struct CurvatureStep<'a, B: MlpOps> {
    /// The batch's rows (with the row weights `s_p`, which K-FAC's gradient factor reads).
    pub data: MlpData<'a, B>,
    pub tape: &'a Tape<B>,
    pub deltas: &'a Deltas<B>,
    /// `√s_p` per batch position (weighted losses), for the gradient rows.
    pub sqrt_weights: Option<&'a B::Buf>,
    /// The r×b sketch of `lowrank`.
    pub sketch: Option<&'a B::Buf>,
}

impl<B: MlpOps + FisherOps> MlpCurvature<B> {
    /// The state before the first step: `(D)⁻¹` or zero Fisher terms. `spec.shape` is `(1, P)`.
    pub fn start(backend: &B, net: &Network, spec: &FisherSpec, damping: &B::Buf) -> Result<Self> {
        Ok(match spec.representation {
            Representation::Kfac => {
                let layers = net.layers();
                let mut aa = Vec::with_capacity(layers);
                let mut gg = Vec::with_capacity(layers);
                for l in 0..layers {
                    let (fan_in, fan_out) = net.fans(l);
                    aa.push(backend.zeros((fan_in + 1) * (fan_in + 1))?);
                    gg.push(backend.zeros(fan_out * fan_out)?);
                }
                MlpCurvature::Kfac { aa, gg }
            }
            _ => MlpCurvature::Rows(FisherTracker::start(backend, spec, damping)?),
        })
    }

    /// Adds one SGD step's per-sample gradients. `grads` is b×P scratch (unused by `kfac`).
    pub fn update(
        &mut self,
        backend: &B,
        net: &Network,
        spec: &FisherSpec,
        step: &CurvatureStep<'_, B>,
        grads: &mut B::Buf,
    ) -> Result<()> {
        match self {
            MlpCurvature::Kfac { aa, gg } => {
                let (alpha, beta) = spec.step_weights();
                backend.mlp_kfac_factors(
                    net,
                    step.data,
                    step.tape,
                    step.deltas,
                    alpha,
                    beta,
                    aa,
                    gg,
                )
            }
            MlpCurvature::Rows(tracker) => {
                backend.mlp_per_sample_gradients(
                    net,
                    step.data,
                    step.tape,
                    step.deltas,
                    step.sqrt_weights,
                    grads,
                )?;
                tracker.update_rows(backend, spec, grads, step.tape.n, step.sketch)
            }
        }
    }

    /// `q = Ĥ⁻¹ a` (`dense` accumulate solves by CG to `linear_tol` unless the backend
    /// factorises); `lambda` is λ per layer, `damping` the P entries of `D` on the backend
    /// and the host. Returns the linear solve's iterations.
    pub fn apply_inverse(
        &self,
        backend: &B,
        net: &Network,
        lambda: &[f64],
        damping: (&B::Buf, &[f64]),
        a: &B::Buf,
        linear_tol: f64,
    ) -> Result<(B::Buf, usize)> {
        match self {
            MlpCurvature::Rows(tracker) => {
                tracker.apply_inverse(backend, &rows_regulariser(backend, damping), a, linear_tol)
            }
            MlpCurvature::Kfac { aa, gg } => Ok((
                kfac_blocks(backend, net, lambda, aa, gg, a, |b, x, g, lam, v| {
                    kfac_solve(b, x, g, lam, v)
                })?,
                0,
            )),
        }
    }

    /// Whether [`Self::apply`] can form `Ĥv` (not for the Woodbury inverse).
    pub fn has_operator(&self) -> bool {
        match self {
            MlpCurvature::Rows(tracker) => tracker.has_operator(),
            MlpCurvature::Kfac { .. } => true,
        }
    }

    /// `out ← Ĥ v`, what [`Self::apply_inverse`] inverts (for refinement, [`super::refine`]).
    pub fn apply(
        &self,
        backend: &B,
        net: &Network,
        lambda: &[f64],
        damping: (&B::Buf, &[f64]),
        v: &B::Buf,
        out: &mut B::Buf,
    ) -> Result<()> {
        match self {
            MlpCurvature::Rows(tracker) => {
                tracker.apply(backend, &rows_regulariser(backend, damping), v, out)
            }
            MlpCurvature::Kfac { aa, gg } => {
                let applied = kfac_blocks(backend, net, lambda, aa, gg, v, kfac_apply)?;
                backend.copy(&applied, out)
            }
        }
    }
}

/// `D` as a regulariser: `Groups::Each` with one "λ" per entry, since D is diagonal but not
/// piecewise constant over a fixed grouping.
fn rows_regulariser<'a, B: FisherOps>(
    backend: &'a B,
    damping: (&'a B::Buf, &'a [f64]),
) -> Regulariser<'a, B> {
    Regulariser {
        backend,
        diag: damping.0,
        groups: Groups::Each,
        lambda: damping.1,
    }
}

/// K-FAC's block-diagonal operator: `block(aa_l, gg_l, λ_l, a_l)` on each layer's slice of
/// `a` (the damped block's inverse, [`kfac_solve`], or the block itself, [`kfac_apply`]).
fn kfac_blocks<B: MlpOps + FisherOps>(
    backend: &B,
    net: &Network,
    lambda: &[f64],
    aa: &[B::Buf],
    gg: &[B::Buf],
    a: &B::Buf,
    block: impl Fn(&B, &B::Buf, &B::Buf, &B::Buf, &B::Buf) -> Result<B::Buf>,
) -> Result<B::Buf> {
    let mut q = backend.zeros(net.dim())?;
    for l in 0..net.layers() {
        let (offset, len) = (net.offset(l), net.block_len(l));
        let mut slice = backend.zeros(len)?;
        backend.copy_range(a, offset, &mut slice, 0, len)?;
        let lam = backend.upload(&vec![lambda[l]; net.fans(l).1])?;
        let done = block(backend, &aa[l], &gg[l], &lam, &slice).map_err(|e| match e {
            Error::Numerical(m) => Error::Numerical(format!("layer {}: {m}", l + 1)),
            other => other,
        })?;
        backend.copy_range(&done, 0, &mut q, offset, len)?;
    }
    Ok(q)
}

/// `D` on the backend and on the host (P entries each).
pub struct NetworkDamping<B: Backend> {
    diag: B::Buf,
    host: Vec<f64>,
}

/// A batch of the fixed partition: its row indices on the backend.
pub struct NetworkChunk<B: Backend> {
    rows: B::Rows,
    len: usize,
}

impl<B: MlpOps + FisherOps> StochasticModel for MlpBilevel<B> {
    /// Step t's tape and deltas (`None` before the first step in the slot).
    type StepState = Option<(Tape<B>, Deltas<B>)>;
    type Curvature = MlpCurvature<B>;
    type Damping = NetworkDamping<B>;
    type Chunk = NetworkChunk<B>;

    fn check_options(&self, opts: &StochasticOptions) -> Result<()> {
        let dim = self.inner_dim();
        if opts.method == crate::hypergrad::Method::Nhgd
            && opts.representation == Representation::Dense
            && dim > DENSE_MAX_DIM
        {
            return Err(Error::option(
                "--curvature",
                format!("dense keeps a P×P matrix and allows P ≤ {DENSE_MAX_DIM}, but the network has P = {dim}; use kfac or lowrank"),
            ));
        }
        Ok(())
    }

    fn fisher_shape(&self) -> (usize, usize) {
        (1, self.inner_dim())
    }

    fn check_training_rows(&self, train: &Dataset) -> Result<()> {
        if train.n() != self.n_train() {
            return Err(Error::Dimension(
                "the training rows given to the stochastic estimator are not the problem's".into(),
            ));
        }
        Ok(())
    }

    fn step_basis(&self, w0: &B::Buf) -> Result<f64> {
        step_from_curvature(self, w0)
    }

    fn default_step(&self, step: f64) -> f64 {
        step
    }

    fn new_step_state(&self, _batch: usize) -> Result<Self::StepState> {
        Ok(None)
    }

    fn sgd_forward(
        &self,
        rows: &B::Rows,
        _eta: f64,
        w: &mut B::Buf,
        state: &mut Self::StepState,
    ) -> Result<()> {
        let b = self.backend();
        let net = self.network();
        // Frees step t − 2's tape and deltas first (the caller has waited for the side queue's
        // marker of that step), so this step's allocations may reuse their memory.
        *state = None;
        let data = MlpData {
            rows: Some(rows),
            ..self.train_data()
        };
        let tape = b.mlp_forward(net, data, w)?;
        let deltas = b.mlp_backward(net, data, &tape, w)?;
        *state = Some((tape, deltas));
        Ok(())
    }

    fn sgd_finish(
        &self,
        rows: &B::Rows,
        eta: f64,
        w: &mut B::Buf,
        state: &Self::StepState,
        g: &mut B::Buf,
    ) -> Result<()> {
        let b = self.backend();
        let (tape, deltas) = pass(state)?;
        let data = MlpData {
            rows: Some(rows),
            ..self.train_data()
        };
        let this = b.rows_len(rows) as f64;
        b.mlp_gradient(self.network(), data, tape, deltas, 1.0 / this, g)?;
        b.mul_add(1.0, self.reg_diag(), w, g)?;
        b.axpy(-eta, g, w)
    }

    fn row_weights(&self) -> Option<&[f64]> {
        self.weights_host()
    }

    fn step_weights(&self, spec: &FisherSpec) -> StepWeights {
        // kfac's gradient factor reads s_p from the rows' data on the backend.
        match spec.representation {
            Representation::Kfac => StepWeights::None,
            _ => StepWeights::Sqrt,
        }
    }

    fn damping(&self) -> Result<NetworkDamping<B>> {
        let host = damping(self.network(), self.lambda());
        Ok(NetworkDamping {
            diag: self.backend().upload(&host)?,
            host,
        })
    }

    fn regulariser<'a>(&'a self, damping: &'a NetworkDamping<B>) -> Regulariser<'a, B> {
        rows_regulariser(self.backend(), (&damping.diag, &damping.host))
    }

    fn start_curvature(
        &self,
        spec: &FisherSpec,
        damping: &NetworkDamping<B>,
    ) -> Result<MlpCurvature<B>> {
        MlpCurvature::start(self.backend(), self.network(), spec, &damping.diag)
    }

    fn gradient_rows_len(&self, spec: &FisherSpec) -> usize {
        match spec.representation {
            Representation::Kfac => 0,
            _ => spec.batch * self.inner_dim(),
        }
    }

    fn update_curvature(
        &self,
        queue: &B,
        spec: &FisherSpec,
        curvature: &mut MlpCurvature<B>,
        step: &StepView<'_, Self>,
        grads: &mut B::Buf,
    ) -> Result<()> {
        let (tape, deltas) = pass(step.state)?;
        let inputs = CurvatureStep {
            data: MlpData {
                rows: Some(step.rows),
                ..self.train_data()
            },
            tape,
            deltas,
            sqrt_weights: step.weights,
            sketch: step.sketch,
        };
        curvature.update(queue, self.network(), spec, &inputs, grads)
    }

    fn apply_inverse(
        &self,
        curvature: &MlpCurvature<B>,
        damping: &NetworkDamping<B>,
        a: &B::Buf,
        linear_tol: f64,
    ) -> Result<(B::Buf, usize)> {
        curvature.apply_inverse(
            self.backend(),
            self.network(),
            self.lambda(),
            (&damping.diag, &damping.host),
            a,
            linear_tol,
        )
    }

    fn has_operator(&self, curvature: &MlpCurvature<B>) -> bool {
        curvature.has_operator()
    }

    fn apply(
        &self,
        curvature: &MlpCurvature<B>,
        damping: &NetworkDamping<B>,
        v: &B::Buf,
        out: &mut B::Buf,
    ) -> Result<()> {
        curvature.apply(
            self.backend(),
            self.network(),
            self.lambda(),
            (&damping.diag, &damping.host),
            v,
            out,
        )
    }

    fn chunk(&self, _train: &Dataset, rows: &[usize]) -> Result<NetworkChunk<B>> {
        let indices: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        Ok(NetworkChunk {
            rows: self.backend().upload_rows(&indices, self.n_train())?,
            len: rows.len(),
        })
    }

    fn refresh_chunks(&self, _chunks: &mut [NetworkChunk<B>], _batch: usize) -> Result<()> {
        // The rows' weights s_i are read on the backend through the rows' indices.
        Ok(())
    }

    fn chunk_hvp(
        &self,
        chunk: &NetworkChunk<B>,
        w: &B::Buf,
        v: &B::Buf,
        out: &mut B::Buf,
    ) -> Result<()> {
        let b = self.backend();
        let net = self.network();
        let data = MlpData {
            rows: Some(&chunk.rows),
            ..self.train_data()
        };
        let tape = b.mlp_forward(net, data, w)?;
        let deltas = b.mlp_backward(net, data, &tape, w)?;
        b.mlp_hvp(
            net,
            data,
            &tape,
            &deltas,
            w,
            1.0 / chunk.len as f64,
            self.shift_curvature(),
            v,
            out,
        )?;
        b.mul_add(1.0, self.reg_diag(), v, out)
    }
}

/// The tape and deltas a step left (an error, not a panic, if the slot is empty).
fn pass<B: MlpOps>(state: &Option<(Tape<B>, Deltas<B>)>) -> Result<(&Tape<B>, &Deltas<B>)> {
    state
        .as_ref()
        .map(|(tape, deltas)| (tape, deltas))
        .ok_or_else(|| Error::Backend("an SGD step's tape was read before the step ran".into()))
}
