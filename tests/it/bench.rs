//! The benchmark harness at its smallest scale (bench/bench.py --scale smoke): keymart's nightly
//! build and DuckDB's run of the same SQL, then the row-by-row comparison of every SQL mart. The
//! timings are not asserted (they live in BENCHMARKS.md); that the two engines agree is.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{SAMPLE_MARTS, repo_root, stderr, stdout};

/// The bench's virtualenv with bench/requirements.txt (.ci/run makes it; bench.py makes it when
/// it is missing).
fn bench_venv() -> PathBuf {
    std::env::var_os("KEYMART_BENCH_VENV").map(PathBuf::from).unwrap_or_else(|| repo_root().join("target/bench-venv"))
}

#[test]
fn smoke_scale_builds_both_nights_and_duckdb_agrees_on_every_sql_mart() {
    let work = tempfile::tempdir().unwrap();
    let output = Command::new("python3")
        .arg(repo_root().join("bench/bench.py"))
        .args(["--scale", "smoke", "--keymart", env!("CARGO_BIN_EXE_keymart")])
        .arg("--venv")
        .arg(bench_venv())
        .arg("--work")
        .arg(work.path())
        .output()
        .expect("python3");
    let out = stdout(&output);
    assert!(output.status.success(), "bench failed:\n{out}\n{}", stderr(&output));
    assert!(out.contains("[smoke] the marts agree"), "{out}");
    // model_parameters is keymart's fit on both sides, so not compared (bench/fit.py checks it).
    for mart in SAMPLE_MARTS.into_iter().filter(|m| *m != "model_parameters") {
        // Compared on both nights, with every row matched.
        assert_eq!(out.matches(&format!("  {mart}: ")).count(), 2, "{mart} not compared twice:\n{out}");
    }
    assert!(out.contains("customer_rfm: 2000 rows, 10 columns"), "{out}");

    // The comparison is not vacuous: one monetary value off by a cent in DuckDB's mart is found.
    let smoke = work.path().join("smoke");
    let duckdb_rfm = smoke.join("duckdb/2025-01-01/marts/customer_rfm.parquet");
    let python = bench_venv().join("bin/python");
    let tamper = format!(
        "import duckdb; duckdb.sql(\"COPY (SELECT * REPLACE (CASE WHEN customer_id = (SELECT min(customer_id) FROM \
         '{p}') THEN monetary + 0.01 ELSE monetary END AS monetary) FROM '{p}') TO '{p}.new' (FORMAT parquet)\")",
        p = duckdb_rfm.display()
    );
    assert!(Command::new(&python).args(["-c", &tamper]).status().unwrap().success());
    std::fs::rename(duckdb_rfm.with_extension("parquet.new"), &duckdb_rfm).unwrap();
    let compared = Command::new(&python)
        .arg(repo_root().join("bench/duckdb/compare.py"))
        .arg("--project")
        .arg(smoke.join("project"))
        .args(["--as-of", "2025-01-01", "--duckdb"])
        .arg(smoke.join("duckdb/2025-01-01"))
        .output()
        .unwrap();
    assert_eq!(compared.status.code(), Some(1), "{}", stdout(&compared));
    assert!(stderr(&compared).contains("customer_rfm.monetary: 1 rows differ"), "{}", stderr(&compared));
}
