//! The library's typed error. Every message is one line that says what went wrong and,
//! where a user can act on it, where (file and line, option name) and what to do.

use std::path::PathBuf;

/// Errors returned by the hypergrad library. The binary adds context with `anyhow`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A data or parameter file has a line that does not parse or does not fit.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },

    /// Two inputs that must agree in shape do not.
    #[error("dimension mismatch: {0}")]
    Dimension(String),

    /// Labels that the chosen problem cannot use (e.g. 0/1 labels for `logreg`).
    #[error("{0}")]
    Labels(String),

    /// An option or argument value is out of its valid range.
    #[error("invalid value for {option}: {message}")]
    InvalidOption {
        option: &'static str,
        message: String,
    },

    /// A numerical failure: a non-finite value, a matrix that is not positive definite,
    /// a solver that diverged.
    #[error("numerical failure: {0}")]
    Numerical(String),

    /// A buffer that does not fit: planned before allocating ([`crate::memory::MemoryPlan`]),
    /// or refused by the allocator ([`crate::memory::try_vec`]) or by the device.
    #[error("out of memory: {0}")]
    Memory(String),

    /// A backend (e.g. CUDA) is not available or failed.
    #[error("backend error: {0}")]
    Backend(String),

    /// An option name that does not exist (the API's options are SPEC §6's long options).
    #[error("unknown option '{name}' (options: {known})")]
    UnknownOption { name: String, known: String },

    /// The caller asked a run to stop (Ctrl-C in Python), between two steps.
    #[error("interrupted")]
    Interrupted,

    /// A run's per-step sink asked the outer loop to end after the step it was handed (a
    /// Python `callback` that returned False). The outer loop ends there with a result, as if
    /// that step were the last; a sink that returns it elsewhere ends the call with this error.
    #[error("stopped by the caller's callback")]
    Stopped,
}

/// `Result` with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidOption`].
    pub fn option(option: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidOption {
            option,
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Parse`].
    pub fn parse(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Error::Parse {
            path: path.into(),
            line,
            message: message.into(),
        }
    }
}

/// `text` as it may appear inside a one-line message: control characters (line breaks, a
/// carriage return, tabs, escape sequences) and the Unicode line and paragraph separators are
/// written as Rust escapes (`\r`, `\u{2028}`), everything else as it is. Use it wherever a
/// message quotes what the user wrote (a field, an option value, a spec).
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if ch.is_control() || matches!(ch, '\u{2028}' | '\u{2029}') {
            out.extend(ch.escape_default());
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn printable_keeps_a_message_on_one_line() {
        assert_eq!(super::printable("1.5é"), "1.5é");
        assert_eq!(
            super::printable("1\r2\n\u{2028}\u{85}\t"),
            "1\\r2\\n\\u{2028}\\u{85}\\t"
        );
    }
}
