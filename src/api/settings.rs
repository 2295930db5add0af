//! Every option of `grad` and `run` (SPEC §6) as one typed value, with the command line's
//! defaults. The CLI fills it from its parsed flags; the Python package from keyword
//! arguments through [`Settings::set`], which takes the long option's name with `_` for `-`
//! (`inner_tol`, `batch_size`, `curvature`, …).

use std::path::PathBuf;

use super::names::{
    self, ActivationName, CurvatureName, DeviceName, DistillInitName, FisherUpdateName, HyperName,
    InnerSolverName, L1SolverName, MethodName, OuterOptName, PrecisionName, StorageName,
};
use crate::error::printable;
use crate::{Error, Result};

/// One value given for an option by name.
#[derive(Clone, Debug, PartialEq)]
pub enum OptionValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// Where the numbers are computed (`--device`, `--precision`, `--storage`, `--threads`).
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSpec {
    pub device: DeviceName,
    /// Default: f64 on the CPU, f32 on CUDA.
    pub precision: Option<PrecisionName>,
    pub storage: StorageName,
    /// CPU threads (default: all cores).
    pub threads: Option<usize>,
}

impl Default for DeviceSpec {
    fn default() -> Self {
        DeviceSpec {
            device: DeviceName::Auto,
            precision: None,
            storage: StorageName::F32,
            threads: None,
        }
    }
}

/// θ's starting value: every entry the same, or one value per entry.
#[derive(Clone, Debug, PartialEq)]
pub enum Theta {
    /// The problem's default (0 for the smooth problems; log(λ_max/10) for the ℓ1 problems;
    /// 1 for `quadratic`, Ehrhardt & Roberts' w = (1, …, 1)).
    Default,
    Scalar(f64),
    Vector(Vec<f64>),
    /// p numbers separated by white space or commas (`--theta-file`).
    File(PathBuf),
}

impl Theta {
    /// θ with `p` entries; `default` is every entry's value for [`Theta::Default`], and
    /// `problem` says in an error what needs p entries.
    pub fn values(&self, p: usize, default: f64, problem: &str) -> Result<Vec<f64>> {
        match self {
            Theta::Default => Ok(vec![default; p]),
            Theta::Scalar(x) => {
                if !x.is_finite() {
                    return Err(Error::option(
                        "--theta",
                        format!("{x} is not a finite number"),
                    ));
                }
                Ok(vec![*x; p])
            }
            Theta::Vector(values) => {
                if values.len() != p {
                    return Err(Error::Dimension(format!(
                        "θ has {} entries but {problem} needs p = {p}",
                        values.len()
                    )));
                }
                if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                    return Err(Error::option(
                        "--theta",
                        format!("entry {i} is {}, not a finite number", values[i]),
                    ));
                }
                Ok(values.clone())
            }
            Theta::File(path) => {
                let values = read_theta_file(path)?;
                if values.len() != p {
                    return Err(Error::Dimension(format!(
                        "--theta-file {} holds {} numbers but {problem} needs p = {p}",
                        path.display(),
                        values.len()
                    )));
                }
                Ok(values)
            }
        }
    }
}

/// Reads p numbers separated by white space or commas (`#` starts a comment); errors name
/// the file and line.
pub fn read_theta_file(path: &std::path::Path) -> Result<Vec<f64>> {
    let text = crate::data::read_text(path)?;
    let mut theta = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let content = line.split('#').next().unwrap_or("");
        for token in content.split(|c: char| c == ',' || c.is_whitespace()) {
            if token.is_empty() {
                continue;
            }
            let value: f64 = token.parse().map_err(|_| {
                Error::parse(
                    path,
                    number + 1,
                    format!("'{}' is not a number", printable(token)),
                )
            })?;
            if !value.is_finite() {
                return Err(Error::parse(
                    path,
                    number + 1,
                    format!("θ value '{}' is not finite", printable(token)),
                ));
            }
            theta.push(value);
        }
    }
    Ok(theta)
}

/// The inner model (`--model`, SPEC §8): the linear model of SPEC §2, or a multilayer
/// perceptron with these hidden widths (`mlp:H1[,H2,...]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ModelSpec {
    #[default]
    Linear,
    Mlp {
        hidden: Vec<usize>,
    },
}

impl ModelSpec {
    /// `linear` or `mlp:H1[,H2,...]` (every width a positive integer).
    pub fn parse(text: &str) -> Result<ModelSpec> {
        let usage = "use linear or mlp:H1[,H2,...] with positive hidden widths";
        if text == "linear" {
            return Ok(ModelSpec::Linear);
        }
        let Some(widths) = text.strip_prefix("mlp:") else {
            return Err(Error::option(
                "--model",
                format!("unknown model '{}' ({usage})", printable(text)),
            ));
        };
        let hidden = widths
            .split(',')
            .map(|w| match w.trim().parse::<usize>() {
                Ok(h) if h > 0 => Ok(h),
                _ => Err(Error::option(
                    "--model",
                    format!(
                        "'{}' in '{}' is not a hidden width ({usage})",
                        printable(w),
                        printable(text)
                    ),
                )),
            })
            .collect::<Result<Vec<usize>>>()?;
        Ok(ModelSpec::Mlp { hidden })
    }

    /// The name it is written with.
    pub fn name(&self) -> String {
        match self {
            ModelSpec::Linear => "linear".into(),
            ModelSpec::Mlp { hidden } => {
                let widths: Vec<String> = hidden.iter().map(|h| h.to_string()).collect();
                format!("mlp:{}", widths.join(","))
            }
        }
    }
}

impl std::str::FromStr for ModelSpec {
    type Err = Error;
    fn from_str(text: &str) -> Result<ModelSpec> {
        ModelSpec::parse(text)
    }
}

/// The options of `grad` and `run`, with the command line's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    // Problem.
    pub hyper: Option<HyperName>,
    pub theta: Theta,
    /// The fixed ridge penalty C of hyperclean's inner problem.
    pub l2: f64,
    /// The inner model (`--model`), and the hidden activation of a network.
    pub model: ModelSpec,
    pub activation: ActivationName,
    /// `distill`: K synthetic rows per class, and where they start.
    pub images_per_class: usize,
    pub distill_init: DistillInitName,

    // Method.
    /// Default: cg for the smooth problems, implicit-forward for the ℓ1 problems.
    pub method: Option<MethodName>,
    pub inner_solver: InnerSolverName,
    pub inner_tol: Option<f64>,
    pub inner_iters: usize,
    pub linear_tol: Option<f64>,
    pub linear_iters: Option<usize>,
    pub step: Option<f64>,
    pub unroll_steps: usize,
    pub truncate: Option<usize>,

    // Stochastic methods.
    pub inner_steps: usize,
    pub batch_size: usize,
    pub inner_lr: Option<f64>,
    pub linear_lr: Option<f64>,
    pub curvature: Option<CurvatureName>,
    pub rank: usize,
    pub fisher_update: FisherUpdateName,
    pub ema: Option<f64>,

    // ℓ1 problems.
    pub l1_solver: L1SolverName,
    pub folds: Option<usize>,

    // Data.
    pub split: String,
    pub seed: u64,
    pub standardize: bool,

    // Outer loop (`run`).
    pub outer_steps: u64,
    pub outer_opt: OuterOptName,
    pub outer_lr: Option<f64>,
    pub cold_start: bool,
    pub corrupt: Option<f64>,
    pub trace: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
    /// Write the checkpoint every K outer steps (and after the last); at least 1.
    pub checkpoint_every: u64,
    /// `distill`: after the outer loop, train a fresh model from w₀ on the final θ and report
    /// its test accuracy (`retrain_test_accuracy`).
    pub retrain: bool,

    pub device: DeviceSpec,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            hyper: None,
            theta: Theta::Default,
            l2: 0.01,
            model: ModelSpec::Linear,
            activation: ActivationName::Tanh,
            images_per_class: 1,
            distill_init: DistillInitName::Real,
            method: None,
            inner_solver: InnerSolverName::Newton,
            inner_tol: None,
            inner_iters: 1000,
            linear_tol: None,
            linear_iters: None,
            step: None,
            unroll_steps: 100,
            truncate: None,
            inner_steps: 100,
            batch_size: 64,
            inner_lr: None,
            linear_lr: None,
            curvature: None,
            rank: 64,
            fisher_update: FisherUpdateName::Auto,
            ema: None,
            l1_solver: L1SolverName::Cd,
            folds: None,
            split: "0.6,0.2,0.2".into(),
            seed: 0,
            standardize: false,
            outer_steps: 20,
            outer_opt: OuterOptName::Adam,
            outer_lr: None,
            cold_start: false,
            corrupt: None,
            trace: None,
            checkpoint: None,
            checkpoint_every: 1,
            retrain: false,
            device: DeviceSpec::default(),
        }
    }
}

/// The names [`Settings::set`] accepts, each with the long option it is (the options of
/// `grad` and `run` that are not about files of data, with `_` for `-`). Errors name an
/// option by its long option, as the command line does.
pub const OPTION_NAMES: &[(&str, &str)] = &[
    ("hyper", "--hyper"),
    ("theta", "--theta"),
    ("l2", "--l2"),
    ("model", "--model"),
    ("activation", "--activation"),
    ("images_per_class", "--images-per-class"),
    ("distill_init", "--distill-init"),
    ("method", "--method"),
    ("inner_solver", "--inner-solver"),
    ("inner_tol", "--inner-tol"),
    ("inner_iters", "--inner-iters"),
    ("linear_tol", "--linear-tol"),
    ("linear_iters", "--linear-iters"),
    ("step", "--step"),
    ("unroll_steps", "--unroll-steps"),
    ("truncate", "--truncate"),
    ("inner_steps", "--inner-steps"),
    ("batch_size", "--batch-size"),
    ("inner_lr", "--inner-lr"),
    ("linear_lr", "--linear-lr"),
    ("curvature", "--curvature"),
    ("rank", "--rank"),
    ("fisher_update", "--fisher-update"),
    ("ema", "--ema"),
    ("l1_solver", "--l1-solver"),
    ("folds", "--folds"),
    ("split", "--split"),
    ("seed", "--seed"),
    ("standardize", "--standardize"),
    ("outer_steps", "--outer-steps"),
    ("outer_opt", "--outer-opt"),
    ("outer_lr", "--outer-lr"),
    ("warm_start", "--warm-start"),
    ("cold_start", "--cold-start"),
    ("corrupt", "--corrupt"),
    ("trace", "--trace"),
    ("checkpoint", "--checkpoint"),
    ("checkpoint_every", "--checkpoint-every"),
    ("retrain", "--retrain"),
    ("device", "--device"),
    ("precision", "--precision"),
    ("storage", "--storage"),
    ("threads", "--threads"),
];

impl Settings {
    /// Sets the option `name` (a long option of SPEC §6 with `_` for `-`) to `value`.
    /// `None`-able options are cleared by an empty string. Errors say which option and why.
    pub fn set(&mut self, name: &str, value: &OptionValue) -> Result<()> {
        let Some(&(key, option)) = OPTION_NAMES.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = OPTION_NAMES.iter().map(|(n, _)| *n).collect();
            return Err(Error::UnknownOption {
                name: name.to_string(),
                known: known.join(", "),
            });
        };
        let v = Value { option, value };
        match key {
            "hyper" => self.hyper = v.opt_name()?,
            "theta" => {
                self.theta = match value {
                    OptionValue::Str(s) if s.is_empty() => Theta::Default,
                    _ => Theta::Scalar(v.float()?),
                }
            }
            "l2" => self.l2 = v.float()?,
            "model" => self.model = ModelSpec::parse(&v.string()?)?,
            "activation" => self.activation = v.name()?,
            "images_per_class" => self.images_per_class = v.count()?,
            "distill_init" => self.distill_init = v.name()?,
            "method" => self.method = v.opt_name()?,
            "inner_solver" => self.inner_solver = v.name()?,
            "inner_tol" => self.inner_tol = v.opt_float()?,
            "inner_iters" => self.inner_iters = v.count()?,
            "linear_tol" => self.linear_tol = v.opt_float()?,
            "linear_iters" => self.linear_iters = v.opt_count()?,
            "step" => self.step = v.opt_float()?,
            "unroll_steps" => self.unroll_steps = v.count()?,
            "truncate" => self.truncate = v.opt_count()?,
            "inner_steps" => self.inner_steps = v.count()?,
            "batch_size" => self.batch_size = v.count()?,
            "inner_lr" => self.inner_lr = v.opt_float()?,
            "linear_lr" => self.linear_lr = v.opt_float()?,
            "curvature" => self.curvature = v.opt_name()?,
            "rank" => self.rank = v.count()?,
            "fisher_update" => self.fisher_update = v.name()?,
            "ema" => self.ema = v.opt_float()?,
            "l1_solver" => self.l1_solver = v.name()?,
            "folds" => self.folds = v.opt_count()?,
            "split" => self.split = v.string()?,
            "seed" => self.seed = v.count()? as u64,
            "standardize" => self.standardize = v.flag()?,
            "outer_steps" => self.outer_steps = v.count()? as u64,
            "outer_opt" => self.outer_opt = v.name()?,
            "outer_lr" => self.outer_lr = v.opt_float()?,
            "warm_start" => self.cold_start = !v.flag()?,
            "cold_start" => self.cold_start = v.flag()?,
            "corrupt" => self.corrupt = v.opt_float()?,
            "trace" => self.trace = v.opt_string()?.map(PathBuf::from),
            "checkpoint" => self.checkpoint = v.opt_string()?.map(PathBuf::from),
            "checkpoint_every" => match v.count()? {
                0 => {
                    return Err(Error::option(
                        "--checkpoint-every",
                        "must be at least 1 (every step)",
                    ))
                }
                k => self.checkpoint_every = k as u64,
            },
            "retrain" => self.retrain = v.flag()?,
            "device" => self.device.device = v.name()?,
            "precision" => self.device.precision = v.opt_name()?,
            "storage" => self.device.storage = v.name()?,
            "threads" => self.device.threads = v.opt_count()?,
            _ => unreachable!("every name in OPTION_NAMES has an arm"),
        }
        Ok(())
    }
}

/// A value on its way into one option, with the conversions the options need.
struct Value<'a> {
    option: &'static str,
    value: &'a OptionValue,
}

impl Value<'_> {
    fn wrong(&self, wanted: &str) -> Error {
        Error::option(
            self.option,
            format!("expected {wanted}, got {}", describe(self.value)),
        )
    }

    fn is_unset(&self) -> bool {
        matches!(self.value, OptionValue::Str(s) if s.is_empty())
    }

    fn float(&self) -> Result<f64> {
        match *self.value {
            OptionValue::Float(x) => Ok(x),
            OptionValue::Int(i) => Ok(i as f64),
            _ => Err(self.wrong("a number")),
        }
    }

    fn opt_float(&self) -> Result<Option<f64>> {
        if self.is_unset() {
            return Ok(None);
        }
        self.float().map(Some)
    }

    fn count(&self) -> Result<usize> {
        match *self.value {
            OptionValue::Int(i) => usize::try_from(i).map_err(|_| {
                Error::option(
                    self.option,
                    format!("must be a non-negative integer, got {i}"),
                )
            }),
            _ => Err(self.wrong("an integer")),
        }
    }

    fn opt_count(&self) -> Result<Option<usize>> {
        if self.is_unset() {
            return Ok(None);
        }
        self.count().map(Some)
    }

    fn flag(&self) -> Result<bool> {
        match *self.value {
            OptionValue::Bool(b) => Ok(b),
            _ => Err(self.wrong("True or False")),
        }
    }

    fn string(&self) -> Result<String> {
        match self.value {
            OptionValue::Str(s) => Ok(s.clone()),
            _ => Err(self.wrong("a string")),
        }
    }

    fn opt_string(&self) -> Result<Option<String>> {
        if self.is_unset() {
            return Ok(None);
        }
        self.string().map(Some)
    }

    fn name<E: clap::ValueEnum>(&self) -> Result<E> {
        match self.value {
            OptionValue::Str(s) => names::parse(self.option, s),
            _ => Err(self.wrong("a name")),
        }
    }

    fn opt_name<E: clap::ValueEnum>(&self) -> Result<Option<E>> {
        if self.is_unset() {
            return Ok(None);
        }
        self.name().map(Some)
    }
}

fn describe(value: &OptionValue) -> String {
    match value {
        OptionValue::Bool(b) => format!("the flag {b}"),
        OptionValue::Int(i) => format!("the integer {i}"),
        OptionValue::Float(x) => format!("the number {x}"),
        OptionValue::Str(s) => format!("the string '{s}'"),
    }
}
