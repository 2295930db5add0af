//! `hypergrad bench nhgd`: the time of one NHGD outer step (T SGD steps with the curvature
//! update, q = Ĥ⁻¹∇f, h = −Bᵀq) per curvature representation, against the same T-step SGD
//! loop without curvature tracking, and the dense update's FLOP rate against a GEMM of the
//! same shape. Hyper-cleaning of a linear softmax model on synthetic data of MNIST's shape
//! by default (n = 50 000, d = 785, c = 10), the shape of `benches/peers/nhgd_torch.py`.
//!
//! `--model mlp:H1[,H2,…]` times the same outer step with a network as the inner model
//! (SPEC §8; on the device `--device` opens, the GPU included): `nhgd kfac` (per-layer K-FAC) and `nhgd lowrank` against the same
//! loop with no curvature (`sgd loop only`: T SGD steps, ∇f and −Bᵀq with q = 0), the shape
//! of `benches/peers/nhgd_mlp_torch.py`. The SGD step is `--inner-lr` (0.05 by default), so
//! that no power iteration over the n rows runs before the clock starts.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::api::device::{Device, OnBackend};
use crate::api::names::{ActivationName, DeviceName, PrecisionName};
use crate::api::network::{self, OnMlpBackend};
use crate::api::ModelSpec;
use crate::backend::mlp::{Activation, MlpOps};
use crate::backend::{FisherOps, GlmOps};
use crate::bench::time_calls;
use crate::data::synthetic;
use crate::hypergrad::fisher::{DenseUpdate, Representation};
use crate::hypergrad::stochastic::{LoopStats, StochasticEstimator, StochasticOptions};
use crate::hypergrad::Method;
use crate::problem::{GlmBilevel, HyperLayout, MlpBilevel, ProblemKind};

#[derive(Debug, Args)]
pub struct NhgdBenchArgs {
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceName,
    /// Precision: f32 (default; the only one CUDA has) or f64 (CPU only).
    #[arg(long, value_enum, default_value = "f32")]
    pub precision: PrecisionName,
    /// Training rows.
    #[arg(long, default_value_t = 50_000)]
    pub n: usize,
    /// Validation rows.
    #[arg(long, default_value_t = 10_000)]
    pub m: usize,
    /// Features (MNIST's 784 pixels and a bias column).
    #[arg(long, default_value_t = 785)]
    pub d: usize,
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Inner SGD steps T per outer step.
    #[arg(long, default_value_t = 100)]
    pub inner_steps: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Rank of the lowrank representation.
    #[arg(long, default_value_t = 64)]
    pub rank: usize,
    /// Also time the dense representations (P×P; slow on a CPU at MNIST scale).
    #[arg(long)]
    pub dense: bool,
    /// Timed outer steps per representation (after one warm-up step); the table gives medians.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    #[arg(long)]
    pub json: bool,
    /// Also draw the outer-step times as a bar chart (FIG.svg or FIG.png).
    #[arg(long, value_name = "FIG.svg|FIG.png")]
    pub plot: Option<std::path::PathBuf>,
    /// The inner model: linear, or mlp:H1[,H2,...] (a network).
    #[arg(long, default_value = "linear")]
    pub model: String,
    /// The hidden layers' activation of a network.
    #[arg(long, value_enum, default_value = "tanh")]
    pub activation: ActivationName,
    /// The SGD step of a network's inner loop.
    #[arg(long, default_value_t = 0.05)]
    pub inner_lr: f64,
}

pub fn run(args: NhgdBenchArgs) -> Result<()> {
    for (name, v) in [
        ("--n", args.n),
        ("--m", args.m),
        ("--d", args.d),
        ("--reps", args.reps),
    ] {
        if v == 0 {
            anyhow::bail!("invalid value for {name}: must be at least 1");
        }
    }
    match ModelSpec::parse(&args.model)? {
        ModelSpec::Linear => {
            Ok(Device::open_in(args.device, args.precision)?.dispatch(Bench(&args))?)
        }
        ModelSpec::Mlp { hidden } => Ok(network::dispatch(
            Device::open_in(args.device, args.precision)?,
            BenchMlp(&args, &hidden),
        )?),
    }
}

/// The network benchmark on the opened backend.
struct BenchMlp<'a>(&'a NhgdBenchArgs, &'a [usize]);

impl OnMlpBackend for BenchMlp<'_> {
    type Output = ();
    fn on<B: MlpOps + FisherOps + Clone + 'static>(self, backend: B) -> crate::Result<()> {
        bench_mlp(backend, self.0, self.1).map_err(|e| crate::Error::Backend(format!("{e:#}")))
    }
}

/// How a case of the network benchmark runs the curvature update.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MlpCurvatureRun {
    /// Not at all: the baseline.
    None,
    /// On the second queue, overlapping SGD (what `run` and `grad` do).
    SecondQueue,
    /// On the main queue after each backward pass ([`StochasticEstimator::on_one_queue`]): what the
    /// second queue saves, on a GPU (on the CPU both are the same sequential work).
    OneQueue,
}

/// The cases of the network benchmark: (name, how the curvature runs, representation).
fn mlp_cases(rank: usize) -> Vec<(&'static str, MlpCurvatureRun, Representation)> {
    vec![
        ("sgd loop only", MlpCurvatureRun::None, Representation::Kfac),
        (
            "nhgd kfac",
            MlpCurvatureRun::SecondQueue,
            Representation::Kfac,
        ),
        (
            "nhgd kfac, one queue",
            MlpCurvatureRun::OneQueue,
            Representation::Kfac,
        ),
        (
            "nhgd lowrank",
            MlpCurvatureRun::SecondQueue,
            Representation::Lowrank { rank },
        ),
    ]
}

/// `--model mlp:…`: hyper-cleaning of a network on the same synthetic data.
fn bench_mlp<B: MlpOps + FisherOps + Clone>(
    backend: B,
    args: &NhgdBenchArgs,
    hidden: &[usize],
) -> Result<()> {
    let (c, d) = (args.classes, args.d);
    let full = synthetic::softmax(args.n + args.m, d, c, 0.0, 3.0, 7).0;
    let train = full.select(&(0..args.n).collect::<Vec<_>>());
    let val = full.select(&(args.n..args.n + args.m).collect::<Vec<_>>());
    let activation = match args.activation {
        ActivationName::Tanh => Activation::Tanh,
        ActivationName::Relu => Activation::Relu,
    };
    let problem = MlpBilevel::new(
        backend.clone(),
        ProblemKind::Hyperclean,
        HyperLayout::PerSample,
        hidden,
        activation,
        &train,
        &val,
        0.01,
        0,
    )?;
    let p = problem.network().dim();
    let mut rows = Vec::new();
    let (mut sgd_seconds, mut plain_outer) = (f64::NAN, f64::NAN);
    for (name, run, representation) in mlp_cases(args.rank) {
        let mut opts = StochasticOptions::new(Method::Nhgd);
        opts.inner_steps = args.inner_steps;
        opts.batch = args.batch_size;
        opts.inner_lr = Some(args.inner_lr);
        opts.representation = representation;
        opts.diagnostics = false;
        let est = StochasticEstimator::new(&problem, &train, opts)?;
        let mut est = match run {
            MlpCurvatureRun::None => est.without_curvature(),
            MlpCurvatureRun::SecondQueue => est,
            MlpCurvatureRun::OneQueue => est.on_one_queue(),
        };
        // One warm-up outer step, then `reps` timed ones; medians.
        est.estimate(&problem, 0)?;
        let mut timed = Timed::default();
        for step in 1..=args.reps as u64 {
            let (h, stats) = est.estimate(&problem, step)?;
            if h.hypergradient.iter().any(|v| !v.is_finite()) {
                anyhow::bail!("{name}: the hypergradient is not finite (lower --inner-lr)");
            }
            timed.push(h.seconds, &stats);
        }
        if run == MlpCurvatureRun::None {
            (sgd_seconds, plain_outer) = (timed.inner_median(), timed.outer_median());
        }
        rows.push(timed.row(name, sgd_seconds, plain_outer));
    }
    let summary = json!({
        "device": backend.name(),
        "model": args.model, "activation": activation.name(),
        "n": args.n, "m": args.m, "d": d, "classes": c, "P": p,
        "inner_steps": args.inner_steps, "batch": args.batch_size, "rank": args.rank,
        "inner_lr": args.inner_lr, "reps": args.reps,
        "threads": rayon::current_num_threads(),
        "cuda_pool": cuda_pool(&backend.name()),
        "cases": rows,
    });
    let header = format!(
        "device: {} — hyperclean, --model {} ({}), P = {p}, n = {}, m = {}, d = {d}, c = {c}, T = {}, b = {}",
        backend.name(),
        args.model,
        activation.name(),
        args.n,
        args.m,
        args.inner_steps,
        args.batch_size
    );
    let title = format!(
        "NHGD outer step, --model {} on {}: n = {}, T = {}, b = {}",
        args.model,
        backend.name(),
        args.n,
        args.inner_steps,
        args.batch_size
    );
    report(args, &summary, &header, &title)
}

/// One case's timed outer steps.
#[derive(Default)]
struct Timed {
    outer: Vec<f64>,
    inner: Vec<f64>,
    /// Host synchronisations and transfers inside the inner loops, summed over the steps.
    syncs: u64,
}

impl Timed {
    fn push(&mut self, outer_seconds: f64, stats: &LoopStats) {
        self.outer.push(outer_seconds);
        self.inner.push(stats.inner_seconds);
        self.syncs += stats.inner_host_syncs + stats.inner_host_transfers;
    }

    fn outer_median(&self) -> f64 {
        median(&mut self.outer.clone())
    }

    fn inner_median(&self) -> f64 {
        median(&mut self.inner.clone())
    }

    /// The case's JSON row, with its ratios to the baseline's inner loop and outer step.
    fn row(&self, name: &str, sgd_seconds: f64, plain_outer: f64) -> serde_json::Value {
        let outer = self.outer_median();
        json!({
            "case": name,
            "outer_step_seconds": outer,
            "inner_loop_seconds": self.inner_median(),
            "ratio_to_sgd_loop": outer / sgd_seconds,
            // Against the same outer step with no curvature (q = 0): SGD loop, ∇f, −Bᵀq.
            "ratio_to_plain_outer_step": outer / plain_outer,
            "inner_host_syncs_and_copies": self.syncs,
            "outer_step_seconds_all": self.outer,
        })
    }
}

/// Prints the summary (JSON, or the header and a table of its cases) and draws `--plot`.
fn report(
    args: &NhgdBenchArgs,
    summary: &serde_json::Value,
    header: &str,
    title: &str,
) -> Result<()> {
    let rows = summary["cases"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if args.json {
        println!("{summary}");
    } else {
        println!("{header}");
        println!(
            "{:<24} {:>14} {:>14} {:>10} {:>12} {:>8}",
            "case", "outer step s", "inner loop s", "vs SGD", "vs plain", "syncs"
        );
        for r in rows {
            println!(
                "{:<24} {:>14.4} {:>14.4} {:>9.2}× {:>11.2}× {:>8}",
                r["case"].as_str().unwrap_or(""),
                r["outer_step_seconds"].as_f64().unwrap_or(f64::NAN),
                r["inner_loop_seconds"].as_f64().unwrap_or(f64::NAN),
                r["ratio_to_sgd_loop"].as_f64().unwrap_or(f64::NAN),
                r["ratio_to_plain_outer_step"].as_f64().unwrap_or(f64::NAN),
                r["inner_host_syncs_and_copies"].as_u64().unwrap_or(0)
            );
        }
        if let Some(rate) = summary["gemm_tflops_same_shape"].as_f64() {
            println!(
                "GEMM (b×P)·(P×P) {rate:.2} TFLOP/s; dense Woodbury update {:.2} TFLOP/s",
                summary["dense_update_tflops"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    if let Some(out) = &args.plot {
        let bars = rows
            .iter()
            .map(|r| {
                (
                    r["case"].as_str().unwrap_or("").to_string(),
                    1e3 * r["outer_step_seconds"].as_f64().unwrap_or(f64::NAN),
                )
            })
            .collect();
        crate::plot::draw_bars(
            &crate::plot::Bars {
                title: title.to_string(),
                quantity: "ms per outer step (median)".into(),
                bars,
            },
            out,
        )?;
    }
    Ok(())
}

/// The benchmark on the opened backend.
struct Bench<'a>(&'a NhgdBenchArgs);

impl OnBackend for Bench<'_> {
    type Output = ();
    fn on<B: GlmOps + FisherOps + Clone + 'static>(self, backend: B) -> crate::Result<()> {
        // The library's error type carries the report's failures as backend errors.
        bench_on(backend, self.0).map_err(|e| crate::Error::Backend(format!("{e:#}")))
    }
}

fn bench_on<B: GlmOps + FisherOps + Clone>(backend: B, args: &NhgdBenchArgs) -> Result<()> {
    let (c, d) = (args.classes, args.d);
    let full = synthetic::softmax(args.n + args.m, d, c, 0.0, 3.0, 7).0;
    let train = full.select(&(0..args.n).collect::<Vec<_>>());
    let val = full.select(&(args.n..args.n + args.m).collect::<Vec<_>>());
    let problem = GlmBilevel::new(
        backend.clone(),
        ProblemKind::Hyperclean,
        HyperLayout::PerSample,
        &train,
        &val,
        0.01,
    )?;
    let mut cases: Vec<(&str, Method, Representation, DenseUpdate)> = vec![
        (
            "sgd loop only",
            Method::Amigo,
            Representation::Kfac,
            DenseUpdate::Woodbury,
        ),
        (
            "nhgd kfac",
            Method::Nhgd,
            Representation::Kfac,
            DenseUpdate::Woodbury,
        ),
        (
            "nhgd lowrank",
            Method::Nhgd,
            Representation::Lowrank { rank: args.rank },
            DenseUpdate::Woodbury,
        ),
    ];
    if args.dense {
        cases.push((
            "nhgd dense woodbury",
            Method::Nhgd,
            Representation::Dense,
            DenseUpdate::Woodbury,
        ));
        cases.push((
            "nhgd dense accumulate",
            Method::Nhgd,
            Representation::Dense,
            DenseUpdate::Accumulate,
        ));
    }
    let mut rows = Vec::new();
    let mut sgd_seconds = f64::NAN;
    let mut plain_outer = f64::NAN;
    for (name, method, representation, dense_update) in cases {
        let mut opts = StochasticOptions::new(method);
        opts.inner_steps = args.inner_steps;
        opts.batch = args.batch_size;
        opts.representation = representation;
        opts.dense_update = dense_update;
        opts.linear_steps = 0;
        opts.diagnostics = false;
        let mut est = StochasticEstimator::new(&problem, &train, opts)?;
        // One warm-up outer step, then `reps` timed ones; medians, as the PyTorch peer reports.
        // Each estimate ends by downloading its hypergradient, so its own clock covers the
        // device work.
        est.estimate(&problem, 0)?;
        let mut timed = Timed::default();
        for step in 1..=args.reps as u64 {
            let (h, stats) = est.estimate(&problem, step)?;
            timed.push(h.seconds, &stats);
        }
        if method == Method::Amigo {
            (sgd_seconds, plain_outer) = (timed.inner_median(), timed.outer_median());
        }
        rows.push(timed.row(name, sgd_seconds, plain_outer));
    }
    let p = c * d;
    let gemm_rate = if args.dense {
        // The dense Woodbury update is two (b×P)·(P×P) GEMMs a step: time that shape.
        let a = backend.upload(&vec![0.5; p * p])?;
        let u = backend.upload(&vec![0.25; args.batch_size * p])?;
        let mut out = backend.zeros(args.batch_size * p)?;
        let seconds = time_calls(&backend, args.reps.max(3), || {
            backend.gemm(
                false,
                false,
                (args.batch_size, p, p),
                1.0,
                &u,
                &a,
                0.0,
                &mut out,
            )
        })?;
        Some(2.0 * (args.batch_size * p * p) as f64 / seconds / 1e12)
    } else {
        None
    };
    let summary = json!({
        "device": backend.name(),
        "n": args.n, "m": args.m, "d": d, "classes": c, "P": p,
        "inner_steps": args.inner_steps, "batch": args.batch_size, "rank": args.rank,
        "cuda_pool": cuda_pool(&backend.name()),
        "gemm_tflops_same_shape": gemm_rate,
        "dense_update_tflops": rows.iter().find(|r| r["case"] == "nhgd dense woodbury").map(|r| {
            // 4 b P² flops per step (U·A and (UA)ᵀX), over the loop's extra time.
            let extra = r["inner_loop_seconds"].as_f64().unwrap_or(f64::NAN) - sgd_seconds;
            4.0 * (args.batch_size * p * p * args.inner_steps) as f64 / extra / 1e12
        }),
        "cases": rows,
    });
    let header = format!(
        "device: {} — hyperclean, n = {}, d = {d}, c = {c}, T = {}, b = {}",
        backend.name(),
        args.n,
        args.inner_steps,
        args.batch_size
    );
    let title = format!(
        "NHGD outer step on {}: n = {}, d = {d}, T = {}, b = {}",
        backend.name(),
        args.n,
        args.inner_steps,
        args.batch_size
    );
    report(args, &summary, &header, &title)
}

/// On a CUDA device, whether its memory pool keeps freed memory (`keep`) or hands it back at
/// every synchronisation (`trim`, `HYPERGRAD_CUDA_POOL=trim`); `None` on the CPU.
fn cuda_pool(device: &str) -> Option<&'static str> {
    device.starts_with("cuda").then(|| {
        if crate::backend::cuda::pool_keeps_memory() {
            "keep"
        } else {
            "trim"
        }
    })
}

/// The median of `values` (the upper one of the two middle values for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
