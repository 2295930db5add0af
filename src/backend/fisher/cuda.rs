//! [`FisherOps`] for [`CudaBackend`]: Cholesky by cuSOLVER `potrf`, triangular solves by
//! cuBLAS `trsm`, the diagonal and damping kernels of `cuda/fisher.cu`. A pivot that is not
//! positive goes to the device's health flag and is reported by the next synchronising call,
//! so no factorisation waits for the host.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::driver::{CudaSlice, LaunchConfig};

use super::FisherOps;
use crate::backend::cuda::{driver_error, grid_1d, int, Arg, CudaBackend};
use crate::backend::shape::{check_len, square_side};
use crate::backend::Backend;
use crate::error::{Error, Result};

impl CudaBackend {
    /// `a = L Lᵀ` in place for a symmetric n×n `a` (row-major = column-major), L in the
    /// column-major lower triangle (cuSOLVER `potrf`). A matrix that is not positive definite
    /// is kept in the health flag for the next synchronising call (no host round trip).
    fn cholesky_lower(&self, a: &mut CudaSlice<f32>, n: i32) -> Result<()> {
        use cudarc::cusolver::sys::{
            cublasFillMode_t, cusolverDnSpotrf, cusolverDnSpotrf_bufferSize,
        };
        let solver = self.solver()?;
        let uplo = cublasFillMode_t::CUBLAS_FILL_MODE_LOWER;
        let a_ptr = self.ptr(a) as *mut f32;
        let mut lwork = 0;
        // SAFETY: the callers checked that a is n×n; the handle is bound to this stream.
        unsafe { cusolverDnSpotrf_bufferSize(solver.cu(), uplo, n, a_ptr, n, &mut lwork) }
            .result()
            .map_err(driver_error)?;
        // SAFETY: the workspace is written by cuSOLVER before it is read.
        let work =
            unsafe { self.stream.alloc::<f32>(lwork.max(1) as usize) }.map_err(driver_error)?;
        // info > 0: the leading minor of that order is not positive definite.
        let info = self.stream.alloc_zeros::<i32>(1).map_err(driver_error)?;
        // SAFETY: buffers sized above; queued on this backend's stream.
        unsafe {
            cusolverDnSpotrf(
                solver.cu(),
                uplo,
                n,
                a_ptr,
                n,
                self.ptr(&work) as *mut f32,
                lwork,
                self.ptr(&info) as *mut i32,
            )
        }
        .result()
        .map_err(driver_error)?;
        let health = self
            .health
            .lock()
            .map_err(|_| Error::Backend("the device health flag was poisoned".into()))?;
        self.launch(
            "hg_keep_failure",
            LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (1, 1, 1),
                shared_mem_bytes: 0,
            },
            &[Arg::Ptr(self.ptr(&info)), Arg::Ptr(self.ptr(&*health))],
        )
    }

    /// `B ← L⁻¹ B` for the column-major lower-triangular n×n `l` (from [`Self::cholesky_lower`])
    /// and the column-major n×ncols `b` (ld n), by one cuBLAS `trsm`.
    fn trsm_lower_left(
        &self,
        l: &CudaSlice<f32>,
        n: i32,
        b: &mut CudaSlice<f32>,
        ncols: i32,
    ) -> Result<()> {
        use cudarc::cublas::sys::{
            cublasDiagType_t, cublasFillMode_t, cublasSideMode_t, cublasStrsm_v2,
        };
        check_len("trsm L", l.len(), (n as usize) * (n as usize))?;
        check_len("trsm B", b.len(), (n as usize) * (ncols as usize))?;
        let one = 1.0f32;
        // SAFETY: shapes checked above; alpha is a host scalar (the handle's default pointer
        // mode); queued on this backend's stream.
        unsafe {
            cublasStrsm_v2(
                *self.blas.handle(),
                cublasSideMode_t::CUBLAS_SIDE_LEFT,
                cublasFillMode_t::CUBLAS_FILL_MODE_LOWER,
                cublasOperation_t::CUBLAS_OP_N,
                cublasDiagType_t::CUBLAS_DIAG_NON_UNIT,
                n,
                ncols,
                &one,
                self.ptr(l) as *const f32,
                n,
                self.ptr(b) as *mut f32,
                n,
            )
        }
        .result()
        .map_err(driver_error)
    }

    /// `hg_set_diag(a, diag, p, mode)`: a is p×p, diag has p entries (checked by the callers);
    /// mode 0 sets, 1 sets the reciprocals, 2 adds.
    fn diagonal_kernel(
        &self,
        a: &mut CudaSlice<f32>,
        diag: &CudaSlice<f32>,
        mode: i32,
    ) -> Result<()> {
        let p = diag.len();
        self.launch(
            "hg_set_diag",
            grid_1d(p),
            &[
                Arg::Ptr(self.ptr(a)),
                Arg::Ptr(self.ptr(diag)),
                Arg::I32(int("diagonal", p)?),
                Arg::I32(mode),
            ],
        )
    }
}

impl FisherOps for CudaBackend {
    fn set_diagonal(
        &self,
        a: &mut CudaSlice<f32>,
        diag: &CudaSlice<f32>,
        invert: bool,
    ) -> Result<()> {
        let p = diag.len();
        check_len("diagonal's matrix", a.len(), p * p)?;
        self.diagonal_kernel(a, diag, if invert { 1 } else { 0 })
    }

    fn add_diagonal(&self, a: &mut CudaSlice<f32>, diag: &CudaSlice<f32>) -> Result<()> {
        check_len("diagonal's matrix", a.len(), diag.len() * diag.len())?;
        self.diagonal_kernel(a, diag, 2)
    }

    fn direct_solve_max_dim(&self) -> usize {
        // A copy of the P×P matrix is factorised: 1 GiB of f32 at this size.
        16_384
    }

    fn spd_solve(&self, a: &mut CudaSlice<f32>, b: &mut CudaSlice<f32>, nrhs: usize) -> Result<()> {
        use cudarc::cusolver::sys::{cublasFillMode_t, cusolverDnSpotrs};
        let dim = square_side("spd_solve A", a.len())?;
        check_len("spd_solve right-hand sides", b.len(), nrhs * dim)?;
        if dim == 0 || nrhs == 0 {
            return Ok(());
        }
        let n = int("spd_solve dimension", dim)?;
        let k = int("spd_solve right-hand sides", nrhs)?;
        // The rows of the row-major nrhs×dim B are the columns of a column-major dim×nrhs
        // matrix (ldb = dim).
        self.cholesky_lower(a, n)?;
        let solver = self.solver()?;
        // potrs's info reports argument errors only, which the checks above exclude.
        let info = self.stream.alloc_zeros::<i32>(1).map_err(driver_error)?;
        let (a_ptr, b_ptr) = (self.ptr(a) as *mut f32, self.ptr(b) as *mut f32);
        let uplo = cublasFillMode_t::CUBLAS_FILL_MODE_LOWER;
        // SAFETY: a is dim×dim and b nrhs×dim (checked); queued on this backend's stream.
        unsafe {
            cusolverDnSpotrs(
                solver.cu(),
                uplo,
                n,
                k,
                a_ptr,
                n,
                b_ptr,
                n,
                self.ptr(&info) as *mut i32,
            )
        }
        .result()
        .map_err(driver_error)
    }

    fn kfac_damp(
        &self,
        xx: &mut CudaSlice<f32>,
        gg: &mut CudaSlice<f32>,
        lambda: &CudaSlice<f32>,
    ) -> Result<()> {
        let c = lambda.len();
        let d = square_side("K-FAC input factor", xx.len())?;
        check_len("K-FAC class factor", gg.len(), c * c)?;
        if c == 0 {
            return Err(Error::Dimension(
                "K-FAC damping needs at least one class".into(),
            ));
        }
        self.launch(
            "hg_kfac_damp",
            LaunchConfig {
                grid_dim: (1, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            },
            &[
                Arg::Ptr(self.ptr(xx)),
                Arg::I32(int("K-FAC input factor", d)?),
                Arg::Ptr(self.ptr(gg)),
                Arg::I32(int("classes", c)?),
                Arg::Ptr(self.ptr(lambda)),
            ],
        )
    }

    fn woodbury_update(
        &self,
        a: &mut CudaSlice<f32>,
        u: &CudaSlice<f32>,
        m: usize,
        alpha: f64,
    ) -> Result<()> {
        if !(alpha > 0.0 && alpha.is_finite()) {
            return Err(Error::Numerical(format!(
                "Woodbury update needs α > 0, got {alpha}"
            )));
        }
        if m == 0 {
            return Err(Error::Dimension(
                "a Woodbury update needs a rank of at least 1".into(),
            ));
        }
        let p = square_side("Woodbury A", a.len())?;
        check_len("Woodbury U", u.len(), m * p)?;
        // AUᵀ (p×m) = (UA)ᵀ since A is symmetric; S = U·AUᵀ + I/α = L Lᵀ (m×m, cuSOLVER);
        // Z = AUᵀ L⁻ᵀ (p×m, one cuBLAS trsm in place); A ← A − Z Zᵀ, as the CPU backend.
        // Row-major p×m AUᵀ is column-major m×p UA, so the trsm solves L Y = UA for Y = Zᵀ.
        let mut z = self.alloc_f32(p * m)?;
        self.gemm(false, true, (p, m, p), 1.0, a, u, 0.0, &mut z)?;
        let mut s = self.alloc_f32(m * m)?;
        self.gemm(false, false, (m, m, p), 1.0, u, &z, 0.0, &mut s)?;
        self.launch(
            "hg_add_diag",
            grid_1d(m),
            &[
                Arg::Ptr(self.ptr(&s)),
                Arg::I32(m as i32),
                Arg::F32((1.0 / alpha) as f32),
            ],
        )?;
        let rank = int("Woodbury rank", m)?;
        // A failed factorisation goes to the health flag (no host round trip).
        self.cholesky_lower(&mut s, rank)?;
        self.trsm_lower_left(&s, rank, &mut z, int("Woodbury dimension", p)?)?;
        self.gemm(false, true, (p, p, m), -1.0, &z, &z, 1.0, a)
    }
}
