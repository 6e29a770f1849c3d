//! What a connection's queries see: each mart's committed snapshot (`<mart>`), all of them
//! (`<mart>_history`), and the snapshot list (`keymart_snapshots`), registered through the same
//! `register_committed_marts` as `keymart query`. Re-resolved before every statement, cheaply:
//! one listing of the marts' Delta logs, and a new registration only when that listing (or the
//! session's `keymart.as_of`) changed since the last.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;

use crate::config::HISTORY_SUFFIX;
use crate::config::contract::days_since_epoch;
use crate::engine::{Engine, engine_error, register_committed_marts};
use crate::error::{Error, Result};
use crate::warehouse::{Shelf, Warehouse, is_table_log};

pub const SNAPSHOTS_TABLE: &str = "keymart_snapshots";

/// A fingerprint of every object of the marts' Delta logs (key, size, time, e-tag): it changes
/// when a snapshot is published, replaced or removed.
pub async fn manifests_fingerprint(warehouse: &Warehouse) -> Result<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for object in warehouse.location.list(warehouse.layout().shelf_dir(Shelf::Marts)).await? {
        if is_table_log(&object.location) {
            object.location.as_ref().hash(&mut hasher);
            object.size.hash(&mut hasher);
            object.last_modified.hash(&mut hasher);
            object.e_tag.hash(&mut hasher);
        }
    }
    Ok(hasher.finish())
}

/// Register `marts` as of `as_of` (latest when `None`) in `engine`, replacing what an earlier
/// call registered; a mart without a snapshot by then is left unregistered (an unknown table).
/// Returns the snapshot each mart now reads: (mart, as_of, version).
pub async fn register(
    engine: &Engine,
    warehouse: &Warehouse,
    marts: &[String],
    as_of: Option<NaiveDate>,
) -> Result<Vec<(String, NaiveDate, i64)>> {
    for mart in marts {
        for name in [mart.clone(), format!("{mart}{HISTORY_SUFFIX}")] {
            engine.ctx.deregister_table(name.as_str()).map_err(|e| engine_error(format!("replacing {name}"), e))?;
        }
    }
    register_committed_marts(engine, warehouse, marts.iter().map(String::as_str), as_of).await?;
    let (table, served) = snapshots_table(warehouse, marts, as_of).await?;
    engine.ctx.deregister_table(SNAPSHOTS_TABLE).map_err(|e| engine_error("replacing keymart_snapshots", e))?;
    engine.ctx.register_table(SNAPSHOTS_TABLE, table).map_err(|e| engine_error("registering keymart_snapshots", e))?;
    Ok(served)
}

/// `keymart_snapshots`: one row per committed snapshot of every mart. `version` is the version of
/// the mart's Delta table that committed the snapshot. With it, the newest snapshot of each mart
/// at `until` (the latest when `None`).
async fn snapshots_table(
    warehouse: &Warehouse,
    marts: &[String],
    until: Option<NaiveDate>,
) -> Result<(Arc<MemTable>, Vec<(String, NaiveDate, i64)>)> {
    let (mut mart, mut as_of, mut version, mut run_id, mut rows, mut committed_at) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut served = Vec::new();
    for name in marts {
        let snapshots = warehouse.committed_snapshots(name).await?;
        let table_version = |v: Option<u64>| v.map_or(0, |v| i64::try_from(v).unwrap_or(i64::MAX));
        if let Some(snapshot) = snapshots.iter().rfind(|s| until.is_none_or(|until| s.as_of <= until)) {
            served.push((name.clone(), snapshot.as_of, table_version(snapshot.version)));
        }
        for snapshot in &snapshots {
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
