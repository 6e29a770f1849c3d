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
            engine.register_files(mart, &warehouse.file_urls(&current.files), None).await?;
            let all: Vec<String> = visible.iter().flat_map(|s| s.files.clone()).collect();
            engine.register_files(&format!("{mart}{HISTORY_SUFFIX}"), &warehouse.file_urls(&all), None).await?;
        }
    }
    Ok(())
}
