//! The shared half of the CUDA parity suites, one test binary per op family
//! (`parity_core`: memory, BLAS-1, groups, GEMM/SYRK, uploads and host traffic; `parity_glm`;
//! `parity_fisher`; `parity_estimators`: every estimator end to end and NHGD's loop; networks
//! and the ℓ1 prox path are `mlp_cuda_parity` and `l1_device`). Each suite compares the CUDA
//! backend (f32, and designs stored as bf16) with `CpuBackend<f64>` on the same inputs (fixed
//! seeds, the crate's `Rng` and synthetic data), through checks generic over the backend under
//! test; its module `cpu_f32_stand_in` runs the same checks with `CpuBackend<f32>` in place of
//! the GPU, so the references, the inputs and the tolerances are exercised on every machine
//! (GPU-specific switches such as the row path and bf16 storage aside).
//!
//! Here: the device ([`gpu`], [`gpu_with`]), the comparison helpers ([`Ctx`], [`assert_close`],
//! ...), the data builders ([`glm`], [`spd`], ...) and the tolerances.
//!
//! **Without a usable GPU every CUDA test returns at once**, after one line on stderr:
//! `<suite>: SKIPPED — no usable CUDA device (<reason>)` ([`cuda_common::gpu_with`]). A machine
//! that has a device but cannot start the backend (a kernel that does not load, cuBLAS
//! missing) fails the tests: that is a bug, not a skip. `parity_core`'s
//! `cuda_parity_reports_skip_or_device` always runs and says which of the two happened.
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
#![allow(dead_code)]

use crate::common::{self, normals, r32, rel_err};
use crate::cuda_common;
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::cuda::{CudaBackend, RowPath, Storage};
use hypergrad::backend::{Backend, GlmOps, Loss};
use hypergrad::data::rng::Rng;
use hypergrad::data::synthetic;
use ndarray::Array2;

/// The reference backend.
pub type Cpu = CpuBackend<f64>;

pub const TOL_F32: f64 = 1e-5;
pub const TOL_BF16: f64 = 2e-2;
pub const TOL_ESTIMATOR: f64 = 1e-4;

// ---- the device -----------------------------------------------------------------------------

/// [`cuda_common::gpu_with`] for the suite being built (its SKIPPED line names the test binary).
pub fn gpu_with(storage: Storage) -> Option<CudaBackend> {
    cuda_common::gpu_with(env!("CARGO_CRATE_NAME"), storage)
}

/// The CUDA backend with f32 designs (see [`gpu_with`]). Each test makes its own: the row path
/// and the host-traffic counters are per backend, and tests run in parallel.
pub fn gpu() -> Option<CudaBackend> {
    gpu_with(Storage::F32)
}

/// Both row paths of the CUDA GLM kernels.
pub const ROW_PATHS: [RowPath; 2] = [RowPath::Fused, RowPath::Cublas];

// ---- comparison helpers ---------------------------------------------------------------------

/// How a backend under test is compared with the f64 reference.
pub struct Ctx {
    /// Relative tolerance.
    pub tol: f64,
    /// The reference sees the design rounded to bf16 (the values a bf16-storage backend holds).
    pub bf16_reference: bool,
    /// Names the configuration in messages.
    pub tag: String,
}

impl Ctx {
    pub fn f32(tag: impl Into<String>) -> Ctx {
        Ctx {
            tol: TOL_F32,
            bf16_reference: false,
            tag: tag.into(),
        }
    }

    /// The design the reference backend gets.
    pub fn reference_design(&self, x: &Array2<f64>) -> Array2<f64> {
        if self.bf16_reference {
            x.mapv(|v| half::bf16::from_f64(v).to_f64())
        } else {
            x.clone()
        }
    }
}

pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    let e = rel_err(got, want);
    common::note(|| format!("{what}: {e:.2e}"));
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}

pub fn assert_scalar(got: f64, want: f64, tol: f64, what: &str) {
    let e = (got - want).abs() / want.abs().max(f64::MIN_POSITIVE);
    common::note(|| format!("{what}: {e:.2e}"));
    assert!(
        e <= tol,
        "{what}: {got} vs {want}, relative error {e:e} > {tol:e}"
    );
}

/// `|got_i − want_i| ≤ tol · scale_i` for reductions, `scale_i = Σ|terms|` of entry i.
pub fn assert_scaled(got: &[f64], want: &[f64], scale: &[f64], tol: f64, what: &str) {
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
pub fn down<B: Backend>(b: &B, buf: &B::Buf) -> Vec<f64> {
    b.download(buf).unwrap()
}

// ---- data -----------------------------------------------------------------------------------

/// `(n, d)`: fewer rows than a tile, d not a multiple of 32 (twice), and one large enough for
/// every block of the GPU (n ≥ 20 000 rows in tiles of 8 over 2·SMs blocks, d = 64).
pub const SIZES: [(usize, usize); 4] = [(5, 1), (37, 45), (1000, 33), (20_003, 64)];

/// [`SIZES`], without the large one when `HYPERGRAD_PARITY_SMALL` is set: under
/// compute-sanitizer every access is instrumented (10–100× slower), and the small shapes
/// already reach every code path (partial tiles, d not a multiple of 32, several blocks).
pub fn sizes() -> Vec<(usize, usize)> {
    small_only(&SIZES)
}

pub fn small_only(sizes: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let small = std::env::var_os("HYPERGRAD_PARITY_SMALL").is_some();
    sizes
        .iter()
        .copied()
        .filter(|&(n, _)| !small || n <= 1000)
        .collect()
}

/// Losses with c = 1, 1, 3 and 10 outputs (10: a batch of vectors splits into launches of at
/// most 32 rows of M, three vectors each).
pub const LOSSES: [Loss; 4] = [
    Loss::Squared,
    Loss::Logistic,
    Loss::Softmax { classes: 3 },
    Loss::Softmax { classes: 10 },
];

/// A GLM instance: synthetic design and labels for `loss` (rounded to f32), row weights in
/// [0, 2) with one exactly 0, and a random point `W` (c×d).
pub struct Glm {
    pub x: Array2<f64>,
    pub y: Vec<f64>,
    pub s: Vec<f64>,
    pub w: Vec<f64>,
}

pub fn glm(loss: Loss, n: usize, d: usize, seed: u64) -> Glm {
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
pub struct OnBackend<B: Backend> {
    pub x: B::Design,
    pub y: B::Buf,
    pub s: B::Buf,
    pub w: B::Buf,
}

pub fn put<B: GlmOps>(b: &B, dt: &Glm, x: &Array2<f64>) -> OnBackend<B> {
    OnBackend {
        x: b.upload_design(x).unwrap(),
        y: b.upload(&dt.y).unwrap(),
        s: b.upload(&dt.s).unwrap(),
        w: b.upload(&dt.w).unwrap(),
    }
}

/// Mini-batches of an n-row design: one row (the last), every row in order, and a random draw
/// with replacement in random order (duplicates included).
pub fn batches(n: usize, rng: &mut Rng) -> Vec<Vec<u32>> {
    let b = (2 * n).min(512);
    vec![
        vec![(n - 1) as u32],
        (0..n as u32).collect(),
        (0..b).map(|_| rng.below(n) as u32).collect(),
    ]
}

/// `I + R Rᵀ/p` (R standard normal), rounded to f32: SPD with eigenvalues in about [1, 5], the
/// inverse of another SPD matrix, so a valid starting point for Woodbury updates.
pub fn spd(rng: &mut Rng, p: usize) -> Vec<f64> {
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
