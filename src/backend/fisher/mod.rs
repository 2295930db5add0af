//! The dense curvature inverses of NHGD (SPEC §5), an op family beside the core [`Backend`]:
//! the trait [`FisherOps`] here, its CPU twin in [`cpu`] (factorisations in `f64` through
//! [`crate::linalg`]), its CUDA implementation in [`cuda`] (cuSOLVER `potrf`, cuBLAS `trsm`
//! and GEMMs, the diagonal and damping kernels of `cuda/fisher.cu`; parity in `tests/parity_fisher.rs`).
//!
//! Every operation stays on the backend, factorisations included, so that NHGD's
//! `Ĥ⁻¹ a` makes no host round trip: a matrix that is not positive definite is reported at
//! once on the CPU and, on a device, from the next synchronising call.

pub mod cpu;
pub mod cuda;

use super::Backend;
use crate::error::Result;

/// Diagonal shifts, Cholesky solves, K-FAC damping and Woodbury updates of p×p row-major
/// matrices.
pub trait FisherOps: Backend {
    /// `A[i, i] ← diag_i` (or `1/diag_i` when `invert`) for the `p = len(diag)` diagonal
    /// entries of a p×p matrix; the other entries are left as they are.
    fn set_diagonal(&self, a: &mut Self::Buf, diag: &Self::Buf, invert: bool) -> Result<()>;

    /// `A[i, i] ← A[i, i] + diag_i` for the `p = len(diag)` diagonal entries of a p×p matrix:
    /// `F + R` for a diagonal `R`, without touching the rest of `F`.
    fn add_diagonal(&self, a: &mut Self::Buf, diag: &Self::Buf) -> Result<()>;

    /// The largest dimension at which this backend solves a dense SPD system faster by
    /// [`FisherOps::spd_solve`] than by matrix-free CG (used by NHGD's accumulated Fisher).
    /// 0 on the CPU by default: CG took half the time of faer's Cholesky on digits (P = 640)
    /// and under half at the MNIST shape (P = 7,850), with the same result (BENCHMARKS.md);
    /// `HYPERGRAD_CPU_DIRECT_SOLVE_MAX_DIM` or
    /// `CpuBackend::with_direct_solve_max_dim` opts in. On CUDA, cuSOLVER's `potrf` avoids
    /// CG's host round trip per iteration.
    fn direct_solve_max_dim(&self) -> usize {
        0
    }

    /// Solves `A X = B` for a symmetric positive definite `A` (dim×dim) by Cholesky, in place:
    /// `b` holds `nrhs` right-hand sides as rows (nrhs×dim, row-major) and becomes the
    /// solutions; `a` is overwritten by the factorisation's workspace. One factorisation per
    /// call, on the backend (cuSOLVER on CUDA), so that a d×d solve costs d³/3 flops where
    /// it runs rather than a round trip through the host. A matrix that is not positive
    /// definite is a numerical error: at once on the CPU; on a device, from the next
    /// synchronising call (a download, a reduction), so that the solve makes no host round
    /// trip.
    fn spd_solve(&self, a: &mut Self::Buf, b: &mut Self::Buf, nrhs: usize) -> Result<()>;

    /// K-FAC's factored Tikhonov damping, in place on the factors `XX` (d×d) and `GG` (c×c):
    /// with λ̄ the mean of `lambda` (one λ per class) and π = √(λ̄ (tr XX / d) / (tr GG / c))
    /// (√λ̄ when either trace is zero), `XX ← XX + πI` and `GG ← GG + diag(λ)/π`, so that the
    /// cross term of (GG + Λ/π) ⊗ (XX + πI) is Λ ⊗ I = R exactly. On the backend (traces and
    /// π included), so that K-FAC's solve makes no host round trip.
    fn kfac_damp(&self, xx: &mut Self::Buf, gg: &mut Self::Buf, lambda: &Self::Buf) -> Result<()>;

    /// Rank-m Woodbury update of a symmetric positive definite inverse, in place:
    /// `A ← (A⁻¹ + α UᵀU)⁻¹ = A − A Uᵀ (I/α + U A Uᵀ)⁻¹ U A` for `A` (p×p), `U` (m×p), `α > 0`.
    fn woodbury_update(&self, a: &mut Self::Buf, u: &Self::Buf, m: usize, alpha: f64)
        -> Result<()>;
}
