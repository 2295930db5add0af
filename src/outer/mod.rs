//! The outer loop of bilevel optimisation (`hypergrad run`): θ ← θ − step(h), with h from any
//! estimator, the inner problem warm- or cold-started (Vicol et al. 2022), a trace record per
//! step, and a checkpoint that lets an interrupted run resume and end where an uninterrupted
//! one with the same seed would.
//!
//! Optimisers ([`OuterOpt`]):
//! * `sgd`: `θ ← θ − α h`;
//! * `adam`: Kingma & Ba with bias correction;
//! * `maid` (deterministic methods only): the adaptive-accuracy step in the style of Salehi,
//!   Mukherjee, Roberts & Ehrhardt (MAID). The inner tolerance ε and the linear tolerance δ
//!   start loose. At each step the hypergradient's a posteriori bound e (SPEC §4) must be at
//!   most half of ‖h‖ — then `⟨h, ∇F⟩ ≥ ‖h‖² − ‖h‖e > 0`, so −h descends — and a backtracking
//!   line search must find `F̂(θ − αh) ≤ F̂(θ) − c α ‖h‖²`. Only when one of the two fails are
//!   ε and δ tightened (×ν) and h recomputed; after an accepted step α grows, and after
//!   `RELAX_AFTER` steps without tightening, ε and δ are relaxed (×1/ν, never above their
//!   start), so accuracy is spent only where the step needs it.
//!
//! Divergence stops the run (one line naming the step and the option to lower, and the
//! trace's last record saying why in `stopped`): a non-finite inner iterate, outer loss or
//! hypergradient, an estimate that breaks down numerically, or an update that takes θ (or the
//! optimiser's state) out of the finite numbers or out of the problem's domain. The
//! checkpoint then holds the last finite step: it is written only after a step has passed
//! these checks. Saturation does not stop a run, but is reported: where θ are the logits of
//! weights σ(θ) (hyperclean), every record has `saturated_fraction`, the fraction of weights
//! within [`SATURATION_EPS`] of 0 or 1, where σ′ and with it the hypergradient vanish; above
//! [`SATURATION_REPORT`], [`saturation_warning`] says so.

mod adam;
pub mod checkpoint;

pub use adam::Adam;

use std::time::Instant;

use crate::backend::mlp::{MlpInputOps, MlpOps};
use crate::backend::{Backend, FisherOps, GlmOps};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::hypergrad::stochastic::model::StochasticModel;
use crate::hypergrad::stochastic::{LoopStats, StochasticEstimator};
use crate::hypergrad::{self, Hypergradient, Options};
use crate::problem::{
    Bilevel, Buf, DistillBilevel, GlmBilevel, HyperLayout, MlpBilevel, MlpDistillBilevel,
    QuadraticBilevel,
};
use crate::solver::{self, Solver};

pub use checkpoint::Checkpoint;

/// The outer optimiser (`--outer-opt`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OuterOpt {
    Sgd { lr: f64 },
    Adam(Adam),
    Maid { lr: f64 },
}

impl OuterOpt {
    pub fn name(&self) -> &'static str {
        match self {
            OuterOpt::Sgd { .. } => "sgd",
            OuterOpt::Adam(_) => "adam",
            OuterOpt::Maid { .. } => "maid",
        }
    }
}

/// The optimiser's state, carried between steps (and through checkpoints).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptState {
    /// Adam's first and second moments and its step count.
    pub m: Vec<f64>,
    pub v: Vec<f64>,
    pub t: u64,
    /// MAID's inner and linear tolerances and its step size.
    pub inner_tol: f64,
    pub linear_tol: f64,
    pub alpha: f64,
    pub steps_since_tightening: u64,
}

/// The inner iterate `w` and the linear-system iterate `q` an estimator carries, on the host.
type CarriedState = (Option<Vec<f64>>, Option<Vec<f64>>);

/// A problem the outer loop can run: a bilevel problem whose model can be scored on test rows.
pub trait OuterProblem: Bilevel {
    /// The mean loss of the model `w` on `data` and, for classification, its accuracy.
    fn evaluate(&self, w: &Buf<Self>, data: &Dataset) -> Result<(f64, Option<f64>)>;
    /// Whether θ are the logits of weights σ(θ) (hyperclean's per-sample weights), whose
    /// saturation the trace reports.
    fn sigmoid_weights(&self) -> bool {
        false
    }
}

impl<B: GlmOps> OuterProblem for GlmBilevel<B> {
    fn evaluate(&self, w: &B::Buf, data: &Dataset) -> Result<(f64, Option<f64>)> {
        GlmBilevel::evaluate(self, w, data)
    }
    fn sigmoid_weights(&self) -> bool {
        self.layout() == HyperLayout::PerSample
    }
}

impl<B: GlmOps> OuterProblem for DistillBilevel<B> {
    fn evaluate(&self, w: &B::Buf, data: &Dataset) -> Result<(f64, Option<f64>)> {
        DistillBilevel::evaluate(self, w, data)
    }
}

/// Ehrhardt & Roberts' quadratic problem has no rows to score: its upper level is the whole
/// outer problem.
impl OuterProblem for QuadraticBilevel {
    fn evaluate(&self, _w: &Vec<f64>, _data: &Dataset) -> Result<(f64, Option<f64>)> {
        Err(Error::option(
            "--test",
            "quadratic has no test rows: its upper level ‖Ax − b‖² is the whole outer problem",
        ))
    }
}

impl<B: MlpOps> OuterProblem for MlpBilevel<B> {
    fn evaluate(&self, w: &B::Buf, data: &Dataset) -> Result<(f64, Option<f64>)> {
        MlpBilevel::evaluate(self, w, data)
    }
    fn sigmoid_weights(&self) -> bool {
        self.layout() == HyperLayout::PerSample
    }
}

impl<B: MlpInputOps> OuterProblem for MlpDistillBilevel<B> {
    fn evaluate(&self, w: &B::Buf, data: &Dataset) -> Result<(f64, Option<f64>)> {
        MlpDistillBilevel::evaluate(self, w, data)
    }
}

/// A stochastic estimator that carries its inner iterate `w` (and a linear-system iterate
/// `q`) from one outer step to the next.
pub trait StochasticEstimate<P: Bilevel> {
    /// One estimate at the problem's current θ; `step` seeds the mini-batches.
    fn estimate(&mut self, problem: &P, step: u64) -> Result<(Hypergradient, LoopStats)>;
    /// The current inner iterate.
    fn w(&self) -> &Buf<P>;
    /// `(w, q)` on the host (for checkpoints).
    fn state(&self, backend: &P::B) -> Result<(Vec<f64>, Option<Vec<f64>>)>;
    /// Restores `(w, q)` from a checkpoint.
    fn restore(&mut self, backend: &P::B, w: &[f64], q: Option<&[f64]>) -> Result<()>;
}

/// A model's own estimator: every inner model of [`StochasticModel`] (the linear models and
/// networks).
impl<M: StochasticModel> StochasticEstimate<M> for StochasticEstimator<M> {
    fn estimate(&mut self, problem: &M, step: u64) -> Result<(Hypergradient, LoopStats)> {
        StochasticEstimator::estimate(self, problem, step)
    }
    fn w(&self) -> &Buf<M> {
        StochasticEstimator::w(self)
    }
    fn state(&self, backend: &M::B) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
        StochasticEstimator::state(self, backend)
    }
    fn restore(&mut self, backend: &M::B, w: &[f64], q: Option<&[f64]>) -> Result<()> {
        StochasticEstimator::restore(self, backend, w, q)
    }
}

/// NHGD on dataset distillation: the estimator of the inner model on the current synthetic
/// rows, with distillation's θ and cross derivative; the default SGD step follows the rows'
/// curvature, so it is recomputed as θ moves them.
pub struct DistillEstimator<M: StochasticModel>(pub StochasticEstimator<M>);

/// A distillation problem: its inner model on the synthetic rows.
pub trait Distillation: Bilevel + crate::problem::InnerProblem<B: FisherOps> {
    type Inner: StochasticModel<B = Self::B>;
    fn inner_model(&self) -> &Self::Inner;
}

impl<B: GlmOps + FisherOps> Distillation for DistillBilevel<B> {
    type Inner = GlmBilevel<B>;
    fn inner_model(&self) -> &GlmBilevel<B> {
        self.glm()
    }
}

impl<B: MlpInputOps + FisherOps> Distillation for MlpDistillBilevel<B> {
    type Inner = MlpBilevel<B>;
    fn inner_model(&self) -> &MlpBilevel<B> {
        self.network_problem()
    }
}

impl<D: Distillation> StochasticEstimate<D> for DistillEstimator<D::Inner> {
    fn estimate(&mut self, problem: &D, step: u64) -> Result<(Hypergradient, LoopStats)> {
        let inner = problem.inner_model();
        self.0.refresh_step(inner)?;
        self.0
            .estimate_with(inner, step, &|w, q| problem.cross_t(w, q), problem.theta())
    }
    fn w(&self) -> &Buf<D> {
        self.0.w()
    }
    fn state(&self, backend: &D::B) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
        self.0.state(backend)
    }
    fn restore(&mut self, backend: &D::B, w: &[f64], q: Option<&[f64]>) -> Result<()> {
        self.0.restore(backend, w, q)
    }
}

/// Where a hypergradient comes from.
pub enum Estimator<P: Bilevel> {
    /// `exact`, `cg`, … at an inner solution (warm-started from the last one if `warm`).
    Deterministic {
        opts: Options,
        warm: bool,
        w: Option<Buf<P>>,
    },
    /// `nhgd`, `stocbio`, `amigo`, `soba` (warm/cold start is in their options).
    Stochastic(Box<dyn StochasticEstimate<P>>),
}

impl<P: Bilevel> Estimator<P> {
    /// One estimate at the problem's current θ.
    pub fn estimate(
        &mut self,
        problem: &P,
        step: u64,
    ) -> Result<(Hypergradient, Option<LoopStats>)> {
        match self {
            Estimator::Deterministic { opts, warm, w } => {
                let start = if *warm { w.as_ref() } else { None };
                let result = hypergrad::compute(problem, opts, start)?;
                *w = Some(problem.backend().upload(&result.w)?);
                Ok((result, None))
            }
            Estimator::Stochastic(est) => {
                let (result, stats) = est.estimate(problem, step)?;
                Ok((result, Some(stats)))
            }
        }
    }

    /// The current inner iterate (for test-set evaluation).
    pub fn w(&self) -> Option<&Buf<P>> {
        match self {
            Estimator::Deterministic { w, .. } => w.as_ref(),
            Estimator::Stochastic(est) => Some(est.w()),
        }
    }

    fn state(&self, b: &P::B) -> Result<CarriedState> {
        match self {
            Estimator::Deterministic { w, .. } => {
                Ok((w.as_ref().map(|w| b.download(w)).transpose()?, None))
            }
            Estimator::Stochastic(est) => {
                let (w, q) = est.state(b)?;
                Ok((Some(w), q))
            }
        }
    }

    fn restore(&mut self, b: &P::B, w: Option<&[f64]>, q: Option<&[f64]>) -> Result<()> {
        match self {
            Estimator::Deterministic { w: current, .. } => {
                *current = w.map(|w| b.upload(w)).transpose()?;
                Ok(())
            }
            Estimator::Stochastic(est) => match w {
                Some(w) => est.restore(b, w, q),
                None => Ok(()),
            },
        }
    }

    /// The option whose step moves the inner iterate: `--inner-lr` for the stochastic methods
    /// and the mini-batch inner solvers, `--step` for the trajectory methods; `None` where the
    /// inner solver chooses its own steps.
    fn inner_step_option(&self) -> Option<&'static str> {
        match self {
            Estimator::Stochastic(_) => Some("--inner-lr"),
            Estimator::Deterministic { opts, .. } if opts.method.is_trajectory() => Some("--step"),
            Estimator::Deterministic { opts, .. } => {
                matches!(opts.inner.solver, Solver::Sgd | Solver::Adam).then_some("--inner-lr")
            }
        }
    }
}

/// One record of the trace (SPEC §6), written as a JSON line.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StepRecord {
    pub step: u64,
    /// Wall-clock seconds since the run started (across resumptions).
    pub seconds: f64,
    pub theta_norm: f64,
    pub outer_loss: f64,
    pub hypergradient_norm: f64,
    pub test_loss: Option<f64>,
    pub test_accuracy: Option<f64>,
    /// ‖∇g(ŵ)‖ (null where not computed).
    pub inner_grad_norm: Option<f64>,
    /// The inner solve behind this step's hypergradient, for the methods that solve the inner
    /// problem to a tolerance (exact, cg, neumann, fixed-point): its iterations (epochs for
    /// `--inner-solver sgd` and `adam`) and whether it reached the tolerance. Null for the
    /// trajectory and stochastic methods, whose inner loop is a fixed number of steps.
    pub inner_iters: Option<usize>,
    pub inner_converged: Option<bool>,
    pub error_bound: Option<f64>,
    /// `‖Ĥq̂ − a‖` of the linear solve behind the hypergradient, recomputed (null where the
    /// method has none, or keeps only `Ĥ⁻¹`: NHGD's Woodbury inverse).
    pub residual_norm: Option<f64>,
    /// Refinement of that solve (f32): rounds, the last relative change of h, whether it
    /// ended within tolerance ([`crate::hypergrad::refine`]).
    #[serde(flatten)]
    pub refinement: crate::hypergrad::refine::RefinementReport,
    /// Host synchronisations and copies inside the inner loop (stochastic methods).
    pub inner_host_syncs: Option<u64>,
    pub inner_host_transfers: Option<u64>,
    /// NHGD's dense update as it ran (`--fisher-update auto` resolved); null otherwise.
    pub fisher_update: Option<crate::hypergrad::fisher::DenseUpdate>,
    /// MAID's tolerances (null for the other optimisers).
    pub inner_tol: Option<f64>,
    pub linear_tol: Option<f64>,
    /// Where θ are the logits of weights σ(θ) (hyperclean): the fraction of this step's
    /// weights within [`SATURATION_EPS`] of 0 or 1 (null for the other problems).
    pub saturated_fraction: Option<f64>,
    /// Why the run stopped at this step (a divergence, in the words of the error); null
    /// unless it did.
    pub stopped: Option<String>,
}

/// A weight σ(θᵢ) within this distance of 0 or 1 is saturated: σ′ is below it there, so the
/// hypergradient's entry i (σ′(θᵢ) times the row's loss term) all but vanishes.
pub const SATURATION_EPS: f64 = 1e-6;
/// Saturation is reported when more than this fraction of the weights are saturated. Label
/// cleaning legitimately drives the corrupted rows' weights (often half of them) towards 0,
/// and a long run may pin many of them there; only when nearly every weight is pinned has
/// the hypergradient vanished as a whole, which is what a too large step does.
pub const SATURATION_REPORT: f64 = 0.99;

/// The fraction of the weights σ(θ) within [`SATURATION_EPS`] of 0 or 1.
pub fn saturated_fraction(theta: &[f64]) -> f64 {
    if theta.is_empty() {
        return 0.0;
    }
    // σ(−|t|) is the distance from σ(t) to the nearer of 0 and 1, computed without
    // cancellation.
    let saturated = theta
        .iter()
        .filter(|t| crate::backend::cpu::sigmoid(-t.abs()) <= SATURATION_EPS)
        .count();
    saturated as f64 / theta.len() as f64
}

/// The one-line report of a step whose weights have saturated (more than
/// [`SATURATION_REPORT`] of them), with what to change; `None` below that.
pub fn saturation_warning(step: u64, fraction: f64) -> Option<String> {
    (fraction > SATURATION_REPORT).then(|| {
        let change = if step == 0 {
            "start θ nearer 0 (--theta)"
        } else {
            "lower --outer-lr"
        };
        format!(
            "step {step}: {:.2}% of the weights σ(θ) are within {SATURATION_EPS:e} of 0 or 1 \
             (saturated), where the hypergradient vanishes and θ stops moving; {change}",
            100.0 * fraction
        )
    })
}

/// [`saturation_warning`] of a trace record (its `step` and `saturated_fraction`).
pub fn saturation_warning_of(record: &serde_json::Value) -> Option<String> {
    let step = record.get("step")?.as_u64()?;
    let fraction = record.get("saturated_fraction")?.as_f64()?;
    saturation_warning(step, fraction)
}

/// Configuration of [`run`].
pub struct RunConfig<'a> {
    pub outer_steps: u64,
    pub opt: OuterOpt,
    pub test: Option<&'a Dataset>,
    /// Identifies the run in a checkpoint (problem, method, data, seed…), so that a checkpoint
    /// of another run is refused.
    pub fingerprint: String,
    pub checkpoint: Option<&'a std::path::Path>,
    /// Write the checkpoint after every `checkpoint_every`-th step (every step when it is 1)
    /// and after the last update; a run killed in between resumes from the last one written
    /// and computes the same steps again.
    pub checkpoint_every: u64,
}

/// Result of [`run`].
pub struct RunOutcome {
    pub records: Vec<StepRecord>,
    pub theta: Vec<f64>,
    /// The step the run resumed from (0 for a fresh run).
    pub resumed_from: Option<u64>,
}

/// Runs the outer loop, calling `on_record` as soon as each step's record exists (the trace
/// writer and the progress bar), and writing the checkpoint after every step (or every
/// `checkpoint_every` steps).
pub fn run<P: OuterProblem>(
    problem: &mut P,
    estimator: &mut Estimator<P>,
    config: &RunConfig<'_>,
    mut on_record: impl FnMut(&StepRecord) -> Result<()>,
) -> Result<RunOutcome>
where
    P::B: Clone,
{
    let b = problem.backend().clone();
    let p = problem.hyper_dim();
    let mut opt_state = initial_state(&config.opt, estimator, p);
    let mut first_step = 0u64;
    let mut elapsed_before = 0.0;
    let mut resumed_from = None;
    if let Some(path) = config.checkpoint {
        if let Some(ck) = Checkpoint::load(path)? {
            ck.check_matches(&config.fingerprint, p)?;
            problem.set_theta(&ck.theta)?;
            estimator.restore(&b, ck.w.as_deref(), ck.q.as_deref())?;
            opt_state = ck.opt;
            first_step = ck.step + 1;
            elapsed_before = ck.seconds;
            resumed_from = Some(ck.step);
        }
    }
    let started = Instant::now();
    let seconds = || elapsed_before + started.elapsed().as_secs_f64();
    let sigmoid_weights = problem.sigmoid_weights();
    let mut records = Vec::new();
    let mut step = first_step;
    while step <= config.outer_steps {
        let estimate = match config.opt {
            OuterOpt::Maid { .. } => maid_hypergradient(problem, estimator, &mut opt_state, step),
            _ => estimator.estimate(problem, step),
        };
        let theta_norm = norm(problem.theta());
        let saturated_fraction = sigmoid_weights.then(|| saturated_fraction(problem.theta()));
        let (h, stats) = match estimate {
            Ok(estimate) => estimate,
            Err(Error::Numerical(message)) => {
                let reason = breakdown(step, &message, estimator, &b, &config.opt)?;
                return stop(
                    &mut on_record,
                    StepRecord {
                        step,
                        seconds: seconds(),
                        theta_norm,
                        outer_loss: f64::NAN,
                        hypergradient_norm: f64::NAN,
                        saturated_fraction,
                        stopped: Some(reason),
                        ..StepRecord::default()
                    },
                );
            }
            Err(e) => return Err(e),
        };
        let diverged = divergence(step, &h, estimator, &b)?;
        let (test_loss, test_accuracy) = match (config.test, estimator.w()) {
            (Some(test), Some(w)) if diverged.is_none() => {
                let (loss, acc) = problem.evaluate(w, test)?;
                (Some(loss), acc)
            }
            _ => (None, None),
        };
        let solves_inner = !h.method.is_trajectory() && !h.method.is_stochastic();
        let mut record = StepRecord {
            step,
            seconds: seconds(),
            theta_norm,
            outer_loss: h.outer_loss,
            hypergradient_norm: norm(&h.hypergradient),
            test_loss,
            test_accuracy,
            inner_grad_norm: Some(h.inner_grad_norm).filter(|v| v.is_finite()),
            inner_iters: solves_inner.then_some(h.inner_iters),
            inner_converged: solves_inner.then_some(h.inner_converged),
            error_bound: h.error_bound,
            residual_norm: h.residual_norm,
            refinement: h.refinement,
            inner_host_syncs: stats.map(|s| s.inner_host_syncs),
            fisher_update: stats.and_then(|s| s.fisher_update),
            inner_host_transfers: stats.map(|s| s.inner_host_transfers),
            inner_tol: matches!(config.opt, OuterOpt::Maid { .. }).then_some(opt_state.inner_tol),
            linear_tol: matches!(config.opt, OuterOpt::Maid { .. }).then_some(opt_state.linear_tol),
            saturated_fraction,
            stopped: diverged,
        };
        if record.stopped.is_some() {
            return stop(&mut on_record, record);
        }
        if step == config.outer_steps {
            sink_result(on_record(&record))?;
            records.push(record);
            break;
        }
        // θ of this step, for a sink that ends the run here ([`Error::Stopped`]).
        let theta_now = problem.theta().to_vec();
        // The update, before the record goes out, so that a step whose update diverges says
        // so in its record.
        let next = match config.opt {
            OuterOpt::Maid { .. } => maid_step(problem, estimator, &mut opt_state, &h),
            opt => Ok(update(
                &opt,
                &mut opt_state,
                problem.theta(),
                &h.hypergradient,
            )),
        };
        let theta = match next.and_then(|theta| checked_theta(problem, theta, &opt_state)) {
            Ok(theta) => theta,
            Err(Error::Numerical(message)) => {
                record.stopped = Some(update_diverged(step, &message, &config.opt));
                return stop(&mut on_record, record);
            }
            Err(e) => return Err(e),
        };
        // The state after step `step` is saved when the next step number is a multiple of K,
        // and after the last update, so that a finished run resumes at its end.
        let every = config.checkpoint_every.max(1);
        let due = (step + 1) % every == 0 || step + 1 == config.outer_steps;
        let checkpoint = match config.checkpoint {
            Some(path) if due => {
                let checkpoint = Checkpoint::new(
                    config.fingerprint.clone(),
                    step,
                    seconds(),
                    theta,
                    opt_state.clone(),
                    estimator.state(&b)?,
                );
                if let Some(what) = checkpoint.non_finite() {
                    record.stopped = Some(format!(
                        "outer step {step}: the state to checkpoint is not finite ({what}); \
                         lower {}",
                        lower_outer(step, h.method)
                    ));
                    return stop(&mut on_record, record);
                }
                Some((checkpoint, path))
            }
            _ => None,
        };
        // The record goes out before the checkpoint is written: a run killed between the two
        // resumes from the step before and writes this record again, never skips it.
        match on_record(&record) {
            Ok(()) => {}
            // The sink ended the run at this step (a Python callback returned False): the
            // run ends as if this step were the last, θ back at the value its record
            // describes (the update above is undone), and no checkpoint of the update.
            Err(Error::Stopped) => {
                problem.set_theta(&theta_now)?;
                records.push(record);
                break;
            }
            Err(e) => return Err(e),
        }
        records.push(record);
        if let Some((checkpoint, path)) = checkpoint {
            checkpoint.save(path)?;
        }
        step += 1;
    }
    Ok(RunOutcome {
        records,
        theta: problem.theta().to_vec(),
        resumed_from,
    })
}

/// A sink's answer on the last step: [`Error::Stopped`] there ends the run as it ends anyway.
fn sink_result(result: Result<()>) -> Result<()> {
    match result {
        Err(Error::Stopped) => Ok(()),
        other => other,
    }
}

/// Ends a run at a step that diverged: its record (which says why in `stopped`) goes out, and
/// the error names the step and the option to lower; the checkpoint keeps the step before.
fn stop(
    on_record: &mut impl FnMut(&StepRecord) -> Result<()>,
    record: StepRecord,
) -> Result<RunOutcome> {
    let reason = record.stopped.clone().unwrap_or_default();
    on_record(&record)?;
    Err(Error::Numerical(reason))
}

/// θ after an update, set on the problem: `Err(Numerical)` when θ or the optimiser's state
/// is not finite, or θ is outside the problem's domain (`set_theta` refuses it).
fn checked_theta<P: Bilevel>(
    problem: &mut P,
    theta: Vec<f64>,
    state: &OptState,
) -> Result<Vec<f64>> {
    if let Some(bad) = non_finite_entry("θ", &theta)
        .or_else(|| non_finite_entry("Adam's first moment", &state.m))
        .or_else(|| non_finite_entry("Adam's second moment", &state.v))
    {
        return Err(Error::Numerical(format!("{bad} is not finite")));
    }
    problem.set_theta(&theta)?;
    Ok(theta)
}

/// The reason a step's update diverged (`detail`: what was not finite or out of the domain).
fn update_diverged(step: u64, detail: &str, opt: &OuterOpt) -> String {
    format!(
        "outer step {step}: the update took θ out of the finite numbers or the problem's \
         domain ({detail}); lower --outer-lr (it is {})",
        outer_lr(opt)
    )
}

/// `--outer-lr` as the optimiser holds it, written as a user would (`0.1`, `1e30`).
fn outer_lr(opt: &OuterOpt) -> String {
    let lr = match opt {
        OuterOpt::Sgd { lr } | OuterOpt::Maid { lr } => *lr,
        OuterOpt::Adam(adam) => adam.lr,
    };
    if (1e-3..1e6).contains(&lr.abs()) {
        format!("{lr}")
    } else {
        format!("{lr:e}")
    }
}

/// What to lower when θ's hypergradient or loss blew up at `step`: the outer step size once θ
/// has moved, and the linear solve's step for the methods that take one.
fn lower_outer(step: u64, method: hypergrad::Method) -> String {
    use hypergrad::Method::*;
    let linear = match method {
        Stocbio | Amigo | Soba => Some("--linear-lr"),
        Neumann | FixedPoint | Unroll | Forward => Some("--step"),
        _ => None,
    };
    match (step, linear) {
        (0, Some(linear)) => linear.to_string(),
        (0, None) => "the starting θ (--theta)".to_string(),
        (_, Some(linear)) => format!("--outer-lr (or {linear})"),
        (_, None) => "--outer-lr".to_string(),
    }
}

/// The first non-finite entry of `v`, as `name[i] = value`.
pub(crate) fn non_finite_entry(name: &str, v: &[f64]) -> Option<String> {
    v.iter()
        .position(|x| !x.is_finite())
        .map(|i| format!("{name}[{i}] = {}", v[i]))
}

/// The first non-finite entry of the inner iterate, as `w[i] = value`: a stochastic
/// estimator's is where its inner loop got to (downloaded: only on the error paths), a
/// deterministic one's is the solution behind `h` (`h_w`, on the host already).
fn non_finite_iterate<P: Bilevel>(
    estimator: &Estimator<P>,
    b: &P::B,
    h_w: Option<&[f64]>,
) -> Result<Option<String>> {
    Ok(match estimator {
        Estimator::Stochastic(est) => non_finite_entry("w", &b.download(est.w())?),
        Estimator::Deterministic { .. } => h_w.and_then(|w| non_finite_entry("w", w)),
    })
}

/// Why step `step`'s estimate cannot be used, if it cannot: a non-finite outer loss or
/// hypergradient, blamed on the inner iterate when that is not finite (it makes the loss and
/// the hypergradient non-finite too). A finite estimate costs no read-back of the iterate.
fn divergence<P: Bilevel>(
    step: u64,
    h: &Hypergradient,
    estimator: &Estimator<P>,
    b: &P::B,
) -> Result<Option<String>> {
    let bad_h = non_finite_entry("h", &h.hypergradient);
    if h.outer_loss.is_finite() && bad_h.is_none() {
        return Ok(None);
    }
    if let Some(bad) = non_finite_iterate(estimator, b, Some(&h.w))? {
        let lower = estimator
            .inner_step_option()
            .map_or_else(|| lower_outer(step, h.method), str::to_string);
        return Ok(Some(format!(
            "outer step {step}: the inner iterate is not finite ({bad}); lower {lower}"
        )));
    }
    Ok(Some(match bad_h {
        Some(bad) if h.outer_loss.is_finite() => format!(
            "outer step {step}: the hypergradient is not finite ({bad}); lower {}",
            lower_outer(step, h.method)
        ),
        _ => format!(
            "outer step {step}: the outer loss is {}; lower {}",
            h.outer_loss,
            lower_outer(step, h.method)
        ),
    }))
}

/// The reason for an estimate that failed numerically at `step` (`message`): the step, and
/// the option whose step to lower: the inner one when the inner iterate is no longer finite,
/// else, once θ has moved, the outer one. (A deterministic estimator keeps the last step's
/// solution, which says nothing here.)
fn breakdown<P: Bilevel>(
    step: u64,
    message: &str,
    estimator: &Estimator<P>,
    b: &P::B,
    opt: &OuterOpt,
) -> Result<String> {
    Ok(match non_finite_iterate(estimator, b, None)? {
        Some(bad) => format!(
            "outer step {step}: the inner iterate is not finite ({bad}); lower {} (what failed \
             then: {message})",
            estimator.inner_step_option().unwrap_or("--inner-lr")
        ),
        None if step == 0 => format!("outer step 0: {message}"),
        None => format!(
            "outer step {step}: {message}; if the outer steps took θ too far, lower --outer-lr \
             (it is {})",
            outer_lr(opt)
        ),
    })
}

fn norm(v: &[f64]) -> f64 {
    let plain = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if plain.is_finite() || v.iter().any(|x| !x.is_finite()) {
        return plain;
    }
    // The squares of finite entries overflowed (θ of 1e200): scale by the largest entry.
    let scale = v.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    scale * v.iter().map(|x| (x / scale).powi(2)).sum::<f64>().sqrt()
}

fn initial_state<P: Bilevel>(opt: &OuterOpt, estimator: &Estimator<P>, p: usize) -> OptState {
    let mut state = OptState::default();
    match opt {
        OuterOpt::Adam(_) => {
            state.m = vec![0.0; p];
            state.v = vec![0.0; p];
        }
        OuterOpt::Maid { lr } => {
            state.alpha = *lr;
            if let Estimator::Deterministic { opts, .. } = estimator {
                state.inner_tol = opts.inner.tol;
                state.linear_tol = opts.linear_tol;
            }
        }
        OuterOpt::Sgd { .. } => {}
    }
    state
}

/// θ after one step of SGD or Adam.
pub fn update(opt: &OuterOpt, state: &mut OptState, theta: &[f64], h: &[f64]) -> Vec<f64> {
    match *opt {
        OuterOpt::Sgd { lr } | OuterOpt::Maid { lr } => {
            theta.iter().zip(h).map(|(t, g)| t - lr * g).collect()
        }
        OuterOpt::Adam(adam) => {
            state.t += 1;
            let mut next = theta.to_vec();
            adam.step(state.t, &mut state.m, &mut state.v, &mut next, h);
            next
        }
    }
}

/// MAID's tightening factor ν, Armijo constant c, backtracking steps, and the number of
/// accepted steps after which the tolerances are relaxed again.
const MAID_NU: f64 = 0.1;
const MAID_ARMIJO: f64 = 1e-4;
const MAID_BACKTRACKS: usize = 12;
const RELAX_AFTER: u64 = 3;
/// MAID's inner and linear tolerances at the start, and the loosest it relaxes them to.
pub const MAID_START_TOL: f64 = 1e-4;
/// The tolerances never go below this (f64 rounding makes tighter ones meaningless).
const MAID_TOL_FLOOR: f64 = 1e-14;

fn deterministic_opts<P: Bilevel>(estimator: &mut Estimator<P>) -> Result<&mut Options> {
    match estimator {
        Estimator::Deterministic { opts, .. } => Ok(opts),
        Estimator::Stochastic(_) => Err(Error::option(
            "--outer-opt",
            "maid needs a deterministic method (exact, cg, neumann, fixed-point) with an error bound",
        )),
    }
}

/// A hypergradient whose bound is at most ½‖h‖, tightening the tolerances until it is.
fn maid_hypergradient<P: Bilevel>(
    problem: &P,
    estimator: &mut Estimator<P>,
    state: &mut OptState,
    step: u64,
) -> Result<(Hypergradient, Option<LoopStats>)> {
    loop {
        {
            let opts = deterministic_opts(estimator)?;
            opts.inner.tol = state.inner_tol;
            opts.linear_tol = state.linear_tol;
        }
        let (h, stats) = estimator.estimate(problem, step)?;
        let good = h
            .error_bound
            .is_some_and(|e| e <= 0.5 * norm(&h.hypergradient));
        if good || !tighten(state) {
            return Ok((h, stats));
        }
    }
}

/// Tightens ε and δ; false when both are already at the floor.
fn tighten(state: &mut OptState) -> bool {
    if state.inner_tol <= MAID_TOL_FLOOR && state.linear_tol <= MAID_TOL_FLOOR {
        return false;
    }
    state.inner_tol = (state.inner_tol * MAID_NU).max(MAID_TOL_FLOOR);
    state.linear_tol = (state.linear_tol * MAID_NU).max(MAID_TOL_FLOOR);
    state.steps_since_tightening = 0;
    true
}

/// The backtracking line search of MAID from θ along −h; returns the accepted θ (or θ itself,
/// with tightened tolerances, when no step length gives sufficient decrease).
fn maid_step<P: Bilevel>(
    problem: &mut P,
    estimator: &mut Estimator<P>,
    state: &mut OptState,
    h: &Hypergradient,
) -> Result<Vec<f64>> {
    let theta = problem.theta().to_vec();
    let h_sq: f64 = h.hypergradient.iter().map(|v| v * v).sum();
    let inner = {
        let opts = deterministic_opts(estimator)?;
        let mut inner = opts.inner;
        inner.tol = state.inner_tol;
        inner
    };
    let start = match estimator {
        Estimator::Deterministic { w: Some(w), .. } => {
            Some(crate::solver::linear::duplicate(problem.backend(), w)?)
        }
        _ => None,
    };
    let mut alpha = state.alpha;
    for _ in 0..MAID_BACKTRACKS {
        let trial: Vec<f64> = theta
            .iter()
            .zip(&h.hypergradient)
            .map(|(t, g)| t - alpha * g)
            .collect();
        problem.set_theta(&trial)?;
        let solved = solver::solve(problem, start.as_ref(), &inner)?;
        let value = problem.outer_value_grad(&solved.w, None)?;
        if value <= h.outer_loss - MAID_ARMIJO * alpha * h_sq {
            state.alpha = (alpha * 2.0).min(1e6);
            state.steps_since_tightening += 1;
            if state.steps_since_tightening >= RELAX_AFTER {
                state.inner_tol = (state.inner_tol / MAID_NU).min(MAID_START_TOL);
                state.linear_tol = (state.linear_tol / MAID_NU).min(MAID_START_TOL);
                state.steps_since_tightening = 0;
            }
            return Ok(trial);
        }
        alpha *= 0.5;
    }
    // No sufficient decrease: the function values were too inexact to tell. Stay, tighten.
    tighten(state);
    state.alpha = alpha;
    problem.set_theta(&theta)?;
    Ok(theta)
}
