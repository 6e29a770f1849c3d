//! Stage 4 of the flow: make a tested mart snapshot visible, atomically, and the run lock that
//! keeps two runs from writing the same warehouse.
//!
//! Commit protocol (DESIGN.md): a run writes its files under `marts/<mart>/as_of=D/<run_id>/`,
//! the tests read them there, then `_SUCCESS` is written (one small put, atomic) naming exactly
//! those files. Only after that are other files under `as_of=D/` deleted: those of the snapshot
//! it replaces and any left by a killed run. A reader honouring `_SUCCESS` never sees a partial
//! snapshot, and after a successful run a reader globbing the folder sees only committed files.
//! An incremental model's state is committed the same way under `state/<model>/as_of=D/`.

pub mod lock;

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
}

/// Write the manifest (the commit point), then remove every other file of that date.
pub async fn commit(warehouse: &Warehouse, snapshot: Snapshot<'_>) -> Result<SnapshotManifest> {
    let manifest = SnapshotManifest {
        table: snapshot.table.to_string(),
        as_of: snapshot.as_of,
        run_id: snapshot.run_id.to_string(),
        schema_hash: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(snapshot.schema.join("\n").as_bytes())),
        files: snapshot.files,
        rows: snapshot.rows,
        schema: snapshot.schema,
        inputs: snapshot.inputs,
        committed_at: Utc::now(),
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
