//! Hypergradients of the ℓ1 problems (SPEC §3: `forward`, `implicit`, `implicit-forward`).
//!
//! On the (generic) set of θ where the support S and signs s_S of ŵ are locally constant,
//! the optimality conditions on S,
//!
//! ```text
//! A ŵ_S = X_Sᵀy/n − λ_S ⊙ s_S,       A = X_SᵀX_S/n + λ₂ I,
//! ```
//!
//! give `∂ŵ_S/∂θ_k = −A⁻¹ b_k` with `b_k = s_S ⊙ ∂λ_S/∂θ_k + ŵ_S ∂λ₂/∂θ_k`, and
//! `∂ŵ_j/∂θ = 0` off S. With `∇f = −(2/m)X'ᵀ(y' − X'ŵ)` the hypergradient is
//!
//! ```text
//! h_k = ∇_S fᵀ ∂ŵ_S/∂θ_k = −b_kᵀ q,     A q = ∇_S f.
//! ```
//!
//! * `implicit` solves `A q = ∇_S f` (dense Cholesky when |S| is small, CG otherwise);
//! * `implicit-forward` iterates the coordinate-descent Jacobian recursion on S with the signs
//!   fixed (a Gauss–Seidel iteration on `A J = −B`) after the inner solve;
//! * `forward` differentiates every iteration of the inner solver (prox-CD, ISTA or FISTA)
//!   in forward mode, `J_{k+1} = ∂ψ/∂w J_k + ∂ψ/∂θ`, and returns `J_Tᵀ ∇f(w_T)`.
//!
//! Since θ = log λ, `∂λ/∂θ = λ` (see [`Penalty::dl1`], [`Penalty::dl2`]). No a posteriori
//! bound is known for these estimators: `error_bound` is always `None` (SPEC §4).

use std::time::Instant;

use super::problem::{L1Data, L1Problem, Penalty};
use super::solver::{
    anderson_extrapolate, coordinate_lipschitz, duality_gap, gap_threshold, residual,
    soft_threshold, solve, L1Solver, Solution, SolveOptions, ANDERSON_K,
};
use crate::backend::cpu::CpuBackend;
use crate::hypergrad::{Estimate, MethodName};
use crate::solver::linear::conjugate_gradient;
use crate::{Error, Result};

/// The ℓ1 hypergradient methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L1Method {
    Forward,
    Implicit,
    ImplicitForward,
}

impl L1Method {
    /// All methods.
    pub const ALL: [L1Method; 3] = [
        L1Method::Forward,
        L1Method::Implicit,
        L1Method::ImplicitForward,
    ];

    /// The CLI name (`--method`).
    pub fn name(self) -> &'static str {
        match self {
            L1Method::Forward => "forward",
            L1Method::Implicit => "implicit",
            L1Method::ImplicitForward => "implicit-forward",
        }
    }
}

/// Options of [`hypergradient`].
#[derive(Clone, Copy, Debug)]
pub struct L1Options {
    pub method: L1Method,
    /// The inner solve (solver, gap tolerance, epochs). `forward` differentiates through it.
    pub inner: SolveOptions,
    /// `implicit` (CG): stop at `‖Aq − ∇_S f‖ ≤ tol ‖∇_S f‖`; `implicit-forward`: stop when
    /// the largest Jacobian change of a sweep is ≤ tol × its largest entry.
    pub linear_tol: f64,
    /// Most CG iterations or Jacobian sweeps.
    pub linear_iters: usize,
    /// `implicit` uses a dense Cholesky factorisation of A when |S| ≤ this (forming A costs
    /// |S| products with X_SᵀX_S, more than CG's iterations on large supports), CG otherwise.
    pub cholesky_max: usize,
}

impl L1Options {
    /// Defaults: prox-CD to a relative gap of 1e-12, linear tolerance 1e-10.
    pub fn new(method: L1Method) -> Self {
        L1Options {
            method,
            inner: SolveOptions::default(),
            linear_tol: 1e-10,
            linear_iters: 10_000,
            cholesky_max: 200,
        }
    }

    fn validate(&self) -> Result<()> {
        self.inner.validate()?;
        if !(self.linear_tol >= 0.0 && self.linear_tol.is_finite()) {
            return Err(Error::option(
                "--linear-tol",
                format!("must be a finite number ≥ 0, got {}", self.linear_tol),
            ));
        }
        if self.linear_iters == 0 {
            return Err(Error::option("--linear-iters", "must be at least 1"));
        }
        Ok(())
    }
}

/// A hypergradient of an ℓ1 problem with its diagnostics (SPEC §4, §6): the common fields
/// (the duality gap in `inner_grad_norm`; `error_bound` always `None`, no valid bound is
/// known for ℓ1 problems) plus the support.
pub type L1Hypergradient = Estimate<L1Method, Support>;

/// What an ℓ1 hypergradient adds to the common fields.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Support {
    /// |S|, the number of nonzero coefficients of ŵ.
    pub support_size: usize,
    /// `implicit-forward` for `lasso`/`enet`: `∂ŵ/∂θ_k` as p vectors of length d (0 off S),
    /// to warm-start the next Jacobian recursion at a nearby θ. `None` otherwise.
    #[serde(skip)]
    pub jacobian: Option<Vec<Vec<f64>>>,
}

impl MethodName for L1Method {
    fn name(self) -> &'static str {
        L1Method::name(self)
    }
}

/// The hypergradient of `problem` at θ, starting the inner solver from `w0` (zeros if
/// `None`). Errors: invalid options, θ of the wrong length or not finite, non-finite
/// results.
pub fn hypergradient(
    problem: &L1Problem,
    theta: &[f64],
    opts: &L1Options,
    w0: Option<&[f64]>,
) -> Result<L1Hypergradient> {
    let pen = Penalty::new(problem.kind, theta, problem.d())?;
    let mut h = hypergradient_on(&problem.train, &problem.val, &pen, opts, w0)?;
    h.theta = theta.to_vec();
    Ok(h)
}

/// [`hypergradient`] on explicit training and held-out data for a given penalty (`theta` is
/// left empty in the result).
pub fn hypergradient_on(
    train: &L1Data,
    val: &L1Data,
    pen: &Penalty,
    opts: &L1Options,
    w0: Option<&[f64]>,
) -> Result<L1Hypergradient> {
    hypergradient_warm(train, val, pen, opts, w0, None)
}

/// [`hypergradient_on`] with `implicit-forward`'s Jacobian recursion started from `jac0` (the
/// `jacobian` of a result at a nearby θ) instead of 0; the fixed point is the same.
pub fn hypergradient_warm(
    train: &L1Data,
    val: &L1Data,
    pen: &Penalty,
    opts: &L1Options,
    w0: Option<&[f64]>,
    jac0: Option<&[Vec<f64>]>,
) -> Result<L1Hypergradient> {
    opts.validate()?;
    if train.x.d() != val.x.d() {
        return Err(Error::Dimension(format!(
            "training data has {} features but validation data has {}",
            train.x.d(),
            val.x.d()
        )));
    }
    let started = Instant::now();
    let mut result = match opts.method {
        L1Method::Forward => forward(train, val, pen, opts, w0)?,
        L1Method::Implicit | L1Method::ImplicitForward => {
            let sol = solve(train, pen, w0, &opts.inner)?;
            let (outer_loss, grad_f) = val.mse_and_grad(&sol.w);
            let support: Vec<usize> = (0..sol.w.len()).filter(|&j| sol.w[j] != 0.0).collect();
            let (h, residual_norm, linear_iters, jacobian) = if opts.method == L1Method::Implicit {
                let (h, r, i) = implicit(train, pen, &sol, &support, &grad_f, opts)?;
                (h, r, i, None)
            } else {
                implicit_forward(train, pen, &sol, &support, &grad_f, opts, jac0)?
            };
            L1Hypergradient {
                method: opts.method,
                theta: Vec::new(),
                outer_loss,
                hypergradient: h,
                inner_grad_norm: sol.gap,
                residual_norm: Some(residual_norm),
                refinement: Default::default(),
                error_bound: None,
                inner_iters: sol.iters,
                linear_iters,
                inner_converged: sol.converged,
                seconds: 0.0,
                extra: Support {
                    support_size: support.len(),
                    jacobian,
                },
                w: sol.w,
            }
        }
    };
    if let Some(k) = result.hypergradient.iter().position(|h| !h.is_finite()) {
        return Err(Error::Numerical(format!(
            "hypergradient entry {k} is {}",
            result.hypergradient[k]
        )));
    }
    result.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}

/// The hyper-parameter columns that can be nonzero: all p for `lasso`/`enet`; for `wlasso`
/// only k ∈ S (λ_k moves no coordinate of S when k ∉ S, so column k of `∂ŵ/∂θ` is 0).
fn live_columns(pen: &Penalty, support: &[usize]) -> Vec<usize> {
    match pen.kind {
        super::L1Kind::Wlasso => support.to_vec(),
        _ => (0..pen.hyper_dim()).collect(),
    }
}

/// `b_k` on S: `s_j ∂λ_j/∂θ_k + ŵ_j ∂λ₂/∂θ_k`.
fn b_column(pen: &Penalty, w: &[f64], support: &[usize], k: usize) -> Vec<f64> {
    support
        .iter()
        .map(|&j| w[j].signum() * pen.dl1(j, k) + w[j] * pen.dl2(k))
        .collect()
}

/// `out ← A v = X_Sᵀ(X_S v)/n + λ₂ v` for v on S; `tmp` has length n.
fn apply_a(
    train: &L1Data,
    pen: &Penalty,
    support: &[usize],
    v: &[f64],
    tmp: &mut [f64],
    out: &mut [f64],
) {
    let n = train.y.len() as f64;
    tmp.iter_mut().for_each(|t| *t = 0.0);
    for (a, &j) in support.iter().enumerate() {
        if v[a] != 0.0 {
            train.x.col_axpy(j, v[a], tmp);
        }
    }
    for (a, &j) in support.iter().enumerate() {
        out[a] = train.x.col_dot(j, tmp) / n + pen.l2 * v[a];
    }
}

/// `implicit`: `A q = ∇_S f`, then `h_k = −b_kᵀ q`. Returns `(h, ‖Aq − ∇_S f‖, CG iterations)`.
fn implicit(
    train: &L1Data,
    pen: &Penalty,
    sol: &Solution,
    support: &[usize],
    grad_f: &[f64],
    opts: &L1Options,
) -> Result<(Vec<f64>, f64, usize)> {
    let p = pen.hyper_dim();
    let s = support.len();
    let mut h = vec![0.0; p];
    if s == 0 {
        return Ok((h, 0.0, 0));
    }
    let rhs: Vec<f64> = support.iter().map(|&j| grad_f[j]).collect();
    let mut tmp = vec![0.0; train.y.len()];
    let mut q = vec![0.0; s];
    let mut iters = 0;
    // Dense A, column by column (A e_a), factorised by Cholesky when |S| is small; CG when
    // |S| is large or A is singular (an inexact inner solution can carry more than n
    // nonzeros, making X_SᵀX_S rank-deficient).
    let factor = (s <= opts.cholesky_max).then(|| {
        let mut a = vec![0.0; s * s];
        let mut e = vec![0.0; s];
        let mut col = vec![0.0; s];
        for c in 0..s {
            e[c] = 1.0;
            apply_a(train, pen, support, &e, &mut tmp, &mut col);
            e[c] = 0.0;
            for r in 0..s {
                a[r * s + c] = col[r];
            }
        }
        crate::linalg::cholesky(&mut a, s).ok().map(|_| a)
    });
    if let Some(Some(l)) = factor {
        q.copy_from_slice(&rhs);
        crate::linalg::cholesky_solve_in_place(&l, s, &mut q);
    } else {
        let backend = CpuBackend::<f64>::new();
        let report = conjugate_gradient(
            &backend,
            |v: &Vec<f64>, out: &mut Vec<f64>| {
                apply_a(train, pen, support, v, &mut tmp, out);
                Ok(())
            },
            &rhs,
            &mut q,
            opts.linear_tol,
            opts.linear_iters,
        )?;
        iters = report.iters;
    }
    let mut aq = vec![0.0; s];
    apply_a(train, pen, support, &q, &mut tmp, &mut aq);
    let res = aq
        .iter()
        .zip(&rhs)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    for k in live_columns(pen, support) {
        let b = b_column(pen, &sol.w, support, k);
        h[k] = -b.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>();
    }
    Ok((h, res, iters))
}

/// `implicit-forward`: Gauss–Seidel sweeps of the coordinate-descent Jacobian recursion on S
/// with the signs fixed, from J = 0 (or `jac0`), until the largest change of J in a sweep, or
/// of the hypergradient `h = J_Sᵀ∇_S f` between two sweeps, is ≤ `linear_tol` times the
/// largest entry of J (resp. h); every 5 sweeps an Anderson extrapolation is tried and kept
/// when it lowers the energy `½JᵀAJ + bᵀJ`:
///
/// ```text
/// J_jk ← (x_jᵀ R_k/n + L_j J_jk − b_jk) / (L_j + λ₂),   R_k ← R_k − x_j ΔJ_jk
/// ```
///
/// where `R_k = −X_S J_k`; the fixed point is `J = −A⁻¹B`. Starts from `jac0` restricted to
/// S when given (lasso/enet), else from 0. Returns `(h = J_Sᵀ ∇_S f, ‖AJ + B‖_F, sweeps,
/// J as p vectors of length d for lasso/enet)`.
#[allow(clippy::type_complexity)]
fn implicit_forward(
    train: &L1Data,
    pen: &Penalty,
    sol: &Solution,
    support: &[usize],
    grad_f: &[f64],
    opts: &L1Options,
    jac0: Option<&[Vec<f64>]>,
) -> Result<(Vec<f64>, f64, usize, Option<Vec<Vec<f64>>>)> {
    let p = pen.hyper_dim();
    let n = train.y.len();
    let nf = n as f64;
    let mut h = vec![0.0; p];
    let s = support.len();
    let d = train.x.d();
    let keep = pen.kind != super::L1Kind::Wlasso;
    if s == 0 {
        return Ok((h, 0.0, 0, keep.then(|| vec![vec![0.0; d]; p])));
    }
    let lips: Vec<f64> = support
        .iter()
        .map(|&j| {
            let mut e = vec![0.0; n];
            train.x.col_axpy(j, 1.0, &mut e);
            e.iter().map(|a| a * a).sum::<f64>() / nf
        })
        .collect();
    let cols = live_columns(pen, support);
    let bs: Vec<Vec<f64>> = cols
        .iter()
        .map(|&k| b_column(pen, &sol.w, support, k))
        .collect();
    let mut jac = vec![vec![0.0; s]; cols.len()];
    let mut res = vec![vec![0.0; n]; cols.len()];
    if let Some(j0) = jac0.filter(|j0| keep && j0.len() == p && j0.iter().all(|c| c.len() == d)) {
        for (c, &k) in cols.iter().enumerate() {
            for (a, &j) in support.iter().enumerate() {
                let v = j0[k][j];
                if v != 0.0 && v.is_finite() {
                    jac[c][a] = v;
                    train.x.col_axpy(j, -v, &mut res[c]);
                }
            }
        }
    }
    let mut sweeps = 0;
    let mut h_prev = vec![f64::INFINITY; cols.len()];
    let mut history: Vec<Vec<Vec<f64>>> = vec![Vec::with_capacity(ANDERSON_K + 1); cols.len()];
    while sweeps < opts.linear_iters {
        sweeps += 1;
        let mut max_change: f64 = 0.0;
        let mut max_entry: f64 = 0.0;
        for (c, (jk, rk)) in jac.iter_mut().zip(res.iter_mut()).enumerate() {
            for (a, &j) in support.iter().enumerate() {
                let new =
                    (train.x.col_dot(j, rk) / nf + lips[a] * jk[a] - bs[c][a]) / (lips[a] + pen.l2);
                let delta = new - jk[a];
                if delta != 0.0 {
                    train.x.col_axpy(j, -delta, rk);
                    jk[a] = new;
                }
                max_change = max_change.max(delta.abs());
                max_entry = max_entry.max(new.abs());
            }
        }
        if !max_entry.is_finite() {
            return Err(Error::Numerical(
                "the Jacobian recursion on the support diverged".into(),
            ));
        }
        // Stop when the hypergradient h = J_Sᵀ∇_S f (what the outer loop uses) or the whole
        // Jacobian has stopped moving, relative to its size.
        let mut h_change: f64 = 0.0;
        let mut h_size: f64 = 0.0;
        for (c, jk) in jac.iter().enumerate() {
            let hk: f64 = support.iter().zip(jk).map(|(&j, v)| grad_f[j] * v).sum();
            h_change = h_change.max((hk - h_prev[c]).abs());
            h_size = h_size.max(hk.abs());
            h_prev[c] = hk;
        }
        if max_change <= opts.linear_tol * max_entry
            || (sweeps > 1 && h_change <= opts.linear_tol * h_size)
        {
            break;
        }
        // Anderson extrapolation of the (linear) recursion every K sweeps, kept only when it
        // lowers the energy E(J) = ½ JᵀAJ + bᵀJ that Gauss–Seidel decreases.
        for (c, hist) in history.iter_mut().enumerate() {
            hist.push(jac[c].clone());
            if hist.len() == ANDERSON_K + 1 {
                if let Some(proposal) = anderson_extrapolate(hist) {
                    let energy = |jk: &[f64], rk: &[f64]| {
                        0.5 * (rk.iter().map(|v| v * v).sum::<f64>() / nf
                            + pen.l2 * jk.iter().map(|v| v * v).sum::<f64>())
                            + jk.iter().zip(&bs[c]).map(|(a, b)| a * b).sum::<f64>()
                    };
                    let mut r_new = res[c].clone();
                    for (a, &j) in support.iter().enumerate() {
                        let delta = proposal[a] - jac[c][a];
                        if delta != 0.0 {
                            train.x.col_axpy(j, -delta, &mut r_new);
                        }
                    }
                    if energy(&proposal, &r_new) < energy(&jac[c], &res[c]) {
                        jac[c] = proposal;
                        res[c] = r_new;
                    }
                }
                hist.clear();
            }
        }
    }
    let mut tmp = vec![0.0; n];
    let mut aj = vec![0.0; s];
    let mut res2 = 0.0;
    for (c, &k) in cols.iter().enumerate() {
        h[k] = support
            .iter()
            .zip(&jac[c])
            .map(|(&j, v)| grad_f[j] * v)
            .sum();
        apply_a(train, pen, support, &jac[c], &mut tmp, &mut aj);
        res2 += aj
            .iter()
            .zip(&bs[c])
            .map(|(a, b)| (a + b) * (a + b))
            .sum::<f64>();
    }
    let full = keep.then(|| {
        cols.iter()
            .enumerate()
            .map(|(c, _)| {
                let mut v = vec![0.0; d];
                for (a, &j) in support.iter().enumerate() {
                    v[j] = jac[c][a];
                }
                v
            })
            .collect()
    });
    Ok((h, res2.sqrt(), sweeps, full))
}

/// Largest p·(n + d) a forward-mode Jacobian may have (about 2 GB of f64).
const FORWARD_MAX_ENTRIES: usize = 250_000_000;

/// `forward`: the inner solver run from `w0` with its Jacobian `J = ∂w/∂θ` (d×p, from 0)
/// propagated through every update, stopped by the inner solver's own rule.
///
/// Prox-CD, coordinate j (`u = x_jᵀr/n + L_j w_j`, `w_j⁺ = ST(u, λ_j)/(L_j + λ₂)`):
/// `J_jk⁺ = 1{w_j⁺ ≠ 0}(x_jᵀR_k/n + L_j J_jk − s_j ∂λ_j/∂θ_k − w_j⁺ ∂λ₂/∂θ_k)/(L_j + λ₂)`,
/// `R_k = −XJ_k` updated with the coordinate.
///
/// ISTA/FISTA (`η = 1/(σ/n + λ₂)`, `G(v) = −Xᵀ(y − Xv)/n + λ₂v`, `z = v − ηG(v)`,
/// `w⁺ = ST(z, ηλ)`, `v⁺ = w⁺ + β(w⁺ − w)`): with `∂η/∂θ_k = −η² ∂λ₂/∂θ_k`,
/// `dz = dv − η(XᵀX dv/n + λ₂ dv + v ∂λ₂) − G dη`,
/// `dw⁺_j = 1{w⁺_j ≠ 0}(dz_j − s_j(λ_j dη + η ∂λ_j))`, `dv⁺ = dw⁺ + β(dw⁺ − dw)`.
fn forward(
    train: &L1Data,
    val: &L1Data,
    pen: &Penalty,
    opts: &L1Options,
    w0: Option<&[f64]>,
) -> Result<L1Hypergradient> {
    let d = train.x.d();
    let n = train.y.len();
    let p = pen.hyper_dim();
    if p.saturating_mul(n + d) > FORWARD_MAX_ENTRIES {
        return Err(Error::option(
            "--method",
            format!(
                "forward would store a {p}×({n}+{d}) Jacobian; use implicit-forward or implicit for this size"
            ),
        ));
    }
    let mut w = match w0 {
        Some(w0) if w0.len() != d => {
            return Err(Error::Dimension(format!(
                "the warm start has {} entries for {d} features",
                w0.len()
            )))
        }
        Some(w0) => w0.to_vec(),
        None => vec![0.0; d],
    };
    let (iters, gap, converged, jac) = match opts.inner.solver {
        L1Solver::Cd => forward_cd(train, pen, &opts.inner, &mut w)?,
        L1Solver::Pgd | L1Solver::Fista => forward_pgd(train, pen, &opts.inner, &mut w)?,
    };
    let (outer_loss, grad_f) = val.mse_and_grad(&w);
    let h: Vec<f64> = jac
        .iter()
        .map(|col| col.iter().zip(&grad_f).map(|(a, b)| a * b).sum())
        .collect();
    Ok(L1Hypergradient {
        method: L1Method::Forward,
        theta: Vec::new(),
        outer_loss,
        hypergradient: h,
        inner_grad_norm: gap,
        residual_norm: None,
        refinement: Default::default(),
        error_bound: None,
        inner_iters: iters,
        linear_iters: 0,
        inner_converged: converged,
        seconds: 0.0,
        extra: Support {
            support_size: w.iter().filter(|v| **v != 0.0).count(),
            jacobian: None,
        },
        w,
    })
}

/// Prox-CD with forward-mode Jacobian; returns `(sweeps, gap, converged, J by column)`.
fn forward_cd(
    train: &L1Data,
    pen: &Penalty,
    inner: &SolveOptions,
    w: &mut [f64],
) -> Result<(usize, f64, bool, Vec<Vec<f64>>)> {
    let x = &train.x;
    let d = x.d();
    let n = train.y.len();
    let nf = n as f64;
    let p = pen.hyper_dim();
    let lips = coordinate_lipschitz(x);
    let mut r = residual(train, w);
    let mut jac = vec![vec![0.0; d]; p];
    let mut jr = vec![vec![0.0; n]; p];
    // Column k is identically 0 until something feeds it (wlasso: coordinate k active).
    let mut live: Vec<bool> = (0..p)
        .map(|k| pen.kind != super::L1Kind::Wlasso || k >= d)
        .collect();
    let threshold = gap_threshold(train, inner.tol);
    let mut gap = f64::INFINITY;
    let mut iters = 0;
    while iters < inner.max_iters {
        iters += 1;
        for j in 0..d {
            if !(lips[j] > 0.0) {
                continue;
            }
            let old = w[j];
            let u = x.col_dot(j, &r) / nf + lips[j] * old;
            let new = soft_threshold(u, pen.l1[j]) / (lips[j] + pen.l2);
            if new != old {
                x.col_axpy(j, old - new, &mut r);
                w[j] = new;
            }
            if pen.kind == super::L1Kind::Wlasso && new != 0.0 {
                live[j] = true;
            }
            for k in 0..p {
                if !live[k] {
                    continue;
                }
                let dnew = if new != 0.0 {
                    let du = x.col_dot(j, &jr[k]) / nf + lips[j] * jac[k][j];
                    (du - new.signum() * pen.dl1(j, k) - new * pen.dl2(k)) / (lips[j] + pen.l2)
                } else {
                    0.0
                };
                let delta = dnew - jac[k][j];
                if delta != 0.0 {
                    x.col_axpy(j, -delta, &mut jr[k]);
                    jac[k][j] = dnew;
                }
            }
        }
        if iters % inner.gap_every.max(1) == 0 || iters == inner.max_iters {
            if w.iter().any(|v| !v.is_finite()) {
                return Err(Error::Numerical(
                    "coordinate descent produced a non-finite iterate".into(),
                ));
            }
            gap = duality_gap(train, pen, w, &r);
            if gap <= threshold {
                return Ok((iters, gap, true, jac));
            }
        }
    }
    Ok((iters, gap, gap <= threshold, jac))
}

/// ISTA/FISTA with forward-mode Jacobian; returns `(iterations, gap, converged, J by column)`.
fn forward_pgd(
    train: &L1Data,
    pen: &Penalty,
    inner: &SolveOptions,
    w: &mut [f64],
) -> Result<(usize, f64, bool, Vec<Vec<f64>>)> {
    let x = &train.x;
    let d = x.d();
    let n = train.y.len();
    let nf = n as f64;
    let p = pen.hyper_dim();
    let sigma = x.spectral_norm_sq(50) / nf;
    let lipschitz = sigma + pen.l2;
    if !(lipschitz > 0.0) {
        return Err(Error::Numerical(
            "the design is zero: proximal gradient has no step".into(),
        ));
    }
    let eta = 1.0 / lipschitz;
    let accelerate = inner.solver == L1Solver::Fista;
    let threshold = gap_threshold(train, inner.tol);
    let mut r = residual(train, w);
    let mut v = w.to_vec();
    let mut rv = r.clone();
    let mut jw = vec![vec![0.0; d]; p];
    let mut jv = vec![vec![0.0; d]; p];
    let mut grad = vec![0.0; d];
    let mut g_smooth = vec![0.0; d];
    let mut tmp_n = vec![0.0; n];
    let mut tmp_d = vec![0.0; d];
    let mut t = 1.0f64;
    let mut gap = f64::INFINITY;
    let mut iters = 0;
    while iters < inner.max_iters {
        iters += 1;
        x.rmatvec(&rv, &mut grad);
        for j in 0..d {
            g_smooth[j] = -grad[j] / nf + pen.l2 * v[j];
        }
        let w_old = w.to_vec();
        for j in 0..d {
            w[j] = soft_threshold(v[j] - eta * g_smooth[j], eta * pen.l1[j]);
        }
        let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        let beta = if accelerate { (t - 1.0) / t_next } else { 0.0 };
        t = t_next;
        for k in 0..p {
            let deta = -eta * eta * pen.dl2(k);
            // tmp_d = XᵀX dv/n
            x.matvec(&jv[k], &mut tmp_n);
            x.rmatvec(&tmp_n, &mut tmp_d);
            let jw_old = jw[k].clone();
            for j in 0..d {
                jw[k][j] = if w[j] != 0.0 {
                    let dg = tmp_d[j] / nf + pen.l2 * jv[k][j] + v[j] * pen.dl2(k);
                    let dz = jv[k][j] - eta * dg - g_smooth[j] * deta;
                    dz - w[j].signum() * (pen.l1[j] * deta + eta * pen.dl1(j, k))
                } else {
                    0.0
                };
                jv[k][j] = jw[k][j] + beta * (jw[k][j] - jw_old[j]);
            }
        }
        let r_old = std::mem::replace(&mut r, residual(train, w));
        for j in 0..d {
            v[j] = w[j] + beta * (w[j] - w_old[j]);
        }
        for i in 0..n {
            rv[i] = r[i] + beta * (r[i] - r_old[i]);
        }
        if iters % inner.gap_every.max(1) == 0 || iters == inner.max_iters {
            if w.iter().any(|a| !a.is_finite()) {
                return Err(Error::Numerical(
                    "proximal gradient produced a non-finite iterate".into(),
                ));
            }
            gap = duality_gap(train, pen, w, &r);
            if gap <= threshold {
                return Ok((iters, gap, true, jw));
            }
        }
    }
    Ok((iters, gap, gap <= threshold, jw))
}
