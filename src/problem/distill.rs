//! `distill`: dataset distillation (SPEC §9). θ is a small synthetic training set — K rows of
//! d features for each of the c classes, row-major, class 0's K rows first — whose labels are
//! fixed by that order (`ỹ_j = ⌊j / K⌋`). With `N = K c`, `x_j = θ[j d .. (j+1) d]` and the
//! linear softmax model `W ∈ R^{c×d}` (class-major, as every linear model here):
//!
//! ```text
//! g(W, θ) = (1/N) Σ_j CE(W x_j, ỹ_j) + (C/2) ‖W‖²      (inner, on the synthetic rows)
//! f(W)    = (1/m) Σ_i CE(W x'_i, y'_i)                  (outer, on the real validation rows)
//! ```
//!
//! For a fixed θ the inner problem is exactly `softmax` with a shared λ = C on the training
//! rows θ, so [`DistillBilevel`] keeps a [`GlmBilevel`] of that kind whose training rows it
//! replaces whenever θ changes: g, ∇g, H v and f are the GLM's (on any backend). Only the
//! cross derivative B = ∂(∇_W g)/∂θ is new, and it is computed here on the host.
//!
//! # The cross derivative B = ∇²_{Wθ} g
//!
//! With `p_j = softmax(W x_j)`, `r_j = p_j − e_{ỹ_j}` and `S_j = diag(p_j) − p_j p_jᵀ`
//! (the Hessian of CE in the logits):
//!
//! ```text
//! ∇_W g = (1/N) Σ_j r_j x_jᵀ + C W
//! ```
//!
//! Moving row j by `u_j` moves the logits by `W u_j`, so `dr_j = S_j W u_j`, and
//!
//! ```text
//! B v  = d(∇_W g)[u] = (1/N) Σ_j ( (S_j W u_j) x_jᵀ + r_j u_jᵀ )          (a c×d matrix)
//! ```
//!
//! Pairing with `Q` (c×d): `⟨Q, B v⟩ = (1/N) Σ_j ( (S_j W u_j)ᵀ Q x_j + r_jᵀ Q u_j )`
//! `= (1/N) Σ_j u_jᵀ ( Wᵀ S_j Q x_j + Qᵀ r_j )` (S_j is symmetric), so row j of Bᵀq is
//!
//! ```text
//! (Bᵀ q)_j = (1/N) ( Wᵀ S_j (Q x_j) + Qᵀ r_j )                            (d entries)
//! ```
//!
//! Both cost O(N c d), like one gradient; B itself (P × p = c d × N d) is formed only by
//! [`Bilevel::cross_add`], which the forward-mode Jacobian recursion needs (small problems).
//!
//! No constants of SPEC §4's a posteriori bound are derived for B here (its Lipschitz constant
//! in W grows with ‖W‖), so `error_bound` is null.
//!
//! θ's layout and labels ([`Synthetic`]) and its starting point ([`initial_theta`]) are
//! shared with the network's twin ([`super::distill_mlp`]).

use ndarray::Array2;

use crate::backend::{Curvature, GlmOps};
use crate::data::rng::Rng;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::problem::{Bilevel, BoundConstants, GlmBilevel, HyperLayout, InnerProblem, ProblemKind};

/// Where θ starts when no `--theta`/`--theta-file` is given (`--distill-init`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DistillInit {
    /// K real training rows of each class, drawn without replacement (seeded).
    Real,
    /// Every entry N(0, 1) (seeded).
    Noise,
}

/// The labels of the synthetic rows: `ỹ_j = ⌊j / K⌋`.
pub fn synthetic_labels(k: usize, classes: usize) -> Vec<f64> {
    (0..k * classes).map(|j| (j / k) as f64).collect()
}

/// The starting θ (K·c·d entries): K random training rows of each class, or N(0, 1) noise.
/// Errors: K = 0, or a class with fewer than K training rows (for `Train`).
pub fn initial_theta(
    train: &Dataset,
    classes: usize,
    k: usize,
    init: DistillInit,
    seed: u64,
) -> Result<Vec<f64>> {
    check_k(k)?;
    let d = train.d();
    let mut rng = Rng::new(seed ^ 0xD157_111D);
    match init {
        DistillInit::Noise => Ok((0..k * classes * d).map(|_| rng.normal()).collect()),
        DistillInit::Real => {
            let mut theta = Vec::with_capacity(k * classes * d);
            for class in 0..classes {
                let mut rows: Vec<usize> = (0..train.n())
                    .filter(|&i| train.y[i] == class as f64)
                    .collect();
                if rows.len() < k {
                    return Err(Error::option(
                        "--images-per-class",
                        format!(
                            "{}: class {class} has {} training rows, fewer than K = {k} (lower K or use --distill-init noise)",
                            train.name,
                            rows.len()
                        ),
                    ));
                }
                rng.shuffle(&mut rows);
                for &i in &rows[..k] {
                    theta.extend(train.x.row(i).iter().copied());
                }
            }
            Ok(theta)
        }
    }
}

fn check_k(k: usize) -> Result<()> {
    if k == 0 {
        return Err(Error::option("--images-per-class", "must be at least 1"));
    }
    Ok(())
}

/// θ as the synthetic training set of both distillation problems: K rows of d features for
/// each of c classes (`N = K c` rows, row j of class `⌊j / K⌋`).
#[derive(Clone, Debug)]
pub struct Synthetic {
    k: usize,
    c: usize,
    d: usize,
    theta: Vec<f64>,
}

impl Synthetic {
    /// Checks K ≥ 1, c ≥ 2, the inner ridge C > 0 finite, and θ (K·c·d finite entries).
    pub fn new(classes: usize, k: usize, d: usize, l2: f64, theta: &[f64]) -> Result<Self> {
        check_k(k)?;
        if classes < 2 {
            return Err(Error::Labels(format!(
                "distill needs at least 2 classes, got {classes}"
            )));
        }
        if !(l2 > 0.0 && l2.is_finite()) {
            return Err(Error::option(
                "--l2",
                format!("distill needs a positive finite C, got {l2}"),
            ));
        }
        rows_of(theta, k, classes, d)?;
        Ok(Synthetic {
            k,
            c: classes,
            d,
            theta: theta.to_vec(),
        })
    }

    /// K, the rows per class.
    pub fn images_per_class(&self) -> usize {
        self.k
    }

    /// c, the classes.
    pub fn classes(&self) -> usize {
        self.c
    }

    /// d, the features of a row.
    pub fn features(&self) -> usize {
        self.d
    }

    /// N = K c, the synthetic rows.
    pub fn rows(&self) -> usize {
        self.k * self.c
    }

    /// θ (N·d entries).
    pub fn theta(&self) -> &[f64] {
        &self.theta
    }

    /// Row j, `x_j = θ[j d .. (j+1) d]`.
    pub fn row(&self, j: usize) -> &[f64] {
        &self.theta[j * self.d..(j + 1) * self.d]
    }

    /// ỹ_j = ⌊j / K⌋.
    pub fn label(&self, j: usize) -> usize {
        j / self.k
    }

    /// The rows as a dataset (labels `⌊j / K⌋`).
    pub fn dataset(&self) -> Result<Dataset> {
        rows_of(&self.theta, self.k, self.c, self.d)
    }

    /// Moves the rows to `theta`: `apply` hands the new rows to the inner model, and θ is
    /// kept only when both the check of `theta` and `apply` succeed.
    pub fn set(&mut self, theta: &[f64], apply: impl FnOnce(&Dataset) -> Result<()>) -> Result<()> {
        apply(&rows_of(theta, self.k, self.c, self.d)?)?;
        self.theta = theta.to_vec();
        Ok(())
    }
}

/// The dataset-distillation bilevel problem (see the module docs).
pub struct DistillBilevel<B: GlmOps> {
    /// `softmax` with a shared λ = C on the synthetic rows (the current θ).
    glm: GlmBilevel<B>,
    set: Synthetic,
}

impl<B: GlmOps> DistillBilevel<B> {
    /// The problem with K synthetic rows per class of `classes` classes, outer loss on `val`,
    /// inner ridge penalty `l2` = C > 0, at `theta` (K·c·d entries).
    pub fn new(
        backend: B,
        classes: usize,
        k: usize,
        val: &Dataset,
        l2: f64,
        theta: &[f64],
    ) -> Result<Self> {
        let set = Synthetic::new(classes, k, val.d(), l2, theta)?;
        let mut glm = GlmBilevel::new(
            backend,
            ProblemKind::Softmax,
            HyperLayout::Shared,
            &set.dataset()?,
            val,
            l2,
        )?;
        // λ = exp(θ_glm) = C, fixed.
        glm.set_theta(&[l2.ln()])?;
        Ok(DistillBilevel { glm, set })
    }

    /// The softmax GLM on the current synthetic rows.
    pub fn glm(&self) -> &GlmBilevel<B> {
        &self.glm
    }

    /// The synthetic set (θ).
    pub fn synthetic_set(&self) -> &Synthetic {
        &self.set
    }

    /// K, the synthetic rows per class.
    pub fn images_per_class(&self) -> usize {
        self.set.k
    }

    /// `(c, d)`: the inner variable is `c×d`.
    pub fn shape(&self) -> (usize, usize) {
        (self.set.c, self.set.d)
    }

    /// The current synthetic rows as a dataset (labels `⌊j / K⌋`).
    pub fn synthetic(&self) -> Result<Dataset> {
        self.set.dataset()
    }

    /// The mean loss and accuracy of the model `w` on `data`.
    pub fn evaluate(&self, w: &B::Buf, data: &Dataset) -> Result<(f64, Option<f64>)> {
        self.glm.evaluate(w, data)
    }

    /// `p_j`, `r_j = p_j − e_{ỹ_j}` of row j at the host model `w` (c×d).
    fn probs(&self, w: &[f64], j: usize) -> (Vec<f64>, Vec<f64>) {
        let (c, d) = (self.set.c, self.set.d);
        let x = self.set.row(j);
        let z: Vec<f64> = (0..c).map(|k| dot(&w[k * d..(k + 1) * d], x)).collect();
        let zmax = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|zk| (zk - zmax).exp()).collect();
        let sum: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|ek| ek / sum).collect();
        let mut r = p.clone();
        r[self.set.label(j)] -= 1.0;
        (p, r)
    }

    /// `B v` (P = c·d entries) at the host model `w`, for `v` of p entries (module docs).
    pub fn cross_apply(&self, w: &[f64], v: &[f64]) -> Result<Vec<f64>> {
        let (c, d) = (self.set.c, self.set.d);
        self.check(w, v, "v")?;
        let n = self.set.rows() as f64;
        let mut out = vec![0.0; c * d];
        for j in 0..self.set.rows() {
            let x = self.set.row(j);
            let u = &v[j * d..(j + 1) * d];
            let (p, r) = self.probs(w, j);
            // s = S_j (W u_j)
            let a: Vec<f64> = (0..c).map(|k| dot(&w[k * d..(k + 1) * d], u)).collect();
            let s = softmax_hessian_apply(&p, &a);
            for k in 0..c {
                let row = &mut out[k * d..(k + 1) * d];
                for l in 0..d {
                    row[l] += (s[k] * x[l] + r[k] * u[l]) / n;
                }
            }
        }
        Ok(out)
    }

    /// `Bᵀ q` (p entries) at the host model `w`, for `q` of P = c·d entries (module docs).
    pub fn cross_transpose(&self, w: &[f64], q: &[f64]) -> Result<Vec<f64>> {
        let (c, d) = (self.set.c, self.set.d);
        if w.len() != c * d || q.len() != c * d {
            return Err(Error::Dimension(format!(
                "distill: w has {} and q {} entries, P = c·d = {}",
                w.len(),
                q.len(),
                c * d
            )));
        }
        let n = self.set.rows() as f64;
        let mut out = vec![0.0; self.set.theta.len()];
        for j in 0..self.set.rows() {
            let x = self.set.row(j);
            let (p, r) = self.probs(w, j);
            // t = Q x_j, s = S_j t; row j = (Wᵀ s + Qᵀ r_j) / N.
            let t: Vec<f64> = (0..c).map(|k| dot(&q[k * d..(k + 1) * d], x)).collect();
            let s = softmax_hessian_apply(&p, &t);
            let o = &mut out[j * d..(j + 1) * d];
            for k in 0..c {
                let (wk, qk) = (&w[k * d..(k + 1) * d], &q[k * d..(k + 1) * d]);
                for l in 0..d {
                    o[l] += (wk[l] * s[k] + qk[l] * r[k]) / n;
                }
            }
        }
        Ok(out)
    }

    fn check(&self, w: &[f64], v: &[f64], what: &str) -> Result<()> {
        let big_p = self.set.c * self.set.d;
        if w.len() != big_p || v.len() != self.set.theta.len() {
            return Err(Error::Dimension(format!(
                "distill: w has {} entries (P = {big_p}) and {what} {} (p = {})",
                w.len(),
                v.len(),
                self.set.theta.len()
            )));
        }
        Ok(())
    }
}

/// `S a = p ⊙ a − p (pᵀ a)`, the softmax cross-entropy Hessian in the logits times `a`.
fn softmax_hessian_apply(p: &[f64], a: &[f64]) -> Vec<f64> {
    let pa = dot(p, a);
    p.iter().zip(a).map(|(pk, ak)| pk * (ak - pa)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// θ as the K·c×d synthetic dataset; errors when θ has the wrong length or a non-finite entry.
fn rows_of(theta: &[f64], k: usize, classes: usize, d: usize) -> Result<Dataset> {
    let rows = k * classes;
    if theta.len() != rows * d {
        return Err(Error::Dimension(format!(
            "θ has {} entries but distill with K = {k} images per class, c = {classes} classes and d = {d} features needs p = K·c·d = {}",
            theta.len(),
            rows * d
        )));
    }
    if let Some(i) = theta.iter().position(|t| !t.is_finite()) {
        return Err(Error::Numerical(format!(
            "θ[{i}] = {} is not finite",
            theta[i]
        )));
    }
    let x = Array2::from_shape_vec((rows, d), theta.to_vec())
        .map_err(|e| Error::Dimension(format!("distill: θ as {rows}×{d} rows: {e}")))?;
    Dataset::new(x, synthetic_labels(k, classes), "distill:θ")
}

impl<B: GlmOps> InnerProblem for DistillBilevel<B> {
    type B = B;
    type Hessian = Curvature<B>;

    fn backend(&self) -> &B {
        self.glm.backend()
    }
    fn inner_dim(&self) -> usize {
        self.set.c * self.set.d
    }
    fn inner_value_grad(&self, w: &B::Buf, grad: Option<&mut B::Buf>) -> Result<f64> {
        self.glm.inner_value_grad(w, grad)
    }
    fn hessian(&self, w: &B::Buf) -> Result<Curvature<B>> {
        self.glm.hessian(w)
    }
    fn majorant(&self) -> Result<Curvature<B>> {
        self.glm.majorant()
    }
    fn hvp(&self, h: &Curvature<B>, v: &B::Buf, out: &mut B::Buf) -> Result<()> {
        self.glm.hvp(h, v, out)
    }
    fn strong_convexity(&self) -> f64 {
        self.glm.strong_convexity()
    }
    fn smoothness_bound(&self) -> f64 {
        self.glm.smoothness_bound()
    }
}

impl<B: GlmOps> Bilevel for DistillBilevel<B> {
    fn hyper_dim(&self) -> usize {
        self.set.theta.len()
    }

    fn theta(&self) -> &[f64] {
        &self.set.theta
    }

    fn set_theta(&mut self, theta: &[f64]) -> Result<()> {
        let glm = &mut self.glm;
        self.set.set(theta, |rows| glm.replace_train(rows))
    }

    fn outer_value_grad(&self, w: &B::Buf, grad: Option<&mut B::Buf>) -> Result<f64> {
        self.glm.outer_value_grad(w, grad)
    }

    fn cross_t(&self, w: &B::Buf, q: &B::Buf) -> Result<Vec<f64>> {
        let b = self.backend();
        self.cross_transpose(&b.download(w)?, &b.download(q)?)
    }

    /// `batch ← batch + α B`: column (j, l) of B is `(1/N) ( (S_j W e_l) x_jᵀ + r_j e_lᵀ )`.
    fn cross_add(&self, w: &B::Buf, alpha: f64, batch: &mut B::Buf) -> Result<()> {
        let b = self.backend();
        let (c, d) = (self.set.c, self.set.d);
        let big_p = c * d;
        let p = self.set.theta.len();
        let mut host = b.download(batch)?;
        if host.len() != big_p * p {
            return Err(Error::Dimension(format!(
                "distill: the batch of B's columns has {} entries, P·p = {}",
                host.len(),
                big_p * p
            )));
        }
        let w = b.download(w)?;
        let n = self.set.rows() as f64;
        for j in 0..self.set.rows() {
            let x = self.set.row(j);
            let (prob, r) = self.probs(&w, j);
            for l in 0..d {
                let col = &mut host[(j * d + l) * big_p..(j * d + l + 1) * big_p];
                let a: Vec<f64> = (0..c).map(|k| w[k * d + l]).collect();
                let s = softmax_hessian_apply(&prob, &a);
                for k in 0..c {
                    for m in 0..d {
                        col[k * d + m] += alpha * s[k] * x[m] / n;
                    }
                    col[k * d + l] += alpha * r[k] / n;
                }
            }
        }
        *batch = b.upload(&host)?;
        Ok(())
    }

    fn bound_constants(&self, _w: &B::Buf) -> Result<Option<BoundConstants>> {
        Ok(None)
    }
}
