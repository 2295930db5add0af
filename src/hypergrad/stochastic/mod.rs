//! Stochastic hypergradients (SPEC §3, §5): NHGD and the optimise-then-approximate baselines
//! `stocbio`, `amigo` and `soba`, written once over an inner model ([`model::StochasticModel`]:
//! the linear models in [`glm`], networks in [`mlp`]; dataset distillation runs them on its
//! synthetic rows with its own `B` and θ, [`StochasticEstimator::estimate_with`]).
//!
//! Every method runs T steps of mini-batch SGD on the inner problem,
//! `w ← w − η ((1/b) Σ_p s_p ∇ℓ_p(w) + r ⊙ w)`, each step leaving what the batch's per-sample
//! gradients are made of on the backend (the linear models' factors, a network's tape). Then `q ≈ H⁻¹ a`, `a = ∇_w f(w)` on the
//! validation rows, and `h = −B(w)ᵀ q`:
//!
//! * `nhgd`: `q = Ĥ⁻¹ a` with `Ĥ` the damped empirical Fisher of the SGD steps' own
//!   per-sample gradients, tracked on a second queue (CUDA stream) while SGD goes on
//!   ([`fisher`](super::fisher) has the representations). The inner loop makes no host
//!   synchronisation and no host copy: batches, weights and sketches are uploaded before it.
//! * `stocbio` (Ji, Yang & Liang 2021): `q = β Σ_{k<K} Π_{j<k} (I − β H_{B_j}) a`, a truncated
//!   Neumann series with an independent mini-batch Hessian per factor.
//! * `amigo` (Arbel & Mairal 2022): K steps of SGD on `½ qᵀHq − aᵀq`,
//!   `q ← q − β (H_{B_k} q − a)`, warm-started from the previous outer step's q.
//! * `soba` (Dagréou et al. 2022): single loop — each of the T steps moves `w` by one SGD step
//!   and `q` by one step on the linear system at the new `w`, both warm-started; with `T = 1`
//!   (the textbook form) θ then moves after every joint step.
//!
//! Mini-batch Hessians of the baselines use a fixed partition of the training rows into
//! batches of b, each uploaded once (a batch is drawn uniformly among them). The error bound
//! of these estimates is `None`: no valid bound is known (SPEC §4).
//!
//! # Two queues
//!
//! NHGD's curvature update runs on a second queue (a second CUDA stream, [`Backend::fork`])
//! while SGD goes on: the update of step t reads only step t's state (and the batch's rows,
//! weights and sketch, uploaded before the loop), never `w`, so it overlaps the rest of step t
//! and step t + 1. The step states live in a ring of two slots, marker t mod 2 of each queue
//! ([`Backend::signal`], [`Backend::wait_for`]): the side queue waits for the main queue's
//! marker after step t's forward part before it reads slot t mod 2, and records its own
//! marker after the update; the main queue waits for that marker before step t + 2 overwrites
//! (or frees) the slot. The curvature state is allocated on the main queue before the loop and
//! read (the solve) after the main queue has waited for the last update. On the CPU the fork
//! is a clone and the markers are no-ops, so the loop is the sequential one;
//! [`StochasticEstimator::on_one_queue`] runs it so on any backend (the reference the CUDA
//! parity tests compare the two-queue loop with).

use std::time::Instant;

pub mod glm;
pub mod mlp;
pub mod model;

use super::fisher::{
    choose_dense_update, Averaging, DenseUpdate, DenseUpdateTiming, FisherSpec, Representation,
};
use super::refine::{self, LinearSystem, Refinement};
use super::{Hypergradient, Method};
use crate::backend::Backend;
use crate::data::rng::Rng;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::problem::Buf;
use crate::solver::linear;
use model::{StepView, StepWeights, StochasticModel};

/// `(w, q) ↦ B(w)ᵀq` of the bilevel problem an estimate is for.
pub type CrossTranspose<'a, B> =
    dyn Fn(&<B as Backend>::Buf, &<B as Backend>::Buf) -> Result<Vec<f64>> + 'a;

/// Options of the stochastic estimators (defaults by [`StochasticOptions::new`]).
#[derive(Clone, Copy, Debug)]
pub struct StochasticOptions {
    pub method: Method,
    /// T, inner SGD steps per estimate.
    pub inner_steps: usize,
    /// b, rows per mini-batch.
    pub batch: usize,
    /// SGD step η; `None`: `1/(L̂ + max r)`, `L̂` the data term's largest curvature with every
    /// row weight at 1 (an upper bound over θ), estimated once.
    pub inner_lr: Option<f64>,
    /// K, steps of the linear solve of `stocbio` and `amigo`.
    pub linear_steps: usize,
    /// β, step of the linear solve; `None`: the SGD step.
    pub linear_lr: Option<f64>,
    /// NHGD's curvature representation, dense update rule and averaging.
    pub representation: Representation,
    pub dense_update: DenseUpdate,
    pub averaging: Averaging,
    /// CG tolerance of NHGD's dense accumulate path.
    pub linear_tol: f64,
    /// Keep `w` (and `q`) from the previous estimate (warm start), or restart from zero.
    pub warm_start: bool,
    /// Also report `‖∇g(w)‖` (one extra pass over the training rows).
    pub diagnostics: bool,
    /// Seed of the mini-batches and sketches (mixed with the step number).
    pub seed: u64,
}

impl StochasticOptions {
    pub fn new(method: Method) -> Self {
        StochasticOptions {
            method,
            inner_steps: 100,
            batch: 64,
            inner_lr: None,
            linear_steps: 10,
            linear_lr: None,
            representation: Representation::Dense,
            dense_update: DenseUpdate::Woodbury,
            averaging: Averaging::Mean,
            linear_tol: 1e-6,
            warm_start: true,
            diagnostics: true,
            seed: 0,
        }
    }

    /// The Fisher spec of NHGD's curvature for a model whose spec shape is `shape`
    /// ([`StochasticModel::fisher_shape`]).
    pub fn fisher_spec(&self, shape: (usize, usize)) -> FisherSpec {
        FisherSpec {
            representation: self.representation,
            dense_update: self.dense_update,
            averaging: self.averaging,
            batch: self.batch,
            steps: self.inner_steps,
            shape,
        }
    }
}

/// What one estimate cost the host, measured across the inner loop only.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct LoopStats {
    pub inner_seconds: f64,
    pub inner_host_syncs: u64,
    pub inner_host_transfers: u64,
    /// How NHGD's dense representation was updated (woodbury or accumulate; None otherwise).
    pub fisher_update: Option<DenseUpdate>,
}

/// The per-step inputs of one inner loop, uploaded before it starts.
struct Prepared<B: Backend> {
    rows: Vec<B::Rows>,
    /// `s_p` or `√s_p` per step (NHGD's curvature update only: SGD reads the row weights on
    /// the backend), as the model asks ([`StochasticModel::step_weights`]).
    weights: Vec<Option<B::Buf>>,
    sketches: Vec<Option<B::Buf>>,
}

/// A stochastic estimator with the state it carries between outer steps.
pub struct StochasticEstimator<M: StochasticModel> {
    opts: StochasticOptions,
    /// The second queue NHGD's curvature update runs on; `None`: the update runs on the
    /// model's own queue in step order ([`Self::on_one_queue`]), or there is none.
    curvature_queue: Option<M::B>,
    /// Whether NHGD tracks the curvature; `false` only for the benchmark's baseline
    /// ([`Self::without_curvature`]).
    curvature: bool,
    w: Buf<M>,
    q: Option<Buf<M>>,
    n_train: usize,
    /// What the default SGD step is computed from ([`StochasticModel::step_basis`]); `None`
    /// when `--inner-lr` is given.
    step_basis: Option<f64>,
    /// The fixed partition of the sampled Hessians (stocbio, amigo, soba).
    chunks: Vec<M::Chunk>,
    /// What `--fisher-update auto` measured to make its choice (None when not auto).
    dense_update_timing: Option<DenseUpdateTiming>,
}

impl<M: StochasticModel> StochasticEstimator<M> {
    /// Sets the estimator up for `model`, whose training rows are `train`: checks the options,
    /// resolves `--fisher-update auto`, partitions the rows for the sampled Hessians and
    /// computes the default SGD step (when `--inner-lr` is not given).
    pub fn new(model: &M, train: &Dataset, opts: StochasticOptions) -> Result<Self> {
        if !Method::STOCHASTIC.contains(&opts.method) {
            return Err(Error::option(
                "--method",
                format!("{} is not a stochastic method", opts.method.name()),
            ));
        }
        model.check_training_rows(train)?;
        let b = model.backend();
        let n = train.n();
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
        for (name, v) in [
            ("--inner-lr", opts.inner_lr),
            ("--linear-lr", opts.linear_lr),
        ] {
            if let Some(v) = v {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(Error::option(name, format!("must be > 0, got {v}")));
                }
            }
        }
        model.check_options(&opts)?;
        let mut opts = opts;
        let mut dense_update_timing = None;
        let nhgd = opts.method == Method::Nhgd;
        if nhgd {
            let spec = opts.fisher_spec(model.fisher_shape());
            spec.validate()?;
            if opts.representation == Representation::Dense
                && opts.dense_update == DenseUpdate::Auto
            {
                let damping = model.damping()?;
                let (choice, timing) = choose_dense_update(b, &spec, &model.regulariser(&damping))?;
                opts.dense_update = choice;
                dense_update_timing = timing;
            }
        }
        let chunks = if nhgd {
            Vec::new()
        } else {
            let order = Rng::new(opts.seed ^ 0x5EED_BA7C).permutation(n);
            order
                .chunks(opts.batch)
                .map(|rows| model.chunk(train, rows))
                .collect::<Result<_>>()?
        };
        let w = model.initial_point()?;
        let step_basis = match opts.inner_lr {
            // A power iteration over all training rows: only when the step is not given.
            Some(_) => None,
            None => Some(model.step_basis(&w)?),
        };
        Ok(StochasticEstimator {
            curvature_queue: if nhgd { Some(b.fork()?) } else { None },
            curvature: true,
            w,
            q: None,
            n_train: n,
            step_basis,
            chunks,
            dense_update_timing,
            opts,
        })
    }

    /// The same outer step with no curvature tracked (`q = 0`: the SGD loop, `∇_w f` and
    /// `−Bᵀq`): the baseline that `hypergrad bench nhgd --model mlp:…` times NHGD against.
    /// Its hypergradient is 0.
    pub fn without_curvature(mut self) -> Self {
        self.curvature = false;
        // No update, no second queue to keep (nor its cuBLAS handle).
        self.curvature_queue = None;
        self
    }

    /// The same estimator with the curvature update on the model's own queue, after each
    /// step's forward part, instead of on a second queue: no overlap and no markers. The
    /// result is the two-queue loop's (the same operations on the same inputs); tests compare
    /// the two.
    pub fn on_one_queue(mut self) -> Self {
        self.curvature_queue = None;
        self
    }

    /// The current inner iterate.
    pub fn w(&self) -> &Buf<M> {
        &self.w
    }

    /// Restores the carried state (for resuming a checkpointed run).
    pub fn restore(&mut self, backend: &M::B, w: &[f64], q: Option<&[f64]>) -> Result<()> {
        if w.len() != backend.len(&self.w) {
            return Err(Error::Dimension(format!(
                "the checkpoint's inner variable has {} entries, the problem {}",
                w.len(),
                backend.len(&self.w)
            )));
        }
        self.w = backend.upload(w)?;
        self.q = q.map(|q| backend.upload(q)).transpose()?;
        Ok(())
    }

    /// The carried state `(w, q)` on the host.
    pub fn state(&self, backend: &M::B) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
        Ok((
            backend.download(&self.w)?,
            self.q.as_ref().map(|q| backend.download(q)).transpose()?,
        ))
    }

    /// Recomputes the default SGD step's basis after the model's training rows moved (dataset
    /// distillation: the step follows their curvature). Nothing when `--inner-lr` is given.
    pub fn refresh_step(&mut self, model: &M) -> Result<()> {
        if self.step_basis.is_some() {
            self.step_basis = Some(model.step_basis(&model.initial_point()?)?);
        }
        Ok(())
    }

    /// The SGD step at the model's current θ.
    pub fn inner_lr(&self, model: &M) -> f64 {
        match (self.opts.inner_lr, self.step_basis) {
            (Some(eta), _) => eta,
            (None, Some(basis)) => model.default_step(basis),
            (None, None) => f64::NAN,
        }
    }

    /// The dense update in use (after `auto` was resolved) and what `auto` measured.
    pub fn dense_update(&self) -> (DenseUpdate, Option<DenseUpdateTiming>) {
        (self.opts.dense_update, self.dense_update_timing)
    }

    /// One hypergradient estimate at the model's current θ; `step` (the outer step) seeds the
    /// mini-batches, so the same seed and step always draw the same batches.
    pub fn estimate(&mut self, model: &M, step: u64) -> Result<(Hypergradient, LoopStats)> {
        self.estimate_with(model, step, &|w, q| model.cross_t(w, q), model.theta())
    }

    /// [`Self::estimate`] for a bilevel problem whose inner problem is `model` but whose θ
    /// and cross derivative are its own (dataset distillation, where θ is the training rows):
    /// `h = −cross_t(w, q)`, reported at `theta`.
    pub fn estimate_with(
        &mut self,
        model: &M,
        step: u64,
        cross_t: &CrossTranspose<'_, M::B>,
        theta: &[f64],
    ) -> Result<(Hypergradient, LoopStats)> {
        let started = Instant::now();
        let b = model.backend();
        let p = model.inner_dim();
        if !self.opts.warm_start {
            self.w = model.initial_point()?;
            self.q = None;
        }
        let mut rng = Rng::new(self.opts.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let eta = self.inner_lr(model);
        let beta = self.opts.linear_lr.unwrap_or(eta);
        let mut a = b.zeros(p)?;
        let spec = self.opts.fisher_spec(model.fisher_shape());
        let prepared = self.prepare(model, &spec, &mut rng)?;
        let mut solved = None;
        let (q, stats, linear_iters, outer_loss) = match self.opts.method {
            Method::Nhgd => {
                let damping = model.damping()?;
                // On the main queue, though the side queue writes it (module docs).
                let mut curvature = model.start_curvature(&spec, &damping)?;
                let mut stats =
                    self.nhgd_inner_loop(model, &prepared, &spec, &mut curvature, eta)?;
                if self.opts.representation == Representation::Dense {
                    stats.fisher_update = Some(self.opts.dense_update);
                }
                let outer_loss = model.outer_value_grad(&self.w, Some(&mut a))?;
                let (q, iters) = if self.curvature {
                    model.apply_inverse(&curvature, &damping, &a, self.opts.linear_tol)?
                } else {
                    (b.zeros(p)?, 0)
                };
                if self.curvature {
                    solved = Some((curvature, damping));
                }
                (q, stats, iters, outer_loss)
            }
            Method::Soba => {
                model.refresh_chunks(&mut self.chunks, self.opts.batch)?;
                let loop_start = Instant::now();
                let traffic = b.host_traffic();
                let mut q = self.take_q(b, p)?;
                let mut scratch = b.zeros(p)?;
                let mut outer_loss = 0.0;
                let mut state = model.new_step_state(self.opts.batch)?;
                for rows in &prepared.rows {
                    model.sgd_forward(rows, eta, &mut self.w, &mut state)?;
                    model.sgd_finish(rows, eta, &mut self.w, &state, &mut scratch)?;
                    outer_loss = model.outer_value_grad(&self.w, Some(&mut a))?;
                    let chunk = rng.below(self.chunks.len());
                    self.linear_sgd_step(model, chunk, &a, beta, &mut q, &mut scratch)?;
                }
                let stats = loop_stats(b, loop_start, traffic)?;
                (q, stats, prepared.rows.len(), outer_loss)
            }
            Method::Stocbio | Method::Amigo => {
                // The chunks' weights feed the sampled Hessians of the linear solve only:
                // AmIGO with no linear steps (the plain SGD loop of `bench nhgd`) reads none.
                if self.opts.method == Method::Stocbio || self.opts.linear_steps > 0 {
                    model.refresh_chunks(&mut self.chunks, self.opts.batch)?;
                }
                let loop_start = Instant::now();
                let traffic = b.host_traffic();
                let mut state = model.new_step_state(self.opts.batch)?;
                let mut scratch = b.zeros(p)?;
                for rows in &prepared.rows {
                    model.sgd_forward(rows, eta, &mut self.w, &mut state)?;
                    model.sgd_finish(rows, eta, &mut self.w, &state, &mut scratch)?;
                }
                let stats = loop_stats(b, loop_start, traffic)?;
                let outer_loss = model.outer_value_grad(&self.w, Some(&mut a))?;
                let q = if self.opts.method == Method::Stocbio {
                    self.neumann(model, &a, beta, &mut rng)?
                } else {
                    let mut q = self.take_q(b, p)?;
                    for _ in 0..self.opts.linear_steps {
                        let chunk = rng.below(self.chunks.len());
                        self.linear_sgd_step(model, chunk, &a, beta, &mut q, &mut scratch)?;
                    }
                    q
                };
                (q, stats, self.opts.linear_steps, outer_loss)
            }
            _ => unreachable!("checked in new()"),
        };
        let mut q = q;
        let mut hypergradient: Vec<f64> = cross_t(&self.w, &q)?.iter().map(|v| -v).collect();
        // NHGD's solve, checked and refined where Ĥ can be applied (super::refine).
        let (residual_norm, refinement, linear_iters) = match &solved {
            Some((curvature, damping)) if model.has_operator(curvature) => {
                let (check, iters) = refine::refine(
                    b,
                    Refinement::for_precision(b.precision()),
                    &a,
                    &mut q,
                    &mut hypergradient,
                    &mut LinearSystem {
                        apply: |v: &Buf<M>, out: &mut Buf<M>| {
                            model.apply(curvature, damping, v, out)
                        },
                        solve: |r: &Buf<M>| {
                            model.apply_inverse(curvature, damping, r, self.opts.linear_tol)
                        },
                        cross_t: |d: &Buf<M>| cross_t(&self.w, d),
                    },
                )?;
                (
                    Some(check.residual_norm),
                    check.report,
                    linear_iters + iters,
                )
            }
            _ => (None, Default::default(), linear_iters),
        };
        let inner_grad_norm = if self.opts.diagnostics {
            let mut g = b.zeros(p)?;
            model.inner_value_grad(&self.w, Some(&mut g))?;
            b.nrm2(&g)?
        } else {
            f64::NAN
        };
        if matches!(self.opts.method, Method::Amigo | Method::Soba) {
            self.q = Some(q);
        }
        let result = Hypergradient {
            method: self.opts.method,
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

    /// Draws the T mini-batches (consecutive slices of seeded permutations of the rows, a new
    /// one when one is used up) with NHGD's per-step weights and sketches, and uploads them,
    /// so the inner loop needs nothing from the host. Everything is drawn first (the RNG order
    /// is that of one step after the other: its rows, then its sketch) and then copied in per
    /// kind, all T steps at once: a handful of host copies per estimate whatever T (one each on
    /// CUDA costs an allocation and a blocking copy, which at T = 100 used to take longer than
    /// the inner loop itself).
    fn prepare(&self, model: &M, spec: &FisherSpec, rng: &mut Rng) -> Result<Prepared<M::B>> {
        let b = model.backend();
        let (batch, steps, n) = (self.opts.batch, self.opts.inner_steps, self.n_train);
        // Drawn for NHGD whether or not it tracks the curvature (the benchmark's baseline), so
        // that both draw the same rows.
        let nhgd = self.opts.method == Method::Nhgd;
        let sketch_rank = match (nhgd, self.opts.representation) {
            (true, Representation::Lowrank { rank }) => Some(rank),
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
            if let Some(r) = sketch_rank {
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
        let per_step = |values: Option<Vec<f64>>, part: usize| -> Result<Vec<Option<Buf<M>>>> {
            Ok(match values {
                Some(v) => b.upload_parts(&v, part)?.into_iter().map(Some).collect(),
                None => (0..steps).map(|_| None).collect(),
            })
        };
        let weights = match (nhgd, model.row_weights(), model.step_weights(spec)) {
            (true, Some(s), StepWeights::Plain) => {
                Some(rows.iter().map(|&r| s[r as usize]).collect())
            }
            (true, Some(s), StepWeights::Sqrt) => {
                Some(rows.iter().map(|&r| s[r as usize].sqrt()).collect())
            }
            _ => None,
        };
        Ok(Prepared {
            weights: per_step(weights, batch)?,
            sketches: per_step(sketch_rank.map(|_| signs), sketch_rank.unwrap_or(1) * batch)?,
            rows: b.upload_batches(&rows, batch, n)?,
        })
    }

    /// NHGD's inner loop: SGD on the main queue, the curvature update on the second queue
    /// (or, without one, on the main queue in step order), overlapping the rest of the step
    /// and the next one (module docs, "Two queues"). Returns when the main queue has waited for
    /// the last update.
    fn nhgd_inner_loop(
        &mut self,
        model: &M,
        prepared: &Prepared<M::B>,
        spec: &FisherSpec,
        curvature: &mut M::Curvature,
        eta: f64,
    ) -> Result<LoopStats> {
        let main = model.backend();
        let batch = self.opts.batch;
        let mut states = [model.new_step_state(batch)?, model.new_step_state(batch)?];
        let mut grads = main.zeros(if self.curvature {
            model.gradient_rows_len(spec)
        } else {
            0
        })?;
        let mut scratch = main.zeros(model.inner_dim())?;
        let loop_start = Instant::now();
        let traffic = main.host_traffic();
        let side = if self.curvature {
            self.curvature_queue.as_ref()
        } else {
            None
        };
        let w = &mut self.w;
        let tracking = self.curvature;
        let looped = (|| -> Result<()> {
            for (t, rows) in prepared.rows.iter().enumerate() {
                let slot = t % 2;
                if let (Some(side), true) = (side, t >= 2) {
                    // Step t − 2's update has read this slot only once the side queue passes
                    // its marker t mod 2 (not yet recorded again for step t).
                    main.wait_for(side, slot)?;
                }
                model.sgd_forward(rows, eta, w, &mut states[slot])?;
                if tracking {
                    let queue = match side {
                        Some(side) => {
                            main.signal(slot)?;
                            side.wait_for(main, slot)?;
                            side
                        }
                        None => main,
                    };
                    let step = StepView {
                        rows,
                        state: &states[slot],
                        weights: prepared.weights[t].as_ref(),
                        sketch: prepared.sketches[t].as_ref(),
                    };
                    model.update_curvature(queue, spec, curvature, &step, &mut grads)?;
                    if let Some(side) = side {
                        side.signal(slot)?;
                    }
                }
                model.sgd_finish(rows, eta, w, &states[slot], &mut scratch)?;
            }
            if let Some(side) = side {
                // Every update is done before the solve reads the state or anything is freed.
                main.wait_for(side, (prepared.rows.len() - 1) % 2)?;
            }
            Ok(())
        })();
        if looped.is_err() {
            if let Some(side) = side {
                // A step failed with updates that may still read the step states and fill
                // `grads` (no marker covers them yet); they are freed on the main queue below,
                // which does not wait for the side queue, so let it finish first. The loop's
                // error is the one reported.
                let _ = side.synchronize();
            }
        }
        drop((states, grads));
        looped?;
        loop_stats(main, loop_start, traffic)
    }

    fn take_q(&mut self, b: &M::B, p: usize) -> Result<Buf<M>> {
        match self.q.take() {
            Some(q) => Ok(q),
            None => b.zeros(p),
        }
    }

    /// `q ← q − β (H_B q − a)` on chunk `k` (`scratch`: P entries).
    fn linear_sgd_step(
        &self,
        model: &M,
        k: usize,
        a: &Buf<M>,
        beta: f64,
        q: &mut Buf<M>,
        scratch: &mut Buf<M>,
    ) -> Result<()> {
        let b = model.backend();
        model.chunk_hvp(&self.chunks[k], &self.w, q, scratch)?;
        b.axpy(-1.0, a, scratch)?;
        b.axpy(-beta, scratch, q)
    }

    /// `q = β Σ_{k<K} Π_{j<k} (I − β H_{B_j}) a` (stocbio).
    fn neumann(&self, model: &M, a: &Buf<M>, beta: f64, rng: &mut Rng) -> Result<Buf<M>> {
        let b = model.backend();
        let mut term = linear::duplicate(b, a)?;
        let mut q = linear::duplicate(b, a)?;
        b.scal(beta, &mut q)?;
        let mut hv = b.zeros(b.len(a))?;
        for _ in 1..self.opts.linear_steps {
            let k = rng.below(self.chunks.len());
            model.chunk_hvp(&self.chunks[k], &self.w, &term, &mut hv)?;
            b.axpy(-beta, &hv, &mut term)?;
            b.axpy(beta, &term, &mut q)?;
        }
        Ok(q)
    }
}

/// The host traffic of a loop since `before` (of `b` and its forks: the counters are shared),
/// then (after waiting for the device, which is not counted) its time.
pub(super) fn loop_stats<B: Backend>(
    b: &B,
    started: Instant,
    before: (u64, u64),
) -> Result<LoopStats> {
    let after = b.host_traffic();
    b.synchronize()?;
    Ok(LoopStats {
        inner_seconds: started.elapsed().as_secs_f64(),
        inner_host_syncs: after.0 - before.0,
        inner_host_transfers: after.1 - before.1,
        fisher_update: None,
    })
}
