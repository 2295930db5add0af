//! The data options shared by the commands: where the training, validation and test rows
//! come from, and how they are split and scaled.

use clap::Args;

use crate::api::{DataSource, Settings};

/// Training, validation and (optional) test data.
#[derive(Debug, Args)]
#[command(next_help_heading = "Data")]
pub struct DataArgs {
    /// Training data: a CSV or LIBSVM file (optionally .gz), a NumPy .npy (label in the first
    /// column, f32/f64, read memory-mapped) or a CSR .npz with labels y (see `hypergrad data
    /// convert --help`), a bundled dataset (digits,
    /// breast_cancer, diabetes, mnist_5k) or a synthetic spec such as
    /// synthetic:logistic:n=1000,d=20,seed=1. Without --val it is split by --split.
    /// --problem quadratic takes its whole problem from synthetic:quadratic:m=1000,nx=10,nw=10,seed=S.
    #[arg(long, value_name = "FILE|NAME")]
    pub train: String,

    /// Validation data (same forms as --train). When given, --train is not split.
    #[arg(long, value_name = "FILE|NAME")]
    pub val: Option<String>,

    /// Fractions train,val[,test] to split --train into when --val is absent.
    #[arg(long, value_name = "FRACTIONS", default_value = "0.6,0.2,0.2")]
    pub split: String,

    /// Seed of the split (and of anything else random).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Z-score every feature with the training rows' mean and standard deviation.
    #[arg(long)]
    pub standardize: bool,
}

impl DataArgs {
    /// The sources, with `test` (an explicit test file) used instead of a third split part.
    pub fn source(&self, test: Option<&str>) -> DataSource {
        DataSource {
            train: self.train.clone(),
            val: self.val.clone(),
            test: test.map(str::to_string),
        }
    }

    pub fn apply(&self, s: &mut Settings) {
        s.split = self.split.clone();
        s.seed = self.seed;
        s.standardize = self.standardize;
    }
}
