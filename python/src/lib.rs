//! `hypergrad._native`: the Rust side of the Python package (SPEC §7).
//!
//! The Python layer (`hypergrad/_api.py`) checks the *types* of its arguments (NumPy arrays of
//! float32/float64, SciPy sparse matrices as CSR triplets, labels as float64) and hands them
//! here; everything about their *values* (shapes, finiteness, labels, option names and
//! ranges) is checked by `hypergrad::api`, so a bad input gets the same one-line message as on
//! the command line.
//!
//! Every computation runs on a worker thread with the GIL released. The calling thread wakes
//! every [`POLL`] to run Python's signal handlers: on Ctrl-C it raises a cancel flag that the
//! per-step sink of `run` checks, waits for the worker to stop, and raises `KeyboardInterrupt`.
//! A panic in Rust is caught on the worker thread and becomes a `RuntimeError`.
//! Results cross as JSON text (the same serialisation as `--json`), parsed by the Python layer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{
    PyKeyboardInterrupt, PyMemoryError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyString, PyTuple};

use hypergrad::api;
use hypergrad::Error;

/// The worker thread's name (the panic hook recognises it).
const WORKER: &str = "hypergrad-python";

/// How often the calling thread looks for Ctrl-C while Rust computes.
const POLL: Duration = Duration::from_millis(100);

/// Where an error came from: reading the arrays (everything is about the input there), or
/// the computation (where numerical and backend failures are not the caller's input).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Input,
    Compute,
}

/// A library error as the Python exception SPEC §7 asks for: `KeyboardInterrupt` for an
/// interrupted run, `TypeError` for an option that does not exist (as for any unexpected
/// keyword argument), `MemoryError` for a run that does not fit (refused before it allocates,
/// so the interpreter lives on), `RuntimeError` for numerical and backend failures of the computation,
/// `ValueError` for everything else about the input. The message is the command line's, an
/// invalid option named by its keyword (`inner_tol`, not `--inner-tol`), with positions
/// counted from 0 ([`zero_based`]).
fn to_py_err_at(err: Error, stage: Stage) -> PyErr {
    to_py_err_in(err, stage, None)
}

/// [`to_py_err_at`] for an error about the dataset `dataset` (`X`, `X_val`, …), whose
/// message gets "dataset 'X': " in front where the library's does not name it (a sparse
/// matrix's structure and values are checked before they become a named dataset).
fn to_py_err_in(err: Error, stage: Stage, dataset: Option<&str>) -> PyErr {
    let mut message = zero_based(&one_line(&api::keyword_message(&err)));
    if let Some(name) = dataset {
        if !message.contains(&format!("'{name}'")) {
            message = format!("dataset '{name}': {message}");
        }
    }
    let message = label_argument(&message);
    match err {
        Error::Interrupted => PyKeyboardInterrupt::new_err(message),
        Error::UnknownOption { .. } => PyTypeError::new_err(message),
        Error::Memory(_) => PyMemoryError::new_err(message),
        Error::Numerical(_) | Error::Backend(_) if stage == Stage::Compute => {
            PyRuntimeError::new_err(message)
        }
        _ => PyValueError::new_err(message),
    }
}

fn to_py_err(err: Error) -> PyErr {
    to_py_err_at(err, Stage::Compute)
}

fn input_err(err: Error) -> PyErr {
    to_py_err_at(err, Stage::Input)
}

/// The datasets' names as the Python functions call their designs, and the argument that
/// holds their labels.
const LABEL_ARGUMENTS: [(&str, &str); 3] = [("X", "y"), ("X_val", "y_val"), ("X_test", "y_test")];

/// A message about a label names the argument that holds it (`y: label inf at row 4 …`), not
/// the dataset the library built from `X` and `y` (`dataset 'X': label inf …`).
fn label_argument(message: &str) -> String {
    let mut out = message.to_string();
    for (design, labels) in LABEL_ARGUMENTS {
        out = out.replace(
            &format!("dataset '{design}': label"),
            &format!("{labels}: label"),
        );
    }
    out
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The library counts rows from 1, as a file's lines are counted; Python counts from 0
/// (SPEC §7), so that `X[13, 2]` is the NaN that "at row 13, column 2" names. Rewritten: "at
/// row N" and the ", column M" after it (dense data, labels), and a sparse matrix's "row N:"
/// (the column index that follows it is a stored index, 0-based already). Other numbers
/// ("entry k", "stored value k", a network label's "of row k") are 0-based in the library.
fn zero_based(message: &str) -> String {
    /// `text` starts with the decimal `n ≥ 1`: (n − 1, the digits' length).
    fn number(text: &str) -> Option<(u64, usize)> {
        let len = text.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = text.get(..len)?.parse().ok()?;
        (n >= 1).then_some((n - 1, len))
    }
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("row ") {
        let (head, tail) = rest.split_at(at);
        let after = &tail["row ".len()..];
        let found = number(after).filter(|&(_, len)| {
            head.ends_with("at ")
                || ((head.is_empty() || head.ends_with(": ")) && after[len..].starts_with(':'))
        });
        let Some((row, len)) = found else {
            out.push_str(head);
            out.push_str("row ");
            rest = after;
            continue;
        };
        out.push_str(head);
        out.push_str(&format!("row {row}"));
        rest = &after[len..];
        if head.ends_with("at ") {
            if let Some(col_text) = rest.strip_prefix(", column ") {
                if let Some((col, len)) = number(col_text) {
                    out.push_str(&format!(", column {col}"));
                    rest = &col_text[len..];
                }
            }
        }
    }
    out.push_str(rest);
    out
}

/// The text of a panic payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a Rust panic with no message".to_string()
    }
}

type Outcome<T> = std::thread::Result<hypergrad::Result<T>>;

/// Runs `job` on a worker thread with the GIL released, polling for signals every [`POLL`].
/// `job` gets the cancel flag, raised on Ctrl-C (or any exception a signal handler raises);
/// the exception is re-raised once the worker has returned.
fn compute<T, F>(py: Python<'_>, job: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce(&AtomicBool) -> hypergrad::Result<T> + Send,
{
    let cancel = AtomicBool::new(false);
    let slot: (Mutex<Option<Outcome<T>>>, Condvar) = (Mutex::new(None), Condvar::new());
    std::thread::scope(|scope| {
        let (cancel, slot) = (&cancel, &slot);
        let worker = std::thread::Builder::new()
            .name(WORKER.into())
            .spawn_scoped(scope, move || {
                let outcome = catch_unwind(AssertUnwindSafe(|| job(cancel)));
                let (lock, ready) = slot;
                *lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
                ready.notify_all();
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start a worker thread: {e}")))?;
        let mut signal: Option<PyErr> = None;
        let outcome = loop {
            let taken = py.detach(|| {
                let (lock, ready) = slot;
                let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                let (mut guard, _) = ready
                    .wait_timeout_while(guard, POLL, |o| o.is_none())
                    .unwrap_or_else(|e| e.into_inner());
                guard.take()
            });
            if let Some(outcome) = taken {
                break outcome;
            }
            if signal.is_none() {
                if let Err(err) = py.check_signals() {
                    cancel.store(true, Ordering::SeqCst);
                    signal = Some(err);
                }
            }
        };
        // The worker has stored its outcome; joining cannot block for long.
        let _ = py.detach(|| worker.join());
        match (outcome, signal) {
            (_, Some(err)) => Err(err),
            (Ok(result), None) => result.map_err(to_py_err),
            (Err(payload), None) => Err(PyRuntimeError::new_err(format!(
                "internal error (a bug in hypergrad, please report it): {}",
                one_line(&panic_message(payload.as_ref()))
            ))),
        }
    })
}

/// One side of the data (train, validation or test) as the API takes it.
fn data(x: &Bound<'_, PyAny>, y: &Bound<'_, PyAny>, name: &str) -> PyResult<api::Data> {
    let y = y.extract::<PyReadonlyArray1<'_, f64>>().map_err(|_| {
        PyTypeError::new_err(format!("{name}: the labels must be a 1-D float64 array"))
    })?;
    let y: Vec<f64> = y.as_array().iter().copied().collect();
    if let Ok(csr) = x.cast::<PyTuple>() {
        // (n_rows, n_cols, indptr, indices, data) of a CSR matrix (hypergrad/_api.py).
        let (n_rows, n_cols, indptr, indices, values): (
            usize,
            usize,
            PyReadonlyArray1<'_, i64>,
            PyReadonlyArray1<'_, i64>,
            PyReadonlyArray1<'_, f64>,
        ) = csr.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "{name}: a sparse matrix must come as (n_rows, n_cols, indptr, indices, data)"
            ))
        })?;
        let index = |a: &PyReadonlyArray1<'_, i64>, what: &str| -> PyResult<Vec<usize>> {
            a.as_array()
                .iter()
                .map(|&i| {
                    usize::try_from(i).map_err(|_| {
                        PyValueError::new_err(format!(
                            "dataset '{name}': the sparse matrix has a negative {what} ({i})"
                        ))
                    })
                })
                .collect()
        };
        let indptr = index(&indptr, "row pointer")?;
        let indices = index(&indices, "column index")?;
        let values = values.as_array().iter().copied().collect();
        return api::Data::sparse_csr(n_rows, n_cols, indptr, indices, values, y, name)
            .map_err(|err| to_py_err_in(err, Stage::Input, Some(name)));
    }
    let x = if let Ok(a) = x.extract::<PyReadonlyArray2<'_, f64>>() {
        a.as_array().as_standard_layout().into_owned()
    } else if let Ok(a) = x.extract::<PyReadonlyArray2<'_, f32>>() {
        a.as_array().mapv(f64::from)
    } else if let Ok(a) = x.cast::<PyUntypedArray>() {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected a 2-D float32 or float64 array, got a {}-D array of dtype {}",
            a.ndim(),
            a.dtype()
        )));
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected a NumPy array or a SciPy sparse matrix"
        )));
    };
    api::Data::dense(x, y, name).map_err(input_err)
}

/// θ: `None` (the problem's default, as without `--theta`), a number (every entry) or a
/// 1-D float64 array (all p entries).
fn theta(value: Option<&Bound<'_, PyAny>>) -> PyResult<api::Theta> {
    let Some(value) = value.filter(|v| !v.is_none()) else {
        return Ok(api::Theta::Default);
    };
    if value.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(
            "invalid value for theta: expected a number or a 1-D array, got a bool",
        ));
    }
    if value.is_instance_of::<PyFloat>() || value.is_instance_of::<PyInt>() {
        return Ok(api::Theta::Scalar(value.extract::<f64>()?));
    }
    let array = value.extract::<PyReadonlyArray1<'_, f64>>().map_err(|_| {
        PyTypeError::new_err("invalid value for theta: expected a number or a 1-D float64 array")
    })?;
    Ok(api::Theta::Vector(array.as_array().to_vec()))
}

/// One `**options` value; `None` means "the default" and is skipped by the caller.
fn option_value(name: &str, value: &Bound<'_, PyAny>) -> PyResult<api::OptionValue> {
    if value.is_instance_of::<PyBool>() {
        Ok(api::OptionValue::Bool(value.extract()?))
    } else if value.is_instance_of::<PyInt>() {
        let v: i64 = value.extract().map_err(|_| {
            PyValueError::new_err(format!("invalid value for {name}: {value} is too large"))
        })?;
        Ok(api::OptionValue::Int(v))
    } else if value.is_instance_of::<PyFloat>() {
        Ok(api::OptionValue::Float(value.extract()?))
    } else if value.is_instance_of::<PyString>() {
        Ok(api::OptionValue::Str(value.extract()?))
    } else {
        Err(PyTypeError::new_err(format!(
            "invalid value for {name}: expected a bool, int, float or str, got {}",
            value.get_type().name()?
        )))
    }
}

/// The request: problem, θ, and the options by their long names (`method` and `hyper`
/// among them); `None` values keep the default.
fn request(
    problem: &str,
    theta_value: Option<&Bound<'_, PyAny>>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<api::Request> {
    let mut settings = api::Settings::default();
    if let Some(options) = options {
        for (key, value) in options.iter() {
            let key: String = key
                .extract()
                .map_err(|_| PyTypeError::new_err("option names must be strings"))?;
            if value.is_none() {
                continue;
            }
            let value = option_value(&key, &value)?;
            settings.set(&key, &value).map_err(input_err)?;
        }
    }
    settings.theta = theta(theta_value)?;
    api::Request::new(problem, settings).map_err(input_err)
}

/// `hypergrad grad --json` on arrays: the result object as JSON text.
#[pyfunction]
#[pyo3(signature = (problem, x, y, x_val, y_val, theta, options))]
#[allow(clippy::too_many_arguments)]
fn hypergradient(
    py: Python<'_>,
    problem: &str,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    x_val: &Bound<'_, PyAny>,
    y_val: &Bound<'_, PyAny>,
    theta: Option<&Bound<'_, PyAny>>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<String> {
    let req = request(problem, theta, options)?;
    let input = api::Input::from(api::Splits {
        train: data(x, y, "X")?,
        val: data(x_val, y_val, "X_val")?,
        test: None,
    });
    compute(py, |_cancel| {
        Ok(api::grad(&req, &input)?.to_json().to_string())
    })
}

/// `hypergrad run --json` on arrays: `(result, trace)` as JSON text (an object, and an
/// array of the per-step records).
///
/// `callback`, when given, is called with each step's record (its JSON text) as soon as the
/// step is done, on the worker thread, which takes the GIL for the call only. It answers
/// `False` to end the run there: the outer loop of the smooth problems ends as if that step
/// were the last ([`Error::Stopped`]); the ℓ1 searches have no early end of their own, and
/// the result is then `"null"` with the trace so far (the Python layer finishes it). An
/// exception raised by the callback ends the run and is raised again here.
#[pyfunction]
#[pyo3(signature = (problem, x, y, x_val, y_val, x_test, y_test, theta, options, callback=None))]
#[allow(clippy::too_many_arguments)]
fn run(
    py: Python<'_>,
    problem: &str,
    x: &Bound<'_, PyAny>,
    y: &Bound<'_, PyAny>,
    x_val: &Bound<'_, PyAny>,
    y_val: &Bound<'_, PyAny>,
    x_test: Option<&Bound<'_, PyAny>>,
    y_test: Option<&Bound<'_, PyAny>>,
    theta: Option<&Bound<'_, PyAny>>,
    options: Option<&Bound<'_, PyDict>>,
    callback: Option<Py<PyAny>>,
) -> PyResult<(String, String)> {
    let req = request(problem, theta, options)?;
    let test = match (x_test, y_test) {
        (Some(x), Some(y)) => Some(data(x, y, "X_test")?),
        (None, None) => None,
        _ => {
            return Err(PyValueError::new_err(
                "X_test and y_test go together: give both or neither",
            ))
        }
    };
    let input = api::Input::from(api::Splits {
        train: data(x, y, "X")?,
        val: data(x_val, y_val, "X_val")?,
        test,
    });
    // An exception the callback raised, raised again once the worker has stopped.
    let raised: Mutex<Option<PyErr>> = Mutex::new(None);
    let callback = callback.filter(|c| !c.is_none(py));
    let result = compute(py, |cancel| {
        let mut seen: Vec<String> = Vec::new();
        let mut sink = |record: &serde_json::Value| -> hypergrad::Result<()> {
            if cancel.load(Ordering::SeqCst) {
                return Err(Error::Interrupted);
            }
            seen.push(record.to_string());
            let Some(callback) = &callback else {
                return Ok(());
            };
            let answer = Python::attach(|py| -> PyResult<bool> {
                let answer = callback.call1(py, (seen[seen.len() - 1].as_str(),))?;
                // Only `False` stops (a callback that returns nothing goes on).
                Ok(!answer.bind(py).is(PyBool::new(py, false).as_any()))
            });
            match answer {
                Ok(true) => Ok(()),
                Ok(false) => Err(Error::Stopped),
                Err(err) => {
                    *raised.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
                    Err(Error::Interrupted)
                }
            }
        };
        match api::run(&req, &input, &mut sink) {
            Ok(outcome) => {
                let trace: Vec<String> = outcome.trace().iter().map(|r| r.to_string()).collect();
                Ok((
                    outcome.to_json().to_string(),
                    format!("[{}]", trace.join(",")),
                ))
            }
            // Only an ℓ1 search gets here with it (the outer loop ends with a result).
            Err(Error::Stopped) => Ok(("null".to_string(), format!("[{}]", seen.join(",")))),
            Err(err) => Err(err),
        }
    });
    match raised.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(err) => Err(err),
        None => result,
    }
}

/// The rows of each part of the command line's `--split` for `n` rows (`fractions`: 2 or 3
/// numbers > 0 summing to 1, `seed`): lists of 0-based row indices, in the shuffled order
/// the library gives them. The held-out split of the estimators.
#[pyfunction]
fn split_indices(n: usize, fractions: Vec<f64>, seed: u64) -> PyResult<Vec<Vec<usize>>> {
    hypergrad::data::split_indices(n, &fractions, seed).map_err(input_err)
}

/// The K folds of `--folds K` for `n` rows and `seed`: `(fit rows, held-out rows)` per fold,
/// each sorted, 0-based. The folds of the ℓ1 estimators' `criterion="cv"`.
#[pyfunction]
fn fold_indices(n: usize, k: usize, seed: u64) -> PyResult<Vec<(Vec<usize>, Vec<usize>)>> {
    hypergrad::data::fold_indices(n, k, seed).map_err(input_err)
}

/// The class probabilities (n×c) of a trained network (`layer_sizes`, `activation` and `coef`
/// of `run --json` with `--model mlp:…`) on the rows of `x` (float64, n×d): what
/// `HyperCleaner.predict_proba` returns for a network.
#[pyfunction]
#[pyo3(signature = (sizes, activation, params, x))]
fn network_probabilities<'py>(
    py: Python<'py>,
    sizes: Vec<usize>,
    activation: &str,
    params: PyReadonlyArray1<'py, f64>,
    x: PyReadonlyArray2<'py, f64>,
) -> PyResult<Bound<'py, numpy::PyArray2<f64>>> {
    let params: Vec<f64> = params.as_array().iter().copied().collect();
    let x = x.as_array();
    let (n, d) = x.dim();
    let rows: Vec<f64> = x.iter().copied().collect();
    let c = sizes.last().copied().unwrap_or(0);
    let activation = activation.to_string();
    if d == 0 {
        return Err(PyValueError::new_err("X: there are no columns (features)"));
    }
    let probs = compute(py, move |_| {
        api::network_probabilities(&sizes, &activation, &params, &rows, n)
    })?;
    let array = ndarray::Array2::from_shape_vec((n, c), probs)
        .map_err(|e| PyRuntimeError::new_err(format!("internal: {e}")))?;
    Ok(numpy::PyArray2::from_owned_array(py, array))
}

/// `hypergrad info --json` as JSON text.
#[pyfunction]
fn info(py: Python<'_>) -> PyResult<String> {
    compute(py, |_| Ok(api::info().to_string()))
}

/// Test hook for the worker-thread machinery: spins for `seconds` (checking the cancel flag
/// every millisecond, as a run's sink does between steps), then panics if `panic` is set.
#[pyfunction]
#[pyo3(signature = (seconds, panic=false))]
fn _spin(py: Python<'_>, seconds: f64, panic: bool) -> PyResult<f64> {
    compute(py, |cancel| {
        let start = std::time::Instant::now();
        while start.elapsed().as_secs_f64() < seconds {
            if cancel.load(Ordering::SeqCst) {
                return Err(Error::Interrupted);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if panic {
            panic!("test panic from _spin");
        }
        Ok(start.elapsed().as_secs_f64())
    })
}

/// Panics on the worker thread become a `RuntimeError` carrying their message; the default
/// hook would also print a report (and, with `RUST_BACKTRACE`, a backtrace) on stderr. This
/// hook keeps quiet for the worker and defers to the previous hook everywhere else.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(WORKER) {
                previous(info);
            }
        }));
    });
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    install_panic_hook();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(hypergradient, m)?)?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(info, m)?)?;
    m.add_function(wrap_pyfunction!(split_indices, m)?)?;
    m.add_function(wrap_pyfunction!(fold_indices, m)?)?;
    m.add_function(wrap_pyfunction!(network_probabilities, m)?)?;
    m.add_function(wrap_pyfunction!(_spin, m)?)?;
    Ok(())
}
