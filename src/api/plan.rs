//! From names to a typed plan. The two families of problems have their own problem, method
//! and optimiser types, so an ℓ1 method cannot be handed to a smooth problem (or the other
//! way round): each name either means one thing for a problem or is refused here with a
//! message that says which name to use.

use super::names::{
    name_of, ActivationName, CurvatureName, DistillInitName, FisherUpdateName, HyperName,
    InnerSolverName, L1SolverName, MethodName, OuterOptName, ProblemName,
};
use super::settings::{ModelSpec, Settings};
use crate::backend::mlp::Activation;
use crate::backend::Precision;
use crate::hypergrad::fisher::{Averaging, DenseUpdate, Representation};
use crate::hypergrad::stochastic::StochasticOptions;
use crate::hypergrad::{Method, Options};
use crate::l1::{L1Kind, L1Method, L1Options, L1Solver};
use crate::outer::OuterOpt;
use crate::problem::{HyperLayout, ProblemKind};
use crate::solver::{MiniBatch, Solver};
use crate::{Error, Result};

/// A problem of either family with its method.
#[derive(Clone, Debug)]
pub enum Plan {
    Smooth(SmoothPlan),
    L1(L1Plan),
}

/// A smooth problem (`ridge`, `logreg`, `softmax`, `hyperclean`; SPEC §2, or `quadratic`;
/// SPEC §9) with a smooth method (SPEC §3).
#[derive(Clone, Debug)]
pub struct SmoothPlan {
    pub kind: ProblemKind,
    pub layout: HyperLayout,
    pub method: Method,
    /// The network of `--model mlp:…` (softmax, hyperclean, distill); `None` for the linear
    /// model.
    pub network: Option<NetworkPlan>,
}

/// A multilayer perceptron as the inner model (SPEC §8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPlan {
    pub hidden: Vec<usize>,
    pub activation: Activation,
}

/// An ℓ1 problem (`lasso`, `enet`, `wlasso`) with an ℓ1 method.
#[derive(Clone, Debug)]
pub struct L1Plan {
    pub kind: L1Kind,
    pub method: L1Method,
    pub solver: L1Solver,
}

impl Plan {
    pub fn new(problem: ProblemName, settings: &Settings) -> Result<Plan> {
        if problem != ProblemName::Distill {
            let distill_only = [
                ("--retrain", settings.retrain),
                ("--images-per-class", settings.images_per_class != 1),
                (
                    "--distill-init",
                    settings.distill_init != DistillInitName::Real,
                ),
            ];
            if let Some(&(option, _)) = distill_only.iter().find(|(_, given)| *given) {
                return Err(Error::option(
                    option,
                    format!("is for --problem distill, not {}", name_of(&problem)),
                ));
            }
        }
        let l1_kind = match problem {
            ProblemName::Lasso => Some(L1Kind::Lasso),
            ProblemName::Enet => Some(L1Kind::Enet),
            ProblemName::Wlasso => Some(L1Kind::Wlasso),
            _ => None,
        };
        if let Some(kind) = l1_kind {
            if settings.model != ModelSpec::Linear {
                return Err(Error::option(
                    "--model",
                    "the ℓ1 problems (lasso, enet, wlasso) are linear; networks are for softmax and hyperclean",
                ));
            }
            return L1Plan::new(kind, settings).map(Plan::L1);
        }
        let kind = match problem {
            ProblemName::Ridge => ProblemKind::Ridge,
            ProblemName::Logreg => ProblemKind::Logreg,
            ProblemName::Softmax => ProblemKind::Softmax,
            ProblemName::Quadratic => ProblemKind::Quadratic,
            ProblemName::Distill => ProblemKind::Distill,
            _ => ProblemKind::Hyperclean,
        };
        SmoothPlan::new(kind, settings).map(Plan::Smooth)
    }
}

impl SmoothPlan {
    fn new(kind: ProblemKind, settings: &Settings) -> Result<SmoothPlan> {
        let method = match settings.method.unwrap_or(MethodName::Cg) {
            MethodName::Exact => Method::Exact,
            MethodName::Cg => Method::Cg,
            MethodName::Neumann => Method::Neumann,
            MethodName::FixedPoint => Method::FixedPoint,
            MethodName::Unroll => Method::Unroll,
            MethodName::Forward => Method::Forward,
            MethodName::Nhgd => Method::Nhgd,
            MethodName::Stocbio => Method::Stocbio,
            MethodName::Amigo => Method::Amigo,
            MethodName::Soba => Method::Soba,
            MethodName::Implicit | MethodName::ImplicitForward => {
                return Err(Error::option(
                    "--method",
                    "implicit and implicit-forward are for the ℓ1 problems (lasso, enet, wlasso); use cg or forward",
                ))
            }
        };
        if kind == ProblemKind::Quadratic {
            check_quadratic(method, settings)?;
        }
        if kind == ProblemKind::Distill {
            check_distill(method, settings)?;
        }
        let layout = match settings.hyper {
            None => kind.default_layout(),
            Some(HyperName::Shared) => HyperLayout::Shared,
            Some(HyperName::PerFeature) => HyperLayout::PerFeature,
            Some(HyperName::PerClass) => HyperLayout::PerClass,
            Some(HyperName::PerSample) => HyperLayout::PerSample,
            Some(HyperName::PerLayer) => HyperLayout::PerLayer,
        };
        let network = match &settings.model {
            ModelSpec::Linear => None,
            ModelSpec::Mlp { .. } if !(kind.is_multiclass() || kind == ProblemKind::Distill) => {
                return Err(Error::option(
                    "--model",
                    format!(
                        "networks are for softmax, hyperclean and distill, not {}",
                        kind.name()
                    ),
                ))
            }
            ModelSpec::Mlp { hidden } => Some(NetworkPlan {
                hidden: hidden.clone(),
                activation: match settings.activation {
                    ActivationName::Tanh => Activation::Tanh,
                    ActivationName::Relu => Activation::Relu,
                },
            }),
        };
        Ok(SmoothPlan {
            kind,
            layout,
            method,
            network,
        })
    }

    /// The deterministic methods' options for the given precision (defaults filled in).
    pub fn options(&self, settings: &Settings, precision: Precision) -> Options {
        let mut opts = Options::new(self.method, precision);
        opts.inner.solver = inner_solver(settings.inner_solver);
        opts.inner.minibatch = MiniBatch {
            batch: settings.batch_size,
            step: settings.inner_lr,
            seed: settings.seed,
        };
        if let Some(tol) = settings.inner_tol {
            opts.inner.tol = tol;
        }
        opts.inner.max_iters = settings.inner_iters;
        if let Some(tol) = settings.linear_tol {
            opts.linear_tol = tol;
        }
        opts.linear_iters = settings.linear_iters;
        opts.step = settings.step;
        opts.unroll_steps = settings.unroll_steps;
        opts.truncate = settings.truncate;
        opts
    }

    /// The stochastic methods' options (`nhgd`, `stocbio`, `amigo`, `soba`); `linear_tol` is
    /// the deterministic options' (NHGD's dense accumulate solve uses it).
    pub fn stochastic(&self, settings: &Settings, linear_tol: f64) -> StochasticOptions {
        let mut opts = StochasticOptions::new(self.method);
        opts.inner_steps = settings.inner_steps;
        opts.batch = settings.batch_size;
        opts.inner_lr = settings.inner_lr;
        opts.linear_lr = settings.linear_lr;
        opts.linear_steps = settings.linear_iters.unwrap_or(10);
        opts.representation = match settings.curvature {
            Some(CurvatureName::Dense) => Representation::Dense,
            Some(CurvatureName::Kfac) => Representation::Kfac,
            Some(CurvatureName::Lowrank) => Representation::Lowrank {
                rank: settings.rank,
            },
            None if self.kind.is_multiclass() || self.kind == ProblemKind::Distill => {
                Representation::Kfac
            }
            None => Representation::Dense,
        };
        opts.dense_update = match settings.fisher_update {
            FisherUpdateName::Woodbury => DenseUpdate::Woodbury,
            FisherUpdateName::Accumulate => DenseUpdate::Accumulate,
            FisherUpdateName::Auto => DenseUpdate::Auto,
        };
        opts.averaging = match settings.ema {
            Some(rho) => Averaging::Ema { rho },
            None => Averaging::Mean,
        };
        opts.linear_tol = linear_tol;
        opts.seed = settings.seed;
        opts
    }

    /// The outer optimiser of `run` (sgd, adam, maid).
    pub fn outer_opt(&self, settings: &Settings) -> Result<OuterOpt> {
        let lr = settings.outer_lr.unwrap_or(match settings.outer_opt {
            OuterOptName::Adam => 0.1,
            _ => 1.0,
        });
        if !(lr > 0.0 && lr.is_finite()) {
            return Err(Error::option(
                "--outer-lr",
                format!("must be > 0, got {lr}"),
            ));
        }
        Ok(match settings.outer_opt {
            OuterOptName::Sgd => OuterOpt::Sgd { lr },
            OuterOptName::Adam => OuterOpt::Adam(crate::outer::Adam::new(lr)),
            OuterOptName::Maid => OuterOpt::Maid { lr },
            OuterOptName::Hoag | OuterOptName::Grid | OuterOptName::Random => {
                return Err(Error::option(
                    "--outer-opt",
                    "hoag, grid and random are for the ℓ1 problems (lasso, enet, wlasso); use sgd, adam or maid",
                ))
            }
        })
    }
}

/// What `quadratic` refuses: a layout of θ (it has one, θ = w) and the stochastic methods,
/// which draw mini-batches of training rows that its matrices are not.
fn check_quadratic(method: Method, settings: &Settings) -> Result<()> {
    if settings.hyper.is_some() {
        return Err(Error::option(
            "--hyper",
            "quadratic fixes θ's layout: θ = w, one entry per column of C (p = nw)",
        ));
    }
    if method.is_stochastic() {
        return Err(Error::option(
            "--method",
            format!(
                "{} draws mini-batches of training rows, which quadratic does not have (use exact, cg, neumann, fixed-point, unroll or forward)",
                method.name()
            ),
        ));
    }
    Ok(())
}

/// What `distill` refuses: a layout of θ (it is the synthetic rows), and the stochastic
/// baselines, which cut the training rows into mini-batches once, while distill's rows change
/// with θ. Its inner model is linear or a network (`--model mlp:…`).
fn check_distill(method: Method, settings: &Settings) -> Result<()> {
    if settings.hyper.is_some() {
        return Err(Error::option(
            "--hyper",
            "distill fixes θ's layout: the K·c synthetic rows of d features (p = K·c·d)",
        ));
    }
    if matches!(method, Method::Stocbio | Method::Amigo | Method::Soba) {
        return Err(Error::option(
            "--method",
            format!(
                "{} partitions the training rows once, but distill's rows are θ and change every step (use exact, cg, neumann, fixed-point, unroll, forward or nhgd)",
                method.name()
            ),
        ));
    }
    if settings.images_per_class == 0 {
        return Err(Error::option("--images-per-class", "must be at least 1"));
    }
    Ok(())
}

/// The ℓ1 tolerances (relative gap, linear) by default in f32; see [`L1Plan::options`].
const F32_L1_TOL: f64 = 1e-6;

impl L1Plan {
    fn new(kind: L1Kind, settings: &Settings) -> Result<L1Plan> {
        let method = match settings.method.unwrap_or(MethodName::Implicit) {
            MethodName::Forward => L1Method::Forward,
            MethodName::Implicit => L1Method::Implicit,
            MethodName::ImplicitForward => L1Method::ImplicitForward,
            MethodName::Cg | MethodName::Exact => {
                return Err(Error::option(
                    "--method",
                    format!(
                        "{} is a smooth-problem method; the ℓ1 problems solve on the support with implicit (or implicit-forward, forward)",
                        name_of(&settings.method.unwrap_or(MethodName::Cg))
                    ),
                ))
            }
            other => {
                return Err(Error::option(
                    "--method",
                    format!(
                        "{} is not available for ℓ1 problems (use forward, implicit or implicit-forward)",
                        name_of(&other)
                    ),
                ))
            }
        };
        if settings.hyper.is_some() {
            return Err(Error::option(
                "--hyper",
                "the ℓ1 problems fix θ's layout (lasso p = 1, enet p = 2, wlasso p = d)",
            ));
        }
        let solver = match settings.l1_solver {
            L1SolverName::Cd => L1Solver::Cd,
            L1SolverName::Pgd => L1Solver::Pgd,
            L1SolverName::Fista => L1Solver::Fista,
        };
        Ok(L1Plan {
            kind,
            method,
            solver,
        })
    }

    /// The ℓ1 options for the given precision: `inner_tol` is the relative duality gap
    /// (default 1e-12 in f64, 1e-6 in f32), `inner_iters` the epochs, `linear_tol` (default
    /// 1e-10 in f64, 1e-6 in f32) and `linear_iters` (default 10000) steer the support solve /
    /// Jacobian sweeps. The f32 defaults: a gap or a relative change is computed from sums of
    /// f32 products whose rounding is ~1e-7 of their size (u = 6e-8), so 1e-12 would never be
    /// reached and the solve would run to `inner_iters`; 1e-6 leaves a factor ~16 above u.
    pub fn options(&self, settings: &Settings, precision: Precision) -> L1Options {
        let mut opts = L1Options::new(self.method);
        opts.inner.solver = self.solver;
        if precision == Precision::F32 {
            opts.inner.tol = F32_L1_TOL;
            opts.linear_tol = F32_L1_TOL;
        }
        if let Some(tol) = settings.inner_tol {
            opts.inner.tol = tol;
        }
        opts.inner.max_iters = settings.inner_iters;
        if let Some(tol) = settings.linear_tol {
            opts.linear_tol = tol;
        }
        if let Some(k) = settings.linear_iters {
            opts.linear_iters = k;
        }
        opts
    }

    /// The outer search of `run` (hoag, adam, grid, random).
    pub fn search_opt(&self, settings: &Settings) -> Result<crate::l1::OuterOpt> {
        use crate::l1::OuterOpt as L1Opt;
        Ok(match settings.outer_opt {
            OuterOptName::Hoag => L1Opt::Hoag,
            OuterOptName::Adam => L1Opt::Adam,
            OuterOptName::Grid => L1Opt::Grid,
            OuterOptName::Random => L1Opt::Random,
            other => {
                return Err(Error::option(
                    "--outer-opt",
                    format!(
                        "{} is not available for the ℓ1 problems (use hoag, adam, grid or random)",
                        name_of(&other)
                    ),
                ))
            }
        })
    }
}

/// The inner solver `--inner-solver` names.
pub(super) fn inner_solver(name: InnerSolverName) -> Solver {
    match name {
        InnerSolverName::Gd => Solver::Gd,
        InnerSolverName::Agd => Solver::Agd,
        InnerSolverName::Newton => Solver::Newton,
        InnerSolverName::Lbfgs => Solver::Lbfgs,
        InnerSolverName::Sgd => Solver::Sgd,
        InnerSolverName::Adam => Solver::Adam,
    }
}
