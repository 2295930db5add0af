//! A naive f64 reference of the multilayer perceptron of SPEC §8, written from the formulas
//! row by row with plain loops (no GEMMs, no library kernels), and random small networks and
//! data for the MLP tests.
#![allow(dead_code, clippy::needless_range_loop)]

use hypergrad::backend::mlp::{Activation, Network};
use hypergrad::data::rng::Rng;
use hypergrad::data::Dataset;
use ndarray::Array2;

/// The reference network: layer sizes and activation, parameters in the library's layout
/// (per layer `[W | b]`, `n_l × (n_{l−1}+1)` row-major, layer 1 first).
pub struct RefNet {
    pub sizes: Vec<usize>,
    pub act: Activation,
}

impl RefNet {
    pub fn new(sizes: &[usize], act: Activation) -> RefNet {
        RefNet {
            sizes: sizes.to_vec(),
            act,
        }
    }

    pub fn network(&self) -> Network {
        let l = self.sizes.len();
        Network::new(
            self.sizes[0],
            &self.sizes[1..l - 1],
            self.sizes[l - 1],
            self.act,
        )
        .unwrap()
    }

    pub fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    pub fn dim(&self) -> usize {
        (0..self.layers())
            .map(|l| self.sizes[l + 1] * (self.sizes[l] + 1))
            .sum()
    }

    fn offset(&self, l: usize) -> usize {
        (0..l)
            .map(|k| self.sizes[k + 1] * (self.sizes[k] + 1))
            .sum()
    }

    /// `W_l[k][j]` (`j = fan_in` is the bias).
    pub fn weight(&self, w: &[f64], l: usize, k: usize, j: usize) -> f64 {
        w[self.offset(l) + k * (self.sizes[l] + 1) + j]
    }

    fn phi(&self, z: f64) -> f64 {
        match self.act {
            Activation::Tanh => z.tanh(),
            Activation::Relu => z.max(0.0),
        }
    }

    fn phi_prime(&self, z: f64) -> f64 {
        match self.act {
            Activation::Tanh => 1.0 - z.tanh().powi(2),
            Activation::Relu => {
                if z > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }

    /// The inputs `ã_{l−1}` of every layer (with the 1 appended), the pre-activations `z_l`,
    /// and the logits, for one row `x` (without the 1).
    pub fn forward(&self, w: &[f64], x: &[f64]) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let mut inputs = Vec::new();
        let mut pre = Vec::new();
        let mut a: Vec<f64> = x.to_vec();
        for l in 0..self.layers() {
            let mut at = a.clone();
            at.push(1.0);
            let z: Vec<f64> = (0..self.sizes[l + 1])
                .map(|k| {
                    (0..=self.sizes[l])
                        .map(|j| self.weight(w, l, k, j) * at[j])
                        .sum()
                })
                .collect();
            inputs.push(at);
            a = z.iter().map(|&v| self.phi(v)).collect();
            pre.push(z);
        }
        (inputs, pre)
    }

    /// `CE(z, y)` of one row.
    pub fn loss(&self, w: &[f64], x: &[f64], y: usize) -> f64 {
        let (_, pre) = self.forward(w, x);
        let z = pre.last().unwrap();
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        lse - z[y]
    }

    /// `δ_l = ∂ℓ/∂z_l` of one row, by backpropagation written out.
    pub fn deltas(&self, w: &[f64], x: &[f64], y: usize) -> Vec<Vec<f64>> {
        let (_, pre) = self.forward(w, x);
        let layers = self.layers();
        let z = &pre[layers - 1];
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        let mut delta: Vec<f64> = e.iter().map(|v| v / sum).collect();
        delta[y] -= 1.0;
        let mut out = vec![Vec::new(); layers];
        out[layers - 1] = delta;
        for l in (1..layers).rev() {
            let below: Vec<f64> = (0..self.sizes[l])
                .map(|j| {
                    let back: f64 = (0..self.sizes[l + 1])
                        .map(|k| self.weight(w, l, k, j) * out[l][k])
                        .sum();
                    back * self.phi_prime(pre[l - 1][j])
                })
                .collect();
            out[l - 1] = below;
        }
        out
    }

    /// `∇_w CE` of one row: block `l` is `δ_l ⊗ ã_{l−1}`.
    pub fn gradient(&self, w: &[f64], x: &[f64], y: usize) -> Vec<f64> {
        let (inputs, _) = self.forward(w, x);
        let deltas = self.deltas(w, x, y);
        let mut g = Vec::with_capacity(self.dim());
        for l in 0..self.layers() {
            for k in 0..self.sizes[l + 1] {
                for j in 0..=self.sizes[l] {
                    g.push(deltas[l][k] * inputs[l][j]);
                }
            }
        }
        g
    }
}

/// Parameters of a random network: entries `N(0, scale²/fan_in)`, biases `N(0, 0.1²)`.
pub fn random_params(net: &RefNet, scale: f64, rng: &mut Rng) -> Vec<f64> {
    let mut w = Vec::with_capacity(net.dim());
    for l in 0..net.layers() {
        let fan_in = net.sizes[l];
        for _ in 0..net.sizes[l + 1] {
            for j in 0..=fan_in {
                w.push(if j == fan_in {
                    0.1 * rng.normal()
                } else {
                    scale * rng.normal() / (fan_in as f64).sqrt()
                });
            }
        }
    }
    w
}

/// `n` rows of `d` standard normal features and labels in `0..c` (every class present when
/// `n ≥ c`).
pub fn random_rows(n: usize, d: usize, c: usize, rng: &mut Rng) -> (Array2<f64>, Vec<f64>) {
    let x = Array2::from_shape_fn((n, d), |_| rng.normal());
    let y = (0..n)
        .map(|i| if i < c { i } else { rng.below(c) } as f64)
        .collect();
    (x, y)
}

/// `x` with the constant 1 appended as the last column (the network primitives' design).
pub fn with_ones(x: &Array2<f64>) -> Array2<f64> {
    let (n, d) = x.dim();
    Array2::from_shape_fn((n, d + 1), |(i, j)| if j < d { x[[i, j]] } else { 1.0 })
}

/// Data drawn from a teacher network of the given shape: standard normal features, labels
/// sampled from the teacher's softmax (so that the model is well specified).
pub fn teacher_data(net: &RefNet, n: usize, scale: f64, seed: u64) -> (Dataset, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let w = random_params(net, scale, &mut rng);
    let d = net.sizes[0];
    let c = *net.sizes.last().unwrap();
    let x = Array2::from_shape_fn((n, d), |_| rng.normal());
    let y: Vec<f64> = (0..n)
        .map(|i| {
            let row: Vec<f64> = x.row(i).to_vec();
            let (_, pre) = net.forward(&w, &row);
            let z = pre.last().unwrap();
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            let mut u = rng.uniform() * sum;
            let mut k = 0;
            while k + 1 < c && u >= e[k] {
                u -= e[k];
                k += 1;
            }
            k as f64
        })
        .collect();
    (Dataset::new(x, y, "teacher").unwrap(), w)
}

/// `‖a − b‖ / max(‖b‖, tiny)`.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-300)
}
