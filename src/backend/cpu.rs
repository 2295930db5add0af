//! The CPU backend: the readable reference implementation of every [`Backend`] primitive, in
//! `f32` or `f64`, parallel over rows with rayon.
//!
//! Row kernels stream the data matrix once: each row `x_i` (d entries) is loaded, dotted
//! with the `m·c` rows of the current batch (`z = V x_i`), turned into per-row coefficients by
//! the loss, and added back as `acc += u ⊗ x_i` while it is still in L1. The memory traffic
//! of a batched HVP is therefore one read of X whatever the batch size, which is what makes
//! a batch of vectors cheap (the CUDA kernels follow the same plan).
//!
//! Per-row loss arithmetic is done in `f64` (it is O(c) per row); dot products and
//! accumulations over features run in the backend's precision with several independent
//! accumulators so that they vectorise.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::shape::{check_gemm, check_len, per_part, square_side};
use super::skinny::{self, SKINNY_MAX_WIDTH};
use super::{Backend, Curvature, Groups, Loss, Precision};
use crate::error::{Error, Result};
use crate::linalg;

/// Scalar type of the CPU backend (`f32` or `f64`).
pub trait Real:
    ndarray::LinalgScalar
    + linalg::Scalar
    + Send
    + Sync
    + Default
    + PartialOrd
    + std::fmt::Debug
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::AddAssign
    + 'static
{
    const PRECISION: Precision;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// `self·a + b` rounded once (an FMA instruction where the target has one, a slow
    /// library call where it does not: see `skinny::madd`).
    fn fused_mul_add(self, a: Self, b: Self) -> Self;
}

impl Real for f32 {
    const PRECISION: Precision = Precision::F32;
    #[inline]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn fused_mul_add(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
}

impl Real for f64 {
    const PRECISION: Precision = Precision::F64;
    #[inline]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn fused_mul_add(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }
}

/// A dense row-major n×d matrix in host memory.
#[derive(Clone, Debug)]
pub struct CpuMatrix<T> {
    pub n: usize,
    pub d: usize,
    pub data: Vec<T>,
}

impl<T: Real> CpuMatrix<T> {
    /// Row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.d..(i + 1) * self.d]
    }
}

/// The CPU backend in precision `T`. Clones share their [`TrafficCounters`].
#[derive(Clone, Debug, Default)]
pub struct CpuBackend<T> {
    counters: Arc<TrafficCounters>,
    /// See [`Backend::direct_solve_max_dim`]: 0 (always CG) unless a test asks otherwise.
    direct_solve_max_dim: usize,
    _precision: PhantomData<T>,
}

/// How often the row kernels streamed a design matrix, and how many bytes of it: the
/// memory traffic that bounds their speed (benchmarks divide it by time to get GB/s).
/// Also how many upload calls were made: each is one host→device copy on a device backend,
/// so CPU tests can check how often an algorithm would copy in (`host_traffic` stays zero).
#[derive(Debug, Default)]
pub struct TrafficCounters {
    passes: AtomicU64,
    bytes: AtomicU64,
    uploads: AtomicU64,
}

impl<T: Real> CpuBackend<T> {
    /// The CPU backend. `HYPERGRAD_CPU_DIRECT_SOLVE_MAX_DIM=N` sets
    /// [`Backend::direct_solve_max_dim`] (default 0: CG), so that the CG-against-Cholesky
    /// comparison in BENCHMARKS.md can be rerun without rebuilding.
    pub fn new() -> Self {
        CpuBackend {
            counters: Arc::default(),
            direct_solve_max_dim: direct_solve_max_dim_from_env(),
            _precision: PhantomData,
        }
    }

    /// The same backend, solving dense SPD systems up to `dim` by Cholesky rather than CG (the
    /// choice a device backend makes), so that the CPU tests exercise both paths.
    pub fn with_direct_solve_max_dim(mut self, dim: usize) -> Self {
        self.direct_solve_max_dim = dim;
        self
    }

    /// `(passes, bytes)` over design matrices since this backend (or its first clone) was
    /// made.
    pub fn design_traffic(&self) -> (u64, u64) {
        (
            self.counters.passes.load(Ordering::Relaxed),
            self.counters.bytes.load(Ordering::Relaxed),
        )
    }

    /// Calls of the upload methods (`upload`, `upload_design`, `upload_rows`,
    /// `upload_batches`, `upload_parts`) since this backend (or its first clone) was made:
    /// the host→device copies a device backend would make for them.
    pub fn uploads(&self) -> u64 {
        self.counters.uploads.load(Ordering::Relaxed)
    }

    fn record_upload(&self) {
        self.counters.uploads.fetch_add(1, Ordering::Relaxed);
    }

    fn convert(host: &[f64]) -> Vec<T> {
        host.iter().map(|&v| T::from_f64(v)).collect()
    }

    fn checked_rows(rows: &[u32], n: usize) -> Result<Vec<usize>> {
        match rows.iter().find(|&&r| r as usize >= n) {
            Some(r) => Err(Error::Dimension(format!("row index {r} is not below {n}"))),
            None => Ok(rows.iter().map(|&r| r as usize).collect()),
        }
    }

    fn record_pass(&self, x: &CpuMatrix<T>) {
        let bytes = (x.data.len() * std::mem::size_of::<T>()) as u64;
        self.counters.passes.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

// ---- vector kernels shared by the row kernels ------------------------------------------------

/// `aᵀb` in precision `T` ([`skinny::rows_times`] with one row: vectorised for the CPU at
/// hand, 16 partial sums).
#[inline]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    debug_assert_eq!(a.len(), b.len());
    let mut z = [T::zero()];
    skinny::rows_times(a, a.len(), b, &mut z);
    z[0]
}

/// `y ← y + αx`.
#[inline]
pub fn axpy<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `Σ aᵢbᵢ` accumulated in f64 (reductions that steer solvers).
fn dot_f64<T: Real>(a: &[T], b: &[T]) -> f64 {
    const BLOCK: usize = 4096;
    let partial = |(pa, pb): (&[T], &[T])| dot(pa, pb).to_f64();
    if a.len() >= PARALLEL_MIN_WORK {
        a.par_chunks(BLOCK)
            .zip(b.par_chunks(BLOCK))
            .map(partial)
            .sum()
    } else {
        a.chunks(BLOCK).zip(b.chunks(BLOCK)).map(partial).sum()
    }
}

/// Below this many scalar operations a kernel runs on one thread: rayon's fork/join costs
/// more than it saves.
const PARALLEL_MIN_WORK: usize = 1 << 16;

const DIRECT_SOLVE_ENV: &str = "HYPERGRAD_CPU_DIRECT_SOLVE_MAX_DIM";

/// `HYPERGRAD_CPU_DIRECT_SOLVE_MAX_DIM`, or 0 when unset; a value that is not a number is
/// said once on stderr and ignored.
fn direct_solve_max_dim_from_env() -> usize {
    let Some(text) = std::env::var_os(DIRECT_SOLVE_ENV) else {
        return 0;
    };
    // An empty value means unset.
    let parsed = text.to_str().map(str::trim).map(|t| match t {
        "" => Ok(0),
        t => t.parse::<usize>(),
    });
    match parsed {
        Some(Ok(dim)) => dim,
        _ => {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!("warning: {DIRECT_SOLVE_ENV}={text:?} is not a number; CG is used");
            });
            0
        }
    }
}

// ---- per-row loss arithmetic (f64) ------------------------------------------------------------

/// `x` in f64: the host-side dense factorisations run in f64 whatever the backend's `T`.
fn to_f64<T: Real>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.to_f64()).collect()
}

/// `dst ← src`, rounded to `T`.
fn copy_from_f64<T: Real>(dst: &mut [T], src: &[f64]) {
    dst.iter_mut()
        .zip(src)
        .for_each(|(d, &s)| *d = T::from_f64(s));
}

/// `log(1 + exp(t))` without overflow.
#[inline]
pub fn softplus(t: f64) -> f64 {
    if t > 0.0 {
        t + (-t).exp().ln_1p()
    } else {
        t.exp().ln_1p()
    }
}

/// Logistic sigmoid `1 / (1 + exp(−t))` without overflow.
#[inline]
pub fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// Softmax of `z` into `p`; returns `logsumexp(z)`.
#[inline]
pub(crate) fn softmax_into(z: &[f64], p: &mut [f64]) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for (pk, &zk) in p.iter_mut().zip(z) {
        *pk = (zk - max).exp();
        sum += *pk;
    }
    for pk in p.iter_mut() {
        *pk /= sum;
    }
    max + sum.ln()
}

/// The class index a label stands for (labels were validated when the problem was built).
#[inline]
pub(crate) fn class_of(label: f64) -> usize {
    label as usize
}

/// Loss of one row and its gradient with respect to `z` (written into `g`, length c).
/// `p` is scratch of length c.
#[inline]
fn row_loss_grad(loss: Loss, z: &[f64], y: f64, g: &mut [f64], p: &mut [f64]) -> f64 {
    match loss {
        Loss::Squared => {
            let r = z[0] - y;
            g[0] = r;
            0.5 * r * r
        }
        Loss::Logistic => {
            let m = y * z[0];
            g[0] = -y * sigmoid(-m);
            softplus(-m)
        }
        Loss::Softmax { .. } => {
            let lse = softmax_into(z, p);
            let k = class_of(y);
            g.copy_from_slice(p);
            g[k] -= 1.0;
            lse - z[k]
        }
    }
}

// ---- the row-streaming driver -------------------------------------------------------------

/// Bytes of X per block of rows: small enough to stay in L2 between the two products a block
/// takes part in (`Z = X_b Vᵀ`, then `acc += Uᵀ X_b`), so X comes from memory once.
const BLOCK_BYTES: usize = 1 << 18;

/// Streams the rows of `x` in blocks, in parallel. `visit(first_row, x_block, acc)` adds the
/// block's contribution into `acc` (length `acc_len`) and returns a scalar; accumulators and
/// scalars of all blocks are summed (each rayon task folds its blocks into one accumulator).
fn stream_blocks<T, F>(x: &CpuMatrix<T>, acc_len: usize, visit: F) -> (Vec<T>, f64)
where
    T: Real,
    F: Fn(usize, ArrayView2<'_, T>, &mut [T]) -> f64 + Sync,
{
    let d = x.d.max(1);
    let block_rows = (BLOCK_BYTES / (d * std::mem::size_of::<T>())).clamp(8, 1024);
    let identity = || (vec![T::zero(); acc_len], 0.0);
    if x.n == 0 {
        return identity();
    }
    let visit_block = |(mut acc, total): (Vec<T>, f64), (b, rows): (usize, &[T])| {
        let view = ArrayView2::from_shape((rows.len() / d, d), rows).expect("block shape");
        let value = visit(b * block_rows, view, &mut acc);
        (acc, total + value)
    };
    let sum = |(mut a, s): (Vec<T>, f64), (b, t): (Vec<T>, f64)| {
        for (ai, &bi) in a.iter_mut().zip(&b) {
            *ai += bi;
        }
        (a, s + t)
    };
    let blocks = x.data.chunks(block_rows * d).enumerate();
    if x.n * d * (1 + acc_len / d) < PARALLEL_MIN_WORK {
        blocks.fold(identity(), visit_block)
    } else {
        x.data
            .par_chunks(block_rows * d)
            .enumerate()
            .fold(identity, visit_block)
            .reduce(identity, sum)
    }
}

/// `Z ← X_b Mᵀ` for a block `X_b` (rows×d) and `M` given as `rows_m×d` row-major: the
/// products of every row of the block with every row of M (GEMM, vectorised by
/// `matrixmultiply`).
fn block_times_rows<T: Real>(block: ArrayView2<'_, T>, m: &[T], z: &mut Array2<T>) {
    let d = block.ncols();
    let m = ArrayView2::from_shape((m.len() / d, d), m).expect("operand shape");
    general_mat_mul(T::one(), &block, &m.t(), T::zero(), z);
}

/// `acc ← acc + Uᵀ X_b` (acc is `cols(U)×d` row-major).
fn accumulate_outer<T: Real>(u: &Array2<T>, block: ArrayView2<'_, T>, acc: &mut [T]) {
    let d = block.ncols();
    let mut acc = ArrayViewMut2::from_shape((u.ncols(), d), acc).expect("accumulator shape");
    general_mat_mul(T::one(), &u.t(), &block, T::one(), &mut acc);
}

/// The pattern shared by the loss gradient and the batched HVP: for every row `x_i`,
/// `z_i = M x_i` (`M` is `k×d` row-major), then `transform(i, z_i, scratch)` rewrites `z_i`
/// into coefficients `u_i` and returns a scalar, then (if `accumulate`) `acc += u_i ⊗ x_i`.
/// Returns `(acc, Σ scalars)`; `acc` is `k×d` (empty if not accumulating). Per block of rows:
/// `Z = X_b Mᵀ`, the transforms, then `acc += Zᵀ X_b` — skinny products of our own up to
/// [`SKINNY_MAX_WIDTH`] rows of M, blocked GEMMs (which reuse each loaded element of X across
/// the batch) beyond.
fn project_rows<T, F>(x: &CpuMatrix<T>, m: &[T], accumulate: bool, transform: F) -> (Vec<T>, f64)
where
    T: Real,
    F: Fn(usize, &mut [T], &mut Vec<f64>) -> f64 + Sync,
{
    let d = x.d;
    let k = m.len().checked_div(d).unwrap_or(0);
    let acc_len = if accumulate { k * d } else { 0 };
    stream_blocks(x, acc_len, |first, block, acc| {
        let mut scratch = Vec::new();
        let mut total = 0.0;
        let rows = block
            .as_slice()
            .expect("a block of a row-major matrix is contiguous");
        let mut z = Array2::<T>::zeros((block.nrows(), k));
        if k <= SKINNY_MAX_WIDTH {
            let zs = z.as_slice_mut().expect("a new array is contiguous");
            skinny::rows_times(rows, d, m, zs);
        } else {
            block_times_rows(block, m, &mut z);
        }
        let zs = z.as_slice_mut().expect("a new array is contiguous");
        for r in 0..block.nrows() {
            total += transform(first + r, &mut zs[r * k..(r + 1) * k], &mut scratch);
        }
        if accumulate {
            if k <= SKINNY_MAX_WIDTH {
                skinny::add_outer(zs, k, rows, d, acc);
            } else {
                accumulate_outer(&z, block, acc);
            }
        }
        total
    })
}

/// Rows per block of [`per_row_products`].
const ROW_BLOCK: usize = 64;

/// `visit(i, z_i, out_i)` for every row `i` of `x`, with `z_i = M x_i` in f64 (one entry per
/// row of `m`) and `out_i` the row's `width` entries of `out`. The products of a block of
/// [`ROW_BLOCK`] rows come from one [`skinny::rows_times`] call (M stays in cache across the
/// block, and nothing is allocated per row); blocks run in parallel, each with its own clone
/// of `visit` (whose captured scratch it may reuse).
fn per_row_products<T, O, F>(x: &CpuMatrix<T>, m: &[T], out: &mut [O], width: usize, visit: F)
where
    T: Real,
    O: Send,
    F: FnMut(usize, &[f64], &mut [O]) + Clone + Send + Sync,
{
    let d = x.d;
    let k = m.len().checked_div(d).unwrap_or(0);
    if width == 0 {
        return;
    }
    out.par_chunks_mut(ROW_BLOCK * width)
        .enumerate()
        .for_each_with(visit, |visit, (b, out_block)| {
            let first = b * ROW_BLOCK;
            let rows = out_block.len() / width;
            let mut z = vec![0.0; rows * k];
            if k <= SKINNY_MAX_WIDTH {
                let mut zt = vec![T::zero(); rows * k];
                skinny::rows_times(&x.data[first * d..(first + rows) * d], d, m, &mut zt);
                z.iter_mut()
                    .zip(&zt)
                    .for_each(|(dst, src)| *dst = src.to_f64());
            } else {
                for (r, zr) in z.chunks_exact_mut(k.max(1)).enumerate().take(rows) {
                    row_times(x.row(first + r), m, zr);
                }
            }
            for (r, out_row) in out_block.chunks_exact_mut(width).enumerate() {
                visit(first + r, &z[r * k..(r + 1) * k], out_row);
            }
        });
}

/// `z_k = m_kᵀ x_i` in f64 for the rows `m_k` of `m` (`z.len()` rows of `x_i.len()`), the
/// products of one row computed together ([`skinny::rows_times`]).
fn row_times<T: Real>(xi: &[T], m: &[T], z: &mut [f64]) {
    let d = xi.len();
    if d == 0 {
        z.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut buf = [T::zero(); SKINNY_MAX_WIDTH];
    for (zc, mc) in z
        .chunks_mut(SKINNY_MAX_WIDTH)
        .zip(m.chunks(SKINNY_MAX_WIDTH * d))
    {
        let out = &mut buf[..zc.len()];
        skinny::rows_times(xi, d, mc, out);
        for (dst, src) in zc.iter_mut().zip(out.iter()) {
            *dst = src.to_f64();
        }
    }
}

/// Checks the shapes of a GLM kernel's operands; returns `(c, d)`.
fn check_glm_operands<T: Real>(
    x: &CpuMatrix<T>,
    loss: Loss,
    y: &[T],
    row_weights: Option<&Vec<T>>,
    w: &[T],
) -> Result<(usize, usize)> {
    let c = loss.outputs();
    check_len("labels", y.len(), x.n)?;
    check_len("inner variable", w.len(), c * x.d)?;
    if let Some(s) = row_weights {
        check_len("row weights", s.len(), x.n)?;
    }
    Ok((c, x.d))
}

impl<T: Real> Backend for CpuBackend<T> {
    type Buf = Vec<T>;
    type Design = CpuMatrix<T>;
    type Rows = Vec<usize>;

    fn name(&self) -> String {
        format!("cpu-{}", T::PRECISION)
    }

    fn precision(&self) -> Precision {
        T::PRECISION
    }

    fn fork(&self) -> Result<Self> {
        Ok(self.clone())
    }

    fn zeros(&self, len: usize) -> Result<Vec<T>> {
        Ok(vec![T::zero(); len])
    }

    fn upload(&self, host: &[f64]) -> Result<Vec<T>> {
        self.record_upload();
        Ok(Self::convert(host))
    }

    fn download(&self, buf: &Vec<T>) -> Result<Vec<f64>> {
        Ok(buf.iter().map(|v| v.to_f64()).collect())
    }

    fn len(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }

    fn upload_design(&self, x: &Array2<f64>) -> Result<CpuMatrix<T>> {
        self.record_upload();
        let (n, d) = x.dim();
        Ok(CpuMatrix {
            n,
            d,
            data: x.iter().map(|&v| T::from_f64(v)).collect(),
        })
    }

    fn design_shape(&self, x: &CpuMatrix<T>) -> (usize, usize) {
        (x.n, x.d)
    }

    fn upload_rows(&self, rows: &[u32], n: usize) -> Result<Vec<usize>> {
        self.record_upload();
        Self::checked_rows(rows, n)
    }

    fn rows_len(&self, rows: &Vec<usize>) -> usize {
        rows.len()
    }

    fn upload_batches(&self, rows: &[u32], batch: usize, n: usize) -> Result<Vec<Vec<usize>>> {
        if batch == 0 && !rows.is_empty() {
            return Err(Error::Dimension("batches of 0 rows cannot hold any".into()));
        }
        self.record_upload();
        rows.chunks(batch.max(1))
            .map(|part| Self::checked_rows(part, n))
            .collect()
    }

    fn upload_parts(&self, host: &[f64], part: usize) -> Result<Vec<Vec<T>>> {
        if part == 0 && !host.is_empty() {
            return Err(Error::Dimension(
                "parts of 0 entries cannot hold any".into(),
            ));
        }
        self.record_upload();
        Ok(host.chunks(part.max(1)).map(Self::convert).collect())
    }

    fn copy(&self, src: &Vec<T>, dst: &mut Vec<T>) -> Result<()> {
        check_len("copy destination", dst.len(), src.len())?;
        dst.copy_from_slice(src);
        Ok(())
    }

    fn fill(&self, x: &mut Vec<T>, value: f64) -> Result<()> {
        x.fill(T::from_f64(value));
        Ok(())
    }

    fn scal(&self, alpha: f64, x: &mut Vec<T>) -> Result<()> {
        let a = T::from_f64(alpha);
        x.iter_mut().for_each(|v| *v = a * *v);
        Ok(())
    }

    fn axpy(&self, alpha: f64, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        check_len("axpy operand", x.len(), y.len())?;
        axpy(T::from_f64(alpha), x, y);
        Ok(())
    }

    fn axpby(&self, alpha: f64, x: &Vec<T>, beta: f64, y: &mut Vec<T>) -> Result<()> {
        check_len("axpby operand", x.len(), y.len())?;
        let (a, b) = (T::from_f64(alpha), T::from_f64(beta));
        for (yi, &xi) in y.iter_mut().zip(x) {
            *yi = a * xi + b * *yi;
        }
        Ok(())
    }

    fn dot(&self, x: &Vec<T>, y: &Vec<T>) -> Result<f64> {
        check_len("dot operand", x.len(), y.len())?;
        Ok(dot_f64(x, y))
    }

    fn mul_add(&self, alpha: f64, a: &Vec<T>, x: &Vec<T>, y: &mut Vec<T>) -> Result<()> {
        check_len("mul_add operand", x.len(), y.len())?;
        per_part("mul_add", x.len(), a.len())?;
        let al = T::from_f64(alpha);
        for (yb, xb) in y.chunks_exact_mut(a.len()).zip(x.chunks_exact(a.len())) {
            for ((yi, &xi), &ai) in yb.iter_mut().zip(xb).zip(a) {
                *yi += al * ai * xi;
            }
        }
        Ok(())
    }

    fn batched_dot(&self, batch: &Vec<T>, v: &Vec<T>) -> Result<Vec<f64>> {
        per_part("batched_dot", batch.len(), v.len())?;
        Ok(batch.chunks_exact(v.len()).map(|b| dot_f64(b, v)).collect())
    }

    fn glm_value_grad(
        &self,
        x: &CpuMatrix<T>,
        loss: Loss,
        y: &Vec<T>,
        row_weights: Option<&Vec<T>>,
        w: &Vec<T>,
        grad_scale: f64,
        grad: Option<&mut Vec<T>>,
    ) -> Result<f64> {
        self.record_pass(x);
        let (c, d) = check_glm_operands(x, loss, y, row_weights, w)?;
        let (acc, total) = project_rows(x, w, grad.is_some(), |i, z, scratch| {
            // scratch: z (c) | g (c) | p (c), in f64.
            scratch.resize(3 * c, 0.0);
            let (zf, rest) = scratch.split_at_mut(c);
            let (g, p) = rest.split_at_mut(c);
            for (dst, src) in zf.iter_mut().zip(z.iter()) {
                *dst = src.to_f64();
            }
            let weight = row_weights.map_or(1.0, |s| s[i].to_f64());
            let value = row_loss_grad(loss, zf, y[i].to_f64(), g, p);
            // z becomes the row's gradient factor s_i G_i.
            for (dst, &gk) in z.iter_mut().zip(g.iter()) {
                *dst = T::from_f64(weight * gk);
            }
            weight * value
        });
        if let Some(grad) = grad {
            check_len("gradient", grad.len(), c * d)?;
            let s = T::from_f64(grad_scale);
            for (gi, &ai) in grad.iter_mut().zip(&acc) {
                *gi = s * ai;
            }
        }
        Ok(total)
    }

    fn glm_curvature(
        &self,
        x: &CpuMatrix<T>,
        loss: Loss,
        y: &Vec<T>,
        row_weights: Option<&Vec<T>>,
        w: &Vec<T>,
        scale: f64,
    ) -> Result<Curvature<Self>> {
        self.record_pass(x);
        let (c, _) = check_glm_operands(x, loss, y, row_weights, w)?;
        let weight = |i: usize| scale * row_weights.map_or(1.0, |s| s[i].to_f64());
        let mut row_scale = vec![T::zero(); x.n];
        let mut probs = match loss {
            Loss::Softmax { .. } => Some(vec![T::zero(); x.n * c]),
            _ => None,
        };
        let z_of = |i: usize, z: &mut [f64]| {
            row_times(x.row(i), w, z);
        };
        match probs.as_mut() {
            None => row_scale.par_iter_mut().enumerate().for_each(|(i, r)| {
                let mut z = [0.0];
                z_of(i, &mut z);
                let curv = match loss {
                    Loss::Logistic => {
                        let m = y[i].to_f64() * z[0];
                        sigmoid(m) * sigmoid(-m)
                    }
                    _ => 1.0,
                };
                *r = T::from_f64(weight(i) * curv);
            }),
            Some(probs) => row_scale
                .par_iter_mut()
                .zip(probs.par_chunks_mut(c))
                .enumerate()
                .for_each(|(i, (r, pi))| {
                    let mut z = vec![0.0; c];
                    let mut p = vec![0.0; c];
                    z_of(i, &mut z);
                    softmax_into(&z, &mut p);
                    for (dst, &src) in pi.iter_mut().zip(&p) {
                        *dst = T::from_f64(src);
                    }
                    *r = T::from_f64(weight(i));
                }),
        }
        Ok(Curvature {
            loss,
            row_scale,
            probs,
        })
    }

    fn glm_hvp(
        &self,
        x: &CpuMatrix<T>,
        curvature: &Curvature<Self>,
        v: &Vec<T>,
        out: &mut Vec<T>,
    ) -> Result<()> {
        self.record_pass(x);
        let c = curvature.loss.outputs();
        let d = x.d;
        let p_len = c * d;
        per_part("glm_hvp batch", v.len(), p_len)?;
        check_len("glm_hvp output", out.len(), v.len())?;
        let (acc, _) = project_rows(x, v, true, |i, z, u| {
            u.clear();
            u.extend(z.iter().map(|zj| zj.to_f64()));
            let scale = curvature.row_scale[i].to_f64();
            match &curvature.probs {
                None => u.iter_mut().for_each(|uj| *uj *= scale),
                Some(probs) => {
                    // (diag(p) − ppᵀ) u = p ⊙ (u − pᵀu), per vector of the batch.
                    let p = &probs[i * c..(i + 1) * c];
                    for ub in u.chunks_exact_mut(c) {
                        let pu: f64 = ub.iter().zip(p).map(|(a, b)| a * b.to_f64()).sum();
                        for (uk, pk) in ub.iter_mut().zip(p) {
                            *uk = scale * pk.to_f64() * (*uk - pu);
                        }
                    }
                }
            }
            for (dst, &src) in z.iter_mut().zip(u.iter()) {
                *dst = T::from_f64(src);
            }
            0.0
        });
        out.copy_from_slice(&acc);
        Ok(())
    }

    fn glm_row_factors(
        &self,
        x: &CpuMatrix<T>,
        loss: Loss,
        y: &Vec<T>,
        w: &Vec<T>,
    ) -> Result<Vec<T>> {
        self.record_pass(x);
        let (c, _) = check_glm_operands(x, loss, y, None, w)?;
        let mut out = vec![T::zero(); x.n * c];
        let (mut g, mut p) = (vec![0.0; c], vec![0.0; c]);
        per_row_products(x, w, &mut out, c, move |i, z, gi| {
            g.resize(c, 0.0);
            p.resize(c, 0.0);
            row_loss_grad(loss, z, y[i].to_f64(), &mut g, &mut p);
            for (dst, &src) in gi.iter_mut().zip(&g) {
                *dst = T::from_f64(src);
            }
        });
        Ok(out)
    }

    fn glm_row_pairing(&self, x: &CpuMatrix<T>, q: &Vec<T>, g: &Vec<T>) -> Result<Vec<f64>> {
        self.record_pass(x);
        let d = x.d;
        let c = per_part("glm_row_pairing", g.len(), x.n)?;
        check_len("glm_row_pairing vector", q.len(), c * d)?;
        let mut out = vec![0.0; x.n];
        per_row_products(x, q, &mut out, 1, |i, z, ri| {
            ri[0] = z
                .iter()
                .zip(&g[i * c..(i + 1) * c])
                .map(|(zk, gk)| zk * gk.to_f64())
                .sum();
        });
        Ok(out)
    }

    fn glm_add_row_outer(
        &self,
        x: &CpuMatrix<T>,
        coef: &[f64],
        g: &Vec<T>,
        batch: &mut Vec<T>,
    ) -> Result<()> {
        self.record_pass(x);
        let d = x.d;
        check_len("glm_add_row_outer coefficients", coef.len(), x.n)?;
        let c = per_part("glm_add_row_outer", g.len(), x.n)?;
        check_len("glm_add_row_outer batch", batch.len(), x.n * c * d)?;
        batch.par_chunks_mut(c * d).enumerate().for_each(|(i, vi)| {
            for k in 0..c {
                let a = coef[i] * g[i * c + k].to_f64();
                axpy(T::from_f64(a), x.row(i), &mut vi[k * d..(k + 1) * d]);
            }
        });
        Ok(())
    }

    fn group_dot(&self, groups: Groups, x: &Vec<T>, y: &Vec<T>) -> Result<Vec<f64>> {
        check_len("group_dot operand", y.len(), x.len())?;
        let mut out = vec![0.0; groups.count(x.len())];
        for (e, (&a, &b)) in x.iter().zip(y).enumerate() {
            out[groups.of(e)] += a.to_f64() * b.to_f64();
        }
        Ok(out)
    }

    fn group_expand(&self, groups: Groups, values: &[f64], len: usize) -> Result<Vec<T>> {
        check_len("group values", values.len(), groups.count(len))?;
        Ok((0..len)
            .map(|e| T::from_f64(values[groups.of(e)]))
            .collect())
    }

    fn group_scatter_add(
        &self,
        groups: Groups,
        coef: &[f64],
        w: &Vec<T>,
        batch: &mut Vec<T>,
    ) -> Result<()> {
        let len = w.len();
        let count = groups.count(len);
        check_len("group coefficients", coef.len(), count)?;
        check_len("group batch", batch.len(), count * len)?;
        for (e, &we) in w.iter().enumerate() {
            let l = groups.of(e);
            batch[l * len + e] += T::from_f64(coef[l]) * we;
        }
        Ok(())
    }

    fn gemm(
        &self,
        transpose_a: bool,
        transpose_b: bool,
        (m, n, k): (usize, usize, usize),
        alpha: f64,
        a: &Vec<T>,
        b: &Vec<T>,
        beta: f64,
        c: &mut Vec<T>,
    ) -> Result<()> {
        check_gemm((m, n, k), a.len(), b.len(), c.len())?;
        linalg::gemm(
            transpose_a,
            transpose_b,
            (m, n, k),
            T::from_f64(alpha),
            a,
            b,
            T::from_f64(beta),
            c,
        );
        Ok(())
    }

    fn set_diagonal(&self, a: &mut Vec<T>, diag: &Vec<T>, invert: bool) -> Result<()> {
        let p = diag.len();
        check_len("diagonal's matrix", a.len(), p * p)?;
        for (i, &v) in diag.iter().enumerate() {
            a[i * p + i] = if invert { T::one() / v } else { v };
        }
        Ok(())
    }

    fn direct_solve_max_dim(&self) -> usize {
        self.direct_solve_max_dim
    }

    fn kfac_damp(&self, xx: &mut Vec<T>, gg: &mut Vec<T>, lambda: &Vec<T>) -> Result<()> {
        let c = lambda.len();
        let d = square_side("K-FAC input factor", xx.len())?;
        check_len("K-FAC class factor", gg.len(), c * c)?;
        let mean_lambda = lambda.iter().map(|v| v.to_f64()).sum::<f64>() / c as f64;
        let tr_x = (0..d).map(|j| xx[j * d + j].to_f64()).sum::<f64>() / d as f64;
        let tr_g = (0..c).map(|k| gg[k * c + k].to_f64()).sum::<f64>() / c as f64;
        let pi = if tr_x > 0.0 && tr_g > 0.0 {
            (mean_lambda * tr_x / tr_g).sqrt()
        } else {
            mean_lambda.sqrt()
        };
        for j in 0..d {
            xx[j * d + j] = T::from_f64(xx[j * d + j].to_f64() + pi);
        }
        for (k, l) in lambda.iter().enumerate() {
            gg[k * c + k] = T::from_f64(gg[k * c + k].to_f64() + l.to_f64() / pi);
        }
        Ok(())
    }

    fn add_diagonal(&self, a: &mut Vec<T>, diag: &Vec<T>) -> Result<()> {
        let p = diag.len();
        check_len("diagonal's matrix", a.len(), p * p)?;
        for (i, &v) in diag.iter().enumerate() {
            a[i * p + i] += v;
        }
        Ok(())
    }

    fn syrk(&self, alpha: f64, a: &Vec<T>, m: usize, beta: f64, c: &mut Vec<T>) -> Result<()> {
        let p = per_part("syrk A", a.len(), m)?;
        check_len("syrk C", c.len(), p * p)?;
        linalg::syrk(T::from_f64(alpha), a, m, T::from_f64(beta), c);
        Ok(())
    }

    fn spd_solve(&self, a: &mut Vec<T>, b: &mut Vec<T>, nrhs: usize) -> Result<()> {
        let dim = square_side("spd_solve A", a.len())?;
        check_len("spd_solve right-hand sides", b.len(), nrhs * dim)?;
        // Factorised and solved in f64 whatever T is: the reference for the f32 backends.
        let mut l = to_f64(a);
        linalg::cholesky(&mut l, dim).map_err(|e| {
            Error::Numerical(format!(
                "spd_solve: the matrix is not positive definite ({e})"
            ))
        })?;
        let mut x = to_f64(b);
        linalg::cholesky_solve_rows(&l, dim, &mut x, nrhs);
        copy_from_f64(b, &x);
        copy_from_f64(a, &l);
        Ok(())
    }

    fn woodbury_update(&self, a: &mut Vec<T>, u: &Vec<T>, m: usize, alpha: f64) -> Result<()> {
        if !(alpha > 0.0 && alpha.is_finite()) {
            return Err(Error::Numerical(format!(
                "Woodbury update needs α > 0, got {alpha}"
            )));
        }
        let p = square_side("Woodbury A", a.len())?;
        check_len("Woodbury U", u.len(), m * p)?;
        // AUᵀ (p×m), then the capacitance S = I/α + U A Uᵀ (m×m, in f64).
        let mut au = vec![T::zero(); p * m];
        self.gemm(false, true, (p, m, p), 1.0, a, u, 0.0, &mut au)?;
        let mut s_t = vec![T::zero(); m * m];
        self.gemm(false, false, (m, m, p), 1.0, u, &au, 0.0, &mut s_t)?;
        let mut s = to_f64(&s_t);
        for i in 0..m {
            s[i * m + i] += 1.0 / alpha;
        }
        linalg::cholesky(&mut s, m).map_err(|e| {
            Error::Numerical(format!(
                "Woodbury update: the capacitance matrix is not positive definite ({e})"
            ))
        })?;
        // AUᵀ S⁻¹ UAᵀ = ZZᵀ with Z = AUᵀ L⁻ᵀ (p×m): each row of AUᵀ solved with L only.
        let mut z = to_f64(&au);
        linalg::cholesky_half_solve_rows(&s, m, &mut z, p);
        let z: Vec<T> = z.into_iter().map(T::from_f64).collect();
        // A ← A − ZZᵀ, a symmetric rank-m update as one GEMM (see `linalg::syrk` for why not
        // the triangle).
        linalg::gemm(false, true, (p, p, m), -T::one(), &z, &z, T::one(), a);
        Ok(())
    }

    fn glm_sgd_step(
        &self,
        x: &CpuMatrix<T>,
        loss: Loss,
        y: &Vec<T>,
        row_weights: Option<&Vec<T>>,
        rows: &Vec<usize>,
        reg: &Vec<T>,
        step: f64,
        w: &mut Vec<T>,
        factors: &mut Vec<T>,
    ) -> Result<()> {
        self.record_pass(x);
        let (c, d) = check_glm_operands(x, loss, y, row_weights, w)?;
        check_len("regulariser diagonal", reg.len(), c * d)?;
        check_len("per-sample factors", factors.len(), rows.len() * c)?;
        if rows.is_empty() {
            return Err(Error::Dimension(
                "an SGD step needs a non-empty batch".into(),
            ));
        }
        let mut grad = vec![T::zero(); c * d];
        let (mut z, mut g, mut p) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        for (pos, &i) in rows.iter().enumerate() {
            let xi = x.row(i);
            row_times(xi, w, &mut z);
            row_loss_grad(loss, &z, y[i].to_f64(), &mut g, &mut p);
            let weight = row_weights.map_or(1.0, |s| s[i].to_f64());
            for (k, &gk) in g.iter().enumerate() {
                factors[pos * c + k] = T::from_f64(gk);
                axpy(T::from_f64(weight * gk), xi, &mut grad[k * d..(k + 1) * d]);
            }
        }
        let (eta, inv_b) = (T::from_f64(step), T::from_f64(1.0 / rows.len() as f64));
        for ((we, &ge), &re) in w.iter_mut().zip(&grad).zip(reg) {
            *we = *we - eta * (inv_b * ge + re * *we);
        }
        Ok(())
    }

    fn glm_per_sample_gradients(
        &self,
        x: &CpuMatrix<T>,
        rows: &Vec<usize>,
        factors: &Vec<T>,
        scale: Option<&Vec<T>>,
        out: &mut Vec<T>,
    ) -> Result<()> {
        let b = rows.len();
        let c = per_part("per-sample factors", factors.len(), b)?;
        let d = x.d;
        check_len("per-sample gradients", out.len(), b * c * d)?;
        if let Some(s) = scale {
            check_len("per-sample scale", s.len(), b)?;
        }
        out.par_chunks_mut(c * d)
            .enumerate()
            .for_each(|(pos, row)| {
                let sp = scale.map_or(1.0, |s| s[pos].to_f64());
                let xi = x.row(rows[pos]);
                for k in 0..c {
                    let a = T::from_f64(sp * factors[pos * c + k].to_f64());
                    for (o, &xv) in row[k * d..(k + 1) * d].iter_mut().zip(xi) {
                        *o = a * xv;
                    }
                }
            });
        Ok(())
    }

    fn glm_kfac_factors(
        &self,
        x: &CpuMatrix<T>,
        rows: &Vec<usize>,
        factors: &Vec<T>,
        scale: Option<&Vec<T>>,
        alpha: f64,
        beta: f64,
        xx: &mut Vec<T>,
        gg: &mut Vec<T>,
    ) -> Result<()> {
        let b = rows.len();
        let c = per_part("per-sample factors", factors.len(), b)?;
        let d = x.d;
        let mut gathered = Vec::with_capacity(b * d);
        for &i in rows {
            gathered.extend_from_slice(x.row(i));
        }
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
        let weighted: Vec<T> = match scale {
            Some(s) => {
                check_len("per-sample scale", s.len(), b)?;
                factors
                    .chunks_exact(c)
                    .zip(s)
                    .flat_map(|(g, &sp)| g.iter().map(move |&v| sp * v))
                    .collect()
            }
            None => factors.clone(),
        };
        self.gemm(true, false, (c, c, b), alpha, &weighted, factors, beta, gg)
    }
}
