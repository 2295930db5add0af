//! Sparse design matrices: compressed sparse rows (CSR, as LIBSVM files are laid out) and
//! compressed sparse columns (CSC, what coordinate descent reads), and a LIBSVM reader that
//! never builds the dense matrix.
//!
//! Both layouts store `f64` values with `u32`-free `usize` indices; explicit zeros are not
//! stored. `CsrMatrix::to_csc` and `CscMatrix::to_csr` are exact transposes of the storage
//! (same values, sorted indices).

use std::io::BufRead;
use std::path::Path;

use super::text::for_each_line;
use crate::{Error, Result};

/// An n×d matrix in compressed sparse row form: the entries of row i are
/// `indices[indptr[i]..indptr[i+1]]` (strictly increasing columns) with `values` alongside.
#[derive(Clone, Debug, PartialEq)]
pub struct CsrMatrix {
    pub n: usize,
    pub d: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<usize>,
    pub values: Vec<f64>,
}

/// An n×d matrix in compressed sparse column form: the entries of column j are
/// `indices[indptr[j]..indptr[j+1]]` (strictly increasing rows) with `values` alongside.
#[derive(Clone, Debug, PartialEq)]
pub struct CscMatrix {
    pub n: usize,
    pub d: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<usize>,
    pub values: Vec<f64>,
}

/// Counting-sort transpose of compressed storage: `(outer, inner)` → `(inner, outer)`.
fn transpose(
    outer: usize,
    inner: usize,
    indptr: &[usize],
    indices: &[usize],
    values: &[f64],
) -> (Vec<usize>, Vec<usize>, Vec<f64>) {
    let mut count = vec![0usize; inner + 1];
    for &j in indices {
        count[j + 1] += 1;
    }
    for j in 0..inner {
        count[j + 1] += count[j];
    }
    let new_ptr = count.clone();
    let mut next = count;
    let mut new_idx = vec![0usize; indices.len()];
    let mut new_val = vec![0.0; values.len()];
    for i in 0..outer {
        for k in indptr[i]..indptr[i + 1] {
            let j = indices[k];
            let dst = next[j];
            new_idx[dst] = i;
            new_val[dst] = values[k];
            next[j] += 1;
        }
    }
    (new_ptr, new_idx, new_val)
}

impl CsrMatrix {
    /// A CSR matrix from its arrays, checked: `indptr` has n + 1 non-decreasing entries from 0
    /// to nnz, every row's column indices are strictly increasing and below `d`, and every
    /// value is finite.
    pub fn from_parts(
        n: usize,
        d: usize,
        indptr: Vec<usize>,
        indices: Vec<usize>,
        values: Vec<f64>,
    ) -> Result<CsrMatrix> {
        let bad = |message: String| Error::Dimension(format!("sparse matrix: {message}"));
        if indptr.len() != n + 1 {
            return Err(bad(format!(
                "indptr has {} entries for {n} rows (needs {})",
                indptr.len(),
                n + 1
            )));
        }
        if indices.len() != values.len() {
            return Err(bad(format!(
                "{} column indices but {} values",
                indices.len(),
                values.len()
            )));
        }
        if indptr[0] != 0 || indptr[n] != indices.len() || indptr.windows(2).any(|w| w[0] > w[1]) {
            return Err(bad(format!(
                "indptr must rise from 0 to the number of stored entries ({})",
                indices.len()
            )));
        }
        for i in 0..n {
            let row = &indices[indptr[i]..indptr[i + 1]];
            if let Some(&j) = row.iter().find(|&&j| j >= d) {
                return Err(bad(format!("row {}: column {j} is not below {d}", i + 1)));
            }
            if row.windows(2).any(|w| w[0] >= w[1]) {
                return Err(bad(format!(
                    "row {}: column indices are not strictly increasing (sort them and sum duplicates first)",
                    i + 1
                )));
            }
        }
        if let Some(k) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::Numerical(format!(
                "sparse matrix: stored value {k} is {}; the data must be finite",
                values[k]
            )));
        }
        Ok(CsrMatrix {
            n,
            d,
            indptr,
            indices,
            values,
        })
    }

    /// The CSR form of a dense row-major matrix (zeros dropped).
    pub fn from_dense(x: &ndarray::Array2<f64>) -> CsrMatrix {
        let (n, d) = x.dim();
        let mut indptr = vec![0];
        let mut indices = Vec::new();
        let mut values = Vec::new();
        for row in x.rows() {
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    indices.push(j);
                    values.push(v);
                }
            }
            indptr.push(indices.len());
        }
        CsrMatrix {
            n,
            d,
            indptr,
            indices,
            values,
        }
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// The same matrix in CSC form.
    pub fn to_csc(&self) -> CscMatrix {
        let (indptr, indices, values) =
            transpose(self.n, self.d, &self.indptr, &self.indices, &self.values);
        CscMatrix {
            n: self.n,
            d: self.d,
            indptr,
            indices,
            values,
        }
    }

    /// The rows `rows` (0-based, in order; repeats allowed) as a new matrix.
    ///
    /// # Panics
    /// If an index is `>= self.n`.
    pub fn select_rows(&self, rows: &[usize]) -> CsrMatrix {
        let mut indptr = vec![0];
        let mut indices = Vec::new();
        let mut values = Vec::new();
        for &i in rows {
            let range = self.indptr[i]..self.indptr[i + 1];
            indices.extend_from_slice(&self.indices[range.clone()]);
            values.extend_from_slice(&self.values[range]);
            indptr.push(indices.len());
        }
        CsrMatrix {
            n: rows.len(),
            d: self.d,
            indptr,
            indices,
            values,
        }
    }

    /// The same rows with `d` columns (`d ≥ self.d`; nothing is stored for the new columns).
    /// Errors: [`Error::Dimension`] if `d < self.d`.
    pub fn with_columns(&self, d: usize) -> Result<CsrMatrix> {
        if d < self.d {
            return Err(Error::Dimension(format!(
                "a sparse matrix with {} columns cannot shrink to {d}",
                self.d
            )));
        }
        let mut out = self.clone();
        out.d = d;
        Ok(out)
    }

    /// The dense row-major form. Errors: [`Error::Dimension`] if it cannot be allocated.
    pub fn to_dense(&self) -> Result<ndarray::Array2<f64>> {
        let mut x = super::text::zeros_checked(self.n, self.d, "sparse matrix")?;
        for i in 0..self.n {
            for k in self.indptr[i]..self.indptr[i + 1] {
                x[[i, self.indices[k]]] = self.values[k];
            }
        }
        Ok(x)
    }
}

impl CscMatrix {
    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// The same matrix in CSR form.
    pub fn to_csr(&self) -> CsrMatrix {
        let (indptr, indices, values) =
            transpose(self.d, self.n, &self.indptr, &self.indices, &self.values);
        CsrMatrix {
            n: self.n,
            d: self.d,
            indptr,
            indices,
            values,
        }
    }

    /// Column j as `(row indices, values)`.
    #[inline]
    pub fn col(&self, j: usize) -> (&[usize], &[f64]) {
        let r = self.indptr[j]..self.indptr[j + 1];
        (&self.indices[r.clone()], &self.values[r])
    }
}

/// A labelled dataset with a sparse (CSR) design, as read from a LIBSVM file.
#[derive(Clone, Debug)]
pub struct SparseDataset {
    pub x: CsrMatrix,
    pub y: Vec<f64>,
    pub name: String,
}

impl SparseDataset {
    /// Number of rows.
    pub fn n(&self) -> usize {
        self.x.n
    }
    /// Number of features.
    pub fn d(&self) -> usize {
        self.x.d
    }
    /// The rows `rows` as a new dataset with the same name.
    ///
    /// # Panics
    /// If an index is `>= self.n()`.
    pub fn select(&self, rows: &[usize]) -> SparseDataset {
        SparseDataset {
            x: self.x.select_rows(rows),
            y: rows.iter().map(|&i| self.y[i]).collect(),
            name: self.name.clone(),
        }
    }
}

/// Reads a LIBSVM file into CSR storage without ever building the dense matrix: the same
/// format, rules and error messages as [`super::read_libsvm`] (1-based strictly increasing
/// indices, `#` comments, an optional `qid:` token; malformed or non-finite numbers are
/// [`Error::Parse`] naming `path` and the line). Explicit zeros are dropped. The width is the
/// largest index seen, or `min_features` if that is larger; a largest index beyond what the
/// file can justify (see `libsvm::size_limit`: 2²⁴, or 256 per byte of text) is refused, at
/// its line, as the vectors of that length would not fit.
pub fn read_libsvm_sparse(
    reader: impl BufRead,
    path: &Path,
    min_features: usize,
) -> Result<SparseDataset> {
    let mut labels: Vec<f64> = Vec::new();
    let mut indptr = vec![0usize];
    let mut indices: Vec<usize> = Vec::new();
    let mut values: Vec<f64> = Vec::new();
    let mut max_index = 0usize;
    let mut max_index_line = 0usize;
    let mut bytes = 0usize;

    let lines = for_each_line(reader, path, |line_no, line| {
        bytes += line.len() + 1;
        let Some(parsed) = super::libsvm::parse_line(line, path, line_no)? else {
            return Ok(());
        };
        labels.push(parsed.label);
        if parsed.last_index > max_index {
            max_index = parsed.last_index;
            max_index_line = line_no;
        }
        for (c, v) in parsed.features {
            indices.push(c);
            values.push(v);
        }
        indptr.push(indices.len());
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
        return Err(super::libsvm::no_features(path, lines));
    }
    let limit = super::libsvm::size_limit(bytes);
    if max_index > limit {
        return Err(Error::parse(
            path,
            max_index_line,
            format!(
                "feature index {max_index} makes {max_index} features, more than {bytes} bytes \
                 of LIBSVM text can justify (at most {limit}: 2^24, or 256 per byte of the file)"
            ),
        ));
    }
    Ok(SparseDataset {
        x: CsrMatrix {
            n: labels.len(),
            d: max_index.max(min_features),
            indptr,
            indices,
            values,
        },
        y: labels,
        name: path.display().to_string(),
    })
}

/// Whether `spec` names a LIBSVM file (by its extension `.svm`, `.libsvm`, `.txt`, optionally
/// `.gz`, or, for other names, by its first data line), i.e. whether [`load_sparse`] keeps it
/// sparse.
pub fn is_libsvm_file(spec: &str) -> bool {
    if super::bundled_names().contains(&spec) || spec.starts_with("synthetic:") {
        return false;
    }
    let path = Path::new(spec);
    match super::format_from_name(path) {
        Some(f) => f == super::Format::Libsvm,
        None => super::text::read_file_bytes(path)
            .map(|b| super::sniff_format(&b) == super::Format::Libsvm)
            .unwrap_or(false),
    }
}

/// Whether `spec` names a file that [`load_sparse`] keeps sparse: LIBSVM ([`is_libsvm_file`])
/// or a CSR `.npz` (by its extension or, for other names, its ZIP magic bytes).
pub fn is_sparse_file(spec: &str) -> bool {
    if super::bundled_names().contains(&spec) || spec.starts_with("synthetic:") {
        return false;
    }
    match super::format_from_name(Path::new(spec)) {
        Some(super::Format::Npz) => true,
        Some(_) => is_libsvm_file(spec),
        None => {
            let mut head = [0u8; 4];
            let npz = std::fs::File::open(spec)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                .is_ok()
                && head == *super::npz::MAGIC;
            npz || is_libsvm_file(spec)
        }
    }
}

/// Reads a LIBSVM file (optionally gzipped), or a CSR `.npz` ([`super::npz::read_npz`]), as a
/// [`SparseDataset`] named `spec`.
pub fn load_sparse(spec: &str) -> Result<SparseDataset> {
    let path = Path::new(spec);
    if super::format_from_name(path) == Some(super::Format::Npz) {
        let mut ds = super::npz::read_npz(path)?;
        ds.name = spec.to_string();
        return Ok(ds);
    }
    let bytes = super::text::read_file_bytes(path)?;
    if bytes.starts_with(super::npz::MAGIC) {
        let mut ds = super::npz::sparse_from_npz(&bytes, path)?;
        ds.name = spec.to_string();
        return Ok(ds);
    }
    let mut ds = read_libsvm_sparse(bytes.as_slice(), path, 0)?;
    ds.name = spec.to_string();
    Ok(ds)
}
