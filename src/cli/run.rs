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

use super::args::{DeviceArgs, EstimatorArgs, L1Args, ProblemArgs};
use super::data_args::DataArgs;
use super::grad::preview;
use super::stochastic_args::StochasticArgs;
use crate::api::names::OuterOptName;
use crate::api::{self, L1Outcome, Outcome, Request, Settings, SmoothOutcome};

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
    pub problem: ProblemArgs,

    #[command(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    pub estimator: EstimatorArgs,

    #[command(flatten)]
    pub stochastic: StochasticArgs,

    #[command(flatten)]
    pub outer: OuterArgs,

    #[command(flatten)]
    pub device: DeviceArgs,

    #[command(flatten)]
    pub l1: L1Args,

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

    /// Save the state after every step to FILE and resume from it when it exists.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
}

impl RunArgs {
    pub fn settings(&self) -> Settings {
        let mut s = Settings::default();
        self.problem.apply(&mut s);
        self.data.apply(&mut s);
        self.estimator.apply(&mut s);
        self.stochastic.apply(&mut s);
        self.device.apply(&mut s);
        self.l1.apply(&mut s);
        let o = &self.outer;
        s.outer_steps = o.outer_steps;
        s.outer_opt = o.outer_opt;
        s.outer_lr = o.outer_lr;
        s.cold_start = o.cold_start;
        s.corrupt = o.corrupt;
        s.trace = o.trace.clone();
        s.checkpoint = o.checkpoint.clone();
        s
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let request = Request {
        problem: args.problem.problem,
        settings: args.settings(),
    };
    let input = args.data.source(args.outer.test.as_deref()).into();
    let progress = std::io::stderr().is_terminal() && !args.json;
    let total = args.outer.outer_steps;
    let mut show = |record: &serde_json::Value| -> crate::Result<()> {
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
    let outcome = api::run(&request, &input, &mut show)?;
    if progress {
        eprintln!();
    }
    if args.json {
        let mut value = outcome.to_json();
        // The command line's JSON is SPEC §6's; the fitted weights are for library callers.
        if let Some(object) = value.as_object_mut() {
            object.remove("coef");
            object.remove("coef_shape");
        }
        println!("{value}");
        return Ok(());
    }
    match &outcome {
        Outcome::Smooth(o) => print_smooth(o),
        Outcome::L1(o) => print_l1(o),
    }
    Ok(())
}

fn print_smooth(o: &SmoothOutcome) {
    println!(
        "problem       {} (p = {}), method {} with {} on {}, {} start",
        o.kind.name(),
        o.p,
        o.method.name(),
        o.outer_opt,
        o.device,
        if o.warm_start { "warm" } else { "cold" }
    );
    if let Some(n) = &o.network {
        println!(
            "model         {} ({}), P = {} inner variables",
            n.model, n.activation, n.parameters
        );
    }
    if let Some((update, t)) = &o.fisher_update_auto {
        println!(
            "fisher update {} (auto: an outer step projected at {:.3} s by Woodbury, \
             {:.3} s by accumulate)",
            format!("{update:?}").to_lowercase(),
            t.woodbury_outer,
            t.accumulate_outer
        );
    }
    if let Some(step) = o.resumed_from {
        println!("resumed       from the checkpoint after step {step}");
    }
    if let Some(last) = o.trace.last() {
        let number = |key: &str| last.get(key).and_then(|v| v.as_f64());
        println!(
            "final         step {}: F {:.6e}, ‖h‖ {:.3e}, {:.2} s",
            last.get("step").and_then(|v| v.as_u64()).unwrap_or(0),
            number("outer_loss").unwrap_or(f64::NAN),
            number("hypergradient_norm").unwrap_or(f64::NAN),
            number("seconds").unwrap_or(f64::NAN)
        );
        if let Some(loss) = number("test_loss") {
            let acc = number("test_accuracy")
                .map_or(String::new(), |a| format!(", accuracy {:.2}%", 100.0 * a));
            println!("test          loss {loss:.6e}{acc} (the last inner iterate)");
        }
    }
    if let Some(c) = &o.cleaning {
        println!(
            "test accuracy without cleaning {:.2}%, with cleaning {:.2}%, clean rows only {:.2}% ({} of {} training labels corrupted)",
            100.0 * c.without_cleaning,
            100.0 * c.with_cleaning,
            100.0 * c.clean_rows_only,
            c.corrupted,
            c.n_train
        );
        println!(
            "weights       mean σ(θ) {:.3} on corrupted rows, {:.3} on clean rows",
            c.mean_weight_corrupted, c.mean_weight_clean
        );
    }
    if let Some(note) = &o.device_note {
        println!("device note   {note}");
    }
}

fn print_l1(o: &L1Outcome) {
    let result = &o.result;
    println!(
        "problem       {} (p = {}), {} features, {} design; criterion {}",
        o.kind.name(),
        o.p,
        o.features,
        if o.sparse { "sparse" } else { "dense" },
        o.criterion
    );
    match &result.refinement {
        Some(r) => {
            let screened = result.trace.len() - r.resolved.iter().sum::<usize>();
            let rungs: Vec<String> = r
                .ladder
                .iter()
                .zip(&r.resolved)
                .map(|(t, k)| format!("{k} re-solved to {t:.0e}"))
                .collect();
            println!(
                "search        {}, criterion only (no hypergradient): {screened} points solved to a relative gap of {:.0e}{}{}; {} inner epochs in {:.3} s",
                o.search.opt.name(),
                r.screen_tol,
                rungs.iter().map(|s| format!(", {s}")).collect::<String>(),
                if r.fallback {
                    " (a screening error exceeded its bound: every point refined)"
                } else {
                    ""
                },
                result.inner_iters,
                result.seconds
            )
        }
        None => println!(
            "search        {} with {} hypergradients, {} evaluations, {} inner epochs in {:.3} s",
            o.search.opt.name(),
            o.opts.method.name(),
            result.trace.len(),
            result.inner_iters,
            result.seconds
        ),
    }
    println!("best θ        {}", preview(&result.best_theta));
    println!("best F(θ)     {:.10e}", result.best_loss);
    if let Some(t) = o.test_loss {
        println!("test MSE      {t:.10e}  (refit on the training rows at the best θ)");
    }
    if let Some(note) = &o.device_note {
        println!("device note   {note}");
    }
}
