//! Every primitive of the CPU backend against a naive f64 reference written here (loops over
//! ndarray, from the definitions in `backend/mod.rs`), in both precisions, at sizes that run the
//! serial path and sizes that run the parallel (rayon) path.
//!
//! Tolerances, relative in the 2-norm:
//! * f64 backend: 1e-12. The backend and the reference sum the same f64 terms in different
//!   orders (lanes, row blocks); the difference is of order (terms summed)·1e-16 ≈ 1e-13 at the
//!   largest size, and more only under cancellation, which these random data do not have.
//! * f32 backend: 1e-5 against the f64 reference. All inputs are generated f32-representable
//!   (rounded to f32 first, and the reference uses the rounded values), so only the f32
//!   arithmetic differs: unit round-off 6e-8, and a sum of k terms in f32 is off by about
//!   √k·6e-8 relative for random signs (k ≤ 5003 rows here, and the kernels sum rows in blocks
//!   and lanes, so less): a few 1e-6 at most. (Measured: ≤ 1.3e-6.)

mod common;

use common::{glm_data, ksum, logits, normals, r32, rel_err, row_loss, GlmData, CLASSES};
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::{AdamCoefficients, Backend, GlmOps, Groups, Loss, Precision};
use hypergrad::data::rng::Rng;
use hypergrad::hypergrad::{compute, Method, Options};
use hypergrad::outer::Adam;
use hypergrad::problem::{Bilevel, GlmBilevel, HyperLayout, ProblemKind};
use ndarray::Array2;

const TOL64: f64 = 1e-12;
const TOL32: f64 = 1e-5;

/// Sizes `(n, d)`: tiny, one with d not a multiple of the 16 lanes of the dot kernel, and one
/// big enough for every row kernel to split the rows over rayon (n·d·(1 + batch) ≥ 2¹⁶, more
/// blocks than threads).
const SIZES: [(usize, usize); 4] = [(1, 1), (7, 3), (53, 19), (5003, 41)];

fn losses() -> [Loss; 4] {
    [
        Loss::Squared,
        Loss::Logistic,
        Loss::Softmax { classes: CLASSES },
        Loss::Softmax { classes: 2 },
    ]
}

// ---- references -----------------------------------------------------------------------------

/// `(Σ s_i ℓ_i, grad_scale Σ s_i ∇_z ℓ_i ⊗ x_i)`.
fn ref_value_grad(loss: Loss, dt: &GlmData, weights: bool, grad_scale: f64) -> (f64, Vec<f64>) {
    let (c, d) = (loss.outputs(), dt.x.ncols());
    let mut value = 0.0;
    let mut grad = vec![0.0; c * d];
    for (i, xi) in dt.x.rows().into_iter().enumerate() {
        let si = if weights { dt.s[i] } else { 1.0 };
        let (v, g, _) = row_loss(loss, &logits(&dt.w, xi, c), dt.y[i]);
        value += si * v;
        for k in 0..c {
            for j in 0..d {
                grad[k * d + j] += grad_scale * si * g[k] * xi[j];
            }
        }
    }
    (value, grad)
}

/// Dense `scale Σ s_i x_i x_iᵀ ⊗ ∇²_z ℓ_i` (P×P, class-major).
fn ref_data_hessian(loss: Loss, dt: &GlmData, weights: bool, scale: f64) -> Array2<f64> {
    let (c, d) = (loss.outputs(), dt.x.ncols());
    let mut h = Array2::zeros((c * d, c * d));
    for (i, xi) in dt.x.rows().into_iter().enumerate() {
        let si = if weights { dt.s[i] } else { 1.0 };
        let (_, _, hz) = row_loss(loss, &logits(&dt.w, xi, c), dt.y[i]);
        let xx = {
            let col = xi.to_owned().insert_axis(ndarray::Axis(1));
            col.dot(&col.t())
        };
        for k in 0..c {
            for k2 in 0..c {
                let coef = scale * si * hz[[k, k2]];
                if coef != 0.0 {
                    h.slice_mut(ndarray::s![k * d..(k + 1) * d, k2 * d..(k2 + 1) * d])
                        .scaled_add(coef, &xx);
                }
            }
        }
    }
    h
}

/// Per-row factors `G_i = ∇_z ℓ_i` (n×c).
fn ref_row_factors(loss: Loss, dt: &GlmData) -> Vec<f64> {
    let c = loss.outputs();
    dt.x.rows()
        .into_iter()
        .enumerate()
        .flat_map(|(i, xi)| row_loss(loss, &logits(&dt.w, xi, c), dt.y[i]).1)
        .collect()
}

fn group_of(groups: Groups, e: usize) -> usize {
    match groups {
        Groups::Shared => 0,
        Groups::Each => e,
        Groups::Blocks { block } => e / block,
    }
}

fn group_count(groups: Groups, len: usize) -> usize {
    match groups {
        Groups::Shared => 1,
        Groups::Each => len,
        Groups::Blocks { block } => len.div_ceil(block),
    }
}

// ---- the checks, generic over the backend's precision -----------------------------------------

fn tol_of<B: Backend>(b: &B) -> f64 {
    match b.precision() {
        Precision::F64 => TOL64,
        Precision::F32 => TOL32,
    }
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let e = rel_err(got, want);
    common::note(|| format!("{what}: {e:.2e}"));
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}

fn assert_scalar(got: f64, want: f64, tol: f64, what: &str) {
    let e = (got - want).abs() / want.abs().max(f64::MIN_POSITIVE);
    common::note(|| format!("{what}: {e:.2e}"));
    assert!(
        e <= tol,
        "{what}: {got} vs {want}, relative error {e:e} > {tol:e}"
    );
}

fn check_value_grad<B: GlmOps>(b: &B) {
    let tol = tol_of(b);
    for loss in losses() {
        for (t, &(n, d)) in SIZES.iter().enumerate() {
            let dt = glm_data(loss, n, d, 100 + t as u64);
            let x = b.upload_design(&dt.x).unwrap();
            let y = b.upload(&dt.y).unwrap();
            let s = b.upload(&dt.s).unwrap();
            let w = b.upload(&dt.w).unwrap();
            for weights in [false, true] {
                let what = format!(
                    "{} glm_value_grad {loss:?} n={n} d={d} weights={weights}",
                    b.name()
                );
                let scale = 0.37;
                let (want_v, want_g) = ref_value_grad(loss, &dt, weights, scale);
                // The gradient buffer is overwritten, whatever it held.
                let mut grad = b.upload(&vec![9.0; dt.w.len()]).unwrap();
                let sw = weights.then_some(&s);
                let v = b
                    .glm_value_grad(&x, loss, &y, sw, &w, scale, Some(&mut grad))
                    .unwrap();
                assert_scalar(v, want_v, tol, &what);
                assert_close(&b.download(&grad).unwrap(), &want_g, tol, &what);
                let v2 = b.glm_value_grad(&x, loss, &y, sw, &w, scale, None).unwrap();
                assert_scalar(v2, want_v, tol, &format!("{what} (value only)"));
            }
        }
    }
}

fn check_curvature_hvp<B: GlmOps>(b: &B) {
    let tol = tol_of(b);
    for loss in losses() {
        for (t, &(n, d)) in SIZES.iter().enumerate() {
            let dt = glm_data(loss, n, d, 200 + t as u64);
            let p = loss.outputs() * d;
            let x = b.upload_design(&dt.x).unwrap();
            let y = b.upload(&dt.y).unwrap();
            let s = b.upload(&dt.s).unwrap();
            let w = b.upload(&dt.w).unwrap();
            for weights in [false, true] {
                let scale = 1.0 / n as f64;
                let h = ref_data_hessian(loss, &dt, weights, scale);
                let curvature = b
                    .glm_curvature(&x, loss, &y, weights.then_some(&s), &w, scale)
                    .unwrap();
                let mut rng = Rng::new(300 + t as u64);
                for m in [1, 3, 16] {
                    let what = format!(
                        "{} glm_curvature+glm_hvp {loss:?} n={n} d={d} weights={weights} m={m}",
                        b.name()
                    );
                    let v = normals(&mut rng, m * p, 1.0);
                    let want: Vec<f64> =
                        v.chunks(p).flat_map(|vb| common::matvec(&h, vb)).collect();
                    let vb = b.upload(&v).unwrap();
                    let mut out = b.upload(&vec![5.0; m * p]).unwrap();
                    b.glm_hvp(&x, &curvature, &vb, &mut out).unwrap();
                    let got = b.download(&out).unwrap();
                    assert_close(&got, &want, tol, &what);
                    // Each vector of the batch on its own, too (not only the batch's norm).
                    for (bi, (g, w_)) in got.chunks(p).zip(want.chunks(p)).enumerate() {
                        assert_close(g, w_, tol, &format!("{what} vector {bi}"));
                    }
                }
            }
        }
    }
}

fn check_row_kernels<B: GlmOps>(b: &B) {
    let tol = tol_of(b);
    // 40 classes: more than the 32 rows of M that `skinny` takes at once, so the row
    // kernels' fallback (chunked row products) runs too.
    for loss in losses().into_iter().chain([Loss::Softmax { classes: 40 }]) {
        let c = loss.outputs();
        for (t, &(n, d)) in SIZES.iter().enumerate() {
            let dt = glm_data(loss, n, d, 400 + t as u64);
            let x = b.upload_design(&dt.x).unwrap();
            let y = b.upload(&dt.y).unwrap();
            let w = b.upload(&dt.w).unwrap();
            let tag = format!("{} {loss:?} n={n} d={d}", b.name());

            let want_g = ref_row_factors(loss, &dt);
            let g = b.glm_row_factors(&x, loss, &y, &w).unwrap();
            assert_close(
                &b.download(&g).unwrap(),
                &want_g,
                tol,
                &format!("glm_row_factors {tag}"),
            );

            // Pairing and outer products with f32-representable factors and Q.
            let mut rng = Rng::new(500 + t as u64);
            let gf: Vec<f64> = want_g.iter().map(|&v| r32(v)).collect();
            let q = normals(&mut rng, c * d, 1.0);
            let want_r: Vec<f64> =
                dt.x.rows()
                    .into_iter()
                    .enumerate()
                    .map(|(i, xi)| {
                        let qx = logits(&q, xi, c);
                        (0..c).map(|k| qx[k] * gf[i * c + k]).sum()
                    })
                    .collect();
            let gb = b.upload(&gf).unwrap();
            let r = b.glm_row_pairing(&x, &b.upload(&q).unwrap(), &gb).unwrap();
            assert_close(&r, &want_r, tol, &format!("glm_row_pairing {tag}"));

            let coef: Vec<f64> = (0..n).map(|_| r32(rng.normal())).collect();
            let start = normals(&mut rng, n * c * d, 1.0);
            let mut want_b = start.clone();
            for (i, xi) in dt.x.rows().into_iter().enumerate() {
                for k in 0..c {
                    for j in 0..d {
                        want_b[(i * c + k) * d + j] += coef[i] * gf[i * c + k] * xi[j];
                    }
                }
            }
            let mut batch = b.upload(&start).unwrap();
            b.glm_add_row_outer(&x, &coef, &gb, &mut batch).unwrap();
            assert_close(
                &b.download(&batch).unwrap(),
                &want_b,
                tol,
                &format!("glm_add_row_outer {tag}"),
            );
        }
    }
}

fn check_groups<B: Backend>(b: &B) {
    let tol = tol_of(b);
    let mut rng = Rng::new(600);
    for len in [1, 12, 13, 300] {
        for groups in [
            Groups::Shared,
            Groups::Each,
            Groups::Blocks { block: 4 },
            Groups::Blocks { block: 1 },
            Groups::Blocks { block: len },
        ] {
            let what = format!("{} {groups:?} len={len}", b.name());
            let count = group_count(groups, len);
            assert_eq!(groups.count(len), count, "{what}: count");
            let xs = normals(&mut rng, len, 1.0);
            let ys = normals(&mut rng, len, 1.0);
            let (x, y) = (b.upload(&xs).unwrap(), b.upload(&ys).unwrap());

            let mut want = vec![0.0; count];
            for e in 0..len {
                want[group_of(groups, e)] += xs[e] * ys[e];
            }
            assert_close(
                &b.group_dot(groups, &x, &y).unwrap(),
                &want,
                tol,
                &format!("group_dot {what}"),
            );

            let values: Vec<f64> = (0..count).map(|_| r32(rng.normal())).collect();
            let want: Vec<f64> = (0..len).map(|e| values[group_of(groups, e)]).collect();
            let got = b
                .download(&b.group_expand(groups, &values, len).unwrap())
                .unwrap();
            assert_eq!(got, want, "group_expand {what}");

            let coef: Vec<f64> = (0..count).map(|_| r32(rng.normal())).collect();
            let start = normals(&mut rng, count * len, 1.0);
            let mut want = start.clone();
            for e in 0..len {
                let l = group_of(groups, e);
                want[l * len + e] += coef[l] * xs[e];
            }
            let mut batch = b.upload(&start).unwrap();
            b.group_scatter_add(groups, &coef, &x, &mut batch).unwrap();
            assert_close(
                &b.download(&batch).unwrap(),
                &want,
                tol,
                &format!("group_scatter_add {what}"),
            );
        }
    }
}

fn check_blas<B: Backend>(b: &B) {
    let tol = tol_of(b);
    let mut rng = Rng::new(700);
    // 100 003 entries: the f64-accumulated reductions split over rayon from 2¹⁶ entries on.
    for len in [1, 15, 16, 17, 1000, 100_003] {
        let what = format!("{} len={len}", b.name());
        let xs = normals(&mut rng, len, 1.0);
        let ys = normals(&mut rng, len, 1.0);
        let (x, y) = (b.upload(&xs).unwrap(), b.upload(&ys).unwrap());
        assert_eq!(b.len(&x), len);
        assert_eq!(
            b.download(&x).unwrap(),
            xs,
            "upload/download round trip {what}"
        );

        let want = ksum(xs.iter().zip(&ys).map(|(a, c)| a * c));
        // Relative to Σ|x_i y_i| (the dot of random vectors cancels).
        let scale: f64 = xs.iter().zip(&ys).map(|(a, c)| (a * c).abs()).sum();
        let got = b.dot(&x, &y).unwrap();
        assert!(
            (got - want).abs() <= tol * scale,
            "dot {what}: {got} vs {want}"
        );
        let want = ksum(xs.iter().map(|a| a * a)).sqrt();
        assert_scalar(b.nrm2(&x).unwrap(), want, tol, &format!("nrm2 {what}"));

        let alpha = r32(-0.75);
        let beta = r32(1.5);
        let mut z = b.upload(&ys).unwrap();
        b.axpy(alpha, &x, &mut z).unwrap();
        let want: Vec<f64> = xs.iter().zip(&ys).map(|(a, c)| alpha * a + c).collect();
        assert_close(
            &b.download(&z).unwrap(),
            &want,
            tol,
            &format!("axpy {what}"),
        );

        let mut z = b.upload(&ys).unwrap();
        b.axpby(alpha, &x, beta, &mut z).unwrap();
        let want: Vec<f64> = xs
            .iter()
            .zip(&ys)
            .map(|(a, c)| alpha * a + beta * c)
            .collect();
        assert_close(
            &b.download(&z).unwrap(),
            &want,
            tol,
            &format!("axpby {what}"),
        );

        let mut z = b.upload(&ys).unwrap();
        b.scal(beta, &mut z).unwrap();
        let want: Vec<f64> = ys.iter().map(|c| beta * c).collect();
        assert_close(
            &b.download(&z).unwrap(),
            &want,
            tol,
            &format!("scal {what}"),
        );

        // Four Adam steps against the outer loop's textbook update (bias-corrected moments,
        // written independently in f64 on the host), the gradient redrawn each step.
        let lr = r32(0.05);
        let adam = Adam::new(lr);
        let hyper = (adam.beta1, adam.beta2, adam.eps);
        let (mut w, mut m, mut v) = (
            b.upload(&ys).unwrap(),
            b.zeros(len).unwrap(),
            b.zeros(len).unwrap(),
        );
        let (mut want, mut mh, mut vh) = (ys.clone(), vec![0.0; len], vec![0.0; len]);
        for t in 1..=4 {
            let grad = normals(&mut rng, len, 1.0);
            let k = AdamCoefficients::at(lr, hyper, t);
            b.adam_update(k, &b.upload(&grad).unwrap(), (&mut m, &mut v), &mut w)
                .unwrap();
            adam.step(t, &mut mh, &mut vh, &mut want, &grad);
        }
        assert_close(
            &b.download(&w).unwrap(),
            &want,
            tol,
            &format!("adam_update {what}"),
        );
        assert_close(
            &b.download(&m).unwrap(),
            &mh,
            tol,
            &format!("adam m {what}"),
        );
        let short = b.zeros(len + 1).unwrap();
        assert!(
            b.adam_update(
                AdamCoefficients::at(lr, hyper, 1),
                &short,
                (&mut m, &mut v),
                &mut w
            )
            .is_err(),
            "adam_update with a gradient of the wrong length {what}"
        );

        b.copy(&x, &mut z).unwrap();
        assert_eq!(b.download(&z).unwrap(), xs, "copy {what}");
        b.fill(&mut z, 0.25).unwrap();
        assert_eq!(b.download(&z).unwrap(), vec![0.25; len], "fill {what}");
        assert_eq!(
            b.download(&b.zeros(len).unwrap()).unwrap(),
            vec![0.0; len],
            "zeros {what}"
        );
    }

    // Batched operations: m vectors of length len.
    for (len, m) in [(1, 1), (7, 3), (40, 16), (5000, 20)] {
        let what = format!("{} len={len} m={m}", b.name());
        let a = normals(&mut rng, len, 1.0);
        let xs = normals(&mut rng, m * len, 1.0);
        let ys = normals(&mut rng, m * len, 1.0);
        let alpha = r32(0.3);
        let mut want = ys.clone();
        for bi in 0..m {
            for e in 0..len {
                want[bi * len + e] += alpha * a[e] * xs[bi * len + e];
            }
        }
        let mut z = b.upload(&ys).unwrap();
        b.mul_add(
            alpha,
            &b.upload(&a).unwrap(),
            &b.upload(&xs).unwrap(),
            &mut z,
        )
        .unwrap();
        assert_close(
            &b.download(&z).unwrap(),
            &want,
            tol,
            &format!("mul_add {what}"),
        );

        let got = b
            .batched_dot(&b.upload(&xs).unwrap(), &b.upload(&a).unwrap())
            .unwrap();
        assert_eq!(got.len(), m, "batched_dot {what}: count");
        for bi in 0..m {
            let chunk = &xs[bi * len..(bi + 1) * len];
            let want = ksum(chunk.iter().zip(&a).map(|(p, q)| p * q));
            let scale: f64 = chunk.iter().zip(&a).map(|(p, q)| (p * q).abs()).sum();
            assert!(
                (got[bi] - want).abs() <= tol * scale,
                "batched_dot {what} vector {bi}: {} vs {want}",
                got[bi]
            );
        }
    }
}

fn check_dimension_errors<B: GlmOps>(b: &B) {
    let x3 = b.upload(&[1.0, 2.0, 3.0]).unwrap();
    let mut y2 = b.upload(&[1.0, 2.0]).unwrap();
    assert!(
        b.axpy(1.0, &x3, &mut y2).is_err(),
        "axpy with mismatched lengths"
    );
    assert!(b.dot(&x3, &y2).is_err(), "dot with mismatched lengths");
    assert!(
        b.batched_dot(&x3, &y2).is_err(),
        "batched_dot with a ragged batch"
    );
    let dt = glm_data(Loss::Squared, 4, 3, 1);
    let x = b.upload_design(&dt.x).unwrap();
    let y = b.upload(&dt.y).unwrap();
    let w = b.upload(&dt.w).unwrap();
    let curvature = b
        .glm_curvature(&x, Loss::Squared, &y, None, &w, 1.0)
        .unwrap();
    let mut out = b.zeros(4).unwrap();
    assert!(
        b.glm_hvp(&x, &curvature, &b.zeros(4).unwrap(), &mut out)
            .is_err(),
        "glm_hvp with a batch that is not a multiple of P"
    );
    assert!(
        b.glm_value_grad(&x, Loss::Squared, &y2, None, &w, 1.0, None)
            .is_err(),
        "glm_value_grad with too few labels"
    );
}

macro_rules! both_precisions {
    ($($name:ident => $check:ident),* $(,)?) => {
        $(
            mod $name {
                use hypergrad::backend::cpu::CpuBackend;
                #[test]
                fn f64() {
                    super::$check(&CpuBackend::<f64>::new())
                }
                #[test]
                fn f32() {
                    super::$check(&CpuBackend::<f32>::new())
                }
            }
        )*
    };
}

both_precisions! {
    value_grad => check_value_grad,
    curvature_hvp => check_curvature_hvp,
    row_kernels => check_row_kernels,
    groups => check_groups,
    blas => check_blas,
    dimension_errors => check_dimension_errors,
}

#[test]
fn names_and_precisions() {
    assert_eq!(CpuBackend::<f64>::new().precision(), Precision::F64);
    assert_eq!(CpuBackend::<f32>::new().precision(), Precision::F32);
    assert_eq!(CpuBackend::<f64>::new().name(), "cpu-f64");
    assert_eq!(CpuBackend::<f32>::new().name(), "cpu-f32");
}

/// The whole `cg` hypergradient, default options of each precision, on the f32 backend
/// agrees with f64 to 1e-4 relative on well-conditioned problems (λ ≥ e⁻¹, n ≫ d): the f32
/// defaults solve the inner problem to 1e-5 relative gradient and CG to 1e-5 relative residual,
/// each amplified by the (small) condition number, and the data are rounded to f32 on upload.
#[test]
fn cg_hypergradient_f32_agrees_with_f64() {
    for (kind, layout, theta) in [
        (ProblemKind::Ridge, HyperLayout::PerFeature, -0.5),
        (ProblemKind::Logreg, HyperLayout::Shared, -1.0),
        (ProblemKind::Softmax, HyperLayout::PerClass, -1.0),
        (ProblemKind::Hyperclean, HyperLayout::PerSample, 0.5),
    ] {
        let (train, val) = common::datasets(kind, 400, 200, 10, 77);
        let mut p64 =
            GlmBilevel::new(CpuBackend::<f64>::new(), kind, layout, &train, &val, 0.3).unwrap();
        let mut p32 =
            GlmBilevel::new(CpuBackend::<f32>::new(), kind, layout, &train, &val, 0.3).unwrap();
        let mut rng = Rng::new(78);
        let th: Vec<f64> = (0..p64.hyper_dim())
            .map(|_| theta + 0.3 * rng.normal())
            .collect();
        p64.set_theta(&th).unwrap();
        p32.set_theta(&th).unwrap();
        let h64 = compute(&p64, &Options::new(Method::Cg, Precision::F64), None).unwrap();
        let h32 = compute(&p32, &Options::new(Method::Cg, Precision::F32), None).unwrap();
        let e = rel_err(&h32.hypergradient, &h64.hypergradient);
        common::note(|| format!("{kind:?}/{layout:?}: f32 vs f64 cg {e:.2e}"));
        assert!(
            e <= 1e-4,
            "{}/{}: cg on f32 vs f64 relative difference {e:e}",
            kind.name(),
            layout.name()
        );
    }
}
