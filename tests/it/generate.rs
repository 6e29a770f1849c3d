//! `keymart generate`: deterministic for a seed, and every row of mess it injects is caught by
//! ingest exactly as its manifest says (the generator's parameters are the independent check).

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::{TestProject, assert_exit, files_under, keymart};

fn generate(out: &Path, seed: u64, extra: &[&str]) {
    let output = keymart()
        .args(["-q", "generate", "--out"])
        .arg(out)
        .args(["--customers", "300", "--days", "4", "--history-days", "60", "--start", "2024-03-01"])
        .args(["--seed", &seed.to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert_exit(&output, 0);
}

/// Every file under `dir` with its content hash.
fn tree(dir: &Path) -> BTreeMap<String, u64> {
    files_under(dir)
        .into_iter()
        .map(|relative| {
            let hash = xxhash_rust::xxh3::xxh3_64(&std::fs::read(dir.join(&relative)).unwrap());
            (relative, hash)
        })
        .collect()
}

#[test]
fn the_same_seed_writes_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    generate(&dir.path().join("a"), 7, &["--dirty-rate", "0.05"]);
    generate(&dir.path().join("b"), 7, &["--dirty-rate", "0.05"]);
    generate(&dir.path().join("c"), 8, &["--dirty-rate", "0.05"]);
    let (a, b, c) = (tree(&dir.path().join("a")), tree(&dir.path().join("b")), tree(&dir.path().join("c")));
    assert!(a.len() >= 16, "four sources × four days: {a:?}");
    assert!(a.keys().any(|f| f.ends_with(".xlsx")) && a.keys().any(|f| f.ends_with(".jsonl")));
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn every_injected_mess_is_caught_as_the_manifest_says() {
    let project = TestProject::shipped();
    generate(&project.landing(), 11, &["--dirty-rate", "0.04"]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.landing().join("_manifest.json")).unwrap()).unwrap();
    let mut dirt_seen: BTreeMap<String, u64> = BTreeMap::new();
    for date in ["2024-03-01", "2024-03-02", "2024-03-03", "2024-03-04"] {
        assert_exit(&project.ingest(date), 0);
        let ledger = project.last_ledger();
        for extract in manifest["extracts"].as_array().unwrap().iter().filter(|e| e["date"] == date) {
            let source = extract["source"].as_str().unwrap();
            let expected = &extract["expected"];
            let load = ledger["steps"].as_array().unwrap().iter().find(|s| s["source"] == source).unwrap();
            let context = format!("{source} on {date}");
            assert_eq!(load["rows_read"], expected["rows"], "{context}");
            assert_eq!(load["rows_loaded"], expected["loaded"], "{context}");
            assert_eq!(load["rejects_by_reason"], expected["rejected"], "{context}");
            for (kind, n) in expected["dirt"].as_object().unwrap() {
                *dirt_seen.entry(kind.clone()).or_default() += n.as_u64().unwrap();
            }
        }
    }
    // The test means something only if every kind of mess was drawn at least once.
    let kinds: Vec<&str> = dirt_seen.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "alt_date_format",
            "bad_date",
            "bad_encoding",
            "bad_timestamp",
            "duplicate_line",
            "negative_quantity",
            "thousands_separator",
            "trailing_blanks",
            "unknown_customer"
        ]
    );
}
