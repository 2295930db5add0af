//! The device side of the CUDA parity suites (`parity_core`, `parity_glm`, `parity_fisher`,
//! `parity_estimators`, `mlp_cuda_parity`, `l1_device`; the first four share the rest of
//! their harness in `tests/parity_common/`): the backend on device 0, or one `SKIPPED` line
//! and `None` on a machine without a usable CUDA device (what `scripts/gpu_check.sh` counts as
//! "no device"). A device that is present but whose backend does not start is a failure, not
//! a skip.

use std::io::Write;
use std::sync::Once;

use hypergrad::backend::cuda::{self, CudaBackend, Storage};

static SKIP_LINE: Once = Once::new();

/// Writes a line to the process's stderr, bypassing the test harness's output capture.
pub fn log_line(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The CUDA backend on device 0 with designs stored as `storage`, or `None` (after one line
/// on stderr, once per process, naming `suite`) when the machine has no usable CUDA device.
/// Each test makes its own: the row path and the host-traffic counters are per backend, and
/// tests run in parallel.
pub fn gpu_with(suite: &str, storage: Storage) -> Option<CudaBackend> {
    let probe = cuda::probe();
    if probe.devices.is_empty() {
        let reason = probe
            .reason
            .unwrap_or_else(|| "the driver lists no device".into());
        SKIP_LINE.call_once(|| {
            log_line(&format!(
                "{suite}: SKIPPED — no usable CUDA device ({reason})"
            ))
        });
        return None;
    }
    match CudaBackend::new(0, storage) {
        Ok(b) => Some(b),
        Err(e) => panic!(
            "{suite}: a CUDA device is present ({}) but the backend does not start: {e}",
            probe.devices[0].name
        ),
    }
}
