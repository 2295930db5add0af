//! The Rust side of the ℓ1 peer benchmark (`benches/peers/lasso_peers.py` drives it):
//! HOAG with `implicit-forward` hypergradients on the Lasso held-out MSE, on the same
//! train/validation files the peers use, reporting the time to reach a target criterion.
//!
//! ```text
//! cargo bench --bench l1_peers -- --train T.svm --val V.svm --target 0.123 [--steps 30]
//!     [--method implicit-forward|implicit|forward] [--opt hoag|adam|grid|random]
//!     [--folds-file FOLDS] [--tol-start T0] [--tol-end T1]
//! ```
//!
//! With `--folds-file` (one fold number per row of `--train`, white-space separated) the
//! criterion is the K-fold cross-validation MSE over those folds instead, and `--val` may be
//! left out.
//!
//! Prints one JSON object: `load_seconds` (reading and converting the files),
//! `seconds_to_target` (search time until the held-out MSE first reached `--target`, null
//! if never), `best_loss`, `best_lambda`, `search_seconds`, `evaluations` and the trace
//! `[[wall seconds, CPU seconds, loss, λ], ...]`. The search clock starts with the data in memory, as the
//! Python peers' clocks do.

use std::time::Instant;

use hypergrad::api::{DataSource, Input, Settings};
use hypergrad::l1::{
    search, Criterion, L1Kind, L1Method, L1Options, L1Problem, OuterOpt, SearchOptions,
};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// CPU time of this (single-threaded) process so far, from `/proc/self/schedstat` (ns), so
/// that a loaded machine does not inflate the figure; `None` where that file is missing.
fn cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/schedstat").ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns * 1e-9)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && arg(&args, "--train").is_none() {
        // `cargo bench` with no arguments: nothing to do without data files.
        println!("l1_peers: run through benches/peers/lasso_peers.py (needs --train/--val files)");
        return Ok(());
    }
    let train = arg(&args, "--train").ok_or_else(|| anyhow::anyhow!("--train is required"))?;
    let folds_file = arg(&args, "--folds-file");
    let val = match arg(&args, "--val") {
        Some(v) => v,
        None if folds_file.is_some() => train.clone(),
        None => anyhow::bail!("--val is required (or --folds-file)"),
    };
    let target: f64 = arg(&args, "--target").map_or(Ok(f64::NEG_INFINITY), |t| t.parse())?;
    let steps: usize = arg(&args, "--steps").map_or(Ok(30), |t| t.parse())?;
    let method = match arg(&args, "--method").as_deref() {
        None | Some("implicit-forward") => L1Method::ImplicitForward,
        Some("implicit") => L1Method::Implicit,
        Some("forward") => L1Method::Forward,
        Some("implicit-cg") => L1Method::Implicit,
        Some(m) => anyhow::bail!("unknown --method {m}"),
    };
    let opt: OuterOpt = arg(&args, "--opt")
        .unwrap_or_else(|| "hoag".into())
        .parse()?;

    let loaded = Instant::now();
    let data = Input::Source(DataSource {
        train,
        val: Some(val),
        test: None,
    });
    let mut splits = data.l1(&Settings::default())?;
    // Nearly full designs (the leukemia shape) are swept faster as dense columns.
    splits.train.x = splits.train.x.densify_if(0.25);
    splits.val.x = splits.val.x.densify_if(0.25);
    let load_seconds = loaded.elapsed().as_secs_f64();

    let criterion = match &folds_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)?;
            let ids: Vec<usize> = text
                .split_whitespace()
                .map(|t| t.parse())
                .collect::<Result<_, _>>()?;
            if ids.len() != splits.train.y.len() {
                anyhow::bail!(
                    "{path}: {} fold numbers for {} rows",
                    ids.len(),
                    splits.train.y.len()
                );
            }
            let k = ids.iter().max().map_or(0, |m| m + 1);
            let folds = (0..k)
                .map(|f| {
                    let held: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == f).collect();
                    let fit: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] != f).collect();
                    (splits.train.select(&fit), splits.train.select(&held))
                })
                .collect();
            Criterion::CrossVal {
                kind: L1Kind::Lasso,
                folds,
            }
        }
        None => Criterion::HeldOut(L1Problem::new(L1Kind::Lasso, splits.train, splits.val)?),
    };
    let opts = L1Options::new(method);
    let mut search_opts = SearchOptions::new(opt, steps);
    if let Some(t) = arg(&args, "--tol-start") {
        search_opts.tol_start = t.parse()?;
    }
    if let Some(t) = arg(&args, "--tol-end") {
        search_opts.tol_end = t.parse()?;
    }
    let started = Instant::now();
    let cpu_start = cpu_seconds();
    let mut reached: Option<f64> = None;
    let mut reached_cpu: Option<f64> = None;
    let mut cpu_trace: Vec<f64> = Vec::new();
    let result = search(criterion, opts, &search_opts, |e| {
        let cpu = cpu_seconds()
            .zip(cpu_start)
            .map_or(f64::NAN, |(a, b)| a - b);
        cpu_trace.push(cpu);
        if reached.is_none() && e.outer_loss <= target {
            reached = Some(started.elapsed().as_secs_f64());
            reached_cpu = Some(cpu);
        }
        Ok(())
    })?;
    // [wall seconds, CPU seconds, criterion, λ] per evaluation.
    let trace: Vec<[f64; 4]> = result
        .trace
        .iter()
        .zip(&cpu_trace)
        .map(|(e, &c)| [e.seconds, c, e.outer_loss, e.theta[0].exp()])
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "load_seconds": load_seconds,
            "seconds_to_target": reached,
            "cpu_seconds_to_target": reached_cpu,
            "best_loss": result.best_loss,
            "best_lambda": result.best_theta.first().map(|t| t.exp()),
            "search_seconds": result.seconds,
            "evaluations": result.trace.len(),
            "method": method.name(),
            "opt": opt.name(),
            "trace": trace,
        })
    );
    Ok(())
}
