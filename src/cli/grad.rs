//! `hypergrad grad`: one hypergradient with its diagnostics (SPEC §6).

use anyhow::Result;
use clap::Args;

use super::args::{DeviceArgs, EstimatorArgs, L1Args, ProblemArgs};
use super::data_args::DataArgs;
use super::stochastic_args::StochasticArgs;
use super::tables;
use crate::api::{self, Report, Request, Settings};

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
    pub l1: L1Args,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl GradArgs {
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

pub fn run(args: GradArgs) -> Result<()> {
    let request = Request {
        problem: args.problem.problem,
        settings: args.settings(),
    };
    let report = api::grad(&request, &args.data.source(None).into())?;
    if args.json {
        println!("{}", report.to_json());
        return Ok(());
    }
    match &report {
        Report::Smooth(r) => tables::smooth_report(r),
        Report::L1(r) => tables::l1_report(r),
    }
    Ok(())
}
