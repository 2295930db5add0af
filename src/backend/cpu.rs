//! The CPU backend: the readable reference implementation of the core [`Backend`] (buffers,
//! BLAS-1, GEMM and SYRK through faer), in `f32` or `f64`, parallel with rayon. Its twins of
//! the op families live with the families (`glm/cpu.rs`, `fisher/cpu.rs`, `mlp/cpu.rs`,
//! `sparse/cpu.rs`); this file also holds the scalar arithmetic they share (the stable
//! softplus, sigmoid and softmax).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ndarray::Array2;
use rayon::prelude::*;

pub use super::real::Real;
use super::shape::{check_gemm, check_len, per_part};
use super::skinny;
use super::{AdamCoefficients, Backend, Groups, Precision};
use crate::error::{Error, Result};
use crate::linalg;

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
    /// See [`crate::backend::FisherOps::direct_solve_max_dim`]: 0 (always CG) unless a test asks otherwise.
    pub(in crate::backend) direct_solve_max_dim: usize,
    /// A device's memory, simulated: no single buffer may exceed this many bytes
    /// (`HYPERGRAD_CPU_ALLOC_LIMIT`; `None`: the host's own limits), so that the path of a
    /// device allocation that fails is exercised without a GPU.
    allocation_limit: Option<u64>,
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
    /// [`crate::backend::FisherOps::direct_solve_max_dim`] (default 0: CG), so that the CG-against-Cholesky
    /// comparison in BENCHMARKS.md can be rerun without rebuilding.
    pub fn new() -> Self {
        CpuBackend {
            counters: Arc::default(),
            direct_solve_max_dim: direct_solve_max_dim_from_env(),
            allocation_limit: allocation_limit_from_env(),
            _precision: PhantomData,
        }
    }

    /// The same backend standing in for a device of `bytes` bytes: any buffer larger than that
    /// is refused as a device allocation would be (see `allocation_limit`).
    pub fn with_allocation_limit(mut self, bytes: u64) -> Self {
        self.allocation_limit = Some(bytes);
        self
    }

    /// Refuses a buffer of `len` entries above the simulated device's memory.
    fn check_allocation(&self, len: usize, what: &str) -> Result<()> {
        let bytes = (len as u64).saturating_mul(std::mem::size_of::<T>() as u64);
        match self.allocation_limit {
            Some(limit) if bytes > limit => Err(crate::Error::Memory(format!(
                "cannot allocate {} for {what} on the stand-in device ({} free; {ALLOC_LIMIT_ENV})",
                crate::memory::human(bytes),
                crate::memory::human(limit)
            ))),
            _ => Ok(()),
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

    fn convert(&self, host: &[f64]) -> Result<Vec<T>> {
        self.check_allocation(host.len(), "a buffer")?;
        let mut v = Vec::new();
        crate::memory::reserve(&mut v, host.len(), "a host buffer")?;
        v.extend(host.iter().map(|&v| T::from_f64(v)));
        Ok(v)
    }

    fn checked_rows(rows: &[u32], n: usize) -> Result<Vec<usize>> {
        match rows.iter().find(|&&r| r as usize >= n) {
            Some(r) => Err(Error::Dimension(format!("row index {r} is not below {n}"))),
            None => Ok(rows.iter().map(|&r| r as usize).collect()),
        }
    }

    /// Refuses row indices (a mini-batch uploaded for some design) that a design of `n` rows
    /// does not have, before a kernel indexes with them.
    pub(in crate::backend) fn check_rows_fit(rows: &[usize], n: usize) -> Result<()> {
        match rows.iter().find(|&&r| r >= n) {
            Some(r) => Err(Error::Dimension(format!("row index {r} is not below {n}"))),
            None => Ok(()),
        }
    }

    pub(in crate::backend) fn record_pass(&self, x: &CpuMatrix<T>) {
        let bytes = (x.data.len() * std::mem::size_of::<T>()) as u64;
        self.counters.passes.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

// ---- vector kernels shared by the row kernels ------------------------------------------------

/// `aᵀb` in precision `T` (`skinny::rows_times` with one row: vectorised for the CPU at
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
pub(in crate::backend) const PARALLEL_MIN_WORK: usize = 1 << 16;

const DIRECT_SOLVE_ENV: &str = "HYPERGRAD_CPU_DIRECT_SOLVE_MAX_DIM";
const ALLOC_LIMIT_ENV: &str = "HYPERGRAD_CPU_ALLOC_LIMIT";

/// `HYPERGRAD_CPU_ALLOC_LIMIT` (bytes), or `None` when unset, empty or not a number.
fn allocation_limit_from_env() -> Option<u64> {
    std::env::var(ALLOC_LIMIT_ENV).ok()?.trim().parse().ok()
}

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
pub(in crate::backend) fn to_f64<T: Real>(x: &[T]) -> Vec<f64> {
    x.iter().map(|v| v.to_f64()).collect()
}

/// `dst ← src`, rounded to `T`.
pub(in crate::backend) fn copy_from_f64<T: Real>(dst: &mut [T], src: &[f64]) {
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
        self.check_allocation(len, "a buffer")?;
        crate::memory::try_vec(len, T::zero(), "a host buffer")
    }

    fn upload(&self, host: &[f64]) -> Result<Vec<T>> {
        self.record_upload();
        self.convert(host)
    }

    fn memory_room(&self) -> Option<(u64, &'static str)> {
        let host = crate::memory::available_host_bytes();
        match (self.allocation_limit, host) {
            (Some(limit), host) => Some((limit.min(host.unwrap_or(u64::MAX)), "stand-in device")),
            (None, Some(host)) => Some((host, "host")),
            (None, None) => None,
        }
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
        self.check_allocation(n * d, "the design matrix")?;
        let mut data = Vec::new();
        crate::memory::reserve(&mut data, n * d, "the design matrix")?;
        data.extend(x.iter().map(|&v| T::from_f64(v)));
        Ok(CpuMatrix { n, d, data })
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
        host.chunks(part.max(1)).map(|h| self.convert(h)).collect()
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

    fn adam_update(
        &self,
        k: AdamCoefficients,
        grad: &Vec<T>,
        (m, v): (&mut Vec<T>, &mut Vec<T>),
        w: &mut Vec<T>,
    ) -> Result<()> {
        check_len("adam_update gradient", grad.len(), w.len())?;
        check_len("adam_update first moment", m.len(), w.len())?;
        check_len("adam_update second moment", v.len(), w.len())?;
        let (b1, b2) = (T::from_f64(k.beta1), T::from_f64(k.beta2));
        let (step, eps) = (T::from_f64(k.step), T::from_f64(k.eps));
        let one = T::from_f64(1.0);
        let (c1, c2) = (one - b1, one - b2);
        // Rounded operation by operation as hg_adam_apply (blas1.cu) rounds them.
        for (((we, &ge), me), ve) in w.iter_mut().zip(grad).zip(m.iter_mut()).zip(v.iter_mut()) {
            *me = b1 * *me + c1 * ge;
            *ve = b2 * *ve + c2 * (ge * ge);
            *we -= step * (*me / (ve.square_root() + eps));
        }
        Ok(())
    }

    fn batched_dot(&self, batch: &Vec<T>, v: &Vec<T>) -> Result<Vec<f64>> {
        per_part("batched_dot", batch.len(), v.len())?;
        Ok(batch.chunks_exact(v.len()).map(|b| dot_f64(b, v)).collect())
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

    fn syrk(&self, alpha: f64, a: &Vec<T>, m: usize, beta: f64, c: &mut Vec<T>) -> Result<()> {
        let p = per_part("syrk A", a.len(), m)?;
        check_len("syrk C", c.len(), p * p)?;
        linalg::syrk(T::from_f64(alpha), a, m, T::from_f64(beta), c);
        Ok(())
    }
}
