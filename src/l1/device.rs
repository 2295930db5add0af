//! The ℓ1 hypergradients on a [`Backend`] (the CPU backend in f32/f64, or CUDA in f32):
//! the support-restricted implicit solve by CG, and `forward` through ISTA/FISTA, whose
//! proximal step and Jacobian are the [`ProxOps`] kernels (`cuda/prox.cu`). Everything else
//! is an existing backend primitive: `Xᵀ(Xv − y)/n` is `glm_value_grad` with the squared loss
//! and `XᵀXV/n` for a batch of directions is `glm_hvp` with row curvature 1/n.
//!
//! The device holds the design densely (`Backend::Design` is dense): these paths are for
//! designs that fit the device as dense matrices. Scalars that steer the loops (the duality
//! gap every `gap_every` iterations) are computed on the host from a downloaded iterate.

use super::hypergrad::L1Hypergradient;
use super::problem::{L1Data, Penalty};
use super::solver::{duality_gap, gap_threshold, residual, L1Solver, SolveOptions};
use super::L1Method;
use crate::backend::prox::ProxOps;
use crate::backend::{Backend, Curvature, GlmOps, Loss};
use crate::solver::linear::{conjugate_gradient, duplicate};
use crate::{Error, Result};

/// Row curvature `1/n` of the squared loss: `glm_hvp` then gives `XᵀX v / n`.
fn squared_curvature<B: Backend>(b: &B, n: usize) -> Result<Curvature<B>> {
    Ok(Curvature {
        loss: Loss::Squared,
        row_scale: b.upload(&vec![1.0 / n as f64; n])?,
        probs: None,
    })
}

/// `implicit` on a backend: `A q = ∇_S f` with `A = X_SᵀX_S/n + λ₂I` by conjugate gradient
/// (to `‖Aq − ∇_S f‖ ≤ tol ‖∇_S f‖`, at most `iters` steps) on the support of `w`, then
/// `h_k = −b_kᵀ q`, `b_k = s ⊙ ∂λ_S/∂θ_k + w_S ∂λ₂/∂θ_k` (see [`super::hypergrad`]).
/// `grad_f` is `∇f(w)` (length d). Returns `(h, ‖Aq − ∇_S f‖, CG iterations)`.
pub fn implicit_on<B: GlmOps>(
    b: &B,
    train: &L1Data,
    pen: &Penalty,
    w: &[f64],
    grad_f: &[f64],
    tol: f64,
    iters: usize,
) -> Result<(Vec<f64>, f64, usize)> {
    let d = train.x.d();
    if w.len() != d || grad_f.len() != d {
        return Err(Error::Dimension(format!(
            "w has {} and ∇f {} entries for {d} features",
            w.len(),
            grad_f.len()
        )));
    }
    let p = pen.hyper_dim();
    let support: Vec<usize> = (0..d).filter(|&j| w[j] != 0.0).collect();
    if support.is_empty() {
        return Ok((vec![0.0; p], 0.0, 0));
    }
    let n = train.y.len();
    let xs = b.upload_design(&train.x.to_row_major(Some(&support))?)?;
    let curv = squared_curvature(b, n)?;
    let rhs_host: Vec<f64> = support.iter().map(|&j| grad_f[j]).collect();
    let rhs = b.upload(&rhs_host)?;
    let mut q = b.zeros(support.len())?;
    let l2 = pen.l2;
    let apply = |v: &B::Buf, out: &mut B::Buf| -> Result<()> {
        b.glm_hvp(&xs, &curv, v, out)?;
        b.axpy(l2, v, out)
    };
    let report = conjugate_gradient(b, apply, &rhs, &mut q, tol, iters)?;
    let mut aq = b.zeros(support.len())?;
    apply(&q, &mut aq)?;
    b.axpy(-1.0, &rhs, &mut aq)?;
    let res = b.nrm2(&aq)?;
    let q = b.download(&q)?;
    let mut h = vec![0.0; p];
    for (k, hk) in h.iter_mut().enumerate() {
        *hk = -support
            .iter()
            .zip(&q)
            .map(|(&j, qj)| (w[j].signum() * pen.dl1(j, k) + w[j] * pen.dl2(k)) * qj)
            .sum::<f64>();
    }
    Ok((h, res, report.iters))
}

/// `forward` through ISTA (`inner.solver = Pgd`) or FISTA on a backend, from w = 0 and J = 0:
/// the recursion of [`super::hypergrad`]'s `forward` with every vector operation on the
/// device (p directions at once). The inner loop stops when the duality gap, checked on the
/// host every `inner.gap_every` iterations, is ≤ `inner.tol·‖y‖²/n`. `residual_norm` is
/// `None`, `error_bound` `None`.
pub fn forward_pgd_on<B: ProxOps + GlmOps>(
    b: &B,
    train: &L1Data,
    val: &L1Data,
    pen: &Penalty,
    inner: &SolveOptions,
) -> Result<L1Hypergradient> {
    inner.validate()?;
    let accelerate = match inner.solver {
        L1Solver::Pgd => false,
        L1Solver::Fista => true,
        L1Solver::Cd => {
            return Err(Error::option(
                "--l1-solver",
                "the device path runs pgd or fista (coordinate descent stays on the CPU)",
            ))
        }
    };
    let started = std::time::Instant::now();
    let n = train.y.len();
    let d = train.x.d();
    let p = pen.hyper_dim();
    let nf = n as f64;
    let lipschitz = train.x.spectral_norm_sq(50) / nf + pen.l2;
    if !(lipschitz > 0.0) {
        return Err(Error::Numerical(
            "the design is zero: proximal gradient has no step".into(),
        ));
    }
    let eta = 1.0 / lipschitz;
    let x = b.upload_design(&train.x.to_row_major(None)?)?;
    let y = b.upload(&train.y)?;
    let curv = squared_curvature(b, n)?;
    let l1 = b.upload(&pen.l1)?;
    let mut dl1_host = vec![0.0; p * d];
    for k in 0..p {
        for j in 0..d {
            dl1_host[k * d + j] = pen.dl1(j, k);
        }
    }
    let dl1 = b.upload(&dl1_host)?;
    let deta: Vec<f64> = (0..p).map(|k| -eta * eta * pen.dl2(k)).collect();
    let dl2: Vec<f64> = (0..p).map(|k| pen.dl2(k)).collect();
    let mut w = b.zeros(d)?;
    let mut v = b.zeros(d)?;
    let mut grad = b.zeros(d)?;
    let mut gsm = b.zeros(d)?;
    let mut jw = b.zeros(p * d)?;
    let mut jv = b.zeros(p * d)?;
    let mut dgrad = b.zeros(p * d)?;
    let threshold = gap_threshold(train, inner.tol);
    let mut t = 1.0f64;
    let mut gap = f64::INFINITY;
    let mut iters = 0;
    let mut w_host = vec![0.0; d];
    while iters < inner.max_iters {
        iters += 1;
        // gsm = Xᵀ(Xv − y)/n + λ₂ v
        b.glm_value_grad(&x, Loss::Squared, &y, None, &v, 1.0 / nf, Some(&mut grad))?;
        b.copy(&grad, &mut gsm)?;
        b.axpy(pen.l2, &v, &mut gsm)?;
        let w_old = duplicate(b, &w)?;
        b.prox_step(&v, &gsm, &l1, eta, &mut w)?;
        // dgrad = (XᵀX/n + λ₂) jv, for the p directions at once.
        b.glm_hvp(&x, &curv, &jv, &mut dgrad)?;
        b.axpy(pen.l2, &jv, &mut dgrad)?;
        let jw_old = duplicate(b, &jw)?;
        b.prox_jacobian(
            &w, &v, &jv, &dgrad, &gsm, &l1, &dl1, eta, &deta, &dl2, &mut jw,
        )?;
        let t_next = (1.0 + (1.0 + 4.0 * t * t).sqrt()) / 2.0;
        let beta = if accelerate { (t - 1.0) / t_next } else { 0.0 };
        t = t_next;
        // v = (1 + β) w − β w_old, jv likewise.
        b.copy(&w, &mut v)?;
        b.axpby(-beta, &w_old, 1.0 + beta, &mut v)?;
        b.copy(&jw, &mut jv)?;
        b.axpby(-beta, &jw_old, 1.0 + beta, &mut jv)?;
        if iters % inner.gap_every.max(1) == 0 || iters == inner.max_iters {
            w_host = b.download(&w)?;
            if w_host.iter().any(|a| !a.is_finite()) {
                return Err(Error::Numerical(
                    "proximal gradient produced a non-finite iterate".into(),
                ));
            }
            gap = duality_gap(train, pen, &w_host, &residual(train, &w_host));
            if gap <= threshold {
                break;
            }
        }
    }
    let jac = b.download(&jw)?;
    let (outer_loss, grad_f) = val.mse_and_grad(&w_host);
    let h: Vec<f64> = (0..p)
        .map(|k| {
            jac[k * d..(k + 1) * d]
                .iter()
                .zip(&grad_f)
                .map(|(a, g)| a * g)
                .sum()
        })
        .collect();
    if let Some(k) = h.iter().position(|v| !v.is_finite()) {
        return Err(Error::Numerical(format!(
            "hypergradient entry {k} is {}",
            h[k]
        )));
    }
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
        inner_converged: gap <= threshold,
        seconds: started.elapsed().as_secs_f64(),
        extra: super::hypergrad::Support {
            support_size: w_host.iter().filter(|a| **a != 0.0).count(),
            jacobian: None,
        },
        w: w_host,
    })
}
