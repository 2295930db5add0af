//! Parity of the CUDA backend with the CPU reference, GLM family (`GlmOps`, `cuda/glm.cu`): value
//! and gradient, curvature and HVP on both row paths, the row kernels, the SGD step, per-sample
//! gradients and K-FAC factors, bad operands, designs wider than the fused kernel's
//! shared-memory accumulator, and designs stored as bf16; the softmax Hessian row by row and
//! the linear distillation's cross-derivative products built on it (`problem::distill`: Bv,
//! Bᵀq and the formation of B, GEMMs and per-row passes on the backend). The harness, the tolerances and the
//! SKIPPED line are in `tests/parity_common/mod.rs`.

mod common;
mod cuda_common;
mod parity_common;

use common::{normals, r32};
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::cuda::Storage;
use hypergrad::backend::{Backend, GlmOps, Loss};
use hypergrad::data::rng::Rng;
use hypergrad::data::synthetic;
use hypergrad::problem::{Bilevel, DistillBilevel};
use ndarray::Array2;
use parity_common::*;

// ---- the checks, generic over the backend under test ----------------------------------------

fn check_value_grad<G: GlmOps>(g: &G, ctx: &Ctx, sizes: &[(usize, usize)]) {
    let cpu = Cpu::new();
    for loss in LOSSES {
        let c = loss.outputs();
        for (t, &(n, d)) in sizes.iter().enumerate() {
            let dt = glm(loss, n, d, 100 + t as u64);
            let on_g = put(g, &dt, &dt.x);
            let on_c = put(&cpu, &dt, &ctx.reference_design(&dt.x));
            for weights in [false, true] {
                let what = format!(
                    "{} glm_value_grad {loss:?} n={n} d={d} weights={weights}",
                    ctx.tag
                );
                let scale = 0.37;
                let mut grad_g = g.upload(&vec![9.0; c * d]).unwrap();
                let mut grad_c = cpu.zeros(c * d).unwrap();
                let vg = g
                    .glm_value_grad(
                        &on_g.x,
                        loss,
                        &on_g.y,
                        weights.then_some(&on_g.s),
                        &on_g.w,
                        scale,
                        Some(&mut grad_g),
                    )
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let vc = cpu
                    .glm_value_grad(
                        &on_c.x,
                        loss,
                        &on_c.y,
                        weights.then_some(&on_c.s),
                        &on_c.w,
                        scale,
                        Some(&mut grad_c),
                    )
                    .unwrap();
                assert_scalar(vg, vc, ctx.tol, &format!("{what} value"));
                assert_close(&down(g, &grad_g), &grad_c, ctx.tol, &format!("{what} grad"));
                let vg = g
                    .glm_value_grad(
                        &on_g.x,
                        loss,
                        &on_g.y,
                        weights.then_some(&on_g.s),
                        &on_g.w,
                        scale,
                        None,
                    )
                    .unwrap_or_else(|e| panic!("{what} (value only): {e}"));
                assert_scalar(vg, vc, ctx.tol, &format!("{what} value only"));
            }
        }
    }
}

fn check_curvature_hvp<G: GlmOps>(g: &G, ctx: &Ctx, sizes: &[(usize, usize)]) {
    let cpu = Cpu::new();
    for loss in LOSSES {
        let c = loss.outputs();
        for (t, &(n, d)) in sizes.iter().enumerate() {
            let dt = glm(loss, n, d, 200 + t as u64);
            let p = c * d;
            let on_g = put(g, &dt, &dt.x);
            let on_c = put(&cpu, &dt, &ctx.reference_design(&dt.x));
            let mut rng = Rng::new(300 + t as u64);
            for weights in [false, true] {
                let tag = format!("{} {loss:?} n={n} d={d} weights={weights}", ctx.tag);
                let scale = 1.0 / n as f64;
                let cg = g
                    .glm_curvature(
                        &on_g.x,
                        loss,
                        &on_g.y,
                        weights.then_some(&on_g.s),
                        &on_g.w,
                        scale,
                    )
                    .unwrap_or_else(|e| panic!("glm_curvature {tag}: {e}"));
                let cc = cpu
                    .glm_curvature(
                        &on_c.x,
                        loss,
                        &on_c.y,
                        weights.then_some(&on_c.s),
                        &on_c.w,
                        scale,
                    )
                    .unwrap();
                assert_eq!(cg.loss, loss, "glm_curvature {tag}: loss");
                assert_close(
                    &down(g, &cg.row_scale),
                    &cc.row_scale,
                    ctx.tol,
                    &format!("glm_curvature {tag} row_scale"),
                );
                match (&cg.probs, &cc.probs) {
                    (Some(pg), Some(pc)) => assert_close(
                        &down(g, pg),
                        pc,
                        ctx.tol,
                        &format!("glm_curvature {tag} probs"),
                    ),
                    (None, None) => {}
                    _ => panic!("glm_curvature {tag}: probabilities present on one side only"),
                }
                for m in [1, 3, 8, 16] {
                    let what = format!("glm_hvp {tag} m={m}");
                    let v = normals(&mut rng, m * p, 1.0);
                    let mut out_g = g.upload(&vec![5.0; m * p]).unwrap();
                    let mut out_c = cpu.zeros(m * p).unwrap();
                    g.glm_hvp(&on_g.x, &cg, &g.upload(&v).unwrap(), &mut out_g)
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    cpu.glm_hvp(&on_c.x, &cc, &v, &mut out_c).unwrap();
                    let got = down(g, &out_g);
                    assert_close(&got, &out_c, ctx.tol, &what);
                    // Every vector of the batch on its own (a launch that skipped or misplaced
                    // a chunk of vectors would hide in the norm of the whole batch).
                    for (b, (gb, cb)) in got.chunks(p).zip(out_c.chunks(p)).enumerate() {
                        assert_close(gb, cb, ctx.tol, &format!("{what} vector {b}"));
                    }
                }
            }
        }
    }
}

fn check_row_kernels<G: GlmOps>(g: &G, ctx: &Ctx, sizes: &[(usize, usize)]) {
    let cpu = Cpu::new();
    for loss in LOSSES {
        let c = loss.outputs();
        for (t, &(n, d)) in sizes.iter().enumerate() {
            let dt = glm(loss, n, d, 400 + t as u64);
            let on_g = put(g, &dt, &dt.x);
            let on_c = put(&cpu, &dt, &ctx.reference_design(&dt.x));
            let tag = format!("{} {loss:?} n={n} d={d}", ctx.tag);

            let fg = g
                .glm_row_factors(&on_g.x, loss, &on_g.y, &on_g.w)
                .unwrap_or_else(|e| panic!("glm_row_factors {tag}: {e}"));
            let fc = cpu
                .glm_row_factors(&on_c.x, loss, &on_c.y, &on_c.w)
                .unwrap();
            assert_close(
                &down(g, &fg),
                &fc,
                ctx.tol,
                &format!("glm_row_factors {tag}"),
            );

            // Pairing and outer products with the same f32 factors on both sides.
            let mut rng = Rng::new(500 + t as u64);
            let f: Vec<f64> = fc.iter().map(|&v| r32(v)).collect();
            let q = normals(&mut rng, c * d, 1.0);
            let (f_g, q_g) = (g.upload(&f).unwrap(), g.upload(&q).unwrap());
            let rg = g
                .glm_row_pairing(&on_g.x, &q_g, &f_g)
                .unwrap_or_else(|e| panic!("glm_row_pairing {tag}: {e}"));
            let rc = cpu.glm_row_pairing(&on_c.x, &q, &f).unwrap();
            assert_close(&rg, &rc, ctx.tol, &format!("glm_row_pairing {tag}"));

            if n * c * d <= 4_000_000 {
                let coef: Vec<f64> = (0..n).map(|_| r32(rng.normal())).collect();
                let start = normals(&mut rng, n * c * d, 1.0);
                let mut bg = g.upload(&start).unwrap();
                let mut bc = start.clone();
                g.glm_add_row_outer(&on_g.x, &coef, &f_g, &mut bg)
                    .unwrap_or_else(|e| panic!("glm_add_row_outer {tag}: {e}"));
                cpu.glm_add_row_outer(&on_c.x, &coef, &f, &mut bc).unwrap();
                assert_close(
                    &down(g, &bg),
                    &bc,
                    ctx.tol,
                    &format!("glm_add_row_outer {tag}"),
                );
            }
        }
    }
}

fn check_sgd_step<G: GlmOps>(g: &G, ctx: &Ctx, sizes: &[(usize, usize)]) {
    let cpu = Cpu::new();
    for loss in LOSSES {
        let c = loss.outputs();
        for (t, &(n, d)) in sizes.iter().enumerate() {
            let dt = glm(loss, n, d, 900 + t as u64);
            let on_g = put(g, &dt, &dt.x);
            let on_c = put(&cpu, &dt, &ctx.reference_design(&dt.x));
            let mut rng = Rng::new(1000 + t as u64);
            let reg = (0..c * d)
                .map(|_| r32(0.5 * rng.uniform()))
                .collect::<Vec<_>>();
            let reg_g = g.upload(&reg).unwrap();
            for rows in batches(n, &mut rng) {
                let rows_g = g.upload_rows(&rows, n).unwrap();
                let rows_c = cpu.upload_rows(&rows, n).unwrap();
                assert_eq!(g.rows_len(&rows_g), rows.len(), "rows_len");
                for weights in [false, true] {
                    let what = format!(
                        "{} glm_sgd_step {loss:?} n={n} d={d} b={} weights={weights}",
                        ctx.tag,
                        rows.len()
                    );
                    let eta = 0.3;
                    let mut wg = g.upload(&dt.w).unwrap();
                    let mut fg = g.upload(&vec![7.0; rows.len() * c]).unwrap();
                    let mut wc = dt.w.clone();
                    let mut fc = cpu.zeros(rows.len() * c).unwrap();
                    g.glm_sgd_step(
                        &on_g.x,
                        loss,
                        &on_g.y,
                        weights.then_some(&on_g.s),
                        &rows_g,
                        &reg_g,
                        eta,
                        &mut wg,
                        &mut fg,
                    )
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                    cpu.glm_sgd_step(
                        &on_c.x,
                        loss,
                        &on_c.y,
                        weights.then_some(&on_c.s),
                        &rows_c,
                        &reg,
                        eta,
                        &mut wc,
                        &mut fc,
                    )
                    .unwrap();
                    assert_close(&down(g, &wg), &wc, ctx.tol, &format!("{what} w"));
                    assert_close(&down(g, &fg), &fc, ctx.tol, &format!("{what} factors"));

                    // The batch gradient (Adam's input): the step's direction, on both.
                    let w0 = g.upload(&dt.w).unwrap();
                    let mut og = g.upload(&vec![7.0; c * d]).unwrap();
                    let mut fg = g.upload(&vec![7.0; rows.len() * c]).unwrap();
                    g.glm_batch_gradient(
                        &on_g.x,
                        loss,
                        &on_g.y,
                        weights.then_some(&on_g.s),
                        &rows_g,
                        &reg_g,
                        &w0,
                        &mut og,
                        &mut fg,
                    )
                    .unwrap_or_else(|e| panic!("{what} batch gradient: {e}"));
                    let mut oc = cpu.zeros(c * d).unwrap();
                    let mut fc2 = cpu.zeros(rows.len() * c).unwrap();
                    cpu.glm_batch_gradient(
                        &on_c.x,
                        loss,
                        &on_c.y,
                        weights.then_some(&on_c.s),
                        &rows_c,
                        &reg,
                        &dt.w,
                        &mut oc,
                        &mut fc2,
                    )
                    .unwrap();
                    let stepped: Vec<f64> =
                        dt.w.iter().zip(&oc).map(|(w, g)| w - eta * g).collect();
                    assert_close(&stepped, &wc, 1e-12, &format!("{what}: w − η·gradient"));
                    assert_eq!(fc2, fc, "{what}: the same factors");
                    assert_close(&down(g, &og), &oc, ctx.tol, &format!("{what} gradient"));
                    assert_close(
                        &down(g, &fg),
                        &fc,
                        ctx.tol,
                        &format!("{what} gradient's factors"),
                    );
                }
            }
        }
    }
    // An empty batch is an error.
    let dt = glm(Loss::Logistic, 6, 4, 1100);
    let on_g = put(g, &dt, &dt.x);
    let empty = g.upload_rows(&[], 6).unwrap();
    let mut w = g.upload(&dt.w).unwrap();
    let mut no_factors = g.zeros(0).unwrap();
    assert!(
        g.glm_sgd_step(
            &on_g.x,
            Loss::Logistic,
            &on_g.y,
            None,
            &empty,
            &g.zeros(4).unwrap(),
            0.1,
            &mut w,
            &mut no_factors,
        )
        .is_err(),
        "{}: an SGD step on an empty batch was accepted",
        ctx.tag
    );
}

fn check_per_sample_kfac<G: GlmOps>(g: &G, ctx: &Ctx, sizes: &[(usize, usize)]) {
    let cpu = Cpu::new();
    for c in [1, 3, 10] {
        for (t, &(n, d)) in sizes.iter().enumerate() {
            let mut rng = Rng::new(1200 + t as u64);
            let x = Array2::from_shape_vec((n, d), normals(&mut rng, n * d, 1.0)).unwrap();
            let xg = g.upload_design(&x).unwrap();
            let xc = cpu.upload_design(&ctx.reference_design(&x)).unwrap();
            for rows in batches(n, &mut rng) {
                let nb = rows.len();
                let rows_g = g.upload_rows(&rows, n).unwrap();
                let rows_c = cpu.upload_rows(&rows, n).unwrap();
                let factors = normals(&mut rng, nb * c, 1.0);
                let mut scale: Vec<f64> = (0..nb).map(|_| r32(rng.uniform())).collect();
                scale[nb / 2] = 0.0;
                let (f_g, s_g) = (g.upload(&factors).unwrap(), g.upload(&scale).unwrap());
                for scaled in [false, true] {
                    let tag = format!("{} c={c} n={n} d={d} b={nb} scaled={scaled}", ctx.tag);
                    if nb * c * d <= 4_000_000 {
                        let mut og = g.upload(&vec![3.0; nb * c * d]).unwrap();
                        let mut oc = cpu.zeros(nb * c * d).unwrap();
                        g.glm_per_sample_gradients(
                            &xg,
                            &rows_g,
                            &f_g,
                            scaled.then_some(&s_g),
                            &mut og,
                        )
                        .unwrap_or_else(|e| panic!("glm_per_sample_gradients {tag}: {e}"));
                        cpu.glm_per_sample_gradients(
                            &xc,
                            &rows_c,
                            &factors,
                            scaled.then_some(&scale),
                            &mut oc,
                        )
                        .unwrap();
                        assert_close(
                            &down(g, &og),
                            &oc,
                            ctx.tol,
                            &format!("glm_per_sample_gradients {tag}"),
                        );
                    }
                    for (alpha, beta) in [(1.0, 0.0), (0.25, 0.9)] {
                        let what = format!("glm_kfac_factors {tag} α={alpha} β={beta}");
                        let xx0 = normals(&mut rng, d * d, 1.0);
                        let gg0 = normals(&mut rng, c * c, 1.0);
                        let (mut xxg, mut ggg) = (g.upload(&xx0).unwrap(), g.upload(&gg0).unwrap());
                        let (mut xxc, mut ggc) = (xx0.clone(), gg0.clone());
                        g.glm_kfac_factors(
                            &xg,
                            &rows_g,
                            &f_g,
                            scaled.then_some(&s_g),
                            alpha,
                            beta,
                            &mut xxg,
                            &mut ggg,
                        )
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                        cpu.glm_kfac_factors(
                            &xc,
                            &rows_c,
                            &factors,
                            scaled.then_some(&scale),
                            alpha,
                            beta,
                            &mut xxc,
                            &mut ggc,
                        )
                        .unwrap();
                        assert_close(&down(g, &xxg), &xxc, ctx.tol, &format!("{what} xx"));
                        assert_close(&down(g, &ggg), &ggc, ctx.tol, &format!("{what} gg"));
                    }
                }
            }
        }
    }
}

/// Every backend refuses the same bad GLM operands, with the same error, before a kernel reads
/// past a buffer: row weights, labels or a per-sample scale of the wrong length, and a
/// mini-batch whose indices were uploaded for a larger design.
fn check_bad_glm_operands<G: GlmOps>(g: &G, ctx: &Ctx) {
    let loss = Loss::Softmax { classes: 3 };
    let (n, d) = (20, 6);
    let dt = glm(loss, n, d, 77);
    let on = put(g, &dt, &dt.x);
    let short = g.upload(&vec![1.0; n - 1]).unwrap();
    let expect = |err: hypergrad::Error, needle: &str, what: &str| {
        assert!(
            err.to_string().contains(needle),
            "{} {what}: {err}",
            ctx.tag
        );
    };
    let mut grad = g.zeros(3 * d).unwrap();
    let err = g
        .glm_value_grad(
            &on.x,
            loss,
            &on.y,
            Some(&short),
            &on.w,
            1.0,
            Some(&mut grad),
        )
        .unwrap_err();
    expect(err, "row weights", "glm_value_grad");
    let err = g
        .glm_curvature(&on.x, loss, &on.y, Some(&short), &on.w, 1.0)
        .err()
        .expect("refused");
    expect(err, "row weights", "glm_curvature");
    let rows = g.upload_rows(&[0, 5, 19], n).unwrap();
    let reg = g.upload(&vec![0.1; 3 * d]).unwrap();
    let (mut w, mut factors) = (g.upload(&dt.w).unwrap(), g.zeros(3 * 3).unwrap());
    let err = g
        .glm_sgd_step(
            &on.x,
            loss,
            &short,
            None,
            &rows,
            &reg,
            0.1,
            &mut w,
            &mut factors,
        )
        .unwrap_err();
    expect(err, "labels", "glm_sgd_step");
    let err = g
        .glm_sgd_step(
            &on.x,
            loss,
            &on.y,
            Some(&short),
            &rows,
            &reg,
            0.1,
            &mut w,
            &mut factors,
        )
        .unwrap_err();
    expect(err, "row weights", "glm_sgd_step");
    // Indices uploaded for 40 rows, one of them past this design's 20.
    let wide = g.upload_rows(&[0, 5, 39], 40).unwrap();
    let err = g
        .glm_sgd_step(
            &on.x,
            loss,
            &on.y,
            None,
            &wide,
            &reg,
            0.1,
            &mut w,
            &mut factors,
        )
        .unwrap_err();
    expect(
        err,
        "row ind",
        "glm_sgd_step with a batch of a larger design",
    );
    let mut short_out = g.zeros(3 * d - 1).unwrap();
    let err = g
        .glm_batch_gradient(
            &on.x,
            loss,
            &on.y,
            None,
            &rows,
            &reg,
            &w,
            &mut short_out,
            &mut factors,
        )
        .unwrap_err();
    expect(
        err,
        "batch gradient",
        "glm_batch_gradient into a short buffer",
    );
    let mut out = g.zeros(3 * d).unwrap();
    let err = g
        .glm_batch_gradient(
            &on.x,
            loss,
            &on.y,
            None,
            &wide,
            &reg,
            &w,
            &mut out,
            &mut factors,
        )
        .unwrap_err();
    expect(
        err,
        "row ind",
        "glm_batch_gradient with a batch of a larger design",
    );
    let scale = g.upload(&[1.0; 4]).unwrap();
    let mut out = g.zeros(3 * 3 * d).unwrap();
    let err = g
        .glm_per_sample_gradients(&on.x, &rows, &factors, Some(&scale), &mut out)
        .unwrap_err();
    expect(err, "per-sample scale", "glm_per_sample_gradients");
    let (mut xx, mut gg) = (g.zeros(d * d).unwrap(), g.zeros(9).unwrap());
    let err = g
        .glm_kfac_factors(
            &on.x,
            &rows,
            &factors,
            Some(&scale),
            1.0,
            0.0,
            &mut xx,
            &mut gg,
        )
        .unwrap_err();
    expect(err, "per-sample scale", "glm_kfac_factors");
    let err = g
        .glm_kfac_factors(&on.x, &wide, &factors, None, 1.0, 0.0, &mut xx, &mut gg)
        .unwrap_err();
    expect(
        err,
        "row ind",
        "glm_kfac_factors with a batch of a larger design",
    );
}

/// Designs wider than the fused kernel's shared-memory accumulator can hold for a whole
/// batch (k·d·4 bytes > the 227 KiB an H100 block may use, for k = 30 rows of M and d = 20 000):
/// the HVP and gradient must still be right (the CUDA backend falls back to cuBLAS or splits
/// the batch), and so must a mini-batch SGD step on a 3-class model of that width.
fn check_wide_features<G: GlmOps>(g: &G, ctx: &Ctx) {
    let sizes = [(64, 20_000)];
    let wide_losses = [Loss::Logistic, Loss::Softmax { classes: 3 }];
    let cpu = Cpu::new();
    for loss in wide_losses {
        let c = loss.outputs();
        let (n, d) = sizes[0];
        let dt = glm(loss, n, d, 1300);
        let on_g = put(g, &dt, &dt.x);
        let on_c = put(&cpu, &dt, &ctx.reference_design(&dt.x));
        let tag = format!("{} wide {loss:?} n={n} d={d}", ctx.tag);
        let mut grad_g = g.zeros(c * d).unwrap();
        let mut grad_c = cpu.zeros(c * d).unwrap();
        let vg = g
            .glm_value_grad(
                &on_g.x,
                loss,
                &on_g.y,
                None,
                &on_g.w,
                1.0,
                Some(&mut grad_g),
            )
            .unwrap_or_else(|e| panic!("glm_value_grad {tag}: {e}"));
        let vc = cpu
            .glm_value_grad(
                &on_c.x,
                loss,
                &on_c.y,
                None,
                &on_c.w,
                1.0,
                Some(&mut grad_c),
            )
            .unwrap();
        assert_scalar(vg, vc, ctx.tol, &format!("glm_value_grad {tag} value"));
        assert_close(
            &down(g, &grad_g),
            &grad_c,
            ctx.tol,
            &format!("glm_value_grad {tag}"),
        );

        let cg = g
            .glm_curvature(&on_g.x, loss, &on_g.y, None, &on_g.w, 1.0)
            .unwrap();
        let cc = cpu
            .glm_curvature(&on_c.x, loss, &on_c.y, None, &on_c.w, 1.0)
            .unwrap();
        let m = 16;
        let mut rng = Rng::new(1301);
        let v = normals(&mut rng, m * c * d, 1.0);
        let mut out_g = g.zeros(m * c * d).unwrap();
        let mut out_c = cpu.zeros(m * c * d).unwrap();
        g.glm_hvp(&on_g.x, &cg, &g.upload(&v).unwrap(), &mut out_g)
            .unwrap_or_else(|e| panic!("glm_hvp {tag} m={m}: {e}"));
        cpu.glm_hvp(&on_c.x, &cc, &v, &mut out_c).unwrap();
        assert_close(
            &down(g, &out_g),
            &out_c,
            ctx.tol,
            &format!("glm_hvp {tag} m={m}"),
        );

        let rows: Vec<u32> = (0..32).map(|_| rng.below(n) as u32).collect();
        let reg: Vec<f64> = vec![0.125; c * d];
        let mut wg = g.upload(&dt.w).unwrap();
        let mut fg = g.zeros(rows.len() * c).unwrap();
        let mut wc = dt.w.clone();
        let mut fc = cpu.zeros(rows.len() * c).unwrap();
        g.glm_sgd_step(
            &on_g.x,
            loss,
            &on_g.y,
            Some(&on_g.s),
            &g.upload_rows(&rows, n).unwrap(),
            &g.upload(&reg).unwrap(),
            0.5,
            &mut wg,
            &mut fg,
        )
        .unwrap_or_else(|e| panic!("glm_sgd_step {tag}: {e}"));
        cpu.glm_sgd_step(
            &on_c.x,
            loss,
            &on_c.y,
            Some(&on_c.s),
            &cpu.upload_rows(&rows, n).unwrap(),
            &reg,
            0.5,
            &mut wc,
            &mut fc,
        )
        .unwrap();
        assert_close(
            &down(g, &wg),
            &wc,
            ctx.tol,
            &format!("glm_sgd_step {tag} w"),
        );
        assert_close(
            &down(g, &fg),
            &fc,
            ctx.tol,
            &format!("glm_sgd_step {tag} factors"),
        );
    }
}

/// `glm_softmax_curvature_rows` against the f64 reference on the same f32 probabilities (a
/// softmax of random logits, rounded) for 2, 3 and 10 classes; bad operands refused alike.
fn check_softmax_curvature_rows<G: GlmOps>(g: &G, ctx: &Ctx) {
    let cpu = Cpu::new();
    let mut rng = Rng::new(900);
    for c in [2, 3, 10] {
        for n in small_only(&[(1, 0), (37, 0), (20_003, 0)])
            .into_iter()
            .map(|(n, _)| n)
        {
            let mut probs = Vec::with_capacity(n * c);
            for _ in 0..n {
                let z: Vec<f64> = (0..c).map(|_| 2.0 * rng.normal()).collect();
                let sum: f64 = z.iter().map(|v| v.exp()).sum();
                probs.extend(z.iter().map(|v| r32(v.exp() / sum)));
            }
            let a = normals(&mut rng, n * c, 1.0);
            let mut a_g = g.upload(&a).unwrap();
            let mut a_c = a.clone();
            let what = format!("{} glm_softmax_curvature_rows c={c} n={n}", ctx.tag);
            g.glm_softmax_curvature_rows(&g.upload(&probs).unwrap(), c, &mut a_g)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            cpu.glm_softmax_curvature_rows(&probs, c, &mut a_c).unwrap();
            assert_close(&down(g, &a_g), &a_c, ctx.tol, &what);
        }
    }
    let probs = g.upload(&[0.5; 6]).unwrap();
    for (classes, len) in [(0, 6), (4, 6), (3, 5)] {
        let mut a = g.upload(&vec![1.0; len]).unwrap();
        let err = g
            .glm_softmax_curvature_rows(&probs, classes, &mut a)
            .expect_err("bad softmax rows");
        let want = cpu
            .glm_softmax_curvature_rows(&vec![0.5; 6], classes, &mut vec![1.0; len])
            .expect_err("bad softmax rows");
        assert_eq!(err.to_string(), want.to_string(), "{}", ctx.tag);
    }
}

/// Linear distillation's cross-derivative products on the backend under test against the
/// f64 reference, same f32 θ and W: Bv, Bᵀq, and `cross_add` onto a batch that is not zero
/// (K = 2 rows per class; c = 3, d = 5 and c = 10, d = 33, a width that is not a multiple of
/// 32). Sums are over at most N = 20 rows or d = 33 features, so the f32 tolerance holds.
fn check_distill_cross<G: GlmOps + Clone>(g: &G, ctx: &Ctx) {
    let cpu = Cpu::new();
    let k = 2;
    for (c, d) in [(3, 5), (10, 33)] {
        let (val, _) = synthetic::softmax(40, d, c, 0.3, 2.0, 77);
        let mut rng = Rng::new(31 + d as u64);
        let theta = normals(&mut rng, k * c * d, 1.0);
        let pg = DistillBilevel::new(g.clone(), c, k, &val, 0.1, &theta).unwrap();
        let pc = DistillBilevel::new(cpu.clone(), c, k, &val, 0.1, &theta).unwrap();
        let (big_p, p) = (c * d, theta.len());
        let w = normals(&mut rng, big_p, 1.0 / (d as f64).sqrt());
        let (wg, wc) = (g.upload(&w).unwrap(), w.clone());
        let tag = format!("{} distill c={c} d={d}", ctx.tag);

        let v = normals(&mut rng, p, 1.0);
        let got = pg.cross_apply(&wg, &v).unwrap();
        let want = pc.cross_apply(&wc, &v).unwrap();
        assert_close(&got, &want, ctx.tol, &format!("{tag} Bv"));

        let q = normals(&mut rng, big_p, 1.0);
        let got = pg.cross_t(&wg, &g.upload(&q).unwrap()).unwrap();
        let want = pc.cross_t(&wc, &q).unwrap();
        assert_close(&got, &want, ctx.tol, &format!("{tag} Bᵀq"));

        let start = normals(&mut rng, big_p * p, 0.1);
        let mut bg = g.upload(&start).unwrap();
        let mut bc = start.clone();
        pg.cross_add(&wg, 0.7, &mut bg).unwrap();
        pc.cross_add(&wc, 0.7, &mut bc).unwrap();
        assert_close(&down(g, &bg), &bc, ctx.tol, &format!("{tag} cross_add"));
    }
}

// ---- the CUDA tests -------------------------------------------------------------------------

#[test]
fn glm_value_grad_both_row_paths() {
    let Some(gpu) = gpu() else { return };
    for path in ROW_PATHS {
        gpu.set_row_path(path);
        check_value_grad(
            &gpu,
            &Ctx::f32(format!("{} {path:?}", gpu.name())),
            &sizes(),
        );
    }
}

#[test]
fn glm_curvature_and_hvp_both_row_paths() {
    let Some(gpu) = gpu() else { return };
    for path in ROW_PATHS {
        gpu.set_row_path(path);
        check_curvature_hvp(
            &gpu,
            &Ctx::f32(format!("{} {path:?}", gpu.name())),
            &sizes(),
        );
    }
}

#[test]
fn glm_row_factors_pairing_outer() {
    let Some(gpu) = gpu() else { return };
    check_row_kernels(&gpu, &Ctx::f32(gpu.name()), &sizes());
}

#[test]
fn glm_sgd_step_with_rows() {
    let Some(gpu) = gpu() else { return };
    check_sgd_step(&gpu, &Ctx::f32(gpu.name()), &sizes());
}

#[test]
fn glm_per_sample_gradients_and_kfac_factors() {
    let Some(gpu) = gpu() else { return };
    check_per_sample_kfac(&gpu, &Ctx::f32(gpu.name()), &sizes());
}

#[test]
fn softmax_curvature_rows_and_distill_cross() {
    let Some(gpu) = gpu() else { return };
    let ctx = Ctx::f32(gpu.name());
    check_softmax_curvature_rows(&gpu, &ctx);
    check_distill_cross(&gpu, &ctx);
}

#[test]
fn bad_glm_operands_are_refused() {
    let Some(gpu) = gpu() else { return };
    check_bad_glm_operands(&gpu, &Ctx::f32(gpu.name()));
}

#[test]
fn wide_features_both_row_paths() {
    let Some(gpu) = gpu() else { return };
    for path in ROW_PATHS {
        gpu.set_row_path(path);
        check_wide_features(&gpu, &Ctx::f32(format!("{} {path:?}", gpu.name())));
    }
}

/// Every kernel that reads a design, with the design stored as bf16: within 2e-2 of f64 on the
/// same data, and within the f32 tolerance of f64 on the bf16-rounded data.
#[test]
fn bf16_storage() {
    let Some(gpu) = gpu_with(Storage::Bf16) else {
        return;
    };
    let sizes = small_only(&[(37, 45), (20_003, 64)]);
    for (tol, bf16_reference, what) in [
        (TOL_BF16, false, "vs f64"),
        (TOL_F32, true, "vs f64 on bf16-rounded data"),
    ] {
        for path in ROW_PATHS {
            gpu.set_row_path(path);
            let ctx = Ctx {
                tol,
                bf16_reference,
                tag: format!("{} {path:?} {what}", gpu.name()),
            };
            check_value_grad(&gpu, &ctx, &sizes);
            check_curvature_hvp(&gpu, &ctx, &sizes);
        }
        let ctx = Ctx {
            tol,
            bf16_reference,
            tag: format!("{} {what}", gpu.name()),
        };
        check_row_kernels(&gpu, &ctx, &sizes);
        check_sgd_step(&gpu, &ctx, &sizes);
        check_per_sample_kfac(&gpu, &ctx, &sizes);
    }
}

/// [`check_wide_features`] with bf16 storage (kept apart from [`bf16_storage`] so that a
/// limit on the width of bf16 designs does not hide the parity of the others).
#[test]
fn bf16_storage_wide_features() {
    let Some(gpu) = gpu_with(Storage::Bf16) else {
        return;
    };
    for (tol, bf16_reference, what) in [
        (TOL_BF16, false, "vs f64"),
        (TOL_F32, true, "vs f64 on bf16-rounded data"),
    ] {
        for path in ROW_PATHS {
            gpu.set_row_path(path);
            let ctx = Ctx {
                tol,
                bf16_reference,
                tag: format!("{} {path:?} {what}", gpu.name()),
            };
            check_wide_features(&gpu, &ctx);
        }
    }
}

// ---- the same harness on the CPU ------------------------------------------------------------

/// The generic checks with `CpuBackend<f32>` standing in for the GPU: runs everywhere, so the
/// references, inputs and tolerances the CUDA tests rely on are exercised on every machine.
mod cpu_f32_stand_in {
    use super::*;

    fn f32() -> CpuBackend<f32> {
        CpuBackend::<f32>::new()
    }

    fn ctx() -> Ctx {
        Ctx::f32("cpu-f32 stand-in")
    }

    #[test]
    fn glm_value_grad() {
        check_value_grad(&f32(), &ctx(), &sizes());
    }

    #[test]
    fn glm_curvature_and_hvp() {
        check_curvature_hvp(&f32(), &ctx(), &sizes());
    }

    #[test]
    fn glm_row_kernels() {
        check_row_kernels(&f32(), &ctx(), &sizes());
    }

    #[test]
    fn sgd_step() {
        check_sgd_step(&f32(), &ctx(), &sizes());
    }

    #[test]
    fn per_sample_and_kfac() {
        check_per_sample_kfac(&f32(), &ctx(), &sizes());
    }

    #[test]
    fn softmax_curvature_rows_and_distill_cross() {
        check_softmax_curvature_rows(&f32(), &ctx());
        check_distill_cross(&f32(), &ctx());
    }

    #[test]
    fn bad_glm_operands() {
        check_bad_glm_operands(&f32(), &ctx());
        check_bad_glm_operands(&Cpu::new(), &Ctx::f32("cpu-f64"));
    }

    #[test]
    fn wide_features() {
        check_wide_features(&f32(), &ctx());
    }
}
