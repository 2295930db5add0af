//! The ℓ1 bilevel problems of SPEC §2 and their penalty parametrisation:
//!
//! ```text
//! g(w, θ) = (1/2n)‖y − Xw‖² + Σ_j λ_j |w_j| + ½ λ₂ ‖w‖²      (inner, training data)
//! f(w)    = (1/m)‖y' − X'w‖²                                 (outer, held-out data)
//! ```
//!
//! * `lasso`:  λ_j = exp(θ₀) for all j, λ₂ = 0, p = 1;
//! * `enet`:   λ_j = exp(θ₀), λ₂ = exp(θ₁), p = 2;
//! * `wlasso`: λ_j = exp(θ_j), λ₂ = 0, p = d.

use super::design::Design;
use crate::{Error, Result};

/// Which ℓ1 problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L1Kind {
    Lasso,
    Enet,
    Wlasso,
}

impl L1Kind {
    /// The CLI name (`--problem`).
    pub fn name(self) -> &'static str {
        match self {
            L1Kind::Lasso => "lasso",
            L1Kind::Enet => "enet",
            L1Kind::Wlasso => "wlasso",
        }
    }

    /// p, the number of hyper-parameters, for d features.
    pub fn hyper_dim(self, d: usize) -> usize {
        match self {
            L1Kind::Lasso => 1,
            L1Kind::Enet => 2,
            L1Kind::Wlasso => d,
        }
    }
}

/// The penalties `λ_j` (length d) and `λ₂` at a θ, with the chain-rule factors
/// `∂λ_j/∂θ_k` and `∂λ₂/∂θ_k` (each λ is `exp` of a θ entry, so each factor is that λ or 0).
#[derive(Clone, Debug)]
pub struct Penalty {
    pub kind: L1Kind,
    /// `λ_j`, length d.
    pub l1: Vec<f64>,
    /// `λ₂` (0 except for `enet`).
    pub l2: f64,
}

impl Penalty {
    /// The penalty at θ for d features. Errors: [`Error::Dimension`] if `θ.len() != p`,
    /// [`Error::Numerical`] if θ is not finite or `exp(θ)` overflows or underflows to 0.
    pub fn new(kind: L1Kind, theta: &[f64], d: usize) -> Result<Penalty> {
        let p = kind.hyper_dim(d);
        if theta.len() != p {
            return Err(Error::Dimension(format!(
                "{} with {d} features needs p = {p} hyper-parameters, got {}",
                kind.name(),
                theta.len()
            )));
        }
        if let Some(t) = theta.iter().find(|t| !(t.is_finite() && t.abs() < 700.0)) {
            return Err(Error::Numerical(format!(
                "θ = {t} is not a finite log-penalty in (−700, 700)"
            )));
        }
        Ok(match kind {
            L1Kind::Lasso => Penalty {
                kind,
                l1: vec![theta[0].exp(); d],
                l2: 0.0,
            },
            L1Kind::Enet => Penalty {
                kind,
                l1: vec![theta[0].exp(); d],
                l2: theta[1].exp(),
            },
            L1Kind::Wlasso => Penalty {
                kind,
                l1: theta.iter().map(|t| t.exp()).collect(),
                l2: 0.0,
            },
        })
    }

    /// p.
    pub fn hyper_dim(&self) -> usize {
        self.kind.hyper_dim(self.l1.len())
    }

    /// `∂λ_j/∂θ_k`.
    #[inline]
    pub fn dl1(&self, j: usize, k: usize) -> f64 {
        match self.kind {
            L1Kind::Lasso | L1Kind::Enet if k == 0 => self.l1[j],
            L1Kind::Wlasso if k == j => self.l1[j],
            _ => 0.0,
        }
    }

    /// `∂λ₂/∂θ_k`.
    #[inline]
    pub fn dl2(&self, k: usize) -> f64 {
        if self.kind == L1Kind::Enet && k == 1 {
            self.l2
        } else {
            0.0
        }
    }

    /// The inner objective `g(w) = (1/2n)‖r‖² + Σλ_j|w_j| + ½λ₂‖w‖²` given the residual
    /// `r = y − Xw`.
    pub fn primal(&self, w: &[f64], r: &[f64]) -> f64 {
        let n = r.len() as f64;
        let fit = r.iter().map(|a| a * a).sum::<f64>() / (2.0 * n);
        let l1: f64 = w.iter().zip(&self.l1).map(|(a, l)| l * a.abs()).sum();
        let l2 = 0.5 * self.l2 * w.iter().map(|a| a * a).sum::<f64>();
        fit + l1 + l2
    }
}

/// A labelled design: `(X, y)`.
#[derive(Clone, Debug)]
pub struct L1Data {
    pub x: Design,
    pub y: Vec<f64>,
}

impl L1Data {
    /// `(X, y)`. Errors: [`Error::Dimension`] if the row counts differ or there are no rows,
    /// [`Error::Numerical`] on a non-finite label.
    pub fn new(x: Design, y: Vec<f64>) -> Result<L1Data> {
        if x.n() != y.len() {
            return Err(Error::Dimension(format!(
                "the design has {} rows but there are {} labels",
                x.n(),
                y.len()
            )));
        }
        if x.n() == 0 {
            return Err(Error::Dimension("the data has no rows".into()));
        }
        if let Some(v) = y.iter().find(|v| !v.is_finite()) {
            return Err(Error::Numerical(format!("the label {v} is not finite")));
        }
        Ok(L1Data { x, y })
    }

    /// Rows `rows` (distinct) as new data.
    pub fn select(&self, rows: &[usize]) -> L1Data {
        L1Data {
            x: self.x.select_rows(rows),
            y: rows.iter().map(|&i| self.y[i]).collect(),
        }
    }

    /// The held-out criterion `f(w) = (1/m)‖y − Xw‖²` and its gradient
    /// `∇f(w) = −(2/m) Xᵀ(y − Xw)`.
    pub fn mse_and_grad(&self, w: &[f64]) -> (f64, Vec<f64>) {
        let m = self.y.len() as f64;
        let mut r = vec![0.0; self.y.len()];
        self.x.matvec(w, &mut r);
        r.iter_mut()
            .zip(&self.y)
            .for_each(|(ri, yi)| *ri = yi - *ri);
        let mse = r.iter().map(|a| a * a).sum::<f64>() / m;
        let mut g = vec![0.0; w.len()];
        self.x.rmatvec(&r, &mut g);
        g.iter_mut().for_each(|a| *a *= -2.0 / m);
        (mse, g)
    }

    /// `(1/m)‖y − Xw‖²`.
    pub fn mse(&self, w: &[f64]) -> f64 {
        let mut r = vec![0.0; self.y.len()];
        self.x.matvec(w, &mut r);
        r.iter()
            .zip(&self.y)
            .map(|(a, b)| (b - a) * (b - a))
            .sum::<f64>()
            / self.y.len() as f64
    }

    /// `λ_max = ‖Xᵀy‖_∞ / n`: the smallest shared λ for which the Lasso solution is 0.
    pub fn lambda_max(&self) -> f64 {
        let mut g = vec![0.0; self.x.d()];
        self.x.rmatvec(&self.y, &mut g);
        g.iter().fold(0.0f64, |a, b| a.max(b.abs())) / self.y.len() as f64
    }
}

/// Training and held-out data of one ℓ1 bilevel problem.
#[derive(Clone, Debug)]
pub struct L1Problem {
    pub kind: L1Kind,
    pub train: L1Data,
    pub val: L1Data,
}

impl L1Problem {
    /// Errors: [`Error::Dimension`] if training and held-out widths differ.
    pub fn new(kind: L1Kind, train: L1Data, val: L1Data) -> Result<L1Problem> {
        if train.x.d() != val.x.d() {
            return Err(Error::Dimension(format!(
                "training data has {} features but validation data has {}",
                train.x.d(),
                val.x.d()
            )));
        }
        Ok(L1Problem { kind, train, val })
    }

    /// d.
    pub fn d(&self) -> usize {
        self.train.x.d()
    }

    /// p.
    pub fn hyper_dim(&self) -> usize {
        self.kind.hyper_dim(self.d())
    }
}
