//! `hypergrad info`: version, build (how the kernels were compiled), backends and devices.

use anyhow::Result;
use clap::Args;

use crate::api::info::Info;

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InfoArgs) -> Result<()> {
    let info = Info::gather();
    if args.json {
        println!("{}", info.to_json());
        return Ok(());
    }
    println!("hypergrad {}", info.version);
    println!("kernels    {}", info.kernels);
    println!(
        "cpu        {} ({} threads; f32, f64)",
        info.cpu_name, info.threads
    );
    println!("cuda       {}", info.cuda_status);
    for d in &info.gpus {
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
    Ok(())
}
