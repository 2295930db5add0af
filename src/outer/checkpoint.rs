//! Checkpoints of `hypergrad run`: everything the outer loop carries from one step to the
//! next, written after every step (or every `--checkpoint-every K` steps). Mini-batches are
//! drawn from `(seed, step)`, so nothing random needs saving: a resumed run computes the same
//! steps as an uninterrupted one.
//!
//! The file is binary (format `hypergrad-checkpoint/2`, issue 24): at n = 10⁷ per-sample
//! weights the JSON of format 1 was about 200 MB a step, and parsing it back cost seconds.
//!
//! ```text
//! MAGIC (8 bytes: \x89HGCKPT\n)
//! header length H (u32, little endian)
//! header (H bytes of JSON): format, version, fingerprint, step, seconds, the optimiser's
//!        scalars, and the length of each vector (θ, Adam's m and v, w and q or null)
//! the vectors, in that order, as little-endian f64 (their bits exactly)
//! CRC-32 of everything above (u32, little endian)
//! ```
//!
//! A checkpoint names its format and the version of hypergrad that wrote it, and any other
//! format or version is refused (the numbers a run computes may change between versions, so
//! resuming one would silently mix two programs). An old JSON checkpoint (format 1) is
//! refused the same way, in one line that says so, never read. A file whose CRC does not
//! match is refused as damaged. It holds finite numbers only: the outer loop stops before it
//! would save a non-finite state, and [`Checkpoint::save`] refuses one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::OptState;
use crate::error::{Error, Result};

/// The format this version writes and reads.
pub const FORMAT: &str = "hypergrad-checkpoint/2";
/// The version of hypergrad that writes it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The first bytes of a binary checkpoint (a high first byte, as PNG's, so that a file that
/// went through a text transfer is caught).
pub const MAGIC: &[u8; 8] = b"\x89HGCKPT\n";
/// The longest header read: the fingerprint and a few numbers fit in far less.
const MAX_HEADER: usize = 1 << 20;

/// The state after outer step `step` (θ already updated for step `step + 1`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// [`FORMAT`] and [`VERSION`] when written (filled in by [`Checkpoint::new`]).
    pub format: String,
    pub version: String,
    /// Identifies the run (problem, data, method, seed, …): a checkpoint of another run is
    /// refused rather than silently continued.
    pub fingerprint: String,
    pub step: u64,
    pub seconds: f64,
    pub theta: Vec<f64>,
    pub opt: OptState,
    /// The inner iterate and the carried linear-system iterate (warm starts).
    pub w: Option<Vec<f64>>,
    pub q: Option<Vec<f64>>,
}

/// The JSON header of a binary checkpoint: everything but the vectors, and their lengths.
#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    format: String,
    version: String,
    fingerprint: String,
    step: u64,
    seconds: f64,
    /// The optimiser's scalars (its vectors `m` and `v` are stored after the header, empty
    /// here).
    opt: OptState,
    /// Lengths of θ, m, v, w, q (`None`: absent).
    lengths: [Option<u64>; 5],
}

impl Checkpoint {
    /// A checkpoint of this version's format.
    pub fn new(
        fingerprint: String,
        step: u64,
        seconds: f64,
        theta: Vec<f64>,
        opt: OptState,
        (w, q): (Option<Vec<f64>>, Option<Vec<f64>>),
    ) -> Checkpoint {
        Checkpoint {
            format: FORMAT.to_string(),
            version: VERSION.to_string(),
            fingerprint,
            step,
            seconds,
            theta,
            opt,
            w,
            q,
        }
    }

    /// The vectors in file order.
    fn vectors(&self) -> [Option<&[f64]>; 5] {
        [
            Some(&self.theta),
            Some(&self.opt.m),
            Some(&self.opt.v),
            self.w.as_deref(),
            self.q.as_deref(),
        ]
    }

    /// Writes the binary form to `out` (the header names `self.format` and `self.version`).
    fn encode(&self, out: &mut impl Write) -> std::io::Result<()> {
        let vectors = self.vectors();
        let header = Header {
            format: self.format.clone(),
            version: self.version.clone(),
            fingerprint: self.fingerprint.clone(),
            step: self.step,
            seconds: self.seconds,
            opt: OptState {
                m: Vec::new(),
                v: Vec::new(),
                t: self.opt.t,
                inner_tol: self.opt.inner_tol,
                linear_tol: self.opt.linear_tol,
                alpha: self.opt.alpha,
                steps_since_tightening: self.opt.steps_since_tightening,
            },
            lengths: vectors.map(|v| v.map(|v| v.len() as u64)),
        };
        let text = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        let mut out = Crc32Writer {
            inner: out,
            crc: crc32fast::Hasher::new(),
        };
        out.write_all(MAGIC)?;
        out.write_all(&(text.len() as u32).to_le_bytes())?;
        out.write_all(&text)?;
        let mut chunk = Vec::with_capacity(1 << 16);
        for v in vectors.into_iter().flatten() {
            for part in v.chunks(8192) {
                chunk.clear();
                chunk.extend(part.iter().flat_map(|x| x.to_le_bytes()));
                out.write_all(&chunk)?;
            }
        }
        let crc = out.crc.clone().finalize();
        out.inner.write_all(&crc.to_le_bytes())
    }

    /// Reads a checkpoint; `None` when the file does not exist (a fresh run). A file of
    /// another format or version (an old JSON checkpoint included), a damaged file, or no
    /// checkpoint at all, is refused in one line.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::option(
                    "--checkpoint",
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        let refuse = |message: String| Err(Error::option("--checkpoint", message));
        let not_one = |why: &str| {
            refuse(format!(
                "{} is not a hypergrad checkpoint ({why}); delete it or choose another file",
                path.display()
            ))
        };
        if !bytes.starts_with(MAGIC) {
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            if first == Some(&b'{') {
                return refuse_json(path, &bytes);
            }
            return not_one("it does not start with the checkpoint magic bytes");
        }
        let Some(body_len) = bytes.len().checked_sub(4).filter(|&l| l >= 12) else {
            return not_one("truncated");
        };
        let stored = u32::from_le_bytes(bytes[body_len..].try_into().expect("4 bytes"));
        let header_len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        if header_len > MAX_HEADER || 12 + header_len > body_len {
            return not_one("truncated or damaged header");
        }
        let header: Header = match serde_json::from_slice(&bytes[12..12 + header_len]) {
            Ok(h) => h,
            Err(e) => {
                if crc32fast::hash(&bytes[..body_len]) != stored {
                    return not_one("damaged: its CRC-32 does not match");
                }
                return not_one(&format!("header: {e}"));
            }
        };
        if header.format != FORMAT || header.version != VERSION {
            return refuse(format!(
                "{} was written by hypergrad {} (format {}); this is hypergrad {VERSION} (format \
                 {FORMAT}): delete it or choose another file",
                path.display(),
                crate::error::printable(&header.version),
                crate::error::printable(&header.format),
            ));
        }
        if crc32fast::hash(&bytes[..body_len]) != stored {
            return not_one("damaged: its CRC-32 does not match");
        }
        let mut data = &bytes[12 + header_len..body_len];
        let mut take = |len: Option<u64>| -> Option<Option<Vec<f64>>> {
            let Some(len) = len else {
                return Some(None);
            };
            let n = usize::try_from(len).ok()?.checked_mul(8)?;
            if n > data.len() {
                return None;
            }
            let (head, rest) = data.split_at(n);
            data = rest;
            Some(Some(
                head.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            ))
        };
        let mut vectors = Vec::with_capacity(5);
        for len in header.lengths {
            match take(len) {
                Some(v) => vectors.push(v),
                None => return not_one("its vectors are longer than the file"),
            }
        }
        if !data.is_empty() {
            return not_one("bytes follow its vectors");
        }
        let mut vectors = vectors.into_iter();
        let mut next = || vectors.next().flatten();
        let (theta, m, v, w, q) = (next(), next(), next(), next(), next());
        let (Some(theta), Some(m), Some(v)) = (theta, m, v) else {
            return not_one("θ or the optimiser's moments are missing");
        };
        let checkpoint = Checkpoint {
            format: header.format,
            version: header.version,
            fingerprint: header.fingerprint,
            step: header.step,
            seconds: header.seconds,
            theta,
            opt: OptState { m, v, ..header.opt },
            w,
            q,
        };
        if let Some(what) = checkpoint.non_finite() {
            return not_one(&format!("it holds a non-finite number: {what}"));
        }
        Ok(Some(checkpoint))
    }

    /// Refuses a checkpoint written by a different run.
    pub fn check_matches(&self, fingerprint: &str, p: usize) -> Result<()> {
        if self.fingerprint != fingerprint || self.theta.len() != p {
            return Err(Error::option(
                "--checkpoint",
                format!(
                    "the checkpoint belongs to another run ({}); delete it or choose another file",
                    self.fingerprint
                ),
            ));
        }
        Ok(())
    }

    /// The first number of the state that is not finite, named (`None`: all are finite).
    pub fn non_finite(&self) -> Option<String> {
        let vectors: [(&str, Option<&[f64]>); 5] = [
            ("θ", Some(&self.theta)),
            ("w", self.w.as_deref()),
            ("q", self.q.as_deref()),
            ("the optimiser's first moment", Some(&self.opt.m)),
            ("the optimiser's second moment", Some(&self.opt.v)),
        ];
        if let Some(bad) = vectors
            .iter()
            .find_map(|(name, v)| v.and_then(|v| super::non_finite_entry(name, v)))
        {
            return Some(bad);
        }
        let scalars = [
            ("seconds", self.seconds),
            ("the inner tolerance", self.opt.inner_tol),
            ("the linear tolerance", self.opt.linear_tol),
            ("the step length", self.opt.alpha),
        ];
        scalars
            .iter()
            .find(|(_, x)| !x.is_finite())
            .map(|(name, x)| format!("{name} = {x}"))
    }

    /// Writes the checkpoint so that `path` holds either the previous checkpoint or this one,
    /// whole, whenever the process stops: the text goes to a temporary file beside it, which
    /// is flushed to the disk (`fsync`), renamed over `path`, and the directory is flushed
    /// too, so that the rename itself is on the disk. The rename makes it safe against the
    /// process being killed at any point (tested with `kill -9` in `tests/durable.rs`); the
    /// two flushes make it safe against the machine losing power or crashing after `save`
    /// returns, which no test here can show. A state with a non-finite number is refused
    /// (a resumed run could not use it).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(what) = self.non_finite() {
            return Err(Error::Numerical(format!(
                "refusing to write a checkpoint with a non-finite number ({what})"
            )));
        }
        let tmp = temporary_path(path);
        let written = (|| {
            let file = File::create(&tmp)?;
            let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
            self.encode(&mut out)?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp, path)?;
            sync_directory(path)
        })();
        written.map_err(|e| {
            Error::option(
                "--checkpoint",
                format!("cannot write {}: {e}", path.display()),
            )
        })
    }
}

/// An old JSON checkpoint: refused in one line that names its format and writer.
fn refuse_json(path: &Path, bytes: &[u8]) -> Result<Option<Checkpoint>> {
    let refuse = |message: String| Err(Error::option("--checkpoint", message));
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) => {
            return refuse(format!(
                "{} is not a hypergrad checkpoint: {e}; delete it or choose another file",
                path.display()
            ))
        }
    };
    let field = |key: &str| value.get(key).and_then(|v| v.as_str());
    match field("format") {
        Some(format) => {
            // Both strings come from the file: escaped, so the message stays one line.
            let writer = match field("version") {
                Some(version) => format!("hypergrad {}", crate::error::printable(version)),
                None => "an unknown version of hypergrad".to_string(),
            };
            refuse(format!(
                "{} is a JSON checkpoint written by {writer} (format {}); this is hypergrad \
                 {VERSION}, whose checkpoints are binary (format {FORMAT}): delete it or \
                 choose another file",
                path.display(),
                crate::error::printable(format),
            ))
        }
        None => refuse(format!(
            "{} names no checkpoint format (an older hypergrad or another program wrote it); \
             this is hypergrad {VERSION} (format {FORMAT}): delete it or choose another file",
            path.display(),
        )),
    }
}

/// Passes writes through, keeping the CRC-32 of every byte written.
struct Crc32Writer<'a, W: Write> {
    inner: &'a mut W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for Crc32Writer<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// `FILE.tmp` beside `FILE` (never `FILE` itself, whatever its extension).
fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Flushes the directory that holds `path`, so that a rename into it survives a power loss.
/// On Unix a directory is opened and `fsync`ed like a file; a file system that cannot flush
/// directories answers `EINVAL`, which is ignored (there is nothing more to do there). Other
/// platforms cannot open a directory as a file (Windows flushes the rename's metadata with
/// the file system's journal), so nothing is done there.
fn sync_directory(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        match File::open(dir)?.sync_all() {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => Ok(()),
            other => other,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hg-ckpt-unit-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn sample(theta: Vec<f64>) -> Checkpoint {
        Checkpoint::new(
            "run".into(),
            3,
            1.5,
            theta,
            OptState::default(),
            (Some(vec![1.0, -2.0]), None),
        )
    }

    /// A resumed run is the uninterrupted one only if every number comes back bit for bit.
    #[test]
    fn numbers_come_back_bit_for_bit() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let theta: Vec<f64> = (0..20_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                f64::from_bits(x)
            })
            .filter(|v| v.is_finite())
            .chain([f64::MIN_POSITIVE, 5e-324, f64::MAX, -0.0, 0.1, 1.0 / 3.0])
            .collect();
        let path = dir("bits").join("ck.bin");
        sample(theta.clone()).save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap().unwrap();
        for (a, b) in theta.iter().zip(&back.theta) {
            assert_eq!(a.to_bits(), b.to_bits(), "{a:e} came back as {b:e}");
        }
        assert!(!temporary_path(&path).exists());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn another_format_or_version_is_refused_in_one_line() {
        let d = dir("format");
        let path = d.join("ck.bin");
        let message = |ck: &Checkpoint| {
            let mut bytes = Vec::new();
            ck.encode(&mut bytes).unwrap();
            std::fs::write(&path, bytes).unwrap();
            Checkpoint::load(&path).unwrap_err().to_string()
        };
        let mut ck = sample(vec![0.5]);
        ck.version = "0.0.1".into();
        let m = message(&ck);
        assert!(
            m.contains("written by hypergrad 0.0.1 (format hypergrad-checkpoint/2)")
                && m.contains(&format!("this is hypergrad {VERSION}"))
                && m.contains("delete it or choose another file")
                && m.contains("--checkpoint")
                && !m.contains('\n'),
            "{m}"
        );
        ck.format = "hypergrad-checkpoint/3\nx".into();
        let m = message(&ck);
        assert!(
            m.contains("(format hypergrad-checkpoint/3\\nx)") && !m.contains('\n'),
            "{m}"
        );
        // The old JSON format: refused, saying so.
        let mut value = serde_json::to_value(sample(vec![0.5])).unwrap();
        value["format"] = "hypergrad-checkpoint/1".into();
        std::fs::write(&path, value.to_string()).unwrap();
        let m = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(
            m.contains("is a JSON checkpoint")
                && m.contains("format hypergrad-checkpoint/1")
                && m.contains("binary"),
            "{m}"
        );
        value.as_object_mut().unwrap().remove("format");
        std::fs::write(&path, value.to_string()).unwrap();
        let m = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(
            m.contains("names no checkpoint format") && !m.contains('\n'),
            "{m}"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    /// Every truncation and every flipped bit of a checkpoint is refused (the CRC, the
    /// lengths), never read as another state.
    #[test]
    fn damaged_files_are_refused() {
        let d = dir("damaged");
        let path = d.join("ck.bin");
        sample(vec![0.5, -1.0, 2.0]).save(&path).unwrap();
        let good = std::fs::read(&path).unwrap();
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(Checkpoint::load(&path).is_err(), "cut at {cut}");
        }
        for bit in 0..good.len() * 8 {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&path, &b).unwrap();
            assert!(Checkpoint::load(&path).is_err(), "bit {bit}");
        }
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_non_finite_state_is_never_written() {
        let d = dir("finite");
        let path = d.join("ck.bin");
        sample(vec![0.5]).save(&path).unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = sample(vec![0.5, f64::INFINITY]).save(&path).unwrap_err();
        assert!(err.to_string().contains("θ[1] = inf"), "{err}");
        let mut ck = sample(vec![0.5]);
        ck.opt.v = vec![f64::NAN];
        assert!(ck.save(&path).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), before);
        std::fs::remove_dir_all(d).unwrap();
    }
}
