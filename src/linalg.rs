//! Dense f64 linear algebra on row-major slices, shared by the reference solver (`exact`) and
//! the CPU backend's Woodbury update: Cholesky factorisation and the triangular solves.

/// In-place Cholesky factorisation `A = LLᵀ` of a row-major SPD matrix: the lower triangle
/// becomes L (the strict upper triangle is left as it was). On failure, returns the first pivot
/// that is not a positive finite number, as `(index, value)`.
pub fn cholesky(a: &mut [f64], dim: usize) -> Result<(), (usize, f64)> {
    for j in 0..dim {
        let mut pivot = a[j * dim + j];
        for k in 0..j {
            pivot -= a[j * dim + k] * a[j * dim + k];
        }
        if !(pivot > 0.0 && pivot.is_finite()) {
            return Err((j, pivot));
        }
        let l_jj = pivot.sqrt();
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

/// Solves `LLᵀ x = rhs` in place, given the factor from [`cholesky`].
pub fn cholesky_solve_in_place(l: &[f64], dim: usize, x: &mut [f64]) {
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
}
