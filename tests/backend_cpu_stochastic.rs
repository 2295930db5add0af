//! The CPU backend's dense and stochastic primitives (`upload_rows`, `gemm`, `syrk`,
//! `woodbury_update`, `glm_sgd_step`, `glm_per_sample_gradients`, `glm_kfac_factors`) against
//! naive f64 references written here from the definitions in `backend/mod.rs` (loops over
//! plain `Vec`s and ndarray rows; the only library code used is the per-row loss of
//! `tests/common`, itself written from SPEC §2), in both precisions.
//!
//! Tolerances, relative in the 2-norm of the whole output:
//! * f64 backend: 1e-12. The backend and the reference add the same f64 terms in different
//!   orders; with at most a few hundred terms per entry and no cancellation to speak of, the
//!   difference is of order 1e-14.
//! * f64 Woodbury update: 1e-9, as asked of it. The reference is an independent dense inverse
//!   (Gauss-Jordan) of the accumulated matrix; both sides lose about κ·1e-16 with condition
//!   numbers κ ≤ 10 here (measured: ~1e-15), so the slack is for the method, not the data.
//! * f32 backend: 1e-5 against the f64 reference evaluated on the values the backend actually
//!   stores (inputs are drawn f32-representable, or read back with `download(upload(·))`), so
//!   only f32 arithmetic differs: unit round-off 6e-8, a sum of k terms off by about √k·6e-8
//!   relative (k ≤ 300 here: ≤ 1e-6), Woodbury amplifying by κ ≤ 10 per update.
//!
//! Run with `HYPERGRAD_TEST_VERBOSE=1 cargo test --release --test backend_cpu_stochastic --
//! --nocapture` to print every measured error.

mod common;

use common::{glm_data, logits, normals, r32, ref_gemm, rel_err, row_loss, GlmData};
use hypergrad::backend::{Backend, FisherOps, GlmOps, Loss, Precision};
use hypergrad::data::rng::Rng;
use ndarray::Array2;

const TOL64: f64 = 1e-12;
const TOL32: f64 = 1e-5;
const WOODBURY_TOL64: f64 = 1e-9;

fn tol_of<B: Backend>(b: &B) -> f64 {
    match b.precision() {
        Precision::F64 => TOL64,
        Precision::F32 => TOL32,
    }
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    let e = rel_err(got, want);
    common::note(|| format!("{what}: {e:.2e}"));
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}

/// The values a backend stores for `host` (exactly representable in its precision).
fn stored<B: Backend>(b: &B, host: &[f64]) -> Vec<f64> {
    b.download(&b.upload(host).unwrap()).unwrap()
}

// ---- dense f64 references ---------------------------------------------------------------------

/// `AᵀB` for `A` (m×p), `B` (m×q), row-major: `Σ_r a_r b_rᵀ` (p×q).
fn ref_t_mul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let (p, q) = (a.len() / m, b.len() / m);
    let mut out = vec![0.0; p * q];
    for r in 0..m {
        for i in 0..p {
            for j in 0..q {
                out[i * q + j] += a[r * p + i] * b[r * q + j];
            }
        }
    }
    out
}

/// Inverse of a p×p matrix by Gauss-Jordan elimination with partial pivoting (f64).
fn inverse(a: &[f64], p: usize) -> Vec<f64> {
    let mut m = Array2::from_shape_vec((p, p), a.to_vec()).unwrap();
    let mut inv = Array2::<f64>::eye(p);
    for col in 0..p {
        let pivot = (col..p)
            .max_by(|&i, &j| m[[i, col]].abs().total_cmp(&m[[j, col]].abs()))
            .unwrap();
        assert!(m[[pivot, col]].abs() > 1e-300, "singular reference matrix");
        for j in 0..p {
            m.swap([col, j], [pivot, j]);
            inv.swap([col, j], [pivot, j]);
        }
        let d = m[[col, col]];
        for j in 0..p {
            m[[col, j]] /= d;
            inv[[col, j]] /= d;
        }
        for i in 0..p {
            if i != col {
                let f = m[[i, col]];
                if f != 0.0 {
                    for j in 0..p {
                        m[[i, j]] -= f * m[[col, j]];
                        inv[[i, j]] -= f * inv[[col, j]];
                    }
                }
            }
        }
    }
    inv.into_raw_vec_and_offset().0
}

/// A random SPD p×p matrix `I + R Rᵀ / p` (R standard normal): eigenvalues in about [1, 5].
fn random_spd(rng: &mut Rng, p: usize) -> Vec<f64> {
    let r: Vec<f64> = (0..p * p).map(|_| rng.normal()).collect();
    let mut s = ref_t_mul(&r, &r, p);
    for (e, v) in s.iter_mut().enumerate() {
        *v /= p as f64;
        if e / p == e % p {
            *v += 1.0;
        }
    }
    s
}

// ---- GLM data --------------------------------------------------------------------------------

fn losses() -> [Loss; 3] {
    [Loss::Squared, Loss::Logistic, Loss::Softmax { classes: 3 }]
}

/// Sizes `(n, d)`: one row and one feature, d below and above the 16 lanes of the CPU's dot
/// kernel and not a multiple of them.
const SIZES: [(usize, usize); 4] = [(1, 1), (7, 3), (53, 19), (300, 70)];

/// Mini-batches of rows of an n-row design: one row (the last), every row in order, and a
/// random draw with replacement in random order (duplicates included).
fn batches(n: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let b = (2 * n).min(37);
    vec![
        vec![n - 1],
        (0..n).collect(),
        (0..b).map(|_| rng.below(n)).collect(),
    ]
}

fn upload_rows<B: Backend>(b: &B, rows: &[usize], n: usize) -> B::Rows {
    let r32: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
    let rows_b = b.upload_rows(&r32, n).unwrap();
    assert_eq!(b.rows_len(&rows_b), rows.len(), "rows_len");
    rows_b
}

/// The gradient factor `G_i = ∇_z ℓ(W x_i, y_i)` of row `i`.
fn factor(loss: Loss, dt: &GlmData, w: &[f64], i: usize) -> Vec<f64> {
    row_loss(loss, &logits(w, dt.x.row(i), loss.outputs()), dt.y[i]).1
}

/// `(w − η((1/b) Σ_p s_{r_p} G_p ⊗ x_{r_p} + reg ⊙ w), [G_p]_p)`.
fn ref_sgd(
    loss: Loss,
    dt: &GlmData,
    weights: bool,
    rows: &[usize],
    eta: f64,
) -> (Vec<f64>, Vec<f64>) {
    let (c, d) = (loss.outputs(), dt.x.ncols());
    let mut grad = vec![0.0; c * d];
    let mut factors = Vec::with_capacity(rows.len() * c);
    for &i in rows {
        let g = factor(loss, dt, &dt.w, i);
        let si = if weights { dt.s[i] } else { 1.0 };
        for k in 0..c {
            for j in 0..d {
                grad[k * d + j] += si * g[k] * dt.x[[i, j]];
            }
        }
        factors.extend(g);
    }
    let b = rows.len() as f64;
    let w_new = (0..c * d)
        .map(|e| dt.w[e] - eta * (grad[e] / b + dt.reg[e] * dt.w[e]))
        .collect();
    (w_new, factors)
}

// ---- the checks, generic over the backend's precision -----------------------------------------

fn check_upload_rows<B: Backend>(b: &B) {
    for (rows, n) in [
        (vec![], 0),
        (vec![], 5),
        (vec![0], 1),
        (vec![4, 0, 4, 2], 5),
        ((0..1000).rev().collect::<Vec<u32>>(), 1000),
    ] {
        let got = b
            .upload_rows(&rows, n)
            .unwrap_or_else(|e| panic!("{}: valid rows {rows:?} < {n} rejected: {e}", b.name()));
        assert_eq!(b.rows_len(&got), rows.len(), "{}: rows_len", b.name());
    }
    for (rows, n) in [
        (vec![0], 0),
        (vec![5], 5),
        (vec![0, 1, 2, 7, 3], 7),
        (vec![u32::MAX], 10),
    ] {
        assert!(
            b.upload_rows(&rows, n).is_err(),
            "{}: rows {rows:?} accepted for n = {n}",
            b.name()
        );
    }
}

fn check_gemm<B: Backend>(b: &B) {
    let tol = tol_of(b);
    let mut rng = Rng::new(1000);
    // (m, n, k): scalars, each dimension 1 in turn, rectangular in every direction, k = 0
    // (C ← βC), and one large enough for the blocked kernel (k = 130 terms per entry).
    let dims = [
        (1, 1, 1),
        (3, 5, 2),
        (5, 3, 7),
        (1, 9, 4),
        (8, 1, 6),
        (6, 4, 1),
        (4, 6, 0),
        (17, 9, 33),
        (64, 48, 130),
    ];
    for (m, n, k) in dims {
        for ta in [false, true] {
            for tb in [false, true] {
                for (alpha, beta) in [(1.0, 0.0), (1.0, 1.0), (0.75, -1.25), (-2.0, 0.5)] {
                    let what = format!(
                        "{} gemm ta={ta} tb={tb} m={m} n={n} k={k} α={alpha} β={beta}",
                        b.name()
                    );
                    let a = normals(&mut rng, m * k, 1.0);
                    let bm = normals(&mut rng, k * n, 1.0);
                    let c0 = normals(&mut rng, m * n, 1.0);
                    let want = ref_gemm(ta, tb, (m, n, k), alpha, &a, &bm, beta, &c0);
                    let mut c = b.upload(&c0).unwrap();
                    b.gemm(
                        ta,
                        tb,
                        (m, n, k),
                        alpha,
                        &b.upload(&a).unwrap(),
                        &b.upload(&bm).unwrap(),
                        beta,
                        &mut c,
                    )
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_close(&b.download(&c).unwrap(), &want, tol, &what);
                }
            }
        }
    }
    // Operands of the wrong size are errors, not panics.
    let a = b.zeros(6).unwrap();
    let mut c = b.zeros(4).unwrap();
    assert!(b
        .gemm(false, false, (2, 2, 3), 1.0, &a, &a, 0.0, &mut c)
        .is_ok());
    assert!(
        b.gemm(false, false, (2, 2, 2), 1.0, &a, &a, 0.0, &mut c)
            .is_err(),
        "gemm with A of the wrong size"
    );
    let mut c5 = b.zeros(5).unwrap();
    assert!(
        b.gemm(false, false, (2, 2, 3), 1.0, &a, &a, 0.0, &mut c5)
            .is_err(),
        "gemm with C of the wrong size"
    );
}

fn check_syrk<B: Backend>(b: &B) {
    let tol = tol_of(b);
    let mut rng = Rng::new(1100);
    for (m, p) in [(1, 1), (1, 4), (5, 3), (3, 5), (40, 17), (200, 64)] {
        for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-1.5, 0.25)] {
            let what = format!("{} syrk m={m} p={p} α={alpha} β={beta}", b.name());
            let a = normals(&mut rng, m * p, 1.0);
            // A C that is not symmetric: every entry of C must be written, from both triangles.
            let c0 = normals(&mut rng, p * p, 1.0);
            let ata = ref_t_mul(&a, &a, m);
            let want: Vec<f64> = ata
                .iter()
                .zip(&c0)
                .map(|(s, c)| alpha * s + beta * c)
                .collect();
            let mut c = b.upload(&c0).unwrap();
            b.syrk(alpha, &b.upload(&a).unwrap(), m, beta, &mut c)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_close(&b.download(&c).unwrap(), &want, tol, &what);
        }
    }
    let a = b.zeros(6).unwrap();
    let mut c = b.zeros(9).unwrap();
    assert!(
        b.syrk(1.0, &a, 4, 0.0, &mut c).is_err(),
        "syrk with 6 entries in 4 rows"
    );
    assert!(b.syrk(1.0, &a, 2, 0.0, &mut c).is_ok(), "syrk of a 2×3 A");
    let mut c8 = b.zeros(8).unwrap();
    assert!(
        b.syrk(1.0, &a, 2, 0.0, &mut c8).is_err(),
        "syrk with C of the wrong size"
    );
}

fn woodbury_tol<B: Backend>(b: &B) -> f64 {
    match b.precision() {
        Precision::F64 => WOODBURY_TOL64,
        Precision::F32 => TOL32,
    }
}

fn check_woodbury<B: FisherOps>(b: &B) {
    let tol = woodbury_tol(b);
    let mut rng = Rng::new(1200);
    for p in [1, 2, 9, 40] {
        // (rank, updates): single updates of every rank up to above p, and repeated ones.
        for (m, updates) in [(1, 1), (3, 1), (p + 2, 1), (1, 5), (4, 5)] {
            let what = format!(
                "{} woodbury_update p={p} rank={m} updates={updates}",
                b.name()
            );
            let a0 = inverse(&random_spd(&mut rng, p), p);
            let mut a = b.upload(&a0).unwrap();
            // The accumulated matrix A₀⁻¹ + Σ α_t U_tᵀU_t, from the A₀ the backend holds.
            let mut acc = inverse(&stored(b, &a0), p);
            for t in 0..updates {
                let u = normals(&mut rng, m * p, 1.0 / (p as f64).sqrt());
                let alpha = r32(0.2 + rng.uniform());
                let utu = ref_t_mul(&u, &u, m);
                for (x, y) in acc.iter_mut().zip(&utu) {
                    *x += alpha * y;
                }
                b.woodbury_update(&mut a, &b.upload(&u).unwrap(), m, alpha)
                    .unwrap_or_else(|e| panic!("{what} update {t}: {e}"));
                let want = inverse(&acc, p);
                assert_close(
                    &b.download(&a).unwrap(),
                    &want,
                    tol,
                    &format!("{what} after update {t}"),
                );
            }
        }
    }

    // α ≤ 0 (and non-finite α) is an error, and leaves A alone.
    let a0 = inverse(&random_spd(&mut rng, 3), 3);
    let u = normals(&mut rng, 3, 1.0);
    let ub = b.upload(&u).unwrap();
    for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let mut a = b.upload(&a0).unwrap();
        assert!(
            b.woodbury_update(&mut a, &ub, 1, alpha).is_err(),
            "{}: woodbury_update accepted α = {alpha}",
            b.name()
        );
        assert_eq!(
            b.download(&a).unwrap(),
            stored(b, &a0),
            "{}: a rejected update (α = {alpha}) modified A",
            b.name()
        );
    }
    // Shape errors.
    let mut a = b.upload(&a0).unwrap();
    assert!(
        b.woodbury_update(&mut a, &ub, 2, 1.0).is_err(),
        "woodbury_update with U of the wrong size"
    );
    let mut not_square = b.zeros(8).unwrap();
    assert!(
        b.woodbury_update(&mut not_square, &b.zeros(4).unwrap(), 1, 1.0)
            .is_err(),
        "woodbury_update with a non-square A"
    );
    // A not positive definite (A = −I, U = 2I): the capacitance I/α + UAUᵀ = −3I has no
    // Cholesky factor, which must be reported, not turned into NaNs.
    let minus_eye: Vec<f64> = (0..9)
        .map(|e| if e / 3 == e % 3 { -1.0 } else { 0.0 })
        .collect();
    let two_eye: Vec<f64> = minus_eye.iter().map(|v| -2.0 * v).collect();
    let mut a = b.upload(&minus_eye).unwrap();
    assert!(
        b.woodbury_update(&mut a, &b.upload(&two_eye).unwrap(), 3, 1.0)
            .is_err(),
        "{}: a capacitance matrix that is not positive definite was accepted",
        b.name()
    );
}

fn check_sgd_step<B: GlmOps>(b: &B) {
    let tol = tol_of(b);
    for loss in losses() {
        let c = loss.outputs();
        for (t, &(n, d)) in SIZES.iter().enumerate() {
            let dt = glm_data(loss, n, d, 1300 + t as u64);
            let x = b.upload_design(&dt.x).unwrap();
            let y = b.upload(&dt.y).unwrap();
            let s = b.upload(&dt.s).unwrap();
            let reg = b.upload(&dt.reg).unwrap();
            let mut rng = Rng::new(1400 + t as u64);
            for rows in batches(n, &mut rng) {
                let rows_b = upload_rows(b, &rows, n);
                for weights in [false, true] {
                    let what = format!(
                        "{} glm_sgd_step {loss:?} n={n} d={d} b={} weights={weights}",
                        b.name(),
                        rows.len()
                    );
                    let eta = 0.3;
                    let (want_w, want_g) = ref_sgd(loss, &dt, weights, &rows, eta);
                    let mut w = b.upload(&dt.w).unwrap();
                    // Factors are overwritten whatever they held.
                    let mut factors = b.upload(&vec![7.0; rows.len() * c]).unwrap();
                    b.glm_sgd_step(
                        &x,
                        loss,
                        &y,
                        weights.then_some(&s),
                        &rows_b,
                        &reg,
                        eta,
                        &mut w,
                        &mut factors,
                    )
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_close(&b.download(&w).unwrap(), &want_w, tol, &format!("{what} w"));
                    assert_close(
                        &b.download(&factors).unwrap(),
                        &want_g,
                        tol,
                        &format!("{what} factors"),
                    );
                }
            }
        }
    }

    // Errors: an empty batch, and operands of the wrong size.
    let loss = Loss::Softmax { classes: 3 };
    let dt = glm_data(loss, 6, 4, 1500);
    let x = b.upload_design(&dt.x).unwrap();
    let y = b.upload(&dt.y).unwrap();
    let reg = b.upload(&dt.reg).unwrap();
    let mut w = b.upload(&dt.w).unwrap();
    let empty = upload_rows(b, &[], 6);
    let mut no_factors = b.zeros(0).unwrap();
    assert!(
        b.glm_sgd_step(
            &x,
            loss,
            &y,
            None,
            &empty,
            &reg,
            0.1,
            &mut w,
            &mut no_factors
        )
        .is_err(),
        "{}: an SGD step on an empty batch was accepted",
        b.name()
    );
    assert_eq!(
        b.download(&w).unwrap(),
        dt.w,
        "a rejected SGD step modified w"
    );
    let two = upload_rows(b, &[1, 3], 6);
    let mut short_factors = b.zeros(5).unwrap();
    assert!(
        b.glm_sgd_step(
            &x,
            loss,
            &y,
            None,
            &two,
            &reg,
            0.1,
            &mut w,
            &mut short_factors
        )
        .is_err(),
        "glm_sgd_step with factors of the wrong size"
    );
    let mut factors = b.zeros(6).unwrap();
    let short_reg = b.zeros(5).unwrap();
    assert!(
        b.glm_sgd_step(
            &x,
            loss,
            &y,
            None,
            &two,
            &short_reg,
            0.1,
            &mut w,
            &mut factors
        )
        .is_err(),
        "glm_sgd_step with a regulariser of the wrong size"
    );
}

fn check_per_sample_gradients<B: GlmOps>(b: &B) {
    let tol = tol_of(b);
    for c in [1, 3] {
        for (t, &(n, d)) in SIZES.iter().enumerate() {
            let mut rng = Rng::new(1600 + t as u64);
            let xs = normals(&mut rng, n * d, 1.0);
            let x_host = Array2::from_shape_vec((n, d), xs).unwrap();
            let x = b.upload_design(&x_host).unwrap();
            for rows in batches(n, &mut rng) {
                let nb = rows.len();
                let rows_b = upload_rows(b, &rows, n);
                let factors = normals(&mut rng, nb * c, 1.0);
                let mut scale = normals(&mut rng, nb, 1.0);
                scale[nb / 2] = 0.0;
                let fb = b.upload(&factors).unwrap();
                let sb = b.upload(&scale).unwrap();
                for scaled in [false, true] {
                    let what = format!(
                        "{} glm_per_sample_gradients c={c} n={n} d={d} b={nb} scaled={scaled}",
                        b.name()
                    );
                    let mut want = vec![0.0; nb * c * d];
                    for (pos, &i) in rows.iter().enumerate() {
                        let sp = if scaled { scale[pos] } else { 1.0 };
                        for k in 0..c {
                            for j in 0..d {
                                want[(pos * c + k) * d + j] =
                                    sp * factors[pos * c + k] * x_host[[i, j]];
                            }
                        }
                    }
                    let mut out = b.upload(&vec![3.0; nb * c * d]).unwrap();
                    b.glm_per_sample_gradients(&x, &rows_b, &fb, scaled.then_some(&sb), &mut out)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_close(&b.download(&out).unwrap(), &want, tol, &what);
                }
            }
        }
    }
    let x = b.upload_design(&Array2::from_elem((4, 3), 1.0)).unwrap();
    let rows = upload_rows(b, &[0, 2], 4);
    let factors = b.zeros(2 * 3).unwrap();
    let mut short = b.zeros(2 * 3 * 3 - 1).unwrap();
    assert!(
        b.glm_per_sample_gradients(&x, &rows, &factors, None, &mut short)
            .is_err(),
        "glm_per_sample_gradients with an output of the wrong size"
    );
    let mut out = b.zeros(2 * 3 * 3).unwrap();
    assert!(
        b.glm_per_sample_gradients(&x, &rows, &factors, Some(&b.zeros(3).unwrap()), &mut out)
            .is_err(),
        "glm_per_sample_gradients with a scale of the wrong size"
    );
}

fn check_kfac_factors<B: GlmOps>(b: &B) {
    let tol = tol_of(b);
    for c in [1, 3] {
        for (t, &(n, d)) in SIZES.iter().enumerate() {
            let mut rng = Rng::new(1700 + t as u64);
            let x_host = Array2::from_shape_vec((n, d), normals(&mut rng, n * d, 1.0)).unwrap();
            let x = b.upload_design(&x_host).unwrap();
            for rows in batches(n, &mut rng) {
                let nb = rows.len();
                let rows_b = upload_rows(b, &rows, n);
                let factors = normals(&mut rng, nb * c, 1.0);
                let mut scale: Vec<f64> = (0..nb).map(|_| r32(rng.uniform())).collect();
                scale[0] = 0.0;
                let xx0 = normals(&mut rng, d * d, 1.0);
                let gg0 = normals(&mut rng, c * c, 1.0);
                for scaled in [false, true] {
                    for (alpha, beta) in [(1.0, 0.0), (0.25, 0.9), (-1.5, 1.0)] {
                        let what = format!(
                            "{} glm_kfac_factors c={c} n={n} d={d} b={nb} scaled={scaled} \
                             α={alpha} β={beta}",
                            b.name()
                        );
                        let mut want_xx: Vec<f64> = xx0.iter().map(|v| beta * v).collect();
                        let mut want_gg: Vec<f64> = gg0.iter().map(|v| beta * v).collect();
                        for (pos, &i) in rows.iter().enumerate() {
                            for j in 0..d {
                                for j2 in 0..d {
                                    want_xx[j * d + j2] += alpha * x_host[[i, j]] * x_host[[i, j2]];
                                }
                            }
                            let sp = if scaled { scale[pos] } else { 1.0 };
                            let g = &factors[pos * c..(pos + 1) * c];
                            for k in 0..c {
                                for k2 in 0..c {
                                    want_gg[k * c + k2] += alpha * sp * g[k] * g[k2];
                                }
                            }
                        }
                        let mut xx = b.upload(&xx0).unwrap();
                        let mut gg = b.upload(&gg0).unwrap();
                        let sb = b.upload(&scale).unwrap();
                        b.glm_kfac_factors(
                            &x,
                            &rows_b,
                            &b.upload(&factors).unwrap(),
                            scaled.then_some(&sb),
                            alpha,
                            beta,
                            &mut xx,
                            &mut gg,
                        )
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                        assert_close(
                            &b.download(&xx).unwrap(),
                            &want_xx,
                            tol,
                            &format!("{what} xx"),
                        );
                        assert_close(
                            &b.download(&gg).unwrap(),
                            &want_gg,
                            tol,
                            &format!("{what} gg"),
                        );
                    }
                }
            }
        }
    }
}

/// For a single sample, the empirical Fisher of the per-sample gradient `a = G ⊗ x` is exactly
/// the Kronecker product of the K-FAC factors: `a aᵀ = (G Gᵀ) ⊗ (x xᵀ)`, i.e. in the class-major
/// layout `F[k·d + j, k'·d + j'] = gg[k, k'] · xx[j, j']`. This ties `glm_per_sample_gradients`,
/// `syrk` and `glm_kfac_factors` together (for more than one sample the identity holds only in
/// expectation, so the definition is what `check_kfac_factors` tests).
fn check_kfac_single_sample_identity<B: GlmOps>(b: &B) {
    let tol = tol_of(b);
    let mut rng = Rng::new(1800);
    for (c, n, d) in [(1, 5, 4), (3, 9, 7), (4, 20, 16)] {
        let x_host = Array2::from_shape_vec((n, d), normals(&mut rng, n * d, 1.0)).unwrap();
        let x = b.upload_design(&x_host).unwrap();
        let i = rng.below(n);
        let rows = upload_rows(b, &[i], n);
        let factors = b.upload(&normals(&mut rng, c, 1.0)).unwrap();
        let p = c * d;
        let mut a = b.zeros(p).unwrap();
        b.glm_per_sample_gradients(&x, &rows, &factors, None, &mut a)
            .unwrap();
        let mut fisher = b.zeros(p * p).unwrap();
        b.syrk(1.0, &a, 1, 0.0, &mut fisher).unwrap();
        let mut xx = b.zeros(d * d).unwrap();
        let mut gg = b.zeros(c * c).unwrap();
        b.glm_kfac_factors(&x, &rows, &factors, None, 1.0, 0.0, &mut xx, &mut gg)
            .unwrap();
        let (xx, gg) = (b.download(&xx).unwrap(), b.download(&gg).unwrap());
        let mut kron = vec![0.0; p * p];
        for k in 0..c {
            for k2 in 0..c {
                for j in 0..d {
                    for j2 in 0..d {
                        kron[(k * d + j) * p + k2 * d + j2] = gg[k * c + k2] * xx[j * d + j2];
                    }
                }
            }
        }
        assert_close(
            &b.download(&fisher).unwrap(),
            &kron,
            tol,
            &format!("{} single-sample Fisher = gg ⊗ xx, c={c} d={d}", b.name()),
        );
    }
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
    upload_rows_checks => check_upload_rows,
    gemm => check_gemm,
    syrk => check_syrk,
    woodbury => check_woodbury,
    sgd_step => check_sgd_step,
    per_sample_gradients => check_per_sample_gradients,
    kfac_factors => check_kfac_factors,
    kfac_single_sample_identity => check_kfac_single_sample_identity,
}

/// The reference inverse used by the Woodbury checks is itself correct: `A · inverse(A) = I`
/// to rounding for the SPD matrices drawn there (a wrong reference would make those checks
/// meaningless).
#[test]
fn reference_inverse_is_an_inverse() {
    let mut rng = Rng::new(1900);
    for p in [1, 2, 9, 40] {
        let a = random_spd(&mut rng, p);
        let inv = inverse(&a, p);
        let prod = ref_gemm(
            false,
            false,
            (p, p, p),
            1.0,
            &a,
            &inv,
            0.0,
            &vec![0.0; p * p],
        );
        let eye: Vec<f64> = (0..p * p)
            .map(|e| if e / p == e % p { 1.0 } else { 0.0 })
            .collect();
        assert!(rel_err(&prod, &eye) <= 1e-13, "p={p}: A·A⁻¹ ≠ I");
    }
}
