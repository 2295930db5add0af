//! `hypergrad grad`: one hypergradient with its diagnostics (SPEC §6).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;

use super::data_args::{DataArgs, Splits};
use super::stochastic_args::StochasticArgs;
use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{CudaBackend, Storage};
use crate::backend::{Backend, Precision};
use crate::hypergrad::stochastic::StochasticEstimator;
use crate::hypergrad::{self, Hypergradient, Method, Options};
use crate::problem::{Bilevel, GlmBilevel, HyperLayout, InnerProblem, ProblemKind};
use crate::solver::Solver;

#[derive(Debug, Args)]
pub struct GradArgs {
    #[command(flatten)]
    pub problem: ProblemArgs,

    #[command(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    pub estimator: EstimatorArgs,

    #[command(flatten)]
    pub stochastic: StochasticArgs,

    #[command(flatten)]
    pub device: DeviceArgs,

    #[command(flatten)]
    pub l1: super::l1::L1Args,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Which bilevel problem, and where θ starts.
#[derive(Debug, Args)]
#[command(next_help_heading = "Problem")]
pub struct ProblemArgs {
    /// The bilevel problem (SPEC §2).
    #[arg(long, value_enum)]
    pub problem: ProblemArg,

    /// Layout of θ: shared (one λ), per-feature (ridge, logreg), per-class (softmax),
    /// per-sample (hyperclean). Default: per-sample for hyperclean, shared otherwise.
    #[arg(long, value_enum)]
    pub hyper: Option<HyperArg>,

    /// Set every entry of θ to X (λ = exp(X); hyperclean weights σ(X)). Default 0.
    #[arg(
        long,
        value_name = "X",
        allow_hyphen_values = true,
        conflicts_with = "theta_file"
    )]
    pub theta: Option<f64>,

    /// Read θ from a file: p numbers separated by white space or commas.
    #[arg(long, value_name = "FILE")]
    pub theta_file: Option<PathBuf>,

    /// The fixed ridge penalty C of hyperclean's inner problem.
    #[arg(
        long,
        allow_negative_numbers = true,
        value_name = "C",
        default_value_t = 0.01
    )]
    pub l2: f64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProblemArg {
    Ridge,
    Logreg,
    Softmax,
    Hyperclean,
    /// ℓ1 problems (SPEC §2), handled by `cli::l1`.
    Lasso,
    Enet,
    Wlasso,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum HyperArg {
    Shared,
    PerFeature,
    PerClass,
    PerSample,
}

/// The hypergradient method and the accuracy of its inner and linear solves.
#[derive(Debug, Args)]
#[command(next_help_heading = "Method")]
pub struct EstimatorArgs {
    /// Hypergradient method (SPEC §3).
    #[arg(long, value_enum, default_value = "cg")]
    pub method: MethodArg,

    /// Inner solver.
    #[arg(long, value_enum, default_value = "newton")]
    pub inner_solver: SolverArg,

    /// Stop the inner solver when ‖∇g(w)‖ ≤ TOL·‖∇g(0)‖. Default 1e-10 (f64), 1e-5 (f32).
    #[arg(long, allow_negative_numbers = true, value_name = "TOL")]
    pub inner_tol: Option<f64>,

    /// Most inner-solver iterations.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub inner_iters: usize,

    /// CG stops when ‖Hq − ∇f‖ ≤ TOL·‖∇f‖. Default 1e-10 (f64), 1e-5 (f32).
    #[arg(long, allow_negative_numbers = true, value_name = "TOL")]
    pub linear_tol: Option<f64>,

    /// Linear-solver iterations: CG's maximum (default 10000); the K of neumann and
    /// fixed-point (default 100).
    #[arg(long, value_name = "K")]
    pub linear_iters: Option<usize>,

    /// Step η of neumann, fixed-point, unroll and forward. Default 1/L̂, L̂ the largest
    /// curvature estimated by power iteration.
    #[arg(long, allow_negative_numbers = true, value_name = "ETA")]
    pub step: Option<f64>,

    /// T, the inner gradient steps that unroll and forward differentiate through.
    #[arg(long, value_name = "T", default_value_t = 100)]
    pub unroll_steps: usize,

    /// Differentiate unroll through its last K steps only.
    #[arg(long, value_name = "K")]
    pub truncate: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MethodArg {
    Exact,
    Cg,
    Neumann,
    FixedPoint,
    Unroll,
    Forward,
    /// ℓ1 problems only: support-restricted linear solve.
    Implicit,
    /// ℓ1 problems only: Jacobian recursion on the support after the inner solve.
    ImplicitForward,
    Nhgd,
    Stocbio,
    Amigo,
    Soba,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SolverArg {
    Gd,
    Agd,
    Newton,
}

/// Where the numbers are computed.
#[derive(Debug, Args)]
#[command(next_help_heading = "Device")]
pub struct DeviceArgs {
    /// auto: the first CUDA GPU when one is usable (f32), else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceArg,

    /// Floating-point precision. Default: f64 on the CPU, f32 on CUDA (the only one it has);
    /// asking for f64 makes auto choose the CPU.
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionArg>,

    /// How CUDA stores the data matrices: f32, or bf16 (half the memory traffic, f32 math).
    #[arg(long, value_enum, default_value = "f32")]
    pub storage: StorageArg,

    /// CPU threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StorageArg {
    F32,
    Bf16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionArg {
    F32,
    F64,
}

impl ProblemArgs {
    pub fn kind(&self) -> ProblemKind {
        match self.problem {
            ProblemArg::Ridge => ProblemKind::Ridge,
            ProblemArg::Logreg => ProblemKind::Logreg,
            ProblemArg::Softmax => ProblemKind::Softmax,
            ProblemArg::Hyperclean => ProblemKind::Hyperclean,
            // The ℓ1 problems are dispatched to `cli::l1` before anything asks for a smooth
            // kind; `build` refuses them.
            ProblemArg::Lasso | ProblemArg::Enet | ProblemArg::Wlasso => ProblemKind::Ridge,
        }
    }

    pub fn layout(&self) -> HyperLayout {
        match self.hyper {
            None => self.kind().default_layout(),
            Some(HyperArg::Shared) => HyperLayout::Shared,
            Some(HyperArg::PerFeature) => HyperLayout::PerFeature,
            Some(HyperArg::PerClass) => HyperLayout::PerClass,
            Some(HyperArg::PerSample) => HyperLayout::PerSample,
        }
    }

    /// Builds the problem on `backend` and sets θ from `--theta` / `--theta-file`.
    pub fn build<B: Backend>(&self, backend: B, splits: &Splits) -> Result<GlmBilevel<B>> {
        if let Some(kind) = self.problem.l1_kind() {
            bail!(
                "invalid value for --problem: {} is an ℓ1 problem (see cli::l1)",
                kind.name()
            );
        }
        let mut problem = GlmBilevel::new(
            backend,
            self.kind(),
            self.layout(),
            &splits.train,
            &splits.val,
            self.l2,
        )?;
        let p = problem.hyper_dim();
        let theta = match (&self.theta_file, self.theta) {
            (Some(path), _) => {
                let theta = read_theta_file(path)?;
                if theta.len() != p {
                    bail!(
                        "dimension mismatch: --theta-file {} holds {} numbers but {} with --hyper {} needs p = {p}",
                        path.display(),
                        theta.len(),
                        self.kind().name(),
                        self.layout().name()
                    );
                }
                theta
            }
            (None, Some(x)) => {
                if !x.is_finite() {
                    bail!("invalid value for --theta: {x} is not a finite number");
                }
                vec![x; p]
            }
            (None, None) => vec![0.0; p],
        };
        problem.set_theta(&theta)?;
        Ok(problem)
    }
}

/// Reads p numbers separated by white space or commas; errors name the file and line.
pub fn read_theta_file(path: &Path) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --theta-file {}", path.display()))?;
    let mut theta = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("");
        for token in content.split(|c: char| c == ',' || c.is_whitespace()) {
            if token.is_empty() {
                continue;
            }
            let value: f64 = token.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{}:{}: '{token}' is not a number",
                    path.display(),
                    number + 1
                )
            })?;
            if !value.is_finite() {
                bail!(
                    "{}:{}: θ value '{token}' is not finite",
                    path.display(),
                    number + 1
                );
            }
            theta.push(value);
        }
    }
    Ok(theta)
}

impl EstimatorArgs {
    pub fn method(&self) -> Method {
        match self.method {
            MethodArg::Exact => Method::Exact,
            MethodArg::Cg => Method::Cg,
            MethodArg::Neumann => Method::Neumann,
            MethodArg::FixedPoint => Method::FixedPoint,
            MethodArg::Unroll => Method::Unroll,
            MethodArg::Forward => Method::Forward,
            // ℓ1-only methods; `run` refuses them for the smooth problems first.
            MethodArg::Implicit => Method::Cg,
            MethodArg::ImplicitForward => Method::Forward,
            MethodArg::Nhgd => Method::Nhgd,
            MethodArg::Stocbio => Method::Stocbio,
            MethodArg::Amigo => Method::Amigo,
            MethodArg::Soba => Method::Soba,
        }
    }

    /// The library options for the given precision (defaults filled in).
    pub fn options(&self, precision: Precision) -> Options {
        let mut opts = Options::new(self.method(), precision);
        opts.inner.solver = match self.inner_solver {
            SolverArg::Gd => Solver::Gd,
            SolverArg::Agd => Solver::Agd,
            SolverArg::Newton => Solver::Newton,
        };
        if let Some(tol) = self.inner_tol {
            opts.inner.tol = tol;
        }
        opts.inner.max_iters = self.inner_iters;
        if let Some(tol) = self.linear_tol {
            opts.linear_tol = tol;
        }
        opts.linear_iters = self.linear_iters;
        opts.step = self.step;
        opts.unroll_steps = self.unroll_steps;
        opts.truncate = self.truncate;
        opts
    }
}

/// The backend a command runs on.
pub enum Device {
    CpuF64,
    CpuF32,
    Cuda(CudaBackend),
}

/// The chosen device, and why `auto` fell back to the CPU (when it did).
pub struct Resolved {
    pub device: Device,
    pub fallback_reason: Option<String>,
}

impl DeviceArgs {
    /// Resolves `--device`, `--precision` and `--storage`, and sizes the CPU thread pool.
    pub fn resolve(&self) -> Result<Resolved> {
        if let Some(threads) = self.threads {
            if threads == 0 {
                bail!("invalid value for --threads: must be at least 1");
            }
            // Fails only if the pool was already built, which a command does once.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build_global();
        }
        let cpu = match self.precision {
            Some(PrecisionArg::F32) => Device::CpuF32,
            _ => Device::CpuF64,
        };
        let storage = match self.storage {
            StorageArg::F32 => Storage::F32,
            StorageArg::Bf16 => Storage::Bf16,
        };
        let wants_f64 = self.precision == Some(PrecisionArg::F64);
        match self.device {
            DeviceArg::Cpu => Ok(Resolved {
                device: cpu,
                fallback_reason: None,
            }),
            DeviceArg::Cuda => {
                if wants_f64 {
                    bail!("invalid value for --precision: f64 is CPU-only, the CUDA backend computes in f32");
                }
                let backend = CudaBackend::new(0, storage)
                    .map_err(|e| anyhow::anyhow!("--device cuda: {e}"))?;
                Ok(Resolved {
                    device: Device::Cuda(backend),
                    fallback_reason: None,
                })
            }
            DeviceArg::Auto if wants_f64 => Ok(Resolved {
                device: cpu,
                fallback_reason: Some("--precision f64 asks for the CPU".into()),
            }),
            DeviceArg::Auto => match CudaBackend::new(0, storage) {
                Ok(backend) => Ok(Resolved {
                    device: Device::Cuda(backend),
                    fallback_reason: None,
                }),
                Err(e) => Ok(Resolved {
                    device: cpu,
                    fallback_reason: Some(e.to_string()),
                }),
            },
        }
    }
}

pub fn run(args: GradArgs) -> Result<()> {
    if let Some(kind) = args.problem.problem.l1_kind() {
        return super::l1::grad(kind, &args);
    }
    if matches!(
        args.estimator.method,
        MethodArg::Implicit | MethodArg::ImplicitForward
    ) {
        bail!("invalid value for --method: implicit and implicit-forward are for the ℓ1 problems (lasso, enet, wlasso); use cg or forward");
    }
    let resolved = args.device.resolve()?;
    let splits = args.data.load(None)?;
    let note = resolved.fallback_reason.as_deref();
    match resolved.device {
        Device::CpuF64 => grad_on(CpuBackend::<f64>::new(), &args, &splits, note),
        Device::CpuF32 => grad_on(CpuBackend::<f32>::new(), &args, &splits, note),
        Device::Cuda(backend) => grad_on(backend, &args, &splits, note),
    }
}

fn grad_on<B: Backend + Clone>(
    backend: B,
    args: &GradArgs,
    splits: &Splits,
    fallback_reason: Option<&str>,
) -> Result<()> {
    let device = backend.name();
    let problem = args.problem.build(backend, splits)?;
    let opts = args.estimator.options(problem.backend().precision());
    let result = if opts.method.is_stochastic() {
        let stochastic = args.stochastic.options(
            opts.method,
            problem.kind().is_multiclass(),
            opts.linear_iters,
            opts.linear_tol,
            args.data.seed,
        );
        // One estimate from a cold start: T SGD steps from w = 0.
        let mut estimator = StochasticEstimator::new(&problem, &splits.train, stochastic)?;
        estimator.estimate(&problem, 0)?.0
    } else {
        hypergrad::compute(&problem, &opts, None)?
    };
    if let Some(i) = result.hypergradient.iter().position(|h| !h.is_finite()) {
        bail!(
            "numerical failure: hypergradient entry {i} is {} (check the data scale, θ and the step)",
            result.hypergradient[i]
        );
    }
    if args.json {
        println!(
            "{}",
            grad_json(&problem, splits, &device, fallback_reason, &opts, &result)?
        );
    } else {
        print_table(&problem, splits, &device, &opts, &result);
        if let Some(reason) = fallback_reason {
            println!("device note   auto chose the CPU: {reason}");
        }
    }
    Ok(())
}

fn grad_json<B: Backend>(
    problem: &GlmBilevel<B>,
    splits: &Splits,
    device: &str,
    fallback_reason: Option<&str>,
    opts: &Options,
    result: &Hypergradient,
) -> Result<String> {
    let (c, d) = problem.shape();
    let mut value = serde_json::to_value(result)?;
    if let Some(object) = value.as_object_mut() {
        let extra = json!({
            "problem": problem.kind().name(),
            "hyper": problem.layout().name(),
            "device": device,
            "device_note": fallback_reason.map(|r| format!("auto chose the CPU: {r}")),
            "train": splits.train.name,
            "val": splits.val.name,
            "n_train": splits.train.n(),
            "n_val": splits.val.n(),
            "features": d,
            "outputs": c,
            "p": problem.hyper_dim(),
            "inner_solver": opts.inner.solver.name(),
            "inner_tol": opts.inner.tol,
            "linear_tol": opts.linear_tol,
        });
        if let Some(extra) = extra.as_object() {
            for (k, v) in extra {
                object.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(serde_json::to_string(&value)?)
}

fn print_table<B: Backend>(
    problem: &GlmBilevel<B>,
    splits: &Splits,
    device: &str,
    opts: &Options,
    r: &Hypergradient,
) {
    let (c, d) = problem.shape();
    let optional = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.3e}"));
    let h_norm = r.hypergradient.iter().map(|h| h * h).sum::<f64>().sqrt();
    println!(
        "problem       {} (--hyper {}, p = {}), P = {}×{} inner variables",
        problem.kind().name(),
        problem.layout().name(),
        problem.hyper_dim(),
        c,
        d
    );
    println!(
        "data          {} rows train ({}), {} rows val ({})",
        splits.train.n(),
        splits.train.name,
        splits.val.n(),
        splits.val.name
    );
    println!("method        {} on {device}", r.method.name());
    println!("θ             {}", preview(&r.theta));
    println!("F(θ)          {:.10e}", r.outer_loss);
    println!("∇F(θ)         {}", preview(&r.hypergradient));
    println!("‖∇F(θ)‖       {h_norm:.6e}");
    let inner = if r.method.is_trajectory() {
        format!("{} fixed-size gradient steps", r.inner_iters)
    } else {
        format!(
            "{} inner solver, {} iterations",
            opts.inner.solver.name(),
            r.inner_iters
        )
    };
    let converged = if r.inner_converged {
        "converged"
    } else {
        "NOT converged to --inner-tol"
    };
    println!(
        "‖∇g(ŵ)‖       {:.3e}  ({inner}, {converged})",
        r.inner_grad_norm
    );
    println!(
        "residual      {}  ({} linear iterations)",
        optional(r.residual_norm),
        r.linear_iters
    );
    let relative = r
        .error_bound
        .filter(|_| h_norm > 0.0)
        .map_or(String::new(), |e| {
            format!("  ({:.1e} relative)", e / h_norm)
        });
    println!("error bound   {}{relative}", optional(r.error_bound));
    println!("time          {:.3} s", r.seconds);
}

/// The first entries of a vector, formatted.
fn preview(v: &[f64]) -> String {
    const SHOWN: usize = 8;
    let head: Vec<String> = v.iter().take(SHOWN).map(|x| format!("{x:.6e}")).collect();
    if v.len() > SHOWN {
        format!("[{}, … ({} entries)]", head.join(", "), v.len())
    } else {
        format!("[{}]", head.join(", "))
    }
}
