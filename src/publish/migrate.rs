//! `keymart migrate`: a warehouse whose marts were committed with `_SUCCESS` manifests (before
//! marts were Delta tables) becomes one whose marts are Delta tables. Each mart's snapshots are
//! committed to its table date by date, oldest first, naming the files the manifests named (no
//! data file is rewritten); each manifest is deleted after its date's commit. Safe to run again:
//! a date whose table snapshot already names exactly the manifest's files is not committed twice,
//! and a warehouse with no manifest left has nothing to do.

use std::time::Duration;

use futures::TryStreamExt;

use super::{Snapshot, mart};
use crate::error::{Error, Result};
use crate::warehouse::snapshot::SnapshotManifest;
use crate::warehouse::{Shelf, Warehouse, is_manifest, snapshot_date};

/// What a migration did.
#[derive(Debug, Default, PartialEq)]
pub struct Migrated {
    pub marts: usize,
    /// Snapshots committed to a table now.
    pub committed: usize,
    /// Snapshots whose table commit an earlier, interrupted migration had made.
    pub already: usize,
}

/// Move every mart's `_SUCCESS` snapshots into its Delta table.
pub async fn migrate(warehouse: &Warehouse, retention: Duration) -> Result<Migrated> {
    let mut migrated = Migrated::default();
    for mart in warehouse.marts_with_manifests().await? {
        migrated.marts += 1;
        let mut manifests = read_manifests(warehouse, &mart).await?;
        manifests.sort_by_key(|m| m.as_of);
        for manifest in manifests {
            let committed = warehouse.committed_mart_snapshots_unchecked(&mart).await?;
            let done = committed.iter().any(|s| s.as_of == manifest.as_of && s.files == manifest.files);
            if done {
                migrated.already += 1;
            } else {
                let snapshot = Snapshot {
                    shelf: Shelf::Marts,
                    table: &mart,
                    as_of: manifest.as_of,
                    run_id: &manifest.run_id,
                    files: manifest.files.clone(),
                    rows: manifest.rows,
                    schema: manifest.schema.clone(),
                    inputs: manifest.inputs.clone(),
                    replaces_table: false,
                };
                mart::commit(warehouse, snapshot, retention).await?;
                migrated.committed += 1;
            }
            let key = warehouse.layout().manifest_key(Shelf::Marts, &mart, manifest.as_of);
            warehouse.location.delete(&key).await?;
        }
    }
    Ok(migrated)
}

async fn read_manifests(warehouse: &Warehouse, mart: &str) -> Result<Vec<SnapshotManifest>> {
    let dir = warehouse.layout().table_dir(Shelf::Marts, mart);
    let mut manifests = Vec::new();
    for object in warehouse.location.list(&dir).await?.iter().filter(|o| is_manifest(&o.location)) {
        let date = snapshot_date(&warehouse.location.relative(&object.location));
        if let Some(manifest) = date.map(|d| warehouse.shelved_manifest(Shelf::Marts, mart, d)) {
            manifests.extend(manifest.await?);
        }
    }
    Ok(manifests)
}

impl Warehouse {
    /// The marts with `_SUCCESS` manifests left under their folder, by name.
    pub async fn marts_with_manifests(&self) -> Result<Vec<String>> {
        let shelf = self.layout().shelf_dir(Shelf::Marts);
        let listed = self
            .location
            .store
            .list(Some(&self.location.key(shelf)))
            .try_filter(|o| futures::future::ready(is_manifest(&o.location)))
            .map_ok(|o| self.location.relative(&o.location))
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| Error::storage(format!("listing {}/{shelf}", self.location.display), e))?;
        let mut marts: Vec<String> =
            listed.iter().filter_map(|key| key.split('/').nth(1).map(str::to_string)).collect();
        marts.dedup();
        Ok(marts)
    }
}
