//! Publishing a mart snapshot as one Delta Lake commit (DESIGN.md, "Warehouse layout").
//!
//! The run's files were written under `marts/<mart>/as_of=D/<run_id>/` and tested there; until
//! this commit no Delta reader sees them, because the log does not name them. The commit adds
//! them, removes the files of the snapshot of D it replaces, and records the snapshot's facts
//! (`warehouse::delta`). It is made on the table version the run read, without retrying: a
//! writer that committed in between (which the run lock should have made impossible) makes this
//! commit fail, never overwrite. After it, files no version names are removed once they are older
//! than the retention (`file_retention_seconds`), Delta's VACUUM rule: a reader that opened an
//! older version, or a query still running on one, keeps its files.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{NaiveDate, Utc};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::parquet::file::metadata::ParquetMetaDataReader;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference, TransactionError};
use deltalake::kernel::{Action, Add, Metadata, MetadataExt, Remove, StructField, StructType};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableError, TableProperty};
use object_store::ObjectStoreExt;

use super::Snapshot;
use crate::config::Retention;
use crate::error::{Error, Result};
use crate::warehouse::Warehouse;
use crate::warehouse::delta::{FACTS_KEY_PREFIX, PARTITION_COLUMN, SnapshotFacts, TableFile};
use crate::warehouse::snapshot::SnapshotManifest;

/// Commits written between checkpoints: a table of years of nightly commits opens from its last
/// checkpoint and at most this many commits after it.
const CHECKPOINT_INTERVAL: &str = "10";

/// Commit a tested mart snapshot: one Delta commit, then the cleanup of expired files.
pub async fn commit(warehouse: &Warehouse, snapshot: Snapshot<'_>, retention: Duration) -> Result<SnapshotManifest> {
    // A run whose lock was taken over may have had its files removed by the run that took it:
    // it stops here, before reading them again.
    warehouse.location.fence.check(&format!("committing `{}` as of {}", snapshot.table, snapshot.as_of))?;
    let table = match warehouse.open_mart_table(snapshot.table).await? {
        Some(table) => table,
        None => {
            let first = snapshot.files.first().ok_or_else(|| no_files(snapshot.table))?;
            create_table(warehouse, snapshot.table, &file_schema(warehouse, first).await?).await?
        }
    };
    let manifest = commit_to(warehouse, &table, snapshot).await?;
    remove_expired_files(warehouse, &manifest.table, retention).await?;
    Ok(manifest)
}

fn no_files(mart: &str) -> Error {
    Error::Internal(format!("{mart}: a snapshot without files"))
}

/// The commit of a snapshot on the version of the table read in `table`.
async fn commit_to(warehouse: &Warehouse, table: &DeltaTable, snapshot: Snapshot<'_>) -> Result<SnapshotManifest> {
    let mart = snapshot.table;
    let dir = warehouse.layout().table_dir(crate::warehouse::Shelf::Marts, mart);
    let first = snapshot.files.first().ok_or_else(|| no_files(mart))?;
    let schema = file_schema(warehouse, first).await?;
    let state = table.snapshot().map_err(|e| warehouse.table_error(mart, "reading", e))?;
    let version = state.version() + 1;
    let facts = SnapshotFacts {
        run_id: snapshot.run_id.to_string(),
        rows: snapshot.rows,
        schema_hash: super::schema_hash(&snapshot.schema),
        inputs: snapshot.inputs.clone(),
        committed_at: Utc::now(),
        version,
    };
    let metadata = if snapshot.replaces_table {
        started_anew(state.metadata().clone(), &schema, mart)?
    } else {
        evolved_metadata(state.metadata().clone(), &state.snapshot().arrow_schema(), &schema, mart)?
    }
    .add_config_key(SnapshotFacts::key(snapshot.as_of), serde_json::to_string(&facts).expect("facts serialize"))
    .map_err(|e| warehouse.table_error(mart, "recording the snapshot in", e.into()))?;

    let replaced = warehouse
        .table_files(mart, table)
        .await?
        .into_iter()
        .filter(|f| snapshot.replaces_table || f.as_of == Some(snapshot.as_of));
    let mut actions = vec![Action::Metadata(metadata)];
    actions.extend(replaced.map(|file| {
        let as_of = file.as_of.unwrap_or(snapshot.as_of);
        Action::Remove(remove(file, as_of))
    }));
    for key in &snapshot.files {
        let path = key
            .strip_prefix(&format!("{dir}/"))
            .ok_or_else(|| Error::Internal(format!("{mart}: {key} is not inside the table's folder {dir}")))?;
        let size = object_size(warehouse, key).await?;
        let rows = (snapshot.files.len() == 1).then_some(snapshot.rows);
        actions.push(Action::Add(add(path, snapshot.as_of, size, rows)));
    }

    let app_metadata = [
        ("keymart.run_id".to_string(), serde_json::json!(snapshot.run_id)),
        ("keymart.as_of".to_string(), serde_json::json!(snapshot.as_of.to_string())),
    ];
    let operation = DeltaOperation::Write {
        mode: SaveMode::Overwrite,
        partition_by: Some(vec![PARTITION_COLUMN.to_string()]),
        predicate: (!snapshot.replaces_table).then(|| format!("{PARTITION_COLUMN} = '{}'", snapshot.as_of)),
    };
    let doing = format!("committing {dir} as of {}", snapshot.as_of);
    commit_once(warehouse, mart, table, (actions, app_metadata.into_iter().collect()), operation, &doing).await?;
    Ok(SnapshotManifest {
        table: mart.to_string(),
        as_of: snapshot.as_of,
        run_id: facts.run_id,
        files: snapshot.files,
        rows: facts.rows,
        schema: snapshot.schema,
        schema_hash: facts.schema_hash,
        inputs: facts.inputs,
        committed_at: facts.committed_at,
        version: Some(version),
        table_schema: None,
    })
}

/// Remove from a mart's table the snapshots `retention` no longer keeps after the night of
/// `night`: one commit removing their files and their facts (the files themselves go once older
/// than the file retention). The dates removed, oldest first.
pub async fn prune(
    warehouse: &Warehouse,
    mart: &str,
    night: NaiveDate,
    retention: &Retention,
) -> Result<Vec<NaiveDate>> {
    let Some(table) = warehouse.open_mart_table(mart).await? else { return Ok(Vec::new()) };
    let files = warehouse.table_files(mart, &table).await?;
    let dropped: BTreeSet<NaiveDate> =
        files.iter().filter_map(|f| f.as_of).filter(|d| !retention.keeps(*d, night)).collect();
    if dropped.is_empty() {
        return Ok(Vec::new());
    }
    let state = table.snapshot().map_err(|e| warehouse.table_error(mart, "reading", e))?;
    let mut metadata = state.metadata().clone();
    for date in &dropped {
        metadata = metadata
            .remove_config_key(&SnapshotFacts::key(*date))
            .map_err(|e| warehouse.table_error(mart, "pruning the snapshots of", e.into()))?;
    }
    let mut actions = vec![Action::Metadata(metadata)];
    for file in files {
        if let Some(as_of) = file.as_of.filter(|d| dropped.contains(d)) {
            actions.push(Action::Remove(remove(file, as_of)));
        }
    }
    let dates: Vec<String> = dropped.iter().map(|d| format!("'{d}'")).collect();
    let operation = DeltaOperation::Delete { predicate: Some(format!("{PARTITION_COLUMN} IN ({})", dates.join(", "))) };
    let doing = format!("pruning the snapshots of `{mart}`");
    commit_once(warehouse, mart, &table, (actions, Default::default()), operation, &doing).await?;
    Ok(dropped.into_iter().collect())
}

/// One commit on the version of the table read in `table`, fenced by the run's lock and never
/// retried: a writer that committed in between makes it fail (`commit_error`).
async fn commit_once(
    warehouse: &Warehouse,
    mart: &str,
    table: &DeltaTable,
    (actions, app_metadata): (Vec<Action>, std::collections::HashMap<String, serde_json::Value>),
    operation: DeltaOperation,
    doing: &str,
) -> Result<()> {
    let state = table.snapshot().map_err(|e| warehouse.table_error(mart, "reading", e))?;
    let version = state.version() + 1;
    warehouse.location.fence.check(doing)?;
    CommitBuilder::from(CommitProperties::default().with_max_retries(0))
        .with_actions(actions)
        .with_app_metadata(app_metadata)
        .build(Some(state as &dyn TableReference), table.log_store(), operation)
        .await
        .map_err(|e| commit_error(warehouse, mart, version, e))?;
    Ok(())
}

/// The table's first version: its schema (from the first snapshot's files), the `as_of`
/// partition, and checkpoints every few commits.
async fn create_table(warehouse: &Warehouse, mart: &str, schema: &SchemaRef) -> Result<DeltaTable> {
    let columns = delta_schema(schema, mart)?;
    let log_store =
        warehouse.mart_table_builder(mart)?.build_storage().map_err(|e| warehouse.table_error(mart, "opening", e))?;
    warehouse.location.fence.check(&format!("creating the Delta table of `{mart}`"))?;
    CreateBuilder::new()
        .with_log_store(log_store)
        .with_table_name(mart)
        .with_columns(columns.fields().cloned())
        .with_partition_columns([PARTITION_COLUMN])
        .with_configuration_property(TableProperty::CheckpointInterval, Some(CHECKPOINT_INTERVAL))
        .with_commit_properties(CommitProperties::default().with_max_retries(0))
        .await
        .map_err(|e| warehouse.table_error(mart, "creating the Delta table", e))
}

/// The table's metadata for a snapshot of `schema`: unchanged, or with the columns the mart's SQL
/// added (older snapshots read them as NULL). A column that changed type or disappeared cannot be
/// committed: older snapshots could not be read as one table.
fn evolved_metadata(metadata: Metadata, table: &SchemaRef, schema: &SchemaRef, mart: &str) -> Result<Metadata> {
    let (table, new) = (delta_schema(table, mart)?, delta_schema(schema, mart)?);
    let way_out = format!(
        "the table keeps its snapshots' schema; to start it anew from tonight's snapshot, without the \
         earlier ones, run again with `--rebuild-table {mart}`"
    );
    for old in table.fields() {
        match new.field(old.name()) {
            None => {
                return Err(Error::Usage(format!(
                    "mart `{mart}` no longer has column `{}`, which its committed snapshots have: {way_out}",
                    old.name()
                )));
            }
            Some(now) if now.data_type() != old.data_type() => {
                return Err(Error::Usage(format!(
                    "mart `{mart}`: column `{}` was {} and is now {}: {way_out}",
                    old.name(),
                    old.data_type(),
                    now.data_type()
                )));
            }
            Some(_) => {}
        }
    }
    let added: Vec<StructField> = new
        .fields()
        .filter(|f| table.field(f.name()).is_none())
        .map(|f| StructField::new(f.name().clone(), f.data_type().clone(), true))
        .collect();
    if added.is_empty() {
        return Ok(metadata);
    }
    let evolved = StructType::try_new(table.fields().cloned().chain(added))
        .map_err(|e| Error::Internal(format!("mart `{mart}`: evolving its schema: {e}")))?;
    metadata.with_schema(&evolved).map_err(|e| Error::Internal(format!("mart `{mart}`: evolving its schema: {e}")))
}

/// The table's metadata when it starts anew from a snapshot of `schema`: that schema, and none
/// of the earlier snapshots' facts. The earlier versions stay in the log for time travel until
/// their files expire.
fn started_anew(metadata: Metadata, schema: &SchemaRef, mart: &str) -> Result<Metadata> {
    let columns = delta_schema(schema, mart)?;
    let earlier: Vec<String> =
        metadata.configuration().keys().filter(|k| k.starts_with(FACTS_KEY_PREFIX)).cloned().collect();
    let mut metadata = metadata
        .with_schema(&columns)
        .map_err(|e| Error::Internal(format!("mart `{mart}`: replacing its schema: {e}")))?;
    for key in earlier {
        metadata = metadata
            .remove_config_key(&key)
            .map_err(|e| Error::Internal(format!("mart `{mart}`: starting anew: {e}")))?;
    }
    Ok(metadata)
}

/// A mart's Arrow schema as a Delta table's.
fn delta_schema(schema: &SchemaRef, mart: &str) -> Result<StructType> {
    StructType::try_from_arrow(schema.as_ref()).map_err(|e| Error::arrow(format!("mart `{mart}` as a Delta table"), e))
}

fn add(path: &str, as_of: NaiveDate, size: u64, rows: Option<u64>) -> Add {
    Add {
        path: path.to_string(),
        partition_values: [(PARTITION_COLUMN.to_string(), Some(as_of.to_string()))].into_iter().collect(),
        size: size as i64,
        modification_time: Utc::now().timestamp_millis(),
        data_change: true,
        stats: rows.map(|n| serde_json::json!({ "numRecords": n }).to_string()),
        ..Default::default()
    }
}

fn remove(file: TableFile, as_of: NaiveDate) -> Remove {
    Remove {
        path: file.path,
        data_change: true,
        deletion_timestamp: Some(Utc::now().timestamp_millis()),
        extended_file_metadata: Some(true),
        partition_values: Some([(PARTITION_COLUMN.to_string(), Some(as_of.to_string()))].into_iter().collect()),
        size: Some(file.size),
        ..Default::default()
    }
}

/// A commit that failed; one that lost to another writer says so.
fn commit_error(warehouse: &Warehouse, mart: &str, version: u64, e: DeltaTableError) -> Error {
    let lost = matches!(
        &e,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
                    | TransactionError::CommitConflict(_)
            }
    );
    let doing = if lost {
        format!("another writer committed version {version} first; nothing was committed to")
    } else {
        "committing to".to_string()
    };
    warehouse.table_error(mart, &doing, e)
}

/// Delete the files under the table's folder that its latest version does not name and that
/// are older than the retention: those of replaced snapshots, of failed tests, of killed runs.
pub async fn remove_expired_files(warehouse: &Warehouse, mart: &str, retention: Duration) -> Result<()> {
    let Some(table) = warehouse.open_mart_table(mart).await? else { return Ok(()) };
    let dir = warehouse.layout().table_dir(crate::warehouse::Shelf::Marts, mart);
    let live: BTreeSet<String> =
        warehouse.table_files(mart, &table).await?.into_iter().map(|f| format!("{dir}/{}", f.path)).collect();
    let Some(cutoff) = chrono::Duration::from_std(retention).ok().and_then(|r| Utc::now().checked_sub_signed(r)) else {
        return Ok(());
    };
    for object in warehouse.location.list(&dir).await? {
        let key = warehouse.location.relative(&object.location);
        let inside = key.strip_prefix(&format!("{dir}/")).unwrap_or(&key);
        // `_delta_log/` and other names starting with `_` or `.` are the log's, not data.
        let hidden = inside.split('/').any(|part| part.starts_with('_') || part.starts_with('.'));
        if !hidden && !live.contains(&key) && object.last_modified < cutoff {
            warehouse.location.delete(&object.location).await?;
        }
    }
    Ok(())
}

/// The Arrow schema of a written Parquet file, from its footer (two ranged reads).
async fn file_schema(warehouse: &Warehouse, key: &str) -> Result<SchemaRef> {
    let path = warehouse.location.key(key);
    let url = warehouse.location.url_of(&path);
    let read = |range: std::ops::Range<u64>| {
        let (store, path, url) = (warehouse.location.store.clone(), path.clone(), url.clone());
        async move { store.get_range(&path, range).await.map_err(|e| Error::storage(format!("reading {url}"), e)) }
    };
    let size = object_size(warehouse, key).await?;
    let not_parquet = || Error::Internal(format!("{url} is not a Parquet file"));
    let tail = read(size.checked_sub(8).ok_or_else(not_parquet)?..size).await?;
    let footer = u64::from(u32::from_le_bytes(tail[..4].try_into().expect("four bytes")));
    let start = size.checked_sub(8 + footer).ok_or_else(not_parquet)?;
    let metadata = ParquetMetaDataReader::decode_metadata(&read(start..size - 8).await?)
        .map_err(|e| Error::parquet(format!("reading the footer of {url}"), e))?;
    let file = metadata.file_metadata();
    let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
        .map_err(|e| Error::parquet(format!("reading the schema of {url}"), e))?;
    Ok(std::sync::Arc::new(schema))
}

async fn object_size(warehouse: &Warehouse, key: &str) -> Result<u64> {
    let path = warehouse.location.key(key);
    let meta = warehouse
        .location
        .store
        .head(&path)
        .await
        .map_err(|e| Error::storage(format!("reading {}", warehouse.location.url_of(&path)), e))?;
    Ok(meta.size)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

    use super::*;
    use crate::config::StorageSettings;
    use crate::config::contract::days_since_epoch;
    use crate::warehouse::Shelf;
    use crate::warehouse::parquet::write_stream;

    const MART: &str = "customer_value";

    fn day(n: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 6, 1).unwrap() + chrono::Days::new(u64::from(n))
    }

    /// A mart snapshot of two customers written as a run would, with `extra` columns of Int64.
    async fn written(warehouse: &Warehouse, as_of: NaiveDate, run_id: &str, value_type: DataType) -> Vec<String> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("as_of", DataType::Date32, true),
            Field::new("customer_id", DataType::Utf8, true),
            Field::new("value", value_type.clone(), true),
        ]));
        let value: ArrayRef = match value_type {
            DataType::Utf8 => Arc::new(StringArray::from(vec!["1", "2"])),
            _ => Arc::new(Int64Array::from(vec![1, 2])),
        };
        let days = Date32Array::from(vec![days_since_epoch(as_of); 2]);
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(days), Arc::new(StringArray::from(vec!["C1", "C2"])), value],
        )
        .unwrap();
        let stream = RecordBatchStreamAdapter::new(
            schema.clone(),
            futures::stream::iter([Ok::<_, datafusion::error::DataFusionError>(batch)]),
        );
        let dir = warehouse.layout().run_snapshot_dir(Shelf::Marts, MART, as_of, run_id);
        let key = warehouse.location.key(&format!("{dir}/part-0.parquet"));
        write_stream(&warehouse.location, key.clone(), schema, Box::pin(stream)).await.unwrap();
        vec![warehouse.location.relative(&key)]
    }

    fn snapshot<'a>(as_of: NaiveDate, run_id: &'a str, files: Vec<String>) -> Snapshot<'a> {
        Snapshot {
            shelf: Shelf::Marts,
            table: MART,
            as_of,
            run_id,
            files,
            rows: 2,
            schema: vec!["customer_id Utf8".into()],
            inputs: "inputs".into(),
            replaces_table: false,
        }
    }

    fn warehouse(dir: &tempfile::TempDir) -> Warehouse {
        Warehouse::open(dir.path().to_str().unwrap(), dir.path(), &StorageSettings::default()).unwrap()
    }

    const RETENTION: Duration = Duration::from_secs(3600);

    /// A snapshot committed each night for `nights` nights from `day(0)`.
    async fn commit_nights(warehouse: &Warehouse, nights: u32) {
        for n in 0..nights {
            let files = written(warehouse, day(n), "run", DataType::Int64).await;
            commit(warehouse, snapshot(day(n), "run", files), RETENTION).await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_history_opens_from_its_last_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = warehouse(&dir);
        commit_nights(&warehouse, 25).await;
        let log = dir.path().join(format!("marts/{MART}/_delta_log"));
        // delta-rs checkpoints the version whose number plus one is a multiple of the interval.
        assert!(log.join(format!("{:020}.checkpoint.parquet", 19)).exists(), "a checkpoint every ten commits");

        // What log cleanup does to commits older than the log retention: the commits the
        // checkpoint covers are gone, and the table still opens whole from the checkpoint.
        for version in 0..=19 {
            std::fs::remove_file(log.join(format!("{version:020}.json"))).unwrap();
        }
        let snapshots = warehouse.committed_snapshots(MART).await.unwrap();
        assert_eq!(snapshots.len(), 25);
        assert_eq!(snapshots[24].version, Some(25), "version 0 created the table");
        assert_eq!(snapshots[3].files.len(), 1);
        assert_eq!(snapshots[3].run_id, "run");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_two_writers_on_one_version_the_second_fails_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = warehouse(&dir);
        let files = written(&warehouse, day(0), "first", DataType::Int64).await;
        commit(&warehouse, snapshot(day(0), "first", files), RETENTION).await.unwrap();

        let stale = warehouse.open_mart_table(MART).await.unwrap().unwrap();
        let files = written(&warehouse, day(1), "winner", DataType::Int64).await;
        commit(&warehouse, snapshot(day(1), "winner", files), RETENTION).await.unwrap();
        let files = written(&warehouse, day(1), "loser", DataType::Int64).await;
        let error = commit_to(&warehouse, &stale, snapshot(day(1), "loser", files)).await.unwrap_err();

        let message = error.to_string();
        assert!(message.contains("another writer committed version 2 first; nothing was committed"), "{message}");
        let snapshots = warehouse.committed_snapshots(MART).await.unwrap();
        assert_eq!(snapshots.iter().map(|s| s.run_id.as_str()).collect::<Vec<_>>(), ["first", "winner"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_column_that_changes_type_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = warehouse(&dir);
        let files = written(&warehouse, day(0), "first", DataType::Int64).await;
        commit(&warehouse, snapshot(day(0), "first", files), RETENTION).await.unwrap();
        let files = written(&warehouse, day(1), "second", DataType::Utf8).await;
        let error = commit(&warehouse, snapshot(day(1), "second", files), RETENTION).await.unwrap_err();
        let message = error.to_string();
        assert!(message.contains("mart `customer_value`: column `value` was long and is now string"), "{message}");
        assert!(message.contains(&format!("run again with `--rebuild-table {MART}`")), "{message}");
        assert_eq!(warehouse.committed_snapshots(MART).await.unwrap().len(), 1);

        // Started anew: the new snapshot alone, with its schema and its facts only.
        let files = written(&warehouse, day(1), "anew", DataType::Utf8).await;
        let anew = Snapshot { replaces_table: true, ..snapshot(day(1), "anew", files) };
        commit(&warehouse, anew, RETENTION).await.unwrap();
        let snapshots = warehouse.committed_snapshots(MART).await.unwrap();
        assert_eq!(snapshots.iter().map(|s| (s.as_of, s.run_id.as_str())).collect::<Vec<_>>(), [(day(1), "anew")]);
        assert!(snapshots[0].schema.contains(&"value Utf8".to_string()), "{:?}", snapshots[0].schema);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_no_version_names_are_removed_only_after_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = warehouse(&dir);
        let first = written(&warehouse, day(0), "first", DataType::Int64).await;
        commit(&warehouse, snapshot(day(0), "first", first.clone()), RETENTION).await.unwrap();
        let second = written(&warehouse, day(0), "second", DataType::Int64).await;
        commit(&warehouse, snapshot(day(0), "second", second.clone()), RETENTION).await.unwrap();
        assert!(dir.path().join(&first[0]).exists(), "a replaced file younger than the retention stays");

        remove_expired_files(&warehouse, MART, Duration::ZERO).await.unwrap();
        assert!(!dir.path().join(&first[0]).exists(), "an expired replaced file goes");
        assert!(dir.path().join(&second[0]).exists(), "a live file stays");
        assert!(dir.path().join(format!("marts/{MART}/_delta_log/{:020}.json", 0)).exists(), "the log stays");
    }

    /// How long opening a table takes after 400 nightly commits, from its checkpoints and from
    /// the JSON commits alone (BENCHMARKS.md, "Delta log"). A measurement, printed:
    /// `cargo nextest run --lib --run-ignored only --no-capture -E 'test(open_time)'`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement for BENCHMARKS.md, not a check"]
    async fn open_time_after_400_commits() {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = warehouse(&dir);
        commit_nights(&warehouse, 400).await;
        let open = |label: &'static str| {
            let warehouse = &warehouse;
            async move {
                let before = warehouse.location.requests.snapshot();
                let started = std::time::Instant::now();
                for _ in 0..5 {
                    assert_eq!(warehouse.committed_snapshots(MART).await.unwrap().len(), 400);
                }
                let after = warehouse.location.requests.snapshot();
                let gets = (after["get"] - before["get"]) / 5;
                println!("{label}: {:?} per open, {gets} GET requests", started.elapsed() / 5);
            }
        };
        open("with checkpoints").await;
        let log = dir.path().join(format!("marts/{MART}/_delta_log"));
        for entry in std::fs::read_dir(&log).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains("checkpoint") {
                std::fs::remove_file(path).unwrap();
            }
        }
        open("from the 401 JSON commits").await;
    }
}
