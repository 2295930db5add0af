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
    /// How each model's inner solve stopped, in the order without cleaning, with cleaning,
    /// clean rows only (a network's solves are local and may be capped by `--inner-iters`).
    pub solves: Vec<ModelSolve>,
    /// The model trained with the learnt weights (c×d, class-major; a network's P parameters).
    #[serde(skip)]
    pub coef: Vec<f64>,
}

/// How the inner solver stopped on one of the report's models.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelSolve {
    /// `without cleaning`, `with cleaning` or `clean rows only`.
    pub model: &'static str,
    pub iters: usize,
    /// `‖∇g‖ ≤ --inner-tol · ‖∇g(w₀)‖` was reached (not stopped by `--inner-iters` or the
    /// precision of g).
    pub converged: bool,
    pub grad_norm: f64,
    pub seconds: f64,
}

/// Solves `problem`'s inner problem from its w₀, timed, and scores the solution.
fn solved<P: InnerProblem>(
    problem: &P,
    inner: &InnerOptions,
    model: &'static str,
    score: impl FnOnce(&crate::problem::Buf<P>) -> Result<f64>,
) -> Result<(f64, ModelSolve, crate::problem::Buf<P>)> {
    let started = std::time::Instant::now();
    let solution = solver::solve(problem, None, inner)?;
    let solve = ModelSolve {
        model,
        iters: solution.iters,
        converged: solution.converged,
        grad_norm: solution.grad_norm,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((score(&solution.w)?, solve, solution.w))
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
    let softmax_accuracy = |train: &Dataset, model| -> Result<(f64, ModelSolve)> {
        let mut p = GlmBilevel::new(
            b.clone(),
            ProblemKind::Softmax,
            HyperLayout::Shared,
            train,
            &splits.val,
            l2,
        )?;
        p.set_theta(&[l2.ln()])?;
        let (accuracy, solve, _) = solved(&p, inner, model, |w| accuracy_on(&p, w, test))?;
        Ok((accuracy, solve))
    };
    three_models(problem, inner, splits, corrupted, softmax_accuracy, |w| {
        accuracy_on(problem, w, test)
    })
}

/// Test accuracy of a linear model's inner variable `w`.
fn accuracy_on<B: GlmOps>(problem: &GlmBilevel<B>, w: &B::Buf, test: &Dataset) -> Result<f64> {
    Ok(problem.evaluate(w, test)?.1.unwrap_or(f64::NAN))
}

/// Test accuracy of a network's parameters `w`.
fn network_accuracy_on<B: MlpOps>(
    problem: &MlpBilevel<B>,
    w: &B::Buf,
    test: &Dataset,
) -> Result<f64> {
    Ok(problem.evaluate(w, test)?.1.unwrap_or(f64::NAN))
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
    let softmax_accuracy = |train: &Dataset, model| -> Result<(f64, ModelSolve)> {
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
        let (accuracy, solve, _) = solved(&p, inner, model, |w| network_accuracy_on(&p, w, test))?;
        Ok((accuracy, solve))
    };
    three_models(problem, inner, splits, corrupted, softmax_accuracy, |w| {
        network_accuracy_on(problem, w, test)
    })
}

/// What the linear and the network reports share: the model trained on all training rows and
/// the one on the clean rows only (`baseline_accuracy(rows, model)`: a fresh model, its test
/// accuracy and how its solve stopped), and `problem`'s own inner solution at its current θ
/// (the learnt weights), scored by `weighted_accuracy`.
fn three_models<P: Bilevel>(
    problem: &P,
    inner: &InnerOptions,
    splits: &super::data::DenseSplits,
    corrupted: &[usize],
    baseline_accuracy: impl Fn(&Dataset, &'static str) -> Result<(f64, ModelSolve)>,
    weighted_accuracy: impl FnOnce(&crate::problem::Buf<P>) -> Result<f64>,
) -> Result<CleaningReport> {
    let clean = clean_rows(splits.train.n(), corrupted);
    let (without_cleaning, first) = baseline_accuracy(&splits.train, "without cleaning")?;
    let (clean_rows_only, last) =
        baseline_accuracy(&splits.train.select(&clean), "clean rows only")?;
    let (with_cleaning, learnt, w) = solved(problem, inner, "with cleaning", weighted_accuracy)?;
    let mut report = assemble(
        [without_cleaning, with_cleaning, clean_rows_only],
        problem.theta(),
        corrupted,
        &clean,
        problem.backend().download(&w)?,
    );
    report.solves = vec![first, learnt, last];
    Ok(report)
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
        solves: Vec::new(),
        coef,
    }
}
