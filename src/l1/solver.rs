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
use super::resident::Resident;
use crate::backend::cpu::CpuBackend;
use crate::backend::prox::{ProxOps, SweepPenalty};
use crate::backend::Backend;
use crate::solver::linear::duplicate;
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

/// The duality gap `P(w) − D(u(r))` of the module documentation, given `r = y − Xw`.
pub fn duality_gap(data: &L1Data, pen: &Penalty, w: &[f64], r: &[f64]) -> f64 {
    let mut xtr = vec![0.0; w.len()];
    data.x.rmatvec(r, &mut xtr);
    gap_from(data, pen, w, r, &xtr)
}

/// [`duality_gap`] given `xtr = Xᵀr` as well.
pub(crate) fn gap_from(data: &L1Data, pen: &Penalty, w: &[f64], r: &[f64], xtr: &[f64]) -> f64 {
    let n = data.y.len() as f64;
    let mut scale: f64 = 1.0;
    for j in 0..w.len() {
        let c = (xtr[j] - n * pen.l2 * w[j]).abs();
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

/// Minimises P from `w0` (zeros if `None`) with the solver in `opts`, on the CPU in f64
/// ([`solve_on`] on [`CpuBackend`]). Errors: a dimension mismatch of `w0`, invalid options, or
/// a non-finite iterate ([`Error::Numerical`]).
pub fn solve(
    data: &L1Data,
    pen: &Penalty,
    w0: Option<&[f64]>,
    opts: &SolveOptions,
) -> Result<Solution> {
    let b = CpuBackend::<f64>::new();
    solve_on(&b, &Resident::new(&b, data)?, pen, w0, opts)
}

/// [`solve`] on a backend, for training data already on it.
pub fn solve_on<B: ProxOps>(
    b: &B,
    data: &Resident<B>,
    pen: &Penalty,
    w0: Option<&[f64]>,
    opts: &SolveOptions,
) -> Result<Solution> {
    opts.validate()?;
    let d = data.d();
    if pen.l1.len() != d {
        return Err(Error::Dimension(format!(
            "the penalty has {} entries for {d} features",
            pen.l1.len()
        )));
    }
    let w = start(w0, d)?;
    match opts.solver {
        L1Solver::Cd => solve_cd(b, data, pen, w, opts),
        L1Solver::Pgd | L1Solver::Fista => solve_pgd(b, data, pen, w, opts),
    }
}

/// The starting point: `w0`, or zeros.
pub(crate) fn start(w0: Option<&[f64]>, d: usize) -> Result<Vec<f64>> {
    match w0 {
        Some(w0) if w0.len() != d => Err(Error::Dimension(format!(
            "the warm start has {} entries for {d} features",
            w0.len()
        ))),
        Some(w0) => Ok(w0.to_vec()),
        None => Ok(vec![0.0; d]),
    }
}

/// Iterates combined by one Anderson extrapolation of the active-set sweeps.
pub(crate) const ANDERSON_K: usize = 5;

/// Anderson extrapolation of coordinate descent on the active set (Bertrand & Massias 2021,
/// as in skglm): from the last K + 1 iterates `w⁰ … wᴷ` (restricted to the active set), with
/// `U = [w¹ − w⁰, …, wᴷ − wᴷ⁻¹]`, solve `UᵀU c = 1`, normalise `c` to sum 1, and propose
/// `Σ_i c_i wⁱ`. The proposal replaces `w` (and the residual) only if it lowers the inner
/// objective P, so the iteration keeps CD's convergence guarantee.
fn anderson_step<B: ProxOps>(
    b: &B,
    data: &Resident<B>,
    pen: &Penalty,
    (active, active_dev): (&[usize], &B::Rows),
    history: &[Vec<f64>],
    w: &mut B::Buf,
    r: &mut B::Buf,
) -> Result<()> {
    let Some(proposal) = anderson_extrapolate(history) else {
        return Ok(());
    };
    let w_host = b.download(w)?;
    let delta: Vec<f64> = active
        .iter()
        .zip(&proposal)
        .map(|(&j, p)| p - w_host[j])
        .collect();
    let mut r_new = duplicate(b, r)?;
    b.cols_gemv(
        &data.x,
        Some(active_dev),
        -1.0,
        &b.upload(&delta)?,
        &mut r_new,
    )?;
    let mut w_new = w_host.clone();
    for (&j, p) in active.iter().zip(&proposal) {
        w_new[j] = *p;
    }
    let (r_host, r_new_host) = (b.download(r)?, b.download(&r_new)?);
    if pen.primal(&w_new, &r_new_host) < pen.primal(&w_host, &r_host) {
        *w = b.upload(&w_new)?;
        *r = r_new;
    }
    Ok(())
}

/// The Anderson extrapolation `Σ_i c_i xⁱ` of the iterates `x⁰ … xᴷ` (`c` solves
/// `UᵀU c = 1` with `U = [x¹ − x⁰, …, xᴷ − xᴷ⁻¹]`, normalised to sum 1, sum over `x¹ … xᴷ`);
/// `None` when the system is degenerate.
pub(crate) fn anderson_extrapolate(history: &[Vec<f64>]) -> Option<Vec<f64>> {
    let k = history.len().checked_sub(1).filter(|&k| k > 0)?;
    let m = history[0].len();
    let diffs: Vec<Vec<f64>> = (0..k)
        .map(|i| (0..m).map(|a| history[i + 1][a] - history[i][a]).collect())
        .collect();
    let mut gram = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..k {
            gram[i * k + j] = diffs[i].iter().zip(&diffs[j]).map(|(a, b)| a * b).sum();
        }
    }
    let trace: f64 = (0..k).map(|i| gram[i * k + i]).sum();
    if !(trace > 0.0 && trace.is_finite()) {
        return None;
    }
    for i in 0..k {
        gram[i * k + i] += 1e-10 * trace;
    }
    crate::linalg::cholesky(&mut gram, k).ok()?;
    let mut c = vec![1.0; k];
    crate::linalg::cholesky_solve_in_place(&gram, k, &mut c);
    let total: f64 = c.iter().sum();
    if !(total.abs() > 0.0 && total.is_finite()) {
        return None;
    }
    Some(
        (0..m)
            .map(|a| (0..k).map(|i| c[i] / total * history[i + 1][a]).sum())
            .collect(),
    )
}

/// Most full sweeps between two duality-gap checks of coordinate descent.
const GAP_EVERY_MAX: usize = 10;
/// Most sweeps over the active set between two full sweeps.
const ACTIVE_SWEEPS_MAX: usize = 1000;

/// The coordinate indices `set` as the backend's index list (checked below d).
pub(crate) fn upload_coords<B: Backend>(b: &B, set: &[usize], d: usize) -> Result<B::Rows> {
    let idx: Vec<u32> = set
        .iter()
        .map(|&j| {
            u32::try_from(j).map_err(|_| Error::Dimension(format!("column {j} exceeds 32 bits")))
        })
        .collect::<Result<_>>()?;
    b.upload_rows(&idx, d)
}

/// Proximal coordinate descent with an active set (as glmnet): a full cyclic sweep, then
/// sweeps over the nonzero coordinates only until their largest move is ≤ ε·max|w| (ε from
/// 1e-4, divided by 10 after each failed gap check), then the next full sweep. The duality gap
/// is checked after a full sweep that barely moved w (≤ 10ε·max|w|), and at least every 10
/// full sweeps. Every 5 active sweeps an Anderson extrapolation is tried ([`anderson_step`]),
/// kept only when it lowers the objective. The fixed point is that of plain cyclic CD.
/// `iters` counts the full sweeps. Each sweep is one [`ProxOps::cd_sweep`].
fn solve_cd<B: ProxOps>(
    b: &B,
    data: &Resident<B>,
    pen: &Penalty,
    w: Vec<f64>,
    opts: &SolveOptions,
) -> Result<Solution> {
    let d = data.d();
    let l1 = b.upload(&pen.l1)?;
    let sp = SweepPenalty {
        kind: pen.kind,
        l1: &l1,
        l2: pen.l2,
    };
    let mut w_dev = b.upload(&w)?;
    let mut r_dev = b.zeros(data.n())?;
    data.residual(b, &w_dev, &mut r_dev)?;
    let threshold = gap_threshold(&data.data, opts.tol);
    let mut gap = f64::INFINITY;
    let mut iters = 0;
    // Relative accuracy to which the active set is solved between full sweeps; tightened
    // after every gap check that fails.
    let mut active_tol = 1e-4;
    let mut since_gap = 0;
    while iters < opts.max_iters {
        iters += 1;
        since_gap += 1;
        let (max_change, max_w) =
            b.cd_sweep(&data.x, None, &data.lips, &sp, &mut w_dev, &mut r_dev)?;
        // The gap costs as much as a sweep: check it once a full sweep barely moves w (or
        // at least every `GAP_EVERY_MAX` sweeps, and at the last one).
        let quiet = max_change <= 10.0 * active_tol * max_w || max_w == 0.0;
        if quiet || since_gap >= GAP_EVERY_MAX || iters == opts.max_iters {
            since_gap = 0;
            let (g, w, r) = data.gap(b, pen, &w_dev, &r_dev)?;
            gap = g;
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
            if quiet {
                active_tol *= 0.1;
            }
        }
        // Sweeps over the active set until the largest move is ≤ active_tol · max|w|.
        let w_host = b.download(&w_dev)?;
        let active: Vec<usize> = (0..d)
            .filter(|&j| w_host[j] != 0.0 && data.lips_host[j] > 0.0)
            .collect();
        let active_dev = upload_coords(b, &active, d)?;
        let mut history: Vec<Vec<f64>> = Vec::with_capacity(ANDERSON_K + 1);
        for _ in 0..ACTIVE_SWEEPS_MAX {
            let (max_move, max_a) = b.cd_sweep(
                &data.x,
                Some(&active_dev),
                &data.lips,
                &sp,
                &mut w_dev,
                &mut r_dev,
            )?;
            if max_move <= active_tol * max_a {
                break;
            }
            let w_host = b.download(&w_dev)?;
            history.push(active.iter().map(|&j| w_host[j]).collect());
            if history.len() == ANDERSON_K + 1 {
                anderson_step(
                    b,
                    data,
                    pen,
                    (&active, &active_dev),
                    &history,
                    &mut w_dev,
                    &mut r_dev,
                )?;
                history.clear();
            }
        }
    }
    let (g, w, r) = data.gap(b, pen, &w_dev, &r_dev)?;
    gap = if gap.is_finite() { g } else { gap };
    Ok(Solution {
        converged: gap <= threshold,
        w,
        r,
        gap,
        iters,
    })
}

/// The step of ISTA/FISTA, `η = 1/L` with `L = ‖X‖₂²/n + λ₂`; `None` when X = 0.
pub(crate) fn pgd_step<B: ProxOps>(data: &Resident<B>, pen: &Penalty) -> Option<f64> {
    let lipschitz = data.spectral_norm_sq() / data.n() as f64 + pen.l2;
    (lipschitz > 0.0).then(|| 1.0 / lipschitz)
}

/// One ISTA/FISTA step on the backend: `gsm = −Xᵀr_v/n + λ₂v` (the smooth gradient at v,
/// `r_v = y − Xv`), `w ← ST(v − η gsm, ηλ)`.
pub(crate) fn pgd_update<B: ProxOps>(
    b: &B,
    data: &Resident<B>,
    pen: &Penalty,
    (l1, eta): (&B::Buf, f64),
    (v, rv): (&B::Buf, &B::Buf),
    gsm: &mut B::Buf,
    w: &mut B::Buf,
) -> Result<()> {
    b.cols_gemv_t(&data.x, None, rv, gsm)?;
    b.axpby(pen.l2, v, -1.0 / data.n() as f64, gsm)?;
    b.prox_step(v, gsm, l1, eta, w)
}

/// `x⁺ ← x + β(x − x_old)`, FISTA's extrapolation (β = 0: ISTA) written into `out`.
pub(crate) fn extrapolate<B: Backend>(
    b: &B,
    beta: f64,
    x: &B::Buf,
    x_old: &B::Buf,
    out: &mut B::Buf,
) -> Result<()> {
    b.copy(x, out)?;
    b.axpby(-beta, x_old, 1.0 + beta, out)
}

/// ISTA / FISTA with step `1/L`, `L = ‖X‖₂²/n + λ₂` (power-iteration estimate):
///
/// ```text
/// z = v − (1/L)(−Xᵀ(y − Xv)/n + λ₂ v),   w⁺ = ST(z, λ/L),   v⁺ = w⁺ + β_k (w⁺ − w)
/// ```
///
/// with `β_k = (t_k − 1)/t_{k+1}` (FISTA) or 0 (ISTA).
fn solve_pgd<B: ProxOps>(
    b: &B,
    data: &Resident<B>,
    pen: &Penalty,
    w: Vec<f64>,
    opts: &SolveOptions,
) -> Result<Solution> {
    let d = w.len();
    let Some(eta) = pgd_step(data, pen) else {
        // X = 0: the solution is w = 0.
        let w = vec![0.0; d];
        let r = data.data.y.clone();
        let gap = duality_gap(&data.data, pen, &w, &r);
        return Ok(Solution {
            w,
            r,
            gap,
            iters: 0,
            converged: true,
        });
    };
    let threshold = gap_threshold(&data.data, opts.tol);
    let accelerate = opts.solver == L1Solver::Fista;
    let l1 = b.upload(&pen.l1)?;
    let mut w = b.upload(&w)?;
    let mut r = b.zeros(data.n())?;
    data.residual(b, &w, &mut r)?;
    let mut v = duplicate(b, &w)?;
    let mut rv = duplicate(b, &r)?; // residual of v
    let mut gsm = b.zeros(d)?;
    let mut t = 1.0f64;
    let mut gap = f64::INFINITY;
    let mut iters = 0;
    while iters < opts.max_iters {
        iters += 1;
        let w_old = duplicate(b, &w)?;
        pgd_update(b, data, pen, (&l1, eta), (&v, &rv), &mut gsm, &mut w)?;
        let r_old = duplicate(b, &r)?;
        data.residual(b, &w, &mut r)?;
        let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        let beta = if accelerate { (t - 1.0) / t_next } else { 0.0 };
        t = t_next;
        // v = w + β(w − w_old), and its residual y − Xv = r + β(r − r_old).
        extrapolate(b, beta, &w, &w_old, &mut v)?;
        extrapolate(b, beta, &r, &r_old, &mut rv)?;
        if iters % opts.gap_every.max(1) == 0 || iters == opts.max_iters {
            let (g, w_host, r_host) = data.gap(b, pen, &w, &r)?;
            if w_host.iter().any(|a| !a.is_finite()) {
                return Err(Error::Numerical(
                    "proximal gradient produced a non-finite iterate".into(),
                ));
            }
            gap = g;
            if gap <= threshold {
                return Ok(Solution {
                    w: w_host,
                    r: r_host,
                    gap,
                    iters,
                    converged: true,
                });
            }
        }
    }
    let (w, r) = (b.download(&w)?, b.download(&r)?);
    Ok(Solution {
        converged: gap <= threshold,
        w,
        r,
        gap,
        iters,
    })
}
