//! `fixed-point` is "inexact" reverse-mode AD (Ehrhardt & Roberts): K steps of Richardson
//! iteration from q₀ = 0 give the same hypergradient as back-propagating through K gradient
//! steps taken at the fixed point ŵ. Written out here with dense H (P×P) and B (P×p) built
//! from the formulas of SPEC §2 (the dense reference of `common`), not from the library:
//!
//! ```text
//! a = ∇f(ŵ), h = 0;  for k = K−1 … 0:  h ← h − η Bᵀa;  a ← (I − ηH) a
//! ```

#[macro_use]
mod common;

use common::*;
use hypergrad::backend::{Backend, Precision};
use hypergrad::hypergrad::{compute, default_step, Method, Options};
use hypergrad::problem::{Bilevel, HyperLayout, InnerProblem, ProblemKind};
use hypergrad::solver;
use ndarray::Array2;

const SEEDS: [u64; 3] = [21, 22, 23];

/// The inexact-AD recursion with dense matrices.
fn inexact_ad(
    h_mat: &Array2<f64>,
    b_mat: &Array2<f64>,
    outer_grad: &[f64],
    step: f64,
    k: usize,
) -> Vec<f64> {
    let mut a = outer_grad.to_vec();
    let mut h = vec![0.0; b_mat.ncols()];
    for _ in (0..k).rev() {
        for (hi, bi) in h.iter_mut().zip(matvec_t(b_mat, &a)) {
            *hi -= step * bi;
        }
        let ha = matvec(h_mat, &a);
        for (ai, hai) in a.iter_mut().zip(ha) {
            *ai -= step * hai;
        }
    }
    h
}

fn dense_reference(inst: &Instance) -> DenseRef {
    let p = &inst.problem;
    DenseRef::new(
        p.kind(),
        p.layout(),
        &inst.train,
        &inst.val,
        inst.l2,
        p.theta(),
    )
}

/// Sanity of the dense reference itself against the library at ŵ, so that a failure of the
/// main test points at the estimator and not at the reference: `∇g`, `∇f`, `H` (from
/// Hessian-vector products on unit vectors) and `B` (from `Bᵀe_j`) agree to rounding (1e-12
/// relative: both evaluate the same sums of O(n·d) f64 terms in different orders).
fn reference_agrees_with_library(kind: ProblemKind, layout: HyperLayout) {
    for seed in SEEDS {
        let inst = instance(kind, layout, seed);
        let problem = &inst.problem;
        let dense = dense_reference(&inst);
        let b = problem.backend();
        let dim = problem.inner_dim();
        let w_hat = solver::solve(problem, None, &tight_inner()).unwrap().w;

        let mut grad = b.zeros(dim).unwrap();
        problem.inner_value_grad(&w_hat, Some(&mut grad)).unwrap();
        let ref_grad = dense.inner_grad(&w_hat);
        // ∇g(ŵ) ≈ 0: compare at the scale of a gradient away from the solution.
        let scale = norm(&dense.inner_grad(&vec![0.0; dim]));
        assert!(
            dist(&grad, &ref_grad) <= 1e-12 * scale,
            "{kind:?}/{layout:?} seed {seed}: ∇g"
        );

        let mut fgrad = b.zeros(dim).unwrap();
        let f = problem.outer_value_grad(&w_hat, Some(&mut fgrad)).unwrap();
        let (ref_f, ref_fgrad) = dense.outer_value_grad(&w_hat);
        assert!(
            (f - ref_f).abs() <= 1e-12 * ref_f.abs(),
            "{kind:?}/{layout:?}: f"
        );
        assert!(
            rel_err(&fgrad, &ref_fgrad) <= 1e-12,
            "{kind:?}/{layout:?}: ∇f"
        );

        let hess = problem.hessian(&w_hat).unwrap();
        let ref_h = dense.hessian(&w_hat);
        let ref_b = dense.cross(&w_hat);
        for j in 0..dim {
            let mut e = vec![0.0; dim];
            e[j] = 1.0;
            let mut col = b.zeros(dim).unwrap();
            problem.hvp(&hess, &e, &mut col).unwrap();
            let want: Vec<f64> = ref_h.column(j).to_vec();
            assert!(
                rel_err(&col, &want) <= 1e-12,
                "{kind:?}/{layout:?} seed {seed}: H column {j}: {col:?} vs {want:?}"
            );
            let row = problem.cross_t(&w_hat, &e).unwrap();
            let want: Vec<f64> = ref_b.row(j).to_vec();
            assert!(
                dist(&row, &want) <= 1e-12 * norm(ref_b.as_slice().unwrap()),
                "{kind:?}/{layout:?} seed {seed}: B row {j}: {row:?} vs {want:?}"
            );
        }
    }
}

/// `compute(FixedPoint)` with K steps and step η equals the dense recursion, to 1e-12
/// relative: the same K terms `η Bᵀ(I − ηH)^k ∇f` summed in another order (Horner-like in the
/// library, term by term here), with rounding of order K·1e-16 amplified by at most the
/// cancellation in the sum.
fn fixed_point_is_inexact_ad(kind: ProblemKind, layout: HyperLayout) {
    for seed in SEEDS {
        let inst = instance(kind, layout, seed);
        let problem = &inst.problem;
        let dense = dense_reference(&inst);
        let inner = tight_inner();
        let w_hat = solver::solve(problem, None, &inner).unwrap().w;
        let h_mat = dense.hessian(&w_hat);
        let b_mat = dense.cross(&w_hat);
        let (_, outer_grad) = dense.outer_value_grad(&w_hat);
        for (k, factor) in [(1, 1.0), (4, 0.5), (17, 0.9), (60, 1.0)] {
            let step = factor * default_step(problem).unwrap();
            let mut opts = Options::new(Method::FixedPoint, Precision::F64);
            opts.inner = inner;
            opts.step = Some(step);
            opts.linear_iters = Some(k);
            let got = compute(problem, &opts, None).unwrap();
            assert_eq!(got.w, w_hat, "compute must use the same inner solution");
            let want = inexact_ad(&h_mat, &b_mat, &outer_grad, step, k);
            let e = rel_err(&got.hypergradient, &want);
            note(|| format!("{kind:?}/{layout:?} seed {seed} K={k}: {e:.2e}"));
            assert!(
                e <= 1e-12,
                "{kind:?}/{layout:?} seed {seed}, K = {k}, η = {step}: fixed-point vs inexact AD \
                 relative error {e:e}\n got  {:?}\n want {:?}",
                got.hypergradient,
                want
            );
        }
    }
}

/// K fixed-point steps from zero equal the Neumann series with K − 1 terms (SPEC §3:
/// `q_K = η Σ_{k<K} (I − ηH)^k ∇f`), to rounding (1e-12 relative).
fn fixed_point_is_neumann_minus_one(kind: ProblemKind, layout: HyperLayout) {
    for seed in SEEDS {
        let inst = instance(kind, layout, seed);
        let step = 0.8 * default_step(&inst.problem).unwrap();
        for k in [1, 2, 10, 50] {
            let mut fp = Options::new(Method::FixedPoint, Precision::F64);
            fp.step = Some(step);
            fp.linear_iters = Some(k);
            let mut nm = fp;
            nm.method = Method::Neumann;
            nm.linear_iters = Some(k - 1);
            let a = compute(&inst.problem, &fp, None).unwrap();
            let b = compute(&inst.problem, &nm, None).unwrap();
            let e = rel_err(&a.hypergradient, &b.hypergradient);
            assert!(
                e <= 1e-12,
                "{kind:?}/{layout:?} seed {seed}: fixed-point K = {k} vs neumann {} terms: {e:e}",
                k - 1
            );
            // And K terms of Neumann are not K − 1 (the comparison can fail): before the series
            // has converged, one more term changes the result visibly.
            if k <= 10 {
                nm.linear_iters = Some(k);
                let c = compute(&inst.problem, &nm, None).unwrap();
                assert!(
                    rel_err(&c.hypergradient, &a.hypergradient) > 1e-9,
                    "{kind:?}/{layout:?} seed {seed}: neumann with {k} and {} terms coincide",
                    k - 1
                );
            }
        }
    }
}

for_each_config!(reference_agrees_with_library);
for_each_config!(fixed_point_is_inexact_ad);
for_each_config!(fixed_point_is_neumann_minus_one);
