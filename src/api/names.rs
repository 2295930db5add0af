//! The names a user picks from (SPEC §2, §3, §6): one enum per choice, shared by the command
//! line (as clap value enums) and the Python package (parsed from strings by [`parse`]), so
//! that a name means the same thing in both and is spelled in one place.

use clap::ValueEnum;

use crate::{Error, Result};

/// `--problem`: the bilevel problem (SPEC §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProblemName {
    Ridge,
    Logreg,
    Softmax,
    Hyperclean,
    /// ℓ1 problems: sparse model selection.
    Lasso,
    Enet,
    Wlasso,
    /// Ehrhardt & Roberts' quadratic test problem (SPEC §9), from
    /// `--train synthetic:quadratic:m=1000,nx=10,nw=10,seed=S`.
    Quadratic,
    /// Dataset distillation (SPEC §9): θ is K synthetic training rows per class.
    Distill,
}

/// `--method`: the hypergradient method (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodName {
    Exact,
    Cg,
    Neumann,
    FixedPoint,
    Unroll,
    Forward,
    /// ℓ1 problems only: support-restricted linear solve.
    Implicit,
    /// ℓ1 problems only: Jacobian recursion on the support after the inner solve.
    ImplicitForward,
    Nhgd,
    Stocbio,
    Amigo,
    Soba,
}

/// `--hyper`: the layout of θ for the smooth problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HyperName {
    Shared,
    PerFeature,
    PerClass,
    PerSample,
    /// One λ per weight matrix of a network (`--model mlp:…`, softmax).
    PerLayer,
}

/// `--activation`: the hidden layers' activation of `--model mlp:…`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActivationName {
    Tanh,
    Relu,
}

/// `--distill-init`: where `distill`'s θ starts without `--theta`/`--theta-file`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DistillInitName {
    /// K random real training rows of each class (seeded); `train` is accepted too.
    #[value(alias = "train")]
    Real,
    /// Every entry N(0, 1) (seeded).
    Noise,
}

/// `--inner-solver` of the smooth problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InnerSolverName {
    Gd,
    Agd,
    Newton,
    Lbfgs,
    Sgd,
    Adam,
}

/// `--l1-solver` of the ℓ1 problems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum L1SolverName {
    Cd,
    Pgd,
    Fista,
}

/// `--device`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceName {
    Auto,
    Cpu,
    Cuda,
}

/// `--precision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PrecisionName {
    F32,
    F64,
}

/// `--storage`: how CUDA stores the data matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StorageName {
    F32,
    Bf16,
}

/// `--curvature`: NHGD's curvature representation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CurvatureName {
    Dense,
    Kfac,
    Lowrank,
}

/// `--fisher-update`: how the dense Fisher is updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FisherUpdateName {
    Woodbury,
    Accumulate,
    Auto,
}

/// `--outer-opt`: the outer optimiser (sgd, adam, maid for the smooth problems; hoag, adam,
/// grid, random for the ℓ1 problems).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OuterOptName {
    Sgd,
    Adam,
    Maid,
    /// ℓ1 problems only.
    Hoag,
    /// ℓ1 problems only.
    Grid,
    /// ℓ1 problems only.
    Random,
}

/// The name a value of `E` is written with (`fixed-point`, `per-class`, …).
pub fn name_of<E: ValueEnum>(value: &E) -> String {
    value
        .to_possible_value()
        .map_or_else(String::new, |v| v.get_name().to_string())
}

/// Parses one of `E`'s names for the option `option` (its name without dashes, as the Python
/// package spells it); the error lists the names there are.
pub fn parse<E: ValueEnum>(option: &'static str, text: &str) -> Result<E> {
    E::from_str(text, false).map_err(|_| {
        let names: Vec<String> = E::value_variants().iter().map(name_of).collect();
        Error::option(
            option,
            format!("unknown value '{text}' (use {})", names.join(", ")),
        )
    })
}
