//! Parity of the CUDA network primitives ([`MlpOps`] for `CudaBackend`, SPEC §8) and of the
//! network estimators on CUDA with the CPU reference `CpuBackend<f64>` on the same inputs:
//! every `MlpOps` method (forward and loss, backward, gradient, per-sample gradients,
//! directional derivatives, HVPs with and without the softmax shift, K-FAC factors with α/β,
//! `copy_range`, and the bad passes every backend refuses alike) and both input-derivative
//! products of [`MlpInputOps`] (dataset distillation's `∂_x ∇_w ℓ [u]` and its transpose), over the whole design and over a mini-batch of rows (with repeats), with and
//! without row weights, tanh and relu, one and two hidden layers; then `cg` and `nhgd` (kfac)
//! hypergradients of small softmax and hyper-cleaning networks end to end; then NHGD's inner
//! loop with every curvature representation, which runs the curvature update on a second
//! queue (stream): it makes no host sync or copy, and its result is that of the same loop on
//! one queue ([`StochasticEstimator::on_one_queue`]).
//!
//! **Without a usable GPU every CUDA test returns at once**, after one line on stderr:
//! `mlp_cuda_parity: SKIPPED — no usable CUDA device (<reason>)`, written to the process's
//! stderr directly so it shows with or without `--nocapture`. A machine with a device whose
//! backend does not start fails instead: that is a bug, not a skip. The module
//! `cpu_f32_stand_in` runs the same generic checks with `CpuBackend<f32>` in place of the GPU,
//! so the references, the inputs and the tolerances below are exercised on every machine (the
//! GPU's bf16 storage aside, which has its own GPU-only test).
//!
//! # Tolerances (relative, in the 2-norm of the whole output)
//!
//! * **Primitives, f32: 2e-5.** Inputs (design, labels, weights, parameters, directions) are
//!   drawn f32-representable, so the f64 reference sees exactly the values the device holds and
//!   only the f32 arithmetic differs: unit round-off u = 6e-8 per operation, sums of k terms
//!   off by about √k·u for random signs (k ≤ 40 rows here, ≤ 8 features), and each layer
//!   passes its input's relative error on multiplied by about ‖Θ_l‖·max|φ'| ≈ 1.5 (the
//!   parameters are drawn at that scale). Through the three GEMM-and-activation stages of the
//!   deepest network and the R-operator's second pass that is ≈ 1.5³·√40·u·(a few) ≈ 5e-6 at
//!   worst; measured on the stand-in, at most 2.6e-7 (the HVPs of the two-hidden-layer relu
//!   network). Loss sums and directional derivatives accumulate in double (as on the CPU), so
//!   they are as accurate as their f32 inputs.
//! * **bf16 storage (GPU only): 2e-5 against the reference on the bf16-rounded design**: the
//!   gather widens bf16 exactly, so that isolates the f32 arithmetic again.
//! * **Estimators: 5e-4** against CPU f64 with the inner problem solved to the f64 floor
//!   (Newton-CG to 1e-13) and CG to 1e-13. The backend under test runs the f32 defaults
//!   (`Options::new(method, Precision::F32)`: inner solve to a 1e-5 relative gradient, CG to a
//!   1e-5 relative residual); both errors reach the hypergradient multiplied by the condition
//!   number of the inner Hessian at ŵ, which is modest for these small tanh networks with
//!   `C = 0.05` (measured on the stand-in: 1.4e-5 for softmax, 1.2e-5 for hyperclean, i.e. an
//!   amplification of about 1); 5e-4 leaves room for a GPU whose different
//!   summation order stops the inner solve at another iterate of the same accuracy. NHGD is one
//!   stochastic outer step (T = 30 SGD steps of b = 8 seeded rows, identical on both
//!   backends): f32 rounding in the iterate grows by at most (1 + η·L)^T ≈ 2 over the loop and
//!   K-FAC's factored solve is well conditioned by its damping (measured: 1.5e-7). The `note`s
//!   print every measured error (`HYPERGRAD_TEST_VERBOSE=1`, `--nocapture`).
//! * **Second queue against one queue: 1e-5.** The same operations on the same inputs, only
//!   issued on two streams ordered by markers, so the results should agree to the last bit
//!   (they do on the CPU, whose fork is a clone); the tolerance leaves room for a kernel whose
//!   sums are ordered by atomics. What it is there to catch is a race (an update reading a
//!   tape whose memory the next step reused, or SGD reading a half-updated buffer), which
//!   garbles values far beyond it.

// The references index rows and layers the way the formulas do.
#![allow(clippy::needless_range_loop)]

mod cuda_common;
mod mlp_common;

use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::cuda::{CudaBackend, Storage};
use hypergrad::backend::mlp::{Activation, Deltas, MlpData, MlpInputOps, MlpOps, Network, Tape};
use hypergrad::backend::{Backend, FisherOps, Precision};
use hypergrad::data::rng::Rng;
use hypergrad::data::Dataset;
use hypergrad::hypergrad::fisher::{DenseUpdate, Representation};
use hypergrad::hypergrad::stochastic::StochasticEstimator;
use hypergrad::hypergrad::stochastic::StochasticOptions;
use hypergrad::hypergrad::{compute, Method, Options};
use hypergrad::problem::{Bilevel, HyperLayout, MlpBilevel, ProblemKind};
use hypergrad::solver::{InnerOptions, Solver};
use mlp_common::{random_params, random_rows, rel_err, teacher_data, with_ones, RefNet};
use ndarray::Array2;

/// The reference backend.
type Cpu = CpuBackend<f64>;

const TOL_PRIMITIVES: f64 = 2e-5;
const TOL_ESTIMATOR: f64 = 5e-4;
const TOL_QUEUES: f64 = 1e-5;

// ---- the device -----------------------------------------------------------------------------

/// [`cuda_common::gpu_with`] for this suite.
fn gpu_with(storage: Storage) -> Option<CudaBackend> {
    cuda_common::gpu_with("mlp_cuda_parity", storage)
}

fn gpu() -> Option<CudaBackend> {
    gpu_with(Storage::F32)
}

fn note(msg: impl FnOnce() -> String) {
    if std::env::var_os("HYPERGRAD_TEST_VERBOSE").is_some() {
        eprintln!("{}", msg());
    }
}

fn r32(v: f64) -> f64 {
    v as f32 as f64
}

fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    let e = rel_err(got, want);
    note(|| format!("{what}: {e:.2e}"));
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}

// ---- the generic checks ---------------------------------------------------------------------

/// The checks, written once for any backend under test against `CpuBackend<f64>`.
mod checks {
    use super::*;

    /// One random instance, every value f32-representable.
    pub struct Case {
        pub net: RefNet,
        pub w: Vec<f64>,
        pub x: Array2<f64>,
        pub y: Vec<f64>,
        pub s: Vec<f64>,
        /// A mini-batch of design rows, with a repeat.
        pub rows: Vec<usize>,
    }

    pub fn case(sizes: &[usize], act: Activation, seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        let net = RefNet::new(sizes, act);
        let w = random_params(&net, 1.5, &mut rng)
            .into_iter()
            .map(r32)
            .collect();
        let n = 40;
        let (x, y) = random_rows(n, sizes[0], *sizes.last().unwrap(), &mut rng);
        let x = x.mapv(r32);
        let s = (0..n).map(|_| r32(0.2 + rng.uniform())).collect();
        let mut rows: Vec<usize> = (0..16).map(|_| rng.below(n)).collect();
        rows.push(rows[3]);
        Case {
            net,
            w,
            x,
            y,
            s,
            rows,
        }
    }

    /// tanh and relu, one and two hidden layers.
    pub fn cases() -> Vec<Case> {
        let mut out = Vec::new();
        for (i, act) in [Activation::Tanh, Activation::Relu].into_iter().enumerate() {
            out.push(case(&[6, 7, 4], act, 100 + i as u64));
            out.push(case(&[5, 8, 6, 3], act, 200 + i as u64));
        }
        out
    }

    /// A case's operands on one backend.
    pub struct On<B: MlpOps> {
        pub net: Network,
        pub x: B::Design,
        pub y: B::Buf,
        pub s: B::Buf,
        pub w: B::Buf,
        pub rows: B::Rows,
    }

    pub fn upload<B: MlpOps>(b: &B, c: &Case, design: &Array2<f64>) -> On<B> {
        let rows: Vec<u32> = c.rows.iter().map(|&r| r as u32).collect();
        On {
            net: c.net.network(),
            x: b.upload_design(&with_ones(design)).unwrap(),
            y: b.upload(&c.y).unwrap(),
            s: b.upload(&c.s).unwrap(),
            w: b.upload(&c.w).unwrap(),
            rows: b.upload_rows(&rows, c.x.nrows()).unwrap(),
        }
    }

    pub fn data<B: MlpOps>(u: &On<B>, weighted: bool, batch: bool) -> MlpData<'_, B> {
        MlpData {
            x: &u.x,
            y: &u.y,
            weights: weighted.then_some(&u.s),
            rows: batch.then_some(&u.rows),
        }
    }

    /// A tape and its deltas.
    pub fn pass<B: MlpOps>(b: &B, u: &On<B>, d: MlpData<'_, B>) -> (Tape<B>, Deltas<B>) {
        let tape = b.mlp_forward(&u.net, d, &u.w).unwrap();
        let deltas = b.mlp_backward(&u.net, d, &tape, &u.w).unwrap();
        (tape, deltas)
    }

    /// f32-representable normals.
    pub fn normals(rng: &mut Rng, len: usize) -> Vec<f64> {
        (0..len).map(|_| r32(rng.normal())).collect()
    }

    /// Runs `check(backend-under-test operands, reference operands, name)` on every case and
    /// every (weighted, mini-batch) combination. `bf16` rounds the reference's design to bf16.
    pub fn each<B: MlpOps>(
        b: &B,
        tag: &str,
        bf16: bool,
        check: impl Fn(&On<B>, &On<Cpu>, bool, bool, &str),
    ) {
        let cpu = Cpu::new();
        for (k, c) in cases().iter().enumerate() {
            let reference_x = if bf16 {
                c.x.mapv(|v| half::bf16::from_f64(v).to_f64())
            } else {
                c.x.clone()
            };
            let u = upload(b, c, &c.x);
            let r = upload(&cpu, c, &reference_x);
            for weighted in [false, true] {
                for batch in [false, true] {
                    let what = format!(
                        "{tag} case {k} ({:?}, {}) weighted={weighted} batch={batch}",
                        c.net.sizes,
                        c.net.act.name()
                    );
                    check(&u, &r, weighted, batch, &what);
                }
            }
        }
    }

    pub fn forward_and_loss<B: MlpOps>(b: &B, tag: &str, bf16: bool) {
        let cpu = Cpu::new();
        each(b, tag, bf16, |u, r, weighted, batch, what| {
            let (du, dr) = (data(u, weighted, batch), data(r, weighted, batch));
            let tu = b.mlp_forward(&u.net, du, &u.w).unwrap();
            let tr = cpu.mlp_forward(&r.net, dr, &r.w).unwrap();
            assert_eq!(tu.n, tr.n, "{what}: rows of the pass");
            let lu = b.mlp_loss(du, &tu).unwrap();
            let lr = cpu.mlp_loss(dr, &tr).unwrap();
            assert_close(&[lu], &[lr], TOL_PRIMITIVES, &format!("{what}: loss"));
            let probs = b.download(&tu.probs).unwrap();
            assert_close(&probs, &tr.probs, TOL_PRIMITIVES, &format!("{what}: probs"));
            let losses = b.download(&tu.losses).unwrap();
            assert_close(
                &losses,
                &tr.losses,
                TOL_PRIMITIVES,
                &format!("{what}: losses"),
            );
            for (l, (hu, hr)) in tu.hidden.iter().zip(&tr.hidden).enumerate() {
                let hu = b.download(hu).unwrap();
                assert_close(&hu, hr, TOL_PRIMITIVES, &format!("{what}: Ã_{}", l + 1));
            }
        });
    }

    pub fn backward_and_gradient<B: MlpOps>(b: &B, tag: &str, bf16: bool) {
        let cpu = Cpu::new();
        each(b, tag, bf16, |u, r, weighted, batch, what| {
            let (du, dr) = (data(u, weighted, batch), data(r, weighted, batch));
            let (tu, eu) = pass(b, u, du);
            let (tr, er) = pass(&cpu, r, dr);
            for (l, (gu, gr)) in eu.layers.iter().zip(&er.layers).enumerate() {
                let gu = b.download(gu).unwrap();
                assert_close(&gu, gr, TOL_PRIMITIVES, &format!("{what}: δ_{}", l + 1));
            }
            let dim = u.net.dim();
            let mut gu = b.upload(&vec![9.0; dim]).unwrap();
            let mut gr = vec![9.0; dim];
            b.mlp_gradient(&u.net, du, &tu, &eu, 0.37, &mut gu).unwrap();
            cpu.mlp_gradient(&r.net, dr, &tr, &er, 0.37, &mut gr)
                .unwrap();
            let gu = b.download(&gu).unwrap();
            assert_close(&gu, &gr, TOL_PRIMITIVES, &format!("{what}: gradient"));
        });
    }

    pub fn per_sample_and_directional<B: MlpOps>(b: &B, tag: &str, bf16: bool) {
        let cpu = Cpu::new();
        each(b, tag, bf16, |u, r, weighted, batch, what| {
            let (du, dr) = (data(u, weighted, batch), data(r, weighted, batch));
            let (tu, eu) = pass(b, u, du);
            let (tr, er) = pass(&cpu, r, dr);
            let (n, dim) = (tr.n, r.net.dim());
            let mut rng = Rng::new(n as u64 + dim as u64);
            let coef = normals(&mut rng, n);
            for with_coef in [false, true] {
                let cu = b.upload(&coef).unwrap();
                let mut ou = b.upload(&vec![9.0; n * dim]).unwrap();
                let mut or = vec![9.0; n * dim];
                b.mlp_per_sample_gradients(&u.net, du, &tu, &eu, with_coef.then_some(&cu), &mut ou)
                    .unwrap();
                cpu.mlp_per_sample_gradients(
                    &r.net,
                    dr,
                    &tr,
                    &er,
                    with_coef.then_some(&coef),
                    &mut or,
                )
                .unwrap();
                let ou = b.download(&ou).unwrap();
                assert_close(
                    &ou,
                    &or,
                    TOL_PRIMITIVES,
                    &format!("{what}: per-sample gradients coef={with_coef}"),
                );
            }
            let q = normals(&mut rng, dim);
            let qu = b.upload(&q).unwrap();
            let got = b.mlp_directional(&u.net, du, &tu, &u.w, &qu).unwrap();
            let want = cpu.mlp_directional(&r.net, dr, &tr, &r.w, &q).unwrap();
            assert_close(&got, &want, TOL_PRIMITIVES, &format!("{what}: directional"));
        });
    }

    pub fn hvp<B: MlpOps>(b: &B, tag: &str, bf16: bool) {
        let cpu = Cpu::new();
        each(b, tag, bf16, |u, r, weighted, batch, what| {
            let (du, dr) = (data(u, weighted, batch), data(r, weighted, batch));
            let (tu, eu) = pass(b, u, du);
            let (tr, er) = pass(&cpu, r, dr);
            let dim = r.net.dim();
            let mut rng = Rng::new(7 + dim as u64);
            // Three vectors at once.
            let v = normals(&mut rng, 3 * dim);
            let vu = b.upload(&v).unwrap();
            for shift in [0.0, 2.5] {
                let mut ou = b.upload(&vec![9.0; 3 * dim]).unwrap();
                let mut or = vec![9.0; 3 * dim];
                b.mlp_hvp(&u.net, du, &tu, &eu, &u.w, 0.5, shift, &vu, &mut ou)
                    .unwrap();
                cpu.mlp_hvp(&r.net, dr, &tr, &er, &r.w, 0.5, shift, &v, &mut or)
                    .unwrap();
                let ou = b.download(&ou).unwrap();
                for k in 0..3 {
                    let block = k * dim..(k + 1) * dim;
                    assert_close(
                        &ou[block.clone()],
                        &or[block],
                        TOL_PRIMITIVES,
                        &format!("{what}: hvp {k} shift={shift}"),
                    );
                }
            }
        });
    }

    /// Both input-derivative products (the R-pass with the input moved, and the R-pass along
    /// `q` continued through the first layer): every entry of the output is written (it
    /// starts at 9), scaled, and the rows' weights applied.
    pub fn input_cross<B: MlpInputOps>(b: &B, tag: &str, bf16: bool) {
        let cpu = Cpu::new();
        each(b, tag, bf16, |u, r, weighted, batch, what| {
            let (du, dr) = (data(u, weighted, batch), data(r, weighted, batch));
            let (tu, eu) = pass(b, u, du);
            let (tr, er) = pass(&cpu, r, dr);
            let (n, d, dim) = (tr.n, r.net.inputs(), r.net.dim());
            let mut rng = Rng::new(13 + dim as u64);
            let v = normals(&mut rng, n * d);
            let vu = b.upload(&v).unwrap();
            let mut ou = b.upload(&vec![9.0; dim]).unwrap();
            let mut or = vec![9.0; dim];
            b.mlp_input_cross(&u.net, du, &tu, &eu, &u.w, 0.7, &vu, &mut ou)
                .unwrap();
            cpu.mlp_input_cross(&r.net, dr, &tr, &er, &r.w, 0.7, &v, &mut or)
                .unwrap();
            let ou = b.download(&ou).unwrap();
            assert_close(&ou, &or, TOL_PRIMITIVES, &format!("{what}: ∂x∇wℓ[u]"));
            let q = normals(&mut rng, dim);
            let qu = b.upload(&q).unwrap();
            let mut ou = b.upload(&vec![9.0; n * d]).unwrap();
            let mut or = vec![9.0; n * d];
            b.mlp_input_cross_t(&u.net, du, &tu, &eu, &u.w, 0.7, &qu, &mut ou)
                .unwrap();
            cpu.mlp_input_cross_t(&r.net, dr, &tr, &er, &r.w, 0.7, &q, &mut or)
                .unwrap();
            let ou = b.download(&ou).unwrap();
            assert_close(&ou, &or, TOL_PRIMITIVES, &format!("{what}: ∇x⟨∇wℓ, q⟩"));
        });
    }

    pub fn kfac_factors<B: MlpOps>(b: &B, tag: &str, bf16: bool) {
        let cpu = Cpu::new();
        each(b, tag, bf16, |u, r, weighted, batch, what| {
            let (du, dr) = (data(u, weighted, batch), data(r, weighted, batch));
            let (tu, eu) = pass(b, u, du);
            let (tr, er) = pass(&cpu, r, dr);
            let mut rng = Rng::new(11);
            let mut aa_r = Vec::new();
            let mut gg_r = Vec::new();
            for l in 0..r.net.layers() {
                let (fi, fo) = r.net.fans(l);
                aa_r.push(normals(&mut rng, (fi + 1) * (fi + 1)));
                gg_r.push(normals(&mut rng, fo * fo));
            }
            for (alpha, beta) in [(0.3, 0.7), (1.0, 0.0)] {
                let mut aa_u: Vec<B::Buf> = aa_r.iter().map(|m| b.upload(m).unwrap()).collect();
                let mut gg_u: Vec<B::Buf> = gg_r.iter().map(|m| b.upload(m).unwrap()).collect();
                let (mut aa, mut gg) = (aa_r.clone(), gg_r.clone());
                b.mlp_kfac_factors(&u.net, du, &tu, &eu, alpha, beta, &mut aa_u, &mut gg_u)
                    .unwrap();
                cpu.mlp_kfac_factors(&r.net, dr, &tr, &er, alpha, beta, &mut aa, &mut gg)
                    .unwrap();
                for l in 0..r.net.layers() {
                    let got = b.download(&aa_u[l]).unwrap();
                    assert_close(
                        &got,
                        &aa[l],
                        TOL_PRIMITIVES,
                        &format!("{what}: AA_{} α={alpha} β={beta}", l + 1),
                    );
                    let got = b.download(&gg_u[l]).unwrap();
                    assert_close(
                        &got,
                        &gg[l],
                        TOL_PRIMITIVES,
                        &format!("{what}: GG_{} α={alpha} β={beta}", l + 1),
                    );
                }
            }
        });
    }

    /// `copy_range` moves exactly the range (bit for bit) and refuses one out of bounds.
    pub fn copy_range<B: MlpOps>(b: &B, tag: &str) {
        let mut rng = Rng::new(5);
        let src = normals(&mut rng, 20);
        let dst = normals(&mut rng, 15);
        let su = b.upload(&src).unwrap();
        let mut du = b.upload(&dst).unwrap();
        b.copy_range(&su, 3, &mut du, 7, 6).unwrap();
        let mut want = dst.clone();
        want[7..13].copy_from_slice(&src[3..9]);
        assert_eq!(b.download(&du).unwrap(), want, "{tag}: copy_range");
        b.copy_range(&su, 0, &mut du, 0, 0).unwrap();
        assert_eq!(b.download(&du).unwrap(), want, "{tag}: empty copy_range");
        let err = b.copy_range(&su, 16, &mut du, 0, 5).unwrap_err();
        assert!(err.to_string().contains("copy_range"), "{tag}: {err}");
        let err = b.copy_range(&su, 0, &mut du, 12, 4).unwrap_err();
        assert!(err.to_string().contains("copy_range"), "{tag}: {err}");
    }

    /// Every backend refuses the same bad passes, with the same error: a mini-batch of no
    /// rows, and a design whose columns are not the network's inputs plus the constant 1.
    pub fn bad_passes_are_refused<B: MlpOps>(b: &B, tag: &str) {
        let c = &cases()[0];
        let u = upload(b, c, &c.x);
        let none = b.upload_rows(&[], c.x.nrows()).unwrap();
        let empty = MlpData {
            rows: Some(&none),
            ..data(&u, true, false)
        };
        let err = b
            .mlp_forward(&u.net, empty, &u.w)
            .err()
            .expect("an empty pass");
        assert!(err.to_string().contains("at least one row"), "{tag}: {err}");
        let wide = b.upload_design(&with_ones(&with_ones(&c.x))).unwrap();
        let wrong = MlpData {
            x: &wide,
            ..data(&u, false, false)
        };
        let err = b
            .mlp_forward(&u.net, wrong, &u.w)
            .err()
            .expect("a wrong design");
        assert!(
            err.to_string().contains("features plus the constant 1"),
            "{tag}: {err}"
        );
    }

    // ---- estimators end to end ----

    /// A small network problem from a teacher network of its shape, data rounded to f32.
    /// The teacher's rows of [`problem`]: 24 training rows, then 16 validation rows.
    fn teacher_rows(act: Activation) -> (Dataset, Dataset) {
        let sizes = [3, 5, 3];
        let (all, _) = teacher_data(&RefNet::new(&sizes, act), 40, 2.0, 21);
        let all = Dataset::new(all.x.mapv(r32), all.y, "teacher").unwrap();
        (
            all.select(&(0..24).collect::<Vec<_>>()),
            all.select(&(24..40).collect::<Vec<_>>()),
        )
    }

    /// NHGD on `p` (built by [`problem`] with `act`).
    fn nhgd<B: MlpOps + FisherOps>(
        p: &MlpBilevel<B>,
        act: Activation,
        opts: StochasticOptions,
    ) -> StochasticEstimator<MlpBilevel<B>> {
        StochasticEstimator::new(p, &teacher_rows(act).0, opts).unwrap()
    }

    pub fn problem<B: MlpOps>(b: B, kind: ProblemKind, act: Activation) -> MlpBilevel<B> {
        let sizes = [3, 5, 3];
        let (train, val) = teacher_rows(act);
        let layout = match kind {
            ProblemKind::Hyperclean => HyperLayout::PerSample,
            _ => HyperLayout::Shared,
        };
        let mut p =
            MlpBilevel::new(b, kind, layout, &sizes[1..2], act, &train, &val, 0.05, 3).unwrap();
        let theta: Vec<f64> = (0..p.hyper_dim())
            .map(|_| match kind {
                ProblemKind::Hyperclean => 0.4,
                _ => (0.05f64).ln(),
            })
            .collect();
        p.set_theta(&theta).unwrap();
        p
    }

    /// The f64 reference options: inner problem and CG to the f64 floor.
    fn reference_options(method: Method) -> Options {
        let mut o = Options::new(method, Precision::F64);
        o.inner = InnerOptions {
            solver: Solver::Newton,
            tol: 1e-13,
            max_iters: 500,
            minibatch: Default::default(),
        };
        o.linear_tol = 1e-13;
        o
    }

    /// `cg` with the f32 defaults against f64 `cg` at the floor, softmax and hyperclean, tanh
    /// networks (relu is covered by the primitives above: at an f32-accurate ŵ its kinks can
    /// leave the exact Hessian indefinite, which CG reports as an error, by design).
    pub fn cg_estimator<B: MlpOps + Clone + 'static>(b: &B, tag: &str) {
        for kind in [ProblemKind::Softmax, ProblemKind::Hyperclean] {
            let act = Activation::Tanh;
            let under = problem(b.clone(), kind, act);
            let reference = problem(Cpu::new(), kind, act);
            let got = compute(&under, &Options::new(Method::Cg, Precision::F32), None)
                .unwrap_or_else(|e| panic!("{tag} {kind:?} {act:?}: cg failed: {e}"));
            let want = compute(&reference, &reference_options(Method::Cg), None).unwrap();
            assert_close(
                &got.hypergradient,
                &want.hypergradient,
                TOL_ESTIMATOR,
                &format!("{tag} cg {} {}", kind.name(), act.name()),
            );
        }
    }

    /// One NHGD outer step with per-layer K-FAC, identical seeded batches on both backends.
    pub fn nhgd_kfac_estimator<B: MlpOps + FisherOps + Clone + 'static>(b: &B, tag: &str) {
        for kind in [ProblemKind::Softmax, ProblemKind::Hyperclean] {
            let under = problem(b.clone(), kind, Activation::Tanh);
            let reference = problem(Cpu::new(), kind, Activation::Tanh);
            let mut opts = StochasticOptions::new(Method::Nhgd);
            opts.inner_steps = 30;
            opts.batch = 8;
            opts.inner_lr = Some(0.1);
            let mut est_u = nhgd(&under, Activation::Tanh, opts);
            let mut est_r = nhgd(&reference, Activation::Tanh, opts);
            let (got, _) = est_u.estimate(&under, 0).unwrap();
            let (want, _) = est_r.estimate(&reference, 0).unwrap();
            assert_close(
                &got.hypergradient,
                &want.hypergradient,
                TOL_ESTIMATOR,
                &format!("{tag} nhgd kfac {}", kind.name()),
            );
        }
    }

    /// NHGD's options with each curvature representation (20 seeded steps of 8 rows).
    fn nhgd_cases() -> Vec<(&'static str, StochasticOptions)> {
        [
            ("kfac", Representation::Kfac, DenseUpdate::Woodbury),
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
            (
                "lowrank",
                Representation::Lowrank { rank: 4 },
                DenseUpdate::Woodbury,
            ),
        ]
        .into_iter()
        .map(|(name, representation, dense_update)| {
            let mut opts = StochasticOptions::new(Method::Nhgd);
            opts.inner_steps = 20;
            opts.batch = 8;
            opts.inner_lr = Some(0.1);
            opts.representation = representation;
            opts.dense_update = dense_update;
            opts.linear_tol = 1e-5;
            opts.seed = 5;
            (name, opts)
        })
        .collect()
    }

    /// NHGD's inner loop (forward, backward, gradient and SGD step on the main queue, the
    /// curvature update on the second one) makes no host sync and no host copy, with every
    /// representation, in a first and a warm-started second estimate. A backend and its forks
    /// share their traffic counters, so both queues count.
    pub fn nhgd_loop_stays_on_the_device<B: MlpOps + FisherOps + Clone + 'static>(
        b: &B,
        tag: &str,
    ) {
        let p = problem(b.clone(), ProblemKind::Hyperclean, Activation::Tanh);
        for (name, opts) in nhgd_cases() {
            let mut est = nhgd(&p, Activation::Tanh, opts);
            for step in 0..2 {
                let (_, stats) = est.estimate(&p, step).unwrap();
                assert_eq!(
                    (stats.inner_host_syncs, stats.inner_host_transfers),
                    (0, 0),
                    "{tag} nhgd {name}, estimate {step}: the inner loop talked to the host"
                );
            }
        }
    }

    /// The curvature update on the second queue gives what the same update on the main queue,
    /// in step order, gives: the hypergradient and the iterate of a first and a warm-started
    /// second estimate (which reuses the estimator's fork), with every representation, on the
    /// weighted loss of hyper-cleaning (the update reads the row weights or their roots).
    pub fn nhgd_second_queue_is_the_one_queue_loop<B: MlpOps + FisherOps + Clone + 'static>(
        b: &B,
        tag: &str,
    ) {
        let p = problem(b.clone(), ProblemKind::Hyperclean, Activation::Tanh);
        for (name, opts) in nhgd_cases() {
            let mut two = nhgd(&p, Activation::Tanh, opts);
            let mut one = nhgd(&p, Activation::Tanh, opts).on_one_queue();
            for step in 0..2 {
                let (h_two, _) = two.estimate(&p, step).unwrap();
                let (h_one, _) = one.estimate(&p, step).unwrap();
                let what = format!("{tag} nhgd {name}, estimate {step}, two queues vs one");
                assert_close(
                    &h_two.hypergradient,
                    &h_one.hypergradient,
                    TOL_QUEUES,
                    &format!("{what}: hypergradient"),
                );
                assert_close(
                    &b.download(two.w()).unwrap(),
                    &b.download(one.w()).unwrap(),
                    TOL_QUEUES,
                    &format!("{what}: w"),
                );
            }
        }
    }
}

// ---- the GPU --------------------------------------------------------------------------------

#[test]
fn mlp_cuda_parity_reports_skip_or_device() {
    match gpu() {
        None => {}
        Some(b) => cuda_common::log_line(&format!("mlp_cuda_parity: running on {}", b.name())),
    }
}

#[test]
fn forward_and_loss() {
    let Some(b) = gpu() else { return };
    checks::forward_and_loss(&b, "cuda", false);
}

#[test]
fn backward_and_gradient() {
    let Some(b) = gpu() else { return };
    checks::backward_and_gradient(&b, "cuda", false);
}

#[test]
fn per_sample_and_directional() {
    let Some(b) = gpu() else { return };
    checks::per_sample_and_directional(&b, "cuda", false);
}

#[test]
fn hvp() {
    let Some(b) = gpu() else { return };
    checks::hvp(&b, "cuda", false);
}

#[test]
fn input_cross() {
    let Some(b) = gpu() else { return };
    checks::input_cross(&b, "cuda", false);
}

#[test]
fn kfac_factors() {
    let Some(b) = gpu() else { return };
    checks::kfac_factors(&b, "cuda", false);
}

#[test]
fn copy_range() {
    let Some(b) = gpu() else { return };
    checks::copy_range(&b, "cuda");
}

#[test]
fn bad_passes_are_refused() {
    let Some(b) = gpu() else { return };
    checks::bad_passes_are_refused(&b, "cuda");
}

/// bf16 storage: the gather widens the design exactly, so against the reference on the
/// bf16-rounded design the f32 tolerance holds.
#[test]
fn bf16_storage() {
    let Some(b) = gpu_with(Storage::Bf16) else {
        return;
    };
    checks::forward_and_loss(&b, "cuda-bf16", true);
    checks::backward_and_gradient(&b, "cuda-bf16", true);
    checks::hvp(&b, "cuda-bf16", true);
    checks::input_cross(&b, "cuda-bf16", true);
}

/// The inner loop of NHGD (forward, backward, gradient, SGD step; the curvature update on the
/// second stream) makes no host sync or transfer: everything stays on the device.
#[test]
fn nhgd_loop_stays_on_the_device() {
    let Some(b) = gpu() else { return };
    checks::nhgd_loop_stays_on_the_device(&b, "cuda");
}

/// The curvature update on a second stream gives the result of the one-stream loop.
#[test]
fn nhgd_second_queue_is_the_one_queue_loop() {
    let Some(b) = gpu() else { return };
    checks::nhgd_second_queue_is_the_one_queue_loop(&b, "cuda");
}

#[test]
fn cg_estimator() {
    let Some(b) = gpu() else { return };
    checks::cg_estimator(&b, "cuda");
}

#[test]
fn nhgd_kfac_estimator() {
    let Some(b) = gpu() else { return };
    checks::nhgd_kfac_estimator(&b, "cuda");
}

/// The same checks with `CpuBackend<f32>` in place of the GPU, on every machine.
mod cpu_f32_stand_in {
    use super::checks;
    use hypergrad::backend::cpu::CpuBackend;

    fn b() -> CpuBackend<f32> {
        CpuBackend::<f32>::new()
    }

    #[test]
    fn forward_and_loss() {
        checks::forward_and_loss(&b(), "cpu-f32", false);
    }

    #[test]
    fn backward_and_gradient() {
        checks::backward_and_gradient(&b(), "cpu-f32", false);
    }

    #[test]
    fn per_sample_and_directional() {
        checks::per_sample_and_directional(&b(), "cpu-f32", false);
    }

    #[test]
    fn hvp() {
        checks::hvp(&b(), "cpu-f32", false);
    }

    #[test]
    fn input_cross() {
        checks::input_cross(&b(), "cpu-f32", false);
    }

    #[test]
    fn kfac_factors() {
        checks::kfac_factors(&b(), "cpu-f32", false);
    }

    #[test]
    fn copy_range() {
        checks::copy_range(&b(), "cpu-f32");
    }

    #[test]
    fn bad_passes_are_refused() {
        checks::bad_passes_are_refused(&b(), "cpu-f32");
        checks::bad_passes_are_refused(&super::Cpu::new(), "cpu-f64");
    }

    #[test]
    fn cg_estimator() {
        checks::cg_estimator(&b(), "cpu-f32");
    }

    #[test]
    fn nhgd_kfac_estimator() {
        checks::nhgd_kfac_estimator(&b(), "cpu-f32");
    }

    #[test]
    fn nhgd_loop_stays_on_the_device() {
        checks::nhgd_loop_stays_on_the_device(&b(), "cpu-f32");
    }

    #[test]
    fn nhgd_second_queue_is_the_one_queue_loop() {
        checks::nhgd_second_queue_is_the_one_queue_loop(&b(), "cpu-f32");
    }
}
