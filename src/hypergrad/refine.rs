//! Iterative refinement of `q ≈ Ĥ⁻¹a`, judged by what it changes in the hypergradient.
//!
//! Every linear solve behind a hypergradient (`cg`, NHGD's curvature solves) stops on a
//! normwise test, `‖a − Ĥq‖ ≤ tol ‖a‖`. That test can pass while `q` is wrong in the very
//! directions `h = −Bᵀq` reads: when a few entries of `a` dominate its norm, `tol ‖a‖` is
//! larger than all the other entries together. It happens with real data: a pixel that is
//! constant on the training rows and standardised by a tiny deviation is huge on the
//! validation rows, so `a = ∇_w f` is huge in that pixel's coordinates, which `Ĥ` leaves to
//! the damping alone and `B` never reads. In f32 (tol 1e-5) the CG of NHGD then stopped after
//! 9 iterations with ‖h‖ = 0.177 against the true 0.0407 (digits hyper-cleaning, issue 21),
//! and `cg` gave 0.217 against 0.0317, with nothing in the output to say so.
//!
//! Refinement (Wilkinson; Higham, *Accuracy and Stability*, ch. 12) repeats, in the working
//! precision: `r = a − Ĥq` (recomputed, never a solver's recurrence), `d ≈ Ĥ⁻¹r` by the same
//! solver, `q ← q + d`, `h ← h − Bᵀd`. Each round solves for the error that is left, so the
//! entries that dominated `a` are settled in the first round and the next rounds work on the
//! rest. Because a round's correction `Bᵀd` is (to first order) the error of `h` it removes,
//! `‖Bᵀd‖ / ‖h‖` is an a posteriori estimate of the relative error of `h` before the round,
//! and the rounds stop when it is below [`Refinement::tolerance`]. A round that does not at
//! least halve the previous change has met the precision's floor: the solve then stays
//! marked inaccurate, and the output and the trace say so.
//!
//! Refinement runs where the working precision is f32; in f64 the solves' tolerances sit far
//! below what a hypergradient needs and only the recomputed residual is reported.

use crate::backend::{Backend, Precision};
use crate::error::Result;

/// How many refinement rounds a solve may take and when its hypergradient counts as accurate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refinement {
    /// At most this many rounds (0: only the residual is recomputed).
    pub max_rounds: usize,
    /// A round whose relative change of `h` is at most this ends the refinement: accurate.
    pub tolerance: f64,
}

impl Refinement {
    /// f32: up to 4 rounds, until `h` moves by less than 1e-4 of its norm (about 800 units in
    /// the last place: the floor of an f32 hypergradient assembled from sums over thousands
    /// of rows). f64: none.
    pub fn for_precision(precision: Precision) -> Self {
        match precision {
            Precision::F32 => Refinement {
                max_rounds: 4,
                tolerance: 1e-4,
            },
            Precision::F64 => Refinement {
                max_rounds: 0,
                tolerance: 0.0,
            },
        }
    }
}

/// What refinement did, as the output and the trace report it (`null`s where none ran).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct RefinementReport {
    /// Refinement rounds done.
    pub refinements: Option<usize>,
    /// `‖Bᵀd‖ / ‖h‖` of the last round: the estimated relative error of `h` before it.
    pub hypergradient_change: Option<f64>,
    /// Whether the last round's change was within the tolerance.
    pub solve_accurate: Option<bool>,
}

impl RefinementReport {
    /// A one-line warning when the solve stayed inaccurate.
    pub fn warning(&self) -> Option<String> {
        match (self.solve_accurate, self.hypergradient_change) {
            (Some(false), Some(change)) => Some(format!(
                "the linear solve stayed inaccurate after {} refinement rounds (the hypergradient still moved by {change:.1e} of its norm in the last): use --precision f64",
                self.refinements.unwrap_or(0)
            )),
            _ => None,
        }
    }
}

/// What the linear solve behind a hypergradient achieved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SolveCheck {
    /// `‖a − Ĥq̂‖` for the `q̂` the hypergradient was built from, recomputed.
    pub residual_norm: f64,
    pub report: RefinementReport,
}

/// The operations refinement needs, borrowed from the estimator: `Ĥv`, the solver `≈ Ĥ⁻¹v`
/// (returning its iterations), and `Bᵀv`.
pub struct LinearSystem<A, S, C> {
    pub apply: A,
    pub solve: S,
    pub cross_t: C,
}

/// Refines `q` (with `h = −Bᵀq` already computed from it) by up to `policy.max_rounds`
/// rounds, updating both in place (module docs). Returns the check and the solver
/// iterations the rounds took.
pub fn refine<B, A, S, C>(
    b: &B,
    policy: Refinement,
    rhs: &B::Buf,
    q: &mut B::Buf,
    h: &mut [f64],
    system: &mut LinearSystem<A, S, C>,
) -> Result<(SolveCheck, usize)>
where
    B: Backend,
    A: FnMut(&B::Buf, &mut B::Buf) -> Result<()>,
    S: FnMut(&B::Buf) -> Result<(B::Buf, usize)>,
    C: FnMut(&B::Buf) -> Result<Vec<f64>>,
{
    let mut r = b.zeros(b.len(rhs))?;
    let mut residual_norm =
        crate::solver::linear::true_residual_norm(b, &mut system.apply, rhs, q, &mut r)?;
    let mut check = SolveCheck {
        residual_norm,
        report: RefinementReport::default(),
    };
    let report = &mut check.report;
    let mut iters = 0;
    let mut previous = f64::INFINITY;
    for _ in 0..policy.max_rounds {
        if residual_norm == 0.0 {
            report.solve_accurate = Some(true);
            break;
        }
        let (d, round_iters) = (system.solve)(&r)?;
        iters += round_iters;
        let cross = (system.cross_t)(&d)?;
        b.axpy(1.0, &d, q)?;
        for (h, c) in h.iter_mut().zip(&cross) {
            *h -= c;
        }
        let moved = norm(&cross);
        let change = match norm(h) {
            n if n > 0.0 => moved / n,
            _ if moved == 0.0 => 0.0,
            _ => f64::INFINITY,
        };
        residual_norm =
            crate::solver::linear::true_residual_norm(b, &mut system.apply, rhs, q, &mut r)?;
        report.refinements = Some(report.refinements.unwrap_or(0) + 1);
        report.hypergradient_change = Some(change);
        // NaN compares false everywhere: a non-finite change is neither accurate nor progress.
        if change <= policy.tolerance {
            report.solve_accurate = Some(true);
            break;
        }
        report.solve_accurate = Some(false);
        if !(change <= 0.5 * previous) {
            break; // the precision's floor: no round will do better
        }
        previous = change;
    }
    check.residual_norm = residual_norm;
    Ok((check, iters))
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;

    /// `A = diag(1, 10, 100)`, `B = I` (so `h = −q`), `a = (1, 1, 1)`: `q* = (1, 0.1, 0.01)`.
    fn run(policy: Refinement, q0: [f64; 3], damp: f64) -> (SolveCheck, Vec<f64>, Vec<f64>) {
        let b = CpuBackend::<f64>::new();
        let diag = [1.0, 10.0, 100.0];
        let a = b.upload(&[1.0, 1.0, 1.0]).unwrap();
        let mut q = b.upload(&q0).unwrap();
        let mut h: Vec<f64> = q0.iter().map(|v| -v).collect();
        let mut system = LinearSystem {
            apply: |v: &<CpuBackend<f64> as Backend>::Buf,
                    out: &mut <CpuBackend<f64> as Backend>::Buf| {
                let v = b.download(v)?;
                let av: Vec<f64> = v.iter().zip(diag).map(|(x, d)| x * d).collect();
                *out = b.upload(&av)?;
                Ok(())
            },
            // A solver that recovers only a fraction `damp` of the correction.
            solve: |r: &<CpuBackend<f64> as Backend>::Buf| {
                let r = b.download(r)?;
                let d: Vec<f64> = r.iter().zip(diag).map(|(x, d)| damp * x / d).collect();
                Ok((b.upload(&d)?, 1))
            },
            cross_t: |d: &<CpuBackend<f64> as Backend>::Buf| b.download(d),
        };
        let (check, _) = refine(&b, policy, &a, &mut q, &mut h, &mut system).unwrap();
        (check, b.download(&q).unwrap(), h)
    }

    const F32: Refinement = Refinement {
        max_rounds: 4,
        tolerance: 1e-4,
    };

    #[test]
    fn an_exact_solver_settles_in_two_rounds_and_h_follows_q() {
        // q₀ wrong in the small coordinates, as a normwise stopping test leaves it.
        let (check, q, h) = run(F32, [1.0, 0.0, 0.0], 1.0);
        assert!(
            (q[1] - 0.1).abs() < 1e-15 && (q[2] - 0.01).abs() < 1e-15,
            "{q:?}"
        );
        for (hi, qi) in h.iter().zip(&q) {
            assert_eq!(*hi, -qi);
        }
        // One round moved h (by ‖(0.1, 0.01)‖ / ‖h‖) and left a zero residual: nothing to do.
        assert_eq!(check.report.refinements, Some(1));
        assert_eq!(check.report.solve_accurate, Some(true));
        assert!(check.residual_norm < 1e-15);
        assert!(check.report.warning().is_none());
    }

    #[test]
    fn a_solver_that_stalls_is_reported_inaccurate() {
        // Each round recovers 10% of the error: relative changes 1, 0.47, 0.30 (h grows as
        // the error shrinks by 0.9), and the third round fails to halve the second's.
        let (check, _, _) = run(F32, [0.0, 0.0, 0.0], 0.1);
        assert_eq!(check.report.solve_accurate, Some(false));
        assert_eq!(check.report.refinements, Some(3));
        let warning = check.report.warning().unwrap();
        assert!(
            warning.contains("--precision f64") && !warning.contains('\n'),
            "{warning}"
        );
    }

    #[test]
    fn without_rounds_only_the_residual_is_recomputed() {
        let none = Refinement::for_precision(Precision::F64);
        let (check, q, _) = run(none, [1.0, 0.0, 0.0], 1.0);
        assert_eq!(q, vec![1.0, 0.0, 0.0]);
        assert_eq!(check.report, RefinementReport::default());
        assert!((check.residual_norm - 2f64.sqrt()).abs() < 1e-15);
    }
}
