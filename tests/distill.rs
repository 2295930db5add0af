//! `distill` (SPEC §9): the cross derivative B (computed on the backend) against central
//! differences of the inner gradient and against its closed form evaluated row by row on the
//! host, `exact` against central differences of F(θ), every method against `exact`, and
//! the command line (`--distill-init`, `--images-per-class`, `--retrain`, bad input).

mod cli_common;
use cli_common::{assert_one_line_error, hypergrad, json_of};

use hypergrad::api::{self, Data, DeviceSpec, Request, Settings, Splits};
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::Backend;
use hypergrad::data::rng::Rng;
use hypergrad::data::synthetic;
use hypergrad::data::Dataset;
use hypergrad::hypergrad::{compute, Method, Options};
use hypergrad::problem::distill::{initial_theta, DistillInit};
use hypergrad::problem::{Bilevel, DistillBilevel, InnerProblem};
use hypergrad::solver::{self, InnerOptions, Solver};

const C: usize = 3;
const D: usize = 4;
const K: usize = 2;
const L2: f64 = 0.1;

/// Training and validation rows of a 3-class problem with 4 features.
fn data(seed: u64) -> (Dataset, Dataset) {
    let (all, _) = synthetic::softmax(120, D, C, 0.3, 2.0, seed);
    let train = all.select(&(0..60).collect::<Vec<_>>());
    let val = all.select(&(60..120).collect::<Vec<_>>());
    (train, val)
}

/// The problem on the CPU in f64 at θ = K random training rows per class plus N(0, 0.3²)
/// (so that the synthetic rows are not data points).
fn problem(seed: u64) -> DistillBilevel<CpuBackend<f64>> {
    let (train, val) = data(seed);
    let mut theta = initial_theta(&train, C, K, DistillInit::Real, seed).unwrap();
    let mut rng = Rng::new(seed + 7);
    for t in theta.iter_mut() {
        *t += 0.3 * rng.normal();
    }
    DistillBilevel::new(CpuBackend::<f64>::new(), C, K, &val, L2, &theta).unwrap()
}

fn random(n: usize, rng: &mut Rng) -> Vec<f64> {
    (0..n).map(|_| rng.normal()).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    norm(&diff) / norm(b).max(1e-300)
}

/// `∇_W g(w; θ)` at θ (the problem's θ is restored afterwards).
fn inner_grad(p: &mut DistillBilevel<CpuBackend<f64>>, theta: &[f64], w: &[f64]) -> Vec<f64> {
    let keep = p.theta().to_vec();
    p.set_theta(theta).unwrap();
    let b = p.backend().clone();
    let wb = b.upload(w).unwrap();
    let mut g = b.zeros(w.len()).unwrap();
    p.inner_value_grad(&wb, Some(&mut g)).unwrap();
    p.set_theta(&keep).unwrap();
    b.download(&g).unwrap()
}

/// The closed forms of the module docs of `problem::distill`, row by row on the host in f64:
/// an independent reference for the backend's GEMM formulation. With `p_j = softmax(W x_j)`,
/// `r_j = p_j − e_{ỹ_j}`, `S_j = diag p_j − p_j p_jᵀ`:
/// `B v = (1/N) Σ_j ((S_j W u_j) x_jᵀ + r_j u_jᵀ)`, `(Bᵀq)_j = (1/N)(Wᵀ S_j Q x_j + Qᵀ r_j)`.
mod closed_form {
    use super::{dot, C, D, K};

    const N: usize = K * C;

    fn row(theta: &[f64], j: usize) -> &[f64] {
        &theta[j * D..(j + 1) * D]
    }

    /// `(p_j, r_j)`.
    fn probs(w: &[f64], x: &[f64], label: usize) -> (Vec<f64>, Vec<f64>) {
        let z: Vec<f64> = (0..C).map(|k| dot(&w[k * D..(k + 1) * D], x)).collect();
        let zmax = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|zk| (zk - zmax).exp()).collect();
        let sum: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|ek| ek / sum).collect();
        let mut r = p.clone();
        r[label] -= 1.0;
        (p, r)
    }

    /// `S a`.
    fn hess(p: &[f64], a: &[f64]) -> Vec<f64> {
        let pa = dot(p, a);
        p.iter().zip(a).map(|(pk, ak)| pk * (ak - pa)).collect()
    }

    pub fn cross_apply(theta: &[f64], w: &[f64], v: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; C * D];
        for j in 0..N {
            let (x, u) = (row(theta, j), row(v, j));
            let (p, r) = probs(w, x, j / K);
            let a: Vec<f64> = (0..C).map(|k| dot(&w[k * D..(k + 1) * D], u)).collect();
            let s = hess(&p, &a);
            for k in 0..C {
                for l in 0..D {
                    out[k * D + l] += (s[k] * x[l] + r[k] * u[l]) / N as f64;
                }
            }
        }
        out
    }

    pub fn cross_transpose(theta: &[f64], w: &[f64], q: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; N * D];
        for j in 0..N {
            let x = row(theta, j);
            let (p, r) = probs(w, x, j / K);
            let t: Vec<f64> = (0..C).map(|k| dot(&q[k * D..(k + 1) * D], x)).collect();
            let s = hess(&p, &t);
            for k in 0..C {
                for l in 0..D {
                    out[j * D + l] += (w[k * D + l] * s[k] + q[k * D + l] * r[k]) / N as f64;
                }
            }
        }
        out
    }
}

/// B v against the central difference `(∇g(θ + εv) − ∇g(θ − εv)) / 2ε` at a random W (the
/// difference is exact up to O(ε²) and rounding: 1e-6 relative with ε = 1e-5); B v, Bᵀq and
/// every column of `cross_add` against the host's closed forms to f64 rounding (1e-13: sums of
/// at most N = 6 rows of O(1) terms, in another order; 1e-12 for what `cross_add` added to a
/// batch of O(1) entries); Bᵀq against B by the adjoint identity
/// ⟨q, Bv⟩ = ⟨Bᵀq, v⟩.
#[test]
fn cross_derivative_matches_central_differences_of_the_inner_gradient() {
    for seed in 0..3 {
        let mut p = problem(seed);
        let mut rng = Rng::new(100 + seed);
        let big_p = C * D;
        let small_p = p.hyper_dim();
        assert_eq!(small_p, K * C * D);
        let w = random(big_p, &mut rng);
        let theta = p.theta().to_vec();
        let b = p.backend().clone();
        let wb = b.upload(&w).unwrap();
        for _ in 0..3 {
            let v = random(small_p, &mut rng);
            let eps = 1e-5;
            let plus: Vec<f64> = theta.iter().zip(&v).map(|(t, vi)| t + eps * vi).collect();
            let minus: Vec<f64> = theta.iter().zip(&v).map(|(t, vi)| t - eps * vi).collect();
            let gp = inner_grad(&mut p, &plus, &w);
            let gm = inner_grad(&mut p, &minus, &w);
            let fd: Vec<f64> = gp
                .iter()
                .zip(&gm)
                .map(|(a, b)| (a - b) / (2.0 * eps))
                .collect();
            let bv = p.cross_apply(&wb, &v).unwrap();
            let e = rel_err(&bv, &fd);
            assert!(e < 1e-6, "seed {seed}: B v vs central differences: {e:.2e}");
            let e = rel_err(&bv, &closed_form::cross_apply(&theta, &w, &v));
            assert!(e < 1e-13, "seed {seed}: B v vs the closed form: {e:.2e}");

            let q = random(big_p, &mut rng);
            let btq = p.cross_t(&wb, &b.upload(&q).unwrap()).unwrap();
            let e = rel_err(&btq, &closed_form::cross_transpose(&theta, &w, &q));
            assert!(e < 1e-13, "seed {seed}: Bᵀq vs the closed form: {e:.2e}");
            let (lhs, rhs) = (dot(&q, &bv), dot(&btq, &v));
            assert!(
                (lhs - rhs).abs() <= 1e-12 * (lhs.abs() + rhs.abs() + 1.0),
                "seed {seed}: ⟨q, Bv⟩ = {lhs} but ⟨Bᵀq, v⟩ = {rhs}"
            );
        }
        // cross_add: batch + α B as p columns of length P, onto a batch that is not zero.
        let start = random(big_p * small_p, &mut rng);
        let mut batch = b.upload(&start).unwrap();
        p.cross_add(&wb, 2.0, &mut batch).unwrap();
        p.cross_add(&wb, -0.5, &mut batch).unwrap();
        let batch = b.download(&batch).unwrap();
        for i in 0..small_p {
            let mut e_i = vec![0.0; small_p];
            e_i[i] = 1.0;
            let col: Vec<f64> = closed_form::cross_apply(&theta, &w, &e_i)
                .iter()
                .map(|x| 1.5 * x)
                .collect();
            // What the two calls added (the start's O(1) entries cost ~1e-16 absolute each).
            let added: Vec<f64> = batch[i * big_p..(i + 1) * big_p]
                .iter()
                .zip(&start[i * big_p..(i + 1) * big_p])
                .map(|(g, s)| g - s)
                .collect();
            let e = rel_err(&added, &col);
            assert!(e < 1e-12, "seed {seed}: column {i} of B: {e:.2e}");
        }
        // Wrong lengths are one clear error, not a panic.
        let short = b.upload(&vec![0.0; big_p - 1]).unwrap();
        assert!(p.cross_apply(&short, &vec![0.0; small_p]).is_err());
        assert!(p.cross_apply(&wb, &vec![0.0; small_p + 1]).is_err());
        assert!(p.cross_t(&wb, &short).is_err());
        let mut wrong = b.zeros(big_p * small_p - 1).unwrap();
        assert!(p.cross_add(&wb, 1.0, &mut wrong).is_err());
    }
}

fn tight_inner() -> InnerOptions {
    InnerOptions {
        solver: Solver::Newton,
        tol: 1e-14,
        max_iters: 200,
        minibatch: Default::default(),
    }
}

/// F(θ) = f(w*(θ)) with a tight Newton solve.
fn outer_value(p: &mut DistillBilevel<CpuBackend<f64>>, theta: &[f64]) -> f64 {
    let keep = p.theta().to_vec();
    p.set_theta(theta).unwrap();
    let sol = solver::solve(&*p, None, &tight_inner()).unwrap();
    let f = p.outer_value_grad(&sol.w, None).unwrap();
    p.set_theta(&keep).unwrap();
    f
}

fn exact(p: &DistillBilevel<CpuBackend<f64>>) -> Vec<f64> {
    let mut opts = Options::new(Method::Exact, hypergrad::backend::Precision::F64);
    opts.inner = tight_inner();
    compute(p, &opts, None).unwrap().hypergradient
}

/// `exact` against central differences of F along random directions (ε = 1e-5; F is smooth,
/// the inner solve tight to 1e-14 relative: 1e-6 relative agreement).
#[test]
fn exact_matches_central_differences_of_the_outer_objective() {
    for seed in 0..3 {
        let mut p = problem(seed);
        let h = exact(&p);
        let theta = p.theta().to_vec();
        let mut rng = Rng::new(200 + seed);
        for _ in 0..3 {
            let v = random(theta.len(), &mut rng);
            let eps = 1e-5;
            let plus: Vec<f64> = theta.iter().zip(&v).map(|(t, vi)| t + eps * vi).collect();
            let minus: Vec<f64> = theta.iter().zip(&v).map(|(t, vi)| t - eps * vi).collect();
            let fd = (outer_value(&mut p, &plus) - outer_value(&mut p, &minus)) / (2.0 * eps);
            let hv = dot(&h, &v);
            assert!(
                (fd - hv).abs() <= 1e-6 * norm(&h) * norm(&v),
                "seed {seed}: ⟨h, v⟩ = {hv:.10e}, central difference {fd:.10e}"
            );
        }
    }
}

/// Every deterministic method against `exact` at tolerances that make it converge: cg to 1e-10
/// relative; neumann and fixed-point with enough terms; unroll and forward through enough
/// inner steps from w = 0 that w_T and its Jacobian have converged (and forward = unroll).
#[test]
fn every_method_agrees_with_exact() {
    for seed in 0..2 {
        let p = problem(seed);
        let reference = exact(&p);
        let run = |method: Method, tweak: &dyn Fn(&mut Options)| {
            let mut opts = Options::new(method, hypergrad::backend::Precision::F64);
            opts.inner = tight_inner();
            tweak(&mut opts);
            compute(&p, &opts, None).unwrap().hypergradient
        };
        let cg = run(Method::Cg, &|_| {});
        assert!(
            rel_err(&cg, &reference) < 1e-8,
            "cg: {:.2e}",
            rel_err(&cg, &reference)
        );
        for method in [Method::Neumann, Method::FixedPoint] {
            let h = run(method, &|o| o.linear_iters = Some(20_000));
            let e = rel_err(&h, &reference);
            assert!(e < 1e-6, "{}: {e:.2e}", method.name());
        }
        let unroll = run(Method::Unroll, &|o| o.unroll_steps = 20_000);
        let forward = run(Method::Forward, &|o| o.unroll_steps = 20_000);
        let e = rel_err(&unroll, &reference);
        assert!(e < 1e-6, "unroll: {e:.2e}");
        let e = rel_err(&forward, &unroll);
        assert!(e < 1e-9, "forward vs unroll: {e:.2e}");
    }
}

fn cpu() -> DeviceSpec {
    DeviceSpec {
        device: hypergrad::api::names::DeviceName::Cpu,
        ..Default::default()
    }
}

/// The small problem's rows as in-memory splits for the library API.
fn splits(seed: u64) -> Splits {
    let (train, val) = data(seed);
    Splits {
        train: Data::Dense(train),
        val: Data::Dense(val.clone()),
        test: Some(Data::Dense(val)),
    }
}

/// NHGD (kfac) replaces H by the damped empirical Fisher of its SGD steps, so it is not the
/// exact hypergradient; through the API it returns p finite entries, and with the Fisher's
/// damping C I it points downhill (a positive inner product with exact's).
#[test]
fn nhgd_through_the_api_returns_a_descent_direction() {
    let mut settings = Settings {
        method: Some(hypergrad::api::names::MethodName::Nhgd),
        images_per_class: K,
        l2: L2,
        inner_steps: 2000,
        device: cpu(),
        ..Default::default()
    };
    let request = Request::new("distill", settings.clone()).unwrap();
    let report = api::grad(&request, &splits(0).into()).unwrap().to_json();
    let h: Vec<f64> = report["hypergradient"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(h.len(), K * C * D);
    assert!(h.iter().all(|x| x.is_finite()));
    assert_eq!(report["problem"], "distill");
    // exact at the same θ (the API's default θ: K training rows per class, seed 0).
    settings.method = Some(hypergrad::api::names::MethodName::Exact);
    let request = Request::new("distill", settings).unwrap();
    let exact = api::grad(&request, &splits(0).into()).unwrap().to_json();
    let e: Vec<f64> = exact["hypergradient"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(report["theta"], exact["theta"]);
    let cos = dot(&h, &e) / (norm(&h) * norm(&e));
    assert!(cos > 0.0, "nhgd vs exact: cosine {cos}");
}

/// `run` through the API lowers F, and `--retrain` reports an accuracy in [0, 1].
#[test]
fn run_lowers_the_outer_loss_and_retrains() {
    let settings = Settings {
        images_per_class: K,
        l2: L2,
        outer_steps: 30,
        retrain: true,
        device: cpu(),
        ..Default::default()
    };
    let request = Request::new("distill", settings).unwrap();
    let outcome = api::run(&request, &splits(1).into(), &mut |_| Ok(())).unwrap();
    let trace = outcome.trace();
    let f0 = trace[0]["outer_loss"].as_f64().unwrap();
    let f1 = trace.last().unwrap()["outer_loss"].as_f64().unwrap();
    assert!(f1 < f0, "F went from {f0} to {f1}");
    let json = outcome.to_json();
    let acc = json["retrain_test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
}

// ---- the command line ----------------------------------------------------------------------

const DIGITS: &[&str] = &[
    "--problem",
    "distill",
    "--train",
    "digits",
    "--device",
    "cpu",
];

/// `--images-per-class K` gives p = K·c·d; `--distill-init real` starts at training rows of
/// the right classes, `noise` at N(0, 1) draws.
#[test]
fn cli_images_per_class_and_distill_init() {
    let digits = hypergrad::data::load("digits").unwrap();
    for k in [1usize, 3] {
        let ks = k.to_string();
        let mut args = vec!["run"];
        args.extend(DIGITS);
        args.extend(["--images-per-class", &ks, "--outer-steps", "0", "--json"]);
        let v = json_of(&hypergrad(&args));
        let theta: Vec<f64> = v["theta"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(theta.len(), k * 10 * 64);
        // Row j is a digits row of class ⌊j / K⌋.
        for (j, row) in theta.chunks_exact(64).enumerate() {
            let found = (0..digits.n()).any(|i| {
                digits.y[i] == (j / k) as f64
                    && digits.x.row(i).iter().zip(row).all(|(a, b)| a == b)
            });
            assert!(
                found,
                "K = {k}: synthetic row {j} is not a training row of its class"
            );
        }
    }
    let mut args = vec!["run"];
    args.extend(DIGITS);
    args.extend(["--distill-init", "noise", "--outer-steps", "0", "--json"]);
    let v = json_of(&hypergrad(&args));
    let theta: Vec<f64> = v["theta"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let n = theta.len() as f64;
    let mean = theta.iter().sum::<f64>() / n;
    let var = theta.iter().map(|t| (t - mean) * (t - mean)).sum::<f64>() / n;
    assert!(
        mean.abs() < 0.15 && (var - 1.0).abs() < 0.2,
        "mean {mean}, variance {var}"
    );
    // grad reports p.
    let mut args = vec!["grad"];
    args.extend(DIGITS);
    args.extend(["--images-per-class", "2", "--json"]);
    let v = json_of(&hypergrad(&args));
    assert_eq!(v["p"], 2 * 10 * 64);
    assert_eq!(v["hypergradient"].as_array().unwrap().len(), 2 * 10 * 64);
}

/// `run --retrain` adds retrain_test_accuracy to --json and a line to the table.
#[test]
fn cli_retrain() {
    let mut args = vec!["run"];
    args.extend(DIGITS);
    args.extend([
        "--standardize",
        "--method",
        "unroll",
        "--unroll-steps",
        "5",
        "--outer-steps",
        "5",
        "--retrain",
    ]);
    let mut with_json = args.clone();
    with_json.push("--json");
    let v = json_of(&hypergrad(&with_json));
    let acc = v["retrain_test_accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert!(v["final"]["test_accuracy"].as_f64().is_some());
    let out = hypergrad(&args);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("retrain"), "{table}");
    // Without --retrain the field is null.
    let mut args = vec!["run"];
    args.extend(DIGITS);
    args.extend(["--outer-steps", "1", "--json"]);
    let v = json_of(&hypergrad(&args));
    assert!(v["retrain_test_accuracy"].is_null());
}

/// Bad input: a one-line error and a non-zero exit, never a panic.
#[test]
fn cli_bad_input_is_a_one_line_error() {
    let dir = std::env::temp_dir().join(format!("hypergrad-distill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("theta.txt");
    std::fs::write(&short, "1 2 3\n").unwrap();
    let short = short.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--images-per-class", "0"], "--images-per-class"),
        (vec!["--theta-file", &short], "p = 640"),
        (vec!["--method", "stocbio"], "--method"),
        (vec!["--method", "soba"], "--method"),
        (vec!["--hyper", "shared"], "--hyper"),
        (vec!["--images-per-class", "1000"], "fewer than K = 1000"),
        (vec!["--l2", "0"], "--l2"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["grad"];
        args.extend(DIGITS);
        args.extend(extra.iter().copied());
        assert_one_line_error(&hypergrad(&args), needle);
    }
    // The distill-only options on another problem.
    assert_one_line_error(
        &hypergrad(&[
            "run",
            "--problem",
            "softmax",
            "--train",
            "digits",
            "--device",
            "cpu",
            "--retrain",
        ]),
        "--retrain",
    );
    assert_one_line_error(
        &hypergrad(&[
            "grad",
            "--problem",
            "softmax",
            "--train",
            "digits",
            "--images-per-class",
            "3",
        ]),
        "--images-per-class",
    );
    // --retrain needs test rows.
    let mut args = vec!["run"];
    args.extend(DIGITS);
    args.extend(["--split", "0.5,0.5", "--outer-steps", "1", "--retrain"]);
    assert_one_line_error(&hypergrad(&args), "--retrain");
}
