//! NumPy's `.npy` format: one array, a small text header, then the raw elements.
//!
//! A file is `\x93NUMPY`, a major and a minor version byte, the header's length (u16 little
//! endian in version 1, u32 in versions 2 and 3), and the header: a Python dict literal such
//! as `{'descr': '<f8', 'fortran_order': False, 'shape': (1000, 101), }`. The elements follow,
//! `shape` multiplied out, in C (row-major) order or, when `fortran_order` is true, in Fortran
//! (column-major) order.
//!
//! A dense dataset is a 2-D array of shape (n, 1 + d) whose **first column is the label**, as
//! in a CSV file (SPEC §11): `np.save("train.npy", np.column_stack([y, X]))`. The elements
//! may be f32 or f64 (`<f4`, `<f8`, either byte order) or integers (`i1`…`i8`, `u1`…`u8`,
//! e.g. 8-bit pixels); they become the [`Dataset`]'s f64. The file is memory-mapped, so the
//! bytes are read once, straight from the page cache, into the dataset's rows (in parallel
//! over rows); a file that cannot be mapped (a pipe) or is gzipped (`.npy.gz`) is read whole.
//!
//! A file that is not such an array is refused in one line naming the file: the wrong magic,
//! a version this reader does not know, a header longer than [`MAX_HEADER`] or that does not
//! parse, a structured or unsupported dtype, a shape whose size overflows or that the file's
//! bytes do not hold exactly (truncated, or with bytes left over), NaN or infinite values.

use std::path::Path;

use ndarray::Array2;
use rayon::prelude::*;

use super::Dataset;
use crate::memory::{available_host_bytes, MemoryPlan};
use crate::{Error, Result};

/// The magic string every `.npy` file starts with.
pub const MAGIC: &[u8] = b"\x93NUMPY";
/// The longest header accepted. NumPy writes a few hundred bytes (padded to 64); a header of
/// megabytes is not an array's description but a broken or hostile file.
pub const MAX_HEADER: usize = 1 << 20;

/// A refusal of a binary file: one line, naming the file (the binary formats have no lines).
pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, message.into()),
    }
}

/// The element types this reader converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dtype {
    F4,
    F8,
    I1,
    I2,
    I4,
    I8,
    U1,
    U2,
    U4,
    U8,
    Bool,
    /// `S<n>`: fixed-width byte strings (SciPy's `format` entry of a `.npz`).
    Bytes(usize),
    /// `U<n>`: fixed-width UTF-32 strings (NumPy's `savez(format='csr')`).
    Unicode(usize),
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::I1 | Dtype::U1 | Dtype::Bool => 1,
            Dtype::I2 | Dtype::U2 => 2,
            Dtype::F4 | Dtype::I4 | Dtype::U4 => 4,
            Dtype::F8 | Dtype::I8 | Dtype::U8 => 8,
            Dtype::Bytes(n) => n,
            Dtype::Unicode(n) => 4 * n,
        }
    }

    fn is_numeric(self) -> bool {
        !matches!(self, Dtype::Bytes(_) | Dtype::Unicode(_))
    }

    /// Parses a `descr` string: a byte order (`<`, `>`, `|`, `=`) and a type code.
    fn parse(descr: &str) -> std::result::Result<(Dtype, bool), String> {
        let unsupported = || {
            format!(
                "dtype '{}' is not supported (use float32 or float64; integers and bool are read too)",
                super::text::excerpt(descr)
            )
        };
        let mut chars = descr.chars();
        let order = chars.next().ok_or_else(unsupported)?;
        let (big_endian, code) = match order {
            '<' => (false, chars.as_str()),
            '>' => (true, chars.as_str()),
            '|' => (false, chars.as_str()),
            '=' => (cfg!(target_endian = "big"), chars.as_str()),
            _ => (false, descr),
        };
        let dtype = match code {
            "f4" => Dtype::F4,
            "f8" => Dtype::F8,
            "i1" | "b" => Dtype::I1,
            "i2" => Dtype::I2,
            "i4" => Dtype::I4,
            "i8" => Dtype::I8,
            "u1" | "B" => Dtype::U1,
            "u2" => Dtype::U2,
            "u4" => Dtype::U4,
            "u8" => Dtype::U8,
            "b1" | "?" => Dtype::Bool,
            _ => {
                let width = |s: &str| s.parse::<usize>().ok().filter(|&n| n > 0 && n <= 1024);
                match (code.get(..1), code.get(1..).and_then(width)) {
                    (Some("S"), Some(n)) => Dtype::Bytes(n),
                    (Some("U"), Some(n)) => Dtype::Unicode(n),
                    _ => return Err(unsupported()),
                }
            }
        };
        Ok((dtype, big_endian))
    }
}

/// A parsed header and where the elements start.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Header {
    pub dtype: Dtype,
    pub big_endian: bool,
    pub fortran: bool,
    pub shape: Vec<usize>,
    /// Byte offset of the first element.
    pub data_offset: usize,
}

impl Header {
    /// Number of elements (checked: `None` when the product overflows).
    pub fn len(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b))
    }
}

/// One array inside a byte buffer (a mapped file, or a `.npz` entry): its header, and its
/// elements, whose length has been checked against the shape.
pub(crate) struct NpyArray<'a> {
    pub header: Header,
    pub data: &'a [u8],
}

/// Parses the magic, version and header of `bytes` and checks that the elements that follow
/// fill the rest exactly. Errors are plain messages; the caller names the file.
pub(crate) fn parse(bytes: &[u8]) -> std::result::Result<NpyArray<'_>, String> {
    if !bytes.starts_with(MAGIC) {
        return Err(if bytes.len() < MAGIC.len() && MAGIC.starts_with(bytes) {
            format!("truncated: {} bytes, not a whole .npy header", bytes.len())
        } else {
            "not a .npy file (it does not start with \\x93NUMPY)".into()
        });
    }
    let major = *bytes
        .get(6)
        .ok_or("truncated: the file ends in its version")?;
    let (len_bytes, start) = match major {
        1 => (2, 10),
        2 | 3 => (4, 12),
        v => {
            return Err(format!(
                ".npy format version {v} is not supported (1, 2, 3 are)"
            ))
        }
    };
    let len_field = bytes
        .get(8..8 + len_bytes)
        .ok_or("truncated: the file ends in its header length")?;
    let header_len = len_field
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | b as usize);
    if header_len > MAX_HEADER {
        return Err(format!(
            "the header claims {header_len} bytes, more than the {MAX_HEADER} a .npy header may have"
        ));
    }
    let data_offset = start + header_len;
    let text = bytes.get(start..data_offset).ok_or_else(|| {
        format!(
            "truncated: the header claims {header_len} bytes but the file ends after {}",
            bytes.len().saturating_sub(start)
        )
    })?;
    // Versions 1 and 2 are latin-1, version 3 UTF-8: the dict itself is ASCII either way.
    let text: String = text.iter().map(|&b| b as char).collect();
    let header = parse_dict(&text, data_offset)?;
    let len = header
        .len()
        .and_then(|n| n.checked_mul(header.dtype.size()))
        .ok_or_else(|| format!("the shape {:?} is too large to address", header.shape))?;
    let data = &bytes[data_offset..];
    if data.len() < len {
        return Err(format!(
            "truncated: the shape {:?} of {} needs {len} bytes of data, the file holds {}",
            header.shape,
            descr_name(header.dtype),
            data.len()
        ));
    }
    if data.len() > len {
        return Err(format!(
            "{} bytes follow the array of shape {:?} (a damaged file, or not a .npy file)",
            data.len() - len,
            header.shape
        ));
    }
    Ok(NpyArray { header, data })
}

/// NumPy's name of a dtype, for messages.
fn descr_name(dtype: Dtype) -> String {
    match dtype {
        Dtype::F4 => "float32".into(),
        Dtype::F8 => "float64".into(),
        Dtype::I1 => "int8".into(),
        Dtype::I2 => "int16".into(),
        Dtype::I4 => "int32".into(),
        Dtype::I8 => "int64".into(),
        Dtype::U1 => "uint8".into(),
        Dtype::U2 => "uint16".into(),
        Dtype::U4 => "uint32".into(),
        Dtype::U8 => "uint64".into(),
        Dtype::Bool => "bool".into(),
        Dtype::Bytes(n) => format!("S{n}"),
        Dtype::Unicode(n) => format!("U{n}"),
    }
}

/// A value of the header dict.
#[derive(Debug)]
enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
    /// A `[…]` list (a structured dtype's fields), not read further.
    List,
}

/// Parses `{'descr': …, 'fortran_order': …, 'shape': (…), }` (keys in any order, either
/// quote, Python 2's `L` suffix on integers).
fn parse_dict(text: &str, data_offset: usize) -> std::result::Result<Header, String> {
    let bad = |what: &str| format!("the header is not a .npy header ({what})");
    let mut rest = text.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
    rest = rest.strip_prefix('{').ok_or_else(|| bad("no '{'"))?;
    rest = rest
        .strip_suffix('}')
        .ok_or_else(|| bad("no closing '}'"))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace() || c == ',');
        if rest.is_empty() {
            break;
        }
        let (key, after) = quoted(rest).ok_or_else(|| bad("a key is not a quoted string"))?;
        rest = after
            .trim_start()
            .strip_prefix(':')
            .ok_or_else(|| bad("no ':' after a key"))?
            .trim_start();
        let (value, after) = value(rest).map_err(|m| bad(&m))?;
        rest = after;
        match (key.as_str(), value) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("fortran_order", Value::Bool(b)) => fortran = Some(b),
            ("shape", Value::Tuple(t)) => shape = Some(t),
            ("descr", _) => {
                return Err("a structured dtype (a list of fields) is not supported: save one plain float array".into())
            }
            (k @ ("fortran_order" | "shape"), v) => {
                return Err(bad(&format!("'{k}' is {v:?}")));
            }
            _ => {}
        }
    }
    let descr = descr.ok_or_else(|| bad("no 'descr'"))?;
    let (dtype, big_endian) = Dtype::parse(&descr)?;
    Ok(Header {
        dtype,
        big_endian,
        fortran: fortran.ok_or_else(|| bad("no 'fortran_order'"))?,
        shape: shape.ok_or_else(|| bad("no 'shape'"))?,
        data_offset,
    })
}

/// A `'…'` or `"…"` string at the start of `s`, and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let q = s.chars().next().filter(|&c| c == '\'' || c == '"')?;
    let body = &s[1..];
    let end = body.find(q)?;
    Some((body[..end].to_string(), &body[end + 1..]))
}

/// One dict value at the start of `s`, and what follows it.
fn value(s: &str) -> std::result::Result<(Value, &str), String> {
    if let Some((text, rest)) = quoted(s) {
        return Ok((Value::Str(text), rest));
    }
    if let Some(rest) = s.strip_prefix("True") {
        return Ok((Value::Bool(true), rest));
    }
    if let Some(rest) = s.strip_prefix("False") {
        return Ok((Value::Bool(false), rest));
    }
    if s.starts_with('[') {
        // A structured dtype's list of fields: the caller says so.
        let end = s.rfind(']').ok_or("an unclosed '['")?;
        return Ok((Value::List, &s[end + 1..]));
    }
    let body = s
        .strip_prefix('(')
        .ok_or("a value is not a string, a bool or a tuple")?;
    let end = body.find(')').ok_or("an unclosed '('")?;
    let mut dims = Vec::new();
    for part in body[..end].split(',') {
        let part = part.trim().trim_end_matches(['L', 'l']);
        if part.is_empty() {
            continue;
        }
        let dim = part.parse::<usize>().map_err(|_| {
            format!(
                "the dimension '{}' is not a whole number",
                super::text::excerpt(part)
            )
        })?;
        dims.push(dim);
    }
    Ok((Value::Tuple(dims), &body[end + 1..]))
}

/// Decodes `src` (elements of `dtype`) into `dst`, one f64 per element.
pub(crate) fn decode_f64(dtype: Dtype, big_endian: bool, src: &[u8], dst: &mut [f64]) {
    macro_rules! run {
        ($t:ty, $n:expr) => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact($n)) {
                let b: [u8; $n] = s.try_into().expect("chunks_exact gives whole elements");
                *d = if big_endian {
                    <$t>::from_be_bytes(b)
                } else {
                    <$t>::from_le_bytes(b)
                } as f64;
            }
        };
    }
    match dtype {
        Dtype::F4 => run!(f32, 4),
        Dtype::F8 => run!(f64, 8),
        Dtype::I1 => run!(i8, 1),
        Dtype::I2 => run!(i16, 2),
        Dtype::I4 => run!(i32, 4),
        Dtype::I8 => run!(i64, 8),
        Dtype::U1 => run!(u8, 1),
        Dtype::U2 => run!(u16, 2),
        Dtype::U4 => run!(u32, 4),
        Dtype::U8 => run!(u64, 8),
        Dtype::Bool => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = (s != 0) as u8 as f64;
            }
        }
        Dtype::Bytes(_) | Dtype::Unicode(_) => {}
    }
}

impl NpyArray<'_> {
    /// Every element as an f64, in storage order. Errors: a string dtype, a buffer that
    /// cannot be allocated.
    pub fn to_f64(&self, what: &str) -> std::result::Result<Vec<f64>, String> {
        if !self.header.dtype.is_numeric() {
            return Err(format!(
                "{what} holds strings ({}), not numbers",
                descr_name(self.header.dtype)
            ));
        }
        let n = self.data.len() / self.header.dtype.size();
        let mut out = crate::memory::try_vec(n, 0.0, what).map_err(|e| e.to_string())?;
        decode_f64(
            self.header.dtype,
            self.header.big_endian,
            self.data,
            &mut out,
        );
        Ok(out)
    }

    /// Every element as a non-negative integer index (`indices`, `indptr`, `shape` of a
    /// CSR matrix): integer dtypes only, negative values refused.
    pub fn to_indices(&self, what: &str) -> std::result::Result<Vec<usize>, String> {
        let dtype = self.header.dtype;
        let integer = matches!(
            dtype,
            Dtype::I1
                | Dtype::I2
                | Dtype::I4
                | Dtype::I8
                | Dtype::U1
                | Dtype::U2
                | Dtype::U4
                | Dtype::U8
        );
        if !integer {
            return Err(format!(
                "{what} has dtype {}, not an integer type",
                descr_name(dtype)
            ));
        }
        let size = dtype.size();
        let signed = matches!(dtype, Dtype::I1 | Dtype::I2 | Dtype::I4 | Dtype::I8);
        let mut out = crate::memory::try_vec(self.data.len() / size, 0usize, what)
            .map_err(|e| e.to_string())?;
        for (k, (o, s)) in out.iter_mut().zip(self.data.chunks_exact(size)).enumerate() {
            let mut b = [0u8; 8];
            if self.header.big_endian {
                b[8 - size..].copy_from_slice(s);
                b.reverse();
            } else {
                b[..size].copy_from_slice(s);
            }
            // Sign-extend the narrower signed types.
            if signed && b[size - 1] & 0x80 != 0 {
                return Err(format!("{what} has the negative value at position {k}"));
            }
            let v = u64::from_le_bytes(b);
            *o = usize::try_from(v).map_err(|_| format!("{what}: {v} is too large"))?;
        }
        Ok(out)
    }

    /// The text of a 0-d or 1-element string array (a `.npz`'s `format`).
    pub fn to_text(&self) -> Option<String> {
        match self.header.dtype {
            Dtype::Bytes(_) => Some(
                self.data
                    .iter()
                    .take_while(|&&b| b != 0)
                    .map(|&b| b as char)
                    .collect(),
            ),
            Dtype::Unicode(_) => Some(
                self.data
                    .chunks_exact(4)
                    .map(|c| {
                        let b: [u8; 4] = c.try_into().expect("4 bytes");
                        if self.header.big_endian {
                            u32::from_be_bytes(b)
                        } else {
                            u32::from_le_bytes(b)
                        }
                    })
                    .take_while(|&u| u != 0)
                    .map(|u| char::from_u32(u).unwrap_or('\u{fffd}'))
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// The bytes of a file: memory-mapped where the file allows it, else read whole (and
/// gunzipped for `.gz` names or gzip content).
pub(crate) enum FileBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

impl FileBytes {
    pub fn open(path: &Path) -> Result<FileBytes> {
        let io_err = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let gz_name = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().to_ascii_lowercase().ends_with(".gz"));
        if !gz_name {
            let file = std::fs::File::open(path).map_err(io_err)?;
            let meta = file.metadata().map_err(io_err)?;
            if meta.is_file() && meta.len() > 0 {
                // SAFETY: the map is read-only and lives only while the file is read; a file
                // truncated or rewritten by another process meanwhile is outside what any
                // reader can defend against (the same holds for NumPy's mmap_mode).
                // `populate` faults the pages in with one call instead of one fault per page.
                if let Ok(map) = unsafe { memmap2::MmapOptions::new().populate().map(&file) } {
                    if !map.starts_with(&[0x1f, 0x8b]) {
                        return Ok(FileBytes::Mapped(map));
                    }
                }
            }
        }
        super::text::read_file_bytes(path).map(FileBytes::Owned)
    }
}

/// Reads a dense dataset from a `.npy` file: a 2-D array (n, 1 + d), label first (see the
/// module's documentation). The dataset's name is `path` as text.
pub fn read_npy(path: &Path) -> Result<Dataset> {
    let bytes = FileBytes::open(path)?;
    dataset_from_npy(&bytes, path)
}

/// [`read_npy`] of bytes already in memory (a sniffed file).
pub(crate) fn dataset_from_npy(bytes: &[u8], path: &Path) -> Result<Dataset> {
    let array = parse(bytes).map_err(|m| invalid(path, m))?;
    let h = &array.header;
    let (n, cols) = match h.shape[..] {
        [n, c] => (n, c),
        _ => {
            return Err(invalid(
                path,
                format!(
                    "the array has shape {:?}; a dataset is a 2-D array (rows, 1 + features) with the label in the first column",
                    h.shape
                ),
            ))
        }
    };
    if !h.dtype.is_numeric() {
        return Err(invalid(
            path,
            format!(
                "the array holds strings ({}), not numbers",
                descr_name(h.dtype)
            ),
        ));
    }
    if n == 0 {
        return Err(invalid(path, "the array has no rows"));
    }
    if cols < 2 {
        return Err(invalid(
            path,
            format!("the array has {cols} column(s); it needs the label and at least one feature"),
        ));
    }
    let d = cols - 1;
    let name = path.display().to_string();
    let mut plan = MemoryPlan::new();
    plan.add(
        format!("the rows of {name}"),
        1,
        (n * d) as u64,
        8,
        "a smaller file",
    );
    plan.check(available_host_bytes(), "host")
        .map_err(|e| invalid(path, e.to_string()))?;
    let mut values: Vec<f64> = Vec::new();
    crate::memory::reserve(&mut values, n * d, "the rows")
        .map_err(|e| invalid(path, e.to_string()))?;
    let mut y =
        crate::memory::try_vec(n, 0.0, "the labels").map_err(|e| invalid(path, e.to_string()))?;
    let size = h.dtype.size();
    let (dtype, big) = (h.dtype, h.big_endian);
    // The rows are written once, straight from the file's bytes into uninitialised memory
    // (zeroing 1 GB first would be a second pass over it); every entry is written below
    // before `set_len`, as the chunks cover the n·d entries exactly.
    let xs = &mut values.spare_capacity_mut()[..n * d];
    // The first (row, column) that is not finite, found while the row is in cache.
    let first_bad = |i: usize, label: f64, row: &[f64]| -> Option<(usize, usize)> {
        if !label.is_finite() {
            return Some((i, 0));
        }
        row.iter().position(|v| !v.is_finite()).map(|j| (i, j + 1))
    };
    let bad = if !h.fortran {
        // Row i is the label then its d features, contiguous: decode whole rows in parallel.
        let row_bytes = cols * size;
        xs.par_chunks_mut(d)
            .zip(y.par_iter_mut())
            .zip(array.data.par_chunks(row_bytes))
            .enumerate()
            .with_min_len(256)
            .map_init(
                || vec![0.0; d],
                |buf, (i, ((row, label), src))| {
                    decode_f64(dtype, big, &src[..size], std::slice::from_mut(label));
                    decode_f64(dtype, big, &src[size..], buf);
                    for (o, &v) in row.iter_mut().zip(buf.iter()) {
                        o.write(v);
                    }
                    first_bad(i, *label, buf)
                },
            )
            .flatten()
            .min()
    } else {
        // Column j is contiguous: the labels are column 0; the features are decoded column by
        // column into blocks of rows (parallel over blocks), each block's writes staying in
        // a few rows of x.
        let col_bytes = n * size;
        decode_f64(dtype, big, &array.data[..col_bytes], &mut y);
        const BLOCK: usize = 4096;
        let y = &y;
        xs.par_chunks_mut(BLOCK * d)
            .enumerate()
            .map(|(b, rows)| {
                let r0 = b * BLOCK;
                let m = rows.len() / d;
                let mut column = vec![0.0; m];
                let mut bad: Option<(usize, usize)> = None;
                for j in 0..d {
                    let start = (j + 1) * col_bytes + r0 * size;
                    decode_f64(
                        dtype,
                        big,
                        &array.data[start..start + m * size],
                        &mut column,
                    );
                    for (i, &v) in column.iter().enumerate() {
                        rows[i * d + j].write(v);
                        let at = (r0 + i, j + 1);
                        if !v.is_finite() && bad.is_none_or(|b| at < b) {
                            bad = Some(at);
                        }
                    }
                }
                (r0..r0 + m)
                    .find(|&i| !y[i].is_finite())
                    .map(|i| (i, 0))
                    .into_iter()
                    .chain(bad)
                    .min()
            })
            .flatten()
            .min()
    };
    // SAFETY: both branches wrote every one of the n·d entries (the chunks tile the slice).
    unsafe { values.set_len(n * d) };
    if let Some((i, j)) = bad {
        let what = if j == 0 {
            format!("the label at row {}", i + 1)
        } else {
            format!("the value at row {}, column {}", i + 1, j + 1)
        };
        let v = if j == 0 { y[i] } else { values[i * d + j - 1] };
        return Err(invalid(
            path,
            format!("{what} is {v} (NaN and infinity are not allowed)"),
        ));
    }
    let x = Array2::from_shape_vec((n, d), values)
        .map_err(|e| invalid(path, format!("internal shape error: {e}")))?;
    Ok(Dataset { x, y, name })
}

/// The header of an `n_rows × n_cols` array of `descr` (C order), padded with spaces so that
/// the elements start at a multiple of 64 bytes, as NumPy writes it (version 1, or 2 when the
/// header does not fit version 1's 16-bit length).
pub(crate) fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    let (version, prefix) = if dict.len() + 11 < 65_000 {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    let header_len = total - prefix;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header_len as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header_len as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// The element precision of a written `.npy` file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    F32,
    F64,
}

impl NpyDtype {
    fn descr(self) -> &'static str {
        match self {
            NpyDtype::F32 => "<f4",
            NpyDtype::F64 => "<f8",
        }
    }
}

/// Writes `values` (row-major, `shape`'s product long) as a `.npy` array of `dtype` to `out`.
pub(crate) fn write_array(
    out: &mut impl std::io::Write,
    shape: &[usize],
    dtype: NpyDtype,
    mut values: impl Iterator<Item = f64>,
) -> std::io::Result<()> {
    out.write_all(&header_bytes(dtype.descr(), shape))?;
    match dtype {
        NpyDtype::F64 => values.try_for_each(|v| out.write_all(&v.to_le_bytes())),
        NpyDtype::F32 => values.try_for_each(|v| out.write_all(&(v as f32).to_le_bytes())),
    }
}

/// The bytes of a 1-D integer array (`<i8`), for a `.npz`'s index arrays.
pub(crate) fn index_array(values: &[usize]) -> Vec<u8> {
    let mut out = header_bytes("<i8", &[values.len()]);
    out.reserve(values.len() * 8);
    for &v in values {
        out.extend_from_slice(&(v as i64).to_le_bytes());
    }
    out
}

/// Writes a dense dataset as `.npy`: shape (n, 1 + d), the label first, then the features.
pub fn write_npy(ds: &Dataset, path: &Path, dtype: NpyDtype) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let values =
        ds.x.rows()
            .into_iter()
            .zip(&ds.y)
            .flat_map(|(row, &label)| std::iter::once(label).chain(row.into_iter().copied()));
    write_array(&mut out, &[ds.n(), ds.d() + 1], dtype, values).map_err(io)?;
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

/// Writes a vector as a 1-D f64 `.npy` file (`run --theta-out`).
pub fn write_vector(values: &[f64], path: &Path) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    write_array(
        &mut out,
        &[values.len()],
        NpyDtype::F64,
        values.iter().copied(),
    )
    .map_err(io)?;
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

/// Reads a 1-D (or single-row/column) numeric `.npy` file as a vector of f64.
pub fn read_vector(path: &Path) -> Result<Vec<f64>> {
    let bytes = FileBytes::open(path)?;
    let array = parse(&bytes).map_err(|m| invalid(path, m))?;
    let v = array.to_f64("the vector").map_err(|m| invalid(path, m))?;
    if let Some(k) = v.iter().position(|x| !x.is_finite()) {
        return Err(invalid(path, format!("entry {k} is {}", v[k])));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hg-npy-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// An array as NumPy writes it, with the elements given as raw bytes.
    fn npy(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let dict = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}",
            if fortran { "True" } else { "False" }
        );
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(dict.len() as u16 + 1).to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(data);
        out
    }

    /// `np.save` of `np.zeros(1, dtype=[('a', '<f8')])`.
    fn structured() -> Vec<u8> {
        let dict = "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,), }\n";
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out.extend_from_slice(&[0; 8]);
        out
    }

    #[test]
    fn c_and_fortran_order_and_dtypes_give_the_same_dataset() {
        // Rows (label, f1, f2): (0, 1.5, -2), (1, 3, 4.25), (2, 0, 8).
        let rows = [[0.0, 1.5, -2.0], [1.0, 3.0, 4.25], [2.0, 0.0, 8.0]];
        let c: Vec<u8> = rows
            .iter()
            .flatten()
            .flat_map(|v: &f64| v.to_le_bytes())
            .collect();
        let f: Vec<u8> = (0..3)
            .flat_map(|j| rows.iter().map(move |r| r[j]))
            .flat_map(|v: f64| (v as f32).to_be_bytes())
            .collect();
        let a = read_npy(&file("c.npy", &npy("<f8", false, "(3, 3)", &c))).unwrap();
        let b = read_npy(&file("f.npy", &npy(">f4", true, "(3, 3)", &f))).unwrap();
        assert_eq!(a.y, vec![0.0, 1.0, 2.0]);
        assert_eq!(a.x.as_slice().unwrap(), &[1.5, -2.0, 3.0, 4.25, 0.0, 8.0]);
        assert_eq!(a.x, b.x);
        assert_eq!(a.y, b.y);
        let u8s = [0u8, 7, 255, 1, 0, 3];
        let u = read_npy(&file("u.npy", &npy("|u1", false, "(2L, 3L)", &u8s))).unwrap();
        assert_eq!(u.x.as_slice().unwrap(), &[7.0, 255.0, 0.0, 3.0]);
        assert_eq!(u.y, vec![0.0, 1.0]);
    }

    #[test]
    fn the_writer_round_trips_and_pads_to_64() {
        let ds = Dataset::new(
            ndarray::array![[0.1, -2.0], [1e300, 5e-324]],
            vec![1.0, -1.0],
            "t",
        )
        .unwrap();
        let p = file("w.npy", b"");
        write_npy(&ds, &p, NpyDtype::F64).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(parse(&bytes).unwrap().header.data_offset % 64, 0);
        let back = read_npy(&p).unwrap();
        assert_eq!(back.x, ds.x);
        assert_eq!(back.y, ds.y);
    }

    #[test]
    fn broken_files_are_refused_in_one_line_naming_the_file() {
        let good = npy("<f8", false, "(1, 2)", &[0u8; 16]);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("magic.npy", b"PK\x03\x04....".to_vec(), "not a .npy file"),
            ("trunc.npy", good[..good.len() - 3].to_vec(), "truncated"),
            (
                "extra.npy",
                [good.clone(), vec![0; 8]].concat(),
                "bytes follow",
            ),
            (
                "dtype.npy",
                npy("<c16", false, "(1, 2)", &[0; 32]),
                "dtype '<c16'",
            ),
            ("struct.npy", structured(), "structured dtype"),
            (
                "overflow.npy",
                npy("<f8", false, "(4294967296, 4294967296)", &[]),
                "too large",
            ),
            (
                "shape1.npy",
                npy("<f8", false, "(2,)", &[0; 16]),
                "2-D array",
            ),
            (
                "nan.npy",
                npy(
                    "<f8",
                    false,
                    "(1, 2)",
                    &[0, 0, 0, 0, 0, 0, 0xf8, 0x7f, 0, 0, 0, 0, 0, 0, 0, 0],
                ),
                "label at row 1 is NaN",
            ),
            ("version.npy", [MAGIC, &[9, 0, 0, 0]].concat(), "version 9"),
        ];
        for (name, bytes, needle) in cases {
            let p = file(name, &bytes);
            let m = read_npy(&p).unwrap_err().to_string();
            assert!(
                m.contains(name) && m.contains(needle) && !m.contains('\n'),
                "{name}: {m}"
            );
        }
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[2, 0]);
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        let m = read_npy(&file("huge.npy", &huge)).unwrap_err().to_string();
        assert!(m.contains("more than the 1048576"), "{m}");
    }
}
