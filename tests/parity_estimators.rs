//! Parity of the CUDA backend with the CPU reference, end to end: every hypergradient estimator
//! against CPU f64 `exact` (f32 and bf16 storage), and NHGD's loop (the same estimate as the CPU
//! on the same seed, no host traffic inside the inner loop, host copies per outer step that do
//! not grow with the inner steps). The harness, the tolerances and the SKIPPED line are in
//! `tests/parity_common/mod.rs`.

mod common;
mod cuda_common;
mod parity_common;

use common::{r32, rel_err};
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::cuda::Storage;
use hypergrad::backend::{Backend, FisherOps, GlmOps, Precision};
use hypergrad::data::rng::Rng;
use hypergrad::data::Dataset;
use hypergrad::hypergrad::{compute, Method, Options};
use hypergrad::problem::{Bilevel, GlmBilevel, HyperLayout, InnerProblem, ProblemKind};
use parity_common::*;

// ---- the checks, generic over the backend under test ----------------------------------------

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

// ---- the CUDA tests -------------------------------------------------------------------------

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

#[test]
fn transfers_per_outer_step_do_not_grow_with_the_inner_steps() {
    let Some(gpu) = gpu() else { return };
    let counts = copies_per_estimate(|| gpu.clone(), |g| g.host_traffic().1);
    cuda_common::log_line(&format!(
        "parity_estimators: host transfers per estimate at T = 2, 12: {counts:?}"
    ));
    assert_copies_do_not_grow(&counts, "host transfers");
}

// ---- the same harness on the CPU ------------------------------------------------------------

/// The generic checks with `CpuBackend<f32>` standing in for the GPU: runs everywhere, so the
/// references, inputs and tolerances the CUDA tests rely on are exercised on every machine.
mod cpu_f32_stand_in {
    use super::*;

    fn f32() -> CpuBackend<f32> {
        CpuBackend::<f32>::new()
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
