//! Splitting, standardising and label corruption.

use super::rng::Rng;
use super::Dataset;
use crate::error::printable;
use crate::{Error, Result};

const SPLIT_OPTION: &str = "--split";

/// Checks split fractions: 2 or 3 of them, each finite and > 0, summing to 1 within 1e-9.
fn check_fractions(fractions: &[f64]) -> Result<()> {
    if !(2..=3).contains(&fractions.len()) {
        return Err(Error::option(
            SPLIT_OPTION,
            format!(
                "need 2 or 3 fractions (train,val or train,val,test), got {}",
                fractions.len()
            ),
        ));
    }
    if let Some(f) = fractions.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
        return Err(Error::option(
            SPLIT_OPTION,
            format!("every fraction must be a number > 0, got {f}"),
        ));
    }
    let sum: f64 = fractions.iter().sum();
    if (sum - 1.0).abs() > 1e-9 {
        return Err(Error::option(
            SPLIT_OPTION,
            format!("fractions must sum to 1, they sum to {sum}"),
        ));
    }
    Ok(())
}

/// Parses a split such as `"0.6,0.2,0.2"` or `"0.8,0.2"` (whitespace around the numbers is
/// allowed) and checks it as [`split`] does. Errors are [`Error::InvalidOption`] for `--split`.
pub fn parse_split(text: &str) -> Result<Vec<f64>> {
    let fractions = text
        .split(',')
        .map(|part| {
            let t = part.trim();
            t.parse::<f64>().map_err(|_| {
                Error::option(
                    SPLIT_OPTION,
                    format!(
                        "'{}': '{}' is not a number (expected e.g. 0.6,0.2,0.2)",
                        printable(text),
                        printable(t)
                    ),
                )
            })
        })
        .collect::<Result<Vec<f64>>>()?;
    check_fractions(&fractions)?;
    Ok(fractions)
}

/// Sizes of the parts of an `n`-row split: part k is rows `[b_k, b_{k+1})` of the shuffled
/// order with `b_k = round(n·(f_0 + … + f_{k-1}))` (half away from zero), `b_0 = 0` and the
/// last boundary fixed at `n`.
fn part_bounds(n: usize, fractions: &[f64]) -> Vec<usize> {
    let mut bounds = Vec::with_capacity(fractions.len() + 1);
    bounds.push(0);
    let mut cumulative = 0.0;
    for f in &fractions[..fractions.len() - 1] {
        cumulative += f;
        let b = (n as f64 * cumulative).round().clamp(0.0, n as f64) as usize;
        bounds.push(b.max(*bounds.last().unwrap_or(&0)));
    }
    bounds.push(n);
    bounds
}

/// Splits `ds` into 2 or 3 disjoint parts (e.g. train/val/test) that together hold every row.
///
/// The rows are shuffled by a permutation drawn from [`Rng::new`]`(seed)` (integer-only, so
/// the same seed gives the same split on every platform); part k takes positions
/// `[round(n·F_k), round(n·F_{k+1}))` of the shuffled order, where `F_k` is the sum of the
/// fractions before part k and rounding is half away from zero. Each part's size is thus
/// within one row of `fraction·n`, and the sizes add up to `n`. Rows keep the shuffled order
/// within each part. Parts are named `<name>[train]`, `<name>[val]`, `<name>[test]`.
///
/// Errors ([`Error::InvalidOption`] for `--split`): not 2 or 3 fractions, a fraction that is
/// not > 0, fractions not summing to 1 within 1e-9, or a part that would have no rows.
pub fn split(ds: &Dataset, fractions: &[f64], seed: u64) -> Result<Vec<Dataset>> {
    let parts = split_rows(ds.n(), fractions, seed, &ds.name)?;
    Ok(parts
        .iter()
        .zip(PART_NAMES)
        .map(|(rows, part_name)| {
            let mut part = ds.select(rows);
            part.name = format!("{}[{}]", ds.name, part_name);
            part
        })
        .collect())
}

const PART_NAMES: [&str; 3] = ["train", "val", "test"];

/// The rows of each part of [`split`] for `n` rows: part k is positions
/// `[round(n·F_k), round(n·F_{k+1}))` of `Rng::new(seed).permutation(n)`, in that shuffled
/// order. What the Python package's held-out split takes, so that it is the command line's
/// `--split` row for row. Errors as [`split`]'s (the dataset called `dataset`).
pub fn split_indices(n: usize, fractions: &[f64], seed: u64) -> Result<Vec<Vec<usize>>> {
    split_rows(n, fractions, seed, "X")
}

fn split_rows(n: usize, fractions: &[f64], seed: u64, dataset: &str) -> Result<Vec<Vec<usize>>> {
    check_fractions(fractions)?;
    let bounds = part_bounds(n, fractions);
    if let Some(k) = (0..fractions.len()).find(|&k| bounds[k + 1] == bounds[k]) {
        return Err(Error::option(
            SPLIT_OPTION,
            format!(
                "the {} part of dataset '{}' would be empty ({} rows split as {:?}); use larger fractions or more data",
                PART_NAMES[k], dataset, n, fractions
            ),
        ));
    }
    let perm = Rng::new(seed).permutation(n);
    Ok((0..fractions.len())
        .map(|k| perm[bounds[k]..bounds[k + 1]].to_vec())
        .collect())
}

/// The K folds of cross-validation over `n` rows, as `(fit rows, held-out rows)` per fold,
/// each sorted: the rows are shuffled by `Rng::new(seed).permutation(n)` and fold k holds
/// positions `[⌊kn/K⌋, ⌊(k+1)n/K⌋)` of that order, the fit rows being all the others. The
/// ℓ1 criterion's folds (`l1::cv::kfold`, checked equal in its tests) and the Python package's
/// `cv_folds`. Errors: [`Error::InvalidOption`] (`--folds`) unless `2 ≤ K ≤ n`.
pub fn fold_indices(n: usize, k: usize, seed: u64) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    if k < 2 || k > n {
        return Err(Error::option(
            "--folds",
            format!("needs 2 ≤ K ≤ n = {n}, got {k}"),
        ));
    }
    let perm = Rng::new(seed).permutation(n);
    Ok((0..k)
        .map(|f| {
            let (lo, hi) = (f * n / k, (f + 1) * n / k);
            let mut held: Vec<usize> = perm[lo..hi].to_vec();
            held.sort_unstable();
            let mut fit: Vec<usize> = perm[..lo].iter().chain(&perm[hi..]).copied().collect();
            fit.sort_unstable();
            (fit, held)
        })
        .collect())
}

/// Z-scores every column with the mean and population standard deviation (divisor n) of
/// `train`, and applies the same transform to each dataset in `others`.
///
/// Constant columns (all train values equal, or standard deviation 0) are only centred:
/// their train values become exactly 0 and the returned std for them is 1, so that the
/// returned `(mean, std)` are exactly the transform used, `x ↦ (x - mean_j) / std_j`.
/// A train set with no rows leaves everything unchanged (mean 0, std 1).
///
/// Datasets in `others` should have the same number of columns as `train`; columns beyond
/// train's are left untouched and, if an other dataset has fewer columns, only those it has
/// are transformed (use [`Dataset::with_columns`] to align widths first).
pub fn standardize(train: &mut Dataset, others: &mut [&mut Dataset]) -> (Vec<f64>, Vec<f64>) {
    let n = train.n();
    let d = train.d();
    let mut mean = vec![0.0; d];
    let mut std = vec![1.0; d];
    if n > 0 {
        for (j, col) in train.x.columns().into_iter().enumerate() {
            let first = col[0];
            if col.iter().all(|&v| v == first) {
                mean[j] = first;
                continue;
            }
            let m = col.sum() / n as f64;
            let var = col.iter().map(|&v| (v - m) * (v - m)).sum::<f64>() / n as f64;
            let s = var.sqrt();
            mean[j] = m;
            std[j] = if s > 0.0 && s.is_finite() { s } else { 1.0 };
        }
    }
    let apply = |ds: &mut Dataset| {
        for mut row in ds.x.rows_mut() {
            for (v, (m, s)) in row.iter_mut().zip(mean.iter().zip(&std)) {
                *v = (*v - m) / s;
            }
        }
    };
    apply(train);
    for other in others.iter_mut() {
        apply(other);
    }
    (mean, std)
}

/// Replaces the label of `round(fraction·n)` rows (half away from zero), chosen uniformly
/// without replacement by [`Rng::new`]`(seed)`, with a uniformly random *different* class in
/// `0..num_classes`. Returns the corrupted row indices, sorted.
///
/// Errors: [`Error::InvalidOption`] for `--corrupt` if `fraction` is not in `[0, 1]` or
/// `num_classes < 2`; [`Error::Labels`] if a label is not an integer in `0..num_classes`.
pub fn corrupt_labels(
    ds: &mut Dataset,
    num_classes: usize,
    fraction: f64,
    seed: u64,
) -> Result<Vec<usize>> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::option(
            "--corrupt",
            format!("the fraction of labels to corrupt must be in [0, 1], got {fraction}"),
        ));
    }
    if num_classes < 2 {
        return Err(Error::option(
            "--corrupt",
            format!("label corruption needs at least 2 classes, got {num_classes}"),
        ));
    }
    if let Some((i, &v)) =
        ds.y.iter()
            .enumerate()
            .find(|(_, &v)| !(v >= 0.0 && v.fract() == 0.0 && v < num_classes as f64))
    {
        return Err(Error::Labels(format!(
            "dataset '{}': label {v} at row {} is not a class in 0..{}; label corruption needs class labels",
            ds.name,
            i + 1,
            num_classes - 1
        )));
    }
    let n = ds.n();
    let count = ((fraction * n as f64).round() as usize).min(n);
    let mut rng = Rng::new(seed);
    let mut rows = rng.permutation(n);
    rows.truncate(count);
    rows.sort_unstable();
    for &i in &rows {
        let old = ds.y[i] as usize;
        let mut new = rng.below(num_classes - 1);
        if new >= old {
            new += 1;
        }
        ds.y[i] = new as f64;
    }
    Ok(rows)
}
