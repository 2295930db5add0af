//! The data options shared by the commands: where the training, validation and test rows
//! come from, and how they are split and scaled.

use anyhow::{Context, Result};
use clap::Args;

use crate::data::{self, Dataset};

/// Training, validation and (optional) test data.
#[derive(Debug, Args)]
#[command(next_help_heading = "Data")]
pub struct DataArgs {
    /// Training data: a CSV or LIBSVM file (optionally .gz), a bundled dataset (digits,
    /// breast_cancer, diabetes, mnist_5k) or a synthetic spec such as
    /// synthetic:logistic:n=1000,d=20,seed=1. Without --val it is split by --split.
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

/// The datasets a command works on.
pub struct Splits {
    pub train: Dataset,
    pub val: Dataset,
    pub test: Option<Dataset>,
}

impl DataArgs {
    /// Loads (and splits, standardises) the data. `test` is an explicit test file, used
    /// instead of a third split part.
    pub fn load(&self, test: Option<&str>) -> Result<Splits> {
        let mut specs = vec![self.train.as_str()];
        specs.extend(self.val.as_deref());
        specs.extend(test);
        let mut loaded = data::load_all(&specs)
            .with_context(|| format!("cannot load the data ({})", specs.join(", ")))?
            .into_iter();
        let mut next = || loaded.next().context("internal: a dataset went missing");
        let train_full = next()?;
        let mut splits = if self.val.is_some() {
            Splits {
                train: train_full,
                val: next()?,
                test: test.map(|_| next()).transpose()?,
            }
        } else {
            let fractions = data::parse_split(&self.split)?;
            let mut parts = data::split(&train_full, &fractions, self.seed)?.into_iter();
            let (Some(train), Some(val)) = (parts.next(), parts.next()) else {
                anyhow::bail!("invalid value for --split: it needs at least two fractions");
            };
            let split_test = parts.next();
            Splits {
                train,
                val,
                test: match test {
                    Some(_) => Some(next()?),
                    None => split_test,
                },
            }
        };
        if self.standardize {
            let Splits { train, val, test } = &mut splits;
            match test {
                Some(test) => data::standardize(train, &mut [val, test]),
                None => data::standardize(train, &mut [val]),
            };
        }
        Ok(splits)
    }
}
