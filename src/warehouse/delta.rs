//! Marts are Delta Lake tables (DESIGN.md, "Warehouse layout"): `marts/<mart>/` with its
//! `_delta_log/`, partitioned by `as_of`, one commit per published snapshot. This module opens a
//! mart's table on the warehouse's own store (its credentials, endpoint, retries and request
//! counts; no second configuration path) and reads the committed snapshots from the log.
//! `publish` writes the commits.
//!
//! What keymart knows of each snapshot beyond its files (run id, input fingerprint, rows, schema
//! hash) is kept in the table's configuration under `keymart.snapshot.<D>`: a reader other than
//! keymart ignores configuration keys it does not know, every checkpoint carries them, and
//! reading them costs nothing once the table is open. (Delta's `domainMetadata` would be the
//! protocol's own place for it, but delta-rs 1.1 does not write tables with that feature.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Once;

use chrono::{DateTime, NaiveDate, Utc};
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};
use url::Url;

use super::Warehouse;
use super::layout::{Shelf, is_manifest};
use super::snapshot::SnapshotManifest;
use crate::error::{Error, Result};

/// The partition column of every mart table.
pub const PARTITION_COLUMN: &str = "as_of";

/// Prefix of the configuration keys holding each snapshot's facts.
pub const FACTS_KEY_PREFIX: &str = "keymart.snapshot.";

/// What keymart records of one committed snapshot in the table's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotFacts {
    pub run_id: String,
    pub rows: u64,
    pub schema_hash: String,
    pub inputs: String,
    pub committed_at: DateTime<Utc>,
    /// The table version whose commit published the snapshot.
    pub version: u64,
}

impl SnapshotFacts {
    pub fn key(as_of: NaiveDate) -> String {
        format!("{FACTS_KEY_PREFIX}{as_of}")
    }
}

/// One file of a table as the log names it, for commits and cleanup.
#[derive(Debug, Clone)]
pub struct TableFile {
    /// Relative to the table's folder, as in the log.
    pub path: String,
    pub as_of: Option<NaiveDate>,
    pub size: i64,
}

impl Warehouse {
    /// The URL delta-rs knows a mart's table by (the warehouse's store, the table's folder).
    pub fn mart_table_url(&self, mart: &str) -> Result<Url> {
        let key = self.location.key(&self.layout().table_dir(Shelf::Marts, mart));
        let text = format!("{}/", self.location.url_of(&key));
        Url::parse(&text).map_err(|e| Error::Internal(format!("table URL of `{mart}`: {e}")))
    }

    /// A mart's table at its latest version, or `None` before its first commit.
    pub async fn open_mart_table(&self, mart: &str) -> Result<Option<DeltaTable>> {
        match self.mart_table_builder(mart)?.load().await {
            Ok(table) => Ok(Some(table)),
            // delta-rs says "not a table" in several ways (a missing folder is a kernel error):
            // without a commit in `_delta_log/` there is no table yet, else the error stands.
            Err(_) if !self.has_table_log(mart).await? => Ok(None),
            Err(e) => Err(self.table_error(mart, "reading the Delta log of", e)),
        }
    }

    /// Whether a mart's `_delta_log/` holds anything (one listing, its first page).
    async fn has_table_log(&self, mart: &str) -> Result<bool> {
        let prefix = self.location.key(&self.layout().table_log_dir(mart));
        let first = self.location.store.list(Some(&prefix)).next().await;
        match first {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(Error::storage(format!("listing {}", self.location.url_of(&prefix)), e)),
        }
    }

    /// A handle on a mart's table without reading its log (to create it).
    pub fn mart_table_builder(&self, mart: &str) -> Result<DeltaTableBuilder> {
        register_log_stores();
        let url = self.mart_table_url(mart)?;
        let builder = DeltaTableBuilder::from_url(url.clone()).map_err(|e| self.table_error(mart, "opening", e))?;
        Ok(builder.with_storage_backend(self.location.store.clone(), url))
    }

    /// A Delta error about a mart's table, naming the table as a reader would find it.
    pub fn table_error(&self, mart: &str, doing: &str, e: DeltaTableError) -> Error {
        let dir = self.layout().table_dir(Shelf::Marts, mart);
        Error::Table { context: format!("{doing} {}/{dir}", self.location.display), source: Box::new(e) }
    }

    /// Every file of a table's latest version with its partition.
    pub async fn table_files(&self, mart: &str, table: &DeltaTable) -> Result<Vec<TableFile>> {
        let views: Vec<_> = table
            .get_active_add_actions_by_partitions(&[])
            .try_collect()
            .await
            .map_err(|e| self.table_error(mart, "listing the files of", e))?;
        Ok(views
            .iter()
            .map(|file| TableFile {
                path: file.path().into_owned(),
                as_of: file
                    .partition_values_map()
                    .get(PARTITION_COLUMN)
                    .and_then(|v| v.as_deref())
                    .and_then(|v| v.parse().ok()),
                size: file.size(),
            })
            .collect())
    }

    /// The committed snapshots of a mart's table, oldest first; an error naming `keymart migrate`
    /// when the mart has none but still has snapshots committed by `_SUCCESS` manifests.
    pub async fn committed_mart_snapshots(&self, mart: &str) -> Result<Vec<SnapshotManifest>> {
        let snapshots = self.committed_mart_snapshots_unchecked(mart).await?;
        if snapshots.is_empty() {
            let dir = self.layout().table_dir(Shelf::Marts, mart);
            if self.location.list(&dir).await?.iter().any(|o| is_manifest(&o.location)) {
                return Err(Error::Usage(format!(
                    "{}/{dir} holds snapshots committed before marts were Delta tables: run `keymart migrate` once",
                    self.location.display
                )));
            }
        }
        Ok(snapshots)
    }

    /// The newest commit of a mart table's log, listing only what sorts after commit `after` (the
    /// whole log when `None`): one request on S3, what `serve` asks before each statement.
    pub async fn newest_mart_commit(&self, mart: &str, after: Option<u64>) -> Result<Option<u64>> {
        let log = format!("{}/_delta_log", self.layout().table_dir(Shelf::Marts, mart));
        let objects = match after {
            Some(version) => self.location.list_after(&log, &format!("{log}/{version:020}.json")).await?,
            None => self.location.list(&log).await?,
        };
        let commit = |o: &ObjectMeta| o.location.filename()?.strip_suffix(".json")?.parse::<u64>().ok();
        Ok(objects.iter().filter_map(commit).max().max(after))
    }

    /// The committed snapshots of a mart's table, oldest first: the files of each `as_of`
    /// partition in the log, with the facts its commit recorded.
    pub async fn committed_mart_snapshots_unchecked(&self, mart: &str) -> Result<Vec<SnapshotManifest>> {
        let Some(table) = self.open_mart_table(mart).await? else { return Ok(Vec::new()) };
        let dir = self.layout().table_dir(Shelf::Marts, mart);
        let mut files: BTreeMap<NaiveDate, Vec<String>> = BTreeMap::new();
        for file in self.table_files(mart, &table).await? {
            if let Some(as_of) = file.as_of {
                files.entry(as_of).or_default().push(format!("{dir}/{}", file.path));
            }
        }
        let snapshot = table.snapshot().map_err(|e| self.table_error(mart, "reading", e))?;
        let configuration: &HashMap<String, String> = snapshot.metadata().configuration();
        let table_schema = snapshot.snapshot().arrow_schema();
        let schema: Vec<String> =
            table_schema.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect();
        files
            .into_iter()
            .map(|(as_of, mut files)| {
                files.sort();
                let facts = configuration.get(&SnapshotFacts::key(as_of)).ok_or_else(|| {
                    Error::Internal(format!("{dir}: the snapshot of {as_of} has no `{}`", SnapshotFacts::key(as_of)))
                })?;
                let facts: SnapshotFacts = serde_json::from_str(facts).map_err(|e| {
                    Error::Internal(format!("{dir}: `{}` is not readable: {e}", SnapshotFacts::key(as_of)))
                })?;
                Ok(SnapshotManifest {
                    table: mart.to_string(),
                    as_of,
                    run_id: facts.run_id,
                    files,
                    rows: facts.rows,
                    schema: schema.clone(),
                    schema_hash: facts.schema_hash,
                    inputs: facts.inputs,
                    committed_at: facts.committed_at,
                    version: Some(facts.version),
                    table_schema: Some(table_schema.clone()),
                })
            })
            .collect()
    }
}

/// delta-rs chooses how to commit by the URL's scheme and knows only `file://` and `memory://`
/// without its cloud crates. keymart hands it the store already configured, and every store
/// keymart opens commits by create-if-absent (S3 with If-None-Match: no DynamoDB), which is what
/// the default log store does: register it for the other schemes.
fn register_log_stores() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let factories = deltalake::logstore::logstore_factories();
        let file = Url::parse("file://").expect("a URL");
        let Some(default) = factories.get(&file).map(|f| f.value().clone()) else { return };
        for scheme in ["s3", "s3a", "gs", "az", "adl", "azure", "abfs", "abfss", "http", "https"] {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                factories.entry(url).or_insert_with(|| default.clone());
            }
        }
    });
}
