//! `hypergrad grad`: one hypergradient with its diagnostics (SPEC §6).

use anyhow::Result;
use clap::Args;

use super::args::CommonArgs;
use super::tables;
use crate::api::{self, Report, Request};

#[derive(Debug, Args)]
pub struct GradArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: GradArgs) -> Result<()> {
    let request = Request {
        problem: args.common.problem.problem,
        settings: args.common.settings(),
    };
    let report = api::grad(&request, &args.common.data.source(None).into())?;
    if args.json {
        println!("{}", report.to_json());
        // The table prints it; a script reading the JSON still gets told on stderr.
        if let Report::Smooth(r) = &report {
            if let Some(warning) = r.result.refinement.warning() {
                eprintln!("warning: {warning}");
            }
        }
        return Ok(());
    }
    match &report {
        Report::Smooth(r) => tables::smooth_report(r),
        Report::L1(r) => tables::l1_report(r),
    }
    Ok(())
}
