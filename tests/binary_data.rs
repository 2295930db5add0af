//! Binary inputs (issue 24 item 2): `.npy` and `.npz` files written by NumPy and SciPy
//! (`tests/fixtures/numpy/`, made with NumPy 2.4 / SciPy 1.17) read to exactly the numbers of
//! their text twins; `hypergrad data convert` round-trips CSV and LIBSVM; a run on the binary
//! file is the run on the text file, bit for bit; broken binary files are refused in one line.

mod cli_common;

use std::path::{Path, PathBuf};

use cli_common::{assert_one_line_error, hypergrad, json_of};
use hypergrad::data::sparse::load_sparse;
use hypergrad::data::{load, load_all};

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/numpy")
        .join(name)
        .display()
        .to_string()
}

fn scratch(name: &str) -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("binary-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// NumPy's C-order f64 array is its CSV (written with 17 digits) exactly; its Fortran-order
/// big-or-little f32 copy is the CSV of the f32-rounded values exactly.
#[test]
fn numpy_arrays_read_as_their_csv_twins() {
    let csv = load(&fixture("dense.csv")).unwrap();
    let c = load(&fixture("dense_c_f64.npy")).unwrap();
    assert_eq!(c.x, csv.x);
    assert_eq!(c.y, csv.y);
    let csv32 = load(&fixture("dense_f32.csv")).unwrap();
    let f = load(&fixture("dense_f_f32.npy")).unwrap();
    assert_eq!(f.x, csv32.x);
    assert_eq!(f.y, csv32.y);
    assert_ne!(f.x, c.x, "the f32 copy is rounded");
}

/// `np.savez_compressed` (deflated, ZIP64 local headers, int32 indices) is its LIBSVM twin:
/// sparse for the ℓ1 problems, dense for the others.
#[test]
fn a_compressed_scipy_csr_archive_reads_as_its_libsvm_twin() {
    let npz = load_sparse(&fixture("sparse_compressed.npz")).unwrap();
    let svm = load_sparse(&fixture("sparse.svm")).unwrap();
    assert_eq!(npz.y, svm.y);
    assert_eq!(npz.d(), 12);
    assert_eq!(npz.x.with_columns(12).unwrap().values, svm.x.values);
    assert_eq!(npz.x, svm.x.with_columns(12).unwrap());
    let dense = load_all(&[&fixture("sparse_compressed.npz")]).unwrap();
    assert_eq!(dense[0].x, npz.x.to_dense().unwrap());
}

#[test]
fn scipy_files_without_labels_or_in_csc_are_refused_with_what_to_do() {
    let e = load_sparse(&fixture("scipy_without_y.npz"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("scipy_without_y.npz") && e.contains("no array 'y'"),
        "{e}"
    );
    let e = load_sparse(&fixture("csc.npz")).unwrap_err().to_string();
    assert!(
        e.contains("csc.npz") && e.contains("'csc'") && e.contains("tocsr"),
        "{e}"
    );
}

/// CSV → .npy and LIBSVM → .npz, then a hypergradient from each: the same JSON numbers.
#[test]
fn converted_files_give_the_runs_of_their_sources() {
    let npy = scratch("conv.npy");
    let out = hypergrad(&[
        "data",
        "convert",
        &fixture("dense.csv"),
        npy.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("40 rows x 5 features"));
    let grad = |train: &str| {
        let out = hypergrad(&[
            "grad",
            "--problem",
            "softmax",
            "--train",
            train,
            "--method",
            "cg",
            "--device",
            "cpu",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        json_of(&out)["hypergradient"].clone()
    };
    assert_eq!(grad(&fixture("dense.csv")), grad(npy.to_str().unwrap()));

    let npz = scratch("conv.npz");
    let out = hypergrad(&[
        "data",
        "convert",
        &fixture("sparse.svm"),
        npz.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lasso = |train: &str| {
        let out = hypergrad(&[
            "run",
            "--problem",
            "lasso",
            "--train",
            train,
            "--outer-steps",
            "2",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json_of(&out);
        (v["best_theta"].clone(), v["best_loss"].clone())
    };
    assert_eq!(lasso(&fixture("sparse.svm")), lasso(npz.to_str().unwrap()));

    let f32 = scratch("conv32.npy");
    let out = hypergrad(&[
        "data",
        "convert",
        &fixture("dense.csv"),
        f32.to_str().unwrap(),
        "--dtype",
        "f32",
    ]);
    assert!(out.status.success());
    assert_eq!(
        load(f32.to_str().unwrap()).unwrap().x,
        load(&fixture("dense_f32.csv")).unwrap().x
    );
    let bad = hypergrad(&["data", "convert", &fixture("dense.csv"), "out.parquet"]);
    assert_eq!(bad.status.code(), Some(1));
    assert_one_line_error(&bad, ".npy (dense) or .npz");
}

/// Broken binary training files through `grad`: exit 1 and one line naming the file and
/// what is wrong, never a panic or an abort.
#[test]
fn broken_binary_files_are_refused_in_one_line() {
    let good = std::fs::read(fixture("dense_c_f64.npy")).unwrap();
    let header_end = good.iter().position(|&b| b == b'\n').unwrap() + 1;
    let with_header = |dict: &str| {
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(dict.len() as u16 + 1).to_le_bytes());
        out.extend_from_slice(dict.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&good[header_end..]);
        out
    };
    let mut huge_header = b"\x93NUMPY\x02\x00".to_vec();
    huge_header.extend_from_slice(&0x7fff_ffffu32.to_le_bytes());
    huge_header.extend_from_slice(b"{'descr': '<f8'");
    let npz = std::fs::read(fixture("sparse_compressed.npz")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated.npy",
            good[..good.len() - 5].to_vec(),
            "truncated",
        ),
        (
            "magic.npy",
            b"\x93NUMPX\x01\x00".to_vec(),
            "not a .npy file",
        ),
        (
            "dtype.npy",
            with_header("{'descr': '<c8', 'fortran_order': False, 'shape': (40, 6), }"),
            "dtype '<c8'",
        ),
        (
            "overflow.npy",
            with_header(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904, 6), }",
            ),
            "too large",
        ),
        ("huge_header.npy", huge_header, "more than the 1048576"),
        ("truncated.npz", npz[..npz.len() - 30].to_vec(), "archive"),
        ("sniffed.data", good[..good.len() - 8].to_vec(), "truncated"),
    ];
    for (name, bytes, needle) in cases {
        let path = scratch(name);
        std::fs::write(&path, &bytes).unwrap();
        let train = path.to_str().unwrap();
        let out = hypergrad(&[
            "grad",
            "--problem",
            "softmax",
            "--train",
            train,
            "--method",
            "cg",
        ]);
        assert_eq!(out.status.code(), Some(1), "{name}: {:?}", out.status);
        assert_one_line_error(&out, train);
        assert_one_line_error(&out, needle);
    }
}

/// `run --json` of a θ of 24000 per-sample weights: a summary, and the whole vector through
/// `--theta-out` (the summary's statistics are those of the file's vector); a small θ stays
/// printed whole.
#[test]
fn a_long_theta_is_summarised_and_written_whole_to_npy() {
    let out_file = scratch("theta.npy");
    let out = hypergrad(&[
        "run",
        "--problem",
        "hyperclean",
        "--train",
        "synthetic:softmax:n=40000,d=10,c=3,seed=1",
        "--method",
        "nhgd",
        "--outer-steps",
        "1",
        "--device",
        "cpu",
        "--json",
        "--theta-out",
        out_file.to_str().unwrap(),
    ]);
    let v = json_of(&out);
    assert!(v.get("theta").is_none(), "θ printed whole");
    let summary = &v["theta_summary"];
    let theta = hypergrad::data::npy::read_vector(&out_file).unwrap();
    assert_eq!(summary["len"], theta.len());
    assert_eq!(theta.len(), 24_000);
    let norm = theta.iter().map(|t| t * t).sum::<f64>().sqrt();
    assert!((summary["norm"].as_f64().unwrap() - norm).abs() <= 1e-12 * norm);
    let max = theta.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(summary["max"].as_f64().unwrap(), max);
    assert_eq!(v["theta_file"], out_file.to_str().unwrap());

    let small = json_of(&hypergrad(&[
        "run",
        "--problem",
        "ridge",
        "--train",
        "diabetes",
        "--outer-steps",
        "1",
        "--json",
    ]));
    assert_eq!(small["theta"].as_array().unwrap().len(), 1);
    let zero = hypergrad(&[
        "run",
        "--problem",
        "ridge",
        "--train",
        "diabetes",
        "--checkpoint-every",
        "0",
    ]);
    assert_eq!(zero.status.code(), Some(2));
}
