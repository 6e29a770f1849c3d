//! Marts as Delta Lake tables, read by readers keymart did not write: DuckDB's delta extension
//! and the test's own replay of the log (tests/it/delta/readers.py), against `keymart query`.
//! Writes that must not become visible (a failing test, a killed run) and two writers racing for
//! one version.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{DeltaLog, SAMPLE_MARTS, TestProject, assert_exit, repo_root, stderr, stdout};

const DAYS: [&str; 3] = ["2024-06-01", "2024-06-02", "2024-06-03"];

/// The virtualenv with tests/it/delta/requirements.txt (.ci/run makes it).
fn delta_python() -> PathBuf {
    std::env::var_os("KEYMART_DELTA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/delta-venv"))
        .join("bin/python")
}

fn sample_project() -> TestProject {
    let project = TestProject::shipped();
    crate::support::copy_dir(&repo_root().join("warehouse/landing"), &project.landing());
    project
}

/// Run the independent readers on every (mart, date) given, each against what `keymart query
/// --as-of` prints for it; their report lines.
fn independent_readers_agree(project: &TestProject, cases: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let mut listed = Vec::new();
    for (n, (mart, day)) in cases.iter().enumerate() {
        let output = project.keymart(&["query", &format!("SELECT * FROM {mart}"), "--as-of", day, "--format", "csv"]);
        assert_exit(&output, 0);
        let csv = dir.path().join(format!("{n}.csv"));
        std::fs::write(&csv, &output.stdout).unwrap();
        let table = project.warehouse().join(format!("marts/{mart}"));
        listed.push(serde_json::json!({ "table": table, "as_of": day, "csv": csv }));
    }
    let cases_file = dir.path().join("cases.json");
    std::fs::write(&cases_file, serde_json::to_vec(&listed).unwrap()).unwrap();
    let output = Command::new(delta_python())
        .arg(repo_root().join("tests/it/delta/readers.py"))
        .arg(&cases_file)
        .output()
        .expect("the delta virtualenv's python (.ci/run makes target/delta-venv)");
    assert!(output.status.success(), "the readers disagree:\n{}\n{}", stdout(&output), stderr(&output));
    stdout(&output).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn every_mart_at_every_date_reads_the_same_in_duckdb_a_log_replay_and_keymart() {
    let project = sample_project();
    assert_exit(&project.keymart(&["run", "--from", DAYS[0], "--to", DAYS[2]]), 0);
    let cases: Vec<(&str, &str)> = SAMPLE_MARTS.iter().flat_map(|m| DAYS.iter().map(move |d| (*m, *d))).collect();
    let reports = independent_readers_agree(&project, &cases);
    assert_eq!(reports.len(), cases.len());
    // The readers compared real rows: every customer-level mart has customers every day.
    for report in reports.iter().filter(|r| r["table"].as_str().unwrap().ends_with("customer_rfm")) {
        assert!(report["rows"].as_u64().unwrap() > 100, "{report}");
    }
    // One commit per published snapshot after the table's creation.
    for mart in SAMPLE_MARTS {
        let log = DeltaLog::read_dir(&project.warehouse().join(format!("marts/{mart}")));
        assert_eq!(log.version, Some(DAYS.len() as u64), "{mart}");
    }
}

#[test]
fn a_failed_test_and_a_killed_run_leave_the_previous_version_readable() {
    let project = sample_project();
    assert_exit(&project.keymart(&["run", "--as-of", DAYS[0]]), 0);
    let before = project.snapshot("customer_rfm", DAYS[0]).unwrap();

    // Killed between writing its files and committing them: the files are there, the log does
    // not name them, and every reader still reads the first run's snapshot.
    let (mut child, _marker) = project.start_paused(&["--as-of", DAYS[0], "--rebuild"], &[]);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(project.snapshot("customer_rfm", DAYS[0]).unwrap(), before);
    let written =
        crate::support::files_under(&project.warehouse().join(format!("marts/customer_rfm/as_of={}", DAYS[0])));
    assert!(written.len() > 1, "the killed run wrote files beside the committed ones: {written:?}");
    independent_readers_agree(&project, &[("customer_rfm", DAYS[0]), ("key_accounts", DAYS[0])]);

    // The next run (its lock cleared by the operator) commits over it; the killed run's files
    // stay unnamed.
    assert_exit(&project.keymart(&["unlock"]), 0);
    assert_exit(&project.keymart(&["run", "--as-of", DAYS[0], "--rebuild"]), 0);
    let after = project.snapshot("customer_rfm", DAYS[0]).unwrap();
    assert_ne!(after["run_id"], before["run_id"]);
    assert_eq!(crate::support::manifest_files(&after).len(), 1);
    independent_readers_agree(&project, &[("customer_rfm", DAYS[0])]);
}

/// A warehouse as keymart wrote it before marts were Delta tables: each snapshot's files under
/// `as_of=D/<run_id>/` and a `_SUCCESS` manifest naming them, no `_delta_log/`. Made from a run's
/// tables, so that its files are real.
fn as_before_delta(project: &TestProject, marts: &[&str], days: &[&str]) {
    for mart in marts {
        let table = project.warehouse().join(format!("marts/{mart}"));
        for day in days {
            let snapshot = project.snapshot(mart, day).unwrap();
            let manifest = serde_json::json!({
                "mart": mart, "as_of": day, "run_id": snapshot["run_id"], "files": snapshot["files"],
                "rows": snapshot["rows"], "schema": ["as_of Date32"], "schema_hash": snapshot["schema_hash"],
                "inputs": snapshot["inputs"], "committed_at": snapshot["committed_at"],
            });
            std::fs::write(table.join(format!("as_of={day}/_SUCCESS")), serde_json::to_vec_pretty(&manifest).unwrap())
                .unwrap();
        }
        std::fs::remove_dir_all(table.join("_delta_log")).unwrap();
    }
}

#[test]
fn migrate_turns_success_manifests_into_tables_and_other_commands_refuse_until_then() {
    let project = sample_project();
    assert_exit(&project.keymart(&["run", "--from", DAYS[0], "--to", DAYS[1]]), 0);
    let before: Vec<_> = SAMPLE_MARTS.iter().map(|m| (m, project.committed_file(m, DAYS[1]))).collect();
    as_before_delta(&project, &SAMPLE_MARTS, &DAYS[..2]);

    let refused = project.keymart(&["query", "SELECT count(*) FROM customer_rfm"]);
    assert_exit(&refused, 2);
    assert!(stderr(&refused).contains("run `keymart migrate` once"), "{}", stderr(&refused));

    let migrated = project.keymart(&["migrate"]);
    assert_exit(&migrated, 0);
    assert!(stdout(&migrated).contains("migrated 9 marts: 18 snapshots committed"), "{}", stdout(&migrated));
    for (mart, bytes) in &before {
        assert_eq!(&project.committed_file(mart, DAYS[1]), bytes, "{mart}: the same files, not rewritten");
        let log = DeltaLog::read_dir(&project.warehouse().join(format!("marts/{mart}")));
        assert_eq!(log.version, Some(2), "{mart}: created, then one commit per date");
    }
    assert!(crate::support::files_under(&project.warehouse().join("marts")).iter().all(|f| !f.ends_with("_SUCCESS")));
    independent_readers_agree(&project, &[("customer_rfm", DAYS[0]), ("key_accounts", DAYS[1])]);

    let again = project.keymart(&["migrate"]);
    assert_exit(&again, 0);
    assert!(stdout(&again).contains("nothing to migrate"), "{}", stdout(&again));
    // The next night builds on the migrated history.
    assert_exit(&project.keymart(&["run", "--as-of", DAYS[2]]), 0);
    assert!(project.snapshot("key_account_history", DAYS[2]).is_some());
}

#[test]
fn with_one_day_kept_old_snapshots_leave_the_tables_and_history_marts_are_unchanged() {
    let kept = sample_project();
    let pipeline = kept.path().join("pipelines/nightly.yaml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    std::fs::write(&pipeline, format!("{text}\nretention:\n  daily_days: 1\n")).unwrap();
    let all = sample_project();
    for day in DAYS {
        assert_exit(&kept.keymart(&["run", "--as-of", day]), 0);
        assert_exit(&all.keymart(&["run", "--as-of", day]), 0);
    }
    for mart in SAMPLE_MARTS {
        let log = DeltaLog::read_dir(&kept.warehouse().join(format!("marts/{mart}")));
        let days: std::collections::BTreeSet<&str> = log.files.values().map(String::as_str).collect();
        assert_eq!(days, [DAYS[2]].into_iter().collect(), "{mart}: only the newest snapshot is kept");
        assert!(!log.configuration.contains_key(&format!("keymart.snapshot.{}", DAYS[0])), "{mart}: its facts go too");
    }
    // The SCD2 history and the segment migration read the previous night's snapshot, which the
    // rule kept until tonight's was published: the same bytes as with every snapshot kept.
    for mart in ["key_account_history", "segment_migration", "key_accounts"] {
        assert!(kept.committed_file(mart, DAYS[2]) == all.committed_file(mart, DAYS[2]), "{mart} differs");
    }
    independent_readers_agree(&kept, &[("key_account_history", DAYS[2])]);
    let ledger = kept.last_ledger();
    let pruned: Vec<_> = ledger["steps"].as_array().unwrap().iter().filter(|s| s["step"] == "prune").collect();
    assert_eq!(pruned.len(), SAMPLE_MARTS.len(), "{ledger}");
    assert_eq!(pruned[0]["dates"], serde_json::json!([DAYS[1]]));
}
