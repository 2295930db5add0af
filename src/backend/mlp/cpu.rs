//! The CPU twin of [`MlpOps`]: every pass is a handful of row-major GEMMs (faer, through
//! [`crate::linalg::gemm`]) over the `n` rows at once, with the activation and softmax steps
//! as loops over rows in between. Activations and per-row losses are evaluated in `f64` and
//! stored in the backend's precision `T`; the GEMMs run in `T`.

use rayon::prelude::*;

use super::{
    check_pass_rows, check_pass_shapes, Activation, Deltas, MlpData, MlpOps, Network, Tape,
};
use crate::backend::cpu::{class_of, softmax_into, CpuBackend, CpuMatrix, Real};
use crate::backend::shape::check_len;
use crate::error::{Error, Result};
use crate::linalg::gemm;

/// Below this many entries a row loop runs on one thread.
const PARALLEL_MIN: usize = 1 << 15;

/// `f(row_index, out_row, in_row)` over matching rows of two row-major matrices, in parallel
/// when they are large.
pub(super) fn zip_rows<T, F>(out: &mut [T], out_width: usize, inp: &[T], in_width: usize, f: F)
where
    T: Real,
    F: Fn(usize, &mut [T], &[T]) + Sync + Send,
{
    if out_width == 0 {
        return;
    }
    if out.len() >= PARALLEL_MIN {
        out.par_chunks_mut(out_width)
            .zip(inp.par_chunks(in_width.max(1)))
            .enumerate()
            .for_each(|(i, (o, x))| f(i, o, x));
    } else {
        out.chunks_mut(out_width)
            .zip(inp.chunks(in_width.max(1)))
            .enumerate()
            .for_each(|(i, (o, x))| f(i, o, x));
    }
}

/// The shapes every primitive checks: `x` has `d + 1` columns, `w` has P entries, the labels
/// and weights one per design row; returns the number of rows of the pass.
pub(super) fn check_data<T: Real>(
    net: &Network,
    data: MlpData<'_, CpuBackend<T>>,
    w: &[T],
) -> Result<usize> {
    let x = data.x;
    check_pass_shapes(
        net,
        (x.n, x.d),
        w.len(),
        data.y.len(),
        data.weights.map(|s| s.len()),
    )?;
    if let Some(rows) = data.rows {
        CpuBackend::<T>::check_rows_fit(rows, x.n)?;
    }
    check_pass_rows(data.rows.map_or(x.n, |r| r.len()))
}

/// The design row behind position `p` of the pass.
#[inline]
fn row_of(rows: Option<&Vec<usize>>, p: usize) -> usize {
    rows.map_or(p, |r| r[p])
}

/// `s_i` at every position of the pass (1 without weights).
pub(super) fn row_weights<T: Real>(data: MlpData<'_, CpuBackend<T>>, n: usize) -> Option<Vec<T>> {
    data.weights
        .map(|s| (0..n).map(|p| s[row_of(data.rows, p)]).collect())
}

/// `m` with row `p` multiplied by `s_p`.
fn scale_rows<T: Real>(m: &[T], width: usize, s: &[T]) -> Vec<T> {
    let mut out = m.to_vec();
    zip_rows(&mut out, width, s, 1, |_, row, sp| {
        row.iter_mut().for_each(|v| *v *= sp[0]);
    });
    out
}

/// Layer `l`'s block `Θ_l` of a parameter vector.
fn block<'a, T>(net: &Network, w: &'a [T], l: usize) -> &'a [T] {
    &w[net.offset(l)..net.offset(l) + net.block_len(l)]
}

/// The input `Ã_{l−1}` of layer `l`: the design (or the gathered batch) for `l = 0`.
fn layer_input<'a, T: Real>(
    x: &'a CpuMatrix<T>,
    tape: &'a Tape<CpuBackend<T>>,
    l: usize,
) -> &'a [T] {
    if l == 0 {
        tape.input.as_deref().unwrap_or(&x.data)
    } else {
        &tape.hidden[l - 1]
    }
}

/// `C ← A Bᵀ` for row-major `A` (n×k) and `B` (m×k): a layer applied to its input.
fn times_transpose<T: Real>(
    a: &[T],
    b: &[T],
    (n, m, k): (usize, usize, usize),
    c: &mut [T],
    beta: T,
) {
    gemm(false, true, (n, m, k), T::one(), a, b, beta, c);
}

/// The forward R-pass along `v`: `R z_l` (n×n_l) for every layer, and `R Ã_l = [R a_l | 0]`
/// (n×(n_l+1)) for the hidden layers.
fn forward_r<T: Real>(
    net: &Network,
    x: &CpuMatrix<T>,
    tape: &Tape<CpuBackend<T>>,
    w: &[T],
    v: &[T],
) -> (Vec<Vec<T>>, Vec<Vec<T>>) {
    forward_r_joint(net, x, tape, w, Some(v), None)
}

/// The forward R-pass along a joint direction of the weights (`v`, `None` for 0) and of the
/// input rows (`ra0 = R Ã₀ = [U | 0]`, n×(d+1), `None` for 0):
/// `R z_l = Ã_{l−1} V_lᵀ + R Ã_{l−1} Θ_lᵀ`, `R a_l = φ'(z_l) ⊙ R z_l`. Returns `R z_l` for
/// every layer and `R Ã_l` for the hidden layers.
fn forward_r_joint<T: Real>(
    net: &Network,
    x: &CpuMatrix<T>,
    tape: &Tape<CpuBackend<T>>,
    w: &[T],
    v: Option<&[T]>,
    ra0: Option<&[T]>,
) -> (Vec<Vec<T>>, Vec<Vec<T>>) {
    let n = tape.n;
    let act = net.activation();
    let layers = net.layers();
    let mut rz: Vec<Vec<T>> = Vec::with_capacity(layers);
    let mut ra: Vec<Vec<T>> = Vec::with_capacity(layers - 1);
    for l in 0..layers {
        let (fi, fo) = net.fans(l);
        let mut z = vec![T::zero(); n * fo];
        if let Some(v) = v {
            times_transpose(
                layer_input(x, tape, l),
                block(net, v, l),
                (n, fo, fi + 1),
                &mut z,
                T::one(),
            );
        }
        let r_input = if l == 0 { ra0 } else { Some(&ra[l - 1][..]) };
        if let Some(r_input) = r_input {
            times_transpose(r_input, block(net, w, l), (n, fo, fi + 1), &mut z, T::one());
        }
        if l + 1 < layers {
            let mut r = vec![T::zero(); n * (fo + 1)];
            let a = &tape.hidden[l];
            zip_rows(&mut r, fo + 1, &z, fo, |i, out, zr| {
                let ar = &a[i * (fo + 1)..(i + 1) * (fo + 1)];
                for k in 0..fo {
                    out[k] = T::from_f64(act.derivative(ar[k].to_f64())) * zr[k];
                }
            });
            ra.push(r);
        }
        rz.push(z);
    }
    (rz, ra)
}

/// `T_l = δ_l Θ_l` (n×(n_{l−1}+1)) for layers `l ≥ 1`: what the backward pass sends down
/// (the R-derivative's first term, [`r_sent_down`], with `R δ_l = δ_l` and no weight move).
fn sent_down<T: Real>(
    net: &Network,
    deltas: &Deltas<CpuBackend<T>>,
    w: &[T],
    n: usize,
    l: usize,
) -> Vec<T> {
    r_sent_down(net, deltas, w, None, &deltas.layers[l], n, l)
}

/// `δ_{l−1} = T[:, :n_{l−1}] ⊙ φ'(a_{l−1})`, with `a` the tape's `Ã_{l−1}`.
fn through_activation<T: Real>(
    act: Activation,
    t: &[T],
    a: &[T],
    width: usize,
    n: usize,
) -> Vec<T> {
    let mut d = vec![T::zero(); n * width];
    zip_rows(&mut d, width, t, width + 1, |i, out, tr| {
        let ar = &a[i * (width + 1)..(i + 1) * (width + 1)];
        for k in 0..width {
            out[k] = tr[k] * T::from_f64(act.derivative(ar[k].to_f64()));
        }
    });
    d
}

/// What the backward R-pass reuses for every direction: the row weights `s`, `s ⊙ δ_l` and
/// `T_l = δ_l Θ_l`.
pub(super) struct RPassFixed<T> {
    s: Option<Vec<T>>,
    weighted: Vec<Vec<T>>,
    sent: Vec<Vec<T>>,
}

impl<T: Real> RPassFixed<T> {
    pub(super) fn new(
        net: &Network,
        data: MlpData<'_, CpuBackend<T>>,
        deltas: &Deltas<CpuBackend<T>>,
        w: &[T],
        n: usize,
    ) -> Self {
        let s = row_weights(data, n);
        let weighted = (0..net.layers())
            .map(|l| match &s {
                Some(s) => scale_rows(&deltas.layers[l], net.fans(l).1, s),
                None => deltas.layers[l].clone(),
            })
            .collect();
        let sent = (0..net.layers())
            .map(|l| {
                if l == 0 {
                    Vec::new()
                } else {
                    sent_down(net, deltas, w, n, l)
                }
            })
            .collect();
        RPassFixed { s, weighted, sent }
    }
}

/// A direction of the R-operator: the weights by `V` and the input rows by `R Ã₀ = [U | 0]`
/// (n×(d+1)); `None` is 0.
#[derive(Clone, Copy)]
pub(super) struct RDirection<'a, T> {
    pub weights: Option<&'a [T]>,
    pub input: Option<&'a [T]>,
}

/// `R T_l = R δ_l Θ_l + δ_l V_l` (n×(n_{l−1}+1)), the R-derivative of what the backward pass
/// sends down through layer `l` (`V_l` omitted when the weights do not move).
pub(super) fn r_sent_down<T: Real>(
    net: &Network,
    deltas: &Deltas<CpuBackend<T>>,
    w: &[T],
    v: Option<&[T]>,
    rd: &[T],
    n: usize,
    l: usize,
) -> Vec<T> {
    let (fi, fo) = net.fans(l);
    let mut rt = vec![T::zero(); n * (fi + 1)];
    gemm(
        false,
        false,
        (n, fi + 1, fo),
        T::one(),
        rd,
        block(net, w, l),
        T::zero(),
        &mut rt,
    );
    if let Some(v) = v {
        gemm(
            false,
            false,
            (n, fi + 1, fo),
            T::one(),
            &deltas.layers[l],
            block(net, v, l),
            T::one(),
            &mut rt,
        );
    }
    rt
}

/// The R-pass of the per-row gradients along `dir`, the core of the Hessian-vector product
/// (module docs of [`super`]) and of the input cross derivatives ([`super::input`]): the
/// forward R-pass, `R δ_L = (diag p − p pᵀ) R z_L`, then down the layers
/// `R δ_{l−1} = R T_l ⊙ φ'(z_{l−1}) + T_l ⊙ φ''(z_{l−1}) ⊙ R z_{l−1}`. With `out = (α, o)` it
/// writes `o_{Θ_l} ← α Σ_i s_i (R δ_l ⊗ ã_{l−1} + δ_l ⊗ R ã_{l−1})` (P entries, `R ã₀` the
/// input's perturbation). Returns `R δ_1` (n×n₁), where the input's derivatives start.
#[allow(clippy::too_many_arguments)]
pub(super) fn r_pass<T: Real>(
    net: &Network,
    data: MlpData<'_, CpuBackend<T>>,
    tape: &Tape<CpuBackend<T>>,
    deltas: &Deltas<CpuBackend<T>>,
    w: &[T],
    fixed: &RPassFixed<T>,
    dir: RDirection<'_, T>,
    mut out: Option<(T, &mut [T])>,
) -> Vec<T> {
    let n = tape.n;
    let layers = net.layers();
    let c = net.outputs();
    let act = net.activation();
    let (rz, ra) = forward_r_joint(net, data.x, tape, w, dir.weights, dir.input);
    // R δ_L = (diag p − p pᵀ) R z_L, row by row.
    let mut rd = vec![T::zero(); n * c];
    zip_rows(&mut rd, c, &rz[layers - 1], c, |i, out, r| {
        let pr = &tape.probs[i * c..(i + 1) * c];
        let mean: f64 = pr.iter().zip(r).map(|(p, r)| p.to_f64() * r.to_f64()).sum();
        for k in 0..c {
            out[k] = T::from_f64(pr[k].to_f64() * (r[k].to_f64() - mean));
        }
    });
    for l in (0..layers).rev() {
        let (fi, fo) = net.fans(l);
        if let Some((alpha, o)) = out.as_mut() {
            let rd_w = match &fixed.s {
                Some(s) => scale_rows(&rd, fo, s),
                None => rd.clone(),
            };
            let o_l = &mut o[net.offset(l)..net.offset(l) + net.block_len(l)];
            // (R ∇ℓ)_{Θ_l} = Rδ_l ⊗ ã_{l−1} + δ_l ⊗ R ã_{l−1}, rows weighted by s.
            gemm(
                true,
                false,
                (fo, fi + 1, n),
                *alpha,
                &rd_w,
                layer_input(data.x, tape, l),
                T::zero(),
                o_l,
            );
            let r_input = if l == 0 {
                dir.input
            } else {
                Some(&ra[l - 1][..])
            };
            if let Some(r_input) = r_input {
                gemm(
                    true,
                    false,
                    (fo, fi + 1, n),
                    *alpha,
                    &fixed.weighted[l],
                    r_input,
                    T::one(),
                    o_l,
                );
            }
        }
        if l == 0 {
            break;
        }
        let rt = r_sent_down(net, deltas, w, dir.weights, &rd, n, l);
        let a = &tape.hidden[l - 1];
        let t = &fixed.sent[l];
        let rz_prev = &rz[l - 1];
        let mut next = vec![T::zero(); n * fi];
        zip_rows(&mut next, fi, &rt, fi + 1, |i, out, rtr| {
            let ar = &a[i * (fi + 1)..(i + 1) * (fi + 1)];
            let tr = &t[i * (fi + 1)..(i + 1) * (fi + 1)];
            let zr = &rz_prev[i * fi..(i + 1) * fi];
            for k in 0..fi {
                let ak = ar[k].to_f64();
                out[k] = T::from_f64(
                    rtr[k].to_f64() * act.derivative(ak)
                        + tr[k].to_f64() * act.second_derivative(ak) * zr[k].to_f64(),
                );
            }
        });
        rd = next;
    }
    rd
}

impl<T: Real> MlpOps for CpuBackend<T> {
    fn mlp_forward(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        w: &Vec<T>,
    ) -> Result<Tape<Self>> {
        let n = check_data(net, data, w)?;
        let x = data.x;
        let input = data.rows.map(|rows| {
            let mut gathered = Vec::with_capacity(rows.len() * x.d);
            for &r in rows {
                gathered.extend_from_slice(x.row(r));
            }
            gathered
        });
        let act = net.activation();
        let layers = net.layers();
        let c = net.outputs();
        let mut tape = Tape {
            n,
            input,
            hidden: Vec::with_capacity(layers - 1),
            probs: Vec::new(),
            losses: Vec::new(),
        };
        let mut logits = Vec::new();
        for l in 0..layers {
            let (fi, fo) = net.fans(l);
            let mut z = vec![T::zero(); n * fo];
            times_transpose(
                layer_input(x, &tape, l),
                block(net, w, l),
                (n, fo, fi + 1),
                &mut z,
                T::zero(),
            );
            if l + 1 < layers {
                let mut a = vec![T::zero(); n * (fo + 1)];
                zip_rows(&mut a, fo + 1, &z, fo, |_, out, zr| {
                    for k in 0..fo {
                        out[k] = T::from_f64(act.apply(zr[k].to_f64()));
                    }
                    out[fo] = T::one();
                });
                tape.hidden.push(a);
            } else {
                logits = z;
            }
        }
        // Softmax and CE = logsumexp(z) − z_y per row, in f64.
        let mut probs = vec![T::zero(); n * c];
        let mut losses = vec![T::zero(); n];
        let labels: Vec<usize> = (0..n)
            .map(|p| class_of(data.y[row_of(data.rows, p)].to_f64()))
            .collect();
        if let Some(p) = labels.iter().position(|&k| k >= c) {
            return Err(Error::Labels(format!(
                "label {} of row {} is not one of the network's {c} classes",
                labels[p],
                row_of(data.rows, p)
            )));
        }
        for p in 0..n {
            let z: Vec<f64> = logits[p * c..(p + 1) * c]
                .iter()
                .map(|v| v.to_f64())
                .collect();
            let mut pr = vec![0.0; c];
            let lse = softmax_into(&z, &mut pr);
            for k in 0..c {
                probs[p * c + k] = T::from_f64(pr[k]);
            }
            losses[p] = T::from_f64(lse - z[labels[p]]);
        }
        tape.probs = probs;
        tape.losses = losses;
        Ok(tape)
    }

    fn mlp_loss(&self, data: MlpData<'_, Self>, tape: &Tape<Self>) -> Result<f64> {
        check_len("tape losses", tape.losses.len(), tape.n)?;
        Ok(match data.weights {
            None => tape.losses.iter().map(|l| l.to_f64()).sum(),
            Some(s) => tape
                .losses
                .iter()
                .enumerate()
                .map(|(p, l)| s[row_of(data.rows, p)].to_f64() * l.to_f64())
                .sum(),
        })
    }

    fn mlp_backward(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        w: &Vec<T>,
    ) -> Result<Deltas<Self>> {
        let n = check_data(net, data, w)?;
        check_len("tape probabilities", tape.probs.len(), n * net.outputs())?;
        let layers = net.layers();
        let c = net.outputs();
        let mut out: Vec<Vec<T>> = vec![Vec::new(); layers];
        // δ_L = p − e_y.
        let mut top = tape.probs.clone();
        for p in 0..n {
            let k = class_of(data.y[row_of(data.rows, p)].to_f64());
            top[p * c + k] += T::from_f64(-1.0);
        }
        out[layers - 1] = top;
        let mut deltas = Deltas { layers: out };
        for l in (1..layers).rev() {
            let (fi, _) = net.fans(l);
            let t = sent_down(net, &deltas, w, n, l);
            deltas.layers[l - 1] =
                through_activation(net.activation(), &t, &tape.hidden[l - 1], fi, n);
        }
        Ok(deltas)
    }

    fn mlp_gradient(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        scale: f64,
        grad: &mut Vec<T>,
    ) -> Result<()> {
        check_len("gradient", grad.len(), net.dim())?;
        let n = tape.n;
        let s = row_weights(data, n);
        for l in 0..net.layers() {
            let (fi, fo) = net.fans(l);
            let delta = match &s {
                Some(s) => scale_rows(&deltas.layers[l], fo, s),
                None => deltas.layers[l].clone(),
            };
            let out = &mut grad[net.offset(l)..net.offset(l) + net.block_len(l)];
            // ∇_{Θ_l} = scale · (s ⊙ δ_l)ᵀ Ã_{l−1}.
            gemm(
                true,
                false,
                (fo, fi + 1, n),
                T::from_f64(scale),
                &delta,
                layer_input(data.x, tape, l),
                T::zero(),
                out,
            );
        }
        Ok(())
    }

    fn mlp_per_sample_gradients(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        coef: Option<&Vec<T>>,
        out: &mut Vec<T>,
    ) -> Result<()> {
        let n = tape.n;
        let dim = net.dim();
        check_len("per-sample gradients", out.len(), n * dim)?;
        if let Some(c) = coef {
            check_len("per-sample coefficients", c.len(), n)?;
        }
        let inputs: Vec<&[T]> = (0..net.layers())
            .map(|l| layer_input(data.x, tape, l))
            .collect();
        let fill = |p: usize, row: &mut [T]| {
            let cp = coef.map_or(T::one(), |c| c[p]);
            for (l, input) in inputs.iter().enumerate() {
                let (fi, fo) = net.fans(l);
                let a = &input[p * (fi + 1)..(p + 1) * (fi + 1)];
                let d = &deltas.layers[l][p * fo..(p + 1) * fo];
                let blk = &mut row[net.offset(l)..net.offset(l) + net.block_len(l)];
                for k in 0..fo {
                    let dk = cp * d[k];
                    for (o, &aj) in blk[k * (fi + 1)..(k + 1) * (fi + 1)].iter_mut().zip(a) {
                        *o = dk * aj;
                    }
                }
            }
        };
        if out.len() >= PARALLEL_MIN {
            out.par_chunks_mut(dim)
                .enumerate()
                .for_each(|(p, row)| fill(p, row));
        } else {
            out.chunks_mut(dim)
                .enumerate()
                .for_each(|(p, row)| fill(p, row));
        }
        Ok(())
    }

    fn mlp_directional(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        w: &Vec<T>,
        q: &Vec<T>,
    ) -> Result<Vec<f64>> {
        let n = check_data(net, data, w)?;
        check_len("direction", q.len(), net.dim())?;
        let c = net.outputs();
        let (rz, _) = forward_r(net, data.x, tape, w, q);
        let top = &rz[net.layers() - 1];
        Ok((0..n)
            .map(|p| {
                let k = class_of(data.y[row_of(data.rows, p)].to_f64());
                (0..c)
                    .map(|j| {
                        let g = tape.probs[p * c + j].to_f64() - if j == k { 1.0 } else { 0.0 };
                        g * top[p * c + j].to_f64()
                    })
                    .sum()
            })
            .collect())
    }

    fn mlp_hvp(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        w: &Vec<T>,
        scale: f64,
        shift: f64,
        v: &Vec<T>,
        out: &mut Vec<T>,
    ) -> Result<()> {
        let n = check_data(net, data, w)?;
        let dim = net.dim();
        check_len("hvp output", out.len(), v.len())?;
        if v.len() % dim != 0 {
            return Err(Error::Dimension(format!(
                "hvp batch: {} entries are not a multiple of P = {dim}",
                v.len()
            )));
        }
        let c = net.outputs();
        let fixed = RPassFixed::new(net, data, deltas, w, n);
        let scale_t = T::from_f64(scale);
        let (bias_start, bias_stride) = net.output_bias();
        for (vb, ob) in v.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            r_pass(
                net,
                data,
                tape,
                deltas,
                w,
                &fixed,
                RDirection {
                    weights: Some(vb),
                    input: None,
                },
                Some((scale_t, ob)),
            );
            if shift != 0.0 {
                // shift (uᵀv) u with u = 1/√c on the output bias: each bias entry gains
                // shift · (Σ_k v_{b_k}) / c.
                let sum: f64 = (0..c)
                    .map(|k| vb[bias_start + k * bias_stride].to_f64())
                    .sum();
                let add = T::from_f64(shift * sum / c as f64);
                for k in 0..c {
                    let e = bias_start + k * bias_stride;
                    ob[e] += add;
                }
            }
        }
        Ok(())
    }

    fn mlp_kfac_factors(
        &self,
        net: &Network,
        data: MlpData<'_, Self>,
        tape: &Tape<Self>,
        deltas: &Deltas<Self>,
        alpha: f64,
        beta: f64,
        aa: &mut [Vec<T>],
        gg: &mut [Vec<T>],
    ) -> Result<()> {
        let layers = net.layers();
        if aa.len() != layers || gg.len() != layers {
            return Err(Error::Dimension(format!(
                "K-FAC factors: {} input and {} gradient factors for {layers} layers",
                aa.len(),
                gg.len()
            )));
        }
        let n = tape.n;
        let s = row_weights(data, n);
        let (a, b) = (T::from_f64(alpha), T::from_f64(beta));
        for l in 0..layers {
            let (fi, fo) = net.fans(l);
            check_len("K-FAC input factor", aa[l].len(), (fi + 1) * (fi + 1))?;
            check_len("K-FAC gradient factor", gg[l].len(), fo * fo)?;
            let input = layer_input(data.x, tape, l);
            gemm(
                true,
                false,
                (fi + 1, fi + 1, n),
                a,
                input,
                input,
                b,
                &mut aa[l],
            );
            let delta = &deltas.layers[l];
            let weighted = match &s {
                Some(s) => scale_rows(delta, fo, s),
                None => delta.clone(),
            };
            gemm(true, false, (fo, fo, n), a, &weighted, delta, b, &mut gg[l]);
        }
        Ok(())
    }

    fn copy_range(
        &self,
        src: &Vec<T>,
        src_offset: usize,
        dst: &mut Vec<T>,
        dst_offset: usize,
        len: usize,
    ) -> Result<()> {
        if src_offset + len > src.len() || dst_offset + len > dst.len() {
            return Err(Error::Dimension(format!(
                "copy_range: {len} entries from {src_offset} of {} into {dst_offset} of {}",
                src.len(),
                dst.len()
            )));
        }
        dst[dst_offset..dst_offset + len].copy_from_slice(&src[src_offset..src_offset + len]);
        Ok(())
    }
}
