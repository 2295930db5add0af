//! `hypergrad plot`: traces to a figure (SPEC §10).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::plot::{self, Figure};

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Trace files written by `run --trace` (JSON lines).
    #[arg(required = true, value_name = "TRACE.jsonl")]
    pub traces: Vec<PathBuf>,

    /// The figure: FIG.svg or FIG.png.
    #[arg(short, long, value_name = "FIG.svg|FIG.png")]
    pub output: PathBuf,

    /// The x axis: a trace field, usually step or seconds.
    #[arg(long, default_value = "step")]
    pub x: String,

    /// The fields to draw, one panel each (outer_loss, test_accuracy, hypergradient_norm,
    /// error_bound, or any numeric trace field). Default: outer_loss.
    #[arg(long, value_name = "FIELD", num_args = 1..)]
    pub y: Vec<String>,

    /// The legend's names of the traces, in order (default: each file's name without .jsonl).
    #[arg(long, value_name = "NAME", num_args = 1..)]
    pub label: Vec<String>,
}

pub fn run(args: PlotArgs) -> Result<()> {
    let out = plot::check_output(&args.output)?;
    if !args.label.is_empty() && args.label.len() != args.traces.len() {
        bail!(
            "invalid value for --label: {} names for {} traces",
            args.label.len(),
            args.traces.len()
        );
    }
    let y = if args.y.is_empty() {
        vec!["outer_loss".to_string()]
    } else {
        args.y.clone()
    };
    let traces = args
        .traces
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let label = args
                .label
                .get(i)
                .cloned()
                .unwrap_or_else(|| plot::default_label(path));
            plot::read_trace(path, label, &args.x, &y)
        })
        .collect::<crate::Result<Vec<_>>>()?;
    let figure = Figure {
        x: args.x.clone(),
        y,
        traces,
    };
    plot::draw(&figure, &out)?;
    let points: usize = figure
        .traces
        .iter()
        .flat_map(|t| t.points.iter().map(Vec::len))
        .sum();
    println!(
        "wrote {} ({} traces × {} fields, {points} points)",
        out.display(),
        figure.traces.len(),
        figure.y.len()
    );
    Ok(())
}
