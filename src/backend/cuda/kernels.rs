//! The compiled kernels: PTX from nvcc (build time) or CUDA source compiled by NVRTC when the
//! backend starts (see `build.rs`), loaded into a context as named functions.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{CompileOptions, Ptx};

use crate::error::{Error, Result};

/// How `build.rs` produced the kernels.
#[derive(Clone, Copy, Debug)]
pub struct KernelBuild {
    /// `nvcc` (PTX compiled at build time) or `nvrtc` (sources compiled at run time).
    pub compiler: &'static str,
    /// nvcc's version line, empty for NVRTC.
    pub nvcc_version: &'static str,
    /// The virtual architecture, e.g. `compute_90`.
    pub arch: &'static str,
}

/// The form a kernel file is embedded in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelForm {
    Ptx,
    CudaSource,
}

/// One `cuda/*.cu` file.
#[derive(Clone, Copy, Debug)]
pub struct KernelFile {
    pub name: &'static str,
    pub form: KernelForm,
    pub text: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Names of the `extern "C"` kernels in a PTX text (`.visible .entry NAME(`).
fn entry_names(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|line| line.trim().strip_prefix(".visible .entry "))
        .filter_map(|rest| rest.split('(').next())
        .map(|name| name.trim().to_string())
        .collect()
}

/// Every kernel of every file, loaded into one context, by name.
pub struct Kernels {
    functions: HashMap<String, CudaFunction>,
}

impl Kernels {
    /// Loads all kernel files into `ctx`, compiling sources with NVRTC first if needed.
    pub fn load(ctx: &Arc<CudaContext>) -> Result<Self> {
        let mut functions = HashMap::new();
        for file in KERNEL_FILES {
            let ptx_text = match file.form {
                KernelForm::Ptx => file.text.to_string(),
                KernelForm::CudaSource => compile_with_nvrtc(file)?,
            };
            let module = ctx
                .load_module(Ptx::from_src(ptx_text.clone()))
                .map_err(|e| Error::Backend(format!("loading kernels '{}': {e}", file.name)))?;
            for name in entry_names(&ptx_text) {
                let function = module.load_function(&name).map_err(|e| {
                    Error::Backend(format!("loading kernel '{name}' of '{}': {e}", file.name))
                })?;
                functions.insert(name, function);
            }
        }
        Ok(Kernels { functions })
    }

    /// The kernel called `name`.
    pub fn get(&self, name: &str) -> Result<&CudaFunction> {
        self.functions
            .get(name)
            .ok_or_else(|| Error::Backend(format!("kernel '{name}' is not in the loaded modules")))
    }
}

fn compile_with_nvrtc(file: &KernelFile) -> Result<String> {
    // SAFETY: probing for a shared library has no side effects beyond loading it.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(Error::Backend(format!(
            "the kernels were not compiled at build time (no nvcc) and NVRTC (libnvrtc) is not \
             installed to compile '{}' now; rebuild with NVCC set or install NVRTC",
            file.name
        )));
    }
    let options = CompileOptions {
        arch: Some(KERNEL_BUILD.arch),
        name: Some(format!("{}.cu", file.name)),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(file.text, options)
        .map_err(|e| Error::Backend(format!("NVRTC failed on '{}': {e}", file.name)))?;
    Ok(ptx.to_src())
}
