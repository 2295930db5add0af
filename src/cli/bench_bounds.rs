//! `hypergrad bench bounds`: Ehrhardt & Roberts' quadratic problem, CG stopped after
//! k = 0, 1, …, K iterations: the true error of the hypergradient, the a posteriori bound of
//! SPEC §4 and their a priori bound ([`crate::bound_curves`]), as a table and as JSON lines
//! that `hypergrad plot FILE.jsonl --x iterations --y true_error a_posteriori a_priori` draws.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::api::Theta;
use crate::backend::Precision;
use crate::bound_curves::{cg_curves, Curves};
use crate::data::synthetic::QuadraticSpec;
use crate::problem::quadratic::THETA_DEFAULT;
use crate::problem::{Bilevel, QuadraticBilevel};
use crate::solver::InnerOptions;

/// Ehrhardt & Roberts' reported point for CG on this problem (seed 0, exact inner solution):
/// iterations, true error, a posteriori bound, a priori bound.
const REPORTED: (usize, f64, f64, f64) = (25, 2.7e-12, 1.0e-9, 1.5e4);

#[derive(Debug, Args)]
pub struct BoundsBenchArgs {
    /// The problem: synthetic:quadratic:m=1000,nx=10,nw=10,noise=0.01,seed=0 (the defaults).
    #[arg(long, value_name = "SPEC", default_value = "synthetic:quadratic")]
    pub train: String,
    /// Every entry of w (θ); Ehrhardt & Roberts evaluate at w = (1, …, 1).
    #[arg(long, allow_negative_numbers = true, default_value_t = THETA_DEFAULT)]
    pub theta: f64,
    /// K, the largest number of CG iterations.
    #[arg(long, value_name = "K", default_value_t = 50)]
    pub max_iters: usize,
    /// Relative tolerance of the inner Newton solve; 0 (the default) runs it to the f64
    /// rounding floor, as close as an iterative solve gets to their exact x*(w).
    #[arg(long, default_value_t = 0.0)]
    pub inner_tol: f64,
    /// Newton iterations at most.
    #[arg(long, default_value_t = 1000)]
    pub inner_iters: usize,
    /// Also write one JSON object per k to FILE (for `hypergrad plot`).
    #[arg(long, value_name = "FILE.jsonl")]
    pub jsonl: Option<PathBuf>,
    /// Print one JSON object (constants and every point) instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: BoundsBenchArgs) -> Result<()> {
    let spec = QuadraticSpec::parse(&args.train)?;
    let mut problem = QuadraticBilevel::new(spec.generate())?;
    let theta = Theta::Scalar(args.theta).values(spec.nw, THETA_DEFAULT, "quadratic")?;
    problem.set_theta(&theta)?;
    let mut inner = InnerOptions::default_for(Precision::F64);
    inner.tol = args.inner_tol;
    inner.max_iters = args.inner_iters;
    let curves = cg_curves(&problem, inner, args.max_iters)?;
    if let Some(path) = &args.jsonl {
        write_jsonl(path, &curves)?;
    }
    if args.json {
        println!("{}", serde_json::to_value(&curves)?);
    } else {
        print_table(&curves, args.theta);
    }
    Ok(())
}

/// One line per point, as `hypergrad plot` reads traces.
fn write_jsonl(path: &PathBuf, curves: &Curves) -> crate::Result<()> {
    let io = |source| crate::Error::Io {
        path: path.clone(),
        source,
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    for point in &curves.points {
        let line = serde_json::to_string(point)
            .map_err(|e| crate::Error::Backend(format!("cannot serialise a point: {e}")))?;
        writeln!(file, "{line}").map_err(io)?;
    }
    file.flush().map_err(io)
}

fn print_table(curves: &Curves, theta: f64) {
    let c = &curves.constants;
    println!("problem   {} at w = {theta} (every entry)", curves.spec);
    println!(
        "H = 2DᵀD  μ = {:.4e}, L = {:.4e}, κ = {:.2};  L_f = {:.4e}, ‖B‖ = {:.4e}, L_H = L_B = 0",
        c.mu, c.l_g, curves.condition_number, c.l_f, c.b_norm
    );
    println!(
        "inner     Newton, {} iterations: ‖∇g(x̂)‖ = {:.3e}, ‖x̂ − x*‖ = {:.3e};  ‖∇F(w)‖ = {:.6e}",
        curves.inner_iters, curves.inner_grad_norm, curves.inner_error, curves.hypergradient_norm
    );
    println!(
        "{:>4} {:>6} {:>12} {:>12} {:>12} {:>14} {:>12}",
        "k", "CG its", "residual", "true error", "a posteriori", "a post. (raw)", "a priori"
    );
    for p in &curves.points {
        println!(
            "{:>4} {:>6} {:>12.3e} {:>12.3e} {:>12.3e} {:>14.3e} {:>12.3e}",
            p.iterations,
            p.cg_iterations,
            p.residual_norm,
            p.true_error,
            p.a_posteriori,
            p.a_posteriori_raw,
            p.a_priori
        );
    }
    let (k, true_error, a_posteriori, a_priori) = REPORTED;
    if let Some(p) = curves.points.iter().find(|p| p.iterations == k) {
        println!(
            "k = {k}: this run  true error {:.1e}, a posteriori {:.1e} (raw {:.1e}), a priori {:.1e}",
            p.true_error, p.a_posteriori, p.a_posteriori_raw, p.a_priori
        );
        println!(
            "k = {k}: Ehrhardt & Roberts report  true error {true_error:.1e}, a posteriori \
             {a_posteriori:.1e}, a priori {a_priori:.1e} (their seed-0 matrices; numpy's stream)"
        );
    }
}
