//! Options of the stochastic methods (`nhgd`, `stocbio`, `amigo`, `soba`), shared by `grad`
//! and `run`.

use clap::{Args, ValueEnum};

use crate::hypergrad::fisher::{Averaging, DenseUpdate, Representation};
use crate::hypergrad::stochastic::StochasticOptions;
use crate::hypergrad::Method;

#[derive(Debug, Args)]
#[command(next_help_heading = "Stochastic methods (nhgd, stocbio, amigo, soba)")]
pub struct StochasticArgs {
    /// T, inner SGD steps per hypergradient.
    #[arg(long, value_name = "T", default_value_t = 100)]
    pub inner_steps: usize,

    /// b, rows per mini-batch.
    #[arg(long, value_name = "B", default_value_t = 64)]
    pub batch_size: usize,

    /// SGD step η. Default 1/(L̂ + max λ), L̂ the data term's largest curvature.
    #[arg(long, allow_negative_numbers = true, value_name = "ETA")]
    pub inner_lr: Option<f64>,

    /// Step β of the linear solve of stocbio, amigo and soba. Default: the SGD step.
    #[arg(long, allow_negative_numbers = true, value_name = "BETA")]
    pub linear_lr: Option<f64>,

    /// NHGD's curvature representation: dense (P×P), kfac (softmax, hyperclean), lowrank.
    /// Default: kfac for softmax and hyperclean, dense otherwise.
    #[arg(long, value_enum)]
    pub curvature: Option<CurvatureArg>,

    /// Rank r of --curvature lowrank.
    #[arg(long, value_name = "R", default_value_t = 64)]
    pub rank: usize,

    /// How --curvature dense is updated: woodbury (A = Ĥ⁻¹ in place, rank b ≤ 96 on CUDA),
    /// accumulate (F by SYRK, one solve per hypergradient), or auto: whichever is faster at
    /// this shape on this device, timed once at the start (the trace's fisher_update says).
    #[arg(long, value_enum, default_value = "auto")]
    pub fisher_update: FisherUpdateArg,

    /// Exponential moving average of the Fisher with factor RHO instead of the running mean.
    #[arg(long, allow_negative_numbers = true, value_name = "RHO")]
    pub ema: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CurvatureArg {
    Dense,
    Kfac,
    Lowrank,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FisherUpdateArg {
    Woodbury,
    Accumulate,
    Auto,
}

impl StochasticArgs {
    /// The library options; `multiclass` picks the default representation, `linear_steps`
    /// is the K of stocbio/amigo (`--linear-iters`, default 10).
    pub fn options(
        &self,
        method: Method,
        multiclass: bool,
        linear_steps: Option<usize>,
        linear_tol: f64,
        seed: u64,
    ) -> StochasticOptions {
        let mut opts = StochasticOptions::new(method);
        opts.inner_steps = self.inner_steps;
        opts.batch = self.batch_size;
        opts.inner_lr = self.inner_lr;
        opts.linear_lr = self.linear_lr;
        opts.linear_steps = linear_steps.unwrap_or(10);
        opts.representation = match self.curvature {
            Some(CurvatureArg::Dense) => Representation::Dense,
            Some(CurvatureArg::Kfac) => Representation::Kfac,
            Some(CurvatureArg::Lowrank) => Representation::Lowrank { rank: self.rank },
            None if multiclass => Representation::Kfac,
            None => Representation::Dense,
        };
        opts.dense_update = match self.fisher_update {
            FisherUpdateArg::Woodbury => DenseUpdate::Woodbury,
            FisherUpdateArg::Accumulate => DenseUpdate::Accumulate,
            FisherUpdateArg::Auto => DenseUpdate::Auto,
        };
        opts.averaging = match self.ema {
            Some(rho) => Averaging::Ema { rho },
            None => Averaging::Mean,
        };
        opts.linear_tol = linear_tol;
        opts.seed = seed;
        opts
    }
}
