//! `hypergrad grad`: one hypergradient with its diagnostics (SPEC §6).

use anyhow::Result;
use clap::Args;

use super::args::{DeviceArgs, EstimatorArgs, L1Args, ProblemArgs};
use super::data_args::DataArgs;
use super::stochastic_args::StochasticArgs;
use crate::api::{self, L1Report, Report, Request, Settings, SmoothReport};

#[derive(Debug, Args)]
pub struct GradArgs {
    #[command(flatten)]
    pub problem: ProblemArgs,

    #[command(flatten)]
    pub data: DataArgs,

    #[command(flatten)]
    pub estimator: EstimatorArgs,

    #[command(flatten)]
    pub stochastic: StochasticArgs,

    #[command(flatten)]
    pub device: DeviceArgs,

    #[command(flatten)]
    pub l1: L1Args,

    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

impl GradArgs {
    pub fn settings(&self) -> Settings {
        let mut s = Settings::default();
        self.problem.apply(&mut s);
        self.data.apply(&mut s);
        self.estimator.apply(&mut s);
        self.stochastic.apply(&mut s);
        self.device.apply(&mut s);
        self.l1.apply(&mut s);
        s
    }
}

pub fn run(args: GradArgs) -> Result<()> {
    let request = Request {
        problem: args.problem.problem,
        settings: args.settings(),
    };
    let report = api::grad(&request, &args.data.source(None).into())?;
    if args.json {
        println!("{}", report.to_json());
        return Ok(());
    }
    match &report {
        Report::Smooth(r) => print_smooth(r),
        Report::L1(r) => print_l1(r),
    }
    Ok(())
}

fn print_smooth(r: &SmoothReport) {
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
        format!(
            "{} inner solver, {} iterations",
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
        "residual      {}  ({} linear iterations)",
        optional(h.residual_norm),
        h.linear_iters
    );
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

fn print_l1(r: &L1Report) {
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
        h.support_size
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
pub(super) fn preview(v: &[f64]) -> String {
    const SHOWN: usize = 8;
    let head: Vec<String> = v.iter().take(SHOWN).map(|x| format!("{x:.6e}")).collect();
    if v.len() > SHOWN {
        format!("[{}, … ({} entries)]", head.join(", "), v.len())
    } else {
        format!("[{}]", head.join(", "))
    }
}
