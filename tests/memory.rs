//! No size aborts the process (issue 21; issue 24, item 3): a run that cannot fit is refused
//! in one line before it allocates, naming what needs how much, what is available and the
//! option that lowers it; an allocation that fails anyway is an error naming its size.
//! Device memory is simulated by the CPU stand-in's allocation limit
//! (`HYPERGRAD_CPU_ALLOC_LIMIT`), so the path of a failed device allocation runs without a GPU.

mod cli_common;

use std::process::{Command, Output};

use cli_common::{assert_one_line_error, hypergrad};
use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::Backend;
use hypergrad::Error;

/// `hypergrad ARGS` on a stand-in device of `limit` bytes.
fn on_stand_in(limit: u64, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hypergrad"))
        .env("HYPERGRAD_CPU_ALLOC_LIMIT", limit.to_string())
        .args(args)
        .output()
        .expect("the hypergrad binary runs")
}

/// Networks under the parameter cap (2³⁰) whose buffers still need hundreds of GB: refused
/// by the plan, before w₀ is drawn.
#[test]
fn a_network_too_big_for_memory_is_one_line_not_an_abort() {
    // digits: d = 64, c = 10. mlp:12000000 has P ≈ 9·10⁸ (86 GB of P-vectors, 690 GB of
    // activations over the rows); mlp:1000000,1000 has P ≈ 1.07·10⁹.
    for model in ["mlp:12000000", "mlp:1000000,1000"] {
        let out = hypergrad(&[
            "run",
            "--problem",
            "hyperclean",
            "--train",
            "digits",
            "--model",
            model,
            "--device",
            "cpu",
            "--outer-steps",
            "1",
        ]);
        assert_eq!(out.status.code(), Some(1), "{model}: {out:?}");
        assert_one_line_error(&out, "out of memory: the run needs about");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("available") && stderr.contains("--model"),
            "{stderr}"
        );
    }
}

/// The case, `mlp:100000000` (7.5·10⁹ weights, 60 GB), used to abort with exit 134
/// and a backtrace; past the parameter cap it is an invalid `--model`, in one line.
#[test]
fn a_network_past_the_parameter_cap_is_an_invalid_model() {
    let out = hypergrad(&[
        "run",
        "--problem",
        "hyperclean",
        "--train",
        "digits",
        "--model",
        "mlp:100000000",
        "--device",
        "cpu",
        "--outer-steps",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_one_line_error(&out, "invalid value for --model");
}

/// A dense curvature that does not fit the (simulated) device: refused before the inner loop,
/// naming the P×P state and the option that avoids it; kfac on the same device runs.
#[test]
fn a_dense_curvature_too_big_for_the_device_names_kfac() {
    let args = |curvature: &'static str| {
        vec![
            "grad",
            "--problem",
            "hyperclean",
            "--train",
            "digits",
            "--method",
            "nhgd",
            "--curvature",
            curvature,
            "--precision",
            "f32",
            "--device",
            "cpu",
            "--json",
        ]
    };
    // digits: P = 10×64 = 640, so P×P in f32 is 1.6 MB, twice over for --fisher-update auto
    // (the state and the timing pair); the rows need about 0.4 MB.
    let out = on_stand_in(1_000_000, &args("dense"));
    assert_one_line_error(&out, "the dense curvature (P×P) 3.3 MB");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stand-in device memory") && stderr.contains("--curvature kfac"),
        "{stderr}"
    );
    let out = on_stand_in(1_000_000, &args("kfac"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A buffer the allocator (or the simulated device) refuses is `Error::Memory` naming its
/// size, never an abort.
#[test]
fn an_allocation_that_fails_is_an_error_naming_its_size() {
    let standin = CpuBackend::<f32>::new().with_allocation_limit(4_000);
    assert!(standin.zeros(1_000).is_ok());
    match standin.zeros(1_001) {
        Err(Error::Memory(m)) => {
            assert!(m.contains("4.0 KB") && m.contains("stand-in device"), "{m}")
        }
        other => panic!("expected a memory error, got {other:?}"),
    }
    assert!(matches!(
        standin.upload(&vec![0.0; 2_000]),
        Err(Error::Memory(_))
    ));
    // The host allocator refusing (more than any address space) is an error too.
    let host = CpuBackend::<f64>::new();
    match host.zeros(usize::MAX / 16) {
        Err(Error::Memory(m)) => assert!(m.contains("cannot allocate"), "{m}"),
        other => panic!("expected a memory error, got {other:?}"),
    }
}
