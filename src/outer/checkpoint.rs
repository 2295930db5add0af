//! Checkpoints of `hypergrad run`: everything the outer loop carries from one step to the
//! next, written atomically (a temporary file renamed over the old one) after every step.
//! Mini-batches are drawn from `(seed, step)`, so nothing random needs saving: a resumed run
//! computes the same steps as an uninterrupted one.

use std::path::Path;

use super::OptState;
use crate::error::{Error, Result};

/// The state after outer step `step` (θ already updated for step `step + 1`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
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
    /// Reads a checkpoint; `None` when the file does not exist (a fresh run).
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
        serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::option(
                "--checkpoint",
                format!("{} is not a hypergrad checkpoint: {e}", path.display()),
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

    /// Writes the checkpoint atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(self)
            .map_err(|e| Error::Backend(format!("cannot serialise the checkpoint: {e}")))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| {
                Error::option(
                    "--checkpoint",
                    format!("cannot write {}: {e}", path.display()),
                )
            })
    }
}
