//! `hypergrad run`: the outer loop (SPEC §6), and the main job.
//!
//! The main job is what `hypergrad run` does when neither `--problem` nor `--train` is given:
//! it cleans the labels of the bundled MNIST sample, 50% of whose training labels are
//! corrupted (seeded), with NHGD on the best device, and prints the test accuracy of a model
//! trained without cleaning, with the learnt cleaning weights, and on the clean rows only.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::args::CommonArgs;
use super::tables;
use crate::api::names::OuterOptName;
use crate::api::{self, Outcome, Request, Settings};

/// The options the main job adds when `run` is given neither `--problem` nor `--train`
/// (each one only if the user did not give it).
const MAIN_JOB: &[(&str, Option<&str>)] = &[
    ("--problem", Some("hyperclean")),
    ("--train", Some("mnist_5k")),
    ("--standardize", None),
    ("--corrupt", Some("0.5")),
    ("--method", Some("nhgd")),
];

/// Inserts the main job's arguments after `run` when the command line names no problem and no
/// training data (the user's own options still apply, after them).
pub fn with_main_job_defaults(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let args: Vec<OsString> = args.collect();
    let is_run = args.get(1).is_some_and(|a| a == "run");
    let names_problem = args.iter().any(|a| {
        let a = a.to_string_lossy();
        a.starts_with("--problem") || a.starts_with("--train") || a == "-h" || a == "--help"
    });
    if !is_run || names_problem {
        return args;
    }
    let given = |flag: &str| {
        args.iter()
            .any(|a| a.to_string_lossy().split('=').next() == Some(flag))
    };
    let mut out = args[..2].to_vec();
    for (flag, value) in MAIN_JOB {
        if !given(flag) {
            out.push(OsString::from(flag));
            out.extend(value.map(OsString::from));
        }
    }
    out.extend(args[2..].iter().cloned());
    out
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,

    #[command(flatten)]
    pub outer: OuterArgs,

    /// Print one JSON object with the outcome instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The outer loop.
#[derive(Debug, Args)]
#[command(next_help_heading = "Outer loop")]
pub struct OuterArgs {
    /// Outer steps (step 0 is the starting point, so 0 evaluates the initial θ only).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub outer_steps: u64,

    /// Outer optimiser: sgd, adam, or maid (adaptive accuracy; deterministic methods only);
    /// for the ℓ1 problems: hoag (line search, adaptive step and accuracy), adam, grid,
    /// random.
    #[arg(long, value_enum, default_value = "adam")]
    pub outer_opt: OuterOptName,

    /// Outer learning rate (maid: the first step length). Default: 0.1 (adam), 1 (sgd, maid).
    #[arg(long, allow_negative_numbers = true, value_name = "LR")]
    pub outer_lr: Option<f64>,

    /// Start every inner solve from the last one's solution (the default).
    #[arg(long, conflicts_with = "cold_start")]
    pub warm_start: bool,

    /// Start every inner solve from w = 0 (Vicol et al.'s cold start).
    #[arg(long)]
    pub cold_start: bool,

    /// Test data (same forms as --train); default: the third part of --split.
    #[arg(long, value_name = "FILE|NAME")]
    pub test: Option<String>,

    /// Corrupt this fraction of the training labels (seeded by --seed), for label cleaning.
    #[arg(long, allow_negative_numbers = true, value_name = "FRACTION")]
    pub corrupt: Option<f64>,

    /// Append one JSON line per outer step to FILE as it happens.
    #[arg(long, value_name = "FILE.jsonl")]
    pub trace: Option<PathBuf>,

    /// Save the state (θ, the optimiser's moments, the inner iterate) after every step to FILE,
    /// binary and versioned (format hypergrad-checkpoint/2, flushed to the disk), and resume
    /// from it when it exists. A JSON checkpoint of an older hypergrad is refused.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,

    /// Write the checkpoint every K steps (and after the last) instead of every step: a run
    /// killed in between repeats at most K − 1 steps on resuming.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_every: u64,

    /// Write the final θ to FILE.npy (1-D float64, np.load reads it). With --json, a θ of
    /// more than 10000 entries is summarised (theta_summary) instead of printed.
    #[arg(long, value_name = "FILE.npy")]
    pub theta_out: Option<PathBuf>,

    /// distill: after the outer loop, train a fresh model from w₀ to convergence on the final
    /// θ and report its test accuracy (retrain_test_accuracy).
    #[arg(long)]
    pub retrain: bool,
}

impl RunArgs {
    pub fn settings(&self) -> Settings {
        let mut s = self.common.settings();
        let o = &self.outer;
        s.outer_steps = o.outer_steps;
        s.outer_opt = o.outer_opt;
        s.outer_lr = o.outer_lr;
        s.cold_start = o.cold_start;
        s.corrupt = o.corrupt;
        s.trace = o.trace.clone();
        s.checkpoint = o.checkpoint.clone();
        s.checkpoint_every = o.checkpoint_every;
        s.retrain = o.retrain;
        s
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let request = Request {
        problem: args.common.problem.problem,
        settings: args.settings(),
    };
    let input = args.common.data.source(args.outer.test.as_deref()).into();
    let progress = std::io::stderr().is_terminal() && !args.json;
    let total = args.outer.outer_steps;
    let mut saturation_warned = false;
    let mut warned_inaccurate = false;
    let mut show = |record: &serde_json::Value| -> crate::Result<()> {
        // Saturation does not stop the run: one line on stderr as soon as it shows.
        if !saturation_warned {
            if let Some(warning) = crate::outer::saturation_warning_of(record) {
                if progress {
                    eprintln!();
                }
                eprintln!("warning: {warning}");
                saturation_warned = true;
            }
        }
        // Once per run: the trace marks every such step, the table counts them.
        if !warned_inaccurate
            && record.get("solve_accurate").and_then(|v| v.as_bool()) == Some(false)
        {
            warned_inaccurate = true;
            if progress {
                eprintln!();
            }
            eprintln!(
                "warning: outer step {}: the linear solve behind the hypergradient stayed inaccurate after refinement (hypergradient_change {:.1e} in the trace): use --precision f64",
                record.get("step").and_then(|v| v.as_u64()).unwrap_or(0),
                record
                    .get("hypergradient_change")
                    .and_then(|v| v.as_f64())
                    .unwrap_or(f64::NAN),
            );
        }
        if progress {
            let number = |key: &str| record.get(key).and_then(|v| v.as_f64());
            let acc = number("test_accuracy")
                .map_or(String::new(), |a| format!("  test acc {:.2}%", 100.0 * a));
            eprint!(
                "\r\x1b[2Kstep {}/{total}  F {:.4e}  ‖h‖ {:.3e}{acc}  {:.1} s",
                record.get("step").and_then(|v| v.as_u64()).unwrap_or(0),
                number("outer_loss").unwrap_or(f64::NAN),
                number("hypergradient_norm").unwrap_or(f64::NAN),
                number("seconds").unwrap_or(f64::NAN),
            );
            let _ = std::io::stderr().flush();
        }
        Ok(())
    };
    let outcome = api::run(&request, &input, &mut show);
    if progress {
        // End the progress line, also before an error's line.
        eprintln!();
    }
    let outcome = outcome?;
    let theta_file = match &args.outer.theta_out {
        Some(path) => {
            crate::data::npy::write_vector(super::theta_out::final_theta(&outcome), path)?;
            Some(path.display().to_string())
        }
        None => None,
    };
    if args.json {
        let mut value = outcome.to_json();
        // The command line's JSON is SPEC §6's; the fitted weights are for library callers.
        if let Some(object) = value.as_object_mut() {
            object.remove("coef");
            object.remove("coef_shape");
            super::theta_out::summarise(object, theta_file.as_deref());
        }
        println!("{value}");
        return Ok(());
    }
    if let Some(file) = theta_file {
        println!("theta written to {file}");
    }
    match &outcome {
        Outcome::Smooth(o) => tables::smooth_outcome(o),
        Outcome::L1(o) => tables::l1_outcome(o),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::Cli;
    use crate::api::{Settings, Theta};

    /// The command line's defaults are the library's: a `run` that names only the problem and
    /// the data fills `Settings` exactly as `Settings::default()` does.
    #[test]
    fn command_line_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["hypergrad", "run", "--problem", "ridge", "--train", "x"])
            .unwrap();
        let super::super::Command::Run(args) = cli.command else {
            panic!("parsed as run");
        };
        let settings = args.settings();
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.theta, Theta::Default);
    }
}
