//! Datasets: loading, synthetic generation, splitting and preprocessing.
//!
//! A [`Dataset`] is a dense n×d `f64` design matrix with one `f64` label per row, held on the
//! host. Datasets come from [`load`], which accepts
//!
//! * the name of a **bundled** dataset ([`bundled_names`]): `digits` (1797×64, classes 0..9),
//!   `breast_cancer` (569×30, labels ±1, +1 = benign), `diabetes` (442×10, real-valued target)
//!   and `mnist_5k` (5000×784, classes 0..9, pixels 0..255). They are compiled into the
//!   binary, so they need no files at run time; `data/README.md` gives sources and licences;
//! * a **synthetic** spec `synthetic:KIND:key=val,...` (see [`synthetic::parse_spec`]), e.g.
//!   `synthetic:logistic:n=1000,d=20,rho=0.5,seed=1`;
//! * a **file path**: CSV (label first, see [`read_csv`]) or LIBSVM (see [`read_libsvm`]),
//!   optionally gzipped; or binary: NumPy `.npy` (label first, see [`npy::read_npy`]),
//!   memory-mapped, and SciPy-style CSR `.npz` with labels `y` (see [`npz::read_npz`]).
//!
//! [`split`] makes seeded train/val(/test) splits, [`standardize`] z-scores features with
//! training statistics and [`corrupt_labels`] flips a fraction of class labels for
//! label-cleaning experiments. All randomness comes from the portable, seeded [`rng::Rng`].
//!
//! Errors are the crate's [`crate::Error`]: file problems name the file and the
//! 1-based line, option problems name the option; messages are a single line.

use std::path::Path;

use ndarray::{s, Array2, Axis};

use crate::{Error, Result};

mod bundled;
mod csv;
mod libsvm;
pub mod npy;
pub mod npz;
pub mod rng;
pub mod row_stream;
pub mod sparse;
mod split;
pub mod synthetic;
mod text;

pub use self::csv::read_csv;
pub use self::libsvm::read_libsvm;
pub use self::split::{
    corrupt_labels, fold_indices, parse_split, split, split_indices, standardize,
};
pub(crate) use self::text::read_text;

/// A labelled dataset held on the host in f64: `x` is n×d row-major, `y` has n labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The n×d design matrix, one sample per row.
    pub x: Array2<f64>,
    /// The n labels (class indices, ±1, or real-valued targets).
    pub y: Vec<f64>,
    /// A name for messages: the bundled name, the synthetic spec or the file path.
    pub name: String,
}

/// Largest class label [`Dataset::num_classes`] accepts (labels are class indices).
const MAX_CLASS_LABEL: f64 = 1_000_000.0;

impl Dataset {
    /// A dataset from its parts. Errors: [`Error::Dimension`] if `x.nrows() != y.len()`,
    /// [`Error::Numerical`] naming the dataset, row and column if any value is NaN or
    /// infinite. `x` is stored in standard (row-major) layout.
    pub fn new(x: Array2<f64>, y: Vec<f64>, name: impl Into<String>) -> Result<Dataset> {
        let name = name.into();
        if x.nrows() != y.len() {
            return Err(Error::Dimension(format!(
                "dataset '{name}': x has {} rows but y has {} labels",
                x.nrows(),
                y.len()
            )));
        }
        if let Some(((r, c), v)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(Error::Numerical(format!(
                "dataset '{name}': x has the non-finite value {v} at row {}, column {}",
                r + 1,
                c + 1
            )));
        }
        if let Some((r, v)) = y.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::Numerical(format!(
                "dataset '{name}': label {v} at row {} is not finite",
                r + 1
            )));
        }
        let x = if x.is_standard_layout() {
            x
        } else {
            x.as_standard_layout().into_owned()
        };
        Ok(Dataset { x, y, name })
    }

    /// Number of samples (rows).
    pub fn n(&self) -> usize {
        self.x.nrows()
    }

    /// Number of features (columns).
    pub fn d(&self) -> usize {
        self.x.ncols()
    }

    /// The rows `rows` (0-based, in the given order; repeats allowed) as a new dataset with
    /// the same name.
    ///
    /// # Panics
    /// If an index is `>= self.n()`.
    pub fn select(&self, rows: &[usize]) -> Dataset {
        Dataset {
            x: self.x.select(Axis(0), rows),
            y: rows.iter().map(|&i| self.y[i]).collect(),
            name: self.name.clone(),
        }
    }

    /// The number of classes `c = max label + 1`, for labels that are class indices.
    /// Errors: [`Error::Labels`] if there are no labels, or a label is not an integer in
    /// `0..=1_000_000` (naming the dataset, the label and its 1-based row).
    pub fn num_classes(&self) -> Result<usize> {
        if let Some((i, &v)) = self
            .y
            .iter()
            .enumerate()
            .find(|(_, &v)| !((0.0..=MAX_CLASS_LABEL).contains(&v) && v.fract() == 0.0))
        {
            return Err(Error::Labels(format!(
                "dataset '{}': label {v} at row {} is not a class index (an integer 0, 1, 2, ...); this problem needs class labels",
                self.name,
                i + 1
            )));
        }
        let max = self.y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if max < 0.0 {
            return Err(Error::Labels(format!(
                "dataset '{}' has no labels",
                self.name
            )));
        }
        Ok(max as usize + 1)
    }

    /// Checks that every label is exactly −1 or +1 (binary problems such as logistic
    /// regression). Errors: [`Error::Labels`] naming the dataset and the first bad label and
    /// its 1-based row.
    pub fn check_binary_pm1(&self) -> Result<()> {
        match self
            .y
            .iter()
            .enumerate()
            .find(|(_, &v)| v != 1.0 && v != -1.0)
        {
            None => Ok(()),
            Some((i, &v)) => Err(Error::Labels(format!(
                "dataset '{}': label {v} at row {} is not -1 or +1; binary problems need labels -1/+1 (map 0/1 labels to -1/+1)",
                self.name,
                i + 1
            ))),
        }
    }

    /// A copy with zero columns appended up to `d` columns (e.g. to give a LIBSVM test file
    /// the width of its training file). Errors: [`Error::Dimension`] if `d < self.d()`.
    pub fn with_columns(&self, d: usize) -> Result<Dataset> {
        if d < self.d() {
            return Err(Error::Dimension(format!(
                "dataset '{}' has {} features, cannot shrink it to {d}",
                self.name,
                self.d()
            )));
        }
        let mut x = text::zeros_checked(self.n(), d, &self.name)?;
        x.slice_mut(s![.., ..self.d()]).assign(&self.x);
        Ok(Dataset {
            x,
            y: self.y.clone(),
            name: self.name.clone(),
        })
    }
}

/// Names of the bundled datasets accepted by [`load`].
pub fn bundled_names() -> &'static [&'static str] {
    bundled::NAMES
}

/// The formats a data file can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Csv,
    Libsvm,
    /// NumPy `.npy`: one dense array, label first.
    Npy,
    /// A ZIP of `.npy` arrays: a CSR matrix and its labels `y`.
    Npz,
}

/// Format from the file name (ignoring a final `.gz`): `.csv` is CSV; `.svm`, `.libsvm`,
/// `.txt` are LIBSVM; `.npy` and `.npz` are NumPy's; anything else is unknown.
pub(crate) fn format_from_name(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let ext = name.rsplit_once('.')?.1;
    match ext {
        "csv" => Some(Format::Csv),
        "svm" | "libsvm" | "txt" => Some(Format::Libsvm),
        "npy" => Some(Format::Npy),
        "npz" => Some(Format::Npz),
        _ => None,
    }
}

/// Format from the content: `.npy` and `.npz` by their magic bytes; otherwise the first line
/// that is not blank or a `#` comment is LIBSVM if a ':' follows its first token, else CSV.
pub(crate) fn sniff_format(bytes: &[u8]) -> Format {
    if bytes.starts_with(npy::MAGIC) {
        return Format::Npy;
    }
    if bytes.starts_with(npz::MAGIC) {
        return Format::Npz;
    }
    for line in bytes.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(line);
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let after_label = t
            .find(|ch: char| ch.is_whitespace() || ch == ',')
            .map(|p| &t[p..])
            .unwrap_or("");
        return if after_label.contains(':') {
            Format::Libsvm
        } else {
            Format::Csv
        };
    }
    Format::Csv
}

/// Loads a dataset from a spec string:
///
/// * a bundled name ([`bundled_names`]: `digits`, `breast_cancer`, `diabetes`, `mnist_5k`),
///   embedded in the binary; a bundled name wins over a file of the same name (write
///   `./digits` for the file);
/// * `synthetic:KIND:key=val,...` ([`synthetic::parse_spec`]);
/// * otherwise a file path. `.csv` (and `.csv.gz`) is read as CSV ([`read_csv`]); `.svm`,
///   `.libsvm`, `.txt` (and their `.gz`) as LIBSVM ([`read_libsvm`]); any other name is
///   sniffed: if the first data line has a ':' after its label it is LIBSVM, else CSV.
///   Files whose name ends in `.gz` (or that start with the gzip magic bytes) are gunzipped.
///   `.npy` ([`npy::read_npy`]) is read memory-mapped; `.npz` ([`npz::read_npz`], a CSR
///   matrix) is expanded to dense rows here (the ℓ1 problems keep it sparse through
///   [`sparse::load_sparse`]). Other names starting with their magic bytes are read as them.
///
/// The dataset's name is the spec string.
pub fn load(spec: &str) -> Result<Dataset> {
    load_tagged(spec).map(|(ds, _)| ds)
}

/// Loads several datasets that must share features (training, validation, test). LIBSVM files
/// list only the features a row uses, so one file can end before another's last feature: the
/// LIBSVM datasets are padded with zero columns to the widest of them. Other sources state
/// every column and keep their width (a mismatch is then an error of the caller's).
pub fn load_all(specs: &[&str]) -> Result<Vec<Dataset>> {
    let loaded = specs
        .iter()
        .map(|spec| load_tagged(spec))
        .collect::<Result<Vec<_>>>()?;
    let width = loaded
        .iter()
        .filter(|(_, format)| *format == Some(Format::Libsvm))
        .map(|(ds, _)| ds.d())
        .max()
        .unwrap_or(0);
    loaded
        .into_iter()
        .map(|(ds, format)| match format {
            Some(Format::Libsvm) => ds.with_columns(width),
            _ => Ok(ds),
        })
        .collect()
}

/// The dense rows of a sparse `.npz` dataset of `file_bytes` bytes. As for LIBSVM, the dense
/// matrix may hold 2²⁴ entries, or 256 per byte of the file: a small file whose `shape`
/// claims billions of columns is refused (naming the file) rather than allocated.
fn npz_dense(s: &sparse::SparseDataset, path: &Path, file_bytes: usize) -> Result<Dataset> {
    let entries = s.n().saturating_mul(s.d());
    let limit = libsvm::size_limit(file_bytes);
    if entries > limit {
        return Err(npy::invalid(
            path,
            format!(
                "{} rows x {} features = {entries} dense entries, more than a file of {file_bytes} bytes can justify (at most {limit}); the ℓ1 problems (lasso, elasticnet) read it sparse",
                s.n(),
                s.d()
            ),
        ));
    }
    let x =
        s.x.to_dense()
            .map_err(|e| npy::invalid(path, format!("{e}; the ℓ1 problems read it sparse")))?;
    Ok(Dataset {
        x,
        y: s.y.clone(),
        name: s.name.clone(),
    })
}

/// [`load`], also saying which file format was read (`None` for bundled and synthetic data).
fn load_tagged(spec: &str) -> Result<(Dataset, Option<Format>)> {
    if let Some(result) = bundled::load_bundled(spec) {
        return result.map(|ds| (ds, None));
    }
    if spec.starts_with("synthetic:") {
        return synthetic::parse_spec(spec).map(|ds| (ds, None));
    }
    let path = Path::new(spec);
    let named = format_from_name(path);
    let (mut ds, format) = match named {
        Some(Format::Npy) => (npy::read_npy(path)?, Format::Npy),
        Some(Format::Npz) => {
            let file_bytes = std::fs::metadata(path).map_or(0, |m| m.len() as usize);
            (
                npz_dense(&npz::read_npz(path)?, path, file_bytes)?,
                Format::Npz,
            )
        }
        _ => {
            let bytes = text::read_file_bytes(path)?;
            let format = named.unwrap_or_else(|| sniff_format(&bytes));
            let ds = match format {
                Format::Csv => read_csv(bytes.as_slice(), path)?,
                Format::Libsvm => read_libsvm(bytes.as_slice(), path, 0)?,
                Format::Npy => npy::dataset_from_npy(&bytes, path)?,
                Format::Npz => npz_dense(&npz::sparse_from_npz(&bytes, path)?, path, bytes.len())?,
            };
            (ds, format)
        }
    };
    ds.name = spec.to_string();
    Ok((ds, Some(format)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_detection() {
        assert_eq!(format_from_name(Path::new("a/b.csv")), Some(Format::Csv));
        assert_eq!(format_from_name(Path::new("b.CSV.gz")), Some(Format::Csv));
        assert_eq!(
            format_from_name(Path::new("b.svm.gz")),
            Some(Format::Libsvm)
        );
        assert_eq!(format_from_name(Path::new("b.txt")), Some(Format::Libsvm));
        assert_eq!(format_from_name(Path::new("b.data")), None);
        assert_eq!(format_from_name(Path::new("b")), None);
        assert_eq!(sniff_format(b"# c\n\n1 3:4 5:6\n"), Format::Libsvm);
        assert_eq!(sniff_format(b"1,2,3\n"), Format::Csv);
        assert_eq!(sniff_format(b"label,a,b\n1,2,3\n"), Format::Csv);
    }
}
