//! What every smooth family's `grad` and `run` return (linear models in [`super::smooth`],
//! networks in [`super::network`], dataset distillation in [`super::distill`], the quadratic
//! in [`super::quadratic`]): the report of one hypergradient, the outcome of a run, and the
//! outer loop with the settings' trace file and checkpoint ([`drive`]) they all run.

use serde_json::json;

use super::cleaning::CleaningReport;
use super::settings::Settings;
use super::trace::TraceWriter;
use crate::data::Dataset;
use crate::hypergrad::fisher::{DenseUpdate, DenseUpdateTiming};
use crate::hypergrad::{self, Hypergradient};
use crate::outer::{self, Estimator, OuterOpt, OuterProblem, RunConfig, RunOutcome};
use crate::problem::{HyperLayout, ProblemKind};
use crate::solver::Solver;
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
    /// The inner solver of the methods that solve the inner problem to a tolerance (`None`
    /// for the trajectory and stochastic methods, whose inner loop is their own).
    pub inner_solver: Option<Solver>,
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
            inner_solver: (!method.is_trajectory() && !method.is_stochastic())
                .then(|| super::plan::inner_solver(settings.inner_solver)),
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
            "inner_solver": self.inner_solver.map(Solver::name),
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
            "saturation_warning": self.saturation_warning(),
        })
    }

    /// The report of the first step whose weights σ(θ) had saturated (hyperclean), if any
    /// did ([`outer::saturation_warning`]).
    pub fn saturation_warning(&self) -> Option<String> {
        self.trace.iter().find_map(outer::saturation_warning_of)
    }
}

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
        checkpoint_every: settings.checkpoint_every,
    };
    let outcome = outer::run(problem, estimator, &config, |record| {
        let value = serde_json::to_value(record)
            .map_err(|e| Error::Backend(format!("cannot serialise a trace record: {e}")))?;
        trace_file.write(&value)?;
        // Kept before the sink's answer: a sink that ends the run here
        // ([`Error::Stopped`]) still has this step in the trace.
        let answer = on_step(&value);
        trace.push(value);
        answer
    })?;
    Ok((outcome, trace))
}
