//! # hypergrad
//!
//! Hypergradients and bilevel optimisation: implicit differentiation (exact, CG, Neumann,
//! fixed-point), reverse- and forward-mode differentiation through inner solvers, each with
//! a computable a posteriori error bound, on a CPU reference backend (f32/f64) and — with the
//! CUDA backend — on NVIDIA GPUs.
//!
//! The math is fixed by `SPEC.md` (shared with the team); module map:
//!
//! * [`api`]: the entry layer the command line and the Python package call (typed
//!   requests, one place where the device is chosen, `grad` and `run`);
//! * [`backend`]: the [`backend::Backend`] trait and the CPU backend;
//! * [`data`]: LIBSVM/CSV readers, bundled datasets, synthetic generators, splits;
//! * [`problem`]: the bilevel problems (`ridge`, `logreg`, `softmax`, `hyperclean`, and
//!   Ehrhardt & Roberts' `quadratic`);
//! * [`solver`]: inner solvers (GD, AGD, Newton-CG) and matrix-free linear algebra;
//! * [`hypergrad`]: the hypergradient estimators and error bounds;
//! * [`bound_curves`]: true error against the a posteriori and a priori bounds over CG
//!   iterations (`hypergrad bench bounds`);
//! * [`l1`]: sparse model selection (`lasso`, `enet`, `wlasso`): prox solvers, hypergradients, outer search;
//! * [`memory`]: memory planned before it is allocated, and allocations that fail as errors;
//! * [`cli`]: the `hypergrad` command line.

// `!(x > 0.0)` is the NaN-rejecting test we mean wherever it appears.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod api;
pub mod backend;
pub mod bench;
pub mod bound_curves;
pub mod cli;
pub mod data;
pub mod error;
pub mod hypergrad;
pub mod l1;
pub mod linalg;
pub mod memory;
pub mod outer;
pub mod plot;
pub mod problem;
pub mod solver;

pub use error::{Error, Result};
