//! `GlmBilevel::evaluate`: the held-out loss and accuracy of a model, against a direct
//! computation in the test.

use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::Backend;
use hypergrad::data::{split, synthetic, Dataset};
use hypergrad::problem::{GlmBilevel, HyperLayout, ProblemKind};
use ndarray::Array2;

fn softplus(t: f64) -> f64 {
    if t > 0.0 {
        t + (-t).exp().ln_1p()
    } else {
        t.exp().ln_1p()
    }
}

#[test]
fn logistic_loss_and_accuracy_match_a_direct_computation() {
    // One draw (one w*), split into the rows the problem is built on and the rows evaluated.
    let (all, w_true) = synthetic::logistic(350, 6, 0.3, 3.0, 5);
    let parts = split(&all, &[0.5, 0.5], 1).expect("split");
    let (train, test) = (&parts[0], &parts[1]);
    let b = CpuBackend::<f64>::new();
    let problem = GlmBilevel::new(
        b.clone(),
        ProblemKind::Logreg,
        HyperLayout::Shared,
        train,
        train,
        0.0,
    )
    .expect("problem");
    let w = b.upload(&w_true).expect("w");
    let (loss, accuracy) = problem.evaluate(&w, test).expect("evaluate");
    let margins: Vec<f64> = test
        .x
        .rows()
        .into_iter()
        .zip(&test.y)
        .map(|(x, &y)| y * x.iter().zip(&w_true).map(|(a, b)| a * b).sum::<f64>())
        .collect();
    let want_loss = margins.iter().map(|&m| softplus(-m)).sum::<f64>() / test.n() as f64;
    let want_accuracy = margins.iter().filter(|&&m| m > 0.0).count() as f64 / test.n() as f64;
    assert!(
        (loss - want_loss).abs() <= 1e-12 * want_loss,
        "{loss} vs {want_loss}"
    );
    assert_eq!(accuracy, Some(want_accuracy));
    // The Bayes classifier on well-specified data is clearly better than chance.
    assert!(want_accuracy > 0.7, "accuracy {want_accuracy}");
}

#[test]
fn softmax_accuracy_counts_argmax_hits_and_ridge_has_no_accuracy() {
    // Two features, three classes, a model whose argmax is the class by construction.
    let x =
        Array2::from_shape_vec((4, 2), vec![1.0, 0.0, 0.0, 1.0, -1.0, -1.0, 1.0, 0.1]).expect("x");
    let data = Dataset::new(x, vec![0.0, 1.0, 2.0, 1.0], "toy").expect("data");
    let b = CpuBackend::<f64>::new();
    let problem = GlmBilevel::new(
        b.clone(),
        ProblemKind::Softmax,
        HyperLayout::Shared,
        &data,
        &data,
        0.0,
    )
    .expect("problem");
    // W (3×2, class-major): class 0 ← feature 0, class 1 ← feature 1, class 2 ← −(f0 + f1).
    let w = b.upload(&[2.0, 0.0, 0.0, 2.0, -1.0, -1.0]).expect("w");
    let (loss, accuracy) = problem.evaluate(&w, &data).expect("evaluate");
    // Row 4 (1, 0.1) with label 1 is predicted class 0: three of four right.
    assert_eq!(accuracy, Some(0.75));
    assert!(loss > 0.0 && loss.is_finite());

    let (reg, _) = synthetic::linear(50, 3, 0.0, 0.1, 2);
    let ridge = GlmBilevel::new(
        b.clone(),
        ProblemKind::Ridge,
        HyperLayout::Shared,
        &reg,
        &reg,
        0.0,
    )
    .expect("ridge");
    let zero = b.zeros(3).expect("zero");
    let (mse, acc) = ridge.evaluate(&zero, &reg).expect("evaluate");
    let want = reg.y.iter().map(|y| y * y).sum::<f64>() / reg.n() as f64;
    assert!((mse - want).abs() <= 1e-12 * want);
    assert_eq!(acc, None);
}
