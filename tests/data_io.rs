//! Integration tests of the public data API: readers, loaders, splits, preprocessing,
//! bundled and synthetic datasets, and the RNG.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use hypergrad::data::rng::Rng;
use hypergrad::data::{
    self, bundled_names, corrupt_labels, fold_indices, load, parse_split, read_csv, read_libsvm,
    split, split_indices, standardize, synthetic, Dataset,
};
use hypergrad::Error;
use ndarray::{array, Array2};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh path in the temp directory with the given file name suffix.
fn temp_path(suffix: &str) -> PathBuf {
    let k = COUNTER.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!(
        "hypergrad_data_io_{}_{k}{suffix}",
        std::process::id()
    ))
}

/// Writes `text` to a fresh temp file with the given suffix and returns its path.
fn temp_file(suffix: &str, text: &str) -> PathBuf {
    let p = temp_path(suffix);
    std::fs::write(&p, text).unwrap();
    p
}

/// Writes `text` gzipped to a fresh temp file with the given suffix.
fn temp_gz(suffix: &str, text: &str) -> PathBuf {
    let p = temp_path(suffix);
    let f = std::fs::File::create(&p).unwrap();
    let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
    p
}

/// Loads `path`, expects an error, checks it is one line naming the file and `line`, and
/// returns its message.
fn expect_parse_error(path: &PathBuf, line: usize) -> String {
    let err = load(path.to_str().unwrap()).expect_err("bad input must be rejected");
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "message is not one line: {msg:?}");
    let needle = format!("{}:{line}:", path.display());
    assert!(
        msg.contains(&needle),
        "message {msg:?} should contain {needle:?}"
    );
    match err {
        Error::Parse { line: l, .. } => assert_eq!(l, line),
        other => panic!("expected a Parse error, got {other:?}"),
    }
    let _ = std::fs::remove_file(path);
    msg
}

fn x_of(rows: &[&[f64]]) -> Array2<f64> {
    let d = rows[0].len();
    Array2::from_shape_vec((rows.len(), d), rows.concat()).unwrap()
}

// ---------------------------------------------------------------- readers: good input

#[test]
fn csv_round_trip_exact_numbers() {
    let values = [
        [0.1, -2.5e-300, 3.0],
        [1.0 / 3.0, 1e300, -0.0],
        [std::f64::consts::PI, 42.0, 7.123456789012345],
    ];
    let labels = [1.0, -1.0, 0.5];
    let mut text = String::new();
    for (y, row) in labels.iter().zip(&values) {
        // `{:?}` of f64 is the shortest string that round-trips.
        text.push_str(&format!("{y:?}, {:?} ,{:?},{:?}\n", row[0], row[1], row[2]));
    }
    let p = temp_file(".csv", &text);
    let ds = load(p.to_str().unwrap()).unwrap();
    assert_eq!((ds.n(), ds.d()), (3, 3));
    assert_eq!(ds.y, labels.to_vec());
    for (i, row) in values.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            assert_eq!(ds.x[[i, j]].to_bits(), v.to_bits(), "x[{i},{j}]");
        }
    }
    assert_eq!(ds.name, p.to_str().unwrap());
    std::fs::remove_file(p).unwrap();
}

#[test]
fn csv_header_blank_lines_and_crlf() {
    let p = temp_file(".csv", "label, f1 ,f2\r\n\r\n1,2,3\r\n0,4.5,6\r\n\n");
    let ds = load(p.to_str().unwrap()).unwrap();
    assert_eq!(ds.y, vec![1.0, 0.0]);
    assert_eq!(ds.x, array![[2.0, 3.0], [4.5, 6.0]]);
    std::fs::remove_file(p).unwrap();
}

#[test]
fn csv_header_with_a_number_is_data_and_fails() {
    // Line 1 has a numeric field, so it is data, and "label" is malformed.
    let p = temp_file(".csv", "label,7,f2\n1,2,3\n");
    let msg = expect_parse_error(&p, 1);
    assert!(
        msg.contains("column 1 (label)") && msg.contains("'label'"),
        "{msg}"
    );
}

#[test]
fn read_csv_from_reader() {
    let text = "3,1,2\n4,5,6\n";
    let ds = read_csv(text.as_bytes(), std::path::Path::new("mem.csv")).unwrap();
    assert_eq!(ds.y, vec![3.0, 4.0]);
    assert_eq!(ds.x, array![[1.0, 2.0], [5.0, 6.0]]);
    assert_eq!(ds.num_classes().unwrap(), 5);
}

#[test]
fn libsvm_round_trip_and_missing_indices_are_zero() {
    let text = "# comment line\n+1 1:0.5 3:-2.25e-10 # trailing comment\n\n-1 2:1e300\n0.25\n";
    let p = temp_file(".svm", text);
    let ds = load(p.to_str().unwrap()).unwrap();
    assert_eq!((ds.n(), ds.d()), (3, 3));
    assert_eq!(ds.y, vec![1.0, -1.0, 0.25]);
    assert_eq!(
        ds.x,
        array![[0.5, 0.0, -2.25e-10], [0.0, 1e300, 0.0], [0.0, 0.0, 0.0]]
    );
    std::fs::remove_file(p).unwrap();
}

#[test]
fn libsvm_index_beyond_what_the_file_justifies_is_refused_at_its_line() {
    // 24 bytes asking for a 2 x 300000000 dense matrix (4.8 GB): refused before allocating,
    // by the dense and the sparse reader alike, at the line of the index.
    let p = temp_file(".svm", "0 1:1 300000000:1\n1 2:1\n");
    let msg = expect_parse_error(&p, 1);
    assert!(
        msg.contains("300000000") && msg.contains("justify"),
        "{msg}"
    );
    let p = temp_file(".svm", "0 1:1\n1 2:1 300000000:1\n");
    let err = hypergrad::data::sparse::load_sparse(p.to_str().unwrap()).unwrap_err();
    assert!(matches!(err, Error::Parse { line: 2, .. }), "{err}");
    // A small file may still name a large index: 2^24 entries are always allowed.
    let ds = read_libsvm("1 1000000:1\n".as_bytes(), std::path::Path::new("t.svm"), 0).unwrap();
    assert_eq!(ds.d(), 1_000_000);
}

#[test]
fn libsvm_min_features_pads() {
    let ds = read_libsvm("1 2:3\n".as_bytes(), std::path::Path::new("t.svm"), 5).unwrap();
    assert_eq!(ds.d(), 5);
    assert_eq!(ds.x.row(0).to_vec(), vec![0.0, 3.0, 0.0, 0.0, 0.0]);
    let ds = read_libsvm("1 2:3 7:1\n".as_bytes(), std::path::Path::new("t.svm"), 5).unwrap();
    assert_eq!(ds.d(), 7);
}

#[test]
fn gz_files_and_sniffing() {
    let csv = temp_gz(".csv.gz", "1,2,3\n0,4,5\n");
    let ds = load(csv.to_str().unwrap()).unwrap();
    assert_eq!(ds.x, array![[2.0, 3.0], [4.0, 5.0]]);
    assert_eq!(ds.y, vec![1.0, 0.0]);

    let svm = temp_gz(".svm.gz", "1 1:2 2:3\n0 2:5\n");
    let ds = load(svm.to_str().unwrap()).unwrap();
    assert_eq!(ds.x, array![[2.0, 3.0], [0.0, 5.0]]);

    // Unknown extension: sniffed.
    let sniff_svm = temp_file(".data", "1 1:2 2:3\n");
    assert_eq!(
        load(sniff_svm.to_str().unwrap()).unwrap().x,
        array![[2.0, 3.0]]
    );
    let sniff_csv = temp_file(".data", "1,2,3\n");
    assert_eq!(
        load(sniff_csv.to_str().unwrap()).unwrap().x,
        array![[2.0, 3.0]]
    );

    // A corrupt .gz file is a one-line error naming the file.
    let bad_gz = temp_file(".csv.gz", "1,2,3\n");
    let msg = load(bad_gz.to_str().unwrap()).unwrap_err().to_string();
    assert!(
        !msg.contains('\n') && msg.contains(bad_gz.to_str().unwrap()),
        "{msg}"
    );

    for p in [csv, svm, sniff_svm, sniff_csv, bad_gz] {
        std::fs::remove_file(p).unwrap();
    }
}

// ---------------------------------------------------------------- readers: bad input

#[test]
fn missing_file_is_io_error_naming_file() {
    let p = temp_path(".csv");
    let err = load(p.to_str().unwrap()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(!msg.contains('\n'), "{msg:?}");
    assert!(msg.contains(p.to_str().unwrap()), "{msg}");
}

#[test]
fn unreadable_path_is_io_error() {
    // A directory cannot be read as a file.
    let dir = temp_path("_dir.csv");
    std::fs::create_dir(&dir).unwrap();
    let err = load(dir.to_str().unwrap()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        !msg.contains('\n') && msg.contains(dir.to_str().unwrap()),
        "{msg}"
    );
    std::fs::remove_dir(dir).unwrap();
}

#[test]
fn csv_malformed_number() {
    let p = temp_file(".csv", "1,2,3\n1,2x,3\n");
    let msg = expect_parse_error(&p, 2);
    assert!(msg.contains("column 2") && msg.contains("2x"), "{msg}");
}

#[test]
fn csv_malformed_label() {
    // Line 3 is the first non-blank line; "2" parses, so it is data, not a header.
    let p = temp_file(".csv", "\n\nabc,2,3\n");
    let msg = expect_parse_error(&p, 3);
    assert!(msg.contains("column 1 (label)"), "{msg}");
}

#[test]
fn csv_wrong_field_count() {
    let p = temp_file(".csv", "1,2,3\n0,4,5\n1,2\n");
    let msg = expect_parse_error(&p, 3);
    assert!(msg.contains("2 fields") && msg.contains("has 3"), "{msg}");
}

#[test]
fn csv_single_column_rejected() {
    let p = temp_file(".csv", "1\n2\n");
    expect_parse_error(&p, 1);
}

#[test]
fn csv_empty_field_rejected() {
    let p = temp_file(".csv", "1,2,3\n1,,3\n");
    let msg = expect_parse_error(&p, 2);
    assert!(msg.contains("column 2"), "{msg}");
}

#[test]
fn csv_nan_rejected() {
    let p = temp_file(".csv", "1,2,3\n1,2,NaN\n");
    let msg = expect_parse_error(&p, 2);
    assert!(
        msg.contains("column 3") && msg.contains("non-finite"),
        "{msg}"
    );
}

#[test]
fn csv_inf_rejected() {
    let p = temp_file(".csv", "inf,2,3\n");
    let msg = expect_parse_error(&p, 1);
    assert!(
        msg.contains("column 1") && msg.contains("non-finite"),
        "{msg}"
    );
    let p = temp_file(".csv", "1,2,3\n1,-infinity,3\n");
    expect_parse_error(&p, 2);
}

#[test]
fn csv_empty_file_rejected() {
    let p = temp_file(".csv", "");
    let msg = expect_parse_error(&p, 1);
    assert!(msg.contains("no data rows"), "{msg}");
    let p = temp_file(".csv", "label,a,b\n\n");
    expect_parse_error(&p, 3);
}

#[test]
fn libsvm_index_zero() {
    let p = temp_file(".svm", "1 1:2\n1 0:2 3:4\n");
    let msg = expect_parse_error(&p, 2);
    assert!(msg.contains("index 0"), "{msg}");
}

#[test]
fn libsvm_non_increasing_index() {
    let p = temp_file(".libsvm", "1 1:2 3:1 3:4\n");
    let msg = expect_parse_error(&p, 1);
    assert!(
        msg.contains("index 3") && msg.contains("previous index 3"),
        "{msg}"
    );
    let p = temp_file(".libsvm", "1 1:2\n-1 5:1 2:4\n");
    let msg = expect_parse_error(&p, 2);
    assert!(
        msg.contains("index 2") && msg.contains("previous index 5"),
        "{msg}"
    );
}

#[test]
fn libsvm_missing_colon() {
    let p = temp_file(".svm", "1 1:2\n\n1 2 3:4\n");
    let msg = expect_parse_error(&p, 3);
    assert!(msg.contains("index:value") && msg.contains("'2'"), "{msg}");
}

#[test]
fn libsvm_malformed_value_and_label() {
    let p = temp_file(".svm", "1 1:2\n1 2:abc\n");
    let msg = expect_parse_error(&p, 2);
    assert!(msg.contains("feature 2") && msg.contains("abc"), "{msg}");
    let p = temp_file(".svm", "one 1:2\n");
    let msg = expect_parse_error(&p, 1);
    assert!(msg.contains("label"), "{msg}");
    let p = temp_file(".svm", "1 x:2\n");
    expect_parse_error(&p, 1);
}

#[test]
fn libsvm_non_finite_rejected() {
    let p = temp_file(".svm", "1 1:2\n1 1:nan\n");
    let msg = expect_parse_error(&p, 2);
    assert!(msg.contains("non-finite"), "{msg}");
    let p = temp_file(".svm", "1 1:2\ninf 1:3\n");
    let msg = expect_parse_error(&p, 2);
    assert!(msg.contains("non-finite"), "{msg}");
}

#[test]
fn libsvm_empty_file_rejected() {
    let p = temp_file(".svm", "# only a comment\n\n");
    let msg = expect_parse_error(&p, 3);
    assert!(msg.contains("no data rows"), "{msg}");
}

#[test]
fn invalid_utf8_rejected() {
    let p = temp_path(".csv");
    std::fs::write(&p, b"1,2,3\n1,\xff,3\n").unwrap();
    expect_parse_error(&p, 2);
}

// ---------------------------------------------------------------- Dataset and labels

#[test]
fn dataset_new_checks() {
    let x = x_of(&[&[1.0, 2.0], &[3.0, 4.0]]);
    assert!(matches!(
        Dataset::new(x.clone(), vec![1.0], "t"),
        Err(Error::Dimension(_))
    ));
    let mut bad = x.clone();
    bad[[1, 0]] = f64::NAN;
    let err = Dataset::new(bad, vec![1.0, 2.0], "mydata").unwrap_err();
    assert!(matches!(err, Error::Numerical(_)));
    assert!(err.to_string().contains("mydata"));
    assert!(Dataset::new(x.clone(), vec![1.0, f64::INFINITY], "t").is_err());
    let ds = Dataset::new(x.t().to_owned(), vec![1.0, 2.0], "t").unwrap();
    assert!(ds.x.is_standard_layout());
}

#[test]
fn select_and_with_columns() {
    let ds = Dataset::new(
        x_of(&[&[1.0, 2.0], &[3.0, 4.0], &[5.0, 6.0]]),
        vec![0.0, 1.0, 2.0],
        "t",
    )
    .unwrap();
    let s = ds.select(&[2, 0]);
    assert_eq!(s.x, array![[5.0, 6.0], [1.0, 2.0]]);
    assert_eq!(s.y, vec![2.0, 0.0]);
    let w = ds.with_columns(4).unwrap();
    assert_eq!(w.x.row(1).to_vec(), vec![3.0, 4.0, 0.0, 0.0]);
    assert_eq!(w.y, ds.y);
    assert_eq!(ds.with_columns(2).unwrap().x, ds.x);
    assert!(matches!(ds.with_columns(1), Err(Error::Dimension(_))));
}

#[test]
fn check_binary_pm1_rejects_01() {
    let x = x_of(&[&[1.0], &[2.0], &[3.0]]);
    let ok = Dataset::new(x.clone(), vec![1.0, -1.0, 1.0], "pm").unwrap();
    ok.check_binary_pm1().unwrap();
    let bad = Dataset::new(x, vec![1.0, 0.0, 1.0], "zeroone").unwrap();
    let err = bad.check_binary_pm1().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Labels(_)));
    assert!(!msg.contains('\n'));
    assert!(
        msg.contains("zeroone") && msg.contains("label 0") && msg.contains("row 2"),
        "{msg}"
    );
}

#[test]
fn num_classes_rejects_fractional_and_negative() {
    let x = x_of(&[&[1.0], &[2.0], &[3.0]]);
    let ok = Dataset::new(x.clone(), vec![0.0, 3.0, 1.0], "c").unwrap();
    assert_eq!(ok.num_classes().unwrap(), 4);
    let frac = Dataset::new(x.clone(), vec![0.0, 1.5, 1.0], "frac").unwrap();
    let err = frac.num_classes().unwrap_err();
    assert!(matches!(err, Error::Labels(_)));
    assert!(err.to_string().contains("1.5"), "{err}");
    let neg = Dataset::new(x, vec![0.0, 1.0, -1.0], "neg").unwrap();
    let err = neg.num_classes().unwrap_err();
    assert!(matches!(err, Error::Labels(_)));
    assert!(err.to_string().contains("-1") && err.to_string().contains("row 3"));
}

// ---------------------------------------------------------------- split

fn indexed(n: usize) -> Dataset {
    // Row i has feature i and label i, so rows can be identified after a split.
    let x = Array2::from_shape_fn((n, 2), |(i, j)| (i * 10 + j) as f64);
    Dataset::new(x, (0..n).map(|i| i as f64).collect(), "idx").unwrap()
}

fn ids(ds: &Dataset) -> Vec<usize> {
    ds.y.iter().map(|&v| v as usize).collect()
}

#[test]
fn split_deterministic_disjoint_covering() {
    let ds = indexed(101);
    let a = split(&ds, &[0.6, 0.2, 0.2], 42).unwrap();
    let b = split(&ds, &[0.6, 0.2, 0.2], 42).unwrap();
    let c = split(&ds, &[0.6, 0.2, 0.2], 43).unwrap();
    assert_eq!(a.len(), 3);
    for (pa, pb) in a.iter().zip(&b) {
        assert_eq!(ids(pa), ids(pb));
        assert_eq!(pa.x, pb.x);
    }
    assert_ne!(ids(&a[0]), ids(&c[0]));
    // Sizes: boundaries round(101*0.6)=61, round(101*0.8)=81.
    assert_eq!(
        a.iter().map(|p| p.n()).collect::<Vec<_>>(),
        vec![61, 20, 20]
    );
    let mut all: Vec<usize> = a.iter().flat_map(ids).collect();
    all.sort_unstable();
    assert_eq!(all, (0..101).collect::<Vec<_>>());
    // Rows travel with their labels.
    for p in &a {
        for (i, &id) in ids(p).iter().enumerate() {
            assert_eq!(p.x[[i, 1]], (id * 10 + 1) as f64);
        }
    }
    assert_eq!(a[0].name, "idx[train]");
    assert_eq!(a[2].name, "idx[test]");
}

#[test]
fn split_sizes_two_parts_and_rounding() {
    let ds = indexed(10);
    let p = split(&ds, &[0.75, 0.25], 1).unwrap();
    // round(7.5) = 8 (half away from zero).
    assert_eq!((p[0].n(), p[1].n()), (8, 2));
    let ds = indexed(3);
    let p = split(&ds, &[0.34, 0.33, 0.33], 0).unwrap();
    assert_eq!((p[0].n(), p[1].n(), p[2].n()), (1, 1, 1));
}

#[test]
fn split_indices_are_the_rows_of_split() {
    // What Python's held-out split takes: the rows `split` puts in each part, in its order.
    for (n, fractions, seed) in [
        (101, &[0.6, 0.2, 0.2][..], 42u64),
        (10, &[0.75, 0.25][..], 1),
        (240, &[0.75, 0.25][..], 0),
    ] {
        let parts = split(&indexed(n), fractions, seed).unwrap();
        let rows = split_indices(n, fractions, seed).unwrap();
        assert_eq!(rows, parts.iter().map(ids).collect::<Vec<_>>());
    }
    let err = split_indices(2, &[0.5, 0.3, 0.2], 0).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidOption {
            option: "--split",
            ..
        }
    ));
}

#[test]
fn fold_indices_are_the_folds_of_the_l1_criterion() {
    // Python's cv_folds: the same folds as the ℓ1 cross-validation criterion draws, checked
    // by the labels (row i has label i) of each fold that `l1::kfold` selects.
    use hypergrad::l1::{kfold, Design, L1Data};
    for (n, k, seed) in [(240, 5, 0u64), (37, 3, 9), (10, 10, 1)] {
        let ds = indexed(n);
        let data = L1Data::new(Design::dense(&ds.x).unwrap(), ds.y.to_vec()).unwrap();
        let folds = kfold(&data, k, seed).unwrap();
        let rows = fold_indices(n, k, seed).unwrap();
        assert_eq!(rows.len(), k);
        for ((fit, held), (fit_rows, held_rows)) in folds.iter().zip(&rows) {
            let labels = |d: &L1Data| d.y.iter().map(|&v| v as usize).collect::<Vec<_>>();
            assert_eq!(&labels(fit), fit_rows);
            assert_eq!(&labels(held), held_rows);
        }
        let mut all: Vec<usize> = rows.iter().flat_map(|(_, h)| h.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }
    for (n, k) in [(5, 1), (5, 6)] {
        let err = fold_indices(n, k, 0).unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidOption {
                option: "--folds",
                ..
            }
        ));
    }
}

#[test]
fn split_rejects_bad_fractions() {
    let ds = indexed(10);
    for bad in [
        &[1.0][..],
        &[0.5, 0.5, 0.0][..],
        &[0.6, 0.3][..],
        &[-0.5, 1.5][..],
        &[0.25, 0.25, 0.25, 0.25][..],
        &[f64::NAN, 0.5][..],
    ] {
        let err = split(&ds, bad, 0).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidOption {
                    option: "--split",
                    ..
                }
            ),
            "{bad:?}: {err:?}"
        );
    }
    // A part that would be empty.
    let err = split(&indexed(2), &[0.5, 0.3, 0.2], 0).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidOption {
            option: "--split",
            ..
        }
    ));
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn parse_split_text() {
    assert_eq!(parse_split("0.6,0.2,0.2").unwrap(), vec![0.6, 0.2, 0.2]);
    assert_eq!(parse_split(" 0.8 , 0.2 ").unwrap(), vec![0.8, 0.2]);
    for bad in [
        "", "0.6;0.4", "0.6,abc", "0.5,0.6", "1", "0.5,0.5,", "nan,0.5",
    ] {
        let err = parse_split(bad).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidOption {
                    option: "--split",
                    ..
                }
            ),
            "{bad}: {err:?}"
        );
        assert!(err.to_string().contains("--split"));
    }
}

// ---------------------------------------------------------------- standardize

#[test]
fn standardize_uses_train_statistics() {
    let mut train = Dataset::new(
        x_of(&[
            &[1.0, 5.0, 0.1],
            &[2.0, 5.0, 0.1],
            &[3.0, 5.0, 0.1],
            &[6.0, 5.0, 0.1],
        ]),
        vec![0.0; 4],
        "train",
    )
    .unwrap();
    let mut val = Dataset::new(x_of(&[&[4.0, 7.0, 0.2]]), vec![0.0], "val").unwrap();
    let mut test = Dataset::new(x_of(&[&[0.0, 5.0, 0.1]]), vec![0.0], "test").unwrap();
    let (mean, std) = standardize(&mut train, &mut [&mut val, &mut test]);

    // Column 0: mean 3, population variance (4+1+0+9)/4 = 3.5.
    let s0 = 3.5f64.sqrt();
    assert!((mean[0] - 3.0).abs() < 1e-15);
    assert!((std[0] - s0).abs() < 1e-15);
    // Constant columns: centred only, reported std 1.
    assert_eq!((mean[1], std[1]), (5.0, 1.0));
    assert_eq!((mean[2], std[2]), (0.1, 1.0));
    for j in 0..3 {
        let col = train.x.column(j);
        let m = col.sum() / 4.0;
        let v = col.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / 4.0;
        assert!(m.abs() < 1e-12, "column {j} mean {m}");
        if j == 0 {
            assert!((v - 1.0).abs() < 1e-12, "column {j} var {v}");
        } else {
            assert!(
                col.iter().all(|&a| a == 0.0),
                "constant column {j} not centred"
            );
        }
    }
    assert!((val.x[[0, 0]] - 1.0 / s0).abs() < 1e-12);
    assert_eq!(val.x[[0, 1]], 2.0);
    assert!((val.x[[0, 2]] - 0.1).abs() < 1e-15);
    assert!((test.x[[0, 0]] + 3.0 / s0).abs() < 1e-12);
    assert_eq!(test.x[[0, 1]], 0.0);
}

// ---------------------------------------------------------------- bundled

#[test]
fn bundled_datasets_load() {
    assert_eq!(
        bundled_names(),
        &["digits", "breast_cancer", "diabetes", "mnist_5k"]
    );

    let digits = load("digits").unwrap();
    assert_eq!((digits.n(), digits.d()), (1797, 64));
    assert_eq!(digits.num_classes().unwrap(), 10);
    assert_eq!(digits.name, "digits");
    assert!(digits.x.iter().all(|&v| (0.0..=16.0).contains(&v)));

    let bc = load("breast_cancer").unwrap();
    assert_eq!((bc.n(), bc.d()), (569, 30));
    bc.check_binary_pm1().unwrap();
    // 357 benign (+1), 212 malignant (-1).
    assert_eq!(bc.y.iter().filter(|&&v| v == 1.0).count(), 357);

    let diab = load("diabetes").unwrap();
    assert_eq!((diab.n(), diab.d()), (442, 10));
    let mean_y = diab.y.iter().sum::<f64>() / 442.0;
    assert!(
        (mean_y - 152.133).abs() < 1e-3,
        "diabetes target mean {mean_y}"
    );
    assert!(diab.y.iter().all(|&v| (25.0..=346.0).contains(&v)));

    let mnist = load("mnist_5k").unwrap();
    assert_eq!((mnist.n(), mnist.d()), (5000, 784));
    assert_eq!(mnist.num_classes().unwrap(), 10);
    assert!(mnist
        .x
        .iter()
        .all(|&v| (0.0..=255.0).contains(&v) && v.fract() == 0.0));
}

// ---------------------------------------------------------------- synthetic and rng

#[test]
fn synthetic_is_deterministic() {
    let (a, wa) = synthetic::linear(50, 4, 0.3, 0.1, 9);
    let (b, wb) = synthetic::linear(50, 4, 0.3, 0.1, 9);
    let (c, _) = synthetic::linear(50, 4, 0.3, 0.1, 10);
    assert_eq!(a.x, b.x);
    assert_eq!(a.y, b.y);
    assert_eq!(wa, wb);
    assert_ne!(a.x, c.x);

    let s1 = load("synthetic:softmax:n=40,d=3,c=4,rho=0.2,seed=5").unwrap();
    let s2 = load("synthetic:softmax:n=40,d=3,c=4,rho=0.2,seed=5").unwrap();
    assert_eq!((s1.n(), s1.d()), (40, 3));
    assert_eq!(s1.x, s2.x);
    assert_eq!(s1.y, s2.y);
    assert!(s1.num_classes().unwrap() <= 4);
    assert!(s1
        .y
        .iter()
        .all(|&v| v.fract() == 0.0 && (0.0..4.0).contains(&v)));

    let l = load("synthetic:linear:n=7,d=2").unwrap();
    assert_eq!((l.n(), l.d()), (7, 2));
    // Same parameters through the spec and the function agree.
    let (f, _) = synthetic::linear(7, 2, 0.0, 0.1, 0);
    assert_eq!(l.x, f.x);
    assert_eq!(l.y, f.y);
}

#[test]
fn synthetic_spec_errors() {
    for bad in [
        "synthetic:linear:n=10",
        "synthetic:linear:n=10,d=2,foo=1",
        "synthetic:linear:n=10,d=x",
        "synthetic:linear:n=10,d=2,rho=1",
        "synthetic:linear:n=10,d=2,noise=-1",
        "synthetic:softmax:n=10,d=2",
        "synthetic:softmax:n=10,d=2,c=1",
        "synthetic:logistic:n=0,d=2",
        "synthetic:logistic:n=10,d=2,noise=0.1",
        "synthetic:logistic:n=10,d=2,n=3",
        "synthetic:cubic:n=10,d=2",
        "synthetic:linear:n=10,d=2,seed=-1",
        "synthetic:linear:n=100000000000,d=100000000000",
    ] {
        let err = load(bad).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::InvalidOption { .. }), "{bad}: {err:?}");
        assert!(msg.contains(bad) && !msg.contains('\n'), "{msg}");
    }
}

#[test]
fn logistic_labels_and_bayes_accuracy() {
    let (ds, w) = synthetic::logistic(4000, 10, 0.0, 3.0, 1);
    ds.check_binary_pm1().unwrap();
    let margins = ds.x.dot(&ndarray::Array1::from(w));
    let correct = margins
        .iter()
        .zip(&ds.y)
        .filter(|(m, y)| (**m >= 0.0) == (**y > 0.0))
        .count();
    let acc = correct as f64 / ds.n() as f64;
    assert!(acc > 0.7, "Bayes accuracy {acc}");
    let pos = ds.y.iter().filter(|&&v| v > 0.0).count();
    assert!(pos > 1000 && pos < 3000, "{pos} positives");
}

#[test]
fn softmax_truth_predicts_labels() {
    let (ds, w) = synthetic::softmax(3000, 8, 3, 0.0, 3.0, 2);
    assert_eq!(w.dim(), (8, 3));
    let logits = ds.x.dot(&w);
    let correct = logits
        .rows()
        .into_iter()
        .zip(&ds.y)
        .filter(|(row, &y)| {
            let arg = (0..3)
                .max_by(|&a, &b| row[a].partial_cmp(&row[b]).unwrap())
                .unwrap();
            arg as f64 == y
        })
        .count();
    let acc = correct as f64 / ds.n() as f64;
    assert!(acc > 0.5, "Bayes accuracy {acc}");
}

#[test]
fn design_lag1_correlation_matches_rho() {
    for rho in [0.0, 0.5, 0.9] {
        let mut rng = Rng::new(17);
        let x = synthetic::design(20000, 4, rho, &mut rng);
        for j in 0..3 {
            let a = x.column(j);
            let b = x.column(j + 1);
            let n = a.len() as f64;
            let (ma, mb) = (a.sum() / n, b.sum() / n);
            let cov = a
                .iter()
                .zip(b)
                .map(|(p, q)| (p - ma) * (q - mb))
                .sum::<f64>()
                / n;
            let va = a.iter().map(|p| (p - ma) * (p - ma)).sum::<f64>() / n;
            let vb = b.iter().map(|q| (q - mb) * (q - mb)).sum::<f64>() / n;
            let corr = cov / (va * vb).sqrt();
            assert!((corr - rho).abs() < 0.05, "rho {rho} lag-1 corr {corr}");
            assert!((va - 1.0).abs() < 0.05, "variance {va}");
        }
        // Lag 2 is rho^2.
        let a = x.column(0);
        let b = x.column(2);
        let r2 = a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>() / 20000.0;
        assert!((r2 - rho * rho).abs() < 0.05, "lag-2 {r2}");
    }
}

#[test]
fn rng_normal_moments_and_uniform_range() {
    let mut rng = Rng::new(123);
    let n = 200_000;
    let draws: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let mean = draws.iter().sum::<f64>() / n as f64;
    let var = draws.iter().map(|z| (z - mean) * (z - mean)).sum::<f64>() / n as f64;
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((var - 1.0).abs() < 0.02, "var {var}");
    let mut rng = Rng::new(5);
    let u: Vec<f64> = (0..100_000).map(|_| rng.uniform()).collect();
    assert!(u.iter().all(|&v| (0.0..1.0).contains(&v)));
    let mu = u.iter().sum::<f64>() / u.len() as f64;
    assert!((mu - 0.5).abs() < 0.01);
    // Same seed, same stream; different seeds differ.
    let (mut a, mut b, mut c) = (Rng::new(1), Rng::new(1), Rng::new(2));
    let sa: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
    let sb: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
    let sc: Vec<u64> = (0..5).map(|_| c.next_u64()).collect();
    assert_eq!(sa, sb);
    assert_ne!(sa, sc);
}

#[test]
fn rng_below_is_uniform() {
    let mut rng = Rng::new(77);
    let mut counts = [0usize; 6];
    for _ in 0..60_000 {
        counts[rng.below(6)] += 1;
    }
    for c in counts {
        assert!((9_500..10_500).contains(&c), "{counts:?}");
    }
    let mut v: Vec<u32> = (0..50).collect();
    rng.shuffle(&mut v);
    let mut s = v.clone();
    s.sort_unstable();
    assert_eq!(s, (0..50).collect::<Vec<_>>());
    assert_ne!(v, s);
}

// ---------------------------------------------------------------- corrupt_labels

#[test]
fn corrupt_labels_count_differs_deterministic() {
    let (orig, _) = synthetic::softmax(203, 3, 5, 0.0, 3.0, 3);
    let mut a = orig.clone();
    let idx = corrupt_labels(&mut a, 5, 0.3, 8).unwrap();
    // round(0.3 * 203) = round(60.9) = 61
    assert_eq!(idx.len(), 61);
    assert!(idx.windows(2).all(|w| w[0] < w[1]));
    for i in 0..orig.n() {
        if idx.binary_search(&i).is_ok() {
            assert_ne!(a.y[i], orig.y[i], "row {i} not changed");
            assert!(a.y[i].fract() == 0.0 && (0.0..5.0).contains(&a.y[i]));
        } else {
            assert_eq!(a.y[i], orig.y[i], "row {i} changed");
        }
    }
    assert_eq!(a.x, orig.x);

    let mut b = orig.clone();
    assert_eq!(corrupt_labels(&mut b, 5, 0.3, 8).unwrap(), idx);
    assert_eq!(a.y, b.y);
    let mut c = orig.clone();
    assert_ne!(corrupt_labels(&mut c, 5, 0.3, 9).unwrap(), idx);

    // Edge cases.
    let mut d = orig.clone();
    assert!(corrupt_labels(&mut d, 5, 0.0, 1).unwrap().is_empty());
    assert_eq!(corrupt_labels(&mut d, 5, 1.0, 1).unwrap().len(), 203);
    assert!(d.y.iter().zip(&orig.y).all(|(p, q)| p != q));
}

#[test]
fn corrupt_labels_rejects_bad_input() {
    let (mut ds, _) = synthetic::softmax(20, 2, 3, 0.0, 1.0, 0);
    assert!(matches!(
        corrupt_labels(&mut ds, 3, 1.5, 0),
        Err(Error::InvalidOption { .. })
    ));
    assert!(matches!(
        corrupt_labels(&mut ds, 1, 0.5, 0),
        Err(Error::InvalidOption { .. })
    ));
    // A label 2 but only 2 classes declared.
    ds.y[0] = 2.0;
    assert!(matches!(
        corrupt_labels(&mut ds, 2, 0.5, 0),
        Err(Error::Labels(_))
    ));
    let (mut pm, _) = synthetic::logistic(20, 2, 0.0, 1.0, 0);
    assert!(matches!(
        corrupt_labels(&mut pm, 2, 0.5, 0),
        Err(Error::Labels(_))
    ));
}

#[test]
fn module_path_reexports() {
    // The readers are reachable at `hypergrad::data::*`.
    let ds = data::read_csv("1,2\n".as_bytes(), std::path::Path::new("m.csv")).unwrap();
    assert_eq!(ds.d(), 1);
}
