//! `keymart check` and configuration errors: every problem at once, each with file:line:column.

use crate::support::{TestProject, assert_exit, keymart, repo_root, stderr, stdout};

#[test]
fn the_shipped_project_is_valid() {
    let output = keymart().args(["check", "--project"]).arg(repo_root()).output().unwrap();
    assert_exit(&output, 0);
    assert!(stdout(&output).contains("ok — 1 pipeline (nightly), 4 sources"), "{}", stdout(&output));
}

#[test]
fn check_lists_every_problem_with_its_position() {
    let project = TestProject::new(
        r#"sources:
  orders:
    path: orders/*.csv
    format: csv
    csv: {delimiter: ";;", encoding: latin1}
    load: incremental
    primary_key: [order_id, line]
    columns:
      - {name: order_id, type: string, nullable: false}
      - {name: amount, type: "decimal(40,2)"}
      - {name: customer_id, type: string, references: customers.id}
      - {name: Status, type: string, nulable: false}
  visits:
    path: visits/{as_of}/*.csv
    format: jsonl
    csv: {header: true}
    load: sometimes
    columns: []
  returns:
    path: returns/{as_of}/*.csv
    format: csv
    load: full
    max_reject_ratio: 1.5
    columns:
      - {name: return_id, type: string, accepted_values: [a]}
      - {name: qty, type: int, accepted_values: [1]}
"#,
    );
    let output = project.keymart(&["check"]);
    assert_exit(&output, 2);
    insta::assert_snapshot!(stderr(&output));
}

#[test]
fn semantic_problems_are_all_reported_when_the_yaml_parses() {
    let project = TestProject::new(
        r#"sources:
  orders:
    path: orders/*.csv
    format: jsonl
    csv: {delimiter: ";;"}
    load: incremental
    primary_key: [order_id, line]
    columns:
      - {name: order_id, type: string}
      - {name: customer_id, type: string, references: customers.id}
      - {name: Status, type: int, accepted_values: [open]}
"#,
    );
    let output = project.keymart(&["check"]);
    assert_exit(&output, 2);
    insta::assert_snapshot!(stderr(&output));
}

#[test]
fn a_yaml_syntax_error_names_its_line() {
    let project = TestProject::new("sources:\n  orders: [unclosed\n");
    std::fs::write(project.path().join("keymart.yaml"), "warehouse: ./warehouse\nwarehous: typo\n").unwrap();
    let output = project.keymart(&["check"]);
    assert_exit(&output, 2);
    insta::assert_snapshot!(stderr(&output));
}

#[test]
fn an_engine_that_is_neither_local_nor_a_ballista_url_is_reported_at_its_line() {
    let project = TestProject::new("sources: {}\n");
    std::fs::write(project.path().join("keymart.yaml"), "warehouse: ./warehouse\nengine: ballista://scheduler\n")
        .unwrap();
    let output = project.keymart(&["check"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("keymart.yaml:2:9: engine: `ballista://scheduler`: expected `ballista://HOST:PORT`"),
        "{}",
        stderr(&output)
    );
    // The same mistake on the command line is one line and exit 2 too.
    std::fs::write(project.path().join("keymart.yaml"), "warehouse: ./warehouse\n").unwrap();
    let output = project.keymart(&["run", "--as-of", "2024-06-01", "--engine", "spark://x:1"]);
    assert_exit(&output, 2);
    assert!(stderr(&output).contains("expected `local` or `ballista://HOST:PORT`"), "{}", stderr(&output));
}

#[test]
fn numeric_settings_out_of_range_are_each_named_by_check() {
    let project = TestProject::new("sources: {}\n");
    std::fs::write(
        project.path().join("keymart.yaml"),
        "warehouse: ./warehouse\nlock_ttl_seconds: 99999999999999\nmemory_limit_mb: 0\nballista_wait_seconds: 0\nrow_group_rows: 0\n",
    )
    .unwrap();
    let output = project.keymart(&["check"]);
    assert_exit(&output, 2);
    let message = stderr(&output);
    assert!(message.contains("keymart.yaml:2:19: lock_ttl_seconds: must be between 2 and 86400 seconds"), "{message}");
    assert!(message.contains("keymart.yaml:3:18: memory_limit_mb: must be between 64 and 1048576 MB"), "{message}");
    assert!(
        message.contains("keymart.yaml:4:24: ballista_wait_seconds: must be between 1 and 3600 seconds"),
        "{message}"
    );
    assert!(message.contains("keymart.yaml:5:17: row_group_rows: must be between 1 and 16777216 rows"), "{message}");
}
