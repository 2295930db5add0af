//! The parts of the reader fuzz harness (`tests/fuzz_readers.rs`): a seeded generator, the
//! seed inputs of every reader and parser, the mutations, and the contract every outcome must
//! meet (no panic, no hang; a refusal is one line naming the file, and the line for the
//! line-based formats, or the option).
//!
//! Stable Rust only: no `cargo fuzz`, no proptest. The generator is SplitMix64, so a
//! (seed, case) pair always gives the same input on every platform.
#![allow(dead_code)]

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hypergrad::api::settings::{read_theta_file, ModelSpec};
use hypergrad::backend::mlp::{Activation, Network};
use hypergrad::data::sparse::{load_sparse, CsrMatrix};
use hypergrad::data::synthetic::{parse_spec, QuadraticSpec, SyntheticKind, SyntheticSpec};
use hypergrad::data::{load_all, parse_split, Dataset};
use hypergrad::outer::{Checkpoint, OptState};
use hypergrad::Error;

/// One input may take at most this long (a generous bound: the inputs are at most a few
/// hundred kilobytes, and the readers are linear in their input).
pub const CASE_LIMIT: Duration = Duration::from_secs(5);
/// A case still running after this long is a hang: the watchdog saves it and fails the test.
pub const HANG_LIMIT: Duration = Duration::from_secs(30);
/// Entries a synthetic spec may ask for (the library's documented cap: 2³⁰ f64 = 8 GiB).
const SYNTHETIC_CAP: u128 = 1 << 30;
/// Synthetic specs are generated (not only parsed) up to this many entries, to keep cases fast.
const GENERATE_UP_TO: u128 = 200_000;
/// Failures collected per target before it stops.
const MAX_FAILURES: usize = 10;

// ---------------------------------------------------------------- the generator

/// SplitMix64: small, fast and the same everywhere.
pub struct Gen(u64);

impl Gen {
    pub fn new(seed: u64) -> Gen {
        Gen(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------- the targets

/// A reader or parser under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `data::load` of a `.csv` file.
    Csv,
    /// `data::load` of a `.svm` file (the dense LIBSVM reader).
    Libsvm,
    /// `data::sparse::load_sparse` (the CSR LIBSVM reader of the ℓ1 problems).
    Sparse,
    /// `data::load` of a file whose name says nothing (the format is sniffed).
    Sniff,
    /// `data::load` of gzipped CSV or LIBSVM (`.data.gz`, sniffed after gunzipping).
    Gz,
    /// `outer::Checkpoint::load` (`run --checkpoint`).
    Checkpoint,
    /// `api::settings::read_theta_file` (`--theta-file`).
    Theta,
    /// `plot::read_trace` (`hypergrad plot TRACE.jsonl`).
    Trace,
    /// `data::synthetic::parse_spec` (`--train synthetic:KIND:…`).
    Synthetic,
    /// `data::synthetic::QuadraticSpec::parse` (`--train synthetic:quadratic:…`).
    Quadratic,
    /// `api::settings::ModelSpec::parse` (`--model`).
    Model,
    /// `data::parse_split` (`--split`).
    Split,
    /// `data::load` of a `.npy` file (dense, label first; memory-mapped).
    Npy,
    /// `data::sparse::load_sparse` and `data::load` of a `.npz` (CSR arrays and labels).
    Npz,
}

impl Target {
    pub const ALL: [Target; 14] = [
        Target::Csv,
        Target::Libsvm,
        Target::Sparse,
        Target::Sniff,
        Target::Gz,
        Target::Checkpoint,
        Target::Theta,
        Target::Trace,
        Target::Synthetic,
        Target::Quadratic,
        Target::Model,
        Target::Split,
        Target::Npy,
        Target::Npz,
    ];

    /// The prefix of its regression files.
    pub fn name(self) -> &'static str {
        match self {
            Target::Csv => "csv",
            Target::Libsvm => "libsvm",
            Target::Sparse => "sparse",
            Target::Sniff => "sniff",
            Target::Gz => "gz",
            Target::Checkpoint => "checkpoint",
            Target::Theta => "theta",
            Target::Trace => "trace",
            Target::Synthetic => "synthetic",
            Target::Quadratic => "quadratic",
            Target::Model => "model",
            Target::Split => "split",
            Target::Npy => "npy",
            Target::Npz => "npz",
        }
    }

    /// The extension its files get (it decides the format the loader reads).
    pub fn ext(self) -> &'static str {
        match self {
            Target::Csv => "csv",
            Target::Libsvm | Target::Sparse => "svm",
            Target::Sniff => "data",
            Target::Gz => "data.gz",
            Target::Checkpoint => "ckpt",
            Target::Npy => "npy",
            Target::Npz => "npz",
            Target::Theta => "theta",
            // Not .jsonl: the repository ignores *.jsonl.
            Target::Trace => "trace",
            Target::Synthetic | Target::Quadratic | Target::Model | Target::Split => "spec",
        }
    }

    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the input is a file (else a string given on the command line).
    pub fn is_file(self) -> bool {
        !matches!(
            self,
            Target::Synthetic | Target::Quadratic | Target::Model | Target::Split
        )
    }

    /// Whether a refusal must name the line (the line-based text formats).
    fn line_based(self) -> bool {
        matches!(
            self,
            Target::Csv
                | Target::Libsvm
                | Target::Sparse
                | Target::Sniff
                | Target::Gz
                | Target::Theta
                | Target::Trace
        )
    }

    /// The option a string target's errors must name.
    fn option(self) -> &'static str {
        match self {
            Target::Synthetic | Target::Quadratic => "--train",
            Target::Model => "--model",
            Target::Split => "--split",
            _ => "",
        }
    }

    /// Valid inputs the mutations start from.
    fn seeds(self) -> Vec<Vec<u8>> {
        let fixture = |name: &str| {
            std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("tests/fixtures/numpy")
                    .join(name),
            )
            .expect("the NumPy fixtures exist")
        };
        let texts: Vec<String> = match self {
            Target::Npy => return vec![fixture("dense_c_f64.npy"), fixture("dense_f_f32.npy")],
            // The written seeds are made once (each is a file written and flushed).
            Target::Npz => {
                static WRITTEN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
                return vec![
                    fixture("sparse_compressed.npz"),
                    fixture("scipy_without_y.npz"),
                    WRITTEN.get_or_init(written_npz).clone(),
                ];
            }
            Target::Checkpoint => {
                static WRITTEN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
                return vec![
                    WRITTEN.get_or_init(checkpoint_binary).clone(),
                    checkpoint_json().into_bytes(),
                ];
            }
            Target::Csv => vec![
                "label,f1,f2,f3\n0,0.5,1.0,-2\n1,1.5,-0.25,3e-2\n2,-0.5,2.0,0\n0,0.25,0.75,1\n1,1,1,1\n".into(),
                "1,2,3\n0,4.5,6\n".into(),
                "\u{feff}y, a , b\r\n\r\n1, 2, 3\r\n-1,4,5\r\n".into(),
            ],
            Target::Libsvm | Target::Sparse => vec![
                "# a comment\n0 1:0.5 3:1.0 4:-2\n1 2:1.5 4:3e-2\n2 1:-0.5 2:2.0\n\n0 qid:3 1:0.25 3:0.75 # tail\n1 5:1\n".into(),
                "+1 1:1 2:2\n-1 3:0.5\n".into(),
                "1\n0 2:0\n".into(),
            ],
            Target::Sniff | Target::Gz => vec![
                "0,0.5,1.0\n1,1.5,-0.25\n".into(),
                "0 1:0.5 3:1\n1 2:1.5\n".into(),
                "# c\n\n1 4:1e-3\n".into(),
            ],
            Target::Theta => vec![
                "0.1 0.2, 0.3\n# a comment\n1e-3,-4\n".into(),
                "1\n2\n3 # three\n".into(),
            ],
            Target::Trace => vec![
                "{\"step\":0,\"seconds\":0.0,\"outer_loss\":1.5,\"test_accuracy\":null}\n{\"step\":1,\"seconds\":0.25,\"outer_loss\":1.25}\n\n{\"step\":2,\"seconds\":0.5,\"outer_loss\":1e-3}\n".into(),
            ],
            Target::Synthetic => vec![
                "synthetic:linear:n=20,d=3,rho=0.5,noise=0.1,seed=1".into(),
                "synthetic:logistic:n=30,d=4,scale=3,seed=7".into(),
                "synthetic:softmax:n=25,d=3,c=4,rho=0.2,seed=2".into(),
                "softmax:n=5,d=2,c=3".into(),
                "synthetic:softmax:n=1,d=30000,c=30000".into(),
                "synthetic:linear:n=10,d=2,noise=1e307,seed=3".into(),
            ],
            Target::Quadratic => vec![
                "synthetic:quadratic:m=30,nx=3,nw=4,noise=0.01,seed=0".into(),
                "synthetic:quadratic".into(),
                "quadratic:m=5,nx=5".into(),
            ],
            Target::Model => vec!["linear".into(), "mlp:16".into(), "mlp:32,8".into()],
            Target::Split => vec!["0.6,0.2,0.2".into(), "0.8, 0.2".into()],
        };
        texts.into_iter().map(String::into_bytes).collect()
    }
}

/// An uncompressed CSR archive as `hypergrad data convert` writes one (stored entries, whose
/// bytes the mutations reach directly).
fn written_npz() -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("hg-fuzz-seed-{}.npz", std::process::id()));
    let svm = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/numpy/sparse.svm");
    let ds = load_sparse(svm.to_str().unwrap()).expect("the LIBSVM fixture reads");
    hypergrad::data::npz::write_npz(&ds, &path).expect("the seed archive is written");
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    bytes
}

/// A valid checkpoint, as `run --checkpoint` writes one (binary, format 2).
fn checkpoint_binary() -> Vec<u8> {
    let path = std::env::temp_dir().join(format!("hg-fuzz-seed-{}.ckpt", std::process::id()));
    sample_checkpoint()
        .save(&path)
        .expect("the seed checkpoint is written");
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    bytes
}

/// An old JSON checkpoint (format 1), which is refused in one line.
fn checkpoint_json() -> String {
    let mut value = serde_json::to_value(sample_checkpoint()).expect("a checkpoint serialises");
    value["format"] = "hypergrad-checkpoint/1".into();
    value.to_string()
}

fn sample_checkpoint() -> Checkpoint {
    Checkpoint::new(
        "softmax|digits|cg|seed=0".into(),
        3,
        1.25,
        vec![0.5, -1.0, 2.0],
        OptState {
            m: vec![0.1, 0.2, 0.3],
            v: vec![1e-3, 2e-3, 3e-3],
            t: 3,
            inner_tol: 1e-6,
            linear_tol: 1e-6,
            alpha: 0.1,
            steps_since_tightening: 1,
        },
        (Some(vec![1.0, 2.0]), None),
    )
}

// ---------------------------------------------------------------- the mutations

/// Byte strings that break readers: huge and non-finite numbers, huge indices, separators,
/// line breaks of every kind, invalid UTF-8, format words.
const SPECIALS: &[&[u8]] = &[
    b"1e400",
    b"-1e400",
    b"1e-400",
    b"1e308",
    b"99999999999",
    b"300000000",
    b"1000000000",
    b"2000000000",
    b"4000000000",
    b"4294967296",
    b"18446744073709551615",
    b"18446744073709551616",
    b"340282366920938463463374607431768211456",
    b"NaN",
    b"nan",
    b"inf",
    b"-inf",
    b"Infinity",
    b"0",
    b"-0",
    b"-1",
    b"+1",
    b"0.5",
    b"",
    b" ",
    b",",
    b":",
    b"=",
    b"#",
    b"\r",
    b"\n",
    b"\r\n",
    b"\n\n\n",
    b"\t",
    b"\x0b",
    b"\x0c",
    b"\xef\xbb\xbf",
    b"\xc3\xa9",
    b"\xe2\x80\xa8",
    b"\xc2\x85",
    b"\x00",
    b"\x1b[2J",
    b"\xff\xfe",
    b"\xc3",
    b"\xe2\x82",
    b"\x1f\x8b",
    b"qid:1",
    b"0:1",
    b"1:2:3",
    b"-1:2",
    b"e",
    b".",
    b"0x10",
    b"1_000",
    b"\xef\xbc\x91",
    b"\"",
    b"\\u0000",
    b"\\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b"null",
    b"true",
    b"mlp:",
    b"linear",
    b"synthetic:",
    b"quadratic:",
    b"n=",
    b"d=",
    b"c=",
    b"m=",
    b"nx=",
    b"seed=",
    b"rho=",
    b"noise=",
    b"scale=",
];

fn is_number_byte(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')
}

/// The byte ranges of the lines of `input` (without their `\n`).
fn line_ranges(input: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &b) in input.iter().enumerate() {
        if b == b'\n' {
            out.push((start, i));
            start = i + 1;
        }
    }
    out.push((start, input.len()));
    out
}

/// The byte ranges of the tokens (runs between white space, `,` and `\n`) of `input`.
fn token_ranges(input: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &b) in input.iter().enumerate() {
        let sep = b.is_ascii_whitespace() || b == b',';
        match (start, sep) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                out.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, input.len()));
    }
    out
}

/// The byte ranges of the digit runs (numbers, indices) of `input`.
fn number_ranges(input: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i].is_ascii_digit() {
            let mut s = i;
            while s > 0 && is_number_byte(input[s - 1]) {
                s -= 1;
            }
            let mut e = i;
            while e < input.len() && is_number_byte(input[e]) {
                e += 1;
            }
            out.push((s, e));
            i = e;
        } else {
            i += 1;
        }
    }
    out
}

/// One random mutation of `input` (kept below about 300 kB).
fn mutate(g: &mut Gen, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let len = input.len();
    let pos = |g: &mut Gen| g.below(len + 1);
    match g.below(20) {
        0 => input.truncate(pos(g)),
        1 if len > 0 => {
            let i = g.below(len);
            input[i] ^= 1 << g.below(8);
        }
        2 if len > 0 => {
            let i = g.below(len);
            input[i] = g.next_u64() as u8;
        }
        3 => {
            let at = pos(g);
            let n = 1 + g.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| g.next_u64() as u8).collect();
            input.splice(at..at, bytes);
        }
        4 if len > 0 => {
            let at = g.below(len);
            let end = (at + 1 + g.below(16)).min(len);
            input.drain(at..end);
        }
        5 => {
            let at = pos(g);
            input.splice(at..at, g.pick(SPECIALS).iter().copied());
        }
        6 | 7 => {
            let numbers = number_ranges(input);
            if numbers.is_empty() {
                return mutate(g, input, seeds);
            }
            let (s, e) = *g.pick(&numbers);
            input.splice(s..e, g.pick(SPECIALS).iter().copied());
        }
        8 => {
            let tokens = token_ranges(input);
            if tokens.is_empty() {
                return mutate(g, input, seeds);
            }
            let (s, e) = *g.pick(&tokens);
            input.splice(s..e, g.pick(SPECIALS).iter().copied());
        }
        9 => {
            // CRLF (or bare CR) line ends.
            let end: &[u8] = if g.one_in(3) { b"\r" } else { b"\r\n" };
            let mut out = Vec::with_capacity(len + len / 8);
            for &b in input.iter() {
                if b == b'\n' {
                    out.extend_from_slice(end);
                } else {
                    out.push(b);
                }
            }
            *input = out;
        }
        10 => {
            // Blank and white-space-only lines.
            let lines = line_ranges(input);
            let (s, _) = *g.pick(&lines);
            let blanks: [&[u8]; 6] = [b"\n", b" \n", b"\t\n", b"\r\n", b"#\n", b"\n\n"];
            let blank = *g.pick(&blanks);
            input.splice(s..s, blank.iter().copied());
        }
        11 => {
            // A line twice.
            let lines = line_ranges(input);
            let (s, e) = *g.pick(&lines);
            let mut copy = input[s..e].to_vec();
            copy.push(b'\n');
            input.splice(s..s, copy);
        }
        12 => {
            // A line removed.
            let lines = line_ranges(input);
            let (s, e) = *g.pick(&lines);
            input.drain(s..(e + 1).min(len));
        }
        13 => {
            // Two neighbouring tokens swapped (decreasing indices, a label moved).
            let tokens = token_ranges(input);
            if tokens.len() < 2 {
                return mutate(g, input, seeds);
            }
            let k = g.below(tokens.len() - 1);
            let (a, b) = (tokens[k], tokens[k + 1]);
            let mut out = input[..a.0].to_vec();
            out.extend_from_slice(&input[b.0..b.1]);
            out.extend_from_slice(&input[a.1..b.0]);
            out.extend_from_slice(&input[a.0..a.1]);
            out.extend_from_slice(&input[b.1..]);
            *input = out;
        }
        14 => {
            // A line's first token removed (a missing label).
            let lines = line_ranges(input);
            let (s, e) = *g.pick(&lines);
            let cut = input[s..e]
                .iter()
                .position(|&b| b == b' ' || b == b',' || b == b'\t')
                .map_or(e, |p| s + p + 1);
            input.drain(s..cut);
        }
        15 => {
            // A token twice (a duplicate index).
            let tokens = token_ranges(input);
            if tokens.is_empty() {
                return mutate(g, input, seeds);
            }
            let (s, e) = *g.pick(&tokens);
            let mut copy = input[s..e].to_vec();
            copy.push(b' ');
            input.splice(s..s, copy);
        }
        16 => {
            // A very long line: a line repeated, or one enormous token.
            let at = pos(g);
            let piece: Vec<u8> = if g.one_in(2) {
                let lines = line_ranges(input);
                let (s, e) = *g.pick(&lines);
                input[s..e].to_vec()
            } else {
                g.pick(SPECIALS).to_vec()
            };
            let times = 1 + g.below(200_000 / (piece.len() + 1) + 1);
            let long: Vec<u8> = piece
                .iter()
                .copied()
                .cycle()
                .take(piece.len() * times)
                .collect();
            input.splice(at..at, long);
        }
        17 => {
            // A separator swapped for another.
            let from = *g.pick(b", :=\n.");
            let to = *g.pick(b", :=\n;\t");
            let every = g.one_in(2);
            for b in input.iter_mut() {
                if *b == from {
                    *b = to;
                    if !every {
                        break;
                    }
                }
            }
        }
        18 => {
            // Spliced with another seed.
            let other = g.pick(seeds);
            let cut_a = pos(g);
            let cut_b = g.below(other.len() + 1);
            input.truncate(cut_a);
            input.extend_from_slice(&other[cut_b..]);
        }
        _ => {
            // A number made huge or tiny in place (digits appended or the exponent grown).
            let numbers = number_ranges(input);
            if numbers.is_empty() {
                return mutate(g, input, seeds);
            }
            let (_, e) = *g.pick(&numbers);
            let tails: [&[u8]; 4] = [b"999999999999", b"e400", b"e-400", b"0000000000"];
            let tail = *g.pick(&tails);
            input.splice(e..e, tail.iter().copied());
        }
    }
    input.truncate(300_000);
}

/// Random bytes, drawn from an alphabet that suits the format most of the time.
fn random_input(g: &mut Gen) -> Vec<u8> {
    let n = g.below(300);
    let alphabet: &[u8] = if g.one_in(3) {
        b""
    } else {
        b"0123456789.,:;=#-+eE \t\n\r{}[]\"naifmlpqd"
    };
    (0..n)
        .map(|_| {
            if alphabet.is_empty() {
                g.next_u64() as u8
            } else {
                *g.pick(alphabet)
            }
        })
        .collect()
}

/// Gzips `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip to memory");
    enc.finish().expect("gzip to memory")
}

/// The input of one case: random bytes (1 case in 8) or a seed under 1 to 4 mutations. For
/// [`Target::Gz`] the mutated text is gzipped (and, 1 case in 4, the gzip bytes mutated too).
pub fn generate(g: &mut Gen, target: Target) -> Vec<u8> {
    let seeds = target.seeds();
    let mut input = if g.one_in(8) {
        random_input(g)
    } else {
        let mut input = g.pick(&seeds).clone();
        for _ in 0..1 + g.below(4) {
            mutate(g, &mut input, &seeds);
        }
        input
    };
    if target == Target::Gz {
        input = gzip(&input);
        if g.one_in(4) {
            mutate(g, &mut input, &seeds);
        }
    }
    if !target.is_file() {
        input = String::from_utf8_lossy(&input).into_owned().into_bytes();
    }
    input
}

// ---------------------------------------------------------------- the contract

/// What a reader returned, in the terms the contract checks.
enum Outcome {
    Accepted(Result<(), String>),
    Refused(Error),
}

/// The characters that break a message onto another line.
const LINE_BREAKS: &[char] = &[
    '\n', '\r', '\u{0b}', '\u{0c}', '\u{85}', '\u{2028}', '\u{2029}',
];

/// A dataset a reader accepted is whole: as many labels as rows, every value finite.
fn dataset_ok(ds: &Dataset) -> Result<(), String> {
    if ds.x.nrows() != ds.y.len() || ds.y.is_empty() {
        return Err(format!(
            "accepted a dataset with {} rows and {} labels",
            ds.x.nrows(),
            ds.y.len()
        ));
    }
    if ds.x.ncols() == 0 {
        return Err("accepted a dataset without features".into());
    }
    if ds.x.iter().chain(&ds.y).any(|v| !v.is_finite()) {
        return Err("accepted a dataset with a non-finite value".into());
    }
    Ok(())
}

/// Runs the reader of `target` on `input` (already written to `path` for file targets).
fn run_reader(target: Target, input: &[u8], path: &Path) -> Outcome {
    let text = || String::from_utf8_lossy(input).into_owned();
    let file = path.to_str().expect("the harness's paths are UTF-8");
    let done = |r: Result<(), String>| Outcome::Accepted(r);
    match target {
        // `load_all` is what the command line calls: `load`, then LIBSVM widths made one.
        Target::Csv | Target::Libsvm | Target::Sniff | Target::Gz => match load_all(&[file]) {
            Ok(all) => done(dataset_ok(&all[0])),
            Err(e) => Outcome::Refused(e),
        },
        Target::Sparse => match load_sparse(file) {
            Ok(ds) => {
                let x = &ds.x;
                let whole = CsrMatrix::from_parts(
                    x.n,
                    x.d,
                    x.indptr.clone(),
                    x.indices.clone(),
                    x.values.clone(),
                )
                .map(|_| ())
                .map_err(|e| format!("accepted a malformed CSR matrix: {e}"));
                done(whole.and_then(|_| {
                    if ds.y.len() != x.n || ds.y.iter().any(|v| !v.is_finite()) {
                        Err("accepted bad labels".into())
                    } else {
                        Ok(())
                    }
                }))
            }
            Err(e) => Outcome::Refused(e),
        },
        Target::Npy => match load_all(&[file]) {
            Ok(all) => done(dataset_ok(&all[0])),
            Err(e) => Outcome::Refused(e),
        },
        Target::Npz => match (load_sparse(file), load_all(&[file])) {
            (Ok(ds), Ok(dense)) => {
                let x = &ds.x;
                let whole = CsrMatrix::from_parts(
                    x.n,
                    x.d,
                    x.indptr.clone(),
                    x.indices.clone(),
                    x.values.clone(),
                )
                .map(|_| ())
                .map_err(|e| format!("accepted a malformed CSR matrix: {e}"));
                done(whole.and_then(|_| dataset_ok(&dense[0])))
            }
            (Err(e), Err(_)) => Outcome::Refused(e),
            (Ok(_), Err(e)) => done(Err(format!("sparse accepted what dense refused: {e}"))),
            (Err(e), Ok(_)) => done(Err(format!("dense accepted what sparse refused: {e}"))),
        },
        Target::Checkpoint => match Checkpoint::load(path) {
            Ok(_) => done(Ok(())),
            Err(e) => Outcome::Refused(e),
        },
        Target::Theta => match read_theta_file(path) {
            Ok(theta) if theta.iter().all(|v| v.is_finite()) => done(Ok(())),
            Ok(_) => done(Err("accepted a non-finite θ".into())),
            Err(e) => Outcome::Refused(e),
        },
        Target::Trace => {
            let ys = ["outer_loss".to_string(), "test_accuracy".to_string()];
            match hypergrad::plot::read_trace(path, "t".into(), "step", &ys) {
                Ok(_) => done(Ok(())),
                Err(e) => Outcome::Refused(e),
            }
        }
        Target::Synthetic => match SyntheticSpec::parse(&text()) {
            Ok(spec) => done(check_synthetic(&text(), &spec)),
            Err(e) => Outcome::Refused(e),
        },
        Target::Quadratic => match QuadraticSpec::parse(&text()) {
            Ok(q) => {
                let entries = q.m as u128 * q.nx.max(q.nw) as u128;
                if entries > SYNTHETIC_CAP {
                    done(Err(format!("accepted {entries} entries, beyond the cap")))
                } else {
                    if entries * 3 <= GENERATE_UP_TO {
                        q.generate();
                    }
                    done(Ok(()))
                }
            }
            Err(e) => Outcome::Refused(e),
        },
        Target::Model => match ModelSpec::parse(&text()) {
            Ok(ModelSpec::Mlp { hidden }) if hidden.is_empty() || hidden.contains(&0) => {
                done(Err(format!("accepted hidden widths {hidden:?}")))
            }
            // The widths become a network (here of digits' 64 inputs and 10 classes), which
            // must refuse a size it could not allocate.
            Ok(ModelSpec::Mlp { hidden }) => {
                match Network::new(64, &hidden, 10, Activation::Tanh) {
                    Ok(net) if net.dim() <= SYNTHETIC_CAP as usize => done(Ok(())),
                    Ok(net) => done(Err(format!(
                        "a network of {} parameters was built from {hidden:?}",
                        net.dim()
                    ))),
                    Err(e) => Outcome::Refused(e),
                }
            }
            Ok(ModelSpec::Linear) => done(Ok(())),
            Err(e) => Outcome::Refused(e),
        },
        Target::Split => match parse_split(&text()) {
            Ok(f) if f.iter().all(|v| v.is_finite() && *v >= 0.0) => done(Ok(())),
            Ok(f) => done(Err(format!("accepted the fractions {f:?}"))),
            Err(e) => Outcome::Refused(e),
        },
    }
}

/// A synthetic spec the parser accepted stays within the documented cap (n·d, and the d×c
/// matrix W* of softmax), and, when small, generates a whole dataset through `parse_spec`.
fn check_synthetic(text: &str, spec: &SyntheticSpec) -> Result<(), String> {
    let (n, d) = (spec.n as u128, spec.d as u128);
    let c = match spec.kind {
        SyntheticKind::Softmax { c, .. } => c as u128,
        _ => 1,
    };
    let largest = (n * d).max(d * c).max(n * c);
    if largest > SYNTHETIC_CAP {
        return Err(format!(
            "accepted n={n}, d={d}, c={c}: a matrix of {largest} entries, beyond the cap of {SYNTHETIC_CAP}"
        ));
    }
    if n * d + d * c > GENERATE_UP_TO {
        return Ok(());
    }
    match parse_spec(text) {
        Ok(ds) => dataset_ok(&ds),
        Err(e) => check_message(Target::Synthetic, text.as_bytes(), Path::new(""), &e),
    }
}

/// A refusal's message: one line, naming the file (and, for the line-based formats, a line
/// of the input) or the option.
fn check_message(target: Target, input: &[u8], path: &Path, err: &Error) -> Result<(), String> {
    let message = err.to_string();
    if message.trim().is_empty() {
        return Err("empty error message".into());
    }
    if message.contains(LINE_BREAKS) {
        return Err(format!("the message is not one line: {message:?}"));
    }
    if !target.is_file() {
        if !message.contains(target.option()) {
            return Err(format!(
                "the message does not name {}: {message:?}",
                target.option()
            ));
        }
        return Ok(());
    }
    let file = path.display().to_string();
    if !message.contains(&file) {
        return Err(format!("the message does not name the file: {message:?}"));
    }
    if target.line_based() {
        let gzipped = target == Target::Gz || input.starts_with(&[0x1f, 0x8b]);
        match err {
            Error::Parse { line, .. } => {
                let lines = input.iter().filter(|&&b| b == b'\n').count() + 2;
                if *line == 0 || (!gzipped && *line > lines) {
                    return Err(format!(
                        "line {line} is not a line of the input ({lines} lines): {message:?}"
                    ));
                }
            }
            // Gunzipping fails for the whole file, not at a line.
            Error::Io { .. } if gzipped => {}
            other => {
                return Err(format!(
                    "a refusal of a line-based file that names no line: {other:?}"
                ))
            }
        }
    }
    Ok(())
}

/// Runs one case (the file, if any, already written to `path`) and says how it broke the
/// contract, if it did: a panic, a refusal whose message breaks the rules, an accepted input
/// that is not whole, or a case slower than [`CASE_LIMIT`].
pub fn check_case(target: Target, input: &[u8], path: &Path) -> Result<(), String> {
    let start = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| run_reader(target, input, path)));
    let elapsed = start.elapsed();
    let verdict = match outcome {
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into());
            Err(format!("panicked: {what}"))
        }
        Ok(Outcome::Accepted(r)) => r,
        Ok(Outcome::Refused(e)) => check_message(target, input, path, &e),
    };
    verdict?;
    if elapsed > CASE_LIMIT {
        return Err(format!("took {elapsed:?} (limit {CASE_LIMIT:?})"));
    }
    Ok(())
}

// ---------------------------------------------------------------- the driver

/// FNV-1a, for regression file names.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Writes a failing input where `HG_FUZZ_SAVE_DIR` says (`scripts/fuzz.sh` points it at
/// `tests/fuzz/regressions`), or under the target directory, and returns its path.
pub fn save_failure(target: Target, input: &[u8]) -> PathBuf {
    let dir = std::env::var_os("HG_FUZZ_SAVE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures"));
    std::fs::create_dir_all(&dir).expect("the failure folder can be created");
    let path = dir.join(format!(
        "{}-{:016x}.{}",
        target.name(),
        fnv(input),
        target.ext()
    ));
    std::fs::write(&path, input).expect("the failing input can be saved");
    path
}

/// Cases per target: `HG_FUZZ_CASES`, else `default`.
pub fn cases(default: usize) -> usize {
    std::env::var("HG_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The seed: `HG_FUZZ_SEED`, else a fixed one (CI sees the same inputs every run).
pub fn seed() -> u64 {
    std::env::var("HG_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x4879_7065_7267_7264)
}

enum Progress {
    Case(Vec<u8>),
    Done(Vec<(Vec<u8>, String)>),
}

/// Fuzzes `target` for `cases` inputs on a worker thread, watched for hangs, and fails with
/// every broken case (saved as a regression file) listed.
pub fn fuzz(target: Target, cases: usize, seed: u64) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz")
        .join(format!("{}-{}", target.name(), std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    let (tx, rx) = mpsc::channel();
    let scratch = dir.clone();
    let worker = std::thread::spawn(move || {
        let mut g = Gen::new(seed ^ fnv(target.name().as_bytes()));
        let mut failures = Vec::new();
        for case in 0..cases {
            let input = generate(&mut g, target);
            // The case file is the current input: if the process aborts, scripts/fuzz.sh
            // keeps it. A fresh name each case: rewriting one file in place makes ext4 flush
            // it on every close (auto_da_alloc), which made the run I/O-bound.
            let path = scratch.join(format!("case-{case}.{}", target.ext()));
            std::fs::write(&path, &input).expect("the case file can be written");
            if tx.send(Progress::Case(input.clone())).is_err() {
                return;
            }
            let verdict = check_case(target, &input, &path);
            let _ = std::fs::remove_file(&path);
            if let Err(why) = verdict {
                failures.push((input, why));
                if failures.len() >= MAX_FAILURES {
                    break;
                }
            }
        }
        let _ = tx.send(Progress::Done(failures));
    });
    let mut current = Vec::new();
    let mut done = 0usize;
    let failures = loop {
        match rx.recv_timeout(HANG_LIMIT) {
            Ok(Progress::Case(input)) => {
                current = input;
                done += 1;
            }
            Ok(Progress::Done(failures)) => break failures,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let saved = save_failure(target, &current);
                panic!(
                    "{}: case {done} still running after {HANG_LIMIT:?} (a hang); input saved as {}",
                    target.name(),
                    saved.display()
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{}: the fuzz worker died", target.name())
            }
        }
    };
    worker.join().expect("the worker ends");
    let _ = std::fs::remove_dir_all(&dir);
    if !failures.is_empty() {
        let report: Vec<String> = failures
            .iter()
            .map(|(input, why)| format!("  {} : {why}", save_failure(target, input).display()))
            .collect();
        panic!(
            "{}: {} of {done} cases broke the contract (seed {seed}):\n{}",
            target.name(),
            failures.len(),
            report.join("\n")
        );
    }
}
