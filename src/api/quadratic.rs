//! `grad` and `run` for `quadratic` (SPEC §9): the problem is generated from its spec
//! (`--train synthetic:quadratic:…`), not loaded from rows, and it runs on the CPU in f64.

use super::data::Input;
use super::names::{DeviceName, PrecisionName};
use super::outcome::{drive, SmoothOutcome, SmoothReport};
use super::plan::SmoothPlan;
use super::settings::{DeviceSpec, Settings};
use crate::backend::Backend;
use crate::data::synthetic::QuadraticSpec;
use crate::hypergrad;
use crate::outer::{Estimator, MAID_START_TOL};
use crate::problem::quadratic::THETA_DEFAULT;
use crate::problem::{Bilevel, InnerProblem, QuadraticBilevel};
use crate::solver;
use crate::{Error, Result};

/// The device note of `quadratic`: `auto` always means the CPU (its constants and errors are
/// compared down to the f64 rounding floor, and its matrices are m×10).
fn check_device(spec: &DeviceSpec) -> Result<Option<String>> {
    if spec.precision == Some(PrecisionName::F32) {
        return Err(Error::option(
            "--precision",
            "quadratic computes in f64 only",
        ));
    }
    match spec.device {
        DeviceName::Cuda => Err(Error::option(
            "--device",
            "quadratic runs on the CPU only (in f64)",
        )),
        DeviceName::Auto => Ok(Some("auto chose the CPU: quadratic runs on the CPU".into())),
        DeviceName::Cpu => Ok(None),
    }
}

/// The spec of the problem: `--train` only (its A, b are the upper level, C, D, e the lower
/// level; there are no separate validation or test rows, and nothing to standardise).
fn spec_of(input: &Input, settings: &Settings) -> Result<QuadraticSpec> {
    let Input::Source(source) = input else {
        return Err(Error::option(
            "--problem",
            "quadratic generates its matrices from a spec (synthetic:quadratic:m=…,nx=…,nw=…,seed=…), not from rows in memory",
        ));
    };
    if let Some(val) = &source.val {
        return Err(Error::option(
            "--val",
            format!("quadratic's upper level (A, b) comes from its spec; drop --val {val}"),
        ));
    }
    if let Some(test) = &source.test {
        return Err(Error::option(
            "--test",
            format!("quadratic has no test rows; drop --test {test}"),
        ));
    }
    if settings.standardize {
        return Err(Error::option(
            "--standardize",
            "quadratic's matrices are the problem itself; scaling their columns would change it",
        ));
    }
    if settings.corrupt.is_some() {
        return Err(Error::option(
            "--corrupt",
            "quadratic has no labels to corrupt",
        ));
    }
    // The instance is the spec's seed; a --seed that silently did nothing would mislead.
    if settings.seed != 0 {
        return Err(Error::option(
            "--seed",
            format!(
                "quadratic's matrices come from the spec's seed: use --train synthetic:quadratic:…,seed={}",
                settings.seed
            ),
        ));
    }
    QuadraticSpec::parse(&source.train)
}

/// The problem at the settings' θ (default: w = (1, …, 1), where Ehrhardt & Roberts evaluate).
fn build(settings: &Settings, spec: QuadraticSpec) -> Result<QuadraticBilevel> {
    let mut problem = QuadraticBilevel::new(spec.generate())?;
    let p = problem.hyper_dim();
    let theta = settings
        .theta
        .values(p, THETA_DEFAULT, "quadratic (θ = w, p = nw)")?;
    problem.set_theta(&theta)?;
    Ok(problem)
}

pub fn grad(plan: &SmoothPlan, settings: &Settings, input: &Input) -> Result<SmoothReport> {
    let device_note = check_device(&settings.device)?;
    let spec = spec_of(input, settings)?;
    let problem = build(settings, spec)?;
    let opts = plan.options(settings, problem.backend().precision());
    let result = hypergrad::compute(&problem, &opts, None)?;
    if let Some(i) = result.hypergradient.iter().position(|h| !h.is_finite()) {
        return Err(Error::Numerical(format!(
            "hypergradient entry {i} is {} (check θ and the step)",
            result.hypergradient[i]
        )));
    }
    Ok(SmoothReport {
        kind: plan.kind,
        layout: plan.layout,
        p: problem.hyper_dim(),
        outputs: 1,
        features: spec.nx,
        train: format!("{} [lower level: C, D, e]", spec.name()),
        val: format!("{} [upper level: A, b]", spec.name()),
        n_train: spec.m,
        n_val: spec.m,
        device: problem.backend().name(),
        device_note,
        inner_solver: opts.inner.solver,
        inner_tol: opts.inner.tol,
        linear_tol: opts.linear_tol,
        network: None,
        result,
    })
}

pub fn run(
    plan: &SmoothPlan,
    settings: &Settings,
    input: &Input,
    on_step: &mut dyn FnMut(&serde_json::Value) -> Result<()>,
) -> Result<SmoothOutcome> {
    let device_note = check_device(&settings.device)?;
    let spec = spec_of(input, settings)?;
    let mut problem = build(settings, spec)?;
    let backend = problem.backend().clone();
    let opts = plan.options(settings, backend.precision());
    let opt = plan.outer_opt(settings)?;
    let mut estimated = opts;
    if opt.name() == "maid" {
        // MAID starts loose and tightens only when a step needs it.
        estimated.inner.tol = settings.inner_tol.unwrap_or(MAID_START_TOL);
        estimated.linear_tol = settings.linear_tol.unwrap_or(MAID_START_TOL);
    }
    let warm = !settings.cold_start;
    let mut estimator = Estimator::Deterministic {
        opts: estimated,
        warm,
        w: None,
    };
    let fingerprint = format!(
        "{} method={} opt={} warm={warm}",
        spec.name(),
        opts.method.name(),
        opt.name(),
    );
    let (outcome, trace) = drive(
        &mut problem,
        &mut estimator,
        settings,
        opt,
        None,
        fingerprint,
        on_step,
    )?;
    // x*(w) at the final w, warm-started from the last inner point.
    let start = match &estimator {
        Estimator::Deterministic { w, .. } => w.as_ref(),
        Estimator::Stochastic(_) => None,
    };
    let coef = solver::solve(&problem, start, &opts.inner)?.w;
    Ok(SmoothOutcome {
        coef,
        outputs: 1,
        features: spec.nx,
        ..SmoothOutcome::of_run(
            plan.kind,
            opts.method,
            opt,
            settings,
            (backend.name(), device_note),
            problem.hyper_dim(),
            (outcome, trace),
        )
    })
}
