//! Hypergradient estimators (SPEC §3), each returning `h ≈ ∇F(θ)` with the diagnostics and
//! the a posteriori error bound of SPEC §4.
//!
//! | method | file |
//! |---|---|
//! | `exact`, `cg`, `neumann`, `fixed-point` | [`implicit`] with the linear solver of [`exact`], [`cg`], [`neumann`], [`fixed_point`] |
//! | `unroll` | [`unroll`] (reverse mode through T steps) |
//! | `forward` | [`forward`] (forward mode through the same T steps) |
//! | `nhgd`, `stocbio`, `amigo`, `soba` | [`stochastic`], once for every inner model ([`stochastic::model::StochasticModel`]: linear models and networks); NHGD's curvature in [`fisher`] |

pub mod bound;
pub mod cg;
pub mod exact;
pub mod fisher;
pub mod fixed_point;
pub mod forward;
pub mod implicit;
pub mod neumann;
pub mod refine;
pub mod stochastic;
pub mod unroll;

use std::time::Instant;

use crate::backend::Precision;
use crate::error::{Error, Result};
use crate::problem::{Bilevel, Buf, InnerProblem};
use crate::solver::{self, linear, InnerOptions};

/// The hypergradient methods of SPEC §3 for smooth problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Exact,
    Cg,
    Neumann,
    FixedPoint,
    Unroll,
    Forward,
    Nhgd,
    Stocbio,
    Amigo,
    Soba,
}

impl Method {
    /// The stochastic methods ([`stochastic::StochasticEstimator`]).
    pub const STOCHASTIC: [Method; 4] =
        [Method::Nhgd, Method::Stocbio, Method::Amigo, Method::Soba];

    /// The deterministic methods of [`compute`], in the order of SPEC §3.
    pub const ALL: [Method; 6] = [
        Method::Exact,
        Method::Cg,
        Method::Neumann,
        Method::FixedPoint,
        Method::Unroll,
        Method::Forward,
    ];

    /// The CLI name (`--method`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Cg => "cg",
            Method::Neumann => "neumann",
            Method::FixedPoint => "fixed-point",
            Method::Unroll => "unroll",
            Method::Forward => "forward",
            Method::Nhgd => "nhgd",
            Method::Stocbio => "stocbio",
            Method::Amigo => "amigo",
            Method::Soba => "soba",
        }
    }

    /// Whether the method differentiates through an inner trajectory (rather than implicitly
    /// at the inner solution).
    pub fn is_trajectory(self) -> bool {
        matches!(self, Method::Unroll | Method::Forward)
    }

    /// Whether the method estimates from mini-batches ([`stochastic`]).
    pub fn is_stochastic(self) -> bool {
        Method::STOCHASTIC.contains(&self)
    }
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let all = || Method::ALL.into_iter().chain(Method::STOCHASTIC);
        all().find(|m| m.name() == s).ok_or_else(|| {
            let names: Vec<_> = all().map(|m| m.name()).collect();
            Error::option(
                "--method",
                format!("unknown method '{s}' (use {})", names.join(", ")),
            )
        })
    }
}

/// Options of [`compute`]. [`Options::new`] gives defaults for which `exact` and `cg` are
/// accurate to about 1e-6 relative on well-conditioned problems.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub method: Method,
    pub inner: InnerOptions,
    /// Relative residual tolerance of CG, `‖Hq − a‖ ≤ tol ‖a‖`.
    pub linear_tol: f64,
    /// Iterations of the linear solver: CG's maximum, Neumann's K terms, fixed-point's K steps.
    /// `None`: 10 000 for CG, 100 for the others.
    pub linear_iters: Option<usize>,
    /// Step η of `neumann`, `fixed-point`, `unroll` and `forward`. `None`: `1/L̂` with `L̂` a
    /// power-iteration estimate of the largest curvature (see [`default_step`]).
    pub step: Option<f64>,
    /// T, the inner gradient steps that `unroll` and `forward` differentiate through.
    pub unroll_steps: usize,
    /// K: `unroll` differentiates through the last K steps only.
    pub truncate: Option<usize>,
}

impl Options {
    /// Defaults for `method` in the given precision.
    pub fn new(method: Method, precision: Precision) -> Self {
        Options {
            method,
            inner: InnerOptions::default_for(precision),
            linear_tol: match precision {
                Precision::F64 => 1e-10,
                Precision::F32 => 1e-5,
            },
            linear_iters: None,
            step: None,
            unroll_steps: 100,
            truncate: None,
        }
    }

    fn linear_iters_or_default(&self) -> usize {
        self.linear_iters.unwrap_or(match self.method {
            Method::Cg => 10_000,
            _ => 100,
        })
    }

    fn validate(&self) -> Result<()> {
        if !(self.linear_tol >= 0.0 && self.linear_tol.is_finite()) {
            return Err(Error::option(
                "--linear-tol",
                format!("must be a finite number ≥ 0, got {}", self.linear_tol),
            ));
        }
        if let Some(step) = self.step {
            if !(step > 0.0 && step.is_finite()) {
                return Err(Error::option("--step", format!("must be > 0, got {step}")));
            }
        }
        if self.method.is_trajectory() && self.unroll_steps == 0 {
            return Err(Error::option("--unroll-steps", "must be at least 1"));
        }
        if self.truncate == Some(0) {
            return Err(Error::option("--truncate", "must be at least 1"));
        }
        Ok(())
    }
}

/// A hypergradient with its diagnostics (SPEC §4, §6), for either family of problems: `M`
/// is the family's method type ([`Method`] here, `l1::L1Method` for the ℓ1 problems) and `X`
/// what the family adds (nothing for the smooth problems; the support for the ℓ1 problems),
/// serialised alongside the common fields.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Estimate<M: MethodName, X = ()> {
    #[serde(serialize_with = "serialize_method")]
    pub method: M,
    pub theta: Vec<f64>,
    /// `f(ŵ)`.
    pub outer_loss: f64,
    /// `h ≈ ∇F(θ)`, length p.
    pub hypergradient: Vec<f64>,
    /// `‖∇_w g(ŵ)‖` at the inner point used (the duality gap for the ℓ1 problems).
    pub inner_grad_norm: f64,
    /// `‖H(ŵ)q̂ − ∇_w f(ŵ)‖` where a `q̂` exists.
    pub residual_norm: Option<f64>,
    /// What refinement of that solve did (f32; `null`s where none ran): [`refine`].
    #[serde(flatten)]
    pub refinement: refine::RefinementReport,
    /// Upper bound on `‖h − ∇F(θ)‖`, or `None` where no valid bound is known.
    pub error_bound: Option<f64>,
    pub inner_iters: usize,
    pub linear_iters: usize,
    pub inner_converged: bool,
    pub seconds: f64,
    /// What the family adds.
    #[serde(flatten)]
    pub extra: X,
    /// The inner point `ŵ` (`c×d`, class-major for the smooth problems).
    #[serde(skip)]
    pub w: Vec<f64>,
}

/// A smooth problem's hypergradient.
pub type Hypergradient = Estimate<Method>;

/// A method type's name as the command line spells it.
pub trait MethodName: Copy {
    fn name(self) -> &'static str;
}

impl MethodName for Method {
    fn name(self) -> &'static str {
        Method::name(self)
    }
}

fn serialize_method<M: MethodName, S: serde::Serializer>(
    m: &M,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(m.name())
}

/// Power-iteration steps for the step-size estimate.
const POWER_ITERS: usize = 50;

/// `η = 1/L̂`, with `L̂` the largest eigenvalue of the problem's curvature majorant
/// (`M ⪰ H(w)` for all `w`) estimated by power iteration, inflated by 5% because power
/// iteration approaches it from below, and capped by the always-valid (looser) bound.
/// Any `η < 2/λ_max(H)` makes the Neumann series, Richardson iteration and gradient steps
/// converge; `1/L̂` keeps `I − ηH` positive semi-definite.
pub fn default_step<P: InnerProblem>(problem: &P) -> Result<f64> {
    step_for(problem, &problem.majorant()?)
}

/// The default step of the iterations that run at a fixed inner point `w` (`neumann`,
/// `fixed-point`): [`default_step`] for the problems with a majorant, else `1/L̂` with `L̂`
/// the largest eigenvalue of `H(w)` itself ([`InnerProblem::step_curvature`]), which is what
/// their convergence (`η < 2/λ_max(H(w))`) depends on.
pub fn default_step_at<P: InnerProblem>(problem: &P, w: &Buf<P>) -> Result<f64> {
    step_for(problem, &problem.step_curvature(w)?)
}

/// `1/L̂` from power iteration on `curvature`, inflated by 5% and capped by the problem's
/// smoothness bound.
fn step_for<P: InnerProblem>(problem: &P, curvature: &P::Hessian) -> Result<f64> {
    let estimate = linear::largest_eigenvalue(
        problem.backend(),
        |v, out| problem.hvp(curvature, v, out),
        problem.inner_dim(),
        POWER_ITERS,
    )?;
    let lipschitz = (1.05 * estimate).min(problem.smoothness_bound());
    if !(lipschitz > 0.0 && lipschitz.is_finite()) {
        return Err(Error::Numerical(format!(
            "the curvature estimate {lipschitz} is not a positive number"
        )));
    }
    Ok(1.0 / lipschitz)
}

/// Computes the hypergradient of `problem` at its current θ with the method and options in
/// `opts`. `w0` is the start of the inner solver (implicit methods) or the start of the
/// differentiated trajectory (`unroll`, `forward`); the problem's
/// [`InnerProblem::initial_point`] (zeros for the linear models) if `None`.
pub fn compute<P: Bilevel>(
    problem: &P,
    opts: &Options,
    w0: Option<&Buf<P>>,
) -> Result<Hypergradient> {
    opts.validate()?;
    let started = Instant::now();
    let b = problem.backend();
    let iters = opts.linear_iters_or_default();
    let mut result = match opts.method {
        Method::Exact | Method::Cg | Method::Neumann | Method::FixedPoint => {
            let inner = solver::solve(problem, w0, &opts.inner)?;
            let step = || {
                opts.step
                    .map_or_else(|| default_step_at(problem, &inner.w), Ok)
            };
            match opts.method {
                Method::Exact => {
                    implicit::hypergradient(problem, opts.method, &inner, exact::solve)?
                }
                Method::Cg => implicit::hypergradient(problem, opts.method, &inner, |p, h, a| {
                    cg::solve(p, h, a, opts.linear_tol, iters)
                })?,
                Method::Neumann => {
                    let eta = step()?;
                    implicit::hypergradient(problem, opts.method, &inner, |p, h, a| {
                        neumann::solve(p, h, a, eta, iters)
                    })?
                }
                _ => {
                    let eta = step()?;
                    implicit::hypergradient(problem, opts.method, &inner, |p, h, a| {
                        fixed_point::solve(p, h, a, eta, iters, None)
                    })?
                }
            }
        }
        m @ (Method::Nhgd | Method::Stocbio | Method::Amigo | Method::Soba) => {
            return Err(Error::option(
                "--method",
                format!(
                    "{} draws mini-batches and needs the training rows: use stochastic::StochasticEstimator",
                    m.name()
                ),
            ))
        }
        Method::Unroll | Method::Forward => {
            let eta = opts.step.map_or_else(|| default_step(problem), Ok)?;
            let start = match w0 {
                Some(w) => linear::duplicate(b, w)?,
                None => problem.initial_point()?,
            };
            let threshold = opts.inner.tol * solver::gradient_scale(problem)?;
            if opts.method == Method::Unroll {
                unroll::hypergradient(problem, &start, eta, opts, threshold)?
            } else {
                forward::hypergradient(problem, &start, eta, opts, threshold)?
            }
        }
    };
    result.seconds = started.elapsed().as_secs_f64();
    Ok(result)
}
