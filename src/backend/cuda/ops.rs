//! [`Backend`] for [`CudaBackend`]: each primitive as a kernel launch or a cuBLAS call. The
//! kernels' ABI is documented at the top of each `cuda/*.cu` file; every launch below passes
//! its arguments in that order.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};
use ndarray::Array2;
use std::sync::Arc;

use super::{
    driver_error, grid_1d, int, Arg, CudaBackend, CudaDesign, CudaRows, DesignData, RowPath,
    Storage, NULL,
};
use crate::backend::shape::{check_gemm, check_len, per_part, square_side};
use crate::backend::{Backend, Curvature, Groups, Loss, Precision};
use crate::error::{Error, Result};

/// Threads of a `glm_rows` block: 8 warps, one row each per tile.
const ROWS_BLOCK: u32 = 256;
/// Rows per tile of `glm_rows`.
const ROWS_TILE: usize = 8;
/// The register-array widths `glm_rows` is instantiated for.
const KMAX_VARIANTS: [usize; 6] = [1, 2, 4, 8, 16, 32];
/// Bytes of X a block of the GEMM path gathers at a time.
const GEMM_BLOCK_BYTES: usize = 64 << 20;

/// `glm_rows` modes (cuda/glm_rows.cu).
#[derive(Clone, Copy)]
enum Mode {
    LossGrad = 0,
    Hvp = 1,
    Curvature = 2,
    Factors = 3,
    Pairing = 4,
}

fn loss_code(loss: Loss) -> i32 {
    match loss {
        Loss::Squared => 0,
        Loss::Logistic => 1,
        Loss::Softmax { .. } => 2,
    }
}

fn groups_code(groups: Groups) -> (i32, i32) {
    match groups {
        Groups::Shared => (0, 1),
        Groups::Each => (1, 1),
        Groups::Blocks { block } => (2, block.max(1) as i32),
    }
}

/// The narrowest `glm_rows` variant that holds k values per row.
fn kmax_for(k: usize) -> Result<usize> {
    KMAX_VARIANTS
        .into_iter()
        .find(|&km| km >= k)
        .ok_or_else(|| Error::Backend(format!("glm_rows: k = {k} exceeds 32")))
}

/// Dynamic shared memory of a `glm_rows` launch: the tile's coefficients, plus the k×d
/// accumulator when it accumulates.
fn fused_shared_bytes(k: usize, d: usize, accumulate: bool) -> Result<usize> {
    Ok(4 * (ROWS_TILE * kmax_for(k)? + if accumulate { k * d } else { 0 }))
}

/// One call of the fused row kernel (see cuda/glm_rows.cu for the meaning of each field).
#[derive(Clone, Copy)]
struct RowsCall<'a> {
    x: &'a CudaDesign,
    /// Device address of the i32 row indices (positions → design rows), if any.
    rows: Option<u64>,
    n_rows: usize,
    /// `M` (k×d), at an offset into its buffer.
    m: Option<(&'a CudaSlice<f32>, usize)>,
    k: usize,
    c: usize,
    mode: Mode,
    loss: Loss,
    scale: f32,
    y: Option<&'a CudaSlice<f32>>,
    row_weight: Option<&'a CudaSlice<f32>>,
    row_scale: Option<&'a CudaSlice<f32>>,
    aux: Option<&'a CudaSlice<f32>>,
    z_in: Option<&'a CudaSlice<f32>>,
    u_out: Option<u64>,
    /// The accumulator, at an offset into its buffer (must be zeroed by the caller).
    acc_out: Option<u64>,
    row_out: Option<u64>,
    row_out2: Option<u64>,
    loss_out: Option<u64>,
}

impl<'a> RowsCall<'a> {
    fn new(x: &'a CudaDesign, mode: Mode, loss: Loss, k: usize) -> Self {
        RowsCall {
            x,
            rows: None,
            n_rows: x.n,
            m: None,
            k,
            c: loss.outputs(),
            mode,
            loss,
            scale: 1.0,
            y: None,
            row_weight: None,
            row_scale: None,
            aux: None,
            z_in: None,
            u_out: None,
            acc_out: None,
            row_out: None,
            row_out2: None,
            loss_out: None,
        }
    }
}

impl CudaBackend {
    pub(in crate::backend) fn launch(
        &self,
        name: &str,
        cfg: LaunchConfig,
        args: &[Arg],
    ) -> Result<()> {
        let function = self.kernels.get(name)?;
        let mut builder = self.stream.launch_builder(function);
        for arg in args {
            match arg {
                Arg::Ptr(p) => builder.arg(p),
                Arg::I32(v) => builder.arg(v),
                Arg::F32(v) => builder.arg(v),
            };
        }
        // SAFETY: every caller passes the arguments in the order and with the types of the
        // kernel's signature in cuda/*.cu, with buffer sizes checked against the sizes passed.
        unsafe { builder.launch(cfg) }
            .map(|_| ())
            .map_err(|e| Error::Backend(format!("launching {name}: {e}")))
    }

    /// Blocks of `ROWS_BLOCK` threads with `shared` bytes of dynamic shared memory that one
    /// multiprocessor holds at once: the driver's occupancy query, asked once per kernel and
    /// size (it is a pure function of them, and `glm_rows` launches every SGD step).
    fn resident_blocks(&self, name: &str, function: &CudaFunction, shared: usize) -> Result<u32> {
        let mut cache = self
            .resident
            .lock()
            .map_err(|_| Error::Backend("the occupancy cache was poisoned".into()))?;
        if let Some(&(_, blocks)) = cache
            .get(name)
            .and_then(|sizes| sizes.iter().find(|(bytes, _)| *bytes == shared))
        {
            return Ok(blocks);
        }
        let blocks = function
            .occupancy_max_active_blocks_per_multiprocessor(ROWS_BLOCK, shared, None)
            .map_err(driver_error)?
            .max(1);
        cache
            .entry(name.to_string())
            .or_default()
            .push((shared, blocks));
        Ok(blocks)
    }

    /// The design's device address and its storage's kernel suffix (`f32` or `bf16`).
    pub(in crate::backend) fn design_ptr(&self, x: &CudaDesign) -> (u64, &'static str) {
        match &x.data {
            DesignData::F32(buf) => (self.ptr(buf), "f32"),
            DesignData::Bf16(buf) => (self.ptr(buf), "bf16"),
        }
    }

    pub(in crate::backend) fn opt(&self, buf: Option<&CudaSlice<f32>>) -> Arg {
        buf.map_or(NULL, |b| Arg::Ptr(self.ptr(b)))
    }

    /// Launches `glm_rows` (fused: the accumulator lives in shared memory).
    fn glm_rows(&self, call: &RowsCall<'_>) -> Result<()> {
        let d = call.x.d;
        let kmax = kmax_for(call.k)?;
        let (x_ptr, storage) = self.design_ptr(call.x);
        let name = format!("glm_rows_{storage}_k{kmax}");
        let shared = fused_shared_bytes(call.k, d, call.acc_out.is_some())?;
        if shared > self.max_shared_bytes {
            return Err(Error::Backend(format!(
                "glm_rows: a {}×{d} accumulator needs {shared} bytes of shared memory, more than the \
                 device's {}",
                call.k, self.max_shared_bytes
            )));
        }
        let function = self.kernels.get(&name)?;
        if shared > 48 * 1024 {
            function
                .set_attribute(
                    CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    shared as i32,
                )
                .map_err(driver_error)?;
        }
        // As many blocks as can be resident at once (4 a multiprocessor at 64 registers a
        // thread): with the 2 a multiprocessor launched before, the H200 ran the HVP at 25%
        // occupancy and 31% of copy bandwidth, latency-bound with half the slots empty (ncu).
        let resident = self.resident_blocks(&name, function, shared)?;
        let tiles = call.n_rows.div_ceil(ROWS_TILE).max(1);
        let blocks = tiles.min((resident * self.info.multiprocessors.max(1)) as usize) as u32;
        let cfg = LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (ROWS_BLOCK, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        let m = call
            .m
            .map_or(NULL, |(buf, offset)| Arg::Ptr(self.ptr_at(buf, offset)));
        let raw = |p: Option<u64>| p.map_or(NULL, Arg::Ptr);
        let args = [
            Arg::Ptr(if call.z_in.is_some() { 0 } else { x_ptr }),
            call.rows.map_or(NULL, Arg::Ptr),
            Arg::I32(int("rows", call.n_rows)?),
            Arg::I32(int("features", d)?),
            m,
            Arg::I32(call.k as i32),
            Arg::I32(int("outputs", call.c)?),
            Arg::I32(call.mode as i32),
            Arg::I32(loss_code(call.loss)),
            Arg::F32(call.scale),
            self.opt(call.y),
            self.opt(call.row_weight),
            self.opt(call.row_scale),
            self.opt(call.aux),
            self.opt(call.z_in),
            raw(call.u_out),
            raw(call.acc_out),
            raw(call.row_out),
            raw(call.row_out2),
            raw(call.loss_out),
        ];
        self.launch(&name, cfg, &args)
    }

    /// The GEMM path of an accumulating row call (modes 0 and 1), for accumulators that do
    /// not fit in shared memory or when chosen: over blocks of positions, `Z_b = X_b Mᵀ`
    /// (GEMM), the transform (`glm_rows` with `z_in`), then `acc += U_bᵀ X_b` (GEMM). A block's
    /// rows are gathered into f32 first unless the design is f32 and the rows contiguous.
    /// Reads X twice.
    fn glm_rows_gemm(&self, call: &RowsCall<'_>, m_ptr: u64, acc_ptr: u64) -> Result<()> {
        let (d, k, c) = (call.x.d, call.k, call.c);
        let n_rows = call.n_rows;
        if n_rows == 0 {
            return Ok(());
        }
        let block = (GEMM_BLOCK_BYTES / (4 * d.max(1)))
            .clamp(256, n_rows.max(256))
            .min(n_rows);
        let z = self.alloc_f32(block * k)?;
        let u = self.alloc_f32(block * k)?;
        let direct = match (&call.x.data, call.rows) {
            (DesignData::F32(x), None) => Some(self.ptr(x)),
            _ => None,
        };
        let gathered = match direct {
            Some(_) => None,
            None => Some(self.alloc_f32(block * d)?),
        };
        let (x_ptr, storage) = self.design_ptr(call.x);
        let iota = self.ptr(&call.x.iota);
        for first in (0..n_rows).step_by(block) {
            let b = block.min(n_rows - first);
            let idx = call.rows.unwrap_or(iota) + 4 * first as u64;
            let xb = match (direct, &gathered) {
                (Some(x), _) => x + (4 * first * d) as u64,
                (None, buffer) => {
                    let buffer = buffer
                        .as_ref()
                        .ok_or_else(|| Error::Backend("glm_rows_gemm: no gather buffer".into()))?;
                    self.launch(
                        &format!("hg_gather_rows_{storage}"),
                        grid_1d(b * d),
                        &[
                            Arg::Ptr(x_ptr),
                            Arg::Ptr(idx),
                            Arg::I32(b as i32),
                            Arg::I32(int("features", d)?),
                            Arg::Ptr(self.ptr(buffer)),
                        ],
                    )?;
                    self.ptr(buffer)
                }
            };
            self.gemm_raw(false, true, (b, k, d), 1.0, xb, m_ptr, 0.0, self.ptr(&z))?;
            let transform = RowsCall {
                rows: Some(idx),
                n_rows: b,
                m: None,
                z_in: Some(&z),
                u_out: Some(self.ptr(&u)),
                acc_out: None,
                // Mode 0 writes c factors per position; mode 1 writes none.
                row_out: call.row_out.map(|p| p + (4 * first * c) as u64),
                ..*call
            };
            self.glm_rows(&transform)?;
            // z, u and the gathered rows are freed in stream order after these launches.
            self.gemm_raw(true, false, (k, d, b), 1.0, self.ptr(&u), xb, 1.0, acc_ptr)?;
        }
        Ok(())
    }

    /// Runs a row call that accumulates into `acc[acc_offset ..]`, fused (X read once) or
    /// through GEMMs when chosen or when the accumulator does not fit in shared memory.
    fn glm_rows_accumulate(
        &self,
        call: RowsCall<'_>,
        m: &CudaSlice<f32>,
        m_offset: usize,
        acc: &mut CudaSlice<f32>,
        acc_offset: usize,
    ) -> Result<()> {
        let fits = fused_shared_bytes(call.k, call.x.d, true)
            .is_ok_and(|bytes| bytes <= self.max_shared_bytes);
        let (m_ptr, acc_ptr) = (self.ptr_at(m, m_offset), self.ptr_at(acc, acc_offset));
        if self.row_path() == RowPath::Cublas || !fits {
            return self.glm_rows_gemm(&call, m_ptr, acc_ptr);
        }
        let fused = RowsCall {
            m: Some((m, m_offset)),
            acc_out: Some(acc_ptr),
            ..call
        };
        self.glm_rows(&fused)
    }

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

    pub(in crate::backend) fn alloc_f32(&self, len: usize) -> Result<CudaSlice<f32>> {
        if len == 0 {
            return self.stream.null().map_err(driver_error);
        }
        self.stream.alloc_zeros::<f32>(len).map_err(driver_error)
    }

    /// A buffer whose entries the caller writes, every one, before any is read (a kernel or a
    /// GEMM with β = 0, which does not read C): no memset, one launch fewer per buffer in the
    /// networks' inner loop.
    pub(in crate::backend) fn alloc_written_f32(&self, len: usize) -> Result<CudaSlice<f32>> {
        if len == 0 {
            return self.stream.null().map_err(driver_error);
        }
        // SAFETY: f32 has no invalid bit patterns, and the callers write every entry before
        // reading it (see above), so no stale value is ever observed.
        unsafe { self.stream.alloc::<f32>(len) }.map_err(driver_error)
    }

    /// `len` doubles set to 0 (at least one, so that a reduction always has a target).
    pub(in crate::backend) fn alloc_f64_zeros(&self, len: usize) -> Result<CudaSlice<f64>> {
        self.stream
            .alloc_zeros::<f64>(len.max(1))
            .map_err(driver_error)
    }

    pub(in crate::backend) fn zero(&self, buf: &mut CudaSlice<f32>) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        self.stream.memset_zeros(buf).map_err(driver_error)
    }

    /// Reads device doubles back (a synchronising transfer).
    pub(in crate::backend) fn read_f64(&self, buf: &CudaSlice<f64>) -> Result<Vec<f64>> {
        let host = self.stream.clone_dtoh(buf).map_err(driver_error)?;
        self.count_sync();
        self.count_transfer();
        self.check_health()?;
        Ok(host)
    }

    fn upload_f32(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        if host.is_empty() {
            return self.stream.null().map_err(driver_error);
        }
        self.count_transfer();
        self.stream.clone_htod(host).map_err(driver_error)
    }

    fn small_upload(&self, host: &[f64]) -> Result<CudaSlice<f32>> {
        let v: Vec<f32> = host.iter().map(|&x| x as f32).collect();
        self.upload_f32(&v)
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

    /// Row-major GEMM on raw addresses: `C ← α op(A) op(B) + β C`, `op(A)` m×k, `op(B)` k×n.
    /// cuBLAS is column-major, and a row-major matrix read column-major is its transpose, so
    /// this computes `Cᵀ = op(B)ᵀ op(A)ᵀ`: the operands swap places and keep their flags.
    #[allow(clippy::too_many_arguments)]
    fn gemm_raw(
        &self,
        transpose_a: bool,
        transpose_b: bool,
        (m, n, k): (usize, usize, usize),
        alpha: f64,
        a: u64,
        b: u64,
        beta: f64,
        c: u64,
    ) -> Result<()> {
        let lda = if transpose_a { m } else { k };
        let ldb = if transpose_b { k } else { n };
        self.gemm_strided(
            transpose_a,
            transpose_b,
            (m, n, k),
            alpha,
            (a, lda),
            (b, ldb),
            beta,
            (c, n),
        )
    }

    /// [`Self::gemm_raw`] with each operand's row stride given (`(address, stride)`, the
    /// stride in entries of the row-major matrix as stored, so `op(A) = Aᵀ` is read from a
    /// k×m matrix whose rows are `lda` apart): a GEMM on column blocks of wider matrices, such
    /// as a layer's weights without its bias column, or the first columns of `[Z | 1]`.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::backend) fn gemm_strided(
        &self,
        transpose_a: bool,
        transpose_b: bool,
        (m, n, k): (usize, usize, usize),
        alpha: f64,
        (a, lda): (u64, usize),
        (b, ldb): (u64, usize),
        beta: f64,
        (c, ldc): (u64, usize),
    ) -> Result<()> {
        if m == 0 || n == 0 {
            return Ok(());
        }
        let op = |t: bool| {
            if t {
                cublasOperation_t::CUBLAS_OP_T
            } else {
                cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (alpha, beta) = (alpha as f32, beta as f32);
        // SAFETY: the callers checked every buffer's length against (m, n, k); the handle
        // belongs to this backend's stream.
        unsafe {
            cudarc::cublas::result::sgemm(
                *self.blas.handle(),
                op(transpose_b),
                op(transpose_a),
                int("gemm n", n)?,
                int("gemm m", m)?,
                int("gemm k", k)?,
                &alpha,
                b as *const f32,
                int("ldb", ldb.max(1))?,
                a as *const f32,
                int("lda", lda.max(1))?,
                &beta,
                c as *mut f32,
                int("ldc", ldc)?,
            )
        }
        .map_err(driver_error)
    }
}

impl Backend for CudaBackend {
    type Buf = CudaSlice<f32>;
    type Design = CudaDesign;
    type Rows = CudaRows;

    fn name(&self) -> String {
        let storage = match self.storage {
            Storage::F32 => "",
            Storage::Bf16 => ", bf16 storage",
        };
        format!("cuda:{} ({}{storage})", self.info.ordinal, self.info.name)
    }

    fn precision(&self) -> Precision {
        Precision::F32
    }

    fn synchronize(&self) -> Result<()> {
        CudaBackend::synchronize(self)
    }

    fn fork(&self) -> Result<Self> {
        self.fork_stream()
    }

    fn signal(&self, slot: usize) -> Result<()> {
        CudaBackend::signal(self, slot)
    }

    fn wait_for(&self, other: &Self, slot: usize) -> Result<()> {
        CudaBackend::wait_for(self, other, slot)
    }

    fn host_traffic(&self) -> (u64, u64) {
        CudaBackend::host_traffic(self)
    }

    fn zeros(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.alloc_f32(len)
    }

    fn upload(&self, host: &[f64]) -> Result<CudaSlice<f32>> {
        self.small_upload(host)
    }

    fn download(&self, buf: &CudaSlice<f32>) -> Result<Vec<f64>> {
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        let host = self.stream.clone_dtoh(buf).map_err(driver_error)?;
        self.count_sync();
        self.count_transfer();
        self.check_health()?;
        Ok(host.into_iter().map(f64::from).collect())
    }

    fn len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }

    fn upload_design(&self, x: &Array2<f64>) -> Result<CudaDesign> {
        let (n, d) = x.dim();
        let data = match self.storage {
            Storage::F32 => {
                let host: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                DesignData::F32(self.upload_f32(&host)?)
            }
            Storage::Bf16 => {
                let host: Vec<u16> = x
                    .iter()
                    .map(|&v| half::bf16::from_f64(v).to_bits())
                    .collect();
                self.count_transfer();
                DesignData::Bf16(self.stream.clone_htod(&host).map_err(driver_error)?)
            }
        };
        let iota: Vec<i32> = (0..int("rows", n)?).collect();
        let iota = if iota.is_empty() {
            self.stream.null().map_err(driver_error)?
        } else {
            self.count_transfer();
            self.stream.clone_htod(&iota).map_err(driver_error)?
        };
        Ok(CudaDesign { n, d, data, iota })
    }

    fn design_shape(&self, x: &CudaDesign) -> (usize, usize) {
        (x.n, x.d)
    }

    fn upload_rows(&self, rows: &[u32], n: usize) -> Result<CudaRows> {
        let mut batches = self.upload_batches(rows, rows.len().max(1), n)?;
        match batches.pop() {
            Some(batch) => Ok(batch),
            // No rows: no batch came back, but one empty batch is what was asked for.
            None => Ok(CudaRows {
                len: 0,
                offset: 0,
                idx: Arc::new(self.stream.null().map_err(driver_error)?),
                bound: n,
            }),
        }
    }

    fn upload_batches(&self, rows: &[u32], batch: usize, n: usize) -> Result<Vec<CudaRows>> {
        if batch == 0 && !rows.is_empty() {
            return Err(Error::Dimension("batches of 0 rows cannot hold any".into()));
        }
        if let Some(r) = rows.iter().find(|&&r| r as usize >= n) {
            return Err(Error::Dimension(format!("row index {r} is not below {n}")));
        }
        let idx: Vec<i32> = rows.iter().map(|&r| r as i32).collect();
        // One copy for every batch; the batches are views into it (offset, length).
        self.count_transfer();
        let idx = Arc::new(if idx.is_empty() {
            self.stream.null().map_err(driver_error)?
        } else {
            self.stream.clone_htod(&idx).map_err(driver_error)?
        });
        Ok((0..rows.len())
            .step_by(batch.max(1))
            .map(|offset| CudaRows {
                len: batch.min(rows.len() - offset),
                offset,
                idx: idx.clone(),
                bound: n,
            })
            .collect())
    }

    fn upload_parts(&self, host: &[f64], part: usize) -> Result<Vec<CudaSlice<f32>>> {
        if part == 0 && !host.is_empty() {
            return Err(Error::Dimension(
                "parts of 0 entries cannot hold any".into(),
            ));
        }
        // One host copy, then device-side copies into separate buffers (a `Buf` owns its
        // allocation, so it cannot be a view): stream-ordered allocations and copies that
        // queue without waiting for the host, unlike a pageable host copy each.
        let whole = self.small_upload(host)?;
        host.chunks(part.max(1))
            .enumerate()
            .map(|(k, values)| {
                // SAFETY: the copy below writes every entry before any use.
                let mut buf =
                    unsafe { self.stream.alloc::<f32>(values.len()) }.map_err(driver_error)?;
                let start = k * part;
                self.stream
                    .memcpy_dtod(&whole.slice(start..start + values.len()), &mut buf)
                    .map_err(driver_error)?;
                Ok(buf)
            })
            .collect()
    }

    fn rows_len(&self, rows: &CudaRows) -> usize {
        rows.len
    }

    fn copy(&self, src: &CudaSlice<f32>, dst: &mut CudaSlice<f32>) -> Result<()> {
        check_len("copy destination", dst.len(), src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        self.stream.memcpy_dtod(src, dst).map_err(driver_error)
    }

    fn fill(&self, x: &mut CudaSlice<f32>, value: f64) -> Result<()> {
        let n = x.len();
        self.launch(
            "hg_fill",
            grid_1d(n),
            &[
                Arg::Ptr(self.ptr(x)),
                Arg::I32(int("len", n)?),
                Arg::F32(value as f32),
            ],
        )
    }

    fn scal(&self, alpha: f64, x: &mut CudaSlice<f32>) -> Result<()> {
        let n = x.len();
        self.launch(
            "hg_scal",
            grid_1d(n),
            &[
                Arg::Ptr(self.ptr(x)),
                Arg::I32(int("len", n)?),
                Arg::F32(alpha as f32),
            ],
        )
    }

    fn axpy(&self, alpha: f64, x: &CudaSlice<f32>, y: &mut CudaSlice<f32>) -> Result<()> {
        self.axpby(alpha, x, 1.0, y)
    }

    fn axpby(
        &self,
        alpha: f64,
        x: &CudaSlice<f32>,
        beta: f64,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_len("axpby operand", x.len(), y.len())?;
        let n = x.len();
        self.launch(
            "hg_axpby",
            grid_1d(n),
            &[
                Arg::Ptr(self.ptr(x)),
                Arg::Ptr(self.ptr(y)),
                Arg::I32(int("len", n)?),
                Arg::F32(alpha as f32),
                Arg::F32(beta as f32),
            ],
        )
    }

    fn dot(&self, x: &CudaSlice<f32>, y: &CudaSlice<f32>) -> Result<f64> {
        check_len("dot operand", x.len(), y.len())?;
        let out = self.stream.alloc_zeros::<f64>(1).map_err(driver_error)?;
        let n = x.len();
        self.launch(
            "hg_dot",
            grid_1d(n),
            &[
                Arg::Ptr(self.ptr(x)),
                Arg::Ptr(self.ptr(y)),
                Arg::I32(int("len", n)?),
                Arg::Ptr(self.ptr(&out)),
            ],
        )?;
        Ok(self.read_f64(&out)?[0])
    }

    fn mul_add(
        &self,
        alpha: f64,
        a: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_len("mul_add operand", x.len(), y.len())?;
        per_part("mul_add", x.len(), a.len())?;
        let n = x.len();
        self.launch(
            "hg_mul_add",
            grid_1d(n),
            &[
                Arg::Ptr(self.ptr(a)),
                Arg::I32(int("len", a.len())?),
                Arg::Ptr(self.ptr(x)),
                Arg::Ptr(self.ptr(y)),
                Arg::I32(int("len", n)?),
                Arg::F32(alpha as f32),
            ],
        )
    }

    fn batched_dot(&self, batch: &CudaSlice<f32>, v: &CudaSlice<f32>) -> Result<Vec<f64>> {
        per_part("batched_dot", batch.len(), v.len())?;
        let m = batch.len() / v.len();
        let out = self
            .stream
            .alloc_zeros::<f64>(m.max(1))
            .map_err(driver_error)?;
        let mut cfg = grid_1d(v.len());
        cfg.grid_dim.0 = cfg.grid_dim.0.min(256);
        cfg.grid_dim.1 = int("batch", m)? as u32;
        self.launch(
            "hg_batched_dot",
            cfg,
            &[
                Arg::Ptr(self.ptr(batch)),
                Arg::Ptr(self.ptr(v)),
                Arg::I32(int("len", v.len())?),
                Arg::I32(int("batch", m)?),
                Arg::Ptr(self.ptr(&out)),
            ],
        )?;
        let mut result = self.read_f64(&out)?;
        result.truncate(m);
        Ok(result)
    }

    fn glm_value_grad(
        &self,
        x: &CudaDesign,
        loss: Loss,
        y: &CudaSlice<f32>,
        row_weights: Option<&CudaSlice<f32>>,
        w: &CudaSlice<f32>,
        grad_scale: f64,
        grad: Option<&mut CudaSlice<f32>>,
    ) -> Result<f64> {
        let c = loss.outputs();
        check_len("labels", y.len(), x.n)?;
        check_len("inner variable", w.len(), c * x.d)?;
        let total = self.stream.alloc_zeros::<f64>(1).map_err(driver_error)?;
        let mut call = RowsCall::new(x, Mode::LossGrad, loss, c);
        call.y = Some(y);
        call.row_weight = row_weights;
        call.loss_out = Some(self.ptr(&total));
        match grad {
            Some(grad) => {
                check_len("gradient", grad.len(), c * x.d)?;
                self.zero(grad)?;
                self.glm_rows_accumulate(call, w, 0, grad, 0)?;
                self.scal(grad_scale, grad)?;
            }
            None => {
                call.m = Some((w, 0));
                self.glm_rows(&call)?;
            }
        }
        Ok(self.read_f64(&total)?[0])
    }

    fn glm_curvature(
        &self,
        x: &CudaDesign,
        loss: Loss,
        y: &CudaSlice<f32>,
        row_weights: Option<&CudaSlice<f32>>,
        w: &CudaSlice<f32>,
        scale: f64,
    ) -> Result<Curvature<Self>> {
        let c = loss.outputs();
        check_len("labels", y.len(), x.n)?;
        check_len("inner variable", w.len(), c * x.d)?;
        let row_scale = self.alloc_f32(x.n)?;
        let probs = match loss {
            Loss::Softmax { .. } => Some(self.alloc_f32(x.n * c)?),
            _ => None,
        };
        let mut call = RowsCall::new(x, Mode::Curvature, loss, c);
        call.m = Some((w, 0));
        call.scale = scale as f32;
        call.y = Some(y);
        call.row_weight = row_weights;
        call.row_out = Some(self.ptr(&row_scale));
        call.row_out2 = probs.as_ref().map(|p| self.ptr(p));
        self.glm_rows(&call)?;
        Ok(Curvature {
            loss,
            row_scale,
            probs,
        })
    }

    fn glm_hvp(
        &self,
        x: &CudaDesign,
        curvature: &Curvature<Self>,
        v: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let c = curvature.loss.outputs();
        let p = c * x.d;
        let vectors = per_part("glm_hvp batch", v.len(), p)?;
        check_len("glm_hvp output", out.len(), v.len())?;
        self.zero(out)?;
        // Chunks of whole vectors whose m·c rows fit the widest kernel variant (32).
        let per_launch = (32 / c).max(1);
        let mut first = 0;
        while first < vectors {
            let count = per_launch.min(vectors - first);
            let mut call = RowsCall::new(x, Mode::Hvp, curvature.loss, count * c);
            call.row_scale = Some(&curvature.row_scale);
            call.aux = curvature.probs.as_ref();
            self.glm_rows_accumulate(call, v, first * p, out, first * p)?;
            first += count;
        }
        Ok(())
    }

    fn glm_row_factors(
        &self,
        x: &CudaDesign,
        loss: Loss,
        y: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
    ) -> Result<CudaSlice<f32>> {
        let c = loss.outputs();
        check_len("labels", y.len(), x.n)?;
        check_len("inner variable", w.len(), c * x.d)?;
        let out = self.alloc_f32(x.n * c)?;
        let mut call = RowsCall::new(x, Mode::Factors, loss, c);
        call.m = Some((w, 0));
        call.y = Some(y);
        call.row_out = Some(self.ptr(&out));
        self.glm_rows(&call)?;
        Ok(out)
    }

    fn glm_row_pairing(
        &self,
        x: &CudaDesign,
        q: &CudaSlice<f32>,
        g: &CudaSlice<f32>,
    ) -> Result<Vec<f64>> {
        let c = per_part("glm_row_pairing", g.len(), x.n)?;
        check_len("glm_row_pairing vector", q.len(), c * x.d)?;
        let out = self.alloc_f32(x.n)?;
        // The loss only fixes c here; mode 4 does not evaluate it.
        let mut call = RowsCall::new(x, Mode::Pairing, Loss::Softmax { classes: c }, c);
        call.m = Some((q, 0));
        call.aux = Some(g);
        call.row_out = Some(self.ptr(&out));
        self.glm_rows(&call)?;
        self.download(&out)
    }

    fn glm_add_row_outer(
        &self,
        x: &CudaDesign,
        coef: &[f64],
        g: &CudaSlice<f32>,
        batch: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_len("glm_add_row_outer coefficients", coef.len(), x.n)?;
        let c = per_part("glm_add_row_outer", g.len(), x.n)?;
        check_len("glm_add_row_outer batch", batch.len(), x.n * c * x.d)?;
        let coef = self.small_upload(coef)?;
        let (x_ptr, storage) = self.design_ptr(x);
        self.launch(
            &format!("hg_add_row_outer_{storage}"),
            grid_1d(batch.len()),
            &[
                Arg::Ptr(x_ptr),
                Arg::I32(int("rows", x.n)?),
                Arg::I32(int("features", x.d)?),
                Arg::Ptr(self.ptr(&coef)),
                Arg::Ptr(self.ptr(g)),
                Arg::I32(c as i32),
                Arg::Ptr(self.ptr(batch)),
            ],
        )
    }

    fn group_dot(
        &self,
        groups: Groups,
        x: &CudaSlice<f32>,
        y: &CudaSlice<f32>,
    ) -> Result<Vec<f64>> {
        check_len("group_dot operand", y.len(), x.len())?;
        let count = groups.count(x.len());
        let out = self
            .stream
            .alloc_zeros::<f64>(count.max(1))
            .map_err(driver_error)?;
        let (mode, block) = groups_code(groups);
        self.launch(
            "hg_group_dot",
            grid_1d(x.len()),
            &[
                Arg::Ptr(self.ptr(x)),
                Arg::Ptr(self.ptr(y)),
                Arg::I32(int("len", x.len())?),
                Arg::I32(mode),
                Arg::I32(block),
                Arg::Ptr(self.ptr(&out)),
            ],
        )?;
        let mut result = self.read_f64(&out)?;
        result.truncate(count);
        Ok(result)
    }

    fn group_expand(&self, groups: Groups, values: &[f64], len: usize) -> Result<CudaSlice<f32>> {
        check_len("group values", values.len(), groups.count(len))?;
        let values = self.small_upload(values)?;
        let out = self.alloc_f32(len)?;
        let (mode, block) = groups_code(groups);
        self.launch(
            "hg_group_expand",
            grid_1d(len),
            &[
                Arg::Ptr(self.ptr(&values)),
                Arg::I32(int("len", len)?),
                Arg::I32(mode),
                Arg::I32(block),
                Arg::Ptr(self.ptr(&out)),
            ],
        )?;
        Ok(out)
    }

    fn group_scatter_add(
        &self,
        groups: Groups,
        coef: &[f64],
        w: &CudaSlice<f32>,
        batch: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let len = w.len();
        let count = groups.count(len);
        check_len("group coefficients", coef.len(), count)?;
        check_len("group batch", batch.len(), count * len)?;
        let coef = self.small_upload(coef)?;
        let (mode, block) = groups_code(groups);
        self.launch(
            "hg_group_scatter_add",
            grid_1d(len),
            &[
                Arg::Ptr(self.ptr(&coef)),
                Arg::Ptr(self.ptr(w)),
                Arg::I32(int("len", len)?),
                Arg::I32(mode),
                Arg::I32(block),
                Arg::Ptr(self.ptr(batch)),
            ],
        )
    }

    fn gemm(
        &self,
        transpose_a: bool,
        transpose_b: bool,
        (m, n, k): (usize, usize, usize),
        alpha: f64,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        beta: f64,
        c: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_gemm((m, n, k), a.len(), b.len(), c.len())?;
        self.gemm_raw(
            transpose_a,
            transpose_b,
            (m, n, k),
            alpha,
            self.ptr(a),
            self.ptr(b),
            beta,
            self.ptr(c),
        )
    }

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

    fn add_diagonal(&self, a: &mut CudaSlice<f32>, diag: &CudaSlice<f32>) -> Result<()> {
        check_len("diagonal's matrix", a.len(), diag.len() * diag.len())?;
        self.diagonal_kernel(a, diag, 2)
    }

    fn syrk(
        &self,
        alpha: f64,
        a: &CudaSlice<f32>,
        m: usize,
        beta: f64,
        c: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let p = per_part("syrk A", a.len(), m)?;
        self.gemm(true, false, (p, p, m), alpha, a, a, beta, c)
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

    fn glm_sgd_step(
        &self,
        x: &CudaDesign,
        loss: Loss,
        y: &CudaSlice<f32>,
        row_weights: Option<&CudaSlice<f32>>,
        rows: &CudaRows,
        reg: &CudaSlice<f32>,
        step: f64,
        w: &mut CudaSlice<f32>,
        factors: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let c = loss.outputs();
        let len = c * x.d;
        check_len("inner variable", w.len(), len)?;
        check_len("regulariser diagonal", reg.len(), len)?;
        check_len("per-sample factors", factors.len(), rows.len * c)?;
        if rows.len == 0 {
            return Err(Error::Dimension(
                "an SGD step needs a non-empty batch".into(),
            ));
        }
        let mut scratch = self
            .sgd_scratch
            .lock()
            .map_err(|_| Error::Backend("the SGD scratch buffer was poisoned".into()))?;
        let mut grad = match scratch.take() {
            Some(mut buf) if buf.len() == len => {
                self.zero(&mut buf)?;
                buf
            }
            _ => self.alloc_f32(len)?,
        };
        let mut call = RowsCall::new(x, Mode::LossGrad, loss, c);
        call.rows = Some(self.rows_ptr(rows));
        call.n_rows = rows.len;
        call.y = Some(y);
        call.row_weight = row_weights;
        call.row_out = Some(self.ptr(factors));
        self.glm_rows_accumulate(call, w, 0, &mut grad, 0)?;
        self.launch(
            "hg_sgd_apply",
            grid_1d(len),
            &[
                Arg::Ptr(self.ptr(w)),
                Arg::Ptr(self.ptr(&grad)),
                Arg::Ptr(self.ptr(reg)),
                Arg::I32(int("len", len)?),
                Arg::F32(step as f32),
                Arg::F32((1.0 / rows.len as f64) as f32),
            ],
        )?;
        // Reused by the next step on this stream, which queues after this one.
        *scratch = Some(grad);
        Ok(())
    }

    fn glm_per_sample_gradients(
        &self,
        x: &CudaDesign,
        rows: &CudaRows,
        factors: &CudaSlice<f32>,
        scale: Option<&CudaSlice<f32>>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let b = rows.len;
        let c = per_part("per-sample factors", factors.len(), b)?;
        check_len("per-sample gradients", out.len(), b * c * x.d)?;
        let (x_ptr, storage) = self.design_ptr(x);
        self.launch(
            &format!("hg_per_sample_grads_{storage}"),
            grid_1d(out.len()),
            &[
                Arg::Ptr(x_ptr),
                Arg::Ptr(self.rows_ptr(rows)),
                Arg::I32(b as i32),
                Arg::I32(int("features", x.d)?),
                Arg::Ptr(self.ptr(factors)),
                Arg::I32(c as i32),
                self.opt(scale),
                Arg::Ptr(self.ptr(out)),
            ],
        )
    }

    fn glm_kfac_factors(
        &self,
        x: &CudaDesign,
        rows: &CudaRows,
        factors: &CudaSlice<f32>,
        scale: Option<&CudaSlice<f32>>,
        alpha: f64,
        beta: f64,
        xx: &mut CudaSlice<f32>,
        gg: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let b = rows.len;
        let c = per_part("per-sample factors", factors.len(), b)?;
        let d = x.d;
        check_len("K-FAC input factor", xx.len(), d * d)?;
        check_len("K-FAC output factor", gg.len(), c * c)?;
        let gathered = self.alloc_f32(b * d)?;
        let (x_ptr, storage) = self.design_ptr(x);
        self.launch(
            &format!("hg_gather_rows_{storage}"),
            grid_1d(b * d),
            &[
                Arg::Ptr(x_ptr),
                Arg::Ptr(self.rows_ptr(rows)),
                Arg::I32(b as i32),
                Arg::I32(int("features", d)?),
                Arg::Ptr(self.ptr(&gathered)),
            ],
        )?;
        self.gemm(
            true,
            false,
            (d, d, b),
            alpha,
            &gathered,
            &gathered,
            beta,
            xx,
        )?;
        self.launch(
            "hg_kfac_gg",
            grid_1d(c * c),
            &[
                Arg::Ptr(self.ptr(factors)),
                self.opt(scale),
                Arg::I32(b as i32),
                Arg::I32(c as i32),
                Arg::F32(alpha as f32),
                Arg::F32(beta as f32),
                Arg::Ptr(self.ptr(gg)),
            ],
        )
    }
}
