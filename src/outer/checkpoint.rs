//! Checkpoints of `hypergrad run`: everything the outer loop carries from one step to the
//! next, written after every step. Mini-batches are drawn from `(seed, step)`, so nothing
//! random needs saving: a resumed run computes the same steps as an uninterrupted one.
//!
//! A checkpoint names its format and the version of hypergrad that wrote it, and any other
//! format or version is refused (the numbers a run computes may change between versions, so
//! resuming one would silently mix two programs). It holds finite numbers only: the outer
//! loop stops before it would save a non-finite state, and [`Checkpoint::save`] refuses one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::OptState;
use crate::error::{Error, Result};

/// The format this version writes and reads.
pub const FORMAT: &str = "hypergrad-checkpoint/1";
/// The version of hypergrad that writes it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

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

    /// Reads a checkpoint; `None` when the file does not exist (a fresh run). A file of
    /// another format or version, or no checkpoint at all, is refused in one line.
    pub fn load(path: &Path) -> Result<Option<Checkpoint>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::option(
                    "--checkpoint",
                    format!("cannot read {}: {e}", path.display()),
                ))
            }
        };
        let refuse = |message: String| Err(Error::option("--checkpoint", message));
        let value: serde_json::Value = match serde_json::from_str(&text) {
            Ok(value) => value,
            Err(e) => {
                return refuse(format!(
                    "{} is not a hypergrad checkpoint: {e}; delete it or choose another file",
                    path.display()
                ))
            }
        };
        let field = |key: &str| value.get(key).and_then(|v| v.as_str());
        match (field("format"), field("version")) {
            (Some(FORMAT), Some(VERSION)) => {}
            (Some(format), version) => {
                // Both strings come from the file: escaped, so the message stays one line.
                let writer = match version {
                    Some(version) => format!("hypergrad {}", crate::error::printable(version)),
                    None => "an unknown version of hypergrad".to_string(),
                };
                return refuse(format!(
                    "{} was written by {writer} (format {}); this is hypergrad \
                     {VERSION} (format {FORMAT}): delete it or choose another file",
                    path.display(),
                    crate::error::printable(format),
                ));
            }
            (None, _) => {
                return refuse(format!(
                    "{} names no checkpoint format (an older hypergrad or another program \
                     wrote it); this is hypergrad {VERSION} (format {FORMAT}): delete it or \
                     choose another file",
                    path.display(),
                ))
            }
        }
        serde_json::from_value(value).map(Some).map_err(|e| {
            Error::option(
                "--checkpoint",
                format!(
                    "{} is not a hypergrad checkpoint: {e}; delete it or choose another file",
                    path.display()
                ),
            )
        })
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
    /// (JSON cannot hold it, and a resumed run could not use it).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(what) = self.non_finite() {
            return Err(Error::Numerical(format!(
                "refusing to write a checkpoint with a non-finite number ({what})"
            )));
        }
        let text = serde_json::to_string(self)
            .map_err(|e| Error::Backend(format!("cannot serialise the checkpoint: {e}")))?;
        let tmp = temporary_path(path);
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(text.as_bytes())?;
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
        let path = dir("bits").join("ck.json");
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
        let path = d.join("ck.json");
        let mut value = serde_json::to_value(sample(vec![0.5])).unwrap();
        let message = |value: &serde_json::Value| {
            std::fs::write(&path, value.to_string()).unwrap();
            Checkpoint::load(&path).unwrap_err().to_string()
        };
        value["version"] = "0.0.1".into();
        let m = message(&value);
        assert!(
            m.contains("written by hypergrad 0.0.1 (format hypergrad-checkpoint/1)")
                && m.contains(&format!("this is hypergrad {VERSION}"))
                && m.contains("delete it or choose another file")
                && m.contains("--checkpoint")
                && !m.contains('\n'),
            "{m}"
        );
        value["format"] = "hypergrad-checkpoint/0".into();
        let m = message(&value);
        assert!(m.contains("(format hypergrad-checkpoint/0)"), "{m}");
        value.as_object_mut().unwrap().remove("format");
        value.as_object_mut().unwrap().remove("version");
        let m = message(&value);
        assert!(m.contains("names no checkpoint format"), "{m}");
        assert!(!m.contains('\n'), "{m}");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_non_finite_state_is_never_written() {
        let d = dir("finite");
        let path = d.join("ck.json");
        sample(vec![0.5]).save(&path).unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        let err = sample(vec![0.5, f64::INFINITY]).save(&path).unwrap_err();
        assert!(err.to_string().contains("θ[1] = inf"), "{err}");
        let mut ck = sample(vec![0.5]);
        ck.opt.v = vec![f64::NAN];
        assert!(ck.save(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        std::fs::remove_dir_all(d).unwrap();
    }
}
