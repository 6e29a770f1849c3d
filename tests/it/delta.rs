//! Marts as Delta Lake tables, read by readers keymart did not write: DuckDB's delta extension
//! and the test's own replay of the log (tests/it/delta/readers.py), against `keymart query`.
//! Writes that must not become visible (a failing test, a killed run) and two writers racing for
//! one version.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    readers_agree(&|args| project.keymart(args), &project.warehouse(), cases)
}

/// The readers on the tables under `warehouse/marts/` (a copy of a bucket's, for S3), against
/// `keymart query` as `keymart` runs it.
fn readers_agree(
    keymart: &dyn Fn(&[&str]) -> Output,
    warehouse: &Path,
    cases: &[(&str, &str)],
) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let mut listed = Vec::new();
    for (n, (mart, day)) in cases.iter().enumerate() {
        let output = keymart(&["query", &format!("SELECT * FROM {mart}"), "--as-of", day, "--format", "csv"]);
        assert_exit(&output, 0);
        let csv = dir.path().join(format!("{n}.csv"));
        std::fs::write(&csv, &output.stdout).unwrap();
        let table = warehouse.join(format!("marts/{mart}"));
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
    kept.append("pipelines/nightly.yaml", "retention:\n  daily_days: 1\n");
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

/// Each mart's run id for each of `days` (`None`: no snapshot of that date), from a Delta log.
fn run_ids(
    snapshot: impl Fn(&str, &str) -> Option<serde_json::Value>,
    days: &[&str],
) -> BTreeMap<String, Vec<Option<String>>> {
    SAMPLE_MARTS
        .iter()
        .map(|mart| {
            let ids = days.iter().map(|d| snapshot(mart, d).map(|s| s["run_id"].as_str().unwrap().to_string()));
            (mart.to_string(), ids.collect())
        })
        .collect()
}

/// The marts whose entries differ between two `run_ids`.
fn changed(
    before: &BTreeMap<String, Vec<Option<String>>>,
    after: &BTreeMap<String, Vec<Option<String>>>,
) -> Vec<String> {
    before.keys().filter(|m| before[*m] != after[*m]).cloned().collect()
}

#[test]
fn killed_after_its_first_commit_a_run_leaves_whole_versions_and_the_rerun_completes() {
    let project = sample_project();
    assert_exit(&project.keymart(&["run", "--as-of", DAYS[0]]), 0);
    let snapshot = |mart: &str, day: &str| project.snapshot(mart, day);
    let before = run_ids(snapshot, &DAYS[..2]);

    let (mut child, _marker) = project.start_paused_at("after_commit", &["--as-of", DAYS[1]], &[]);
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = run_ids(snapshot, &DAYS[..2]);
    let committed = changed(&before, &killed);
    assert_eq!(committed.len(), 1, "one mart committed before the kill: {killed:?}");
    assert!(killed[&committed[0]][1].is_some(), "{killed:?}");
    // Every table reads as a whole version: the first night everywhere, the second in one.
    let mut cases: Vec<(&str, &str)> = SAMPLE_MARTS.iter().map(|m| (*m, DAYS[0])).collect();
    cases.push((committed[0].as_str(), DAYS[1]));
    independent_readers_agree(&project, &cases);

    assert_exit(&project.keymart(&["unlock"]), 0);
    assert_exit(&project.keymart(&["run", "--as-of", DAYS[1]]), 0);
    let rerun = run_ids(snapshot, &DAYS[..2]);
    assert!(rerun.values().all(|ids| ids[1].is_some()), "{rerun:?}");
    let cases: Vec<(&str, &str)> = SAMPLE_MARTS.iter().map(|m| (*m, DAYS[1])).collect();
    independent_readers_agree(&project, &cases);
}

#[test]
fn on_s3_a_failed_test_and_kills_around_the_commit_leave_whole_versions() {
    use crate::s3::{SECRET, download, keymart_s3, s3_project, sample_lake, snapshot_on_bucket};
    let (server, bucket) = sample_lake();
    let project = s3_project(&server.endpoint(), "lake", "");
    let env = [("KEYMART_TEST_SECRET", SECRET)];
    let keymart = |args: &[&str]| keymart_s3(&project, args);
    let snapshot = |mart: &str, day: &str| snapshot_on_bucket(&bucket, mart, day);
    // The independent readers on a copy of the bucket's tables, against keymart on the bucket.
    let readers_agree_on_bucket = |cases: &[(&str, &str)]| {
        let copy = tempfile::tempdir().unwrap();
        download(&bucket, "wh/marts", &copy.path().join("marts"));
        readers_agree(&keymart, copy.path(), cases)
    };
    assert_exit(&keymart(&["run", "--as-of", DAYS[0]]), 0);
    let first_night: Vec<(&str, &str)> = SAMPLE_MARTS.iter().map(|m| (*m, DAYS[0])).collect();

    // An error-severity test fails on the second night: that mart keeps its first night only.
    let pipeline = project.path().join("pipelines/nightly.yaml");
    let original = std::fs::read_to_string(&pipeline).unwrap();
    let failing = r#"- {expression: "contacts < 0", severity: error}"#;
    let guarded =
        r#"- {expression: "mean_satisfaction IS NULL OR mean_satisfaction BETWEEN 1 AND 5", severity: error}"#;
    std::fs::write(&pipeline, original.replace(guarded, failing)).unwrap();
    assert_exit(&keymart(&["run", "--as-of", DAYS[1]]), 5);
    std::fs::write(&pipeline, &original).unwrap();
    assert!(snapshot("service_quality", DAYS[1]).is_none());
    readers_agree_on_bucket(&first_night);
    let tested = run_ids(snapshot, &DAYS[..2]);

    // Killed with its files written and nothing committed: every table as it was.
    let (mut child, _marker) = project.start_paused_at("before_commit", &["--as-of", DAYS[1]], &env);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(run_ids(snapshot, &DAYS[..2]), tested);
    readers_agree_on_bucket(&first_night);

    // Killed after its first commit: that table at its new version, the others as they were.
    assert_exit(&keymart(&["unlock"]), 0);
    let (mut child, _marker) = project.start_paused_at("after_commit", &["--as-of", DAYS[1]], &env);
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = run_ids(snapshot, &DAYS[..2]);
    let committed = changed(&tested, &killed);
    assert_eq!(committed.len(), 1, "{killed:?}");
    let mut cases = first_night.clone();
    cases.push((committed[0].as_str(), DAYS[1]));
    readers_agree_on_bucket(&cases);

    assert_exit(&keymart(&["unlock"]), 0);
    assert_exit(&keymart(&["run", "--as-of", DAYS[1]]), 0);
    let second_night: Vec<(&str, &str)> = SAMPLE_MARTS.iter().map(|m| (*m, DAYS[1])).collect();
    readers_agree_on_bucket(&second_night);
}

/// `service_quality` with a `tier` column of a declared type and SQL value, as if its SQL changed.
fn with_tier(project: &TestProject, declared: &str, value: &str) {
    let pipeline = project.path().join("pipelines/nightly.yaml");
    let text = std::fs::read_to_string(&pipeline).unwrap();
    let last = r#"      - {name: mean_satisfaction, type: float, description: "mean survey score, 1..5"}"#;
    let text = match text.find("      - {name: tier,") {
        Some(start) => {
            let end = start + text[start..].find('\n').unwrap();
            format!("{}      - {{name: tier, type: {declared}}}{}", &text[..start], &text[end..])
        }
        None => text.replacen(last, &format!("{last}\n      - {{name: tier, type: {declared}}}"), 1),
    };
    std::fs::write(&pipeline, text).unwrap();
    let sql = project.path().join("sql/marts/service_quality.sql");
    let text = std::fs::read_to_string(&sql).unwrap();
    let text = match (text.find("/* tier */ "), text.find(" AS tier")) {
        (Some(start), Some(end)) => format!("{}/* tier */ {value}{}", &text[..start], &text[end..]),
        _ => text.replacen(
            "    s.mean_satisfaction\n",
            &format!("    s.mean_satisfaction,\n    /* tier */ {value} AS tier\n"),
            1,
        ),
    };
    assert!(text.contains(&format!("/* tier */ {value} AS tier")), "{text}");
    std::fs::write(&sql, text).unwrap();
}

fn query_csv(project: &TestProject, sql: &str, day: &str) -> String {
    let output = project.keymart(&["query", sql, "--as-of", day, "--format", "csv"]);
    assert_exit(&output, 0);
    stdout(&output)
}

#[test]
fn a_gained_column_reads_as_null_before_it_and_a_changed_type_needs_rebuild_table() {
    let project = sample_project();
    assert_exit(&project.keymart(&["run", "--as-of", DAYS[0]]), 0);
    with_tier(&project, "int", "1");
    assert_exit(&project.keymart(&["run", "--as-of", DAYS[1]]), 0);

    // The first night's snapshot has the column, NULL in every row, for keymart and both readers.
    let counts = "SELECT count(tier) = 0 AND sum(tier) IS NULL AS all_null, count(tier) = count(*) AS all_set, \
                  sum(tier) = count(*) AS all_one, count(*) > 100 AS many FROM service_quality";
    let header = "all_null,all_set,all_one,many\n";
    assert_eq!(query_csv(&project, counts, DAYS[0]), format!("{header}true,false,,true\n"));
    assert_eq!(query_csv(&project, counts, DAYS[1]), format!("{header}false,true,true,true\n"));
    let history =
        "SELECT as_of, count(tier) > 0 AS with_tier FROM service_quality_history GROUP BY as_of ORDER BY as_of";
    let expected = format!("as_of,with_tier\n{},false\n{},true\n", DAYS[0], DAYS[1]);
    assert_eq!(query_csv(&project, history, DAYS[1]), expected);
    independent_readers_agree(&project, &[("service_quality", DAYS[0]), ("service_quality", DAYS[1])]);

    // A column that changes type is refused, naming it and the way out; nothing of the mart moves.
    with_tier(&project, "string", "'gold'");
    let refused = project.keymart(&["run", "--as-of", DAYS[2]]);
    assert_exit(&refused, 2);
    let message = stderr(&refused);
    assert!(message.contains("column `tier` was long and is now string"), "{message}");
    assert!(message.contains("--rebuild-table service_quality"), "{message}");
    assert!(project.snapshot("service_quality", DAYS[2]).is_none());

    // Asked explicitly, the table starts anew from tonight: no earlier snapshot, the new type.
    assert_exit(&project.keymart(&["run", "--as-of", DAYS[2], "--rebuild-table", "service_quality"]), 0);
    let log = DeltaLog::read_dir(&project.warehouse().join("marts/service_quality"));
    let days: std::collections::BTreeSet<&str> = log.files.values().map(String::as_str).collect();
    assert_eq!(days, [DAYS[2]].into_iter().collect());
    assert!(!log.configuration.contains_key(&format!("keymart.snapshot.{}", DAYS[0])));
    let tiers = "SELECT DISTINCT tier, as_of FROM service_quality_history";
    assert_eq!(query_csv(&project, tiers, DAYS[2]), format!("tier,as_of\ngold,{}\n", DAYS[2]));
    independent_readers_agree(&project, &[("service_quality", DAYS[2])]);
    // The other marts keep their history.
    assert!(project.snapshot("customer_rfm", DAYS[0]).is_some());
    let unknown = project.keymart(&["run", "--as-of", DAYS[2], "--rebuild-table", "stg_orders"]);
    assert_exit(&unknown, 2);
    assert!(
        stderr(&unknown).contains("--rebuild-table stg_orders: not a mart this run builds"),
        "{}",
        stderr(&unknown)
    );
}

/// How a date is found: `<mart>` as of D plans only the files the log names for D; a filter on
/// `as_of` over `<mart>_history` skips the other snapshots by their Parquet statistics (every
/// file's `as_of` has one value), so only D's rows are decoded.
#[test]
fn a_date_reads_only_its_snapshots_files() {
    let project = sample_project();
    assert_exit(&project.keymart(&["run", "--from", DAYS[0], "--to", DAYS[2]]), 0);
    let explain = |sql: &str, as_of: &str| query_csv(&project, &format!("EXPLAIN ANALYZE {sql}"), as_of);

    let plan = explain("SELECT count(DISTINCT customer_id) FROM customer_rfm", DAYS[1]);
    let scan = plan.lines().find(|l| l.contains("DataSourceExec")).expect("a scan");
    assert_eq!(scan.matches("part-0.parquet").count(), 1, "{scan}");
    assert!(scan.contains(&format!("as_of={}/", DAYS[1])), "{scan}");

    let filtered =
        format!("SELECT count(DISTINCT customer_id) FROM customer_rfm_history WHERE as_of = DATE '{}'", DAYS[1]);
    let plan = explain(&filtered, DAYS[2]);
    let scan = plan.lines().find(|l| l.contains("DataSourceExec")).expect("a scan");
    assert_eq!(scan.matches("part-0.parquet").count(), 3, "the history has three snapshots: {scan}");
    assert!(scan.contains("row_groups_pruned_statistics=3 total → 1 matched"), "{scan}");
}

/// `row_group_rows` bounds the row groups of every Parquet file a run writes (raw, staging and
/// mart files alike), as pyarrow reads their footers.
#[test]
fn every_file_a_run_writes_has_row_groups_of_row_group_rows() {
    let project = sample_project();
    project.append("keymart.yaml", "row_group_rows: 64\n");
    assert_exit(&project.keymart(&["run", "--as-of", DAYS[0]]), 0);
    let files: Vec<PathBuf> = crate::support::files_under(&project.warehouse())
        .into_iter()
        .filter(|f| f.ends_with(".parquet"))
        .map(|f| project.warehouse().join(f))
        .collect();
    let script = "import sys, json, pyarrow.parquet as pq\n\
                  for f in sys.argv[1:]:\n\
                  \x20   m = pq.ParquetFile(f).metadata\n\
                  \x20   print(json.dumps([m.num_rows, [m.row_group(i).num_rows for i in range(m.num_row_groups)]]))\n";
    let output = Command::new(delta_python()).arg("-c").arg(script).args(&files).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let footers: Vec<(u64, Vec<u64>)> = stdout(&output).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(footers.len(), files.len());
    let mart_rows: u64 = files
        .iter()
        .zip(&footers)
        .filter(|(f, _)| f.starts_with(project.warehouse().join("marts")))
        .map(|(_, (rows, _))| rows)
        .sum();
    assert!(mart_rows > 1000, "the marts hold more rows than one row group: {mart_rows}");
    for (file, (rows, groups)) in files.iter().zip(&footers) {
        let full_groups = (rows / 64) as usize;
        assert_eq!(groups.len(), rows.div_ceil(64) as usize, "{}: {groups:?}", file.display());
        assert!(groups[..full_groups].iter().all(|&n| n == 64), "{}: {groups:?}", file.display());
    }
}
