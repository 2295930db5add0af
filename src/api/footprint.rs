//! The memory a smooth run will hold, stated before it is allocated ([`crate::memory`]).
//!
//! Only the buffers that grow with the problem are counted: those of P entries (the inner
//! variables and their companions), P×P (a dense curvature or Hessian), b×P (per-sample
//! gradients), r×P (a low-rank sketch), the rows on the backend, and a network's activations
//! over the rows. A plan that undercounts is caught by the allocation itself (an error, not
//! an abort); the plan is there so that a run that cannot fit says so before it starts,
//! rather than being killed by the kernel half-way through.

use super::plan::SmoothPlan;
use super::settings::Settings;
use crate::backend::Backend;
use crate::hypergrad::fisher::{DenseUpdate, Representation};
use crate::hypergrad::Method;
use crate::memory::MemoryPlan;
use crate::Result;

/// The sizes of a smooth run: rows, features, classes (outputs), inner variables P, θ's p,
/// and the layer widths of a network (empty for the linear model).
pub(super) struct Sizes<'a> {
    pub rows: usize,
    pub features: usize,
    pub outputs: usize,
    pub inner: usize,
    pub hyper: usize,
    pub hidden: &'a [usize],
}

/// The plan of `plan` with `settings` at `sizes`, in `bytes` per entry (4 for f32, 8 for f64).
pub(super) fn smooth(
    plan: &SmoothPlan,
    settings: &Settings,
    sizes: &Sizes,
    bytes: u64,
) -> MemoryPlan {
    let p = sizes.inner as u64;
    let mut m = MemoryPlan::new();
    let smaller_model = if sizes.hidden.is_empty() {
        "fewer features"
    } else {
        "a smaller --model"
    };
    m.add(
        "the rows",
        1,
        (sizes.rows as u64).saturating_mul(sizes.features as u64),
        bytes,
        "--precision f32",
    );
    // w, ∇g, ∇f, q, r, p, Ap and the outer optimiser's moments: about a dozen P-vectors.
    m.add("the inner variables", 12, p, bytes, smaller_model);
    m.add(
        "θ and its optimiser state",
        4,
        sizes.hyper as u64,
        8,
        smaller_model,
    );
    if !sizes.hidden.is_empty() {
        // Activations and back-propagated deltas of a full pass (the deterministic methods'
        // gradients and Hessian-vector products run over all rows at once).
        let width: u64 = sizes.hidden.iter().map(|&h| h as u64).sum::<u64>() + sizes.outputs as u64;
        m.add(
            "the network's activations over the rows",
            4,
            (sizes.rows as u64).saturating_mul(width),
            bytes,
            "a smaller --model",
        );
    }
    match plan.method {
        Method::Exact => {
            m.add(
                "the dense Hessian (P×P, f64)",
                2,
                p.saturating_mul(p),
                8,
                "--method cg",
            );
        }
        Method::Unroll | Method::Forward => {
            // The trajectory (unroll) or the P×p Jacobian (forward).
            let (count, what) = if plan.method == Method::Unroll {
                (
                    settings.unroll_steps as u64,
                    "the unrolled trajectory (T×P)",
                )
            } else {
                (sizes.hyper as u64, "the forward Jacobian (P×p)")
            };
            let lower = if plan.method == Method::Unroll {
                "a smaller --unroll-steps (or --method cg)"
            } else {
                "--method cg"
            };
            m.add(what, count, p, bytes, lower);
        }
        Method::Nhgd => {
            let batch = settings.batch_size as u64;
            let opts = plan.stochastic(settings, 0.0);
            match opts.representation {
                Representation::Dense => {
                    // The state, plus the factorised copy (accumulate) or auto's timing pair.
                    let count = match opts.dense_update {
                        DenseUpdate::Woodbury => 1,
                        DenseUpdate::Accumulate | DenseUpdate::Auto => 2,
                    };
                    m.add(
                        "the dense curvature (P×P)",
                        count,
                        p.saturating_mul(p),
                        bytes,
                        "--curvature kfac (or lowrank)",
                    );
                    m.add(
                        "the per-sample gradients (b×P)",
                        1,
                        batch.saturating_mul(p),
                        bytes,
                        "a smaller --batch-size",
                    );
                }
                Representation::Lowrank { rank } => {
                    m.add(
                        "the low-rank sketch (r×P)",
                        3,
                        (rank as u64).saturating_mul(p),
                        bytes,
                        "a smaller --rank",
                    );
                    m.add(
                        "the per-sample gradients (b×P)",
                        1,
                        batch.saturating_mul(p),
                        bytes,
                        "a smaller --batch-size",
                    );
                }
                Representation::Kfac => {}
            }
        }
        _ => {}
    }
    m
}

/// Refuses, in one line, a run whose plan does not fit in what `backend` has left.
pub(super) fn check<B: Backend>(
    backend: &B,
    plan: &SmoothPlan,
    settings: &Settings,
    sizes: &Sizes,
) -> Result<()> {
    let bytes = match backend.precision() {
        crate::backend::Precision::F32 => 4,
        crate::backend::Precision::F64 => 8,
    };
    let Some((room, place)) = backend.memory_room() else {
        return Ok(());
    };
    smooth(plan, settings, sizes, bytes).check(Some(room), place)
}
