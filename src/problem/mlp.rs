//! `softmax` and `hyperclean` with a multilayer perceptron as the inner model (SPEC §8):
//!
//! ```text
//! g(w, θ) = (1/n) Σ_i s_i CE(z(w; x_i), y_i) + ½ Σ_e r_e w_e²      (training rows)
//! f(w)    = (1/m) Σ_i CE(z(w; x'_i), y'_i)                          (validation rows)
//! ```
//!
//! with the network, its parameter layout and its primitives in [`crate::backend::mlp`], and
//! * `softmax`: `s_i = 1`, `r_e = λ_{g(e)}` on the entries of the weight matrices and 0 on the
//!   biases, `λ = exp(θ)` shared (p = 1) or one per weight matrix (`--hyper per-layer`, p = L);
//! * `hyperclean`: `s_i = σ(θ_i)` (p = n), `r_e = C` on every weight matrix, biases unpenalised.
//!
//! # Derivatives
//!
//! `∇_w g = (1/n) Σ s_i ∇ℓ_i + r ⊙ w`; `H v` by the R-operator (exact, not Gauss–Newton);
//! `B = ∂(∇_w g)/∂θ` has columns `λ_l (w restricted to the weights of group l)` (so
//! `(Bᵀq)_l = λ_l Σ_{e∈l} w_e q_e`) or, for hyper-cleaning, `(s'_i/n) ∇ℓ_i` (so
//! `(Bᵀq)_i = (s'_i/n) ⟨∇ℓ_i, q⟩`, all rows by one forward R-pass).
//!
//! # What is not as for the linear models
//!
//! * `g` is not convex: the inner solvers reach a local minimiser from the seeded `w₀`
//!   (Glorot-uniform for tanh, He-normal for relu, zero biases), never from the origin,
//!   which is a saddle point of a tanh network ([`InnerProblem::initial_point`]).
//! * The implicit methods need `H(ŵ)` positive definite; CG that meets a direction of
//!   non-positive curvature returns a numerical error, and `exact` reports the failed
//!   Cholesky factorisation.
//! * No valid constants for SPEC §4 are known: `error_bound` is null, there is no global
//!   curvature majorant (`unroll` and `forward` need `--step`; `neumann` and `fixed-point`
//!   take their default step from `H(ŵ)`), and `μ = 0`.
//! * The output biases are unpenalised and the softmax is unchanged when the same constant is
//!   added to every logit, so `g` and `f` are constant along `u = (1, …, 1)/√c` on the output
//!   bias: `H u = 0` at every `w`, and `∇f`, the columns of `B` and every per-sample gradient
//!   are orthogonal to `u`. The Hessian these methods use is `H + κ u uᵀ` (κ below): it has
//!   the same eigenvectors, with `u` given curvature κ instead of 0, and it gives the same
//!   hypergradient, since `q`'s component along `u` meets `Bᵀ` as 0. Without it `exact`
//!   factorises a singular matrix.

use crate::backend::cpu::sigmoid;
use crate::backend::mlp::{Activation, Deltas, MlpData, MlpOps, Network, Tape};
use crate::backend::Backend;
use crate::data::rng::Rng;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::problem::{Bilevel, BoundConstants, HyperLayout, InnerProblem, ProblemKind};
use ndarray::Array2;

/// One side of the problem (training or validation rows) on the backend.
struct Side<B: Backend> {
    /// The rows with the constant 1 appended.
    x: B::Design,
    y: B::Buf,
    n: usize,
}

impl<B: Backend> Side<B> {
    fn new(backend: &B, data: &Dataset) -> Result<Self> {
        Ok(Side {
            x: backend.upload_design(&with_ones(&data.x))?,
            y: backend.upload(&data.y)?,
            n: data.n(),
        })
    }
}

/// `x` with the constant 1 appended as its last column: the design the network primitives read.
pub fn with_ones(x: &Array2<f64>) -> Array2<f64> {
    let (n, d) = x.dim();
    Array2::from_shape_fn((n, d + 1), |(i, j)| if j < d { x[[i, j]] } else { 1.0 })
}

/// The θ-dependent parts of `g`, recomputed by `set_theta`.
struct ThetaState<B: Backend> {
    theta: Vec<f64>,
    /// λ of every layer (`C` for each, for hyper-cleaning).
    lambda: Vec<f64>,
    /// `r` expanded to the P parameters (0 on the biases).
    reg_diag: B::Buf,
    /// Hyper-cleaning: `s_i = σ(θ_i)` on the backend and host, and `s'_i = s_i (1 − s_i)`.
    weights: Option<(B::Buf, Vec<f64>, Vec<f64>)>,
    /// κ, the curvature given to the softmax shift direction.
    shift: f64,
}

/// The Hessian at a point: the forward tape and the backward deltas of the training rows.
pub struct MlpHessian<B: Backend> {
    tape: Tape<B>,
    deltas: Deltas<B>,
    w: B::Buf,
}

/// The network bilevel problem (see the module docs).
pub struct MlpBilevel<B: MlpOps> {
    backend: B,
    kind: ProblemKind,
    layout: HyperLayout,
    net: Network,
    l2: f64,
    train: Side<B>,
    val: Side<B>,
    w0: B::Buf,
    state: ThetaState<B>,
}

/// `w₀` of `net` from `seed`: Glorot-uniform `U(±√(6/(fan_in + fan_out)))` weights for tanh,
/// He-normal `N(0, 2/fan_in)` for relu, zero biases (SPEC §8).
pub fn initial_weights(net: &Network, seed: u64) -> Result<Vec<f64>> {
    let mut rng = Rng::new(seed ^ 0x1417_ABCD_0000_0001);
    let mut w = Vec::new();
    crate::memory::reserve(&mut w, net.dim(), "the network's weights w₀")?;
    for l in 0..net.layers() {
        let (fan_in, fan_out) = net.fans(l);
        let glorot = (6.0 / (fan_in + fan_out) as f64).sqrt();
        let he = (2.0 / fan_in as f64).sqrt();
        for _ in 0..fan_out {
            for _ in 0..fan_in {
                w.push(match net.activation() {
                    Activation::Tanh => glorot * (2.0 * rng.uniform() - 1.0),
                    Activation::Relu => he * rng.normal(),
                });
            }
            w.push(0.0);
        }
    }
    Ok(w)
}

impl<B: MlpOps> MlpBilevel<B> {
    /// Builds the problem: `hidden` are the hidden layers' widths, `seed` draws `w₀`, `l2` is
    /// hyper-cleaning's `C` (ignored for softmax). Checks that the labels fit (at least two
    /// classes among the training labels, validation labels among them), the shapes agree
    /// and the layout belongs to the problem. θ starts at 0.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: B,
        kind: ProblemKind,
        layout: HyperLayout,
        hidden: &[usize],
        activation: Activation,
        train: &Dataset,
        val: &Dataset,
        l2: f64,
        seed: u64,
    ) -> Result<Self> {
        if !kind.is_multiclass() {
            return Err(Error::option(
                "--model",
                format!(
                    "mlp is a model of softmax and hyperclean, not of {}",
                    kind.name()
                ),
            ));
        }
        let allowed: &[HyperLayout] = match kind {
            ProblemKind::Hyperclean => &[HyperLayout::PerSample],
            _ => &[HyperLayout::Shared, HyperLayout::PerLayer],
        };
        if !allowed.contains(&layout) {
            let names: Vec<_> = allowed.iter().map(|l| l.name()).collect();
            return Err(Error::option(
                "--hyper",
                format!(
                    "{} is not a layout of {} with a network (use {})",
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
        let net = Network::new(train.d(), hidden, classes, activation)?;
        let w0 = backend.upload(&initial_weights(&net, seed)?)?;
        let p = match layout {
            HyperLayout::PerSample => train.n(),
            HyperLayout::PerLayer => net.layers(),
            _ => 1,
        };
        let mut problem = MlpBilevel {
            train: Side::new(&backend, train)?,
            val: Side::new(&backend, val)?,
            state: ThetaState {
                theta: Vec::new(),
                lambda: Vec::new(),
                reg_diag: backend.zeros(0)?,
                weights: None,
                shift: 0.0,
            },
            backend,
            kind,
            layout,
            net,
            l2,
            w0,
        };
        problem.set_theta(&vec![0.0; p])?;
        Ok(problem)
    }

    /// Replaces the training rows by as many rows of the same width, labels among the
    /// network's classes (dataset distillation moves them with its θ).
    pub fn replace_train(&mut self, train: &Dataset) -> Result<()> {
        if train.n() != self.train.n || train.d() != self.net.inputs() {
            return Err(Error::Dimension(format!(
                "replacement training rows are {}×{}, the problem's {}×{}",
                train.n(),
                train.d(),
                self.train.n,
                self.net.inputs()
            )));
        }
        let classes = train.num_classes()?;
        if classes > self.net.outputs() {
            return Err(Error::Labels(format!(
                "{}: label {} is not one of the network's {} classes",
                train.name,
                classes - 1,
                self.net.outputs()
            )));
        }
        self.train = Side::new(&self.backend, train)?;
        Ok(())
    }

    pub fn kind(&self) -> ProblemKind {
        self.kind
    }

    pub fn layout(&self) -> HyperLayout {
        self.layout
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    /// λ of every layer (`C` for each, for hyper-cleaning).
    pub fn lambda(&self) -> &[f64] {
        &self.state.lambda
    }

    /// The regulariser's diagonal `r` (P entries, 0 on the biases).
    pub fn reg_diag(&self) -> &B::Buf {
        &self.state.reg_diag
    }

    /// Hyper-cleaning's row weights `s_i = σ(θ_i)` on the host.
    pub fn weights_host(&self) -> Option<&[f64]> {
        self.state.weights.as_ref().map(|(_, s, _)| s.as_slice())
    }

    /// The training rows (with hyper-cleaning's weights) as the primitives read them.
    pub fn train_data(&self) -> MlpData<'_, B> {
        MlpData {
            x: &self.train.x,
            y: &self.train.y,
            weights: self.state.weights.as_ref().map(|(s, _, _)| s),
            rows: None,
        }
    }

    /// Rows in the training data.
    pub fn n_train(&self) -> usize {
        self.train.n
    }

    /// κ, the curvature the Hessian gives the softmax shift direction (module docs):
    /// ½ (the largest curvature of CE) times the mean row weight, the scale of the output
    /// bias's own curvature.
    pub fn shift_curvature(&self) -> f64 {
        self.state.shift
    }

    /// The mean loss of a network on a dataset and its accuracy (the class of largest
    /// probability against the label).
    pub fn evaluate(&self, w: &B::Buf, data: &Dataset) -> Result<(f64, Option<f64>)> {
        let b = &self.backend;
        if data.d() != self.net.inputs() {
            return Err(Error::Dimension(format!(
                "'{}' has {} features but the network takes {}",
                data.name,
                data.d(),
                self.net.inputs()
            )));
        }
        let side = Side::new(b, data)?;
        let rows = MlpData {
            x: &side.x,
            y: &side.y,
            weights: None,
            rows: None,
        };
        let tape = b.mlp_forward(&self.net, rows, w)?;
        let n = side.n as f64;
        let loss = b.mlp_loss(rows, &tape)? / n;
        let probs = b.download(&tape.probs)?;
        let c = self.net.outputs();
        let right = probs
            .chunks_exact(c)
            .zip(&data.y)
            .filter(|(p, &y)| {
                let k = y as usize;
                p.iter().enumerate().all(|(j, &pj)| j == k || pj < p[k])
            })
            .count();
        Ok((loss, Some(right as f64 / n)))
    }

    fn p(&self) -> usize {
        match self.layout {
            HyperLayout::PerSample => self.train.n,
            HyperLayout::PerLayer => self.net.layers(),
            _ => 1,
        }
    }

    /// The hyper-parameter group of entry `e`, or `None` for a bias (unpenalised).
    fn group(&self, e: usize) -> Option<usize> {
        if self.net.is_bias(e) {
            return None;
        }
        Some(match self.layout {
            HyperLayout::PerLayer => self.net.layer_of(e),
            _ => 0,
        })
    }
}

impl<B: MlpOps> InnerProblem for MlpBilevel<B> {
    type B = B;
    type Hessian = MlpHessian<B>;

    fn backend(&self) -> &B {
        &self.backend
    }

    fn inner_dim(&self) -> usize {
        self.net.dim()
    }

    fn inner_value_grad(&self, w: &B::Buf, grad: Option<&mut B::Buf>) -> Result<f64> {
        let b = &self.backend;
        let data = self.train_data();
        let n = self.train.n as f64;
        let tape = b.mlp_forward(&self.net, data, w)?;
        let loss = b.mlp_loss(data, &tape)? / n;
        let mut rw = b.zeros(self.net.dim())?;
        b.mul_add(1.0, &self.state.reg_diag, w, &mut rw)?;
        let reg = 0.5 * b.dot(&rw, w)?;
        if let Some(grad) = grad {
            let deltas = b.mlp_backward(&self.net, data, &tape, w)?;
            b.mlp_gradient(&self.net, data, &tape, &deltas, 1.0 / n, grad)?;
            b.axpy(1.0, &rw, grad)?;
        }
        Ok(loss + reg)
    }

    fn hessian(&self, w: &B::Buf) -> Result<MlpHessian<B>> {
        let b = &self.backend;
        let data = self.train_data();
        let tape = b.mlp_forward(&self.net, data, w)?;
        let deltas = b.mlp_backward(&self.net, data, &tape, w)?;
        let mut copy = b.zeros(b.len(w))?;
        b.copy(w, &mut copy)?;
        Ok(MlpHessian {
            tape,
            deltas,
            w: copy,
        })
    }

    fn majorant(&self) -> Result<MlpHessian<B>> {
        Err(Error::option(
            "--step",
            "a network's curvature has no global bound to take a default step from: give --step ETA (unroll, forward)",
        ))
    }

    fn step_curvature(&self, w: &B::Buf) -> Result<MlpHessian<B>> {
        self.hessian(w)
    }

    fn hvp(&self, h: &MlpHessian<B>, v: &B::Buf, out: &mut B::Buf) -> Result<()> {
        let b = &self.backend;
        let n = self.train.n as f64;
        b.mlp_hvp(
            &self.net,
            self.train_data(),
            &h.tape,
            &h.deltas,
            &h.w,
            1.0 / n,
            self.state.shift,
            v,
            out,
        )?;
        b.mul_add(1.0, &self.state.reg_diag, v, out)
    }

    fn strong_convexity(&self) -> f64 {
        0.0
    }

    fn smoothness_bound(&self) -> f64 {
        f64::INFINITY
    }

    fn initial_point(&self) -> Result<B::Buf> {
        let mut w = self.backend.zeros(self.net.dim())?;
        self.backend.copy(&self.w0, &mut w)?;
        Ok(w)
    }

    fn train_rows(&self) -> usize {
        self.n_train()
    }

    /// The step NHGD's inner loop takes: one forward and backward pass over the batch.
    fn sgd_step(&self, w: &mut B::Buf, rows: &B::Rows, step: f64) -> Result<()> {
        let b = &self.backend;
        let mut g = b.zeros(self.net.dim())?;
        self.batch_gradient(w, rows, &mut g)?;
        b.axpy(-step, &g, w)
    }

    fn batch_gradient(&self, w: &B::Buf, rows: &B::Rows, out: &mut B::Buf) -> Result<()> {
        let b = &self.backend;
        let data = MlpData {
            rows: Some(rows),
            ..self.train_data()
        };
        let tape = b.mlp_forward(&self.net, data, w)?;
        let deltas = b.mlp_backward(&self.net, data, &tape, w)?;
        b.mlp_gradient(&self.net, data, &tape, &deltas, 1.0 / tape.n as f64, out)?;
        b.mul_add(1.0, &self.state.reg_diag, w, out)
    }
}

impl<B: MlpOps> Bilevel for MlpBilevel<B> {
    fn hyper_dim(&self) -> usize {
        self.p()
    }

    fn theta(&self) -> &[f64] {
        &self.state.theta
    }

    fn set_theta(&mut self, theta: &[f64]) -> Result<()> {
        let p = self.p();
        if theta.len() != p {
            return Err(Error::Dimension(format!(
                "θ has {} entries but {} with a network and --hyper {} needs {p}",
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
        let layers = self.net.layers();
        let (lambda, weights) = match self.layout {
            HyperLayout::PerSample => {
                let s: Vec<f64> = theta.iter().map(|&t| sigmoid(t)).collect();
                let ds: Vec<f64> = s.iter().map(|si| si * (1.0 - si)).collect();
                (vec![self.l2; layers], Some((b.upload(&s)?, s, ds)))
            }
            _ => {
                let per_group: Vec<f64> = theta.iter().map(|t| t.exp()).collect();
                if let Some(l) = per_group.iter().find(|l| !(**l > 0.0 && l.is_finite())) {
                    return Err(Error::Numerical(format!(
                        "λ = exp(θ) = {l} is not a positive finite number; keep θ within ±700"
                    )));
                }
                let lambda = (0..layers)
                    .map(|l| per_group[if p == 1 { 0 } else { l }])
                    .collect();
                (lambda, None)
            }
        };
        let reg: Vec<f64> = (0..self.net.dim())
            .map(|e| {
                if self.net.is_bias(e) {
                    0.0
                } else {
                    lambda[self.net.layer_of(e)]
                }
            })
            .collect();
        let mean_weight = weights
            .as_ref()
            .map_or(1.0, |(_, s, _)| s.iter().sum::<f64>() / s.len() as f64);
        self.state = ThetaState {
            theta: theta.to_vec(),
            lambda,
            reg_diag: b.upload(&reg)?,
            weights,
            shift: 0.5 * mean_weight,
        };
        Ok(())
    }

    fn outer_value_grad(&self, w: &B::Buf, grad: Option<&mut B::Buf>) -> Result<f64> {
        let b = &self.backend;
        let data = MlpData {
            x: &self.val.x,
            y: &self.val.y,
            weights: None,
            rows: None,
        };
        let m = self.val.n as f64;
        let tape = b.mlp_forward(&self.net, data, w)?;
        if let Some(grad) = grad {
            let deltas = b.mlp_backward(&self.net, data, &tape, w)?;
            b.mlp_gradient(&self.net, data, &tape, &deltas, 1.0 / m, grad)?;
        }
        Ok(b.mlp_loss(data, &tape)? / m)
    }

    fn cross_t(&self, w: &B::Buf, q: &B::Buf) -> Result<Vec<f64>> {
        let b = &self.backend;
        match &self.state.weights {
            None => {
                // (Bᵀq)_l = λ_l Σ_{e ∈ l} w_e q_e over the weights of group l: O(P) on the host.
                let (wh, qh) = (b.download(w)?, b.download(q)?);
                let mut out = vec![0.0; self.p()];
                for (e, (we, qe)) in wh.iter().zip(&qh).enumerate() {
                    if let Some(g) = self.group(e) {
                        out[g] += self.state.lambda[self.net.layer_of(e)] * we * qe;
                    }
                }
                Ok(out)
            }
            Some((_, _, ds)) => {
                let n = self.train.n as f64;
                let data = self.train_data();
                let tape = b.mlp_forward(&self.net, data, w)?;
                let r = b.mlp_directional(&self.net, data, &tape, w, q)?;
                Ok(r.iter().zip(ds).map(|(ri, dsi)| dsi / n * ri).collect())
            }
        }
    }

    fn cross_add(&self, w: &B::Buf, alpha: f64, batch: &mut B::Buf) -> Result<()> {
        let b = &self.backend;
        let dim = self.net.dim();
        let p = self.p();
        if b.len(batch) != p * dim {
            return Err(Error::Dimension(format!(
                "cross_add: the batch has {} entries, expected p·P = {}",
                b.len(batch),
                p * dim
            )));
        }
        match &self.state.weights {
            None => {
                // Column l of B is λ_l (w on the weights of group l): p·P values on the host.
                let wh = b.download(w)?;
                let mut columns = vec![0.0; p * dim];
                for (e, we) in wh.iter().enumerate() {
                    if let Some(g) = self.group(e) {
                        columns[g * dim + e] = alpha * self.state.lambda[self.net.layer_of(e)] * we;
                    }
                }
                b.axpy(1.0, &b.upload(&columns)?, batch)
            }
            Some((_, _, ds)) => {
                let n = self.train.n as f64;
                let data = self.train_data();
                let tape = b.mlp_forward(&self.net, data, w)?;
                let deltas = b.mlp_backward(&self.net, data, &tape, w)?;
                let coef: Vec<f64> = ds.iter().map(|dsi| alpha * dsi / n).collect();
                let mut grads = b.zeros(p * dim)?;
                b.mlp_per_sample_gradients(
                    &self.net,
                    data,
                    &tape,
                    &deltas,
                    Some(&b.upload(&coef)?),
                    &mut grads,
                )?;
                b.axpy(1.0, &grads, batch)
            }
        }
    }

    fn bound_constants(&self, _w: &B::Buf) -> Result<Option<BoundConstants>> {
        Ok(None)
    }
}
