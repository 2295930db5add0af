//! The hand-written row-major f64 routines that `hypergrad::linalg` had before faer, verbatim:
//! the reference the faer versions must agree with (tests/linalg.rs) and the "before" of the
//! dense benchmark (benches/dense.rs). Included by both with `#[path]`; not a test target.

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

/// `fisher::spd_inverse` before faer: one triangular solve per unit vector.
pub fn spd_inverse(mut a: Vec<f64>, dim: usize) -> Vec<f64> {
    cholesky(&mut a, dim).expect("SPD");
    let mut inv = vec![0.0; dim * dim];
    let mut column = vec![0.0; dim];
    for j in 0..dim {
        column.iter_mut().for_each(|v| *v = 0.0);
        column[j] = 1.0;
        cholesky_solve_in_place(&a, dim, &mut column);
        for i in 0..dim {
            inv[i * dim + j] = column[i];
        }
    }
    inv
}
