//! ℓ1 hypergradients (`forward`, `implicit`, `implicit-forward`) against independent
//! references: the closed form on the support (dense Gaussian elimination written here),
//! central finite differences of the held-out criterion, each other, and the same data
//! stored dense and sparse.

mod l1_common;

use hypergrad::l1::{
    hypergradient, solve, L1Kind, L1Method, L1Options, L1Problem, L1Solver, Penalty,
};
use l1_common::*;
use ndarray::{s, Array2};

const KINDS: [L1Kind; 3] = [L1Kind::Lasso, L1Kind::Enet, L1Kind::Wlasso];
const N_TRAIN: usize = 60;

/// Tight options: gap ≤ 1e-15·‖y‖²/n, Jacobian/CG to 1e-13.
fn tight(method: L1Method, solver: L1Solver) -> L1Options {
    let mut o = L1Options::new(method);
    o.inner.solver = solver;
    o.inner.tol = 1e-15;
    o.inner.max_iters = 200_000;
    o.linear_tol = 1e-13;
    o.linear_iters = 100_000;
    o
}

/// θ with a moderate support: λ = λ_max/8 (wlasso: perturbed per feature), λ₂ = 0.05.
fn theta_for(problem: &L1Problem, seed: u64) -> Vec<f64> {
    let base = (problem.train.lambda_max() / 8.0).ln();
    match problem.kind {
        L1Kind::Lasso => vec![base],
        L1Kind::Enet => vec![base, 0.05f64.ln()],
        L1Kind::Wlasso => {
            let mut rng = hypergrad::data::rng::Rng::new(seed);
            (0..problem.d())
                .map(|_| base + 0.6 * (rng.uniform() - 0.5))
                .collect()
        }
    }
}

fn parts(x: &Array2<f64>, y: &[f64]) -> (Array2<f64>, Vec<f64>, Array2<f64>, Vec<f64>) {
    (
        x.slice(s![..N_TRAIN, ..]).to_owned(),
        y[..N_TRAIN].to_vec(),
        x.slice(s![N_TRAIN.., ..]).to_owned(),
        y[N_TRAIN..].to_vec(),
    )
}

fn rel(a: &[f64], b: &[f64]) -> f64 {
    max_abs_diff(a, b) / max_abs(b).max(1e-3)
}

#[test]
fn forward_and_implicit_forward_agree_dense_and_sparse() {
    for (seed, kind) in KINDS.into_iter().enumerate() {
        let (x, y) = instance(100, 30, 0.4, 10 + seed as u64);
        let mut by_storage = Vec::new();
        for sparse in [false, true] {
            let pb = problem(kind, &x, &y, N_TRAIN, sparse);
            let theta = theta_for(&pb, seed as u64);
            let f =
                hypergradient(&pb, &theta, &tight(L1Method::Forward, L1Solver::Cd), None).unwrap();
            let i = hypergradient(
                &pb,
                &theta,
                &tight(L1Method::ImplicitForward, L1Solver::Cd),
                None,
            )
            .unwrap();
            let e = rel(&f.hypergradient, &i.hypergradient);
            println!(
                "{kind:?} sparse={sparse}: |S|={} forward vs implicit-forward rel {e:.2e}",
                i.extra.support_size
            );
            assert!(i.extra.support_size > 0 && i.extra.support_size < 30);
            assert!(e <= 1e-6, "{kind:?} sparse={sparse}: {e:e}");
            assert!(f.error_bound.is_none() && i.error_bound.is_none());
            by_storage.push((f.hypergradient, i.hypergradient, i.outer_loss));
        }
        // The same data stored dense and sparse gives the same numbers.
        let (d, sp) = (&by_storage[0], &by_storage[1]);
        assert!(rel(&d.0, &sp.0) <= 1e-10, "forward dense vs sparse");
        assert!(
            rel(&d.1, &sp.1) <= 1e-10,
            "implicit-forward dense vs sparse"
        );
        assert!((d.2 - sp.2).abs() <= 1e-12 * d.2.abs());
    }
}

#[test]
fn every_method_matches_the_closed_form_on_the_support() {
    for (seed, kind) in KINDS.into_iter().enumerate() {
        for sparse in [false, true] {
            let (x, y) = instance(100, 25, if sparse { 0.5 } else { 1.0 }, 20 + seed as u64);
            let pb = problem(kind, &x, &y, N_TRAIN, sparse);
            let theta = theta_for(&pb, 7);
            let (xt, yt, xv, yv) = parts(&x, &y);
            let cases = [
                (L1Method::Implicit, L1Solver::Cd),
                (L1Method::ImplicitForward, L1Solver::Cd),
                (L1Method::Forward, L1Solver::Cd),
                (L1Method::Forward, L1Solver::Fista),
                (L1Method::Forward, L1Solver::Pgd),
                (L1Method::Implicit, L1Solver::Fista),
            ];
            for (method, solver) in cases {
                let r = hypergradient(&pb, &theta, &tight(method, solver), None).unwrap();
                let (h_ref, w_ref) = closed_form(kind, &theta, &xt, &yt, &xv, &yv, &r.w);
                let e = rel(&r.hypergradient, &h_ref);
                let ew = max_abs_diff(&r.w, &w_ref);
                println!(
                    "{kind:?} sparse={sparse} {} via {}: rel err {e:.2e}, |w − w_closed| {ew:.1e}, iters {}",
                    method.name(),
                    solver.name(),
                    r.inner_iters
                );
                assert!(r.inner_converged);
                assert!(e <= 1e-6, "{kind:?} {method:?} {solver:?}: {e:e}");
                assert!(
                    ew <= 1e-8,
                    "{kind:?} {solver:?}: ŵ off the closed form by {ew:e}"
                );
                assert!((r.outer_loss - mse(&xv, &yv, &r.w)).abs() <= 1e-12);
            }
        }
    }
}

#[test]
fn hypergradients_match_central_finite_differences() {
    for (seed, kind) in KINDS.into_iter().enumerate() {
        let (x, y) = instance(100, 20, 1.0, 30 + seed as u64);
        let pb = problem(kind, &x, &y, N_TRAIN, false);
        let theta = theta_for(&pb, 3);
        let opts = tight(L1Method::ImplicitForward, L1Solver::Cd);
        let r = hypergradient(&pb, &theta, &opts, None).unwrap();
        let support = |t: &[f64]| -> Vec<bool> {
            let pen = Penalty::new(kind, t, pb.d()).unwrap();
            let sol = solve(&pb.train, &pen, None, &opts.inner).unwrap();
            sol.w.iter().map(|v| *v != 0.0).collect()
        };
        let f_at = |t: &[f64]| -> f64 {
            let pen = Penalty::new(kind, t, pb.d()).unwrap();
            let sol = solve(&pb.train, &pen, None, &opts.inner).unwrap();
            mse(
                &x.slice(s![N_TRAIN.., ..]).to_owned(),
                &y[N_TRAIN..],
                &sol.w,
            )
        };
        let s0 = support(&theta);
        let eps = 1e-4;
        let coords: Vec<usize> = (0..theta.len()).take(8).collect();
        for k in coords {
            let (mut tp, mut tm) = (theta.clone(), theta.clone());
            tp[k] += eps;
            tm[k] -= eps;
            assert_eq!(support(&tp), s0, "support not stable at θ_{k} + ε");
            assert_eq!(support(&tm), s0, "support not stable at θ_{k} − ε");
            let fd = (f_at(&tp) - f_at(&tm)) / (2.0 * eps);
            let h = r.hypergradient[k];
            println!("{kind:?} θ_{k}: hypergradient {h:.10e}, central FD {fd:.10e}");
            assert!(
                (fd - h).abs() <= 1e-6 * h.abs().max(1e-2),
                "{kind:?} θ_{k}: {h} vs FD {fd}"
            );
        }
    }
}

#[test]
fn wlasso_is_zero_off_the_support() {
    let (x, y) = instance(100, 30, 0.5, 41);
    for sparse in [false, true] {
        let pb = problem(L1Kind::Wlasso, &x, &y, N_TRAIN, sparse);
        let theta = theta_for(&pb, 5);
        for method in L1Method::ALL {
            let r = hypergradient(&pb, &theta, &tight(method, L1Solver::Cd), None).unwrap();
            let off: Vec<usize> = (0..pb.d()).filter(|&j| r.w[j] == 0.0).collect();
            assert!(!off.is_empty() && off.len() < pb.d());
            for &j in &off {
                if method == L1Method::Forward {
                    // Forward mode differentiates the iterates: a coordinate that was active
                    // early and left the support leaves a column that decays geometrically.
                    assert!(
                        r.hypergradient[j].abs() <= 1e-12,
                        "forward h_{j} = {:e}",
                        r.hypergradient[j]
                    );
                } else {
                    assert_eq!(r.hypergradient[j], 0.0, "{} h_{j}", method.name());
                }
            }
            assert!(off.len() < pb.d() && r.hypergradient.iter().any(|h| *h != 0.0));
        }
    }
}

#[test]
fn warm_start_gives_the_same_hypergradient() {
    let (x, y) = instance(100, 30, 1.0, 51);
    let pb = problem(L1Kind::Lasso, &x, &y, N_TRAIN, false);
    let theta = theta_for(&pb, 0);
    let opts = tight(L1Method::ImplicitForward, L1Solver::Cd);
    let cold = hypergradient(&pb, &theta, &opts, None).unwrap();
    let near = hypergradient(&pb, &[theta[0] + 0.3], &opts, None).unwrap();
    let warm = hypergradient(&pb, &theta, &opts, Some(&near.w)).unwrap();
    assert!(rel(&warm.hypergradient, &cold.hypergradient) <= 1e-9);
}
