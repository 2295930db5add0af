//! The outer loop (`hypergrad::outer`): checkpoint/resume, the stochastic baselines against
//! the exact hypergradient, MAID's monotone decrease, and Vicol et al.'s implicit-bias
//! observable of warm versus cold start.

mod common;

use common::{rel_err, B64};
use hypergrad::backend::Precision;
use hypergrad::data::rng::Rng;
use hypergrad::hypergrad::stochastic::{StochasticEstimator, StochasticOptions};
use hypergrad::hypergrad::{compute, Method, Options};
use hypergrad::outer::{self, Estimator, OuterOpt, RunConfig};
use hypergrad::problem::{Bilevel, GlmBilevel, HyperLayout, ProblemKind};

fn adam() -> OuterOpt {
    OuterOpt::Adam(outer::Adam::new(0.1))
}

fn nhgd_run(steps: u64, checkpoint: Option<&std::path::Path>) -> Vec<f64> {
    nhgd_run_every(steps, checkpoint, 1, |_| {})
}

/// [`nhgd_run`] checkpointing every `every` steps, calling `seen(step)` as each record goes
/// out (before that step's checkpoint is written).
fn nhgd_run_every(
    steps: u64,
    checkpoint: Option<&std::path::Path>,
    every: u64,
    mut seen: impl FnMut(u64),
) -> Vec<f64> {
    let (train, val) = common::datasets(ProblemKind::Hyperclean, 120, 40, 5, 3);
    let mut problem = GlmBilevel::new(
        B64::new(),
        ProblemKind::Hyperclean,
        HyperLayout::PerSample,
        &train,
        &val,
        0.1,
    )
    .unwrap();
    let mut opts = StochasticOptions::new(Method::Nhgd);
    opts.inner_steps = 10;
    opts.batch = 8;
    opts.seed = 42;
    let mut estimator = Estimator::Stochastic(Box::new(
        StochasticEstimator::new(&problem, &train, opts).unwrap(),
    ));
    let config = RunConfig {
        outer_steps: steps,
        opt: adam(),
        test: None,
        fingerprint: "test".into(),
        checkpoint,
        checkpoint_every: every,
    };
    outer::run(&mut problem, &mut estimator, &config, |r| {
        seen(r.step);
        Ok(())
    })
    .unwrap();
    problem.theta().to_vec()
}

/// `--checkpoint-every 3` over steps 0..=6: the file holds the state after step 2, then after
/// step 5 (the last update), and nothing in between; resuming from step 5 ends where the
/// uninterrupted run does.
#[test]
fn checkpoints_every_k_steps_and_after_the_last() {
    let dir = std::env::temp_dir().join(format!("hg-ckpt-every-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.ckpt");
    let _ = std::fs::remove_file(&path);
    let step_on_disk = || outer::Checkpoint::load(&path).unwrap().map(|c| c.step);
    let mut on_disk = Vec::new();
    nhgd_run_every(6, Some(&path), 3, |_| on_disk.push(step_on_disk()));
    // Records of steps 0..=6 go out before their step's checkpoint: the file then holds
    // the last state saved, after step 2 (3 % 3 == 0) and after step 5 (the last update).
    assert_eq!(
        on_disk,
        [None, None, None, Some(2), Some(2), Some(2), Some(5)]
    );
    assert_eq!(step_on_disk(), Some(5));
    let straight = nhgd_run(9, None);
    let resumed = nhgd_run_every(9, Some(&path), 3, |_| {});
    assert!(rel_err(&resumed, &straight) <= 1e-12);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_interrupted_run_resumes_and_ends_where_an_uninterrupted_one_does() {
    let dir = std::env::temp_dir().join(format!("hg-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.ckpt");
    let _ = std::fs::remove_file(&path);
    let straight = nhgd_run(6, None);
    let first_half = nhgd_run(3, Some(&path));
    assert_ne!(
        first_half, straight,
        "the first half must not already be the end"
    );
    let resumed = nhgd_run(6, Some(&path));
    let err = rel_err(&resumed, &straight);
    assert!(
        err <= 1e-12,
        "resumed run ends {err:e} away from the uninterrupted one"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (common::norm(a) * common::norm(b))
}

#[test]
fn stochastic_baselines_point_where_the_exact_hypergradient_points() {
    let (train, val) = common::datasets(ProblemKind::Logreg, 400, 100, 5, 8);
    let mut problem = GlmBilevel::new(
        B64::new(),
        ProblemKind::Logreg,
        HyperLayout::PerFeature,
        &train,
        &val,
        1.0,
    )
    .unwrap();
    problem.set_theta(&[-1.0, -2.0, 0.0, -3.0, -1.5]).unwrap();
    let exact = compute(
        &problem,
        &common::tight(Options::new(Method::Exact, Precision::F64)),
        None,
    )
    .unwrap()
    .hypergradient;
    for method in [Method::Nhgd, Method::Stocbio, Method::Amigo, Method::Soba] {
        let mut opts = StochasticOptions::new(method);
        opts.inner_steps = if method == Method::Soba { 20 } else { 400 };
        opts.batch = 40;
        opts.linear_steps = 200;
        opts.seed = 1;
        let mut est = StochasticEstimator::new(&problem, &train, opts).unwrap();
        // Warm starts carry w (and q for amigo/soba) from one estimate to the next.
        let mut h = Vec::new();
        for step in 0..(if method == Method::Soba { 30 } else { 2 }) {
            h = est.estimate(&problem, step).unwrap().0.hypergradient;
        }
        let cos = cosine(&h, &exact);
        common::note(|| {
            format!(
                "{method:?}: cosine {cos:.4}, relative error {:.3}",
                rel_err(&h, &exact)
            )
        });
        assert!(
            cos >= 0.9,
            "{method:?}: cosine with the exact hypergradient {cos:.3}"
        );
    }
}

#[test]
fn maid_accepts_only_decreasing_steps_and_adapts_its_tolerances() {
    let (train, val) = common::datasets(ProblemKind::Ridge, 60, 40, 8, 5);
    let mut problem = GlmBilevel::new(
        B64::new(),
        ProblemKind::Ridge,
        HyperLayout::PerFeature,
        &train,
        &val,
        1.0,
    )
    .unwrap();
    problem.set_theta(&[2.0; 8]).unwrap();
    let mut opts = Options::new(Method::Cg, Precision::F64);
    opts.inner.tol = 1e-4;
    opts.linear_tol = 1e-4;
    let mut estimator = Estimator::Deterministic {
        opts,
        warm: true,
        w: None,
    };
    let config = RunConfig {
        outer_steps: 15,
        opt: OuterOpt::Maid { lr: 1.0 },
        test: None,
        fingerprint: "maid".into(),
        checkpoint: None,
        checkpoint_every: 1,
    };
    let outcome = outer::run(&mut problem, &mut estimator, &config, |_| Ok(())).unwrap();
    let losses: Vec<f64> = outcome.records.iter().map(|r| r.outer_loss).collect();
    for pair in losses.windows(2) {
        // Values are inexact at tolerance ε: allow that much slack, no more.
        assert!(
            pair[1] <= pair[0] + 1e-6 * pair[0].abs(),
            "outer loss rose: {losses:?}"
        );
    }
    assert!(
        losses.last().unwrap() < &(0.9 * losses[0]),
        "no progress: {losses:?}"
    );
    let tols: Vec<f64> = outcome.records.iter().filter_map(|r| r.inner_tol).collect();
    assert!(
        tols.iter().any(|&t| t < 1e-4),
        "MAID never tightened: {tols:?}"
    );
    for r in &outcome.records {
        let bound = r.error_bound.expect("cg has a bound on ridge");
        assert!(bound <= 0.5 * r.hypergradient_norm || r.inner_tol <= Some(1e-13));
    }
}

// ---- Vicol et al.: implicit bias of warm versus cold start ----------------------------------

/// Overparameterised least squares: k < d synthetic rows `θ` (k×d, learnt), fixed targets
/// `t`; inner `g(w) = ½‖θw − t‖²` by T gradient steps from `w₀`; outer
/// `F = (1/m)‖X'w − y'‖²`. Returns `w_T`.
fn inner_gd(theta: &[f64], t: &[f64], w0: &[f64], d: usize, steps: usize) -> Vec<f64> {
    let k = t.len();
    let lipschitz: f64 = theta.iter().map(|v| v * v).sum::<f64>().max(1e-12);
    let eta = 1.0 / lipschitz;
    let mut w = w0.to_vec();
    for _ in 0..steps {
        let r: Vec<f64> = (0..k)
            .map(|i| (0..d).map(|j| theta[i * d + j] * w[j]).sum::<f64>() - t[i])
            .collect();
        for j in 0..d {
            w[j] -= eta * (0..k).map(|i| theta[i * d + j] * r[i]).sum::<f64>();
        }
    }
    w
}

fn outer_loss(x: &[f64], y: &[f64], w: &[f64], d: usize) -> f64 {
    let m = y.len();
    (0..m)
        .map(|i| ((0..d).map(|j| x[i * d + j] * w[j]).sum::<f64>() - y[i]).powi(2))
        .sum::<f64>()
        / m as f64
}

/// ‖(I − P)w‖ with P the projector on the row space of θ (k×d): the null-space component.
fn null_space_component(theta: &[f64], w: &[f64], k: usize, d: usize) -> f64 {
    let mut gram: Vec<f64> = (0..k * k)
        .map(|e| {
            (0..d)
                .map(|j| theta[(e / k) * d + j] * theta[(e % k) * d + j])
                .sum()
        })
        .collect();
    hypergrad::linalg::cholesky(&mut gram, k).unwrap();
    let mut coef: Vec<f64> = (0..k)
        .map(|i| (0..d).map(|j| theta[i * d + j] * w[j]).sum())
        .collect();
    hypergrad::linalg::cholesky_solve_in_place(&gram, k, &mut coef);
    let residual: Vec<f64> = (0..d)
        .map(|j| w[j] - (0..k).map(|i| theta[i * d + j] * coef[i]).sum::<f64>())
        .collect();
    common::norm(&residual)
}

/// Runs the outer loop with central-difference hypergradients through the T-step inner
/// solve; returns (final outer loss, null-space component of the final w).
fn distill(warm: bool) -> (f64, f64) {
    let (k, d, m, steps, outer_steps) = (2, 12, 40, 20, 100);
    let mut rng = Rng::new(17);
    let w_true: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
    let x: Vec<f64> = (0..m * d).map(|_| rng.normal()).collect();
    let y: Vec<f64> = (0..m)
        .map(|i| (0..d).map(|j| x[i * d + j] * w_true[j]).sum())
        .collect();
    let t = vec![1.0; k];
    let mut theta: Vec<f64> = (0..k * d)
        .map(|_| rng.normal() / (d as f64).sqrt())
        .collect();
    let mut w = vec![0.0; d];
    let lr = 0.02;
    for _ in 0..outer_steps {
        let start = if warm { w.clone() } else { vec![0.0; d] };
        let f = |theta: &[f64]| outer_loss(&x, &y, &inner_gd(theta, &t, &start, d, steps), d);
        let h: Vec<f64> = (0..k * d)
            .map(|e| {
                let step = 1e-6;
                let mut plus = theta.clone();
                plus[e] += step;
                let mut minus = theta.clone();
                minus[e] -= step;
                (f(&plus) - f(&minus)) / (2.0 * step)
            })
            .collect();
        for (th, g) in theta.iter_mut().zip(&h) {
            *th -= lr * g;
        }
        w = inner_gd(&theta, &t, &start, d, steps);
    }
    (
        outer_loss(&x, &y, &w, d),
        null_space_component(&theta, &w, k, d),
    )
}

/// The null-space observable holds for every configuration we tried; the lower outer loss
/// of warm start depends on the step size and T in this toy (k = 2, outer lr 0.02, T = 20:
/// cold 0.95, warm 0.51; with lr 0.005 or T = 60 cold start ends lower), so only this
/// configuration is asserted.
#[test]
fn warm_start_keeps_a_null_space_component_and_reaches_a_lower_outer_loss() {
    let (cold_loss, cold_null) = distill(false);
    let (warm_loss, warm_null) = distill(true);
    common::note(|| {
        format!("cold: F = {cold_loss:.4e}, null component {cold_null:.2e}; warm: F = {warm_loss:.4e}, null component {warm_null:.2e}")
    });
    assert!(
        cold_null <= 1e-8,
        "cold start left a null-space component {cold_null:e}"
    );
    assert!(
        warm_null >= 1e-2,
        "warm start has no null-space component ({warm_null:e})"
    );
    assert!(
        warm_loss < cold_loss,
        "warm {warm_loss:e} is not below cold {cold_loss:e}"
    );
}
