//! `hypergrad plot` (SPEC §10): traces in, a valid SVG or PNG out with one line per trace and
//! field; bad traces and bad names are one-line errors naming the file and line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn hypergrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hypergrad"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hg_plot_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A trace whose loss falls over three decades and whose accuracy rises.
fn write_trace(path: &Path, steps: usize, scale: f64) {
    let lines: Vec<String> = (0..steps)
        .map(|s| {
            format!(
                "{{\"step\":{s},\"seconds\":{},\"outer_loss\":{},\"test_accuracy\":{},\"hypergradient_norm\":null}}",
                0.1 * s as f64,
                scale * 10f64.powf(-3.0 * s as f64 / steps as f64),
                0.5 + 0.4 * s as f64 / steps as f64
            )
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {stderr}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "'{needle}' missing from: {}",
            lines[0]
        );
    }
}

#[test]
fn svg_has_one_line_per_trace_and_field_and_a_log_axis_for_decades() {
    let d = dir();
    let (a, b) = (d.join("warm.jsonl"), d.join("cold.jsonl"));
    write_trace(&a, 30, 1.0);
    write_trace(&b, 20, 3.0);
    let fig = d.join("fig.svg");
    let out = hypergrad(&[
        "plot",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        fig.to_str().unwrap(),
        "--x",
        "seconds",
        "--y",
        "outer_loss",
        "test_accuracy",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&fig).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // Each series is a 2-px polyline, drawn once in its panel and once in the legend.
    let series = svg.matches("stroke-width=\"2\"").count();
    assert_eq!(
        series,
        2 * 2 * 2,
        "2 traces × 2 fields, each with a legend entry"
    );
    // The texts drawn (each <text> element's content is on its own line).
    let texts: Vec<&str> = svg.lines().map(str::trim).collect();
    // The legend names the traces by their file names.
    assert!(texts.contains(&"warm") && texts.contains(&"cold"), "legend");
    // The loss spans three decades: its axis is logarithmic (ticks at powers of ten), the
    // accuracy's (0.5 to 0.9) linear.
    assert!(
        texts.contains(&"0.001") && texts.contains(&"0.01"),
        "log ticks"
    );
    assert!(texts.contains(&"0.65"), "linear ticks");
}

#[test]
fn png_is_written_with_labels_given() {
    let d = dir();
    let a = d.join("a.jsonl");
    write_trace(&a, 10, 1.0);
    let fig = d.join("fig.png");
    let out = hypergrad(&[
        "plot",
        a.to_str().unwrap(),
        "-o",
        fig.to_str().unwrap(),
        "--label",
        "NHGD",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&fig).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert!(bytes.len() > 10_000, "a drawn image, not an empty one");
}

#[test]
fn bad_traces_and_names_are_one_line_errors() {
    let d = dir();
    let good = d.join("good.jsonl");
    write_trace(&good, 5, 1.0);
    let broken = d.join("broken.jsonl");
    std::fs::write(&broken, "{\"step\":0,\"outer_loss\":1}\nnot json\n").unwrap();
    let stringy = d.join("stringy.jsonl");
    std::fs::write(&stringy, "{\"step\":0,\"outer_loss\":\"low\"}\n").unwrap();
    let empty = d.join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let svg = d.join("x.svg");
    let (svg, good, broken) = (
        svg.to_str().unwrap(),
        good.to_str().unwrap(),
        broken.to_str().unwrap(),
    );
    assert_one_line_error(
        &hypergrad(&["plot", broken, "-o", svg]),
        &["broken.jsonl:2"],
    );
    assert_one_line_error(
        &hypergrad(&["plot", stringy.to_str().unwrap(), "-o", svg]),
        &["stringy.jsonl:1", "outer_loss"],
    );
    assert_one_line_error(
        &hypergrad(&["plot", empty.to_str().unwrap(), "-o", svg]),
        &["empty.jsonl", "no records"],
    );
    assert_one_line_error(
        &hypergrad(&["plot", good, "-o", svg, "--y", "error_bound"]),
        &["good.jsonl:1", "error_bound"],
    );
    assert_one_line_error(
        &hypergrad(&["plot", good, "-o", d.join("x.pdf").to_str().unwrap()]),
        &[".svg or .png"],
    );
    assert_one_line_error(
        &hypergrad(&["plot", good, "-o", svg, "--label", "a", "b"]),
        &["--label", "2 names for 1 traces"],
    );
    let missing = d.join("missing.jsonl");
    let out = hypergrad(&["plot", missing.to_str().unwrap(), "-o", svg]);
    assert_one_line_error(&out, &["missing.jsonl"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
}
