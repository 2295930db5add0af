//! `hypergrad grad --problem lasso|enet|wlasso`: the SPEC §6 JSON contract on a sparse
//! LIBSVM file and a dense CSV of the same numbers, method agreement, and bad input.

use std::process::Command;

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hypergrad"))
}

/// A LIBSVM file and a CSV file holding the same 150×40 sparse regression data.
fn write_data(dir: &std::path::Path) -> (String, String) {
    let mut rng = hypergrad::data::rng::Rng::new(5);
    let (mut svm, mut csv) = (String::new(), String::new());
    for _ in 0..150 {
        let mut row = vec![0.0; 40];
        for v in row.iter_mut() {
            if rng.uniform() < 0.3 {
                *v = rng.normal();
            }
        }
        let y: f64 = row[..6].iter().sum::<f64>() + 0.1 * rng.normal();
        svm.push_str(&format!("{y}"));
        csv.push_str(&format!("{y}"));
        for (j, v) in row.iter().enumerate() {
            if *v != 0.0 {
                svm.push_str(&format!(" {}:{v}", j + 1));
            }
            csv.push_str(&format!(",{v}"));
        }
        svm.push('\n');
        csv.push('\n');
    }
    let (a, b) = (dir.join("d.svm"), dir.join("d.csv"));
    std::fs::write(&a, svm).unwrap();
    std::fs::write(&b, csv).unwrap();
    (a.display().to_string(), b.display().to_string())
}

fn grad_json(args: &[&str]) -> Value {
    let out = bin().arg("grad").args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn hg(v: &Value) -> Vec<f64> {
    v["hypergradient"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn grad_json_contract_and_agreement() {
    let dir = std::env::temp_dir().join(format!("hg_l1_cli_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (svm, csv) = write_data(&dir);
    for (problem, p) in [("lasso", 1), ("enet", 2), ("wlasso", 40)] {
        let mut results = Vec::new();
        for method in ["forward", "implicit", "implicit-forward"] {
            for file in [&svm, &csv] {
                let v = grad_json(&[
                    "--problem",
                    problem,
                    "--train",
                    file,
                    "--method",
                    method,
                    "--theta",
                    "-3",
                ]);
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
                    assert!(v.get(key).is_some(), "{key} missing");
                }
                assert_eq!(v["problem"], problem);
                assert_eq!(v["method"], method);
                assert_eq!(v["sparse"], Value::Bool(file == &svm));
                assert!(v["error_bound"].is_null());
                assert_eq!(hg(&v).len(), p);
                assert_eq!(v["theta"].as_array().unwrap().len(), p);
                results.push(hg(&v));
            }
        }
        for r in &results[1..] {
            let e = r
                .iter()
                .zip(&results[0])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                e <= 1e-6 * results[0].iter().fold(1e-3f64, |m, v| m.max(v.abs())),
                "{problem}: {e:e}"
            );
        }
    }
    // Cross-validation criterion.
    let v = grad_json(&[
        "--problem",
        "lasso",
        "--train",
        &svm,
        "--folds",
        "3",
        "--method",
        "implicit-forward",
    ]);
    assert_eq!(v["folds"], 3);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_is_one_line_and_nonzero() {
    let dir = std::env::temp_dir().join(format!("hg_l1_bad_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.svm");
    std::fs::write(&bad, "1 1:2\n2 1:inf\n").unwrap();
    let bad = bad.display().to_string();
    let theta = dir.join("theta.txt");
    std::fs::write(&theta, "1 2\n").unwrap();
    let theta = theta.display().to_string();
    let good = dir.join("good.svm");
    std::fs::write(
        &good,
        "1 1:1 2:1\n2 1:2\n0.5 2:3\n1 1:1\n3 2:2\n2 1:1 2:1\n",
    )
    .unwrap();
    let good = good.display().to_string();
    for (args, needle) in [
        (vec!["--problem", "lasso", "--train", &bad], "bad.svm:2"),
        (
            vec![
                "--problem",
                "lasso",
                "--train",
                &good,
                "--theta-file",
                &theta,
            ],
            "--theta-file",
        ),
        (
            vec![
                "--problem",
                "lasso",
                "--train",
                &good,
                "--method",
                "neumann",
            ],
            "--method",
        ),
        (
            vec!["--problem", "lasso", "--train", &good, "--device", "cuda"],
            "--device",
        ),
        (
            vec!["--problem", "lasso", "--train", &good, "--inner-tol", "-1"],
            "--inner-tol",
        ),
        (
            vec![
                "--problem",
                "ridge",
                "--train",
                "diabetes",
                "--method",
                "implicit",
            ],
            "--method",
        ),
        (
            vec!["--problem", "lasso", "--train", &good, "--standardize"],
            "--standardize",
        ),
    ] {
        let out = bin().arg("grad").args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"));
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_writes_a_trace_and_improves_the_criterion() {
    let dir = std::env::temp_dir().join(format!("hg_l1_run_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (svm, _) = write_data(&dir);
    for (problem, opt, steps) in [
        ("lasso", "hoag", 8),
        ("enet", "adam", 5),
        ("wlasso", "hoag", 4),
        ("lasso", "grid", 9),
        ("lasso", "random", 6),
        ("lasso", "hoag", 0),
    ] {
        let trace = dir.join(format!("{problem}_{opt}_{steps}.jsonl"));
        let out = bin()
            .args([
                "run",
                "--problem",
                problem,
                "--train",
                &svm,
                "--method",
                "implicit-forward",
            ])
            .args([
                "--outer-opt",
                opt,
                "--outer-steps",
                &steps.to_string(),
                "--json",
                "--trace",
            ])
            .arg(&trace)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
        let lines: Vec<Value> = std::fs::read_to_string(&trace)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let searched = lines.iter().filter(|l| l["phase"] == "search").count();
        match opt {
            "grid" | "random" => {
                // One screening line per point, then the re-solves of the winner candidates,
                // the last at --inner-tol (default 1e-12); criterion only, with the real
                // inner epochs.
                assert_eq!(searched, steps.max(1));
                assert_eq!(summary["method"], Value::Null);
                assert_eq!(summary["evaluates"], "criterion only");
                let refined: Vec<&Value> =
                    lines.iter().filter(|l| l["phase"] == "refine").collect();
                assert!(!refined.is_empty());
                for l in &lines {
                    assert_eq!(l["evaluates"], "criterion only", "{l}");
                    assert_eq!(l["hypergradient_norm"], Value::Null);
                    assert!(l["inner_iters"].as_u64().unwrap() > 0, "{l}");
                    let tol = l["inner_tol"].as_f64().unwrap();
                    match l["phase"].as_str().unwrap() {
                        "search" => assert_eq!(tol, 1e-4),
                        "refine" => assert_eq!(tol, 1e-12),
                        _ => assert!(tol < 1e-4 && tol > 1e-12),
                    }
                }
                let best = refined
                    .iter()
                    .map(|l| l["outer_loss"].as_f64().unwrap())
                    .fold(f64::INFINITY, f64::min);
                assert_eq!(summary["best_loss"].as_f64().unwrap(), best);
                let total: u64 = lines
                    .iter()
                    .map(|l| l["inner_iters"].as_u64().unwrap())
                    .sum();
                assert_eq!(summary["inner_iters"], total);
            }
            _ => {
                assert!(!lines.is_empty() && lines.len() <= steps + 1);
                assert_eq!(searched, lines.len());
                for l in &lines {
                    assert_eq!(l["evaluates"], "criterion and hypergradient", "{l}");
                    assert!(l["inner_iters"].as_u64().unwrap() > 0, "{l}");
                }
            }
        }
        assert_eq!(summary["evaluations"], lines.len());
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l["step"], i);
            for key in [
                "seconds",
                "theta_norm",
                "outer_loss",
                "hypergradient_norm",
                "test_loss",
            ] {
                assert!(l.get(key).is_some(), "{key} missing in {l}");
            }
        }
        let first = lines[0]["outer_loss"].as_f64().unwrap();
        let best = summary["best_loss"].as_f64().unwrap();
        assert!(best <= first);
        if steps == 0 {
            assert_eq!(lines.len(), 1);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_summary_says_what_grid_and_random_compute() {
    let dir = std::env::temp_dir().join(format!("hg_l1_summary_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (svm, _) = write_data(&dir);
    for (opt, hypergradients) in [("grid", false), ("random", false), ("hoag", true)] {
        let out = bin()
            .args(["run", "--problem", "lasso", "--train", &svm])
            .args(["--outer-opt", opt, "--outer-steps", "12"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let search = text
            .lines()
            .find(|l| l.starts_with("search"))
            .unwrap_or_else(|| panic!("no search line in {text}"));
        assert_eq!(
            search.contains("hypergradients"),
            hypergradients,
            "{search}"
        );
        if !hypergradients {
            assert!(
                search.contains("criterion only (no hypergradient)"),
                "{search}"
            );
            assert!(search.contains("re-solved to 1e-12"), "{search}");
            assert!(!search.contains(" 0 inner epochs"), "{search}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The device choice for ℓ1 (issue 22): `auto` on a machine without a usable GPU runs on the
/// CPU in f64 and says so; `--device cpu --precision f32` runs the same implementation on the
/// f32 stand-in of the CUDA path, within f32 accuracy of f64, for every method, CV included;
/// on a machine with a GPU, `--device cuda` agrees with the stand-in likewise.
#[test]
fn device_choice_auto_stand_in_and_cuda() {
    let dir = std::env::temp_dir().join(format!("hg_l1_dev_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (svm, _) = write_data(&dir);
    let has_gpu =
        hypergrad::backend::cuda::CudaBackend::new(0, hypergrad::backend::cuda::Storage::F32)
            .is_ok();
    for problem in ["lasso", "enet", "wlasso"] {
        for method in ["forward", "implicit", "implicit-forward"] {
            for folds in [None, Some("3")] {
                let mut base = vec!["--problem", problem, "--train", &svm, "--method", method];
                if let Some(k) = folds {
                    base.extend(["--folds", k]);
                }
                let with = |extra: &[&str]| {
                    let mut a = base.clone();
                    a.extend_from_slice(extra);
                    grad_json(&a)
                };
                let f64r = with(&["--device", "cpu"]);
                assert_eq!(f64r["device"], "cpu-f64");
                let auto = with(&["--device", "auto"]);
                if !has_gpu {
                    assert_eq!(auto["device"], "cpu-f64");
                    let note = auto["device_note"].as_str().unwrap();
                    assert!(note.starts_with("auto chose the CPU"), "{note}");
                    assert_eq!(hg(&auto), hg(&f64r), "auto on the CPU is the CPU run");
                }
                // f32: the inner gap stops at 1e-6 relative (below f32 rounding it cannot go),
                // so the hypergradient carries ~1e-3 relative error, as in tests/l1_device.rs.
                let loose = ["--inner-tol", "1e-6", "--linear-tol", "1e-6"];
                let f32r = with(&[&["--device", "cpu", "--precision", "f32"][..], &loose].concat());
                assert_eq!(f32r["device"], "cpu-f32");
                if folds.is_none() && method == "implicit" {
                    // Without tolerances, f32 gets its own defaults (f64 keeps 1e-12, 1e-10).
                    let d32 = with(&["--device", "cpu", "--precision", "f32"]);
                    assert_eq!(
                        (d32["inner_tol"].as_f64(), d32["linear_tol"].as_f64()),
                        (Some(1e-6), Some(1e-6))
                    );
                    assert_eq!(
                        (f64r["inner_tol"].as_f64(), f64r["linear_tol"].as_f64()),
                        (Some(1e-12), Some(1e-10))
                    );
                }
                let (a, b) = (hg(&f32r), hg(&f64r));
                let scale = b.iter().fold(1e-3f64, |m, v| m.max(v.abs()));
                let err = a
                    .iter()
                    .zip(&b)
                    .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
                    / scale;
                assert!(
                    err <= 5e-3,
                    "{problem} {method} {folds:?}: cpu-f32 vs cpu-f64 {err:e}"
                );
                if has_gpu {
                    let g = with(&[&["--device", "cuda"][..], &loose].concat());
                    assert_eq!(g["device"], "cuda-f32");
                    let e = hg(&g)
                        .iter()
                        .zip(&a)
                        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
                        / scale;
                    assert!(
                        e <= 5e-3,
                        "{problem} {method} {folds:?}: cuda vs cpu-f32 {e:e}"
                    );
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
