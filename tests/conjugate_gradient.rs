//! `solver::linear::conjugate_gradient` on diagonal operators whose answers are known: it
//! solves a system of condition number 1e8 exactly, and refuses, with an error rather than a
//! huge number, operators that are indefinite or singular in the backend's precision.

use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::Backend;
use hypergrad::solver::linear::conjugate_gradient;
use hypergrad::Error;

/// CG for `diag(d) x = rhs` from x = 0 on `backend`.
fn solve_diagonal<B: Backend>(backend: &B, d: &[f64], rhs: &[f64]) -> Result<Vec<f64>, Error> {
    let diag = backend.upload(d)?;
    let rhs = backend.upload(rhs)?;
    let mut x = backend.zeros(d.len())?;
    conjugate_gradient(
        backend,
        |v, out| {
            backend.fill(out, 0.0)?;
            backend.mul_add(1.0, &diag, v, out)
        },
        &rhs,
        &mut x,
        1e-12,
        100,
    )?;
    backend.download(&x)
}

#[test]
fn a_well_posed_ill_conditioned_system_is_solved() {
    let x = solve_diagonal(
        &CpuBackend::<f64>::new(),
        &[1.0, 1e-8, 0.5],
        &[1.0, 1.0, 1.0],
    )
    .unwrap();
    let want = [1.0, 1e8, 2.0];
    for (g, w) in x.iter().zip(want) {
        assert!((g - w).abs() <= 1e-8 * w, "{x:?}");
    }
}

#[test]
fn a_direction_singular_in_f64_is_an_error_not_a_number() {
    let err = solve_diagonal(
        &CpuBackend::<f64>::new(),
        &[1.0, 1e-20, 2.0],
        &[1.0, 1.0, 1.0],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("singular in this precision"), "{err}");
}

#[test]
fn f32_refuses_what_f64_still_solves() {
    let (d, rhs) = ([1.0, 1e-9], [1.0, 1.0]);
    let x = solve_diagonal(&CpuBackend::<f64>::new(), &d, &rhs).unwrap();
    assert!((x[1] - 1e9).abs() <= 1e-8 * 1e9, "{x:?}");
    let err = solve_diagonal(&CpuBackend::<f32>::new(), &d, &rhs)
        .unwrap_err()
        .to_string();
    assert!(err.contains("singular in this precision"), "{err}");
}

#[test]
fn negative_curvature_is_an_error() {
    let err = solve_diagonal(&CpuBackend::<f64>::new(), &[1.0, -1.0], &[1.0, 1.0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not positive definite"), "{err}");
}
