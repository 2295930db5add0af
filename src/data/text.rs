//! Shared helpers for the text readers: line iteration with typed errors, number parsing,
//! reading (and gunzipping) whole files, and building the dense matrix.

use std::io::{BufRead, Read};
use std::path::Path;

use ndarray::Array2;

use crate::error::printable;
use crate::{Error, Result};

/// Calls `f(line_number, line)` for every line of `reader` (1-based numbers, trailing
/// `\r\n`/`\n` removed). I/O errors become [`Error::Io`], invalid UTF-8 a [`Error::Parse`].
/// Returns the number of lines read.
pub(crate) fn for_each_line<R: BufRead>(
    mut reader: R,
    path: &Path,
    mut f: impl FnMut(usize, &str) -> Result<()>,
) -> Result<usize> {
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if read == 0 {
            return Ok(line_no);
        }
        line_no += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        let line = std::str::from_utf8(&buf)
            .map_err(|_| Error::parse(path, line_no, "line is not valid UTF-8 text"))?;
        // A UTF-8 byte-order mark at the start of the file is not part of the data.
        let line = if line_no == 1 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        f(line_no, line)?;
    }
}

/// Shortens a field for an error message so that the message stays readable, and escapes
/// the characters that would break it onto another line ([`crate::error::printable`]).
pub(crate) fn excerpt(field: &str) -> String {
    const MAX: usize = 40;
    if field.chars().count() <= MAX {
        printable(field)
    } else {
        let head: String = field.chars().take(MAX).collect();
        format!("{}...", printable(&head))
    }
}

/// Why a field is not a usable number.
pub(crate) enum NumberError {
    /// Not a number at all (message text).
    Malformed(String),
    /// Parsed, but NaN or infinite.
    NonFinite(String),
}

/// Parses one numeric field (surrounding whitespace allowed) into a finite `f64`.
pub(crate) fn parse_finite(field: &str) -> std::result::Result<f64, NumberError> {
    let t = field.trim();
    if t.is_empty() {
        return Err(NumberError::Malformed(
            "empty field where a number is expected".into(),
        ));
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(NumberError::NonFinite(format!(
            "non-finite value '{}' (NaN and infinity are not allowed)",
            excerpt(t)
        ))),
        Err(_) => Err(NumberError::Malformed(format!(
            "cannot parse '{}' as a number",
            excerpt(t)
        ))),
    }
}

/// Reads the whole file at `path`, gunzipping it when its name ends in `.gz` or its content
/// starts with the gzip magic bytes.
pub(crate) fn read_file_bytes(path: &Path) -> Result<Vec<u8>> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let raw = std::fs::read(path).map_err(io_err)?;
    let named_gz = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase().ends_with(".gz"))
        .unwrap_or(false);
    if named_gz || raw.starts_with(&[0x1f, 0x8b]) {
        gunzip(&raw, path)
    } else {
        Ok(raw)
    }
}

/// Reads the whole file at `path` as UTF-8 text. Bytes that are not UTF-8 are a
/// [`Error::Parse`] naming the line they are on (an [`Error::Io`] would name no line).
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        Error::parse(path, line, "line is not valid UTF-8 text")
    })
}

/// Decompresses gzip data (all members); errors name `path`.
pub(crate) fn gunzip(raw: &[u8], path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(e.kind(), format!("cannot gunzip: {e}")),
        })?;
    Ok(out)
}

/// Allocates an n×d zero matrix, reporting a [`Error::Dimension`] instead of aborting when it
/// cannot be allocated.
pub(crate) fn zeros_checked(n: usize, d: usize, what: &str) -> Result<Array2<f64>> {
    let too_big = || {
        Error::Dimension(format!(
            "{what}: a dense {n} x {d} matrix of f64 is too large to allocate"
        ))
    };
    let len = n.checked_mul(d).ok_or_else(too_big)?;
    let mut v: Vec<f64> = Vec::new();
    v.try_reserve_exact(len).map_err(|_| too_big())?;
    v.resize(len, 0.0);
    Array2::from_shape_vec((n, d), v).map_err(|_| too_big())
}
