//! Committed snapshots: what a reader needs of one (its files, and where they came from), and how
//! to find the committed snapshots of a mart (from its Delta log, `delta.rs`) or of an
//! incremental model's state (a `_SUCCESS` manifest per date). Written by `publish`, read by
//! everything else.

use chrono::{DateTime, NaiveDate, Utc};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use super::layout::is_manifest;
pub use super::layout::{Shelf, snapshot_date};
use super::{Location, Warehouse};
use crate::error::{Error, Result};

/// What a committed snapshot is: the files a reader must read, and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// The mart (or incremental model) it is a snapshot of.
    #[serde(rename = "mart")]
    pub table: String,
    pub as_of: NaiveDate,
    pub run_id: String,
    /// Keys relative to the warehouse root, in order.
    pub files: Vec<String>,
    pub rows: u64,
    /// `name type` per column, and a hash of that list: a changed schema is visible at a glance.
    pub schema: Vec<String>,
    pub schema_hash: String,
    /// Fingerprint of everything the snapshot was computed from (extracts, pipeline, SQL).
    pub inputs: String,
    pub committed_at: DateTime<Utc>,
    /// The mart table's version that committed it (a state's manifest has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// A mart's: the schema of its table's latest version, which has every column a snapshot's
    /// files have and those the mart gained after it (read as NULL in older snapshots).
    #[serde(skip)]
    pub table_schema: Option<datafusion::arrow::datatypes::SchemaRef>,
}

impl Warehouse {
    /// The committed snapshot of one mart for one date, if any.
    pub async fn manifest(&self, mart: &str, as_of: NaiveDate) -> Result<Option<SnapshotManifest>> {
        Ok(self.committed_mart_snapshots(mart).await?.into_iter().find(|s| s.as_of == as_of))
    }

    /// The `_SUCCESS` manifest of one date of a table, if any.
    pub async fn shelved_manifest(
        &self,
        shelf: Shelf,
        table: &str,
        as_of: NaiveDate,
    ) -> Result<Option<SnapshotManifest>> {
        let key = self.layout().manifest_key(shelf, table, as_of);
        match self.location.store.get(&key).await {
            Ok(result) => {
                let bytes = result
                    .bytes()
                    .await
                    .map_err(|e| Error::storage(format!("reading {}", self.location.url_of(&key)), e))?;
                let manifest = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Internal(format!("{} is not a snapshot manifest: {e}", self.location.url_of(&key)))
                })?;
                Ok(Some(manifest))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::storage(format!("reading {}", self.location.url_of(&key)), e)),
        }
    }

    /// Every committed snapshot of a mart, oldest first.
    pub async fn committed_snapshots(&self, mart: &str) -> Result<Vec<SnapshotManifest>> {
        self.committed_mart_snapshots(mart).await
    }

    /// Every committed snapshot of a mart or state table, oldest first.
    pub async fn shelved_snapshots(&self, shelf: Shelf, table: &str) -> Result<Vec<SnapshotManifest>> {
        if shelf == Shelf::Marts {
            return self.committed_mart_snapshots(table).await;
        }
        let mut dates: Vec<NaiveDate> = self
            .location
            .list(&self.layout().table_dir(shelf, table))
            .await?
            .iter()
            .filter(|o| is_manifest(&o.location))
            .filter_map(|o| snapshot_date(&self.location.relative(&o.location)))
            .collect();
        dates.sort();
        let mut manifests = Vec::with_capacity(dates.len());
        for date in dates {
            if let Some(m) = self.shelved_manifest(shelf, table, date).await? {
                manifests.push(m);
            }
        }
        Ok(manifests)
    }

    /// Full URLs of a snapshot's files, for the engine.
    pub fn file_urls(&self, files: &[String]) -> Vec<String> {
        files.iter().map(|f| self.location.url_of(&self.location.key(f))).collect()
    }
}

impl Location {
    /// Keys under a relative prefix, relative to this root.
    pub async fn relative_keys(&self, relative_prefix: &str) -> Result<Vec<String>> {
        Ok(self.list(relative_prefix).await?.iter().map(|o| self.relative(&o.location)).collect())
    }
}
