//! Parity of the CUDA backend with the CPU reference, core operations: memory, BLAS-1, group
//! operations, GEMM/SYRK, uploads (rows, batches, parts), and host traffic (a loop of
//! device-only operations makes none). The harness, the tolerances and the SKIPPED line are in
//! `tests/parity_common/mod.rs`; the other families are `parity_glm`, `parity_fisher`,
//! `parity_estimators`, `mlp_cuda_parity` and `l1_device`.

mod common;
mod cuda_common;
mod parity_common;

use common::{normals, r32};
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::cuda::{self, CudaBackend, Storage};
use hypergrad::backend::{AdamCoefficients, Backend, FisherOps, GlmOps, Groups, Loss, Precision};
use hypergrad::data::rng::Rng;
use ndarray::Array2;
use parity_common::*;

// ---- the checks, generic over the backend under test ----------------------------------------

fn check_memory_blas1<G: Backend>(g: &G, ctx: &Ctx) {
    let cpu = Cpu::new();
    let tol = ctx.tol;
    let mut rng = Rng::new(10);
    for len in [0, 1, 31, 33, 1000, 1 << 20 | 3] {
        let what = format!("{} len={len}", ctx.tag);
        let xs = normals(&mut rng, len, 1.0);
        let ys = normals(&mut rng, len, 1.0);
        let (x, y) = (g.upload(&xs).unwrap(), g.upload(&ys).unwrap());
        assert_eq!(g.len(&x), len, "len {what}");
        assert_eq!(down(g, &x), xs, "upload/download round trip {what}");
        assert_eq!(
            down(g, &g.zeros(len).unwrap()),
            vec![0.0; len],
            "zeros {what}"
        );

        let mut z = g.zeros(len).unwrap();
        g.copy(&x, &mut z).unwrap();
        assert_eq!(down(g, &z), xs, "copy {what}");
        g.fill(&mut z, 0.25).unwrap();
        assert_eq!(down(g, &z), vec![0.25; len], "fill {what}");

        let (xc, yc) = (cpu.upload(&xs).unwrap(), cpu.upload(&ys).unwrap());
        let (alpha, beta) = (r32(-0.75), r32(1.5));
        let mut zg = g.upload(&ys).unwrap();
        let mut zc = cpu.upload(&ys).unwrap();
        g.scal(beta, &mut zg).unwrap();
        cpu.scal(beta, &mut zc).unwrap();
        assert_close(&down(g, &zg), &zc, tol, &format!("scal {what}"));
        let mut zg = g.upload(&ys).unwrap();
        let mut zc = cpu.upload(&ys).unwrap();
        g.axpy(alpha, &x, &mut zg).unwrap();
        cpu.axpy(alpha, &xc, &mut zc).unwrap();
        assert_close(&down(g, &zg), &zc, tol, &format!("axpy {what}"));
        let mut zg = g.upload(&ys).unwrap();
        let mut zc = cpu.upload(&ys).unwrap();
        g.axpby(alpha, &x, beta, &mut zg).unwrap();
        cpu.axpby(alpha, &xc, beta, &mut zc).unwrap();
        assert_close(&down(g, &zg), &zc, tol, &format!("axpby {what}"));

        // Three Adam steps from zero moments, the gradient redrawn each step.
        let (mut wg, mut wc) = (g.upload(&ys).unwrap(), cpu.upload(&ys).unwrap());
        let (mut mg, mut vg) = (g.zeros(len).unwrap(), g.zeros(len).unwrap());
        let (mut mc, mut vc) = (vec![0.0; len], vec![0.0; len]);
        for t in 1..=3 {
            let k = AdamCoefficients::at(r32(0.01), (r32(0.9), r32(0.999), r32(1e-8)), t);
            let grad = normals(&mut rng, len, 1.0);
            g.adam_update(k, &g.upload(&grad).unwrap(), (&mut mg, &mut vg), &mut wg)
                .unwrap();
            cpu.adam_update(k, &grad, (&mut mc, &mut vc), &mut wc)
                .unwrap();
        }
        assert_close(&down(g, &wg), &wc, tol, &format!("adam_update w {what}"));
        assert_close(&down(g, &mg), &mc, tol, &format!("adam_update m {what}"));
        assert_close(&down(g, &vg), &vc, tol, &format!("adam_update v {what}"));

        let abs_dot: f64 = xs.iter().zip(&ys).map(|(a, b)| (a * b).abs()).sum();
        assert_scaled(
            &[g.dot(&x, &y).unwrap()],
            &[cpu.dot(&xc, &yc).unwrap()],
            &[abs_dot],
            tol,
            &format!("dot {what}"),
        );
        let n2 = cpu.nrm2(&xc).unwrap();
        if len > 0 {
            assert_scalar(g.nrm2(&x).unwrap(), n2, tol, &format!("nrm2 {what}"));
        } else {
            assert_eq!(g.nrm2(&x).unwrap(), 0.0, "nrm2 {what}");
        }
    }

    // Batches of m vectors of length len.
    for (len, m) in [(1, 1), (7, 3), (45, 16), (5000, 20), (100_003, 4)] {
        let what = format!("{} len={len} m={m}", ctx.tag);
        let a = normals(&mut rng, len, 1.0);
        let xs = normals(&mut rng, m * len, 1.0);
        let ys = normals(&mut rng, m * len, 1.0);
        let alpha = r32(0.3);
        let mut zg = g.upload(&ys).unwrap();
        let mut zc = cpu.upload(&ys).unwrap();
        g.mul_add(
            alpha,
            &g.upload(&a).unwrap(),
            &g.upload(&xs).unwrap(),
            &mut zg,
        )
        .unwrap();
        cpu.mul_add(alpha, &a, &xs, &mut zc).unwrap();
        assert_close(&down(g, &zg), &zc, tol, &format!("mul_add {what}"));

        let got = g
            .batched_dot(&g.upload(&xs).unwrap(), &g.upload(&a).unwrap())
            .unwrap();
        let want = cpu.batched_dot(&xs, &a).unwrap();
        let scale: Vec<f64> = xs
            .chunks(len)
            .map(|xb| xb.iter().zip(&a).map(|(p, q)| (p * q).abs()).sum())
            .collect();
        assert_scaled(&got, &want, &scale, tol, &format!("batched_dot {what}"));
    }

    // Shape errors are reported, not launched.
    let x3 = g.upload(&[1.0, 2.0, 3.0]).unwrap();
    let mut y2 = g.upload(&[1.0, 2.0]).unwrap();
    assert!(
        g.axpy(1.0, &x3, &mut y2).is_err(),
        "axpy of mismatched lengths"
    );
    assert!(g.copy(&x3, &mut y2).is_err(), "copy of mismatched lengths");
    assert!(g.dot(&x3, &y2).is_err(), "dot of mismatched lengths");
    assert!(
        g.batched_dot(&x3, &y2).is_err(),
        "batched_dot of a ragged batch"
    );
}

fn check_groups<G: Backend>(g: &G, ctx: &Ctx) {
    let cpu = Cpu::new();
    let tol = ctx.tol;
    let mut rng = Rng::new(600);
    for len in [1, 13, 300, 4099, 1 << 20 | 7] {
        for groups in [
            Groups::Shared,
            Groups::Each,
            Groups::Blocks { block: 1 },
            Groups::Blocks { block: 4 },
            Groups::Blocks { block: 33 },
            Groups::Blocks { block: 45 },
            Groups::Blocks { block: 1000 },
            Groups::Blocks { block: len },
        ] {
            let what = format!("{} {groups:?} len={len}", ctx.tag);
            let count = groups.count(len);
            let xs = normals(&mut rng, len, 1.0);
            let ys = normals(&mut rng, len, 1.0);
            let (x, y) = (g.upload(&xs).unwrap(), g.upload(&ys).unwrap());
            let got = g
                .group_dot(groups, &x, &y)
                .unwrap_or_else(|e| panic!("group_dot {what}: {e}"));
            let want = cpu.group_dot(groups, &xs, &ys).unwrap();
            let mut scale = vec![0.0; count];
            for e in 0..len {
                scale[groups.of(e)] += (xs[e] * ys[e]).abs();
            }
            assert_scaled(&got, &want, &scale, tol, &format!("group_dot {what}"));

            let values: Vec<f64> = (0..count).map(|_| r32(rng.normal())).collect();
            let got = down(g, &g.group_expand(groups, &values, len).unwrap());
            let want = cpu.group_expand(groups, &values, len).unwrap();
            assert_eq!(got, want, "group_expand {what}");

            if count * len <= 4_000_000 {
                let coef: Vec<f64> = (0..count).map(|_| r32(rng.normal())).collect();
                let start = normals(&mut rng, count * len, 1.0);
                let mut bg = g.upload(&start).unwrap();
                let mut bc = start.clone();
                g.group_scatter_add(groups, &coef, &x, &mut bg)
                    .unwrap_or_else(|e| panic!("group_scatter_add {what}: {e}"));
                cpu.group_scatter_add(groups, &coef, &xs, &mut bc).unwrap();
                assert_close(
                    &down(g, &bg),
                    &bc,
                    tol,
                    &format!("group_scatter_add {what}"),
                );
            }
        }
    }
}

fn check_gemm_syrk<G: Backend>(g: &G, ctx: &Ctx) {
    let cpu = Cpu::new();
    let tol = ctx.tol;
    let mut rng = Rng::new(700);
    let dims = [
        (1, 1, 1),
        (37, 45, 29),
        (64, 1, 130),
        (1, 64, 130),
        (5, 7, 1),
        (300, 257, 515),
    ];
    for (m, n, k) in dims {
        for ta in [false, true] {
            for tb in [false, true] {
                for (alpha, beta) in [(1.0, 0.0), (0.75, -1.25)] {
                    let what = format!(
                        "{} gemm ta={ta} tb={tb} m={m} n={n} k={k} α={alpha} β={beta}",
                        ctx.tag
                    );
                    let a = normals(&mut rng, m * k, 1.0);
                    let b = normals(&mut rng, k * n, 1.0);
                    let c0 = normals(&mut rng, m * n, 1.0);
                    let mut cg = g.upload(&c0).unwrap();
                    let mut cc = c0.clone();
                    g.gemm(
                        ta,
                        tb,
                        (m, n, k),
                        alpha,
                        &g.upload(&a).unwrap(),
                        &g.upload(&b).unwrap(),
                        beta,
                        &mut cg,
                    )
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                    cpu.gemm(ta, tb, (m, n, k), alpha, &a, &b, beta, &mut cc)
                        .unwrap();
                    assert_close(&down(g, &cg), &cc, tol, &what);
                }
            }
        }
    }
    let a = g.zeros(6).unwrap();
    let mut c = g.zeros(5).unwrap();
    assert!(
        g.gemm(false, false, (2, 2, 3), 1.0, &a, &a, 0.0, &mut c)
            .is_err(),
        "gemm with C of the wrong size"
    );

    for (m, p) in [(1, 1), (7, 45), (300, 130), (2000, 64)] {
        for (alpha, beta) in [(1.0, 0.0), (-1.5, 0.25)] {
            let what = format!("{} syrk m={m} p={p} α={alpha} β={beta}", ctx.tag);
            let a = normals(&mut rng, m * p, 1.0);
            // Not symmetric: every entry of C must be written.
            let c0 = normals(&mut rng, p * p, 1.0);
            let mut cg = g.upload(&c0).unwrap();
            let mut cc = c0.clone();
            g.syrk(alpha, &g.upload(&a).unwrap(), m, beta, &mut cg)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            cpu.syrk(alpha, &a, m, beta, &mut cc).unwrap();
            assert_close(&down(g, &cg), &cc, tol, &what);
        }
    }
    let mut c9 = g.zeros(9).unwrap();
    assert!(
        g.syrk(1.0, &a, 4, 0.0, &mut c9).is_err(),
        "syrk with 6 entries in 4 rows"
    );
}

fn check_upload_rows<G: Backend>(g: &G, ctx: &Ctx) {
    let cpu = Cpu::new();
    for (rows, n) in [
        (vec![], 0),
        (vec![0], 1),
        (vec![4, 0, 4, 2], 5),
        ((0..1000).rev().collect::<Vec<u32>>(), 1000),
    ] {
        let r = g
            .upload_rows(&rows, n)
            .unwrap_or_else(|e| panic!("{}: valid rows {rows:?} < {n} rejected: {e}", ctx.tag));
        assert_eq!(g.rows_len(&r), rows.len(), "{}: rows_len", ctx.tag);
    }
    for (rows, n) in [
        (vec![0], 0),
        (vec![5], 5),
        (vec![0, 1, 2, 7, 3], 7),
        (vec![u32::MAX], 10),
        (vec![1 << 31], 10),
    ] {
        assert!(
            cpu.upload_rows(&rows, n).is_err(),
            "reference accepted {rows:?} for n = {n}"
        );
        assert!(
            g.upload_rows(&rows, n).is_err(),
            "{}: rows {rows:?} accepted for n = {n}",
            ctx.tag
        );
    }
}

/// `upload_batches` and `upload_parts` give what one `upload_rows` / `upload` per part gives:
/// the same lengths, the same values, and batches that a kernel reads at their own offset.
fn check_upload_batches_and_parts<G: GlmOps>(g: &G, ctx: &Ctx) {
    let (n, d, c, batch) = (40, 9, 3, 5);
    let mut rng = Rng::new(3100);
    let x = Array2::from_shape_vec((n, d), normals(&mut rng, n * d, 1.0)).unwrap();
    let x = g.upload_design(&x).unwrap();
    let factors = g.upload(&normals(&mut rng, batch * c, 1.0)).unwrap();
    // 3 full batches and a short one.
    let rows: Vec<u32> = (0..3 * batch + 2).map(|_| rng.below(n) as u32).collect();
    let batches = g.upload_batches(&rows, batch, n).unwrap();
    assert_eq!(batches.len(), 4, "{}: number of batches", ctx.tag);
    for (k, (part, one)) in batches.iter().zip(rows.chunks(batch)).enumerate() {
        assert_eq!(g.rows_len(part), one.len(), "{}: batch {k} length", ctx.tag);
        let alone = g.upload_rows(one, n).unwrap();
        let m = one.len();
        let f = g.upload(&down(g, &factors)[..m * c]).unwrap();
        let (mut via_batches, mut via_rows) =
            (g.zeros(m * c * d).unwrap(), g.zeros(m * c * d).unwrap());
        g.glm_per_sample_gradients(&x, part, &f, None, &mut via_batches)
            .unwrap();
        g.glm_per_sample_gradients(&x, &alone, &f, None, &mut via_rows)
            .unwrap();
        assert_eq!(
            down(g, &via_batches),
            down(g, &via_rows),
            "{}: batch {k} of upload_batches reads other rows than upload_rows",
            ctx.tag
        );
    }
    assert!(
        g.upload_batches(&[0, 1, 40], 2, n).is_err(),
        "{}: upload_batches accepted row 40 for n = 40",
        ctx.tag
    );
    assert!(g.upload_batches(&[], 3, n).unwrap().is_empty());
    let host = normals(&mut rng, 17, 1.0);
    let parts = g.upload_parts(&host, 5).unwrap();
    let lens: Vec<usize> = parts.iter().map(|p| g.len(p)).collect();
    assert_eq!(lens, [5, 5, 5, 2], "{}: upload_parts lengths", ctx.tag);
    for (k, (part, one)) in parts.iter().zip(host.chunks(5)).enumerate() {
        let alone = g.upload(one).unwrap();
        assert_eq!(down(g, part), down(g, &alone), "{}: part {k}", ctx.tag);
    }
    assert!(g.upload_parts(&[], 4).unwrap().is_empty());
}

// ---- the CUDA tests -------------------------------------------------------------------------

#[test]
fn cuda_parity_reports_skip_or_device() {
    let probe = cuda::probe();
    match probe.devices.first() {
        None => cuda_common::log_line(&format!(
            "{}: SKIPPED — no usable CUDA device ({})",
            env!("CARGO_CRATE_NAME"),
            probe
                .reason
                .unwrap_or_else(|| "the driver lists no device".into())
        )),
        Some(dev) => {
            let build = cuda::KERNEL_BUILD;
            cuda_common::log_line(&format!(
                "{}: running on {} (compute capability {}.{}, {} SMs, {:.1} GiB); \
                 kernels built by {} for {}",
                env!("CARGO_CRATE_NAME"),
                dev.name,
                dev.compute_capability.0,
                dev.compute_capability.1,
                dev.multiprocessors,
                dev.memory_bytes as f64 / (1u64 << 30) as f64,
                build.compiler,
                build.arch
            ));
            let b = CudaBackend::new(dev.ordinal, Storage::F32)
                .unwrap_or_else(|e| panic!("the backend does not start on {}: {e}", dev.name));
            assert_eq!(b.precision(), Precision::F32);
            assert!(b.name().starts_with("cuda:"), "name {}", b.name());
        }
    }
}

#[test]
fn memory_and_blas1() {
    let Some(gpu) = gpu() else { return };
    check_memory_blas1(&gpu, &Ctx::f32(gpu.name()));
}

#[test]
fn group_operations() {
    let Some(gpu) = gpu() else { return };
    check_groups(&gpu, &Ctx::f32(gpu.name()));
}

#[test]
fn gemm_and_syrk() {
    let Some(gpu) = gpu() else { return };
    check_gemm_syrk(&gpu, &Ctx::f32(gpu.name()));
}

/// `gemm` with an empty inner dimension (k = 0) is `C ← βC`; the operands A and B are empty
/// buffers. (cuBLAS accepts k = 0 and then reads neither.)
#[test]
fn gemm_with_empty_inner_dimension() {
    let Some(gpu) = gpu() else { return };
    let c0 = [1.0, -2.0, 3.0, 0.5, 4.0, -1.0];
    for (ta, tb) in [(false, false), (true, true)] {
        let mut c = gpu.upload(&c0).unwrap();
        let empty = gpu.zeros(0).unwrap();
        gpu.gemm(ta, tb, (2, 3, 0), 1.0, &empty, &empty, 0.5, &mut c)
            .unwrap();
        let want: Vec<f64> = c0.iter().map(|v| 0.5 * v).collect();
        assert_eq!(down(&gpu, &c), want, "gemm k=0 ta={ta} tb={tb}");
    }
}

#[test]
fn upload_rows_rejects_out_of_range() {
    let Some(gpu) = gpu() else { return };
    check_upload_rows(&gpu, &Ctx::f32(gpu.name()));
}

#[test]
fn upload_batches_and_parts() {
    let Some(gpu) = gpu() else { return };
    check_upload_batches_and_parts(&gpu, &Ctx::f32(gpu.name()));
}

/// Device-only operations make no host synchronisation or transfer: a loop of them leaves
/// `host_traffic` unchanged (only calls that return host values, and uploads, may touch the
/// host).
#[test]
fn device_only_loop_makes_no_host_traffic() {
    let Some(gpu) = gpu() else { return };
    let loss = Loss::Softmax { classes: 3 };
    let (n, d, c, m) = (2000, 45, 3, 8);
    let p = c * d;
    let dt = glm(loss, n, d, 3000);
    let on = put(&gpu, &dt, &dt.x);
    let mut rng = Rng::new(3001);
    let rows = gpu
        .upload_rows(&(0..64).map(|_| rng.below(n) as u32).collect::<Vec<_>>(), n)
        .unwrap();
    let reg = gpu.upload(&vec![0.1; p]).unwrap();
    let v = gpu.upload(&normals(&mut rng, m * p, 1.0)).unwrap();
    let mut out = gpu.zeros(m * p).unwrap();
    let mut w = gpu.upload(&dt.w).unwrap();
    let mut factors = gpu.zeros(64 * c).unwrap();
    let mut per_sample = gpu.zeros(64 * p).unwrap();
    let mut inverse = gpu.upload(&spd(&mut rng, p)).unwrap();
    let u = gpu.upload(&normals(&mut rng, 4 * p, 0.1)).unwrap();
    let mut fisher = gpu.zeros(p * p).unwrap();
    let mut xx = gpu.zeros(d * d).unwrap();
    let mut gg = gpu.zeros(c * c).unwrap();
    let mut y = gpu.zeros(m * p).unwrap();
    let before = gpu.host_traffic();
    for _ in 0..5 {
        gpu.axpy(0.5, &v, &mut y).unwrap();
        gpu.scal(0.9, &mut y).unwrap();
        gpu.axpby(1.0, &out, 0.5, &mut y).unwrap();
        let curvature = gpu
            .glm_curvature(&on.x, loss, &on.y, Some(&on.s), &w, 1.0 / n as f64)
            .unwrap();
        for path in ROW_PATHS {
            gpu.set_row_path(path);
            gpu.glm_hvp(&on.x, &curvature, &v, &mut out).unwrap();
        }
        gpu.glm_sgd_step(
            &on.x,
            loss,
            &on.y,
            Some(&on.s),
            &rows,
            &reg,
            0.1,
            &mut w,
            &mut factors,
        )
        .unwrap();
        gpu.glm_per_sample_gradients(&on.x, &rows, &factors, None, &mut per_sample)
            .unwrap();
        gpu.syrk(1.0 / 64.0, &per_sample, 64, 0.5, &mut fisher)
            .unwrap();
        gpu.glm_kfac_factors(&on.x, &rows, &factors, None, 1.0, 0.5, &mut xx, &mut gg)
            .unwrap();
        gpu.woodbury_update(&mut inverse, &u, 4, 0.5).unwrap();
        gpu.gemm(false, false, (m, p, p), 1.0, &y, &inverse, 0.0, &mut out)
            .unwrap();
    }
    let after = gpu.host_traffic();
    assert_eq!(
        after, before,
        "device-only operations made host syncs/transfers: (syncs, transfers) went from \
         {before:?} to {after:?}"
    );
    // The counters do count: a download is one sync and one transfer.
    let result = down(&gpu, &inverse);
    assert!(
        result.iter().all(|v| v.is_finite()),
        "the loop's result is not finite"
    );
    let (s1, t1) = gpu.host_traffic();
    assert!(
        s1 > after.0 && t1 > after.1,
        "a download was not counted: {after:?} → {:?}",
        (s1, t1)
    );
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
    fn memory_and_blas1() {
        check_memory_blas1(&f32(), &ctx());
    }

    #[test]
    fn groups() {
        check_groups(&f32(), &ctx());
    }

    #[test]
    fn gemm_and_syrk() {
        check_gemm_syrk(&f32(), &ctx());
    }

    #[test]
    fn upload_rows() {
        check_upload_rows(&f32(), &ctx());
    }

    #[test]
    fn upload_batches_and_parts() {
        check_upload_batches_and_parts(&f32(), &ctx());
    }
}
