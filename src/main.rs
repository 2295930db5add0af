//! The `hypergrad` command line; everything lives in [`hypergrad::cli`].

fn main() -> std::process::ExitCode {
    hypergrad::cli::main()
}
