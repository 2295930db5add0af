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
//! cross derivative B = ∂(∇_W g)/∂θ is new; its products are computed here on the same
//! backend, from the rows θ kept there as an N×d matrix `X`.
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
//! # On the backend
//!
//! With `P_r` and `R` the N×c matrices of rows `p_j` and `r_j` (the GLM's curvature
//! probabilities and row factors) and `S ∘ A` the row-wise product `(S ∘ A)_j = S_j A_j`
//! ([`GlmOps::glm_softmax_curvature_rows`]), both products are GEMMs around one row step:
//!
//! ```text
//! B v  = (1/N) ( (S ∘ (U Wᵀ))ᵀ X + Rᵀ U )          (U: v as N×d)
//! Bᵀ q = (1/N) ( (S ∘ (X Qᵀ)) W + R Q )             (N×d, θ's layout)
//! ```
//!
//! Both cost O(N c d), like one gradient, and only their result crosses to the host (θ lives
//! there). B itself (P × p = c d × N d) is formed only by [`Bilevel::cross_add`], which the
//! forward-mode Jacobian recursion needs (small problems): its column (j, l) is
//! `(1/N) ( g_{jl} ⊗ x_j + r_j ⊗ e_l )` with `g_{jl} = S_j W e_l`, two sums of per-row outer
//! products of the kind [`GlmOps::glm_add_row_outer`] adds to a batch (module docs of
//! [`FormB`]).
//!
//! No constants of SPEC §4's a posteriori bound are derived for B here (its Lipschitz constant
//! in W grows with ‖W‖), so `error_bound` is null.
//!
//! θ's layout and labels ([`Synthetic`]) and its starting point ([`initial_theta`]) are
//! shared with the network's twin ([`super::distill_mlp`]).

use std::sync::OnceLock;

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
    /// θ on the backend as the N×d matrix `X` of the products' GEMMs.
    rows: B::Buf,
    /// The constants that form B ([`Bilevel::cross_add`]), made on first use.
    form_b: OnceLock<FormB<B>>,
}

/// The constant operands that form B on the backend ([`Bilevel::cross_add`]). Its column
/// (j, l), vector `j d + l` of the batch (`c×d` class-major), is
/// `(1/N) ( g_{jl} ⊗ x_j + r_j ⊗ e_l )` with `g_{jl} = S_j W e_l`:
///
/// * the first term over the N rows `x_j` at once: [`GlmOps::glm_add_row_outer`] with the
///   design X and the factors `G` (N × d c) whose row j is `[g_{j0}, …, g_{j,d−1}]` (then
///   vector j of that call, `G_j ⊗ x_j`, is exactly B's d columns of row j);
///   `G = S ∘ (1_N vec(Wᵀ)ᵀ)` with each `c`-block of row j taking `S_j`, i.e. the rows'
///   probabilities repeated d times, `P_r J` with `J = [I_c … I_c]` (c × d c);
/// * the second over the `N d` rows `e_l` of `E` (row `j d + l` is `e_l`) with the factors
///   `R J` (row `j d + l` is `r_j`). `E` is a tenth of the batch's size for c = 10.
struct FormB<B: GlmOps> {
    /// `I_c`, to transpose W by a GEMM.
    eye: B::Buf,
    /// `J = [I_c … I_c]`, c × d c.
    repeat: B::Buf,
    /// `1_N`.
    ones: B::Buf,
    /// `E`, the N d unit rows `e_l`.
    units: B::Design,
}

impl<B: GlmOps> FormB<B> {
    fn new(b: &B, (n, c, d): (usize, usize, usize)) -> Result<Self> {
        let mut eye = vec![0.0; c * c];
        let mut repeat = vec![0.0; c * d * c];
        for k in 0..c {
            eye[k * c + k] = 1.0;
            for l in 0..d {
                repeat[k * d * c + l * c + k] = 1.0;
            }
        }
        let units = Array2::from_shape_fn((n * d, d), |(jl, m)| f64::from(u8::from(jl % d == m)));
        Ok(FormB {
            eye: b.upload(&eye)?,
            repeat: b.upload(&repeat)?,
            ones: b.upload(&vec![1.0; n])?,
            units: b.upload_design(&units)?,
        })
    }
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
        let rows = glm.backend().upload(set.theta())?;
        Ok(DistillBilevel {
            glm,
            set,
            rows,
            form_b: OnceLock::new(),
        })
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

    /// `(N, c, d)`.
    fn dims(&self) -> (usize, usize, usize) {
        (self.set.rows(), self.set.c, self.set.d)
    }

    /// `P_r` and `R` (both N×c, rows `p_j` and `r_j = p_j − e_{ỹ_j}`) at `w`, on the backend.
    fn row_factors(&self, w: &B::Buf) -> Result<(B::Buf, B::Buf)> {
        let b = self.backend();
        let t = self.glm.train_view();
        let probs = b
            .glm_curvature(t.x, t.loss, t.y, None, w, 1.0)?
            .probs
            .ok_or_else(|| Error::Backend("internal: softmax curvature without p".into()))?;
        let r = b.glm_row_factors(t.x, t.loss, t.y, w)?;
        Ok((probs, r))
    }

    /// `S ∘ (M Zᵀ)` (N×c) for the N×d matrix `M` and the c×d matrix `Z`: each row's logits
    /// moved by `Z m_j`, through its softmax Hessian.
    fn moved_logits(&self, probs: &B::Buf, m: &B::Buf, z: &B::Buf) -> Result<B::Buf> {
        let b = self.backend();
        let (n, c, d) = self.dims();
        let mut a = b.zeros(n * c)?;
        b.gemm(false, true, (n, c, d), 1.0, m, z, 0.0, &mut a)?;
        b.glm_softmax_curvature_rows(probs, c, &mut a)?;
        Ok(a)
    }

    /// `B v` (P = c·d entries) at `w`, for `v` of p entries (module docs):
    /// `(1/N) ( (S ∘ (U Wᵀ))ᵀ X + Rᵀ U )`.
    pub fn cross_apply(&self, w: &B::Buf, v: &[f64]) -> Result<Vec<f64>> {
        let b = self.backend();
        let (n, c, d) = self.dims();
        self.check(b.len(w), v.len(), "v")?;
        let u = b.upload(v)?;
        let (probs, r) = self.row_factors(w)?;
        let a = self.moved_logits(&probs, &u, w)?;
        let inv_n = 1.0 / n as f64;
        let mut out = b.zeros(c * d)?;
        b.gemm(true, false, (c, d, n), inv_n, &a, &self.rows, 0.0, &mut out)?;
        b.gemm(true, false, (c, d, n), inv_n, &r, &u, 1.0, &mut out)?;
        b.download(&out)
    }

    fn check(&self, w_len: usize, v_len: usize, what: &str) -> Result<()> {
        let big_p = self.set.c * self.set.d;
        if w_len != big_p || v_len != self.set.theta.len() {
            return Err(Error::Dimension(format!(
                "distill: w has {w_len} entries (P = {big_p}) and {what} {v_len} (p = {})",
                self.set.theta.len()
            )));
        }
        Ok(())
    }
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
        let (glm, on_backend) = (&mut self.glm, &mut self.rows);
        self.set.set(theta, |rows| {
            let uploaded = glm.backend().upload(theta)?;
            glm.replace_train(rows)?;
            *on_backend = uploaded;
            Ok(())
        })
    }

    fn outer_value_grad(&self, w: &B::Buf, grad: Option<&mut B::Buf>) -> Result<f64> {
        self.glm.outer_value_grad(w, grad)
    }

    /// `Bᵀ q = (1/N) ( (S ∘ (X Qᵀ)) W + R Q )`, N×d in θ's layout (module docs).
    fn cross_t(&self, w: &B::Buf, q: &B::Buf) -> Result<Vec<f64>> {
        let b = self.backend();
        let (n, c, d) = self.dims();
        if b.len(w) != c * d || b.len(q) != c * d {
            return Err(Error::Dimension(format!(
                "distill: w has {} and q {} entries, P = c·d = {}",
                b.len(w),
                b.len(q),
                c * d
            )));
        }
        let (probs, r) = self.row_factors(w)?;
        let a = self.moved_logits(&probs, &self.rows, q)?;
        let inv_n = 1.0 / n as f64;
        let mut out = b.zeros(n * d)?;
        b.gemm(false, false, (n, d, c), inv_n, &a, w, 0.0, &mut out)?;
        b.gemm(false, false, (n, d, c), inv_n, &r, q, 1.0, &mut out)?;
        b.download(&out)
    }

    /// `batch ← batch + α B`: column (j, l) of B is `(1/N) ( g_{jl} ⊗ x_j + r_j ⊗ e_l )`,
    /// `g_{jl} = S_j W e_l`, added by two per-row outer-product passes ([`FormB`]).
    fn cross_add(&self, w: &B::Buf, alpha: f64, batch: &mut B::Buf) -> Result<()> {
        let b = self.backend();
        let (n, c, d) = self.dims();
        let (big_p, p) = (c * d, self.set.theta.len());
        if b.len(batch) != big_p * p || b.len(w) != big_p {
            return Err(Error::Dimension(format!(
                "distill: the batch of B's columns has {} entries, P·p = {}, and w {} (P = {big_p})",
                b.len(batch),
                big_p * p,
                b.len(w)
            )));
        }
        let form = match self.form_b.get() {
            Some(form) => form,
            None => {
                let made = FormB::new(b, (n, c, d))?;
                self.form_b.get_or_init(|| made)
            }
        };
        let (probs, r) = self.row_factors(w)?;
        // G = S ∘ (1_N vec(Wᵀ)ᵀ), each row's d blocks of c through its S_j.
        let mut wt = b.zeros(d * c)?;
        b.gemm(true, false, (d, c, c), 1.0, w, &form.eye, 0.0, &mut wt)?;
        let mut g = b.zeros(n * d * c)?;
        b.gemm(
            false,
            false,
            (n, d * c, 1),
            1.0,
            &form.ones,
            &wt,
            0.0,
            &mut g,
        )?;
        let mut probs_rep = b.zeros(n * d * c)?;
        b.gemm(
            false,
            false,
            (n, d * c, c),
            1.0,
            &probs,
            &form.repeat,
            0.0,
            &mut probs_rep,
        )?;
        b.glm_softmax_curvature_rows(&probs_rep, c, &mut g)?;
        let t = self.glm.train_view();
        b.glm_add_row_outer(t.x, &vec![alpha / n as f64; n], &g, batch)?;
        // R J: row j d + l is r_j, paired with e_l.
        let mut r_rep = probs_rep;
        b.gemm(
            false,
            false,
            (n, d * c, c),
            1.0,
            &r,
            &form.repeat,
            0.0,
            &mut r_rep,
        )?;
        b.glm_add_row_outer(&form.units, &vec![alpha / n as f64; n * d], &r_rep, batch)
    }

    fn bound_constants(&self, _w: &B::Buf) -> Result<Option<BoundConstants>> {
        Ok(None)
    }
}
