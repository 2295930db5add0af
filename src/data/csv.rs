//! The CSV reader: label first, then the features.

use std::io::BufRead;
use std::path::Path;

use super::text::{for_each_line, parse_finite, NumberError};
use super::Dataset;
use crate::{Error, Result};

/// Reads a CSV dataset: one sample per line, the label in the first field and the features
/// after it, comma-separated (whitespace around fields is allowed).
///
/// * Blank lines are skipped.
/// * The first non-blank line may be a header, and is skipped as one, only if **none** of its
///   fields parses as a number; it must still have as many fields as the data rows.
/// * Every row must have the same number of fields, at least two (a label and one feature).
/// * NaN and infinite values are rejected.
///
/// Errors are [`Error::Parse`] naming `path` and the 1-based line (and, for a bad value, the
/// 1-based column, column 1 being the label), or [`Error::Io`] when reading fails. A file
/// without data rows is an error too. The dataset's name is `path` as text.
pub fn read_csv(reader: impl BufRead, path: &Path) -> Result<Dataset> {
    let mut values: Vec<f64> = Vec::new();
    let mut labels: Vec<f64> = Vec::new();
    let mut width: Option<(usize, usize)> = None; // (fields per row, line that set it)
    let mut seen_nonblank = false;

    let lines = for_each_line(reader, path, |line_no, line| {
        if line.trim().is_empty() {
            return Ok(());
        }
        let mut local: Vec<&str> = line.split(',').collect();
        let first_line = !seen_nonblank;
        seen_nonblank = true;

        let count = local.len();
        match width {
            None => {
                if count < 2 {
                    return Err(Error::parse(
                        path,
                        line_no,
                        "found 1 field, need a label and at least one feature separated by commas",
                    ));
                }
                width = Some((count, line_no));
            }
            Some((expected, first)) if expected != count => {
                return Err(Error::parse(
                    path,
                    line_no,
                    format!(
                        "row has {count} fields but line {first} has {expected}; every row needs the same number"
                    ),
                ));
            }
            Some(_) => {}
        }

        if first_line && local.iter().all(|f| f.trim().parse::<f64>().is_err()) {
            // A header: no field is a number.
            return Ok(());
        }

        for (col, field) in local.drain(..).enumerate() {
            match parse_finite(field) {
                Ok(v) => {
                    if col == 0 {
                        labels.push(v);
                    } else {
                        values.push(v);
                    }
                }
                Err(NumberError::Malformed(m)) | Err(NumberError::NonFinite(m)) => {
                    let which = if col == 0 { " (label)" } else { "" };
                    return Err(Error::parse(
                        path,
                        line_no,
                        format!("column {}{which}: {m}", col + 1),
                    ));
                }
            }
        }
        Ok(())
    })?;

    let d = match width {
        Some((w, _)) if !labels.is_empty() => w - 1,
        _ => {
            return Err(Error::parse(
                path,
                lines + 1,
                "no data rows before the end of the file",
            ))
        }
    };
    let n = labels.len();
    let x = ndarray::Array2::from_shape_vec((n, d), values)
        .map_err(|e| Error::Dimension(format!("{}: internal shape error: {e}", path.display())))?;
    Ok(Dataset {
        x,
        y: labels,
        name: path.display().to_string(),
    })
}
