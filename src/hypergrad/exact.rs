//! `exact`: the reference. `H` is assembled densely in f64 from batched Hessian-vector
//! products on unit vectors and factorised by Cholesky, `q = H⁻¹∇_w f`.

use super::implicit::LinearSolution;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::linalg::{cholesky, cholesky_solve_in_place};
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

/// `q = H⁻¹ a` by a dense f64 Cholesky solve.
pub fn solve<P: Bilevel>(
    problem: &P,
    hessian: &P::Hessian,
    rhs: &Buf<P>,
) -> Result<LinearSolution<P::B>> {
    let b = problem.backend();
    let dim = problem.inner_dim();
    let mut h = dense_hessian(problem, hessian)?;
    cholesky(&mut h, dim)
        .map_err(|e| Error::Numerical(format!("the Hessian is not positive definite ({e})")))?;
    let mut q = b.download(rhs)?;
    cholesky_solve_in_place(&h, dim, &mut q);
    Ok(LinearSolution {
        q: b.upload(&q)?,
        iters: 0,
    })
}
