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

use ndarray::Array2;
use rayon::prelude::*;

use super::{Backend, Curvature, Groups, Loss, Precision};
use crate::error::{Error, Result};

/// Scalar type of the CPU backend (`f32` or `f64`).
pub trait Real:
    Copy
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

/// The CPU backend in precision `T`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend<T> {
    _precision: PhantomData<T>,
}

impl<T: Real> CpuBackend<T> {
    pub fn new() -> Self {
        CpuBackend {
            _precision: PhantomData,
        }
    }
}

// ---- vector kernels shared by the row kernels ------------------------------------------------

/// Independent accumulators in [`dot`]: enough for the compiler to vectorise and hide the
/// latency of the adds.
const LANES: usize = 16;

/// `aᵀb` in precision `T`, with [`LANES`] partial sums.
#[inline]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [T::default(); LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += xa[l] * xb[l];
        }
    }
    let mut tail = T::default();
    for (&p, &q) in ra.iter().zip(rb) {
        tail += p * q;
    }
    // Pairwise reduction of the lanes.
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            let hi = acc[l + width];
            acc[l] += hi;
        }
    }
    acc[0] + tail
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

// ---- per-row loss arithmetic (f64) ------------------------------------------------------------

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
fn softmax_into(z: &[f64], p: &mut [f64]) -> f64 {
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
fn class_of(label: f64) -> usize {
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

/// Streams the rows of `x` in parallel blocks. For each row `i`, `visit(i, x_i, acc, scratch)`
/// adds its contribution into `acc` (length `acc_len`) and returns a scalar; the per-block
/// accumulators and scalars are summed. `scratch` holds `scratch_len` f64.
fn stream_rows<T, F>(
    x: &CpuMatrix<T>,
    acc_len: usize,
    scratch_len: usize,
    visit: F,
) -> (Vec<T>, f64)
where
    T: Real,
    F: Fn(usize, &[T], &mut [T], &mut [f64]) -> f64 + Sync,
{
    let d = x.d.max(1);
    let work = x.n * d * (1 + acc_len / d);
    let block_rows = if work < PARALLEL_MIN_WORK {
        x.n.max(1)
    } else {
        // Enough blocks to balance the threads, few enough that reducing the accumulators
        // (acc_len each) stays cheap next to streaming the rows.
        let threads = rayon::current_num_threads().max(1);
        x.n.div_ceil(4 * threads).max(64)
    };
    let run_block = |(b, rows): (usize, &[T])| {
        let mut acc = vec![T::default(); acc_len];
        let mut scratch = vec![0.0; scratch_len];
        let mut total = 0.0;
        for (r, xi) in rows.chunks_exact(d).enumerate() {
            total += visit(b * block_rows + r, xi, &mut acc, &mut scratch);
        }
        (acc, total)
    };
    let sum = |(mut a, s): (Vec<T>, f64), (b, t): (Vec<T>, f64)| {
        for (ai, &bi) in a.iter_mut().zip(&b) {
            *ai += bi;
        }
        (a, s + t)
    };
    let identity = || (vec![T::default(); acc_len], 0.0);
    if x.n == 0 {
        return identity();
    }
    if block_rows >= x.n {
        run_block((0, &x.data[..]))
    } else {
        x.data
            .par_chunks(block_rows * d)
            .enumerate()
            .map(run_block)
            .reduce(identity, sum)
    }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Dimension(format!(
            "{what} has {got} entries, expected {want}"
        )))
    }
}

impl<T: Real> Backend for CpuBackend<T> {
    type Buf = Vec<T>;
    type Design = CpuMatrix<T>;

    fn name(&self) -> String {
        format!("cpu-{}", T::PRECISION)
    }

    fn precision(&self) -> Precision {
        T::PRECISION
    }

    fn zeros(&self, len: usize) -> Result<Vec<T>> {
        Ok(vec![T::default(); len])
    }

    fn upload(&self, host: &[f64]) -> Result<Vec<T>> {
        Ok(host.iter().map(|&v| T::from_f64(v)).collect())
    }

    fn download(&self, buf: &Vec<T>) -> Result<Vec<f64>> {
        Ok(buf.iter().map(|v| v.to_f64()).collect())
    }

    fn len(&self, buf: &Vec<T>) -> usize {
        buf.len()
    }

    fn upload_design(&self, x: &Array2<f64>) -> Result<CpuMatrix<T>> {
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
        if a.is_empty() || x.len() % a.len() != 0 {
            return Err(Error::Dimension(format!(
                "mul_add: batch of {} entries is not a multiple of {}",
                x.len(),
                a.len()
            )));
        }
        let al = T::from_f64(alpha);
        for (yb, xb) in y.chunks_exact_mut(a.len()).zip(x.chunks_exact(a.len())) {
            for ((yi, &xi), &ai) in yb.iter_mut().zip(xb).zip(a) {
                *yi += al * ai * xi;
            }
        }
        Ok(())
    }

    fn batched_dot(&self, batch: &Vec<T>, v: &Vec<T>) -> Result<Vec<f64>> {
        if v.is_empty() || batch.len() % v.len() != 0 {
            return Err(Error::Dimension(format!(
                "batched_dot: batch of {} entries is not a multiple of {}",
                batch.len(),
                v.len()
            )));
        }
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
        let c = loss.outputs();
        let d = x.d;
        check_len("labels", y.len(), x.n)?;
        check_len("inner variable", w.len(), c * d)?;
        if let Some(s) = row_weights {
            check_len("row weights", s.len(), x.n)?;
        }
        let want_grad = grad.is_some();
        let acc_len = if want_grad { c * d } else { 0 };
        // scratch: z (c) | g (c) | p (c)
        let (acc, total) = stream_rows(x, acc_len, 3 * c, |i, xi, acc, scratch| {
            let (z, rest) = scratch.split_at_mut(c);
            let (g, p) = rest.split_at_mut(c);
            for (k, zk) in z.iter_mut().enumerate() {
                *zk = dot(&w[k * d..(k + 1) * d], xi).to_f64();
            }
            let weight = row_weights.map_or(1.0, |s| s[i].to_f64());
            let value = row_loss_grad(loss, z, y[i].to_f64(), g, p);
            if want_grad && weight != 0.0 {
                for (k, &gk) in g.iter().enumerate() {
                    axpy(T::from_f64(weight * gk), xi, &mut acc[k * d..(k + 1) * d]);
                }
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
        let c = loss.outputs();
        let d = x.d;
        check_len("labels", y.len(), x.n)?;
        check_len("inner variable", w.len(), c * d)?;
        let weight = |i: usize| scale * row_weights.map_or(1.0, |s| s[i].to_f64());
        let mut row_scale = vec![T::default(); x.n];
        let mut probs = match loss {
            Loss::Softmax { .. } => Some(vec![T::default(); x.n * c]),
            _ => None,
        };
        let z_of = |i: usize, z: &mut [f64]| {
            for (k, zk) in z.iter_mut().enumerate() {
                *zk = dot(&w[k * d..(k + 1) * d], x.row(i)).to_f64();
            }
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
        let c = curvature.loss.outputs();
        let d = x.d;
        let p_len = c * d;
        if p_len == 0 || v.len() % p_len != 0 {
            return Err(Error::Dimension(format!(
                "glm_hvp: batch of {} entries is not a multiple of P = {p_len}",
                v.len()
            )));
        }
        check_len("glm_hvp output", out.len(), v.len())?;
        let rows = v.len() / d; // m·c rows of the batch
        let (acc, _) = stream_rows(x, v.len(), rows, |i, xi, acc, zv| {
            for (r, z) in zv.iter_mut().enumerate() {
                *z = dot(&v[r * d..(r + 1) * d], xi).to_f64();
            }
            let scale = curvature.row_scale[i].to_f64();
            match &curvature.probs {
                None => zv.iter_mut().for_each(|z| *z *= scale),
                Some(probs) => {
                    // (diag(p) − ppᵀ) u = p ⊙ (u − pᵀu), per vector of the batch.
                    let p = &probs[i * c..(i + 1) * c];
                    for u in zv.chunks_exact_mut(c) {
                        let pu: f64 = u.iter().zip(p).map(|(a, b)| a * b.to_f64()).sum();
                        for (uk, pk) in u.iter_mut().zip(p) {
                            *uk = scale * pk.to_f64() * (*uk - pu);
                        }
                    }
                }
            }
            for (r, &u) in zv.iter().enumerate() {
                if u != 0.0 {
                    axpy(T::from_f64(u), xi, &mut acc[r * d..(r + 1) * d]);
                }
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
        let c = loss.outputs();
        let d = x.d;
        check_len("labels", y.len(), x.n)?;
        check_len("inner variable", w.len(), c * d)?;
        let mut out = vec![T::default(); x.n * c];
        out.par_chunks_mut(c).enumerate().for_each(|(i, gi)| {
            let mut z = vec![0.0; c];
            let mut g = vec![0.0; c];
            let mut p = vec![0.0; c];
            for (k, zk) in z.iter_mut().enumerate() {
                *zk = dot(&w[k * d..(k + 1) * d], x.row(i)).to_f64();
            }
            row_loss_grad(loss, &z, y[i].to_f64(), &mut g, &mut p);
            for (dst, &src) in gi.iter_mut().zip(&g) {
                *dst = T::from_f64(src);
            }
        });
        Ok(out)
    }

    fn glm_row_pairing(&self, x: &CpuMatrix<T>, q: &Vec<T>, g: &Vec<T>) -> Result<Vec<f64>> {
        let d = x.d;
        if x.n == 0 || g.len() % x.n != 0 {
            return Err(Error::Dimension(format!(
                "glm_row_pairing: {} factors for {} rows",
                g.len(),
                x.n
            )));
        }
        let c = g.len() / x.n;
        check_len("glm_row_pairing vector", q.len(), c * d)?;
        Ok((0..x.n)
            .into_par_iter()
            .map(|i| {
                let xi = x.row(i);
                (0..c)
                    .map(|k| dot(&q[k * d..(k + 1) * d], xi).to_f64() * g[i * c + k].to_f64())
                    .sum()
            })
            .collect())
    }

    fn glm_add_row_outer(
        &self,
        x: &CpuMatrix<T>,
        coef: &[f64],
        g: &Vec<T>,
        batch: &mut Vec<T>,
    ) -> Result<()> {
        let d = x.d;
        check_len("glm_add_row_outer coefficients", coef.len(), x.n)?;
        if x.n == 0 || g.len() % x.n != 0 {
            return Err(Error::Dimension(format!(
                "glm_add_row_outer: {} factors for {} rows",
                g.len(),
                x.n
            )));
        }
        let c = g.len() / x.n;
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
}
