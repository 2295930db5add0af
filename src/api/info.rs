//! What this build and this machine offer: version, how the kernels were compiled, the
//! backends and the devices found (`hypergrad info`, `hg.info()`).

use serde_json::json;

use crate::backend::cuda::{self, CudaBackend, DeviceInfo, Storage, KERNEL_BUILD};

/// The build and the devices, gathered once.
pub struct Info {
    pub version: &'static str,
    /// CPU threads in the pool.
    pub threads: usize,
    pub cpu_name: String,
    /// `ready (kernels loaded)` or `unavailable: why`.
    pub cuda_status: String,
    /// How the kernels were built, in words.
    pub kernels: String,
    pub gpus: Vec<DeviceInfo>,
}

impl Info {
    /// Probes the machine. Loading the kernels proves the build's PTX (or NVRTC) works on
    /// this driver.
    pub fn gather() -> Info {
        let probe = cuda::probe();
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
        Info {
            version: env!("CARGO_PKG_VERSION"),
            threads: rayon::current_num_threads(),
            cpu_name: cpu_name(),
            cuda_status,
            kernels,
            gpus: probe.devices,
        }
    }

    /// The object `hypergrad info --json` prints.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "version": self.version,
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "kernels": {
                "compiler": KERNEL_BUILD.compiler,
                "nvcc_version": KERNEL_BUILD.nvcc_version,
                "arch": KERNEL_BUILD.arch,
            },
            "backends": {
                "cpu": { "available": true, "precisions": ["f32", "f64"], "threads": self.threads },
                "cuda": { "available": self.cuda_status.starts_with("ready"), "status": self.cuda_status },
            },
            "devices": {
                "cpu": { "name": self.cpu_name, "threads": self.threads },
                "cuda": self.gpus,
            },
            "bundled_datasets": crate::data::bundled_names(),
        })
    }
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
