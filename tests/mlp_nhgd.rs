//! NHGD for networks (SPEC §5, §8) against independent references, in f64 on the CPU:
//!
//! * the tracked dense curvature (Woodbury and accumulate) applies the explicit inverse of
//!   `D + (1/N) Σ s g gᵀ` built on the host from the naive reference's single-row gradients;
//! * per-layer `kfac` applies the explicit inverse of its block-diagonal Kronecker definition,
//!   the factors summed on the host from the reference's activations and deltas;
//! * `lowrank` applies `(D + UᵀU)⁻¹` with `U` built on the host from the same sketches;
//! * at the inner optimum of data drawn from a network of the same shape, the dense NHGD
//!   hypergradient approaches the exact IFT hypergradient as n grows (to a floor), and the
//!   per-layer kfac one points along it;
//! * the estimator runs SGD from `w₀`, warm-starts, and refuses what it cannot do.

mod mlp_common;

use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::mlp::{Activation, MlpData, MlpOps};
use hypergrad::backend::{Backend, Precision};
use hypergrad::data::rng::Rng;
use hypergrad::data::Dataset;
use hypergrad::hypergrad::fisher::{Averaging, DenseUpdate, FisherSpec, Representation};
use hypergrad::hypergrad::stochastic::mlp::{damping, CurvatureStep, MlpCurvature};
use hypergrad::hypergrad::stochastic::StochasticEstimator;
use hypergrad::hypergrad::stochastic::StochasticOptions;
use hypergrad::hypergrad::{compute, Method, Options};
use hypergrad::linalg::spd_inverse;
use hypergrad::problem::{Bilevel, HyperLayout, InnerProblem, MlpBilevel, ProblemKind};
use hypergrad::solver::{InnerOptions, Solver};
use mlp_common::{rel_err, teacher_data, RefNet};

type B64 = CpuBackend<f64>;
type Problem = MlpBilevel<B64>;

const SIZES: [usize; 3] = [3, 4, 3];

fn split(all: &Dataset, n: usize, m: usize) -> (Dataset, Dataset) {
    (
        all.select(&(0..n).collect::<Vec<_>>()),
        all.select(&(n..n + m).collect::<Vec<_>>()),
    )
}

/// A small weighted problem (hyperclean) or a per-layer softmax, θ uneven.
fn problem(kind: ProblemKind, n: usize, seed: u64) -> (Problem, Dataset, RefNet) {
    let net = RefNet::new(&SIZES, Activation::Tanh);
    let (all, _) = teacher_data(&net, n + 20, 2.0, seed);
    let (train, val) = split(&all, n, 20);
    let layout = match kind {
        ProblemKind::Hyperclean => HyperLayout::PerSample,
        _ => HyperLayout::PerLayer,
    };
    let mut p = MlpBilevel::new(
        B64::new(),
        kind,
        layout,
        &SIZES[1..2],
        Activation::Tanh,
        &train,
        &val,
        0.3,
        seed,
    )
    .unwrap();
    let theta: Vec<f64> = (0..p.hyper_dim())
        .map(|i| -1.0 + 0.37 * (i % 5) as f64)
        .collect();
    p.set_theta(&theta).unwrap();
    (p, train, net)
}

fn spec(
    p: &Problem,
    representation: Representation,
    update: DenseUpdate,
    b: usize,
    t: usize,
) -> FisherSpec {
    FisherSpec {
        representation,
        dense_update: update,
        averaging: Averaging::Mean,
        batch: b,
        steps: t,
        shape: (1, p.inner_dim()),
    }
}

/// Feeds `steps` batches of `batch` rows (drawn with `seed`) at the fixed point `w` to a
/// curvature of `spec`; returns it with the rows used and the sketches.
fn track(
    p: &Problem,
    w: &[f64],
    spec: &FisherSpec,
    seed: u64,
    rows_in_order: bool,
) -> (MlpCurvature<B64>, Vec<Vec<usize>>, Vec<Vec<f64>>) {
    let b = p.backend();
    let net = p.network();
    let w = b.upload(w).unwrap();
    let damp = b.upload(&damping(net, p.lambda())).unwrap();
    let mut curvature = MlpCurvature::start(b, net, spec, &damp).unwrap();
    let mut rng = Rng::new(seed);
    let mut grads = b.zeros(spec.batch * p.inner_dim()).unwrap();
    let (mut all_rows, mut sketches) = (Vec::new(), Vec::new());
    for t in 0..spec.steps {
        let rows: Vec<usize> = (0..spec.batch)
            .map(|k| {
                if rows_in_order {
                    t * spec.batch + k
                } else {
                    rng.below(p.n_train())
                }
            })
            .collect();
        let data = MlpData {
            rows: Some(&rows),
            ..p.train_data()
        };
        let tape = b.mlp_forward(net, data, &w).unwrap();
        let deltas = b.mlp_backward(net, data, &tape, &w).unwrap();
        let root: Option<Vec<f64>> = p
            .weights_host()
            .map(|s| rows.iter().map(|&r| s[r].sqrt()).collect());
        let sketch = match spec.representation {
            Representation::Lowrank { rank } => {
                let v: Vec<f64> = (0..rank * spec.batch)
                    .map(|_| if rng.uniform() < 0.5 { 1.0 } else { -1.0 } / (rank as f64).sqrt())
                    .collect();
                sketches.push(v.clone());
                Some(v)
            }
            _ => None,
        };
        let step = CurvatureStep {
            data,
            tape: &tape,
            deltas: &deltas,
            sqrt_weights: root.as_ref(),
            sketch: sketch.as_ref(),
        };
        curvature.update(b, net, spec, &step, &mut grads).unwrap();
        all_rows.push(rows);
    }
    (curvature, all_rows, sketches)
}

fn apply(p: &Problem, curvature: &MlpCurvature<B64>, a: &[f64]) -> Vec<f64> {
    let b = p.backend();
    let host = damping(p.network(), p.lambda());
    let buf = b.upload(&host).unwrap();
    let (q, _) = curvature
        .apply_inverse(
            b,
            p.network(),
            p.lambda(),
            (&buf, &host),
            &a.to_vec(),
            1e-13,
        )
        .unwrap();
    q
}

fn matvec(m: &[f64], v: &[f64]) -> Vec<f64> {
    let n = v.len();
    (0..n)
        .map(|i| (0..n).map(|j| m[i * n + j] * v[j]).sum())
        .collect()
}

fn random_vector(len: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| rng.normal()).collect()
}

/// A point away from `w₀` (the first layers' weights scaled up) so the activations are not
/// all in tanh's linear range.
fn some_point(p: &Problem) -> Vec<f64> {
    let mut w = p.backend().download(&p.initial_point().unwrap()).unwrap();
    let mut rng = Rng::new(99);
    for v in w.iter_mut() {
        *v = 1.5 * *v + 0.1 * rng.normal();
    }
    w
}

#[test]
fn dense_tracks_the_explicit_inverse() {
    for kind in [ProblemKind::Hyperclean, ProblemKind::Softmax] {
        let (p, train, net) = problem(kind, 30, 3);
        let dim = p.inner_dim();
        let w = some_point(&p);
        let a = random_vector(dim, 7);
        // The host's D + (1/N) Σ s g gᵀ from the reference's single-row gradients.
        let explicit = |rows: &[Vec<usize>], n_total: f64| {
            let mut h = vec![0.0; dim * dim];
            for e in 0..dim {
                h[e * dim + e] = damping(p.network(), p.lambda())[e];
            }
            for &r in rows.iter().flatten() {
                let s = p.weights_host().map_or(1.0, |s| s[r]);
                let g = net.gradient(&w, &train.x.row(r).to_vec(), train.y[r] as usize);
                for i in 0..dim {
                    for j in 0..dim {
                        h[i * dim + j] += s * g[i] * g[j] / n_total;
                    }
                }
            }
            matvec(&spd_inverse(&h, dim).unwrap(), &a)
        };
        for (batch, steps) in [(1, 12), (5, 4)] {
            for update in [DenseUpdate::Woodbury, DenseUpdate::Accumulate] {
                let sp = spec(&p, Representation::Dense, update, batch, steps);
                let (curvature, rows, _) = track(&p, &w, &sp, 11, false);
                let want = explicit(&rows, (batch * steps) as f64);
                let err = rel_err(&apply(&p, &curvature, &a), &want);
                assert!(err <= 1e-9, "{kind:?} {update:?} b={batch}: {err:e}");
            }
        }
    }
}

#[test]
fn kfac_is_its_per_layer_kronecker_definition() {
    for kind in [ProblemKind::Hyperclean, ProblemKind::Softmax] {
        let (p, train, net) = problem(kind, 30, 4);
        let dim = p.inner_dim();
        let nw = p.network().clone();
        let w = some_point(&p);
        let (batch, steps) = (6, 5);
        let sp = spec(
            &p,
            Representation::Kfac,
            DenseUpdate::Woodbury,
            batch,
            steps,
        );
        let (curvature, rows, _) = track(&p, &w, &sp, 12, false);
        let a = random_vector(dim, 8);
        let got = apply(&p, &curvature, &a);
        let n_total = (batch * steps) as f64;
        let mut want = vec![0.0; dim];
        for l in 0..nw.layers() {
            let (fi, fo) = nw.fans(l);
            let da = fi + 1;
            let (mut aa, mut gg) = (vec![0.0; da * da], vec![0.0; fo * fo]);
            for &r in rows.iter().flatten() {
                let s = p.weights_host().map_or(1.0, |s| s[r]);
                let x = train.x.row(r).to_vec();
                let (inputs, _) = net.forward(&w, &x);
                let delta = &net.deltas(&w, &x, train.y[r] as usize)[l];
                for i in 0..da {
                    for j in 0..da {
                        aa[i * da + j] += inputs[l][i] * inputs[l][j] / n_total;
                    }
                }
                for i in 0..fo {
                    for j in 0..fo {
                        gg[i * fo + j] += s * delta[i] * delta[j] / n_total;
                    }
                }
            }
            // π-damping with the layer's λ: (GG + λ/π I) ⊗ (AA + π I).
            let lambda = p.lambda()[l];
            let tr_a: f64 = (0..da).map(|i| aa[i * da + i]).sum::<f64>() / da as f64;
            let tr_g: f64 = (0..fo).map(|i| gg[i * fo + i]).sum::<f64>() / fo as f64;
            let pi = (lambda * tr_a / tr_g).sqrt();
            let len = fo * da;
            let mut block = vec![0.0; len * len];
            for e in 0..len {
                for f in 0..len {
                    let (k, i) = (e / da, e % da);
                    let (m, j) = (f / da, f % da);
                    let g = gg[k * fo + m] + if k == m { lambda / pi } else { 0.0 };
                    let x = aa[i * da + j] + if i == j { pi } else { 0.0 };
                    block[e * len + f] = g * x;
                }
            }
            let off = nw.offset(l);
            let q = matvec(&spd_inverse(&block, len).unwrap(), &a[off..off + len]);
            want[off..off + len].copy_from_slice(&q);
        }
        let err = rel_err(&got, &want);
        assert!(
            err <= 1e-10,
            "{kind:?}: per-layer kfac vs its Kronecker definition {err:e}"
        );
    }
}

#[test]
fn lowrank_applies_the_inverse_of_its_own_factor() {
    let (p, train, net) = problem(ProblemKind::Hyperclean, 30, 5);
    let dim = p.inner_dim();
    let w = some_point(&p);
    let (batch, steps, rank) = (4, 6, 5);
    let sp = spec(
        &p,
        Representation::Lowrank { rank },
        DenseUpdate::Woodbury,
        batch,
        steps,
    );
    let (curvature, rows, sketches) = track(&p, &w, &sp, 13, false);
    let n_total = (batch * steps) as f64;
    // U = Σ_t N^{-½} S_t G_t, G_t's rows √s g.
    let mut u = vec![0.0; rank * dim];
    for (t, batch_rows) in rows.iter().enumerate() {
        for (pos, &r) in batch_rows.iter().enumerate() {
            let s = p.weights_host().unwrap()[r];
            let g = net.gradient(&w, &train.x.row(r).to_vec(), train.y[r] as usize);
            for k in 0..rank {
                let coef = sketches[t][k * batch + pos] * s.sqrt() / n_total.sqrt();
                for e in 0..dim {
                    u[k * dim + e] += coef * g[e];
                }
            }
        }
    }
    let mut h = vec![0.0; dim * dim];
    let d = damping(p.network(), p.lambda());
    for i in 0..dim {
        h[i * dim + i] = d[i];
        for j in 0..dim {
            h[i * dim + j] += (0..rank)
                .map(|k| u[k * dim + i] * u[k * dim + j])
                .sum::<f64>();
        }
    }
    let a = random_vector(dim, 9);
    let want = matvec(&spd_inverse(&h, dim).unwrap(), &a);
    let err = rel_err(&apply(&p, &curvature, &a), &want);
    assert!(err <= 1e-10, "lowrank vs (D + UᵀU)⁻¹: {err:e}");
}

/// NHGD (`representation`, all n rows once at the exact inner optimum) against the IFT
/// hypergradient on hyperclean data drawn from a teacher network of the same shape, C = `l2`,
/// θ = 0: returns (relative error, cosine).
fn nhgd_at_optimum(representation: Representation, n: usize, l2: f64) -> (f64, f64) {
    let net = RefNet::new(&SIZES, Activation::Tanh);
    let m = 400;
    let (all, teacher) = teacher_data(&net, n + m, 2.0, 77);
    let (train, val) = split(&all, n, m);
    let p = MlpBilevel::new(
        B64::new(),
        ProblemKind::Hyperclean,
        HyperLayout::PerSample,
        &SIZES[1..2],
        Activation::Tanh,
        &train,
        &val,
        l2,
        77,
    )
    .unwrap();
    let mut opts = Options::new(Method::Exact, Precision::F64);
    opts.inner = InnerOptions {
        solver: Solver::Newton,
        tol: 1e-12,
        max_iters: 500,
        minibatch: Default::default(),
    };
    // The inner solve starts at the teacher's parameters: from w₀ a network may settle in
    // another local minimum, where the model is not well specified.
    let start = p.backend().upload(&teacher).unwrap();
    let exact = compute(&p, &opts, Some(&start)).unwrap();
    assert!(
        exact.inner_converged,
        "premise: the inner solve converges (n = {n})"
    );
    let batch = 50;
    let sp = spec(
        &p,
        representation,
        DenseUpdate::Accumulate,
        batch,
        n / batch,
    );
    let (curvature, _, _) = track(&p, &exact.w, &sp, 0, true);
    let b = p.backend();
    let w = b.upload(&exact.w).unwrap();
    let mut a = b.zeros(p.inner_dim()).unwrap();
    p.outer_value_grad(&w, Some(&mut a)).unwrap();
    let q = apply(&p, &curvature, &a);
    let h: Vec<f64> = p.cross_t(&w, &q).unwrap().iter().map(|v| -v).collect();
    let ift = &exact.hypergradient;
    let dot: f64 = h.iter().zip(ift).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    (rel_err(&h, ift), dot / (norm(&h) * norm(ift)))
}

/// The empirical Fisher equals the Hessian in expectation at the true parameter of a
/// well-specified model, so the dense NHGD hypergradient approaches the IFT one as n grows —
/// down to a floor: at the regularised optimum the model is not exactly the teacher, and for a
/// network the IFT solve is dominated by directions whose curvature is of the order of C
/// itself, where that O(C) mismatch is not small (measured 2026-11-28: relative error 0.59,
/// 0.16, 0.15 and cosine 0.88, 0.987, 0.991 at n = 200, 1600, 12800 with C = 10⁻³).
#[test]
fn dense_nhgd_at_the_optimum_approaches_the_ift_hypergradient_as_n_grows() {
    let runs: Vec<(f64, f64)> = [200, 1600, 12800]
        .iter()
        .map(|&n| nhgd_at_optimum(Representation::Dense, n, 1e-3))
        .collect();
    eprintln!("dense NHGD vs IFT (relative error, cosine) at n = 200, 1600, 12800: {runs:.3?}");
    let (first, last) = (runs[0], runs[2]);
    assert!(
        last.0 <= 0.5 * first.0,
        "the error does not fall with n: {runs:?}"
    );
    assert!(
        last.0 <= 0.2,
        "relative error {:.3} > 0.2 at n = 12800",
        last.0
    );
    assert!(last.1 >= 0.98, "cosine {:.3} < 0.98 at n = 12800", last.1);
}

/// Per-layer K-FAC points along the IFT hypergradient but does not approach it in size: its
/// factored Tikhonov damping `(GG + C/π) ⊗ (AA + π)` adds the cross terms `π GG ⊗ I` and
/// `(C/π) I ⊗ AA`, of the order of C again, on top of the Kronecker and block-diagonal
/// approximations, and that gap does not close with n (measured 2026-11-28 with C = 0.1:
/// cosine 0.983, 0.992, 0.981 and relative error 0.74, 0.64, 0.66 at n = 200, 1600, 12800).
#[test]
fn kfac_nhgd_at_the_optimum_points_along_the_ift_hypergradient() {
    let runs: Vec<(f64, f64)> = [1600, 12800]
        .iter()
        .map(|&n| nhgd_at_optimum(Representation::Kfac, n, 0.1))
        .collect();
    eprintln!("kfac NHGD vs IFT (relative error, cosine) at n = 1600, 12800: {runs:.3?}");
    for (n, (_, cosine)) in [1600, 12800].iter().zip(&runs) {
        assert!(*cosine >= 0.95, "cosine {cosine:.3} < 0.95 at n = {n}");
    }
}

#[test]
fn the_estimator_runs_sgd_from_w0_and_warm_starts() {
    for representation in [
        Representation::Kfac,
        Representation::Dense,
        Representation::Lowrank { rank: 8 },
    ] {
        let (p, train, _) = problem(ProblemKind::Hyperclean, 60, 6);
        let mut opts = StochasticOptions::new(Method::Nhgd);
        opts.representation = representation;
        opts.dense_update = DenseUpdate::Auto;
        opts.inner_steps = 40;
        opts.batch = 10;
        let mut est = StochasticEstimator::new(&p, &train, opts).unwrap();
        if representation == Representation::Dense {
            assert_ne!(est.dense_update().0, DenseUpdate::Auto, "auto is resolved");
        }
        assert!(est.inner_lr(&p) > 0.0);
        let b = p.backend();
        let g0 = p
            .inner_value_grad(&p.initial_point().unwrap(), None)
            .unwrap();
        let (first, stats) = est.estimate(&p, 0).unwrap();
        assert_eq!(first.hypergradient.len(), p.n_train());
        assert!(first.hypergradient.iter().all(|h| h.is_finite()));
        assert_eq!(first.error_bound, None);
        assert_eq!(stats.inner_host_syncs, 0);
        let g1 = p.inner_value_grad(est.w(), None).unwrap();
        assert!(
            g1 < g0,
            "{representation:?}: SGD from w₀ lowers g: {g0} → {g1}"
        );
        // Warm start: the second estimate continues from the first one's w.
        let w1 = b.download(est.w()).unwrap();
        est.estimate(&p, 1).unwrap();
        let g2 = p.inner_value_grad(est.w(), None).unwrap();
        assert!(
            g2 < g1,
            "{representation:?}: warm start continues: {g1} → {g2}"
        );
        assert_ne!(w1, b.download(est.w()).unwrap());
    }
}

#[test]
fn what_the_network_estimator_refuses() {
    let (p, train, _) = problem(ProblemKind::Softmax, 30, 7);
    let mut opts = StochasticOptions::new(Method::Nhgd);
    opts.batch = 31;
    let err = StochasticEstimator::new(&p, &train, opts).err().unwrap();
    assert!(err.to_string().contains("--batch-size"), "{err}");
    // A network too large for a dense P×P curvature.
    let (all, _) = teacher_data(&RefNet::new(&[90, 3], Activation::Tanh), 40, 1.0, 1);
    let (train, val) = split(&all, 30, 10);
    let big = MlpBilevel::new(
        B64::new(),
        ProblemKind::Softmax,
        HyperLayout::Shared,
        &[100],
        Activation::Tanh,
        &train,
        &val,
        0.1,
        0,
    )
    .unwrap();
    let mut opts = StochasticOptions::new(Method::Nhgd);
    opts.representation = Representation::Dense;
    opts.batch = 10;
    let err = StochasticEstimator::new(&big, &train, opts).err().unwrap();
    assert!(err.to_string().contains("use kfac or lowrank"), "{err}");
}

// ---- stocbio, amigo and soba on networks (one estimator family with the linear models) ----

/// A small network problem (40 training rows, the 3-4-3 network of [`problem`]).
fn small_network(kind: ProblemKind) -> (Problem, Dataset) {
    let (p, train, _) = problem(kind, 40, 11);
    (p, train)
}

/// `chunk_hvp` on a batch is the exact Hessian of that batch: over a partition of the rows,
/// the size-weighted mean of the batches' products is the full-data HVP (to f64 rounding).
#[test]
fn the_sampled_hessians_of_a_network_add_up_to_the_full_hessian() {
    use hypergrad::hypergrad::stochastic::model::StochasticModel;
    let (p, train) = small_network(ProblemKind::Hyperclean);
    let b = p.backend();
    let dim = p.inner_dim();
    let mut rng = Rng::new(3);
    let w = b
        .upload(&(0..dim).map(|_| 0.5 * rng.normal()).collect::<Vec<_>>())
        .unwrap();
    let v_host: Vec<f64> = (0..dim).map(|_| rng.normal()).collect();
    let v = b.upload(&v_host).unwrap();
    let mut full = b.zeros(dim).unwrap();
    p.hvp(&p.hessian(&w).unwrap(), &v, &mut full).unwrap();
    let full = b.download(&full).unwrap();
    let order = rng.permutation(train.n());
    let mut mean = vec![0.0; dim];
    for part in order.chunks(7) {
        let chunk = p.chunk(&train, part).unwrap();
        let mut out = b.zeros(dim).unwrap();
        p.chunk_hvp(&chunk, &w, &v, &mut out).unwrap();
        // H_B v + R v, weighted by the batch's share of the rows; R once in total.
        let share = part.len() as f64 / train.n() as f64;
        for (m, x) in mean.iter_mut().zip(b.download(&out).unwrap()) {
            *m += share * x;
        }
    }
    let err = rel_err(&mean, &full);
    assert!(
        err < 1e-12,
        "Σ_B (|B|/n) (H_B + R) v vs (H + R) v: {err:.2e}"
    );
}

/// soba's single loop on a network moves both q and w (its numbers against the dense Hessian
/// are in tests/stochastic_networks.rs).
#[test]
fn soba_on_a_network_moves_q_and_w() {
    for kind in [ProblemKind::Softmax, ProblemKind::Hyperclean] {
        let (p, train) = small_network(kind);
        let b = p.backend();
        let mut opts = StochasticOptions::new(Method::Soba);
        opts.batch = 10;
        opts.inner_steps = 20;
        let mut est = StochasticEstimator::new(&p, &train, opts).unwrap();
        let w0 = b.download(&p.initial_point().unwrap()).unwrap();
        let (h, _) = est.estimate(&p, 0).unwrap();
        assert!(h.hypergradient.iter().all(|v| v.is_finite()));
        assert!(h.hypergradient.iter().any(|&v| v != 0.0), "soba's q moved");
        assert_ne!(b.download(est.w()).unwrap(), w0, "soba's w moved");
    }
}
