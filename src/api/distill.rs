//! `grad` and `run` for `distill` (SPEC §9): θ is K synthetic rows per class, the outer loss
//! the validation rows' CE, the inner model trained on θ either
//!
//! * the linear softmax model ([`DistillBilevel`]), or
//! * a network (`--model mlp:…`, [`MlpDistillBilevel`]; the derivatives with respect to the
//!   input rows are [`MlpInputOps`]),
//!
//! each on whichever backend the device opened, its cross derivative included.
//!
//! Both go through the same [`grad_on`] and [`run_on`] once the problem is built.

use super::data::{DenseSplits, Input};
use super::device::{Backend as DeviceBackend, Device, OnBackend};
use super::names::DistillInitName;
use super::outcome::{drive, NetworkInfo, SmoothOutcome, SmoothReport};
use super::plan::{NetworkPlan, SmoothPlan};
use super::settings::Settings;
use crate::backend::cpu::CpuBackend;
use crate::backend::mlp::MlpInputOps;
use crate::backend::{Backend, FisherOps, GlmOps};
use crate::hypergrad;
use crate::hypergrad::stochastic::{StochasticEstimator, StochasticOptions};
use crate::outer::{
    DistillEstimator, Distillation, Estimator, OuterProblem, StochasticEstimate, MAID_START_TOL,
};
use crate::problem::distill::{initial_theta, DistillInit, Synthetic};
use crate::problem::{DistillBilevel, InnerProblem, MlpDistillBilevel};
use crate::solver::{self, InnerOptions};
use crate::{Error, Result};

/// Where the problem starts: c, K and θ (default: K random training rows per class, or
/// N(0, 1) noise with `--distill-init noise`), after refusing what distill does not use.
struct Start {
    classes: usize,
    k: usize,
    theta: Vec<f64>,
}

impl Start {
    fn new(settings: &Settings, splits: &DenseSplits) -> Result<Start> {
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
        let p = k.saturating_mul(classes).saturating_mul(d);
        // θ (the K·c synthetic rows) with the outer optimiser's moments and the hypergradient,
        // and the rows on the backend: refused before any of it is drawn.
        let mut plan = crate::memory::MemoryPlan::new();
        plan.add(
            "θ, the synthetic rows, with the optimiser's state",
            5,
            p as u64,
            8,
            "a smaller --images-per-class",
        );
        plan.check(crate::memory::available_host_bytes(), "host")?;
        let what = format!(
            "distill (K = {k} images per class × c = {classes} classes × d = {d} features)"
        );
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
        Ok(Start { classes, k, theta })
    }
}

/// What `grad` and `run` need of either distillation problem beyond [`Bilevel`].
trait Distilled: OuterProblem + Distillation + Sized + 'static {
    fn set(&self) -> &Synthetic;
    /// The network of `--model mlp:…` for the reports (`None`: the linear model).
    fn network_info(&self, settings: &Settings) -> Option<NetworkInfo>;
    /// NHGD on this problem with the given options: the inner model's estimator on the
    /// synthetic rows, with distillation's θ and `B`.
    fn nhgd(&self, opts: StochasticOptions) -> Result<Box<dyn StochasticEstimate<Self>>> {
        let rows = self.set().dataset()?;
        let estimator = StochasticEstimator::new(self.inner_model(), &rows, opts)?;
        Ok(Box::new(DistillEstimator(estimator)))
    }
}

impl<B: GlmOps + FisherOps + Clone + 'static> Distilled for DistillBilevel<B> {
    fn set(&self) -> &Synthetic {
        self.synthetic_set()
    }
    fn network_info(&self, _settings: &Settings) -> Option<NetworkInfo> {
        None
    }
}

impl<B: MlpInputOps + FisherOps + Clone + 'static> Distilled for MlpDistillBilevel<B> {
    fn set(&self) -> &Synthetic {
        self.synthetic_set()
    }
    fn network_info(&self, settings: &Settings) -> Option<NetworkInfo> {
        let net = self.network();
        Some(NetworkInfo {
            model: settings.model.name(),
            activation: net.activation().name(),
            parameters: self.inner_dim(),
            sizes: net.sizes().to_vec(),
        })
    }
}

/// NHGD's options on distill; `warm` is `run`'s start (then without the extra diagnostic
/// pass), `None` for `grad`'s one estimate.
fn nhgd_options(
    plan: &SmoothPlan,
    settings: &Settings,
    linear_tol: f64,
    set: &Synthetic,
    warm: Option<bool>,
) -> StochasticOptions {
    let mut opts = plan.stochastic(settings, linear_tol);
    if let Some(warm) = warm {
        opts.warm_start = warm;
        opts.diagnostics = false;
    }
    // The synthetic set has only K·c rows: a larger batch means all of them.
    opts.batch = opts.batch.min(set.rows());
    opts
}

/// `grad` or `run` once the problem is built.
trait Task {
    type Output;
    fn on<P: Distilled>(self, problem: P, device_note: Option<String>) -> Result<Self::Output>
    where
        P::B: Clone;
}

/// The linear model on the backend the device opened.
struct Linear<'a, T> {
    task: T,
    start: Start,
    settings: &'a Settings,
    splits: &'a DenseSplits,
    device_note: Option<String>,
}

impl<T: Task> OnBackend for Linear<'_, T> {
    type Output = T::Output;
    fn on<B: GlmOps + FisherOps + Clone + 'static>(self, backend: B) -> Result<T::Output> {
        let Start { classes, k, theta } = &self.start;
        let problem = DistillBilevel::new(
            backend,
            *classes,
            *k,
            &self.splits.val,
            self.settings.l2,
            theta,
        )?;
        self.task.on(problem, self.device_note)
    }
}

/// The network of `--model mlp:…` on the backend of `device`.
fn on_network<T: Task>(
    task: T,
    device: Device,
    network: &NetworkPlan,
    start: Start,
    settings: &Settings,
    splits: &DenseSplits,
    device_note: Option<String>,
) -> Result<T::Output> {
    fn build<B: MlpInputOps>(
        backend: B,
        network: &NetworkPlan,
        start: Start,
        settings: &Settings,
        splits: &DenseSplits,
    ) -> Result<MlpDistillBilevel<B>> {
        MlpDistillBilevel::new(
            backend,
            start.classes,
            start.k,
            &network.hidden,
            network.activation,
            &splits.val,
            settings.l2,
            &start.theta,
            settings.seed,
        )
    }
    match device.backend {
        DeviceBackend::CpuF64 => task.on(
            build(CpuBackend::<f64>::new(), network, start, settings, splits)?,
            device_note,
        ),
        DeviceBackend::CpuF32 => task.on(
            build(CpuBackend::<f32>::new(), network, start, settings, splits)?,
            device_note,
        ),
        DeviceBackend::Cuda(backend) => task.on(
            build(backend, network, start, settings, splits)?,
            device_note,
        ),
    }
}

/// Opens the device, builds the problem of the plan's model and runs `task` on it.
fn dispatch<T: Task>(
    task: T,
    plan: &SmoothPlan,
    settings: &Settings,
    splits: &DenseSplits,
) -> Result<T::Output> {
    let start = Start::new(settings, splits)?;
    match &plan.network {
        None => {
            let device = Device::open(&settings.device)?;
            let device_note = device.note();
            device.dispatch(Linear {
                task,
                start,
                settings,
                splits,
                device_note,
            })
        }
        Some(network) => {
            let device = Device::open(&settings.device)?;
            let device_note = device.note();
            on_network(task, device, network, start, settings, splits, device_note)
        }
    }
}

pub fn grad(plan: &SmoothPlan, settings: &Settings, input: &Input) -> Result<SmoothReport> {
    let splits = input.dense(settings)?;
    dispatch(
        Grad {
            plan,
            settings,
            splits: &splits,
        },
        plan,
        settings,
        &splits,
    )
}

struct Grad<'a> {
    plan: &'a SmoothPlan,
    settings: &'a Settings,
    splits: &'a DenseSplits,
}

impl Task for Grad<'_> {
    type Output = SmoothReport;
    fn on<P: Distilled>(self, problem: P, device_note: Option<String>) -> Result<SmoothReport>
    where
        P::B: Clone,
    {
        grad_on(self.plan, self.settings, self.splits, problem, device_note)
    }
}

/// One hypergradient at the problem's θ.
fn grad_on<P: Distilled>(
    plan: &SmoothPlan,
    settings: &Settings,
    splits: &DenseSplits,
    problem: P,
    device_note: Option<String>,
) -> Result<SmoothReport>
where
    P::B: Clone,
{
    let device = problem.backend().name();
    let opts = plan.options(settings, problem.backend().precision());
    let result = if opts.method.is_stochastic() {
        // One estimate from a cold start: T SGD steps from the problem's initial point.
        let stochastic = nhgd_options(plan, settings, opts.linear_tol, problem.set(), None);
        problem.nhgd(stochastic)?.estimate(&problem, 0)?.0
    } else {
        hypergrad::compute(&problem, &opts, None)?
    };
    super::outcome::finite_hypergradient(&result)?;
    let set = problem.set();
    Ok(SmoothReport {
        kind: plan.kind,
        layout: plan.layout,
        p: problem.hyper_dim(),
        outputs: set.classes(),
        features: set.features(),
        train: format!(
            "{} synthetic rows (K = {} per class, from {})",
            set.rows(),
            set.images_per_class(),
            splits.train.name
        ),
        val: splits.val.name.clone(),
        n_train: set.rows(),
        n_val: splits.val.n(),
        device,
        device_note,
        inner_solver: opts.inner.solver,
        inner_tol: opts.inner.tol,
        linear_tol: opts.linear_tol,
        network: problem.network_info(settings),
        result,
    })
}

pub fn run(
    plan: &SmoothPlan,
    settings: &Settings,
    input: &Input,
    on_step: &mut dyn FnMut(&serde_json::Value) -> Result<()>,
) -> Result<SmoothOutcome> {
    let splits = input.dense(settings)?;
    dispatch(
        Run {
            plan,
            settings,
            splits: &splits,
            on_step,
        },
        plan,
        settings,
        &splits,
    )
}

struct Run<'a> {
    plan: &'a SmoothPlan,
    settings: &'a Settings,
    splits: &'a DenseSplits,
    on_step: &'a mut dyn FnMut(&serde_json::Value) -> Result<()>,
}

impl Task for Run<'_> {
    type Output = SmoothOutcome;
    fn on<P: Distilled>(self, problem: P, device_note: Option<String>) -> Result<SmoothOutcome>
    where
        P::B: Clone,
    {
        run_on(self, problem, device_note)
    }
}

/// The outer loop, then the model of the run and, with `--retrain`, a fresh model's test
/// accuracy.
fn run_on<P: Distilled>(
    task: Run<'_>,
    mut problem: P,
    device_note: Option<String>,
) -> Result<SmoothOutcome>
where
    P::B: Clone,
{
    let Run {
        plan,
        settings,
        splits,
        on_step,
    } = task;
    let network = problem.network_info(settings);
    let device = problem.backend().name();
    let opts = plan.options(settings, problem.backend().precision());
    let opt = plan.outer_opt(settings)?;
    if network.is_some() && opt.name() == "maid" {
        return Err(Error::option(
            "--outer-opt",
            "maid steers by error bounds, which the networks (--model mlp:…) do not have; use sgd or adam",
        ));
    }
    let warm = !settings.cold_start;
    let mut estimator: Estimator<P> = if opts.method.is_stochastic() {
        let stochastic = nhgd_options(plan, settings, opts.linear_tol, problem.set(), Some(warm));
        Estimator::Stochastic(problem.nhgd(stochastic)?)
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
    let mut fingerprint = format!(
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
    if let Some(net) = &network {
        fingerprint.push_str(&format!(
            " model={} activation={}",
            net.model, net.activation
        ));
    }
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
    // `--retrain`: a fresh model from the problem's initial point (0, or a network's seeded
    // w₀) on the final θ, trained to convergence (Newton to the precision's default
    // tolerance), whatever the run's truncated inner budget.
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
    let set = problem.set();
    Ok(SmoothOutcome {
        coef,
        outputs: set.classes(),
        features: set.features(),
        network,
        retrain_test_accuracy,
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
