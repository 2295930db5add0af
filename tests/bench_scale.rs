//! `hypergrad bench scale` on tiny sizes (issue 24 item 6): one record per (workload, n), each
//! from its own worker process, with a positive time per outer step and a peak RSS; the fitted
//! slopes; the plot; and an n the cap leaves out.

mod cli_common;

use cli_common::{assert_one_line_error, hypergrad, json_of};

#[test]
fn bench_scale_reports_every_workload_and_size_with_slopes_and_a_plot() {
    let fig = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("scale-{}.svg", std::process::id()));
    let out = hypergrad(&[
        "bench",
        "scale",
        "--n",
        "200,400,1e6",
        "--max-n",
        "500",
        "--d",
        "6",
        "--outer-steps",
        "3",
        "--inner-steps",
        "5",
        "--device",
        "cpu",
        "--json",
        "--plot",
        fig.to_str().unwrap(),
    ]);
    let v = json_of(&out);
    let records = v["records"].as_array().unwrap();
    assert_eq!(
        records.len(),
        6,
        "3 workloads x 2 sizes (1e6 is past --max-n): {v}"
    );
    for r in records {
        assert!(r.get("skipped").is_none(), "{r}");
        assert!(r["n"] == 200 || r["n"] == 400, "{r}");
        assert!(r["seconds_per_outer_step"].as_f64().unwrap() > 0.0, "{r}");
        // A worker holds at least its binary and rows: more than a megabyte, less than a GB.
        let rss = r["peak_host_bytes"].as_f64().unwrap();
        assert!((1e6..1e9).contains(&rss), "{r}");
    }
    for w in ["hyperclean", "cg", "lasso"] {
        assert!(
            v["slopes"][w]["seconds_per_outer_step"]
                .as_f64()
                .unwrap()
                .is_finite(),
            "{v}"
        );
    }
    let svg = std::fs::read_to_string(&fig).unwrap();
    assert!(
        svg.contains("log10 n") && svg.contains("hyperclean"),
        "the plot names its axes and lines"
    );
    let _ = std::fs::remove_file(&fig);

    let none = hypergrad(&["bench", "scale", "--n", "1e6", "--max-n", "10"]);
    assert_one_line_error(&none, "--max-n");
}
