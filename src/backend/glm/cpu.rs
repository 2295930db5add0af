//! The CPU twin of [`GlmOps`]: the readable reference of every GLM kernel, parallel over
//! blocks of rows with rayon.
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

use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::{check_operands, check_per_sample, check_sgd_operands, check_softmax_rows};
use super::{Curvature, GlmOps, Loss};
use crate::backend::cpu::{
    axpy, class_of, sigmoid, softmax_into, softplus, CpuBackend, CpuMatrix, Real, PARALLEL_MIN_WORK,
};
use crate::backend::shape::{check_len, per_part};
use crate::backend::skinny::{self, SKINNY_MAX_WIDTH};
use crate::backend::Backend;
use crate::error::Result;

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

impl<T: Real> CpuBackend<T> {
    /// `Σ_p s_{r_p} G_p ⊗ x_{r_p}` over the rows of a mini-batch, with `factors_p ← G_p`: the
    /// sum that an SGD step and the mini-batch gradient both scale by `1/b`.
    #[allow(clippy::too_many_arguments)]
    fn batch_sum(
        &self,
        x: &CpuMatrix<T>,
        loss: Loss,
        y: &[T],
        row_weights: Option<&Vec<T>>,
        rows: &[usize],
        (reg, w): (&[T], &[T]),
        factors: &mut [T],
    ) -> Result<Vec<T>> {
        self.record_pass(x);
        let (c, d) = check_operands(
            loss,
            (x.n, x.d),
            y.len(),
            row_weights.map(|s| s.len()),
            w.len(),
        )?;
        check_sgd_operands((c, d), rows.len(), reg.len(), factors.len())?;
        Self::check_rows_fit(rows, x.n)?;
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
        Ok(grad)
    }
}

impl<T: Real> GlmOps for CpuBackend<T> {
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
        let (c, d) = check_operands(
            loss,
            (x.n, x.d),
            y.len(),
            row_weights.map(|s| s.len()),
            w.len(),
        )?;
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
        let (c, _) = check_operands(
            loss,
            (x.n, x.d),
            y.len(),
            row_weights.map(|s| s.len()),
            w.len(),
        )?;
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
        let (c, _) = check_operands(loss, (x.n, x.d), y.len(), None, w.len())?;
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

    fn glm_softmax_curvature_rows(
        &self,
        probs: &Vec<T>,
        classes: usize,
        a: &mut Vec<T>,
    ) -> Result<()> {
        check_softmax_rows(classes, probs.len(), a.len())?;
        for (p, r) in probs.chunks_exact(classes).zip(a.chunks_exact_mut(classes)) {
            let pa: f64 = p
                .iter()
                .zip(r.iter())
                .map(|(pk, rk)| pk.to_f64() * rk.to_f64())
                .sum();
            for (rk, pk) in r.iter_mut().zip(p) {
                *rk = T::from_f64(pk.to_f64() * (rk.to_f64() - pa));
            }
        }
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
        let grad = self.batch_sum(x, loss, y, row_weights, rows, (reg, w), factors)?;
        let (eta, inv_b) = (T::from_f64(step), T::from_f64(1.0 / rows.len() as f64));
        for ((we, &ge), &re) in w.iter_mut().zip(&grad).zip(reg) {
            *we = *we - eta * (inv_b * ge + re * *we);
        }
        Ok(())
    }

    fn glm_batch_gradient(
        &self,
        x: &CpuMatrix<T>,
        loss: Loss,
        y: &Vec<T>,
        row_weights: Option<&Vec<T>>,
        rows: &Vec<usize>,
        reg: &Vec<T>,
        w: &Vec<T>,
        out: &mut Vec<T>,
        factors: &mut Vec<T>,
    ) -> Result<()> {
        check_len("batch gradient", out.len(), w.len())?;
        let grad = self.batch_sum(x, loss, y, row_weights, rows, (reg, w), factors)?;
        let inv_b = T::from_f64(1.0 / rows.len() as f64);
        for (((oe, &ge), &re), &we) in out.iter_mut().zip(&grad).zip(reg).zip(w) {
            *oe = inv_b * ge + re * we;
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
        let c = check_per_sample(b, factors.len(), scale.map(|s| s.len()))?;
        let d = x.d;
        check_len("per-sample gradients", out.len(), b * c * d)?;
        Self::check_rows_fit(rows, x.n)?;
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
        let c = check_per_sample(b, factors.len(), scale.map(|s| s.len()))?;
        let d = x.d;
        check_len("K-FAC input factor", xx.len(), d * d)?;
        check_len("K-FAC output factor", gg.len(), c * c)?;
        Self::check_rows_fit(rows, x.n)?;
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
            Some(s) => factors
                .chunks_exact(c)
                .zip(s)
                .flat_map(|(g, &sp)| g.iter().map(move |&v| sp * v))
                .collect(),
            None => factors.clone(),
        };
        self.gemm(true, false, (c, c, b), alpha, &weighted, factors, beta, gg)
    }
}
