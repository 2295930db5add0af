//! `hypergrad bench kernels`: every kernel's achieved GB/s or TFLOP/s next to the copy and
//! GEMM ceilings measured in the same run (see [`crate::bench`]).

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::api::device::{Backend as DeviceBackend, Device};
use crate::api::names::{DeviceName, PrecisionName};
use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{CudaBackend, RowPath, Storage};
use crate::backend::{Backend, GlmOps, Loss};
use crate::bench::{hvp_rows, kernel_bench, BenchRow, KernelBenchConfig};
use crate::data::rng::Rng;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Kernel throughput against the device's copy bandwidth and GEMM rate.
    Kernels(KernelArgs),
    /// NHGD outer-step time per curvature representation against the plain SGD loop.
    Nhgd(super::bench_nhgd::NhgdBenchArgs),
    /// Ehrhardt & Roberts' quadratic problem: true error, a posteriori and a priori bounds
    /// over CG iterations.
    Bounds(super::bench_bounds::BoundsBenchArgs),
    /// Time per outer step and peak host memory against the rows n (10⁴ … 10⁷): NHGD kfac
    /// hyper-cleaning, CG on logistic regression, lasso on sparse rows; log-log slopes, JSON,
    /// and a plot.
    Scale(super::bench_scale::ScaleArgs),
}

#[derive(Debug, Args)]
pub struct KernelArgs {
    /// auto: the first CUDA GPU when one is usable, else the CPU (f32).
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceName,
    /// Rows of X (default 131072 on a GPU, 32768 on the CPU).
    #[arg(long)]
    pub n: Option<usize>,
    /// Features of X (default 512 on a GPU, 256 on the CPU).
    #[arg(long)]
    pub d: Option<usize>,
    /// Classes of the softmax kernels.
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Mini-batch rows (default 1024 on a GPU, 256 on the CPU).
    #[arg(long)]
    pub batch: Option<usize>,
    /// P of the dense Woodbury update (default 4096 on a GPU, 1024 on the CPU).
    #[arg(long)]
    pub woodbury_dim: Option<usize>,
    /// Rank of the Woodbury update.
    #[arg(long, default_value_t = 32)]
    pub woodbury_rank: usize,
    /// Side of the square GEMM ceiling (default 4096 on a GPU, 1024 on the CPU).
    #[arg(long)]
    pub gemm_side: Option<usize>,
    /// Hidden width of the network rows' one-hidden-layer tanh network.
    #[arg(long, default_value_t = 300)]
    pub mlp_hidden: usize,
    /// Directions of the prox Jacobian row.
    #[arg(long, default_value_t = 8)]
    pub prox_directions: usize,
    /// Timed repetitions per kernel (default 20 on a GPU, 5 on the CPU).
    #[arg(long)]
    pub reps: Option<usize>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also draw the rates as a bar chart (FIG.svg or FIG.png).
    #[arg(long, value_name = "FIG.svg|FIG.png")]
    pub plot: Option<std::path::PathBuf>,
}

impl KernelArgs {
    fn config(&self, gpu: bool) -> Result<KernelBenchConfig> {
        let pick = |v: Option<usize>, on_gpu: usize, on_cpu: usize| {
            v.unwrap_or(if gpu { on_gpu } else { on_cpu })
        };
        let cfg = KernelBenchConfig {
            n: pick(self.n, 1 << 17, 1 << 15),
            d: pick(self.d, 512, 256),
            classes: self.classes,
            batch: pick(self.batch, 1024, 256),
            woodbury_dim: pick(self.woodbury_dim, 4096, 1024),
            woodbury_rank: self.woodbury_rank,
            gemm_side: pick(self.gemm_side, 4096, 1024),
            mlp_hidden: self.mlp_hidden,
            prox_directions: self.prox_directions,
            reps: pick(self.reps, 20, 5),
        };
        for (name, v) in [
            ("--n", cfg.n),
            ("--d", cfg.d),
            ("--classes", cfg.classes),
            ("--batch", cfg.batch),
            ("--woodbury-dim", cfg.woodbury_dim),
            ("--woodbury-rank", cfg.woodbury_rank),
            ("--gemm-side", cfg.gemm_side),
            ("--mlp-hidden", cfg.mlp_hidden),
            ("--prox-directions", cfg.prox_directions),
            ("--reps", cfg.reps),
        ] {
            if v == 0 {
                anyhow::bail!("invalid value for {name}: must be at least 1");
            }
        }
        Ok(cfg)
    }
}

pub fn run(args: BenchArgs) -> Result<()> {
    let args = match args.what {
        BenchCommand::Kernels(args) => args,
        BenchCommand::Nhgd(args) => return super::bench_nhgd::run(args),
        BenchCommand::Bounds(args) => return super::bench_bounds::run(args),
        BenchCommand::Scale(args) => return super::bench_scale::run(args),
    };
    let gpu = match Device::open_in(args.device, PrecisionName::F32)?.backend {
        DeviceBackend::Cuda(gpu) => Some(gpu),
        _ => None,
    };
    let (device, rows) = match gpu {
        Some(backend) => {
            let cfg = args.config(true)?;
            let (mut rows, data) = kernel_bench(&backend, &cfg)?;
            // The comparison the fused kernel has to win: the same HVP as two cuBLAS GEMMs.
            backend.set_row_path(RowPath::Cublas);
            rows.extend(hvp_rows(
                &backend,
                &data.x,
                &data.curvature,
                &[1, 8],
                " (cuBLAS GEMMs)",
                4,
                cfg.reps,
                data.copy_gbps,
            )?);
            backend.set_row_path(RowPath::Fused);
            rows.extend(bf16_rows(&cfg, data.copy_gbps)?);
            (backend.name(), rows)
        }
        None => {
            let backend = CpuBackend::<f32>::new();
            let cfg = args.config(false)?;
            (backend.name(), kernel_bench(&backend, &cfg)?.0)
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "device": device, "kernels": rows })
        );
    } else {
        print_table(&device, &rows);
    }
    if let Some(out) = &args.plot {
        let bars = rows
            .iter()
            .filter_map(|r| {
                r.fraction_of_ceiling
                    .map(|f| (format!("{} {}", r.kernel, r.shape), 100.0 * f))
            })
            .collect();
        crate::plot::draw_bars(
            &crate::plot::Bars {
                title: format!("hypergrad bench kernels on {device}"),
                quantity: "% of the ceiling measured in the same run".into(),
                bars,
            },
            out,
        )?;
    }
    Ok(())
}

/// The batched HVP with the design stored as bf16 (half the bytes to read).
fn bf16_rows(cfg: &KernelBenchConfig, copy_gbps: f64) -> Result<Vec<BenchRow>> {
    let backend = CudaBackend::new(0, Storage::Bf16)?;
    let (n, d) = (cfg.n, cfg.d);
    let mut rng = Rng::new(1);
    let x = ndarray::Array2::from_shape_fn((n, d), |_| rng.normal());
    let x = backend.upload_design(&x)?;
    let y = backend.upload(
        &(0..n)
            .map(|i| if i % 3 == 0 { -1.0 } else { 1.0 })
            .collect::<Vec<_>>(),
    )?;
    let w = backend.upload(&vec![0.01; d])?;
    let curvature = backend.glm_curvature(&x, Loss::Logistic, &y, None, &w, 1.0 / n as f64)?;
    hvp_rows(
        &backend,
        &x,
        &curvature,
        &[1, 8],
        " (bf16 X)",
        2,
        cfg.reps,
        copy_gbps,
    )
    .map_err(Into::into)
}

fn print_table(device: &str, rows: &[BenchRow]) {
    println!("device: {device}");
    println!(
        "{:<8} {:<40} {:>28} {:>11} {:>9} {:>9} {:>8}  ceiling",
        "family", "kernel", "shape", "ms/call", "GB/s", "TFLOP/s", "fraction"
    );
    let cell =
        |v: Option<f64>, digits: usize| v.map_or("—".to_string(), |x| format!("{x:.digits$}"));
    for r in rows {
        println!(
            "{:<8} {:<40} {:>28} {:>11.4} {:>9} {:>9} {:>8}  {}",
            r.family,
            r.kernel,
            r.shape,
            r.seconds * 1e3,
            cell(r.gb_per_s, 1),
            cell(r.tflop_per_s, 2),
            r.fraction_of_ceiling
                .map_or("—".to_string(), |f| format!("{:.0}%", 100.0 * f)),
            r.ceiling
        );
    }
}
