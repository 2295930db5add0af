//! Parity of the CUDA backend with the CPU reference: every [`Backend`] method, and every
//! hypergradient estimator end to end, on the GPU (f32, and designs stored as bf16) against
//! `CpuBackend<f64>` on the same inputs (fixed seeds, the crate's `Rng` and synthetic data).
//!
//! **Without a usable GPU every CUDA test returns at once**, after one line on stderr:
//! `cuda_parity: SKIPPED — no usable CUDA device (<reason>)`. The line is written to the
//! process's stderr directly (not through the test harness's capture), so it shows in CI logs
//! with or without `--nocapture`; `cuda_parity_reports_skip_or_device` always runs and says
//! which of the two happened. A machine that has a device but cannot start the backend (a
//! kernel that does not load, cuBLAS missing) fails the tests: that is a bug, not a skip.
//!
//! The comparison harness is generic over the backend, and the module `cpu_f32_stand_in` runs
//! the same checks with `CpuBackend<f32>` in place of the GPU, so the references, the inputs
//! and the tolerances below are exercised on every machine (GPU-specific switches such as the
//! row path and bf16 storage aside).
//!
//! # Tolerances (relative, in the 2-norm of the whole output unless said otherwise)
//!
//! * **f32: 1e-5.** Inputs are drawn f32-representable, so the f64 reference sees exactly the
//!   values the GPU holds and only the f32 arithmetic differs: unit round-off u = 6e-8, and a
//!   sum of k terms in f32 is off by about √k·u relative for random signs. The longest f32 sums
//!   are over rows (n = 20 003): the row kernel sums ≈ n/(2·SMs) ≈ 80 rows per block in shared
//!   memory and then the blocks' partials by atomics, so √k·u ≲ 1e-6 even there; GEMMs sum
//!   k ≤ 515 terms (√515·u ≈ 1.4e-6). Dot products and group sums accumulate in f64 on the
//!   device, so they are compared entry-wise against `tol·Σ|x_e y_e|` (the scale of their
//!   rounding error, which the cancellation of random signs can make larger than the result).
//! * **bf16 storage: 2e-2** against f64 on the same (unrounded) data: bf16 keeps 8 significant
//!   bits, a relative error of at most 2⁻⁹ ≈ 2e-3 per design entry, so outputs that are sums of
//!   products with design entries are off by ~2e-3 (less after averaging). In addition, the
//!   same checks are run against the f64 reference on the **bf16-rounded** design at 1e-5:
//!   the kernels widen bf16 exactly, so that isolates their f32 arithmetic again.
//! * **Estimators: 1e-4** against CPU f64 `exact` with the inner problem solved to the f64
//!   floor. The CUDA run uses `Options::new(method, Precision::F32)`: inner solve to 1e-5
//!   relative gradient, CG to 1e-5 relative residual; each error reaches the hypergradient
//!   multiplied by the condition number of the inner Hessian, which is ≤ 3 for the problems
//!   here (λ ≈ e⁻¹ on standardised data, n ≫ d), so ≲ 3e-5 plus f32 rounding. The truncated
//!   methods (Neumann, fixed-point: K = 100 terms; unroll, forward: T = 100 steps) converge
//!   like (1 − μ/L)^100 < 1e-15 at that conditioning, so their truncation error is negligible.
//!   Every `error_bound` the GPU reports must cover its measured error.

mod common;
mod cuda_common;

use common::{normals, r32, rel_err};
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::cuda::{self, CudaBackend, RowPath, Storage};
use hypergrad::backend::{AdamCoefficients, Backend, FisherOps, GlmOps, Groups, Loss, Precision};
use hypergrad::data::rng::Rng;
use hypergrad::data::{synthetic, Dataset};
use hypergrad::hypergrad::{compute, Method, Options};
use hypergrad::problem::{Bilevel, GlmBilevel, HyperLayout, InnerProblem, ProblemKind};
use ndarray::Array2;

/// The reference backend.
type Cpu = CpuBackend<f64>;

const TOL_F32: f64 = 1e-5;
const TOL_BF16: f64 = 2e-2;
const TOL_ESTIMATOR: f64 = 1e-4;

// ---- the device -----------------------------------------------------------------------------

/// [`cuda_common::gpu_with`] for this suite.
fn gpu_with(storage: Storage) -> Option<CudaBackend> {
    cuda_common::gpu_with("cuda_parity", storage)
}

/// The CUDA backend with f32 designs (see [`gpu_with`]). Each test makes its own: the row path
/// and the host-traffic counters are per backend, and tests run in parallel.
fn gpu() -> Option<CudaBackend> {
    gpu_with(Storage::F32)
}

#[test]
fn cuda_parity_reports_skip_or_device() {
    let probe = cuda::probe();
    match probe.devices.first() {
        None => cuda_common::log_line(&format!(
            "cuda_parity: SKIPPED — no usable CUDA device ({})",
            probe
                .reason
                .unwrap_or_else(|| "the driver lists no device".into())
        )),
        Some(dev) => {
            let build = cuda::KERNEL_BUILD;
            cuda_common::log_line(&format!(
                "cuda_parity: running on {} (compute capability {}.{}, {} SMs, {:.1} GiB); \
                 kernels built by {} for {}",
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

// ---- comparison helpers ---------------------------------------------------------------------

/// How a backend under test is compared with the f64 reference.
struct Ctx {
    /// Relative tolerance.
    tol: f64,
    /// The reference sees the design rounded to bf16 (the values a bf16-storage backend holds).
    bf16_reference: bool,
    /// Names the configuration in messages.
    tag: String,
}

impl Ctx {
    fn f32(tag: impl Into<String>) -> Ctx {
        Ctx {
            tol: TOL_F32,
            bf16_reference: false,
            tag: tag.into(),
        }
    }

    /// The design the reference backend gets.
    fn reference_design(&self, x: &Array2<f64>) -> Array2<f64> {
        if self.bf16_reference {
            x.mapv(|v| half::bf16::from_f64(v).to_f64())
        } else {
            x.clone()
        }
    }
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    let e = rel_err(got, want);
    common::note(|| format!("{what}: {e:.2e}"));
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}

fn assert_scalar(got: f64, want: f64, tol: f64, what: &str) {
    let e = (got - want).abs() / want.abs().max(f64::MIN_POSITIVE);
    common::note(|| format!("{what}: {e:.2e}"));
    assert!(
        e <= tol,
        "{what}: {got} vs {want}, relative error {e:e} > {tol:e}"
    );
}

/// `|got_i − want_i| ≤ tol · scale_i` for reductions, `scale_i = Σ|terms|` of entry i.
fn assert_scaled(got: &[f64], want: &[f64], scale: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .zip(scale)
        .map(|((g, w), s)| (g - w).abs() / s.max(f64::MIN_POSITIVE))
        .fold(0.0, f64::max);
    common::note(|| format!("{what}: {worst:.2e} (of Σ|terms|)"));
    assert!(
        worst <= tol,
        "{what}: error {worst:e} of Σ|terms| > {tol:e}"
    );
}

/// `download`, unwrapped.
fn down<B: Backend>(b: &B, buf: &B::Buf) -> Vec<f64> {
    b.download(buf).unwrap()
}

// ---- data -----------------------------------------------------------------------------------

/// `(n, d)`: fewer rows than a tile, d not a multiple of 32 (twice), and one large enough for
/// every block of the GPU (n ≥ 20 000 rows in tiles of 8 over 2·SMs blocks, d = 64).
const SIZES: [(usize, usize); 4] = [(5, 1), (37, 45), (1000, 33), (20_003, 64)];

/// [`SIZES`], without the large one when `HYPERGRAD_PARITY_SMALL` is set: under
/// compute-sanitizer every access is instrumented (10–100× slower), and the small shapes
/// already reach every code path (partial tiles, d not a multiple of 32, several blocks).
fn sizes() -> Vec<(usize, usize)> {
    small_only(&SIZES)
}

fn small_only(sizes: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let small = std::env::var_os("HYPERGRAD_PARITY_SMALL").is_some();
    sizes
        .iter()
        .copied()
        .filter(|&(n, _)| !small || n <= 1000)
        .collect()
}

/// Losses with c = 1, 1, 3 and 10 outputs (10: a batch of vectors splits into launches of at
/// most 32 rows of M, three vectors each).
const LOSSES: [Loss; 4] = [
    Loss::Squared,
    Loss::Logistic,
    Loss::Softmax { classes: 3 },
    Loss::Softmax { classes: 10 },
];

/// A GLM instance: synthetic design and labels for `loss` (rounded to f32), row weights in
/// [0, 2) with one exactly 0, and a random point `W` (c×d).
struct Glm {
    x: Array2<f64>,
    y: Vec<f64>,
    s: Vec<f64>,
    w: Vec<f64>,
}

fn glm(loss: Loss, n: usize, d: usize, seed: u64) -> Glm {
    let data = match loss {
        Loss::Squared => synthetic::linear(n, d, 0.3, 0.5, seed).0,
        Loss::Logistic => synthetic::logistic(n, d, 0.3, 2.0, seed).0,
        Loss::Softmax { classes } => synthetic::softmax(n, d, classes, 0.3, 2.0, seed).0,
    };
    let mut rng = Rng::new(seed ^ 0x9a11_7e57);
    let mut s: Vec<f64> = (0..n).map(|_| r32(2.0 * rng.uniform())).collect();
    s[n / 2] = 0.0;
    let c = loss.outputs();
    Glm {
        x: data.x.mapv(r32),
        y: data.y.iter().map(|&v| r32(v)).collect(),
        s,
        w: normals(&mut rng, c * d, 1.0 / (d as f64).sqrt()),
    }
}

/// A GLM instance uploaded to a backend.
struct OnBackend<B: Backend> {
    x: B::Design,
    y: B::Buf,
    s: B::Buf,
    w: B::Buf,
}

fn put<B: GlmOps>(b: &B, dt: &Glm, x: &Array2<f64>) -> OnBackend<B> {
    OnBackend {
        x: b.upload_design(x).unwrap(),
        y: b.upload(&dt.y).unwrap(),
        s: b.upload(&dt.s).unwrap(),
        w: b.upload(&dt.w).unwrap(),
    }
}

/// Mini-batches of an n-row design: one row (the last), every row in order, and a random draw
/// with replacement in random order (duplicates included).
fn batches(n: usize, rng: &mut Rng) -> Vec<Vec<u32>> {
    let b = (2 * n).min(512);
    vec![
        vec![(n - 1) as u32],
        (0..n as u32).collect(),
        (0..b).map(|_| rng.below(n) as u32).collect(),
    ]
}

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

/// `I + R Rᵀ/p` (R standard normal), rounded to f32: SPD with eigenvalues in about [1, 5], the
/// inverse of another SPD matrix, so a valid starting point for Woodbury updates.
fn spd(rng: &mut Rng, p: usize) -> Vec<f64> {
    let r: Vec<f64> = (0..p * p).map(|_| rng.normal()).collect();
    let cpu = Cpu::new();
    let mut s = vec![0.0; p * p];
    cpu.gemm(false, true, (p, p, p), 1.0 / p as f64, &r, &r, 0.0, &mut s)
        .unwrap();
    for (e, v) in s.iter_mut().enumerate() {
        if e / p == e % p {
            *v += 1.0;
        }
        *v = r32(*v);
    }
    s
}

/// `spd_solve` against the f64 Cholesky of the CPU backend, with 1 and 10 right-hand sides, up
/// to K-FAC's input factor for MNIST (d = 785). The matrices have κ ≤ 5, and a Cholesky solve
/// in f32 is backward stable with an error of order κ·dim·u ≲ 2e-4 in the worst case (√dim
/// for random rounding): the tolerance is 10× the f32 one. A matrix that is not positive
/// definite is an error.
fn check_spd_solve<G: FisherOps>(g: &G, ctx: &Ctx) {
    let cpu = Cpu::new();
    let mut rng = Rng::new(900);
    for dim in [1, 45, 130, 785] {
        for nrhs in [1, 10] {
            let what = format!("{} spd_solve dim={dim} nrhs={nrhs}", ctx.tag);
            let a = spd(&mut rng, dim);
            let b = normals(&mut rng, nrhs * dim, 1.0);
            let (mut ag, mut bg) = (g.upload(&a).unwrap(), g.upload(&b).unwrap());
            g.spd_solve(&mut ag, &mut bg, nrhs)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let (mut ac, mut bc) = (a.clone(), b.clone());
            cpu.spd_solve(&mut ac, &mut bc, nrhs).unwrap();
            assert_close(&down(g, &bg), &bc, 10.0 * ctx.tol, &what);
            // The solutions solve the system (the reference is not the only check).
            let mut residual = b.clone();
            cpu.gemm(
                false,
                false,
                (nrhs, dim, dim),
                -1.0,
                &bc,
                &a,
                1.0,
                &mut residual,
            )
            .unwrap();
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            assert!(
                norm(&residual) <= 1e-10 * norm(&b),
                "{what}: f64 reference residual {}",
                norm(&residual) / norm(&b)
            );
        }
    }
    // −I is not positive definite; wrong lengths are dimension errors.
    let minus_eye: Vec<f64> = (0..9)
        .map(|e| if e % 4 == 0 { -1.0 } else { 0.0 })
        .collect();
    let mut a = g.upload(&minus_eye).unwrap();
    let mut b = g.upload(&[1.0, 2.0, 3.0]).unwrap();
    // On a device the failure is reported by the next synchronising call at the latest.
    let reported = g.spd_solve(&mut a, &mut b, 1).is_err() || g.synchronize().is_err();
    assert!(reported, "{}: spd_solve accepted −I", ctx.tag);
    // Reported once: the backend works again afterwards.
    let mut a = g.upload(&spd(&mut rng, 3)).unwrap();
    g.spd_solve(&mut a, &mut b, 1).unwrap();
    g.synchronize().unwrap();
    let mut a = g.upload(&spd(&mut rng, 3)).unwrap();
    assert!(
        g.spd_solve(&mut a, &mut b, 2).is_err(),
        "{}: spd_solve accepted 3 entries for 2 right-hand sides",
        ctx.tag
    );
}

/// `kfac_damp` against the CPU f64 twin: the damped diagonals (π from the traces), the rest
/// untouched, for d up to K-FAC's MNIST size and c = 1, 3, 10.
fn check_kfac_damp<G: FisherOps>(g: &G, ctx: &Ctx) {
    let cpu = Cpu::new();
    let mut rng = Rng::new(950);
    for (d, c) in [(1, 1), (45, 3), (785, 10)] {
        let what = format!("{} kfac_damp d={d} c={c}", ctx.tag);
        let xx = spd(&mut rng, d);
        let gg = spd(&mut rng, c);
        let lambda: Vec<f64> = (0..c).map(|_| r32(0.05 + rng.uniform())).collect();
        let (mut xg, mut gg_g) = (g.upload(&xx).unwrap(), g.upload(&gg).unwrap());
        g.kfac_damp(&mut xg, &mut gg_g, &g.upload(&lambda).unwrap())
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let (mut xc, mut gc) = (xx.clone(), gg.clone());
        cpu.kfac_damp(&mut xc, &mut gc, &lambda).unwrap();
        assert_close(&down(g, &xg), &xc, ctx.tol, &format!("{what} XX"));
        assert_close(&down(g, &gg_g), &gc, ctx.tol, &format!("{what} GG"));
        // Off the diagonal nothing changes; on it, something does.
        let x_down = down(g, &xg);
        assert!(
            (0..d * d).all(|e| e / d == e % d || x_down[e] == xx[e]),
            "{what}: off-diagonal changed"
        );
        assert!(x_down[0] > xx[0], "{what}: π not added");
    }
}

fn check_woodbury<G: FisherOps>(g: &G, ctx: &Ctx) {
    let cpu = Cpu::new();
    let mut rng = Rng::new(800);
    for p in [45, 130] {
        // (rank, updates): ranks 1, 4, 32 and 100 once, and 5 updates of rank 4 in a row.
        for (m, updates) in [(1, 1), (4, 1), (32, 1), (100, 1), (4, 5)] {
            let what = format!(
                "{} woodbury_update p={p} rank={m} updates={updates}",
                ctx.tag
            );
            let a0 = spd(&mut rng, p);
            let mut ag = g.upload(&a0).unwrap();
            let mut ac = a0.clone();
            for t in 0..updates {
                let u = normals(&mut rng, m * p, 1.0 / (p as f64).sqrt());
                let alpha = r32(0.2 + rng.uniform());
                g.woodbury_update(&mut ag, &g.upload(&u).unwrap(), m, alpha)
                    .unwrap_or_else(|e| panic!("{what} update {t}: {e}"));
                cpu.woodbury_update(&mut ac, &u, m, alpha).unwrap();
                assert_close(
                    &down(g, &ag),
                    &ac,
                    ctx.tol,
                    &format!("{what} after update {t}"),
                );
            }
        }
    }
    // α ≤ 0 is an error.
    let a0 = spd(&mut rng, 3);
    let u = g.upload(&normals(&mut rng, 3, 1.0)).unwrap();
    for alpha in [0.0, -1.0, f64::NAN] {
        let mut a = g.upload(&a0).unwrap();
        assert!(
            g.woodbury_update(&mut a, &u, 1, alpha).is_err(),
            "{}: woodbury_update accepted α = {alpha}",
            ctx.tag
        );
    }
    // A capacitance matrix that is not positive definite (A = −I, U = 2I: I/α + UAUᵀ = −3I)
    // is reported by the update or, on a device, by the next synchronising call at the latest;
    // after that the backend works normally again.
    let minus_eye: Vec<f64> = (0..9)
        .map(|e| if e / 3 == e % 3 { -1.0 } else { 0.0 })
        .collect();
    let two_eye: Vec<f64> = minus_eye.iter().map(|v| -2.0 * v).collect();
    let mut a = g.upload(&minus_eye).unwrap();
    let update = g.woodbury_update(&mut a, &g.upload(&two_eye).unwrap(), 3, 1.0);
    let reported = update.is_err() || g.download(&a).is_err();
    assert!(
        reported,
        "{}: a capacitance matrix that is not positive definite was not reported",
        ctx.tag
    );
    let mut ok = g.upload(&a0).unwrap();
    g.woodbury_update(&mut ok, &u, 1, 0.5).unwrap();
    let mut want = a0.clone();
    cpu.woodbury_update(&mut want, &down(g, &u), 1, 0.5)
        .unwrap();
    assert_close(
        &g.download(&ok)
            .expect("the failure was reported once; the next download must succeed"),
        &want,
        ctx.tol,
        &format!("{} woodbury_update after a reported failure", ctx.tag),
    );
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

// ---- estimators -----------------------------------------------------------------------------

/// Training and validation data for `kind`, rounded to f32 (so both backends hold the same
/// problem), with every class present in the training labels.
fn problem_data(kind: ProblemKind, seed: u64) -> (Dataset, Dataset) {
    let (train, val) = common::datasets(kind, 400, 200, 10, seed);
    let round = |ds: Dataset| Dataset {
        x: ds.x.mapv(r32),
        y: ds.y.iter().map(|&v| r32(v)).collect(),
        name: ds.name,
    };
    (round(train), round(val))
}

/// The problems, each with several hyper-parameters, and the centre of θ: λ = e^θ ≈ e⁻¹ for
/// the regularisers (condition numbers ≤ 3), sample weights σ(θ) ≈ 0.6 for hyperclean.
const PROBLEMS: [(ProblemKind, HyperLayout, f64); 4] = [
    (ProblemKind::Ridge, HyperLayout::PerFeature, -1.0),
    (ProblemKind::Logreg, HyperLayout::PerFeature, -1.0),
    (ProblemKind::Softmax, HyperLayout::PerClass, -1.0),
    (ProblemKind::Hyperclean, HyperLayout::PerSample, 0.5),
];

const METHODS: [Method; 6] = [
    Method::Exact,
    Method::Cg,
    Method::Neumann,
    Method::FixedPoint,
    Method::Unroll,
    Method::Forward,
];

/// Every estimator on `g` with f32 options against CPU f64 `exact` solved to the f64 floor,
/// within `tol`; with `check_bounds`, every reported error bound covers the measured error.
fn check_estimators<G: GlmOps + FisherOps + Clone>(g: &G, tag: &str, tol: f64, check_bounds: bool) {
    const L2: f64 = 0.3;
    for (t, &(kind, layout, centre)) in PROBLEMS.iter().enumerate() {
        let (train, val) = problem_data(kind, 2000 + t as u64);
        let mut pc = GlmBilevel::new(Cpu::new(), kind, layout, &train, &val, L2).unwrap();
        let mut pg = GlmBilevel::new(g.clone(), kind, layout, &train, &val, L2).unwrap();
        let mut rng = Rng::new(2100 + t as u64);
        let theta: Vec<f64> = (0..pc.hyper_dim())
            .map(|_| r32(centre + 0.3 * rng.normal()))
            .collect();
        pc.set_theta(&theta).unwrap();
        pg.set_theta(&theta).unwrap();
        assert!(pc.inner_dim() <= 4096, "exact needs P ≤ 4096");
        let reference = compute(
            &pc,
            &common::tight(Options::new(Method::Exact, Precision::F64)),
            None,
        )
        .unwrap();
        let ref_bound = reference.error_bound.unwrap_or(0.0);
        let ref_norm = common::norm(&reference.hypergradient);
        for method in METHODS {
            let what = format!("{tag} {}/{} {}", kind.name(), layout.name(), method.name());
            let h = compute(&pg, &Options::new(method, Precision::F32), None)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                h.hypergradient.iter().all(|v| v.is_finite()),
                "{what}: non-finite hypergradient"
            );
            let err = common::dist(&h.hypergradient, &reference.hypergradient);
            common::note(|| {
                format!(
                    "{what}: {:.2e} relative, bound {:?} (relative), reference bound {:.1e}",
                    err / ref_norm,
                    h.error_bound.map(|b| b / ref_norm),
                    ref_bound / ref_norm
                )
            });
            assert!(
                err <= tol * ref_norm,
                "{what}: relative error {:e} > {tol:e} against f64 exact",
                err / ref_norm
            );
            if check_bounds {
                // β_ref (the reference's own bound, ~1e-12 relative) allows for the reference
                // not being exact to the last bit: a valid β gives ‖h − h_ref‖ ≤ β + β_ref.
                if let Some(bound) = h.error_bound {
                    assert!(
                        err <= bound + ref_bound,
                        "{what}: error bound {bound:e} < measured error {err:e} \
                         (reference bound {ref_bound:e})"
                    );
                }
            }
        }
    }
}

// ---- the CUDA tests -------------------------------------------------------------------------

const ROW_PATHS: [RowPath; 2] = [RowPath::Fused, RowPath::Cublas];

#[test]
fn memory_and_blas1() {
    let Some(gpu) = gpu() else { return };
    check_memory_blas1(&gpu, &Ctx::f32(gpu.name()));
}

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
fn kfac_damp_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    check_kfac_damp(&gpu, &Ctx::f32(gpu.name()));
}

#[test]
fn spd_solve_matches_f64_cholesky() {
    let Some(gpu) = gpu() else { return };
    check_spd_solve(&gpu, &Ctx::f32(gpu.name()));
}

#[test]
fn woodbury_update_matches_the_cpu_at_ranks_1_to_100() {
    let Some(gpu) = gpu() else { return };
    check_woodbury(&gpu, &Ctx::f32(gpu.name()));
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
fn bad_glm_operands_are_refused() {
    let Some(gpu) = gpu() else { return };
    check_bad_glm_operands(&gpu, &Ctx::f32(gpu.name()));
}

#[test]
fn upload_rows_rejects_out_of_range() {
    let Some(gpu) = gpu() else { return };
    check_upload_rows(&gpu, &Ctx::f32(gpu.name()));
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

#[test]
fn estimators_match_f64_exact() {
    let Some(gpu) = gpu() else { return };
    check_estimators(&gpu, &gpu.name(), TOL_ESTIMATOR, true);
}

/// With bf16 storage the problem's data are rounded to 8 significant bits, which moves the
/// hypergradient by about that much: every estimator stays within 2e-2 of f64 exact (no bound
/// check: the bound is for the rounded problem).
#[test]
fn estimators_bf16_storage() {
    let Some(gpu) = gpu_with(Storage::Bf16) else {
        return;
    };
    check_estimators(&gpu, &gpu.name(), TOL_BF16, false);
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

// ---- NHGD's loop: CPU/CUDA agreement on the same seed, no host traffic inside ----------------

/// One NHGD estimate per curvature representation on a hyper-cleaning problem, with the
/// host syncs and copies counted inside the inner loop.
fn nhgd_estimates<B: GlmOps + FisherOps + Clone>(backend: B) -> Vec<(String, Vec<f64>, u64)> {
    use hypergrad::hypergrad::fisher::{DenseUpdate, Representation};
    use hypergrad::hypergrad::stochastic::{StochasticEstimator, StochasticOptions};
    let (train, val) = common::datasets(ProblemKind::Hyperclean, 300, 80, 12, 4100);
    let mut problem = GlmBilevel::new(
        backend,
        ProblemKind::Hyperclean,
        HyperLayout::PerSample,
        &train,
        &val,
        0.1,
    )
    .unwrap();
    let theta: Vec<f64> = (0..300)
        .map(|i| ((i * 7) % 11) as f64 / 5.0 - 1.0)
        .collect();
    problem.set_theta(&theta).unwrap();
    let cases = [
        (
            "dense woodbury",
            Representation::Dense,
            DenseUpdate::Woodbury,
        ),
        (
            "dense accumulate",
            Representation::Dense,
            DenseUpdate::Accumulate,
        ),
        ("kfac", Representation::Kfac, DenseUpdate::Woodbury),
        (
            "lowrank",
            Representation::Lowrank { rank: 16 },
            DenseUpdate::Woodbury,
        ),
    ];
    cases
        .iter()
        .map(|(name, representation, dense_update)| {
            let mut opts = StochasticOptions::new(Method::Nhgd);
            opts.inner_steps = 20;
            opts.batch = 16;
            opts.representation = *representation;
            opts.dense_update = *dense_update;
            opts.seed = 9;
            let mut est = StochasticEstimator::new(&problem, &train, opts).unwrap();
            let (h, stats) = est.estimate(&problem, 0).unwrap();
            (
                name.to_string(),
                h.hypergradient,
                stats.inner_host_syncs + stats.inner_host_transfers,
            )
        })
        .collect()
}

#[test]
fn nhgd_loop_matches_the_cpu_and_makes_no_host_traffic_inside() {
    let Some(gpu) = gpu() else { return };
    let on_gpu = nhgd_estimates(gpu);
    let on_cpu = nhgd_estimates(CpuBackend::<f64>::new());
    for ((name, h_gpu, traffic), (_, h_cpu, _)) in on_gpu.iter().zip(&on_cpu) {
        assert_eq!(
            *traffic, 0,
            "{name}: {traffic} host syncs/copies inside the inner loop"
        );
        let err = rel_err(h_gpu, h_cpu);
        assert!(err <= 1e-3, "{name}: CUDA vs CPU f64 hypergradient {err:e}");
    }
}

/// Host copies of one estimate (`count`: the backend's counter of them) at T = 2 and T = 12
/// inner steps, for the estimators whose inner loop makes none (SOBA's makes one loss
/// download per step by design). Preparing the T batches, weights and sketches must take a
/// fixed number of copies: on CUDA each is an allocation and a blocking copy.
fn copies_per_estimate<B: GlmOps + FisherOps + Clone>(
    make: impl Fn() -> B,
    count: impl Fn(&B) -> u64,
) -> Vec<(String, [u64; 2])> {
    use hypergrad::hypergrad::fisher::{DenseUpdate, Representation};
    use hypergrad::hypergrad::stochastic::{StochasticEstimator, StochasticOptions};
    let (train, val) = common::datasets(ProblemKind::Hyperclean, 200, 40, 8, 4200);
    let cases = [
        (
            "nhgd dense",
            Method::Nhgd,
            Representation::Dense,
            DenseUpdate::Woodbury,
        ),
        // Dense accumulate solves by Cholesky on a device (one sync for its status). By CG,
        // as on the CPU, it made a host round trip per iteration, and the iterations depend on
        // the Fisher, not on T (29 transfers at T = 2 and 27 at T = 12 on the H200).
        (
            "nhgd dense accumulate",
            Method::Nhgd,
            Representation::Dense,
            DenseUpdate::Accumulate,
        ),
        (
            "nhgd kfac",
            Method::Nhgd,
            Representation::Kfac,
            DenseUpdate::Woodbury,
        ),
        (
            "nhgd lowrank",
            Method::Nhgd,
            Representation::Lowrank { rank: 4 },
            DenseUpdate::Woodbury,
        ),
        (
            "stocbio",
            Method::Stocbio,
            Representation::Dense,
            DenseUpdate::Woodbury,
        ),
        (
            "amigo",
            Method::Amigo,
            Representation::Dense,
            DenseUpdate::Woodbury,
        ),
    ];
    cases
        .iter()
        .map(|&(name, method, representation, dense_update)| {
            let counts = [2, 12].map(|steps| {
                let mut problem = GlmBilevel::new(
                    make(),
                    ProblemKind::Hyperclean,
                    HyperLayout::PerSample,
                    &train,
                    &val,
                    0.1,
                )
                .unwrap();
                let theta: Vec<f64> = (0..200).map(|i| ((i * 5) % 7) as f64 / 3.0 - 1.0).collect();
                problem.set_theta(&theta).unwrap();
                let mut opts = StochasticOptions::new(method);
                opts.inner_steps = steps;
                opts.batch = 16;
                opts.representation = representation;
                opts.dense_update = dense_update;
                let mut est = StochasticEstimator::new(&problem, &train, opts).unwrap();
                est.estimate(&problem, 0).unwrap();
                let before = count(problem.backend());
                est.estimate(&problem, 1).unwrap();
                count(problem.backend()) - before
            });
            (name.to_string(), counts)
        })
        .collect()
}

fn assert_copies_do_not_grow(counts: &[(String, [u64; 2])], what: &str) {
    for (name, [few, many]) in counts {
        assert_eq!(
            few, many,
            "{name}: {what} per outer step grow with the inner steps ({few} at T = 2, {many} at \
             T = 12)"
        );
    }
}

#[test]
fn transfers_per_outer_step_do_not_grow_with_the_inner_steps() {
    let Some(gpu) = gpu() else { return };
    let counts = copies_per_estimate(|| gpu.clone(), |g| g.host_traffic().1);
    cuda_common::log_line(&format!(
        "cuda_parity: host transfers per estimate at T = 2, 12: {counts:?}"
    ));
    assert_copies_do_not_grow(&counts, "host transfers");
}

#[test]
fn upload_batches_and_parts() {
    let Some(gpu) = gpu() else { return };
    check_upload_batches_and_parts(&gpu, &Ctx::f32(gpu.name()));
}

#[test]
fn set_diagonal_matches_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let cpu = CpuBackend::<f32>::new();
    for p in [1, 7, 300] {
        for invert in [false, true] {
            let diag: Vec<f64> = (0..p).map(|i| 0.5 + i as f64).collect();
            let mut a_gpu = gpu.upload(&vec![3.0; p * p]).unwrap();
            gpu.set_diagonal(&mut a_gpu, &gpu.upload(&diag).unwrap(), invert)
                .unwrap();
            let mut a_cpu = cpu.upload(&vec![3.0; p * p]).unwrap();
            cpu.set_diagonal(&mut a_cpu, &cpu.upload(&diag).unwrap(), invert)
                .unwrap();
            assert_eq!(gpu.download(&a_gpu).unwrap(), cpu.download(&a_cpu).unwrap());
        }
        let diag: Vec<f64> = (0..p).map(|i| 0.25 + i as f64).collect();
        let mut a_gpu = gpu.upload(&vec![3.0; p * p]).unwrap();
        gpu.add_diagonal(&mut a_gpu, &gpu.upload(&diag).unwrap())
            .unwrap();
        let mut a_cpu = cpu.upload(&vec![3.0; p * p]).unwrap();
        cpu.add_diagonal(&mut a_cpu, &cpu.upload(&diag).unwrap())
            .unwrap();
        let added = gpu.download(&a_gpu).unwrap();
        assert_eq!(added, cpu.download(&a_cpu).unwrap(), "add_diagonal p={p}");
        assert_eq!(added[0], 3.25, "add_diagonal adds");
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
    fn memory_and_blas1() {
        check_memory_blas1(&f32(), &ctx());
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
    fn groups() {
        check_groups(&f32(), &ctx());
    }

    #[test]
    fn gemm_and_syrk() {
        check_gemm_syrk(&f32(), &ctx());
    }

    #[test]
    fn woodbury() {
        check_woodbury(&f32(), &ctx());
    }

    #[test]
    fn spd_solve() {
        check_spd_solve(&f32(), &ctx());
    }

    #[test]
    fn kfac_damp() {
        check_kfac_damp(&f32(), &ctx());
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
    fn bad_glm_operands() {
        check_bad_glm_operands(&f32(), &ctx());
        check_bad_glm_operands(&Cpu::new(), &Ctx::f32("cpu-f64"));
    }

    #[test]
    fn upload_rows() {
        check_upload_rows(&f32(), &ctx());
    }

    #[test]
    fn wide_features() {
        check_wide_features(&f32(), &ctx());
    }

    #[test]
    fn upload_batches_and_parts() {
        check_upload_batches_and_parts(&f32(), &ctx());
    }

    /// The CPU makes no host transfers; it counts its upload calls, which are what a device
    /// backend copies.
    #[test]
    fn uploads_per_outer_step_do_not_grow_with_the_inner_steps() {
        let counts = super::copies_per_estimate(f32, |b| b.uploads());
        cuda_common::log_line(&format!(
            "cpu-f32 upload calls per estimate at T = 2, 12: {counts:?}"
        ));
        assert_copies_do_not_grow(&counts, "upload calls");
    }

    #[test]
    fn nhgd_loop_f32_against_f64() {
        let f32 = super::nhgd_estimates(f32());
        let f64 = super::nhgd_estimates(CpuBackend::<f64>::new());
        for ((name, a, _), (_, b, _)) in f32.iter().zip(&f64) {
            let err = rel_err(a, b);
            assert!(err <= 1e-3, "{name}: CPU f32 vs f64 hypergradient {err:e}");
        }
    }

    #[test]
    fn estimators() {
        check_estimators(&f32(), "cpu-f32 stand-in", TOL_ESTIMATOR, true);
    }
}
