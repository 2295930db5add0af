//! The command line: its JSON contract (SPEC §6) and one test per kind of bad input, each
//! asserting a one-line error that names the file and line or the option, a non-zero exit
//! code, and no panic.

use std::path::PathBuf;
use std::process::Output;

mod cli_common;
use cli_common::hypergrad;

/// A fresh file under the system's temp directory with the given contents.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hypergrad-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

/// Asserts the run failed with exactly one line on stderr containing every `needle`.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got: {stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "'{needle}' missing from: {}",
            lines[0]
        );
    }
}

const GOOD_CSV: &str = "1,0.5,1.0\n-1,1.5,-0.25\n1,-0.5,2.0\n-1,0.25,0.75\n1,1.0,1.0\n";

fn grad_args<'a>(train: &'a str, val: &'a str) -> Vec<&'a str> {
    vec![
        "grad",
        "--problem",
        "logreg",
        "--train",
        train,
        "--val",
        val,
    ]
}

#[test]
fn json_output_has_the_contract_fields() {
    let out = hypergrad(&[
        "grad",
        "--problem",
        "logreg",
        "--train",
        "breast_cancer",
        "--standardize",
        "--theta",
        "-2",
        "--method",
        "cg",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    for key in [
        "problem",
        "method",
        "device",
        "theta",
        "outer_loss",
        "hypergradient",
        "inner_grad_norm",
        "residual_norm",
        "error_bound",
        "inner_iters",
        "linear_iters",
        "seconds",
    ] {
        assert!(value.get(key).is_some(), "missing key {key} in {value}");
    }
    assert_eq!(value["problem"], "logreg");
    assert_eq!(value["method"], "cg");
    assert_eq!(value["hypergradient"].as_array().map(Vec::len), Some(1));
    assert_eq!(value["theta"][0].as_f64(), Some(-2.0));
    let bound = value["error_bound"]
        .as_f64()
        .expect("cg on logreg has a bound");
    assert!(bound > 0.0 && bound < 1e-6, "bound {bound}");
}

#[test]
fn cli_hypergradient_matches_finite_differences_of_the_cli_loss() {
    // The end-to-end check of the number a user sees: the CLI's ∂F/∂θ against central
    // differences of the CLI's own F(θ) (step 1e-4: truncation error ~1e-8·F''', the inner
    // solve to 1e-12 contributes ~1e-12/1e-4 relative).
    let run = |theta: f64| -> serde_json::Value {
        let t = theta.to_string();
        let out = hypergrad(&[
            "grad",
            "--problem",
            "softmax",
            "--train",
            "digits",
            "--standardize",
            "--theta",
            &t,
            "--method",
            "exact",
            "--inner-tol",
            "1e-13",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    };
    let theta = -1.5;
    let step = 1e-4;
    let h = run(theta)["hypergradient"][0].as_f64().expect("h");
    let f_plus = run(theta + step)["outer_loss"].as_f64().expect("F");
    let f_minus = run(theta - step)["outer_loss"].as_f64().expect("F");
    let fd = (f_plus - f_minus) / (2.0 * step);
    assert!(
        (h - fd).abs() <= 1e-5 * fd.abs(),
        "h = {h}, finite difference {fd}"
    );
}

#[test]
fn info_reports_backends() {
    let out = hypergrad(&["info", "--json"]);
    assert!(out.status.success());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(value["backends"]["cpu"]["available"], true);
    assert!(value["version"].is_string());
}

#[test]
fn missing_file_is_named() {
    let out = hypergrad(&grad_args("/nonexistent/train.csv", "/nonexistent/val.csv"));
    assert_one_line_error(&out, &["/nonexistent/train.csv"]);
}

#[test]
fn malformed_line_is_named_with_file_and_line() {
    let train = temp_file("good_a.csv", GOOD_CSV);
    let val = temp_file("malformed.csv", "1,0.5,1.0\n-1,abc,2\n");
    let out = hypergrad(&grad_args(train.to_str().unwrap(), val.to_str().unwrap()));
    assert_one_line_error(&out, &["malformed.csv:2"]);
}

#[test]
fn ragged_csv_row_is_named() {
    let train = temp_file("ragged.csv", "1,0.5,1.0\n-1,0.5\n");
    let val = temp_file("good_b.csv", GOOD_CSV);
    let out = hypergrad(&grad_args(train.to_str().unwrap(), val.to_str().unwrap()));
    assert_one_line_error(&out, &["ragged.csv:2"]);
}

#[test]
fn dimension_mismatch_between_train_and_val() {
    let train = temp_file("three_cols.csv", GOOD_CSV);
    let val = temp_file("four_cols.csv", "1,0.5,1.0,3\n-1,1,1,1\n");
    let out = hypergrad(&grad_args(train.to_str().unwrap(), val.to_str().unwrap()));
    assert_one_line_error(&out, &["dimension mismatch", "2 features", "3"]);
}

#[test]
fn labels_that_do_not_fit_the_problem() {
    // digits has labels 0..9: not ±1.
    let out = hypergrad(&["grad", "--problem", "logreg", "--train", "digits"]);
    assert_one_line_error(&out, &["digits"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(stderr.contains("label"), "{stderr}");
}

#[test]
fn fractional_class_labels_are_rejected() {
    let train = temp_file("frac_labels.csv", "0,1,2\n1.5,1,1\n2,0,1\n");
    let out = hypergrad(&[
        "grad",
        "--problem",
        "softmax",
        "--train",
        train.to_str().unwrap(),
        "--val",
        train.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["label"]);
}

#[test]
fn non_finite_value_is_named_with_file_and_line() {
    let train = temp_file("good_c.csv", GOOD_CSV);
    let val = temp_file("nan.csv", "1,0.5,1.0\n-1,0.5,1.0\n1,nan,1.0\n");
    let out = hypergrad(&grad_args(train.to_str().unwrap(), val.to_str().unwrap()));
    assert_one_line_error(&out, &["nan.csv:3"]);
    let inf = temp_file("inf.svm", "1 1:0.5 2:inf\n");
    let out = hypergrad(&grad_args(inf.to_str().unwrap(), val.to_str().unwrap()));
    assert_one_line_error(&out, &["inf.svm:1"]);
}

#[test]
fn malformed_libsvm_index_is_named() {
    let train = temp_file("bad_index.svm", "1 1:0.5 2:1\n-1 2:0.5 1:1\n");
    let out = hypergrad(&grad_args(train.to_str().unwrap(), train.to_str().unwrap()));
    assert_one_line_error(&out, &["bad_index.svm:2"]);
}

#[test]
fn unknown_option_is_named() {
    let out = hypergrad(&[
        "grad",
        "--problem",
        "ridge",
        "--train",
        "diabetes",
        "--frobnicate",
    ]);
    assert_one_line_error(&out, &["--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn unknown_method_value_is_named() {
    let out = hypergrad(&[
        "grad",
        "--problem",
        "ridge",
        "--train",
        "diabetes",
        "--method",
        "magic",
    ]);
    assert_one_line_error(&out, &["magic", "--method"]);
}

#[test]
fn out_of_range_option_values_are_named() {
    for (option, value) in [
        ("--inner-tol", "-1"),
        ("--linear-tol", "nan"),
        ("--step", "0"),
        ("--split", "0.9,0.9"),
        ("--theta", "inf"),
        ("--threads", "0"),
    ] {
        let out = hypergrad(&[
            "grad",
            "--problem",
            "ridge",
            "--train",
            "diabetes",
            "--method",
            "neumann",
            option,
            value,
        ]);
        assert_one_line_error(&out, &[option]);
    }
    let out = hypergrad(&[
        "grad",
        "--problem",
        "hyperclean",
        "--train",
        "digits",
        "--l2",
        "0",
    ]);
    assert_one_line_error(&out, &["--l2"]);
    let out = hypergrad(&[
        "grad",
        "--problem",
        "ridge",
        "--train",
        "diabetes",
        "--hyper",
        "per-class",
    ]);
    assert_one_line_error(&out, &["--hyper", "per-class"]);
}

#[test]
fn theta_file_of_the_wrong_length_or_content() {
    let short = temp_file("theta_short.txt", "0.1, 0.2\n");
    let out = hypergrad(&[
        "grad",
        "--problem",
        "ridge",
        "--train",
        "diabetes",
        "--hyper",
        "per-feature",
        "--theta-file",
        short.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["theta_short.txt", "2 numbers", "p = 10"]);
    let bad = temp_file("theta_bad.txt", "0.1\n0.2 zero\n");
    let out = hypergrad(&[
        "grad",
        "--problem",
        "ridge",
        "--train",
        "diabetes",
        "--theta-file",
        bad.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, &["theta_bad.txt:2", "zero"]);
}

/// `distill` (SPEC §9): `grad --json` has the contract fields with p = K·c·d, and its bad
/// input (K = 0, θ of the wrong length, a refused method) is a one-line error.
#[test]
fn distill_json_contract_and_bad_input() {
    let out = hypergrad(&[
        "grad",
        "--problem",
        "distill",
        "--train",
        "digits",
        "--images-per-class",
        "2",
        "--device",
        "cpu",
        "--json",
    ]);
    let v = stdout_json(&out);
    for key in [
        "problem",
        "method",
        "theta",
        "outer_loss",
        "hypergradient",
        "seconds",
    ] {
        assert!(v.get(key).is_some(), "{key} missing");
    }
    assert_eq!(v["problem"], "distill");
    assert_eq!(v["theta"].as_array().unwrap().len(), 2 * 10 * 64);
    let short = temp_file("distill_theta.txt", "0.5 0.5\n");
    let base = [
        "grad",
        "--problem",
        "distill",
        "--train",
        "digits",
        "--device",
        "cpu",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        hypergrad(&args)
    };
    assert_one_line_error(&with(&["--images-per-class", "0"]), &["--images-per-class"]);
    assert_one_line_error(
        &with(&["--theta-file", short.to_str().unwrap()]),
        &["distill_theta.txt", "2 numbers", "p = 640"],
    );
    assert_one_line_error(&with(&["--method", "amigo"]), &["--method", "amigo"]);
}

#[test]
fn exact_refuses_a_hessian_too_large_to_assemble() {
    let out = hypergrad(&[
        "grad",
        "--problem",
        "softmax",
        "--train",
        "mnist_5k",
        "--method",
        "exact",
    ]);
    assert_one_line_error(&out, &["--method", "cg"]);
}

#[test]
fn cuda_without_a_cuda_backend_is_a_clear_error() {
    let out = hypergrad(&[
        "grad",
        "--problem",
        "ridge",
        "--train",
        "diabetes",
        "--device",
        "cuda",
    ]);
    assert_one_line_error(&out, &["--device cuda"]);
}

#[test]
fn bench_kernels_reports_every_kernel_against_a_measured_ceiling() {
    let out = hypergrad(&[
        "bench",
        "kernels",
        "--device",
        "cpu",
        "--n",
        "2048",
        "--d",
        "64",
        "--batch",
        "64",
        "--woodbury-dim",
        "128",
        "--woodbury-rank",
        "8",
        "--gemm-side",
        "128",
        "--mlp-hidden",
        "32",
        "--reps",
        "2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = value["kernels"].as_array().expect("kernel rows");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["kernel"].as_str()).collect();
    for kernel in [
        "ceiling: device copy (read + write)",
        "ceiling: GEMM (f32)",
        "batched HVP k=1",
        "batched HVP k=8",
        "fused SGD step (softmax)",
        "Woodbury update (dense inverse)",
        "network forward (tanh)",
        "network backward + gradient",
        "network per-sample gradients (written)",
        "network HVP by R-op k=1",
        "network HVP by R-op k=8",
        "prox step (soft-threshold)",
        "prox Jacobian m=8",
    ] {
        assert!(names.contains(&kernel), "{kernel} missing from {names:?}");
    }
    // Every op family of src/backend/ has rows, each measured against a ceiling of the run.
    let families: Vec<&str> = rows.iter().filter_map(|r| r["family"].as_str()).collect();
    assert_eq!(
        families.len(),
        rows.len(),
        "a row without its family: {rows:?}"
    );
    for family in ["ceiling", "core", "glm", "fisher", "network", "prox"] {
        assert!(
            families.contains(&family),
            "no {family} row in {families:?}"
        );
    }
    for row in rows
        .iter()
        .filter(|r| !r["kernel"].as_str().unwrap_or("").starts_with("ceiling"))
    {
        let fraction = row["fraction_of_ceiling"].as_f64().expect("fraction");
        assert!(fraction > 0.0 && fraction.is_finite(), "{row}");
    }
    let out = hypergrad(&["bench", "kernels", "--device", "cpu", "--reps", "0"]);
    assert_one_line_error(&out, &["--reps"]);
}

#[test]
fn info_reports_how_the_kernels_were_built() {
    let out = hypergrad(&["info", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let compiler = value["kernels"]["compiler"].as_str().expect("compiler");
    assert!(compiler == "nvcc" || compiler == "nvrtc", "{compiler}");
    assert!(value["backends"]["cuda"]["status"].is_string());
}

// ---- `run` ------------------------------------------------------------------------------

fn stdout_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn the_main_job_cleans_half_corrupted_labels_by_at_least_ten_points() {
    let trace = temp_file("main_job_trace.jsonl", "");
    let out = hypergrad(&[
        "run",
        "--device",
        "cpu",
        "--json",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let v = stdout_json(&out);
    assert_eq!(v["problem"], "hyperclean");
    assert_eq!(v["method"], "nhgd");
    let c = &v["cleaning"];
    let (without, with) = (
        c["without_cleaning"].as_f64().unwrap(),
        c["with_cleaning"].as_f64().unwrap(),
    );
    assert!(
        with >= without + 0.10,
        "cleaning raised test accuracy from {without} to {with} only"
    );
    assert_eq!(c["corrupted"], 1500);
    let solves = c["solves"].as_array().expect("solves");
    assert_eq!(solves.len(), 3);
    assert!(solves.iter().all(|m| m["converged"] == true), "{c}");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 21, "steps 0..=20 in the trace");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["step"], i as u64);
        for field in [
            "seconds",
            "theta_norm",
            "outer_loss",
            "hypergradient_norm",
            "test_loss",
            "test_accuracy",
        ] {
            assert!(line[field].is_number(), "trace line {i} lacks {field}");
        }
        assert_eq!(line["inner_host_syncs"], 0);
    }
}

#[test]
fn run_with_zero_outer_steps_reports_the_initial_model() {
    let out = hypergrad(&[
        "run",
        "--problem",
        "softmax",
        "--train",
        "digits",
        "--standardize",
        "--method",
        "cg",
        "--outer-steps",
        "0",
        "--device",
        "cpu",
        "--json",
    ]);
    let v = stdout_json(&out);
    assert_eq!(v["final"]["step"], 0);
    assert_eq!(v["final"]["theta_norm"], 0.0);
    assert!(v["final"]["test_accuracy"].as_f64().unwrap() > 0.8);
}

#[test]
fn grad_with_a_stochastic_method_has_no_error_bound() {
    let out = hypergrad(&[
        "grad",
        "--problem",
        "logreg",
        "--train",
        "breast_cancer",
        "--standardize",
        "--method",
        "stocbio",
        "--device",
        "cpu",
        "--json",
    ]);
    let v = stdout_json(&out);
    assert_eq!(v["method"], "stocbio");
    assert!(v["error_bound"].is_null());
    assert!(v["hypergradient"][0].is_number());
}

#[test]
fn run_rejects_inconsistent_options_in_one_line() {
    let base = [
        "run",
        "--problem",
        "logreg",
        "--train",
        "breast_cancer",
        "--device",
        "cpu",
    ];
    let cases: [(&[&str], &[&str]); 5] = [
        (
            &["--method", "nhgd", "--outer-opt", "maid"],
            &["--outer-opt", "maid"],
        ),
        (&["--corrupt", "0.5"], &["--corrupt"]),
        (
            &[
                "--method",
                "nhgd",
                "--fisher-update",
                "woodbury",
                "--ema",
                "0.9",
            ],
            &["--fisher-update"],
        ),
        (
            &["--method", "nhgd", "--curvature", "kfac"],
            &["--curvature", "kfac"],
        ),
        (
            &["--method", "amigo", "--batch-size", "0"],
            &["--batch-size"],
        ),
    ];
    for (extra, needles) in cases {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        assert_one_line_error(&hypergrad(&args), needles);
    }
    let ckpt = temp_file("foreign.ckpt", "{\"not\": \"a checkpoint\"}");
    let args: Vec<&str> = base
        .iter()
        .copied()
        .chain(["--checkpoint", ckpt.to_str().unwrap()])
        .collect();
    assert_one_line_error(&hypergrad(&args), &["--checkpoint"]);
}

#[test]
fn nhgd_dense_auto_says_in_the_trace_which_update_ran() {
    let trace = temp_file("auto_update_trace.jsonl", "");
    let out = hypergrad(&[
        "run",
        "--problem",
        "hyperclean",
        "--train",
        "digits",
        "--standardize",
        "--method",
        "nhgd",
        "--curvature",
        "dense",
        "--inner-steps",
        "5",
        "--batch-size",
        "32",
        "--outer-steps",
        "2",
        "--device",
        "cpu",
        "--json",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    stdout_json(&out);
    let text = std::fs::read_to_string(&trace).unwrap();
    let updates: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["fisher_update"].as_str().unwrap_or("missing").to_string())
        .collect();
    assert_eq!(updates.len(), 3, "steps 0..=2");
    assert!(
        updates
            .iter()
            .all(|u| u == &updates[0] && (u == "woodbury" || u == "accumulate")),
        "fisher_update in the trace: {updates:?}"
    );
}

/// `run` says how each step's inner solve ended: the trace records and `final` carry
/// `inner_iters` and `inner_converged` for the methods that solve to a tolerance (null for the
/// stochastic ones), the report names the inner solver, and the table counts the solves that
/// stopped short of `--inner-tol`.
#[test]
fn run_reports_how_the_inner_solves_ended() {
    let trace = std::env::temp_dir().join(format!("hg_inner_trace_{}.jsonl", std::process::id()));
    let trace_arg = trace.to_string_lossy().to_string();
    let base = [
        "run",
        "--problem",
        "softmax",
        "--train",
        "digits",
        "--standardize",
        "--outer-steps",
        "2",
        "--device",
        "cpu",
    ];
    // SGD capped at 2 epochs: no solve reaches 1e-8.
    let capped = [
        "--method",
        "cg",
        "--inner-solver",
        "sgd",
        "--inner-iters",
        "2",
        "--inner-tol",
        "1e-8",
    ];
    let args = [&base[..], &capped[..], &["--json", "--trace", &trace_arg]].concat();
    let v = stdout_json(&hypergrad(&args));
    assert_eq!(v["inner_solver"], "sgd");
    assert_eq!(v["final"]["inner_iters"], 2);
    assert_eq!(v["final"]["inner_converged"], false);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&trace)
        .expect("the trace")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l["inner_converged"] == false && l["inner_iters"] == 2));
    let _ = std::fs::remove_file(&trace);
    let table = hypergrad(&[&base[..], &capped[..]].concat());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("inner solves  sgd inner solver: the last 2 epochs")
            && text.contains("3 of 3 NOT converged to --inner-tol"),
        "{text}"
    );
    // Newton-CG's default solves all converge.
    let v = stdout_json(&hypergrad(
        &[&base[..], &["--method", "cg", "--json"]].concat(),
    ));
    assert_eq!(v["inner_solver"], "newton");
    assert_eq!(v["final"]["inner_converged"], true);
    let text =
        String::from_utf8_lossy(&hypergrad(&[&base[..], &["--method", "cg"]].concat()).stdout)
            .to_string();
    assert!(text.contains("all 3 converged"), "{text}");
    // A stochastic method runs its own inner loop: nothing to report.
    let v = stdout_json(&hypergrad(
        &[&base[..], &["--method", "nhgd", "--json"]].concat(),
    ));
    assert_eq!(v["inner_solver"], serde_json::Value::Null);
    assert_eq!(v["final"]["inner_iters"], serde_json::Value::Null);
    assert_eq!(v["final"]["inner_converged"], serde_json::Value::Null);
}
