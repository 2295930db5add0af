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
//! Written once over a backend ([`ProxOps`]; [`hypergradient_resident`]): the CPU in f64
//! runs it through [`hypergradient`], CUDA through the api's device choice.
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
use super::resident::Resident;
use super::solver::{
    anderson_extrapolate, extrapolate, gap_threshold, pgd_step, pgd_update, solve_on, start,
    upload_coords, L1Solver, Solution, SolveOptions, ANDERSON_K,
};
use crate::backend::cpu::CpuBackend;
use crate::backend::prox::{ProxOps, SweepPenalty};
use crate::hypergrad::{Estimate, MethodName};
use crate::solver::linear::{conjugate_gradient, duplicate};
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
/// `jacobian` of a result at a nearby θ) instead of 0; the fixed point is the same. On the CPU
/// in f64: [`hypergradient_resident`] on [`CpuBackend`].
pub fn hypergradient_warm(
    train: &L1Data,
    val: &L1Data,
    pen: &Penalty,
    opts: &L1Options,
    w0: Option<&[f64]>,
    jac0: Option<&[Vec<f64>]>,
) -> Result<L1Hypergradient> {
    let b = CpuBackend::<f64>::new();
    hypergradient_resident(&b, &Resident::new(&b, train)?, val, pen, opts, w0, jac0)
}

/// [`hypergradient_warm`] on a backend, for training data already on it: the one
/// implementation of the three methods, every backend's.
pub fn hypergradient_resident<B: ProxOps>(
    b: &B,
    train: &Resident<B>,
    val: &L1Data,
    pen: &Penalty,
    opts: &L1Options,
    w0: Option<&[f64]>,
    jac0: Option<&[Vec<f64>]>,
) -> Result<L1Hypergradient> {
    opts.validate()?;
    if train.d() != val.x.d() {
        return Err(Error::Dimension(format!(
            "training data has {} features but validation data has {}",
            train.d(),
            val.x.d()
        )));
    }
    let started = Instant::now();
    let mut result = match opts.method {
        L1Method::Forward => forward(b, train, val, pen, opts, w0)?,
        L1Method::Implicit | L1Method::ImplicitForward => {
            let sol = solve_on(b, train, pen, w0, &opts.inner)?;
            let (outer_loss, grad_f) = val.mse_and_grad(&sol.w);
            let support: Vec<usize> = (0..sol.w.len()).filter(|&j| sol.w[j] != 0.0).collect();
            let on_s = OnSupport::new(b, train, &support)?;
            let (h, residual_norm, linear_iters, jacobian) = if opts.method == L1Method::Implicit {
                let (h, r, i) = implicit(b, &on_s, pen, &sol, &grad_f, opts)?;
                (h, r, i, None)
            } else {
                implicit_forward(b, &on_s, pen, &sol, &grad_f, opts, jac0)?
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

/// The support S of ŵ on the backend: its columns' indices, and the training data.
struct OnSupport<'a, B: ProxOps> {
    train: &'a Resident<B>,
    support: Vec<usize>,
    coords: B::Rows,
}

impl<'a, B: ProxOps> OnSupport<'a, B> {
    fn new(b: &B, train: &'a Resident<B>, support: &[usize]) -> Result<Self> {
        Ok(OnSupport {
            train,
            support: support.to_vec(),
            coords: upload_coords(b, support, train.d())?,
        })
    }

    /// `out ← A v = X_Sᵀ(X_S v)/n + λ₂ v` for v on S.
    fn apply_a(&self, b: &B, l2: f64, v: &B::Buf, out: &mut B::Buf) -> Result<()> {
        let x = &self.train.x;
        let mut tmp = b.zeros(self.train.n())?;
        b.cols_gemv(x, Some(&self.coords), 1.0, v, &mut tmp)?;
        b.cols_gemv_t(x, Some(&self.coords), &tmp, out)?;
        b.axpby(l2, v, 1.0 / self.train.n() as f64, out)
    }
}

/// `implicit`: `A q = ∇_S f`, then `h_k = −b_kᵀ q`. Returns `(h, ‖Aq − ∇_S f‖, CG iterations)`.
fn implicit<B: ProxOps>(
    b: &B,
    on_s: &OnSupport<B>,
    pen: &Penalty,
    sol: &Solution,
    grad_f: &[f64],
    opts: &L1Options,
) -> Result<(Vec<f64>, f64, usize)> {
    let p = pen.hyper_dim();
    let support = &on_s.support;
    let s = support.len();
    let mut h = vec![0.0; p];
    if s == 0 {
        return Ok((h, 0.0, 0));
    }
    let rhs_host: Vec<f64> = support.iter().map(|&j| grad_f[j]).collect();
    let rhs = b.upload(&rhs_host)?;
    let mut iters = 0;
    // Dense A, column by column (A e_a), factorised by Cholesky on the host when |S| is
    // small; CG on the backend when |S| is large or A is singular (an inexact inner solution
    // can carry more than n nonzeros, making X_SᵀX_S rank-deficient).
    let factor = if s <= opts.cholesky_max {
        let mut a = vec![0.0; s * s];
        let mut col = b.zeros(s)?;
        for c in 0..s {
            let mut e = vec![0.0; s];
            e[c] = 1.0;
            on_s.apply_a(b, pen.l2, &b.upload(&e)?, &mut col)?;
            for (r, v) in b.download(&col)?.into_iter().enumerate() {
                a[r * s + c] = v;
            }
        }
        crate::linalg::cholesky(&mut a, s).ok().map(|_| a)
    } else {
        None
    };
    let q = if let Some(l) = factor {
        let mut q = rhs_host.clone();
        crate::linalg::cholesky_solve_in_place(&l, s, &mut q);
        b.upload(&q)?
    } else {
        let mut q = b.zeros(s)?;
        let report = conjugate_gradient(
            b,
            |v: &B::Buf, out: &mut B::Buf| on_s.apply_a(b, pen.l2, v, out),
            &rhs,
            &mut q,
            opts.linear_tol,
            opts.linear_iters,
        )?;
        iters = report.iters;
        q
    };
    let mut aq = b.zeros(s)?;
    on_s.apply_a(b, pen.l2, &q, &mut aq)?;
    b.axpy(-1.0, &rhs, &mut aq)?;
    let res = b.nrm2(&aq)?;
    let q = b.download(&q)?;
    for k in live_columns(pen, support) {
        let bk = b_column(pen, &sol.w, support, k);
        h[k] = -bk.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>();
    }
    Ok((h, res, iters))
}

/// `implicit-forward`: Gauss–Seidel sweeps of the coordinate-descent Jacobian recursion on S
/// with the signs fixed ([`ProxOps::cd_jacobian_sweep`], one hyper-parameter column at a time),
/// from J = 0 (or `jac0`), until the largest change of J in a sweep, or of the hypergradient
/// `h = J_Sᵀ∇_S f` between two sweeps, is ≤ `linear_tol` times the largest entry of J (resp.
/// h); every 5 sweeps an Anderson extrapolation is tried and kept when it lowers the energy
/// `½JᵀAJ + bᵀJ`:
///
/// ```text
/// J_jk ← (x_jᵀ R_k/n + L_j J_jk − b_jk) / (L_j + λ₂),   R_k ← R_k − x_j ΔJ_jk
/// ```
///
/// where `R_k = −X_S J_k`; the fixed point is `J = −A⁻¹B`. Starts from `jac0` restricted to
/// S when given (lasso/enet), else from 0. Returns `(h = J_Sᵀ ∇_S f, ‖AJ + B‖_F, sweeps,
/// J as p vectors of length d for lasso/enet)`.
#[allow(clippy::type_complexity)]
fn implicit_forward<B: ProxOps>(
    b: &B,
    on_s: &OnSupport<B>,
    pen: &Penalty,
    sol: &Solution,
    grad_f: &[f64],
    opts: &L1Options,
    jac0: Option<&[Vec<f64>]>,
) -> Result<(Vec<f64>, f64, usize, Option<Vec<Vec<f64>>>)> {
    let train = on_s.train;
    let support = &on_s.support;
    let p = pen.hyper_dim();
    let n = train.n();
    let nf = n as f64;
    let mut h = vec![0.0; p];
    let s = support.len();
    let d = train.d();
    let keep = pen.kind != super::L1Kind::Wlasso;
    if s == 0 {
        return Ok((h, 0.0, 0, keep.then(|| vec![vec![0.0; d]; p])));
    }
    let lips_host: Vec<f64> = support.iter().map(|&j| train.lips_host[j]).collect();
    let lips = b.upload(&lips_host)?;
    let cols = live_columns(pen, support);
    let bs: Vec<Vec<f64>> = cols
        .iter()
        .map(|&k| b_column(pen, &sol.w, support, k))
        .collect();
    let bs_dev: Vec<B::Buf> = bs.iter().map(|bk| b.upload(bk)).collect::<Result<_>>()?;
    let mut jac_host = vec![vec![0.0; s]; cols.len()];
    let mut res_host = vec![vec![0.0; n]; cols.len()];
    if let Some(j0) = jac0.filter(|j0| keep && j0.len() == p && j0.iter().all(|c| c.len() == d)) {
        // R_k = −X_S J_k for the warm start, on the host (once a call).
        for (c, &k) in cols.iter().enumerate() {
            for (a, &j) in support.iter().enumerate() {
                let v = j0[k][j];
                if v != 0.0 && v.is_finite() {
                    jac_host[c][a] = v;
                    train.data.x.col_axpy(j, -v, &mut res_host[c]);
                }
            }
        }
    }
    let mut jac: Vec<B::Buf> = jac_host
        .iter()
        .map(|j| b.upload(j))
        .collect::<Result<_>>()?;
    let mut res: Vec<B::Buf> = res_host
        .iter()
        .map(|r| b.upload(r))
        .collect::<Result<_>>()?;
    let mut sweeps = 0;
    let mut h_prev = vec![f64::INFINITY; cols.len()];
    let mut history: Vec<Vec<Vec<f64>>> = vec![Vec::with_capacity(ANDERSON_K + 1); cols.len()];
    while sweeps < opts.linear_iters {
        sweeps += 1;
        let mut max_change: f64 = 0.0;
        let mut max_entry: f64 = 0.0;
        for c in 0..cols.len() {
            let (change, entry) = b.cd_jacobian_sweep(
                &train.x,
                &on_s.coords,
                &lips,
                &bs_dev[c],
                pen.l2,
                &mut jac[c],
                &mut res[c],
            )?;
            max_change = max_change.max(change);
            max_entry = max_entry.max(entry);
        }
        if !max_entry.is_finite() {
            return Err(Error::Numerical(
                "the Jacobian recursion on the support diverged".into(),
            ));
        }
        jac_host = jac.iter().map(|j| b.download(j)).collect::<Result<_>>()?;
        // Stop when the hypergradient h = J_Sᵀ∇_S f (what the outer loop uses) or the whole
        // Jacobian has stopped moving, relative to its size.
        let mut h_change: f64 = 0.0;
        let mut h_size: f64 = 0.0;
        for (c, jk) in jac_host.iter().enumerate() {
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
            hist.push(jac_host[c].clone());
            if hist.len() == ANDERSON_K + 1 {
                if let Some(proposal) = anderson_extrapolate(hist) {
                    let energy = |jk: &[f64], rk: &[f64]| {
                        0.5 * (rk.iter().map(|v| v * v).sum::<f64>() / nf
                            + pen.l2 * jk.iter().map(|v| v * v).sum::<f64>())
                            + jk.iter().zip(&bs[c]).map(|(a, b)| a * b).sum::<f64>()
                    };
                    let delta: Vec<f64> = proposal
                        .iter()
                        .zip(&jac_host[c])
                        .map(|(p, j)| p - j)
                        .collect();
                    let mut r_new = duplicate(b, &res[c])?;
                    b.cols_gemv(
                        &train.x,
                        Some(&on_s.coords),
                        -1.0,
                        &b.upload(&delta)?,
                        &mut r_new,
                    )?;
                    let (r_old, r_new_host) = (b.download(&res[c])?, b.download(&r_new)?);
                    if energy(&proposal, &r_new_host) < energy(&jac_host[c], &r_old) {
                        jac[c] = b.upload(&proposal)?;
                        jac_host[c] = proposal;
                        res[c] = r_new;
                    }
                }
                hist.clear();
            }
        }
    }
    let mut aj = b.zeros(s)?;
    let mut res2 = 0.0;
    for (c, &k) in cols.iter().enumerate() {
        h[k] = support
            .iter()
            .zip(&jac_host[c])
            .map(|(&j, v)| grad_f[j] * v)
            .sum();
        on_s.apply_a(b, pen.l2, &jac[c], &mut aj)?;
        b.axpy(1.0, &bs_dev[c], &mut aj)?;
        res2 += b.dot(&aj, &aj)?;
    }
    let full = keep.then(|| {
        jac_host
            .iter()
            .map(|jc| {
                let mut v = vec![0.0; d];
                for (a, &j) in support.iter().enumerate() {
                    v[j] = jc[a];
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
/// `R_k = −XJ_k` updated with the coordinate ([`ProxOps::cd_forward_sweep`]).
///
/// ISTA/FISTA (`η = 1/(σ/n + λ₂)`, `G(v) = −Xᵀ(y − Xv)/n + λ₂v`, `z = v − ηG(v)`,
/// `w⁺ = ST(z, ηλ)`, `v⁺ = w⁺ + β(w⁺ − w)`): with `∂η/∂θ_k = −η² ∂λ₂/∂θ_k`,
/// `dz = dv − η(XᵀX dv/n + λ₂ dv + v ∂λ₂) − G dη`,
/// `dw⁺_j = 1{w⁺_j ≠ 0}(dz_j − s_j(λ_j dη + η ∂λ_j))`, `dv⁺ = dw⁺ + β(dw⁺ − dw)`
/// ([`ProxOps::prox_jacobian`]).
fn forward<B: ProxOps>(
    b: &B,
    train: &Resident<B>,
    val: &L1Data,
    pen: &Penalty,
    opts: &L1Options,
    w0: Option<&[f64]>,
) -> Result<L1Hypergradient> {
    let d = train.d();
    let n = train.n();
    let p = pen.hyper_dim();
    if p.saturating_mul(n + d) > FORWARD_MAX_ENTRIES {
        return Err(Error::option(
            "--method",
            format!(
                "forward would store a {p}×({n}+{d}) Jacobian; use implicit-forward or implicit for this size"
            ),
        ));
    }
    let w = start(w0, d)?;
    let (w, iters, gap, converged, jac) = match opts.inner.solver {
        L1Solver::Cd => forward_cd(b, train, pen, &opts.inner, w)?,
        L1Solver::Pgd | L1Solver::Fista => forward_pgd(b, train, pen, &opts.inner, w)?,
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

/// What a forward-mode run returns: `(w, iterations, gap, converged, J by column)`.
type ForwardRun = (Vec<f64>, usize, f64, bool, Vec<Vec<f64>>);

/// Prox-CD with forward-mode Jacobian, one [`ProxOps::cd_forward_sweep`] a sweep.
fn forward_cd<B: ProxOps>(
    b: &B,
    train: &Resident<B>,
    pen: &Penalty,
    inner: &SolveOptions,
    w: Vec<f64>,
) -> Result<ForwardRun> {
    let d = train.d();
    let n = train.n();
    let p = pen.hyper_dim();
    let l1 = b.upload(&pen.l1)?;
    let sp = SweepPenalty {
        kind: pen.kind,
        l1: &l1,
        l2: pen.l2,
    };
    let mut w = b.upload(&w)?;
    let mut r = b.zeros(n)?;
    train.residual(b, &w, &mut r)?;
    let mut jac = b.zeros(p * d)?;
    let mut jr = b.zeros(p * n)?;
    // Column k is identically 0 until something feeds it (wlasso: coordinate k active).
    let live: Vec<f64> = (0..p)
        .map(|k| (pen.kind != super::L1Kind::Wlasso || k >= d) as u8 as f64)
        .collect();
    let mut live = b.upload(&live)?;
    let threshold = gap_threshold(&train.data, inner.tol);
    let mut gap = f64::INFINITY;
    let mut iters = 0;
    let mut converged = false;
    while iters < inner.max_iters {
        iters += 1;
        b.cd_forward_sweep(
            &train.x,
            &train.lips,
            &sp,
            &mut w,
            &mut r,
            &mut jac,
            &mut jr,
            &mut live,
        )?;
        if iters % inner.gap_every.max(1) == 0 || iters == inner.max_iters {
            let (g, w_host, _) = train.gap(b, pen, &w, &r)?;
            if w_host.iter().any(|v| !v.is_finite()) {
                return Err(Error::Numerical(
                    "coordinate descent produced a non-finite iterate".into(),
                ));
            }
            gap = g;
            if gap <= threshold {
                converged = true;
                break;
            }
        }
    }
    let jac = b.download(&jac)?;
    let w = b.download(&w)?;
    Ok((
        w,
        iters,
        gap,
        converged || gap <= threshold,
        jac.chunks(d.max(1)).map(<[f64]>::to_vec).collect(),
    ))
}

/// ISTA/FISTA with forward-mode Jacobian, one block of d entries a hyper-parameter column.
fn forward_pgd<B: ProxOps>(
    b: &B,
    train: &Resident<B>,
    pen: &Penalty,
    inner: &SolveOptions,
    w: Vec<f64>,
) -> Result<ForwardRun> {
    let d = train.d();
    let n = train.n();
    let nf = n as f64;
    let p = pen.hyper_dim();
    let Some(eta) = pgd_step(train, pen) else {
        return Err(Error::Numerical(
            "the design is zero: proximal gradient has no step".into(),
        ));
    };
    let accelerate = inner.solver == L1Solver::Fista;
    let threshold = gap_threshold(&train.data, inner.tol);
    let l1 = b.upload(&pen.l1)?;
    let mut w = b.upload(&w)?;
    let mut r = b.zeros(n)?;
    train.residual(b, &w, &mut r)?;
    let mut v = duplicate(b, &w)?;
    let mut rv = duplicate(b, &r)?;
    let mut jw: Vec<B::Buf> = (0..p).map(|_| b.zeros(d)).collect::<Result<_>>()?;
    let mut jv: Vec<B::Buf> = (0..p).map(|_| b.zeros(d)).collect::<Result<_>>()?;
    let dl1: Vec<B::Buf> = (0..p)
        .map(|k| b.upload(&(0..d).map(|j| pen.dl1(j, k)).collect::<Vec<_>>()))
        .collect::<Result<_>>()?;
    let mut gsm = b.zeros(d)?;
    let mut dgrad = b.zeros(d)?;
    let mut xjv = b.zeros(n)?;
    let mut t = 1.0f64;
    let mut gap = f64::INFINITY;
    let mut iters = 0;
    let mut converged = false;
    while iters < inner.max_iters {
        iters += 1;
        let w_old = duplicate(b, &w)?;
        pgd_update(b, train, pen, (&l1, eta), (&v, &rv), &mut gsm, &mut w)?;
        let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        let beta = if accelerate { (t - 1.0) / t_next } else { 0.0 };
        t = t_next;
        for k in 0..p {
            let deta = -eta * eta * pen.dl2(k);
            // dgrad = XᵀX dv/n + λ₂ dv
            b.fill(&mut xjv, 0.0)?;
            b.cols_gemv(&train.x, None, 1.0, &jv[k], &mut xjv)?;
            b.cols_gemv_t(&train.x, None, &xjv, &mut dgrad)?;
            b.axpby(pen.l2, &jv[k], 1.0 / nf, &mut dgrad)?;
            let jw_old = duplicate(b, &jw[k])?;
            b.prox_jacobian(
                &w,
                &v,
                &jv[k],
                &dgrad,
                &gsm,
                &l1,
                &dl1[k],
                eta,
                &[deta],
                &[pen.dl2(k)],
                &mut jw[k],
            )?;
            extrapolate(b, beta, &jw[k], &jw_old, &mut jv[k])?;
        }
        let r_old = duplicate(b, &r)?;
        train.residual(b, &w, &mut r)?;
        extrapolate(b, beta, &w, &w_old, &mut v)?;
        extrapolate(b, beta, &r, &r_old, &mut rv)?;
        if iters % inner.gap_every.max(1) == 0 || iters == inner.max_iters {
            let (g, w_host, _) = train.gap(b, pen, &w, &r)?;
            if w_host.iter().any(|a| !a.is_finite()) {
                return Err(Error::Numerical(
                    "proximal gradient produced a non-finite iterate".into(),
                ));
            }
            gap = g;
            if gap <= threshold {
                converged = true;
                break;
            }
        }
    }
    let jac = jw.iter().map(|j| b.download(j)).collect::<Result<_>>()?;
    Ok((
        b.download(&w)?,
        iters,
        gap,
        converged || gap <= threshold,
        jac,
    ))
}
