//! `hypergrad info`: version, build (how the kernels were compiled), backends and devices.

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::backend::cuda::{self, CudaBackend, Storage, KERNEL_BUILD};

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let threads = rayon::current_num_threads();
    let probe = cuda::probe();
    // Loading the kernels proves the build's PTX (or NVRTC) works on this driver.
    let cuda_status = match probe.devices.first() {
        None => format!(
            "unavailable: {}",
            probe.reason.clone().unwrap_or_else(|| "no device".into())
        ),
        Some(_) => match CudaBackend::new(0, Storage::F32) {
            Ok(_) => "ready (kernels loaded)".to_string(),
            Err(e) => format!("unavailable: {e}"),
        },
    };
    let kernels = match KERNEL_BUILD.compiler {
        "nvcc" => format!(
            "PTX for {} compiled by nvcc at build time ({})",
            KERNEL_BUILD.arch, KERNEL_BUILD.nvcc_version
        ),
        _ => format!(
            "CUDA sources embedded, compiled by NVRTC for {} when a GPU is used",
            KERNEL_BUILD.arch
        ),
    };
    if args.json {
        let info = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "kernels": {
                "compiler": KERNEL_BUILD.compiler,
                "nvcc_version": KERNEL_BUILD.nvcc_version,
                "arch": KERNEL_BUILD.arch,
            },
            "backends": {
                "cpu": { "available": true, "precisions": ["f32", "f64"], "threads": threads },
                "cuda": { "available": cuda_status.starts_with("ready"), "status": cuda_status },
            },
            "devices": {
                "cpu": { "name": cpu_name(), "threads": threads },
                "cuda": probe.devices,
            },
            "bundled_datasets": crate::data::bundled_names(),
        });
        println!("{info}");
    } else {
        println!("hypergrad {}", env!("CARGO_PKG_VERSION"));
        println!("kernels    {kernels}");
        println!("cpu        {} ({threads} threads; f32, f64)", cpu_name());
        println!("cuda       {cuda_status}");
        for d in &probe.devices {
            println!(
                "  gpu {}    {} (sm_{}{}, {:.1} GiB, {} SMs)",
                d.ordinal,
                d.name,
                d.compute_capability.0,
                d.compute_capability.1,
                d.memory_bytes as f64 / (1u64 << 30) as f64,
                d.multiprocessors
            );
        }
        println!("datasets   {}", crate::data::bundled_names().join(", "));
    }
    Ok(())
}

/// The processor's model name where the OS tells it (Linux), else the architecture.
fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
