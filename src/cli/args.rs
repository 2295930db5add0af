//! The flag groups `grad` and `run` share, and how each fills the library's [`Settings`].
//! The value names are the API's own enums ([`crate::api::names`]), so a name means the same
//! on the command line and in Python.

use std::path::PathBuf;

use clap::Args;

use super::data_args::DataArgs;
use super::stochastic_args::StochasticArgs;
use crate::api::names::{
    ActivationName, DeviceName, DistillInitName, HyperName, InnerSolverName, L1SolverName,
    MethodName, PrecisionName, ProblemName, StorageName,
};
use crate::api::{ModelSpec, Settings, Theta};

/// The options `grad` and `run` share: the problem, its data, the method and the device.
#[derive(Debug, Args)]
pub struct CommonArgs {
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
    pub l1: L1Args,
}

impl CommonArgs {
    /// The library's settings from these flags (the rest at the library's defaults).
    pub fn settings(&self) -> Settings {
        let mut s = Settings::default();
        self.problem.apply(&mut s);
        self.data.apply(&mut s);
        self.estimator.apply(&mut s);
        self.stochastic.apply(&mut s);
        self.device.apply(&mut s);
        self.l1.apply(&mut s);
        s
    }
}

/// Which bilevel problem, and where θ starts.
#[derive(Debug, Args)]
#[command(next_help_heading = "Problem")]
pub struct ProblemArgs {
    /// The bilevel problem (SPEC §2).
    #[arg(long, value_enum)]
    pub problem: ProblemName,

    /// Layout of θ: shared (one λ), per-feature (ridge, logreg), per-class (softmax),
    /// per-sample (hyperclean), per-layer (softmax with --model mlp:…). Default: per-sample
    /// for hyperclean, shared otherwise.
    #[arg(long, value_enum)]
    pub hyper: Option<HyperName>,

    /// Inner model of softmax and hyperclean: linear, or a multilayer perceptron with these
    /// hidden widths, e.g. mlp:300 or mlp:128,64 (SPEC §8).
    #[arg(long, value_name = "linear|mlp:H1[,H2,...]", default_value = "linear")]
    pub model: ModelSpec,

    /// Activation of the hidden layers of --model mlp:….
    #[arg(long, value_enum, default_value = "tanh")]
    pub activation: ActivationName,

    /// distill: K, the synthetic rows per class (p = K·c·d).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub images_per_class: usize,

    /// distill: where θ starts without --theta/--theta-file: K random training rows of each
    /// class, or N(0, 1) noise (both seeded by --seed).
    #[arg(long, value_enum, default_value = "real")]
    pub distill_init: DistillInitName,

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

    /// The fixed ridge penalty C of hyperclean's and distill's inner problems.
    #[arg(
        long,
        allow_negative_numbers = true,
        value_name = "C",
        default_value_t = 0.01
    )]
    pub l2: f64,
}

impl ProblemArgs {
    pub fn apply(&self, s: &mut Settings) {
        s.hyper = self.hyper;
        s.theta = match (&self.theta_file, self.theta) {
            (Some(path), _) => Theta::File(path.clone()),
            (None, Some(x)) => Theta::Scalar(x),
            (None, None) => Theta::Default,
        };
        s.l2 = self.l2;
        s.model = self.model.clone();
        s.activation = self.activation;
        s.images_per_class = self.images_per_class;
        s.distill_init = self.distill_init;
    }
}

/// The hypergradient method and the accuracy of its inner and linear solves.
#[derive(Debug, Args)]
#[command(next_help_heading = "Method")]
pub struct EstimatorArgs {
    /// Hypergradient method (SPEC §3). Default: cg for the smooth problems, implicit for the
    /// ℓ1 problems.
    #[arg(long, value_enum)]
    pub method: Option<MethodName>,

    /// Inner solver: newton (Newton-CG), lbfgs, gd, agd, or the mini-batch solvers sgd and
    /// adam (for problems made of training rows; moderate tolerances).
    #[arg(long, value_enum, default_value = "newton")]
    pub inner_solver: InnerSolverName,

    /// Stop the inner solver when ‖∇g(w)‖ ≤ TOL·‖∇g(w₀)‖ (w₀ = 0 for the linear models, the
    /// seeded initialisation of a network). Default 1e-10 (f64), 1e-5 (f32).
    #[arg(long, allow_negative_numbers = true, value_name = "TOL")]
    pub inner_tol: Option<f64>,

    /// Most inner-solver iterations (epochs for sgd and adam).
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

impl EstimatorArgs {
    pub fn apply(&self, s: &mut Settings) {
        s.method = self.method;
        s.inner_solver = self.inner_solver;
        s.inner_tol = self.inner_tol;
        s.inner_iters = self.inner_iters;
        s.linear_tol = self.linear_tol;
        s.linear_iters = self.linear_iters;
        s.step = self.step;
        s.unroll_steps = self.unroll_steps;
        s.truncate = self.truncate;
    }
}

/// Options of the ℓ1 problems (`--problem lasso|enet|wlasso`).
#[derive(Debug, Args)]
#[command(next_help_heading = "ℓ1 problems (lasso, enet, wlasso)")]
pub struct L1Args {
    /// Inner solver of the ℓ1 problems: proximal coordinate descent, proximal gradient
    /// (ISTA) or FISTA. `forward` differentiates through it.
    #[arg(long, value_enum, default_value = "cd")]
    pub l1_solver: L1SolverName,

    /// Use K-fold cross-validation on the training rows as the criterion (mean of the
    /// folds' held-out MSE) instead of the validation rows.
    #[arg(long, value_name = "K")]
    pub folds: Option<usize>,
}

impl L1Args {
    pub fn apply(&self, s: &mut Settings) {
        s.l1_solver = self.l1_solver;
        s.folds = self.folds;
    }
}

/// Where the numbers are computed.
#[derive(Debug, Args)]
#[command(next_help_heading = "Device")]
pub struct DeviceArgs {
    /// auto: the first CUDA GPU when one is usable (f32), else the CPU.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceName,

    /// Floating-point precision. Default: f64 on the CPU, f32 on CUDA (the only one it has);
    /// asking for f64 makes auto choose the CPU.
    #[arg(long, value_enum)]
    pub precision: Option<PrecisionName>,

    /// How CUDA stores the data matrices: f32, or bf16 (half the memory traffic, f32 math).
    #[arg(long, value_enum, default_value = "f32")]
    pub storage: StorageName,

    /// CPU threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl DeviceArgs {
    pub fn apply(&self, s: &mut Settings) {
        s.device.device = self.device;
        s.device.precision = self.precision;
        s.device.storage = self.storage;
        s.device.threads = self.threads;
    }
}
