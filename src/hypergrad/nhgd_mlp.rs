//! NHGD for the network problems (SPEC §5, §8): T steps of mini-batch SGD on the inner
//! problem, whose per-sample gradients feed the damped empirical Fisher `Ĥ = F + D`, then
//! `q = Ĥ⁻¹ ∇_w f(w)` and `h = −B(w)ᵀ q`.
//!
//! Each SGD step runs the network forward and backward over its b rows once; the same tape and
//! deltas give the step `w ← w − η ((1/b) Σ_p s_p ∇ℓ_p + r ⊙ w)` and the curvature update
//! (at the point the gradients were taken, as for the linear models):
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
//! `H(w₀)` may be indefinite):
//! a heuristic, where the linear models' default is a bound; `--inner-lr` chooses it.
//!
//! `stocbio`, `amigo` and `soba` are not implemented for networks (refused by
//! [`MlpNhgd::new`]).
//!
//! # Two queues
//!
//! As for the linear models, the curvature update runs on a second queue (a second CUDA
//! stream, [`Backend::fork`]) while SGD goes on: the update of step t reads only step t's
//! tape and deltas (and the batch's rows, `√s_p` and sketch, uploaded before the loop), never
//! `w`, so it overlaps the SGD step and the next step's forward and backward passes. On the
//! CPU the fork is a clone and the markers are no-ops, so the loop is the sequential one.
//!
//! The ordering, with marker t mod 2 of each queue ([`Backend::signal`],
//! [`Backend::wait_for`]):
//!
//! * the side queue waits for the main queue's marker recorded after step t's backward pass
//!   before it reads the tape and deltas, and records its own marker after the update;
//! * the tape and deltas are fresh buffers of the main queue every step, and a device buffer
//!   is freed on the queue that allocated it, in that queue's order, without waiting for any
//!   other queue (the CUDA backend runs its context without cudarc's per-buffer events, see
//!   [`crate::backend::cuda`]): dropping step t's tape on the main queue as soon as step t
//!   ends would let step t + 1's allocations reuse that memory while the side queue still
//!   reads it. So they are kept in a ring of two slots, and step t frees step t − 2's only
//!   after the main queue has waited for the side queue's marker of that step (the linear
//!   loop's double-buffered factors, here the buffers the forward pass allocates);
//! * the state the side queue writes (K-FAC's factors, the dense or lowrank tracker, the
//!   gradient-rows scratch) is allocated on the main queue before the loop, is touched by the
//!   side queue only between its wait for the main queue and its marker, and is read (the
//!   solve) and freed on the main queue after it has waited for the side queue's last marker,
//!   which ends the loop. The update's own temporaries live and die on the side queue.
//!
//! [`MlpNhgd::on_one_queue`] runs the update on the main queue instead, in step order: the
//! reference the two-queue loop is compared with (`tests/mlp_cuda_parity.rs`).

use std::time::Instant;

use super::fisher::{
    choose_dense_update, kfac_apply, kfac_solve, DenseUpdate, FisherSpec, FisherTracker,
    Regulariser, Representation,
};
use super::refine::{self, LinearSystem, Refinement};
use super::stochastic::{loop_stats, CrossTranspose, LoopStats, StochasticOptions};
use super::{Hypergradient, Method};
use crate::backend::mlp::{Deltas, MlpData, MlpOps, Network, Tape};
use crate::backend::{Backend, FisherOps, Groups};
use crate::data::rng::Rng;
use crate::error::{Error, Result};
use crate::problem::{Bilevel, InnerProblem, MlpBilevel};
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

/// The NHGD estimator of a network problem, with the inner iterate it carries between outer
/// steps.
pub struct MlpNhgd<B: MlpOps + FisherOps> {
    opts: StochasticOptions,
    w: B::Buf,
    n_train: usize,
    /// `1/L̂` at `w₀` (module docs); not computed when `--inner-lr` is given.
    default_lr: f64,
    /// Whether the loop tracks the curvature; `false` only for the benchmark's baseline
    /// ([`MlpNhgd::without_curvature`]).
    curvature: bool,
    /// The second queue the curvature update runs on, a fork of the backend of the problem
    /// given to [`MlpNhgd::new`] (module docs, "Two queues"); `None`: the update runs on the
    /// problem's own queue ([`MlpNhgd::on_one_queue`]).
    curvature_queue: Option<B>,
}

impl<B: MlpOps + FisherOps> MlpNhgd<B> {
    /// Checks the options against the problem and resolves `--fisher-update auto`.
    pub fn new(problem: &MlpBilevel<B>, opts: StochasticOptions) -> Result<Self> {
        if opts.method != Method::Nhgd {
            return Err(Error::option(
                "--method",
                format!(
                    "{} is not implemented for networks (--model mlp:…): use nhgd, or exact, cg, neumann, fixed-point",
                    opts.method.name()
                ),
            ));
        }
        let b = problem.backend();
        let n = problem.n_train();
        let dim = problem.inner_dim();
        if opts.batch == 0 || opts.batch > n {
            return Err(Error::option(
                "--batch-size",
                format!(
                    "must be between 1 and the {n} training rows, got {}",
                    opts.batch
                ),
            ));
        }
        if opts.inner_steps == 0 {
            return Err(Error::option("--inner-steps", "must be at least 1"));
        }
        if let Some(v) = opts.inner_lr {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::option("--inner-lr", format!("must be > 0, got {v}")));
            }
        }
        if opts.representation == Representation::Dense && dim > DENSE_MAX_DIM {
            return Err(Error::option(
                "--curvature",
                format!("dense keeps a P×P matrix and allows P ≤ {DENSE_MAX_DIM}, but the network has P = {dim}; use kfac or lowrank"),
            ));
        }
        let mut opts = opts;
        let spec = fisher_spec(&opts, dim);
        spec.validate()?;
        if opts.representation == Representation::Dense && opts.dense_update == DenseUpdate::Auto {
            let host = damping(problem.network(), problem.lambda());
            let diag = b.upload(&host)?;
            let reg = Regulariser {
                backend: b,
                diag: &diag,
                groups: Groups::Each,
                lambda: &host,
            };
            opts.dense_update = choose_dense_update(b, &spec, &reg)?.0;
        }
        let w = problem.initial_point()?;
        let default_lr = match opts.inner_lr {
            // The power iteration costs 50 Hessian-vector products over all training rows:
            // only when the step is not given.
            Some(_) => f64::NAN,
            None => step_from_curvature(problem, &w)?,
        };
        Ok(MlpNhgd {
            opts,
            w,
            n_train: n,
            default_lr,
            curvature: true,
            curvature_queue: Some(b.fork()?),
        })
    }

    /// The same outer step with no curvature tracked (`q = 0`: the SGD loop, `∇_w f` and
    /// `−Bᵀq`): the baseline that `hypergrad bench nhgd --model mlp:…` times NHGD against,
    /// as the linear bench's `sgd loop only` case. Its hypergradient is 0.
    pub fn without_curvature(mut self) -> Self {
        self.curvature = false;
        // No update, no second stream to keep (nor its cuBLAS handle).
        self.curvature_queue = None;
        self
    }

    /// The same estimator with the curvature update on the problem's own queue, after each
    /// step's backward pass, instead of on a second queue: no overlap and no markers. The
    /// result is the two-queue loop's (the same operations on the same inputs); tests compare
    /// the two.
    pub fn on_one_queue(mut self) -> Self {
        self.curvature_queue = None;
        self
    }

    /// The current inner iterate.
    pub fn w(&self) -> &B::Buf {
        &self.w
    }

    /// The SGD step in use.
    pub fn inner_lr(&self) -> f64 {
        self.opts.inner_lr.unwrap_or(self.default_lr)
    }

    /// The dense update in use (`auto` resolved).
    pub fn dense_update(&self) -> DenseUpdate {
        self.opts.dense_update
    }

    /// Restores the carried iterate (resuming a checkpointed run).
    pub fn restore(&mut self, backend: &B, w: &[f64]) -> Result<()> {
        if w.len() != backend.len(&self.w) {
            return Err(Error::Dimension(format!(
                "the checkpoint's inner variable has {} entries, the network {}",
                w.len(),
                backend.len(&self.w)
            )));
        }
        self.w = backend.upload(w)?;
        Ok(())
    }

    /// Recomputes the default SGD step at `w₀` (when `--inner-lr` is not given): for a problem
    /// whose training rows moved (dataset distillation), since the step follows their
    /// curvature.
    pub fn refresh_inner_lr(&mut self, problem: &MlpBilevel<B>) -> Result<()> {
        if self.opts.inner_lr.is_none() {
            self.default_lr = step_from_curvature(problem, &problem.initial_point()?)?;
        }
        Ok(())
    }

    /// One hypergradient estimate at the problem's current θ; `step` (the outer step) seeds
    /// the mini-batches. Warm start keeps `w` from the last estimate; cold start restarts from
    /// `w₀`.
    pub fn estimate(
        &mut self,
        problem: &MlpBilevel<B>,
        step: u64,
    ) -> Result<(Hypergradient, LoopStats)> {
        self.estimate_with(
            problem,
            step,
            &|w, q| problem.cross_t(w, q),
            problem.theta(),
        )
    }

    /// [`MlpNhgd::estimate`] for a problem whose θ is not `problem`'s own: `cross(w, q)` is its
    /// `Bᵀq` and `theta` its θ, while `problem` supplies the inner loss, its rows and `∇_w f`
    /// (dataset distillation: the network problem on the synthetic rows θ).
    pub fn estimate_with(
        &mut self,
        problem: &MlpBilevel<B>,
        step: u64,
        cross: &CrossTranspose<'_, B>,
        theta: &[f64],
    ) -> Result<(Hypergradient, LoopStats)> {
        let started = Instant::now();
        let b = problem.backend();
        let net = problem.network();
        let dim = net.dim();
        let batch = self.opts.batch;
        if !self.opts.warm_start {
            self.w = problem.initial_point()?;
        }
        let mut rng = Rng::new(self.opts.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let spec = fisher_spec(&self.opts, dim);
        let prepared = self.prepare(problem, &mut rng)?;
        let damping_host = damping(net, problem.lambda());
        let damping_buf = b.upload(&damping_host)?;
        // On the main queue, though the side queue writes them (module docs, "Two queues").
        let mut curvature = MlpCurvature::start(b, net, &spec, &damping_buf)?;
        let mut grads = b.zeros(match spec.representation {
            Representation::Kfac => 0,
            _ => batch * dim,
        })?;
        let mut stats = self.inner_loop(problem, &prepared, &mut curvature, &mut grads)?;
        stats.fisher_update =
            (spec.representation == Representation::Dense).then_some(self.opts.dense_update);
        let mut a = b.zeros(dim)?;
        let outer_loss = problem.outer_value_grad(&self.w, Some(&mut a))?;
        let (q, linear_iters) = if self.curvature {
            curvature.apply_inverse(
                b,
                net,
                problem.lambda(),
                (&damping_buf, &damping_host),
                &a,
                self.opts.linear_tol,
            )?
        } else {
            (b.zeros(dim)?, 0)
        };
        let mut q = q;
        let mut hypergradient: Vec<f64> = cross(&self.w, &q)?.iter().map(|v| -v).collect();
        // The solve, checked and refined where Ĥ can be applied (super::refine).
        let (residual_norm, refinement, linear_iters) =
            if self.curvature && curvature.has_operator() {
                let damping = (&damping_buf, damping_host.as_slice());
                let (check, iters) = refine::refine(
                    b,
                    Refinement::for_precision(b.precision()),
                    &a,
                    &mut q,
                    &mut hypergradient,
                    &mut LinearSystem {
                        apply: |v: &B::Buf, out: &mut B::Buf| {
                            curvature.apply(b, net, problem.lambda(), damping, v, out)
                        },
                        solve: |r: &B::Buf| {
                            curvature.apply_inverse(
                                b,
                                net,
                                problem.lambda(),
                                damping,
                                r,
                                self.opts.linear_tol,
                            )
                        },
                        cross_t: |d: &B::Buf| cross(&self.w, d),
                    },
                )?;
                (
                    Some(check.residual_norm),
                    check.report,
                    linear_iters + iters,
                )
            } else {
                (None, Default::default(), linear_iters)
            };
        let inner_grad_norm = if self.opts.diagnostics {
            let mut g = b.zeros(dim)?;
            problem.inner_value_grad(&self.w, Some(&mut g))?;
            b.nrm2(&g)?
        } else {
            f64::NAN
        };
        let result = Hypergradient {
            method: Method::Nhgd,
            theta: theta.to_vec(),
            outer_loss,
            hypergradient,
            inner_grad_norm,
            residual_norm,
            refinement,
            error_bound: None,
            inner_iters: self.opts.inner_steps,
            linear_iters,
            inner_converged: false,
            seconds: started.elapsed().as_secs_f64(),
            extra: (),
            w: Vec::new(),
        };
        Ok((result, stats))
    }

    /// The T SGD steps from `self.w`, each step's curvature update on the curvature queue
    /// (module docs, "Two queues"); returns when the main queue has waited for the last update.
    fn inner_loop(
        &mut self,
        problem: &MlpBilevel<B>,
        prepared: &Prepared<B>,
        curvature: &mut MlpCurvature<B>,
        grads: &mut B::Buf,
    ) -> Result<LoopStats> {
        let main = problem.backend();
        let loop_start = Instant::now();
        let traffic = main.host_traffic();
        // Step t's tape and deltas, in slot t mod 2 until step t + 2 (module docs).
        let mut held = [None, None];
        let looped = self.steps(problem, prepared, curvature, grads, &mut held);
        if looped.is_err() {
            if let (Some(side), true) = (&self.curvature_queue, self.curvature) {
                // A step failed, maybe with updates still reading the held tapes that no marker
                // covers yet (an update that failed halfway): let the side queue finish before
                // they are freed. The loop's error is the one reported, not the sync's.
                let _ = side.synchronize();
            }
        }
        drop(held);
        looped?;
        loop_stats(main, loop_start, traffic)
    }

    /// The loop of [`MlpNhgd::inner_loop`], keeping each step's tape and deltas in `held`.
    fn steps(
        &mut self,
        problem: &MlpBilevel<B>,
        prepared: &Prepared<B>,
        curvature: &mut MlpCurvature<B>,
        grads: &mut B::Buf,
        held: &mut [Option<(Tape<B>, Deltas<B>)>; 2],
    ) -> Result<()> {
        let main = problem.backend();
        let side = if self.curvature {
            self.curvature_queue.as_ref()
        } else {
            None
        };
        let net = problem.network();
        let spec = fisher_spec(&self.opts, net.dim());
        let eta = self.inner_lr();
        let train = problem.train_data();
        let mut g = main.zeros(net.dim())?;
        for (t, rows) in prepared.rows.iter().enumerate() {
            let slot = t % 2;
            if let (Some(side), true) = (side, t >= 2) {
                // Step t − 2's update has read the tape and deltas of this slot only once the
                // side queue passes its marker t mod 2 (not yet recorded again for step t).
                main.wait_for(side, slot)?;
            }
            // Frees step t − 2's tape and deltas, on the main queue, after that wait.
            held[slot] = None;
            let data = MlpData {
                rows: Some(rows),
                ..train
            };
            let tape = main.mlp_forward(net, data, &self.w)?;
            let deltas = main.mlp_backward(net, data, &tape, &self.w)?;
            let (tape, deltas) = {
                let kept = held[slot].insert((tape, deltas));
                (&kept.0, &kept.1)
            };
            if self.curvature {
                let queue = match side {
                    Some(side) => {
                        main.signal(slot)?;
                        side.wait_for(main, slot)?;
                        side
                    }
                    None => main,
                };
                let inputs = CurvatureStep {
                    data,
                    tape,
                    deltas,
                    sqrt_weights: prepared.sqrt_weights[t].as_ref(),
                    sketch: prepared.sketches[t].as_ref(),
                };
                curvature.update(queue, net, &spec, &inputs, grads)?;
                if let Some(side) = side {
                    side.signal(slot)?;
                }
            }
            let this = main.rows_len(rows) as f64;
            main.mlp_gradient(net, data, tape, deltas, 1.0 / this, &mut g)?;
            main.mul_add(1.0, problem.reg_diag(), &self.w, &mut g)?;
            main.axpy(-eta, &g, &mut self.w)?;
        }
        if let Some(side) = side {
            // Every update is done before the solve reads the state or anything is freed.
            main.wait_for(side, (prepared.rows.len() - 1) % 2)?;
        }
        Ok(())
    }

    /// Draws the T mini-batches (cycling through seeded permutations of the rows, as for the
    /// linear models) with their `√s_p` and sketches, and uploads them before the loop.
    fn prepare(&self, problem: &MlpBilevel<B>, rng: &mut Rng) -> Result<Prepared<B>> {
        let b = problem.backend();
        let (batch, steps, n) = (self.opts.batch, self.opts.inner_steps, self.n_train);
        let rank = match self.opts.representation {
            Representation::Lowrank { rank } => Some(rank),
            _ => None,
        };
        let mut order = rng.permutation(n);
        let mut cursor = 0;
        let mut rows: Vec<u32> = Vec::with_capacity(steps * batch);
        let mut signs: Vec<f64> = Vec::new();
        for _ in 0..steps {
            for _ in 0..batch {
                if cursor == n {
                    order = rng.permutation(n);
                    cursor = 0;
                }
                rows.push(order[cursor] as u32);
                cursor += 1;
            }
            if let Some(r) = rank {
                let scale = 1.0 / (r as f64).sqrt();
                signs.extend((0..r * batch).map(|_| {
                    if rng.next_u64() >> 63 == 0 {
                        scale
                    } else {
                        -scale
                    }
                }));
            }
        }
        let none = || (0..steps).map(|_| None).collect::<Vec<_>>();
        let sqrt_weights = match (problem.weights_host(), self.opts.representation) {
            (Some(s), Representation::Dense | Representation::Lowrank { .. }) => {
                let root: Vec<f64> = rows.iter().map(|&r| s[r as usize].sqrt()).collect();
                b.upload_parts(&root, batch)?
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            _ => none(),
        };
        let sketches = match rank {
            Some(r) => b
                .upload_parts(&signs, r * batch)?
                .into_iter()
                .map(Some)
                .collect(),
            None => none(),
        };
        Ok(Prepared {
            rows: b.upload_batches(&rows, batch, n)?,
            sqrt_weights,
            sketches,
        })
    }
}

/// The per-step inputs of one inner loop, uploaded before it starts.
struct Prepared<B: Backend> {
    rows: Vec<B::Rows>,
    sqrt_weights: Vec<Option<B::Buf>>,
    sketches: Vec<Option<B::Buf>>,
}

/// The Fisher spec of a network with P parameters (`shape = (1, P)`: dense and lowrank see
/// only P).
pub fn fisher_spec(opts: &StochasticOptions, dim: usize) -> FisherSpec {
    FisherSpec {
        representation: opts.representation,
        dense_update: opts.dense_update,
        averaging: opts.averaging,
        batch: opts.batch,
        steps: opts.inner_steps,
        shape: (1, dim),
    }
}
