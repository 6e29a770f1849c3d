//! `keymart run` end to end: DAG order, typed parameters, history tables, data tests blocking
//! publish, atomic and reproducible snapshots, crash safety, the run lock, backfills, query.

use std::time::Duration;

use crate::support::{TestProject, assert_exit, files_under, keymart, manifest_files, output_within, stderr, stdout};

const PIPELINE: &str = r#"
vars:
  big_order: {type: "decimal(10,2)", value: 100}

sources:
  orders:
    path: orders/{as_of}/*.csv
    format: csv
    load: incremental
    primary_key: [order_id]
    columns:
      - {name: order_id, type: string, nullable: false}
      - {name: customer_id, type: string, nullable: false}
      - {name: order_date, type: date, nullable: false}
      - {name: amount, type: "decimal(10,2)", nullable: false}

models:
  - path: sql/stg_orders.sql
    materialized: view
  - path: sql/customer_totals.sql
    materialized: mart
    key: [customer_id]
    columns:
      - {name: customer_id, type: string}
      - {name: orders, type: int}
      - {name: amount, type: "decimal(20,2)"}
      - {name: big_orders, type: int}
    tests:
      - unique: customer_id
      - expression: "amount >= 0"
  - path: sql/customer_streaks.sql
    materialized: mart
    key: [customer_id]
    columns:
      - {name: customer_id, type: string}
      - {name: earlier_snapshots, type: int}
"#;

const STG_ORDERS: &str = "SELECT order_id, customer_id, order_date, amount FROM orders WHERE order_date <= $as_of\n";
const CUSTOMER_TOTALS: &str = "SELECT customer_id, count(*) AS orders, sum(amount) AS amount,\n  count(CASE WHEN amount >= $big_order THEN 1 END) AS big_orders\nFROM stg_orders\nGROUP BY customer_id\n";
const CUSTOMER_STREAKS: &str = "SELECT t.customer_id, count(h.as_of) AS earlier_snapshots\nFROM customer_totals t\nLEFT JOIN customer_totals_history h ON h.customer_id = t.customer_id\nGROUP BY t.customer_id\n";

pub(crate) const D1: &str = "2024-06-01";
const D2: &str = "2024-06-02";
const D3: &str = "2024-06-03";

pub(crate) fn project() -> TestProject {
    project_with(PIPELINE)
}

/// The project of this module with another pipeline: the same SQL, configuration and extracts.
fn project_with(pipeline: &str) -> TestProject {
    let project = TestProject::new(pipeline);
    std::fs::write(
        project.path().join("keymart.yaml"),
        "warehouse: ./warehouse\nlock_ttl_seconds: 2\nfile_retention_seconds: 2\n",
    )
    .unwrap();
    project.write("sql/stg_orders.sql", STG_ORDERS);
    project.write("sql/customer_totals.sql", CUSTOMER_TOTALS);
    project.write("sql/customer_streaks.sql", CUSTOMER_STREAKS);
    project.land(
        &format!("orders/{D1}/orders.csv"),
        "order_id,customer_id,order_date,amount\nO1,C1,2024-06-01,150.00\nO2,C2,2024-06-01,20.50\n",
    );
    project
        .land(&format!("orders/{D2}/orders.csv"), "order_id,customer_id,order_date,amount\nO3,C1,2024-06-02,10.00\n");
    project.land(
        &format!("orders/{D3}/orders.csv"),
        "order_id,customer_id,order_date,amount\nO4,C3,2024-06-03,99.99\nO2,C2,2024-06-01,25.50\n",
    );
    project
}

pub(crate) fn run(project: &TestProject, args: &[&str]) -> std::process::Output {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    project.keymart(&all)
}

pub(crate) fn manifest(project: &TestProject, mart: &str, date: &str) -> Option<serde_json::Value> {
    project.snapshot(mart, date)
}

fn query(project: &TestProject, sql: &str) -> String {
    let output = project.keymart(&["query", sql, "--format", "csv"]);
    assert_exit(&output, 0);
    stdout(&output).trim().to_string()
}

#[test]
fn a_backfill_commits_each_date_in_order_and_history_sees_earlier_snapshots() {
    let project = project();
    let output = run(&project, &["--from", D1, "--to", D3]);
    assert_exit(&output, 0);
    let committed: Vec<String> = [D1, D2, D3]
        .iter()
        .map(|d| manifest(&project, "customer_totals", d).unwrap()["committed_at"].as_str().unwrap().to_string())
        .collect();
    assert!(committed[0] < committed[1] && committed[1] < committed[2], "{committed:?}");

    // O2 was re-sent on D3 with a new amount: the incremental source keeps the latest version.
    assert_eq!(
        query(
            &project,
            "SELECT as_of, customer_id, orders, amount, big_orders FROM customer_totals ORDER BY customer_id"
        ),
        "as_of,customer_id,orders,amount,big_orders\n2024-06-03,C1,2,160.00,1\n2024-06-03,C2,1,25.50,0\n2024-06-03,C3,1,99.99,0"
    );
    assert_eq!(
        query(&project, "SELECT customer_id, earlier_snapshots FROM customer_streaks ORDER BY customer_id"),
        "customer_id,earlier_snapshots\nC1,2\nC2,2\nC3,0"
    );
    let at_d1 =
        project.keymart(&["query", "SELECT count(*) AS n FROM customer_totals", "--as-of", D1, "--format", "csv"]);
    assert_eq!(stdout(&at_d1).trim(), "n\n2");
    assert_eq!(
        query(&project, "SELECT count(DISTINCT as_of) AS snapshots FROM customer_totals_history"),
        "snapshots\n3"
    );

    // Same inputs again: nothing to do.
    let again = run(&project, &["--from", D1, "--to", D3]);
    assert_exit(&again, 0);
    assert_eq!(stdout(&again).matches("skipped").count(), 3, "{}", stdout(&again));
    let runs = project.keymart(&["runs"]);
    assert!(stdout(&runs).lines().count() >= 3, "{}", stdout(&runs));
}

#[test]
fn a_rerun_gives_identical_files_and_the_log_names_only_the_new_run() {
    let project = project();
    assert_exit(&run(&project, &["--as-of", D1]), 0);
    let first = manifest(&project, "customer_totals", D1).unwrap();
    let first_files = manifest_files(&first);
    let first_bytes: Vec<Vec<u8>> =
        first_files.iter().map(|f| std::fs::read(project.warehouse().join(f)).unwrap()).collect();

    // The replaced files are removed by the commit after them once older than the retention (2 s).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_exit(&run(&project, &["--as-of", D1, "--rebuild"]), 0);
    let second = manifest(&project, "customer_totals", D1).unwrap();
    let second_files = manifest_files(&second);
    assert!(second_files.iter().all(|f| !first_files.contains(f)), "a new run writes under its own run id");
    let second_bytes: Vec<Vec<u8>> =
        second_files.iter().map(|f| std::fs::read(project.warehouse().join(f)).unwrap()).collect();
    assert_eq!(second_bytes, first_bytes, "byte-identical");
    assert_eq!(first["inputs"], second["inputs"]);
    let dir = project.warehouse().join(format!("marts/customer_totals/as_of={D1}"));
    let expected: Vec<String> =
        second_files.iter().map(|f| f.rsplit_once(&format!("as_of={D1}/")).unwrap().1.to_string()).collect();
    assert_eq!(files_under(&dir), expected, "only the committed files remain");
    assert!(second["version"].as_u64().unwrap() > first["version"].as_u64().unwrap());
}

#[test]
fn a_failing_test_blocks_publish_downstream_and_keeps_the_previous_snapshot() {
    let project = project();
    assert_exit(&run(&project, &["--as-of", D1]), 0);
    let before = manifest(&project, "customer_totals", D1).unwrap();

    project
        .land(&format!("orders/{D1}/orders.csv"), "order_id,customer_id,order_date,amount\nO1,C1,2024-06-01,-150.00\n");
    let output = run(&project, &["--as-of", D1]);
    assert_exit(&output, 5);
    assert!(
        stderr(&output).contains("2024-06-01: data tests failed; not published: customer_totals, customer_streaks"),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).contains("NOT PUBLISHED (failed expression(amount >= 0))"), "{}", stdout(&output));
    assert!(stdout(&output).contains("NOT PUBLISHED (upstream customer_totals failed)"), "{}", stdout(&output));

    assert_eq!(manifest(&project, "customer_totals", D1).unwrap(), before, "the committed snapshot is unchanged");
    let dir = project.warehouse().join(format!("marts/customer_totals/as_of={D1}"));
    assert_eq!(files_under(&dir).len(), 1, "the failed run's files are removed: {:?}", files_under(&dir));
    assert_eq!(query(&project, "SELECT sum(amount) AS total FROM customer_totals"), "total\n170.50");

    let ledger = project.last_ledger();
    let failed =
        ledger["steps"].as_array().unwrap().iter().find(|s| s["step"] == "test" && s["status"] == "failed").unwrap();
    assert_eq!(failed["failing_rows"], 1);
    assert_eq!(failed["sample"][0]["customer_id"], "C1");
    assert_eq!(failed["sample"][0]["amount"].as_f64(), Some(-150.0));
    assert_eq!(ledger["status"], "failed");
}

#[test]
fn a_unique_key_is_checked_as_the_sorted_rows_are_written_and_a_repeated_one_is_still_caught() {
    // customer_totals groups by its key: the rows written sorted by it repeat none, and the test
    // is decided from what the writer saw, without a query of the files.
    let project = project();
    assert_exit(&run(&project, &["--as-of", D1]), 0);
    let ledger = project.last_ledger();
    let tests: Vec<&serde_json::Value> =
        ledger["steps"].as_array().unwrap().iter().filter(|s| s["step"] == "test").collect();
    let unique = tests.iter().find(|s| s["test"] == "unique(customer_id)").unwrap();
    assert_eq!(unique["status"], "passed");
    assert!(unique["checked"].as_str().unwrap().starts_with("while written"), "{unique}");
    let expression = tests.iter().find(|s| s["test"] == "expression(amount >= 0)").unwrap();
    assert!(expression.get("checked").is_none(), "other tests query the files: {expression}");

    // The same mart keyed by customer but one row per order: C1's two orders on D2 repeat its
    // key. The test fails with the repeated key counted and shown, as the query reports it.
    project
        .write("sql/customer_totals.sql", "SELECT customer_id, 1 AS orders, amount, 0 AS big_orders FROM stg_orders\n");
    let output = run(&project, &["--as-of", D2]);
    assert_exit(&output, 5);
    assert!(stdout(&output).contains("NOT PUBLISHED (failed unique(customer_id))"), "{}", stdout(&output));
    let ledger = project.last_ledger();
    let failed =
        ledger["steps"].as_array().unwrap().iter().find(|s| s["step"] == "test" && s["status"] == "failed").unwrap();
    assert_eq!(failed["test"], "unique(customer_id)");
    assert_eq!(failed["failing_rows"], 1);
    assert_eq!(failed["sample"][0]["customer_id"], "C1");
    assert_eq!(failed["sample"][0]["occurrences"], 2);
    assert!(failed.get("checked").is_none(), "a repeated key is reported by the query: {failed}");
}

#[test]
fn a_relationships_test_reports_each_row_without_a_target_however_often_targets_repeat() {
    // The targets: C1 once per order (twice by D2), C2 never.
    let pipeline = PIPELINE
        .replace(
            "  - path: sql/customer_totals.sql\n",
            "  - {path: sql/known_customers.sql, materialized: view}\n  - path: sql/customer_totals.sql\n",
        )
        .replace(
            "      - unique: customer_id\n",
            "      - unique: customer_id\n      - relationships: {column: customer_id, to: known_customers.customer_id}\n",
        );
    let project = project_with(&pipeline);
    project.write("sql/known_customers.sql", "SELECT customer_id FROM stg_orders WHERE customer_id <> 'C2'\n");
    assert_exit(&project.ingest(D1), 0);
    let output = run(&project, &["--as-of", D2]);
    assert_exit(&output, 5);
    let ledger = project.last_ledger();
    let failed: Vec<&serde_json::Value> =
        ledger["steps"].as_array().unwrap().iter().filter(|s| s["step"] == "test" && s["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["test"], "relationships(customer_id → known_customers.customer_id)");
    assert_eq!(failed[0]["failing_rows"], 1);
    assert_eq!(failed[0]["sample"][0]["customer_id"], "C2");
}

#[test]
fn a_run_killed_before_commit_leaves_no_partial_snapshot_and_the_next_run_cleans_up() {
    let project = project();
    assert_exit(&run(&project, &["--as-of", D1]), 0);
    let before = manifest(&project, "customer_totals", D1).unwrap();

    let (mut child, _) = project.start_paused(&["--as-of", D1, "--rebuild"], &[]);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let dir = project.warehouse().join(format!("marts/customer_totals/as_of={D1}"));
    assert_eq!(files_under(&dir).len(), 2, "the killed run's file is there, uncommitted: {:?}", files_under(&dir));
    assert_eq!(manifest(&project, "customer_totals", D1).unwrap(), before, "readers still see the old snapshot");
    assert_eq!(query(&project, "SELECT sum(amount) AS total FROM customer_totals"), "total\n170.50");
    let staging = project.warehouse().join("_staging");
    assert!(staging.read_dir().is_ok_and(|mut d| d.next().is_some()), "the killed run's staging folder is left");

    // The dead run's lock expires (2 s in this project) and is taken over.
    std::thread::sleep(Duration::from_millis(2500));
    let output = run(&project, &["--as-of", D1, "--rebuild"]);
    assert_exit(&output, 0);
    // Older than the retention (2 s here): the killed run's file and the replaced one go.
    assert_eq!(files_under(&dir).len(), 1, "leftovers removed by the next successful run: {:?}", files_under(&dir));
    assert!(!staging.exists(), "and the killed run's staging files: {:?}", files_under(&staging));
    let unlocked = project.keymart(&["unlock"]);
    assert_eq!(stdout(&unlocked).trim(), "the warehouse was not locked", "the lock is released");
}

#[test]
fn two_concurrent_runs_exactly_one_proceeds() {
    let project = project();
    let (mut first, _) = project.start_paused(&["--as-of", D1], &[]);
    let second = run(&project, &["--as-of", D2]);
    assert_exit(&second, 4);
    let message = stderr(&second);
    assert!(message.contains("is locked by run") && message.contains("(run) on host"), "{message}");
    first.kill().unwrap();
    first.wait().unwrap();

    let unlocked = project.keymart(&["unlock"]);
    assert_exit(&unlocked, 0);
    assert!(stdout(&unlocked).contains("removed the lock of run"), "{}", stdout(&unlocked));
    assert_exit(&run(&project, &["--as-of", D2]), 0);
}

#[test]
fn a_retry_replays_the_original_dates() {
    let project = project();
    project
        .land(&format!("orders/{D2}/orders.csv"), "order_id,customer_id,order_date,amount\nO3,C1,2024-06-02,-500.00\n");
    assert_exit(&run(&project, &["--from", D1, "--to", D2]), 5);
    assert!(manifest(&project, "customer_totals", D2).is_none());

    project
        .land(&format!("orders/{D2}/orders.csv"), "order_id,customer_id,order_date,amount\nO3,C1,2024-06-02,10.00\n");
    let retry = run(&project, &["--retry", "last"]);
    assert_exit(&retry, 0);
    assert!(stdout(&retry).contains("2024-06-01: skipped"), "{}", stdout(&retry));
    assert!(manifest(&project, "customer_totals", D2).is_some());
}

#[test]
fn missing_extracts_fail_the_date_with_exit_code_3() {
    let project = project();
    let output = run(&project, &["--as-of", "2024-07-01"]);
    assert_exit(&output, 3);
    assert!(stderr(&output).contains("orders: no landing folder for 2024-07-01"), "{}", stderr(&output));
    assert!(!project.warehouse().join("marts").exists());
}

#[test]
fn a_nested_value_is_written_to_csv_as_the_table_shows_it() {
    let project = project();
    let csv = query(&project, "SELECT named_struct('alpha', 1.5, 'tag', 'x') AS fit, [1, 2] AS xs, 3 AS n");
    assert_eq!(csv, "fit,xs,n\n\"{alpha: 1.5, tag: x}\",\"[1, 2]\",3");
}

#[test]
fn query_is_read_only() {
    let project = project();
    assert_exit(&run(&project, &["--as-of", D1]), 0);
    for statement in [
        "DELETE FROM customer_totals",
        "CREATE TABLE t AS SELECT 1",
        "INSERT INTO customer_totals SELECT * FROM customer_totals",
        "COPY (SELECT 1) TO 'out.csv'",
    ] {
        let output = project.keymart(&["query", statement]);
        assert_exit(&output, 2);
        assert!(stderr(&output).contains("keymart query is read-only"), "{statement}: {}", stderr(&output));
    }
    assert!(!project.path().join("out.csv").exists());
    // Files by path are readable too.
    let raw = project.warehouse().join("raw/orders/load_date=2024-06-01/part-0.parquet");
    assert_eq!(query(&project, &format!("SELECT count(*) AS n FROM '{}'", raw.display())), "n\n2");
}

/// `query` streams: a result of many batches comes out whole and in order in every format (a
/// table per 8 192 rows).
#[test]
fn a_large_query_result_streams_out_whole_in_every_format() {
    let project = project();
    const ROWS: usize = 50_000;
    let sql = format!("SELECT value AS n, value * 2 AS twice FROM generate_series(1, {ROWS}) ORDER BY n");
    let printed = |format: &str| {
        let output = project.keymart(&["query", &sql, "--format", format]);
        assert_exit(&output, 0);
        stdout(&output)
    };

    let csv = printed("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), ROWS + 1);
    assert_eq!(lines[0], "n,twice");
    for (i, line) in lines[1..].iter().enumerate() {
        assert_eq!(*line, format!("{},{}", i + 1, 2 * (i + 1)));
    }

    let json: Vec<serde_json::Value> = serde_json::from_str(&printed("json")).unwrap();
    assert_eq!(json.len(), ROWS);
    assert_eq!(json[ROWS - 1], serde_json::json!({"n": ROWS, "twice": 2 * ROWS}));

    let table = printed("table");
    let headers = table.lines().filter(|l| l.split('|').map(str::trim).collect::<Vec<_>>() == ["", "n", "twice", ""]);
    assert_eq!(headers.count(), ROWS.div_ceil(8192));
    let rows: Vec<u64> =
        table.lines().filter_map(|l| l.split('|').nth(1).and_then(|cell| cell.trim().parse().ok())).collect();
    assert_eq!(rows, (1..=ROWS as u64).collect::<Vec<_>>());
}

#[test]
fn a_query_past_its_timeout_is_cancelled_with_exit_code_8() {
    let project = project();
    let mut command = keymart();
    command.arg("--project").arg(project.path()).args([
        "-q",
        "query",
        "SELECT sum(value % 7) AS s FROM generate_series(1, 1000000000000)",
        "--timeout",
        "1",
    ]);
    let output = output_within(command, Duration::from_secs(120));
    assert_exit(&output, 8);
    assert_eq!(
        stderr(&output).trim(),
        "error: query: cancelled after --timeout 1 s (rows printed before it are a partial result)"
    );
    let zero = project.keymart(&["query", "SELECT 1", "--timeout", "0"]);
    assert_exit(&zero, 2);
    assert!(stderr(&zero).contains("--timeout 0: a number of seconds above 0"), "{}", stderr(&zero));
}

#[test]
fn check_and_dag_name_sql_problems_with_file_and_line() {
    let project = project();
    let dag = project.keymart(&["dag"]);
    assert_exit(&dag, 0);
    insta::assert_snapshot!("dag_text", stdout(&dag));

    project.write("sql/stg_orders.sql", "SELECT * FROM orders JOIN customer_streaks USING (customer_id)\n");
    project.write("sql/extra.sql", "SELECT customer_id\nFROM stg_order\n");
    project.write("sql/broken.sql", "SELECT customer_id,,\nFROM orders\n");
    let pipeline = std::fs::read_to_string(project.path().join("pipelines/test.yaml")).unwrap();
    let more = "  - path: sql/extra.sql\n    materialized: view\n  - path: sql/broken.sql\n    materialized: view\n";
    std::fs::write(project.path().join("pipelines/test.yaml"), pipeline + more).unwrap();
    let output = project.keymart(&["check"]);
    assert_exit(&output, 2);
    insta::assert_snapshot!("check_sql_problems", stderr(&output));
}

#[test]
fn a_model_reading_one_whose_sql_does_not_parse_gets_the_syntax_error_not_a_crash() {
    let project = project();
    project.write("sql/broken.sql", "SELECT customer_id,,\nFROM orders\n");
    project.write("sql/reads_broken.sql", "SELECT customer_id FROM broken\n");
    let pipeline = std::fs::read_to_string(project.path().join("pipelines/test.yaml")).unwrap();
    let more =
        "  - path: sql/broken.sql\n    materialized: view\n  - path: sql/reads_broken.sql\n    materialized: view\n";
    std::fs::write(project.path().join("pipelines/test.yaml"), pipeline + more).unwrap();
    for command in ["check", "run"] {
        let output = project.keymart(&[command]);
        assert_exit(&output, 2);
        assert_eq!(
            stderr(&output).trim(),
            "error: 1 configuration error:\nsql/broken.sql:1:20: SQL syntax: Expected: an expression, found: ,",
            "keymart {command}"
        );
    }
}

#[test]
fn select_runs_a_model_and_what_is_downstream_of_it() {
    let project = project();
    assert_exit(&run(&project, &["--as-of", D1]), 0);
    let streaks_before = manifest(&project, "customer_streaks", D1).unwrap();
    let output = run(&project, &["--as-of", D1, "--select", "customer_totals", "--rebuild"]);
    assert_exit(&output, 0);
    assert_ne!(manifest(&project, "customer_totals", D1).unwrap()["run_id"], streaks_before["run_id"]);
    assert_eq!(manifest(&project, "customer_streaks", D1).unwrap(), streaks_before, "not selected: untouched");

    let output = run(&project, &["--as-of", D1, "--select", "customer_totals+", "--rebuild"]);
    assert_exit(&output, 0);
    assert_ne!(manifest(&project, "customer_streaks", D1).unwrap()["run_id"], streaks_before["run_id"]);

    let output = run(&project, &["--as-of", D1, "--select", "nope"]);
    assert_exit(&output, 2);
    assert!(stderr(&output).contains("no model `nope` to select"), "{}", stderr(&output));
}

#[test]
fn a_mart_may_not_publish_personal_data_unless_allowed() {
    let project = project();
    let pipeline = PIPELINE.replace(
        "      - {name: customer_id, type: string, nullable: false}\n      - {name: order_date",
        "      - {name: customer_id, type: string, nullable: false, pii: true}\n      - {name: order_date",
    );
    std::fs::write(project.path().join("pipelines/test.yaml"), &pipeline).unwrap();
    let output = run(&project, &["--as-of", D1]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("mart `customer_totals` would publish personal data (customer_id)"),
        "{}",
        stderr(&output)
    );

    let allowed =
        pipeline.replace("    key: [customer_id]\n", "    key: [customer_id]\n    allow_pii: [customer_id]\n");
    std::fs::write(project.path().join("pipelines/test.yaml"), allowed).unwrap();
    assert_exit(&run(&project, &["--as-of", D1]), 0);
}
