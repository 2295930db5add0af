//! Shared helpers of the integration tests: random bilevel instances, finite differences and
//! a naive dense f64 reference of the GLM problems of SPEC §2 written from the formulas
//! (ndarray loops, no library kernels), so that the library can be checked against it.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use hypergrad::backend::cpu::CpuBackend;
use hypergrad::backend::Loss;
use hypergrad::data::rng::Rng;
use hypergrad::data::{synthetic, Dataset};
use hypergrad::hypergrad::Options;
use hypergrad::problem::{Bilevel, GlmBilevel, HyperLayout, ProblemKind};
use hypergrad::solver::{self, InnerOptions, Solver};
use ndarray::{Array1, Array2};

pub type B64 = CpuBackend<f64>;
pub type Problem64 = GlmBilevel<B64>;

/// Every problem of SPEC §2 that the library implements, with every hyper-parameter layout.
pub const CONFIGS: [(ProblemKind, HyperLayout); 7] = [
    (ProblemKind::Ridge, HyperLayout::Shared),
    (ProblemKind::Ridge, HyperLayout::PerFeature),
    (ProblemKind::Logreg, HyperLayout::Shared),
    (ProblemKind::Logreg, HyperLayout::PerFeature),
    (ProblemKind::Softmax, HyperLayout::Shared),
    (ProblemKind::Softmax, HyperLayout::PerClass),
    (ProblemKind::Hyperclean, HyperLayout::PerSample),
];

/// Classes of the multi-class problems in these tests.
pub const CLASSES: usize = 3;

/// A uniform draw in `[lo, hi)`.
pub fn uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.uniform()
}

/// A uniform integer in `lo..=hi`.
pub fn int_in(rng: &mut Rng, lo: usize, hi: usize) -> usize {
    lo + rng.below(hi - lo + 1)
}

/// A log-uniform draw in `[lo, hi)`.
pub fn log_uniform(rng: &mut Rng, lo: f64, hi: f64) -> f64 {
    (uniform(rng, lo.ln(), hi.ln())).exp()
}

/// Training and validation data for `kind` from the synthetic generators: `n_train + n_val`
/// rows of one model (so both sides share the ground truth), split in order. For the
/// multi-class problems the seed is bumped until the training labels use all classes (a
/// validation label outside the training classes is an error of the problem's constructor).
pub fn datasets(
    kind: ProblemKind,
    n_train: usize,
    n_val: usize,
    d: usize,
    seed: u64,
) -> (Dataset, Dataset) {
    datasets_rho(kind, n_train, n_val, d, 0.3, seed)
}

/// [`datasets`] with feature correlation `rho` (Toeplitz, see [`synthetic::design`]).
pub fn datasets_rho(
    kind: ProblemKind,
    n_train: usize,
    n_val: usize,
    d: usize,
    rho: f64,
    seed: u64,
) -> (Dataset, Dataset) {
    let n = n_train + n_val;
    for attempt in 0..100u64 {
        let s = seed.wrapping_mul(1000).wrapping_add(attempt);
        let all = match kind {
            ProblemKind::Ridge => synthetic::linear(n, d, rho, 0.5, s).0,
            ProblemKind::Logreg => synthetic::logistic(n, d, rho, 2.0, s).0,
            ProblemKind::Softmax | ProblemKind::Hyperclean => {
                synthetic::softmax(n, d, CLASSES, rho, 2.0, s).0
            }
            ProblemKind::Quadratic => panic!("quadratic is generated from its spec, not from rows"),
            ProblemKind::Distill => panic!("distill's training rows are θ (see tests/distill.rs)"),
        };
        let train = all.select(&(0..n_train).collect::<Vec<_>>());
        let val = all.select(&(n_train..n).collect::<Vec<_>>());
        let ok = match kind {
            ProblemKind::Softmax | ProblemKind::Hyperclean => {
                (0..CLASSES).all(|k| train.y.contains(&(k as f64)))
            }
            ProblemKind::Logreg => train.y.contains(&1.0) && train.y.contains(&-1.0),
            ProblemKind::Ridge | ProblemKind::Quadratic | ProblemKind::Distill => true,
        };
        if ok {
            return (train, val);
        }
    }
    panic!("no dataset with all classes for seed {seed}");
}

/// A random θ of the layout's length: log λ ∈ [−3, 0] for the regularisers, the logits of the
/// sample weights in [−2, 2] for `hyperclean`.
pub fn random_theta(kind: ProblemKind, p: usize, rng: &mut Rng) -> Vec<f64> {
    (0..p)
        .map(|_| match kind {
            ProblemKind::Hyperclean => uniform(rng, -2.0, 2.0),
            _ => uniform(rng, -3.0, 0.0),
        })
        .collect()
}

/// A random instance: the problem on the CPU f64 backend with a random θ already set, plus its
/// data and `l2` (for the dense reference).
pub struct Instance {
    pub problem: Problem64,
    pub train: Dataset,
    pub val: Dataset,
    pub l2: f64,
}

/// A small random instance of `(kind, layout)` from `seed`: n_train ∈ [30, 80], n_val ∈ [20, 60],
/// d ∈ [3, 8], C ∈ [0.05, 0.5].
pub fn instance(kind: ProblemKind, layout: HyperLayout, seed: u64) -> Instance {
    let mut rng = Rng::new(seed ^ 0x5eed_0000_0000);
    let n_train = int_in(&mut rng, 30, 80);
    let n_val = int_in(&mut rng, 20, 60);
    let d = int_in(&mut rng, 3, 8);
    let l2 = uniform(&mut rng, 0.05, 0.5);
    instance_with(kind, layout, n_train, n_val, d, l2, seed, &mut rng)
}

/// An instance of the given sizes; θ drawn from `rng`.
#[allow(clippy::too_many_arguments)]
pub fn instance_with(
    kind: ProblemKind,
    layout: HyperLayout,
    n_train: usize,
    n_val: usize,
    d: usize,
    l2: f64,
    seed: u64,
    rng: &mut Rng,
) -> Instance {
    let (train, val) = datasets(kind, n_train, n_val, d, seed);
    let mut problem =
        GlmBilevel::new(B64::new(), kind, layout, &train, &val, l2).expect("valid problem");
    let theta = random_theta(kind, problem.hyper_dim(), rng);
    problem.set_theta(&theta).unwrap();
    Instance {
        problem,
        train,
        val,
        l2,
    }
}

/// Newton to a relative gradient tolerance of 1e-13: about the floor of f64 for these
/// sizes (‖∇g‖ is evaluated with an absolute rounding error of order 1e-16 · ‖X‖²‖w‖ ≈ 1e-15
/// relative to ‖∇g(0)‖), so the inner solution is as accurate as f64 allows.
pub fn tight_inner() -> InnerOptions {
    InnerOptions {
        solver: Solver::Newton,
        tol: 1e-13,
        max_iters: 200,
        minibatch: Default::default(),
    }
}

/// `opts` with the tight inner solve.
pub fn tight(mut opts: Options) -> Options {
    opts.inner = tight_inner();
    opts
}

/// `F(θ) = f(w*(θ))` with `w*` from the tight inner solve (θ is left set on the problem).
pub fn outer_at_solution(problem: &mut Problem64, theta: &[f64]) -> f64 {
    problem.set_theta(theta).unwrap();
    let inner = solver::solve(&*problem, None, &tight_inner()).unwrap();
    problem.outer_value_grad(&inner.w, None).unwrap()
}

/// The fourth-order central difference
/// `F'(θ)_j ≈ [−F(θ+2he_j) + 8F(θ+he_j) − 8F(θ−he_j) + F(θ−2he_j)] / (12h)`,
/// with truncation error `h⁴ |F⁽⁵⁾| / 30` and rounding error about `1.5 δ / h` for an
/// evaluation error `δ` of `F`. θ is restored on the problem afterwards.
pub fn central_difference<F>(
    problem: &mut Problem64,
    theta: &[f64],
    h: f64,
    mut eval: F,
) -> Vec<f64>
where
    F: FnMut(&mut Problem64, &[f64]) -> f64,
{
    let mut grad = vec![0.0; theta.len()];
    let mut t = theta.to_vec();
    for j in 0..theta.len() {
        let mut at = |offset: f64, problem: &mut Problem64| {
            t[j] = theta[j] + offset;
            let v = eval(problem, &t);
            t[j] = theta[j];
            v
        };
        let f2p = at(2.0 * h, problem);
        let f1p = at(h, problem);
        let f1m = at(-h, problem);
        let f2m = at(-2.0 * h, problem);
        grad[j] = (-f2p + 8.0 * f1p - 8.0 * f1m + f2m) / (12.0 * h);
    }
    problem.set_theta(theta).unwrap();
    grad
}

/// `‖a‖₂`.
pub fn norm(a: &[f64]) -> f64 {
    a.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// `‖a − b‖₂`.
pub fn dist(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// `‖a − b‖₂ / ‖b‖₂` (`b` the reference; absolute if `b` vanishes).
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let nb = norm(b);
    let e = dist(a, b);
    if nb > 0.0 {
        e / nb
    } else {
        e
    }
}

// ---- naive per-row losses (f64, from the definitions) ---------------------------------------

/// `(ℓ(z, y), ∇_z ℓ, ∇²_z ℓ)` of one row, written from SPEC §2.
pub fn row_loss(loss: Loss, z: &[f64], y: f64) -> (f64, Vec<f64>, Array2<f64>) {
    match loss {
        Loss::Squared => {
            let r = z[0] - y;
            (0.5 * r * r, vec![r], Array2::from_elem((1, 1), 1.0))
        }
        Loss::Logistic => {
            let m = y * z[0];
            // log(1 + e^{−m}) and σ(t) = 1/(1 + e^{−t}), both stable for any sign of m.
            let value = if m > 0.0 {
                (-m).exp().ln_1p()
            } else {
                -m + m.exp().ln_1p()
            };
            let sig = |t: f64| {
                if t >= 0.0 {
                    1.0 / (1.0 + (-t).exp())
                } else {
                    t.exp() / (1.0 + t.exp())
                }
            };
            let grad = -y * sig(-m);
            let hess = sig(m) * sig(-m);
            (value, vec![grad], Array2::from_elem((1, 1), hess))
        }
        Loss::Softmax { classes } => {
            let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
            let s: f64 = e.iter().sum();
            let p: Vec<f64> = e.iter().map(|v| v / s).collect();
            let k = y as usize;
            let value = max + s.ln() - z[k];
            let mut grad = p.clone();
            grad[k] -= 1.0;
            let mut hess = Array2::zeros((classes, classes));
            for a in 0..classes {
                for b in 0..classes {
                    hess[[a, b]] = if a == b { p[a] } else { 0.0 } - p[a] * p[b];
                }
            }
            (value, grad, hess)
        }
    }
}

/// `z = W x` for `W` class-major `c×d` flattened.
pub fn logits(w: &[f64], x: ndarray::ArrayView1<f64>, c: usize) -> Vec<f64> {
    let d = x.len();
    (0..c)
        .map(|k| (0..d).map(|j| w[k * d + j] * x[j]).sum())
        .collect()
}

// ---- the dense reference of a GLM bilevel problem -------------------------------------------

/// The GLM bilevel problem of SPEC §2 with everything dense, from the formulas.
pub struct DenseRef {
    pub kind: ProblemKind,
    pub layout: HyperLayout,
    pub loss: Loss,
    pub x: Array2<f64>,
    pub y: Vec<f64>,
    pub xv: Array2<f64>,
    pub yv: Vec<f64>,
    pub l2: f64,
    pub theta: Vec<f64>,
    pub c: usize,
    pub d: usize,
}

impl DenseRef {
    pub fn new(
        kind: ProblemKind,
        layout: HyperLayout,
        train: &Dataset,
        val: &Dataset,
        l2: f64,
        theta: &[f64],
    ) -> DenseRef {
        let loss = match kind {
            ProblemKind::Ridge => Loss::Squared,
            ProblemKind::Logreg => Loss::Logistic,
            _ => Loss::Softmax {
                classes: train.num_classes().unwrap(),
            },
        };
        DenseRef {
            kind,
            layout,
            loss,
            x: train.x.clone(),
            y: train.y.clone(),
            xv: val.x.clone(),
            yv: val.y.clone(),
            l2,
            theta: theta.to_vec(),
            c: loss.outputs(),
            d: train.x.ncols(),
        }
    }

    pub fn big_p(&self) -> usize {
        self.c * self.d
    }

    /// Group of entry `e = k·d + j` of W.
    fn group(&self, e: usize) -> usize {
        match self.layout {
            HyperLayout::Shared | HyperLayout::PerSample => 0,
            HyperLayout::PerFeature => e,
            HyperLayout::PerClass => e / self.d,
            HyperLayout::PerLayer => unreachable!("the linear models have no layers"),
            HyperLayout::PerColumn => unreachable!("per-column is quadratic's, not a GLM's"),
            HyperLayout::SyntheticRows => unreachable!("synthetic-rows is distill's, not a GLM's"),
        }
    }

    /// The regulariser diagonal `r` (length P).
    pub fn reg_diag(&self) -> Vec<f64> {
        (0..self.big_p())
            .map(|e| match self.layout {
                HyperLayout::PerSample => self.l2,
                _ => self.theta[self.group(e)].exp(),
            })
            .collect()
    }

    /// Row weights `s_i` (1 except for hyperclean: σ(θ_i)).
    pub fn weights(&self) -> Vec<f64> {
        (0..self.x.nrows())
            .map(|i| match self.layout {
                HyperLayout::PerSample => 1.0 / (1.0 + (-self.theta[i]).exp()),
                _ => 1.0,
            })
            .collect()
    }

    /// `∇_W g(W)`.
    pub fn inner_grad(&self, w: &[f64]) -> Vec<f64> {
        let n = self.x.nrows() as f64;
        let s = self.weights();
        let r = self.reg_diag();
        let mut g: Vec<f64> = (0..self.big_p()).map(|e| r[e] * w[e]).collect();
        for (i, xi) in self.x.rows().into_iter().enumerate() {
            let (_, gz, _) = row_loss(self.loss, &logits(w, xi, self.c), self.y[i]);
            for k in 0..self.c {
                for j in 0..self.d {
                    g[k * self.d + j] += s[i] / n * gz[k] * xi[j];
                }
            }
        }
        g
    }

    /// Dense `H = ∇²_WW g` (P×P).
    pub fn hessian(&self, w: &[f64]) -> Array2<f64> {
        let (c, d) = (self.c, self.d);
        let n = self.x.nrows() as f64;
        let s = self.weights();
        let mut h = Array2::from_diag(&Array1::from(self.reg_diag()));
        for (i, xi) in self.x.rows().into_iter().enumerate() {
            let (_, _, hz) = row_loss(self.loss, &logits(w, xi, c), self.y[i]);
            for k in 0..c {
                for k2 in 0..c {
                    for j in 0..d {
                        for j2 in 0..d {
                            h[[k * d + j, k2 * d + j2]] += s[i] / n * hz[[k, k2]] * xi[j] * xi[j2];
                        }
                    }
                }
            }
        }
        h
    }

    /// Dense `B = ∇²_Wθ g` (P×p).
    pub fn cross(&self, w: &[f64]) -> Array2<f64> {
        let (c, d) = (self.c, self.d);
        let p = self.theta.len();
        let mut b = Array2::zeros((self.big_p(), p));
        match self.layout {
            HyperLayout::PerSample => {
                let n = self.x.nrows() as f64;
                for (i, xi) in self.x.rows().into_iter().enumerate() {
                    let si = 1.0 / (1.0 + (-self.theta[i]).exp());
                    let dsi = si * (1.0 - si);
                    let (_, gz, _) = row_loss(self.loss, &logits(w, xi, c), self.y[i]);
                    for k in 0..c {
                        for j in 0..d {
                            b[[k * d + j, i]] = dsi / n * gz[k] * xi[j];
                        }
                    }
                }
            }
            _ => {
                for e in 0..self.big_p() {
                    let l = self.group(e);
                    b[[e, l]] = self.theta[l].exp() * w[e];
                }
            }
        }
        b
    }

    /// `f(W)` and `∇_W f(W)`.
    pub fn outer_value_grad(&self, w: &[f64]) -> (f64, Vec<f64>) {
        let (c, d) = (self.c, self.d);
        let m = self.xv.nrows() as f64;
        let kappa = if self.kind == ProblemKind::Ridge {
            2.0
        } else {
            1.0
        };
        let mut value = 0.0;
        let mut g = vec![0.0; self.big_p()];
        for (i, xi) in self.xv.rows().into_iter().enumerate() {
            let (v, gz, _) = row_loss(self.loss, &logits(w, xi, c), self.yv[i]);
            value += kappa / m * v;
            for k in 0..c {
                for j in 0..d {
                    g[k * d + j] += kappa / m * gz[k] * xi[j];
                }
            }
        }
        (value, g)
    }
}

/// `A v` for a dense matrix.
pub fn matvec(a: &Array2<f64>, v: &[f64]) -> Vec<f64> {
    a.dot(&Array1::from(v.to_vec())).to_vec()
}

/// `Aᵀ v` for a dense matrix.
pub fn matvec_t(a: &Array2<f64>, v: &[f64]) -> Vec<f64> {
    a.t().dot(&Array1::from(v.to_vec())).to_vec()
}

/// Prints a measurement when `HYPERGRAD_TEST_VERBOSE` is set (run with `--nocapture`), so
/// the margins of the tolerances can be inspected.
pub fn note(msg: impl FnOnce() -> String) {
    if std::env::var_os("HYPERGRAD_TEST_VERBOSE").is_some() {
        eprintln!("{}", msg());
    }
}

/// `for_each_config!(check)` makes a module `check` with one `#[test]` per problem/layout of
/// [`CONFIGS`], each calling `check(kind, layout)` (the function must be in the parent module).
#[allow(unused_macros)]
macro_rules! for_each_config {
    ($check:ident) => {
        mod $check {
            use hypergrad::problem::{HyperLayout, ProblemKind};
            #[test]
            fn ridge_shared() {
                super::$check(ProblemKind::Ridge, HyperLayout::Shared)
            }
            #[test]
            fn ridge_per_feature() {
                super::$check(ProblemKind::Ridge, HyperLayout::PerFeature)
            }
            #[test]
            fn logreg_shared() {
                super::$check(ProblemKind::Logreg, HyperLayout::Shared)
            }
            #[test]
            fn logreg_per_feature() {
                super::$check(ProblemKind::Logreg, HyperLayout::PerFeature)
            }
            #[test]
            fn softmax_shared() {
                super::$check(ProblemKind::Softmax, HyperLayout::Shared)
            }
            #[test]
            fn softmax_per_class() {
                super::$check(ProblemKind::Softmax, HyperLayout::PerClass)
            }
            #[test]
            fn hyperclean_per_sample() {
                super::$check(ProblemKind::Hyperclean, HyperLayout::PerSample)
            }
        }
    };
}

/// `Σ v` by Neumaier's compensated summation: error ≈ 1e-16 relative to `Σ|v|` whatever the
/// length, so long reference sums are more accurate than the kernels they check.
pub fn ksum(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sum = 0.0_f64;
    let mut comp = 0.0_f64;
    for v in values {
        let t = sum + v;
        if sum.abs() >= v.abs() {
            comp += (sum - t) + v;
        } else {
            comp += (v - t) + sum;
        }
        sum = t;
    }
    sum + comp
}

/// Rounds to the nearest f32 (so the value is exact in both backends).
pub fn r32(v: f64) -> f64 {
    v as f32 as f64
}

/// `len` normal draws scaled by `sd`, rounded to f32.
pub fn normals(rng: &mut hypergrad::data::rng::Rng, len: usize, sd: f64) -> Vec<f64> {
    (0..len).map(|_| r32(sd * rng.normal())).collect()
}

/// Random GLM operands (all f32-representable): a design, labels fitting `loss`, row weights
/// in [0, 2) with one exactly 0, `W` (c×d) and a regulariser diagonal.
pub struct GlmData {
    pub x: ndarray::Array2<f64>,
    pub y: Vec<f64>,
    pub s: Vec<f64>,
    pub w: Vec<f64>,
    pub reg: Vec<f64>,
}

pub fn glm_data(loss: hypergrad::backend::Loss, n: usize, d: usize, seed: u64) -> GlmData {
    use hypergrad::backend::Loss;
    let mut rng = hypergrad::data::rng::Rng::new(seed);
    let c = loss.outputs();
    let x = ndarray::Array2::from_shape_vec((n, d), normals(&mut rng, n * d, 1.0))
        .expect("n×d entries");
    let y = (0..n)
        .map(|_| match loss {
            Loss::Squared => r32(2.0 * rng.normal()),
            Loss::Logistic => {
                if rng.uniform() < 0.5 {
                    -1.0
                } else {
                    1.0
                }
            }
            Loss::Softmax { classes } => rng.below(classes) as f64,
        })
        .collect();
    let mut s: Vec<f64> = (0..n).map(|_| r32(2.0 * rng.uniform())).collect();
    s[n / 2] = 0.0;
    let w = normals(&mut rng, c * d, 1.0 / (d as f64).sqrt());
    let reg = (0..c * d).map(|_| r32(0.5 * rng.uniform())).collect();
    GlmData { x, y, s, w, reg }
}

/// Entry `(i, j)` of `op(X)` for `X` stored row-major as `rows×cols` (before the transpose).
fn op_entry(x: &[f64], transpose: bool, cols: usize, i: usize, j: usize) -> f64 {
    if transpose {
        x[j * cols + i]
    } else {
        x[i * cols + j]
    }
}

/// `α op(A) op(B) + β C` by the triple loop, in f64. With β = 0, C is not read (it may be
/// empty, or hold NaN), as in BLAS.
#[allow(clippy::too_many_arguments)]
pub fn ref_gemm(
    ta: bool,
    tb: bool,
    (m, n, k): (usize, usize, usize),
    alpha: f64,
    a: &[f64],
    b: &[f64],
    beta: f64,
    c: &[f64],
) -> Vec<f64> {
    // Stored column counts: A is m×k (or k×m if transposed), B is k×n (or n×k).
    let a_cols = if ta { m } else { k };
    let b_cols = if tb { k } else { n };
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k)
                .map(|l| op_entry(a, ta, a_cols, i, l) * op_entry(b, tb, b_cols, l, j))
                .sum();
            let old = if beta == 0.0 {
                0.0
            } else {
                beta * c[i * n + j]
            };
            out[i * n + j] = alpha * s + old;
        }
    }
    out
}
