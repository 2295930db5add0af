//! `hypergrad::linalg` (faer underneath) against the scalar code it replaced, kept here as
//! `scalar`, and against independent references: naive triple-loop products, and SPD
//! matrices `Q diag(σ) Qᵀ` built with a known spectrum (condition numbers up to 1e10), whose
//! solves are checked by residuals and by the known solution.

use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::{Backend, FisherOps};
use hypergrad::data::rng::Rng;
use hypergrad::error::Error;
use hypergrad::hypergrad::fisher;
use hypergrad::linalg::{self, NotPositiveDefinite};

/// The hand-written row-major f64 routines that `linalg` had before faer, verbatim: the
/// reference the faer versions must agree with.
mod common;

#[path = "reference/scalar_linalg.rs"]
mod scalar;

fn normals(rng: &mut Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.normal()).collect()
}

fn norm(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    norm(&d) / norm(b).max(f64::MIN_POSITIVE)
}

/// `A·B` for square row-major matrices.
fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    common::ref_gemm(false, false, (n, n, n), 1.0, a, b, 0.0, &[])
}

/// A random orthogonal matrix: Gram–Schmidt (twice, for orthogonality to rounding) on the
/// rows of a Gaussian matrix.
fn orthogonal(rng: &mut Rng, n: usize) -> Vec<f64> {
    let mut q = normals(rng, n * n);
    for i in 0..n {
        for _pass in 0..2 {
            for j in 0..i {
                let d: f64 = (0..n).map(|k| q[i * n + k] * q[j * n + k]).sum();
                for k in 0..n {
                    q[i * n + k] -= d * q[j * n + k];
                }
            }
        }
        let s = norm(&q[i * n..(i + 1) * n]);
        q[i * n..(i + 1) * n].iter_mut().for_each(|v| *v /= s);
    }
    q
}

/// `Q diag(σ) Qᵀ` with σ log-spaced from 1 down to 1/cond: an SPD matrix of condition number
/// `cond` and norm 1, exactly symmetric.
fn spd_with_condition(rng: &mut Rng, n: usize, cond: f64) -> Vec<f64> {
    let q = orthogonal(rng, n);
    let sigma: Vec<f64> = (0..n)
        .map(|i| cond.powf(-(i as f64) / (n.max(2) - 1) as f64))
        .collect();
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..n).map(|k| q[k * n + i] * sigma[k] * q[k * n + j]).sum();
            a[i * n + j] = s;
            a[j * n + i] = s;
        }
    }
    a
}

fn matvec(a: &[f64], x: &[f64]) -> Vec<f64> {
    a.chunks(x.len())
        .map(|row| row.iter().zip(x).map(|(a, x)| a * x).sum())
        .collect()
}

/// `‖Ax − b‖ / (‖A‖_F ‖x‖)`: the normwise backward error, O(ε) for a stable solver whatever
/// the conditioning.
fn backward_error(a: &[f64], x: &[f64], b: &[f64]) -> f64 {
    let r: Vec<f64> = matvec(a, x).iter().zip(b).map(|(ax, b)| ax - b).collect();
    norm(&r) / (norm(a) * norm(x))
}

const GEMM_SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (3, 5, 7),
    (17, 4, 33),
    (64, 64, 64),
    (130, 70, 300),
    (0, 4, 3),
    (4, 3, 0),
];

#[test]
fn gemm_f64_matches_the_definition() {
    let mut rng = Rng::new(1);
    for (m, n, k) in GEMM_SHAPES {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-1.5, 0.25)] {
                let what = format!("gemm {m}×{n}×{k} tA={ta} tB={tb} α={alpha} β={beta}");
                let a = normals(&mut rng, m * k);
                let b = normals(&mut rng, k * n);
                let c0 = normals(&mut rng, m * n);
                let want = common::ref_gemm(ta, tb, (m, n, k), alpha, &a, &b, beta, &c0);
                let mut c = c0.clone();
                linalg::gemm(ta, tb, (m, n, k), alpha, &a, &b, beta, &mut c);
                assert!(
                    rel_diff(&c, &want) < 1e-13,
                    "{what}: {}",
                    rel_diff(&c, &want)
                );
            }
        }
    }
}

#[test]
fn gemm_f32_runs_in_f32_to_f32_accuracy() {
    let mut rng = Rng::new(2);
    for (m, n, k) in GEMM_SHAPES {
        for (ta, tb) in [(false, false), (true, false), (false, true)] {
            let a: Vec<f32> = normals(&mut rng, m * k).iter().map(|&v| v as f32).collect();
            let b: Vec<f32> = normals(&mut rng, k * n).iter().map(|&v| v as f32).collect();
            let c0: Vec<f32> = normals(&mut rng, m * n).iter().map(|&v| v as f32).collect();
            let up = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
            let want = common::ref_gemm(ta, tb, (m, n, k), -1.5, &up(&a), &up(&b), 0.25, &up(&c0));
            let mut c = c0.clone();
            linalg::gemm(ta, tb, (m, n, k), -1.5f32, &a, &b, 0.25f32, &mut c);
            let err = rel_diff(&up(&c), &want);
            // f32 rounding grows like √k ε for random data; 1e-5 is far above and far below
            // what an f64 → f32 mix-up or a wrong operand would give.
            assert!(err < 1e-5, "f32 gemm {m}×{n}×{k} tA={ta} tB={tb}: {err}");
        }
    }
}

#[test]
fn gemm_with_beta_zero_overwrites_nan() {
    let a = [1.0, 2.0, 3.0, 4.0];
    let mut c = [f64::NAN; 4];
    linalg::gemm(false, false, (2, 2, 2), 1.0, &a, &a, 0.0, &mut c);
    assert_eq!(c, [7.0, 10.0, 15.0, 22.0]);
}

#[test]
fn syrk_matches_the_definition_for_any_c() {
    let mut rng = Rng::new(3);
    for (m, p) in [(1, 1), (5, 3), (3, 5), (200, 64)] {
        for (alpha, beta) in [(1.0, 0.0), (-1.5, 0.25)] {
            let a = normals(&mut rng, m * p);
            // Not symmetric: both triangles of C must come from C itself.
            let c0 = normals(&mut rng, p * p);
            let want = common::ref_gemm(true, false, (p, p, m), alpha, &a, &a, beta, &c0);
            let mut c = c0.clone();
            linalg::syrk(alpha, &a, m, beta, &mut c);
            assert!(
                rel_diff(&c, &want) < 1e-13,
                "syrk m={m} p={p} α={alpha} β={beta}"
            );
        }
    }
}

/// A symmetric C (NHGD's Fisher): the same numbers as the definition, and a result that is
/// exactly symmetric (faer sums `a_kᵢ a_kⱼ` and `a_kⱼ a_kᵢ` over k in the same order).
#[test]
fn syrk_of_a_symmetric_c_matches_the_definition_and_stays_symmetric() {
    let mut rng = Rng::new(13);
    for (m, p) in [
        (1, 1),
        (5, 3),
        (3, 5),
        (128, 65),
        (200, 64),
        (7, 130),
        (33, 200),
    ] {
        for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-1.5, 0.25)] {
            let a = normals(&mut rng, m * p);
            let g = normals(&mut rng, p * p);
            let mut c0 = vec![0.0; p * p];
            for i in 0..p {
                for j in 0..p {
                    c0[i * p + j] = g[i * p + j] + g[j * p + i];
                }
            }
            let want = common::ref_gemm(true, false, (p, p, m), alpha, &a, &a, beta, &c0);
            let mut c = c0.clone();
            linalg::syrk(alpha, &a, m, beta, &mut c);
            assert!(
                rel_diff(&c, &want) < 1e-13,
                "m={m} p={p} α={alpha} β={beta}"
            );
            for i in 0..p {
                for j in 0..p {
                    assert_eq!(c[i * p + j], c[j * p + i], "m={m} p={p} ({i}, {j})");
                }
            }
        }
    }
}

#[test]
fn cholesky_agrees_with_the_scalar_code_and_keeps_the_upper_triangle() {
    let mut rng = Rng::new(4);
    for n in [1, 2, 7, 64, 200] {
        let a = spd_with_condition(&mut rng, n, 1e4);
        let mut want = a.clone();
        scalar::cholesky(&mut want, n).unwrap();
        // A marker in the strict upper triangle: it must be neither read nor written.
        let mut got = a.clone();
        for i in 0..n {
            for j in i + 1..n {
                got[i * n + j] = f64::NAN;
            }
        }
        linalg::cholesky(&mut got, n).unwrap();
        for i in 0..n {
            for j in 0..n {
                let (g, w) = (got[i * n + j], want[i * n + j]);
                if j > i {
                    assert!(g.is_nan(), "n={n}: upper ({i}, {j}) was written");
                } else {
                    assert!(
                        (g - w).abs() <= 1e-10 * w.abs().max(1.0),
                        "n={n} L[{i}][{j}]"
                    );
                }
            }
        }
    }
}

#[test]
fn cholesky_solves_agree_with_the_scalar_code() {
    let mut rng = Rng::new(5);
    for n in [1, 3, 50, 300] {
        let mut l = spd_with_condition(&mut rng, n, 1e3);
        linalg::cholesky(&mut l, n).unwrap();
        let nrhs = 4;
        let b = normals(&mut rng, nrhs * n);
        let mut want = b.clone();
        for rhs in want.chunks_mut(n) {
            scalar::cholesky_solve_in_place(&l, n, rhs);
        }
        let mut rows = b.clone();
        linalg::cholesky_solve_rows(&l, n, &mut rows, nrhs);
        assert!(rel_diff(&rows, &want) < 1e-12, "n={n} rows");
        let mut one = b[..n].to_vec();
        linalg::cholesky_solve_in_place(&l, n, &mut one);
        assert!(rel_diff(&one, &want[..n]) < 1e-12, "n={n} single");
    }
}

/// Backward error at the level of rounding and forward error within κ·ε (with room for the
/// dimension) on SPD matrices of growing condition number, and agreement with the scalar code
/// to the same bound.
#[test]
fn ill_conditioned_solves_are_backward_stable() {
    let mut rng = Rng::new(6);
    let n = 120;
    for cond in [1e2, 1e6, 1e8, 1e10] {
        let a = spd_with_condition(&mut rng, n, cond);
        let x_true = normals(&mut rng, n);
        let b = matvec(&a, &x_true);
        let mut l = a.clone();
        linalg::cholesky(&mut l, n).unwrap_or_else(|e| panic!("κ={cond:e}: {e}"));
        let mut x = b.clone();
        linalg::cholesky_solve_in_place(&l, n, &mut x);
        let backward = backward_error(&a, &x, &b);
        let forward = rel_diff(&x, &x_true);
        let bound = cond * f64::EPSILON * n as f64;
        assert!(backward < 1e-14, "κ={cond:e}: backward error {backward:e}");
        assert!(
            forward < bound,
            "κ={cond:e}: forward error {forward:e} > {bound:e}"
        );
        let mut old_l = a.clone();
        scalar::cholesky(&mut old_l, n).unwrap();
        let mut old_x = b.clone();
        scalar::cholesky_solve_in_place(&old_l, n, &mut old_x);
        assert!(
            rel_diff(&x, &old_x) < 2.0 * bound,
            "κ={cond:e}: faer vs scalar"
        );
    }
}

#[test]
fn spd_inverse_agrees_with_the_scalar_code_and_the_identity() {
    let mut rng = Rng::new(7);
    for (n, cond) in [(1, 1.0), (5, 10.0), (100, 1e3), (150, 1e8), (120, 1e10)] {
        let a = spd_with_condition(&mut rng, n, cond);
        let inv = linalg::spd_inverse(&a, n).unwrap();
        for i in 0..n {
            for j in 0..i {
                assert_eq!(inv[i * n + j], inv[j * n + i], "n={n}: not symmetric");
            }
        }
        let want = scalar::spd_inverse(a.clone(), n);
        let bound = cond * f64::EPSILON * n as f64;
        assert!(
            rel_diff(&inv, &want) < bound.max(1e-13),
            "n={n} κ={cond:e} vs scalar"
        );
        // ‖A A⁻¹ − I‖ / ‖I‖ is bounded by κ ε: the residual of an inverse is not backward
        // stable, unlike that of a solve.
        let mut r = matmul(&a, &inv, n);
        for i in 0..n {
            r[i * n + i] -= 1.0;
        }
        let err = norm(&r) / (n as f64).sqrt();
        assert!(
            err < bound.max(1e-13),
            "n={n} κ={cond:e}: ‖AA⁻¹ − I‖ = {err:e}"
        );
    }
}

#[test]
fn matrices_that_are_not_positive_definite_are_errors() {
    let mut rng = Rng::new(8);
    let n = 40;
    // SPD minus twice its smallest eigenvalue's scale: indefinite.
    let mut indefinite = spd_with_condition(&mut rng, n, 1e3);
    for i in 0..n {
        indefinite[i * n + i] -= 0.5;
    }
    let cases: Vec<(&str, Vec<f64>, usize)> = vec![
        ("diag(1, −1)", vec![1.0, 0.0, 0.0, -1.0], 2),
        ("singular [[1, 1], [1, 1]]", vec![1.0, 1.0, 1.0, 1.0], 2),
        ("zero", vec![0.0; 9], 3),
        ("negative definite", vec![-2.0, 0.0, 0.0, -2.0], 2),
        ("random indefinite", indefinite, n),
    ];
    for (what, a, dim) in &cases {
        let mut l = a.clone();
        match linalg::cholesky(&mut l, *dim) {
            Err(NotPositiveDefinite::Pivot { index }) => assert!(index < *dim, "{what}"),
            other => panic!("{what}: {other:?}"),
        }
        assert!(linalg::spd_inverse(a, *dim).is_err(), "{what}: spd_inverse");
        let mut old = a.clone();
        assert!(
            scalar::cholesky(&mut old, *dim).is_err(),
            "{what}: scalar reference"
        );
    }
    assert_eq!(
        linalg::cholesky(&mut [1.0, 0.0, 0.0, -1.0], 2),
        Err(NotPositiveDefinite::Pivot { index: 1 })
    );
    for bad in [f64::NAN, f64::INFINITY] {
        assert_eq!(
            linalg::cholesky(&mut [4.0, 0.0, bad, 1.0], 2),
            Err(NotPositiveDefinite::NonFinite { row: 1, col: 0 }),
            "{bad} below the diagonal"
        );
        assert_eq!(
            linalg::cholesky(&mut [bad, 0.0, 0.0, 1.0], 2),
            Err(NotPositiveDefinite::NonFinite { row: 0, col: 0 }),
            "{bad} on the diagonal"
        );
    }
}

/// The callers turn the failure into a one-line numerical error, never a panic or a NaN.
#[test]
fn callers_report_a_numerical_error() {
    let one_line = |e: Error, what: &str| match e {
        Error::Numerical(msg) => {
            assert!(!msg.contains('\n'), "{what}: {msg}");
            assert!(msg.contains("not positive definite"), "{what}: {msg}");
        }
        other => panic!("{what}: {other:?}"),
    };
    let b = CpuBackend::<f32>::new();
    let mut a = b.upload(&[1.0, 0.0, 0.0, -1.0]).unwrap();
    let mut rhs = b.upload(&[1.0, 1.0]).unwrap();
    one_line(b.spd_solve(&mut a, &mut rhs, 1).unwrap_err(), "spd_solve");
    let mut a = b.upload(&[-1.0, 0.0, 0.0, -1.0]).unwrap();
    let u = b.upload(&[2.0, 0.0, 0.0, 2.0]).unwrap();
    one_line(
        b.woodbury_update(&mut a, &u, 2, 1.0).unwrap_err(),
        "woodbury",
    );
    let e = fisher::spd_inverse(vec![f64::NAN, 0.0, 0.0, 1.0], 2, "F").unwrap_err();
    one_line(e, "spd_inverse");
}

/// The backend's f64 `spd_solve` and `woodbury_update` against explicit formulas.
#[test]
fn backend_solve_and_woodbury_against_formulas() {
    let mut rng = Rng::new(9);
    let b = CpuBackend::<f64>::new();
    let (p, m) = (60, 5);
    let a = spd_with_condition(&mut rng, p, 1e4);
    let rhs = normals(&mut rng, 3 * p);
    let mut fa = a.clone();
    let mut x = rhs.clone();
    b.spd_solve(&mut fa, &mut x, 3).unwrap();
    for (x, r) in x.chunks(p).zip(rhs.chunks(p)) {
        assert!(backward_error(&a, x, r) < 1e-14, "spd_solve");
    }
    // (A⁻¹ + α UᵀU)⁻¹ from the definition, with A⁻¹ and the outer inverse by the scalar code.
    let u = normals(&mut rng, m * p);
    let alpha = 0.3;
    let mut a_inv_plus = scalar::spd_inverse(a.clone(), p);
    let utu = common::ref_gemm(true, false, (p, p, m), alpha, &u, &u, 1.0, &a_inv_plus);
    a_inv_plus.copy_from_slice(&utu);
    let want = scalar::spd_inverse(a_inv_plus, p);
    let mut got = a.clone();
    b.woodbury_update(&mut got, &u, m, alpha).unwrap();
    assert!(
        rel_diff(&got, &want) < 1e-9,
        "woodbury: {}",
        rel_diff(&got, &want)
    );
}
