//! Shared helpers of the ℓ1 tests: random sparse-regression instances stored dense and
//! sparse, and naive dense f64 references written from the formulas (no library kernels).
#![allow(dead_code, clippy::needless_range_loop)]

use hypergrad::data::rng::Rng;
use hypergrad::data::sparse::CsrMatrix;
use hypergrad::l1::{Design, L1Data, L1Kind, L1Problem};
use ndarray::Array2;

/// A row-major n×d matrix with correlated Gaussian columns (AR(1), rho) where each entry is
/// kept with probability `density` (1 = dense), and `y = X w* + 0.1 ε` with a 5-sparse w*.
pub fn instance(n: usize, d: usize, density: f64, seed: u64) -> (Array2<f64>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let mut x = hypergrad::data::synthetic::design(n, d, 0.5, &mut rng);
    if density < 1.0 {
        x.mapv_inplace(|v| if rng.uniform() < density { v } else { 0.0 });
    }
    let mut w = vec![0.0; d];
    for (k, wj) in w.iter_mut().enumerate().take(5.min(d)) {
        *wj = if k % 2 == 0 { 1.0 } else { -0.7 } * (1.0 + k as f64 * 0.2);
    }
    let y = (0..n)
        .map(|i| (0..d).map(|j| x[[i, j]] * w[j]).sum::<f64>() + 0.1 * rng.normal())
        .collect();
    (x, y)
}

pub fn dense_data(x: &Array2<f64>, y: &[f64]) -> L1Data {
    L1Data::new(Design::dense(x).unwrap(), y.to_vec()).unwrap()
}

pub fn sparse_data(x: &Array2<f64>, y: &[f64]) -> L1Data {
    L1Data::new(
        Design::sparse(&CsrMatrix::from_dense(x)).unwrap(),
        y.to_vec(),
    )
    .unwrap()
}

/// Train rows `0..n_train`, validation the rest; `sparse` picks the storage.
pub fn problem(
    kind: L1Kind,
    x: &Array2<f64>,
    y: &[f64],
    n_train: usize,
    sparse: bool,
) -> L1Problem {
    let (xt, xv) = (
        x.slice(ndarray::s![..n_train, ..]).to_owned(),
        x.slice(ndarray::s![n_train.., ..]).to_owned(),
    );
    let mk = if sparse { sparse_data } else { dense_data };
    L1Problem::new(kind, mk(&xt, &y[..n_train]), mk(&xv, &y[n_train..])).unwrap()
}

/// `(1/m)‖y − Xw‖²` from the dense matrix.
pub fn mse(x: &Array2<f64>, y: &[f64], w: &[f64]) -> f64 {
    let m = y.len();
    (0..m)
        .map(|i| {
            let p: f64 = (0..w.len()).map(|j| x[[i, j]] * w[j]).sum();
            (y[i] - p) * (y[i] - p)
        })
        .sum::<f64>()
        / m as f64
}

/// Solves `A z = b` by Gaussian elimination with partial pivoting (dense, naive).
pub fn gauss_solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let piv = (c..n)
            .max_by(|&i, &j| a[i][c].abs().partial_cmp(&a[j][c].abs()).unwrap())
            .unwrap();
        a.swap(c, piv);
        b.swap(c, piv);
        for r in c + 1..n {
            let f = a[r][c] / a[c][c];
            for k in c..n {
                a[r][k] -= f * a[c][k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut z = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * z[k]).sum();
        z[r] = (b[r] - s) / a[r][r];
    }
    z
}

/// The closed-form hypergradient on the support of `w` (SPEC §2, Bertrand et al. 2022):
/// `ŵ_S = A⁻¹(X_Sᵀy/n − λ_S s_S)`, `A = X_SᵀX_S/n + λ₂I`, so `∂ŵ_S/∂θ_k = −A⁻¹ b_k`,
/// `b_k = s ⊙ ∂λ/∂θ_k + ŵ_S ∂λ₂/∂θ_k`, and `h_k = (∂ŵ_S/∂θ_k)ᵀ ∇_S f`,
/// `∇f = −(2/m)X'ᵀ(y' − X'ŵ)`. Also returns the closed-form ŵ_S for comparison.
pub fn closed_form(
    kind: L1Kind,
    theta: &[f64],
    xt: &Array2<f64>,
    yt: &[f64],
    xv: &Array2<f64>,
    yv: &[f64],
    w: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let (n, d) = xt.dim();
    let m = yv.len();
    let s: Vec<usize> = (0..d).filter(|&j| w[j] != 0.0).collect();
    let (lam, lam2) = match kind {
        L1Kind::Lasso => (vec![theta[0].exp(); d], 0.0),
        L1Kind::Enet => (vec![theta[0].exp(); d], theta[1].exp()),
        L1Kind::Wlasso => (theta.iter().map(|t| t.exp()).collect(), 0.0),
    };
    let a: Vec<Vec<f64>> = s
        .iter()
        .enumerate()
        .map(|(ai, &i)| {
            s.iter()
                .enumerate()
                .map(|(bi, &j)| {
                    (0..n).map(|r| xt[[r, i]] * xt[[r, j]]).sum::<f64>() / n as f64
                        + if ai == bi { lam2 } else { 0.0 }
                })
                .collect()
        })
        .collect();
    let sign: Vec<f64> = s.iter().map(|&j| w[j].signum()).collect();
    let rhs: Vec<f64> = s
        .iter()
        .zip(&sign)
        .map(|(&j, sg)| (0..n).map(|r| xt[[r, j]] * yt[r]).sum::<f64>() / n as f64 - lam[j] * sg)
        .collect();
    let w_s = gauss_solve(a.clone(), rhs);
    let mut wfull = vec![0.0; d];
    for (a_, &j) in s.iter().enumerate() {
        wfull[j] = w_s[a_];
    }
    let resid: Vec<f64> = (0..m)
        .map(|i| yv[i] - (0..d).map(|j| xv[[i, j]] * wfull[j]).sum::<f64>())
        .collect();
    let gf: Vec<f64> = s
        .iter()
        .map(|&j| -2.0 / m as f64 * (0..m).map(|i| xv[[i, j]] * resid[i]).sum::<f64>())
        .collect();
    let p = theta.len();
    let mut h = vec![0.0; p];
    for (k, hk) in h.iter_mut().enumerate() {
        let b: Vec<f64> = s
            .iter()
            .enumerate()
            .map(|(a_, &j)| {
                let dl1 = match kind {
                    L1Kind::Lasso | L1Kind::Enet if k == 0 => lam[j],
                    L1Kind::Wlasso if k == j => lam[j],
                    _ => 0.0,
                };
                let dl2 = if kind == L1Kind::Enet && k == 1 {
                    lam2
                } else {
                    0.0
                };
                sign[a_] * dl1 + w_s[a_] * dl2
            })
            .collect();
        let dw = gauss_solve(a.clone(), b);
        *hk = -dw.iter().zip(&gf).map(|(a, b)| a * b).sum::<f64>();
    }
    (h, wfull)
}

pub fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

pub fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}
