//! Data health of a night, from the ledger of the run that committed its snapshot
//! (`_runs/<run_id>.json`): rows read, loaded and rejected per source, the data tests that failed
//! or warned. Read as JSON: the report depends on the ledger's published fields, not on `run`.

use chrono::NaiveDate;
use object_store::ObjectStoreExt;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::warehouse::Warehouse;

/// The fields of a ledger the report reads.
#[derive(Debug, Clone, Deserialize)]
struct Ledger {
    run_id: String,
    status: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    steps: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Health {
    pub run_id: String,
    pub run_status: String,
    pub run_error: Option<String>,
    pub sources: Vec<SourceHealth>,
    pub tests: usize,
    /// Tests with severity `error` that failed (their marts were not published).
    pub failed: Vec<TestHealth>,
    /// Tests with severity `warn` that failed.
    pub warned: Vec<TestHealth>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SourceHealth {
    pub source: String,
    pub status: String,
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    /// `reason (count)`, most frequent first.
    pub reasons: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct TestHealth {
    pub model: String,
    pub test: String,
    pub failing_rows: u64,
}

/// The health of night `as_of` from run `run_id`'s ledger; `None` when the ledger is gone.
pub(crate) async fn read(warehouse: &Warehouse, run_id: &str, as_of: NaiveDate) -> Result<Option<Health>> {
    let key = warehouse.layout().run_ledger(run_id);
    let bytes = match warehouse.location.store.get(&key).await {
        Ok(result) => result
            .bytes()
            .await
            .map_err(|e| Error::storage(format!("reading {}", warehouse.location.url_of(&key)), e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(Error::storage(format!("reading {}", warehouse.location.url_of(&key)), e)),
    };
    let ledger: Ledger = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Internal(format!("{} is not a run ledger: {e}", warehouse.location.url_of(&key))))?;
    Ok(Some(health(ledger, as_of)))
}

fn health(ledger: Ledger, as_of: NaiveDate) -> Health {
    let day = as_of.to_string();
    let text = |step: &serde_json::Value, field: &str| step[field].as_str().unwrap_or_default().to_string();
    let count = |step: &serde_json::Value, field: &str| step[field].as_u64().unwrap_or(0);
    let mut health =
        Health { run_id: ledger.run_id, run_status: ledger.status, run_error: ledger.error, ..Health::default() };
    for step in &ledger.steps {
        match step["step"].as_str() {
            Some("ingest") if step["load_date"].as_str() == Some(&day) => {
                let mut reasons: Vec<(String, u64)> = step["rejects_by_reason"]
                    .as_object()
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0))).collect())
                    .unwrap_or_default();
                reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                health.sources.push(SourceHealth {
                    source: text(step, "source"),
                    status: text(step, "status"),
                    rows_read: count(step, "rows_read"),
                    rows_loaded: count(step, "rows_loaded"),
                    rows_rejected: count(step, "rows_rejected"),
                    reasons,
                });
            }
            Some("test") if step["as_of"].as_str() == Some(&day) => {
                health.tests += 1;
                if step["status"].as_str() != Some("failed") {
                    continue;
                }
                let test = TestHealth {
                    model: text(step, "model"),
                    test: text(step, "test"),
                    failing_rows: count(step, "failing_rows"),
                };
                if step["severity"].as_str() == Some("warn") {
                    health.warned.push(test);
                } else {
                    health.failed.push(test);
                }
            }
            _ => {}
        }
    }
    health
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_nights_loads_and_tests_count() {
        let ledger: Ledger = serde_json::from_value(serde_json::json!({
            "run_id": "r1", "status": "succeeded",
            "steps": [
                {"step": "ingest", "source": "orders", "load_date": "2024-06-01", "status": "loaded",
                 "rows_read": 9, "rows_loaded": 9, "rows_rejected": 0, "rejects_by_reason": {}},
                {"step": "ingest", "source": "orders", "load_date": "2024-06-02", "status": "loaded",
                 "rows_read": 12, "rows_loaded": 10, "rows_rejected": 2,
                 "rejects_by_reason": {"invalid date": 1, "duplicate key": 1}},
                {"step": "test", "as_of": "2024-06-02", "model": "m", "test": "unique(id)", "severity": "error",
                 "status": "passed", "failing_rows": 0},
                {"step": "test", "as_of": "2024-06-02", "model": "m", "test": "x > 0", "severity": "warn",
                 "status": "failed", "failing_rows": 3},
                {"step": "test", "as_of": "2024-06-01", "model": "m", "test": "x > 0", "severity": "error",
                 "status": "failed", "failing_rows": 1}
            ]
        }))
        .unwrap();
        let health = health(ledger, NaiveDate::from_ymd_opt(2024, 6, 2).unwrap());
        assert_eq!(health.sources.len(), 1);
        let orders = &health.sources[0];
        assert_eq!((orders.rows_read, orders.rows_loaded, orders.rows_rejected), (12, 10, 2));
        assert_eq!(orders.reasons, vec![("duplicate key".to_string(), 1), ("invalid date".to_string(), 1)]);
        assert_eq!(health.tests, 2);
        assert!(health.failed.is_empty());
        assert_eq!(health.warned.len(), 1);
        assert_eq!(health.warned[0].failing_rows, 3);
    }
}
