//! `grad` and `run` for `distill` (SPEC §9): θ is K synthetic rows per class, the inner model
//! the linear softmax model trained on them, the outer loss the validation rows' CE. Runs on
//! whichever backend the device opened (the cross derivative is computed on the host).

use super::data::{DenseSplits, Input};
use super::device::{Device, OnBackend};
use super::names::DistillInitName;
use super::plan::SmoothPlan;
use super::settings::Settings;
use super::smooth::{drive, SmoothOutcome, SmoothReport};
use crate::backend::Backend;
use crate::hypergrad::stochastic::{LoopStats, StochasticEstimator};
use crate::hypergrad::{self, Hypergradient};
use crate::outer::{Estimator, StochasticEstimate, MAID_START_TOL};
use crate::problem::distill::{initial_theta, DistillInit};
use crate::problem::{Bilevel, DistillBilevel, InnerProblem};
use crate::solver::{self, InnerOptions};
use crate::{Error, Result};

/// Refuses what distill does not use, then builds the problem at the settings' θ (default: K
/// random training rows per class, or N(0, 1) noise with `--distill-init noise`).
fn build<B: Backend>(
    backend: B,
    settings: &Settings,
    splits: &DenseSplits,
) -> Result<DistillBilevel<B>> {
    if settings.corrupt.is_some() {
        return Err(Error::option(
            "--corrupt",
            "distill learns its training rows; there are no training labels to corrupt",
        ));
    }
    let k = settings.images_per_class;
    if k == 0 {
        return Err(Error::option("--images-per-class", "must be at least 1"));
    }
    let train = &splits.train;
    let classes = train.num_classes()?;
    let d = train.d();
    let p = k * classes * d;
    let what =
        format!("distill (K = {k} images per class × c = {classes} classes × d = {d} features)");
    let theta = match settings.theta {
        super::settings::Theta::Default => {
            let init = match settings.distill_init {
                DistillInitName::Real => DistillInit::Real,
                DistillInitName::Noise => DistillInit::Noise,
            };
            initial_theta(train, classes, k, init, settings.seed)?
        }
        ref given => given.values(p, 0.0, &what)?,
    };
    DistillBilevel::new(backend, classes, k, &splits.val, settings.l2, &theta)
}

pub fn grad(plan: &SmoothPlan, settings: &Settings, input: &Input) -> Result<SmoothReport> {
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

struct Grad<'a> {
    plan: &'a SmoothPlan,
    settings: &'a Settings,
    splits: &'a DenseSplits,
    device_note: Option<String>,
}

impl OnBackend for Grad<'_> {
    type Output = SmoothReport;
    fn on<B: Backend + Clone + 'static>(self, backend: B) -> Result<SmoothReport> {
        let Grad {
            plan,
            settings,
            splits,
            device_note,
        } = self;
        let device = backend.name();
        let problem = build(backend, settings, splits)?;
        let opts = plan.options(settings, problem.backend().precision());
        let result = if opts.method.is_stochastic() {
            // One estimate from a cold start: T SGD steps from w = 0.
            let mut nhgd = DistillNhgd::new(&problem, plan, settings, opts.linear_tol, None)?;
            nhgd.estimate(&problem, 0)?.0
        } else {
            hypergrad::compute(&problem, &opts, None)?
        };
        super::smooth::finite_hypergradient(&result)?;
        let (outputs, features) = problem.shape();
        Ok(SmoothReport {
            kind: plan.kind,
            layout: plan.layout,
            p: problem.hyper_dim(),
            outputs,
            features,
            train: format!(
                "{} synthetic rows (K = {} per class, from {})",
                problem.images_per_class() * outputs,
                problem.images_per_class(),
                splits.train.name
            ),
            val: splits.val.name.clone(),
            n_train: problem.images_per_class() * outputs,
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
}

/// NHGD on distill: the GLM's stochastic estimator runs SGD and tracks the Fisher on the
/// current synthetic rows; the hypergradient is `−Bᵀq` with distill's B.
struct DistillNhgd<B: Backend> {
    inner: StochasticEstimator<B>,
}

impl<B: Backend + Clone> DistillNhgd<B> {
    fn new(
        problem: &DistillBilevel<B>,
        plan: &SmoothPlan,
        settings: &Settings,
        linear_tol: f64,
        warm: Option<bool>,
    ) -> Result<Self> {
        let mut opts = plan.stochastic(settings, linear_tol);
        if let Some(warm) = warm {
            // In `run`: warm or cold start as asked, and no extra diagnostic pass.
            opts.warm_start = warm;
            opts.diagnostics = false;
        }
        // The synthetic set has only K·c rows: a larger batch means all of them.
        let rows = problem.images_per_class() * problem.shape().0;
        opts.batch = opts.batch.min(rows);
        let synthetic = problem.synthetic()?;
        Ok(DistillNhgd {
            inner: StochasticEstimator::new(problem.glm(), &synthetic, opts)?,
        })
    }
}

impl<B: Backend + Clone> StochasticEstimate<DistillBilevel<B>> for DistillNhgd<B> {
    fn estimate(
        &mut self,
        problem: &DistillBilevel<B>,
        step: u64,
    ) -> Result<(Hypergradient, LoopStats)> {
        // θ moved the rows: the default SGD step follows their curvature.
        self.inner.refresh_curvature(problem.glm())?;
        self.inner.estimate_with(
            problem.glm(),
            step,
            &|w, q| problem.cross_t(w, q),
            problem.theta(),
        )
    }
    fn w(&self) -> &B::Buf {
        self.inner.w()
    }
    fn state(&self, backend: &B) -> Result<(Vec<f64>, Option<Vec<f64>>)> {
        self.inner.state(backend)
    }
    fn restore(&mut self, backend: &B, w: &[f64], q: Option<&[f64]>) -> Result<()> {
        self.inner.restore(backend, w, q)
    }
}

pub fn run(
    plan: &SmoothPlan,
    settings: &Settings,
    input: &Input,
    on_step: &mut dyn FnMut(&serde_json::Value) -> Result<()>,
) -> Result<SmoothOutcome> {
    let device = Device::open(&settings.device)?;
    let splits = input.dense(settings)?;
    let device_note = device.note();
    device.dispatch(Run {
        plan,
        settings,
        splits: &splits,
        device_note,
        on_step,
    })
}

struct Run<'a> {
    plan: &'a SmoothPlan,
    settings: &'a Settings,
    splits: &'a DenseSplits,
    device_note: Option<String>,
    on_step: &'a mut dyn FnMut(&serde_json::Value) -> Result<()>,
}

impl OnBackend for Run<'_> {
    type Output = SmoothOutcome;
    fn on<B: Backend + Clone + 'static>(self, backend: B) -> Result<SmoothOutcome> {
        let Run {
            plan,
            settings,
            splits,
            device_note,
            on_step,
        } = self;
        let device = backend.name();
        let mut problem = build(backend.clone(), settings, splits)?;
        let opts = plan.options(settings, backend.precision());
        let opt = plan.outer_opt(settings)?;
        let warm = !settings.cold_start;
        let mut estimator: Estimator<DistillBilevel<B>> = if opts.method.is_stochastic() {
            let nhgd = DistillNhgd::new(&problem, plan, settings, opts.linear_tol, Some(warm))?;
            Estimator::Stochastic(Box::new(nhgd))
        } else {
            let mut estimated = opts;
            if opt.name() == "maid" {
                estimated.inner.tol = settings.inner_tol.unwrap_or(MAID_START_TOL);
                estimated.linear_tol = settings.linear_tol.unwrap_or(MAID_START_TOL);
            }
            Estimator::Deterministic {
                opts: estimated,
                warm,
                w: None,
            }
        };
        let fingerprint = format!(
            "distill K={} init={:?} method={} opt={} train={} n={} seed={} T={} b={} warm={warm}",
            settings.images_per_class,
            settings.distill_init,
            opts.method.name(),
            opt.name(),
            splits.train.name,
            splits.train.n(),
            settings.seed,
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
        problem.set_theta(&outcome.theta)?;
        let b = problem.backend();
        // The model of the run: its last inner iterate (what the trace's test numbers score).
        let coef = match estimator.w() {
            Some(w) => b.download(w)?,
            None => b.download(&solver::solve(&problem, None, &opts.inner)?.w)?,
        };
        // `--retrain`: a fresh model from w₀ on the final θ, trained to convergence (Newton to
        // the precision's default tolerance), whatever the run's truncated inner budget.
        let retrain_test_accuracy = if settings.retrain {
            let Some(test) = splits.test.as_ref() else {
                return Err(Error::option(
                    "--retrain",
                    "needs test rows (--test, or a third part of --split)",
                ));
            };
            let full = InnerOptions::default_for(b.precision());
            let fresh = solver::solve(&problem, None, &full)?;
            problem.evaluate(&fresh.w, test)?.1
        } else {
            None
        };
        let (outputs, features) = problem.shape();
        Ok(SmoothOutcome {
            kind: plan.kind,
            method: opts.method,
            outer_opt: opt.name(),
            device,
            device_note,
            warm_start: warm,
            outer_steps: settings.outer_steps,
            p: problem.hyper_dim(),
            resumed_from: outcome.resumed_from,
            theta: outcome.theta,
            trace,
            fisher_update_auto: None,
            cleaning: None,
            coef,
            outputs,
            features,
            network: None,
            retrain_test_accuracy,
        })
    }
}
