//! The model-selection criteria: held-out MSE on one validation set, and K-fold
//! cross-validation
//!
//! ```text
//! F_cv(θ) = (1/K) Σ_k (1/|V_k|) ‖y_{V_k} − X_{V_k} ŵ^{(k)}(θ)‖²,    ∇F_cv = (1/K) Σ_k ∇F_k,
//! ```
//!
//! where `ŵ^{(k)}` is trained on every row outside fold `V_k`. An [`Evaluator`] keeps one
//! warm start per fold between calls, which is what makes an outer search cheap.

use super::hypergrad::{hypergradient_resident, L1Hypergradient, L1Options};
use super::problem::{L1Data, L1Kind, L1Problem, Penalty};
use super::resident::Resident;
use super::solver::solve_on;
use crate::backend::cpu::CpuBackend;
use crate::backend::prox::ProxOps;
use crate::{Error, Result};

/// K folds of `data`: the rows of [`crate::data::fold_indices`] (shuffled by
/// `Rng::new(seed).permutation(n)`, fold k holding positions `[⌊kn/K⌋, ⌊(k+1)n/K⌋)` of that
/// order), so the Python package's `cv_folds` are these folds. Returns `(train, held-out)` per
/// fold. Errors: [`Error::InvalidOption`] (`--folds`) unless `2 ≤ K ≤ n`.
pub fn kfold(data: &L1Data, k: usize, seed: u64) -> Result<Vec<(L1Data, L1Data)>> {
    Ok(crate::data::fold_indices(data.y.len(), k, seed)?
        .into_iter()
        .map(|(fit, held)| (data.select(&fit), data.select(&held)))
        .collect())
}

/// The criterion an outer search minimises.
// One criterion per search: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Criterion {
    /// Held-out MSE on the problem's validation data.
    HeldOut(L1Problem),
    /// Mean held-out MSE over K folds.
    CrossVal {
        kind: L1Kind,
        folds: Vec<(L1Data, L1Data)>,
    },
}

impl Criterion {
    /// K-fold cross-validation of `kind` on `data`.
    pub fn cross_val(kind: L1Kind, data: &L1Data, k: usize, seed: u64) -> Result<Criterion> {
        Ok(Criterion::CrossVal {
            kind,
            folds: kfold(data, k, seed)?,
        })
    }

    /// `(training, held-out)` pairs (one for held-out, K for CV).
    pub fn pairs(&self) -> Vec<(&L1Data, &L1Data)> {
        match self {
            Criterion::HeldOut(p) => vec![(&p.train, &p.val)],
            Criterion::CrossVal { folds, .. } => folds.iter().map(|(a, b)| (a, b)).collect(),
        }
    }

    /// The problem kind.
    pub fn kind(&self) -> L1Kind {
        match self {
            Criterion::HeldOut(p) => p.kind,
            Criterion::CrossVal { kind, .. } => *kind,
        }
    }

    /// d.
    pub fn d(&self) -> usize {
        self.pairs()[0].0.x.d()
    }

    /// The largest `λ_max = ‖Xᵀy‖_∞/n` over the training sets.
    pub fn lambda_max(&self) -> f64 {
        self.pairs()
            .iter()
            .map(|(t, _)| t.lambda_max())
            .fold(0.0, f64::max)
    }
}

/// The criterion and its hypergradient at one θ.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub theta: Vec<f64>,
    /// F(θ) (held-out or mean CV MSE).
    pub value: f64,
    /// ∇F(θ) (mean of the fold hypergradients); empty when only the value was asked for.
    pub hypergradient: Vec<f64>,
    /// Per fold (one entry for held-out).
    pub folds: Vec<L1Hypergradient>,
}

/// One fold of a criterion-only evaluation ([`Evaluator::value_detail`]).
#[derive(Clone, Debug)]
pub struct FoldValue {
    /// The fold's held-out MSE at its ŵ.
    pub mse: f64,
    /// The duality gap of the fold's inner solve (absolute, in the objective's units).
    pub gap: f64,
    /// Inner solver epochs.
    pub iters: usize,
    /// Whether the gap reached the tolerance.
    pub converged: bool,
}

/// F(θ) without a hypergradient, with per-fold details.
#[derive(Clone, Debug)]
pub struct ValueEvaluation {
    /// F(θ) (held-out or mean CV MSE).
    pub value: f64,
    pub folds: Vec<FoldValue>,
}

impl ValueEvaluation {
    /// Inner epochs summed over the folds.
    pub fn inner_iters(&self) -> usize {
        self.folds.iter().map(|f| f.iters).sum()
    }
}

/// Evaluates a [`Criterion`] with warm starts carried between calls, on a backend (the CPU
/// in f64 by default) that holds every fold's training rows from construction on.
pub struct Evaluator<B: ProxOps = CpuBackend<f64>> {
    pub criterion: Criterion,
    pub opts: L1Options,
    backend: B,
    /// Each fold's training rows on the backend, in the order of `criterion.pairs()`.
    residents: Vec<Resident<B>>,
    warm: Vec<Option<Vec<f64>>>,
    jac: Vec<Option<Vec<Vec<f64>>>>,
}

impl Evaluator {
    /// An evaluator on the CPU in f64.
    pub fn new(criterion: Criterion, opts: L1Options) -> Evaluator {
        Evaluator::on(CpuBackend::<f64>::new(), criterion, opts)
            .expect("the CPU backend holds any design the host holds")
    }
}

impl<B: ProxOps> Evaluator<B> {
    /// An evaluator on `backend`. Errors: a fold the backend cannot hold.
    pub fn on(backend: B, criterion: Criterion, opts: L1Options) -> Result<Evaluator<B>> {
        let residents = criterion
            .pairs()
            .into_iter()
            .map(|(train, _)| Resident::new(&backend, train))
            .collect::<Result<Vec<_>>>()?;
        let k = residents.len();
        Ok(Evaluator {
            criterion,
            opts,
            backend,
            residents,
            warm: vec![None; k],
            jac: vec![None; k],
        })
    }

    /// Forget the warm starts (the next solves and Jacobian recursions start from 0).
    pub fn cold_start(&mut self) {
        self.warm.iter_mut().for_each(|w| *w = None);
        self.jac.iter_mut().for_each(|j| *j = None);
    }

    /// F(θ) and ∇F(θ) with the method in `self.opts`.
    pub fn value_and_grad(&mut self, theta: &[f64]) -> Result<Evaluation> {
        let kind = self.criterion.kind();
        let pen = Penalty::new(kind, theta, self.criterion.d())?;
        let pairs = self.criterion.pairs();
        let k = pairs.len() as f64;
        let mut folds = Vec::with_capacity(pairs.len());
        for (f, (_, val)) in pairs.into_iter().enumerate() {
            let mut h = hypergradient_resident(
                &self.backend,
                &self.residents[f],
                val,
                &pen,
                &self.opts,
                self.warm[f].as_deref(),
                self.jac[f].as_deref(),
            )?;
            h.theta = theta.to_vec();
            self.warm[f] = Some(h.w.clone());
            self.jac[f] = h.extra.jacobian.take();
            folds.push(h);
        }
        let value = folds.iter().map(|h| h.outer_loss).sum::<f64>() / k;
        let mut grad = vec![0.0; pen.hyper_dim()];
        for h in &folds {
            for (g, v) in grad.iter_mut().zip(&h.hypergradient) {
                *g += v / k;
            }
        }
        Ok(Evaluation {
            theta: theta.to_vec(),
            value,
            hypergradient: grad,
            folds,
        })
    }

    /// F(θ) only (inner solves, no hypergradient): what grid and random search need.
    pub fn value(&mut self, theta: &[f64]) -> Result<f64> {
        Ok(self.value_detail(theta)?.value)
    }

    /// F(θ) only, with what each fold's inner solve did (gap, epochs, ŵ): the inner solves
    /// run at `self.opts.inner` from the current warm starts, which become the new ŵ.
    pub fn value_detail(&mut self, theta: &[f64]) -> Result<ValueEvaluation> {
        let kind = self.criterion.kind();
        let pen = Penalty::new(kind, theta, self.criterion.d())?;
        let pairs = self.criterion.pairs();
        let k = pairs.len() as f64;
        let mut folds = Vec::with_capacity(pairs.len());
        for (f, (_, val)) in pairs.into_iter().enumerate() {
            let sol = solve_on(
                &self.backend,
                &self.residents[f],
                &pen,
                self.warm[f].as_deref(),
                &self.opts.inner,
            )?;
            folds.push(FoldValue {
                mse: val.mse(&sol.w),
                gap: sol.gap,
                iters: sol.iters,
                converged: sol.converged,
            });
            self.warm[f] = Some(sol.w);
        }
        Ok(ValueEvaluation {
            value: folds.iter().map(|h| h.mse).sum::<f64>() / k,
            folds,
        })
    }

    /// Replaces the warm starts (one per fold; `None`: start from 0).
    pub fn set_warm_starts(&mut self, warm: Vec<Option<Vec<f64>>>) -> Result<()> {
        if warm.len() != self.warm.len() {
            return Err(Error::Dimension(format!(
                "{} warm starts for {} folds",
                warm.len(),
                self.warm.len()
            )));
        }
        self.warm = warm;
        self.jac.iter_mut().for_each(|j| *j = None);
        Ok(())
    }

    /// The current warm starts (ŵ of the last evaluation per fold).
    pub fn warm_starts(&self) -> &[Option<Vec<f64>>] {
        &self.warm
    }
}
