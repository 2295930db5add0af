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

/// Largest n·d a synthetic spec may ask for (2³⁰ entries, 8 GiB of f64).
const MAX_ENTRIES: usize = 1 << 30;

/// Builds a dataset from a spec `synthetic:KIND:key=val,key=val,...` (the text after
/// `synthetic:` may be passed with or without that prefix).
///
/// | KIND       | required keys | optional keys (default)                      |
/// |------------|---------------|----------------------------------------------|
/// | `linear`   | `n`, `d`      | `rho` (0), `noise` (0.1), `seed` (0)         |
/// | `logistic` | `n`, `d`      | `rho` (0), `scale` (3), `seed` (0)           |
/// | `softmax`  | `n`, `d`, `c` | `rho` (0), `scale` (3), `seed` (0)           |
///
/// `n, d ≥ 1`, `c ≥ 2`, `rho` in `[0, 1)`, `noise, scale ≥ 0` and finite. Unknown or repeated
/// keys, bad numbers and out-of-range values are [`Error::InvalidOption`] for `--train`,
/// quoting the spec.
pub fn parse_spec(spec: &str) -> Result<Dataset> {
    let bad = |m: String| Error::option(OPTION, format!("synthetic spec '{spec}': {m}"));
    let body = spec.strip_prefix("synthetic:").unwrap_or(spec);
    let (kind, params) = match body.split_once(':') {
        Some((k, p)) => (k.trim(), p),
        None => (body.trim(), ""),
    };
    let allowed: &[&str] = match kind {
        "linear" => &["n", "d", "rho", "noise", "seed"],
        "logistic" => &["n", "d", "rho", "scale", "seed"],
        "softmax" => &["n", "d", "c", "rho", "scale", "seed"],
        _ => {
            return Err(bad(format!(
                "unknown kind '{kind}' (expected linear, logistic or softmax)"
            )))
        }
    };

    let mut given: Vec<(&str, &str)> = Vec::new();
    for item in params.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((key, val)) = item.split_once('=') else {
            return Err(bad(format!("expected key=value, found '{item}'")));
        };
        let (key, val) = (key.trim(), val.trim());
        if !allowed.contains(&key) {
            return Err(bad(format!(
                "unknown key '{key}' for {kind} (allowed: {})",
                allowed.join(", ")
            )));
        }
        if given.iter().any(|(k, _)| *k == key) {
            return Err(bad(format!("key '{key}' given twice")));
        }
        given.push((key, val));
    }
    let lookup = |key: &str| given.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let int = |key: &str, default: Option<u64>| -> Result<u64> {
        match lookup(key) {
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| bad(format!("{key}='{v}' is not a non-negative integer"))),
            None => default.ok_or_else(|| bad(format!("missing required key '{key}'"))),
        }
    };
    let real = |key: &str, default: f64| -> Result<f64> {
        match lookup(key) {
            Some(v) => match v.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(x),
                _ => Err(bad(format!("{key}='{v}' is not a finite number"))),
            },
            None => Ok(default),
        }
    };
    let size = |key: &str, min: usize| -> Result<usize> {
        let v = int(key, None)?;
        let v = usize::try_from(v).map_err(|_| bad(format!("{key}={v} is too large")))?;
        if v < min {
            return Err(bad(format!("{key} must be at least {min}, got {v}")));
        }
        Ok(v)
    };

    let n = size("n", 1)?;
    let d = size("d", 1)?;
    let rho = real("rho", 0.0)?;
    if !(0.0..1.0).contains(&rho) {
        return Err(bad(format!("rho must be in [0, 1), got {rho}")));
    }
    let seed = int("seed", Some(0))?;
    let c = if kind == "softmax" { size("c", 2)? } else { 1 };
    match n.checked_mul(d.max(c)) {
        Some(e) if e <= MAX_ENTRIES => {}
        _ => return Err(bad(format!("n x d = {n} x {d} is too large"))),
    }

    let ds = match kind {
        "linear" => {
            let noise = real("noise", 0.1)?;
            if noise < 0.0 {
                return Err(bad(format!("noise must be >= 0, got {noise}")));
            }
            linear(n, d, rho, noise, seed).0
        }
        _ => {
            let scale = real("scale", 3.0)?;
            if scale < 0.0 {
                return Err(bad(format!("scale must be >= 0, got {scale}")));
            }
            if kind == "logistic" {
                logistic(n, d, rho, scale, seed).0
            } else {
                softmax(n, d, c, rho, scale, seed).0
            }
        }
    };
    Ok(ds)
}
