//! Bilevel problems: what the estimators need to know about `g`, `f` and their derivatives.
//!
//! A problem states its math through the [`Backend`] primitives; the estimators only ever
//! see the traits below. SPEC §1 fixes the notation: `H = ∇²_ww g`, `B = ∇²_wθ g` (P×p),
//! `∇F(θ) = −Bᵀq*` with `H q* = ∇_w f`.

pub mod distill;
pub mod distill_mlp;
pub mod glm;
pub mod mlp;
pub mod quadratic;

pub use distill::DistillBilevel;
pub use distill_mlp::MlpDistillBilevel;
pub use glm::{GlmBilevel, HyperLayout, ProblemKind, TrainView};
pub use mlp::MlpBilevel;
pub use quadratic::QuadraticBilevel;

use crate::backend::Backend;
use crate::error::{Error, Result};

/// A backend buffer of problem `P`.
pub type Buf<P> = <<P as InnerProblem>::B as Backend>::Buf;

/// The inner problem `min_w g(w, θ)` at the current θ: a smooth function, μ-strongly convex
/// for the linear models (a network's is not convex: see [`mlp`]).
pub trait InnerProblem {
    /// The backend holding the data.
    type B: Backend;
    /// The state a Hessian-vector product needs at a point (computed once, applied many times).
    type Hessian;

    fn backend(&self) -> &Self::B;
    /// `P`, the number of inner variables.
    fn inner_dim(&self) -> usize;
    /// `g(w)`, and `∇_w g(w)` into `grad` when given.
    fn inner_value_grad(&self, w: &Buf<Self>, grad: Option<&mut Buf<Self>>) -> Result<f64>;
    /// The Hessian state at `w`.
    fn hessian(&self, w: &Buf<Self>) -> Result<Self::Hessian>;
    /// The Hessian of a quadratic majorant: `M ⪰ H(w)` for every `w` (for step sizes).
    /// A problem without one (a network) says so with an error that names `--step`.
    fn majorant(&self) -> Result<Self::Hessian>;
    /// The curvature whose largest eigenvalue sets the default step of the iterations that
    /// run at a fixed point `w` (Neumann, fixed-point: they converge for `η < 2/λ_max(H(w))`):
    /// the majorant where there is one, else the Hessian at `w` itself.
    fn step_curvature(&self, _w: &Buf<Self>) -> Result<Self::Hessian> {
        self.majorant()
    }
    /// `out_b ← H v_b` for each vector of the batch `v` (`len(v)` a multiple of `P`).
    fn hvp(&self, h: &Self::Hessian, v: &Buf<Self>, out: &mut Buf<Self>) -> Result<()>;
    /// A lower bound `μ > 0` on the strong convexity of `g` (valid for every `w`).
    fn strong_convexity(&self) -> f64;
    /// An upper bound on `sup_w ‖H(w)‖₂` (valid, possibly loose); `f64::INFINITY` where none
    /// is known (a network).
    fn smoothness_bound(&self) -> f64;
    /// Where the inner solvers start when no start is given, and where the scale of their
    /// relative stopping rule is measured: the origin for the linear models, the seeded
    /// initialisation `w₀` for a network (whose origin is a saddle point).
    fn initial_point(&self) -> Result<Buf<Self>> {
        self.backend().zeros(self.inner_dim())
    }
    /// The training rows `g` averages its loss over, which a mini-batch solver draws from
    /// (`--inner-solver sgd`); 0 for a problem that is not an average over rows.
    fn train_rows(&self) -> usize {
        0
    }
    /// One mini-batch SGD step on `g`: `w ← w − η ((1/b) Σ_{i∈rows} s_i ∇ℓ_i(w) + R w)`, the
    /// unbiased estimate of `∇g(w)` from the `b` rows (uploaded for [`Self::train_rows`]).
    fn sgd_step(
        &self,
        _w: &mut Buf<Self>,
        _rows: &<Self::B as Backend>::Rows,
        _step: f64,
    ) -> Result<()> {
        Err(not_made_of_rows())
    }
    /// The mini-batch gradient `out ← (1/b) Σ_{i∈rows} s_i ∇ℓ_i(w) + R w` that
    /// [`Self::sgd_step`] steps along (the unbiased estimate of `∇g(w)`), for a solver that
    /// scales it entry by entry (`--inner-solver adam`).
    fn batch_gradient(
        &self,
        _w: &Buf<Self>,
        _rows: &<Self::B as Backend>::Rows,
        _out: &mut Buf<Self>,
    ) -> Result<()> {
        Err(not_made_of_rows())
    }
}

/// The error of a mini-batch solver on a problem that is not an average over rows.
pub(crate) fn not_made_of_rows() -> Error {
    Error::option(
        "--inner-solver",
        "sgd and adam draw mini-batches of training rows, and this problem's inner loss is not an average over rows: use newton, lbfgs, gd or agd",
    )
}

/// The Lipschitz constants and norms that the a posteriori bound of SPEC §4 needs, at `ŵ`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct BoundConstants {
    /// Strong convexity of `g`: `H(w) ⪰ μ I` for every `w`.
    pub mu: f64,
    /// `‖H(w) − H(w')‖ ≤ L_H ‖w − w'‖`.
    pub l_h: f64,
    /// `‖B(w) − B(w')‖ ≤ L_B ‖w − w'‖`.
    pub l_b: f64,
    /// `‖∇f(w) − ∇f(w')‖ ≤ L_f ‖w − w'‖`.
    pub l_f: f64,
    /// An upper bound on `‖B(ŵ)‖₂`.
    pub b_norm: f64,
}

/// A smooth bilevel problem: the inner problem plus the outer loss and the cross derivative.
pub trait Bilevel: InnerProblem {
    /// `p`, the number of hyper-parameters.
    fn hyper_dim(&self) -> usize;
    /// The current θ.
    fn theta(&self) -> &[f64];
    /// Set θ (everything that depends on it is recomputed here, once).
    fn set_theta(&mut self, theta: &[f64]) -> Result<()>;
    /// `f(w)`, and `∇_w f(w)` into `grad` when given.
    fn outer_value_grad(&self, w: &Buf<Self>, grad: Option<&mut Buf<Self>>) -> Result<f64>;
    /// `B(w)ᵀ q` (length p), so that `h = −B(ŵ)ᵀ q̂`.
    fn cross_t(&self, w: &Buf<Self>, q: &Buf<Self>) -> Result<Vec<f64>>;
    /// `batch ← batch + α B(w)`, the batch holding the p columns of B as vectors of length P.
    fn cross_add(&self, w: &Buf<Self>, alpha: f64, batch: &mut Buf<Self>) -> Result<()>;
    /// The constants of SPEC §4 at `w`, or `None` where no valid constants are known (a
    /// network): then every `error_bound` is null.
    fn bound_constants(&self, w: &Buf<Self>) -> Result<Option<BoundConstants>>;
}
