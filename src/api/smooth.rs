//! `grad` and `run` for the smooth problems (`ridge`, `logreg`, `softmax`, `hyperclean`), on
//! whichever backend the device opened; `quadratic` goes to [`super::quadratic`], `distill`
//! (with either inner model) to [`super::distill`], the other networks to [`super::network`].

use serde_json::json;

use super::cleaning::{self, CleaningReport};
use super::data::{DenseSplits, Input};
use super::device::{Device, OnBackend};
use super::plan::SmoothPlan;
use super::settings::Settings;
use super::trace::TraceWriter;
use crate::backend::{FisherOps, GlmOps};
use crate::data::Dataset;
use crate::hypergrad::fisher::{DenseUpdate, DenseUpdateTiming};
use crate::hypergrad::stochastic::StochasticEstimator;
use crate::hypergrad::{self, Hypergradient};
use crate::outer::{self, Estimator, OuterOpt, OuterProblem, RunConfig, RunOutcome};
use crate::problem::{Bilevel, GlmBilevel, HyperLayout, InnerProblem, ProblemKind};
use crate::solver::{self, Solver};
use crate::{Error, Result};

/// One smooth hypergradient with what it was computed on.
pub struct SmoothReport {
    pub result: Hypergradient,
    pub kind: ProblemKind,
    pub layout: HyperLayout,
    /// θ's length.
    pub p: usize,
    /// c outputs × d features of the inner variable.
    pub outputs: usize,
    pub features: usize,
    pub train: String,
    pub val: String,
    pub n_train: usize,
    pub n_val: usize,
    pub device: String,
    pub device_note: Option<String>,
    pub inner_solver: Solver,
    pub inner_tol: f64,
    pub linear_tol: f64,
    /// The network of `--model mlp:…` (`None`: the linear model).
    pub network: Option<NetworkInfo>,
}

/// What a report says about a network inner model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NetworkInfo {
    /// `mlp:H1,...`.
    pub model: String,
    pub activation: &'static str,
    /// P, the number of inner variables (weights and biases).
    pub parameters: usize,
    /// The layer widths d, H1, …, c (the layout of `coef`, [`crate::backend::mlp`]).
    pub sizes: Vec<usize>,
}

impl SmoothReport {
    /// The object of `grad --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let value = serde_json::to_value(&self.result).unwrap_or_default();
        super::with_fields(
            value,
            json!({
                "problem": self.kind.name(),
                "hyper": self.layout.name(),
                "device": self.device,
                "device_note": self.device_note,
                "train": self.train,
                "val": self.val,
                "n_train": self.n_train,
                "n_val": self.n_val,
                "features": self.features,
                "outputs": self.outputs,
                "p": self.p,
                "inner_solver": self.inner_solver.name(),
                "inner_tol": self.inner_tol,
                "linear_tol": self.linear_tol,
                "model": self.network.as_ref().map_or("linear".to_string(), |n| n.model.clone()),
                "activation": self.network.as_ref().map(|n| n.activation),
                "parameters": self.network.as_ref().map_or(self.outputs * self.features, |n| n.parameters),
            }),
        )
    }
}

/// The outcome of a smooth `run`.
pub struct SmoothOutcome {
    pub kind: ProblemKind,
    pub method: hypergrad::Method,
    pub outer_opt: &'static str,
    pub device: String,
    pub device_note: Option<String>,
    pub warm_start: bool,
    pub outer_steps: u64,
    /// θ's length.
    pub p: usize,
    pub resumed_from: Option<u64>,
    pub theta: Vec<f64>,
    /// The trace records (SPEC §6), the last one the final step.
    pub trace: Vec<serde_json::Value>,
    /// What `--fisher-update auto` chose, and the projections it chose by.
    pub fisher_update_auto: Option<(DenseUpdate, DenseUpdateTiming)>,
    /// The three-model comparison of label cleaning (hyperclean with `corrupt`).
    pub cleaning: Option<CleaningReport>,
    /// The inner solution at the final θ (c×d, class-major; a network's P parameters in the
    /// layout of [`crate::backend::mlp`]).
    pub coef: Vec<f64>,
    pub outputs: usize,
    pub features: usize,
    /// The network of `--model mlp:…` (`None`: the linear model).
    pub network: Option<NetworkInfo>,
    /// `distill --retrain`: the test accuracy of a fresh model trained on the final θ.
    pub retrain_test_accuracy: Option<f64>,
}

impl SmoothOutcome {
    /// The fields every smooth `run` fills the same way, whatever its model: the header (the
    /// problem, the method and outer optimiser, the device, warm or cold start, the steps, θ's
    /// length) and what [`drive`] returned (θ, the trace, the step resumed from). The model's
    /// own fields start empty (no coefficients, cleaning report, network or retrain) for the
    /// caller to fill with struct-update syntax.
    pub(super) fn of_run(
        kind: ProblemKind,
        method: hypergrad::Method,
        opt: OuterOpt,
        settings: &Settings,
        (device, device_note): (String, Option<String>),
        p: usize,
        (outcome, trace): (RunOutcome, Vec<serde_json::Value>),
    ) -> Self {
        SmoothOutcome {
            kind,
            method,
            outer_opt: opt.name(),
            device,
            device_note,
            warm_start: !settings.cold_start,
            outer_steps: settings.outer_steps,
            p,
            resumed_from: outcome.resumed_from,
            theta: outcome.theta,
            trace,
            fisher_update_auto: None,
            cleaning: None,
            coef: Vec::new(),
            outputs: 0,
            features: 0,
            network: None,
            retrain_test_accuracy: None,
        }
    }

    /// The object of `run --json`, plus `coef`.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "problem": self.kind.name(),
            "method": self.method.name(),
            "outer_opt": self.outer_opt,
            "device": self.device,
            "device_note": self.device_note,
            "warm_start": self.warm_start,
            "outer_steps": self.outer_steps,
            "resumed_from": self.resumed_from,
            "final": self.trace.last(),
            "fisher_update_auto": self.fisher_update_auto.as_ref().map(|(update, timing)| json!({
                "chose": update,
                "measured": timing,
            })),
            "theta": self.theta,
            "cleaning": self.cleaning,
            "coef": self.coef,
            "coef_shape": match &self.network {
                None => json!([self.outputs, self.features]),
                Some(n) => json!([n.parameters]),
            },
            "model": self.network.as_ref().map_or("linear".to_string(), |n| n.model.clone()),
            "activation": self.network.as_ref().map(|n| n.activation),
            "retrain_test_accuracy": self.retrain_test_accuracy,
            "layer_sizes": self.network.as_ref().map(|n| n.sizes.clone()),
        })
    }
}

pub fn grad(plan: &SmoothPlan, settings: &Settings, input: &Input) -> Result<SmoothReport> {
    // distill takes either inner model (linear or a network).
    if plan.kind == ProblemKind::Distill {
        return super::distill::grad(plan, settings, input);
    }
    if let Some(network) = &plan.network {
        return super::network::grad(plan, network, settings, input);
    }
    if plan.kind == ProblemKind::Quadratic {
        return super::quadratic::grad(plan, settings, input);
    }
    let device = Device::open(&settings.device)?;
    let splits = input.dense(settings)?;
    let device_note = device.note();
    device.dispatch(Grad {
        plan,
        settings,
        splits: &splits,
        device_note,
    })
}

pub fn run(
    plan: &SmoothPlan,
    settings: &Settings,
    input: &Input,
    on_step: &mut dyn FnMut(&serde_json::Value) -> Result<()>,
) -> Result<SmoothOutcome> {
    // distill takes either inner model (linear or a network).
    if plan.kind == ProblemKind::Distill {
        return super::distill::run(plan, settings, input, on_step);
    }
    if let Some(network) = &plan.network {
        return super::network::run(plan, network, settings, input, on_step);
    }
    if plan.kind == ProblemKind::Quadratic {
        return super::quadratic::run(plan, settings, input, on_step);
    }
    let device = Device::open(&settings.device)?;
    let mut splits = input.dense(settings)?;
    let corrupted = match settings.corrupt {
        None => None,
        Some(fraction) => Some(cleaning::corrupt(
            plan.kind,
            &mut splits.train,
            fraction,
            settings.seed,
        )?),
    };
    let device_note = device.note();
    device.dispatch(Run {
        plan,
        settings,
        splits: &splits,
        corrupted: corrupted.as_deref(),
        device_note,
        on_step,
    })
}

/// Builds the problem on `backend` and sets θ from the settings.
/// The error for a hypergradient with a NaN or infinite entry (one line, naming the entry),
/// shared by every smooth family's `grad`.
pub(crate) fn finite_hypergradient(result: &Hypergradient) -> Result<()> {
    match result.hypergradient.iter().position(|h| !h.is_finite()) {
        Some(i) => Err(Error::Numerical(format!(
            "hypergradient entry {i} is {} (check the data scale, θ and the step)",
            result.hypergradient[i]
        ))),
        None => Ok(()),
    }
}

fn build<B: GlmOps>(
    backend: B,
    plan: &SmoothPlan,
    settings: &Settings,
    splits: &DenseSplits,
) -> Result<GlmBilevel<B>> {
    let mut problem = GlmBilevel::new(
        backend,
        plan.kind,
        plan.layout,
        &splits.train,
        &splits.val,
        settings.l2,
    )?;
    let p = problem.hyper_dim();
    let what = format!("{} with --hyper {}", plan.kind.name(), plan.layout.name());
    let theta = settings.theta.values(p, 0.0, &what)?;
    problem.set_theta(&theta)?;
    Ok(problem)
}

/// `grad` on one backend.
struct Grad<'a> {
    plan: &'a SmoothPlan,
    settings: &'a Settings,
    splits: &'a DenseSplits,
    device_note: Option<String>,
}

impl OnBackend for Grad<'_> {
    type Output = SmoothReport;
    fn on<B: GlmOps + FisherOps + Clone + 'static>(self, backend: B) -> Result<SmoothReport> {
        let Grad {
            plan,
            settings,
            splits,
            device_note,
        } = self;
        grad_on(backend, plan, settings, splits, device_note)
    }
}

fn grad_on<B: GlmOps + FisherOps + Clone>(
    backend: B,
    plan: &SmoothPlan,
    settings: &Settings,
    splits: &DenseSplits,
    device_note: Option<String>,
) -> Result<SmoothReport> {
    let device = backend.name();
    let problem = build(backend, plan, settings, splits)?;
    let opts = plan.options(settings, problem.backend().precision());
    let result = if opts.method.is_stochastic() {
        let stochastic = plan.stochastic(settings, opts.linear_tol);
        // One estimate from a cold start: T SGD steps from w = 0.
        let mut estimator = StochasticEstimator::new(&problem, &splits.train, stochastic)?;
        estimator.estimate(&problem, 0)?.0
    } else {
        hypergrad::compute(&problem, &opts, None)?
    };
    finite_hypergradient(&result)?;
    let (outputs, features) = problem.shape();
    Ok(SmoothReport {
        kind: plan.kind,
        layout: plan.layout,
        p: problem.hyper_dim(),
        outputs,
        features,
        train: splits.train.name.clone(),
        val: splits.val.name.clone(),
        n_train: splits.train.n(),
        n_val: splits.val.n(),
        device,
        device_note,
        inner_solver: opts.inner.solver,
        inner_tol: opts.inner.tol,
        linear_tol: opts.linear_tol,
        network: None,
        result,
    })
}

/// `run` on one backend; `corrupted` are the rows whose labels were replaced.
struct Run<'a> {
    plan: &'a SmoothPlan,
    settings: &'a Settings,
    splits: &'a DenseSplits,
    corrupted: Option<&'a [usize]>,
    device_note: Option<String>,
    on_step: &'a mut dyn FnMut(&serde_json::Value) -> Result<()>,
}

impl OnBackend for Run<'_> {
    type Output = SmoothOutcome;
    fn on<B: GlmOps + FisherOps + Clone + 'static>(self, backend: B) -> Result<SmoothOutcome> {
        run_on(backend, self)
    }
}

fn run_on<B: GlmOps + FisherOps + Clone + 'static>(
    backend: B,
    task: Run<'_>,
) -> Result<SmoothOutcome> {
    let Run {
        plan,
        settings,
        splits,
        corrupted,
        device_note,
        on_step,
    } = task;
    let device = backend.name();
    let mut problem = build(backend.clone(), plan, settings, splits)?;
    let opts = plan.options(settings, backend.precision());
    let warm = !settings.cold_start;
    let opt = plan.outer_opt(settings)?;
    // What `--fisher-update auto` measured, for the summary (None when it did not run).
    let mut fisher_update_auto = None;
    let mut estimator = if opts.method.is_stochastic() {
        let mut stochastic = plan.stochastic(settings, opts.linear_tol);
        stochastic.warm_start = warm;
        stochastic.diagnostics = false;
        let stochastic = StochasticEstimator::new(&problem, &splits.train, stochastic)?;
        if let (update, Some(timing)) = stochastic.dense_update() {
            fisher_update_auto = Some((update, timing));
        }
        Estimator::Stochastic(Box::new(stochastic))
    } else {
        let mut opts = opts;
        if opt.name() == "maid" {
            // MAID starts loose and tightens only when a step needs it.
            opts.inner.tol = settings.inner_tol.unwrap_or(outer::MAID_START_TOL);
            opts.linear_tol = settings.linear_tol.unwrap_or(outer::MAID_START_TOL);
        }
        Estimator::Deterministic {
            opts,
            warm,
            w: None,
        }
    };
    let fingerprint = format!(
        "{} {} method={} opt={} train={} n={} seed={} corrupt={:?} T={} b={} warm={warm}",
        plan.kind.name(),
        plan.layout.name(),
        opts.method.name(),
        opt.name(),
        splits.train.name,
        splits.train.n(),
        settings.seed,
        settings.corrupt,
        settings.inner_steps,
        settings.batch_size,
    );
    let (outcome, trace) = drive(
        &mut problem,
        &mut estimator,
        settings,
        opt,
        splits.test.as_ref(),
        fingerprint,
        on_step,
    )?;
    let cleaning = match corrupted {
        Some(corrupted) if plan.kind == ProblemKind::Hyperclean => Some(cleaning::report(
            &problem,
            &opts.inner,
            settings.l2,
            splits,
            corrupted,
        )?),
        _ => None,
    };
    // The model the final θ trains: the exact inner solution (what `coef_` means in Python),
    // warm-started from the last inner point where the estimator kept one.
    let coef = match &cleaning {
        Some(report) => report.coef.clone(),
        None => {
            let w0 = match &estimator {
                Estimator::Deterministic { w, .. } => w.as_ref(),
                Estimator::Stochastic(_) => None,
            };
            let w = solver::solve(&problem, w0, &opts.inner)?.w;
            problem.backend().download(&w)?
        }
    };
    let (outputs, features) = problem.shape();
    Ok(SmoothOutcome {
        fisher_update_auto,
        cleaning,
        coef,
        outputs,
        features,
        ..SmoothOutcome::of_run(
            plan.kind,
            opts.method,
            opt,
            settings,
            (device, device_note),
            problem.hyper_dim(),
            (outcome, trace),
        )
    })
}

/// The outer loop of `run` with the settings' trace file and checkpoint: each step's record is
/// written to the trace file, handed to `on_step` and kept (the trace of the outcome).
pub(super) fn drive<P>(
    problem: &mut P,
    estimator: &mut Estimator<P>,
    settings: &Settings,
    opt: OuterOpt,
    test: Option<&Dataset>,
    fingerprint: String,
    on_step: &mut dyn FnMut(&serde_json::Value) -> Result<()>,
) -> Result<(RunOutcome, Vec<serde_json::Value>)>
where
    P: OuterProblem,
    P::B: Clone,
{
    let resumed_step = match settings.checkpoint.as_deref() {
        Some(ck) => outer::Checkpoint::load(ck)?.map(|c| c.step),
        None => None,
    };
    let mut trace_file = TraceWriter::open(settings.trace.as_deref(), resumed_step)?;
    let mut trace = Vec::new();
    let config = RunConfig {
        outer_steps: settings.outer_steps,
        opt,
        test,
        fingerprint,
        checkpoint: settings.checkpoint.as_deref(),
    };
    let outcome = outer::run(problem, estimator, &config, |record| {
        let value = serde_json::to_value(record)
            .map_err(|e| Error::Backend(format!("cannot serialise a trace record: {e}")))?;
        trace_file.write(&value)?;
        on_step(&value)?;
        trace.push(value);
        Ok(())
    })?;
    Ok((outcome, trace))
}
