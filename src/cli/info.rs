//! `hypergrad info`: version, build, backends and devices.

use anyhow::Result;
use clap::Args;
use serde_json::json;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let threads = rayon::current_num_threads();
    let info = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "backends": {
            "cpu": { "available": true, "precisions": ["f32", "f64"], "threads": threads },
            "cuda": { "available": false, "kernels": "none (this build has no CUDA backend)" },
        },
        "devices": [ { "kind": "cpu", "name": cpu_name(), "threads": threads } ],
        "bundled_datasets": crate::data::bundled_names(),
    });
    if args.json {
        println!("{info}");
    } else {
        println!("hypergrad {}", env!("CARGO_PKG_VERSION"));
        println!("backends   cpu (f32, f64, {threads} threads); cuda: not in this build");
        println!("kernels    none compiled (no CUDA backend in this build)");
        println!("devices    cpu: {}", cpu_name());
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
