//! The LIBSVM / SVMlight reader: `label idx:val idx:val ...`.

use std::io::BufRead;
use std::path::Path;

use super::text::{excerpt, for_each_line, parse_finite, zeros_checked, NumberError};
use super::Dataset;
use crate::{Error, Result};

/// Reads a LIBSVM (SVMlight) dataset into a dense matrix.
///
/// Each non-blank line is `label idx:val idx:val ...`, separated by whitespace, with 1-based,
/// strictly increasing feature indices; features that are not listed are zero. Everything
/// from a `#` to the end of the line is a comment; blank and comment-only lines are skipped.
/// A `qid:N` token right after the label (ranking files) is accepted and ignored.
///
/// The number of features is the largest index seen, or `min_features` if that is larger
/// (use it to give a test file the width of its training file).
///
/// Errors are [`Error::Parse`] naming `path` and the 1-based line: a malformed or non-finite
/// label or value, a token without `:`, index 0, an index not greater than the one before it,
/// a file without data rows or whose rows list no feature (and `min_features` is 0), and a
/// largest index that makes the dense matrix larger than the file can justify (2²⁴ entries,
/// or 256 per byte of text: a two-line file with the index 300000000 would ask for 4.8 GB),
/// named at the line of that index. The dataset's name is `path` as text.
pub fn read_libsvm(reader: impl BufRead, path: &Path, min_features: usize) -> Result<Dataset> {
    let mut labels: Vec<f64> = Vec::new();
    // (row, 0-based column, value) for every listed feature.
    let mut entries: Vec<(usize, usize, f64)> = Vec::new();
    let mut max_index = 0usize;
    let mut max_index_line = 0usize;
    let mut bytes = 0usize;

    let lines = for_each_line(reader, path, |line_no, line| {
        bytes += line.len() + 1;
        let Some(parsed) = parse_line(line, path, line_no)? else {
            return Ok(());
        };
        let row = labels.len();
        labels.push(parsed.label);
        if parsed.last_index > max_index {
            max_index = parsed.last_index;
            max_index_line = line_no;
        }
        entries.extend(parsed.features.into_iter().map(|(c, v)| (row, c, v)));
        Ok(())
    })?;

    if labels.is_empty() {
        return Err(Error::parse(
            path,
            lines + 1,
            "no data rows before the end of the file",
        ));
    }
    if max_index.max(min_features) == 0 {
        return Err(no_features(path, lines));
    }
    let n = labels.len();
    let dense = n.saturating_mul(max_index);
    if dense > size_limit(bytes) {
        return Err(Error::parse(
            path,
            max_index_line,
            format!(
                "feature index {max_index} makes the dense matrix {n} rows x {max_index} features \
                 = {dense} entries, more than {bytes} bytes of LIBSVM text can justify \
                 (at most {} entries: 2^24, or 256 per byte of the file)",
                size_limit(bytes)
            ),
        ));
    }
    let d = max_index.max(min_features);
    let mut x = zeros_checked(n, d, &path.display().to_string()).map_err(|_| {
        let line = if max_index >= min_features {
            max_index_line
        } else {
            1
        };
        Error::parse(
            path,
            line,
            format!(
                "{n} rows x {d} features is too large for a dense matrix of f64 (largest feature index {max_index})"
            ),
        )
    })?;
    for (r, c, v) in entries {
        x[[r, c]] = v;
    }
    Ok(Dataset {
        x,
        y: labels,
        name: path.display().to_string(),
    })
}

/// The error for a file none of whose rows lists a feature (a column of labels, say): the
/// data would have 0 features, and nothing downstream can use that.
pub(super) fn no_features(path: &Path, lines: usize) -> Error {
    Error::parse(
        path,
        lines + 1,
        "no row lists a feature before the end of the file (LIBSVM rows are 'label index:value ...')",
    )
}

/// The most a LIBSVM file of `bytes` bytes (as text, after gunzipping) may ask for: the
/// dense reader's n·d entries, the sparse reader's d features. Sparse files are meant to
/// leave most features out, so a small file may still name a large index (2²⁴ entries,
/// 128 MiB of f64, are always allowed); beyond that, each byte of text justifies 256
/// entries. What this refuses is a file whose few bytes name an index in the billions, which
/// would otherwise end in an out-of-memory abort rather than an error.
pub(super) fn size_limit(bytes: usize) -> usize {
    bytes.saturating_mul(256).max(1 << 24)
}

/// One data line of a LIBSVM file.
pub(super) struct LibsvmLine {
    pub label: f64,
    /// `(0-based column, value)` of the listed non-zero features, columns increasing.
    pub features: Vec<(usize, f64)>,
    /// The largest 1-based index listed (zero-valued features included), 0 if none.
    pub last_index: usize,
}

/// Parses one line (`label idx:val ...`, `#` comments, an optional leading `qid:`), shared by
/// the dense and the sparse readers so that both accept and reject exactly the same files.
/// `None` for a blank or comment-only line; errors name `path` and `line_no`.
pub(super) fn parse_line(line: &str, path: &Path, line_no: usize) -> Result<Option<LibsvmLine>> {
    let content = match line.find('#') {
        Some(pos) => &line[..pos],
        None => line,
    };
    let mut tokens = content.split_whitespace();
    let Some(label_text) = tokens.next() else {
        return Ok(None);
    };
    let err = |m: String| Error::parse(path, line_no, m);
    let label = match parse_finite(label_text) {
        Ok(v) => v,
        Err(NumberError::Malformed(m)) if label_text.contains(',') => {
            return Err(err(format!(
                "label: {m}; this looks like CSV, which is read from files named .csv"
            )));
        }
        Err(NumberError::Malformed(m)) | Err(NumberError::NonFinite(m)) => {
            return Err(err(format!("label: {m}")));
        }
    };
    let mut features = Vec::new();
    let mut prev: usize = 0;
    for (pos, token) in tokens.enumerate() {
        let Some((idx_text, val_text)) = token.split_once(':') else {
            return Err(err(format!(
                "expected 'index:value' but found '{}'",
                excerpt(token)
            )));
        };
        if pos == 0 && idx_text == "qid" {
            continue;
        }
        let idx: usize = idx_text.parse().map_err(|_| {
            err(format!(
                "feature index '{}' is not a positive integer",
                excerpt(idx_text)
            ))
        })?;
        if idx == 0 {
            return Err(err("feature index 0: LIBSVM indices start at 1".to_string()));
        }
        if idx <= prev {
            return Err(err(format!(
                "feature index {idx} is not greater than the previous index {prev}; indices must be strictly increasing"
            )));
        }
        prev = idx;
        let value = match parse_finite(val_text) {
            Ok(v) => v,
            Err(NumberError::Malformed(m)) | Err(NumberError::NonFinite(m)) => {
                return Err(err(format!("feature {idx}: {m}")));
            }
        };
        if value != 0.0 {
            features.push((idx - 1, value));
        }
    }
    Ok(Some(LibsvmLine {
        label,
        features,
        last_index: prev,
    }))
}
