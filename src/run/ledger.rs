//! The run ledger: `_runs/<run_id>.json`, one per command that changes the warehouse. Written
//! when the run starts (status `running`) and again when it ends, so a killed run leaves a trace.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::ingest::SourceLoad;
use crate::warehouse::Warehouse;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
}

#[derive(Debug, Clone, Serialize)]
pub struct Ledger {
    pub run_id: String,
    pub command: String,
    pub pipeline: String,
    pub as_of: NaiveDate,
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
}

impl Ledger {
    pub fn start(
        run_id: &str,
        command: &str,
        pipeline: &str,
        as_of: NaiveDate,
        warehouse: &str,
        landing: &str,
    ) -> Ledger {
        Ledger {
            run_id: run_id.to_string(),
            command: command.to_string(),
            pipeline: pipeline.to_string(),
            as_of,
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
        }
    }

    pub fn finish(&mut self, status: RunStatus, error: Option<String>) {
        self.status = status;
        self.error = error;
        self.finished_at = Some(Utc::now());
    }

    pub async fn save(&self, warehouse: &Warehouse) -> Result<()> {
        let key = warehouse.layout().run_ledger(&self.run_id);
        let json = serde_json::to_vec_pretty(self).expect("ledger serializes");
        warehouse.location.put_bytes(&key, json).await
    }
}

/// A run id sorts by start time (to the millisecond) and is unique per process:
/// `20260101T020000.123Z-1a2b`.
pub fn new_run_id() -> String {
    let now = Utc::now();
    let salt = (now.timestamp_subsec_nanos() ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("{}-{salt:04x}", now.format("%Y%m%dT%H%M%S%.3fZ"))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}
