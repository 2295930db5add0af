//! f32 at its defaults gives the f64 answer (issue 10): label-cleaning runs that differ only
//! in precision end within half a point of test accuracy of each other.

use hypergrad::api::{self, DataSource, Input, OptionValue, Request, Settings};

/// The final test accuracy and the learnt weights' accuracy of a `run` in `precision`.
fn cleaning_accuracy(train: &str, options: &[(&str, OptionValue)], precision: &str) -> (f64, f64) {
    let mut s = Settings::default();
    s.set("device", &OptionValue::Str("cpu".into())).unwrap();
    s.set("precision", &OptionValue::Str(precision.into()))
        .unwrap();
    for (name, value) in options {
        s.set(name, value).unwrap();
    }
    let request = Request::new("hyperclean", s).unwrap();
    let input = Input::Source(DataSource {
        train: train.into(),
        ..DataSource::default()
    });
    let outcome = api::run(&request, &input, &mut |_| Ok(()))
        .unwrap()
        .to_json();
    let last = outcome["final"]["test_accuracy"].as_f64().unwrap();
    let cleaned = outcome["cleaning"]["with_cleaning"].as_f64().unwrap();
    (last, cleaned)
}

fn assert_close(what: &str, f32_run: (f64, f64), f64_run: (f64, f64)) {
    for (a, b) in [(f32_run.0, f64_run.0), (f32_run.1, f64_run.1)] {
        assert!(
            (a - b).abs() <= 0.005,
            "{what}: f32 {f32_run:?} against f64 {f64_run:?}"
        );
    }
}

/// Digits, half the labels corrupted, NHGD with the dense Fisher updated both ways (the
/// issue's accumulate defect ended at 76.8% in f32 against 87.7%).
#[test]
fn digits_cleaning_in_f32_matches_f64_for_both_dense_updates() {
    for update in ["accumulate", "woodbury"] {
        let options = [
            ("standardize", OptionValue::Bool(true)),
            ("corrupt", OptionValue::Float(0.5)),
            ("method", OptionValue::Str("nhgd".into())),
            ("curvature", OptionValue::Str("dense".into())),
            ("fisher_update", OptionValue::Str(update.into())),
            ("inner_steps", OptionValue::Int(10)),
            ("batch_size", OptionValue::Int(128)),
            ("outer_steps", OptionValue::Int(60)),
        ];
        let f32_run = cleaning_accuracy("digits", &options, "f32");
        let f64_run = cleaning_accuracy("digits", &options, "f64");
        assert_close(update, f32_run, f64_run);
        // And the cleaning helps: far above chance with half the labels wrong.
        assert!(f64_run.1 > 0.85, "{update}: {f64_run:?}");
    }
}

/// The main job (`hypergrad run` with no problem named) in f32 and in f64.
#[test]
fn main_job_in_f32_matches_f64() {
    let options = [
        ("standardize", OptionValue::Bool(true)),
        ("corrupt", OptionValue::Float(0.5)),
        ("method", OptionValue::Str("nhgd".into())),
    ];
    let f32_run = cleaning_accuracy("mnist_5k", &options, "f32");
    let f64_run = cleaning_accuracy("mnist_5k", &options, "f64");
    assert_close("main job", f32_run, f64_run);
}
