//! `grad` and `run` for the smooth problems (`ridge`, `logreg`, `softmax`, `hyperclean`), on
//! whichever backend the device opened; `quadratic` goes to [`super::quadratic`], `distill`
//! (with either inner model) to [`super::distill`], the other networks to [`super::network`].

use super::cleaning;
use super::data::{DenseSplits, Input};
use super::device::{Device, OnBackend};
use super::outcome::{drive, finite_hypergradient, SmoothOutcome, SmoothReport};
use super::plan::SmoothPlan;
use super::settings::Settings;
use crate::backend::{FisherOps, GlmOps};
use crate::hypergrad;
use crate::hypergrad::stochastic::StochasticEstimator;
use crate::outer::{self, Estimator};
use crate::problem::{Bilevel, GlmBilevel, InnerProblem, ProblemKind};
use crate::solver;
use crate::Result;

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
    // Before the estimator allocates what grows with P (a dense curvature or Hessian).
    let (outputs, features) = problem.shape();
    super::footprint::check(
        problem.backend(),
        plan,
        settings,
        &super::footprint::Sizes {
            rows: splits.train.n() + splits.val.n(),
            features,
            outputs,
            inner: problem.inner_dim(),
            hyper: problem.hyper_dim(),
            hidden: &[],
        },
    )?;
    let p = problem.hyper_dim();
    let what = format!("{} with --hyper {}", plan.kind.name(), plan.layout.name());
    let theta = settings.theta.values(p, 0.0, &what)?;
    // A θ the user gave that the problem cannot take (λ = exp(θ) overflows) is bad input.
    problem.set_theta(&theta).map_err(|e| match e {
        crate::Error::Numerical(m) => crate::Error::option("--theta", m),
        other => other,
    })?;
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
