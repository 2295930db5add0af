//! Compiles every `cuda/*.cu` to PTX with nvcc when one is found (`NVCC`, then
//! `$CUDA_HOME/bin/nvcc`, then `nvcc` on `PATH`). Without nvcc, the sources are embedded and
//! compiled by NVRTC at run time, so `cargo build` works on a machine with no CUDA at all.
//!
//! A kernel that fails to compile with a found nvcc fails the build: a broken kernel must
//! never ship silently. `HYPERGRAD_CUDA_ARCH` (default `compute_90`, the H100/H200) sets the
//! virtual architecture; the PTX is JIT-compiled by the driver for the actual device.
//!
//! The `.cu` files share one header of helpers, `cuda/common.cuh`: nvcc finds it with
//! `-I cuda`; NVRTC gets one source text per file, so for it the header's text is pasted in
//! place of the `#include` line here (`$OUT_DIR/<name>.cu`), and that text is what is embedded.
//!
//! Writes `$OUT_DIR/kernels.rs`, included by `src/backend/cuda/kernels.rs`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=cuda");
    for var in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "HYPERGRAD_CUDA_ARCH",
        "PATH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let arch = env::var("HYPERGRAD_CUDA_ARCH").unwrap_or_else(|_| "compute_90".to_string());

    let cuda_dir = manifest.join("cuda");
    let files: Vec<PathBuf> = fs::read_dir(&cuda_dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    let with_ext = |ext: &str| {
        let mut v: Vec<PathBuf> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .cloned()
            .collect();
        v.sort();
        v
    };
    let sources = with_ext("cu");
    // A change to a header changes every kernel that includes it.
    for file in sources.iter().chain(&with_ext("cuh")) {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let nvcc = find_nvcc();
    let mut entries = String::new();
    let (compiler, version) = match &nvcc {
        Some(nvcc) => {
            for source in &sources {
                let name = stem(source);
                let ptx = out_dir.join(format!("{name}.ptx"));
                compile(nvcc, source, &cuda_dir, &ptx, &arch);
                entries.push_str(&format!(
                    "    KernelFile {{ name: {name:?}, form: KernelForm::Ptx, text: include_str!({:?}) }},\n",
                    ptx.display().to_string()
                ));
            }
            ("nvcc", nvcc_version(nvcc))
        }
        None => {
            for source in &sources {
                let name = stem(source);
                let expanded = out_dir.join(format!("{name}.cu"));
                fs::write(&expanded, with_headers(source, &cuda_dir))
                    .expect("write the expanded kernel source");
                entries.push_str(&format!(
                    "    KernelFile {{ name: {name:?}, form: KernelForm::CudaSource, text: include_str!({:?}) }},\n",
                    expanded.display().to_string()
                ));
            }
            ("nvrtc", String::new())
        }
    };
    let generated = format!(
        "/// How the kernels were built (written by build.rs).\n\
         pub const KERNEL_BUILD: KernelBuild = KernelBuild {{ compiler: {compiler:?}, \
         nvcc_version: {version:?}, arch: {arch:?} }};\n\n\
         /// Every `cuda/*.cu`, as PTX (nvcc) or as source (for NVRTC).\n\
         pub const KERNEL_FILES: &[KernelFile] = &[\n{entries}];\n"
    );
    fs::write(out_dir.join("kernels.rs"), generated).expect("write kernels.rs");
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// nvcc from `NVCC`, `CUDA_HOME`/`CUDA_PATH`, or `PATH`, if it runs.
fn find_nvcc() -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(explicit) = env::var_os("NVCC") {
        candidates.push(PathBuf::from(explicit));
    }
    for home in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(dir) = env::var_os(home) {
            candidates.push(PathBuf::from(dir).join("bin").join("nvcc"));
        }
    }
    candidates.push(PathBuf::from("nvcc"));
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn nvcc_version(nvcc: &Path) -> String {
    Command::new(nvcc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.contains("release"))
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_default()
}

/// The text of `source` with every `#include "NAME"` line replaced by the text of
/// `include_dir/NAME` (one level: the headers include nothing), for NVRTC, which has no file
/// system to search. A missing header fails the build, as nvcc would.
fn with_headers(source: &Path, include_dir: &Path) -> String {
    let text = fs::read_to_string(source)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()));
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let header = line
            .trim()
            .strip_prefix("#include")
            .map(str::trim)
            .and_then(|rest| rest.strip_prefix('"'))
            .and_then(|rest| rest.strip_suffix('"'));
        match header {
            Some(name) => {
                let path = include_dir.join(name);
                let body = fs::read_to_string(&path).unwrap_or_else(|e| {
                    panic!("{} includes {}: {e}", source.display(), path.display())
                });
                out.push_str(&format!("// ---- {name} (pasted by build.rs) ----\n"));
                out.push_str(&body);
                out.push_str(&format!("// ---- end of {name} ----\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn compile(nvcc: &Path, source: &Path, include_dir: &Path, ptx: &Path, arch: &str) {
    let output = Command::new(nvcc)
        .args(["-ptx", "-O3", "-lineinfo"])
        .arg(format!("-arch={arch}"))
        .arg("-I")
        .arg(include_dir)
        .arg("-o")
        .arg(ptx)
        .arg(source)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", nvcc.display()));
    if !output.status.success() {
        panic!(
            "nvcc failed to compile {}:\n{}{}",
            source.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
