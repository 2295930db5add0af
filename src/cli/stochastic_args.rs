//! Options of the stochastic methods (`nhgd`, `stocbio`, `amigo`, `soba`), shared by `grad`
//! and `run`.

use clap::Args;

use crate::api::names::{CurvatureName, FisherUpdateName};
use crate::api::Settings;

#[derive(Debug, Args)]
#[command(next_help_heading = "Stochastic methods (nhgd, stocbio, amigo, soba)")]
pub struct StochasticArgs {
    /// T, inner SGD steps per hypergradient.
    #[arg(long, value_name = "T", default_value_t = 100)]
    pub inner_steps: usize,

    /// b, rows per mini-batch (also of --inner-solver sgd and adam).
    #[arg(long, value_name = "B", default_value_t = 64)]
    pub batch_size: usize,

    /// SGD step η (also the first step of --inner-solver sgd and adam). Default 1/(L̂ + max λ),
    /// L̂ the data term's largest curvature (a network: 1/(1.05 |λ_max(H(w₀))|)); 1e-3 for
    /// --inner-solver adam.
    #[arg(long, allow_negative_numbers = true, value_name = "ETA")]
    pub inner_lr: Option<f64>,

    /// Step β of the linear solve of stocbio, amigo and soba. Default: the SGD step.
    #[arg(long, allow_negative_numbers = true, value_name = "BETA")]
    pub linear_lr: Option<f64>,

    /// NHGD's curvature representation: dense (P×P), kfac (softmax, hyperclean), lowrank.
    /// Default: kfac for softmax and hyperclean, dense otherwise.
    #[arg(long, value_enum)]
    pub curvature: Option<CurvatureName>,

    /// Rank r of --curvature lowrank.
    #[arg(long, value_name = "R", default_value_t = 64)]
    pub rank: usize,

    /// How --curvature dense is updated: woodbury (A = Ĥ⁻¹ in place, rank b ≤ 96 on CUDA),
    /// accumulate (F by SYRK, one solve per hypergradient), or auto: whichever is faster at
    /// this shape on this device, timed once at the start (the trace's fisher_update says).
    #[arg(long, value_enum, default_value = "auto")]
    pub fisher_update: FisherUpdateName,

    /// Exponential moving average of the Fisher with factor RHO instead of the running mean.
    #[arg(long, allow_negative_numbers = true, value_name = "RHO")]
    pub ema: Option<f64>,
}

impl StochasticArgs {
    pub fn apply(&self, s: &mut Settings) {
        s.inner_steps = self.inner_steps;
        s.batch_size = self.batch_size;
        s.inner_lr = self.inner_lr;
        s.linear_lr = self.linear_lr;
        s.curvature = self.curvature;
        s.rank = self.rank;
        s.fisher_update = self.fisher_update;
        s.ema = self.ema;
    }
}
