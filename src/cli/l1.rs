//! The ℓ1 problems (`lasso`, `enet`, `wlasso`) on the command line: data loading that keeps
//! LIBSVM files sparse, `grad` for one hypergradient, and [`run_l1`], the outer search with a
//! JSONL trace, ready for `hypergrad run`.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use ndarray::Array2;
use serde_json::json;

use super::data_args::DataArgs;
use super::grad::{
    read_theta_file, DeviceArg, DeviceArgs, EstimatorArgs, GradArgs, MethodArg, PrecisionArg,
    ProblemArg, ProblemArgs,
};
use super::run::{OuterOptArg, RunArgs};
use crate::data::sparse::{self, CsrMatrix};
use crate::data::{self, Dataset};
use crate::l1::{
    self, Criterion, Design, L1Data, L1Hypergradient, L1Kind, L1Method, L1Options, L1Problem,
    L1Solver, OuterOpt, SearchOptions, SearchResult, TraceEntry,
};

/// Options of the ℓ1 problems (`--problem lasso|enet|wlasso`).
#[derive(Debug, Args)]
#[command(next_help_heading = "ℓ1 problems (lasso, enet, wlasso)")]
pub struct L1Args {
    /// Inner solver of the ℓ1 problems: proximal coordinate descent, proximal gradient
    /// (ISTA) or FISTA. `forward` differentiates through it.
    #[arg(long, value_enum, default_value = "cd")]
    pub l1_solver: L1SolverArg,

    /// Use K-fold cross-validation on the training rows as the criterion (mean of the
    /// folds' held-out MSE) instead of the validation rows.
    #[arg(long, value_name = "K")]
    pub folds: Option<usize>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum L1SolverArg {
    Cd,
    Pgd,
    Fista,
}

impl ProblemArg {
    /// The ℓ1 problem this is, if it is one.
    pub fn l1_kind(self) -> Option<L1Kind> {
        match self {
            ProblemArg::Lasso => Some(L1Kind::Lasso),
            ProblemArg::Enet => Some(L1Kind::Enet),
            ProblemArg::Wlasso => Some(L1Kind::Wlasso),
            _ => None,
        }
    }
}

/// Training, validation and optional test data of an ℓ1 problem, with their names.
pub struct L1Splits {
    pub train: L1Data,
    pub val: L1Data,
    pub test: Option<L1Data>,
    pub names: [String; 2],
    /// Whether the design is stored sparse (read from LIBSVM).
    pub sparse: bool,
}

/// One loaded data source: LIBSVM files stay sparse, everything else is dense.
enum Loaded {
    Dense(Dataset),
    Sparse(sparse::SparseDataset),
}

impl Loaded {
    fn load(spec: &str) -> Result<Loaded> {
        Ok(if sparse::is_libsvm_file(spec) {
            Loaded::Sparse(sparse::load_sparse(spec)?)
        } else {
            Loaded::Dense(data::load(spec)?)
        })
    }
    fn n(&self) -> usize {
        match self {
            Loaded::Dense(d) => d.n(),
            Loaded::Sparse(s) => s.n(),
        }
    }
    fn d(&self) -> usize {
        match self {
            Loaded::Dense(d) => d.d(),
            Loaded::Sparse(s) => s.d(),
        }
    }
    fn name(&self) -> &str {
        match self {
            Loaded::Dense(d) => &d.name,
            Loaded::Sparse(s) => &s.name,
        }
    }
    fn select(&self, rows: &[usize]) -> Loaded {
        match self {
            Loaded::Dense(d) => Loaded::Dense(d.select(rows)),
            Loaded::Sparse(s) => Loaded::Sparse(s.select(rows)),
        }
    }
    /// As ℓ1 data with `d` columns, sparse storage when `sparse`.
    fn into_l1(self, d: usize, sparse: bool) -> Result<L1Data> {
        let (design, y) = match self {
            Loaded::Sparse(s) => {
                let x = s.x.with_columns(d)?;
                let design = if sparse {
                    Design::sparse(&x)?
                } else {
                    Design::dense(&x.to_dense()?)?
                };
                (design, s.y)
            }
            Loaded::Dense(ds) => {
                let ds = ds.with_columns(d)?;
                let design = if sparse {
                    Design::sparse(&CsrMatrix::from_dense(&ds.x))?
                } else {
                    Design::dense(&ds.x)?
                };
                (design, ds.y)
            }
        };
        Ok(L1Data::new(design, y)?)
    }
}

/// Loads the data of an ℓ1 problem as [`DataArgs::load`] does (same split for the same
/// `--seed`), except that LIBSVM files are read into sparse storage and never densified.
/// `--standardize` is refused on sparse data (it would densify it).
pub fn load_l1(args: &DataArgs, test: Option<&str>) -> Result<L1Splits> {
    let load =
        |spec: &str| Loaded::load(spec).with_context(|| format!("cannot load the data ({spec})"));
    let train_full = load(&args.train)?;
    let sparse = matches!(train_full, Loaded::Sparse(_));
    let (train, val, test) = match &args.val {
        Some(v) => (train_full, load(v)?, test.map(load).transpose()?),
        None => {
            let fractions = data::parse_split(&args.split)?;
            // The row indices as labels of a zero-width dataset: data::split's exact split.
            let n = train_full.n();
            let index = Dataset::new(
                Array2::zeros((n, 0)),
                (0..n).map(|i| i as f64).collect(),
                train_full.name(),
            )?;
            let parts = data::split(&index, &fractions, args.seed)?;
            let rows: Vec<Vec<usize>> = parts
                .iter()
                .map(|p| p.y.iter().map(|&i| i as usize).collect())
                .collect();
            let pick = |k: usize| train_full.select(&rows[k]);
            let (tr, va) = (pick(0), pick(1));
            let te = match test {
                Some(t) => Some(load(t)?),
                None => rows.get(2).map(|_| pick(2)),
            };
            (tr, va, te)
        }
    };
    let names = if args.val.is_some() {
        [train.name().to_string(), val.name().to_string()]
    } else {
        [
            format!("{}[train]", train.name()),
            format!("{}[val]", val.name()),
        ]
    };
    if args.standardize {
        if sparse {
            bail!("invalid value for --standardize: it would densify the sparse (LIBSVM) design; scale the columns beforehand");
        }
        let (Loaded::Dense(mut tr), Loaded::Dense(mut va)) = (train, val) else {
            bail!("invalid value for --standardize: the validation data is sparse (LIBSVM) and cannot be z-scored without densifying it");
        };
        let te = match test {
            Some(Loaded::Dense(mut te)) => {
                data::standardize(&mut tr, &mut [&mut va, &mut te]);
                Some(te)
            }
            Some(Loaded::Sparse(_)) => bail!(
                "invalid value for --standardize: the test data is sparse (LIBSVM) and cannot be z-scored without densifying it"
            ),
            None => {
                data::standardize(&mut tr, &mut [&mut va]);
                None
            }
        };
        let d = tr.d().max(va.d());
        return Ok(L1Splits {
            train: Loaded::Dense(tr).into_l1(d, false)?,
            val: Loaded::Dense(va).into_l1(d, false)?,
            test: te.map(|t| Loaded::Dense(t).into_l1(d, false)).transpose()?,
            names,
            sparse: false,
        });
    }
    let d = train
        .d()
        .max(val.d())
        .max(test.as_ref().map_or(0, |t| t.d()));
    Ok(L1Splits {
        train: train.into_l1(d, sparse)?,
        val: val.into_l1(d, sparse)?,
        test: test.map(|t| t.into_l1(d, sparse)).transpose()?,
        names,
        sparse,
    })
}

/// The ℓ1 options from the shared `grad` options: `--inner-tol` is the relative duality
/// gap (default 1e-12), `--inner-iters` the epochs, `--linear-tol` (default 1e-10) and
/// `--linear-iters` (default 10000) steer the support solve / Jacobian sweeps.
pub fn l1_options(est: &EstimatorArgs, l1args: &L1Args) -> Result<L1Options> {
    let method = match est.method {
        MethodArg::Forward => L1Method::Forward,
        MethodArg::Implicit | MethodArg::Cg | MethodArg::Exact => L1Method::Implicit,
        MethodArg::ImplicitForward => L1Method::ImplicitForward,
        other => bail!(
            "invalid value for --method: {} is not available for ℓ1 problems (use forward, implicit or implicit-forward)",
            format!("{other:?}").to_lowercase()
        ),
    };
    let mut opts = L1Options::new(method);
    opts.inner.solver = match l1args.l1_solver {
        L1SolverArg::Cd => L1Solver::Cd,
        L1SolverArg::Pgd => L1Solver::Pgd,
        L1SolverArg::Fista => L1Solver::Fista,
    };
    if let Some(tol) = est.inner_tol {
        opts.inner.tol = tol;
    }
    opts.inner.max_iters = est.inner_iters;
    if let Some(tol) = est.linear_tol {
        opts.linear_tol = tol;
    }
    if let Some(k) = est.linear_iters {
        opts.linear_iters = k;
    }
    Ok(opts)
}

/// θ from `--theta` / `--theta-file`, or every λ = λ_max/10 (λ_max = ‖Xᵀy‖∞/n on the
/// training rows; `enet`'s λ₂ likewise).
fn theta_from(args: &ProblemArgs, p: usize, lambda_max: f64) -> Result<Vec<f64>> {
    match (&args.theta_file, args.theta) {
        (Some(path), _) => {
            let theta = read_theta_file(path)?;
            if theta.len() != p {
                bail!(
                    "dimension mismatch: --theta-file {} holds {} numbers but {} needs p = {p}",
                    path.display(),
                    theta.len(),
                    args.problem.l1_kind().map_or("", |k| k.name())
                );
            }
            Ok(theta)
        }
        (None, Some(x)) => {
            if !x.is_finite() {
                bail!("invalid value for --theta: {x} is not a finite number");
            }
            Ok(vec![x; p])
        }
        (None, None) => {
            if !(lambda_max > 0.0) {
                bail!("λ_max = ‖Xᵀy‖∞/n is 0 on the training data; give --theta");
            }
            Ok(vec![(lambda_max / 10.0).ln(); p])
        }
    }
}

/// Refuses devices and precisions the ℓ1 problems do not have (they run on the CPU in f64).
fn check_device(device: &DeviceArgs) -> Result<Option<&'static str>> {
    if device.precision == Some(PrecisionArg::F32) {
        bail!("invalid value for --precision: the ℓ1 problems compute in f64 only");
    }
    match device.device {
        DeviceArg::Cuda => bail!(
            "invalid value for --device: the ℓ1 problems (lasso, enet, wlasso) run on the CPU only"
        ),
        DeviceArg::Auto => Ok(Some("auto chose the CPU: the ℓ1 problems run on the CPU")),
        DeviceArg::Cpu => Ok(None),
    }
}

/// `hypergrad grad --problem lasso|enet|wlasso`.
pub fn grad(kind: L1Kind, args: &GradArgs) -> Result<()> {
    let note = check_device(&args.device)?;
    if args.problem.hyper.is_some() {
        bail!("invalid value for --hyper: the ℓ1 problems fix θ's layout (lasso p = 1, enet p = 2, wlasso p = d)");
    }
    let opts = l1_options(&args.estimator, &args.l1)?;
    let splits = load_l1(&args.data, None)?;
    let d = splits.train.x.d();
    let p = kind.hyper_dim(d);
    let theta = theta_from(&args.problem, p, splits.train.lambda_max())?;
    let (criterion_name, result) = match args.l1.folds {
        Some(k) => {
            let crit = Criterion::cross_val(kind, &splits.train, k, args.data.seed)?;
            let mut ev = l1::Evaluator::new(crit, opts);
            let started = std::time::Instant::now();
            let e = ev.value_and_grad(&theta)?;
            let mut r = merge_folds(&e.folds, e.value, e.hypergradient);
            r.seconds = started.elapsed().as_secs_f64();
            (format!("{k}-fold cross-validation MSE"), r)
        }
        None => {
            let problem = L1Problem::new(kind, splits.train.clone(), splits.val.clone())?;
            (
                "held-out MSE".to_string(),
                l1::hypergradient(&problem, &theta, &opts, None)?,
            )
        }
    };
    if args.json {
        let mut value = serde_json::to_value(&result)?;
        if let Some(object) = value.as_object_mut() {
            let extra = json!({
                "problem": kind.name(),
                "device": "cpu-f64",
                "device_note": note,
                "criterion": criterion_name,
                "folds": args.l1.folds,
                "train": splits.names[0],
                "val": splits.names[1],
                "n_train": splits.train.y.len(),
                "n_val": splits.val.y.len(),
                "features": d,
                "p": p,
                "sparse": splits.sparse,
                "nnz_train": splits.train.x.nnz(),
                "inner_solver": opts.inner.solver.name(),
                "inner_tol": opts.inner.tol,
                "linear_tol": opts.linear_tol,
            });
            if let Some(extra) = extra.as_object() {
                for (k, v) in extra {
                    object.insert(k.clone(), v.clone());
                }
            }
        }
        println!("{}", serde_json::to_string(&value)?);
    } else {
        print_table(kind, &splits, &criterion_name, &opts, &result);
        if let Some(n) = note {
            println!("device note   {n}");
        }
    }
    Ok(())
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
    r.support_size = folds.iter().map(|f| f.support_size).max().unwrap_or(0);
    r
}

fn print_table(
    kind: L1Kind,
    splits: &L1Splits,
    criterion: &str,
    opts: &L1Options,
    r: &L1Hypergradient,
) {
    let d = splits.train.x.d();
    let h_norm = r.hypergradient.iter().map(|h| h * h).sum::<f64>().sqrt();
    println!(
        "problem       {} (p = {}), {d} features, {} design ({} stored entries)",
        kind.name(),
        kind.hyper_dim(d),
        if splits.sparse { "sparse" } else { "dense" },
        splits.train.x.nnz()
    );
    println!(
        "data          {} rows train ({}), {} rows val ({}); criterion {criterion}",
        splits.train.y.len(),
        splits.names[0],
        splits.val.y.len(),
        splits.names[1]
    );
    println!("method        {} on cpu-f64", r.method.name());
    println!("θ             {}", preview(&r.theta));
    println!("F(θ)          {:.10e}", r.outer_loss);
    println!("∇F(θ)         {}", preview(&r.hypergradient));
    println!("‖∇F(θ)‖       {h_norm:.6e}");
    println!(
        "duality gap   {:.3e}  ({} solver, {} epochs, {}), support {} of {d}",
        r.inner_grad_norm,
        opts.inner.solver.name(),
        r.inner_iters,
        if r.inner_converged {
            "converged"
        } else {
            "NOT converged to --inner-tol"
        },
        r.support_size
    );
    println!(
        "residual      {}  ({} linear iterations)",
        r.residual_norm.map_or("n/a".into(), |x| format!("{x:.3e}")),
        r.linear_iters
    );
    println!("error bound   n/a (no valid bound is known for ℓ1 problems)");
    println!("time          {:.3} s", r.seconds);
}

fn preview(v: &[f64]) -> String {
    const SHOWN: usize = 8;
    let head: Vec<String> = v.iter().take(SHOWN).map(|x| format!("{x:.6e}")).collect();
    if v.len() > SHOWN {
        format!("[{}, … ({} entries)]", head.join(", "), v.len())
    } else {
        format!("[{}]", head.join(", "))
    }
}

/// The outer search for an ℓ1 problem, for `hypergrad run`: minimises the held-out MSE on
/// `splits.val` (or the `folds`-fold CV MSE on `splits.train` when `folds` is given, split
/// with `seed`) over θ with `search`, hypergradients from `opts`. When `trace` is given, one
/// JSON object per evaluation is appended to it as it happens (SPEC §6 fields `step`,
/// `seconds`, `theta_norm`, `outer_loss`, `hypergradient_norm`, plus `theta`, `accepted`,
/// `best_loss`, `inner_iters`, `evaluates`, `phase`, `inner_tol`, `criterion_error_bound`,
/// `refines`, and `test_loss` when `splits.test` is given). Returns the
/// search result; printing a summary is left to the caller.
pub fn run_l1(
    kind: L1Kind,
    splits: &L1Splits,
    folds: Option<usize>,
    seed: u64,
    opts: L1Options,
    search: &SearchOptions,
    trace: Option<&Path>,
) -> Result<SearchResult> {
    let criterion = match folds {
        Some(k) => Criterion::cross_val(kind, &splits.train, k, seed)?,
        None => Criterion::HeldOut(L1Problem::new(
            kind,
            splits.train.clone(),
            splits.val.clone(),
        )?),
    };
    let mut file = match trace {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create --trace {}", path.display()))?,
        )),
        None => None,
    };
    // The test loss of each step's θ: ŵ refit on the training rows (warm-started from the
    // previous step's refit), scored on the test rows. Its time counts in `seconds`.
    let mut test_warm: Option<Vec<f64>> = None;
    let mut test_loss = |entry: &TraceEntry| -> crate::Result<Option<f64>> {
        let Some(test) = &splits.test else {
            return Ok(None);
        };
        let pen = l1::Penalty::new(kind, &entry.theta, splits.train.x.d())?;
        let sol = l1::solve(&splits.train, &pen, test_warm.as_deref(), &opts.inner)?;
        let loss = test.mse(&sol.w);
        test_warm = Some(sol.w);
        Ok(Some(loss))
    };
    let result = l1::search(criterion, opts, search, |entry| {
        if let Some(f) = file.as_mut() {
            let mut value = serde_json::to_value(entry)
                .map_err(|e| crate::Error::Backend(format!("trace: {e}")))?;
            if let (Some(obj), Some(t)) = (value.as_object_mut(), test_loss(entry)?) {
                obj.insert("test_loss".into(), json!(t));
            }
            let io = |source| crate::Error::Io {
                path: trace.map(Path::to_path_buf).unwrap_or_default(),
                source,
            };
            writeln!(f, "{value}").map_err(io)?;
            f.flush().map_err(io)?;
        }
        Ok(())
    })?;
    Ok(result)
}

/// `hypergrad run --problem lasso|enet|wlasso`: the outer search of [`run_l1`] driven by the
/// `run` options (`--outer-opt hoag|adam|grid|random`, `--outer-steps`, `--outer-lr` for
/// adam (default 0.5), `--cold-start`, `--trace`, `--test`, `--theta`/`--theta-file` for the
/// start, `--folds` for a CV criterion); prints a summary table or, with `--json`, one object.
pub fn run(kind: L1Kind, args: &RunArgs) -> Result<()> {
    let note = check_device(&args.device)?;
    if args.problem.hyper.is_some() {
        bail!("invalid value for --hyper: the ℓ1 problems fix θ's layout (lasso p = 1, enet p = 2, wlasso p = d)");
    }
    if args.outer.corrupt.is_some() {
        bail!("invalid value for --corrupt: label corruption needs class labels (softmax or hyperclean)");
    }
    if args.outer.checkpoint.is_some() {
        bail!("invalid value for --checkpoint: not supported for the ℓ1 problems yet");
    }
    let opt = match args.outer.outer_opt {
        OuterOptArg::Hoag => OuterOpt::Hoag,
        OuterOptArg::Adam => OuterOpt::Adam,
        OuterOptArg::Grid => OuterOpt::Grid,
        OuterOptArg::Random => OuterOpt::Random,
        other => bail!(
            "invalid value for --outer-opt: {} is not available for the ℓ1 problems (use hoag, adam, grid or random)",
            format!("{other:?}").to_lowercase()
        ),
    };
    let opts = l1_options(&args.estimator, &args.l1)?;
    let splits = load_l1(&args.data, args.outer.test.as_deref())?;
    let d = splits.train.x.d();
    let p = kind.hyper_dim(d);
    let steps = usize::try_from(args.outer.outer_steps)
        .map_err(|_| anyhow::anyhow!("invalid value for --outer-steps: too large"))?;
    let mut search = SearchOptions::new(opt, steps);
    if args.problem.theta.is_some() || args.problem.theta_file.is_some() {
        search.theta0 = Some(theta_from(&args.problem, p, splits.train.lambda_max())?);
    }
    if let Some(lr) = args.outer.outer_lr {
        if !(lr > 0.0 && lr.is_finite()) {
            bail!("invalid value for --outer-lr: must be > 0, got {lr}");
        }
        search.lr = lr;
    }
    search.seed = args.data.seed;
    search.warm_start = !args.outer.cold_start;
    let result = run_l1(
        kind,
        &splits,
        args.l1.folds,
        args.data.seed,
        opts,
        &search,
        args.outer.trace.as_deref(),
    )?;
    let test_loss = match &splits.test {
        Some(test) if !result.best_theta.is_empty() => {
            let pen = l1::Penalty::new(kind, &result.best_theta, d)?;
            Some(test.mse(&l1::solve(&splits.train, &pen, None, &opts.inner)?.w))
        }
        _ => None,
    };
    let last = result.trace.last();
    if args.json {
        println!(
            "{}",
            json!({
                "problem": kind.name(),
                "method": result.refinement.is_none().then(|| opts.method.name()),
                "outer_opt": opt.name(),
                "evaluates": if result.refinement.is_some() { l1::EVALUATES_CRITERION } else { l1::EVALUATES_GRADIENT },
                "inner_iters": result.inner_iters,
                "refinement": result.refinement,
                "device": "cpu-f64",
                "device_note": note,
                "criterion": args.l1.folds.map_or("held-out MSE".to_string(), |k| format!("{k}-fold cross-validation MSE")),
                "outer_steps": steps,
                "evaluations": result.trace.len(),
                "warm_start": search.warm_start,
                "best_theta": result.best_theta,
                "best_loss": result.best_loss,
                "test_loss": test_loss,
                "final": last,
                "seconds": result.seconds,
                "sparse": splits.sparse,
                "n_train": splits.train.y.len(),
                "n_val": splits.val.y.len(),
                "features": d,
                "p": p,
            })
        );
    } else {
        println!(
            "problem       {} (p = {p}), {d} features, {} design; criterion {}",
            kind.name(),
            if splits.sparse { "sparse" } else { "dense" },
            args.l1
                .folds
                .map_or("held-out MSE".to_string(), |k| format!(
                    "{k}-fold cross-validation MSE"
                ))
        );
        match &result.refinement {
            Some(r) => {
                let screened = result.trace.len() - r.resolved.iter().sum::<usize>();
                let rungs: Vec<String> = r
                    .ladder
                    .iter()
                    .zip(&r.resolved)
                    .map(|(t, k)| format!("{k} re-solved to {t:.0e}"))
                    .collect();
                println!(
                    "search        {}, criterion only (no hypergradient): {screened} points solved to a relative gap of {:.0e}{}{}; {} inner epochs in {:.3} s",
                    opt.name(),
                    r.screen_tol,
                    rungs.iter().map(|s| format!(", {s}")).collect::<String>(),
                    if r.fallback {
                        " (a screening error exceeded its bound: every point refined)"
                    } else {
                        ""
                    },
                    result.inner_iters,
                    result.seconds
                )
            }
            None => println!(
                "search        {} with {} hypergradients, {} evaluations, {} inner epochs in {:.3} s",
                opt.name(),
                opts.method.name(),
                result.trace.len(),
                result.inner_iters,
                result.seconds
            ),
        }
        println!("best θ        {}", preview(&result.best_theta));
        println!("best F(θ)     {:.10e}", result.best_loss);
        if let Some(t) = test_loss {
            println!("test MSE      {t:.10e}  (refit on the training rows at the best θ)");
        }
        if let Some(n) = note {
            println!("device note   {n}");
        }
    }
    Ok(())
}
