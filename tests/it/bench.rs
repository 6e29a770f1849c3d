//! The benchmark harness at its smallest scale (bench/bench.py --scale smoke): keymart's nightly
//! build and DuckDB's run of the same SQL, then the row-by-row comparison of every raw load and
//! every SQL mart. The timings are not asserted (they live in BENCHMARKS.md); that the two
//! engines agree is.

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
    assert!(out.contains("[smoke] the raw loads and the marts agree"), "{out}");
    // model_parameters is keymart's fit on both sides, so not compared (bench/fit.py checks it).
    for mart in SAMPLE_MARTS.into_iter().filter(|m| *m != "model_parameters") {
        // Compared on both nights, with every row matched.
        assert_eq!(out.matches(&format!("  {mart}: ")).count(), 2, "{mart} not compared twice:\n{out}");
    }
    assert!(out.contains("customer_rfm: 2000 rows, 10 columns"), "{out}");
    // DuckDB's typed reads of the extracts (the contacts from Excel, the customers from GBK) equal
    // keymart's raw loads, on both nights.
    for source in ["erp_customers", "erp_orders", "scm_shipments", "cc_interactions"] {
        assert_eq!(out.matches(&format!("  raw {source}: ")).count(), 2, "{source} not compared twice:\n{out}");
    }

    // The comparison is not vacuous: one monetary value off by a cent in DuckDB's mart is found,
    // and so is one contact a second later in DuckDB's raw load (its timestamps are local time).
    let smoke = work.path().join("smoke");
    let night = smoke.join("duckdb/2025-01-01");
    let python = bench_venv().join("bin/python");
    // (hive_partitioning off: a path with load_date= would otherwise gain a load_date column.)
    let tamper = |file: PathBuf, key: &str, column: &str, change: &str| {
        let script = format!(
            "import duckdb; duckdb.sql(\"CREATE VIEW t AS FROM read_parquet('{p}', hive_partitioning = false); \
             COPY (SELECT * REPLACE (CASE WHEN {key} = (SELECT min({key}) FROM t) THEN {change} ELSE {column} END \
             AS {column}) FROM t) TO '{p}.new' (FORMAT parquet)\")",
            p = file.display()
        );
        assert!(Command::new(&python).args(["-c", &script]).status().unwrap().success());
        std::fs::rename(file.with_extension("parquet.new"), &file).unwrap();
    };
    tamper(night.join("marts/customer_rfm.parquet"), "customer_id", "monetary", "monetary + 0.01");
    let contacts = night.join("raw/cc_interactions/load_date=2025-01-01/part-0.parquet");
    tamper(contacts, "interaction_id", "started_at", "started_at + INTERVAL 1 SECOND");
    let compared = Command::new(&python)
        .arg(repo_root().join("bench/duckdb/compare.py"))
        .arg("--project")
        .arg(smoke.join("project"))
        .args(["--as-of", "2025-01-01", "--duckdb"])
        .arg(&night)
        .output()
        .unwrap();
    assert_eq!(compared.status.code(), Some(1), "{}", stdout(&compared));
    let problems = stderr(&compared);
    assert!(problems.contains("customer_rfm.monetary: 1 rows differ"), "{problems}");
    assert!(problems.contains("raw cc_interactions.started_at: 1 rows differ"), "{problems}");
    assert_eq!(problems.lines().count(), 2, "{problems}");
}
