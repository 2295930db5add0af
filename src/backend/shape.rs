//! Shape checks shared by every backend, so that both report a mismatch in the same words.

use crate::error::{Error, Result};

/// `got == want`, or a dimension error naming `what`.
pub(crate) fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::Dimension(format!(
            "{what} has {got} entries, expected {want}"
        )))
    }
}

/// The length of each of `parts` equal parts of `total` entries (rows of a row-major matrix,
/// vectors of a batch): an error if `parts` is 0 or does not divide `total`.
pub(crate) fn per_part(what: &str, total: usize, parts: usize) -> Result<usize> {
    if parts == 0 || total % parts != 0 {
        return Err(Error::Dimension(format!(
            "{what}: {total} entries do not split into {parts} equal parts"
        )));
    }
    Ok(total / parts)
}

/// The side of a square row-major matrix of `len` entries.
pub(crate) fn square_side(what: &str, len: usize) -> Result<usize> {
    let side = (len as f64).sqrt().round() as usize;
    if side * side != len {
        return Err(Error::Dimension(format!(
            "{what}: {len} entries do not form a square matrix"
        )));
    }
    Ok(side)
}

/// The operand lengths of `C ← op(A) op(B)` with `op(A)` m×k and `op(B)` k×n.
pub(crate) fn check_gemm(
    (m, n, k): (usize, usize, usize),
    a: usize,
    b: usize,
    c: usize,
) -> Result<()> {
    check_len("gemm A", a, m * k)?;
    check_len("gemm B", b, k * n)?;
    check_len("gemm C", c, m * n)
}
