//! Sparse model selection (SPEC §2 `lasso`, `enet`, `wlasso`): ℓ1-penalised least squares
//! whose penalties are chosen by minimising a held-out or cross-validation error.
//!
//! * [`design`]: dense (column-major) or sparse (CSC) design matrices;
//! * [`problem`]: the problems, their penalty `λ = exp(θ)` and the held-out MSE;
//! * [`solver`]: proximal coordinate descent and ISTA/FISTA with duality-gap stopping;
//! * [`hypergrad`]: `forward`, `implicit`, `implicit-forward` hypergradients;
//! * [`cv`]: K-fold cross-validation and the warm-started criterion evaluator;
//! * [`mod@search`]: outer search (HOAG-style line search, Adam, grid, random);
//! * [`device`]: `implicit` and `forward` (ISTA/FISTA) on a [`crate::backend::Backend`]
//!   (CPU f32/f64 or CUDA), with the prox kernels of `cuda/prox.cu`.
//!
//! Everything but [`device`] runs on the host in f64.

// Index loops over several arrays at once mirror the equations they implement.
#![allow(clippy::needless_range_loop)]

pub mod cv;
pub mod design;
pub mod device;
pub mod hypergrad;
pub mod problem;
pub mod search;
pub mod solver;

pub use cv::{kfold, Criterion, Evaluation, Evaluator, FoldValue, ValueEvaluation};
pub use design::Design;
pub use hypergrad::{
    hypergradient, hypergradient_on, hypergradient_warm, L1Hypergradient, L1Method, L1Options,
};
pub use problem::{L1Data, L1Kind, L1Problem, Penalty};
pub use search::{
    criterion_error_bound, next_to_refine, search, OuterOpt, Refinement, SearchOptions,
    SearchResult, TraceEntry, EVALUATES_CRITERION, EVALUATES_GRADIENT, SCREEN_TOL,
};
pub use solver::{duality_gap, solve, L1Solver, Solution, SolveOptions};
