//! The `hypergrad` command line (SPEC §6): `grad`, `bench` and `info`.
//!
//! Every failure ends in one line on stderr, `error: …`, and a non-zero exit code: 2 for a
//! command line clap rejects, 1 for anything else (unreadable data, bad values, numerical
//! failure). `--help` on any command explains its options.

mod args;
mod bench;
mod bench_bounds;
mod bench_nhgd;
mod bench_scale;
mod data;
mod data_args;
mod grad;
mod info;
mod plot;
mod run;
mod stochastic_args;
mod tables;
mod theta_out;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Hypergradients and bilevel optimisation with error bounds, on CPU or NVIDIA GPU.
#[derive(Debug, Parser)]
#[command(
    name = "hypergrad",
    version,
    about,
    long_about = "Computes hypergradients ∇F(θ) of bilevel problems\n\n    \
        w*(θ) = argmin_w g(w, θ)  (inner, training data)\n    \
        F(θ)  = f(w*(θ))          (outer, validation data)\n\n\
        by implicit differentiation (exact, cg, neumann, fixed-point) or by differentiating \
        through the inner solver (unroll, forward), each with a computable a posteriori \
        error bound.",
    after_help = "Example:\n  hypergrad grad --problem softmax --train digits --standardize --method cg\n\n\
        Bundled datasets: digits, breast_cancer, diabetes, mnist_5k."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Compute one hypergradient ∇F(θ) with its diagnostics and error bound.
    Grad(grad::GradArgs),
    /// Bilevel optimisation: θ ← θ − step(∇F(θ)) for --outer-steps steps, with a trace.
    /// Without --problem and --train, runs the main job (label cleaning of mnist_5k with NHGD).
    Run(run::RunArgs),
    /// Benchmark the kernels against the device's copy bandwidth and GEMM rate.
    Bench(bench::BenchArgs),
    /// Show the version, the build, the backends and the devices found.
    Info(info::InfoArgs),
    /// Draw traces (run --trace files) as an SVG or PNG figure.
    Plot(plot::PlotArgs),
    /// Data files: `data convert IN OUT.npy|OUT.npz` writes the binary inputs.
    Data(data::DataArgs),
}

/// Entry point of the binary: parses the command line, runs the command, and turns every
/// error into one line on stderr.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(run::with_main_job_defaults(std::env::args_os())) {
        Ok(cli) => cli,
        Err(err) => return report_clap_error(err),
    };
    let outcome = match cli.command {
        Command::Grad(args) => grad::run(args),
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Info(args) => info::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Data(args) => data::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&chain(&err)));
            ExitCode::FAILURE
        }
    }
}

/// `--help` and `--version` print as clap formats them; a rejected command line prints clap's
/// first line only (it names the option), plus where to find help.
fn report_clap_error(err: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::from(2)
        }
        _ => {
            let rendered = err.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("error: invalid command line");
            eprintln!("{} (see --help)", first.trim_end());
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, `outer: cause: …`, leaving out a cause whose text the message
/// already holds (the library's I/O errors print their source themselves).
fn chain(err: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// Collapses a message onto one line.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}
