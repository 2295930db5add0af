//! The network primitives ([`MlpOps`], SPEC §8) against independent references in f64 on
//! random small networks (both activations, one and two hidden layers, with and without row
//! weights and mini-batches):
//!
//! * loss against the naive row-by-row reference of `mlp_common`;
//! * gradient against central differences of the reference loss, and against the reference's
//!   own backpropagation;
//! * Hessian-vector products (several vectors at once) against central differences of the
//!   gradient, their symmetry, and the softmax shift direction;
//! * per-sample gradients against single-row gradients (and their weighted sum against the
//!   batch gradient), directional derivatives against per-sample gradients and central
//!   differences of each row's loss;
//! * K-FAC factors against explicit sums and, for one row, the Kronecker product against the
//!   per-sample gradient's outer product.

// The references index rows and layers the way the formulas do.
#![allow(clippy::needless_range_loop)]

mod mlp_common;

use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::mlp::{Activation, MlpData, MlpOps, Network};
use hypergrad::backend::Backend;
use hypergrad::data::rng::Rng;
use mlp_common::{random_params, random_rows, rel_err, with_ones, RefNet};
use ndarray::Array2;

type B64 = CpuBackend<f64>;

/// One random instance: network, parameters, rows, labels, row weights.
struct Case {
    net: RefNet,
    w: Vec<f64>,
    x: Array2<f64>,
    y: Vec<f64>,
    s: Vec<f64>,
}

fn case(sizes: &[usize], act: Activation, n: usize, seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let net = RefNet::new(sizes, act);
    let w = random_params(&net, 1.5, &mut rng);
    let (x, y) = random_rows(n, sizes[0], *sizes.last().unwrap(), &mut rng);
    let s = (0..n).map(|_| 0.2 + rng.uniform()).collect();
    Case { net, w, x, y, s }
}

/// The shapes every test runs on.
fn cases(seed: u64) -> Vec<Case> {
    let mut out = Vec::new();
    for (i, act) in [Activation::Tanh, Activation::Relu].into_iter().enumerate() {
        let base = seed + 10 * i as u64;
        out.push(case(&[3, 4, 3], act, 9, base));
        out.push(case(&[4, 5, 3, 4], act, 11, base + 1));
        out.push(case(&[2, 3], act, 7, base + 2)); // no hidden layer
    }
    out
}

/// The design, labels and weights of a case on the backend.
struct Uploaded {
    x: <B64 as Backend>::Design,
    y: Vec<f64>,
    s: Vec<f64>,
    w: Vec<f64>,
    net: Network,
}

fn upload(b: &B64, c: &Case) -> Uploaded {
    Uploaded {
        x: b.upload_design(&with_ones(&c.x)).unwrap(),
        y: b.upload(&c.y).unwrap(),
        s: b.upload(&c.s).unwrap(),
        w: b.upload(&c.w).unwrap(),
        net: c.net.network(),
    }
}

fn data<'a>(u: &'a Uploaded, weighted: bool, rows: Option<&'a Vec<usize>>) -> MlpData<'a, B64> {
    MlpData {
        x: &u.x,
        y: &u.y,
        weights: weighted.then_some(&u.s),
        rows,
    }
}

/// `scale Σ_i s_i ∇ℓ_i` by the library.
fn gradient(b: &B64, u: &Uploaded, w: &[f64], weighted: bool, scale: f64) -> Vec<f64> {
    let d = data(u, weighted, None);
    let w = w.to_vec();
    let tape = b.mlp_forward(&u.net, d, &w).unwrap();
    let deltas = b.mlp_backward(&u.net, d, &tape, &w).unwrap();
    let mut g = vec![0.0; u.net.dim()];
    b.mlp_gradient(&u.net, d, &tape, &deltas, scale, &mut g)
        .unwrap();
    g
}

/// `Σ_i s_i CE_i` by the reference.
fn ref_loss(c: &Case, w: &[f64], weighted: bool) -> f64 {
    (0..c.x.nrows())
        .map(|i| {
            let si = if weighted { c.s[i] } else { 1.0 };
            si * c.net.loss(w, &c.x.row(i).to_vec(), c.y[i] as usize)
        })
        .sum()
}

#[test]
fn loss_matches_the_reference() {
    let b = B64::new();
    for c in cases(1) {
        let u = upload(&b, &c);
        for weighted in [false, true] {
            let d = data(&u, weighted, None);
            let tape = b.mlp_forward(&u.net, d, &u.w).unwrap();
            let got = b.mlp_loss(d, &tape).unwrap();
            let want = ref_loss(&c, &c.w, weighted);
            assert!(
                (got - want).abs() <= 1e-12 * want.abs(),
                "{:?}: loss {got} vs reference {want}",
                c.net.sizes
            );
        }
    }
}

#[test]
fn gradient_matches_central_differences_and_backpropagation() {
    let b = B64::new();
    let h = 1e-5;
    for c in cases(2) {
        let u = upload(&b, &c);
        for weighted in [false, true] {
            let scale = 0.7;
            let got = gradient(&b, &u, &c.w, weighted, scale);
            // Central differences of the reference loss, coordinate by coordinate: truncation
            // O(h²) ≈ 1e-10, rounding O(u‖ℓ‖/h) ≈ 1e-11.
            let fd: Vec<f64> = (0..c.w.len())
                .map(|e| {
                    let (mut plus, mut minus) = (c.w.clone(), c.w.clone());
                    plus[e] += h;
                    minus[e] -= h;
                    scale * (ref_loss(&c, &plus, weighted) - ref_loss(&c, &minus, weighted))
                        / (2.0 * h)
                })
                .collect();
            let err = rel_err(&got, &fd);
            assert!(
                err <= 1e-7,
                "{:?} {:?}: gradient vs FD {err:e}",
                c.net.sizes,
                c.net.act
            );
            // The reference's own backpropagation, summed over rows.
            let mut backprop = vec![0.0; c.w.len()];
            for i in 0..c.x.nrows() {
                let si = if weighted { c.s[i] } else { 1.0 };
                let g = c.net.gradient(&c.w, &c.x.row(i).to_vec(), c.y[i] as usize);
                for (acc, gi) in backprop.iter_mut().zip(g) {
                    *acc += scale * si * gi;
                }
            }
            let err = rel_err(&got, &backprop);
            assert!(
                err <= 1e-12,
                "{:?}: gradient vs backprop {err:e}",
                c.net.sizes
            );
        }
    }
}

/// `out_b = scale Σ s_i ∇²ℓ_i v_b + shift (uᵀv_b) u` for a batch of directions.
fn hvp(b: &B64, u: &Uploaded, weighted: bool, scale: f64, shift: f64, v: &[f64]) -> Vec<f64> {
    let d = data(u, weighted, None);
    let tape = b.mlp_forward(&u.net, d, &u.w).unwrap();
    let deltas = b.mlp_backward(&u.net, d, &tape, &u.w).unwrap();
    let mut out = vec![f64::NAN; v.len()];
    b.mlp_hvp(
        &u.net,
        d,
        &tape,
        &deltas,
        &u.w,
        scale,
        shift,
        &v.to_vec(),
        &mut out,
    )
    .unwrap();
    out
}

#[test]
fn hessian_vector_products_match_central_differences_of_the_gradient() {
    let b = B64::new();
    let h = 1e-5;
    for c in cases(3) {
        let u = upload(&b, &c);
        let p = c.w.len();
        let mut rng = Rng::new(33);
        let m = 3;
        let v: Vec<f64> = (0..m * p).map(|_| rng.normal()).collect();
        for weighted in [false, true] {
            let got = hvp(&b, &u, weighted, 0.5, 0.0, &v);
            for k in 0..m {
                let vk = &v[k * p..(k + 1) * p];
                let plus: Vec<f64> = c.w.iter().zip(vk).map(|(w, d)| w + h * d).collect();
                let minus: Vec<f64> = c.w.iter().zip(vk).map(|(w, d)| w - h * d).collect();
                let gp = gradient(&b, &u, &plus, weighted, 0.5);
                let gm = gradient(&b, &u, &minus, weighted, 0.5);
                let fd: Vec<f64> = gp
                    .iter()
                    .zip(&gm)
                    .map(|(a, b)| (a - b) / (2.0 * h))
                    .collect();
                let err = rel_err(&got[k * p..(k + 1) * p], &fd);
                assert!(
                    err <= 1e-6,
                    "{:?} {:?} weighted={weighted}: HVP {k} vs FD of the gradient {err:e}",
                    c.net.sizes,
                    c.net.act
                );
            }
        }
    }
}

#[test]
fn hessian_vector_products_are_symmetric_and_see_the_softmax_shift() {
    let b = B64::new();
    for c in cases(4) {
        let u = upload(&b, &c);
        let p = c.w.len();
        let mut rng = Rng::new(44);
        let v: Vec<f64> = (0..2 * p).map(|_| rng.normal()).collect();
        let hv = hvp(&b, &u, true, 1.0, 0.0, &v);
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        // uᵀ(Hv) = vᵀ(Hu): the R-operator gives the Hessian, which is symmetric (Gauss–Newton
        // is too, but the FD test above separates the two).
        let (v0, v1) = (&v[..p], &v[p..]);
        let (h0, h1) = (&hv[..p], &hv[p..]);
        let (a, bb) = (dot(v1, h0), dot(v0, h1));
        assert!(
            (a - bb).abs() <= 1e-11 * (a.abs() + bb.abs()),
            "{a} vs {bb}"
        );
        // The output-bias direction u (equal entries) leaves CE unchanged: H u = 0, and the
        // shift gives it curvature `shift` exactly.
        let net = c.net.network();
        let (start, stride) = net.output_bias();
        let classes = net.outputs();
        let mut shift_dir = vec![0.0; p];
        for k in 0..classes {
            shift_dir[start + k * stride] = 1.0 / (classes as f64).sqrt();
        }
        let hu = hvp(&b, &u, true, 1.0, 0.0, &shift_dir);
        let norm: f64 = hu.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!(norm <= 1e-12, "H u = {norm:e} for the softmax shift");
        let kappa = 0.37;
        let shifted = hvp(&b, &u, true, 1.0, kappa, &v);
        for k in 0..2 {
            let vk = &v[k * p..(k + 1) * p];
            let proj = dot(vk, &shift_dir);
            let want: Vec<f64> = (0..p)
                .map(|e| hv[k * p + e] + kappa * proj * shift_dir[e])
                .collect();
            let err = rel_err(&shifted[k * p..(k + 1) * p], &want);
            assert!(err <= 1e-14, "shifted HVP {k}: {err:e}");
        }
    }
}

#[test]
fn per_sample_gradients_are_the_single_row_gradients() {
    let b = B64::new();
    for c in cases(5) {
        let u = upload(&b, &c);
        let n = c.x.nrows();
        let p = c.w.len();
        // A mini-batch with a repeated row, in a scrambled order.
        let rows: Vec<usize> = vec![3, 0, 5, 3, 1];
        let coef: Vec<f64> = rows.iter().map(|&r| c.s[r].sqrt()).collect();
        let d = data(&u, true, Some(&rows));
        let tape = b.mlp_forward(&u.net, d, &u.w).unwrap();
        let deltas = b.mlp_backward(&u.net, d, &tape, &u.w).unwrap();
        let mut out = vec![f64::NAN; rows.len() * p];
        b.mlp_per_sample_gradients(&u.net, d, &tape, &deltas, Some(&coef), &mut out)
            .unwrap();
        for (pos, &r) in rows.iter().enumerate() {
            let want: Vec<f64> = c
                .net
                .gradient(&c.w, &c.x.row(r).to_vec(), c.y[r] as usize)
                .iter()
                .map(|g| coef[pos] * g)
                .collect();
            let err = rel_err(&out[pos * p..(pos + 1) * p], &want);
            assert!(err <= 1e-12, "{:?}: row {r} {err:e}", c.net.sizes);
            // The same row alone through the batch gradient.
            let single = vec![r];
            let d1 = data(&u, false, Some(&single));
            let t1 = b.mlp_forward(&u.net, d1, &u.w).unwrap();
            let del1 = b.mlp_backward(&u.net, d1, &t1, &u.w).unwrap();
            let mut g1 = vec![0.0; p];
            b.mlp_gradient(&u.net, d1, &t1, &del1, coef[pos], &mut g1)
                .unwrap();
            let err = rel_err(&out[pos * p..(pos + 1) * p], &g1);
            assert!(
                err <= 1e-12,
                "{:?}: single-row pass {r} {err:e}",
                c.net.sizes
            );
        }
        // Over all rows with coef = s: the sum is the weighted batch gradient.
        let d = data(&u, true, None);
        let tape = b.mlp_forward(&u.net, d, &u.w).unwrap();
        let deltas = b.mlp_backward(&u.net, d, &tape, &u.w).unwrap();
        let mut all = vec![0.0; n * p];
        b.mlp_per_sample_gradients(&u.net, d, &tape, &deltas, Some(&u.s), &mut all)
            .unwrap();
        let summed: Vec<f64> = (0..p)
            .map(|e| (0..n).map(|i| all[i * p + e]).sum())
            .collect();
        let err = rel_err(&summed, &gradient(&b, &u, &c.w, true, 1.0));
        assert!(
            err <= 1e-12,
            "{:?}: Σ per-sample vs batch {err:e}",
            c.net.sizes
        );
    }
}

#[test]
fn directional_derivatives_match_per_sample_gradients_and_differences() {
    let b = B64::new();
    let h = 1e-5;
    for c in cases(6) {
        let u = upload(&b, &c);
        let n = c.x.nrows();
        let p = c.w.len();
        let mut rng = Rng::new(66);
        let q: Vec<f64> = (0..p).map(|_| rng.normal()).collect();
        let d = data(&u, true, None);
        let tape = b.mlp_forward(&u.net, d, &u.w).unwrap();
        let r = b.mlp_directional(&u.net, d, &tape, &u.w, &q).unwrap();
        assert_eq!(r.len(), n);
        for i in 0..n {
            let row = c.x.row(i).to_vec();
            let yi = c.y[i] as usize;
            let g = c.net.gradient(&c.w, &row, yi);
            let want: f64 = g.iter().zip(&q).map(|(a, b)| a * b).sum();
            let scale = want.abs().max(1e-3);
            assert!(
                (r[i] - want).abs() <= 1e-12 * scale,
                "row {i}: {} vs {want}",
                r[i]
            );
            let plus: Vec<f64> = c.w.iter().zip(&q).map(|(w, d)| w + h * d).collect();
            let minus: Vec<f64> = c.w.iter().zip(&q).map(|(w, d)| w - h * d).collect();
            let fd = (c.net.loss(&plus, &row, yi) - c.net.loss(&minus, &row, yi)) / (2.0 * h);
            assert!(
                (r[i] - fd).abs() <= 1e-7 * scale,
                "row {i}: {} vs FD {fd}",
                r[i]
            );
        }
    }
}

#[test]
fn kfac_factors_are_the_explicit_second_moments() {
    let b = B64::new();
    for c in cases(7) {
        let u = upload(&b, &c);
        let net = c.net.network();
        let layers = net.layers();
        let rows: Vec<usize> = vec![2, 4, 0, 2];
        let d = data(&u, true, Some(&rows));
        let tape = b.mlp_forward(&u.net, d, &u.w).unwrap();
        let deltas = b.mlp_backward(&u.net, d, &tape, &u.w).unwrap();
        let fans: Vec<(usize, usize)> = (0..layers).map(|l| net.fans(l)).collect();
        // Start from non-zero factors to check β.
        let mut aa: Vec<Vec<f64>> = fans
            .iter()
            .map(|&(i, _)| vec![0.5; (i + 1) * (i + 1)])
            .collect();
        let mut gg: Vec<Vec<f64>> = fans.iter().map(|&(_, o)| vec![0.25; o * o]).collect();
        let (alpha, beta) = (0.3, 0.8);
        b.mlp_kfac_factors(&u.net, d, &tape, &deltas, alpha, beta, &mut aa, &mut gg)
            .unwrap();
        for (l, &(fi, fo)) in fans.iter().enumerate() {
            let mut want_a = vec![beta * 0.5; (fi + 1) * (fi + 1)];
            let mut want_g = vec![beta * 0.25; fo * fo];
            for &r in &rows {
                let row = c.x.row(r).to_vec();
                let (inputs, _) = c.net.forward(&c.w, &row);
                let delta = &c.net.deltas(&c.w, &row, c.y[r] as usize)[l];
                for i in 0..=fi {
                    for j in 0..=fi {
                        want_a[i * (fi + 1) + j] += alpha * inputs[l][i] * inputs[l][j];
                    }
                }
                for i in 0..fo {
                    for j in 0..fo {
                        want_g[i * fo + j] += alpha * c.s[r] * delta[i] * delta[j];
                    }
                }
            }
            assert!(rel_err(&aa[l], &want_a) <= 1e-13, "layer {l} input factor");
            assert!(
                rel_err(&gg[l], &want_g) <= 1e-13,
                "layer {l} gradient factor"
            );
        }
    }
}

#[test]
fn kfac_of_one_row_is_the_outer_product_of_its_gradient() {
    // For a single row, GG ⊗ AA (class-major: the gradient factor outside) is exactly g gᵀ of
    // the layer's block of the per-sample gradient.
    let b = B64::new();
    for c in cases(8) {
        let u = upload(&b, &c);
        let net = c.net.network();
        let rows = vec![1usize];
        let d = data(&u, false, Some(&rows));
        let tape = b.mlp_forward(&u.net, d, &u.w).unwrap();
        let deltas = b.mlp_backward(&u.net, d, &tape, &u.w).unwrap();
        let mut aa: Vec<Vec<f64>> = (0..net.layers())
            .map(|l| vec![0.0; (net.fans(l).0 + 1).pow(2)])
            .collect();
        let mut gg: Vec<Vec<f64>> = (0..net.layers())
            .map(|l| vec![0.0; net.fans(l).1.pow(2)])
            .collect();
        b.mlp_kfac_factors(&u.net, d, &tape, &deltas, 1.0, 0.0, &mut aa, &mut gg)
            .unwrap();
        let g = c.net.gradient(&c.w, &c.x.row(1).to_vec(), c.y[1] as usize);
        for l in 0..net.layers() {
            let (fi, fo) = net.fans(l);
            let a = fi + 1;
            let blk = &g[net.offset(l)..net.offset(l) + net.block_len(l)];
            let len = blk.len();
            let mut kron = vec![0.0; len * len];
            let mut outer = vec![0.0; len * len];
            for e in 0..len {
                for f in 0..len {
                    let (k, i) = (e / a, e % a);
                    let (m, j) = (f / a, f % a);
                    kron[e * len + f] = gg[l][k * fo + m] * aa[l][i * a + j];
                    outer[e * len + f] = blk[e] * blk[f];
                }
            }
            assert!(rel_err(&kron, &outer) <= 1e-13, "layer {l}");
        }
    }
}

#[test]
fn a_mini_batch_pass_is_the_pass_over_its_rows() {
    let b = B64::new();
    let c = case(&[3, 4, 3], Activation::Tanh, 9, 9);
    let u = upload(&b, &c);
    let rows = vec![4usize, 1, 7];
    let d = data(&u, true, Some(&rows));
    let tape = b.mlp_forward(&u.net, d, &u.w).unwrap();
    let batch_loss = b.mlp_loss(d, &tape).unwrap();
    let want: f64 = rows
        .iter()
        .map(|&r| c.s[r] * c.net.loss(&c.w, &c.x.row(r).to_vec(), c.y[r] as usize))
        .sum();
    assert!((batch_loss - want).abs() <= 1e-12 * want);
}

#[test]
fn f32_agrees_with_f64() {
    let b64 = B64::new();
    let b32 = CpuBackend::<f32>::new();
    let c = case(&[4, 6, 3], Activation::Tanh, 20, 10);
    let u = upload(&b64, &c);
    let g64 = gradient(&b64, &u, &c.w, true, 1.0);
    let x32 = b32.upload_design(&with_ones(&c.x)).unwrap();
    let (y32, s32, w32) = (
        b32.upload(&c.y).unwrap(),
        b32.upload(&c.s).unwrap(),
        b32.upload(&c.w).unwrap(),
    );
    let d = MlpData {
        x: &x32,
        y: &y32,
        weights: Some(&s32),
        rows: None,
    };
    let tape = b32.mlp_forward(&u.net, d, &w32).unwrap();
    let deltas = b32.mlp_backward(&u.net, d, &tape, &w32).unwrap();
    let mut g = b32.zeros(u.net.dim()).unwrap();
    b32.mlp_gradient(&u.net, d, &tape, &deltas, 1.0, &mut g)
        .unwrap();
    let err = rel_err(&b32.download(&g).unwrap(), &g64);
    // f32 rounding over sums of ~20 terms: a few units of 1e-7 relative.
    assert!(err <= 1e-5, "f32 vs f64 gradient {err:e}");
}

#[test]
fn shapes_that_do_not_fit_are_errors() {
    let b = B64::new();
    let c = case(&[3, 4, 3], Activation::Relu, 6, 11);
    let u = upload(&b, &c);
    // A design without the constant column.
    let bare = b.upload_design(&c.x).unwrap();
    let d = MlpData {
        x: &bare,
        y: &u.y,
        weights: None,
        rows: None,
    };
    assert!(b.mlp_forward(&u.net, d, &u.w).is_err());
    // Parameters of the wrong length.
    let short = vec![0.0; u.net.dim() - 1];
    assert!(b
        .mlp_forward(&u.net, data(&u, false, None), &short)
        .is_err());
    // A label outside the network's classes.
    let bad_y = b.upload(&[5.0; 6]).unwrap();
    let d = MlpData {
        x: &u.x,
        y: &bad_y,
        weights: None,
        rows: None,
    };
    let err = b
        .mlp_forward(&u.net, d, &u.w)
        .err()
        .expect("label 5 of 3 classes");
    assert!(err.to_string().contains("label 5"), "{err}");
    // A row index outside the design.
    let rows = vec![0usize, 6];
    assert!(b
        .mlp_forward(&u.net, data(&u, false, Some(&rows)), &u.w)
        .is_err());
    // A network with an empty layer.
    assert!(Network::new(3, &[0], 2, Activation::Tanh).is_err());
}
