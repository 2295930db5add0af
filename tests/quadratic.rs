//! `quadratic` (SPEC §9), Ehrhardt & Roberts' test problem: the hypergradient against its
//! closed form computed here by a naive dense solve (no library algebra), and against central
//! differences of F; every method against `exact`; the a posteriori bound above the true
//! error at every CG iteration count, with exact and inexact inner solves; `run`; and bad
//! input as one-line errors.

use std::process::Output;

mod cli_common;
use cli_common::hypergrad;

use hypergrad::api::{self, DataSource, Request, Settings, Theta};
use hypergrad::bound_curves::cg_curves;
use hypergrad::data::synthetic::{QuadraticData, QuadraticSpec};
use hypergrad::hypergrad::{compute, Hypergradient, Method, Options};
use hypergrad::problem::{Bilevel, QuadraticBilevel};
use hypergrad::solver::{InnerOptions, Solver};

// ---- the reference: naive dense algebra, written out here ----------------------------------

/// `MᵀN` for row-major `M` (m×p) and `N` (m×q).
fn t_mul(m_: &[f64], n_: &[f64], rows: usize, p: usize, q: usize) -> Vec<f64> {
    let mut out = vec![0.0; p * q];
    for r in 0..rows {
        for i in 0..p {
            for j in 0..q {
                out[i * q + j] += m_[r * p + i] * n_[r * q + j];
            }
        }
    }
    out
}

/// Solves `G X = R` (G n×n, R n×k, row-major) by Gaussian elimination with partial pivoting.
fn solve(g: &[f64], r: &[f64], n: usize, k: usize) -> Vec<f64> {
    let mut a = g.to_vec();
    let mut x = r.to_vec();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .unwrap();
        for c in 0..n {
            a.swap(col * n + c, pivot * n + c);
        }
        for c in 0..k {
            x.swap(col * k + c, pivot * k + c);
        }
        for row in col + 1..n {
            let f = a[row * n + col] / a[col * n + col];
            for c in col..n {
                a[row * n + c] -= f * a[col * n + c];
            }
            for c in 0..k {
                x[row * k + c] -= f * x[col * k + c];
            }
        }
    }
    for col in (0..n).rev() {
        for c in 0..k {
            let mut s = x[col * k + c];
            for j in col + 1..n {
                s -= a[col * n + j] * x[j * k + c];
            }
            x[col * k + c] = s / a[col * n + col];
        }
    }
    x
}

fn mat_vec(m_: &[f64], v: &[f64]) -> Vec<f64> {
    m_.chunks_exact(v.len())
        .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}

/// `x*(w) = (DᵀD)⁻¹Dᵀ(e − Cw)` by the normal equations.
fn x_star(data: &QuadraticData, w: &[f64]) -> Vec<f64> {
    let QuadraticSpec { m, nx, .. } = data.spec;
    let target: Vec<f64> = mat_vec(&data.c, w)
        .iter()
        .zip(&data.e)
        .map(|(cw, e)| e - cw)
        .collect();
    let dtd = t_mul(&data.d, &data.d, m, nx, nx);
    let rhs = t_mul(&data.d, &target, m, nx, 1);
    solve(&dtd, &rhs, nx, 1)
}

fn outer_value(data: &QuadraticData, x: &[f64]) -> f64 {
    mat_vec(&data.a, x)
        .iter()
        .zip(&data.b)
        .map(|(ax, b)| (ax - b) * (ax - b))
        .sum()
}

/// `∇F(w) = 2 (∂x*/∂w)ᵀ Aᵀ(Ax* − b)` with `∂x*/∂w = −(DᵀD)⁻¹DᵀC`.
fn closed_form_gradient(data: &QuadraticData, w: &[f64]) -> Vec<f64> {
    let QuadraticSpec { m, nx, nw, .. } = data.spec;
    let x = x_star(data, w);
    let residual: Vec<f64> = mat_vec(&data.a, &x)
        .iter()
        .zip(&data.b)
        .map(|(ax, b)| ax - b)
        .collect();
    let at_r = t_mul(&data.a, &residual, m, nx, 1);
    let dtd = t_mul(&data.d, &data.d, m, nx, nx);
    let dtc = t_mul(&data.d, &data.c, m, nx, nw);
    let jacobian: Vec<f64> = solve(&dtd, &dtc, nx, nw).iter().map(|v| -v).collect();
    t_mul(&jacobian, &at_r, nx, nw, 1)
        .iter()
        .map(|v| 2.0 * v)
        .collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

// ---- instances ----------------------------------------------------------------------------

fn spec(m: usize, nx: usize, nw: usize, seed: u64) -> QuadraticSpec {
    QuadraticSpec {
        m,
        nx,
        nw,
        noise: 0.01,
        seed,
    }
}

/// The problem at a w that is not all ones (so that every entry of w matters).
fn instance(spec: QuadraticSpec) -> (QuadraticBilevel, Vec<f64>) {
    let mut problem = QuadraticBilevel::new(spec.generate()).unwrap();
    let w: Vec<f64> = (0..spec.nw).map(|j| 1.0 - 0.15 * j as f64).collect();
    problem.set_theta(&w).unwrap();
    (problem, w)
}

fn method(m: Method) -> Options {
    let mut opts = Options::new(m, hypergrad::backend::Precision::F64);
    match m {
        // η = 1/L: the error contracts by 1 − μ/L ≈ 1 − 1/35 per step; 2000 steps reach f64.
        Method::Neumann | Method::FixedPoint => opts.linear_iters = Some(2000),
        Method::Unroll | Method::Forward => opts.unroll_steps = 2000,
        _ => {}
    }
    opts
}

fn hypergradient(problem: &QuadraticBilevel, m: Method) -> Hypergradient {
    compute(problem, &method(m), None).unwrap()
}

// ---- the hypergradient ----------------------------------------------------------------------

#[test]
fn exact_and_cg_equal_the_closed_form() {
    for s in [
        spec(1000, 10, 10, 0),
        spec(200, 7, 4, 3),
        spec(60, 12, 15, 9),
    ] {
        let (problem, w) = instance(s);
        let reference = closed_form_gradient(problem.data(), &w);
        for m in [Method::Exact, Method::Cg] {
            let h = hypergradient(&problem, m);
            let err = distance(&h.hypergradient, &reference) / norm(&reference);
            assert!(err < 1e-9, "{s:?} {}: relative error {err:e}", m.name());
        }
        // The library's own closed form (QR least squares) agrees with the naive one.
        let library = problem.closed_form();
        let err = distance(&library.hypergradient, &reference) / norm(&reference);
        assert!(err < 1e-10, "{s:?}: closed_form relative error {err:e}");
        assert!(distance(&library.x, &x_star(problem.data(), &w)) < 1e-10 * norm(&library.x));
    }
}

#[test]
fn hypergradient_equals_central_differences_of_f() {
    let (problem, w) = instance(spec(300, 6, 5, 1));
    let h = hypergradient(&problem, Method::Exact).hypergradient;
    let data = problem.data();
    let f = |w: &[f64]| outer_value(data, &x_star(data, w));
    // F is quadratic in w, so central differences are exact but for rounding.
    let step = 1e-3;
    for j in 0..w.len() {
        let mut plus = w.clone();
        let mut minus = w.clone();
        plus[j] += step;
        minus[j] -= step;
        let fd = (f(&plus) - f(&minus)) / (2.0 * step);
        assert!(
            (fd - h[j]).abs() <= 1e-7 * norm(&h),
            "∂F/∂w_{j}: central difference {fd}, hypergradient {}",
            h[j]
        );
    }
}

#[test]
fn every_method_agrees_with_exact_and_stays_within_its_bound() {
    let (problem, w) = instance(spec(1000, 10, 10, 0));
    let reference = closed_form_gradient(problem.data(), &w);
    let exact = hypergradient(&problem, Method::Exact).hypergradient;
    for m in Method::ALL {
        let h = hypergradient(&problem, m);
        let err = distance(&h.hypergradient, &exact) / norm(&exact);
        assert!(
            err < 1e-9,
            "{} against exact: relative error {err:e}",
            m.name()
        );
        if let Some(bound) = h.error_bound {
            let true_error = distance(&h.hypergradient, &reference);
            assert!(
                true_error <= bound,
                "{}: true error {true_error:e} above the bound {bound:e}",
                m.name()
            );
        }
    }
}

#[test]
fn stochastic_methods_are_refused_in_one_line() {
    for name in ["nhgd", "stocbio", "amigo", "soba"] {
        let out = hypergrad(&[
            "grad",
            "--problem",
            "quadratic",
            "--train",
            "synthetic:quadratic",
            "--method",
            name,
        ]);
        assert_one_line_error(&out, &["--method", name, "quadratic"]);
    }
}

// ---- the a posteriori bound ------------------------------------------------------------------

/// At every CG iteration count, with the inner problem solved to f64 precision and solved
/// loosely by a few gradient steps (then the ε terms of the bound carry it).
#[test]
fn a_posteriori_bound_holds_at_every_cg_iteration_count() {
    for s in [spec(1000, 10, 10, 0), spec(100, 8, 3, 5)] {
        let (problem, w) = instance(s);
        let reference = closed_form_gradient(problem.data(), &w);
        let inners = [
            InnerOptions::default_for(hypergrad::backend::Precision::F64),
            InnerOptions {
                solver: Solver::Gd,
                tol: 0.0,
                max_iters: 40,
                minibatch: Default::default(),
            },
            InnerOptions {
                solver: Solver::Gd,
                tol: 0.0,
                max_iters: 5,
                minibatch: Default::default(),
            },
        ];
        for inner in inners {
            let mut opts = Options::new(Method::Cg, hypergrad::backend::Precision::F64);
            opts.inner = inner;
            opts.linear_tol = 0.0;
            for k in 0..=30 {
                opts.linear_iters = Some(k);
                let h = compute(&problem, &opts, None).unwrap();
                let bound = h.error_bound.expect("quadratic always has a bound");
                let true_error = distance(&h.hypergradient, &reference);
                assert!(
                    true_error <= bound,
                    "{s:?}, inner {:?} ×{}, k = {k}: true error {true_error:e} > bound {bound:e}",
                    inner.solver,
                    inner.max_iters
                );
            }
        }
    }
}

/// The benchmark's curves: both bounds above the true error at every k; CG reaches the
/// rounding floor within about nx iterations, and the a priori bound decays at CG's rate.
#[test]
fn bound_curves_bound_the_true_error() {
    let (problem, w) = instance(spec(1000, 10, 10, 0));
    let reference = closed_form_gradient(problem.data(), &w);
    let mut inner = InnerOptions::default_for(hypergrad::backend::Precision::F64);
    inner.tol = 0.0;
    let curves = cg_curves(&problem, inner, 40).unwrap();
    assert_eq!(curves.points.len(), 41);
    let scale = norm(&reference);
    assert!((curves.hypergradient_norm - scale).abs() < 1e-10 * scale);
    for p in &curves.points {
        assert!(p.true_error <= p.a_posteriori, "{p:?}");
        assert!(p.true_error <= p.a_priori, "{p:?}");
        assert!(p.a_posteriori_raw <= p.a_posteriori, "{p:?}");
    }
    let at = |k: usize| &curves.points[k];
    assert!(at(0).true_error > 0.99 * scale, "h_0 = 0");
    assert!(at(15).true_error < 1e-13 * scale, "{:?}", at(15));
    // Past the ε terms (ε ≈ 1e-16 here) the a priori bound falls by CG's rate ρ per iteration.
    let (l, mu) = (curves.constants.l_g, curves.constants.mu);
    let rho = (l.sqrt() - mu.sqrt()) / (l.sqrt() + mu.sqrt());
    let ratio = at(40).a_priori / at(20).a_priori;
    assert!(
        (ratio / rho.powi(20) - 1.0).abs() < 1e-3,
        "ratio {ratio:e}, ρ²⁰ {:e}",
        rho.powi(20)
    );
}

// ---- run ----------------------------------------------------------------------------------------

/// `run` (Adam, the default) lowers F, and its first and last records are F and ‖∇F‖ of the
/// closed form at the first and the final w.
#[test]
fn run_descends_the_upper_level() {
    let train = "synthetic:quadratic:m=200,nx=5,nw=4,seed=2";
    let settings = Settings {
        outer_steps: 30,
        theta: Theta::Scalar(1.0),
        ..Settings::default()
    };
    let request = Request {
        problem: api::ProblemName::Quadratic,
        settings,
    };
    let source = DataSource {
        train: train.into(),
        ..Default::default()
    };
    let outcome = api::run(&request, &source.into(), &mut |_| Ok(())).unwrap();
    let api::Outcome::Smooth(smooth) = &outcome else {
        panic!("quadratic is a smooth problem");
    };
    let trace = outcome.trace();
    assert_eq!(trace.len(), 31);
    let field = |i: usize, key: &str| trace[i][key].as_f64().unwrap();
    assert!(
        field(30, "outer_loss") < field(0, "outer_loss") - 1.0,
        "F from {} to {}",
        field(0, "outer_loss"),
        field(30, "outer_loss")
    );
    assert!(trace.iter().all(|r| r["error_bound"].as_f64().is_some()));
    let data = QuadraticSpec::parse(train).unwrap().generate();
    for (i, w) in [(0, vec![1.0; 4]), (30, smooth.theta.clone())] {
        let f = outer_value(&data, &x_star(&data, &w));
        let g = norm(&closed_form_gradient(&data, &w));
        assert!((field(i, "outer_loss") - f).abs() < 1e-9 * f, "step {i}: F");
        assert!(
            (field(i, "hypergradient_norm") - g).abs() < 1e-6 * g,
            "step {i}: ‖∇F‖"
        );
    }
}

// ---- bad input ----------------------------------------------------------------------------------

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

fn grad_quadratic(train: &str, extra: &[&str]) -> Output {
    let mut args = vec!["grad", "--problem", "quadratic", "--train", train];
    args.extend_from_slice(extra);
    hypergrad(&args)
}

#[test]
fn bad_specs_are_one_line_errors() {
    let cases: &[(&str, &[&str])] = &[
        (
            "synthetic:quadratic:m=0",
            &["--train", "m must be at least 1"],
        ),
        ("synthetic:quadratic:m=5", &["--train", "m ≥ nx"]),
        (
            "synthetic:quadratic:nx=0",
            &["--train", "nx must be at least 1"],
        ),
        (
            "synthetic:quadratic:foo=1",
            &["--train", "unknown key 'foo'"],
        ),
        ("synthetic:quadratic:m=10,m=20", &["--train", "given twice"]),
        ("synthetic:quadratic:noise=-1", &["--train", "noise"]),
        ("synthetic:quadratic:seed=x", &["--train", "seed"]),
        ("synthetic:quadratic:m", &["--train", "key=value"]),
        (
            "synthetic:linear:n=10,d=2",
            &["--train", "synthetic:quadratic"],
        ),
        ("digits", &["--train", "synthetic:quadratic"]),
    ];
    for (train, needles) in cases {
        assert_one_line_error(&grad_quadratic(train, &[]), needles);
    }
    // The prefix may be left out, as for the other synthetic specs.
    let out = grad_quadratic("quadratic:m=50,nx=3,nw=2", &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same specs through the benchmark.
    let out = hypergrad(&["bench", "bounds", "--train", "synthetic:quadratic:m=0"]);
    assert_one_line_error(&out, &["--train", "m must be at least 1"]);
    // The spec is not a dataset for the other problems.
    let out = hypergrad(&[
        "grad",
        "--problem",
        "ridge",
        "--train",
        "synthetic:quadratic",
    ]);
    assert_one_line_error(&out, &["--train", "--problem quadratic"]);
}

#[test]
fn options_quadratic_does_not_have_are_one_line_errors() {
    let train = "synthetic:quadratic";
    let cases: &[(&[&str], &[&str])] = &[
        (&["--device", "cuda"], &["--device", "CPU"]),
        (&["--precision", "f32"], &["--precision", "f64"]),
        (&["--hyper", "shared"], &["--hyper", "θ = w"]),
        (&["--val", "digits"], &["--val"]),
        (&["--standardize"], &["--standardize"]),
        (&["--theta", "nan"], &["--theta"]),
        (&["--seed", "3"], &["--seed", "seed=3"]),
    ];
    for (extra, needles) in cases {
        assert_one_line_error(&grad_quadratic(train, extra), needles);
    }
    let out = hypergrad(&[
        "run",
        "--problem",
        "quadratic",
        "--train",
        train,
        "--test",
        "digits",
    ]);
    assert_one_line_error(&out, &["--test"]);
}

#[test]
fn grad_json_has_the_contract_fields() {
    let out = grad_quadratic("synthetic:quadratic:m=100,nx=4,nw=3,seed=1", &["--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["problem"], "quadratic");
    assert_eq!(v["method"], "cg");
    assert_eq!(v["device"], "cpu-f64");
    assert_eq!(v["hypergradient"].as_array().unwrap().len(), 3);
    assert_eq!(v["theta"], serde_json::json!([1.0, 1.0, 1.0]));
    assert!(v["error_bound"].as_f64().unwrap() > 0.0);
}

/// `bench bounds --jsonl` writes one record per k that `hypergrad plot` draws.
#[test]
fn bench_bounds_jsonl_is_a_trace_plot_draws() {
    let dir = std::env::temp_dir().join(format!("hypergrad-quadratic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (jsonl, svg) = (dir.join("bounds.jsonl"), dir.join("bounds.svg"));
    let out = hypergrad(&[
        "bench",
        "bounds",
        "--train",
        "synthetic:quadratic:m=100,nx=6,nw=3,seed=4",
        "--max-iters",
        "12",
        "--jsonl",
        jsonl.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 13);
    for (k, r) in records.iter().enumerate() {
        assert_eq!(r["iterations"], k);
        let field = |key: &str| r[key].as_f64().unwrap();
        assert!(field("true_error") <= field("a_posteriori"), "{r}");
        assert!(field("true_error") <= field("a_priori"), "{r}");
    }
    let out = hypergrad(&[
        "plot",
        jsonl.to_str().unwrap(),
        "--x",
        "iterations",
        "--y",
        "true_error",
        "a_posteriori",
        "a_priori",
        "-o",
        svg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(
        drawn.matches("stroke-width=\"2\"").count(),
        3 * 2,
        "3 fields, each with a legend"
    );
}
