//! [`Backend`] for [`CudaBackend`]: each primitive as a kernel launch or a cuBLAS call. The
//! kernels' ABI is documented at the top of each `cuda/*.cu` file; every launch below passes
//! its arguments in that order.

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use ndarray::Array2;
use std::sync::Arc;

use super::{
    driver_error, grid_1d, int, Arg, CudaBackend, CudaDesign, CudaRows, DesignData, Storage, NULL,
};
use crate::backend::shape::{check_gemm, check_len, per_part};
use crate::backend::{AdamCoefficients, Backend, Groups, Precision};
use crate::error::{Error, Result};

fn groups_code(groups: Groups) -> (i32, i32) {
    match groups {
        Groups::Shared => (0, 1),
        Groups::Each => (1, 1),
        Groups::Blocks { block } => (2, block.max(1) as i32),
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

    /// The design's device address and its storage's kernel suffix (`f32` or `bf16`).
    pub(in crate::backend) fn design_ptr(&self, x: &CudaDesign) -> (u64, &'static str) {
        match &x.data {
            DesignData::F32(buf) => (self.ptr(buf), "f32"),
            DesignData::Bf16(buf) => (self.ptr(buf), "bf16"),
        }
    }

    /// The `count` design rows whose indices start at the device address `rows`, gathered
    /// into f32 (a bf16 design widened exactly): `out[p·d + t] = x[rows[p]·d + t]`
    /// (`hg_gather_rows` of blas1.cu). For a mini-batch's K-FAC factor and a network's tape.
    pub(in crate::backend) fn gather_rows(
        &self,
        x: &CudaDesign,
        rows: u64,
        count: usize,
    ) -> Result<CudaSlice<f32>> {
        let out = self.alloc_written_f32(count * x.d)?;
        let (x_ptr, storage) = self.design_ptr(x);
        self.launch(
            &format!("hg_gather_rows_{storage}"),
            grid_1d(count * x.d),
            &[
                Arg::Ptr(x_ptr),
                Arg::Ptr(rows),
                Arg::I32(int("rows", count)?),
                Arg::I32(int("features", x.d)?),
                Arg::Ptr(self.ptr(&out)),
            ],
        )?;
        Ok(out)
    }

    pub(in crate::backend) fn opt(&self, buf: Option<&CudaSlice<f32>>) -> Arg {
        buf.map_or(NULL, |b| Arg::Ptr(self.ptr(b)))
    }

    pub(in crate::backend) fn alloc_f32(&self, len: usize) -> Result<CudaSlice<f32>> {
        if len == 0 {
            return self.stream.null().map_err(driver_error);
        }
        self.stream
            .alloc_zeros::<f32>(len)
            .map_err(|e| self.allocation_error(len * 4, e))
    }

    /// A failed allocation as the user should read it: out of memory names the bytes asked
    /// and the device's free memory ([`crate::Error::Memory`]); any other failure is the
    /// driver's.
    pub(in crate::backend) fn allocation_error(
        &self,
        bytes: usize,
        e: cudarc::driver::DriverError,
    ) -> crate::Error {
        use cudarc::driver::sys::CUresult;
        if e.0 != CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            return driver_error(e);
        }
        let free = self
            .stream
            .context()
            .mem_get_info()
            .map(|(free, total)| {
                format!(
                    " ({} free of {})",
                    crate::memory::human(free as u64),
                    crate::memory::human(total as u64)
                )
            })
            .unwrap_or_default();
        crate::Error::Memory(format!(
            "cannot allocate {} on the device{free}",
            crate::memory::human(bytes as u64)
        ))
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
        unsafe { self.stream.alloc::<f32>(len) }.map_err(|e| self.allocation_error(len * 4, e))
    }

    /// `len` doubles set to 0 (at least one, so that a reduction always has a target).
    pub(in crate::backend) fn alloc_f64_zeros(&self, len: usize) -> Result<CudaSlice<f64>> {
        self.stream
            .alloc_zeros::<f64>(len.max(1))
            .map_err(|e| self.allocation_error(len.max(1) * 8, e))
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

    pub(in crate::backend) fn upload_f32(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        if host.is_empty() {
            return self.stream.null().map_err(driver_error);
        }
        self.count_transfer();
        self.stream.clone_htod(host).map_err(driver_error)
    }

    pub(in crate::backend) fn small_upload(&self, host: &[f64]) -> Result<CudaSlice<f32>> {
        let v: Vec<f32> = host.iter().map(|&x| x as f32).collect();
        self.upload_f32(&v)
    }

    /// Row-major GEMM on raw addresses: `C ← α op(A) op(B) + β C`, `op(A)` m×k, `op(B)` k×n.
    /// cuBLAS is column-major, and a row-major matrix read column-major is its transpose, so
    /// this computes `Cᵀ = op(B)ᵀ op(A)ᵀ`: the operands swap places and keep their flags.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::backend) fn gemm_raw(
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

    fn memory_room(&self) -> Option<(u64, &'static str)> {
        let (free, _total) = self.stream.context().mem_get_info().ok()?;
        Some((free as u64, "device"))
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

    fn adam_update(
        &self,
        k: AdamCoefficients,
        grad: &CudaSlice<f32>,
        (m, v): (&mut CudaSlice<f32>, &mut CudaSlice<f32>),
        w: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_len("adam_update gradient", grad.len(), w.len())?;
        check_len("adam_update first moment", m.len(), w.len())?;
        check_len("adam_update second moment", v.len(), w.len())?;
        let n = w.len();
        self.launch(
            "hg_adam_apply",
            grid_1d(n),
            &[
                Arg::Ptr(self.ptr(w)),
                Arg::Ptr(self.ptr(grad)),
                Arg::Ptr(self.ptr(m)),
                Arg::Ptr(self.ptr(v)),
                Arg::I32(int("len", n)?),
                Arg::F32(k.beta1 as f32),
                Arg::F32(k.beta2 as f32),
                Arg::F32(k.step as f32),
                Arg::F32(k.eps as f32),
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
}
