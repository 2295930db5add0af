//! Runs the CUDA kernels of `cuda/*.cu` on the CPU (tests/kernel_emu): every kernel against
//! a double-precision reference written from the CPU backend. This is how the kernels are
//! checked on machines without a GPU (CI); on a GPU, the parity suites (tests/parity_*.rs,
//! tests/mlp_cuda_parity.rs, tests/l1_device.rs) check them for real. Needs a C++20 compiler (`CXX`, else `g++`); says plainly when it is skipped.
//! `HYPERGRAD_KERNEL_EMU=full` runs every kernel width instead of the quick subset.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernels with the shared header `cuda/common.cuh` pasted in place of its `#include` (as
/// build.rs does for NVRTC: the driver includes each file inside its own C++ namespace, and the
/// header has no include guard, so each namespace gets its own copy), and their
/// `extern __shared__` (dynamic) arrays turned into static ones large enough for the emulated
/// launches.
fn emulation_copy(source: &Path, out_dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(source).expect("read kernel source");
    let header_dir = source.parent().expect("cuda/");
    let converted: String = text
        .lines()
        .map(|line| {
            let trimmed = line.trim();
            if let Some(name) = trimmed
                .strip_prefix("#include \"")
                .and_then(|rest| rest.strip_suffix('"'))
            {
                return std::fs::read_to_string(header_dir.join(name))
                    .unwrap_or_else(|e| panic!("{} includes {name}: {e}", source.display()));
            }
            match trimmed
                .strip_prefix("extern __shared__ float4 ")
                .and_then(|rest| rest.strip_suffix("[];"))
            {
                Some(name) => format!("static float4 {name}[1 << 16];"),
                None => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let name = source.file_name().expect("file name").to_string_lossy();
    let target = out_dir.join(format!("emu_{name}"));
    std::fs::write(&target, converted + "\n").expect("write emulation copy");
    target
}

#[test]
fn cuda_kernels_match_their_cpu_twins_under_emulation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    if Command::new(&compiler).arg("--version").output().is_err() {
        eprintln!("kernel_emulation: SKIPPED — no C++ compiler '{compiler}' (set CXX)");
        return;
    }
    let work = std::env::temp_dir().join(format!("hypergrad-kernel-emu-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("temp dir");
    for kernel in [
        "blas1",
        "glm_rows",
        "glm_batch",
        "fisher",
        "mlp",
        "prox",
        "rows",
    ] {
        emulation_copy(&root.join("cuda").join(format!("{kernel}.cu")), &work);
    }
    std::fs::copy(root.join("tests/kernel_emu/shim.h"), work.join("shim.h")).expect("copy shim");
    std::fs::copy(
        root.join("tests/kernel_emu/kernel_emu.cpp"),
        work.join("kernel_emu.cpp"),
    )
    .expect("copy driver");
    let binary = work.join("kernel_emu");
    let build = Command::new(&compiler)
        .args(["-std=c++20", "-O2", "-pthread", "-o"])
        .arg(&binary)
        .arg(work.join("kernel_emu.cpp"))
        .output()
        .expect("run the C++ compiler");
    assert!(
        build.status.success(),
        "the emulated kernels do not compile:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let mode = match std::env::var("HYPERGRAD_KERNEL_EMU").as_deref() {
        Ok("full") => "full",
        _ => "quick",
    };
    let run = Command::new(&binary)
        .arg(mode)
        .output()
        .expect("run the emulation");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let rows_mismatch = device_rows_mismatch(&binary);
    let _ = std::fs::remove_dir_all(&work);
    assert!(rows_mismatch.is_empty(), "{}", rows_mismatch.join("\n"));
    assert!(run.status.success(), "kernel emulation failed:\n{stdout}");
    let total = stdout
        .lines()
        .find(|l| l.starts_with("TOTAL"))
        .unwrap_or("no TOTAL line");
    assert!(total.ends_with(" 0 fails"), "{stdout}");
    eprintln!("kernel_emulation ({mode}): {total}");
}

/// The row stream's kernel (`cuda/rows.cu`, run by the emulation's `rows` mode) against its
/// CPU twin `hypergrad::data::row_stream::fill`, bit for bit: small n (cycle walking over a
/// domain 4× larger), n not a power of 4, offsets that cross epochs, a large seed. Returns
/// one line per disagreement.
fn device_rows_mismatch(binary: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    for (seed, n, k0, count) in [
        (0u64, 1u32, 0u64, 5u32),
        (1, 3, 2, 40),
        (7, 17, 10, 1000),
        (42, 1000, 950, 2000),
        (u64::MAX - 5, 65_537, 3 * 65_537 - 100, 900),
        (9, 50_000, 12_345_678_901, 1500),
    ] {
        let run = Command::new(binary)
            .args([
                "rows",
                &seed.to_string(),
                &n.to_string(),
                &k0.to_string(),
                &count.to_string(),
            ])
            .output()
            .expect("run the emulation's rows mode");
        let text = String::from_utf8_lossy(&run.stdout);
        let mut lines = text.lines();
        let device: Vec<u32> = lines
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(|v| v.parse().expect("a row index"))
            .collect();
        let mut cpu = vec![0u32; count as usize];
        hypergrad::data::row_stream::fill(seed, n, k0, &mut cpu);
        if device != cpu {
            let first = device.iter().zip(&cpu).position(|(a, b)| a != b);
            bad.push(format!(
                "rows (seed {seed}, n {n}, k0 {k0}): device {} rows, first difference at {first:?}",
                device.len()
            ));
        }
        let advanced = format!("offset {}", k0 + u64::from(count));
        if lines.next() != Some(advanced.as_str()) {
            bad.push(format!(
                "rows (seed {seed}, n {n}): offset not advanced to {advanced}"
            ));
        }
    }
    bad
}
