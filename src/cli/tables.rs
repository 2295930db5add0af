//! The tables `grad` and `run` print (without `--json`), one function per report kind.

use crate::api::{L1Outcome, L1Report, SmoothOutcome, SmoothReport};
use crate::solver::Solver;

/// `grad` on a smooth problem.
pub fn smooth_report(r: &SmoothReport) {
    let h = &r.result;
    let optional = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.3e}"));
    let h_norm = norm(&h.hypergradient);
    match &r.network {
        None => println!(
            "problem       {} (--hyper {}, p = {}), P = {}×{} inner variables",
            r.kind.name(),
            r.layout.name(),
            r.p,
            r.outputs,
            r.features
        ),
        Some(n) => println!(
            "problem       {} (--hyper {}, p = {}), --model {} ({}), P = {} inner variables",
            r.kind.name(),
            r.layout.name(),
            r.p,
            n.model,
            n.activation,
            n.parameters
        ),
    }
    println!(
        "data          {} rows train ({}), {} rows val ({})",
        r.n_train, r.train, r.n_val, r.val
    );
    println!("method        {} on {}", h.method.name(), r.device);
    println!("θ             {}", preview(&h.theta));
    println!("F(θ)          {:.10e}", h.outer_loss);
    println!("∇F(θ)         {}", preview(&h.hypergradient));
    println!("‖∇F(θ)‖       {h_norm:.6e}");
    let inner = if h.method.is_trajectory() {
        format!("{} fixed-size gradient steps", h.inner_iters)
    } else {
        // sgd and adam count epochs (passes over the rows), the others steps.
        let unit = if r.inner_solver.counts_epochs() {
            "epochs"
        } else {
            "iterations"
        };
        format!(
            "{} inner solver, {} {unit}",
            r.inner_solver.name(),
            h.inner_iters
        )
    };
    let converged = if h.inner_converged {
        "converged"
    } else {
        "NOT converged to --inner-tol"
    };
    println!(
        "‖∇g(ŵ)‖       {:.3e}  ({inner}, {converged})",
        h.inner_grad_norm
    );
    println!(
        "residual      {}  ({} linear iterations{})",
        optional(h.residual_norm),
        h.linear_iters,
        refinement_note(&h.refinement)
    );
    if let Some(warning) = h.refinement.warning() {
        println!("warning       {warning}");
    }
    let relative = h
        .error_bound
        .filter(|_| h_norm > 0.0)
        .map_or(String::new(), |e| {
            format!("  ({:.1e} relative)", e / h_norm)
        });
    println!("error bound   {}{relative}", optional(h.error_bound));
    println!("time          {:.3} s", h.seconds);
    if let Some(note) = &r.device_note {
        println!("device note   {note}");
    }
}

/// `grad` on an ℓ1 problem.
pub fn l1_report(r: &L1Report) {
    let h = &r.result;
    let d = r.features;
    println!(
        "problem       {} (p = {}), {d} features, {} design ({} stored entries)",
        r.kind.name(),
        r.p,
        if r.sparse { "sparse" } else { "dense" },
        r.nnz_train
    );
    println!(
        "data          {} rows train ({}), {} rows val ({}); criterion {}",
        r.n_train, r.names[0], r.n_val, r.names[1], r.criterion
    );
    println!("method        {} on cpu-f64", h.method.name());
    println!("θ             {}", preview(&h.theta));
    println!("F(θ)          {:.10e}", h.outer_loss);
    println!("∇F(θ)         {}", preview(&h.hypergradient));
    println!("‖∇F(θ)‖       {:.6e}", norm(&h.hypergradient));
    println!(
        "duality gap   {:.3e}  ({} solver, {} epochs, {}), support {} of {d}",
        h.inner_grad_norm,
        r.opts.inner.solver.name(),
        h.inner_iters,
        if h.inner_converged {
            "converged"
        } else {
            "NOT converged to --inner-tol"
        },
        h.extra.support_size
    );
    println!(
        "residual      {}  ({} linear iterations)",
        h.residual_norm.map_or("n/a".into(), |x| format!("{x:.3e}")),
        h.linear_iters
    );
    println!("error bound   n/a (no valid bound is known for ℓ1 problems)");
    println!("time          {:.3} s", h.seconds);
    if let Some(note) = &r.device_note {
        println!("device note   {note}");
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|h| h * h).sum::<f64>().sqrt()
}

/// The first entries of a vector, formatted.
fn preview(v: &[f64]) -> String {
    const SHOWN: usize = 8;
    let head: Vec<String> = v.iter().take(SHOWN).map(|x| format!("{x:.6e}")).collect();
    if v.len() > SHOWN {
        format!("[{}, … ({} entries)]", head.join(", "), v.len())
    } else {
        format!("[{}]", head.join(", "))
    }
}

/// `run` on a smooth problem.
/// How the inner solves of a run ended: the last one's iterations and gradient norm, and how
/// many steps' solves stopped short of `--inner-tol` (the trace records say which).
fn inner_solves(solver: Solver, trace: &[serde_json::Value]) -> String {
    let unit = if solver.counts_epochs() {
        "epochs"
    } else {
        "iterations"
    };
    let last = trace.last();
    let iters = last
        .and_then(|r| r.get("inner_iters")?.as_u64())
        .unwrap_or(0);
    let grad_norm = last
        .and_then(|r| r.get("inner_grad_norm")?.as_f64())
        .unwrap_or(f64::NAN);
    let short = trace
        .iter()
        .filter(|r| r.get("inner_converged").and_then(|c| c.as_bool()) == Some(false))
        .count();
    let all = if short == 0 {
        format!("all {} converged", trace.len())
    } else {
        format!("{short} of {} NOT converged to --inner-tol", trace.len())
    };
    format!(
        "{} inner solver: the last {iters} {unit}, ‖∇g‖ {grad_norm:.3e}; {all}",
        solver.name()
    )
}

/// `, N refinement rounds (h moved X in the last)` where refinement ran.
fn refinement_note(r: &crate::hypergrad::refine::RefinementReport) -> String {
    match (r.refinements, r.hypergradient_change) {
        (Some(n), Some(change)) => format!(
            ", {n} refinement round{} (h moved {change:.1e} in the last)",
            if n == 1 { "" } else { "s" }
        ),
        _ => String::new(),
    }
}

/// How the linear solves of a run ended (the methods that report a residual): the last
/// residual, how many steps were refined, and how many stayed inaccurate.
fn linear_solves(trace: &[serde_json::Value]) -> Option<String> {
    let last = trace
        .iter()
        .rev()
        .find_map(|r| r.get("residual_norm")?.as_f64())?;
    let refined = trace
        .iter()
        .filter(|r| r.get("refinements").and_then(|c| c.as_u64()).is_some())
        .count();
    let inaccurate = trace
        .iter()
        .filter(|r| r.get("solve_accurate").and_then(|c| c.as_bool()) == Some(false))
        .count();
    let refinement = match (refined, inaccurate) {
        (0, _) => String::new(),
        (n, 0) => format!("; refined in {n} of {} steps, all accurate", trace.len()),
        (n, k) => format!(
            "; refined in {n} of {} steps, {k} stayed INACCURATE (use --precision f64)",
            trace.len()
        ),
    };
    Some(format!("the last residual {last:.3e}{refinement}"))
}

pub fn smooth_outcome(o: &SmoothOutcome) {
    println!(
        "problem       {} (p = {}), method {} with {} on {}, {} start",
        o.kind.name(),
        o.p,
        o.method.name(),
        o.outer_opt,
        o.device,
        if o.warm_start { "warm" } else { "cold" }
    );
    if let Some(n) = &o.network {
        println!(
            "model         {} ({}), P = {} inner variables",
            n.model, n.activation, n.parameters
        );
    }
    if let Some((update, t)) = &o.fisher_update_auto {
        println!(
            "fisher update {} (auto: an outer step projected at {:.3} s by Woodbury, \
             {:.3} s by accumulate)",
            format!("{update:?}").to_lowercase(),
            t.woodbury_outer,
            t.accumulate_outer
        );
    }
    if let Some(step) = o.resumed_from {
        println!("resumed       from the checkpoint after step {step}");
    }
    if let Some(last) = o.trace.last() {
        let number = |key: &str| last.get(key).and_then(|v| v.as_f64());
        println!(
            "final         step {}: F {:.6e}, ‖h‖ {:.3e}, {:.2} s",
            last.get("step").and_then(|v| v.as_u64()).unwrap_or(0),
            number("outer_loss").unwrap_or(f64::NAN),
            number("hypergradient_norm").unwrap_or(f64::NAN),
            number("seconds").unwrap_or(f64::NAN)
        );
        if let Some(solver) = o.inner_solver {
            println!("inner solves  {}", inner_solves(solver, &o.trace));
        }
        if let Some(solves) = linear_solves(&o.trace) {
            println!("linear solves {solves}");
        }
        if let Some(loss) = number("test_loss") {
            let acc = number("test_accuracy")
                .map_or(String::new(), |a| format!(", accuracy {:.2}%", 100.0 * a));
            println!("test          loss {loss:.6e}{acc} (the last inner iterate)");
        }
    }
    if let Some(warning) = o.saturation_warning() {
        println!("saturation    {warning}");
    }
    if let Some(acc) = o.retrain_test_accuracy {
        println!(
            "retrain       test accuracy {:.2}% (a fresh model from w₀ trained to convergence on the final θ)",
            100.0 * acc
        );
    }
    if let Some(c) = &o.cleaning {
        println!(
            "test accuracy without cleaning {:.2}%, with cleaning {:.2}%, clean rows only {:.2}% ({} of {} training labels corrupted)",
            100.0 * c.without_cleaning,
            100.0 * c.with_cleaning,
            100.0 * c.clean_rows_only,
            c.corrupted,
            c.n_train
        );
        println!(
            "weights       mean σ(θ) {:.3} on corrupted rows, {:.3} on clean rows",
            c.mean_weight_corrupted, c.mean_weight_clean
        );
        let solves: Vec<String> = c
            .solves
            .iter()
            .map(|m| {
                let stop = if m.converged {
                    "converged"
                } else {
                    "NOT converged"
                };
                format!(
                    "{} {} iterations, {stop}, ‖∇g‖ {:.2e}, {:.1} s",
                    m.model, m.iters, m.grad_norm, m.seconds
                )
            })
            .collect();
        if !solves.is_empty() {
            println!("report models {}", solves.join("; "));
        }
    }
    if let Some(note) = &o.device_note {
        println!("device note   {note}");
    }
}

/// `run` on an ℓ1 problem.
pub fn l1_outcome(o: &L1Outcome) {
    let result = &o.result;
    println!(
        "problem       {} (p = {}), {} features, {} design; criterion {}",
        o.kind.name(),
        o.p,
        o.features,
        if o.sparse { "sparse" } else { "dense" },
        o.criterion
    );
    match &result.refinement {
        Some(r) => {
            let screened = result.trace.len() - r.resolved.iter().sum::<usize>();
            let rungs: Vec<String> = r
                .ladder
                .iter()
                .zip(&r.resolved)
                .map(|(t, k)| format!("{k} re-solved to {t:.0e}"))
                .collect();
            println!(
                "search        {}, criterion only (no hypergradient): {screened} points solved to a relative gap of {:.0e}{}{}; {} inner epochs in {:.3} s",
                o.search.opt.name(),
                r.screen_tol,
                rungs.iter().map(|s| format!(", {s}")).collect::<String>(),
                if r.fallback {
                    " (a screening error exceeded its bound: every point refined)"
                } else {
                    ""
                },
                result.inner_iters,
                result.seconds
            )
        }
        None => println!(
            "search        {} with {} hypergradients, {} evaluations, {} inner epochs in {:.3} s",
            o.search.opt.name(),
            o.opts.method.name(),
            result.trace.len(),
            result.inner_iters,
            result.seconds
        ),
    }
    println!("best θ        {}", preview(&result.best_theta));
    println!("best F(θ)     {:.10e}", result.best_loss);
    if let Some(t) = o.test_loss {
        println!("test MSE      {t:.10e}  (refit on the training rows at the best θ)");
    }
    if let Some(note) = &o.device_note {
        println!("device note   {note}");
    }
}
