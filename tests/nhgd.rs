//! NHGD (SPEC §5) against independent references, in f64 on the CPU:
//!
//! * the tracked inverse (dense, Sherman–Morrison b = 1 and Woodbury rank b) equals the
//!   explicit inverse of `R + (1/N) Σ s g gᵀ` built on the host from the same per-sample
//!   gradients; the accumulate path gives the same q; `kfac` equals its Kronecker definition;
//!   `lowrank` equals the dense solve with its own factor, and its sketch is unbiased;
//! * at the inner optimum of well-specified logistic / softmax data, the NHGD hypergradient
//!   approaches the exact IFT hypergradient as n grows.

mod common;

use common::{rel_err, B64};
use hypergrad::backend::Precision;
use hypergrad::backend::{Backend, GlmOps};
use hypergrad::data::rng::Rng;
use hypergrad::data::{synthetic, Dataset};
use hypergrad::hypergrad::fisher::{
    spd_inverse, Averaging, DenseUpdate, FisherSpec, FisherTracker, Regulariser, Representation,
    StepInputs,
};
use hypergrad::hypergrad::{compute, Method, Options};
use hypergrad::problem::{Bilevel, GlmBilevel, HyperLayout, InnerProblem, ProblemKind};

/// What one tracked inner loop produced, with the host's own accumulation of the same terms.
struct Tracked {
    tracker: FisherTracker<B64>,
    /// `(1/N) Σ s g gᵀ` (P×P), `(1/N) Σ x xᵀ` (d×d), `(1/N) Σ s G Gᵀ` (c×c), on the host.
    fisher: Vec<f64>,
    xx: Vec<f64>,
    gg: Vec<f64>,
    /// The sketches used, back to back, and the per-sample gradient rows √s g (N×P).
    rows: Vec<f64>,
    sketches: Vec<Vec<f64>>,
}

/// Runs T SGD steps of `problem` (training rows `train`) with batch b, feeding a tracker of
/// `spec` and accumulating the same Fisher terms on the host from the factors and the rows.
fn track(problem: &GlmBilevel<B64>, train: &Dataset, spec: FisherSpec, seed: u64) -> Tracked {
    let b = problem.backend();
    let view = problem.train_view();
    let (c, d) = problem.shape();
    let p = c * d;
    let n_total = (spec.batch * spec.steps) as f64;
    let mut tracker = FisherTracker::start(b, &spec, view.reg_diag).unwrap();
    let mut rng = Rng::new(seed);
    let mut w = b.zeros(p).unwrap();
    let mut factors = b.zeros(spec.batch * c).unwrap();
    let mut grads = b.zeros(spec.batch * p).unwrap();
    let (mut fisher, mut xx, mut gg) = (vec![0.0; p * p], vec![0.0; d * d], vec![0.0; c * c]);
    let (mut rows_out, mut sketches) = (Vec::new(), Vec::new());
    for _ in 0..spec.steps {
        let rows: Vec<u32> = (0..spec.batch).map(|_| rng.below(view.n) as u32).collect();
        let s: Vec<f64> = rows
            .iter()
            .map(|&r| view.weights_host.map_or(1.0, |s| s[r as usize]))
            .collect();
        let root: Vec<f64> = s.iter().map(|v| v.sqrt()).collect();
        let weighted = view.weights_host.is_some();
        let (s_buf, root_buf) = (b.upload(&s).unwrap(), b.upload(&root).unwrap());
        let device_rows = b.upload_rows(&rows, view.n).unwrap();
        b.glm_sgd_step(
            view.x,
            view.loss,
            view.y,
            view.weights,
            &device_rows,
            view.reg_diag,
            0.05,
            &mut w,
            &mut factors,
        )
        .unwrap();
        let sketch = match spec.representation {
            Representation::Lowrank { rank } => {
                let v: Vec<f64> = (0..rank * spec.batch)
                    .map(|_| if rng.uniform() < 0.5 { 1.0 } else { -1.0 } / (rank as f64).sqrt())
                    .collect();
                sketches.push(v.clone());
                Some(b.upload(&v).unwrap())
            }
            _ => None,
        };
        let inputs = StepInputs {
            x: view.x,
            rows: &device_rows,
            factors: &factors,
            sqrt_weights: weighted.then_some(&root_buf),
            weights: weighted.then_some(&s_buf),
            sketch: sketch.as_ref(),
        };
        tracker.update(b, &spec, &inputs, &mut grads).unwrap();
        // The host's own accumulation, from the factors and the data rows.
        let g = b.download(&factors).unwrap();
        for (pos, &r) in rows.iter().enumerate() {
            let x = train.x.row(r as usize).to_vec();
            let gi = &g[pos * c..(pos + 1) * c];
            let vec: Vec<f64> = (0..p).map(|e| root[pos] * gi[e / d] * x[e % d]).collect();
            for i in 0..p {
                for j in 0..p {
                    fisher[i * p + j] += vec[i] * vec[j] / n_total;
                }
            }
            for i in 0..d {
                for j in 0..d {
                    xx[i * d + j] += x[i] * x[j] / n_total;
                }
            }
            for k in 0..c {
                for l in 0..c {
                    gg[k * c + l] += s[pos] * gi[k] * gi[l] / n_total;
                }
            }
            rows_out.extend(vec);
        }
    }
    Tracked {
        tracker,
        fisher,
        xx,
        gg,
        rows: rows_out,
        sketches,
    }
}

/// A small problem of `kind` with uneven θ, and its training rows.
fn problem(kind: ProblemKind, n: usize, d: usize, seed: u64) -> (GlmBilevel<B64>, Dataset) {
    let (train, val) = common::datasets(kind, n, 20, d, seed);
    let mut p =
        GlmBilevel::new(B64::new(), kind, kind.default_layout(), &train, &val, 0.3).unwrap();
    let theta: Vec<f64> = (0..p.hyper_dim())
        .map(|i| -1.0 + 0.37 * (i % 5) as f64)
        .collect();
    p.set_theta(&theta).unwrap();
    (p, train)
}

fn spec(
    problem: &GlmBilevel<B64>,
    representation: Representation,
    dense_update: DenseUpdate,
    batch: usize,
    steps: usize,
) -> FisherSpec {
    FisherSpec {
        representation,
        dense_update,
        averaging: Averaging::Mean,
        batch,
        steps,
        shape: problem.shape(),
    }
}

fn reg_diag_host(problem: &GlmBilevel<B64>) -> Vec<f64> {
    problem
        .backend()
        .download(problem.train_view().reg_diag)
        .unwrap()
}

fn apply(problem: &GlmBilevel<B64>, tracker: &FisherTracker<B64>, a: &[f64]) -> Vec<f64> {
    apply_on(problem.backend(), problem, tracker, a)
}

/// [`apply`] on another backend of the same type (one that picks another linear solve).
fn apply_on(
    b: &B64,
    problem: &GlmBilevel<B64>,
    tracker: &FisherTracker<B64>,
    a: &[f64],
) -> Vec<f64> {
    let (q, _) = tracker
        .apply_inverse(b, &regulariser(problem), &b.upload(a).unwrap(), 1e-13)
        .unwrap();
    b.download(&q).unwrap()
}

/// The problem's `R`, as NHGD's curvature applies it.
fn regulariser(problem: &GlmBilevel<B64>) -> Regulariser<'_, B64> {
    let view = problem.train_view();
    Regulariser {
        backend: problem.backend(),
        diag: view.reg_diag,
        groups: view.groups,
        lambda: view.lambda,
    }
}

fn dense_matvec(a: &[f64], v: &[f64]) -> Vec<f64> {
    let p = v.len();
    (0..p)
        .map(|i| (0..p).map(|j| a[i * p + j] * v[j]).sum())
        .collect()
}

#[test]
fn dense_woodbury_tracks_the_exact_inverse_rank_1_and_rank_b() {
    for kind in [
        ProblemKind::Logreg,
        ProblemKind::Softmax,
        ProblemKind::Hyperclean,
    ] {
        for (batch, steps) in [(1, 40), (7, 12)] {
            let (problem, train) = problem(kind, 60, 4, 11);
            let sp = spec(
                &problem,
                Representation::Dense,
                DenseUpdate::Woodbury,
                batch,
                steps,
            );
            let t = track(&problem, &train, sp, 5);
            let p = problem.inner_dim();
            let mut h = t.fisher.clone();
            for (i, r) in reg_diag_host(&problem).iter().enumerate() {
                h[i * p + i] += r;
            }
            let explicit = spd_inverse(h, p, "Ĥ").unwrap();
            let FisherTracker::DenseInverse { a, .. } = &t.tracker else {
                panic!("dense woodbury keeps the inverse")
            };
            let err = rel_err(a, &explicit);
            assert!(
                err <= 1e-8,
                "{kind:?} b={batch}: tracked inverse off by {err:e}"
            );
        }
    }
}

#[test]
fn dense_accumulate_solves_the_same_system() {
    let (problem, train) = problem(ProblemKind::Hyperclean, 50, 3, 3);
    let p = problem.inner_dim();
    let a: Vec<f64> = (0..p).map(|i| (i as f64 * 0.7).sin()).collect();
    let wood = track(
        &problem,
        &train,
        spec(
            &problem,
            Representation::Dense,
            DenseUpdate::Woodbury,
            5,
            10,
        ),
        9,
    );
    let acc = track(
        &problem,
        &train,
        spec(
            &problem,
            Representation::Dense,
            DenseUpdate::Accumulate,
            5,
            10,
        ),
        9,
    );
    let FisherTracker::DenseFisher { f, .. } = &acc.tracker else {
        panic!("accumulate keeps F")
    };
    assert!(rel_err(f, &acc.fisher) <= 1e-12);
    let err = rel_err(
        &apply(&problem, &acc.tracker, &a),
        &apply(&problem, &wood.tracker, &a),
    );
    assert!(err <= 1e-9, "accumulate vs woodbury: {err:e}");
    // The direct path (Cholesky of F + R, as on CUDA) solves the same system.
    let direct = B64::new().with_direct_solve_max_dim(usize::MAX);
    let err = rel_err(
        &apply_on(&direct, &problem, &acc.tracker, &a),
        &apply(&problem, &wood.tracker, &a),
    );
    assert!(err <= 1e-9, "accumulate by Cholesky vs woodbury: {err:e}");
}

#[test]
fn kfac_equals_its_kronecker_definition() {
    for kind in [ProblemKind::Softmax, ProblemKind::Hyperclean] {
        let (problem, train) = problem(kind, 70, 4, 21);
        let (c, d) = problem.shape();
        let t = track(
            &problem,
            &train,
            spec(&problem, Representation::Kfac, DenseUpdate::Woodbury, 6, 9),
            2,
        );
        let FisherTracker::Kfac { xx, gg, .. } = &t.tracker else {
            panic!("kfac keeps two factors")
        };
        assert!(rel_err(xx, &t.xx) <= 1e-12, "XX factor");
        assert!(rel_err(gg, &t.gg) <= 1e-12, "GG factor");
        // The damped Kronecker product written out densely: (GG + Λ/π) ⊗ (XX + πI).
        let lambda = problem.lambda().to_vec();
        let lambda = if lambda.len() == 1 {
            vec![lambda[0]; c]
        } else {
            lambda
        };
        let mean = lambda.iter().sum::<f64>() / c as f64;
        let tr_x = (0..d).map(|j| t.xx[j * d + j]).sum::<f64>() / d as f64;
        let tr_g = (0..c).map(|k| t.gg[k * c + k]).sum::<f64>() / c as f64;
        let pi = (mean * tr_x / tr_g).sqrt();
        let p = c * d;
        let mut kron = vec![0.0; p * p];
        for k in 0..c {
            for l in 0..c {
                let g = t.gg[k * c + l] + if k == l { lambda[k] / pi } else { 0.0 };
                for i in 0..d {
                    for j in 0..d {
                        let x = t.xx[i * d + j] + if i == j { pi } else { 0.0 };
                        kron[(k * d + i) * p + l * d + j] = g * x;
                    }
                }
            }
        }
        let a: Vec<f64> = (0..p).map(|i| 1.0 + (i as f64).cos()).collect();
        let expected = dense_matvec(&spd_inverse(kron, p, "kron").unwrap(), &a);
        let err = rel_err(&apply(&problem, &t.tracker, &a), &expected);
        assert!(err <= 1e-10, "{kind:?}: kfac apply off by {err:e}");
    }
}

#[test]
fn lowrank_applies_the_inverse_of_its_own_factor_and_its_sketch_is_unbiased() {
    let (problem, train) = problem(ProblemKind::Softmax, 80, 3, 4);
    let p = problem.inner_dim();
    let rank = 5;
    let t = track(
        &problem,
        &train,
        spec(
            &problem,
            Representation::Lowrank { rank },
            DenseUpdate::Woodbury,
            4,
            6,
        ),
        8,
    );
    let FisherTracker::Lowrank { u, .. } = &t.tracker else {
        panic!("lowrank keeps U")
    };
    // The factor is Σ_t N^{-1/2} S_t G_t, from the host's gradients and sketches.
    let n_total: f64 = 24.0;
    let mut u_host = vec![0.0; rank * p];
    for (step, s) in t.sketches.iter().enumerate() {
        for j in 0..rank {
            for pos in 0..4 {
                let row = &t.rows[(step * 4 + pos) * p..(step * 4 + pos + 1) * p];
                for e in 0..p {
                    u_host[j * p + e] += s[j * 4 + pos] * row[e] / n_total.sqrt();
                }
            }
        }
    }
    assert!(rel_err(u, &u_host) <= 1e-12, "sketch factor");
    let mut h = vec![0.0; p * p];
    for i in 0..p {
        for j in 0..p {
            h[i * p + j] = (0..rank)
                .map(|k| u_host[k * p + i] * u_host[k * p + j])
                .sum();
        }
    }
    for (i, r) in reg_diag_host(&problem).iter().enumerate() {
        h[i * p + i] += r;
    }
    let a: Vec<f64> = (0..p).map(|i| (i as f64 * 1.3).sin()).collect();
    let expected = dense_matvec(&spd_inverse(h, p, "R + UᵀU").unwrap(), &a);
    let err = rel_err(&apply(&problem, &t.tracker, &a), &expected);
    assert!(err <= 1e-10, "lowrank apply off by {err:e}");

    // Unbiased: with a wide sketch UᵀU concentrates on F (relative spread ~ 1/√r).
    let wide = 3000;
    let t = track(
        &problem,
        &train,
        spec(
            &problem,
            Representation::Lowrank { rank: wide },
            DenseUpdate::Woodbury,
            4,
            6,
        ),
        8,
    );
    let FisherTracker::Lowrank { u, .. } = &t.tracker else {
        unreachable!()
    };
    let mut utu = vec![0.0; p * p];
    for i in 0..p {
        for j in 0..p {
            utu[i * p + j] = (0..wide).map(|k| u[k * p + i] * u[k * p + j]).sum();
        }
    }
    let err = rel_err(&utu, &t.fisher);
    assert!(err <= 0.1, "UᵀU with r = {wide} is {err:.3} away from F");
}

/// The NHGD hypergradient with the Fisher of all n rows at the inner optimum (one pass,
/// w fixed), against the exact IFT hypergradient.
fn nhgd_error_at_optimum(kind: ProblemKind, n: usize) -> f64 {
    let d = 4;
    let m = 400;
    let full = match kind {
        ProblemKind::Logreg => synthetic::logistic(n + m, d, 0.0, 1.0, 77).0,
        _ => synthetic::softmax(n + m, d, 3, 0.0, 1.0, 77).0,
    };
    let train = full.select(&(0..n).collect::<Vec<_>>());
    let val = full.select(&(n..n + m).collect::<Vec<_>>());
    // The empirical Fisher equals the Hessian in expectation at the true parameter; the
    // regularised optimum is close to it when λ is small (λ = 10⁻³). Per-feature / per-class
    // λ make ∇F a vector whose norm stays away from 0.
    let layout = match kind {
        ProblemKind::Logreg => HyperLayout::PerFeature,
        _ => HyperLayout::PerClass,
    };
    let mut problem = GlmBilevel::new(B64::new(), kind, layout, &train, &val, 1.0).unwrap();
    let p = problem.hyper_dim();
    problem.set_theta(&vec![(1e-3f64).ln(); p]).unwrap();
    let exact = compute(
        &problem,
        &common::tight(Options::new(Method::Exact, Precision::F64)),
        None,
    )
    .unwrap();
    let b = problem.backend();
    let mut w = b.upload(&exact.w).unwrap();
    let view = problem.train_view();
    let batch = 50;
    let sp = FisherSpec {
        representation: Representation::Dense,
        dense_update: DenseUpdate::Accumulate,
        averaging: Averaging::Mean,
        batch,
        steps: n / batch,
        shape: problem.shape(),
    };
    let mut tracker = FisherTracker::start(b, &sp, view.reg_diag).unwrap();
    let mut factors = b.zeros(batch * problem.shape().0).unwrap();
    let mut grads = b.zeros(batch * problem.inner_dim()).unwrap();
    for step in 0..n / batch {
        let rows: Vec<u32> = (step * batch..(step + 1) * batch)
            .map(|r| r as u32)
            .collect();
        let rows = b.upload_rows(&rows, n).unwrap();
        // A step of length 0 leaves w at the optimum and computes the batch's factors.
        b.glm_sgd_step(
            view.x,
            view.loss,
            view.y,
            None,
            &rows,
            view.reg_diag,
            0.0,
            &mut w,
            &mut factors,
        )
        .unwrap();
        let inputs = StepInputs {
            x: view.x,
            rows: &rows,
            factors: &factors,
            sqrt_weights: None,
            weights: None,
            sketch: None,
        };
        tracker.update(b, &sp, &inputs, &mut grads).unwrap();
    }
    let mut a = b.zeros(problem.inner_dim()).unwrap();
    problem.outer_value_grad(&w, Some(&mut a)).unwrap();
    let q = apply(&problem, &tracker, &b.download(&a).unwrap());
    let h: Vec<f64> = problem
        .cross_t(&w, &b.upload(&q).unwrap())
        .unwrap()
        .iter()
        .map(|v| -v)
        .collect();
    common::note(|| format!("{kind:?} n={n}: nhgd {h:?} exact {:?}", exact.hypergradient));
    rel_err(&h, &exact.hypergradient)
}

#[test]
fn nhgd_at_the_optimum_approaches_the_ift_hypergradient_as_n_grows() {
    for kind in [ProblemKind::Logreg, ProblemKind::Softmax] {
        let errors: Vec<f64> = [200, 1600, 12800]
            .iter()
            .map(|&n| nhgd_error_at_optimum(kind, n))
            .collect();
        common::note(|| {
            format!("{kind:?}: NHGD vs IFT relative error by n = 200, 1600, 12800: {errors:.3?}")
        });
        assert!(
            errors[2] < errors[0],
            "{kind:?}: error does not fall with n: {errors:?}"
        );
        assert!(
            errors[2] <= 0.10,
            "{kind:?}: {:.3} > 10% at n = 12800",
            errors[2]
        );
    }
}

/// `--fisher-update auto`: it times both dense updates on the backend and picks one; the
/// estimator then runs that one (the stats say which), and its hypergradient is the one both
/// explicit updates give (they track the same `(F + R)⁻¹`). With an exponential moving average
/// only accumulate is exact, so auto picks it without timing.
#[test]
fn auto_dense_update_measures_picks_and_agrees_with_both() {
    use hypergrad::hypergrad::fisher::choose_dense_update;
    use hypergrad::hypergrad::stochastic::{StochasticEstimator, StochasticOptions};
    let (problem, train) = problem(ProblemKind::Hyperclean, 60, 4, 21);
    let reg = regulariser(&problem);
    let sp = spec(&problem, Representation::Dense, DenseUpdate::Auto, 6, 8);
    let (choice, timing) = choose_dense_update(problem.backend(), &sp, &reg).unwrap();
    assert_ne!(choice, DenseUpdate::Auto);
    let timing = timing.expect("the mean is timed");
    assert!(timing.woodbury_step > 0.0 && timing.syrk_step > 0.0 && timing.solve > 0.0);
    let faster = if timing.woodbury_outer < timing.accumulate_outer {
        DenseUpdate::Woodbury
    } else {
        DenseUpdate::Accumulate
    };
    assert_eq!(
        choice, faster,
        "auto must pick the faster projection: {timing:?}"
    );
    let ema = FisherSpec {
        averaging: Averaging::Ema { rho: 0.9 },
        ..sp
    };
    let (ema_choice, ema_timing) = choose_dense_update(problem.backend(), &ema, &reg).unwrap();
    assert_eq!(ema_choice, DenseUpdate::Accumulate);
    assert!(ema_timing.is_none());

    let hypergradient = |update: DenseUpdate| {
        let mut opts = StochasticOptions::new(Method::Nhgd);
        opts.representation = Representation::Dense;
        opts.dense_update = update;
        opts.inner_steps = 8;
        opts.batch = 6;
        opts.linear_tol = 1e-13;
        opts.seed = 5;
        let mut est = StochasticEstimator::new(&problem, &train, opts).unwrap();
        let ran = est.dense_update().0;
        let (h, stats) = est.estimate(&problem, 0).unwrap();
        assert_eq!(
            stats.fisher_update,
            Some(ran),
            "the stats say which update ran"
        );
        (h.hypergradient, ran)
    };
    let (auto, ran) = hypergradient(DenseUpdate::Auto);
    assert_ne!(
        ran,
        DenseUpdate::Auto,
        "auto is resolved when the estimator is made"
    );
    for update in [DenseUpdate::Woodbury, DenseUpdate::Accumulate] {
        let (h, _) = hypergradient(update);
        let err = rel_err(&auto, &h);
        assert!(err <= 1e-8, "auto ({ran:?}) vs {update:?}: {err:e}");
    }
}
