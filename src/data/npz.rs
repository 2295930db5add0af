//! SciPy's sparse `.npz`: a ZIP archive of `.npy` arrays holding a CSR matrix, with the labels
//! beside it (SPEC §11).
//!
//! `scipy.sparse.save_npz` writes `data`, `indices`, `indptr`, `shape` and `format` (`b'csr'`);
//! hypergrad also needs the labels, a 1-D array `y` of n numbers, so a training file is
//! written with NumPy directly:
//!
//! ```python
//! np.savez("train.npz", data=X.data, indices=X.indices, indptr=X.indptr,
//!          shape=X.shape, format="csr", y=y)
//! ```
//!
//! (`np.savez_compressed` works too: entries may be stored or deflated.) The ℓ1 problems keep
//! the matrix sparse; the smooth problems expand it to dense rows, as they do a LIBSVM file.
//!
//! The ZIP reader here reads what NumPy and Python's `zipfile` write: the central directory
//! (ZIP64 where sizes or offsets pass 4 GiB), stored or deflated entries, each checked
//! against its CRC-32. Anything else (another compression, encryption, a damaged archive) is
//! refused in one line naming the file.

use std::io::{Read, Write};
use std::path::Path;

use super::npy::{self, invalid, FileBytes};
use super::sparse::{CsrMatrix, SparseDataset};
use crate::{Error, Result};

/// The magic of a ZIP local file header (the first bytes of a `.npz`).
pub const MAGIC: &[u8] = b"PK\x03\x04";

/// Entries an archive may list: a CSR file has six; a directory of thousands is not one.
const MAX_ENTRIES: usize = 4096;

/// One entry of the archive: its name and its bytes (borrowed when stored, inflated when
/// deflated).
struct Entry<'a> {
    name: String,
    data: std::borrow::Cow<'a, [u8]>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The entries of the ZIP archive `b`. Errors are plain messages; the caller names the file.
fn read_zip(b: &[u8]) -> std::result::Result<Vec<Entry<'_>>, String> {
    let damaged = |what: &str| format!("not a readable .npz (ZIP) archive: {what}");
    // The end-of-central-directory record: 22 bytes plus a comment of up to 65535.
    let lowest = b.len().saturating_sub(22 + 65_535);
    let eocd = (lowest..=b.len().saturating_sub(22))
        .rev()
        .find(|&i| b.get(i..i + 4) == Some(b"PK\x05\x06"))
        .ok_or_else(|| damaged("no end-of-central-directory record (truncated?)"))?;
    let mut count = u16_at(b, eocd + 10).ok_or_else(|| damaged("short record"))? as u64;
    let mut cd_size = u32_at(b, eocd + 12).ok_or_else(|| damaged("short record"))? as u64;
    let mut cd_offset = u32_at(b, eocd + 16).ok_or_else(|| damaged("short record"))? as u64;
    if count == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        // ZIP64: a locator 20 bytes before points at the ZIP64 end record.
        let loc = eocd
            .checked_sub(20)
            .filter(|&l| b.get(l..l + 4) == Some(b"PK\x06\x07"))
            .ok_or_else(|| damaged("no ZIP64 locator"))?;
        let rec = u64_at(b, loc + 8).ok_or_else(|| damaged("short ZIP64 locator"))? as usize;
        if b.get(rec..rec.saturating_add(4)) != Some(b"PK\x06\x06") {
            return Err(damaged("no ZIP64 end record where the locator points"));
        }
        count = u64_at(b, rec + 32).ok_or_else(|| damaged("short ZIP64 record"))?;
        cd_size = u64_at(b, rec + 40).ok_or_else(|| damaged("short ZIP64 record"))?;
        cd_offset = u64_at(b, rec + 48).ok_or_else(|| damaged("short ZIP64 record"))?;
    }
    if count as usize > MAX_ENTRIES {
        return Err(damaged(&format!("{count} entries (a CSR .npz has six)")));
    }
    let cd_end = cd_offset
        .checked_add(cd_size)
        .filter(|&e| e <= b.len() as u64)
        .ok_or_else(|| damaged("the central directory lies outside the file"))?;
    let mut at = cd_offset as usize;
    let mut entries = Vec::new();
    for _ in 0..count {
        if at + 46 > cd_end as usize || b.get(at..at + 4) != Some(b"PK\x01\x02") {
            return Err(damaged("a central directory entry is missing or damaged"));
        }
        let flags = u16_at(b, at + 8).unwrap_or(0);
        let method = u16_at(b, at + 10).unwrap_or(0);
        let crc = u32_at(b, at + 16).unwrap_or(0);
        let mut comp = u32_at(b, at + 20).unwrap_or(0) as u64;
        let mut size = u32_at(b, at + 24).unwrap_or(0) as u64;
        let name_len = u16_at(b, at + 28).unwrap_or(0) as usize;
        let extra_len = u16_at(b, at + 30).unwrap_or(0) as usize;
        let comment_len = u16_at(b, at + 32).unwrap_or(0) as usize;
        let mut offset = u32_at(b, at + 42).unwrap_or(0) as u64;
        let name_bytes = b
            .get(at + 46..at + 46 + name_len)
            .ok_or_else(|| damaged("an entry's name lies outside the file"))?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let extra = b
            .get(at + 46 + name_len..at + 46 + name_len + extra_len)
            .ok_or_else(|| damaged("an entry's extra field lies outside the file"))?;
        // The ZIP64 extra field (id 1) holds, in this order, the sizes and offset whose
        // 32-bit fields are 0xffffffff.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = u16_at(extra, e).unwrap_or(0);
            let len = u16_at(extra, e + 2).unwrap_or(0) as usize;
            let body = extra.get(e + 4..e + 4 + len).unwrap_or(&[]);
            if id == 1 {
                let mut k = 0;
                let mut next = |v: &mut u64| {
                    if *v == 0xffff_ffff {
                        if let Some(x) = u64_at(body, k) {
                            *v = x;
                        }
                        k += 8;
                    }
                };
                next(&mut size);
                next(&mut comp);
                next(&mut offset);
            }
            e += 4 + len;
        }
        at += 46 + name_len + extra_len + comment_len;
        if flags & 1 != 0 {
            return Err(damaged(&format!("entry '{}' is encrypted", excerpt(&name))));
        }
        let local = usize::try_from(offset).unwrap_or(usize::MAX);
        if local >= b.len() || b.get(local..local + 4) != Some(b"PK\x03\x04") {
            return Err(damaged(&format!(
                "entry '{}' has no local header where the directory points",
                excerpt(&name)
            )));
        }
        let lname = u16_at(b, local + 26).unwrap_or(0) as usize;
        let lextra = u16_at(b, local + 28).unwrap_or(0) as usize;
        let start = local + 30 + lname + lextra;
        let raw = (start as u64)
            .checked_add(comp)
            .filter(|&end| end <= b.len() as u64)
            .map(|end| &b[start..end as usize])
            .ok_or_else(|| damaged(&format!("entry '{}' is truncated", excerpt(&name))))?;
        let data: std::borrow::Cow<'_, [u8]> = match method {
            0 => {
                if comp != size {
                    return Err(damaged(&format!(
                        "stored entry '{}' has sizes {comp} and {size}",
                        excerpt(&name)
                    )));
                }
                raw.into()
            }
            8 => {
                // Deflate cannot expand more than about 1032:1: a larger claim is a lie, and
                // what is inflated is capped at the claim (plus one byte to see the excess).
                if size > comp.saturating_mul(1100).saturating_add(1 << 16) {
                    return Err(damaged(&format!(
                        "entry '{}' claims {size} bytes from {comp} compressed",
                        excerpt(&name)
                    )));
                }
                let mut out = Vec::new();
                out.try_reserve_exact(size as usize)
                    .map_err(|_| damaged("an entry too large for memory"))?;
                flate2::read::DeflateDecoder::new(raw)
                    .take(size + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| damaged(&format!("entry '{}': {e}", excerpt(&name))))?;
                if out.len() as u64 != size {
                    return Err(damaged(&format!(
                        "entry '{}' inflates to {} bytes, not {size}",
                        excerpt(&name),
                        out.len()
                    )));
                }
                out.into()
            }
            m => {
                return Err(damaged(&format!(
                    "entry '{}' uses compression method {m} (stored and deflate are read)",
                    excerpt(&name)
                )))
            }
        };
        if crc32fast::hash(&data) != crc {
            return Err(damaged(&format!(
                "entry '{}' fails its CRC-32 check",
                excerpt(&name)
            )));
        }
        entries.push(Entry { name, data });
    }
    Ok(entries)
}

fn excerpt(s: &str) -> String {
    super::text::excerpt(s)
}

/// Reads a sparse dataset from a `.npz` file (see the module's documentation). The dataset's
/// name is `path` as text.
pub fn read_npz(path: &Path) -> Result<SparseDataset> {
    let bytes = FileBytes::open(path)?;
    sparse_from_npz(&bytes, path)
}

/// [`read_npz`] of bytes already in memory (a sniffed file).
pub(crate) fn sparse_from_npz(bytes: &[u8], path: &Path) -> Result<SparseDataset> {
    let bad = |m: String| invalid(path, m);
    let entries = read_zip(bytes).map_err(bad)?;
    let find = |key: &str| -> Result<npy::NpyArray<'_>> {
        let file = format!("{key}.npy");
        let entry = entries
            .iter()
            .find(|e| e.name == file || e.name == key)
            .ok_or_else(|| {
                let names: Vec<String> = entries.iter().map(|e| excerpt(&e.name)).collect();
                bad(format!(
                    "no array '{key}' (it holds [{}]); a sparse dataset is a CSR matrix (data, indices, indptr, shape, format) and its labels y, see `hypergrad data convert --help`",
                    names.join(", ")
                ))
            })?;
        npy::parse(&entry.data).map_err(|m| bad(format!("array '{key}': {m}")))
    };
    if let Ok(format) = find("format") {
        let text = format.to_text().unwrap_or_default();
        if text != "csr" {
            return Err(bad(format!(
                "the matrix is stored as '{}'; convert it with X.tocsr() (only CSR is read)",
                excerpt(&text)
            )));
        }
    }
    let shape = find("shape")?.to_indices("shape").map_err(bad)?;
    let [n, d] = shape[..] else {
        return Err(bad(format!("shape has {} entries, not 2", shape.len())));
    };
    let indptr = find("indptr")?.to_indices("indptr").map_err(bad)?;
    let indices = find("indices")?.to_indices("indices").map_err(bad)?;
    let values = find("data")?.to_f64("data").map_err(bad)?;
    let y = find("y")?.to_f64("y").map_err(bad)?;
    if n == 0 {
        return Err(bad("the matrix has no rows".into()));
    }
    if d == 0 {
        return Err(bad("the matrix has no columns (features)".into()));
    }
    let limit = super::libsvm::size_limit(bytes.len());
    if d > limit {
        return Err(bad(format!(
            "shape claims {d} features, more than a file of {} bytes can justify (at most {limit}: 2^24, or 256 per byte, as for LIBSVM)",
            bytes.len()
        )));
    }
    if y.len() != n {
        return Err(bad(format!("y has {} labels for {n} rows", y.len())));
    }
    if let Some(i) = y.iter().position(|v| !v.is_finite()) {
        return Err(bad(format!("the label at row {} is {}", i + 1, y[i])));
    }
    let x = CsrMatrix::from_parts(n, d, indptr, indices, values).map_err(|e| {
        bad(match e {
            Error::Dimension(m) | Error::Numerical(m) => m,
            other => other.to_string(),
        })
    })?;
    Ok(SparseDataset {
        x,
        y,
        name: path.display().to_string(),
    })
}

/// Appends one stored (uncompressed) entry to a ZIP being written, returning its central
/// directory record.
fn stored_entry(
    out: &mut impl Write,
    offset: u64,
    name: &str,
    data: &[u8],
) -> std::io::Result<Vec<u8>> {
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an array of 4 GiB or more: this writer makes plain (not ZIP64) archives",
        )
    };
    let size = u32::try_from(data.len())
        .ok()
        .filter(|&s| s < u32::MAX)
        .ok_or_else(too_big)?;
    let offset = u32::try_from(offset)
        .ok()
        .filter(|&o| o < u32::MAX)
        .ok_or_else(too_big)?;
    let crc = crc32fast::hash(data);
    let name_len = name.len() as u16;
    // Version 2.0, no flags, stored, no time (1980-01-01), then CRC and sizes.
    let common = |v: &mut Vec<u8>| {
        v.extend_from_slice(&20u16.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&0x21u16.to_le_bytes());
        v.extend_from_slice(&crc.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&name_len.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
    };
    let mut local = b"PK\x03\x04".to_vec();
    common(&mut local);
    local.extend_from_slice(name.as_bytes());
    out.write_all(&local)?;
    out.write_all(data)?;
    let mut central = b"PK\x01\x02".to_vec();
    central.extend_from_slice(&20u16.to_le_bytes());
    common(&mut central);
    central.extend_from_slice(&[0; 10]); // comment length, disk, internal and external attributes
    central.extend_from_slice(&offset.to_le_bytes());
    central.extend_from_slice(name.as_bytes());
    Ok(central)
}

/// Writes a sparse dataset as a `.npz` that NumPy and SciPy read (`np.load`,
/// `scipy.sparse.load_npz`): the CSR arrays (`data` f64, `indices` and `indptr` int64,
/// `shape`, `format` `b'csr'`) and `y`, stored uncompressed so that the file maps straight
/// into memory.
pub fn write_npz(ds: &SparseDataset, path: &Path) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let x = &ds.x;
    let mut data = Vec::new();
    npy::write_array(
        &mut data,
        &[x.nnz()],
        npy::NpyDtype::F64,
        x.values.iter().copied(),
    )
    .map_err(io)?;
    let mut y = Vec::new();
    npy::write_array(
        &mut y,
        &[ds.y.len()],
        npy::NpyDtype::F64,
        ds.y.iter().copied(),
    )
    .map_err(io)?;
    let mut format = npy::header_bytes("|S3", &[]);
    format.extend_from_slice(b"csr");
    let arrays: [(&str, Vec<u8>); 6] = [
        ("data.npy", data),
        ("indices.npy", npy::index_array(&x.indices)),
        ("indptr.npy", npy::index_array(&x.indptr)),
        ("shape.npy", npy::index_array(&[x.n, x.d])),
        ("format.npy", format),
        ("y.npy", y),
    ];
    let file = std::fs::File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut directory = Vec::new();
    for (name, bytes) in &arrays {
        directory.extend(stored_entry(&mut out, offset, name, bytes).map_err(io)?);
        offset += 30 + name.len() as u64 + bytes.len() as u64;
    }
    let mut end = b"PK\x05\x06".to_vec();
    end.extend_from_slice(&[0; 4]); // this disk, the directory's disk
    end.extend_from_slice(&(arrays.len() as u16).to_le_bytes());
    end.extend_from_slice(&(arrays.len() as u16).to_le_bytes());
    end.extend_from_slice(&(directory.len() as u32).to_le_bytes());
    end.extend_from_slice(&(offset as u32).to_le_bytes());
    end.extend_from_slice(&0u16.to_le_bytes());
    out.write_all(&directory).map_err(io)?;
    out.write_all(&end).map_err(io)?;
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SparseDataset {
        SparseDataset {
            x: CsrMatrix::from_parts(
                3,
                5,
                vec![0, 2, 2, 4],
                vec![0, 4, 1, 3],
                vec![1.5, -2.0, 3.0, 1e-300],
            )
            .unwrap(),
            y: vec![1.0, -1.0, 1.0],
            name: "s".into(),
        }
    }

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("hg-npz-unit-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn written_archives_read_back_exactly() {
        let p = dir().join("s.npz");
        write_npz(&sample(), &p).unwrap();
        let back = read_npz(&p).unwrap();
        assert_eq!(back.x, sample().x);
        assert_eq!(back.y, sample().y);
    }

    /// A deflated archive (as `np.savez_compressed` writes) reads the same as a stored one.
    #[test]
    fn deflated_entries_are_inflated_and_checked() {
        let p = dir().join("stored.npz");
        write_npz(&sample(), &p).unwrap();
        let stored = std::fs::read(&p).unwrap();
        let entries = read_zip(&stored).unwrap();
        // Rebuild the archive with every entry deflated.
        let mut out = Vec::new();
        let mut directory = Vec::new();
        for e in &entries {
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&e.data).unwrap();
            let comp = enc.finish().unwrap();
            let offset = out.len() as u32;
            let mut head = Vec::new();
            head.extend_from_slice(&20u16.to_le_bytes());
            head.extend_from_slice(&0u16.to_le_bytes());
            head.extend_from_slice(&8u16.to_le_bytes());
            head.extend_from_slice(&[0; 4]);
            head.extend_from_slice(&crc32fast::hash(&e.data).to_le_bytes());
            head.extend_from_slice(&(comp.len() as u32).to_le_bytes());
            head.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            head.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            head.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(b"PK\x03\x04");
            out.extend_from_slice(&head);
            out.extend_from_slice(e.name.as_bytes());
            out.extend_from_slice(&comp);
            directory.extend_from_slice(b"PK\x01\x02");
            directory.extend_from_slice(&20u16.to_le_bytes());
            directory.extend_from_slice(&head);
            directory.extend_from_slice(&[0; 10]);
            directory.extend_from_slice(&offset.to_le_bytes());
            directory.extend_from_slice(e.name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&directory);
        out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        out.extend_from_slice(&(directory.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        let q = dir().join("deflated.npz");
        std::fs::write(&q, &out).unwrap();
        let back = read_npz(&q).unwrap();
        assert_eq!(back.x, sample().x);
        // One flipped bit in the compressed bytes fails the inflate or the CRC.
        let mut broken = out.clone();
        broken[60] ^= 0x10;
        std::fs::write(&q, &broken).unwrap();
        let m = read_npz(&q).unwrap_err().to_string();
        assert!(m.contains("deflated.npz") && !m.contains('\n'), "{m}");
    }

    #[test]
    fn broken_archives_are_refused_in_one_line_naming_the_file() {
        let p = dir().join("b.npz");
        write_npz(&sample(), &p).unwrap();
        let good = std::fs::read(&p).unwrap();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "trunc.npz",
                good[..good.len() / 2].to_vec(),
                "end-of-central-directory",
            ),
            (
                "crc.npz",
                {
                    let mut b = good.clone();
                    b[100] ^= 1;
                    b
                },
                "CRC-32",
            ),
            ("empty.npz", Vec::new(), "end-of-central-directory"),
        ];
        for (name, bytes, needle) in cases {
            let q = dir().join(name);
            std::fs::write(&q, bytes).unwrap();
            let m = read_npz(&q).unwrap_err().to_string();
            assert!(
                m.contains(name) && m.contains(needle) && !m.contains('\n'),
                "{name}: {m}"
            );
        }
    }
}
