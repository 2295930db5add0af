//! The design matrix of the ℓ1 problems, dense or sparse, behind the few operations the
//! solvers need: column access (coordinate descent), `Xv`, `Xᵀr` and column norms.
//!
//! Dense designs are stored column-major (column j is contiguous), sparse ones as CSC, so
//! that a coordinate-descent update `r ← r − x_j δ` and the correlation `x_jᵀr` both read one
//! contiguous column.

use ndarray::Array2;

use crate::data::sparse::{CscMatrix, CsrMatrix};
use crate::{Error, Result};

/// An n×d design matrix, dense (column-major) or sparse (CSC).
#[derive(Clone, Debug)]
pub enum Design {
    /// Column-major values: column j is `data[j·n .. (j+1)·n]`.
    Dense { n: usize, d: usize, data: Vec<f64> },
    /// Compressed sparse columns.
    Sparse(CscMatrix),
}

fn check_finite(values: &[f64], what: &str) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(k) => Err(Error::Numerical(format!(
            "{what} has the non-finite value {} (entry {k})",
            values[k]
        ))),
    }
}

impl Design {
    /// A dense design from a row-major matrix. Errors: [`Error::Numerical`] on a non-finite
    /// entry.
    pub fn dense(x: &Array2<f64>) -> Result<Design> {
        let (n, d) = x.dim();
        let mut data = Vec::with_capacity(n * d);
        for col in x.columns() {
            data.extend(col.iter().copied());
        }
        check_finite(&data, "the design matrix")?;
        Ok(Design::Dense { n, d, data })
    }

    /// A sparse design from CSR storage (converted to CSC). Errors: [`Error::Numerical`] on a
    /// non-finite entry, [`Error::Dimension`] on inconsistent storage.
    pub fn sparse(x: &CsrMatrix) -> Result<Design> {
        if x.indptr.len() != x.n + 1
            || x.indptr.last() != Some(&x.indices.len())
            || x.indices.len() != x.values.len()
            || x.indices.iter().any(|&j| j >= x.d)
            || x.indptr.windows(2).any(|w| w[0] > w[1])
        {
            return Err(Error::Dimension(
                "inconsistent CSR storage (indptr, indices, values or width)".into(),
            ));
        }
        check_finite(&x.values, "the design matrix")?;
        Ok(Design::Sparse(x.to_csc()))
    }

    /// Number of rows n.
    pub fn n(&self) -> usize {
        match self {
            Design::Dense { n, .. } => *n,
            Design::Sparse(m) => m.n,
        }
    }

    /// Number of columns d.
    pub fn d(&self) -> usize {
        match self {
            Design::Dense { d, .. } => *d,
            Design::Sparse(m) => m.d,
        }
    }

    /// Whether the storage is sparse.
    pub fn is_sparse(&self) -> bool {
        matches!(self, Design::Sparse(_))
    }

    /// Stored entries (n·d when dense).
    pub fn nnz(&self) -> usize {
        match self {
            Design::Dense { data, .. } => data.len(),
            Design::Sparse(m) => m.nnz(),
        }
    }

    /// Dense storage of the same matrix when its density `nnz/(n·d)` is at least
    /// `min_density` (dense columns are faster to sweep than nearly full sparse ones);
    /// otherwise a copy of `self`.
    pub fn densify_if(&self, min_density: f64) -> Design {
        match self {
            Design::Sparse(m) if (m.nnz() as f64) >= min_density * (m.n * m.d) as f64 => {
                let mut data = vec![0.0; m.n * m.d];
                for j in 0..m.d {
                    let (idx, val) = m.col(j);
                    for (&i, &v) in idx.iter().zip(val) {
                        data[j * m.n + i] = v;
                    }
                }
                Design::Dense {
                    n: m.n,
                    d: m.d,
                    data,
                }
            }
            _ => self.clone(),
        }
    }

    /// The columns `cols` (all when `None`) as a dense row-major n×|cols| matrix, for backends
    /// that take dense designs. Errors: [`Error::Dimension`] if it cannot be allocated.
    pub fn to_row_major(&self, cols: Option<&[usize]>) -> Result<Array2<f64>> {
        let n = self.n();
        let all: Vec<usize>;
        let cols = match cols {
            Some(c) => c,
            None => {
                all = (0..self.d()).collect();
                &all
            }
        };
        let k = cols.len();
        let too_big =
            || Error::Dimension(format!("a dense {n} x {k} design is too large to allocate"));
        let len = n.checked_mul(k).ok_or_else(too_big)?;
        let mut data: Vec<f64> = Vec::new();
        data.try_reserve_exact(len).map_err(|_| too_big())?;
        data.resize(len, 0.0);
        let mut col = vec![0.0; n];
        for (c, &j) in cols.iter().enumerate() {
            col.iter_mut().for_each(|v| *v = 0.0);
            self.col_axpy(j, 1.0, &mut col);
            for i in 0..n {
                data[i * k + c] = col[i];
            }
        }
        Array2::from_shape_vec((n, k), data).map_err(|_| too_big())
    }

    /// Stored entries of column j.
    #[inline]
    pub fn col_nnz(&self, j: usize) -> usize {
        match self {
            Design::Dense { n, .. } => *n,
            Design::Sparse(m) => m.indptr[j + 1] - m.indptr[j],
        }
    }

    /// `x_jᵀ v`.
    #[inline]
    pub fn col_dot(&self, j: usize, v: &[f64]) -> f64 {
        match self {
            Design::Dense { n, data, .. } => {
                let c = &data[j * n..(j + 1) * n];
                c.iter().zip(v).map(|(a, b)| a * b).sum()
            }
            Design::Sparse(m) => {
                let (idx, val) = m.col(j);
                idx.iter().zip(val).map(|(&i, a)| a * v[i]).sum()
            }
        }
    }

    /// `v ← v + a·x_j`.
    #[inline]
    pub fn col_axpy(&self, j: usize, a: f64, v: &mut [f64]) {
        match self {
            Design::Dense { n, data, .. } => {
                let c = &data[j * n..(j + 1) * n];
                for (vi, ci) in v.iter_mut().zip(c) {
                    *vi += a * ci;
                }
            }
            Design::Sparse(m) => {
                let (idx, val) = m.col(j);
                for (&i, c) in idx.iter().zip(val) {
                    v[i] += a * c;
                }
            }
        }
    }

    /// `‖x_j‖²` for every column.
    pub fn col_sq_norms(&self) -> Vec<f64> {
        (0..self.d())
            .map(|j| match self {
                Design::Dense { n, data, .. } => {
                    data[j * n..(j + 1) * n].iter().map(|a| a * a).sum()
                }
                Design::Sparse(m) => m.col(j).1.iter().map(|a| a * a).sum(),
            })
            .collect()
    }

    /// `out ← X w` (columns with `w_j = 0` are skipped).
    pub fn matvec(&self, w: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        for (j, &wj) in w.iter().enumerate() {
            if wj != 0.0 {
                self.col_axpy(j, wj, out);
            }
        }
    }

    /// `out ← Xᵀ r`.
    pub fn rmatvec(&self, r: &[f64], out: &mut [f64]) {
        for (j, o) in out.iter_mut().enumerate() {
            *o = self.col_dot(j, r);
        }
    }

    /// The rows `rows` (0-based, distinct) as a new design of the same kind.
    ///
    /// # Panics
    /// If an index is `>= self.n()`.
    pub fn select_rows(&self, rows: &[usize]) -> Design {
        match self {
            Design::Dense { n, d, data } => {
                let mut out = Vec::with_capacity(rows.len() * d);
                for j in 0..*d {
                    let c = &data[j * n..(j + 1) * n];
                    out.extend(rows.iter().map(|&i| c[i]));
                }
                Design::Dense {
                    n: rows.len(),
                    d: *d,
                    data: out,
                }
            }
            Design::Sparse(m) => {
                // new_row[old] = position in `rows`, for the (distinct) selected rows.
                let mut new_row = vec![usize::MAX; m.n];
                for (k, &i) in rows.iter().enumerate() {
                    new_row[i] = k;
                }
                let mut indptr = vec![0];
                let mut entries: Vec<(usize, f64)> = Vec::new();
                let mut indices = Vec::new();
                let mut values = Vec::new();
                for j in 0..m.d {
                    let (idx, val) = m.col(j);
                    entries.clear();
                    entries.extend(
                        idx.iter()
                            .zip(val)
                            .filter(|(&i, _)| new_row[i] != usize::MAX)
                            .map(|(&i, &v)| (new_row[i], v)),
                    );
                    entries.sort_unstable_by_key(|e| e.0);
                    for &(i, v) in &entries {
                        indices.push(i);
                        values.push(v);
                    }
                    indptr.push(indices.len());
                }
                Design::Sparse(CscMatrix {
                    n: rows.len(),
                    d: m.d,
                    indptr,
                    indices,
                    values,
                })
            }
        }
    }

    /// An estimate of `‖X‖₂²` (largest eigenvalue of `XᵀX`) by `iters` power iterations from
    /// a fixed start vector, inflated by 1% since power iteration approaches from below.
    pub fn spectral_norm_sq(&self, iters: usize) -> f64 {
        let d = self.d();
        let mut v: Vec<f64> = crate::solver::linear::start_vector(d);
        let mut xv = vec![0.0; self.n()];
        let mut est = 0.0;
        for _ in 0..iters.max(1) {
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm == 0.0 {
                return 0.0;
            }
            v.iter_mut().for_each(|a| *a /= norm);
            self.matvec(&v, &mut xv);
            est = xv.iter().map(|a| a * a).sum::<f64>();
            self.rmatvec(&xv, &mut v);
        }
        1.01 * est
    }
}
