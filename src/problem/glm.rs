//! The smooth problems of SPEC §2 — `ridge`, `logreg`, `softmax`, `hyperclean` — as one
//! generalised linear bilevel problem:
//!
//! ```text
//! g(W, θ) = (1/n) Σ_i s_i(θ) ℓ(W x_i, y_i) + ½ Σ_e r_e(θ) W_e²      (training rows)
//! f(W)    = (κ/m) Σ_i ℓ(W x'_i, y'_i)                               (validation rows)
//! ```
//!
//! with `W ∈ R^{c×d}` (class-major, see [`crate::backend`]), `ℓ` squared (κ = 2, so that
//! `f = (1/m)‖X'w − y'‖²`), logistic or softmax cross-entropy (κ = 1), and either
//! * a regulariser with hyper-parameters: `r_e = λ_{g(e)}`, `λ_l = exp(θ_l)` over the groups
//!   of [`HyperLayout`], and `s_i = 1`; or
//! * hyper-cleaning: `s_i = σ(θ_i)` one weight per training row, and `r_e = C` fixed.
//!
//! # Derivatives
//!
//! `∇_W g = (1/n) Σ s_i G_i ⊗ x_i + r ⊙ W` with `G_i = ∇_z ℓ(z_i, y_i)`, and
//! `H V = (1/n) Σ s_i (C_i V x_i) ⊗ x_i + r ⊙ V` with `C_i = ∇²_z ℓ(z_i, y_i)`.
//! The cross derivative `B = ∂(∇_W g)/∂θ` has columns
//! * regulariser: `B_{:,l} = λ_l (W restricted to group l)`, so `(Bᵀq)_l = λ_l Σ_{e∈l} W_e q_e`;
//! * hyper-cleaning: `B_{:,i} = (s'_i/n) G_i ⊗ x_i`, so `(Bᵀq)_i = (s'_i/n) ⟨Q x_i, G_i⟩`.
//!
//! # Constants of the error bound (SPEC §4)
//!
//! Let `ρ_i = ‖x_i‖`, `ℓ''_max = sup‖∇²ℓ‖` and `ℓ'''_max` its Lipschitz constant
//! ([`Loss::max_curvature`], [`Loss::curvature_lipschitz`]).
//! * `μ = min_e r_e`: the data term is convex, the regulariser `μ`-strongly convex.
//! * `L_H = ℓ'''_max (1/n) Σ s_i ρ_i³`: row `i` changes `H` by `s_i/n x_i x_iᵀ ⊗ ΔC_i`, with
//!   `‖ΔC_i‖ ≤ ℓ'''_max ‖Δz_i‖ ≤ ℓ'''_max ρ_i ‖ΔW‖`. Zero for `ridge`.
//! * `L_f = κ ℓ''_max (1/m) Σ ρ'_i²`, bounding `‖X'ᵀX'‖ ≤ ‖X'‖_F²`.
//! * regulariser: `‖B(W)‖ = max_l λ_l ‖W_l‖` (the columns have disjoint supports) and
//!   `L_B = max_l λ_l`.
//! * hyper-cleaning: `‖B‖ ≤ ‖B‖_F = (1/n) (Σ s'_i² ρ_i² ‖G_i‖²)^½`, and since `G_i` is
//!   `ℓ''_max`-Lipschitz in `z_i`, `L_B = ℓ''_max (1/n) (Σ s'_i² ρ_i⁴)^½`.

use crate::backend::cpu::sigmoid;
use crate::backend::{Curvature, GlmOps, Groups, Loss};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::problem::{Bilevel, BoundConstants, InnerProblem};

/// The problems of SPEC §2 that this module implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    Ridge,
    Logreg,
    Softmax,
    Hyperclean,
    /// Ehrhardt & Roberts' quadratic test problem (SPEC §9): not a GLM, see
    /// [`crate::problem::quadratic`].
    Quadratic,
    /// Dataset distillation (SPEC §9): θ is the synthetic training rows, see
    /// [`crate::problem::distill`].
    Distill,
}

impl ProblemKind {
    /// The CLI name (`--problem`).
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Ridge => "ridge",
            ProblemKind::Logreg => "logreg",
            ProblemKind::Softmax => "softmax",
            ProblemKind::Hyperclean => "hyperclean",
            ProblemKind::Quadratic => "quadratic",
            ProblemKind::Distill => "distill",
        }
    }

    /// The hyper-parameter layout used when none is given.
    pub fn default_layout(self) -> HyperLayout {
        match self {
            ProblemKind::Hyperclean => HyperLayout::PerSample,
            ProblemKind::Quadratic => HyperLayout::PerColumn,
            ProblemKind::Distill => HyperLayout::SyntheticRows,
            _ => HyperLayout::Shared,
        }
    }

    /// Whether labels are class indices (softmax cross-entropy).
    pub fn is_multiclass(self) -> bool {
        matches!(self, ProblemKind::Softmax | ProblemKind::Hyperclean)
    }
}

/// How θ is laid out (SPEC's `--hyper`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HyperLayout {
    /// One λ for every weight.
    Shared,
    /// One λ per feature (`ridge`, `logreg`).
    PerFeature,
    /// One λ per class (`softmax`).
    PerClass,
    /// One weight per training row (`hyperclean`).
    PerSample,
    /// One λ per weight matrix of a network (`softmax --model mlp:…`; biases unpenalised).
    PerLayer,
    /// `quadratic`'s θ = w: one entry per column of C (p = nw), the only layout it has.
    PerColumn,
    /// `distill`'s θ: the K·c synthetic rows of d features, row-major (p = K·c·d).
    SyntheticRows,
}

impl HyperLayout {
    /// The CLI name (`--hyper`).
    pub fn name(self) -> &'static str {
        match self {
            HyperLayout::Shared => "shared",
            HyperLayout::PerFeature => "per-feature",
            HyperLayout::PerClass => "per-class",
            HyperLayout::PerSample => "per-sample",
            HyperLayout::PerLayer => "per-layer",
            HyperLayout::PerColumn => "per-column",
            HyperLayout::SyntheticRows => "synthetic-rows",
        }
    }
}

/// One side of the bilevel problem (training or validation rows) on the backend.
struct GlmData<B: GlmOps> {
    x: B::Design,
    y: B::Buf,
    n: usize,
    /// `‖x_i‖₂` of every row, on the host (for the bound's constants).
    row_norms: Vec<f64>,
}

impl<B: GlmOps> GlmData<B> {
    fn new(backend: &B, data: &Dataset) -> Result<Self> {
        let row_norms = data
            .x
            .rows()
            .into_iter()
            .map(|r| r.dot(&r).sqrt())
            .collect();
        Ok(GlmData {
            x: backend.upload_design(&data.x)?,
            y: backend.upload(&data.y)?,
            n: data.n(),
            row_norms,
        })
    }

    /// `Σ_i weight_i ρ_i^power`.
    fn weighted_norm_power(&self, weights: Option<&[f64]>, power: i32) -> f64 {
        self.row_norms
            .iter()
            .enumerate()
            .map(|(i, r)| weights.map_or(1.0, |s| s[i]) * r.powi(power))
            .sum()
    }
}

/// The θ-dependent parts of `g`, recomputed by `set_theta`.
struct ThetaState<B: GlmOps> {
    theta: Vec<f64>,
    /// λ per regulariser group (`C` for hyper-cleaning).
    lambda: Vec<f64>,
    /// `r = λ_{g(e)}` expanded to the P inner variables.
    reg_diag: B::Buf,
    /// Hyper-cleaning: `s_i = σ(θ_i)` on the backend and host, and `s'_i = s_i (1 − s_i)`.
    weights: Option<(B::Buf, Vec<f64>, Vec<f64>)>,
}

/// Borrowed view of the training side of a [`GlmBilevel`] at its current θ.
pub struct TrainView<'a, B: GlmOps> {
    pub x: &'a B::Design,
    pub y: &'a B::Buf,
    /// Hyper-cleaning's row weights `s_i = σ(θ_i)` (on the backend and on the host).
    pub weights: Option<&'a B::Buf>,
    pub weights_host: Option<&'a [f64]>,
    /// The regulariser's Hessian `R = diag(r)`, P entries.
    pub reg_diag: &'a B::Buf,
    /// How the λ of [`TrainView::lambda`] map onto the P entries of `r`.
    pub groups: Groups,
    pub lambda: &'a [f64],
    pub loss: Loss,
    pub n: usize,
}

/// The GLM bilevel problem (see the module docs).
pub struct GlmBilevel<B: GlmOps> {
    backend: B,
    kind: ProblemKind,
    layout: HyperLayout,
    loss: Loss,
    outer_scale: f64,
    groups: Groups,
    l2: f64,
    d: usize,
    c: usize,
    train: GlmData<B>,
    val: GlmData<B>,
    state: ThetaState<B>,
}

impl<B: GlmOps> GlmBilevel<B> {
    /// Builds the problem on `backend` from training and validation data, checking that the
    /// labels fit the problem and the shapes agree. `l2` is the fixed `C` of `hyperclean`
    /// (ignored otherwise). θ starts at 0.
    pub fn new(
        backend: B,
        kind: ProblemKind,
        layout: HyperLayout,
        train: &Dataset,
        val: &Dataset,
        l2: f64,
    ) -> Result<Self> {
        if train.d() != val.d() {
            return Err(Error::Dimension(format!(
                "training data '{}' has {} features but validation data '{}' has {}",
                train.name,
                train.d(),
                val.name,
                val.d()
            )));
        }
        if train.n() == 0 || val.n() == 0 {
            return Err(Error::Dimension(
                "training and validation data need at least one row each".into(),
            ));
        }
        let d = train.d();
        let (loss, outer_scale) = match kind {
            ProblemKind::Ridge => (Loss::Squared, 2.0),
            ProblemKind::Logreg => {
                train.check_binary_pm1()?;
                val.check_binary_pm1()?;
                (Loss::Logistic, 1.0)
            }
            ProblemKind::Softmax | ProblemKind::Hyperclean => {
                let classes = train.num_classes()?;
                if classes < 2 {
                    return Err(Error::Labels(format!(
                        "{}: {} needs at least 2 classes in the training labels",
                        train.name,
                        kind.name()
                    )));
                }
                let val_classes = val.num_classes()?;
                if val_classes > classes {
                    return Err(Error::Labels(format!(
                        "{}: validation label {} is not among the {classes} training classes",
                        val.name,
                        val_classes - 1
                    )));
                }
                (Loss::Softmax { classes }, 1.0)
            }
            ProblemKind::Quadratic | ProblemKind::Distill => return Err(not_a_glm(kind)),
        };
        let c = loss.outputs();
        let allowed: &[HyperLayout] = match kind {
            ProblemKind::Ridge | ProblemKind::Logreg => {
                &[HyperLayout::Shared, HyperLayout::PerFeature]
            }
            ProblemKind::Softmax => &[HyperLayout::Shared, HyperLayout::PerClass],
            ProblemKind::Hyperclean => &[HyperLayout::PerSample],
            ProblemKind::Quadratic | ProblemKind::Distill => &[],
        };
        if layout == HyperLayout::PerLayer {
            return Err(Error::option(
                "--hyper",
                "per-layer is a layout of the networks (--model mlp:H1,...); the linear model has one layer",
            ));
        }
        if !allowed.contains(&layout) {
            let names: Vec<_> = allowed.iter().map(|l| l.name()).collect();
            return Err(Error::option(
                "--hyper",
                format!(
                    "{} is not a layout of {} (use {})",
                    layout.name(),
                    kind.name(),
                    names.join(" or ")
                ),
            ));
        }
        if kind == ProblemKind::Hyperclean && !(l2 > 0.0 && l2.is_finite()) {
            return Err(Error::option(
                "--l2",
                format!("hyperclean needs a positive finite C, got {l2}"),
            ));
        }
        let groups = match layout {
            // (PerLayer and PerColumn were refused above.)
            HyperLayout::Shared
            | HyperLayout::PerSample
            | HyperLayout::PerLayer
            | HyperLayout::PerColumn
            | HyperLayout::SyntheticRows => Groups::Shared,
            HyperLayout::PerFeature => Groups::Each,
            HyperLayout::PerClass => Groups::Blocks { block: d },
        };
        let train_data = GlmData::new(&backend, train)?;
        let val_data = GlmData::new(&backend, val)?;
        let p = match layout {
            HyperLayout::PerSample => train.n(),
            _ => groups.count(c * d),
        };
        let placeholder = ThetaState {
            theta: Vec::new(),
            lambda: Vec::new(),
            reg_diag: backend.zeros(0)?,
            weights: None,
        };
        let mut problem = GlmBilevel {
            backend,
            kind,
            layout,
            loss,
            outer_scale,
            groups,
            l2,
            d,
            c,
            train: train_data,
            val: val_data,
            state: placeholder,
        };
        problem.set_theta(&vec![0.0; p])?;
        Ok(problem)
    }

    /// Replaces the training rows by `train`, which must have the same number of rows and
    /// features (dataset distillation: the rows are θ, and change with it).
    pub fn replace_train(&mut self, train: &Dataset) -> Result<()> {
        if train.n() != self.train.n || train.d() != self.d {
            return Err(Error::Dimension(format!(
                "replacement training rows are {}×{}, the problem's {}×{}",
                train.n(),
                train.d(),
                self.train.n,
                self.d
            )));
        }
        self.train = GlmData::new(&self.backend, train)?;
        Ok(())
    }

    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    pub fn layout(&self) -> HyperLayout {
        self.layout
    }

    /// `(c, d)`: outputs and features; the inner variable is `c×d`.
    pub fn shape(&self) -> (usize, usize) {
        (self.c, self.d)
    }

    /// The regulariser's λ per group (`[C]` for hyper-cleaning).
    pub fn lambda(&self) -> &[f64] {
        &self.state.lambda
    }

    /// The loss of a `c×d` model on a dataset (mean over rows, same loss as the outer
    /// problem) and, for classification problems, its accuracy.
    pub fn evaluate(&self, w: &B::Buf, data: &Dataset) -> Result<(f64, Option<f64>)> {
        let side = GlmData::new(&self.backend, data)?;
        let n = side.n as f64;
        let loss = self.outer_scale
            * self
                .backend
                .glm_value_grad(&side.x, self.loss, &side.y, None, w, 0.0, None)?
            / n;
        let accuracy = match self.loss {
            Loss::Squared => None,
            _ => {
                let g = self.backend.download(
                    &self
                        .backend
                        .glm_row_factors(&side.x, self.loss, &side.y, w)?,
                )?;
                Some(accuracy_from_factors(self.loss, &g, &data.y) / n)
            }
        };
        Ok((loss, accuracy))
    }

    fn p(&self) -> usize {
        self.state.theta.len()
    }

    /// The training side as stochastic methods (mini-batch SGD, per-sample gradients) use it.
    pub fn train_view(&self) -> TrainView<'_, B> {
        TrainView {
            x: &self.train.x,
            y: &self.train.y,
            weights: self.train_weights(),
            weights_host: self.train_weights_host(),
            reg_diag: &self.state.reg_diag,
            groups: self.groups,
            lambda: &self.state.lambda,
            loss: self.loss,
            n: self.train.n,
        }
    }

    fn train_weights(&self) -> Option<&B::Buf> {
        self.state.weights.as_ref().map(|(buf, _, _)| buf)
    }

    fn train_weights_host(&self) -> Option<&[f64]> {
        self.state.weights.as_ref().map(|(_, s, _)| s.as_slice())
    }
}

/// `quadratic` is a [`crate::problem::QuadraticBilevel`], `distill` a
/// [`crate::problem::DistillBilevel`] (around a softmax GLM); neither is built here.
fn not_a_glm(kind: ProblemKind) -> Error {
    let with = match kind {
        ProblemKind::Distill => "DistillBilevel",
        _ => "QuadraticBilevel",
    };
    Error::option(
        "--problem",
        format!(
            "{} is not built as a plain GlmBilevel; build it with {with}",
            kind.name()
        ),
    )
}

/// Number of rows classified right, read off the gradient factors `G_i = ∇_z ℓ`: for the
/// logistic loss the margin is right when `|G_i| < ½`, for softmax when the true class has the
/// largest probability `p = G + e_y`.
fn accuracy_from_factors(loss: Loss, g: &[f64], labels: &[f64]) -> f64 {
    match loss {
        Loss::Squared => 0.0,
        Loss::Logistic => g.iter().filter(|&&gi| gi.abs() < 0.5).count() as f64,
        Loss::Softmax { classes } => g
            .chunks_exact(classes)
            .zip(labels)
            .filter(|(gi, &y)| {
                let k = y as usize;
                let pk = gi[k] + 1.0;
                gi.iter().enumerate().all(|(j, &gj)| j == k || gj < pk)
            })
            .count() as f64,
    }
}

impl<B: GlmOps> InnerProblem for GlmBilevel<B> {
    type B = B;
    type Hessian = Curvature<B>;

    fn backend(&self) -> &B {
        &self.backend
    }

    fn inner_dim(&self) -> usize {
        self.c * self.d
    }

    fn inner_value_grad(&self, w: &B::Buf, mut grad: Option<&mut B::Buf>) -> Result<f64> {
        let b = &self.backend;
        let n = self.train.n as f64;
        let data = b.glm_value_grad(
            &self.train.x,
            self.loss,
            &self.train.y,
            self.train_weights(),
            w,
            1.0 / n,
            grad.as_deref_mut(),
        )?;
        if let Some(grad) = grad {
            b.mul_add(1.0, &self.state.reg_diag, w, grad)?;
        }
        let sq = b.group_dot(self.groups, w, w)?;
        let reg: f64 = 0.5
            * sq.iter()
                .zip(&self.state.lambda)
                .map(|(s, l)| s * l)
                .sum::<f64>();
        Ok(data / n + reg)
    }

    fn hessian(&self, w: &B::Buf) -> Result<Curvature<B>> {
        let n = self.train.n as f64;
        self.backend.glm_curvature(
            &self.train.x,
            self.loss,
            &self.train.y,
            self.train_weights(),
            w,
            1.0 / n,
        )
    }

    fn majorant(&self) -> Result<Curvature<B>> {
        // ℓ''_max (1/n) Σ s_i x_i x_iᵀ ⊗ I_c + diag(r) ⪰ H(W) for every W.
        let n = self.train.n as f64;
        let scale = self.loss.max_curvature() / n;
        let row_scale: Vec<f64> = match self.train_weights_host() {
            Some(s) => s.iter().map(|si| scale * si).collect(),
            None => vec![scale; self.train.n],
        };
        Ok(Curvature {
            loss: Loss::Squared,
            row_scale: self.backend.upload(&row_scale)?,
            probs: None,
        })
    }

    fn hvp(&self, h: &Curvature<B>, v: &B::Buf, out: &mut B::Buf) -> Result<()> {
        let b = &self.backend;
        // The majorant carries a one-output curvature even for c outputs: the kernel then views
        // the batch as m·c vectors of length d, which applies the same row curvature to every
        // output (the `⊗ I_c`).
        b.glm_hvp(&self.train.x, h, v, out)?;
        b.mul_add(1.0, &self.state.reg_diag, v, out)
    }

    fn strong_convexity(&self) -> f64 {
        self.state
            .lambda
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
    }

    fn smoothness_bound(&self) -> f64 {
        let n = self.train.n as f64;
        let data = self.loss.max_curvature() / n
            * self.train.weighted_norm_power(self.train_weights_host(), 2);
        data + self.state.lambda.iter().copied().fold(0.0, f64::max)
    }

    fn train_rows(&self) -> usize {
        self.train.n
    }

    /// The fused step of the stochastic methods' inner loop (`glm_sgd_step`).
    fn sgd_step(&self, w: &mut B::Buf, rows: &B::Rows, step: f64) -> Result<()> {
        let b = &self.backend;
        let mut factors = b.zeros(b.rows_len(rows) * self.c)?;
        b.glm_sgd_step(
            &self.train.x,
            self.loss,
            &self.train.y,
            self.train_weights(),
            rows,
            &self.state.reg_diag,
            step,
            w,
            &mut factors,
        )
    }

    fn batch_gradient(&self, w: &B::Buf, rows: &B::Rows, out: &mut B::Buf) -> Result<()> {
        let b = &self.backend;
        let mut factors = b.zeros(b.rows_len(rows) * self.c)?;
        b.glm_batch_gradient(
            &self.train.x,
            self.loss,
            &self.train.y,
            self.train_weights(),
            rows,
            &self.state.reg_diag,
            w,
            out,
            &mut factors,
        )
    }
}

impl<B: GlmOps> Bilevel for GlmBilevel<B> {
    fn hyper_dim(&self) -> usize {
        self.p()
    }

    fn theta(&self) -> &[f64] {
        &self.state.theta
    }

    fn set_theta(&mut self, theta: &[f64]) -> Result<()> {
        let p = match self.layout {
            HyperLayout::PerSample => self.train.n,
            _ => self.groups.count(self.c * self.d),
        };
        if theta.len() != p {
            return Err(Error::Dimension(format!(
                "θ has {} entries but {} with --hyper {} needs {p}",
                theta.len(),
                self.kind.name(),
                self.layout.name()
            )));
        }
        if let Some(i) = theta.iter().position(|t| !t.is_finite()) {
            return Err(Error::Numerical(format!(
                "θ[{i}] = {} is not finite",
                theta[i]
            )));
        }
        let b = &self.backend;
        let big_p = self.c * self.d;
        let (lambda, weights) = match self.layout {
            HyperLayout::PerSample => {
                let s: Vec<f64> = theta.iter().map(|&t| sigmoid(t)).collect();
                let ds: Vec<f64> = s.iter().map(|si| si * (1.0 - si)).collect();
                (vec![self.l2], Some((b.upload(&s)?, s, ds)))
            }
            _ => {
                let lambda: Vec<f64> = theta.iter().map(|t| t.exp()).collect();
                if let Some(l) = lambda.iter().find(|l| !(**l > 0.0 && l.is_finite())) {
                    return Err(Error::Numerical(format!(
                        "λ = exp(θ) = {l} is not a positive finite number; keep θ within ±700"
                    )));
                }
                (lambda, None)
            }
        };
        let reg_diag = b.group_expand(self.groups, &lambda, big_p)?;
        self.state = ThetaState {
            theta: theta.to_vec(),
            lambda,
            reg_diag,
            weights,
        };
        Ok(())
    }

    fn outer_value_grad(&self, w: &B::Buf, grad: Option<&mut B::Buf>) -> Result<f64> {
        let m = self.val.n as f64;
        let scale = self.outer_scale / m;
        let sum = self.backend.glm_value_grad(
            &self.val.x,
            self.loss,
            &self.val.y,
            None,
            w,
            scale,
            grad,
        )?;
        Ok(scale * sum)
    }

    fn cross_t(&self, w: &B::Buf, q: &B::Buf) -> Result<Vec<f64>> {
        let b = &self.backend;
        match &self.state.weights {
            None => {
                let dots = b.group_dot(self.groups, w, q)?;
                Ok(dots
                    .iter()
                    .zip(&self.state.lambda)
                    .map(|(d, l)| d * l)
                    .collect())
            }
            Some((_, _, ds)) => {
                let n = self.train.n as f64;
                let g = b.glm_row_factors(&self.train.x, self.loss, &self.train.y, w)?;
                let pairing = b.glm_row_pairing(&self.train.x, q, &g)?;
                Ok(pairing.iter().zip(ds).map(|(r, dsi)| dsi / n * r).collect())
            }
        }
    }

    fn cross_add(&self, w: &B::Buf, alpha: f64, batch: &mut B::Buf) -> Result<()> {
        let b = &self.backend;
        match &self.state.weights {
            None => {
                let coef: Vec<f64> = self.state.lambda.iter().map(|l| alpha * l).collect();
                b.group_scatter_add(self.groups, &coef, w, batch)
            }
            Some((_, _, ds)) => {
                let n = self.train.n as f64;
                let g = b.glm_row_factors(&self.train.x, self.loss, &self.train.y, w)?;
                let coef: Vec<f64> = ds.iter().map(|dsi| alpha * dsi / n).collect();
                b.glm_add_row_outer(&self.train.x, &coef, &g, batch)
            }
        }
    }

    fn bound_constants(&self, w: &B::Buf) -> Result<Option<BoundConstants>> {
        let b = &self.backend;
        let n = self.train.n as f64;
        let m = self.val.n as f64;
        let weights = self.train_weights_host();
        let l_h = self.loss.curvature_lipschitz() / n * self.train.weighted_norm_power(weights, 3);
        let l_f = self.outer_scale * self.loss.max_curvature() / m
            * self.val.weighted_norm_power(None, 2);
        let (l_b, b_norm) = match &self.state.weights {
            None => {
                let sq = b.group_dot(self.groups, w, w)?;
                let b_norm = sq
                    .iter()
                    .zip(&self.state.lambda)
                    .map(|(s, l)| l * s.sqrt())
                    .fold(0.0, f64::max);
                let l_b = self.state.lambda.iter().copied().fold(0.0, f64::max);
                (l_b, b_norm)
            }
            Some((_, _, ds)) => {
                let g =
                    b.download(&b.glm_row_factors(&self.train.x, self.loss, &self.train.y, w)?)?;
                let c = self.c;
                let mut b_sq = 0.0;
                let mut lb_sq = 0.0;
                for (i, (&dsi, &rho)) in ds.iter().zip(&self.train.row_norms).enumerate() {
                    let g_sq: f64 = g[i * c..(i + 1) * c].iter().map(|v| v * v).sum();
                    b_sq += dsi * dsi * rho * rho * g_sq;
                    lb_sq += dsi * dsi * rho.powi(4);
                }
                (
                    self.loss.gradient_lipschitz() / n * lb_sq.sqrt(),
                    b_sq.sqrt() / n,
                )
            }
        };
        Ok(Some(BoundConstants {
            mu: self.strong_convexity(),
            l_h,
            l_b,
            l_f,
            b_norm,
        }))
    }
}
