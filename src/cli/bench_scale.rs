//! `hypergrad bench scale` (issue 24 item 6): how the time per outer step and the peak host
//! memory grow with the number of training rows n, for three workloads:
//!
//! * `hyperclean`: label cleaning (per-sample θ) with NHGD and K-FAC curvature, f32;
//! * `cg`: logistic regression (per-feature θ) with CG implicit differentiation;
//! * `lasso`: the lasso's λ on sparse rows (10 stored entries a row), read from a `.npz`.
//!
//! Each (workload, n) runs in a fresh process (this binary, `bench scale --worker`), so that
//! its peak resident set (`VmHWM` of `/proc/self/status`) is its own. The time per outer step
//! is the mean gap between consecutive outer-step records; the setup time is what comes
//! before the first (loading or generating the rows, building the problem). The log-log slope
//! is the least-squares slope of log t against log n (1: linear in n).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, ValueEnum};
use serde_json::{json, Value};

use crate::api::{self, Request};
use crate::data::rng::Rng;
use crate::data::sparse::{CsrMatrix, SparseDataset};

/// A workload of the scale benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    Hyperclean,
    Cg,
    Lasso,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Hyperclean => "hyperclean",
            Workload::Cg => "cg",
            Workload::Lasso => "lasso",
        }
    }
}

#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The workloads (default: all three).
    #[arg(long = "problem", value_enum, value_delimiter = ',')]
    pub problems: Vec<Workload>,
    /// The row counts, e.g. 1e4,1e5,1e6,1e7.
    #[arg(long, value_delimiter = ',', default_value = "1e4,1e5,1e6,1e7")]
    pub n: Vec<f64>,
    /// Leave out every n above this (what the machine's memory allows).
    #[arg(long, value_name = "N")]
    pub max_n: Option<f64>,
    /// Features per row.
    #[arg(long, default_value_t = 100)]
    pub d: usize,
    /// Outer steps per run (step 0 included in the records, not in the step time).
    #[arg(long, default_value_t = 5)]
    pub outer_steps: u64,
    /// Inner steps T of NHGD (hyperclean).
    #[arg(long, default_value_t = 100)]
    pub inner_steps: usize,
    /// Device of the runs (auto: a CUDA GPU when usable).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Draw log10 time per step and log10 peak RSS against log10 n (FIG.svg or FIG.png).
    #[arg(long, value_name = "FIG.svg|FIG.png")]
    pub plot: Option<PathBuf>,
    /// Internal: run one (workload, n) in this process and print its record.
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// Peak resident set of this process in bytes (Linux `VmHWM`); `None` elsewhere.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Least-squares slope of log y against log x (`None` with fewer than two points).
pub fn loglog_slope(points: &[(f64, f64)]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    if pts.len() < 2 {
        return None;
    }
    let m = pts.len() as f64;
    let (mx, my) = pts
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / m, b + y / m));
    let sxy: f64 = pts.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = pts.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Writes the lasso's sparse rows: `n` rows of `d` features, 10 stored entries each (fewer
/// when d < 10), standard normal, and y = X w* + 0.1 ε with w* sparse (every 10th feature).
fn lasso_file(n: usize, d: usize, seed: u64, dir: &Path) -> Result<PathBuf> {
    let mut rng = Rng::new(seed);
    let k = d.min(10);
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0);
    let mut indices = Vec::with_capacity(n * k);
    let mut values = Vec::with_capacity(n * k);
    let mut y = Vec::with_capacity(n);
    let mut cols: Vec<usize> = Vec::with_capacity(k);
    for _ in 0..n {
        cols.clear();
        while cols.len() < k {
            let j = (rng.uniform() * d as f64) as usize % d;
            if !cols.contains(&j) {
                cols.push(j);
            }
        }
        cols.sort_unstable();
        let mut target = 0.1 * rng.normal();
        for &j in &cols {
            let v = rng.normal();
            if j % 10 == 0 {
                target += v;
            }
            indices.push(j);
            values.push(v);
        }
        indptr.push(indices.len());
        y.push(target);
    }
    let ds = SparseDataset {
        x: CsrMatrix::from_parts(n, d, indptr, indices, values)?,
        y,
        name: "lasso".into(),
    };
    let path = dir.join(format!("lasso-n{n}-d{d}.npz"));
    crate::data::npz::write_npz(&ds, &path)?;
    Ok(path)
}

/// The `hypergrad run` arguments of one workload at `n` rows.
fn run_args(w: Workload, n: usize, a: &ScaleArgs, dir: &Path) -> Result<Vec<String>> {
    let d = a.d;
    let mut args: Vec<String> = vec!["hypergrad".into(), "run".into()];
    let mut push = |xs: &[&str]| args.extend(xs.iter().map(|s| s.to_string()));
    let steps = a.outer_steps.to_string();
    let inner = a.inner_steps.to_string();
    push(&[
        "--outer-steps",
        &steps,
        "--device",
        &a.device,
        "--seed",
        "1",
    ]);
    match w {
        Workload::Hyperclean => {
            let train = format!("synthetic:softmax:n={n},d={d},c=10,seed=1");
            push(&[
                "--problem",
                "hyperclean",
                "--train",
                &train,
                "--corrupt",
                "0.3",
            ]);
            push(&[
                "--method",
                "nhgd",
                "--curvature",
                "kfac",
                "--precision",
                "f32",
            ]);
            push(&["--inner-steps", &inner, "--batch-size", "64"]);
        }
        Workload::Cg => {
            let train = format!("synthetic:logistic:n={n},d={d},seed=1");
            push(&[
                "--problem",
                "logreg",
                "--train",
                &train,
                "--hyper",
                "per-feature",
            ]);
            push(&["--method", "cg"]);
        }
        Workload::Lasso => {
            let file = lasso_file(n, d, 1, dir)?;
            push(&[
                "--problem",
                "lasso",
                "--train",
                file.to_str().context("a UTF-8 path")?,
            ]);
        }
    }
    Ok(args)
}

/// One (workload, n) in this process: its record, as JSON.
fn worker(w: Workload, n: usize, a: &ScaleArgs) -> Result<Value> {
    let dir = std::env::temp_dir().join(format!("hypergrad-bench-scale-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let argv = run_args(w, n, a, &dir)?;
    let cli = super::Cli::try_parse_from(&argv).map_err(|e| anyhow::anyhow!("{e}"))?;
    let super::Command::Run(run) = cli.command else {
        bail!("internal: the scale benchmark builds a run command");
    };
    let request = Request {
        problem: run.common.problem.problem,
        settings: run.settings(),
    };
    let input = run.common.data.source(None).into();
    let start = Instant::now();
    let mut stamps = Vec::new();
    let outcome = api::run(&request, &input, &mut |_| {
        stamps.push(start.elapsed().as_secs_f64());
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = outcome?;
    let gaps: Vec<f64> = stamps.windows(2).map(|p| p[1] - p[0]).collect();
    let per_step = (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64);
    let device = outcome.to_json()["device"].clone();
    Ok(json!({
        "problem": w.name(),
        "n": n,
        "d": a.d,
        "device": device,
        "outer_steps": a.outer_steps,
        "seconds_per_outer_step": per_step,
        "setup_seconds": stamps.first(),
        "peak_host_bytes": peak_rss(),
        // Not measured yet: a CUDA run would read the device's peak here.
        "peak_device_bytes": Value::Null,
    }))
}

pub fn run(a: ScaleArgs) -> Result<()> {
    let problems = if a.problems.is_empty() {
        vec![Workload::Hyperclean, Workload::Cg, Workload::Lasso]
    } else {
        a.problems.clone()
    };
    let mut sizes = Vec::new();
    for &n in &a.n {
        if !(1.0..=1e12).contains(&n) {
            bail!("invalid value for --n: {n} is not a row count");
        }
        if a.max_n.is_none_or(|m| n <= m) {
            sizes.push(n.round() as usize);
        }
    }
    if a.worker {
        let (&[w], &[n]) = (&problems[..], &sizes[..]) else {
            bail!("internal: --worker takes one --problem and one --n");
        };
        println!("{}", worker(w, n, &a)?);
        return Ok(());
    }
    if sizes.is_empty() {
        bail!("invalid value for --max-n: it leaves out every --n");
    }
    let exe = std::env::current_exe().context("cannot find this program to run the workers")?;
    let mut records = Vec::new();
    for &w in &problems {
        for &n in &sizes {
            let out = std::process::Command::new(&exe)
                .args(["bench", "scale", "--worker", "--problem", w.name()])
                .args(["--n", &n.to_string(), "--d", &a.d.to_string()])
                .args(["--outer-steps", &a.outer_steps.to_string()])
                .args(["--inner-steps", &a.inner_steps.to_string()])
                .args(["--device", &a.device])
                .output()
                .context("cannot start a benchmark worker")?;
            let record = if out.status.success() {
                serde_json::from_slice::<Value>(&out.stdout)
                    .context("a worker printed no record")?
            } else {
                // What does not fit (or fails) is reported and the curve goes on without it.
                let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
                json!({"problem": w.name(), "n": n, "d": a.d, "skipped": why})
            };
            if !a.json {
                eprintln!("{}", line_of(&record));
            }
            records.push(record);
        }
    }
    let mut slopes = serde_json::Map::new();
    for &w in &problems {
        let pts = |key: &str, min_n: f64| -> Vec<(f64, f64)> {
            records
                .iter()
                .filter(|r| r["problem"] == w.name())
                .filter_map(|r| Some((r["n"].as_f64()?, r[key].as_f64()?)))
                .filter(|(n, _)| *n >= min_n)
                .collect()
        };
        slopes.insert(
            w.name().into(),
            json!({
                "seconds_per_outer_step": loglog_slope(&pts("seconds_per_outer_step", 0.0)),
                "seconds_per_outer_step_from_1e5": loglog_slope(&pts("seconds_per_outer_step", 1e5)),
                "peak_host_bytes": loglog_slope(&pts("peak_host_bytes", 0.0)),
            }),
        );
    }
    if let Some(fig) = &a.plot {
        draw(&problems, &records, fig)?;
    }
    let result = json!({"records": records, "slopes": slopes});
    if a.json {
        println!("{result}");
    } else {
        println!("log-log slopes (1 = linear in n):");
        for (name, s) in &slopes {
            println!(
                "  {name:<11} time/step {}  (n >= 1e5: {})  peak RSS {}",
                fmt(&s["seconds_per_outer_step"]),
                fmt(&s["seconds_per_outer_step_from_1e5"]),
                fmt(&s["peak_host_bytes"])
            );
        }
    }
    Ok(())
}

fn fmt(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |x| format!("{x:.2}"))
}

/// One table line of a record.
fn line_of(r: &Value) -> String {
    if let Some(why) = r["skipped"].as_str() {
        return format!(
            "{:<11} n={:<9} skipped: {why}",
            r["problem"].as_str().unwrap_or(""),
            r["n"]
        );
    }
    format!(
        "{:<11} n={:<9} {:>10} s/step  setup {:>8} s  peak RSS {}",
        r["problem"].as_str().unwrap_or(""),
        r["n"],
        r["seconds_per_outer_step"]
            .as_f64()
            .map_or("-".into(), |s| format!("{s:.4}")),
        r["setup_seconds"]
            .as_f64()
            .map_or("-".into(), |s| format!("{s:.2}")),
        r["peak_host_bytes"]
            .as_u64()
            .map_or("-".into(), crate::memory::human)
    )
}

/// The growth curves: log10 time per outer step and log10 peak RSS against log10 n, one line
/// per workload.
fn draw(problems: &[Workload], records: &[Value], out: &Path) -> Result<()> {
    let keys = ["seconds_per_outer_step", "peak_host_bytes"];
    let traces = problems
        .iter()
        .map(|w| crate::plot::Trace {
            label: w.name().into(),
            points: keys
                .iter()
                .map(|key| {
                    records
                        .iter()
                        .filter(|r| r["problem"] == w.name())
                        .filter_map(|r| Some((r["n"].as_f64()?.log10(), r[*key].as_f64()?.log10())))
                        .collect()
                })
                .collect(),
        })
        .collect();
    let figure = crate::plot::Figure {
        x: "log10 n".into(),
        y: vec![
            "log10 seconds per outer step".into(),
            "log10 peak host bytes (RSS)".into(),
        ],
        traces,
    };
    crate::plot::draw(&figure, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_power_law_is_its_exponent() {
        let pts: Vec<(f64, f64)> = [1e4, 1e5, 1e6].iter().map(|&n| (n, 3e-7 * n)).collect();
        assert!((loglog_slope(&pts).unwrap() - 1.0).abs() < 1e-12);
        let flat: Vec<(f64, f64)> = [1e4, 1e5].iter().map(|&n| (n, 0.01)).collect();
        assert!(loglog_slope(&flat).unwrap().abs() < 1e-12);
        assert!(loglog_slope(&pts[..1]).is_none());
    }
}
