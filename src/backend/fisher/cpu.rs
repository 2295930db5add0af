//! The CPU twin of [`FisherOps`]: factorisations and solves in `f64` whatever the backend's
//! precision (the reference the `f32` device results are held against), GEMMs through faer.

use super::FisherOps;
use crate::backend::cpu::{copy_from_f64, to_f64, CpuBackend, Real};
use crate::backend::shape::{check_len, square_side};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::linalg;

impl<T: Real> FisherOps for CpuBackend<T> {
    fn set_diagonal(&self, a: &mut Vec<T>, diag: &Vec<T>, invert: bool) -> Result<()> {
        let p = diag.len();
        check_len("diagonal's matrix", a.len(), p * p)?;
        for (i, &v) in diag.iter().enumerate() {
            a[i * p + i] = if invert { T::one() / v } else { v };
        }
        Ok(())
    }

    fn add_diagonal(&self, a: &mut Vec<T>, diag: &Vec<T>) -> Result<()> {
        let p = diag.len();
        check_len("diagonal's matrix", a.len(), p * p)?;
        for (i, &v) in diag.iter().enumerate() {
            a[i * p + i] += v;
        }
        Ok(())
    }

    fn direct_solve_max_dim(&self) -> usize {
        self.direct_solve_max_dim
    }

    fn spd_solve(&self, a: &mut Vec<T>, b: &mut Vec<T>, nrhs: usize) -> Result<()> {
        let dim = square_side("spd_solve A", a.len())?;
        check_len("spd_solve right-hand sides", b.len(), nrhs * dim)?;
        // Factorised and solved in f64 whatever T is: the reference for the f32 backends.
        let mut l = to_f64(a);
        linalg::cholesky(&mut l, dim).map_err(|e| {
            Error::Numerical(format!(
                "spd_solve: the matrix is not positive definite ({e})"
            ))
        })?;
        let mut x = to_f64(b);
        linalg::cholesky_solve_rows(&l, dim, &mut x, nrhs);
        copy_from_f64(b, &x);
        copy_from_f64(a, &l);
        Ok(())
    }

    fn kfac_damp(&self, xx: &mut Vec<T>, gg: &mut Vec<T>, lambda: &Vec<T>) -> Result<()> {
        let c = lambda.len();
        let d = square_side("K-FAC input factor", xx.len())?;
        check_len("K-FAC class factor", gg.len(), c * c)?;
        let mean_lambda = lambda.iter().map(|v| v.to_f64()).sum::<f64>() / c as f64;
        let tr_x = (0..d).map(|j| xx[j * d + j].to_f64()).sum::<f64>() / d as f64;
        let tr_g = (0..c).map(|k| gg[k * c + k].to_f64()).sum::<f64>() / c as f64;
        let pi = if tr_x > 0.0 && tr_g > 0.0 {
            (mean_lambda * tr_x / tr_g).sqrt()
        } else {
            mean_lambda.sqrt()
        };
        for j in 0..d {
            xx[j * d + j] = T::from_f64(xx[j * d + j].to_f64() + pi);
        }
        for (k, l) in lambda.iter().enumerate() {
            gg[k * c + k] = T::from_f64(gg[k * c + k].to_f64() + l.to_f64() / pi);
        }
        Ok(())
    }

    fn woodbury_update(&self, a: &mut Vec<T>, u: &Vec<T>, m: usize, alpha: f64) -> Result<()> {
        if !(alpha > 0.0 && alpha.is_finite()) {
            return Err(Error::Numerical(format!(
                "Woodbury update needs α > 0, got {alpha}"
            )));
        }
        let p = square_side("Woodbury A", a.len())?;
        check_len("Woodbury U", u.len(), m * p)?;
        // AUᵀ (p×m), then the capacitance S = I/α + U A Uᵀ (m×m, in f64).
        let mut au = vec![T::zero(); p * m];
        self.gemm(false, true, (p, m, p), 1.0, a, u, 0.0, &mut au)?;
        let mut s_t = vec![T::zero(); m * m];
        self.gemm(false, false, (m, m, p), 1.0, u, &au, 0.0, &mut s_t)?;
        let mut s = to_f64(&s_t);
        for i in 0..m {
            s[i * m + i] += 1.0 / alpha;
        }
        linalg::cholesky(&mut s, m).map_err(|e| {
            Error::Numerical(format!(
                "Woodbury update: the capacitance matrix is not positive definite ({e})"
            ))
        })?;
        // AUᵀ S⁻¹ UAᵀ = ZZᵀ with Z = AUᵀ L⁻ᵀ (p×m): each row of AUᵀ solved with L only.
        let mut z = to_f64(&au);
        linalg::cholesky_half_solve_rows(&s, m, &mut z, p);
        let z: Vec<T> = z.into_iter().map(T::from_f64).collect();
        // A ← A − ZZᵀ, a symmetric rank-m update as one GEMM (see `linalg::syrk` for why not
        // the triangle).
        linalg::gemm(false, true, (p, p, m), -T::one(), &z, &z, T::one(), a);
        Ok(())
    }
}
