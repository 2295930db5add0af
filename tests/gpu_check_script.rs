//! Runs `tests/gpu_check_script.sh`: `scripts/gpu_check.sh`, the one command the GPU machine
//! runs, checked against fake binaries that fail or hang stage by stage, so that a typo in its
//! shell logic is caught here and not in the few minutes a GPU is lent.

use std::process::Command;

#[test]
fn gpu_check_script_survives_every_failing_stage() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("bash")
        .arg(format!("{root}/tests/gpu_check_script.sh"))
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "gpu_check_script.sh failed:\n{text}"
    );
    assert!(text.contains("all checks passed"), "{text}");
}
