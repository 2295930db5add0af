//! Stochastic hypergradients of the GLM problems (SPEC §3, §5): NHGD and the
//! optimise-then-approximate baselines `stocbio`, `amigo` and `soba`, on one machinery.
//!
//! Every method runs T steps of mini-batch SGD on the inner problem,
//! `w ← w − η ((1/b) Σ_p s_p ∇ℓ_p(w) + r ⊙ w)`, with the fused SGD kernel, which leaves the
//! batch's per-sample gradient factors on the backend. Then `q ≈ H⁻¹ a`, `a = ∇_w f(w)` on the
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
//! batches of b, each uploaded once as its own design matrix (a batch is drawn uniformly among
//! them). The error bound of these estimates is `None`: no valid bound is known (SPEC §4).

use std::time::Instant;

use super::fisher::{
    Averaging, DenseUpdate, FisherSpec, FisherTracker, Regulariser, Representation, StepInputs,
};
use super::refine::{self, LinearSystem, Refinement};
use super::{Hypergradient, Method};
use crate::backend::{Backend, Curvature, FisherOps, GlmOps};
use crate::data::rng::Rng;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::problem::{Bilevel, GlmBilevel, InnerProblem};
use crate::solver::linear;

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

    fn fisher_spec(&self, shape: (usize, usize)) -> FisherSpec {
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

/// A batch of the fixed partition, as its own design matrix.
struct Chunk<B: GlmOps> {
    x: B::Design,
    y: B::Buf,
    rows: Vec<usize>,
    weights: Option<B::Buf>,
}

/// The per-step inputs of one inner loop, uploaded before it starts.
struct Prepared<B: GlmOps> {
    rows: Vec<B::Rows>,
    sqrt_weights: Vec<Option<B::Buf>>,
    weights: Vec<Option<B::Buf>>,
    sketches: Vec<Option<B::Buf>>,
}

/// A stochastic estimator with the state it carries between outer steps.
pub struct StochasticEstimator<B: GlmOps + FisherOps> {
    opts: StochasticOptions,
    /// The second queue the curvature update runs on.
    curvature_queue: B,
    w: B::Buf,
    q: Option<B::Buf>,
    n_train: usize,
    data_curvature: f64,
    chunks: Vec<Chunk<B>>,
    /// What `--fisher-update auto` measured to make its choice (None when not auto).
    dense_update_timing: Option<super::fisher::DenseUpdateTiming>,
}

impl<B: GlmOps + FisherOps + Clone> StochasticEstimator<B> {
    /// Sets the estimator up for `problem`, whose training rows are `train`.
    pub fn new(problem: &GlmBilevel<B>, train: &Dataset, opts: StochasticOptions) -> Result<Self> {
        if !matches!(
            opts.method,
            Method::Nhgd | Method::Stocbio | Method::Amigo | Method::Soba
        ) {
            return Err(Error::option(
                "--method",
                format!("{} is not a stochastic method", opts.method.name()),
            ));
        }
        let b = problem.backend();
        let (c, d) = problem.shape();
        if train.n() != problem.train_view().n || train.d() != d {
            return Err(Error::Dimension(
                "the training rows given to the stochastic estimator are not the problem's".into(),
            ));
        }
        if opts.batch == 0 || opts.batch > train.n() {
            return Err(Error::option(
                "--batch-size",
                format!(
                    "must be between 1 and the {} training rows, got {}",
                    train.n(),
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
        let mut opts = opts;
        let mut dense_update_timing = None;
        if opts.method == Method::Nhgd {
            opts.fisher_spec((c, d)).validate()?;
            if opts.representation == Representation::Dense
                && opts.dense_update == DenseUpdate::Auto
            {
                let (choice, timing) = super::fisher::choose_dense_update(
                    b,
                    &opts.fisher_spec((c, d)),
                    &regulariser(problem),
                )?;
                opts.dense_update = choice;
                dense_update_timing = timing;
            }
            if opts.representation == Representation::Kfac && c < 2 {
                return Err(Error::option(
                    "--curvature",
                    "kfac is for the softmax models (softmax, hyperclean)",
                ));
            }
        }
        let chunks = if opts.method == Method::Nhgd {
            Vec::new()
        } else {
            partition(b, train, opts.batch, opts.seed)?
        };
        Ok(StochasticEstimator {
            dense_update_timing,
            curvature_queue: b.fork()?,
            w: b.zeros(c * d)?,
            q: None,
            n_train: train.n(),
            data_curvature: data_curvature(problem)?,
            chunks,
            opts,
        })
    }

    /// The current inner iterate.
    pub fn w(&self) -> &B::Buf {
        &self.w
    }

    /// Restores the carried state (for resuming a checkpointed run).
    pub fn restore(&mut self, backend: &B, w: &[f64], q: Option<&[f64]>) -> Result<()> {
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
    pub fn state(&self, backend: &B) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
        Ok((
            backend.download(&self.w)?,
            self.q.as_ref().map(|q| backend.download(q)).transpose()?,
        ))
    }

    /// Re-estimates the data term's largest curvature (the default SGD step) after the
    /// problem's training rows changed (dataset distillation).
    pub fn refresh_curvature(&mut self, problem: &GlmBilevel<B>) -> Result<()> {
        self.data_curvature = data_curvature(problem)?;
        Ok(())
    }

    /// The SGD step at the problem's current θ.
    pub fn inner_lr(&self, problem: &GlmBilevel<B>) -> f64 {
        self.opts.inner_lr.unwrap_or_else(|| {
            let r_max = problem
                .train_view()
                .lambda
                .iter()
                .copied()
                .fold(0.0, f64::max);
            1.0 / (self.data_curvature + r_max)
        })
    }

    /// One hypergradient estimate at the problem's current θ; `step` (the outer step) seeds
    /// the mini-batches, so the same seed and step always draw the same batches.
    pub fn estimate(
        &mut self,
        problem: &GlmBilevel<B>,
        step: u64,
    ) -> Result<(Hypergradient, LoopStats)> {
        self.estimate_with(
            problem,
            step,
            &|w, q| problem.cross_t(w, q),
            problem.theta(),
        )
    }

    /// [`Self::estimate`] for a bilevel problem whose inner problem is `problem` but whose θ
    /// and cross derivative are its own (dataset distillation, where θ is the training rows):
    /// `h = −cross_t(w, q)`, reported at `theta`.
    pub fn estimate_with(
        &mut self,
        problem: &GlmBilevel<B>,
        step: u64,
        cross_t: &CrossTranspose<'_, B>,
        theta: &[f64],
    ) -> Result<(Hypergradient, LoopStats)> {
        let started = Instant::now();
        let b = problem.backend();
        let p = problem.inner_dim();
        if !self.opts.warm_start {
            b.fill(&mut self.w, 0.0)?;
            self.q = None;
        }
        let mut rng = Rng::new(self.opts.seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let eta = self.inner_lr(problem);
        let beta = self.opts.linear_lr.unwrap_or(eta);
        let mut a = b.zeros(p)?;
        let mut curvature = None;
        let (q, stats, linear_iters, outer_loss) = match self.opts.method {
            Method::Nhgd => {
                let prepared = self.prepare(problem, &mut rng)?;
                let spec = self.opts.fisher_spec(problem.shape());
                let view = problem.train_view();
                let mut tracker = FisherTracker::start(b, &spec, view.reg_diag)?;
                let mut stats =
                    self.nhgd_inner_loop(problem, &prepared, &spec, &mut tracker, eta)?;
                if self.opts.representation == Representation::Dense {
                    stats.fisher_update = Some(self.opts.dense_update);
                }
                let outer_loss = problem.outer_value_grad(&self.w, Some(&mut a))?;
                let reg = regulariser(problem);
                let (q, iters) = tracker.apply_inverse(b, &reg, &a, self.opts.linear_tol)?;
                curvature = Some((tracker, reg));
                (q, stats, iters, outer_loss)
            }
            Method::Soba => {
                let prepared = self.prepare(problem, &mut rng)?;
                self.upload_chunk_weights(problem)?;
                let loop_start = Instant::now();
                let traffic = b.host_traffic();
                let mut q = self.take_q(b, p)?;
                let mut scratch = b.zeros(p)?;
                let mut outer_loss = 0.0;
                let mut factors = b.zeros(self.opts.batch * problem.shape().0)?;
                for rows in &prepared.rows {
                    sgd_step(problem, rows, eta, &mut self.w, &mut factors)?;
                    outer_loss = problem.outer_value_grad(&self.w, Some(&mut a))?;
                    let chunk = rng.below(self.chunks.len());
                    self.linear_sgd_step(problem, chunk, &a, beta, &mut q, &mut scratch)?;
                }
                let stats = loop_stats(b, loop_start, traffic)?;
                (q, stats, prepared.rows.len(), outer_loss)
            }
            Method::Stocbio | Method::Amigo => {
                let prepared = self.prepare(problem, &mut rng)?;
                // The chunks' weights feed the stochastic Hessians of the linear solve only:
                // AmIGO with no linear steps (the plain SGD loop of `bench nhgd`) reads none.
                if self.opts.method == Method::Stocbio || self.opts.linear_steps > 0 {
                    self.upload_chunk_weights(problem)?;
                }
                let loop_start = Instant::now();
                let traffic = b.host_traffic();
                let mut factors = b.zeros(self.opts.batch * problem.shape().0)?;
                for rows in &prepared.rows {
                    sgd_step(problem, rows, eta, &mut self.w, &mut factors)?;
                }
                let stats = loop_stats(b, loop_start, traffic)?;
                let outer_loss = problem.outer_value_grad(&self.w, Some(&mut a))?;
                let q = if self.opts.method == Method::Stocbio {
                    self.neumann(problem, &a, beta, &mut rng)?
                } else {
                    let mut q = self.take_q(b, p)?;
                    let mut scratch = b.zeros(p)?;
                    for _ in 0..self.opts.linear_steps {
                        let chunk = rng.below(self.chunks.len());
                        self.linear_sgd_step(problem, chunk, &a, beta, &mut q, &mut scratch)?;
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
        let (residual_norm, refinement, linear_iters) = match curvature {
            Some((tracker, reg)) if tracker.has_operator() => {
                let (check, iters) = refine::refine(
                    b,
                    Refinement::for_precision(b.precision()),
                    &a,
                    &mut q,
                    &mut hypergradient,
                    &mut LinearSystem {
                        apply: |v: &B::Buf, out: &mut B::Buf| tracker.apply(b, &reg, v, out),
                        solve: |r: &B::Buf| tracker.apply_inverse(b, &reg, r, self.opts.linear_tol),
                        cross_t: |d: &B::Buf| cross_t(&self.w, d),
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
            problem.inner_value_grad(&self.w, Some(&mut g))?;
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

    /// The dense update in use (after `auto` was resolved) and what `auto` measured.
    pub fn dense_update(&self) -> (DenseUpdate, Option<super::fisher::DenseUpdateTiming>) {
        (self.opts.dense_update, self.dense_update_timing)
    }

    /// Draws the T mini-batches (cycling through seeded permutations of the rows) and uploads
    /// them with their weights and sketches, so the inner loop needs nothing from the host.
    /// Everything is drawn first (the RNG order is that of one step after the other: its rows,
    /// then its sketch) and then copied in per kind, all T steps at once: a handful of host
    /// copies per estimate whatever T (one each on CUDA costs an allocation and a blocking
    /// copy, which at T = 100 used to take longer than the inner loop itself).
    fn prepare(&self, problem: &GlmBilevel<B>, rng: &mut Rng) -> Result<Prepared<B>> {
        let b = problem.backend();
        let view = problem.train_view();
        let batch = self.opts.batch;
        let steps = self.opts.inner_steps;
        let n = self.n_train;
        let nhgd = self.opts.method == Method::Nhgd;
        let sketch_rank = match (self.opts.method, self.opts.representation) {
            (Method::Nhgd, Representation::Lowrank { rank }) => Some(rank),
            _ => None,
        };
        let mut order = rng.permutation(n);
        let mut cursor = 0;
        let mut rows: Vec<u32> = Vec::with_capacity(steps * batch);
        let mut signs: Vec<f64> = Vec::new();
        for _ in 0..steps {
            let end = rows.len() + batch;
            while rows.len() < end {
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
        // Per-step weights are for NHGD's curvature update only (SGD reads the per-row weights
        // already on the backend): `s_p` for kfac, `√s_p` for the per-sample gradients of the
        // other representations. Only the one read is copied in.
        let per_step = |values: Option<Vec<f64>>, part: usize| -> Result<Vec<Option<B::Buf>>> {
            Ok(match values {
                Some(v) => b.upload_parts(&v, part)?.into_iter().map(Some).collect(),
                None => (0..steps).map(|_| None).collect(),
            })
        };
        let (mut weights, mut sqrt_weights) = (None, None);
        if let (true, Some(s)) = (nhgd, view.weights_host) {
            let picked = rows.iter().map(|&r| s[r as usize]);
            if self.opts.representation == Representation::Kfac {
                weights = Some(picked.collect());
            } else {
                sqrt_weights = Some(picked.map(f64::sqrt).collect());
            }
        }
        Ok(Prepared {
            weights: per_step(weights, batch)?,
            sqrt_weights: per_step(sqrt_weights, batch)?,
            sketches: per_step(sketch_rank.map(|_| signs), sketch_rank.unwrap_or(1) * batch)?,
            rows: b.upload_batches(&rows, batch, n)?,
        })
    }

    /// NHGD's inner loop: SGD on the main queue, the curvature update on the second queue,
    /// overlapping the next SGD step. Factors are double-buffered: SGD step t writes buffer
    /// t mod 2 after the update of step t − 2 has read it (marker t mod 2 of each queue).
    fn nhgd_inner_loop(
        &mut self,
        problem: &GlmBilevel<B>,
        prepared: &Prepared<B>,
        spec: &FisherSpec,
        tracker: &mut FisherTracker<B>,
        eta: f64,
    ) -> Result<LoopStats> {
        let main = problem.backend();
        let side = &self.curvature_queue;
        let view = problem.train_view();
        let (c, d) = problem.shape();
        let batch = self.opts.batch;
        let mut factors = [main.zeros(batch * c)?, main.zeros(batch * c)?];
        let mut grads = main.zeros(if spec.needs_gradients() {
            batch * c * d
        } else {
            0
        })?;
        let loop_start = Instant::now();
        let traffic = main.host_traffic();
        let w = &mut self.w;
        let looped = (|| -> Result<()> {
            for (t, rows) in prepared.rows.iter().enumerate() {
                let slot = t % 2;
                if t >= 2 {
                    main.wait_for(side, slot)?;
                }
                sgd_step(problem, rows, eta, w, &mut factors[slot])?;
                main.signal(slot)?;
                side.wait_for(main, slot)?;
                let inputs = StepInputs {
                    x: view.x,
                    rows,
                    factors: &factors[slot],
                    sqrt_weights: prepared.sqrt_weights[t].as_ref(),
                    weights: prepared.weights[t].as_ref(),
                    sketch: prepared.sketches[t].as_ref(),
                };
                tracker.update(side, spec, &inputs, &mut grads)?;
                side.signal(slot)?;
            }
            main.wait_for(side, (prepared.rows.len() - 1) % 2)
        })();
        if looped.is_err() {
            // A step failed with updates that may still read the factors and fill `grads` (no
            // marker covers them yet); they are freed on the main queue below, which does not
            // wait for the side queue, so let it finish first. The loop's error is reported.
            let _ = side.synchronize();
        }
        drop((factors, grads));
        looped?;
        loop_stats(main, loop_start, traffic)
    }

    fn take_q(&mut self, b: &B, p: usize) -> Result<B::Buf> {
        match self.q.take() {
            Some(q) => Ok(q),
            None => b.zeros(p),
        }
    }

    /// Row weights of every chunk at the current θ (hyper-cleaning), in one host copy: the
    /// chunks are consecutive batches of `batch` rows (the last may be shorter), which is how
    /// `upload_parts` cuts.
    fn upload_chunk_weights(&mut self, problem: &GlmBilevel<B>) -> Result<()> {
        let b = problem.backend();
        if let Some(s) = problem.train_view().weights_host {
            let w: Vec<f64> = self
                .chunks
                .iter()
                .flat_map(|chunk| chunk.rows.iter().map(|&r| s[r]))
                .collect();
            let parts = b.upload_parts(&w, self.opts.batch)?;
            for (chunk, weights) in self.chunks.iter_mut().zip(parts) {
                chunk.weights = Some(weights);
            }
        }
        Ok(())
    }

    /// `out ← H_B v`: the mini-batch Hessian of chunk `k` at the current `w`, plus `R`.
    fn batch_hvp(
        &self,
        problem: &GlmBilevel<B>,
        curvature: &Curvature<B>,
        k: usize,
        v: &B::Buf,
        out: &mut B::Buf,
    ) -> Result<()> {
        let b = problem.backend();
        b.glm_hvp(&self.chunks[k].x, curvature, v, out)?;
        b.mul_add(1.0, problem.train_view().reg_diag, v, out)
    }

    fn batch_curvature(&self, problem: &GlmBilevel<B>, k: usize) -> Result<Curvature<B>> {
        let chunk = &self.chunks[k];
        let view = problem.train_view();
        problem.backend().glm_curvature(
            &chunk.x,
            view.loss,
            &chunk.y,
            chunk.weights.as_ref(),
            &self.w,
            1.0 / chunk.rows.len() as f64,
        )
    }

    /// `q ← q − β (H_B q − a)` on chunk `k` (`scratch`: P entries).
    fn linear_sgd_step(
        &self,
        problem: &GlmBilevel<B>,
        k: usize,
        a: &B::Buf,
        beta: f64,
        q: &mut B::Buf,
        scratch: &mut B::Buf,
    ) -> Result<()> {
        let b = problem.backend();
        let curvature = self.batch_curvature(problem, k)?;
        self.batch_hvp(problem, &curvature, k, q, scratch)?;
        b.axpy(-1.0, a, scratch)?;
        b.axpy(-beta, scratch, q)
    }

    /// `q = β Σ_{k<K} Π_{j<k} (I − β H_{B_j}) a` (stocbio).
    fn neumann(
        &self,
        problem: &GlmBilevel<B>,
        a: &B::Buf,
        beta: f64,
        rng: &mut Rng,
    ) -> Result<B::Buf> {
        let b = problem.backend();
        let mut term = linear::duplicate(b, a)?;
        let mut q = linear::duplicate(b, a)?;
        b.scal(beta, &mut q)?;
        let mut hv = b.zeros(b.len(a))?;
        for _ in 1..self.opts.linear_steps {
            let k = rng.below(self.chunks.len());
            let curvature = self.batch_curvature(problem, k)?;
            self.batch_hvp(problem, &curvature, k, &term, &mut hv)?;
            b.axpy(-beta, &hv, &mut term)?;
            b.axpy(beta, &term, &mut q)?;
        }
        Ok(q)
    }
}

/// One fused SGD step on the problem's training rows `rows`, leaving the batch's factors.
fn sgd_step<B: GlmOps>(
    problem: &GlmBilevel<B>,
    rows: &B::Rows,
    eta: f64,
    w: &mut B::Buf,
    factors: &mut B::Buf,
) -> Result<()> {
    let view = problem.train_view();
    problem.backend().glm_sgd_step(
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

/// The regulariser `R` of the problem's training loss, as NHGD's curvature applies it.
fn regulariser<B: GlmOps + FisherOps>(problem: &GlmBilevel<B>) -> Regulariser<'_, B> {
    let view = problem.train_view();
    Regulariser {
        backend: problem.backend(),
        diag: view.reg_diag,
        groups: view.groups,
        lambda: view.lambda,
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

/// The training rows in a seeded order, cut into batches of `batch` (the last may be
/// shorter), each uploaded as a design matrix.
fn partition<B: GlmOps>(b: &B, train: &Dataset, batch: usize, seed: u64) -> Result<Vec<Chunk<B>>> {
    let order = Rng::new(seed ^ 0x5EED_BA7C).permutation(train.n());
    order
        .chunks(batch)
        .map(|rows| {
            let part = train.select(rows);
            Ok(Chunk {
                x: b.upload_design(&part.x)?,
                y: b.upload(&part.y)?,
                rows: rows.to_vec(),
                weights: None,
            })
        })
        .collect()
}

/// `L̂`: the largest eigenvalue of the data term's curvature majorant `ℓ''_max (1/n) Σ x xᵀ`
/// (row weights at their bound 1) by power iteration, inflated by 5%.
fn data_curvature<B: GlmOps>(problem: &GlmBilevel<B>) -> Result<f64> {
    let b = problem.backend();
    let view = problem.train_view();
    let (c, d) = problem.shape();
    let majorant = Curvature {
        loss: crate::backend::Loss::Squared,
        row_scale: b.upload(&vec![view.loss.max_curvature() / view.n as f64; view.n])?,
        probs: None,
    };
    let estimate =
        linear::largest_eigenvalue(b, |v, out| b.glm_hvp(view.x, &majorant, v, out), c * d, 50)?;
    if !(estimate > 0.0 && estimate.is_finite()) {
        return Err(Error::Numerical(format!(
            "the curvature estimate {estimate} of the training data is not a positive number"
        )));
    }
    Ok(1.05 * estimate)
}
