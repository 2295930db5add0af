//! Durable checkpoints of `hypergrad run`: a run killed with SIGKILL (`kill -9`) at many
//! seeded random points, and resumed each time, ends with the trace and θ of the run that was
//! never interrupted, bit for bit; a checkpoint of another version or format is refused in one
//! line. (The `fsync`s in `Checkpoint::save` guard against a power loss, which no test here can
//! show.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod cli_common;
use cli_common::{assert_one_line_error, hypergrad, json_of};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hypergrad-durable-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A small run of about 60 ms a step on one thread (so that nothing in it depends on how
/// threads are scheduled): hyperclean on digits with CG, Adam and warm starts, so that the
/// checkpoint carries θ, Adam's moments and the inner iterate.
const STEPS: u64 = 60;

fn run_args(extra: &[&str]) -> Vec<String> {
    let steps = STEPS.to_string();
    [
        "run",
        "--problem",
        "hyperclean",
        "--train",
        "digits",
        "--standardize",
        "--method",
        "cg",
        "--outer-steps",
        &steps,
        "--threads",
        "1",
        "--json",
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect()
}

/// The trace's records without their `seconds`, the only field that may differ.
fn records(trace: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(trace)
        .expect("trace")
        .lines()
        .map(|line| {
            let mut record: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            record.as_object_mut().unwrap().remove("seconds");
            record
        })
        .collect()
}

fn checkpoint_step(path: &Path) -> Option<u64> {
    hypergrad::outer::Checkpoint::load(path)
        .expect("a whole checkpoint")
        .map(|c| c.step)
}

/// xorshift64*, seeded: the delays are the same at every run of the test.
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn a_run_killed_at_random_points_and_resumed_ends_with_the_uninterrupted_trace() {
    let dir = temp_dir("kill");
    let reference_trace = dir.join("reference.jsonl");
    let started = Instant::now();
    let reference = json_of(&hypergrad(
        &run_args(&["--trace", reference_trace.to_str().unwrap()])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    ));
    let wall = started.elapsed().as_secs_f64();
    let expected = records(&reference_trace);
    assert_eq!(expected.len() as u64, STEPS + 1);

    // The kills land from before the data is read to a few steps into the loop, so that each
    // resumption gets about one and a half steps further: kills during start-up, inside an
    // inner solve, and between a trace line and the checkpoint that follows it.
    let loop_seconds = std::fs::read_to_string(&reference_trace)
        .unwrap()
        .lines()
        .last()
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .and_then(|r| r["seconds"].as_f64())
        .unwrap();
    let startup = (wall - loop_seconds).max(0.01);
    let step = loop_seconds / (STEPS + 1) as f64;

    let trace = dir.join("run.jsonl");
    let checkpoint = dir.join("run.ckpt");
    let args = run_args(&[
        "--trace",
        trace.to_str().unwrap(),
        "--checkpoint",
        checkpoint.to_str().unwrap(),
    ]);
    let mut rng = Rng(0x5eed_0fd1_e5a5);
    let mut kills = 0;
    let mut steps_killed_after = BTreeSet::new();
    for _ in 0..30 {
        let delay = startup * (0.5 + 0.6 * rng.uniform()) + step * 6.0 * rng.uniform();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hypergrad"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        std::thread::sleep(Duration::from_secs_f64(delay));
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the run failed: {status}");
            break;
        }
        child.kill().expect("SIGKILL"); // kill -9
        child.wait().unwrap();
        kills += 1;
        if let Some(step) = checkpoint_step(&checkpoint) {
            steps_killed_after.insert(step);
        }
    }
    eprintln!(
        "{kills} kills (start-up {startup:.2} s, {step:.3} s a step); checkpoints after them: \
         {steps_killed_after:?}"
    );
    let resumed = json_of(&hypergrad(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert!(
        kills >= 15 && steps_killed_after.len() >= 8,
        "only {kills} kills, after the checkpoints of steps {steps_killed_after:?}: the test \
         did not interrupt the run often enough"
    );
    let got = records(&trace);
    assert_eq!(got.len(), expected.len(), "trace lengths");
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g, e, "a resumed step differs from the uninterrupted one");
    }
    assert_eq!(resumed["theta"], reference["theta"]);
    assert_eq!(
        resumed["final"]["outer_loss"],
        reference["final"]["outer_loss"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_of_another_version_or_format_is_refused_in_one_line() {
    let dir = temp_dir("format");
    let ck = dir.join("run.ckpt");
    let run = |steps: &str| {
        hypergrad(&[
            "run",
            "--problem",
            "ridge",
            "--train",
            "diabetes",
            "--outer-steps",
            steps,
            "--checkpoint",
            ck.to_str().unwrap(),
        ])
    };
    let out = run("2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = hypergrad::outer::Checkpoint::load(&ck).unwrap().unwrap();
    assert_eq!(written.format, "hypergrad-checkpoint/2");
    assert_eq!(written.version, env!("CARGO_PKG_VERSION"));

    // Another version's checkpoint: the version in the binary header replaced, same length.
    let version = format!("\"version\":\"{}\"", env!("CARGO_PKG_VERSION"));
    let other = format!(
        "\"version\":\"{:<width$}\"",
        "0.0.1",
        width = env!("CARGO_PKG_VERSION").len()
    );
    let bytes = std::fs::read(&ck).unwrap();
    let at = bytes
        .windows(version.len())
        .position(|w| w == version.as_bytes())
        .expect("the header names the version");
    let mut edited = bytes.clone();
    edited[at..at + other.len()].copy_from_slice(other.as_bytes());
    std::fs::write(&ck, &edited).unwrap();
    let out = run("3");
    assert_one_line_error(
        &out,
        "was written by hypergrad 0.0.1 (format hypergrad-checkpoint/2)",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("this is hypergrad {}", env!("CARGO_PKG_VERSION")))
            && stderr.contains("delete it or choose another file")
            && stderr.contains("--checkpoint"),
        "{stderr}"
    );

    // An old JSON checkpoint (format 1) of this very version: refused, not read.
    let mut value = serde_json::to_value(&written).unwrap();
    value["format"] = "hypergrad-checkpoint/1".into();
    std::fs::write(&ck, value.to_string()).unwrap();
    assert_one_line_error(&run("3"), "is a JSON checkpoint written by hypergrad");

    // A checkpoint from before the format field (JSON, less the two fields).
    let object = value.as_object_mut().unwrap();
    object.remove("format");
    object.remove("version");
    std::fs::write(&ck, value.to_string()).unwrap();
    assert_one_line_error(&run("3"), "names no checkpoint format");
    std::fs::remove_dir_all(&dir).unwrap();
}
