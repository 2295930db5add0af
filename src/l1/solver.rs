//! Inner solvers of the ℓ1 problems: proximal coordinate descent (the workhorse) and
//! proximal gradient (ISTA) / FISTA, with duality-gap stopping and warm start.
//!
//! Inner problem, for penalty λ_j ≥ 0 per coordinate and λ₂ ≥ 0:
//!
//! ```text
//! min_w  P(w) = (1/2n)‖y − Xw‖² + Σ_j λ_j |w_j| + ½ λ₂ ‖w‖²
//! ```
//!
//! **Duality gap.** Writing the ridge term as extra rows `√(nλ₂) I` of the design (zero
//! labels), the dual is `D(u) = uᵀy − (n/2)(‖u_X‖² + ‖u_I‖²)` over `|x̃_jᵀu| ≤ λ_j`. From the
//! residual `r = y − Xw` the feasible point `u = (r, −√(nλ₂) w) / (n s)` with
//! `s = max(1, max_j |x_jᵀr − nλ₂w_j| / (nλ_j))` gives
//!
//! ```text
//! D = rᵀy/(ns) − (‖r‖² + nλ₂‖w‖²)/(2ns²),     gap = P(w) − D ≥ 0,
//! ```
//!
//! which is 0 exactly at the solution. Solvers stop when `gap ≤ tol · ‖y‖²/n` (the scaling
//! of scikit-learn's `tol`, whose objective is n times ours).

use super::design::Design;
use super::problem::{L1Data, Penalty};
use crate::{Error, Result};

/// Which inner solver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L1Solver {
    /// Cyclic proximal coordinate descent with residual updates.
    Cd,
    /// Proximal gradient (ISTA) with step 1/L, L = ‖X‖₂²/n + λ₂.
    Pgd,
    /// FISTA: proximal gradient with Nesterov momentum.
    Fista,
}

impl L1Solver {
    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            L1Solver::Cd => "cd",
            L1Solver::Pgd => "pgd",
            L1Solver::Fista => "fista",
        }
    }
}

/// Options of the inner solve.
#[derive(Clone, Copy, Debug)]
pub struct SolveOptions {
    pub solver: L1Solver,
    /// Stop when the duality gap is ≤ `tol · ‖y‖²/n`.
    pub tol: f64,
    /// Most epochs (CD: full sweeps; PGD/FISTA: iterations).
    pub max_iters: usize,
    /// Evaluate the gap every this many epochs (and at the last one): ISTA/FISTA and the
    /// `forward` recursions; coordinate descent checks it after every full sweep.
    pub gap_every: usize,
}

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions {
            solver: L1Solver::Cd,
            tol: 1e-12,
            max_iters: 100_000,
            gap_every: 5,
        }
    }
}

impl SolveOptions {
    /// Errors: [`Error::InvalidOption`] for a tolerance that is not a finite number ≥ 0 or a
    /// zero iteration count.
    pub fn validate(&self) -> Result<()> {
        if !(self.tol >= 0.0 && self.tol.is_finite()) {
            return Err(Error::option(
                "--inner-tol",
                format!("must be a finite number ≥ 0, got {}", self.tol),
            ));
        }
        if self.max_iters == 0 {
            return Err(Error::option("--inner-iters", "must be at least 1"));
        }
        Ok(())
    }
}

/// Outcome of an inner solve.
#[derive(Clone, Debug)]
pub struct Solution {
    /// ŵ.
    pub w: Vec<f64>,
    /// `r = y − Xŵ`.
    pub r: Vec<f64>,
    /// The duality gap at ŵ.
    pub gap: f64,
    /// Epochs done.
    pub iters: usize,
    /// Whether `gap ≤ tol · ‖y‖²/n` was reached.
    pub converged: bool,
}

/// `ST(z, t) = sign(z) max(|z| − t, 0)`, the proximal map of `t|·|`.
#[inline]
pub fn soft_threshold(z: f64, t: f64) -> f64 {
    if z > t {
        z - t
    } else if z < -t {
        z + t
    } else {
        0.0
    }
}

/// `y − Xw`.
pub fn residual(data: &L1Data, w: &[f64]) -> Vec<f64> {
    let mut r = vec![0.0; data.y.len()];
    data.x.matvec(w, &mut r);
    r.iter_mut()
        .zip(&data.y)
        .for_each(|(ri, yi)| *ri = yi - *ri);
    r
}

/// The duality gap `P(w) − D(u(r))` of the module documentation, given `r = y − Xw`.
pub fn duality_gap(data: &L1Data, pen: &Penalty, w: &[f64], r: &[f64]) -> f64 {
    let n = data.y.len() as f64;
    let mut scale: f64 = 1.0;
    for j in 0..w.len() {
        let c = (data.x.col_dot(j, r) - n * pen.l2 * w[j]).abs();
        let lam = n * pen.l1[j];
        if c > lam {
            scale = scale.max(if lam > 0.0 { c / lam } else { f64::INFINITY });
        }
    }
    let primal = pen.primal(w, r);
    if !scale.is_finite() {
        return f64::INFINITY;
    }
    let rr: f64 = r.iter().map(|a| a * a).sum();
    let ww: f64 = w.iter().map(|a| a * a).sum();
    let ry: f64 = r.iter().zip(&data.y).map(|(a, b)| a * b).sum();
    let dual = ry / (n * scale) - (rr + n * pen.l2 * ww) / (2.0 * n * scale * scale);
    (primal - dual).max(0.0)
}

/// The stopping threshold `tol · ‖y‖²/n`.
pub fn gap_threshold(data: &L1Data, tol: f64) -> f64 {
    tol * data.y.iter().map(|a| a * a).sum::<f64>() / data.y.len() as f64
}

/// The coordinate Lipschitz constants `L_j = ‖x_j‖²/n`.
pub fn coordinate_lipschitz(x: &Design) -> Vec<f64> {
    let n = x.n() as f64;
    x.col_sq_norms().into_iter().map(|s| s / n).collect()
}

/// One exact coordinate minimisation of P over `w_j` (`lj = ‖x_j‖²/n > 0`):
///
/// ```text
/// u = x_jᵀr/n + L_j w_j,     w_j ← ST(u, λ_j) / (L_j + λ₂),     r ← r − x_j (Δw_j)
/// ```
///
/// Returns `(u, new w_j)`; the residual is updated in place.
#[inline]
pub fn cd_update(
    x: &Design,
    pen: &Penalty,
    lj: f64,
    j: usize,
    w: &mut [f64],
    r: &mut [f64],
) -> (f64, f64) {
    let n = r.len() as f64;
    let old = w[j];
    let u = x.col_dot(j, r) / n + lj * old;
    let new = soft_threshold(u, pen.l1[j]) / (lj + pen.l2);
    if new != old {
        x.col_axpy(j, old - new, r);
        w[j] = new;
    }
    (u, new)
}

/// Minimises P from `w0` (zeros if `None`) with the solver in `opts`. Errors: a dimension
/// mismatch of `w0`, invalid options, or a non-finite iterate ([`Error::Numerical`]).
pub fn solve(
    data: &L1Data,
    pen: &Penalty,
    w0: Option<&[f64]>,
    opts: &SolveOptions,
) -> Result<Solution> {
    opts.validate()?;
    let d = data.x.d();
    if pen.l1.len() != d {
        return Err(Error::Dimension(format!(
            "the penalty has {} entries for {d} features",
            pen.l1.len()
        )));
    }
    let w = match w0 {
        Some(w0) if w0.len() != d => {
            return Err(Error::Dimension(format!(
                "the warm start has {} entries for {d} features",
                w0.len()
            )))
        }
        Some(w0) => w0.to_vec(),
        None => vec![0.0; d],
    };
    match opts.solver {
        L1Solver::Cd => solve_cd(data, pen, w, opts),
        L1Solver::Pgd | L1Solver::Fista => solve_pgd(data, pen, w, opts),
    }
}

/// Proximal coordinate descent: full cyclic sweeps, each followed by the duality-gap check
/// and then by sweeps over the nonzero coordinates only (until their largest move shrinks
/// 1000-fold, within about one full sweep's worth of work): an active-set speed-up that
/// leaves the fixed point unchanged. `iters` counts the full sweeps.
fn solve_cd(
    data: &L1Data,
    pen: &Penalty,
    mut w: Vec<f64>,
    opts: &SolveOptions,
) -> Result<Solution> {
    let x = &data.x;
    let lips = coordinate_lipschitz(x);
    let mut r = residual(data, &w);
    let threshold = gap_threshold(data, opts.tol);
    let mut gap = f64::INFINITY;
    let mut iters = 0;
    let mut active: Vec<usize> = Vec::new();
    while iters < opts.max_iters {
        iters += 1;
        for j in 0..w.len() {
            if lips[j] > 0.0 {
                cd_update(x, pen, lips[j], j, &mut w, &mut r);
            }
        }
        {
            gap = duality_gap(data, pen, &w, &r);
            if !gap.is_finite() && w.iter().any(|v| !v.is_finite()) {
                return Err(Error::Numerical(
                    "coordinate descent produced a non-finite iterate".into(),
                ));
            }
            if gap <= threshold {
                return Ok(Solution {
                    w,
                    r,
                    gap,
                    iters,
                    converged: true,
                });
            }
        }
        // Sweeps over the active set: until its largest move has shrunk 1000-fold, within
        // a budget of about one full sweep's worth of work.
        active.clear();
        active.extend((0..w.len()).filter(|&j| w[j] != 0.0 && lips[j] > 0.0));
        let active_cost: usize = active.iter().map(|&j| x.col_nnz(j)).sum::<usize>().max(1);
        let budget = (x.nnz() / active_cost).clamp(1, 1000);
        let mut first_move = None;
        for _ in 0..budget {
            let mut max_move: f64 = 0.0;
            for &j in &active {
                let old = w[j];
                let (_, new) = cd_update(x, pen, lips[j], j, &mut w, &mut r);
                max_move = max_move.max((new - old).abs());
            }
            let first = *first_move.get_or_insert(max_move);
            if max_move <= 1e-3 * first || max_move == 0.0 {
                break;
            }
        }
    }
    gap = if gap.is_finite() {
        duality_gap(data, pen, &w, &r)
    } else {
        gap
    };
    Ok(Solution {
        converged: gap <= threshold,
        w,
        r,
        gap,
        iters,
    })
}

/// ISTA / FISTA with step `1/L`, `L = ‖X‖₂²/n + λ₂` (power-iteration estimate):
///
/// ```text
/// z = v − (1/L)(−Xᵀ(y − Xv)/n + λ₂ v),   w⁺ = ST(z, λ/L),   v⁺ = w⁺ + β_k (w⁺ − w)
/// ```
///
/// with `β_k = (t_k − 1)/t_{k+1}` (FISTA) or 0 (ISTA).
fn solve_pgd(
    data: &L1Data,
    pen: &Penalty,
    mut w: Vec<f64>,
    opts: &SolveOptions,
) -> Result<Solution> {
    let x = &data.x;
    let n = data.y.len() as f64;
    let lipschitz = x.spectral_norm_sq(50) / n + pen.l2;
    if !(lipschitz > 0.0) {
        // X = 0: the solution is w = 0.
        let w = vec![0.0; w.len()];
        let r = data.y.clone();
        let gap = duality_gap(data, pen, &w, &r);
        return Ok(Solution {
            w,
            r,
            gap,
            iters: 0,
            converged: true,
        });
    }
    let eta = 1.0 / lipschitz;
    let threshold = gap_threshold(data, opts.tol);
    let accelerate = opts.solver == L1Solver::Fista;
    let mut r = residual(data, &w); // residual of w
    let mut v = w.clone();
    let mut rv = r.clone(); // residual of v
    let mut t = 1.0f64;
    let mut grad = vec![0.0; w.len()];
    let mut gap = f64::INFINITY;
    let mut iters = 0;
    while iters < opts.max_iters {
        iters += 1;
        x.rmatvec(&rv, &mut grad);
        let w_old = w.clone();
        for j in 0..w.len() {
            let z = v[j] - eta * (-grad[j] / n + pen.l2 * v[j]);
            w[j] = soft_threshold(z, eta * pen.l1[j]);
        }
        let r_old = std::mem::replace(&mut r, residual(data, &w));
        let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        let beta = if accelerate { (t - 1.0) / t_next } else { 0.0 };
        t = t_next;
        // v = w + β(w − w_old), and its residual y − Xv = r + β(r − r_old).
        for j in 0..w.len() {
            v[j] = w[j] + beta * (w[j] - w_old[j]);
        }
        for i in 0..rv.len() {
            rv[i] = r[i] + beta * (r[i] - r_old[i]);
        }
        if iters % opts.gap_every.max(1) == 0 || iters == opts.max_iters {
            if w.iter().any(|a| !a.is_finite()) {
                return Err(Error::Numerical(
                    "proximal gradient produced a non-finite iterate".into(),
                ));
            }
            gap = duality_gap(data, pen, &w, &r);
            if gap <= threshold {
                return Ok(Solution {
                    w,
                    r,
                    gap,
                    iters,
                    converged: true,
                });
            }
        }
    }
    Ok(Solution {
        converged: gap <= threshold,
        w,
        r,
        gap,
        iters,
    })
}
