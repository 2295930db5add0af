//! `grad` and `run` for the smooth problems with a network as the inner model
//! (`--model mlp:…`, SPEC §8): the same reports as the linear model's, from an
//! [`MlpBilevel`]. The network primitives ([`MlpOps`]) exist on every backend, so a network
//! runs wherever the linear models do: `--device cuda` on the GPU (f32, designs optionally
//! stored as bf16), `auto` on the GPU when one is usable and on the CPU otherwise (saying
//! why), `--device cpu` in f64 or f32.

use super::cleaning;
use super::data::{DenseSplits, Input};
use super::device::{Backend as DeviceBackend, Device};
use super::outcome::{NetworkInfo, SmoothOutcome, SmoothReport};
use super::plan::{NetworkPlan, SmoothPlan};
use super::settings::{DeviceSpec, Settings};
use crate::backend::cpu::CpuBackend;
use crate::backend::mlp::MlpOps;
use crate::backend::FisherOps;
use crate::hypergrad;
use crate::hypergrad::stochastic::StochasticEstimator;
use crate::outer::Estimator;
use crate::problem::{Bilevel, InnerProblem, MlpBilevel, ProblemKind};
use crate::solver;
use crate::{Error, Result};

/// The device `spec` asks for, opened as for the linear models, and the note `auto` gets
/// when it falls back to the CPU.
fn open(spec: &DeviceSpec) -> Result<(Device, Option<String>)> {
    let device = Device::open(spec)?;
    let note = device.note();
    Ok((device, note))
}

/// Code generic over the backends that have the network primitives: the networks' twin of
/// [`super::device::OnBackend`], whose bound is [`MlpOps`] rather than the core backend.
pub(crate) trait OnMlpBackend {
    type Output;
    fn on<B: MlpOps + FisherOps + Clone + 'static>(self, backend: B) -> Result<Self::Output>;
}

/// The one match from an opened device to its backend type, for networks.
pub(crate) fn dispatch<T: OnMlpBackend>(device: Device, task: T) -> Result<T::Output> {
    match device.backend {
        DeviceBackend::CpuF64 => task.on(CpuBackend::<f64>::new()),
        DeviceBackend::CpuF32 => task.on(CpuBackend::<f32>::new()),
        DeviceBackend::Cuda(backend) => task.on(backend),
    }
}

/// `grad` on one backend.
struct Grad<'a> {
    plan: &'a SmoothPlan,
    network: &'a NetworkPlan,
    settings: &'a Settings,
    splits: &'a DenseSplits,
    note: Option<String>,
}

impl OnMlpBackend for Grad<'_> {
    type Output = SmoothReport;
    fn on<B: MlpOps + FisherOps + Clone + 'static>(self, backend: B) -> Result<SmoothReport> {
        grad_on(
            backend,
            self.plan,
            self.network,
            self.settings,
            self.splits,
            self.note,
        )
    }
}

/// `run` on one backend.
struct Run<'a> {
    plan: &'a SmoothPlan,
    network: &'a NetworkPlan,
    settings: &'a Settings,
    splits: &'a DenseSplits,
    note: Option<String>,
    /// The training rows whose labels `--corrupt` replaced.
    corrupted: Option<&'a [usize]>,
    on_step: &'a mut dyn FnMut(&serde_json::Value) -> Result<()>,
}

impl OnMlpBackend for Run<'_> {
    type Output = SmoothOutcome;
    fn on<B: MlpOps + FisherOps + Clone + 'static>(self, backend: B) -> Result<SmoothOutcome> {
        let Run {
            plan,
            network,
            settings,
            splits,
            note,
            corrupted,
            on_step,
        } = self;
        run_on(
            backend, plan, network, settings, splits, note, corrupted, on_step,
        )
    }
}

pub(super) fn grad(
    plan: &SmoothPlan,
    network: &NetworkPlan,
    settings: &Settings,
    input: &Input,
) -> Result<SmoothReport> {
    let (device, note) = open(&settings.device)?;
    let splits = input.dense(settings)?;
    dispatch(
        device,
        Grad {
            plan,
            network,
            settings,
            splits: &splits,
            note,
        },
    )
}

/// Builds the network problem on `backend` (w₀ from `--seed`) and sets θ from the settings.
pub(super) fn build<B: MlpOps>(
    backend: B,
    plan: &SmoothPlan,
    network: &NetworkPlan,
    settings: &Settings,
    splits: &DenseSplits,
) -> Result<MlpBilevel<B>> {
    // Before w₀ and the rest of what grows with P are allocated (the network's shape is
    // checked, its P counted without overflow, by `Network::new`).
    let (d, c) = (splits.train.d(), splits.train.num_classes()?);
    let net = crate::backend::mlp::Network::new(d, &network.hidden, c, network.activation)?;
    let hyper = match plan.layout {
        crate::problem::HyperLayout::PerSample => splits.train.n(),
        _ => net.layers(),
    };
    super::footprint::check(
        &backend,
        plan,
        settings,
        &super::footprint::Sizes {
            rows: splits.train.n() + splits.val.n(),
            features: d,
            outputs: c,
            inner: net.dim(),
            hyper,
            hidden: &network.hidden,
        },
    )?;
    let mut problem = MlpBilevel::new(
        backend,
        plan.kind,
        plan.layout,
        &network.hidden,
        network.activation,
        &splits.train,
        &splits.val,
        settings.l2,
        settings.seed,
    )?;
    let p = problem.hyper_dim();
    let what = format!(
        "{} with --model {} --hyper {}",
        plan.kind.name(),
        settings.model.name(),
        plan.layout.name()
    );
    let theta = settings.theta.values(p, 0.0, &what)?;
    // A θ the user gave that the problem cannot take (λ = exp(θ) overflows) is bad input.
    problem.set_theta(&theta).map_err(|e| match e {
        crate::Error::Numerical(m) => crate::Error::option("--theta", m),
        other => other,
    })?;
    Ok(problem)
}

fn grad_on<B: MlpOps + FisherOps + Clone>(
    backend: B,
    plan: &SmoothPlan,
    network: &NetworkPlan,
    settings: &Settings,
    splits: &DenseSplits,
    device_note: Option<String>,
) -> Result<SmoothReport> {
    let device = backend.name();
    let problem = build(backend, plan, network, settings, splits)?;
    let opts = plan.options(settings, problem.backend().precision());
    let result = if opts.method.is_stochastic() {
        // One estimate from a cold start: T SGD steps from w₀.
        let mut estimator = StochasticEstimator::new(
            &problem,
            &splits.train,
            plan.stochastic(settings, opts.linear_tol),
        )?;
        estimator.estimate(&problem, 0)?.0
    } else {
        hypergrad::compute(&problem, &opts, None)?
    };
    super::outcome::finite_hypergradient(&result)?;
    let net = problem.network();
    Ok(SmoothReport {
        kind: plan.kind,
        layout: plan.layout,
        p: problem.hyper_dim(),
        outputs: net.outputs(),
        features: net.inputs(),
        train: splits.train.name.clone(),
        val: splits.val.name.clone(),
        n_train: splits.train.n(),
        n_val: splits.val.n(),
        device,
        device_note,
        inner_solver: opts.inner.solver,
        inner_tol: opts.inner.tol,
        linear_tol: opts.linear_tol,
        network: Some(NetworkInfo {
            model: settings.model.name(),
            activation: network.activation.name(),
            parameters: problem.inner_dim(),
            sizes: net.sizes().to_vec(),
        }),
        result,
    })
}

pub(super) fn run(
    plan: &SmoothPlan,
    network: &NetworkPlan,
    settings: &Settings,
    input: &Input,
    on_step: &mut dyn FnMut(&serde_json::Value) -> Result<()>,
) -> Result<SmoothOutcome> {
    let (device, note) = open(&settings.device)?;
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
    dispatch(
        device,
        Run {
            plan,
            network,
            settings,
            splits: &splits,
            note,
            corrupted: corrupted.as_deref(),
            on_step,
        },
    )
}

/// The outer loop on a network problem: the linear model's `run` with an [`MlpBilevel`] and
/// NHGD's network estimator. MAID is refused (it steers by error bounds, which a network does
/// not have). With `--corrupt` on hyperclean, the three-model cleaning report trains the same
/// network (w₀ from `--seed`) without cleaning, with the learnt weights and on the clean rows.
#[allow(clippy::too_many_arguments)]
fn run_on<B: MlpOps + FisherOps + Clone + 'static>(
    backend: B,
    plan: &SmoothPlan,
    network: &NetworkPlan,
    settings: &Settings,
    splits: &DenseSplits,
    device_note: Option<String>,
    corrupted: Option<&[usize]>,
    on_step: &mut dyn FnMut(&serde_json::Value) -> Result<()>,
) -> Result<SmoothOutcome> {
    let device = backend.name();
    let mut problem = build(backend, plan, network, settings, splits)?;
    let opts = plan.options(settings, problem.backend().precision());
    let warm = !settings.cold_start;
    let opt = plan.outer_opt(settings)?;
    if opt.name() == "maid" {
        return Err(Error::option(
            "--outer-opt",
            "maid steers by error bounds, which the networks (--model mlp:…) do not have; use sgd or adam",
        ));
    }
    let mut estimator = if opts.method.is_stochastic() {
        let mut stochastic = plan.stochastic(settings, opts.linear_tol);
        stochastic.warm_start = warm;
        stochastic.diagnostics = false;
        Estimator::Stochastic(Box::new(StochasticEstimator::new(
            &problem,
            &splits.train,
            stochastic,
        )?))
    } else {
        Estimator::Deterministic {
            opts,
            warm,
            w: None,
        }
    };
    let fingerprint = format!(
        "{} {} model={} activation={} method={} opt={} train={} n={} seed={} corrupt={:?} T={} b={} warm={warm}",
        plan.kind.name(),
        plan.layout.name(),
        settings.model.name(),
        network.activation.name(),
        opts.method.name(),
        opt.name(),
        splits.train.name,
        splits.train.n(),
        settings.seed,
        settings.corrupt,
        settings.inner_steps,
        settings.batch_size,
    );
    let (outcome, trace) = super::outcome::drive(
        &mut problem,
        &mut estimator,
        settings,
        opt,
        splits.test.as_ref(),
        fingerprint,
        on_step,
    )?;
    let cleaning = match corrupted {
        Some(corrupted) if plan.kind == ProblemKind::Hyperclean => Some(cleaning::report_network(
            &problem,
            &opts.inner,
            settings.l2,
            settings.seed,
            splits,
            corrupted,
        )?),
        _ => None,
    };
    // The model the final θ trains: with a cleaning report, its model (trained from w₀ like
    // the other two); otherwise the inner solution warm-started from the estimator's last
    // inner point (a network's minimiser depends on where its solve starts), from w₀ if none.
    let coef = match &cleaning {
        Some(report) => report.coef.clone(),
        None => {
            let w = solver::solve(&problem, estimator.w(), &opts.inner)?.w;
            problem.backend().download(&w)?
        }
    };
    let net = problem.network();
    Ok(SmoothOutcome {
        cleaning,
        coef,
        outputs: net.outputs(),
        features: net.inputs(),
        network: Some(NetworkInfo {
            model: settings.model.name(),
            activation: network.activation.name(),
            parameters: problem.inner_dim(),
            sizes: net.sizes().to_vec(),
        }),
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

/// The class probabilities (n×c, row-major) of a trained network on the rows of `x` (n×d,
/// row-major): the forward pass of [`crate::backend::mlp`] on the CPU in f64. `sizes` are the
/// layer widths d, H1, …, c (`layer_sizes` of `run --json`), `params` its P parameters in the
/// layout there (`coef` of `run --json`), `activation` `tanh` or `relu`. Used by the Python
/// package's `HyperCleaner.predict` for networks.
pub fn network_probabilities(
    sizes: &[usize],
    activation: &str,
    params: &[f64],
    x: &[f64],
    n: usize,
) -> Result<Vec<f64>> {
    use super::names::{self, ActivationName};
    use crate::backend::mlp::{Activation, MlpData, Network};
    use crate::backend::Backend as _;
    if sizes.len() < 2 {
        return Err(Error::option(
            "--model",
            format!("a network has at least an input and an output width, got {sizes:?}"),
        ));
    }
    let activation = match names::parse::<ActivationName>("activation", activation)? {
        ActivationName::Tanh => Activation::Tanh,
        ActivationName::Relu => Activation::Relu,
    };
    let (d, c) = (sizes[0], sizes[sizes.len() - 1]);
    let net = Network::new(d, &sizes[1..sizes.len() - 1], c, activation)?;
    if params.len() != net.dim() {
        return Err(Error::Dimension(format!(
            "the network {sizes:?} has {} parameters, got {}",
            net.dim(),
            params.len()
        )));
    }
    if x.len() != n * d {
        return Err(Error::Dimension(format!(
            "dimension mismatch: X has {} values, not {n} rows of the network's {d} inputs",
            x.len()
        )));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::Dimension(format!(
            "X: non-finite value {} at row {}, column {}",
            x[i],
            i / d + 1,
            i % d + 1
        )));
    }
    let rows = ndarray::Array2::from_shape_vec((n, d), x.to_vec())
        .map_err(|e| Error::Dimension(format!("X: {e}")))?;
    let b = CpuBackend::<f64>::new();
    let design = b.upload_design(&crate::problem::mlp::with_ones(&rows))?;
    let labels = b.zeros(n)?;
    let data = MlpData {
        x: &design,
        y: &labels,
        weights: None,
        rows: None,
    };
    let w = b.upload(params)?;
    let tape = b.mlp_forward(&net, data, &w)?;
    b.download(&tape.probs)
}
