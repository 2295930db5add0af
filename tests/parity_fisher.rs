//! Parity of the CUDA backend with the CPU reference, Fisher family (`FisherOps`,
//! `cuda/fisher.cu`): Cholesky solves, K-FAC damping, Woodbury updates of an inverse, and the
//! diagonal kernels. The harness, the tolerances and the SKIPPED line are in
//! `tests/parity_common/mod.rs`.

mod common;
mod cuda_common;
mod parity_common;

use common::{normals, r32};
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::{Backend, FisherOps};
use hypergrad::data::rng::Rng;
use parity_common::*;

// ---- the checks, generic over the backend under test ----------------------------------------

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

// ---- the CUDA tests -------------------------------------------------------------------------

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
}
