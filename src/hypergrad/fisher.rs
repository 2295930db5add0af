//! The damped empirical Fisher `Ĥ = F + R` of NHGD (SPEC §5) and the application of its
//! inverse, in three representations.
//!
//! The inner SGD loop hands every step's per-sample gradients `g_p` (p = 1..b, each weighted
//! by the row weight `s_p` of hyper-cleaning, once, as in the Hessian) to [`FisherTracker::update`]:
//!
//! | representation | state | per step | at the end: `q = Ĥ⁻¹ a` |
//! |---|---|---|---|
//! | dense, Woodbury | `A = Ĥ⁻¹` (P×P), `A₀ = R⁻¹` | `A ← (A⁻¹ + (1/N) UᵀU)⁻¹`, `U_p = √s_p g_p` | `A a` |
//! | dense, accumulate | `F` (P×P) | `F ← F + (1/N) UᵀU` (SYRK) | `(F + R) q = a`: Cholesky (device) or CG |
//! | kfac | `XX` (d×d), `GG` (c×c) | `XX += (1/N) Σ x xᵀ`, `GG += (1/N) Σ s G Gᵀ` | `(GG + Λ/π)⁻¹ V (XX + πI)⁻¹` |
//! | lowrank | `U` (r×P) | `U ← U + N^{-½} S_t G_t` (sketch) | Woodbury on `R + UᵀU` |
//!
//! With the running mean, every step is normalised by the number of samples the whole inner
//! loop sees, `N = T·b`, so each step adds a fixed rank-b term and after the last step `A`
//! equals `(F + R)⁻¹` exactly (SPEC §5 (2)). With an exponential moving average of factor ρ,
//! `F ← ρF + ((1−ρ)/b) Σ s g gᵀ`, which is not a low-rank update of `(F + R)⁻¹`; so the
//! Woodbury representation only supports the running mean, and the others scale their state
//! by ρ (√ρ for the sketch, whose square is what counts).
//!
//! `kfac` (linear softmax models) uses `E[s (GGᵀ) ⊗ (xxᵀ)] ≈ E[s GGᵀ] ⊗ E[xxᵀ]` (class-major
//! layout, so the class factor is the outer one) and factored Tikhonov damping
//! `(GG + Λ/π) ⊗ (XX + πI)`, whose cross term `Λ ⊗ I` is exactly `R` (Λ the per-class λ);
//! `π² = λ̄ (tr XX / d) / (tr GG / c)` balances the two other damping terms (Martens & Grosse).
//!
//! `lowrank` keeps a random sketch: `S_t` (r×b) has independent entries `±1/√r`, so
//! `E[UᵀU] = F` and `R + UᵀU` is applied by Woodbury with an r×r system.

use crate::backend::{Backend, FisherOps, GlmOps, Groups};
use crate::error::{Error, Result};
use crate::solver::linear;

/// How the curvature estimate is represented (`--curvature`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Representation {
    /// The full P×P matrix (or its inverse).
    Dense,
    /// Kronecker factors of a linear softmax model.
    Kfac,
    /// A rank-r sketch plus the regulariser.
    Lowrank { rank: usize },
}

/// How the dense representation is kept up to date (`--fisher-update`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DenseUpdate {
    /// `A = Ĥ⁻¹` updated in place by Sherman–Morrison (b = 1) or Woodbury (rank b).
    Woodbury,
    /// `F` accumulated by SYRK, the system solved once per outer step (Cholesky where the
    /// backend factorises faster than CG, see `FisherOps::direct_solve_max_dim`; else CG).
    Accumulate,
    /// Whichever of the two is faster at this shape on this backend, timed once when the
    /// estimator is made ([`choose_dense_update`]); the trace says which ran.
    Auto,
}

/// What [`choose_dense_update`] measured: seconds of one Woodbury update and of one SYRK of a
/// b×P batch, and of one solve of the accumulated system, and the projected outer steps.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct DenseUpdateTiming {
    pub woodbury_step: f64,
    pub syrk_step: f64,
    pub solve: f64,
    /// `T · woodbury_step` and `T · syrk_step + solve`.
    pub woodbury_outer: f64,
    pub accumulate_outer: f64,
}

/// Picks Woodbury or accumulate for `spec` (whose `dense_update` is [`DenseUpdate::Auto`]) by
/// timing both on `backend` at the real shape: one Woodbury update of `A = R⁻¹` by a b×P
/// batch, one SYRK of it, and one solve of `(F + R) q = a` as the tracker does it. The
/// projected outer steps are `T·t_woodbury` against `T·t_syrk + t_solve`. With an exponential
/// moving average only accumulate is exact, and a Woodbury rank the backend refuses (b above
/// its capacitance limit) means accumulate. The solve is timed on the F of this one batch:
/// CG on the full Fisher may need more iterations, so the choice favours accumulate slightly
/// when the backend solves by CG. Costs two P×P buffers and a few updates, once per run.
pub fn choose_dense_update<B: FisherOps>(
    backend: &B,
    spec: &FisherSpec,
    reg: &Regulariser<'_, B>,
) -> Result<(DenseUpdate, Option<DenseUpdateTiming>)> {
    if matches!(spec.averaging, Averaging::Ema { .. }) {
        return Ok((DenseUpdate::Accumulate, None));
    }
    let (c, d) = spec.shape;
    let (p, b) = (c * d, spec.batch);
    let (alpha, _) = spec.step_weights();
    // A deterministic batch of gradient-like rows (the values do not change the cost).
    let rows: Vec<f64> = (0..b * p)
        .map(|e| ((e * 7919 % 1000) as f64 / 1000.0 - 0.5) / (p as f64).sqrt())
        .collect();
    let u = backend.upload(&rows)?;
    let timed = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?; // warm-up: first-use costs (handles, workspaces) stay out of the number
        backend.synchronize()?;
        let start = std::time::Instant::now();
        f()?;
        backend.synchronize()?;
        Ok(start.elapsed().as_secs_f64())
    };
    let mut inverse = backend.zeros(p * p)?;
    backend.set_diagonal(&mut inverse, reg.diag, true)?;
    let woodbury_step = match timed(&mut || backend.woodbury_update(&mut inverse, &u, b, alpha)) {
        Ok(seconds) => seconds,
        // A rank the backend cannot update with (its capacitance limit): accumulate.
        Err(Error::Dimension(_)) => return Ok((DenseUpdate::Accumulate, None)),
        Err(e) => return Err(e),
    };
    drop(inverse);
    let mut fisher = backend.zeros(p * p)?;
    let syrk_step = timed(&mut || backend.syrk(alpha, &u, b, 1.0, &mut fisher))?;
    let tracker = FisherTracker::DenseFisher { f: fisher, p };
    let a = backend.upload(&vec![1.0; p])?;
    let solve = timed(&mut || tracker.apply_inverse(backend, reg, &a, 1e-6).map(|_| ()))?;
    let t = spec.steps as f64;
    let timing = DenseUpdateTiming {
        woodbury_step,
        syrk_step,
        solve,
        woodbury_outer: t * woodbury_step,
        accumulate_outer: t * syrk_step + solve,
    };
    let choice = if timing.woodbury_outer < timing.accumulate_outer {
        DenseUpdate::Woodbury
    } else {
        DenseUpdate::Accumulate
    };
    Ok((choice, Some(timing)))
}

/// Running mean over the inner loop, or exponential moving average.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub enum Averaging {
    Mean,
    Ema { rho: f64 },
}

/// Everything that fixes how the tracker scales one step's contribution.
#[derive(Clone, Copy, Debug)]
pub struct FisherSpec {
    pub representation: Representation,
    pub dense_update: DenseUpdate,
    pub averaging: Averaging,
    /// Mini-batch size b.
    pub batch: usize,
    /// Inner steps T per outer step.
    pub steps: usize,
    /// `(c, d)`: outputs and features of the linear model (`P = c·d`). A network's dense and
    /// lowrank curvature, which see only `P`, use `(1, P)` (its K-FAC is per layer, in
    /// [`super::stochastic::mlp`]).
    pub shape: (usize, usize),
}

impl FisherSpec {
    fn total_samples(&self) -> f64 {
        (self.batch * self.steps) as f64
    }

    /// `(α, β)` of one step: `state ← β state + α Σ_p (…)`.
    pub fn step_weights(&self) -> (f64, f64) {
        match self.averaging {
            Averaging::Mean => (1.0 / self.total_samples(), 1.0),
            Averaging::Ema { rho } => ((1.0 - rho) / self.batch as f64, rho),
        }
    }

    /// Checks the combination before any work is done.
    pub fn validate(&self) -> Result<()> {
        if let Averaging::Ema { rho } = self.averaging {
            if !(0.0..1.0).contains(&rho) {
                return Err(Error::option(
                    "--ema",
                    format!("ρ must be in [0, 1), got {rho}"),
                ));
            }
            if self.representation == Representation::Dense
                && self.dense_update == DenseUpdate::Woodbury
            {
                return Err(Error::option(
                    "--fisher-update",
                    "woodbury tracks (F + R)⁻¹ exactly only for the running mean; use --fisher-update accumulate with --ema",
                ));
            }
        }
        if let Representation::Lowrank { rank } = self.representation {
            if rank == 0 {
                return Err(Error::option("--rank", "must be at least 1"));
            }
        }
        if self.batch == 0 || self.steps == 0 {
            return Err(Error::option(
                "--batch-size",
                "the batch size and the inner steps must be at least 1",
            ));
        }
        Ok(())
    }

    /// Whether a step needs the per-sample gradients written out (b×P).
    pub fn needs_gradients(&self) -> bool {
        self.representation != Representation::Kfac
    }
}

/// One inner step's inputs to the curvature update, already on the backend.
pub struct StepInputs<'a, B: Backend> {
    pub x: &'a B::Design,
    pub rows: &'a B::Rows,
    /// Unweighted factors `G_p = ∇_z ℓ` (b×c) left by the SGD step.
    pub factors: &'a B::Buf,
    /// `√s_p` per batch position (weighted losses), for the gradient rows.
    pub sqrt_weights: Option<&'a B::Buf>,
    /// `s_p` per batch position, for K-FAC's class factor.
    pub weights: Option<&'a B::Buf>,
    /// The sketch `S_t` (r×b) of `lowrank`.
    pub sketch: Option<&'a B::Buf>,
}

/// The tracked state (see the module docs).
pub enum FisherTracker<B: FisherOps> {
    DenseInverse {
        a: B::Buf,
        p: usize,
    },
    DenseFisher {
        f: B::Buf,
        p: usize,
    },
    Kfac {
        xx: B::Buf,
        gg: B::Buf,
        c: usize,
        d: usize,
    },
    Lowrank {
        u: B::Buf,
        rank: usize,
        p: usize,
    },
}

impl<B: FisherOps> FisherTracker<B> {
    /// The state at the start of an inner loop: `A₀ = R⁻¹`, or zero Fisher terms.
    pub fn start(backend: &B, spec: &FisherSpec, reg_diag: &B::Buf) -> Result<Self> {
        let (c, d) = spec.shape;
        let p = c * d;
        Ok(match (spec.representation, spec.dense_update) {
            (Representation::Dense, DenseUpdate::Woodbury) => {
                let mut a = backend.zeros(p * p)?;
                backend.set_diagonal(&mut a, reg_diag, true)?;
                FisherTracker::DenseInverse { a, p }
            }
            (Representation::Dense, DenseUpdate::Accumulate) => FisherTracker::DenseFisher {
                f: backend.zeros(p * p)?,
                p,
            },
            (Representation::Dense, DenseUpdate::Auto) => {
                return Err(Error::Backend(
                    "internal: --fisher-update auto must be resolved before the inner loop".into(),
                ))
            }
            (Representation::Kfac, _) => FisherTracker::Kfac {
                xx: backend.zeros(d * d)?,
                gg: backend.zeros(c * c)?,
                c,
                d,
            },
            (Representation::Lowrank { rank }, _) => FisherTracker::Lowrank {
                u: backend.zeros(rank * p)?,
                rank,
                p,
            },
        })
    }

    /// Adds one step's per-sample gradient rows `U` (b×P, row `p` = `√s_p g_p`) to a dense or
    /// lowrank state (`sketch`: the r×b sketch of `lowrank`). Any model that can write its
    /// per-sample gradients out (a network, [`super::stochastic::mlp`]) feeds these representations
    /// through here.
    pub fn update_rows(
        &mut self,
        backend: &B,
        spec: &FisherSpec,
        grads: &B::Buf,
        b: usize,
        sketch: Option<&B::Buf>,
    ) -> Result<()> {
        let (alpha, beta) = spec.step_weights();
        match self {
            FisherTracker::DenseInverse { a, .. } => backend.woodbury_update(a, grads, b, alpha),
            FisherTracker::DenseFisher { f, .. } => backend.syrk(alpha, grads, b, beta, f),
            FisherTracker::Kfac { .. } => Err(Error::Backend(
                "internal: the linear model's kfac state takes the SGD step's factors, not gradient rows".into(),
            )),
            FisherTracker::Lowrank { u, rank, p } => {
                let sketch = sketch.ok_or_else(|| {
                    Error::Backend("internal: the lowrank update needs a sketch".into())
                })?;
                backend.gemm(
                    false,
                    false,
                    (*rank, *p, b),
                    alpha.sqrt(),
                    sketch,
                    grads,
                    beta.sqrt(),
                    u,
                )
            }
        }
    }

    /// Whether [`Self::apply`] can form `Ĥv`: every state but the Woodbury inverse, which
    /// keeps `Ĥ⁻¹` and not `Ĥ`.
    pub fn has_operator(&self) -> bool {
        !matches!(self, FisherTracker::DenseInverse { .. })
    }

    /// `out ← Ĥ v`, the curvature estimate itself (what [`Self::apply_inverse`] inverts), for
    /// the recomputed residual and refinement ([`super::refine`]). An error for the Woodbury
    /// inverse ([`Self::has_operator`]).
    pub fn apply(
        &self,
        backend: &B,
        reg: &Regulariser<'_, B>,
        v: &B::Buf,
        out: &mut B::Buf,
    ) -> Result<()> {
        match self {
            FisherTracker::DenseInverse { .. } => Err(Error::Backend(
                "internal: the Woodbury state keeps Ĥ⁻¹, not Ĥ".into(),
            )),
            FisherTracker::DenseFisher { f, p } => {
                backend.gemm(false, false, (*p, 1, *p), 1.0, f, v, 0.0, out)?;
                backend.mul_add(1.0, reg.diag, v, out)
            }
            FisherTracker::Kfac { xx, gg, c, d } => {
                let lambda = backend.upload(&reg.class_lambdas(*c, *d)?)?;
                let applied = kfac_apply(backend, xx, gg, &lambda, v)?;
                backend.copy(&applied, out)
            }
            FisherTracker::Lowrank { u, rank, p } => {
                // Ĥv = R v + Uᵀ(U v).
                let mut t = backend.zeros(*rank)?;
                backend.gemm(false, false, (*rank, 1, *p), 1.0, u, v, 0.0, &mut t)?;
                backend.fill(out, 0.0)?;
                backend.mul_add(1.0, reg.diag, v, out)?;
                backend.gemm(true, false, (*p, 1, *rank), 1.0, u, &t, 1.0, out)
            }
        }
    }

    /// `q = Ĥ⁻¹ a` with `Ĥ = F + R`, `R = diag(reg_diag)` whose entries are `λ_{g(e)}` over
    /// `groups`. Returns the iterations of the linear solve (dense accumulate only).
    pub fn apply_inverse(
        &self,
        backend: &B,
        reg: &Regulariser<'_, B>,
        a: &B::Buf,
        linear_tol: f64,
    ) -> Result<(B::Buf, usize)> {
        match self {
            FisherTracker::DenseInverse { a: inv, p } => {
                let mut q = backend.zeros(*p)?;
                backend.gemm(false, false, (*p, 1, *p), 1.0, inv, a, 0.0, &mut q)?;
                Ok((q, 0))
            }
            FisherTracker::DenseFisher { f, p } if *p <= backend.direct_solve_max_dim() => {
                // Ĥ = F + R factorised once per outer step (SPEC §5), on the backend.
                let mut h = backend.zeros(p * p)?;
                backend.copy(f, &mut h)?;
                backend.add_diagonal(&mut h, reg.diag)?;
                let mut q = backend.zeros(*p)?;
                backend.copy(a, &mut q)?;
                backend
                    .spd_solve(&mut h, &mut q, 1)
                    .map_err(|e| Error::Numerical(format!("accumulated Fisher F + R: {e}")))?;
                Ok((q, 0))
            }
            FisherTracker::DenseFisher { f, p } => {
                let mut q = backend.zeros(*p)?;
                let report = linear::conjugate_gradient(
                    backend,
                    |v, out| {
                        backend.gemm(false, false, (*p, 1, *p), 1.0, f, v, 0.0, out)?;
                        backend.mul_add(1.0, reg.diag, v, out)
                    },
                    a,
                    &mut q,
                    linear_tol,
                    10 * *p,
                )?;
                Ok((q, report.iters))
            }
            FisherTracker::Kfac { xx, gg, c, d } => {
                let lambda = backend.upload(&reg.class_lambdas(*c, *d)?)?;
                Ok((kfac_solve(backend, xx, gg, &lambda, a)?, 0))
            }
            FisherTracker::Lowrank { u, rank, p } => {
                let r = *rank;
                let inv_diag = reg.inverse_diag(*p)?;
                // z = R⁻¹a, UR = U R⁻¹ (rows scaled), K = UR Uᵀ, t = U z.
                let mut z = backend.zeros(*p)?;
                backend.mul_add(1.0, &inv_diag, a, &mut z)?;
                let mut ur = backend.zeros(r * p)?;
                backend.mul_add(1.0, &inv_diag, u, &mut ur)?;
                let mut k = backend.zeros(r * r)?;
                backend.gemm(false, true, (r, r, *p), 1.0, &ur, u, 0.0, &mut k)?;
                let mut t = backend.zeros(r)?;
                backend.gemm(false, false, (r, 1, *p), 1.0, u, &z, 0.0, &mut t)?;
                // (I + K) s = t on the backend (r×r), then q = z − URᵀ s.
                let mut ones = backend.zeros(r)?;
                backend.fill(&mut ones, 1.0)?;
                backend.add_diagonal(&mut k, &ones)?;
                let mut s = t;
                backend.spd_solve(&mut k, &mut s, 1).map_err(|e| {
                    Error::Numerical(format!("lowrank curvature: I + U R⁻¹ Uᵀ: {e}"))
                })?;
                backend.gemm(true, false, (*p, 1, r), -1.0, &ur, &s, 1.0, &mut z)?;
                Ok((z, 0))
            }
        }
    }
}

/// The linear model's update, from the factors its fused SGD step left on the backend.
impl<B: GlmOps + FisherOps> FisherTracker<B> {
    /// Adds one step's per-sample gradients. `grads` is b×P scratch (unused by `kfac`).
    /// Makes no host synchronisation and no host copy.
    pub fn update(
        &mut self,
        backend: &B,
        spec: &FisherSpec,
        step: &StepInputs<'_, B>,
        grads: &mut B::Buf,
    ) -> Result<()> {
        if let FisherTracker::Kfac { xx, gg, .. } = self {
            let (alpha, beta) = spec.step_weights();
            return backend.glm_kfac_factors(
                step.x,
                step.rows,
                step.factors,
                step.weights,
                alpha,
                beta,
                xx,
                gg,
            );
        }
        backend.glm_per_sample_gradients(
            step.x,
            step.rows,
            step.factors,
            step.sqrt_weights,
            grads,
        )?;
        self.update_rows(
            backend,
            spec,
            grads,
            backend.rows_len(step.rows),
            step.sketch,
        )
    }
}

/// K-FAC's damped inverse of one Kronecker block applied to `a` (the `c×d` matrix `V`,
/// class-major): `Q = (GG + Λ/π)⁻¹ V (XX + πI)⁻¹` with `Λ = diag(lambda)` (c entries) and π
/// from [`crate::backend::FisherOps::kfac_damp`], so that the block's damping cross term is `Λ ⊗ I`. `c` and `d`
/// are read off the factors. On the backend: two Cholesky solves and one GEMM.
pub fn kfac_solve<B: FisherOps>(
    backend: &B,
    xx: &B::Buf,
    gg: &B::Buf,
    lambda: &B::Buf,
    a: &B::Buf,
) -> Result<B::Buf> {
    let (c, d) = kfac_shape(backend, xx, gg, lambda, a)?;
    let (mut x_damped, mut g_damped) = kfac_damped(backend, xx, gg, lambda)?;
    // Q = G̃⁻¹ V X̃⁻¹, V the c×d matrix of a. X̃ is symmetric, so the rows of V X̃⁻¹
    // are X̃⁻¹ v_k: one d×d Cholesky solve with c right-hand sides (d = 785 for
    // MNIST: the host inverse it replaces cost 0.5 s an outer step on the H200).
    let mut v_x = backend.zeros(c * d)?;
    backend.copy(a, &mut v_x)?;
    backend
        .spd_solve(&mut x_damped, &mut v_x, c)
        .map_err(|e| Error::Numerical(format!("K-FAC input factor: {e}")))?;
    // G̃⁻¹ (c×c, symmetric) by solving against the identity, then a c×c×d GEMM.
    let mut ones = backend.zeros(c)?;
    backend.fill(&mut ones, 1.0)?;
    let mut g_inv = backend.zeros(c * c)?;
    backend.set_diagonal(&mut g_inv, &ones, false)?;
    backend
        .spd_solve(&mut g_damped, &mut g_inv, c)
        .map_err(|e| Error::Numerical(format!("K-FAC class factor: {e}")))?;
    let mut q = backend.zeros(c * d)?;
    backend.gemm(false, false, (c, d, c), 1.0, &g_inv, &v_x, 0.0, &mut q)?;
    Ok(q)
}

/// K-FAC's damped block applied to `v` (the `c×d` matrix `V`, class-major): the forward
/// product `(GG + Λ/π) V (XX + πI)` that [`kfac_solve`] inverts, with the same damping.
pub fn kfac_apply<B: FisherOps>(
    backend: &B,
    xx: &B::Buf,
    gg: &B::Buf,
    lambda: &B::Buf,
    v: &B::Buf,
) -> Result<B::Buf> {
    let (c, d) = kfac_shape(backend, xx, gg, lambda, v)?;
    let (x_damped, g_damped) = kfac_damped(backend, xx, gg, lambda)?;
    let mut v_x = backend.zeros(c * d)?;
    backend.gemm(false, false, (c, d, d), 1.0, v, &x_damped, 0.0, &mut v_x)?;
    let mut out = backend.zeros(c * d)?;
    backend.gemm(false, false, (c, d, c), 1.0, &g_damped, &v_x, 0.0, &mut out)?;
    Ok(out)
}

/// Damped copies of a K-FAC block's factors, on the backend: `X̃ = XX + πI`, `G̃ = GG + Λ/π`
/// ([`crate::backend::FisherOps::kfac_damp`]).
fn kfac_damped<B: FisherOps>(
    backend: &B,
    xx: &B::Buf,
    gg: &B::Buf,
    lambda: &B::Buf,
) -> Result<(B::Buf, B::Buf)> {
    let mut x_damped = linear::duplicate(backend, xx)?;
    let mut g_damped = linear::duplicate(backend, gg)?;
    backend.kfac_damp(&mut x_damped, &mut g_damped, lambda)?;
    Ok((x_damped, g_damped))
}

/// `(c, d)` of a K-FAC block, read off its factors and checked against the vector.
fn kfac_shape<B: FisherOps>(
    backend: &B,
    xx: &B::Buf,
    gg: &B::Buf,
    lambda: &B::Buf,
    v: &B::Buf,
) -> Result<(usize, usize)> {
    let c = backend.len(lambda);
    let d = (backend.len(xx) as f64).sqrt().round() as usize;
    if c * c != backend.len(gg) || d * d != backend.len(xx) || c * d != backend.len(v) {
        return Err(Error::Dimension(format!(
            "K-FAC block: factors of {} and {} entries, {c} λ and a vector of {}",
            backend.len(xx),
            backend.len(gg),
            backend.len(v)
        )));
    }
    Ok((c, d))
}

/// The regulariser `R = diag(r)` with `r_e = λ_{g(e)}`.
pub struct Regulariser<'a, B: FisherOps> {
    pub backend: &'a B,
    pub diag: &'a B::Buf,
    pub groups: Groups,
    pub lambda: &'a [f64],
}

impl<B: FisherOps> Regulariser<'_, B> {
    /// `1/r` as a buffer of P entries.
    fn inverse_diag(&self, p: usize) -> Result<B::Buf> {
        let inv: Vec<f64> = self.lambda.iter().map(|l| 1.0 / l).collect();
        self.backend.group_expand(self.groups, &inv, p)
    }

    /// λ per class for K-FAC: `R = Λ ⊗ I_d` needs λ constant within each class's block.
    fn class_lambdas(&self, c: usize, d: usize) -> Result<Vec<f64>> {
        match self.groups {
            Groups::Shared => Ok(vec![self.lambda[0]; c]),
            Groups::Blocks { block } if block == d => Ok(self.lambda.to_vec()),
            _ => Err(Error::option(
                "--curvature",
                "kfac needs a regulariser that is constant within each class (--hyper shared or per-class, or hyperclean)",
            )),
        }
    }
}

/// The inverse of a symmetric positive definite matrix by Cholesky, in f64 (row-major;
/// `what` names the matrix in the error).
pub fn spd_inverse(a: Vec<f64>, dim: usize, what: &str) -> Result<Vec<f64>> {
    crate::linalg::spd_inverse(&a, dim)
        .map_err(|e| Error::Numerical(format!("{what} is not positive definite ({e})")))
}
