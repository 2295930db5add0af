//! Label cleaning (`hyperclean` with corrupted labels): corrupting a seeded fraction of the
//! training labels, and the report that compares three models on the test rows.

use crate::backend::mlp::MlpOps;
use crate::backend::{Backend, FisherOps, GlmOps};
use crate::data::{self, Dataset};
use crate::problem::{Bilevel, GlmBilevel, HyperLayout, InnerProblem, MlpBilevel, ProblemKind};
use crate::solver::{self, InnerOptions};
use crate::{Error, Result};

/// Replaces the labels of `round(fraction·n)` seeded training rows with another class;
/// returns those rows. Only the class-label problems (softmax, hyperclean) have labels to
/// corrupt.
pub fn corrupt(
    kind: ProblemKind,
    train: &mut Dataset,
    fraction: f64,
    seed: u64,
) -> Result<Vec<usize>> {
    if !kind.is_multiclass() {
        return Err(Error::option(
            "--corrupt",
            "label corruption needs class labels (softmax or hyperclean)",
        ));
    }
    let classes = train.num_classes()?;
    data::corrupt_labels(train, classes, fraction, seed)
}

/// Test accuracies of the three models the main job compares, each the inner solution of the
/// same regularised softmax problem (ridge C): uniform weights on all (corrupted) rows, the
/// learnt weights σ(θ), and uniform weights on the clean rows only. For the linear model each
/// is the exact (unique) minimiser; for a network (`--model mlp:…`) each is the local
/// minimiser the inner solver reaches from the same seeded w₀, so the three models differ only
/// in their row weights.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CleaningReport {
    pub without_cleaning: f64,
    pub with_cleaning: f64,
    pub clean_rows_only: f64,
    pub corrupted: usize,
    pub n_train: usize,
    pub mean_weight_corrupted: f64,
    pub mean_weight_clean: f64,
    /// The model trained with the learnt weights (c×d, class-major; a network's P parameters).
    #[serde(skip)]
    pub coef: Vec<f64>,
}

/// The report for `problem` at its current θ; `train`, `val` and `test` are the run's data
/// (test required), `corrupted` the rows whose labels were replaced, `l2` the ridge C.
pub fn report<B: GlmOps + FisherOps + Clone>(
    problem: &GlmBilevel<B>,
    inner: &InnerOptions,
    l2: f64,
    splits: &super::data::DenseSplits,
    corrupted: &[usize],
) -> Result<CleaningReport> {
    let test = test_rows(splits)?;
    let b = problem.backend();
    let softmax_accuracy = |train: &Dataset| -> Result<f64> {
        let mut p = GlmBilevel::new(
            b.clone(),
            ProblemKind::Softmax,
            HyperLayout::Shared,
            train,
            &splits.val,
            l2,
        )?;
        p.set_theta(&[l2.ln()])?;
        let w = solver::solve(&p, None, inner)?.w;
        Ok(p.evaluate(&w, test)?.1.unwrap_or(f64::NAN))
    };
    let weighted_accuracy = |w: &B::Buf| Ok(problem.evaluate(w, test)?.1.unwrap_or(f64::NAN));
    three_models(
        problem,
        inner,
        splits,
        corrupted,
        softmax_accuracy,
        weighted_accuracy,
    )
}

/// The report for a network problem (`--model mlp:…`) at its current θ: the same three models,
/// each the same network (`hidden`, `activation`, w₀ from `seed`) trained by the inner solver
/// from w₀, with ridge C on its weight matrices (biases unpenalised, as in the run).
#[allow(clippy::too_many_arguments)]
pub fn report_network<B: MlpOps + FisherOps + Clone>(
    problem: &MlpBilevel<B>,
    inner: &InnerOptions,
    l2: f64,
    seed: u64,
    splits: &super::data::DenseSplits,
    corrupted: &[usize],
) -> Result<CleaningReport> {
    let test = test_rows(splits)?;
    let b = problem.backend();
    let net = problem.network();
    let hidden = &net.sizes()[1..net.layers()];
    let softmax_accuracy = |train: &Dataset| -> Result<f64> {
        let mut p = MlpBilevel::new(
            b.clone(),
            ProblemKind::Softmax,
            HyperLayout::Shared,
            hidden,
            net.activation(),
            train,
            &splits.val,
            l2,
            seed,
        )?;
        // softmax's λ = exp(θ) on the weight matrices: C, as hyperclean's ridge.
        p.set_theta(&[l2.ln()])?;
        let w = solver::solve(&p, None, inner)?.w;
        Ok(p.evaluate(&w, test)?.1.unwrap_or(f64::NAN))
    };
    let weighted_accuracy = |w: &B::Buf| Ok(problem.evaluate(w, test)?.1.unwrap_or(f64::NAN));
    three_models(
        problem,
        inner,
        splits,
        corrupted,
        softmax_accuracy,
        weighted_accuracy,
    )
}

/// What the linear and the network reports share: the model trained on all training rows and
/// the one on the clean rows only (`baseline_accuracy(rows)`: a fresh model, its test
/// accuracy), and `problem`'s own inner solution at its current θ (the learnt weights), scored
/// by `weighted_accuracy`.
fn three_models<P: Bilevel>(
    problem: &P,
    inner: &InnerOptions,
    splits: &super::data::DenseSplits,
    corrupted: &[usize],
    baseline_accuracy: impl Fn(&Dataset) -> Result<f64>,
    weighted_accuracy: impl Fn(&crate::problem::Buf<P>) -> Result<f64>,
) -> Result<CleaningReport> {
    let clean = clean_rows(splits.train.n(), corrupted);
    let without_cleaning = baseline_accuracy(&splits.train)?;
    let clean_rows_only = baseline_accuracy(&splits.train.select(&clean))?;
    let w = solver::solve(problem, None, inner)?.w;
    let with_cleaning = weighted_accuracy(&w)?;
    Ok(assemble(
        [without_cleaning, with_cleaning, clean_rows_only],
        problem.theta(),
        corrupted,
        &clean,
        problem.backend().download(&w)?,
    ))
}

fn test_rows(splits: &super::data::DenseSplits) -> Result<&Dataset> {
    splits.test.as_ref().ok_or_else(|| {
        Error::option(
            "--test",
            "label cleaning needs test data to report on (--test, or a third --split part)",
        )
    })
}

/// The training rows whose labels were not replaced.
fn clean_rows(n: usize, corrupted: &[usize]) -> Vec<usize> {
    let mut is_corrupted = vec![false; n];
    corrupted.iter().for_each(|&i| is_corrupted[i] = true);
    (0..n).filter(|&i| !is_corrupted[i]).collect()
}

/// The report from the three accuracies (without cleaning, with cleaning, clean rows only),
/// θ (the row weights are σ(θ)) and the model trained with the learnt weights.
fn assemble(
    [without_cleaning, with_cleaning, clean_rows_only]: [f64; 3],
    theta: &[f64],
    corrupted: &[usize],
    clean: &[usize],
    coef: Vec<f64>,
) -> CleaningReport {
    let weights: Vec<f64> = theta
        .iter()
        .map(|&t| crate::backend::cpu::sigmoid(t))
        .collect();
    let mean = |rows: &mut dyn Iterator<Item = usize>| {
        let (sum, count) = rows.fold((0.0, 0usize), |(s, c), i| (s + weights[i], c + 1));
        sum / count.max(1) as f64
    };
    CleaningReport {
        without_cleaning,
        with_cleaning,
        clean_rows_only,
        corrupted: corrupted.len(),
        n_train: theta.len(),
        mean_weight_corrupted: mean(&mut corrupted.iter().copied()),
        mean_weight_clean: mean(&mut clean.iter().copied()),
        coef,
    }
}
