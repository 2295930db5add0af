//! The library's entry layer: what the `hypergrad` command line and the Python package call.
//!
//! A call names a problem and its [`Settings`] (SPEC §6's options, typed), gives the data
//! ([`Input`]: named sources or rows in memory), and runs one of two operations:
//!
//! * [`grad`]: one hypergradient ∇F(θ) with its diagnostics → [`Report`];
//! * [`run`]: the outer loop, one trace record per step to a sink (and to the `trace` file,
//!   checkpointing when asked) → [`Outcome`].
//!
//! [`Request::plan`] turns names into a [`Plan`] in which impossible combinations cannot be
//! written: the smooth problems and the ℓ1 problems have their own problem, method and
//! optimiser types. The device is opened once per call, in [`device::Device::open`].
//!
//! ```no_run
//! use hypergrad::api::{self, DataSource, Request, Settings};
//! let mut settings = Settings::default();
//! settings.standardize = true;
//! let request = Request::new("softmax", settings).unwrap();
//! let source = DataSource { train: "digits".into(), ..Default::default() };
//! let report = api::grad(&request, &source.into()).unwrap();
//! println!("{}", report.to_json());
//! ```

pub mod cleaning;
pub mod data;
pub mod device;
mod distill;
mod footprint;
pub mod info;
mod l1;
pub mod names;
pub(crate) mod network;
mod outcome;
mod plan;
mod quadratic;
pub mod settings;
mod smooth;
mod trace;

pub use data::{Data, DataSource, Input, Splits};
pub use device::Device;
pub use l1::{L1Outcome, L1Report};
pub use names::ProblemName;
pub use network::network_probabilities;
pub use outcome::{NetworkInfo, SmoothOutcome, SmoothReport};
pub use plan::{L1Plan, NetworkPlan, Plan, SmoothPlan};
pub use settings::{DeviceSpec, ModelSpec, OptionValue, Settings, Theta, OPTION_NAMES};

use crate::Result;

/// A problem by name, with every option.
#[derive(Clone, Debug)]
pub struct Request {
    pub problem: ProblemName,
    pub settings: Settings,
}

impl Request {
    /// `problem` is a SPEC §2 name (`ridge`, `logreg`, `softmax`, `hyperclean`, `lasso`,
    /// `enet`, `wlasso`), `quadratic` or `distill` (SPEC §9).
    pub fn new(problem: &str, settings: Settings) -> Result<Request> {
        Ok(Request {
            problem: names::parse("--problem", problem)?,
            settings,
        })
    }

    /// The typed plan: which family, which method, which options; refuses the combinations
    /// that do not exist (an ℓ1 method for a smooth problem, an optimiser of the other
    /// family, …) with a message that names what to use instead.
    pub fn plan(&self) -> Result<Plan> {
        Plan::new(self.problem, &self.settings)
    }
}

/// What [`grad`] returns: the hypergradient with its diagnostics and context.
pub enum Report {
    Smooth(SmoothReport),
    L1(L1Report),
}

impl Report {
    /// The object `hypergrad grad --json` prints (SPEC §6).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Report::Smooth(r) => r.to_json(),
            Report::L1(r) => r.to_json(),
        }
    }
}

/// What [`run`] returns: the final θ, the trace and the final numbers.
pub enum Outcome {
    Smooth(Box<SmoothOutcome>),
    L1(Box<L1Outcome>),
}

impl Outcome {
    /// The object `hypergrad run --json` prints, plus `coef` (the inner solution at the final
    /// θ) for the library's callers.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Outcome::Smooth(o) => o.to_json(),
            Outcome::L1(o) => o.to_json(),
        }
    }

    /// The trace records, one per step (SPEC §6 fields).
    pub fn trace(&self) -> &[serde_json::Value] {
        match self {
            Outcome::Smooth(o) => &o.trace,
            Outcome::L1(o) => &o.trace,
        }
    }
}

/// One hypergradient ∇F(θ) at the settings' θ.
pub fn grad(request: &Request, input: &Input) -> Result<Report> {
    match request.plan()? {
        Plan::Smooth(plan) => smooth::grad(&plan, &request.settings, input).map(Report::Smooth),
        Plan::L1(plan) => l1::grad(&plan, &request.settings, input).map(Report::L1),
    }
}

/// The outer loop. `on_step` receives each step's trace record as soon as it exists (after
/// it is written to the `trace` file); returning an error (e.g. [`crate::Error::Interrupted`])
/// stops the run there.
pub fn run(
    request: &Request,
    input: &Input,
    on_step: &mut dyn FnMut(&serde_json::Value) -> Result<()>,
) -> Result<Outcome> {
    match request.plan()? {
        Plan::Smooth(plan) => smooth::run(&plan, &request.settings, input, on_step)
            .map(|o| Outcome::Smooth(Box::new(o))),
        Plan::L1(plan) => {
            l1::run(&plan, &request.settings, input, on_step).map(|o| Outcome::L1(Box::new(o)))
        }
    }
}

/// The one-line message of `err` for callers that pass options as keyword arguments (the
/// Python package): an invalid option is named `inner_tol` rather than `--inner-tol`; every
/// other message is the command line's.
pub fn keyword_message(err: &crate::Error) -> String {
    match err {
        crate::Error::InvalidOption { option, message } => {
            let name = OPTION_NAMES
                .iter()
                .find(|(_, flag)| flag == option)
                .map_or(*option, |(keyword, _)| *keyword);
            format!("invalid value for {name}: {message}")
        }
        // The option that lowers a run's memory, named as the caller spells it.
        crate::Error::Memory(_) => err
            .to_string()
            .split(' ')
            .map(|word| {
                let flag = word.trim_end_matches([',', ')', ';']);
                match OPTION_NAMES.iter().find(|(_, f)| *f == flag) {
                    Some((keyword, _)) => word.replacen(flag, keyword, 1),
                    None => word.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// `value` (an object) with the fields of `extra` (an object) added.
fn with_fields(mut value: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(object), serde_json::Value::Object(extra)) = (value.as_object_mut(), extra) {
        object.extend(extra);
    }
    value
}

/// What `hypergrad info --json` prints: version, build, kernels, devices.
pub fn info() -> serde_json::Value {
    info::Info::gather().to_json()
}
