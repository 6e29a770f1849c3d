//! Committed snapshots: the `_SUCCESS` manifest that makes a snapshot visible, and how to find
//! the committed snapshots of a mart or of an incremental model's state. Written by `publish`,
//! read by everything else.

use chrono::{DateTime, NaiveDate, Utc};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::{Location, Warehouse};
use crate::error::{Error, Result};

pub const MANIFEST_NAME: &str = "_SUCCESS";

/// Where a kind of snapshot lives: `marts/` (published for readers) or `state/` (incremental
/// models' tables, kept for the next night; DESIGN.md has no place for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shelf {
    Marts,
    State,
}

impl Shelf {
    fn prefix(self) -> &'static str {
        match self {
            Shelf::Marts => "marts",
            Shelf::State => "state",
        }
    }
}

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
}

/// The date of the snapshot a key lies in: the `as_of=<D>` part of `state/<model>/as_of=<D>/…`.
pub fn snapshot_date(relative_key: &str) -> Option<NaiveDate> {
    relative_key.split('/').find_map(|p| p.strip_prefix("as_of=")).and_then(|d| d.parse().ok())
}

impl Warehouse {
    /// `marts/<mart>` or `state/<model>` (relative): every snapshot of it.
    pub fn table_dir(&self, shelf: Shelf, table: &str) -> String {
        format!("{}/{table}", shelf.prefix())
    }

    /// `marts/<mart>/as_of=<D>` or `state/<model>/as_of=<D>` (relative).
    pub fn snapshot_dir(&self, shelf: Shelf, table: &str, as_of: NaiveDate) -> String {
        format!("{}/as_of={as_of}", self.table_dir(shelf, table))
    }

    pub fn manifest_key(&self, shelf: Shelf, table: &str, as_of: NaiveDate) -> Path {
        self.location.key(&format!("{}/{MANIFEST_NAME}", self.snapshot_dir(shelf, table, as_of)))
    }

    /// The committed manifest of one mart snapshot, if any.
    pub async fn manifest(&self, mart: &str, as_of: NaiveDate) -> Result<Option<SnapshotManifest>> {
        self.shelved_manifest(Shelf::Marts, mart, as_of).await
    }

    async fn shelved_manifest(&self, shelf: Shelf, table: &str, as_of: NaiveDate) -> Result<Option<SnapshotManifest>> {
        let key = self.manifest_key(shelf, table, as_of);
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
        self.shelved_snapshots(Shelf::Marts, mart).await
    }

    /// Every committed snapshot of a mart or state table, oldest first.
    pub async fn shelved_snapshots(&self, shelf: Shelf, table: &str) -> Result<Vec<SnapshotManifest>> {
        let mut dates: Vec<NaiveDate> = self
            .location
            .list(&self.table_dir(shelf, table))
            .await?
            .iter()
            .filter(|o| o.location.filename() == Some(MANIFEST_NAME))
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
