//! `distill --model mlp:…` (SPEC §8, §9) in f64 on tiny networks (tanh and relu, one and two
//! hidden layers):
//!
//! * the cross derivative: `B v` against central differences of `∇_w g` in θ; `Bᵀq` by the
//!   adjoint identity and against central differences of `⟨∇_w g, q⟩` in every coordinate of θ;
//!   `cross_add`'s columns against `B e_i`;
//! * `exact` and `cg` against central differences of `F(θ) = f(ŵ(θ))`, each inner problem at
//!   `θ ± δ e_j` solved by Newton-CG warm-started from `ŵ(θ)` to a tight tolerance (tanh; relu
//!   where its inner solve converges, with `cg`);
//! * every method the network problem supports against `exact` (`unroll` = `forward`, and
//!   `unroll` through many steps against `exact` at its end point); NHGD's descent direction;
//! * the library API and the command line (`run --retrain` on digits, the refusals).

mod mlp_common;

mod cli_common;
use cli_common::{assert_one_line_error, hypergrad, json_of};

use hypergrad::api::{self, Data, DeviceSpec, ModelSpec, Request, Settings, Splits};
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::mlp::Activation;
use hypergrad::backend::{Backend, Precision};
use hypergrad::data::rng::Rng;
use hypergrad::data::Dataset;
use hypergrad::hypergrad::{compute, Method, Options};
use hypergrad::problem::distill::{initial_theta, DistillInit};
use hypergrad::problem::{Bilevel, InnerProblem, MlpDistillBilevel};
use hypergrad::solver::{self, InnerOptions, Solver};
use mlp_common::{random_params, rel_err, teacher_data, RefNet};

type B64 = CpuBackend<f64>;
type Problem = MlpDistillBilevel<B64>;

const C: usize = 3;
const D: usize = 4;
const K: usize = 2;
const L2: f64 = 0.05;

/// The four networks of every test: (hidden widths, activation).
fn shapes() -> Vec<(Vec<usize>, Activation)> {
    vec![
        (vec![5], Activation::Tanh),
        (vec![5], Activation::Relu),
        (vec![4, 3], Activation::Tanh),
        (vec![4, 3], Activation::Relu),
    ]
}

/// Training and validation rows from a teacher network with one hidden layer.
fn data(seed: u64) -> (Dataset, Dataset) {
    let teacher = RefNet::new(&[D, 6, C], Activation::Tanh);
    let (all, _) = teacher_data(&teacher, 200, 2.0, seed);
    let train = all.select(&(0..150).collect::<Vec<_>>());
    let val = all.select(&(150..200).collect::<Vec<_>>());
    (train, val)
}

/// The problem at θ = K random training rows per class (w₀ from the same seed).
fn problem(hidden: &[usize], act: Activation, seed: u64) -> Problem {
    let (train, val) = data(seed);
    let theta = initial_theta(&train, C, K, DistillInit::Real, seed).unwrap();
    MlpDistillBilevel::new(B64::new(), C, K, hidden, act, &val, L2, &theta, seed).unwrap()
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

fn shifted(theta: &[f64], v: &[f64], eps: f64) -> Vec<f64> {
    theta.iter().zip(v).map(|(t, vi)| t + eps * vi).collect()
}

/// `∇_w g(w; θ)` (the problem's θ is restored afterwards).
fn inner_grad(p: &mut Problem, theta: &[f64], w: &[f64]) -> Vec<f64> {
    let keep = p.theta().to_vec();
    p.set_theta(theta).unwrap();
    let b = p.backend().clone();
    let mut g = b.zeros(w.len()).unwrap();
    p.inner_value_grad(&b.upload(w).unwrap(), Some(&mut g))
        .unwrap();
    p.set_theta(&keep).unwrap();
    b.download(&g).unwrap()
}

/// `B v` against `(∇g(θ + εv) − ∇g(θ − εv)) / 2ε` at a random network w (ε = 1e-5: O(ε²)
/// truncation and rounding, 1e-6 relative; relu's kinks are almost surely not within ε);
/// `Bᵀq` against `⟨q, B v⟩` (adjoint identity) and against central differences of the scalar
/// `⟨∇_w g(w; θ), q⟩` in every coordinate of θ; `cross_add`'s columns against `B e_i`.
#[test]
fn cross_derivative_matches_central_differences() {
    for (s, (hidden, act)) in shapes().into_iter().enumerate() {
        let seed = s as u64;
        let mut p = problem(&hidden, act, seed);
        let b = p.backend().clone();
        let big_p = p.inner_dim();
        let small_p = p.hyper_dim();
        assert_eq!(small_p, K * C * D);
        let mut sizes = vec![D];
        sizes.extend_from_slice(&hidden);
        sizes.push(C);
        let mut rng = Rng::new(100 + seed);
        let w = random_params(&RefNet::new(&sizes, act), 1.5, &mut rng);
        assert_eq!(w.len(), big_p);
        let wb = b.upload(&w).unwrap();
        let theta = p.theta().to_vec();
        let eps = 1e-5;
        let what = format!("{hidden:?} {}", act.name());
        for _ in 0..2 {
            let v = random(small_p, &mut rng);
            let gp = inner_grad(&mut p, &shifted(&theta, &v, eps), &w);
            let gm = inner_grad(&mut p, &shifted(&theta, &v, -eps), &w);
            let fd: Vec<f64> = gp
                .iter()
                .zip(&gm)
                .map(|(a, b)| (a - b) / (2.0 * eps))
                .collect();
            let bv = p.cross_apply(&wb, &v).unwrap();
            let e = rel_err(&bv, &fd);
            assert!(e < 1e-6, "{what}: B v vs central differences: {e:.2e}");

            let q = random(big_p, &mut rng);
            let btq = p.cross_t(&wb, &b.upload(&q).unwrap()).unwrap();
            let (lhs, rhs) = (dot(&q, &bv), dot(&btq, &v));
            assert!(
                (lhs - rhs).abs() <= 1e-12 * (lhs.abs() + rhs.abs() + 1.0),
                "{what}: ⟨q, Bv⟩ = {lhs} but ⟨Bᵀq, v⟩ = {rhs}"
            );
            let fd_t: Vec<f64> = (0..small_p)
                .map(|i| {
                    let mut e_i = vec![0.0; small_p];
                    e_i[i] = 1.0;
                    let plus = dot(&inner_grad(&mut p, &shifted(&theta, &e_i, eps), &w), &q);
                    let minus = dot(&inner_grad(&mut p, &shifted(&theta, &e_i, -eps), &w), &q);
                    (plus - minus) / (2.0 * eps)
                })
                .collect();
            let e = rel_err(&btq, &fd_t);
            assert!(e < 1e-6, "{what}: Bᵀq vs central differences: {e:.2e}");
        }
        // cross_add: α B as p columns of length P.
        let mut batch = b.zeros(big_p * small_p).unwrap();
        p.cross_add(&wb, 2.0, &mut batch).unwrap();
        let batch = b.download(&batch).unwrap();
        for i in [0, 5, small_p - 1] {
            let mut e_i = vec![0.0; small_p];
            e_i[i] = 1.0;
            let col: Vec<f64> = p
                .cross_apply(&wb, &e_i)
                .unwrap()
                .iter()
                .map(|x| 2.0 * x)
                .collect();
            let got = &batch[i * big_p..(i + 1) * big_p];
            assert!(rel_err(got, &col) < 1e-12, "{what}: column {i} of B");
        }
    }
}

/// Newton-CG to 1e-13 relative.
fn tight_inner() -> InnerOptions {
    InnerOptions {
        solver: Solver::Newton,
        tol: 1e-13,
        max_iters: 500,
        minibatch: Default::default(),
    }
}

fn opts(method: Method) -> Options {
    let mut o = Options::new(method, Precision::F64);
    o.inner = tight_inner();
    o.linear_tol = 1e-13;
    o
}

/// Central differences of `F(θ) = f(ŵ(θ))` in every coordinate of θ, the inner problem at
/// `θ ± δ e_j` solved from `w_hat` (so that it stays at the same local minimiser).
fn fd_hypergradient(p: &mut Problem, w_hat: &[f64], delta: f64) -> Vec<f64> {
    let theta = p.theta().to_vec();
    let start = p.backend().upload(w_hat).unwrap();
    let mut out = Vec::with_capacity(theta.len());
    for j in 0..theta.len() {
        let mut value = |sign: f64| {
            let mut t = theta.clone();
            t[j] += sign * delta;
            p.set_theta(&t).unwrap();
            let inner = solver::solve(&*p, Some(&start), &tight_inner()).unwrap();
            assert!(inner.converged, "inner solve at θ{sign:+}δe_{j}");
            p.outer_value_grad(&inner.w, None).unwrap()
        };
        let (plus, minus) = (value(1.0), value(-1.0));
        out.push((plus - minus) / (2.0 * delta));
    }
    p.set_theta(&theta).unwrap();
    out
}

/// `exact` and `cg` against central differences of F (δ = 1e-5, inner solves tight to 1e-13:
/// 1e-6 relative), tanh networks with one and two hidden layers.
#[test]
fn exact_and_cg_match_central_differences_of_the_outer_objective() {
    for (hidden, act) in shapes().into_iter().filter(|(_, a)| *a == Activation::Tanh) {
        for seed in [10, 11] {
            let mut p = problem(&hidden, act, seed);
            let what = format!("{hidden:?} {} seed {seed}", act.name());
            let exact = compute(&p, &opts(Method::Exact), None).unwrap();
            assert!(exact.inner_converged, "{what}: inner solve");
            assert_eq!(exact.error_bound, None);
            let cg = compute(&p, &opts(Method::Cg), None).unwrap();
            let fd = fd_hypergradient(&mut p, &exact.w, 1e-5);
            let e = rel_err(&exact.hypergradient, &fd);
            assert!(e < 1e-6, "{what}: exact vs central differences {e:.2e}");
            let e = rel_err(&cg.hypergradient, &fd);
            assert!(e < 1e-6, "{what}: cg vs central differences {e:.2e}");
        }
    }
}

/// A relu network trained on a handful of rows rarely has a smooth strict local minimum (see
/// `tests/mlp_hypergrad.rs`): a unit dead on every synthetic row leaves its bias flat, so
/// `exact` refuses the singular Hessian, and most minima sit on a kink where Newton-CG stalls
/// (and F has no derivative). On seeds where the inner solve does converge (the premise), the
/// flat directions are flat for `f` and `B` too, CG never enters them, and its hypergradient is
/// F's derivative; `exact` either agrees or says the Hessian is not positive definite.
#[test]
fn relu_cg_matches_central_differences_where_the_inner_solve_converges() {
    for (hidden, seed) in [(vec![3], 29), (vec![4, 3], 22)] {
        let mut p = problem(&hidden, Activation::Relu, seed);
        let what = format!("{hidden:?} relu seed {seed}");
        let cg = compute(&p, &opts(Method::Cg), None).unwrap();
        assert!(
            cg.inner_converged,
            "{what}: premise: the inner solve converges"
        );
        let fd = fd_hypergradient(&mut p, &cg.w, 1e-5);
        let e = rel_err(&cg.hypergradient, &fd);
        assert!(e < 1e-6, "{what}: cg vs central differences {e:.2e}");
        match compute(&p, &opts(Method::Exact), None) {
            Ok(exact) => {
                let agree = rel_err(&exact.hypergradient, &cg.hypergradient);
                assert!(agree < 1e-9, "{what}: exact vs cg {agree:.2e}");
            }
            Err(e) => assert!(e.to_string().contains("not positive definite"), "{e}"),
        }
    }
}

/// Every deterministic method against `exact` (tanh networks: a relu one's Hessian is
/// singular, see above): cg to 1e-8; neumann and fixed-point (their step from `H(ŵ)`) with
/// enough terms to 1e-6; `unroll` equals `forward` (two code paths through B: `Bᵀq` per step
/// against B's columns) and, through enough steps that `w_T` has converged, equals `exact` at
/// `w_T`'s minimiser.
#[test]
fn every_method_agrees_with_exact() {
    let tanh = shapes().into_iter().filter(|(_, a)| *a == Activation::Tanh);
    for (s, (hidden, act)) in tanh.enumerate() {
        let p = problem(&hidden, act, 20 + s as u64);
        let what = format!("{hidden:?} {}", act.name());
        let run = |method: Method, tweak: &dyn Fn(&mut Options)| {
            let mut o = opts(method);
            tweak(&mut o);
            compute(&p, &o, None).unwrap()
        };
        let reference = run(Method::Exact, &|_| {}).hypergradient;
        let cg = run(Method::Cg, &|_| {}).hypergradient;
        let e = rel_err(&cg, &reference);
        assert!(e < 1e-8, "{what}: cg {e:.2e}");
        for method in [Method::Neumann, Method::FixedPoint] {
            let h = run(method, &|o| o.linear_iters = Some(20_000)).hypergradient;
            let e = rel_err(&h, &reference);
            assert!(e < 1e-6, "{what}: {}: {e:.2e}", method.name());
        }
        // A network has no global step: unroll and forward take one (`--step`). They compute
        // the same derivative through any T steps (forward's P×p Jacobian makes it the costly
        // one: 300 steps); through 20,000, w_T and the derivative have converged.
        let trajectory = |method: Method, steps: usize| {
            run(method, &|o| {
                o.step = Some(0.5);
                o.unroll_steps = steps;
            })
        };
        let e = rel_err(
            &trajectory(Method::Forward, 300).hypergradient,
            &trajectory(Method::Unroll, 300).hypergradient,
        );
        assert!(e < 1e-9, "{what}: forward vs unroll {e:.2e}");
        let unroll = trajectory(Method::Unroll, 20_000);
        let start = p.backend().upload(&unroll.w).unwrap();
        let at_end = compute(&p, &opts(Method::Exact), Some(&start)).unwrap();
        let e = rel_err(&unroll.hypergradient, &at_end.hypergradient);
        assert!(e < 1e-6, "{what}: unroll vs exact at w_T {e:.2e}");
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

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn network_settings(hidden: &[usize]) -> Settings {
    Settings {
        model: ModelSpec::Mlp {
            hidden: hidden.to_vec(),
        },
        images_per_class: K,
        l2: L2,
        device: cpu(),
        ..Default::default()
    }
}

/// NHGD (kfac) replaces H by the damped empirical Fisher of its SGD steps, so it is not the
/// exact hypergradient; through the API it returns p finite entries at the same θ as `exact`,
/// and points downhill (a positive inner product with exact's).
#[test]
fn nhgd_through_the_api_returns_a_descent_direction() {
    let mut settings = Settings {
        method: Some(hypergrad::api::names::MethodName::Nhgd),
        inner_steps: 2000,
        ..network_settings(&[5])
    };
    let request = Request::new("distill", settings.clone()).unwrap();
    let report = api::grad(&request, &splits(0).into()).unwrap().to_json();
    let h = floats(&report["hypergradient"]);
    assert_eq!(h.len(), K * C * D);
    assert!(h.iter().all(|x| x.is_finite()));
    assert_eq!(report["problem"], "distill");
    assert_eq!(report["model"], "mlp:5");
    assert_eq!(report["parameters"], (D + 1) * 5 + 6 * C);
    settings.method = Some(hypergrad::api::names::MethodName::Exact);
    let request = Request::new("distill", settings).unwrap();
    let exact = api::grad(&request, &splits(0).into()).unwrap().to_json();
    assert_eq!(report["theta"], exact["theta"]);
    let e = floats(&exact["hypergradient"]);
    let cos = dot(&h, &e) / (norm(&h) * norm(&e));
    assert!(cos > 0.0, "nhgd vs exact: cosine {cos}");
}

/// `run` through the API with a network lowers F (cg, and nhgd warm-started), and `--retrain`
/// reports an accuracy in [0, 1]; the outcome describes the network.
#[test]
fn run_lowers_the_outer_loss_and_retrains() {
    for method in [
        hypergrad::api::names::MethodName::Cg,
        hypergrad::api::names::MethodName::Nhgd,
    ] {
        let settings = Settings {
            method: Some(method),
            outer_steps: 20,
            retrain: true,
            inner_steps: 100,
            ..network_settings(&[5])
        };
        let request = Request::new("distill", settings).unwrap();
        let outcome = api::run(&request, &splits(1).into(), &mut |_| Ok(())).unwrap();
        let trace = outcome.trace();
        let f0 = trace[0]["outer_loss"].as_f64().unwrap();
        let f1 = trace.last().unwrap()["outer_loss"].as_f64().unwrap();
        assert!(f1 < f0, "{method:?}: F went from {f0} to {f1}");
        let json = outcome.to_json();
        let acc = json["retrain_test_accuracy"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        assert_eq!(json["layer_sizes"], serde_json::json!([D, 5, C]));
        assert_eq!(json["coef"].as_array().unwrap().len(), (D + 1) * 5 + 6 * C);
    }
}

// ---- the command line ----------------------------------------------------------------------

/// A short warm-start run on digits with one hidden layer of 16 and `--retrain`: F falls, the
/// JSON describes the network (layers 64, 16, 10; θ of 10·64 entries), the run's model and the retrained one classify digits far better than chance, and
/// the table says which model it trained.
#[test]
fn cli_run_on_digits_with_a_network_and_retrain() {
    let args = [
        "run",
        "--problem",
        "distill",
        "--train",
        "digits",
        "--standardize",
        "--device",
        "cpu",
        "--model",
        "mlp:16",
        "--outer-steps",
        "10",
        "--retrain",
    ];
    let mut with_json = args.to_vec();
    with_json.push("--json");
    let v = json_of(&hypergrad(&with_json));
    assert_eq!(v["problem"], "distill");
    assert_eq!(v["model"], "mlp:16");
    assert_eq!(v["activation"], "tanh");
    assert_eq!(v["layer_sizes"], serde_json::json!([64, 16, 10]));
    assert_eq!(v["theta"].as_array().unwrap().len(), 640);
    assert_eq!(v["device"], "cpu-f64");
    let fin = &v["final"];
    assert_eq!(fin["step"], 10);
    let acc = fin["test_accuracy"].as_f64().unwrap();
    let re = v["retrain_test_accuracy"].as_f64().unwrap();
    assert!(acc > 0.5 && re > 0.5, "test accuracy {acc}, retrained {re}");
    let out = hypergrad(&args);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("retrain"), "{table}");
    assert!(table.contains("mlp:16"), "{table}");
}

/// With a network the device is opened as for the linear model: without a usable GPU,
/// `--device cuda` fails in one line for want of a device only, and `auto` runs on the CPU and
/// says why (with one, both run on it: `tests/mlp_cuda_parity.rs` and `scripts/gpu_check.sh`
/// stage 8). MAID (which steers by error bounds) and the stochastic baselines are refused.
#[test]
fn cli_network_refusals_and_device_note() {
    let base = [
        "grad",
        "--problem",
        "distill",
        "--train",
        "digits",
        "--model",
        "mlp:8",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        hypergrad(&args)
    };
    if hypergrad::backend::cuda::probe().devices.is_empty() {
        let out = with(&["--device", "cuda"]);
        assert_one_line_error(&out, "--device cuda: no usable CUDA device");
        let v = json_of(&with(&["--device", "auto", "--json"]));
        assert_eq!(v["device"], "cpu-f64");
        let note = v["device_note"].as_str().unwrap();
        assert!(
            note.starts_with("auto chose the CPU") && note.contains("no usable CUDA device"),
            "{note}"
        );
    }
    assert_one_line_error(&with(&["--device", "cpu", "--method", "soba"]), "--method");
    let mut args = base.to_vec();
    args[0] = "run";
    args.extend([
        "--device",
        "cpu",
        "--outer-opt",
        "maid",
        "--outer-steps",
        "1",
    ]);
    assert_one_line_error(&hypergrad(&args), "maid");
}
