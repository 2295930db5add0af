//! Dense linear algebra on row-major slices: the one place where hypergrad multiplies and
//! factorises dense matrices on the CPU. The reference solver (`exact`), NHGD's curvature
//! (`fisher`), the CPU backend's `gemm`, `syrk`, `spd_solve` and `woodbury_update`, and the ℓ1
//! code all come here, and everything here is done by [`faer`].
//!
//! faer works on strided views, so a row-major slice is viewed in place
//! ([`MatRef::from_row_major_slice`]) rather than copied. Work is spread over faer's global
//! parallelism ([`faer::get_global_parallelism`]), which is the whole rayon pool unless a
//! caller sets it otherwise; faer keeps small products and factorisations sequential itself.

use std::fmt;
use std::ops::MulAssign;

use faer::linalg::solvers::{DenseSolveCore, Llt, LltError};
use faer::linalg::triangular_solve::{
    solve_lower_triangular_in_place, solve_upper_triangular_in_place,
};
use faer::{Accum, MatMut, MatRef, Par, Side};

/// The element types of [`gemm`]: `f32` and `f64`, each multiplied in its own precision.
pub trait Scalar: faer::traits::RealField + Copy + PartialEq + MulAssign + From<f32> {}

impl Scalar for f32 {}
impl Scalar for f64 {}

/// Why a matrix has no Cholesky factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotPositiveDefinite {
    /// An entry of the lower triangle, `(row, column)`, is NaN or infinite.
    NonFinite { row: usize, col: usize },
    /// The pivot of row `index` is not positive: the leading minor of order `index + 1` is
    /// not positive definite.
    Pivot { index: usize },
}

impl fmt::Display for NotPositiveDefinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NonFinite { row, col } => write!(f, "entry ({row}, {col}) is not finite"),
            Self::Pivot { index } => write!(f, "pivot {index} is not positive"),
        }
    }
}

impl std::error::Error for NotPositiveDefinite {}

fn par() -> Par {
    faer::get_global_parallelism()
}

/// `C ← α op(A) op(B) + β C` with `op(A)` m×k, `op(B)` k×n and `C` m×n, all row-major;
/// `op(X)` is `Xᵀ` when the flag is set (then X is stored k×m or n×k). With `β = 0`, C is
/// only written (NaN in it does not propagate), as in BLAS.
///
/// # Panics
/// If a slice's length does not match its shape (callers check shapes first).
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: Scalar>(
    transpose_a: bool,
    transpose_b: bool,
    (m, n, k): (usize, usize, usize),
    alpha: T,
    a: &[T],
    b: &[T],
    beta: T,
    c: &mut [T],
) {
    let a = operand(a, (m, k), transpose_a);
    let b = operand(b, (k, n), transpose_b);
    let accum = pre_scale(c, beta);
    let c = MatMut::from_row_major_slice_mut(c, m, n);
    faer::linalg::matmul::matmul(c, accum, a, b, alpha, par());
}

/// The `rows×cols` operand `op(X)` of a product, from X stored row-major (`cols×rows` when
/// transposed).
fn operand<T: Scalar>(x: &[T], (rows, cols): (usize, usize), transposed: bool) -> MatRef<'_, T> {
    if transposed {
        MatRef::from_row_major_slice(x, cols, rows).transpose()
    } else {
        MatRef::from_row_major_slice(x, rows, cols)
    }
}

/// faer only overwrites or adds to the destination, so a general β scales C first.
fn pre_scale<T: Scalar>(c: &mut [T], beta: T) -> Accum {
    let zero = T::from(0.0);
    let one = T::from(1.0);
    if beta == zero {
        Accum::Replace
    } else {
        if beta != one {
            c.iter_mut().for_each(|v| *v *= beta);
        }
        Accum::Add
    }
}

/// `C ← α AᵀA + β C` for `A` (m×p) and `C` (p×p), row-major: every entry of C is written.
/// p is read off C, so that m = 0 (C ← β C) needs no special case.
///
/// One full GEMM, although C is symmetric whenever β C is (NHGD's Fisher): the lower
/// triangle alone is half the flops, but mirroring it into the upper one (and checking that
/// β C is symmetric first) reads C column by column, and those passes cost more than the
/// flops they save at every P measured, one thread, f32, rank 128 (issue 10): P = 640 level
/// (1.2 ms), P = 1,570 7.6 against 12–14 ms, P = 3,140 32 against 47 ms, P = 7,850 186
/// against 312–322 ms. The products `a_kᵢ a_kⱼ` and `a_kⱼ a_kᵢ` are the same numbers summed
/// over the same k, so the result is symmetric to rounding (bitwise, with faer's kernels).
pub fn syrk<T: Scalar>(alpha: T, a: &[T], m: usize, beta: T, c: &mut [T]) {
    let p = c.len().isqrt();
    gemm(true, false, (p, p, m), alpha, a, a, beta, c);
}

/// faer's LLᵀ factor of the SPD matrix whose lower triangle is that of the row-major `a`
/// (the strict upper triangle is not read).
fn factor(a: &[f64], dim: usize) -> Result<Llt<f64>, NotPositiveDefinite> {
    // faer stops at a pivot that is not positive, which a NaN pivot is not; an infinite entry
    // would give an infinite or NaN factor, so both are rejected before factorising.
    for row in 0..dim {
        if let Some(col) = a[row * dim..row * dim + row + 1]
            .iter()
            .position(|v| !v.is_finite())
        {
            return Err(NotPositiveDefinite::NonFinite { row, col });
        }
    }
    Llt::new(MatRef::from_row_major_slice(a, dim, dim), Side::Lower)
        .map_err(|LltError::NonPositivePivot { index }| NotPositiveDefinite::Pivot { index })
}

/// In-place Cholesky factorisation `A = LLᵀ` of a row-major SPD matrix: the lower triangle
/// becomes L (the strict upper triangle is left as it was, and is never read).
pub fn cholesky(a: &mut [f64], dim: usize) -> Result<(), NotPositiveDefinite> {
    let llt = factor(a, dim)?;
    let l = llt.L();
    for i in 0..dim {
        for j in 0..=i {
            a[i * dim + j] = l[(i, j)];
        }
    }
    Ok(())
}

/// Solves `LLᵀ X = B` in place, given the factor from [`cholesky`] (its strict upper triangle
/// is not read): `b` holds `nrhs` right-hand sides as rows (nrhs×dim, row-major), which
/// become the solutions.
pub fn cholesky_solve_rows(l: &[f64], dim: usize, b: &mut [f64], nrhs: usize) {
    let l = MatRef::from_row_major_slice(l, dim, dim);
    // The rows of a row-major nrhs×dim matrix are the columns of a column-major dim×nrhs one.
    let mut x = MatMut::from_column_major_slice_mut(b, dim, nrhs);
    solve_lower_triangular_in_place(l, x.as_mut(), par());
    solve_upper_triangular_in_place(l.transpose(), x, par());
}

/// The first half of [`cholesky_solve_rows`]: each of the `nrhs` rows of `b` becomes
/// `L⁻¹ b_r`, so that the rows z_r, z_s satisfy `z_r · z_s = b_r (LLᵀ)⁻¹ b_s`.
pub fn cholesky_half_solve_rows(l: &[f64], dim: usize, b: &mut [f64], nrhs: usize) {
    let l = MatRef::from_row_major_slice(l, dim, dim);
    let x = MatMut::from_column_major_slice_mut(b, dim, nrhs);
    solve_lower_triangular_in_place(l, x, par());
}

/// Solves `LLᵀ x = rhs` in place, given the factor from [`cholesky`].
pub fn cholesky_solve_in_place(l: &[f64], dim: usize, x: &mut [f64]) {
    cholesky_solve_rows(l, dim, x, 1);
}

/// The inverse of a row-major SPD matrix (only its lower triangle is read), row-major and
/// symmetric.
pub fn spd_inverse(a: &[f64], dim: usize) -> Result<Vec<f64>, NotPositiveDefinite> {
    let inv = factor(a, dim)?.inverse();
    // faer's inverse is symmetric, so its column-major order is also the row-major one.
    let mut out = Vec::with_capacity(dim * dim);
    for j in 0..dim {
        out.extend_from_slice(inv.col_as_slice(j));
    }
    Ok(out)
}

/// The singular values of a row-major `rows×cols` matrix, largest first (faer's SVD).
pub fn singular_values(a: &[f64], rows: usize, cols: usize) -> Result<Vec<f64>, String> {
    MatRef::from_row_major_slice(a, rows, cols)
        .singular_values()
        .map_err(|e| format!("the SVD did not converge ({e:?})"))
}

/// The least-squares solutions `X = argmin ‖A X − B‖_F` by Householder QR, for a row-major
/// `A` (rows×cols, rows ≥ cols, full column rank) and right-hand sides `B` (rows×nrhs,
/// row-major); returns X (cols×nrhs, row-major). QR works on A itself, never on AᵀA, so
/// the solution's relative error grows with κ(A), not κ(A)².
///
/// # Panics
/// If a slice's length does not match its shape or `rows < cols` (callers check first).
pub fn least_squares(a: &[f64], (rows, cols): (usize, usize), b: &[f64], nrhs: usize) -> Vec<f64> {
    use faer::linalg::solvers::SolveLstsq;
    let qr = MatRef::from_row_major_slice(a, rows, cols).qr();
    let mut x = MatRef::from_row_major_slice(b, rows, nrhs).to_owned();
    qr.solve_lstsq_in_place(x.as_mut());
    (0..cols)
        .flat_map(|i| (0..nrhs).map(move |j| (i, j)))
        .map(|(i, j)| x[(i, j)])
        .collect()
}
