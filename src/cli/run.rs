//! `hypergrad run`: the outer loop (SPEC §6), and the main job.
//!
//! The main job is what `hypergrad run` does when neither `--problem` nor `--train` is given:
//! it cleans the labels of the bundled MNIST sample, 50% of whose training labels are
//! corrupted (seeded), with NHGD on the best device, and prints the test accuracy of a model
//! trained without cleaning, with the learnt cleaning weights, and on the clean rows only.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde_json::json;

use super::data_args::{DataArgs, Splits};
use super::grad::{Device, DeviceArgs, EstimatorArgs, ProblemArgs};
use super::stochastic_args::StochasticArgs;
use crate::backend::cpu::CpuBackend;
use crate::backend::Backend;
use crate::data::{self, Dataset};
use crate::hypergrad::stochastic::StochasticEstimator;
use crate::outer::{self, Estimator, OuterOpt, RunConfig, StepRecord};
use crate::problem::{Bilevel, GlmBilevel, HyperLayout, InnerProblem, ProblemKind};
use crate::solver;

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
    pub l1: super::l1::L1Args,

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
    pub outer_opt: OuterOptArg,

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OuterOptArg {
    Sgd,
    Adam,
    Maid,
    /// ℓ1 problems only.
    Hoag,
    /// ℓ1 problems only.
    Grid,
    /// ℓ1 problems only.
    Random,
}

impl OuterArgs {
    fn optimiser(&self) -> Result<OuterOpt> {
        let lr = self.outer_lr.unwrap_or(match self.outer_opt {
            OuterOptArg::Adam => 0.1,
            _ => 1.0,
        });
        if !(lr > 0.0 && lr.is_finite()) {
            bail!("invalid value for --outer-lr: must be > 0, got {lr}");
        }
        Ok(match self.outer_opt {
            OuterOptArg::Sgd => OuterOpt::Sgd { lr },
            OuterOptArg::Adam => OuterOpt::Adam {
                lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
            },
            OuterOptArg::Maid => OuterOpt::Maid { lr },
            OuterOptArg::Hoag | OuterOptArg::Grid | OuterOptArg::Random => bail!(
                "invalid value for --outer-opt: hoag, grid and random are for the ℓ1 problems (lasso, enet, wlasso); use sgd, adam or maid"
            ),
        })
    }
}

/// The data of a run, with the rows whose labels were corrupted.
struct RunData {
    splits: Splits,
    corrupted: Option<Vec<usize>>,
}

fn load_data(args: &RunArgs) -> Result<RunData> {
    let mut splits = args.data.load(args.outer.test.as_deref())?;
    let corrupted = match args.outer.corrupt {
        None => None,
        Some(fraction) => {
            if !args.problem.kind().is_multiclass() {
                bail!("invalid value for --corrupt: label corruption needs class labels (softmax or hyperclean)");
            }
            let classes = splits.train.num_classes()?;
            Some(data::corrupt_labels(
                &mut splits.train,
                classes,
                fraction,
                args.data.seed,
            )?)
        }
    };
    Ok(RunData { splits, corrupted })
}

pub fn run(args: RunArgs) -> Result<()> {
    if let Some(kind) = args.problem.problem.l1_kind() {
        return super::l1::run(kind, &args);
    }
    let resolved = args.device.resolve()?;
    let data = load_data(&args)?;
    let note = resolved.fallback_reason.as_deref();
    match resolved.device {
        Device::CpuF64 => run_on(CpuBackend::<f64>::new(), &args, &data, note),
        Device::CpuF32 => run_on(CpuBackend::<f32>::new(), &args, &data, note),
        Device::Cuda(backend) => run_on(backend, &args, &data, note),
    }
}

fn run_on<B: Backend + Clone>(
    backend: B,
    args: &RunArgs,
    data: &RunData,
    fallback_reason: Option<&str>,
) -> Result<()> {
    let device = backend.name();
    let splits = &data.splits;
    let mut problem = args.problem.build(backend.clone(), splits)?;
    let opts = args.estimator.options(backend.precision());
    let warm = !args.outer.cold_start;
    let opt = args.outer.optimiser()?;
    // What `--fisher-update auto` measured, for the summary (None when it did not run).
    let mut auto_update = None;
    let mut estimator = if opts.method.is_stochastic() {
        let mut stochastic = args.stochastic.options(
            opts.method,
            problem.kind().is_multiclass(),
            opts.linear_iters,
            opts.linear_tol,
            args.data.seed,
        );
        stochastic.warm_start = warm;
        stochastic.diagnostics = false;
        let stochastic = StochasticEstimator::new(&problem, &splits.train, stochastic)?;
        if let (update, Some(timing)) = stochastic.dense_update() {
            auto_update = Some((update, timing));
        }
        Estimator::Stochastic(Box::new(stochastic))
    } else {
        let mut opts = opts;
        if opt.name() == "maid" {
            // MAID starts loose and tightens only when a step needs it.
            opts.inner.tol = args.estimator.inner_tol.unwrap_or(outer::MAID_START_TOL);
            opts.linear_tol = args.estimator.linear_tol.unwrap_or(outer::MAID_START_TOL);
        }
        Estimator::Deterministic {
            opts,
            warm,
            w: None,
        }
    };
    let fingerprint = format!(
        "{} {} method={} opt={} train={} n={} seed={} corrupt={:?} T={} b={} warm={warm}",
        problem.kind().name(),
        problem.layout().name(),
        opts.method.name(),
        opt.name(),
        splits.train.name,
        splits.train.n(),
        args.data.seed,
        args.outer.corrupt,
        args.stochastic.inner_steps,
        args.stochastic.batch_size,
    );
    let mut trace = TraceWriter::open(
        args.outer.trace.as_deref(),
        args.outer.checkpoint.as_deref(),
    )?;
    let progress = std::io::stderr().is_terminal() && !args.json;
    let total = args.outer.outer_steps;
    let config = RunConfig {
        outer_steps: total,
        opt,
        test: splits.test.as_ref(),
        fingerprint,
        checkpoint: args.outer.checkpoint.as_deref(),
    };
    let outcome = outer::run(&mut problem, &mut estimator, &config, |record| {
        trace.write(record)?;
        if progress {
            let acc = record
                .test_accuracy
                .map_or(String::new(), |a| format!("  test acc {:.2}%", 100.0 * a));
            eprint!(
                "\r\x1b[2Kstep {}/{total}  F {:.4e}  ‖h‖ {:.3e}{acc}  {:.1} s",
                record.step, record.outer_loss, record.hypergradient_norm, record.seconds
            );
            let _ = std::io::stderr().flush();
        }
        Ok(())
    })?;
    if progress {
        eprintln!();
    }
    let cleaning = match &data.corrupted {
        Some(corrupted) if problem.kind() == ProblemKind::Hyperclean => {
            Some(cleaning_report(&problem, args, splits, corrupted)?)
        }
        _ => None,
    };
    let last = outcome
        .records
        .last()
        .context("internal: the run made no step")?;
    if args.json {
        let value = json!({
            "problem": problem.kind().name(),
            "method": opts.method.name(),
            "outer_opt": opt.name(),
            "device": device,
            "device_note": fallback_reason.map(|r| format!("auto chose the CPU: {r}")),
            "warm_start": warm,
            "outer_steps": total,
            "resumed_from": outcome.resumed_from,
            "final": last,
            "fisher_update_auto": auto_update.map(|(update, timing)| json!({
                "chose": update,
                "measured": timing,
            })),
            "theta": outcome.theta,
            "cleaning": cleaning,
        });
        println!("{value}");
    } else {
        println!(
            "problem       {} (p = {}), method {} with {} on {device}, {} start",
            problem.kind().name(),
            problem.hyper_dim(),
            opts.method.name(),
            opt.name(),
            if warm { "warm" } else { "cold" }
        );
        if let Some((update, t)) = auto_update {
            println!(
                "fisher update {} (auto: an outer step projected at {:.3} s by Woodbury, \
                 {:.3} s by accumulate)",
                format!("{update:?}").to_lowercase(),
                t.woodbury_outer,
                t.accumulate_outer
            );
        }
        if let Some(step) = outcome.resumed_from {
            println!("resumed       from the checkpoint after step {step}");
        }
        println!(
            "final         step {}: F {:.6e}, ‖h‖ {:.3e}, {:.2} s",
            last.step, last.outer_loss, last.hypergradient_norm, last.seconds
        );
        if let (Some(loss), acc) = (last.test_loss, last.test_accuracy) {
            let acc = acc.map_or(String::new(), |a| format!(", accuracy {:.2}%", 100.0 * a));
            println!("test          loss {loss:.6e}{acc} (the last inner iterate)");
        }
        if let Some(c) = &cleaning {
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
        if let Some(reason) = fallback_reason {
            println!("device note   auto chose the CPU: {reason}");
        }
    }
    Ok(())
}

/// Test accuracies of the three models the main job compares, each the exact inner solution
/// of the same regularised softmax problem (ridge C): uniform weights on all (corrupted) rows,
/// the learnt weights σ(θ), and uniform weights on the clean rows only.
#[derive(Debug, serde::Serialize)]
struct CleaningReport {
    without_cleaning: f64,
    with_cleaning: f64,
    clean_rows_only: f64,
    corrupted: usize,
    n_train: usize,
    mean_weight_corrupted: f64,
    mean_weight_clean: f64,
}

fn cleaning_report<B: Backend + Clone>(
    problem: &GlmBilevel<B>,
    args: &RunArgs,
    splits: &Splits,
    corrupted: &[usize],
) -> Result<CleaningReport> {
    let test = splits
        .test
        .as_ref()
        .context("label cleaning needs test data to report on (--test, or a third --split part)")?;
    let inner = args.estimator.options(problem.backend().precision()).inner;
    let b = problem.backend();
    let softmax_accuracy = |train: &Dataset| -> Result<f64> {
        let mut p = GlmBilevel::new(
            b.clone(),
            ProblemKind::Softmax,
            HyperLayout::Shared,
            train,
            &splits.val,
            args.problem.l2,
        )?;
        p.set_theta(&[args.problem.l2.ln()])?;
        let w = solver::solve(&p, None, &inner)?.w;
        Ok(p.evaluate(&w, test)?.1.unwrap_or(f64::NAN))
    };
    let without_cleaning = softmax_accuracy(&splits.train)?;
    let is_corrupted = {
        let mut flags = vec![false; splits.train.n()];
        corrupted.iter().for_each(|&i| flags[i] = true);
        flags
    };
    let clean: Vec<usize> = (0..splits.train.n())
        .filter(|&i| !is_corrupted[i])
        .collect();
    let clean_rows_only = softmax_accuracy(&splits.train.select(&clean))?;
    let w = solver::solve(problem, None, &inner)?.w;
    let with_cleaning = problem.evaluate(&w, test)?.1.unwrap_or(f64::NAN);
    let weights: Vec<f64> = problem
        .theta()
        .iter()
        .map(|&t| crate::backend::cpu::sigmoid(t))
        .collect();
    let mean = |rows: &mut dyn Iterator<Item = usize>| {
        let (sum, count) = rows.fold((0.0, 0usize), |(s, c), i| (s + weights[i], c + 1));
        sum / count.max(1) as f64
    };
    Ok(CleaningReport {
        without_cleaning,
        with_cleaning,
        clean_rows_only,
        corrupted: corrupted.len(),
        n_train: splits.train.n(),
        mean_weight_corrupted: mean(&mut corrupted.iter().copied()),
        mean_weight_clean: mean(&mut clean.iter().copied()),
    })
}

/// The JSONL trace: one line per step, flushed as it is written. On resuming from a
/// checkpoint the file is kept, minus any lines after the checkpoint's step.
struct TraceWriter {
    file: Option<std::fs::File>,
}

impl TraceWriter {
    fn open(path: Option<&std::path::Path>, checkpoint: Option<&std::path::Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(TraceWriter { file: None });
        };
        let resumed_step = match checkpoint {
            Some(ck) => crate::outer::Checkpoint::load(ck)?.map(|c| c.step),
            None => None,
        };
        let kept = match resumed_step {
            Some(step) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                        .is_some_and(|s| s <= step)
                })
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            None => String::new(),
        };
        std::fs::write(path, kept)
            .with_context(|| format!("cannot write --trace {}", path.display()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open --trace {}", path.display()))?;
        Ok(TraceWriter { file: Some(file) })
    }

    fn write(&mut self, record: &StepRecord) -> crate::error::Result<()> {
        if let Some(file) = &mut self.file {
            let line = serde_json::to_string(record).map_err(|e| {
                crate::Error::Backend(format!("cannot serialise a trace record: {e}"))
            })?;
            writeln!(file, "{line}")
                .and_then(|_| file.flush())
                .map_err(|e| crate::Error::option("--trace", format!("cannot write: {e}")))?;
        }
        Ok(())
    }
}
