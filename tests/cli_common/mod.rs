//! Running the `hypergrad` binary from the CLI tests, and the checks they share on its output.
#![allow(dead_code)]

use std::process::{Command, Output};

/// `hypergrad ARGS`, run to completion.
pub fn hypergrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hypergrad"))
        .args(args)
        .output()
        .expect("the hypergrad binary runs")
}

/// The one JSON object a successful `--json` command printed.
pub fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// The command failed with exactly one line on stderr, containing `needle`, and no panic.
pub fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].contains(needle),
        "'{needle}' missing from: {}",
        lines[0]
    );
}
