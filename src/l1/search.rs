//! Outer search over θ = log λ, minimising a held-out or cross-validation [`Criterion`]:
//!
//! * `hoag`: gradient descent with an adaptive step and a line search, in the style of HOAG
//!   (Pedregosa 2016) and sparse-ho's `LineSearch`: step `1/L` (at most 2 in θ),
//!   `L₀ = ‖∇F(θ₀)‖` (the first step moves θ by 1); a step that decreases F
//!   (`F⁺ ≤ F − 10⁻⁴ ⟨∇F, θ − θ⁺⟩`) is accepted and L is re-estimated from the secant
//!   curvature `⟨Δ∇F, Δθ⟩/‖Δθ‖²` (Barzilai–Borwein, kept ≥ L/10; halved when not positive),
//!   otherwise θ is kept and `L ← 2L`; the inner tolerance ε_k (also the linear / Jacobian
//!   tolerance, when looser than the one in the options) decreases geometrically from
//!   `tol_start` to `tol_end` over the accepted steps, as in HOAG;
//! * `adam`: Adam on θ (β = 0.9, 0.999), learning rate `lr`;
//! * `grid`: `steps` points of a log-spaced grid from λ_max down to `λ_max · ratio` (a
//!   product grid of ⌈√steps⌉² points for `enet`; one shared λ for `wlasso`), warm-started
//!   along the path, criterion only;
//! * `random`: `steps` uniform draws of θ in the same box, criterion only.
//!
//! θ is kept in the box `[log λ_max + log ratio, log λ_max]` (for enet's λ₂:
//! `[log λ_max − 12, log λ_max + 2]`), outside which the Lasso solution is 0 or the
//! penalty is negligible. Every evaluation is reported to a callback as it happens (so a
//! trace file can be written line by line) and kept in the returned trace.

use std::time::Instant;

use super::cv::{Criterion, Evaluator};
use super::hypergrad::L1Options;
use super::problem::L1Kind;
use crate::data::rng::Rng;
use crate::{Error, Result};

/// The outer optimiser (`--outer-opt`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OuterOpt {
    Hoag,
    Adam,
    Grid,
    Random,
}

impl OuterOpt {
    pub fn name(self) -> &'static str {
        match self {
            OuterOpt::Hoag => "hoag",
            OuterOpt::Adam => "adam",
            OuterOpt::Grid => "grid",
            OuterOpt::Random => "random",
        }
    }
}

impl std::str::FromStr for OuterOpt {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [
            OuterOpt::Hoag,
            OuterOpt::Adam,
            OuterOpt::Grid,
            OuterOpt::Random,
        ]
        .into_iter()
        .find(|o| o.name() == s)
        .ok_or_else(|| {
            Error::option(
                "--outer-opt",
                format!("unknown optimiser '{s}' (use hoag, adam, grid, random)"),
            )
        })
    }
}

/// Options of [`search`].
#[derive(Clone, Debug)]
pub struct SearchOptions {
    pub opt: OuterOpt,
    /// Outer steps (hoag, adam) or criterion evaluations (grid, random).
    pub steps: usize,
    /// Start (hoag, adam). `None`: every λ = λ_max/10.
    pub theta0: Option<Vec<f64>>,
    /// Adam's learning rate (in log-λ units).
    pub lr: f64,
    /// The box and grid span: λ from λ_max down to `ratio · λ_max`.
    pub ratio: f64,
    /// HOAG's inner tolerance schedule: `tol_k = max(tol_end, tol_start · decay^k)`.
    pub tol_start: f64,
    pub tol_end: f64,
    pub tol_decay: f64,
    /// Seed of `random`.
    pub seed: u64,
    /// Warm-start each inner solve from the previous ŵ (per fold).
    pub warm_start: bool,
}

impl SearchOptions {
    /// Defaults for `opt` with `steps`.
    pub fn new(opt: OuterOpt, steps: usize) -> Self {
        SearchOptions {
            opt,
            steps,
            theta0: None,
            lr: 0.5,
            ratio: 1e-3,
            tol_start: 1e-4,
            tol_end: 1e-9,
            tol_decay: 0.3,
            seed: 0,
            warm_start: true,
        }
    }
}

/// One evaluation of the criterion during the search (SPEC §6 trace fields plus θ).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TraceEntry {
    /// 0 is the starting point (or the first grid point).
    pub step: usize,
    /// Seconds since the search started.
    pub seconds: f64,
    pub theta: Vec<f64>,
    pub theta_norm: f64,
    /// F(θ) at this step's θ.
    pub outer_loss: f64,
    /// ‖∇F(θ)‖ (`None` for grid and random search, which do not compute it).
    pub hypergradient_norm: Option<f64>,
    /// Whether HOAG accepted the step (always true for the others).
    pub accepted: bool,
    /// The best F seen so far.
    pub best_loss: f64,
    /// Inner solver epochs summed over the folds for this evaluation.
    pub inner_iters: usize,
}

/// Outcome of [`search`].
#[derive(Clone, Debug)]
pub struct SearchResult {
    pub best_theta: Vec<f64>,
    pub best_loss: f64,
    pub trace: Vec<TraceEntry>,
    pub seconds: f64,
}

/// Longest HOAG step in θ (log-λ units).
const MAX_STEP: f64 = 2.0;

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>().sqrt()
}

/// The box `[lo_k, hi_k]` for each θ entry.
fn bounds(kind: L1Kind, p: usize, lambda_max: f64, ratio: f64) -> Vec<(f64, f64)> {
    let hi = lambda_max.ln();
    let lo = hi + ratio.ln();
    (0..p)
        .map(|k| {
            if kind == L1Kind::Enet && k == 1 {
                (hi - 12.0, hi + 2.0)
            } else {
                (lo, hi)
            }
        })
        .collect()
}

/// Runs the outer search on `criterion` with hypergradients from `opts` (its `method` and
/// `inner.solver`; HOAG overrides `inner.tol` by its schedule), calling `on_step` with every
/// trace entry as it is made. Errors: bad options, a criterion with λ_max = 0 (y ⟂ X), or
/// any error of the inner solves or of `on_step`.
pub fn search(
    criterion: Criterion,
    opts: L1Options,
    search: &SearchOptions,
    mut on_step: impl FnMut(&TraceEntry) -> Result<()>,
) -> Result<SearchResult> {
    let started = Instant::now();
    if !(search.ratio > 0.0 && search.ratio < 1.0) {
        return Err(Error::option(
            "--ratio",
            format!("must be in (0, 1), got {}", search.ratio),
        ));
    }
    if !(search.lr > 0.0 && search.lr.is_finite()) {
        return Err(Error::option(
            "--lr",
            format!("must be > 0, got {}", search.lr),
        ));
    }
    let kind = criterion.kind();
    let d = criterion.d();
    let p = kind.hyper_dim(d);
    let lambda_max = criterion.lambda_max();
    if !(lambda_max > 0.0 && lambda_max.is_finite()) {
        return Err(Error::Numerical(format!(
            "λ_max = ‖Xᵀy‖∞/n is {lambda_max}: the labels are orthogonal to every feature"
        )));
    }
    let boxes = bounds(kind, p, lambda_max, search.ratio);
    let clip = |theta: &mut [f64]| {
        for (t, (lo, hi)) in theta.iter_mut().zip(&boxes) {
            *t = t.clamp(*lo, *hi);
        }
    };
    let mut eval = Evaluator::new(criterion, opts);
    let mut trace: Vec<TraceEntry> = Vec::new();
    let mut best_loss = f64::INFINITY;
    let mut best_theta = Vec::new();
    let mut record = |step: usize,
                      theta: &[f64],
                      loss: f64,
                      g: Option<&[f64]>,
                      accepted: bool,
                      inner_iters: usize,
                      trace: &mut Vec<TraceEntry>|
     -> Result<()> {
        if loss < best_loss {
            best_loss = loss;
            best_theta = theta.to_vec();
        }
        let entry = TraceEntry {
            step,
            seconds: started.elapsed().as_secs_f64(),
            theta: theta.to_vec(),
            theta_norm: norm(theta),
            outer_loss: loss,
            hypergradient_norm: g.map(norm),
            accepted,
            best_loss,
            inner_iters,
        };
        on_step(&entry)?;
        trace.push(entry);
        Ok(())
    };
    let theta0 = match &search.theta0 {
        Some(t) if t.len() != p => {
            return Err(Error::Dimension(format!(
                "the starting θ has {} entries but {} needs p = {p}",
                t.len(),
                kind.name()
            )))
        }
        Some(t) => t.clone(),
        None => vec![(lambda_max / 10.0).ln(); p],
    };
    let iters_of = |e: &super::cv::Evaluation| e.folds.iter().map(|h| h.inner_iters).sum();

    match search.opt {
        OuterOpt::Hoag => {
            let tol_at =
                |k: usize| (search.tol_start * search.tol_decay.powi(k as i32)).max(search.tol_end);
            let mut theta = theta0;
            clip(&mut theta);
            let linear_tol = eval.opts.linear_tol;
            // HOAG's ε_k bounds both the inner and the linear (Jacobian) accuracy.
            let set_tol = |o: &mut L1Options, t: f64| {
                o.inner.tol = t;
                o.linear_tol = linear_tol.max(t);
            };
            set_tol(&mut eval.opts, tol_at(0));
            let mut cur = eval.value_and_grad(&theta)?;
            record(
                0,
                &theta,
                cur.value,
                Some(&cur.hypergradient),
                true,
                iters_of(&cur),
                &mut trace,
            )?;
            let gn = norm(&cur.hypergradient);
            let mut lip = if gn > 0.0 { gn } else { 1.0 };
            let mut accepted_steps = 0;
            for step in 1..=search.steps {
                let mut next = theta.clone();
                let scale = (norm(&cur.hypergradient) / lip / MAX_STEP).max(1.0);
                for (t, g) in next.iter_mut().zip(&cur.hypergradient) {
                    *t -= g / (lip * scale);
                }
                clip(&mut next);
                let moved = norm(
                    &next
                        .iter()
                        .zip(&theta)
                        .map(|(a, b)| a - b)
                        .collect::<Vec<_>>(),
                );
                if moved <= 1e-10 {
                    // Converged, or at a box corner with the gradient pointing out.
                    break;
                }
                set_tol(&mut eval.opts, tol_at(accepted_steps + 1));
                let cand = eval.value_and_grad(&next)?;
                let decrease: f64 = cur
                    .hypergradient
                    .iter()
                    .zip(theta.iter().zip(&next))
                    .map(|(g, (a, b))| g * (a - b))
                    .sum();
                let ok = cand.value <= cur.value - 1e-4 * decrease;
                record(
                    step,
                    &next,
                    cand.value,
                    Some(&cand.hypergradient),
                    ok,
                    iters_of(&cand),
                    &mut trace,
                )?;
                if ok {
                    // Secant (Barzilai–Borwein) curvature along the step, when positive.
                    let curv: f64 = cand
                        .hypergradient
                        .iter()
                        .zip(&cur.hypergradient)
                        .zip(next.iter().zip(&theta))
                        .map(|((g1, g0), (t1, t0))| (g1 - g0) * (t1 - t0))
                        .sum::<f64>()
                        / (moved * moved);
                    lip = if curv > 0.0 {
                        curv.max(0.1 * lip)
                    } else {
                        0.5 * lip
                    };
                    theta = next;
                    cur = cand;
                    accepted_steps += 1;
                } else {
                    lip *= 2.0;
                }
                if !search.warm_start {
                    eval.cold_start();
                }
            }
        }
        OuterOpt::Adam => {
            let (b1, b2, eps) = (0.9, 0.999, 1e-8);
            let mut theta = theta0;
            clip(&mut theta);
            let mut m = vec![0.0; p];
            let mut v = vec![0.0; p];
            for step in 0..=search.steps {
                let e = eval.value_and_grad(&theta)?;
                record(
                    step,
                    &theta,
                    e.value,
                    Some(&e.hypergradient),
                    true,
                    iters_of(&e),
                    &mut trace,
                )?;
                if step == search.steps {
                    break;
                }
                let t = (step + 1) as i32;
                for k in 0..p {
                    let g = e.hypergradient[k];
                    m[k] = b1 * m[k] + (1.0 - b1) * g;
                    v[k] = b2 * v[k] + (1.0 - b2) * g * g;
                    let mh = m[k] / (1.0 - b1.powi(t));
                    let vh = v[k] / (1.0 - b2.powi(t));
                    theta[k] -= search.lr * mh / (vh.sqrt() + eps);
                }
                clip(&mut theta);
                if !search.warm_start {
                    eval.cold_start();
                }
            }
        }
        OuterOpt::Grid | OuterOpt::Random => {
            let points = grid_points(search, kind, p, &boxes);
            for (step, theta) in points.iter().enumerate() {
                let value = eval.value(theta)?;
                record(step, theta, value, None, true, 0, &mut trace)?;
                if !search.warm_start {
                    eval.cold_start();
                }
            }
        }
    }
    Ok(SearchResult {
        best_theta,
        best_loss,
        trace,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The θ points of grid or random search, in evaluation order (grid: from λ_max down).
fn grid_points(
    search: &SearchOptions,
    kind: L1Kind,
    p: usize,
    boxes: &[(f64, f64)],
) -> Vec<Vec<f64>> {
    let count = search.steps.max(1);
    let line = |(lo, hi): (f64, f64), m: usize| -> Vec<f64> {
        if m == 1 {
            return vec![hi];
        }
        (0..m)
            .map(|i| hi + (lo - hi) * i as f64 / (m - 1) as f64)
            .collect()
    };
    match search.opt {
        OuterOpt::Grid => match kind {
            L1Kind::Enet => {
                let m = (count as f64).sqrt().ceil() as usize;
                let mut out = Vec::new();
                for &t2 in &line(boxes[1], m) {
                    for &t1 in &line(boxes[0], m) {
                        out.push(vec![t1, t2]);
                    }
                }
                out
            }
            _ => line(boxes[0], count)
                .into_iter()
                .map(|t| vec![t; p])
                .collect(),
        },
        _ => {
            let mut rng = Rng::new(search.seed);
            (0..count)
                .map(|_| match kind {
                    L1Kind::Wlasso => {
                        let (lo, hi) = boxes[0];
                        vec![lo + (hi - lo) * rng.uniform(); p]
                    }
                    _ => boxes
                        .iter()
                        .map(|(lo, hi)| lo + (hi - lo) * rng.uniform())
                        .collect(),
                })
                .collect()
        }
    }
}
