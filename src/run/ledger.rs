//! The run ledger: `_runs/<run_id>.json`, one per command that changes the warehouse. Written
//! when the run starts (status `running`), after each date, and when it ends, so a killed run
//! leaves a trace of how far it got.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::alerts::{Delivery, DeliveryStatus};
use crate::audit::TestOutcome;
use crate::error::Result;
use crate::ingest::SourceLoad;
use crate::publish::lock::hostname;
use crate::transform::{Materialization, SourceTable};
use crate::warehouse::{Location, Warehouse};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
}

/// One step of a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Ingest(SourceLoad),
    /// A date whose marts are already committed from the same inputs.
    Skip {
        as_of: NaiveDate,
        reason: String,
    },
    /// The loads each source table read for a date.
    Sources {
        as_of: NaiveDate,
        tables: Vec<SourceTable>,
    },
    Model {
        as_of: NaiveDate,
        engine: String,
        #[serde(flatten)]
        run: Materialization,
    },
    /// A model not run because something it reads failed a blocking test.
    Blocked {
        as_of: NaiveDate,
        model: String,
        because: String,
    },
    Test {
        as_of: NaiveDate,
        #[serde(flatten)]
        outcome: TestOutcome,
    },
    Publish {
        as_of: NaiveDate,
        mart: String,
        files: Vec<String>,
        rows: u64,
        /// The version of the mart's Delta table that the commit made.
        version: u64,
        /// The commit's time: the log entry, and the removal of expired files after it.
        seconds: f64,
    },
    /// Snapshots the pipeline's `retention:` no longer keeps, removed from a mart's table.
    Prune {
        as_of: NaiveDate,
        mart: String,
        dates: Vec<NaiveDate>,
    },
    /// A night's alert to one target: sent, nothing to send, or failed (why, secrets masked).
    Alert(Delivery),
}

/// What was asked for, so that `keymart run --retry` can replay it exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub pipeline: String,
    pub dates: Vec<NaiveDate>,
    #[serde(default)]
    pub select: Vec<String>,
    #[serde(default)]
    pub rebuild: bool,
    /// Incremental models computed from all history (`--full`).
    #[serde(default)]
    pub full: bool,
    /// Marts whose tables start anew from the first date (`--rebuild-table`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rebuild_tables: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ledger {
    pub run_id: String,
    pub command: String,
    pub request: Request,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    pub keymart_version: String,
    pub host: String,
    pub pid: u32,
    pub warehouse: String,
    pub landing: String,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Object-store requests by kind, per store (filled in when the run ends).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Ledger {
    pub fn start(run_id: &str, command: &str, request: Request, warehouse: &str, landing: &str) -> Ledger {
        Ledger {
            run_id: run_id.to_string(),
            command: command.to_string(),
            request,
            status: RunStatus::Running,
            started_at: Utc::now(),
            finished_at: None,
            keymart_version: env!("CARGO_PKG_VERSION").to_string(),
            host: hostname(),
            pid: std::process::id(),
            warehouse: warehouse.to_string(),
            landing: landing.to_string(),
            steps: Vec::new(),
            error: None,
            requests: BTreeMap::new(),
        }
    }

    pub fn finish(&mut self, status: RunStatus, error: Option<String>) {
        self.status = status;
        self.error = error;
        self.finished_at = Some(Utc::now());
    }

    /// Record the requests made to the warehouse (and to the landing zone, when it is another store).
    pub fn count_requests(&mut self, warehouse: &Location, landing: &Location) {
        self.requests.insert("warehouse".into(), warehouse.requests.snapshot());
        if !Arc::ptr_eq(&warehouse.requests, &landing.requests) {
            self.requests.insert("landing".into(), landing.requests.snapshot());
        }
    }

    pub async fn save(&self, warehouse: &Warehouse) -> Result<()> {
        let key = warehouse.layout().run_ledger(&self.run_id);
        let json = serde_json::to_string_pretty(self).expect("ledger serializes");
        // A step's or load's message may quote a store's error that never became a keymart
        // error: the whole document is scrubbed of credentials.
        let json = crate::error::secrets::scrub(&json).into_owned();
        warehouse.location.put_own(&key, json.into_bytes()).await
    }
}

/// The fields of a stored ledger that `runs` and `--retry` read.
#[derive(Debug, Clone, Deserialize)]
pub struct LedgerSummary {
    pub run_id: String,
    pub command: String,
    pub request: Request,
    pub status: RunStatus,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Every ledger in the warehouse, newest first.
pub async fn list(warehouse: &Warehouse) -> Result<Vec<LedgerSummary>> {
    let mut ledgers: Vec<LedgerSummary> =
        stored(warehouse).await?.iter().filter_map(|bytes| serde_json::from_slice(bytes).ok()).collect();
    ledgers.sort_by_key(|l| std::cmp::Reverse(l.started_at));
    Ok(ledgers)
}

/// The text of every ledger stored under `_runs/`.
async fn stored(warehouse: &Warehouse) -> Result<Vec<bytes::Bytes>> {
    let location = &warehouse.location;
    let mut found = Vec::new();
    for object in location.list(warehouse.layout().runs_dir()).await? {
        let relative = location.relative(&object.location);
        if relative.matches('/').count() == 1 && relative.ends_with(".json") {
            found.push(location.get_bytes(&object.location).await?);
        }
    }
    Ok(found)
}

/// The steps of a stored ledger that record alerts.
#[derive(Debug, Deserialize)]
struct AlertSteps {
    run_id: String,
    #[serde(default)]
    steps: Vec<serde_json::Value>,
}

/// Every (target, night) whose alert was settled — delivered, or found with nothing to send —
/// with the run that settled it (the first, by run id).
pub async fn settled_alerts(warehouse: &Warehouse) -> Result<BTreeMap<(String, NaiveDate), String>> {
    let mut settled = BTreeMap::new();
    for bytes in stored(warehouse).await? {
        let Ok(ledger) = serde_json::from_slice::<AlertSteps>(&bytes) else {
            continue;
        };
        for step in ledger.steps.into_iter().filter(|s| s["step"] == "alert") {
            if let Ok(delivery) = serde_json::from_value::<Delivery>(step)
                && delivery.status != DeliveryStatus::Failed
            {
                let key = (delivery.target, delivery.as_of);
                let run_id = settled.entry(key).or_insert_with(|| ledger.run_id.clone());
                if ledger.run_id < *run_id {
                    run_id.clone_from(&ledger.run_id);
                }
            }
        }
    }
    Ok(settled)
}

/// A run id sorts by start time (to the millisecond) and is unique per process:
/// `20260101T020000.123Z-1a2b`.
pub fn new_run_id() -> String {
    let now = Utc::now();
    let salt = (now.timestamp_subsec_nanos() ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{}-{salt:04x}", now.format("%Y%m%dT%H%M%S%.3fZ"))
}
