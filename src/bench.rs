//! Kernel benchmarks on any backend (`hypergrad bench kernels`): every primitive's achieved
//! GB/s or TFLOP/s next to the ceilings measured in the same run on the same device — a
//! device-to-device copy of the design's bytes and a square GEMM — so a number always comes
//! with what it should be compared to.
//!
//! Conventions: a memory-bound kernel's GB/s counts the bytes of X it must read once
//! (whatever it really moves); the copy ceiling counts read + write (the STREAM convention),
//! so "fraction of copy" = kernel GB/s ÷ copy GB/s. A kernel without a design counts the
//! operands it must read once (the prox step: `v`, `grad`, `λ`), and one whose output dwarfs
//! its input (per-sample gradients: b·P entries from b rows of activations) the bytes it must
//! write once. A compute-bound kernel's TFLOP/s counts the flops of its defining formula; its
//! ceiling is the GEMM rate at the same shapes.
//!
//! Every row names its op family (`BenchRow::family`): `ceiling`, `core`, `glm`, `fisher`,
//! `network` ([`MlpOps`]) and `prox` ([`ProxOps`]), the folders of `src/backend/`.

use std::time::Instant;

use serde::Serialize;

use crate::backend::mlp::{Activation, MlpData, MlpOps, Network};
use crate::backend::prox::ProxOps;
use crate::backend::{Backend, Curvature, FisherOps, GlmOps, Loss};
use crate::data::rng::Rng;
use crate::error::Result;

/// Sizes of the kernel benchmark.
#[derive(Clone, Copy, Debug)]
pub struct KernelBenchConfig {
    /// Rows and features of the design X.
    pub n: usize,
    pub d: usize,
    /// Classes of the softmax kernels.
    pub classes: usize,
    /// Rows of a mini-batch (SGD step, Fisher and K-FAC accumulation).
    pub batch: usize,
    /// P and rank m of the dense Woodbury update.
    pub woodbury_dim: usize,
    pub woodbury_rank: usize,
    /// Side of the square GEMM ceiling.
    pub gemm_side: usize,
    /// Hidden width of the one-hidden-layer tanh network of the network rows (d inputs, the
    /// classes as outputs, over a mini-batch of `batch` rows).
    pub mlp_hidden: usize,
    /// Directions of the prox Jacobian (its vectors have n·d / `prox_directions` entries, the
    /// prox step's n·d).
    pub prox_directions: usize,
    /// Timed repetitions of each kernel (after one warm-up).
    pub reps: usize,
}

/// One measured kernel.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// The op family: `ceiling`, `core`, `glm`, `fisher`, `network` or `prox`.
    pub family: String,
    pub kernel: String,
    pub shape: String,
    /// Mean seconds per call.
    pub seconds: f64,
    /// GB/s (1e9 bytes) for memory-bound kernels.
    pub gb_per_s: Option<f64>,
    /// TFLOP/s for compute-bound kernels.
    pub tflop_per_s: Option<f64>,
    /// What the rate is compared with.
    pub ceiling: String,
    /// Rate ÷ ceiling rate.
    pub fraction_of_ceiling: Option<f64>,
}

/// Mean seconds per call of `f` over `reps` calls, after one warm-up call; the backend is
/// synchronised around the timed loop so queued device work is counted.
pub fn time_calls<B: Backend, F: FnMut() -> Result<()>>(
    backend: &B,
    reps: usize,
    mut f: F,
) -> Result<f64> {
    f()?;
    backend.synchronize()?;
    let start = Instant::now();
    for _ in 0..reps.max(1) {
        f()?;
    }
    backend.synchronize()?;
    Ok(start.elapsed().as_secs_f64() / reps.max(1) as f64)
}

fn gaussian(len: usize, rng: &mut Rng) -> Vec<f64> {
    (0..len).map(|_| rng.normal()).collect()
}

fn bandwidth_row(
    family: &str,
    kernel: &str,
    shape: String,
    seconds: f64,
    bytes: f64,
    copy_gbps: f64,
) -> BenchRow {
    let gbps = bytes / seconds / 1e9;
    BenchRow {
        family: family.to_string(),
        kernel: kernel.to_string(),
        shape,
        seconds,
        gb_per_s: Some(gbps),
        tflop_per_s: None,
        ceiling: "device copy".into(),
        fraction_of_ceiling: Some(gbps / copy_gbps),
    }
}

fn flops_row(
    family: &str,
    kernel: &str,
    shape: String,
    seconds: f64,
    flops: f64,
    ceiling: (&str, f64),
) -> BenchRow {
    let tflops = flops / seconds / 1e12;
    BenchRow {
        family: family.to_string(),
        kernel: kernel.to_string(),
        shape,
        seconds,
        gb_per_s: None,
        tflop_per_s: Some(tflops),
        ceiling: ceiling.0.to_string(),
        fraction_of_ceiling: Some(tflops / ceiling.1),
    }
}

/// Batched Hessian-vector products of a logistic GLM for each batch size in `batches`, as
/// bandwidth rows (X read once is the ideal). `label` tags the rows (e.g. the code path).
#[allow(clippy::too_many_arguments)]
pub fn hvp_rows<B: GlmOps>(
    backend: &B,
    x: &B::Design,
    curvature: &Curvature<B>,
    batches: &[usize],
    label: &str,
    bytes_per_entry: usize,
    reps: usize,
    copy_gbps: f64,
) -> Result<Vec<BenchRow>> {
    let (n, d) = backend.design_shape(x);
    let bytes = (n * d * bytes_per_entry) as f64;
    let mut rng = Rng::new(7);
    let mut rows = Vec::new();
    for &k in batches {
        let v = backend.upload(&gaussian(k * d, &mut rng))?;
        let mut out = backend.zeros(k * d)?;
        let seconds = time_calls(backend, reps, || {
            backend.glm_hvp(x, curvature, &v, &mut out)
        })?;
        rows.push(bandwidth_row(
            "glm",
            &format!("batched HVP k={k}{label}"),
            format!("{n}×{d}"),
            seconds,
            bytes,
            copy_gbps,
        ));
    }
    Ok(rows)
}

/// The whole kernel benchmark on `backend`. Returns the rows and the design (so a caller can
/// time further variants on the same data).
pub fn kernel_bench<B: GlmOps + FisherOps + MlpOps + ProxOps>(
    backend: &B,
    cfg: &KernelBenchConfig,
) -> Result<(Vec<BenchRow>, BenchData<B>)> {
    let (n, d, c) = (cfg.n, cfg.d, cfg.classes);
    let reps = cfg.reps;
    let mut rng = Rng::new(1);
    let host_x = ndarray::Array2::from_shape_vec((n, d), gaussian(n * d, &mut rng))
        .map_err(|e| crate::Error::Dimension(e.to_string()))?;
    let x = backend.upload_design(&host_x)?;
    drop(host_x);
    let labels: Vec<f64> = (0..n)
        .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
        .collect();
    let classes: Vec<f64> = (0..n).map(|i| (i % c) as f64).collect();
    let y = backend.upload(&labels)?;
    let y_class = backend.upload(&classes)?;
    let x_bytes = (n * d * 4) as f64;
    let mut rows = Vec::new();

    // Ceilings.
    let src = backend.upload(&gaussian(n * d, &mut rng))?;
    let mut dst = backend.zeros(n * d)?;
    let copy_seconds = time_calls(backend, reps, || backend.copy(&src, &mut dst))?;
    let copy_gbps = 2.0 * x_bytes / copy_seconds / 1e9;
    rows.push(BenchRow {
        family: "ceiling".into(),
        kernel: "ceiling: device copy (read + write)".into(),
        shape: format!("{:.1} MB", x_bytes / 1e6),
        seconds: copy_seconds,
        gb_per_s: Some(copy_gbps),
        tflop_per_s: None,
        ceiling: "—".into(),
        fraction_of_ceiling: None,
    });
    drop((src, dst));
    let s = cfg.gemm_side;
    let a = backend.upload(&gaussian(s * s, &mut rng))?;
    let b = backend.upload(&gaussian(s * s, &mut rng))?;
    let mut cm = backend.zeros(s * s)?;
    let gemm_seconds = time_calls(backend, reps, || {
        backend.gemm(false, false, (s, s, s), 1.0, &a, &b, 0.0, &mut cm)
    })?;
    let gemm_tflops = 2.0 * (s as f64).powi(3) / gemm_seconds / 1e12;
    rows.push(BenchRow {
        family: "ceiling".into(),
        kernel: "ceiling: GEMM (f32)".into(),
        shape: format!("{s}×{s}×{s}"),
        seconds: gemm_seconds,
        gb_per_s: None,
        tflop_per_s: Some(gemm_tflops),
        ceiling: "—".into(),
        fraction_of_ceiling: None,
    });
    drop((a, b, cm));

    // Row kernels on a logistic GLM.
    let w = backend.upload(
        &gaussian(d, &mut rng)
            .iter()
            .map(|v| 0.01 * v)
            .collect::<Vec<_>>(),
    )?;
    let curvature = backend.glm_curvature(&x, Loss::Logistic, &y, None, &w, 1.0 / n as f64)?;
    rows.extend(hvp_rows(
        backend,
        &x,
        &curvature,
        &[1, 8],
        "",
        4,
        reps,
        copy_gbps,
    )?);
    let mut grad = backend.zeros(d)?;
    let seconds = time_calls(backend, reps, || {
        backend
            .glm_value_grad(&x, Loss::Logistic, &y, None, &w, 1.0, Some(&mut grad))
            .map(|_| ())
    })?;
    rows.push(bandwidth_row(
        "glm",
        "loss + gradient (logistic)",
        format!("{n}×{d}"),
        seconds,
        x_bytes,
        copy_gbps,
    ));

    // Mini-batch kernels on a softmax GLM.
    let batch = cfg.batch.min(n);
    let picks: Vec<u32> = (0..batch).map(|_| rng.below(n) as u32).collect();
    let rows_idx = backend.upload_rows(&picks, n)?;
    let mut ws = backend.zeros(c * d)?;
    let reg = backend.upload(&vec![1e-3; c * d])?;
    // One fused SGD step over `rows` (b of them): its time and the per-sample factors it left.
    let mut time_sgd_step = |rows: &B::Rows, b: usize| -> Result<(f64, B::Buf)> {
        let mut factors = backend.zeros(b * c)?;
        let seconds = time_calls(backend, reps, || {
            backend.glm_sgd_step(
                &x,
                Loss::Softmax { classes: c },
                &y_class,
                None,
                rows,
                &reg,
                0.1,
                &mut ws,
                &mut factors,
            )
        })?;
        Ok((seconds, factors))
    };
    let (seconds, factors) = time_sgd_step(&rows_idx, batch)?;
    rows.push(bandwidth_row(
        "glm",
        "fused SGD step (softmax)",
        format!("b={batch}, c={c}, d={d}"),
        seconds,
        (batch * d * 4) as f64,
        copy_gbps,
    ));
    // The same step over all n rows (n·d = 2²⁶ at the GPU defaults): a batch large enough to
    // fill the device, where the kernel should run at the bandwidth of reading X once.
    let all_rows = backend.upload_rows(&(0..n as u32).collect::<Vec<_>>(), n)?;
    let (seconds, _) = time_sgd_step(&all_rows, n)?;
    rows.push(bandwidth_row(
        "glm",
        "fused SGD step (softmax)",
        format!("b={n}, c={c}, d={d}"),
        seconds,
        (n * d * 4) as f64,
        copy_gbps,
    ));
    let p = c * d;
    let mut per_sample = backend.zeros(batch * p)?;
    backend.glm_per_sample_gradients(&x, &rows_idx, &factors, None, &mut per_sample)?;
    let woodbury_p = cfg.woodbury_dim;
    let m = cfg.woodbury_rank;
    let fisher_p = p.min(woodbury_p);
    let fisher_rows = backend.upload(&gaussian(batch * fisher_p, &mut rng))?;
    let mut fisher = backend.zeros(fisher_p * fisher_p)?;
    let seconds = time_calls(backend, reps, || {
        backend.syrk(1.0 / batch as f64, &fisher_rows, batch, 1.0, &mut fisher)
    })?;
    rows.push(flops_row(
        "core",
        "Fisher accumulation (SYRK via GEMM)",
        format!("b={batch}, P={fisher_p}"),
        seconds,
        2.0 * batch as f64 * (fisher_p as f64).powi(2),
        ("square GEMM", gemm_tflops),
    ));
    drop((fisher_rows, fisher));
    let mut xx = backend.zeros(d * d)?;
    let mut gg = backend.zeros(c * c)?;
    let seconds = time_calls(backend, reps, || {
        backend.glm_kfac_factors(&x, &rows_idx, &factors, None, 1.0, 0.0, &mut xx, &mut gg)
    })?;
    rows.push(flops_row(
        "glm",
        "K-FAC factors",
        format!("b={batch}, d={d}, c={c}"),
        seconds,
        2.0 * batch as f64 * ((d * d) as f64 + (c * c) as f64),
        ("square GEMM", gemm_tflops),
    ));

    // Dense Woodbury update against GEMM at its own shapes (m×P)·(P×P).
    let mut inverse = vec![0.0; woodbury_p * woodbury_p];
    for i in 0..woodbury_p {
        inverse[i * woodbury_p + i] = 1.0;
    }
    let mut a_inv = backend.upload(&inverse)?;
    let u = backend.upload(
        &gaussian(m * woodbury_p, &mut rng)
            .iter()
            .map(|v| v / (woodbury_p as f64).sqrt())
            .collect::<Vec<_>>(),
    )?;
    let mut ua = backend.zeros(m * woodbury_p)?;
    let gemm_shape_seconds = time_calls(backend, reps, || {
        backend.gemm(
            false,
            false,
            (m, woodbury_p, woodbury_p),
            1.0,
            &u,
            &a_inv,
            0.0,
            &mut ua,
        )
    })?;
    let gemm_shape_tflops =
        2.0 * m as f64 * (woodbury_p as f64).powi(2) / gemm_shape_seconds / 1e12;
    rows.push(BenchRow {
        family: "ceiling".into(),
        kernel: "ceiling: GEMM at Woodbury shapes".into(),
        shape: format!("{m}×{woodbury_p}×{woodbury_p}"),
        seconds: gemm_shape_seconds,
        gb_per_s: None,
        tflop_per_s: Some(gemm_shape_tflops),
        ceiling: "—".into(),
        fraction_of_ceiling: None,
    });
    // A small α keeps the tracked inverse well conditioned however often it is updated.
    let seconds = time_calls(backend, reps, || {
        backend.woodbury_update(&mut a_inv, &u, m, 1e-3)
    })?;
    let mp = m as f64 * woodbury_p as f64;
    rows.push(flops_row(
        "fisher",
        "Woodbury update (dense inverse)",
        format!("P={woodbury_p}, rank {m}"),
        seconds,
        4.0 * mp * woodbury_p as f64 + 2.0 * mp * m as f64,
        ("GEMM at Woodbury shapes", gemm_shape_tflops),
    ));
    drop((a_inv, u, ua));

    rows.extend(network_rows(backend, cfg, copy_gbps, gemm_tflops)?);
    rows.extend(prox_rows(backend, cfg, copy_gbps)?);
    Ok((
        rows,
        BenchData {
            x,
            curvature,
            copy_gbps,
        },
    ))
}

/// Flops of the network's passes over `b` rows (sizes `s = [d, n₁, …, c]`), counting the
/// GEMMs of each defining formula (see `backend::mlp`): with `A = Σ_l s_l (s_{l−1}+1)` (the
/// affine maps, P) and `H = Σ_{l≥2} s_l s_{l−1}` (the maps back through the hidden layers),
/// forward `2bA`; backward + gradient `2bH + 2bA`; an HVP per vector `4bA + 8bH` (R-forward
/// `V ã` and `Θ R a`, R-backward `Θᵀ Rδ` and `Vᵀ δ`, then `Rδ ⊗ ã` and `δ ⊗ R a`).
pub fn network_flops(sizes: &[usize], b: usize) -> (f64, f64, f64) {
    let b = b as f64;
    let affine: f64 = sizes.windows(2).map(|w| (w[1] * (w[0] + 1)) as f64).sum();
    let back: f64 = sizes.windows(2).skip(1).map(|w| (w[1] * w[0]) as f64).sum();
    (
        2.0 * b * affine,
        2.0 * b * (back + affine),
        b * (4.0 * affine + 8.0 * back),
    )
}

/// The network family ([`MlpOps`]) on a one-hidden-layer tanh network `d → mlp_hidden → c`
/// over a mini-batch of `batch` rows of an `n × (d+1)` design (the constant 1 appended): the
/// forward pass, backward + gradient and the HVP by the R-operator against the square GEMM
/// rate; the per-sample gradients (b·P entries written) against the copy bandwidth.
pub fn network_rows<B: MlpOps>(
    backend: &B,
    cfg: &KernelBenchConfig,
    copy_gbps: f64,
    gemm_tflops: f64,
) -> Result<Vec<BenchRow>> {
    let (n, d, c, reps) = (cfg.n, cfg.d, cfg.classes, cfg.reps);
    let net = Network::new(d, &[cfg.mlp_hidden], c, Activation::Tanh)?;
    let p = net.dim();
    let mut rng = Rng::new(3);
    let host_x =
        ndarray::Array2::from_shape_fn(
            (n, d + 1),
            |(_, j)| {
                if j == d {
                    1.0
                } else {
                    rng.normal()
                }
            },
        );
    let x = backend.upload_design(&host_x)?;
    drop(host_x);
    let y = backend.upload(&(0..n).map(|i| (i % c) as f64).collect::<Vec<_>>())?;
    let batch = cfg.batch.min(n);
    let picks: Vec<u32> = (0..batch).map(|_| rng.below(n) as u32).collect();
    let rows_idx = backend.upload_rows(&picks, n)?;
    let data = MlpData {
        x: &x,
        y: &y,
        weights: None,
        rows: Some(&rows_idx),
    };
    let mut w_host = vec![0.0; p];
    for l in 0..net.layers() {
        let scale = 1.0 / ((net.fans(l).0 + 1) as f64).sqrt();
        let start = net.offset(l);
        for v in &mut w_host[start..start + net.block_len(l)] {
            *v = scale * rng.normal();
        }
    }
    let w = backend.upload(&w_host)?;
    let (forward_flops, backward_flops, hvp_flops) = network_flops(net.sizes(), batch);
    let shape = format!("b={batch}, {d}→{}→{c}, P={p}", cfg.mlp_hidden);
    let gemm = ("square GEMM", gemm_tflops);
    let mut rows = Vec::new();

    let seconds = time_calls(backend, reps, || {
        backend.mlp_forward(&net, data, &w).map(|_| ())
    })?;
    rows.push(flops_row(
        "network",
        "network forward (tanh)",
        shape.clone(),
        seconds,
        forward_flops,
        gemm,
    ));
    let tape = backend.mlp_forward(&net, data, &w)?;
    let mut grad = backend.zeros(p)?;
    let seconds = time_calls(backend, reps, || {
        let deltas = backend.mlp_backward(&net, data, &tape, &w)?;
        backend.mlp_gradient(&net, data, &tape, &deltas, 1.0 / batch as f64, &mut grad)
    })?;
    rows.push(flops_row(
        "network",
        "network backward + gradient",
        shape.clone(),
        seconds,
        backward_flops,
        gemm,
    ));
    let deltas = backend.mlp_backward(&net, data, &tape, &w)?;
    let mut per_sample = backend.zeros(batch * p)?;
    let seconds = time_calls(backend, reps, || {
        backend.mlp_per_sample_gradients(&net, data, &tape, &deltas, None, &mut per_sample)
    })?;
    rows.push(bandwidth_row(
        "network",
        "network per-sample gradients (written)",
        shape.clone(),
        seconds,
        (batch * p * 4) as f64,
        copy_gbps,
    ));
    drop(per_sample);
    for k in [1, 8] {
        let v = backend.upload(&gaussian(k * p, &mut rng))?;
        let mut out = backend.zeros(k * p)?;
        let seconds = time_calls(backend, reps, || {
            backend.mlp_hvp(
                &net,
                data,
                &tape,
                &deltas,
                &w,
                1.0 / batch as f64,
                0.0,
                &v,
                &mut out,
            )
        })?;
        rows.push(flops_row(
            "network",
            &format!("network HVP by R-op k={k}"),
            shape.clone(),
            seconds,
            k as f64 * hvp_flops,
            gemm,
        ));
    }
    Ok(rows)
}

/// The prox family ([`ProxOps`]) against the copy bandwidth: the proximal step on n·d entries
/// (reads `v`, `grad`, `λ`: 12 bytes an entry in f32) and its Jacobian for
/// `m = prox_directions` directions on n·d/m entries (reads `w`, `v`, `gsm`, `λ` once and the
/// m blocks of `jv`, `dgrad`, `dλ`: (4 + 3m)·4 bytes an entry). Writes are not counted.
pub fn prox_rows<B: ProxOps>(
    backend: &B,
    cfg: &KernelBenchConfig,
    copy_gbps: f64,
) -> Result<Vec<BenchRow>> {
    let reps = cfg.reps;
    let mut rng = Rng::new(5);
    let mut rows = Vec::new();
    let len = cfg.n * cfg.d;
    let v = backend.upload(&gaussian(len, &mut rng))?;
    let grad = backend.upload(&gaussian(len, &mut rng))?;
    // λ_j = 0.5: about half the entries of v − η grad (η = 0.5) are set to zero.
    let l1 = backend.upload(&vec![0.5; len])?;
    let mut w = backend.zeros(len)?;
    let seconds = time_calls(backend, reps, || {
        backend.prox_step(&v, &grad, &l1, 0.5, &mut w)
    })?;
    rows.push(bandwidth_row(
        "prox",
        "prox step (soft-threshold)",
        format!("d={len}"),
        seconds,
        (3 * len * 4) as f64,
        copy_gbps,
    ));
    drop((v, grad, l1, w));

    let m = cfg.prox_directions;
    let dim = (len / m).max(1);
    let v = backend.upload(&gaussian(dim, &mut rng))?;
    let grad = backend.upload(&gaussian(dim, &mut rng))?;
    let l1 = backend.upload(&vec![0.5; dim])?;
    let mut w = backend.zeros(dim)?;
    backend.prox_step(&v, &grad, &l1, 0.5, &mut w)?;
    let jv = backend.upload(&gaussian(m * dim, &mut rng))?;
    let dgrad = backend.upload(&gaussian(m * dim, &mut rng))?;
    let dl1 = backend.upload(&gaussian(m * dim, &mut rng))?;
    let mut jw = backend.zeros(m * dim)?;
    let deta = vec![0.1; m];
    let dl2 = vec![0.01; m];
    let seconds = time_calls(backend, reps, || {
        backend.prox_jacobian(
            &w, &v, &jv, &dgrad, &grad, &l1, &dl1, 0.5, &deta, &dl2, &mut jw,
        )
    })?;
    rows.push(bandwidth_row(
        "prox",
        &format!("prox Jacobian m={m}"),
        format!("d={dim}"),
        seconds,
        ((4 + 3 * m) * dim * 4) as f64,
        copy_gbps,
    ));
    drop((v, grad, l1, w, jv, dgrad, dl1, jw));
    rows.push(cd_sweep_row(backend, cfg, copy_gbps, &mut rng)?);
    Ok(rows)
}

/// One full sweep of proximal coordinate descent ([`ProxOps::cd_sweep`]) on a dense n×d design
/// (on CUDA: how a sparse design is held too, densified; see [`crate::backend::prox`]), from
/// the same start each repetition, against the copy bandwidth with the design's bytes read
/// once (`n·d·4`): the sweep is d dependent column steps, each a block reduction over n, so
/// the fraction says how much of the device one block's sequential sweep uses.
fn cd_sweep_row<B: ProxOps>(
    backend: &B,
    cfg: &KernelBenchConfig,
    copy_gbps: f64,
    rng: &mut Rng,
) -> Result<BenchRow> {
    let (n, d) = (cfg.n, cfg.d);
    let x = ndarray::Array2::from_shape_vec((n, d), gaussian(n * d, rng))
        .map_err(|e| crate::Error::Dimension(format!("bench design: {e}")))?;
    let design = crate::l1::Design::dense(&x)?;
    let cols = backend.upload_cols(&design)?;
    let lips = backend.upload(&crate::l1::solver::coordinate_lipschitz(&design))?;
    let y = backend.upload(&gaussian(n, rng))?;
    // λ = 0.1 on unit-variance columns and labels: a sweep leaves most coordinates nonzero.
    let l1 = backend.upload(&vec![0.1; d])?;
    let pen = crate::backend::prox::SweepPenalty {
        kind: crate::l1::L1Kind::Lasso,
        l1: &l1,
        l2: 0.0,
    };
    let mut w = backend.zeros(d)?;
    let mut r = backend.zeros(n)?;
    let seconds = time_calls(backend, cfg.reps, || {
        backend.fill(&mut w, 0.0)?;
        backend.copy(&y, &mut r)?;
        backend
            .cd_sweep(&cols, None, &lips, &pen, &mut w, &mut r)
            .map(|_| ())
    })?;
    Ok(bandwidth_row(
        "prox",
        "prox cd sweep (dense columns)",
        format!("n={n} d={d}"),
        seconds,
        (n * d * 4) as f64,
        copy_gbps,
    ))
}

/// Data kept from [`kernel_bench`] for timing further variants.
pub struct BenchData<B: Backend> {
    pub x: B::Design,
    pub curvature: Curvature<B>,
    pub copy_gbps: f64,
}
