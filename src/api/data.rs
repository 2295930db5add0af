//! The data a call works on: named sources (files, bundled datasets, synthetic specs) that
//! the library loads and splits, or arrays a caller already holds (the Python package). The
//! smooth problems see dense [`Dataset`]s; the ℓ1 problems see [`L1Data`] whose design stays
//! sparse when it came sparse (LIBSVM files, SciPy CSR/CSC).

use ndarray::Array2;

use super::settings::Settings;
use crate::data::sparse::{self, CsrMatrix, SparseDataset};
use crate::data::{self, Dataset};
use crate::l1::{Design, L1Data};
use crate::{Error, Result};

/// One table of rows and labels, dense or sparse.
#[derive(Clone, Debug)]
pub enum Data {
    Dense(Dataset),
    Sparse(SparseDataset),
}

impl Data {
    /// Dense rows `x` (n×d) with labels `y`. Errors: shapes that disagree, non-finite values.
    pub fn dense(x: Array2<f64>, y: Vec<f64>, name: &str) -> Result<Data> {
        Ok(Data::Dense(Dataset::new(x, y, name)?))
    }

    /// A CSR matrix (`indptr` of length n + 1, column `indices` and `values` per row) with
    /// labels `y`. Errors: inconsistent arrays, column indices out of range, non-finite
    /// values.
    pub fn sparse_csr(
        n_rows: usize,
        n_cols: usize,
        indptr: Vec<usize>,
        indices: Vec<usize>,
        values: Vec<f64>,
        y: Vec<f64>,
        name: &str,
    ) -> Result<Data> {
        let x = CsrMatrix::from_parts(n_rows, n_cols, indptr, indices, values)?;
        if y.len() != n_rows {
            return Err(Error::Dimension(format!(
                "'{name}' has {n_rows} rows but {} labels",
                y.len()
            )));
        }
        if let Some(i) = y.iter().position(|v| !v.is_finite()) {
            return Err(Error::Labels(format!(
                "dataset '{name}': label at row {} is not finite",
                i + 1
            )));
        }
        Ok(Data::Sparse(SparseDataset {
            x,
            y,
            name: name.to_string(),
        }))
    }

    pub fn n(&self) -> usize {
        match self {
            Data::Dense(d) => d.n(),
            Data::Sparse(s) => s.n(),
        }
    }

    pub fn d(&self) -> usize {
        match self {
            Data::Dense(d) => d.d(),
            Data::Sparse(s) => s.d(),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Data::Dense(d) => &d.name,
            Data::Sparse(s) => &s.name,
        }
    }

    pub fn is_sparse(&self) -> bool {
        matches!(self, Data::Sparse(_))
    }

    fn select(&self, rows: &[usize]) -> Data {
        match self {
            Data::Dense(d) => Data::Dense(d.select(rows)),
            Data::Sparse(s) => Data::Sparse(s.select(rows)),
        }
    }

    fn rename(&mut self, name: String) {
        match self {
            Data::Dense(d) => d.name = name,
            Data::Sparse(s) => s.name = name,
        }
    }

    /// As a dense dataset of `d` columns (a sparse one is expanded).
    fn into_dense(self, d: usize) -> Result<Dataset> {
        match self {
            Data::Dense(ds) => ds.with_columns(d),
            Data::Sparse(s) => Dataset::new(s.x.with_columns(d)?.to_dense()?, s.y, s.name),
        }
    }

    /// As ℓ1 data with `d` columns, stored sparse when `sparse`.
    fn into_l1(self, d: usize, sparse: bool) -> Result<L1Data> {
        let (design, y) = match self {
            Data::Sparse(s) => {
                let x = s.x.with_columns(d)?;
                let design = if sparse {
                    Design::sparse(&x)?
                } else {
                    Design::dense(&x.to_dense()?)?
                };
                (design, s.y)
            }
            Data::Dense(ds) => {
                let ds = ds.with_columns(d)?;
                let design = if sparse {
                    Design::sparse(&CsrMatrix::from_dense(&ds.x))?
                } else {
                    Design::dense(&ds.x)?
                };
                (design, ds.y)
            }
        };
        L1Data::new(design, y)
    }
}

/// Training, validation and (optional) test rows.
#[derive(Clone, Debug)]
pub struct Splits {
    pub train: Data,
    pub val: Data,
    pub test: Option<Data>,
}

/// Where `grad` and `run` read their data: `--train`, `--val`, `--test` (SPEC §6). Without
/// `val`, `train` is split by the settings' `split` fractions and `seed`.
#[derive(Clone, Debug, Default)]
pub struct DataSource {
    pub train: String,
    pub val: Option<String>,
    pub test: Option<String>,
}

/// The data of a call: named sources to load, or rows already in memory.
#[derive(Clone, Debug)]
pub enum Input {
    Source(DataSource),
    Rows(Box<Splits>),
}

impl From<Splits> for Input {
    fn from(splits: Splits) -> Self {
        Input::Rows(Box::new(splits))
    }
}

impl From<DataSource> for Input {
    fn from(source: DataSource) -> Self {
        Input::Source(source)
    }
}

/// The dense data of a smooth problem.
pub struct DenseSplits {
    pub train: Dataset,
    pub val: Dataset,
    pub test: Option<Dataset>,
}

/// The data of an ℓ1 problem, with the names of the training and validation parts.
pub struct L1Splits {
    pub train: L1Data,
    pub val: L1Data,
    pub test: Option<L1Data>,
    pub names: [String; 2],
    /// Whether the design is stored sparse.
    pub sparse: bool,
}

impl Input {
    /// Loads (as needed) and splits the data for a smooth problem; standardises it when the
    /// settings ask. Sparse rows are expanded.
    pub fn dense(&self, settings: &Settings) -> Result<DenseSplits> {
        let mut splits = match self {
            Input::Source(source) => load_dense(source, settings)?,
            Input::Rows(rows) => {
                let d = width(rows);
                DenseSplits {
                    train: rows.train.clone().into_dense(d)?,
                    val: rows.val.clone().into_dense(d)?,
                    test: rows.test.clone().map(|t| t.into_dense(d)).transpose()?,
                }
            }
        };
        if settings.standardize {
            let DenseSplits { train, val, test } = &mut splits;
            match test {
                Some(test) => data::standardize(train, &mut [val, test]),
                None => data::standardize(train, &mut [val]),
            };
        }
        Ok(splits)
    }

    /// Loads (as needed) and splits the data for an ℓ1 problem: the same rows as
    /// [`Input::dense`] for the same seed, but sparse designs stay sparse, and
    /// standardising sparse data is refused (it would densify it).
    pub fn l1(&self, settings: &Settings) -> Result<L1Splits> {
        let (rows, names) = match self {
            Input::Source(source) => {
                let named = source.val.is_some();
                let rows = load_rows(source, settings)?;
                let names = if named {
                    [rows.train.name().to_string(), rows.val.name().to_string()]
                } else {
                    [
                        format!("{}[train]", source.train),
                        format!("{}[val]", source.train),
                    ]
                };
                (rows, names)
            }
            Input::Rows(rows) => {
                let names = [rows.train.name().to_string(), rows.val.name().to_string()];
                (Splits::clone(rows), names)
            }
        };
        let sparse = rows.train.is_sparse();
        if settings.standardize {
            if sparse {
                return Err(Error::option(
                    "--standardize",
                    "it would densify the sparse (LIBSVM) design; scale the columns beforehand",
                ));
            }
            let Splits { train, val, test } = rows;
            let (Data::Dense(mut tr), Data::Dense(mut va)) = (train, val) else {
                return Err(Error::option("--standardize", "the validation data is sparse (LIBSVM) and cannot be z-scored without densifying it"));
            };
            let te = match test {
                Some(Data::Dense(mut te)) => {
                    data::standardize(&mut tr, &mut [&mut va, &mut te]);
                    Some(te)
                }
                Some(Data::Sparse(_)) => return Err(Error::option(
                    "--standardize",
                    "the test data is sparse (LIBSVM) and cannot be z-scored without densifying it",
                )),
                None => {
                    data::standardize(&mut tr, &mut [&mut va]);
                    None
                }
            };
            let d = tr.d().max(va.d());
            return Ok(L1Splits {
                train: Data::Dense(tr).into_l1(d, false)?,
                val: Data::Dense(va).into_l1(d, false)?,
                test: te.map(|t| Data::Dense(t).into_l1(d, false)).transpose()?,
                names,
                sparse: false,
            });
        }
        let d = width(&rows);
        Ok(L1Splits {
            train: rows.train.into_l1(d, sparse)?,
            val: rows.val.into_l1(d, sparse)?,
            test: rows.test.map(|t| t.into_l1(d, sparse)).transpose()?,
            names,
            sparse,
        })
    }
}

/// The widest of the parts (LIBSVM files end at their last used feature).
fn width(rows: &Splits) -> usize {
    rows.train
        .d()
        .max(rows.val.d())
        .max(rows.test.as_ref().map_or(0, Data::d))
}

/// The smooth problems' loader: every source dense (LIBSVM files padded to a common width),
/// split by `split` and `seed` when there is no `val`.
fn load_dense(source: &DataSource, settings: &Settings) -> Result<DenseSplits> {
    let mut specs = vec![source.train.as_str()];
    specs.extend(source.val.as_deref());
    specs.extend(source.test.as_deref());
    let mut loaded = data::load_all(&specs)?.into_iter();
    let mut next = || {
        loaded
            .next()
            .ok_or_else(|| Error::Backend("internal: a dataset went missing".into()))
    };
    let train_full = next()?;
    if source.val.is_some() {
        return Ok(DenseSplits {
            train: train_full,
            val: next()?,
            test: source.test.as_ref().map(|_| next()).transpose()?,
        });
    }
    let fractions = data::parse_split(&settings.split)?;
    let mut parts = data::split(&train_full, &fractions, settings.seed)?.into_iter();
    let (Some(train), Some(val)) = (parts.next(), parts.next()) else {
        return Err(Error::option("--split", "it needs at least two fractions"));
    };
    let split_test = parts.next();
    Ok(DenseSplits {
        train,
        val,
        test: match &source.test {
            Some(_) => Some(next()?),
            None => split_test,
        },
    })
}

/// The ℓ1 problems' loader: LIBSVM files are read sparse and never densified; the rows of
/// each part are those [`load_dense`] picks for the same seed.
fn load_rows(source: &DataSource, settings: &Settings) -> Result<Splits> {
    let load = |spec: &str| -> Result<Data> {
        if sparse::is_sparse_file(spec) {
            sparse::load_sparse(spec).map(Data::Sparse)
        } else {
            data::load(spec).map(Data::Dense)
        }
    };
    let train_full = load(&source.train)?;
    if let Some(val) = &source.val {
        return Ok(Splits {
            val: load(val)?,
            test: source.test.as_deref().map(load).transpose()?,
            train: train_full,
        });
    }
    let fractions = data::parse_split(&settings.split)?;
    // The row indices as labels of a zero-width dataset: data::split's exact split.
    let n = train_full.n();
    let index = Dataset::new(
        Array2::zeros((n, 0)),
        (0..n).map(|i| i as f64).collect(),
        train_full.name(),
    )?;
    let parts = data::split(&index, &fractions, settings.seed)?;
    let rows: Vec<Vec<usize>> = parts
        .iter()
        .map(|p| p.y.iter().map(|&i| i as usize).collect())
        .collect();
    let pick = |k: usize| {
        let mut part = train_full.select(&rows[k]);
        part.rename(parts[k].name.clone());
        part
    };
    let (train, val) = (pick(0), pick(1));
    let test = match &source.test {
        Some(t) => Some(load(t)?),
        None => rows.get(2).map(|_| pick(2)),
    };
    Ok(Splits { train, val, test })
}
