//! [`GlmOps`] for [`CudaBackend`]: the fused row kernel `glm_rows` (cuda/glm_rows.cu) for
//! every whole-design pass, a GEMM path for accumulators that do not fit in shared memory,
//! and the per-sample and SGD kernels for mini-batches. The kernels' ABI is documented at
//! the top of each `cuda/*.cu` file; every launch below passes its arguments in that order.

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig};

use super::{
    check_operands, check_per_sample, check_sgd_operands, check_softmax_rows, Curvature, GlmOps,
    Loss,
};
use crate::backend::cuda::{
    driver_error, grid_1d, int, Arg, CudaBackend, CudaDesign, CudaRows, DesignData, RowPath, NULL,
};
use crate::backend::shape::{check_len, per_part};
use crate::backend::Backend;
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

/// The operands of a GLM mini-batch: design, loss, labels, row weights, the batch's rows and
/// the regulariser's diagonal.
struct BatchOperands<'a> {
    x: &'a CudaDesign,
    loss: Loss,
    y: &'a CudaSlice<f32>,
    row_weights: Option<&'a CudaSlice<f32>>,
    rows: &'a CudaRows,
    reg: &'a CudaSlice<f32>,
}

impl CudaBackend {
    /// `acc ← Σ_p s_{r_p} G_p ⊗ x_{r_p}` over a mini-batch, with `factors_p ← G_p`, after the
    /// operand checks: the sum that an SGD step and the mini-batch gradient both scale by
    /// `1/b` (the CPU twin's `batch_sum`).
    fn batch_sum(
        &self,
        batch: &BatchOperands<'_>,
        w: &CudaSlice<f32>,
        acc: &mut CudaSlice<f32>,
        factors: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let BatchOperands {
            x,
            loss,
            y,
            row_weights,
            rows,
            reg,
        } = *batch;
        let (c, d) = check_operands(
            loss,
            (x.n, x.d),
            y.len(),
            row_weights.map(|s| s.len()),
            w.len(),
        )?;
        check_sgd_operands((c, d), rows.len, reg.len(), factors.len())?;
        check_len("batch sum", acc.len(), c * d)?;
        rows.check_fits(x.n)?;
        self.zero(acc)?;
        let mut call = RowsCall::new(x, Mode::LossGrad, loss, c);
        call.rows = Some(self.rows_ptr(rows));
        call.n_rows = rows.len;
        call.y = Some(y);
        call.row_weight = row_weights;
        call.row_out = Some(self.ptr(factors));
        self.glm_rows_accumulate(call, w, 0, acc, 0)
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
}

impl GlmOps for CudaBackend {
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
        let (c, _) = check_operands(
            loss,
            (x.n, x.d),
            y.len(),
            row_weights.map(|s| s.len()),
            w.len(),
        )?;
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
        let (c, _) = check_operands(
            loss,
            (x.n, x.d),
            y.len(),
            row_weights.map(|s| s.len()),
            w.len(),
        )?;
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
        let (c, _) = check_operands(loss, (x.n, x.d), y.len(), None, w.len())?;
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

    /// The R-operator's softmax step of the network family (`hg_mlp_softmax_r`, one thread
    /// per row, in place): the same row product, so no kernel of its own.
    fn glm_softmax_curvature_rows(
        &self,
        probs: &CudaSlice<f32>,
        classes: usize,
        a: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let n = check_softmax_rows(classes, probs.len(), a.len())?;
        if n == 0 {
            return Ok(());
        }
        self.launch(
            "hg_mlp_softmax_r",
            grid_1d(n),
            &[
                Arg::Ptr(self.ptr(probs)),
                Arg::Ptr(self.ptr(a)),
                Arg::I32(int("rows", n)?),
                Arg::I32(int("classes", classes)?),
            ],
        )
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
        let len = w.len();
        let mut scratch = self
            .sgd_scratch
            .lock()
            .map_err(|_| Error::Backend("the SGD scratch buffer was poisoned".into()))?;
        let mut grad = match scratch.take() {
            Some(buf) if buf.len() == len => buf,
            _ => self.alloc_f32(len)?,
        };
        let batch = BatchOperands {
            x,
            loss,
            y,
            row_weights,
            rows,
            reg,
        };
        self.batch_sum(&batch, w, &mut grad, factors)?;
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

    fn glm_batch_gradient(
        &self,
        x: &CudaDesign,
        loss: Loss,
        y: &CudaSlice<f32>,
        row_weights: Option<&CudaSlice<f32>>,
        rows: &CudaRows,
        reg: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        out: &mut CudaSlice<f32>,
        factors: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_len("batch gradient", out.len(), w.len())?;
        let batch = BatchOperands {
            x,
            loss,
            y,
            row_weights,
            rows,
            reg,
        };
        self.batch_sum(&batch, w, out, factors)?;
        // (1/b)·sum, then + reg ⊙ W: rounded as the CPU twin rounds `inv_b·g + reg·w`.
        self.scal(1.0 / rows.len as f64, out)?;
        self.mul_add(1.0, reg, w, out)
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
        let c = check_per_sample(b, factors.len(), scale.map(|s| s.len()))?;
        check_len("per-sample gradients", out.len(), b * c * x.d)?;
        rows.check_fits(x.n)?;
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
        let c = check_per_sample(b, factors.len(), scale.map(|s| s.len()))?;
        let d = x.d;
        check_len("K-FAC input factor", xx.len(), d * d)?;
        check_len("K-FAC output factor", gg.len(), c * c)?;
        rows.check_fits(x.n)?;
        let gathered = self.gather_rows(x, self.rows_ptr(rows), b)?;
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
