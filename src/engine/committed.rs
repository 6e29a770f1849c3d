//! What every reader of the marts sees (`keymart query`, `keymart serve`, the report): each mart's
//! committed snapshot under its name and all its committed snapshots as `<mart>_history`. One
//! definition, so that every consumer reads the same committed state the same way.

use chrono::NaiveDate;

use super::Engine;
use crate::config::HISTORY_SUFFIX;
use crate::error::Result;
use crate::warehouse::Warehouse;

/// Register `marts` as of `as_of` (the latest committed snapshot when `None`): `<mart>` is the
/// newest snapshot at or before that date, `<mart>_history` every committed snapshot up to it. A
/// mart with no such snapshot is not registered, so a query naming it fails as an unknown table.
/// Columns the mart gained after a snapshot read as NULL in it, as in any Delta reader.
pub async fn register_committed_marts<'a>(
    engine: &Engine,
    warehouse: &Warehouse,
    marts: impl IntoIterator<Item = &'a str>,
    as_of: Option<NaiveDate>,
) -> Result<()> {
    for mart in marts {
        let snapshots = warehouse.committed_snapshots(mart).await?;
        let visible: Vec<_> = snapshots.iter().filter(|s| as_of.is_none_or(|d| s.as_of <= d)).collect();
        if let Some(current) = visible.last() {
            let table = current.table_schema.as_deref();
            engine.register_snapshot_files(mart, &warehouse.file_urls(&current.files), table).await?;
            let all: Vec<String> = visible.iter().flat_map(|s| s.files.clone()).collect();
            let history = format!("{mart}{HISTORY_SUFFIX}");
            engine.register_snapshot_files(&history, &warehouse.file_urls(&all), table).await?;
        }
    }
    Ok(())
}
