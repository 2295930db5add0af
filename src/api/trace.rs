//! The JSONL trace of `run` (SPEC §6): one object per step, flushed as it is written, for
//! both families of problems. On resuming from a checkpoint the file is kept, minus any
//! lines after the checkpoint's step (and a line cut short by a killed run).

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub struct TraceWriter {
    file: Option<(std::fs::File, PathBuf)>,
}

impl TraceWriter {
    /// No file: records only go to the caller's sink.
    pub fn none() -> Self {
        TraceWriter { file: None }
    }

    /// Opens `path` for a run that starts after `resumed_step` (`None`: a fresh run, the
    /// file is emptied).
    pub fn open(path: Option<&Path>, resumed_step: Option<u64>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(TraceWriter::none());
        };
        let kept = match resumed_step {
            Some(step) => std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                        .is_some_and(|s| s <= step)
                })
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            None => String::new(),
        };
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        // A resumed trace goes through a temporary file and a rename, so that a run killed
        // right here leaves the whole old trace (which the next resumption filters again),
        // never a truncated one; only a regular file is replaced so (not a pipe or a device).
        let regular = std::fs::metadata(path).is_ok_and(|m| m.is_file());
        if resumed_step.is_some() && regular {
            let mut tmp = path.as_os_str().to_os_string();
            tmp.push(".tmp");
            std::fs::write(&tmp, kept)
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(io)?;
        } else {
            std::fs::write(path, kept).map_err(io)?;
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io)?;
        Ok(TraceWriter {
            file: Some((file, path.to_path_buf())),
        })
    }

    /// Appends one record and flushes it.
    pub fn write(&mut self, record: &serde_json::Value) -> Result<()> {
        if let Some((file, path)) = &mut self.file {
            writeln!(file, "{record}")
                .and_then(|_| file.flush())
                .map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}
