//! What a connection's queries see: each mart's committed snapshot (`<mart>`), all of them
//! (`<mart>_history`), and the snapshot list (`keymart_snapshots`), as the [`Catalog`] every
//! connection shares holds them. Before each statement the catalog asks each mart's Delta log
//! for commits newer than the one it holds (one LIST per mart that starts there), re-reads only
//! the marts that have one, and builds each snapshot's table once: the footers it reads, and the
//! statistics its scans gather, then serve every connection until the mart's next commit.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;

use crate::config::HISTORY_SUFFIX;
use crate::config::contract::days_since_epoch;
use crate::engine::{Engine, engine_error};
use crate::error::{Error, Result};
use crate::warehouse::Warehouse;
use crate::warehouse::snapshot::SnapshotManifest;

pub const SNAPSHOTS_TABLE: &str = "keymart_snapshots";

/// The committed snapshots of the served marts, shared by every connection.
pub struct Catalog {
    warehouse: Warehouse,
    marts: Vec<String>,
    /// Builds the snapshots' tables; its runtime (and so its footer cache) is the connections'.
    builder: Engine,
    /// Held while marts are re-read and tables built.
    loaded: tokio::sync::Mutex<Loaded>,
    /// The newest commit of each mart as last loaded, and the generation they make: what a
    /// statement compares the logs with, without waiting for a reload in progress.
    seen: std::sync::Mutex<(Vec<Option<u64>>, u64)>,
}

#[derive(Default)]
struct Loaded {
    /// By mart (in `Catalog::marts` order): its newest commit when read, and its snapshots.
    commits: Vec<Option<u64>>,
    snapshots: Vec<Vec<SnapshotManifest>>,
    /// Counts the loads that changed something; 0 before the first.
    generation: u64,
    /// Tables built, by name and the `as_of` of the newest snapshot they read.
    tables: HashMap<(String, NaiveDate), Arc<dyn TableProvider>>,
}

/// What a registration serves: each mart's snapshot (mart, as_of, version).
pub type Served = Vec<(String, NaiveDate, i64)>;

impl Catalog {
    pub fn new(warehouse: Warehouse, marts: Vec<String>, builder: Engine) -> Catalog {
        Catalog { warehouse, marts, builder, loaded: Default::default(), seen: Default::default() }
    }

    pub fn marts(&self) -> &[String] {
        &self.marts
    }

    /// Bring the catalog up to the marts' newest commits; the generation that holds them.
    pub async fn refresh(&self) -> Result<u64> {
        let (seen, generation) = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let newest = futures::future::try_join_all(
            self.marts
                .iter()
                .enumerate()
                .map(|(i, mart)| self.warehouse.newest_mart_commit(mart, seen.get(i).copied().flatten())),
        )
        .await?;
        if generation > 0 && newest == seen {
            return Ok(generation);
        }
        let mut loaded = self.loaded.lock().await;
        loaded.snapshots.resize_with(self.marts.len(), Vec::new);
        loaded.commits.resize(self.marts.len(), None);
        let mut changed = false;
        for (i, mart) in self.marts.iter().enumerate() {
            // Another statement's reload may have read past what this one listed.
            if loaded.generation > 0 && loaded.commits[i] >= newest[i] {
                continue;
            }
            loaded.snapshots[i] = self.warehouse.committed_snapshots(mart).await?;
            loaded.commits[i] = newest[i];
            let history = format!("{mart}{HISTORY_SUFFIX}");
            loaded.tables.retain(|(name, _), _| name != mart && *name != history);
            changed = true;
        }
        if changed || loaded.generation == 0 {
            loaded.generation += 1;
        }
        *self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
            (loaded.commits.clone(), loaded.generation);
        Ok(loaded.generation)
    }

    /// Register the marts as of `as_of` (latest when `None`) in `engine`, replacing what an
    /// earlier call registered; a mart without a snapshot by then is left unregistered (an
    /// unknown table). Returns the generation registered and the snapshot each mart now reads.
    pub async fn register(&self, engine: &Engine, as_of: Option<NaiveDate>) -> Result<(u64, Served)> {
        let mut loaded = self.loaded.lock().await;
        let Loaded { snapshots, tables, generation, .. } = &mut *loaded;
        for (mart, snapshots) in self.marts.iter().zip(snapshots.iter()) {
            let history = format!("{mart}{HISTORY_SUFFIX}");
            for name in [mart, &history] {
                engine.ctx.deregister_table(name.as_str()).map_err(|e| engine_error(format!("replacing {name}"), e))?;
            }
            let visible: Vec<_> = snapshots.iter().filter(|s| as_of.is_none_or(|d| s.as_of <= d)).collect();
            let Some(current) = visible.last() else { continue };
            let schema = current.table_schema.as_deref();
            for (name, files) in [
                (mart, current.files.clone()),
                (&history, visible.iter().flat_map(|s| s.files.clone()).collect::<Vec<_>>()),
            ] {
                let key = (name.clone(), current.as_of);
                let table = match tables.get(&key) {
                    Some(table) => table.clone(),
                    None => {
                        let urls = self.warehouse.file_urls(&files);
                        let table = self.builder.snapshot_table(name, &urls, schema).await?;
                        tables.insert(key, table.clone());
                        table
                    }
                };
                engine
                    .ctx
                    .register_table(name.as_str(), table)
                    .map_err(|e| engine_error(format!("registering {name}"), e))?;
            }
        }
        let (table, served) = snapshots_table(&self.marts, snapshots, as_of)?;
        engine.ctx.deregister_table(SNAPSHOTS_TABLE).map_err(|e| engine_error("replacing keymart_snapshots", e))?;
        engine
            .ctx
            .register_table(SNAPSHOTS_TABLE, table)
            .map_err(|e| engine_error("registering keymart_snapshots", e))?;
        Ok((*generation, served))
    }
}

/// `keymart_snapshots`: one row per committed snapshot of every mart. `version` is the version of
/// the mart's Delta table that committed the snapshot. With it, the newest snapshot of each mart
/// at `until` (the latest when `None`).
fn snapshots_table(
    marts: &[String],
    snapshots: &[Vec<SnapshotManifest>],
    until: Option<NaiveDate>,
) -> Result<(Arc<MemTable>, Served)> {
    let (mut mart, mut as_of, mut version, mut run_id, mut rows, mut committed_at) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut served = Vec::new();
    for (name, snapshots) in marts.iter().zip(snapshots) {
        let table_version = |v: Option<u64>| v.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX));
        if let Some(snapshot) = snapshots.iter().rfind(|s| until.is_none_or(|until| s.as_of <= until)) {
            served.push((name.clone(), snapshot.as_of, table_version(snapshot.version)));
        }
        for snapshot in snapshots {
            mart.push(name.clone());
            as_of.push(days_since_epoch(snapshot.as_of));
            version.push(table_version(snapshot.version));
            run_id.push(snapshot.run_id.clone());
            rows.push(i64::try_from(snapshot.rows).unwrap_or(i64::MAX));
            committed_at.push(snapshot.committed_at.timestamp_micros());
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("mart", DataType::Utf8, false),
        Field::new("as_of", DataType::Date32, false),
        Field::new("version", DataType::Int64, false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("committed_at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(mart)),
        Arc::new(Date32Array::from(as_of)),
        Arc::new(Int64Array::from(version)),
        Arc::new(StringArray::from(run_id)),
        Arc::new(Int64Array::from(rows)),
        Arc::new(TimestampMicrosecondArray::from(committed_at).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::arrow("keymart_snapshots", e))?;
    let table = MemTable::try_new(schema, vec![vec![batch]]).map_err(|e| engine_error("keymart_snapshots", e))?;
    Ok((Arc::new(table), served))
}
