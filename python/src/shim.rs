//! A stand-in for `hypergrad::api` with the same shape, so that the bindings build and the
//! packaging, conversions and error paths can be tested before the real module lands.
//! Every computation answers "not available".

#[allow(dead_code)]
pub mod api {
    use std::fmt;

    pub type Result<T> = std::result::Result<T, Error>;

    #[derive(Debug)]
    pub enum Error {
        Value(String),
        Type(String),
        Runtime(String),
        Interrupted,
    }

    impl fmt::Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Error::Value(m) | Error::Type(m) | Error::Runtime(m) => f.write_str(m),
                Error::Interrupted => f.write_str("interrupted"),
            }
        }
    }

    impl Error {
        pub fn is_type_error(&self) -> bool {
            matches!(self, Error::Type(_))
        }
        pub fn is_interrupted(&self) -> bool {
            matches!(self, Error::Interrupted)
        }
        pub fn is_runtime_error(&self) -> bool {
            matches!(self, Error::Runtime(_))
        }
    }

    pub struct Data;

    impl Data {
        pub fn dense(_x: ndarray::Array2<f64>, _y: Vec<f64>, _name: &str) -> Result<Data> {
            Ok(Data)
        }
        pub fn sparse_csr(
            _n_rows: usize,
            _n_cols: usize,
            _indptr: Vec<usize>,
            _indices: Vec<usize>,
            _values: Vec<f64>,
            _y: Vec<f64>,
            _name: &str,
        ) -> Result<Data> {
            Ok(Data)
        }
    }

    pub struct Splits {
        pub train: Data,
        pub val: Data,
        pub test: Option<Data>,
    }

    pub enum OptionValue {
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
    }

    pub enum Theta {
        Default,
        Scalar(f64),
        Vector(Vec<f64>),
    }

    pub struct Settings {
        pub theta: Theta,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                theta: Theta::Default,
            }
        }
    }

    impl Settings {
        pub fn set(&mut self, _name: &str, _v: &OptionValue) -> Result<()> {
            Ok(())
        }
    }

    pub struct Request;

    impl Request {
        pub fn new(_problem: &str, _settings: Settings) -> Result<Request> {
            Ok(Request)
        }
    }

    pub enum Input {
        Rows(Box<Splits>),
    }

    impl From<Splits> for Input {
        fn from(splits: Splits) -> Self {
            Input::Rows(Box::new(splits))
        }
    }

    pub struct Report;
    impl Report {
        pub fn to_json(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }

    pub struct Outcome;
    impl Outcome {
        pub fn to_json(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
        pub fn trace(&self) -> &[serde_json::Value] {
            &[]
        }
    }

    fn missing() -> Error {
        Error::Runtime("hypergrad::api is not wired into this build yet".into())
    }

    pub fn grad(_req: &Request, _input: &Input) -> Result<Report> {
        Err(missing())
    }

    pub fn run(
        _req: &Request,
        _input: &Input,
        _sink: &mut dyn FnMut(&serde_json::Value) -> Result<()>,
    ) -> Result<Outcome> {
        Err(missing())
    }

    pub fn info() -> serde_json::Value {
        serde_json::json!({"version": env!("CARGO_PKG_VERSION")})
    }
}
