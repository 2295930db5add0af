//! Divergence and saturation in `hypergrad run`: a non-finite θ, inner iterate, outer loss or
//! hypergradient stops the run with one line naming the step and the option to lower, a
//! non-zero exit, a trace whose last record says why (`stopped`), and a checkpoint that holds
//! the last finite step; weights σ(θ) that saturate (hyperclean) are reported in every trace
//! record, the table, `--json` and one line on stderr, without stopping the run.

use std::path::{Path, PathBuf};
use std::process::Output;

mod cli_common;
use cli_common::{assert_one_line_error, hypergrad, json_of};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hypergrad-divergence-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn run(args: &[&str], trace: &Path, checkpoint: &Path) -> Output {
    let files = [
        "--trace",
        trace.to_str().unwrap(),
        "--checkpoint",
        checkpoint.to_str().unwrap(),
    ];
    let all: Vec<&str> = ["run"].iter().chain(args).chain(&files).copied().collect();
    hypergrad(&all)
}

fn trace_of(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("trace")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn error_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr.lines().last().unwrap_or_default().to_string()
}

/// The run stopped at `step`: the trace's last record is that step's and says why, in the
/// words of the error line (less its `error: numerical failure: ` prefix).
fn assert_stopped_at(out: &Output, trace: &Path, step: u64) -> serde_json::Value {
    assert!(!out.status.success(), "the run must fail");
    let error = error_line(out);
    let records = trace_of(trace);
    let last = records.last().expect("a record").clone();
    assert_eq!(last["step"], step, "{last}");
    let stopped = last["stopped"].as_str().expect("a `stopped` reason");
    assert!(
        error.ends_with(stopped),
        "error {error:?}, stopped {stopped:?}"
    );
    assert!(
        stopped.starts_with(&format!("outer step {step}: ")),
        "{stopped}"
    );
    for earlier in &records[..records.len() - 1] {
        assert!(earlier["stopped"].is_null(), "{earlier}");
    }
    last
}

/// The checkpoint holds step `step` and nothing but finite numbers (the binary checkpoint
/// reads back through the library, which refuses a non-finite number), as JSON for the checks.
fn assert_checkpoint_at(checkpoint: &Path, step: u64) -> serde_json::Value {
    let ck = hypergrad::outer::Checkpoint::load(checkpoint)
        .expect("a whole checkpoint")
        .expect("a checkpoint");
    assert_eq!(ck.step, step);
    let vectors = [Some(&ck.theta), ck.w.as_ref(), ck.q.as_ref()];
    for v in vectors.into_iter().flatten() {
        assert!(v.iter().all(|x| x.is_finite()));
    }
    serde_json::to_value(&ck).unwrap()
}

#[test]
fn theta_leaving_the_problems_domain_stops_the_run_and_keeps_the_last_finite_step() {
    let dir = temp_dir("ridge");
    let (trace, ck) = (dir.join("t.jsonl"), dir.join("ck"));
    // Adam moves θ by up to --outer-lr a step, out of exp's range (±700) after a few.
    let out = run(
        &[
            "--problem",
            "ridge",
            "--train",
            "diabetes",
            "--outer-lr",
            "300",
            "--outer-steps",
            "10",
        ],
        &trace,
        &ck,
    );
    assert_one_line_error(&out, "the update took θ out of");
    let error = error_line(&out);
    assert!(
        error.contains("(λ = exp(θ) = 0 is not a positive finite number")
            && error.contains("lower --outer-lr (it is 300)"),
        "{error}"
    );
    let step = trace_of(&trace).last().unwrap()["step"].as_u64().unwrap();
    assert!(step >= 2, "{error}");
    let last = assert_stopped_at(&out, &trace, step);
    assert!(
        last["outer_loss"].as_f64().is_some(),
        "the step itself was finite"
    );
    let ck = assert_checkpoint_at(&ck, step - 1);
    assert!(ck["theta"][0].as_f64().unwrap().abs() < 700.0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_non_finite_theta_stops_the_run() {
    let dir = temp_dir("inf");
    let (trace, ck) = (dir.join("t.jsonl"), dir.join("ck"));
    // σ(θ) takes any finite θ, so Adam's steps of 1e308 reach θ = ±1e308 and then infinity.
    let out = run(
        &[
            "--problem",
            "hyperclean",
            "--train",
            "digits",
            "--outer-lr",
            "1e308",
            "--outer-steps",
            "5",
        ],
        &trace,
        &ck,
    );
    let error = error_line(&out);
    assert!(
        error.starts_with("error: numerical failure: outer step 2: ")
            && error.contains("= inf is not finite")
            && error.contains("lower --outer-lr (it is 1e308)"),
        "{error}"
    );
    // Before it, the one-line saturation warning of step 1 (θ = ±1e308); nothing else.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with("warning: step 1: "), "{stderr}");
    assert_stopped_at(&out, &trace, 2);
    let ck = assert_checkpoint_at(&ck, 1);
    assert!(ck["theta"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t.as_f64().unwrap().abs() > 1e300));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_non_finite_inner_iterate_names_the_inner_step() {
    let dir = temp_dir("inner");
    let (trace, ck) = (dir.join("t.jsonl"), dir.join("ck"));
    for problem in [["logreg", "breast_cancer"], ["hyperclean", "digits"]] {
        let out = run(
            &[
                "--problem",
                problem[0],
                "--train",
                problem[1],
                "--method",
                "nhgd",
                "--inner-lr",
                "1e10",
                "--outer-steps",
                "3",
            ],
            &trace,
            &ck,
        );
        assert_one_line_error(&out, "outer step 0: the inner iterate is not finite (w[");
        assert!(error_line(&out).contains("lower --inner-lr"));
        let last = assert_stopped_at(&out, &trace, 0);
        assert!(last["outer_loss"].is_null() && last["test_loss"].is_null());
        assert!(!ck.exists(), "no step finished: no checkpoint");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_broken_down_inner_solve_after_the_first_step_names_the_outer_step() {
    let dir = temp_dir("quadratic");
    let (trace, ck) = (dir.join("t.jsonl"), dir.join("ck"));
    let out = run(
        &[
            "--problem",
            "quadratic",
            "--train",
            "synthetic:quadratic:m=100,nx=5,nw=5,seed=1",
            "--outer-opt",
            "sgd",
            "--outer-lr",
            "1e300",
            "--outer-steps",
            "5",
        ],
        &trace,
        &ck,
    );
    assert_one_line_error(&out, "outer step 1: ");
    assert!(error_line(&out).contains("lower --outer-lr (it is 1e300)"));
    assert_stopped_at(&out, &trace, 1);
    assert_checkpoint_at(&ck, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn saturated_weights_are_reported_without_stopping_the_run() {
    let dir = temp_dir("saturation");
    let (trace, ck) = (dir.join("t.jsonl"), dir.join("ck"));
    let args = [
        "--problem",
        "hyperclean",
        "--train",
        "digits",
        "--outer-lr",
        "1e30",
        "--outer-steps",
        "3",
        "--json",
    ];
    let out = run(&args, &trace, &ck);
    let json = json_of(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].starts_with("warning: step 1: 100.00% of the weights σ(θ) are within 1e-6")
            && warnings[0].ends_with("lower --outer-lr"),
        "{stderr}"
    );
    let warning = json["saturation_warning"]
        .as_str()
        .expect("the JSON says so");
    assert!(warnings[0].ends_with(warning));
    let records = trace_of(&trace);
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["saturated_fraction"], 0.0);
    for r in &records[1..] {
        assert!(r["saturated_fraction"].as_f64().unwrap() > 0.99, "{r}");
        assert!(r["stopped"].is_null());
    }
    assert_eq!(
        json["final"]["hypergradient_norm"], 0.0,
        "the vanished hypergradient"
    );

    // The table says it in a line of its own.
    std::fs::remove_file(&ck).unwrap();
    let out = run(&args[..args.len() - 1], &trace, &ck);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("saturation") && l.ends_with(warning)),
        "{table}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn label_cleaning_and_other_problems_report_no_saturation() {
    let dir = temp_dir("clean");
    let (trace, ck) = (dir.join("t.jsonl"), dir.join("ck"));
    let out = run(
        &[
            "--problem",
            "hyperclean",
            "--train",
            "digits",
            "--standardize",
            "--corrupt",
            "0.5",
            "--outer-steps",
            "5",
            "--json",
        ],
        &trace,
        &ck,
    );
    let json = json_of(&out);
    assert!(json["saturation_warning"].is_null());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
    for r in trace_of(&trace) {
        assert!(r["saturated_fraction"].as_f64().unwrap() < 0.99, "{r}");
    }
    std::fs::remove_file(&ck).unwrap();
    let out = run(
        &[
            "--problem",
            "ridge",
            "--train",
            "diabetes",
            "--outer-steps",
            "2",
            "--json",
        ],
        &trace,
        &ck,
    );
    let json = json_of(&out);
    assert!(json["saturation_warning"].is_null());
    for r in trace_of(&trace) {
        assert!(
            r["saturated_fraction"].is_null() && r["stopped"].is_null(),
            "{r}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
