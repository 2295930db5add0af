//! Seeded synthetic datasets with a known ground truth: linear regression, logistic
//! (±1 labels) and softmax (multi-class) models over a correlated Gaussian design.
//!
//! Every generator draws, from one [`Rng`] seeded with `seed`, first the true parameters and
//! then the design row by row, then the labels. The true parameters therefore depend only on
//! `(d, scale, seed)` (and `c`), not on `n`.
//!
//! The same generators are reachable from [`crate::data::load`] through a spec string
//! `synthetic:KIND:key=val,...`; see [`parse_spec`].

use ndarray::{Array1, Array2};

use super::rng::Rng;
use super::Dataset;
use crate::error::printable;
use crate::{Error, Result};

/// An n×d Gaussian design whose rows have Toeplitz correlation `corr(x_j, x_k) = rho^|j-k|`:
/// along each row an AR(1) chain `x_0 = z_0`, `x_j = rho·x_{j-1} + sqrt(1-rho²)·z_j` with
/// independent standard normals `z_j`, so every entry is N(0, 1).
///
/// `rho` should lie in `[0, 1)`; the spec parser enforces this. (Values in `(-1, 0)` also give
/// a valid design, with alternating correlations.)
pub fn design(n: usize, d: usize, rho: f64, rng: &mut Rng) -> Array2<f64> {
    let innovation = (1.0 - rho * rho).max(0.0).sqrt();
    let mut x = Array2::<f64>::zeros((n, d));
    for mut row in x.rows_mut() {
        let mut prev = 0.0;
        for (j, v) in row.iter_mut().enumerate() {
            let z = rng.normal();
            let val = if j == 0 {
                z
            } else {
                rho * prev + innovation * z
            };
            *v = val;
            prev = val;
        }
    }
    x
}

/// `d` independent N(0, scale²/d) draws.
fn gaussian_vector(d: usize, scale: f64, rng: &mut Rng) -> Vec<f64> {
    let sd = scale / (d.max(1) as f64).sqrt();
    (0..d).map(|_| sd * rng.normal()).collect()
}

fn sigmoid(t: f64) -> f64 {
    if t >= 0.0 {
        1.0 / (1.0 + (-t).exp())
    } else {
        let e = t.exp();
        e / (1.0 + e)
    }
}

/// Linear regression data: `y = X w* + noise·ε`, ε ~ N(0, 1), `w*_j ~ N(0, 1/d)`, X from
/// [`design`]. Returns the dataset and `w*`.
pub fn linear(n: usize, d: usize, rho: f64, noise: f64, seed: u64) -> (Dataset, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let w = gaussian_vector(d, 1.0, &mut rng);
    let x = design(n, d, rho, &mut rng);
    let xw = x.dot(&Array1::from(w.clone()));
    let y: Vec<f64> = xw.iter().map(|&m| m + noise * rng.normal()).collect();
    let name = format!("synthetic:linear:n={n},d={d},rho={rho},noise={noise},seed={seed}");
    (Dataset { x, y, name }, w)
}

/// Binary classification data with labels in {−1, +1}: `P(y = +1 | x) = sigmoid(x·w*)`,
/// `w*_j ~ N(0, scale²/d)`, X from [`design`]. Returns the dataset and `w*`.
///
/// With `rho = 0` the margin `x·w*` is roughly N(0, scale²), so `scale` sets how separable the
/// classes are (larger: higher Bayes accuracy).
pub fn logistic(n: usize, d: usize, rho: f64, scale: f64, seed: u64) -> (Dataset, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let w = gaussian_vector(d, scale, &mut rng);
    let x = design(n, d, rho, &mut rng);
    let xw = x.dot(&Array1::from(w.clone()));
    let y: Vec<f64> = xw
        .iter()
        .map(|&m| {
            if rng.uniform() < sigmoid(m) {
                1.0
            } else {
                -1.0
            }
        })
        .collect();
    let name = format!("synthetic:logistic:n={n},d={d},rho={rho},scale={scale},seed={seed}");
    (Dataset { x, y, name }, w)
}

/// Multi-class data with labels in `0..c`: `P(y = k | x) = softmax(W*ᵀx)_k`, with the d×c
/// matrix `W*` having entries ~ N(0, scale²/d) (drawn row by row), X from [`design`].
/// Returns the dataset and `W*`.
pub fn softmax(
    n: usize,
    d: usize,
    c: usize,
    rho: f64,
    scale: f64,
    seed: u64,
) -> (Dataset, Array2<f64>) {
    let mut rng = Rng::new(seed);
    let sd = scale / (d.max(1) as f64).sqrt();
    let w_flat: Vec<f64> = (0..d * c).map(|_| sd * rng.normal()).collect();
    let w = Array2::from_shape_vec((d, c), w_flat).expect("length is d*c by construction");
    let x = design(n, d, rho, &mut rng);
    let logits = x.dot(&w);
    let mut probs = vec![0.0; c];
    let y: Vec<f64> = logits
        .rows()
        .into_iter()
        .map(|row| {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut total = 0.0;
            for (p, &l) in probs.iter_mut().zip(row.iter()) {
                *p = (l - max).exp();
                total += *p;
            }
            let u = rng.uniform() * total;
            let mut acc = 0.0;
            let mut label = c.saturating_sub(1);
            for (k, &p) in probs.iter().enumerate() {
                acc += p;
                if u < acc {
                    label = k;
                    break;
                }
            }
            label as f64
        })
        .collect();
    let name = format!("synthetic:softmax:n={n},d={d},c={c},rho={rho},scale={scale},seed={seed}");
    (Dataset { x, y, name }, w)
}

/// The option name used in errors about a synthetic spec.
const OPTION: &str = "--train";

/// Largest matrix a synthetic spec may ask for (n·d, and softmax's d×c W*): 2³⁰ entries,
/// 8 GiB of f64.
const MAX_ENTRIES: usize = 1 << 30;

/// Builds a dataset from a spec `synthetic:KIND:key=val,key=val,...` (the text after
/// `synthetic:` may be passed with or without that prefix): [`SyntheticSpec::parse`], then
/// [`SyntheticSpec::generate`].
///
/// | KIND       | required keys | optional keys (default)                      |
/// |------------|---------------|----------------------------------------------|
/// | `linear`   | `n`, `d`      | `rho` (0), `noise` (0.1), `seed` (0)         |
/// | `logistic` | `n`, `d`      | `rho` (0), `scale` (3), `seed` (0)           |
/// | `softmax`  | `n`, `d`, `c` | `rho` (0), `scale` (3), `seed` (0)           |
///
/// `n, d ≥ 1`, `c ≥ 2`, `rho` in `[0, 1)`, `noise, scale ≥ 0` and finite; n·d, n·c and d·c
/// at most 2³⁰. Unknown or repeated keys, bad numbers, out-of-range values and a noise so
/// large that a label overflows are [`Error::InvalidOption`] for `--train`, quoting the spec. (`synthetic:quadratic:…` is a bilevel problem, not a dataset: see
/// [`QuadraticSpec::parse`].)
pub fn parse_spec(spec: &str) -> Result<Dataset> {
    let ds = SyntheticSpec::parse(spec)?.generate();
    // A noise near f64's largest value overflows some labels to infinity.
    if let Some((i, v)) = ds.y.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(bad(
            spec,
            format!(
                "label {} is {v}: the noise is too large for f64 numbers",
                i + 1
            ),
        ));
    }
    Ok(ds)
}

/// The model of a synthetic dataset and its own parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SyntheticKind {
    /// [`linear`], with the label noise's standard deviation.
    Linear { noise: f64 },
    /// [`logistic`], with the scale of w*.
    Logistic { scale: f64 },
    /// [`softmax`] over `c` classes, with the scale of W*.
    Softmax { c: usize, scale: f64 },
}

/// A parsed spec `synthetic:KIND:key=val,...` (see [`parse_spec`]): what to generate, checked
/// but not yet generated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SyntheticSpec {
    pub kind: SyntheticKind,
    pub n: usize,
    pub d: usize,
    pub rho: f64,
    pub seed: u64,
}

impl SyntheticSpec {
    /// Parses and checks a spec; the errors of [`parse_spec`].
    pub fn parse(spec: &str) -> Result<SyntheticSpec> {
        let (kind, params) = split_spec(spec);
        let allowed: &[&str] =
            match kind {
                "linear" => &["n", "d", "rho", "noise", "seed"],
                "logistic" => &["n", "d", "rho", "scale", "seed"],
                "softmax" => &["n", "d", "c", "rho", "scale", "seed"],
                "quadratic" => return Err(bad(
                    spec,
                    "quadratic is a bilevel problem (its matrices A, b, C, D, e), not a dataset: \
                     use it with --problem quadratic"
                        .into(),
                )),
                _ => {
                    return Err(bad(
                        spec,
                        format!("unknown kind '{kind}' (expected linear, logistic or softmax)"),
                    ))
                }
            };
        let params = Params::parse(spec, kind, params, allowed)?;

        let n = params.size("n", 1)?;
        let d = params.size("d", 1)?;
        let rho = params.real("rho", 0.0)?;
        if !(0.0..1.0).contains(&rho) {
            return Err(bad(spec, format!("rho must be in [0, 1), got {rho}")));
        }
        let seed = params.int("seed", Some(0))?;
        let c = if kind == "softmax" {
            params.size("c", 2)?
        } else {
            1
        };
        check_entries(spec, ("n", "d"), n, d.max(c))?;
        // softmax also draws the d×c matrix W*.
        check_entries(spec, ("d", "c"), d, c)?;

        let kind = match kind {
            "linear" => {
                let noise = params.real("noise", 0.1)?;
                if noise < 0.0 {
                    return Err(bad(spec, format!("noise must be >= 0, got {noise}")));
                }
                SyntheticKind::Linear { noise }
            }
            _ => {
                let scale = params.real("scale", 3.0)?;
                if scale < 0.0 {
                    return Err(bad(spec, format!("scale must be >= 0, got {scale}")));
                }
                if kind == "logistic" {
                    SyntheticKind::Logistic { scale }
                } else {
                    SyntheticKind::Softmax { c, scale }
                }
            }
        };
        Ok(SyntheticSpec {
            kind,
            n,
            d,
            rho,
            seed,
        })
    }

    /// The dataset (named by its canonical spec).
    pub fn generate(&self) -> Dataset {
        let SyntheticSpec {
            kind,
            n,
            d,
            rho,
            seed,
        } = *self;
        match kind {
            SyntheticKind::Linear { noise } => linear(n, d, rho, noise, seed).0,
            SyntheticKind::Logistic { scale } => logistic(n, d, rho, scale, seed).0,
            SyntheticKind::Softmax { c, scale } => softmax(n, d, c, rho, scale, seed).0,
        }
    }
}

/// `(KIND, "key=val,...")` of a spec, with or without its `synthetic:` prefix.
fn split_spec(spec: &str) -> (&str, &str) {
    let body = spec.strip_prefix("synthetic:").unwrap_or(spec);
    match body.split_once(':') {
        Some((k, p)) => (k.trim(), p),
        None => (body.trim(), ""),
    }
}

/// The error about a spec: an invalid `--train`, quoting the spec (on one line, whatever it
/// holds).
fn bad(spec: &str, message: String) -> Error {
    Error::option(
        OPTION,
        format!(
            "synthetic spec '{}': {}",
            printable(spec),
            printable(&message)
        ),
    )
}

/// Refuses a spec whose matrix would hold more than [`MAX_ENTRIES`] entries (`names` are
/// the keys of its two sides, e.g. `("n", "d")`).
fn check_entries(spec: &str, names: (&str, &str), rows: usize, cols: usize) -> Result<()> {
    match rows.checked_mul(cols) {
        Some(e) if e <= MAX_ENTRIES => Ok(()),
        _ => Err(bad(
            spec,
            format!(
                "{} x {} = {rows} x {cols} is too large (at most 2^30 = {MAX_ENTRIES} entries)",
                names.0, names.1
            ),
        )),
    }
}

/// The `key=val` pairs of a spec, each key allowed for its kind and given at most once.
struct Params<'a> {
    spec: &'a str,
    given: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    fn parse(spec: &'a str, kind: &str, params: &'a str, allowed: &[&str]) -> Result<Self> {
        let mut given: Vec<(&str, &str)> = Vec::new();
        for item in params.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let Some((key, val)) = item.split_once('=') else {
                return Err(bad(spec, format!("expected key=value, found '{item}'")));
            };
            let (key, val) = (key.trim(), val.trim());
            if !allowed.contains(&key) {
                return Err(bad(
                    spec,
                    format!(
                        "unknown key '{key}' for {kind} (allowed: {})",
                        allowed.join(", ")
                    ),
                ));
            }
            if given.iter().any(|(k, _)| *k == key) {
                return Err(bad(spec, format!("key '{key}' given twice")));
            }
            given.push((key, val));
        }
        Ok(Params { spec, given })
    }

    fn lookup(&self, key: &str) -> Option<&'a str> {
        self.given.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// A non-negative integer; `default` when the key is absent (required when `None`).
    fn int(&self, key: &str, default: Option<u64>) -> Result<u64> {
        match self.lookup(key) {
            Some(v) => v.parse::<u64>().map_err(|_| {
                bad(
                    self.spec,
                    format!("{key}='{v}' is not a non-negative integer"),
                )
            }),
            None => default.ok_or_else(|| bad(self.spec, format!("missing required key '{key}'"))),
        }
    }

    /// A finite number, `default` when the key is absent.
    fn real(&self, key: &str, default: f64) -> Result<f64> {
        match self.lookup(key) {
            Some(v) => match v.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(x),
                _ => Err(bad(
                    self.spec,
                    format!("{key}='{v}' is not a finite number"),
                )),
            },
            None => Ok(default),
        }
    }

    /// A size of at least `min` (required).
    fn size(&self, key: &str, min: usize) -> Result<usize> {
        self.size_or(key, min, None)
    }

    /// A size of at least `min`, `default` when the key is absent (required when `None`).
    fn size_or(&self, key: &str, min: usize, default: Option<usize>) -> Result<usize> {
        let v = self.int(key, default.map(|d| d as u64))?;
        let v =
            usize::try_from(v).map_err(|_| bad(self.spec, format!("{key}={v} is too large")))?;
        if v < min {
            return Err(bad(
                self.spec,
                format!("{key} must be at least {min}, got {v}"),
            ));
        }
        Ok(v)
    }
}

/// The spec of Ehrhardt & Roberts' quadratic bilevel problem (SPEC §9):
/// `synthetic:quadratic:m=1000,nx=10,nw=10,noise=0.01,seed=0` (every key optional, these are
/// the defaults; the upper and the lower level have `m` rows each, as in their experiments).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuadraticSpec {
    pub m: usize,
    pub nx: usize,
    pub nw: usize,
    /// Standard deviation of the Gaussian noise added to `b` and `e`.
    pub noise: f64,
    pub seed: u64,
}

impl Default for QuadraticSpec {
    /// Their experiment's size (`QuadraticProblem(m1=1000, m2=1000, nx=10, nw=10)`, noise
    /// 0.01, seed 0).
    fn default() -> Self {
        QuadraticSpec {
            m: 1000,
            nx: 10,
            nw: 10,
            noise: 0.01,
            seed: 0,
        }
    }
}

impl QuadraticSpec {
    /// Parses `synthetic:quadratic:key=val,...` (keys `m`, `nx`, `nw`, `noise`, `seed`; the
    /// `synthetic:` prefix may be left out). `nx, nw ≥ 1`, `m ≥ nx` (D must have full column
    /// rank for the inner problem to be strongly convex), `noise ≥ 0`. Errors are one line
    /// for `--train`, quoting the spec.
    pub fn parse(spec: &str) -> Result<QuadraticSpec> {
        let (kind, params) = split_spec(spec);
        if kind != "quadratic" {
            return Err(Error::option(
                OPTION,
                format!(
                    "--problem quadratic generates its matrices from a spec \
                     synthetic:quadratic:m=1000,nx=10,nw=10,seed=0, not from '{}'",
                    printable(spec)
                ),
            ));
        }
        let allowed = ["m", "nx", "nw", "noise", "seed"];
        let params = Params::parse(spec, kind, params, &allowed)?;
        let defaults = QuadraticSpec::default();
        let nx = params.size_or("nx", 1, Some(defaults.nx))?;
        let nw = params.size_or("nw", 1, Some(defaults.nw))?;
        let m = params.size_or("m", 1, Some(defaults.m))?;
        if m < nx {
            return Err(bad(
                spec,
                format!(
                    "m = {m} rows cannot give D (m×nx) full column rank with nx = {nx}; use m ≥ nx"
                ),
            ));
        }
        check_entries(spec, ("m", "max(nx, nw)"), m, nx.max(nw))?;
        let noise = params.real("noise", defaults.noise)?;
        if noise < 0.0 {
            return Err(bad(spec, format!("noise must be >= 0, got {noise}")));
        }
        let seed = params.int("seed", Some(defaults.seed))?;
        Ok(QuadraticSpec {
            m,
            nx,
            nw,
            noise,
            seed,
        })
    }

    /// The canonical spec, every key spelled out.
    pub fn name(&self) -> String {
        format!(
            "synthetic:quadratic:m={},nx={},nw={},noise={},seed={}",
            self.m, self.nx, self.nw, self.noise, self.seed
        )
    }

    /// The matrices, drawn as Ehrhardt & Roberts' `QuadraticProblem.__init__` draws them
    /// (itself after Li, Gu & Huang 2022, §6.1), in the same order from one [`Rng`] seeded with
    /// `seed`:
    ///
    /// ```text
    /// A ~ U[0,1)^{m×nx},  b = A u_b + σ ε_b,               u_b ~ U[0,1)^{nx}, ε_b ~ N(0, I_m)
    /// C ~ U[0,1)^{m×nw},  D ~ U[0,1)^{m×nx},
    /// e = C u_c + D u_d + σ ε_e,                           u_c ~ U[0,1)^{nw}, u_d ~ U[0,1)^{nx}
    /// ```
    ///
    /// Their code draws from numpy's Mersenne Twister (`np.random.seed(seed)`), which this
    /// generator does not reproduce: a seed here gives matrices from the same distribution,
    /// not the same matrices. The conditioning that matters (σ(D), ‖A‖, ‖DᵀC‖) is a property
    /// of the distribution at m = 1000, nx = nw = 10 and comes out alike (BENCHMARKS.md).
    pub fn generate(&self) -> QuadraticData {
        let QuadraticSpec {
            m,
            nx,
            nw,
            noise,
            seed,
        } = *self;
        let mut rng = Rng::new(seed);
        let a = uniform_vec(&mut rng, m * nx);
        let b = {
            let u_b = uniform_vec(&mut rng, nx);
            let mut b = mat_vec(&a, nx, &u_b);
            b.iter_mut().for_each(|v| *v += noise * rng.normal());
            b
        };
        let c = uniform_vec(&mut rng, m * nw);
        let d = uniform_vec(&mut rng, m * nx);
        let e = {
            let u_c = uniform_vec(&mut rng, nw);
            let u_d = uniform_vec(&mut rng, nx);
            let mut e = mat_vec(&c, nw, &u_c);
            for (ei, di) in e.iter_mut().zip(mat_vec(&d, nx, &u_d)) {
                *ei += di + noise * rng.normal();
            }
            e
        };
        QuadraticData {
            spec: *self,
            a,
            b,
            c,
            d,
            e,
        }
    }
}

/// The matrices of the quadratic problem, row-major: `A` (m×nx), `b` (m), `C` (m×nw),
/// `D` (m×nx), `e` (m).
#[derive(Clone, Debug)]
pub struct QuadraticData {
    pub spec: QuadraticSpec,
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    pub c: Vec<f64>,
    pub d: Vec<f64>,
    pub e: Vec<f64>,
}

/// `len` independent U[0, 1) draws.
fn uniform_vec(rng: &mut Rng, len: usize) -> Vec<f64> {
    (0..len).map(|_| rng.uniform()).collect()
}

/// `M v` for a row-major `M` with `cols` columns.
fn mat_vec(m: &[f64], cols: usize, v: &[f64]) -> Vec<f64> {
    m.chunks_exact(cols)
        .map(|row| row.iter().zip(v).map(|(a, b)| a * b).sum())
        .collect()
}
