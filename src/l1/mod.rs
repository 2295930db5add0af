//! Sparse model selection (SPEC §2 `lasso`, `enet`, `wlasso`): ℓ1-penalised least squares
//! whose penalties are chosen by minimising a held-out or cross-validation error.
//!
//! * [`design`]: dense (column-major) or sparse (CSC) design matrices;
//! * [`problem`]: the problems, their penalty `λ = exp(θ)` and the held-out MSE;
//! * [`solver`]: proximal coordinate descent and ISTA/FISTA with duality-gap stopping;
//! * [`hypergrad`]: `forward`, `implicit`, `implicit-forward` hypergradients;
//! * [`cv`]: K-fold cross-validation and the warm-started criterion evaluator;
//! * [`mod@search`]: outer search (HOAG-style line search, Adam, grid, random);
//! * [`resident`]: a training set held by a backend, which the solvers and hypergradients
//!   are written over, once for every backend ([`crate::backend::ProxOps`]: the CPU in f32/f64
//!   with sparse designs kept sparse, CUDA in f32 with the design densified on the device).
//!
//! The plain entry points ([`solve`], [`hypergradient`], [`Evaluator::new`], [`search()`])
//! run on the CPU in f64; the `_on`/`_resident` forms take a backend.

// Index loops over several arrays at once mirror the equations they implement.
#![allow(clippy::needless_range_loop)]

pub mod cv;
pub mod design;
pub mod hypergrad;
pub mod problem;
pub mod resident;
pub mod search;
pub mod solver;

pub use cv::{kfold, Criterion, Evaluation, Evaluator, FoldValue, ValueEvaluation};
pub use design::Design;
pub use hypergrad::{
    hypergradient, hypergradient_on, hypergradient_resident, hypergradient_warm, L1Hypergradient,
    L1Method, L1Options,
};
pub use problem::{L1Data, L1Kind, L1Problem, Penalty};
pub use resident::Resident;
pub use search::{
    criterion_error_bound, next_to_refine, search, search_on, OuterOpt, Refinement, SearchOptions,
    SearchResult, TraceEntry, EVALUATES_CRITERION, EVALUATES_GRADIENT, SCREEN_TOL,
};
pub use solver::{duality_gap, solve, solve_on, L1Solver, Solution, SolveOptions};
