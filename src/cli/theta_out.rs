//! `run --theta-out FILE.npy` and the θ summary of `run --json` (issue 24 item 5): at n = 10⁷
//! per-sample weights, θ printed as JSON is about 200 MB; above [`PRINT_LIMIT`] entries the
//! JSON carries a summary and the full vector goes to a `.npy` file.

use serde_json::{json, Map, Value};

use crate::api::Outcome;

/// The longest θ `run --json` prints whole (10⁴ numbers, about 200 kB of JSON).
pub const PRINT_LIMIT: usize = 10_000;

/// The final θ of a run: the smooth problems' last θ, the ℓ1 problems' best one.
pub fn final_theta(outcome: &Outcome) -> &[f64] {
    match outcome {
        Outcome::Smooth(o) => &o.theta,
        Outcome::L1(o) => &o.result.best_theta,
    }
}

/// Summary statistics of θ: length, min, max, mean and Euclidean norm.
pub fn summary(theta: &[f64]) -> Value {
    let n = theta.len();
    let (min, max) = theta
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let mean = theta.iter().sum::<f64>() / n.max(1) as f64;
    let norm = theta.iter().map(|v| v * v).sum::<f64>().sqrt();
    json!({
        "len": n,
        "min": (n > 0).then_some(min),
        "max": (n > 0).then_some(max),
        "mean": (n > 0).then_some(mean),
        "norm": norm,
    })
}

/// Replaces every θ array of `run --json` longer than [`PRINT_LIMIT`] (`theta`, `best_theta`)
/// by `KEY_summary` ([`summary`]), and names the `.npy` file that holds it (`theta_file`),
/// when there is one.
pub fn summarise(object: &mut Map<String, Value>, theta_file: Option<&str>) {
    for key in ["theta", "best_theta"] {
        let long = object
            .get(key)
            .and_then(Value::as_array)
            .filter(|a| a.len() > PRINT_LIMIT)
            .map(|a| a.iter().filter_map(Value::as_f64).collect::<Vec<f64>>());
        if let Some(values) = long {
            object.remove(key);
            object.insert(format!("{key}_summary"), summary(&values));
        }
    }
    if let Some(file) = theta_file {
        object.insert("theta_file".into(), json!(file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_theta_is_summarised_and_short_theta_kept() {
        let long: Vec<f64> = (0..=PRINT_LIMIT).map(|i| i as f64).collect();
        let mut object = Map::new();
        object.insert("theta".into(), json!(long));
        object.insert("best_theta".into(), json!([1.0, -2.0]));
        summarise(&mut object, Some("t.npy"));
        assert!(object.get("theta").is_none());
        let s = &object["theta_summary"];
        assert_eq!(s["len"], json!(PRINT_LIMIT + 1));
        assert_eq!(s["min"], json!(0.0));
        assert_eq!(s["max"], json!(PRINT_LIMIT as f64));
        assert_eq!(s["mean"], json!(PRINT_LIMIT as f64 / 2.0));
        assert_eq!(object["best_theta"], json!([1.0, -2.0]));
        assert_eq!(object["theta_file"], json!("t.npy"));
    }
}
