//! `--model`, `--activation` and `--hyper per-layer` on the command line and in the API's
//! `Settings::set`: the JSON a network run prints, its agreement with the library, and one
//! test per kind of bad input (one line on stderr naming the option, non-zero exit, no panic).

use std::process::Output;

mod cli_common;
use cli_common::hypergrad;

use hypergrad::api::{self, DataSource, ModelSpec, OptionValue, Request, Settings};

/// Asserts the run failed with exactly one line on stderr containing every `needle`.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
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

/// Whether this machine has no usable CUDA device (then `--device cuda` must fail cleanly).
fn no_gpu() -> bool {
    hypergrad::backend::cuda::probe().devices.is_empty()
}

const DATA: &str = "synthetic:softmax:n=200,d=5,c=3,seed=4";

fn grad_json(extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["grad", "--problem", "softmax", "--train", DATA, "--json"];
    args.extend_from_slice(extra);
    let out = hypergrad(&args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn vector(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

#[test]
fn grad_with_a_network_reports_the_model_and_agrees_across_methods() {
    let common = [
        "--model",
        "mlp:4,3",
        "--hyper",
        "per-layer",
        "--theta",
        "-3",
    ];
    let exact = grad_json(&[&common[..], &["--method", "exact"]].concat());
    let cg = grad_json(&[&common[..], &["--method", "cg"]].concat());
    assert_eq!(exact["model"], "mlp:4,3");
    assert_eq!(exact["activation"], "tanh");
    // P = 4·(5+1) + 3·(4+1) + 3·(3+1) = 51, p = 3 weight matrices.
    assert_eq!(exact["parameters"], 51);
    assert_eq!(exact["p"], 3);
    assert!(exact["error_bound"].is_null());
    assert_eq!(exact["device"], "cpu-f64");
    let (he, hc) = (
        vector(&exact["hypergradient"]),
        vector(&cg["hypergradient"]),
    );
    assert_eq!(he.len(), 3);
    let diff: f64 = he
        .iter()
        .zip(&hc)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = he.iter().map(|a| a * a).sum::<f64>().sqrt();
    assert!(
        norm > 0.0 && diff <= 1e-8 * norm,
        "exact {he:?} vs cg {hc:?}"
    );
    // The linear model says so too.
    let linear = grad_json(&["--method", "cg"]);
    assert_eq!(linear["model"], "linear");
    assert!(linear["activation"].is_null());
}

#[test]
fn the_cli_computes_what_the_library_computes() {
    // NHGD (seeded, so deterministic): a relu network's inner problem seldom has the smooth
    // strict minimum the implicit methods need.
    let json = grad_json(&[
        "--model",
        "mlp:6",
        "--activation",
        "relu",
        "--method",
        "nhgd",
        "--theta",
        "-2",
        "--seed",
        "3",
    ]);
    let mut settings = Settings::default();
    for (name, value) in [
        ("model", OptionValue::Str("mlp:6".into())),
        ("activation", OptionValue::Str("relu".into())),
        ("method", OptionValue::Str("nhgd".into())),
        ("theta", OptionValue::Float(-2.0)),
        ("seed", OptionValue::Int(3)),
    ] {
        settings.set(name, &value).unwrap();
    }
    assert_eq!(settings.model, ModelSpec::Mlp { hidden: vec![6] });
    let request = Request::new("softmax", settings).unwrap();
    let source = DataSource {
        train: DATA.into(),
        ..Default::default()
    };
    let report = api::grad(&request, &source.into()).unwrap().to_json();
    assert_eq!(report["activation"], "relu");
    assert_eq!(
        vector(&report["hypergradient"]),
        vector(&json["hypergradient"])
    );
}

#[test]
fn nhgd_runs_on_a_network_with_each_curvature() {
    for curvature in ["kfac", "dense", "lowrank"] {
        let json = grad_json(&[
            "--model",
            "mlp:4",
            "--method",
            "nhgd",
            "--curvature",
            curvature,
            "--inner-steps",
            "30",
            "--batch-size",
            "16",
            "--theta",
            "-3",
        ]);
        assert_eq!(json["method"], "nhgd");
        let h = vector(&json["hypergradient"]);
        assert!(h.len() == 1 && h[0].is_finite(), "{curvature}: {h:?}");
    }
}

#[test]
fn bad_model_values_are_one_line_errors() {
    for value in ["mlp:", "mlp:0", "mlp:4,x", "mlp:-3", "cnn:5", "MLP:4"] {
        let out = hypergrad(&[
            "grad",
            "--problem",
            "softmax",
            "--train",
            DATA,
            "--model",
            value,
        ]);
        assert_one_line_error(&out, &["--model"]);
    }
    let out = hypergrad(&[
        "grad",
        "--problem",
        "softmax",
        "--train",
        DATA,
        "--model",
        "mlp:4",
        "--activation",
        "sigmoid",
    ]);
    assert_one_line_error(&out, &["--activation", "sigmoid"]);
}

#[test]
fn combinations_a_network_does_not_have_are_one_line_errors() {
    let run = |extra: &[&str]| {
        let mut args = vec!["grad", "--train", DATA];
        args.extend_from_slice(extra);
        hypergrad(&args)
    };
    // Networks are for softmax and hyperclean.
    let out = run(&["--problem", "ridge", "--model", "mlp:4"]);
    assert_one_line_error(&out, &["--model", "ridge"]);
    let out = run(&["--problem", "lasso", "--model", "mlp:4"]);
    assert_one_line_error(&out, &["--model"]);
    // per-layer needs layers; per-class is the linear model's.
    let out = run(&["--problem", "softmax", "--hyper", "per-layer"]);
    assert_one_line_error(&out, &["--hyper", "per-layer"]);
    let out = run(&[
        "--problem",
        "softmax",
        "--model",
        "mlp:4",
        "--hyper",
        "per-class",
    ]);
    assert_one_line_error(&out, &["--hyper", "per-class"]);
    // No global curvature bound: the trajectory methods need a step.
    let out = run(&[
        "--problem",
        "softmax",
        "--model",
        "mlp:4",
        "--method",
        "unroll",
    ]);
    assert_one_line_error(&out, &["--step"]);
    // Networks run on CUDA too: without a usable GPU `--device cuda` is the one-line error
    // every problem gives (tests/mlp_cuda_parity.rs runs them where there is one).
    if no_gpu() {
        let out = run(&[
            "--problem",
            "softmax",
            "--model",
            "mlp:4",
            "--device",
            "cuda",
        ]);
        assert_one_line_error(&out, &["--device cuda"]);
    }
    // θ of the wrong length for the layout.
    let out = run(&[
        "--problem",
        "softmax",
        "--model",
        "mlp:4",
        "--hyper",
        "per-layer",
        "--theta-file",
        "/nonexistent/theta.txt",
    ]);
    assert_one_line_error(&out, &["theta.txt"]);
}

#[test]
fn settings_set_knows_the_new_names() {
    let mut s = Settings::default();
    assert_eq!(s.model, ModelSpec::Linear);
    s.set("model", &OptionValue::Str("mlp:300".into())).unwrap();
    assert_eq!(s.model, ModelSpec::Mlp { hidden: vec![300] });
    assert_eq!(s.model.name(), "mlp:300");
    s.set("hyper", &OptionValue::Str("per-layer".into()))
        .unwrap();
    let err = s
        .set("model", &OptionValue::Str("mlp:0".into()))
        .unwrap_err();
    assert!(err.to_string().contains("--model"), "{err}");
    let err = s
        .set("activation", &OptionValue::Str("gelu".into()))
        .unwrap_err();
    assert!(err.to_string().contains("--activation"), "{err}");
    let err = s.set("model", &OptionValue::Int(3)).unwrap_err();
    assert!(err.to_string().contains("--model"), "{err}");
    for name in ["model", "activation"] {
        assert!(api::OPTION_NAMES.iter().any(|(n, _)| *n == name), "{name}");
    }
}

fn run_json(extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "run",
        "--problem",
        "hyperclean",
        "--train",
        DATA,
        "--model",
        "mlp:4",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = hypergrad(&args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn run_trains_a_network_and_resumes_from_a_checkpoint() {
    let nhgd = [
        "--method",
        "nhgd",
        "--inner-steps",
        "20",
        "--batch-size",
        "8",
        "--seed",
        "5",
    ];
    let straight = run_json(&[&nhgd[..], &["--outer-steps", "6"]].concat());
    assert_eq!(straight["model"], "mlp:4");
    assert_eq!(straight["final"]["step"], 6);
    assert!(straight["final"]["error_bound"].is_null());
    let dir = std::env::temp_dir().join(format!("hg-mlp-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ckpt = dir.join("run.ckpt");
    let ckpt = ckpt.to_str().unwrap();
    let half = run_json(&[&nhgd[..], &["--outer-steps", "3", "--checkpoint", ckpt]].concat());
    assert_ne!(vector(&half["theta"]), vector(&straight["theta"]));
    let resumed = run_json(&[&nhgd[..], &["--outer-steps", "6", "--checkpoint", ckpt]].concat());
    assert_eq!(resumed["resumed_from"], 2);
    // The carried inner iterate w comes back from the checkpoint: the resumed run ends where
    // the uninterrupted one does.
    let (a, b) = (vector(&resumed["theta"]), vector(&straight["theta"]));
    let diff: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(diff <= 1e-12, "resumed θ is {diff:e} away");
    std::fs::remove_dir_all(&dir).unwrap();
    // A deterministic method with a test split reports test accuracy.
    let cg = run_json(&["--method", "cg", "--outer-steps", "1", "--test", DATA]);
    assert!(cg["final"]["test_accuracy"].as_f64().is_some());
}

#[test]
fn maid_is_refused_for_networks() {
    let out = hypergrad(&[
        "run",
        "--problem",
        "softmax",
        "--train",
        DATA,
        "--model",
        "mlp:4",
        "--outer-opt",
        "maid",
    ]);
    assert_one_line_error(&out, &["--outer-opt", "maid"]);
}

fn run_ok(args: &[&str]) -> serde_json::Value {
    let out = hypergrad(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn number(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing: {v}"))
}

/// Label cleaning with a network: half the digits labels corrupted, NHGD learns the row
/// weights, and the report's three models are the same network trained from the same w₀.
#[test]
fn the_cleaning_report_trains_the_same_network_three_ways() {
    let common = [
        "--train",
        "digits",
        "--standardize",
        "--corrupt",
        "0.5",
        "--model",
        "mlp:16",
        "--device",
        "cpu",
        "--json",
    ];
    let mut args = vec!["run", "--problem", "hyperclean", "--method", "nhgd"];
    args.extend_from_slice(&["--outer-steps", "8"]);
    args.extend_from_slice(&common);
    let run = run_ok(&args);
    assert_eq!(run["model"], "mlp:16");
    assert_eq!(run["layer_sizes"], serde_json::json!([64, 16, 10]));
    let c = &run["cleaning"];
    assert!(c.is_object(), "no cleaning report: {run}");
    let (without, with, clean) = (
        number(c, "without_cleaning"),
        number(c, "with_cleaning"),
        number(c, "clean_rows_only"),
    );
    assert_eq!(c["n_train"], 1078);
    assert_eq!(c["corrupted"], 539);
    // Cleaning helps, and training on the clean rows alone is the ceiling it approaches.
    assert!(with > without + 0.05, "with {with} vs without {without}");
    assert!(
        clean > without + 0.05,
        "clean rows {clean} vs without {without}"
    );
    assert!(
        number(c, "mean_weight_clean") > number(c, "mean_weight_corrupted") + 0.1,
        "weights do not separate the rows: {c}"
    );
    // How each model's solve stopped, in the report's order, converged to the default tolerance.
    let solves = c["solves"].as_array().expect("solves");
    let models: Vec<&str> = solves
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(
        models,
        ["without cleaning", "with cleaning", "clean rows only"]
    );
    for m in solves {
        assert_eq!(m["converged"], true, "{m}");
        assert!(m["iters"].as_u64().unwrap() > 0 && number(m, "grad_norm") >= 0.0);
    }

    // "Without cleaning" is softmax on the corrupted rows with λ = C = 0.01, the same network
    // from the same w₀: a separate softmax run at θ = ln C reports the same test accuracy.
    let theta = format!("--theta={}", 0.01f64.ln());
    let mut args = vec!["run", "--problem", "softmax", "--method", "cg", &theta];
    args.extend_from_slice(&["--outer-steps", "0"]);
    args.extend_from_slice(&common);
    let softmax = run_ok(&args);
    let plain = number(&softmax["final"], "test_accuracy");
    assert!(
        (plain - without).abs() < 1e-12,
        "softmax run {plain} vs report {without}"
    );

    // The learnt-weights model is what the outcome's coef holds (the network's P parameters),
    // and a different seed draws another w₀ and other corrupted rows: another report.
    let mut args = vec!["run", "--problem", "hyperclean", "--method", "nhgd"];
    args.extend_from_slice(&["--outer-steps", "2", "--seed", "3"]);
    args.extend_from_slice(&common);
    let other = run_ok(&args);
    assert_ne!(
        number(&other["cleaning"], "without_cleaning"),
        without,
        "the seed did not change the report"
    );
}

#[test]
fn the_cleaning_report_needs_test_rows_with_a_network() {
    let out = hypergrad(&[
        "run",
        "--problem",
        "hyperclean",
        "--train",
        DATA,
        "--val",
        "synthetic:softmax:n=100,d=5,c=3,seed=5",
        "--corrupt",
        "0.3",
        "--model",
        "mlp:4",
        "--method",
        "nhgd",
        "--outer-steps",
        "1",
        "--device",
        "cpu",
    ]);
    assert_one_line_error(&out, &["--test"]);
}

#[test]
fn bench_nhgd_times_a_network_against_the_plain_loop() {
    let out = hypergrad(&[
        "bench",
        "nhgd",
        "--model",
        "mlp:8",
        "--device",
        "cpu",
        "--n",
        "300",
        "--m",
        "100",
        "--d",
        "12",
        "--classes",
        "3",
        "--inner-steps",
        "5",
        "--batch-size",
        "16",
        "--rank",
        "4",
        "--reps",
        "2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["model"], "mlp:8");
    // P = (12 + 1)·8 + (8 + 1)·3
    assert_eq!(v["P"], 131);
    let cases: Vec<&str> = v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| c["case"].as_str().expect("a name"))
        .collect();
    assert_eq!(
        cases,
        [
            "sgd loop only",
            "nhgd kfac",
            "nhgd kfac, one queue",
            "nhgd lowrank"
        ]
    );
    for c in v["cases"].as_array().expect("cases") {
        let t = c["outer_step_seconds"].as_f64().expect("a time");
        assert!(t > 0.0 && t.is_finite(), "{c}");
        assert_eq!(
            c["outer_step_seconds_all"].as_array().map(Vec::len),
            Some(2)
        );
        // The CPU has no host-device traffic to count.
        assert_eq!(c["inner_host_syncs_and_copies"], 0, "{c}");
    }
    assert_eq!(v["cases"][0]["ratio_to_plain_outer_step"], 1.0);

    // --plot draws the same cases (it was once ignored for networks).
    let dir = std::env::temp_dir().join(format!("hypergrad-mlp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let fig = dir.join("nhgd_mlp.svg");
    let out = hypergrad(&[
        "bench",
        "nhgd",
        "--model",
        "mlp:4",
        "--device",
        "cpu",
        "--n",
        "100",
        "--m",
        "50",
        "--d",
        "6",
        "--classes",
        "3",
        "--inner-steps",
        "2",
        "--batch-size",
        "8",
        "--rank",
        "2",
        "--reps",
        "1",
        "--plot",
        fig.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&fig).expect("the plot was written");
    assert!(
        svg.contains("nhgd kfac, one queue"),
        "the plot names every case"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("syncs"), "{table}");
    let _ = std::fs::remove_dir_all(&dir);

    // On CUDA as the linear model is; without a usable GPU, the one-line error `run` gives.
    if no_gpu() {
        let out = hypergrad(&["bench", "nhgd", "--model", "mlp:8", "--device", "cuda"]);
        assert_one_line_error(&out, &["--device cuda"]);
    }
    let out = hypergrad(&["bench", "nhgd", "--model", "mlp:x"]);
    assert_one_line_error(&out, &["--model", "'x'"]);
}

/// `--inner-solver sgd` trains the network by mini-batches (`--batch-size`, `--inner-lr`,
/// `--seed`) and reports how it stopped, converged or capped (its accuracy against Newton-CG is
/// tests/inner_solvers.rs's); a problem that is not made of rows refuses it in one line.
/// (At 1e-2, ŵ sits where H is still indefinite, which CG reports as an error, by design.)
#[test]
fn grad_with_an_sgd_trained_network_reports_how_sgd_stopped() {
    let common = [
        "--model",
        "mlp:4",
        "--hyper",
        "per-layer",
        "--theta",
        "-3",
        "--inner-solver",
        "sgd",
        "--batch-size",
        "32",
    ];
    let sgd = grad_json(
        &[
            &common[..],
            &[
                "--method",
                "cg",
                "--inner-tol",
                "1e-3",
                "--inner-iters",
                "20000",
            ],
        ]
        .concat(),
    );
    assert_eq!(sgd["inner_solver"], "sgd");
    assert_eq!(sgd["inner_converged"], true, "{sgd}");
    assert!(sgd["inner_iters"].as_u64().expect("epochs") >= 1, "{sgd}");
    assert!(vector(&sgd["hypergradient"]).iter().all(|v| v.is_finite()));
    // Capped: converged false, the epochs and the gradient norm it stopped at (neumann: CG
    // would refuse the indefinite H at so early a point).
    let capped = grad_json(
        &[
            &common[..],
            &[
                "--method",
                "neumann",
                "--inner-tol",
                "1e-8",
                "--inner-iters",
                "2",
            ],
        ]
        .concat(),
    );
    assert_eq!(capped["inner_converged"], false);
    assert_eq!(capped["inner_iters"], 2);
    assert!(capped["inner_grad_norm"].as_f64().expect("a norm") > 0.0);
    let out = hypergrad(&[
        "grad",
        "--problem",
        "quadratic",
        "--train",
        "synthetic:quadratic:m=40,nx=4,nw=4,seed=1",
        "--inner-solver",
        "sgd",
    ]);
    assert_one_line_error(&out, &["--inner-solver"]);
}

/// `--inner-solver adam` (src/solver/minibatch.rs) trains the network by mini-batches, says so
/// in the report with its epochs, and its ŵ at 1e-5 gives the hypergradient Newton-CG's ŵ
/// gives (to 1e-3 relative: the inner error 1e-5 times the conditioning); a problem that is
/// not made of rows refuses it in one line.
#[test]
fn grad_with_an_adam_trained_network_matches_newtons() {
    let common = [
        "--model",
        "mlp:4",
        "--hyper",
        "per-layer",
        "--theta",
        "-3",
        "--method",
        "cg",
        "--inner-iters",
        "20000",
    ];
    let adam_flags = [
        "--inner-solver",
        "adam",
        "--inner-lr",
        "0.03",
        "--batch-size",
        "32",
        "--inner-tol",
        "1e-5",
    ];
    let adam = grad_json(&[&common[..], &adam_flags[..]].concat());
    assert_eq!(adam["inner_solver"], "adam");
    assert_eq!(adam["inner_converged"], true, "{adam}");
    let newton = grad_json(&[&common[..], &["--inner-tol", "1e-10"]].concat());
    assert_eq!(newton["inner_solver"], "newton");
    let (ha, hn) = (
        vector(&adam["hypergradient"]),
        vector(&newton["hypergradient"]),
    );
    let diff = ha
        .iter()
        .zip(&hn)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm = hn.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(diff <= 1e-3 * norm, "adam {ha:?} vs newton {hn:?}");
    // The human report names the solver and counts epochs.
    let mut args = vec!["grad", "--problem", "softmax", "--train", DATA];
    args.extend_from_slice(&common);
    args.extend_from_slice(&adam_flags);
    let out = hypergrad(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table
        .lines()
        .find(|l| l.starts_with("‖∇g(ŵ)‖"))
        .expect("the inner line");
    assert!(
        line.contains("(adam inner solver, ") && line.contains(" epochs, converged)"),
        "{line}"
    );
    let out = hypergrad(&[
        "grad",
        "--problem",
        "quadratic",
        "--train",
        "synthetic:quadratic:m=40,nx=4,nw=4,seed=1",
        "--inner-solver",
        "adam",
    ]);
    assert_one_line_error(&out, &["--inner-solver"]);
}
