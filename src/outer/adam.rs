//! Adam (Kingma & Ba), the outer optimiser both families of problems use: the smooth outer
//! loop (`outer::update`, whose state goes into checkpoints) and the ℓ1 search
//! (`l1::search`).

/// Adam's constants.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Adam {
    /// β₁ = 0.9, β₂ = 0.999, ε = 1e-8.
    pub fn new(lr: f64) -> Adam {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// Step `t` (1-based) in place: updates the moments `m`, `v` with the gradient `g` and
    /// moves `theta` by the bias-corrected ratio.
    pub fn step(&self, t: u64, m: &mut [f64], v: &mut [f64], theta: &mut [f64], g: &[f64]) {
        let t = t as i32;
        let c1 = 1.0 - self.beta1.powi(t);
        let c2 = 1.0 - self.beta2.powi(t);
        for k in 0..theta.len() {
            m[k] = self.beta1 * m[k] + (1.0 - self.beta1) * g[k];
            v[k] = self.beta2 * v[k] + (1.0 - self.beta2) * g[k] * g[k];
            theta[k] -= self.lr * (m[k] / c1) / ((v[k] / c2).sqrt() + self.eps);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first step moves every coordinate by about lr against the gradient's sign (the
    /// bias correction makes m̂/√v̂ = g/|g|), whatever the gradient's scale.
    #[test]
    fn first_step_is_lr_against_the_sign() {
        let adam = Adam::new(0.1);
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        let mut theta = vec![1.0, 1.0, 1.0];
        adam.step(1, &mut m, &mut v, &mut theta, &[1e-3, -5.0, 2e4]);
        for (t, want) in theta.iter().zip([0.9, 1.1, 0.9]) {
            assert!((t - want).abs() < 1e-4, "{theta:?}");
        }
    }
}
