//! The ℓ1 problems on a backend (src/l1/, backend/prox/, cuda/prox.cu): the prox kernels'
//! CPU twins against the formulas; the coordinate-descent sweeps and column products on the
//! CPU in f64 (sparse against dense storage) and on the f32 stand-in; every method with both
//! solver families in f64 against an independent reference (implicit on a tight solve), on
//! the f32 stand-in within f32 accuracy; and, on a machine with a CUDA device, the CUDA
//! backend against the stand-in. Without a device the CUDA half prints
//! `l1_device: SKIPPED — …` and passes.

mod cuda_common;
mod l1_common;

use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::cuda::{CudaBackend, Storage};
use hypergrad::backend::prox::ProxOps;
use hypergrad::backend::prox::SweepPenalty;
use hypergrad::backend::Backend;
use hypergrad::data::rng::Rng;
use hypergrad::l1::{
    hypergradient, hypergradient_resident, L1Data, L1Kind, L1Method, L1Options, L1Problem,
    L1Solver, Penalty, Resident,
};
use l1_common::*;

fn gpu() -> Option<CudaBackend> {
    cuda_common::gpu_with("l1_device", Storage::F32)
}

fn theta_for(pb: &L1Problem) -> Vec<f64> {
    let base = (pb.train.lambda_max() / 8.0).ln();
    match pb.kind {
        L1Kind::Lasso => vec![base],
        L1Kind::Enet => vec![base, 0.05f64.ln()],
        L1Kind::Wlasso => (0..pb.d()).map(|j| base + 0.02 * (j % 7) as f64).collect(),
    }
}

/// Random inputs of the prox primitives: d entries, m directions.
fn prox_inputs(d: usize, m: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut v =
        |len: usize, scale: f64| (0..len).map(|_| scale * rng.normal()).collect::<Vec<f64>>();
    vec![
        v(d, 1.0),
        v(d, 1.0),
        v(d, 0.5).into_iter().map(f64::abs).collect(),
        v(m * d, 1.0),
        v(m * d, 1.0),
        v(m * d, 0.3),
        v(d, 1.0),
    ]
}

fn run_prox<B: ProxOps>(
    b: &B,
    ins: &[Vec<f64>],
    m: usize,
    eta: f64,
    deta: &[f64],
    dl2: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let up = |x: &Vec<f64>| b.upload(x).unwrap();
    let (v, grad, l1, jv, dgrad, dl1, gsm) = (
        up(&ins[0]),
        up(&ins[1]),
        up(&ins[2]),
        up(&ins[3]),
        up(&ins[4]),
        up(&ins[5]),
        up(&ins[6]),
    );
    let d = ins[0].len();
    let mut w = b.zeros(d).unwrap();
    b.prox_step(&v, &grad, &l1, eta, &mut w).unwrap();
    let mut jw = b.zeros(m * d).unwrap();
    b.prox_jacobian(
        &w, &v, &jv, &dgrad, &gsm, &l1, &dl1, eta, deta, dl2, &mut jw,
    )
    .unwrap();
    (b.download(&w).unwrap(), b.download(&jw).unwrap())
}

#[test]
fn prox_primitives_match_their_formulas_and_the_gpu() {
    let (d, m) = (1000, 3);
    let ins = prox_inputs(d, m, 3);
    let (eta, deta, dl2) = (0.7, [0.0, -0.05, 0.01], [0.0, 0.2, -0.1]);
    let (w, jw) = run_prox(&CpuBackend::<f64>::new(), &ins, m, eta, &deta, &dl2);
    let mut zeros = 0;
    for j in 0..d {
        let z = ins[0][j] - eta * ins[1][j];
        let t = eta * ins[2][j];
        let want = z.signum() * (z.abs() - t).max(0.0);
        assert!((w[j] - want).abs() <= 1e-15);
        zeros += (w[j] == 0.0) as usize;
        for k in 0..m {
            let e = k * d + j;
            let want = if w[j] != 0.0 {
                ins[3][e]
                    - eta * (ins[4][e] + dl2[k] * ins[0][j])
                    - ins[6][j] * deta[k]
                    - w[j].signum() * (ins[2][j] * deta[k] + eta * ins[5][e])
            } else {
                0.0
            };
            assert!((jw[e] - want).abs() <= 1e-14);
        }
    }
    assert!(zeros > 0 && zeros < d, "both branches exercised");
    if let Some(g) = gpu() {
        let (w32, jw32) = run_prox(&CpuBackend::<f32>::new(), &ins, m, eta, &deta, &dl2);
        let (wg, jwg) = run_prox(&g, &ins, m, eta, &deta, &dl2);
        // Same f32 expressions with round-to-nearest intrinsics: bit-identical to the twin.
        assert_eq!(wg, w32);
        assert_eq!(jwg, jw32);
    }
}

/// The sweeps of coordinate descent and the column products on one backend, from the same
/// inputs: `(gemv, gemv_t, cd sweep w and r and maxima, forward sweep J and R, Jacobian sweep
/// J and R and maxima)`, downloaded.
fn run_sweeps<B: ProxOps>(b: &B, data: &L1Data, kind: L1Kind, seed: u64) -> Vec<Vec<f64>> {
    let (n, d) = (data.x.n(), data.x.d());
    let mut rng = Rng::new(seed);
    let mut v = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<f64>>();
    let x = b.upload_cols(&data.x).unwrap();
    let up = |h: &[f64]| b.upload(h).unwrap();
    let lips_host = hypergrad::l1::solver::coordinate_lipschitz(&data.x);
    let lips = up(&lips_host);
    let theta = v(kind.hyper_dim(d))
        .iter()
        .map(|t| -2.0 + 0.3 * t)
        .collect::<Vec<_>>();
    let pen = Penalty::new(kind, &theta, d).unwrap();
    let l1 = up(&pen.l1);
    let sp = SweepPenalty {
        kind,
        l1: &l1,
        l2: pen.l2,
    };
    let coords_host: Vec<u32> = (0..d as u32).filter(|j| j % 3 != 1).collect();
    let coords = b.upload_rows(&coords_host, d).unwrap();
    let mut out = Vec::new();
    // X_C v added to a random vector, and X_Cᵀ r.
    let mut acc = up(&v(n));
    let vc = v(coords_host.len());
    b.cols_gemv(&x, Some(&coords), -0.7, &up(&vc), &mut acc)
        .unwrap();
    out.push(b.download(&acc).unwrap());
    let mut xtr = b.zeros(d).unwrap();
    b.cols_gemv_t(&x, None, &up(&data.y), &mut xtr).unwrap();
    out.push(b.download(&xtr).unwrap());
    // Two full sweeps from 0 then one over the subset C.
    let mut w = b.zeros(d).unwrap();
    let mut r = up(&data.y);
    let mut stats = vec![];
    for c in [None, None, Some(&coords)] {
        let (a, m) = b.cd_sweep(&x, c, &lips, &sp, &mut w, &mut r).unwrap();
        stats.extend([a, m]);
    }
    out.extend([b.download(&w).unwrap(), b.download(&r).unwrap(), stats]);
    // Three forward sweeps from w = 0, J = 0.
    let p = kind.hyper_dim(d);
    let mut w = b.zeros(d).unwrap();
    let mut r = up(&data.y);
    let mut jac = b.zeros(p * d).unwrap();
    let mut jr = b.zeros(p * n).unwrap();
    let live = vec![(kind != L1Kind::Wlasso) as u8 as f64; p];
    let mut live = up(&live);
    for _ in 0..3 {
        b.cd_forward_sweep(&x, &lips, &sp, &mut w, &mut r, &mut jac, &mut jr, &mut live)
            .unwrap();
    }
    out.extend([
        b.download(&jac).unwrap(),
        b.download(&jr).unwrap(),
        b.download(&live).unwrap(),
    ]);
    // Four Jacobian sweeps on the subset C, two columns.
    let lips_c: Vec<f64> = coords_host.iter().map(|&j| lips_host[j as usize]).collect();
    let s = coords_host.len();
    let bvec = v(2 * s);
    let mut jac = b.zeros(2 * s).unwrap();
    let mut res = b.zeros(2 * n).unwrap();
    let mut stats = vec![];
    for _ in 0..4 {
        let (a, m) = b
            .cd_jacobian_sweep(
                &x,
                &coords,
                &up(&lips_c),
                &up(&bvec),
                pen.l2,
                &mut jac,
                &mut res,
            )
            .unwrap();
        stats.extend([a, m]);
    }
    out.extend([b.download(&jac).unwrap(), b.download(&res).unwrap(), stats]);
    out
}

/// Relative max-norm distance, per output.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    max_abs_diff(a, b) / max_abs(b).max(1e-12)
}

#[test]
fn sweeps_match_the_host_f64_and_the_stand_in_and_the_gpu() {
    for (seed, kind) in [L1Kind::Lasso, L1Kind::Enet, L1Kind::Wlasso]
        .into_iter()
        .enumerate()
    {
        let (x, y) = instance(60, 18, 0.5, 90 + seed as u64);
        for data in [dense_data(&x, &y), sparse_data(&x, &y)] {
            let f64r = run_sweeps(&CpuBackend::<f64>::new(), &data, kind, 5);
            // The sparse and dense storage of the same matrix give the same f64 numbers up
            // to rounding (the sparse dot skips exact zeros).
            let dense64 = run_sweeps(&CpuBackend::<f64>::new(), &dense_data(&x, &y), kind, 5);
            for (a, b) in f64r.iter().zip(&dense64) {
                assert!(rel(a, b) <= 1e-12, "{kind:?} sparse vs dense f64");
            }
            // The f32 stand-in within f32 accuracy of f64: a few sweeps of a contraction, each
            // entry a sum of ≤ 60 products, so ~1e-5 relative.
            let f32r = run_sweeps(&CpuBackend::<f32>::new(), &data, kind, 5);
            for (i, (a, b)) in f32r.iter().zip(&f64r).enumerate() {
                assert!(
                    rel(a, b) <= 1e-4,
                    "{kind:?} output {i}: f32 vs f64 {:e}",
                    rel(a, b)
                );
            }
            if let Some(g) = gpu() {
                // CUDA sums each column product in double, the twin sequentially in f32: the
                // same f32 accuracy, not the same bits.
                let gr = run_sweeps(&g, &data, kind, 5);
                for (i, (a, b)) in gr.iter().zip(&f32r).enumerate() {
                    assert!(
                        rel(a, b) <= 1e-4,
                        "{kind:?} output {i}: cuda vs cpu-f32 {:e}",
                        rel(a, b)
                    );
                }
            }
        }
    }
}

/// Every method with both solver families on a backend, against the host f64 result.
fn methods_on<B: ProxOps>(b: &B, pb: &L1Problem, theta: &[f64], tol: f64) -> Vec<Vec<f64>> {
    let pen = Penalty::new(pb.kind, theta, pb.d()).unwrap();
    let resident = Resident::new(b, &pb.train).unwrap();
    let mut out = Vec::new();
    for method in L1Method::ALL {
        for solver in [L1Solver::Cd, L1Solver::Fista] {
            let mut opts = L1Options::new(method);
            opts.inner.solver = solver;
            opts.inner.tol = tol;
            opts.inner.max_iters = 200_000;
            opts.linear_tol = tol.max(1e-10);
            let h = hypergradient_resident(b, &resident, &pb.val, &pen, &opts, None, None).unwrap();
            assert!(h.inner_converged, "{:?} {method:?} {solver:?}", pb.kind);
            out.push(h.hypergradient);
        }
    }
    out
}

#[test]
fn every_method_on_every_backend_matches_the_host() {
    for (seed, kind) in [L1Kind::Lasso, L1Kind::Enet, L1Kind::Wlasso]
        .into_iter()
        .enumerate()
    {
        let (x, y) = instance(100, 25, 0.6, 60 + seed as u64);
        for sparse in [false, true] {
            let pb = problem(kind, &x, &y, 60, sparse);
            let theta = theta_for(&pb);
            // The reference: implicit on a tight solve, in f64 (an independent method for
            // forward and implicit-forward).
            let mut reference = L1Options::new(L1Method::Implicit);
            reference.inner.tol = 1e-15;
            let host = hypergradient(&pb, &theta, &reference, None).unwrap();
            let scale = max_abs(&host.hypergradient).max(1e-3);
            for (i, h) in methods_on(&CpuBackend::<f64>::new(), &pb, &theta, 1e-14)
                .iter()
                .enumerate()
            {
                let e = max_abs_diff(h, &host.hypergradient) / scale;
                assert!(e <= 1e-6, "{kind:?} sparse={sparse} case {i} f64: {e:e}");
            }
            // f32: the gap cannot go below f32 rounding, so stop at 1e-6 relative; the
            // hypergradient then carries ~1e-3 relative error (the earlier device tests' bound).
            let f32r = methods_on(&CpuBackend::<f32>::new(), &pb, &theta, 1e-6);
            for (i, h) in f32r.iter().enumerate() {
                let e = max_abs_diff(h, &host.hypergradient) / scale;
                println!("{kind:?} sparse={sparse} case {i}: cpu-f32 vs host {e:.2e}");
                assert!(e <= 2e-3, "{kind:?} sparse={sparse} case {i} f32: {e:e}");
            }
            if let Some(g) = gpu() {
                for (i, h) in methods_on(&g, &pb, &theta, 1e-6).iter().enumerate() {
                    let e = max_abs_diff(h, &f32r[i]) / scale;
                    println!("{kind:?} sparse={sparse} case {i}: cuda vs cpu-f32 {e:.2e}");
                    assert!(
                        e <= 5e-3,
                        "{kind:?} sparse={sparse} case {i} cuda vs cpu-f32: {e:e}"
                    );
                }
            }
        }
    }
}

#[test]
fn sweeps_and_prox_reject_bad_shapes() {
    let (x, y) = instance(30, 8, 1.0, 1);
    let data = dense_data(&x, &y);
    let b = CpuBackend::<f64>::new();
    let cols = b.upload_cols(&data.x).unwrap();
    let l1 = b.zeros(8).unwrap();
    let sp = SweepPenalty {
        kind: L1Kind::Lasso,
        l1: &l1,
        l2: 0.0,
    };
    let (mut w, mut r) = (b.zeros(8).unwrap(), b.zeros(29).unwrap());
    assert!(b
        .cd_sweep(&cols, None, &b.zeros(8).unwrap(), &sp, &mut w, &mut r)
        .is_err());
    assert!(b.upload_rows(&[8], 8).is_err(), "a column index past d");
    let mut short = b.zeros(7).unwrap();
    let mut r = b.zeros(30).unwrap();
    assert!(b
        .cd_sweep(&cols, None, &b.zeros(8).unwrap(), &sp, &mut short, &mut r)
        .is_err());
    let mut w = b.zeros(4).unwrap();
    assert!(b
        .prox_step(
            &b.zeros(3).unwrap(),
            &b.zeros(4).unwrap(),
            &b.zeros(4).unwrap(),
            1.0,
            &mut w
        )
        .is_err());
}
