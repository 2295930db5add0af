//! `hypergrad data convert IN OUT`: text data (CSV, LIBSVM), a bundled dataset or a synthetic
//! spec to the binary inputs that load at disk speed (SPEC §11, issue 24).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};

use crate::data::npy::{self, NpyDtype};
use crate::data::{self, npz, sparse};

#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Convert a dataset to .npy (dense) or .npz (sparse CSR), which --train/--val/--test read
    /// memory-mapped.
    ///
    /// OUT.npy holds one array of shape (n, 1 + d): the label in the first column, then the
    /// features, as in a CSV file (np.save("x.npy", np.column_stack([y, X])) writes the
    /// same). OUT.npz holds SciPy's CSR arrays (data, indices, indptr, shape, format) and the
    /// labels y (np.savez("x.npz", data=X.data, indices=X.indices, indptr=X.indptr,
    /// shape=X.shape, format="csr", y=y) writes the same; scipy.sparse.load_npz reads it). A
    /// LIBSVM input is read sparse for .npz and never expanded.
    Convert(ConvertArgs),
    /// Load a dataset as --train would and print its rows, features, label range and the
    /// seconds the load took (to check a file, and how fast it loads).
    Info(InfoArgs),
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// A data file (CSV, LIBSVM, .npy, .npz), a bundled dataset or a synthetic spec.
    #[arg(value_name = "FILE|NAME")]
    pub input: String,

    /// Print one JSON object instead of the line.
    #[arg(long)]
    pub json: bool,
}

/// Element precision of a written .npy.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DtypeName {
    F32,
    F64,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The input: a CSV or LIBSVM file (optionally .gz), a .npy or .npz, a bundled dataset
    /// or a synthetic spec (whatever --train accepts).
    #[arg(value_name = "IN")]
    pub input: String,

    /// The output, by its extension: OUT.npy (dense) or OUT.npz (sparse CSR).
    #[arg(value_name = "OUT.npy|OUT.npz")]
    pub output: PathBuf,

    /// Element type of OUT.npy: f64 keeps every digit of the text; f32 halves the file (and
    /// is what an f32 run computes in). OUT.npz always holds f64.
    #[arg(long, value_enum, default_value = "f64")]
    pub dtype: DtypeName,
}

pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Convert(c) => convert(&c),
        DataCommand::Info(i) => info(&i),
    }
}

fn info(args: &InfoArgs) -> Result<()> {
    let start = std::time::Instant::now();
    let ds = data::load(&args.input)?;
    let seconds = start.elapsed().as_secs_f64();
    let (lo, hi) =
        ds.y.iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "name": ds.name, "rows": ds.n(), "features": ds.d(),
                "label_min": lo, "label_max": hi, "load_seconds": seconds,
            })
        );
    } else {
        println!(
            "{}: {} rows x {} features, labels {lo} .. {hi}, loaded in {seconds:.3} s",
            ds.name,
            ds.n(),
            ds.d()
        );
    }
    Ok(())
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

fn convert(args: &ConvertArgs) -> Result<()> {
    let out = &args.output;
    let (n, d, what) = match extension(out).as_str() {
        "npy" => {
            let ds = data::load(&args.input)?;
            let dtype = match args.dtype {
                DtypeName::F32 => NpyDtype::F32,
                DtypeName::F64 => NpyDtype::F64,
            };
            npy::write_npy(&ds, out, dtype)?;
            (
                ds.n(),
                ds.d(),
                format!("dense {:?}", args.dtype).to_lowercase(),
            )
        }
        "npz" => {
            let ds = if sparse::is_sparse_file(&args.input) {
                sparse::load_sparse(&args.input)?
            } else {
                let dense = data::load(&args.input)?;
                sparse::SparseDataset {
                    x: sparse::CsrMatrix::from_dense(&dense.x),
                    y: dense.y,
                    name: dense.name,
                }
            };
            npz::write_npz(&ds, out)?;
            (
                ds.n(),
                ds.d(),
                format!("CSR, {} stored entries", ds.x.nnz()),
            )
        }
        _ => bail!(
            "invalid value for OUT: '{}' must end in .npy (dense) or .npz (sparse CSR)",
            out.display()
        ),
    };
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "wrote {}: {n} rows x {d} features ({what}), {}",
        out.display(),
        crate::memory::human(bytes)
    );
    Ok(())
}
