//! Stage 4 of the flow: make a tested snapshot visible, atomically, and the run lock that keeps
//! two runs from writing the same warehouse.
//!
//! A mart snapshot is one commit to the mart's Delta table (`mart.rs`). An incremental model's
//! state, which only keymart reads, keeps the simpler protocol: the run writes its files under
//! `state/<model>/as_of=D/<run_id>/`, then a `_SUCCESS` manifest (one small put, atomic) naming
//! exactly those files; only after that are the other files under `as_of=D/` deleted.

pub mod lock;
pub mod mart;
pub mod migrate;

use std::time::Duration;

use chrono::{NaiveDate, Utc};

use crate::error::Result;
use crate::warehouse::snapshot::SnapshotManifest;
use crate::warehouse::{Shelf, Warehouse, snapshot_date};

/// What a snapshot to commit consists of.
pub struct Snapshot<'a> {
    pub shelf: Shelf,
    /// The mart, or the incremental model.
    pub table: &'a str,
    pub as_of: NaiveDate,
    pub run_id: &'a str,
    pub files: Vec<String>,
    pub rows: u64,
    pub schema: Vec<String>,
    pub inputs: String,
    /// A mart's table starts anew from this snapshot (`keymart run --rebuild-table`): its other
    /// snapshots leave the table's current version, and its schema is this snapshot's.
    pub replaces_table: bool,
}

/// Commit a snapshot: a mart's to its Delta table (files older than `retention` that no version
/// names are removed after it), a state's by its manifest.
pub async fn commit(warehouse: &Warehouse, snapshot: Snapshot<'_>, retention: Duration) -> Result<SnapshotManifest> {
    match snapshot.shelf {
        Shelf::Marts => mart::commit(warehouse, snapshot, retention).await,
        Shelf::State => commit_state(warehouse, snapshot).await,
    }
}

/// A hash of a snapshot's `name type` column list: a changed schema is visible at a glance.
fn schema_hash(schema: &[String]) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(schema.join("\n").as_bytes()))
}

/// Write the state's manifest (the commit point), then remove every other file of that date.
async fn commit_state(warehouse: &Warehouse, snapshot: Snapshot<'_>) -> Result<SnapshotManifest> {
    let manifest = SnapshotManifest {
        table: snapshot.table.to_string(),
        as_of: snapshot.as_of,
        run_id: snapshot.run_id.to_string(),
        schema_hash: schema_hash(&snapshot.schema),
        files: snapshot.files,
        rows: snapshot.rows,
        schema: snapshot.schema,
        inputs: snapshot.inputs,
        committed_at: Utc::now(),
        version: None,
        table_schema: None,
    };
    let key = warehouse.layout().manifest_key(snapshot.shelf, snapshot.table, snapshot.as_of);
    let json = serde_json::to_vec_pretty(&manifest).expect("manifest serializes");
    warehouse.location.put_bytes(&key, json).await?;
    remove_uncommitted(warehouse, snapshot.shelf, &manifest).await?;
    Ok(manifest)
}

/// Delete the files under the snapshot's date that its manifest does not name.
async fn remove_uncommitted(warehouse: &Warehouse, shelf: Shelf, manifest: &SnapshotManifest) -> Result<()> {
    let layout = warehouse.layout();
    let committed = layout.manifest_key(shelf, &manifest.table, manifest.as_of);
    let dir = layout.snapshot_dir(shelf, &manifest.table, manifest.as_of);
    for key in warehouse.location.relative_keys(&dir).await? {
        let key_path = warehouse.location.key(&key);
        if key_path != committed && !manifest.files.contains(&key) {
            warehouse.location.delete(&key_path).await?;
        }
    }
    Ok(())
}

/// Remove the files of a snapshot that will not be committed (a test failed, or upstream did).
pub async fn discard(warehouse: &Warehouse, files: &[String]) -> Result<()> {
    for file in files {
        warehouse.location.delete(&warehouse.location.key(file)).await?;
    }
    Ok(())
}

/// Delete the states of an incremental model except those of the dates in `keep`: committed
/// ones (the manifest first, so a state is never visible with files missing) and the files a
/// killed run left without a manifest.
pub async fn prune_states(warehouse: &Warehouse, model: &str, keep: &[NaiveDate]) -> Result<()> {
    let layout = warehouse.layout();
    let dates: std::collections::BTreeSet<NaiveDate> = warehouse
        .location
        .relative_keys(&layout.table_dir(Shelf::State, model))
        .await?
        .iter()
        .filter_map(|k| snapshot_date(k))
        .collect();
    for as_of in dates.into_iter().filter(|d| !keep.contains(d)) {
        warehouse.location.delete(&layout.manifest_key(Shelf::State, model, as_of)).await?;
        warehouse.location.delete_prefix(&layout.snapshot_dir(Shelf::State, model, as_of)).await?;
    }
    Ok(())
}
