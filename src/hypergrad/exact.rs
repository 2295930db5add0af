//! `exact`: the reference. `H` is assembled densely in f64 from batched Hessian-vector
//! products on unit vectors and factorised by Cholesky, `q = H⁻¹∇_w f`.

use super::implicit::LinearSolution;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::problem::{Bilevel, Buf, InnerProblem};

/// Largest P for which `exact` assembles the dense Hessian (P² f64 = 128 MiB at 4096).
pub const MAX_DIM: usize = 4096;

/// Unit vectors per batched HVP while assembling `H`.
const BATCH: usize = 32;

/// The dense Hessian `H(ŵ)` (row-major P×P, f64), symmetrised `(H + Hᵀ)/2` to remove rounding.
pub fn dense_hessian<P: InnerProblem>(problem: &P, hessian: &P::Hessian) -> Result<Vec<f64>> {
    let b = problem.backend();
    let dim = problem.inner_dim();
    if dim > MAX_DIM {
        return Err(Error::option(
            "--method",
            format!("exact assembles the dense P×P Hessian and allows P ≤ {MAX_DIM}, but P = {dim}; use cg"),
        ));
    }
    let mut h = vec![0.0; dim * dim];
    let mut start = 0;
    while start < dim {
        let m = BATCH.min(dim - start);
        let mut units = vec![0.0; m * dim];
        for j in 0..m {
            units[j * dim + start + j] = 1.0;
        }
        let v = b.upload(&units)?;
        let mut hv = b.zeros(m * dim)?;
        problem.hvp(hessian, &v, &mut hv)?;
        let cols = b.download(&hv)?;
        // Column start+j of H is vector j of the batch; store it as row start+j (H symmetric).
        h[start * dim..(start + m) * dim].copy_from_slice(&cols);
        start += m;
    }
    for i in 0..dim {
        for j in 0..i {
            let s = 0.5 * (h[i * dim + j] + h[j * dim + i]);
            h[i * dim + j] = s;
            h[j * dim + i] = s;
        }
    }
    Ok(h)
}

/// In-place Cholesky factorisation `A = LLᵀ` of a row-major SPD matrix (lower triangle).
pub fn cholesky(a: &mut [f64], dim: usize) -> Result<()> {
    for j in 0..dim {
        let mut diag = a[j * dim + j];
        for k in 0..j {
            diag -= a[j * dim + k] * a[j * dim + k];
        }
        if !(diag > 0.0) {
            return Err(Error::Numerical(format!(
                "the Hessian is not positive definite (pivot {j} is {diag:e})"
            )));
        }
        let l_jj = diag.sqrt();
        a[j * dim + j] = l_jj;
        for i in j + 1..dim {
            let mut s = a[i * dim + j];
            for k in 0..j {
                s -= a[i * dim + k] * a[j * dim + k];
            }
            a[i * dim + j] = s / l_jj;
        }
    }
    Ok(())
}

/// Solves `LLᵀ x = rhs` given the factor from [`cholesky`].
pub fn cholesky_solve(l: &[f64], dim: usize, rhs: &[f64]) -> Vec<f64> {
    let mut x = rhs.to_vec();
    for i in 0..dim {
        let mut s = x[i];
        for k in 0..i {
            s -= l[i * dim + k] * x[k];
        }
        x[i] = s / l[i * dim + i];
    }
    for i in (0..dim).rev() {
        let mut s = x[i];
        for k in i + 1..dim {
            s -= l[k * dim + i] * x[k];
        }
        x[i] = s / l[i * dim + i];
    }
    x
}

/// `q = H⁻¹ a` by a dense f64 Cholesky solve.
pub fn solve<P: Bilevel>(
    problem: &P,
    hessian: &P::Hessian,
    rhs: &Buf<P>,
) -> Result<LinearSolution<P::B>> {
    let b = problem.backend();
    let dim = problem.inner_dim();
    let mut h = dense_hessian(problem, hessian)?;
    cholesky(&mut h, dim)?;
    let q = cholesky_solve(&h, dim, &b.download(rhs)?);
    Ok(LinearSolution {
        q: b.upload(&q)?,
        iters: 0,
    })
}
