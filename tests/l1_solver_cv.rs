//! ℓ1 inner solvers (duality-gap stopping, CD vs FISTA vs ISTA, KKT conditions checked from
//! the dense matrix), K-fold cross-validation against an independent per-fold computation,
//! the sparse LIBSVM reader, and bad input.

mod l1_common;

use std::path::Path;

use hypergrad::data::read_libsvm;
use hypergrad::data::rng::Rng;
use hypergrad::data::sparse::{read_libsvm_sparse, CsrMatrix};
use hypergrad::l1::{
    duality_gap, hypergradient, kfold, search, solve, Criterion, Design, Evaluator, L1Data, L1Kind,
    L1Method, L1Options, L1Problem, L1Solver, OuterOpt, Penalty, SearchOptions, SolveOptions,
};
use hypergrad::Error;
use l1_common::*;

#[test]
fn cd_gap_stopping_and_agreement_with_fista() {
    for (seed, kind) in [L1Kind::Lasso, L1Kind::Enet, L1Kind::Wlasso]
        .into_iter()
        .enumerate()
    {
        for sparse in [false, true] {
            let (x, y) = instance(80, 40, if sparse { 0.3 } else { 1.0 }, 100 + seed as u64);
            let data = if sparse {
                sparse_data(&x, &y)
            } else {
                dense_data(&x, &y)
            };
            let lmax = data.lambda_max();
            let theta: Vec<f64> = match kind {
                L1Kind::Lasso => vec![(lmax / 10.0).ln()],
                L1Kind::Enet => vec![(lmax / 10.0).ln(), (0.1f64).ln()],
                L1Kind::Wlasso => (0..40)
                    .map(|j| (lmax / (5.0 + j as f64 * 0.2)).ln())
                    .collect(),
            };
            let pen = Penalty::new(kind, &theta, 40).unwrap();
            let scale = y.iter().map(|v| v * v).sum::<f64>() / y.len() as f64;
            for tol in [1e-4, 1e-8, 1e-12] {
                let opts = SolveOptions {
                    tol,
                    ..SolveOptions::default()
                };
                let sol = solve(&data, &pen, None, &opts).unwrap();
                assert!(sol.converged);
                // Recompute the gap from scratch at the returned point.
                let r: Vec<f64> = (0..y.len())
                    .map(|i| y[i] - (0..40).map(|j| x[[i, j]] * sol.w[j]).sum::<f64>())
                    .collect();
                let gap = duality_gap(&data, &pen, &sol.w, &r);
                println!(
                    "{kind:?} sparse={sparse} tol={tol:e}: gap {gap:.2e} ≤ {:.2e}, {} epochs",
                    tol * scale,
                    sol.iters
                );
                assert!(gap <= tol * scale * (1.0 + 1e-9) + 1e-15);
            }
            let tight = |solver| SolveOptions {
                solver,
                tol: 1e-14,
                max_iters: 200_000,
                gap_every: 5,
            };
            let cd = solve(&data, &pen, None, &tight(L1Solver::Cd)).unwrap();
            let fista = solve(&data, &pen, None, &tight(L1Solver::Fista)).unwrap();
            let ista = solve(&data, &pen, None, &tight(L1Solver::Pgd)).unwrap();
            assert!(
                max_abs_diff(&cd.w, &fista.w) <= 1e-7,
                "cd vs fista {:e}",
                max_abs_diff(&cd.w, &fista.w)
            );
            assert!(max_abs_diff(&cd.w, &ista.w) <= 1e-7);
            // KKT from the dense matrix: |x_jᵀr/n − λ₂w_j| ≤ λ_j, with equality λ_j sign(w_j) on S.
            let n = y.len() as f64;
            let r: Vec<f64> = (0..y.len())
                .map(|i| y[i] - (0..40).map(|j| x[[i, j]] * cd.w[j]).sum::<f64>())
                .collect();
            for j in 0..40 {
                let c = (0..y.len()).map(|i| x[[i, j]] * r[i]).sum::<f64>() / n - pen.l2 * cd.w[j];
                if cd.w[j] != 0.0 {
                    assert!((c - pen.l1[j] * cd.w[j].signum()).abs() <= 1e-8);
                } else {
                    assert!(c.abs() <= pen.l1[j] + 1e-8);
                }
            }
        }
    }
}

#[test]
fn cross_validation_is_the_mean_of_the_fold_criteria() {
    let (x, y) = instance(90, 30, 0.5, 7);
    for sparse in [false, true] {
        let data = if sparse {
            sparse_data(&x, &y)
        } else {
            dense_data(&x, &y)
        };
        let k = 4;
        let seed = 11;
        let crit = Criterion::cross_val(L1Kind::Enet, &data, k, seed).unwrap();
        let mut opts = L1Options::new(L1Method::ImplicitForward);
        opts.inner.tol = 1e-14;
        opts.linear_tol = 1e-13;
        let theta = vec![(data.lambda_max() / 8.0).ln(), 0.05f64.ln()];
        let mut ev = Evaluator::new(crit, opts);
        let e = ev.value_and_grad(&theta).unwrap();
        // Independent folds: the documented permutation, fold f = positions [fn/K, (f+1)n/K).
        let n = y.len();
        let perm = Rng::new(seed).permutation(n);
        let mut fold_values = Vec::new();
        let mut fold_grads = Vec::new();
        for f in 0..k {
            let held: Vec<usize> = perm[f * n / k..(f + 1) * n / k].to_vec();
            let fit: Vec<usize> = (0..n).filter(|i| !held.contains(i)).collect();
            let sub = |rows: &[usize]| {
                let xs = x.select(ndarray::Axis(0), rows);
                let ys: Vec<f64> = rows.iter().map(|&i| y[i]).collect();
                (xs, ys)
            };
            let (xt, yt) = sub(&fit);
            let (xv, yv) = sub(&held);
            // Solve with FISTA (a different solver) and score with the test's own MSE.
            let pen = Penalty::new(L1Kind::Enet, &theta, 30).unwrap();
            let sol = solve(
                &dense_data(&xt, &yt),
                &pen,
                None,
                &SolveOptions {
                    solver: L1Solver::Fista,
                    tol: 1e-15,
                    max_iters: 500_000,
                    gap_every: 5,
                },
            )
            .unwrap();
            fold_values.push(mse(&xv, &yv, &sol.w));
            let (h, _) = closed_form(L1Kind::Enet, &theta, &xt, &yt, &xv, &yv, &sol.w);
            fold_grads.push(h);
        }
        let mean = fold_values.iter().sum::<f64>() / k as f64;
        let mean_grad: Vec<f64> = (0..2)
            .map(|c| fold_grads.iter().map(|g| g[c]).sum::<f64>() / k as f64)
            .collect();
        println!(
            "sparse={sparse}: CV {:.12e} vs mean of folds {mean:.12e}; grad {:?} vs {mean_grad:?}",
            e.value, e.hypergradient
        );
        assert!((e.value - mean).abs() <= 1e-9 * mean);
        assert!(max_abs_diff(&e.hypergradient, &mean_grad) <= 1e-7 * max_abs(&mean_grad));
        // The library's folds partition the rows.
        let folds = kfold(&data, k, seed).unwrap();
        assert_eq!(folds.iter().map(|(_, v)| v.y.len()).sum::<usize>(), n);
        // value() agrees with value_and_grad().
        assert!((ev.value(&theta).unwrap() - e.value).abs() <= 1e-9 * mean);
    }
}

#[test]
fn outer_searches_decrease_the_criterion() {
    let (x, y) = instance(150, 60, 1.0, 3);
    let pb = problem(L1Kind::Lasso, &x, &y, 100, false);
    let opts = L1Options::new(L1Method::ImplicitForward);
    let grid = search(
        Criterion::HeldOut(pb.clone()),
        opts,
        &SearchOptions::new(OuterOpt::Grid, 100),
        |_| Ok(()),
    )
    .unwrap();
    for opt in [OuterOpt::Hoag, OuterOpt::Adam, OuterOpt::Random] {
        let mut lines = 0;
        let res = search(
            Criterion::HeldOut(pb.clone()),
            opts,
            &SearchOptions::new(opt, 30),
            |_| {
                lines += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(lines, res.trace.len());
        let first = res.trace[0].outer_loss;
        println!(
            "{}: F {first:.5e} -> best {:.5e} (grid {:.5e}) in {} evaluations",
            opt.name(),
            res.best_loss,
            grid.best_loss,
            res.trace.len()
        );
        assert!(res.best_loss <= first);
        if opt == OuterOpt::Hoag {
            assert!(res.best_loss <= grid.best_loss * (1.0 + 1e-3));
        }
        assert!(res.trace.windows(2).all(|w| w[0].seconds <= w[1].seconds));
    }
    // enet and wlasso run too.
    for kind in [L1Kind::Enet, L1Kind::Wlasso] {
        let pb = problem(kind, &x, &y, 100, true);
        let res = search(
            Criterion::HeldOut(pb),
            opts,
            &SearchOptions::new(OuterOpt::Hoag, 10),
            |_| Ok(()),
        )
        .unwrap();
        assert!(res.best_loss <= res.trace[0].outer_loss);
    }
}

#[test]
fn sparse_libsvm_reader_matches_the_dense_reader() {
    let text = "# header\n1.5 1:2 4:-1.25\n-2 qid:3 2:0 3:4e-1\n\n0.25 5:7 # comment\n";
    let path = Path::new("mem.svm");
    let sparse = read_libsvm_sparse(text.as_bytes(), path, 0).unwrap();
    let dense = read_libsvm(text.as_bytes(), path, 0).unwrap();
    assert_eq!(sparse.x.to_dense().unwrap(), dense.x);
    assert_eq!(sparse.y, dense.y);
    assert_eq!(sparse.x.nnz(), 4, "explicit zeros are not stored");
    assert_eq!(sparse.x.to_csc().to_csr(), sparse.x);
    assert_eq!(CsrMatrix::from_dense(&dense.x), sparse.x);
    // Wider with min_features.
    assert_eq!(read_libsvm_sparse(text.as_bytes(), path, 9).unwrap().d(), 9);
    // Row selection on CSR and on the CSC design agree with the dense selection.
    let rows = [2, 0];
    let sel = sparse.select(&rows);
    assert_eq!(sel.x.to_dense().unwrap(), dense.select(&rows).x);
    let design = Design::sparse(&sparse.x).unwrap().select_rows(&rows);
    let mut v = vec![0.0; 2];
    design.matvec(&[1.0, 2.0, 3.0, 4.0, 5.0], &mut v);
    assert_eq!(v, vec![35.0, 2.0 - 5.0]);
    for (bad, line, what) in [
        ("1 1:2\n2 0:1\n", 2, "index 0"),
        ("1 1:2\n2 3:1 2:1\n", 2, "strictly increasing"),
        ("1 1:nan\n", 1, "non-finite"),
        ("x 1:1\n", 1, "label"),
        ("1 1-2\n", 1, "index:value"),
        ("# nothing\n", 2, "no data rows"),
    ] {
        let err = read_libsvm_sparse(bad.as_bytes(), path, 0)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("mem.svm:{line}:")), "{err}");
        assert!(err.contains(what), "{err}");
        assert!(!err.contains('\n'));
    }
}

#[test]
fn bad_input_errors_cleanly() {
    let (x, y) = instance(40, 10, 1.0, 1);
    let pb = problem(L1Kind::Lasso, &x, &y, 30, false);
    let opts = L1Options::new(L1Method::Implicit);
    // θ of the wrong length, non-finite θ.
    assert!(matches!(
        hypergradient(&pb, &[0.0, 0.0], &opts, None),
        Err(Error::Dimension(_))
    ));
    assert!(matches!(
        hypergradient(&pb, &[f64::NAN], &opts, None),
        Err(Error::Numerical(_))
    ));
    assert!(matches!(
        hypergradient(&pb, &[f64::INFINITY], &opts, None),
        Err(Error::Numerical(_))
    ));
    // Warm start of the wrong length.
    assert!(matches!(
        hypergradient(&pb, &[-1.0], &opts, Some(&[0.0; 3])),
        Err(Error::Dimension(_))
    ));
    // Non-finite design or label, mismatched rows or widths.
    let mut xb = x.clone();
    xb[[3, 4]] = f64::NAN;
    assert!(matches!(Design::dense(&xb), Err(Error::Numerical(_))));
    let mut yb = y.clone();
    yb[2] = f64::INFINITY;
    assert!(matches!(
        L1Data::new(Design::dense(&x).unwrap(), yb),
        Err(Error::Numerical(_))
    ));
    assert!(matches!(
        L1Data::new(Design::dense(&x).unwrap(), y[..5].to_vec()),
        Err(Error::Dimension(_))
    ));
    let narrow = dense_data(&x.slice(ndarray::s![.., ..5]).to_owned(), &y);
    assert!(matches!(
        L1Problem::new(L1Kind::Lasso, dense_data(&x, &y), narrow),
        Err(Error::Dimension(_))
    ));
    // Bad options.
    let mut o = opts;
    o.inner.tol = f64::NAN;
    assert!(matches!(
        hypergradient(&pb, &[-1.0], &o, None),
        Err(Error::InvalidOption { .. })
    ));
    assert!(matches!(
        kfold(&pb.train, 1, 0),
        Err(Error::InvalidOption {
            option: "--folds",
            ..
        })
    ));
    assert!(matches!(
        kfold(&pb.train, 31, 0),
        Err(Error::InvalidOption { .. })
    ));
    let mut s = SearchOptions::new(OuterOpt::Hoag, 3);
    s.theta0 = Some(vec![0.0, 1.0]);
    assert!(matches!(
        search(Criterion::HeldOut(pb.clone()), opts, &s, |_| Ok(())),
        Err(Error::Dimension(_))
    ));
    // Inconsistent CSR storage.
    let bad = CsrMatrix {
        n: 1,
        d: 2,
        indptr: vec![0, 1],
        indices: vec![5],
        values: vec![1.0],
    };
    assert!(matches!(Design::sparse(&bad), Err(Error::Dimension(_))));
}

/// Grid and random search screen every point at 1e-4 and refine the candidates to 1e-12:
/// the winner must be the one of the same search with every point solved at 1e-12, on dense
/// and sparse storage, held-out and CV criteria, lasso and enet, several seeds.
#[test]
fn screened_grid_picks_the_all_tight_winner() {
    let mut cases = 0;
    for seed in [3u64, 11, 12, 29] {
        for (density, sparse) in [(1.0, false), (0.3, true)] {
            let (x, y) = instance(160, 80, density, seed);
            for kind in [L1Kind::Lasso, L1Kind::Enet] {
                let pb = problem(kind, &x, &y, 100, sparse);
                let criteria = [
                    Criterion::HeldOut(pb.clone()),
                    Criterion::cross_val(kind, &pb.train, 4, seed).unwrap(),
                ];
                for crit in criteria {
                    for opt in [OuterOpt::Grid, OuterOpt::Random] {
                        let opts = L1Options::new(L1Method::Implicit);
                        let mut s = SearchOptions::new(opt, 40);
                        s.seed = seed;
                        let screened = search(crit.clone(), opts, &s, |_| Ok(())).unwrap();
                        s.screen_tol = 1e-12;
                        let tight = search(crit.clone(), opts, &s, |_| Ok(())).unwrap();
                        let r = screened.refinement.as_ref().unwrap();
                        assert!(!r.fallback, "seed {seed}: the bound failed");
                        assert_eq!(r.ladder, vec![1e-8, 1e-12]);
                        assert!(r.refined.len() < 40, "everything was refined");
                        let t = tight.refinement.as_ref().unwrap();
                        assert!(t.ladder.is_empty() && t.refined.is_empty());
                        let what = format!(
                            "seed {seed} sparse {sparse} {} {} {}",
                            kind.name(),
                            opt.name(),
                            crit.pairs().len()
                        );
                        // Same winner (an exact tie may break either way: then equal values).
                        let rel = (screened.best_loss - tight.best_loss).abs() / tight.best_loss;
                        assert!(
                            screened.best_theta == tight.best_theta || rel <= 1e-10,
                            "{what}: {:?} {} against {:?} {}",
                            screened.best_theta,
                            screened.best_loss,
                            tight.best_theta,
                            tight.best_loss
                        );
                        assert!(rel <= 1e-8, "{what}: refined criterion off by {rel:e}");
                        // The trace says what was computed: criterion only, real epochs.
                        for e in &screened.trace {
                            assert_eq!(e.evaluates, "criterion only");
                            assert!(e.hypergradient_norm.is_none());
                            assert!(e.inner_iters > 0, "{what}: {e:?}");
                        }
                        let total: usize = screened.trace.iter().map(|e| e.inner_iters).sum();
                        assert_eq!(total, screened.inner_iters);
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, 64);
}
