//! Stage 2 of the flow: raw/ → SQL models, in dependency order, with `$as_of` and the pipeline's
//! variables bound as typed values. Sources are visible to SQL by name; views are inlined;
//! tables and marts are written to the warehouse (never held in memory) and read back from there,
//! so the same plans can run on a distributed engine.

pub mod dag;
mod incremental;
mod key_order;
pub mod state;
pub mod windows;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, SortExpr, cast, col, lit};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use datafusion::prelude::DataFrame;
use serde::Serialize;

use crate::config::{LoadMode, Materialized, Model, Pipeline, Severity, SourceContract};
use crate::engine::{Engine, Params, date_value, engine_error};
use crate::error::{Error, Result};
use crate::warehouse::parquet::{WrittenFile, write_stream};
use crate::warehouse::snapshot::Shelf;
use crate::warehouse::{Warehouse, load_date_of};
pub use dag::{Dag, HISTORY_SUFFIX};
pub use incremental::{Increments, StateRun};
pub use state::States;

/// Everything a model run needs about the date being built.
pub struct Transform<'a> {
    pub engine: &'a Engine,
    pub warehouse: &'a Warehouse,
    pub pipeline: &'a Pipeline,
    pub dag: &'a Dag,
    pub as_of: NaiveDate,
    pub run_id: &'a str,
    pub params: &'a Params,
}

/// What one source table holds for this date (for the ledger).
#[derive(Debug, Clone, Serialize)]
pub struct SourceTable {
    pub source: String,
    /// The loads read: the latest for a `full` source, all up to `as_of` for an `incremental` one.
    pub load_dates: Vec<NaiveDate>,
}

/// A model that was run.
#[derive(Debug, Clone, Serialize)]
pub struct Materialization {
    pub model: String,
    pub materialized: Materialized,
    /// Files written (relative keys), none for a view.
    pub files: Vec<String>,
    pub rows: Option<u64>,
    pub bytes: u64,
    /// `name type` per output column.
    pub schema: Vec<String>,
    /// When it started: marts of one batch run side by side, so their `seconds` overlap.
    pub started_at: DateTime<Utc>,
    pub seconds: f64,
    /// For an incremental model: whether it started from a state, and how many keys changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<StateRun>,
    /// For a mart written sorted by its key: how many rows had the same key as the row before
    /// them, seen while they were written (0: the key is unique). None when not seen (a table,
    /// a key that cannot be watched, or rows that turned out not to be sorted).
    #[serde(skip)]
    pub key_repeats: Option<u64>,
}

const RAW_PREFIX: &str = "__raw_";

/// When `started` was on the wall clock, and the seconds since: one reading of the clock, so
/// that `started_at` plus `seconds` is when the step ended.
fn timing(started: Instant) -> (DateTime<Utc>, f64) {
    let elapsed = started.elapsed();
    (Utc::now() - TimeDelta::from_std(elapsed).unwrap_or_default(), elapsed.as_secs_f64())
}

impl Transform<'_> {
    /// Register every source the models read as a table named after the source.
    pub async fn register_sources(&self, names: &BTreeSet<String>) -> Result<Vec<SourceTable>> {
        let mut tables = Vec::new();
        for contract in self.pipeline.sources.iter().filter(|s| names.contains(&s.name)) {
            tables.push(self.register_source(contract).await?);
        }
        Ok(tables)
    }

    async fn register_source(&self, contract: &SourceContract) -> Result<SourceTable> {
        let location = &self.warehouse.location;
        let dates = self.load_dates(contract).await?;
        let (Some(&first), Some(&latest)) = (dates.first(), dates.last()) else {
            return Err(Error::InputRejected(format!(
                "source {} has no load on or before {}: ingest its extracts first",
                contract.name, self.as_of
            )));
        };
        let raw_table = format!("{RAW_PREFIX}{}", contract.name);
        let dir = location.url_of(&location.key(&self.warehouse.layout().raw_dir(&contract.name)));
        self.engine.register_partitioned(&raw_table, &dir, "load_date", DataType::Date32).await?;
        let columns: Vec<String> = contract.columns().map(|c| quote(&c.name)).collect();
        let (sql, load_dates) = match contract.load {
            LoadMode::Full => (
                format!("SELECT {}, load_date FROM {raw_table} WHERE load_date = $__latest_load", columns.join(", ")),
                vec![latest],
            ),
            // The latest version of each key: new and changed rows arrive in later loads, so a
            // row stands unless a later load has its key. Only loads after the first can
            // supersede anything, and they are the small daily ones: the anti-join builds on
            // their keys alone, where a window over all history would sort every row.
            // The first load alone: nothing can be superseded yet, and no anti-join against an
            // empty set of later loads is planned.
            LoadMode::Incremental if dates.len() == 1 => (
                format!("SELECT {}, load_date FROM {raw_table} WHERE load_date <= $as_of", columns.join(", ")),
                vec![latest],
            ),
            LoadMode::Incremental => {
                let matches: Vec<String> =
                    contract.primary_key.value.iter().map(|k| format!("n.{k} = r.{k}", k = quote(k))).collect();
                let select: Vec<String> = columns.iter().map(|c| format!("r.{c}")).collect();
                (
                    format!(
                        "SELECT {select}, r.load_date FROM {raw_table} r WHERE r.load_date <= $as_of \
                         AND NOT EXISTS (SELECT 1 FROM {raw_table} n WHERE n.load_date > $__first_load \
                         AND n.load_date <= $as_of AND n.load_date > r.load_date AND {matches})",
                        select = select.join(", "),
                        matches = matches.join(" AND ")
                    ),
                    dates.to_vec(),
                )
            }
        };
        let mut params = self.params.clone();
        params.set("__latest_load", date_value(latest));
        params.set("__first_load", date_value(first));
        let view = self.engine.sql(&sql, &params).await?;
        self.engine.register_view(&contract.name, view)?;
        Ok(SourceTable { source: contract.name.clone(), load_dates })
    }

    /// The dates of a source's loads up to `as_of`, oldest first.
    async fn load_dates(&self, contract: &SourceContract) -> Result<Vec<NaiveDate>> {
        let dates: BTreeSet<NaiveDate> = self
            .warehouse
            .location
            .relative_keys(&self.warehouse.layout().raw_dir(&contract.name))
            .await?
            .iter()
            .filter(|k| k.ends_with(".parquet"))
            .filter_map(|k| load_date_of(k))
            .filter(|d| *d <= self.as_of)
            .collect();
        Ok(dates.into_iter().collect())
    }

    /// Register `<mart>_history` for each mart: every committed snapshot (with its `as_of`
    /// column), or an empty table of the mart's declared columns before the first commit.
    pub async fn register_histories(&self, marts: &BTreeSet<String>) -> Result<()> {
        for mart in marts {
            let model = self.pipeline.model(mart).ok_or_else(|| Error::Internal(format!("no mart {mart}")))?;
            let table = format!("{mart}{HISTORY_SUFFIX}");
            let snapshots = self.warehouse.committed_snapshots(mart).await?;
            let files: Vec<String> =
                snapshots.iter().filter(|s| s.as_of < self.as_of).flat_map(|s| s.files.clone()).collect();
            let schema = declared_schema(model).ok_or_else(|| {
                Error::Usage(format!("mart `{mart}` is read as {table}: declare its `columns` in the pipeline"))
            })?;
            let schema: SchemaRef = schema.into();
            let urls = if files.is_empty() {
                // Before the first commit: a Parquet file without rows, written for the run. An
                // in-memory empty table plans as an empty operator, and Ballista 55's scheduler
                // never finishes some stages built on one (tests/it/ballista.rs hangs with it).
                let key = self.warehouse.layout().staging_file(self.run_id, &format!("empty/{table}/part-0.parquet"));
                let no_rows = RecordBatchStreamAdapter::new(schema.clone(), futures::stream::empty());
                let written = write_stream(&self.warehouse.location, key, schema.clone(), Box::pin(no_rows)).await?;
                vec![self.warehouse.location.url_of(&written.key)]
            } else {
                self.warehouse.file_urls(&files)
            };
            self.engine.register_files(&table, &urls, Some(schema)).await?;
        }
        Ok(())
    }

    /// Make an upstream mart that is not being rebuilt readable from its committed snapshot.
    pub async fn register_committed(&self, model: &Model) -> Result<()> {
        let manifest = self.warehouse.manifest(&model.name, self.as_of).await?.ok_or_else(|| {
            Error::Usage(format!(
                "`{}` is not selected and has no committed snapshot for {}: select it too",
                model.name, self.as_of
            ))
        })?;
        self.engine.register_files(&model.name, &self.warehouse.file_urls(&manifest.files), None).await
    }

    /// Run one model: register a view, or compute and write a table or mart and register the file.
    pub async fn materialize(&self, model: &Model) -> Result<Materialization> {
        let started = Instant::now();
        let planned = self.engine.sql(&model.sql, self.params).await.map_err(|e| in_model(model, e))?;
        match model.materialized {
            Materialized::View => {
                let schema = schema_lines(&planned);
                self.engine.register_view(&model.name, planned)?;
                let (started_at, seconds) = timing(started);
                Ok(Materialization {
                    model: model.name.clone(),
                    materialized: Materialized::View,
                    files: Vec::new(),
                    rows: None,
                    bytes: 0,
                    schema,
                    started_at,
                    seconds,
                    state: None,
                    key_repeats: None,
                })
            }
            Materialized::Mart => {
                let df = self.shape_mart(model, planned)?;
                let dir = self.warehouse.layout().run_snapshot_dir(Shelf::Marts, &model.name, self.as_of, self.run_id);
                self.written(model, df, &dir, false, started).await
            }
            _ => {
                let dir = format!("{}/tables/{}", self.warehouse.layout().staging(self.run_id), model.name);
                self.write_table(model, planned, &dir, started).await
            }
        }
    }

    /// A table's rows under `dir`. Its row order means nothing (marts sort their own), so each
    /// of the plan's output partitions is written to its own file, concurrently: one Parquet
    /// writer encodes on one core.
    async fn write_table(
        &self,
        model: &Model,
        planned: DataFrame,
        dir: &str,
        started: Instant,
    ) -> Result<Materialization> {
        self.written(model, planned, dir, true, started).await
    }

    /// Run the plan, write its output under `dir` (a file per partition, or one) and register
    /// the files as the model's table. At debug level (`-vv`) the plan is logged with its
    /// metrics: where the model's time and rows went.
    async fn written(
        &self,
        model: &Model,
        planned: DataFrame,
        dir: &str,
        per_partition: bool,
        started: Instant,
    ) -> Result<Materialization> {
        let schema = schema_lines(&planned);
        self.engine.ready().await?;
        let (plan, streams) =
            start(planned, per_partition).await.map_err(|e| in_model(model, engine_error("running", e)))?;
        let mut streams: Vec<_> = streams.into_iter().map(|stream| self.engine.watched(stream)).collect();
        // Started, not yet read: on Ballista the job is submitted at the first read.
        crate::failpoint::pause("model_started");
        // A mart is one stream sorted by its key (shape_mart): its key is watched as it is written.
        let key_watch = if per_partition {
            None
        } else {
            let (watched, watch) = key_order::KeyWatch::wrap(streams.pop().expect("one merged stream"), &model.key);
            streams.push(watched);
            watch
        };
        let files = self.write_files(dir, streams).await.map_err(|e| in_model(model, e))?;
        // The plan's memory is free now; glibc would keep it from model to model.
        crate::engine::return_free_memory();
        log_plan(&model.name, started, plan.as_ref());
        let location = &self.warehouse.location;
        let urls: Vec<String> = files.iter().map(|(_, written)| location.url_of(&written.key)).collect();
        self.engine.register_files(&model.name, &urls, None).await?;
        let (started_at, seconds) = timing(started);
        Ok(Materialization {
            model: model.name.clone(),
            materialized: model.materialized,
            rows: Some(files.iter().map(|(_, w)| w.rows).sum()),
            bytes: files.iter().map(|(_, w)| w.bytes).sum(),
            files: files.into_iter().map(|(relative, _)| relative).collect(),
            schema,
            started_at,
            seconds,
            state: None,
            key_repeats: key_watch.and_then(|watch| watch.repeated_rows()),
        })
    }

    /// Write stream i to `dir/part-i.parquet`, each on its own task (so on its own core); the
    /// files in order. On the first failure the other writes are aborted (dropping the JoinSet).
    async fn write_files(
        &self,
        dir: &str,
        streams: Vec<SendableRecordBatchStream>,
    ) -> Result<Vec<(String, WrittenFile)>> {
        let mut writes = tokio::task::JoinSet::new();
        for (i, stream) in streams.into_iter().enumerate() {
            let location = self.warehouse.location.clone();
            let relative = format!("{dir}/part-{i}.parquet");
            writes.spawn(async move {
                let (key, schema) = (location.key(&relative), stream.schema());
                write_stream(&location, key, schema, stream).await.map(|written| (i, relative, written))
            });
        }
        let mut files = Vec::new();
        while let Some(joined) = writes.join_next().await {
            files.push(joined.map_err(|e| Error::Internal(format!("writing {dir}: {e}")))??);
        }
        files.sort_by_key(|(i, _, _)| *i);
        Ok(files.into_iter().map(|(_, relative, written)| (relative, written)).collect())
    }

    /// A mart as published: `as_of` first, cast to its declared columns (when declared), rows
    /// sorted by the key and then by every other column (by the key alone when a blocking `unique`
    /// test guards it), so equal inputs give equal bytes.
    fn shape_mart(&self, model: &Model, df: DataFrame) -> Result<DataFrame> {
        let fail = |e| in_model(model, engine_error("shaping the mart", e));
        let produced: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        let mut df = df;
        if !produced.iter().any(|c| c == "as_of") {
            df = df.with_column("as_of", lit(date_value(self.as_of))).map_err(fail)?;
        }
        // DESIGN.md: PII stays in raw/ unless the pipeline allows it for this mart.
        let pii: Vec<&str> = self
            .pipeline
            .sources
            .iter()
            .flat_map(|s| s.columns())
            .filter(|c| c.pii && produced.contains(&c.name) && !model.allow_pii.contains(&c.name))
            .map(|c| c.name.as_str())
            .collect();
        if !pii.is_empty() {
            return Err(Error::Usage(format!(
                "{}: mart `{}` would publish personal data ({}); drop the column or list it under allow_pii",
                model.file.display(),
                model.name,
                pii.join(", ")
            )));
        }
        let mut projection: Vec<Expr> = vec![column("as_of")];
        if model.columns.is_empty() {
            projection.extend(produced.iter().filter(|c| *c != "as_of").map(|c| column(c)));
        } else {
            let missing: Vec<&str> =
                model.columns.iter().map(|c| c.name.as_str()).filter(|c| !produced.iter().any(|p| p == c)).collect();
            let undeclared: Vec<&str> = produced
                .iter()
                .map(String::as_str)
                .filter(|p| *p != "as_of" && !model.columns.iter().any(|c| c.name == *p))
                .collect();
            if !missing.is_empty() || !undeclared.is_empty() {
                return Err(Error::Usage(format!(
                    "{}: the query's columns differ from the declared ones (missing: {}; not declared: {})",
                    model.file.display(),
                    if missing.is_empty() { "-".into() } else { missing.join(", ") },
                    if undeclared.is_empty() { "-".into() } else { undeclared.join(", ") },
                )));
            }
            projection.extend(
                model
                    .columns
                    .iter()
                    .filter(|c| c.name != "as_of")
                    .map(|c| cast(column(&c.name), c.data_type.arrow_type()).alias(&c.name)),
            );
        }
        let df = df.select(projection).map_err(fail)?;
        let mut order: Vec<SortExpr> = model.key.iter().map(|k| column(k).sort(true, true)).collect();
        // A key that a blocking `unique` test guards orders every published snapshot on its own
        // (a snapshot with a repeated key is not published). Sorting by every other column too
        // only makes the sort carry them all as sort keys: at 5M customers that was
        // customer_profile's 17 columns, and its merge phase the night's memory failure.
        if !key_is_tested_unique(model) {
            let rest = df
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|c| !model.key.contains(c))
                .collect::<Vec<_>>();
            order.extend(rest.iter().map(|c| column(c).sort(true, true)));
        }
        df.sort(order).map_err(fail)
    }
}

/// At debug level (`-vv`): what was computed, in how long, and the plan with its metrics.
fn log_plan(name: &str, started: Instant, plan: &dyn ExecutionPlan) {
    tracing::debug!(
        "{name} ({:.2} s), plan with metrics:\n{}",
        started.elapsed().as_secs_f64(),
        datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(plan).indent(true)
    );
}

/// A plan's physical form and its output streams: every partition's, or one merged stream.
async fn start(
    df: DataFrame,
    per_partition: bool,
) -> datafusion::error::Result<(Arc<dyn ExecutionPlan>, Vec<SendableRecordBatchStream>)> {
    let task = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await?;
    let streams = if per_partition {
        datafusion::physical_plan::execute_stream_partitioned(plan.clone(), task)?
    } else {
        vec![datafusion::physical_plan::execute_stream(plan.clone(), task)?]
    };
    Ok((plan, streams))
}

fn key_is_tested_unique(model: &Model) -> bool {
    model.tests.iter().any(|test| test.severity == Severity::Error && test.kind.is_unique_on(&model.key))
}

fn column(name: &str) -> Expr {
    col(Column::from_name(name))
}

/// A double-quoted SQL identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn in_model(model: &Model, e: Error) -> Error {
    match e {
        Error::Engine { context, source } => {
            Error::Engine { context: format!("model {} ({}): {context}", model.name, model.file.display()), source }
        }
        other => other,
    }
}

fn schema_lines(df: &DataFrame) -> Vec<String> {
    df.schema().fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect()
}

/// The Arrow schema of a mart's declared columns, with `as_of` first.
pub fn declared_schema(model: &Model) -> Option<Schema> {
    if model.columns.is_empty() {
        return None;
    }
    let mut fields = vec![Field::new("as_of", DataType::Date32, true)];
    fields.extend(
        model.columns.iter().filter(|c| c.name != "as_of").map(|c| Field::new(&c.name, c.data_type.arrow_type(), true)),
    );
    Some(Schema::new(fields))
}
