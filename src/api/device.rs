//! The one place where a device is chosen: `auto` / `cpu` / `cuda` with a precision and a
//! storage become a [`Device`], opened once and then used for everything a call computes.

use super::names::{DeviceName, PrecisionName, StorageName};
use super::settings::DeviceSpec;
use crate::backend::cpu::CpuBackend;
use crate::backend::cuda::{CudaBackend, Storage};
use crate::{Error, Result};

/// Code written once, generic over the backend, to run on whichever backend a [`Device`]
/// opened (Rust closures cannot be generic, so such code is a value of a type implementing
/// this; see [`Device::dispatch`]).
pub trait OnBackend {
    type Output;
    fn on<
        B: crate::backend::GlmOps
            + crate::backend::FisherOps
            + crate::backend::ProxOps
            + Clone
            + 'static,
    >(
        self,
        backend: B,
    ) -> Result<Self::Output>;
}

/// An opened backend.
pub enum Backend {
    CpuF64,
    CpuF32,
    Cuda(CudaBackend),
}

/// The device a call runs on, and why `auto` fell back to the CPU (when it did).
pub struct Device {
    pub backend: Backend,
    pub fallback_reason: Option<String>,
}

impl Device {
    /// Opens `device` in `precision` with every other setting at its default (a benchmark's
    /// device: f32 is the precision both backends have).
    pub fn open_in(device: DeviceName, precision: PrecisionName) -> Result<Device> {
        Device::open(&DeviceSpec {
            device,
            precision: Some(precision),
            ..DeviceSpec::default()
        })
    }

    /// Opens the device `spec` asks for. `auto` takes the first CUDA GPU when one is usable
    /// (and f64 was not asked for), the CPU otherwise, and says why in `fallback_reason`.
    pub fn open(spec: &DeviceSpec) -> Result<Device> {
        if let Some(threads) = spec.threads {
            if threads == 0 {
                return Err(Error::option("--threads", "must be at least 1"));
            }
            // Fails only if the pool was already built; the first size asked for stays.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build_global();
        }
        let cpu = match spec.precision {
            Some(PrecisionName::F32) => Backend::CpuF32,
            _ => Backend::CpuF64,
        };
        let storage = match spec.storage {
            StorageName::F32 => Storage::F32,
            StorageName::Bf16 => Storage::Bf16,
        };
        let wants_f64 = spec.precision == Some(PrecisionName::F64);
        let on = |backend| Device {
            backend,
            fallback_reason: None,
        };
        match spec.device {
            DeviceName::Cpu => Ok(on(cpu)),
            DeviceName::Cuda => {
                if wants_f64 {
                    return Err(Error::option(
                        "--precision",
                        "f64 is CPU-only, the CUDA backend computes in f32",
                    ));
                }
                let backend = CudaBackend::new(0, storage).map_err(|e| match e {
                    Error::Backend(why) => Error::Backend(format!("--device cuda: {why}")),
                    other => other,
                })?;
                Ok(on(Backend::Cuda(backend)))
            }
            DeviceName::Auto if wants_f64 => Ok(Device {
                backend: cpu,
                fallback_reason: Some("--precision f64 asks for the CPU".into()),
            }),
            DeviceName::Auto => match CudaBackend::new(0, storage) {
                Ok(backend) => Ok(on(Backend::Cuda(backend))),
                Err(e) => Ok(Device {
                    backend: cpu,
                    fallback_reason: Some(e.to_string()),
                }),
            },
        }
    }

    /// Runs `task` on the opened backend: the one place that turns the device into a type.
    pub fn dispatch<T: OnBackend>(self, task: T) -> Result<T::Output> {
        match self.backend {
            Backend::CpuF64 => task.on(CpuBackend::<f64>::new()),
            Backend::CpuF32 => task.on(CpuBackend::<f32>::new()),
            Backend::Cuda(backend) => task.on(backend),
        }
    }

    /// The device note of the outputs (`device_note`), when `auto` fell back.
    pub fn note(&self) -> Option<String> {
        self.fallback_reason
            .as_ref()
            .map(|r| format!("auto chose the CPU: {r}"))
    }
}
