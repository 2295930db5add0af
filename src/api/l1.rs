//! `grad` and `run` for the ℓ1 problems (`lasso`, `enet`, `wlasso`) on the device the settings
//! choose ([`Device`]): the CPU (f64 by default, sparse designs kept sparse) or CUDA (f32, the
//! design densified on the device); `auto` falls back to the CPU and says why. The CV folds,
//! the outer searches and the test-loss refits all run on that device.

use serde_json::json;

use super::data::{Input, L1Splits};
use super::device::{Device, OnBackend};
use super::plan::L1Plan;
use super::settings::Settings;
use super::trace::TraceWriter;
use crate::backend::{FisherOps, GlmOps, ProxOps};
use crate::l1::{
    self, Criterion, L1Hypergradient, L1Kind, L1Options, L1Problem, Resident, SearchOptions,
    SearchResult,
};
use crate::{Error, Result};

/// One ℓ1 hypergradient with what it was computed on.
pub struct L1Report {
    pub result: L1Hypergradient,
    pub kind: L1Kind,
    pub criterion: String,
    pub folds: Option<usize>,
    pub names: [String; 2],
    pub n_train: usize,
    pub n_val: usize,
    pub features: usize,
    pub p: usize,
    pub sparse: bool,
    pub nnz_train: usize,
    pub opts: L1Options,
    /// The backend that computed it (`cpu-f64`, `cuda-f32`, …).
    pub device: String,
    pub device_note: Option<String>,
}

impl L1Report {
    /// The object of `grad --json`.
    pub fn to_json(&self) -> serde_json::Value {
        let value = serde_json::to_value(&self.result).unwrap_or_default();
        super::with_fields(
            value,
            json!({
                "problem": self.kind.name(),
                "device": self.device,
                "device_note": self.device_note,
                "criterion": self.criterion,
                "folds": self.folds,
                "train": self.names[0],
                "val": self.names[1],
                "n_train": self.n_train,
                "n_val": self.n_val,
                "features": self.features,
                "p": self.p,
                "sparse": self.sparse,
                "nnz_train": self.nnz_train,
                "inner_solver": self.opts.inner.solver.name(),
                "inner_tol": self.opts.inner.tol,
                "linear_tol": self.opts.linear_tol,
            }),
        )
    }
}

/// The outcome of an ℓ1 `run` (the outer search).
pub struct L1Outcome {
    pub kind: L1Kind,
    pub opts: L1Options,
    pub search: SearchOptions,
    pub result: SearchResult,
    pub criterion: String,
    /// The held-out MSE of ŵ refit on the training rows at the best θ (with test data).
    pub test_loss: Option<f64>,
    /// ŵ at the best θ, refit on the training rows.
    pub coef: Vec<f64>,
    /// The trace records, one per evaluation.
    pub trace: Vec<serde_json::Value>,
    /// The backend that computed it (`cpu-f64`, `cuda-f32`, …).
    pub device: String,
    pub device_note: Option<String>,
    pub sparse: bool,
    pub n_train: usize,
    pub n_val: usize,
    pub features: usize,
    pub p: usize,
}

impl L1Outcome {
    /// The object of `run --json`, plus `coef`.
    pub fn to_json(&self) -> serde_json::Value {
        let result = &self.result;
        json!({
            "problem": self.kind.name(),
            "method": result.refinement.is_none().then(|| self.opts.method.name()),
            "outer_opt": self.search.opt.name(),
            "evaluates": if result.refinement.is_some() { l1::EVALUATES_CRITERION } else { l1::EVALUATES_GRADIENT },
            "inner_iters": result.inner_iters,
            "refinement": result.refinement,
            "device": self.device,
            "device_note": self.device_note,
            "criterion": self.criterion,
            "outer_steps": self.search.steps,
            "evaluations": result.trace.len(),
            "warm_start": self.search.warm_start,
            "best_theta": result.best_theta,
            "best_loss": result.best_loss,
            "test_loss": self.test_loss,
            "final": result.trace.last(),
            "seconds": result.seconds,
            "sparse": self.sparse,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "features": self.features,
            "p": self.p,
            "coef": self.coef,
        })
    }
}

fn criterion_name(folds: Option<usize>) -> String {
    folds.map_or("held-out MSE".to_string(), |k| {
        format!("{k}-fold cross-validation MSE")
    })
}

/// θ from the settings, or every λ = λ_max/10 (λ_max = ‖Xᵀy‖∞/n on the training rows;
/// `enet`'s λ₂ likewise).
fn theta(kind: L1Kind, settings: &Settings, splits: &L1Splits) -> Result<Vec<f64>> {
    let p = kind.hyper_dim(splits.train.x.d());
    if settings.theta == super::Theta::Default {
        let lambda_max = splits.train.lambda_max();
        if !(lambda_max > 0.0) {
            return Err(Error::option(
                "--theta",
                "λ_max = ‖Xᵀy‖∞/n is 0 on the training data; give θ",
            ));
        }
    }
    let default = (splits.train.lambda_max() / 10.0).ln();
    settings.theta.values(p, default, kind.name())
}

/// The hypergradient at θ (held-out, or the mean over `--folds` CV folds) on the chosen
/// device.
pub fn grad(plan: &L1Plan, settings: &Settings, input: &Input) -> Result<L1Report> {
    let device = Device::open(&settings.device)?;
    let device_note = device.note();
    device.dispatch(Grad {
        plan,
        settings,
        input,
        device_note,
    })
}

struct Grad<'a> {
    plan: &'a L1Plan,
    settings: &'a Settings,
    input: &'a Input,
    device_note: Option<String>,
}

impl OnBackend for Grad<'_> {
    type Output = L1Report;
    fn on<B: GlmOps + FisherOps + ProxOps + Clone + 'static>(self, b: B) -> Result<L1Report> {
        grad_on(b, self.plan, self.settings, self.input, self.device_note)
    }
}

fn grad_on<B: ProxOps>(
    b: B,
    plan: &L1Plan,
    settings: &Settings,
    input: &Input,
    device_note: Option<String>,
) -> Result<L1Report> {
    let device = b.name();
    let opts = plan.options(settings, b.precision());
    let splits = input.l1(settings)?;
    let kind = plan.kind;
    let d = splits.train.x.d();
    let theta = theta(kind, settings, &splits)?;
    let result = match settings.folds {
        Some(k) => {
            let crit = Criterion::cross_val(kind, &splits.train, k, settings.seed)?;
            let mut ev = l1::Evaluator::on(b, crit, opts)?;
            let started = std::time::Instant::now();
            let e = ev.value_and_grad(&theta)?;
            let mut r = merge_folds(&e.folds, e.value, e.hypergradient);
            r.seconds = started.elapsed().as_secs_f64();
            r
        }
        None => {
            let pen = l1::Penalty::new(kind, &theta, d)?;
            let train = Resident::new(&b, &splits.train)?;
            let mut h =
                l1::hypergradient_resident(&b, &train, &splits.val, &pen, &opts, None, None)?;
            h.theta = theta.clone();
            h
        }
    };
    Ok(L1Report {
        kind,
        criterion: criterion_name(settings.folds),
        folds: settings.folds,
        n_train: splits.train.y.len(),
        n_val: splits.val.y.len(),
        features: d,
        p: kind.hyper_dim(d),
        sparse: splits.sparse,
        nnz_train: splits.train.x.nnz(),
        names: splits.names,
        opts,
        device,
        device_note,
        result,
    })
}

/// One result from the per-fold results of cross-validation (means of losses and
/// hypergradients; worst gap, summed iterations, support size of the largest fold support).
fn merge_folds(folds: &[L1Hypergradient], value: f64, grad: Vec<f64>) -> L1Hypergradient {
    let mut r = folds[0].clone();
    r.outer_loss = value;
    r.hypergradient = grad;
    r.inner_grad_norm = folds.iter().map(|f| f.inner_grad_norm).fold(0.0, f64::max);
    r.residual_norm = folds
        .iter()
        .map(|f| f.residual_norm)
        .try_fold(0.0f64, |a, b| b.map(|b| a.max(b)));
    r.inner_iters = folds.iter().map(|f| f.inner_iters).sum();
    r.linear_iters = folds.iter().map(|f| f.linear_iters).sum();
    r.inner_converged = folds.iter().all(|f| f.inner_converged);
    r.extra.support_size = folds
        .iter()
        .map(|f| f.extra.support_size)
        .max()
        .unwrap_or(0);
    r
}

/// The outer search: minimises the held-out MSE on the validation rows (or the `folds`-fold
/// CV MSE on the training rows, split with `seed`) over θ. Each evaluation's record (SPEC §6
/// fields `step`, `seconds`, `theta_norm`, `outer_loss`, `hypergradient_norm`, plus `theta`,
/// `accepted`, `best_loss`, `inner_iters`, `evaluates`, `phase`, `inner_tol`,
/// `criterion_error_bound`, `refines`, and `test_loss` with test data) goes to the trace
/// file and to `on_step` as it happens.
pub fn run(
    plan: &L1Plan,
    settings: &Settings,
    input: &Input,
    on_step: &mut dyn FnMut(&serde_json::Value) -> Result<()>,
) -> Result<L1Outcome> {
    let device = Device::open(&settings.device)?;
    let device_note = device.note();
    device.dispatch(Run {
        plan,
        settings,
        input,
        on_step,
        device_note,
    })
}

struct Run<'a> {
    plan: &'a L1Plan,
    settings: &'a Settings,
    input: &'a Input,
    on_step: &'a mut dyn FnMut(&serde_json::Value) -> Result<()>,
    device_note: Option<String>,
}

impl OnBackend for Run<'_> {
    type Output = L1Outcome;
    fn on<B: GlmOps + FisherOps + ProxOps + Clone + 'static>(self, b: B) -> Result<L1Outcome> {
        run_on(
            b,
            self.plan,
            self.settings,
            self.input,
            self.on_step,
            self.device_note,
        )
    }
}

fn run_on<B: ProxOps + Clone>(
    b: B,
    plan: &L1Plan,
    settings: &Settings,
    input: &Input,
    on_step: &mut dyn FnMut(&serde_json::Value) -> Result<()>,
    device_note: Option<String>,
) -> Result<L1Outcome> {
    let device = b.name();
    if settings.corrupt.is_some() {
        return Err(Error::option(
            "--corrupt",
            "label corruption needs class labels (softmax or hyperclean)",
        ));
    }
    if settings.checkpoint.is_some() {
        return Err(Error::option(
            "--checkpoint",
            "not supported for the ℓ1 problems yet",
        ));
    }
    let kind = plan.kind;
    let opt = plan.search_opt(settings)?;
    let opts = plan.options(settings, b.precision());
    let splits = input.l1(settings)?;
    let d = splits.train.x.d();
    let steps = usize::try_from(settings.outer_steps)
        .map_err(|_| Error::option("--outer-steps", "too large"))?;
    let mut search = SearchOptions::new(opt, steps);
    if settings.theta != super::Theta::Default {
        search.theta0 = Some(theta(kind, settings, &splits)?);
    }
    if let Some(lr) = settings.outer_lr {
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::option(
                "--outer-lr",
                format!("must be > 0, got {lr}"),
            ));
        }
        search.lr = lr;
    }
    search.seed = settings.seed;
    search.warm_start = !settings.cold_start;
    let criterion = match settings.folds {
        Some(k) => Criterion::cross_val(kind, &splits.train, k, settings.seed)?,
        None => Criterion::HeldOut(L1Problem::new(
            kind,
            splits.train.clone(),
            splits.val.clone(),
        )?),
    };
    let mut trace_file = TraceWriter::open(settings.trace.as_deref(), None)?;
    let mut trace = Vec::new();
    // The test loss of each step's θ: ŵ refit on the training rows (warm-started from the
    // previous step's refit), scored on the test rows. Its time counts in `seconds`.
    let mut test_warm: Option<Vec<f64>> = None;
    let refit = Resident::new(&b, &splits.train)?;
    let result = l1::search_on(b.clone(), criterion, opts, &search, |entry| {
        let mut value = serde_json::to_value(entry)
            .map_err(|e| Error::Backend(format!("cannot serialise a trace record: {e}")))?;
        if let Some(test) = &splits.test {
            let pen = l1::Penalty::new(kind, &entry.theta, d)?;
            let sol = l1::solve_on(&b, &refit, &pen, test_warm.as_deref(), &opts.inner)?;
            if let Some(obj) = value.as_object_mut() {
                obj.insert("test_loss".into(), json!(test.mse(&sol.w)));
            }
            test_warm = Some(sol.w);
        }
        trace_file.write(&value)?;
        on_step(&value)?;
        trace.push(value);
        Ok(())
    })?;
    let (coef, test_loss) = if result.best_theta.is_empty() {
        (Vec::new(), None)
    } else {
        let pen = l1::Penalty::new(kind, &result.best_theta, d)?;
        let w = l1::solve_on(&b, &refit, &pen, None, &opts.inner)?.w;
        let test_loss = splits.test.as_ref().map(|test| test.mse(&w));
        (w, test_loss)
    };
    Ok(L1Outcome {
        kind,
        opts,
        criterion: criterion_name(settings.folds),
        test_loss,
        coef,
        trace,
        device,
        device_note,
        sparse: splits.sparse,
        n_train: splits.train.y.len(),
        n_val: splits.val.y.len(),
        features: d,
        p: kind.hyper_dim(d),
        search,
        result,
    })
}
