//! The library's entry layer (`hypergrad::api`): options by name, the plan's refusals, data
//! in memory against data by name, dense against sparse rows, and stopping a run.

use hypergrad::api::{
    self, Data, DataSource, Input, OptionValue, Outcome, Report, Request, Settings, Splits,
    OPTION_NAMES,
};
use hypergrad::Error;

fn digits_source() -> Input {
    Input::Source(DataSource {
        train: "digits".into(),
        ..DataSource::default()
    })
}

fn cpu_settings() -> Settings {
    let mut s = Settings::default();
    s.set("device", &OptionValue::Str("cpu".into())).unwrap();
    s
}

#[test]
fn every_option_name_is_accepted_and_unknown_names_are_refused() {
    // One value of the right type for each name: none may be refused.
    for (name, flag) in OPTION_NAMES {
        assert_eq!(*flag, format!("--{}", name.replace('_', "-")));
        let value = match *name {
            "hyper" => OptionValue::Str("per-class".into()),
            "model" => OptionValue::Str("mlp:8,4".into()),
            "activation" => OptionValue::Str("relu".into()),
            "method" => OptionValue::Str("fixed-point".into()),
            "inner_solver" => OptionValue::Str("agd".into()),
            "curvature" => OptionValue::Str("kfac".into()),
            "fisher_update" => OptionValue::Str("accumulate".into()),
            "l1_solver" => OptionValue::Str("fista".into()),
            "outer_opt" => OptionValue::Str("maid".into()),
            "device" => OptionValue::Str("cpu".into()),
            "precision" => OptionValue::Str("f32".into()),
            "storage" => OptionValue::Str("bf16".into()),
            "split" => OptionValue::Str("0.5,0.5".into()),
            "trace" | "checkpoint" => OptionValue::Str("file.jsonl".into()),
            "distill_init" => OptionValue::Str("noise".into()),
            "standardize" | "cold_start" | "retrain" => OptionValue::Bool(true),
            // Warm start is the default: turning it off is the change.
            "warm_start" => OptionValue::Bool(false),
            "theta" | "l2" | "inner_tol" | "linear_tol" | "step" | "inner_lr" | "linear_lr"
            | "ema" | "outer_lr" | "corrupt" => OptionValue::Float(0.25),
            _ => OptionValue::Int(3),
        };
        let mut s = Settings::default();
        s.set(name, &value)
            .unwrap_or_else(|e| panic!("{name} = {value:?}: {e}"));
        assert_ne!(s, Settings::default(), "{name} changed nothing");
    }
    let err = Settings::default()
        .set("inner-tol", &OptionValue::Float(1e-8))
        .unwrap_err();
    assert!(matches!(err, Error::UnknownOption { .. }), "{err}");
    assert!(err.to_string().contains("inner_tol"), "{err}");
}

#[test]
fn option_values_of_the_wrong_kind_name_the_option() {
    let mut s = Settings::default();
    let cases = [
        ("inner_tol", OptionValue::Str("tight".into()), "--inner-tol"),
        ("batch_size", OptionValue::Float(1.5), "--batch-size"),
        ("batch_size", OptionValue::Int(-3), "--batch-size"),
        (
            "curvature",
            OptionValue::Str("diagonal".into()),
            "--curvature",
        ),
        ("standardize", OptionValue::Int(1), "--standardize"),
    ];
    for (name, value, flag) in cases {
        let err = s.set(name, &value).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidOption { option, .. } if *option == flag),
            "{name}: {err}"
        );
    }
    // Keyword callers see the option by its keyword.
    let err = s.set("batch_size", &OptionValue::Int(-3)).unwrap_err();
    assert_eq!(
        api::keyword_message(&err),
        "invalid value for batch_size: must be a non-negative integer, got -3"
    );
    // The error for an unknown value lists the names there are.
    let err = s
        .set("curvature", &OptionValue::Str("diagonal".into()))
        .unwrap_err();
    assert!(err.to_string().contains("dense, kfac, lowrank"), "{err}");
    // An empty string clears an optional option.
    s.set("inner_tol", &OptionValue::Float(1e-3)).unwrap();
    s.set("inner_tol", &OptionValue::Str(String::new()))
        .unwrap();
    assert_eq!(s.inner_tol, None);
}

#[test]
fn methods_and_optimisers_of_the_other_family_are_refused() {
    let refused = |problem: &str, option: &str, value: &str, flag: &str| {
        let mut s = Settings::default();
        s.set(option, &OptionValue::Str(value.into())).unwrap();
        let request = Request::new(problem, s).unwrap();
        let err = match request.plan() {
            Err(e) => e,
            Ok(_) => api::run(&request, &digits_source(), &mut |_| Ok(()))
                .err()
                .expect("refused"),
        };
        assert!(
            matches!(&err, Error::InvalidOption { option, .. } if *option == flag),
            "{problem} {value}: {err}"
        );
        err.to_string()
    };
    let message = refused("lasso", "method", "cg", "--method");
    assert!(message.contains("implicit"), "{message}");
    refused("lasso", "method", "exact", "--method");
    refused("enet", "method", "nhgd", "--method");
    let message = refused("ridge", "method", "implicit", "--method");
    assert!(message.contains("use cg or forward"), "{message}");
    refused("softmax", "outer_opt", "hoag", "--outer-opt");
    refused("lasso", "outer_opt", "maid", "--outer-opt");
    assert!(Request::new("ridge2", Settings::default()).is_err());
}

/// The rows a named source loads, handed back in memory, give the same hypergradient.
#[test]
fn rows_in_memory_give_the_answer_of_the_named_source() {
    let mut settings = cpu_settings();
    settings
        .set("hyper", &OptionValue::Str("per-class".into()))
        .unwrap();
    let request = Request::new("softmax", settings.clone()).unwrap();
    let by_name = api::grad(&request, &digits_source()).unwrap().to_json();
    let dense = digits_source().dense(&settings).unwrap();
    let rows = Splits {
        train: Data::Dense(dense.train),
        val: Data::Dense(dense.val),
        test: None,
    };
    let in_memory = api::grad(&request, &rows.into()).unwrap().to_json();
    assert_eq!(by_name["hypergradient"], in_memory["hypergradient"]);
    assert_eq!(by_name["outer_loss"], in_memory["outer_loss"]);
    assert_eq!(by_name["p"], 10);
}

/// Lasso on the same numbers stored dense and sparse (CSR built by hand).
#[test]
fn dense_and_sparse_rows_give_the_same_lasso_hypergradient() {
    let settings = cpu_settings();
    let dense = digits_source().dense(&Settings::default()).unwrap();
    let to_csr = |ds: &hypergrad::data::Dataset| {
        let (n, d) = (ds.n(), ds.d());
        let (mut indptr, mut indices, mut values) = (vec![0], Vec::new(), Vec::new());
        for i in 0..n {
            for j in 0..d {
                let v = ds.x[[i, j]];
                if v != 0.0 {
                    indices.push(j);
                    values.push(v);
                }
            }
            indptr.push(indices.len());
        }
        Data::sparse_csr(n, d, indptr, indices, values, ds.y.clone(), &ds.name).unwrap()
    };
    let sparse = Splits {
        train: to_csr(&dense.train),
        val: to_csr(&dense.val),
        test: None,
    };
    let dense = Splits {
        train: Data::Dense(dense.train),
        val: Data::Dense(dense.val),
        test: None,
    };
    let request = Request::new("lasso", settings).unwrap();
    let a = api::grad(&request, &dense.into()).unwrap();
    let b = api::grad(&request, &sparse.into()).unwrap();
    let (Report::L1(a), Report::L1(b)) = (a, b) else {
        panic!("lasso gives an ℓ1 report");
    };
    assert!(!a.sparse && b.sparse);
    let (ha, hb) = (a.result.hypergradient[0], b.result.hypergradient[0]);
    assert!((ha - hb).abs() <= 1e-8 * ha.abs().max(1.0), "{ha} vs {hb}");
}

#[test]
fn malformed_sparse_arrays_are_errors() {
    let y = vec![1.0, 2.0];
    let cases = [
        (vec![0, 1], vec![0], vec![1.0]),                 // indptr too short
        (vec![0, 1, 2], vec![0, 5], vec![1.0, 2.0]),      // column out of range
        (vec![0, 2, 2], vec![1, 0], vec![1.0, 2.0]),      // unsorted columns
        (vec![0, 1, 2], vec![0, 1], vec![1.0, f64::NAN]), // non-finite value
    ];
    for (indptr, indices, values) in cases {
        let r = Data::sparse_csr(2, 3, indptr.clone(), indices, values, y.clone(), "m");
        assert!(r.is_err(), "{indptr:?}");
    }
}

/// A sink that refuses to go on stops the run after the step it saw, with its error.
#[test]
fn a_sink_error_stops_the_run() {
    let mut settings = cpu_settings();
    for (name, value) in [
        ("method", OptionValue::Str("nhgd".into())),
        ("outer_steps", OptionValue::Int(50)),
        ("inner_steps", OptionValue::Int(5)),
        ("standardize", OptionValue::Bool(true)),
    ] {
        settings.set(name, &value).unwrap();
    }
    let request = Request::new("hyperclean", settings).unwrap();
    let mut seen = 0;
    let err = api::run(&request, &digits_source(), &mut |_| {
        seen += 1;
        if seen == 2 {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    })
    .err()
    .expect("interrupted");
    assert!(matches!(err, Error::Interrupted), "{err}");
    assert_eq!(seen, 2);
}

/// A sink that answers [`Error::Stopped`] ends the outer loop after the step it saw, with a
/// result: the same θ, coefficients and trace as a run whose last step that was.
#[test]
fn a_sink_that_stops_ends_the_run_with_a_result() {
    let run = |outer_steps: i64, stop_at: Option<usize>| {
        let mut settings = cpu_settings();
        for (name, value) in [
            ("method", OptionValue::Str("cg".into())),
            ("outer_steps", OptionValue::Int(outer_steps)),
            ("outer_opt", OptionValue::Str("adam".into())),
            ("standardize", OptionValue::Bool(true)),
        ] {
            settings.set(name, &value).unwrap();
        }
        let request = Request::new("hyperclean", settings).unwrap();
        let mut seen = 0;
        let outcome = api::run(&request, &digits_source(), &mut |_| {
            seen += 1;
            if Some(seen) == stop_at {
                Err(Error::Stopped)
            } else {
                Ok(())
            }
        })
        .unwrap();
        (outcome.to_json(), outcome.trace().to_vec(), seen)
    };
    // Stopped on its 3rd record (step 2) of 10, and stopped on the last record of 2 steps.
    let (stopped, stopped_trace, seen) = run(10, Some(3));
    let (short, short_trace, _) = run(2, None);
    assert_eq!(seen, 3);
    assert_eq!(stopped_trace.len(), 3);
    for key in ["theta", "coef"] {
        assert_eq!(stopped[key], short[key], "{key}");
    }
    let losses = |t: &[serde_json::Value]| {
        t.iter()
            .map(|r| r["outer_loss"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(losses(&stopped_trace), losses(&short_trace));
    let (last, _, _) = run(2, Some(3));
    assert_eq!(last["theta"], short["theta"]);
}

/// A finished run returns its trace and the model its final θ trains.
#[test]
fn a_run_returns_its_trace_and_coefficients() {
    let mut settings = cpu_settings();
    settings.set("outer_steps", &OptionValue::Int(2)).unwrap();
    settings
        .set("hyper", &OptionValue::Str("per-class".into()))
        .unwrap();
    let request = Request::new("softmax", settings).unwrap();
    let outcome = api::run(&request, &digits_source(), &mut |_| Ok(())).unwrap();
    assert_eq!(outcome.trace().len(), 3, "steps 0, 1, 2");
    let Outcome::Smooth(o) = &outcome else {
        panic!("softmax is smooth");
    };
    assert_eq!(o.coef.len(), 10 * 64);
    let json = outcome.to_json();
    assert_eq!(json["coef_shape"], serde_json::json!([10, 64]));
    assert_eq!(json["theta"].as_array().map(Vec::len), Some(10));
}
