//! Incremental models: a table kept from night to night (`state/<model>/as_of=D/`) and
//! recomputed each night only for the keys whose rows may have changed since the state it
//! starts from; every other key keeps its rows from that state.
//!
//! Which keys. For each source the incremental models read (directly or through views), the
//! rows that can differ between the previous state's date P and tonight's date D are
//!   (a) the rows of the loads after P: new rows and new versions of old ones;
//!   (b) the versions those replaced (the same primary key in a load up to P);
//!   (c) rows loaded by P with a date or timestamp that the night's date passed since P, itself
//!       or plus one of the windows the models compare dates with (`d > $as_of - $w` changes
//!       when the date passes `d + w`): rows that came into view or left a window.
//! Those rows are run through the views the models read, at P's date and at D's, and the keys
//! the views give are the changed keys. An incremental model promises that its rows for a key
//! depend only on its inputs' rows with that key, and on the date only through such comparisons
//! (`dag` checks what it reads and how it uses `$as_of`); then its rows for every other key are
//! tonight exactly what the previous state holds, and the merge
//!   state(D) = state(P) without the changed keys ∪ the model over the changed keys' rows
//! is what computing it over all history would give.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use datafusion::common::{JoinType, ScalarValue};
use datafusion::prelude::DataFrame;
use serde::Serialize;

use super::{Transform, quote};
use crate::config::{ColumnType, LoadMode, Materialized, Model, SourceContract};
use crate::engine::{date_value, engine_error};
use crate::error::{Error, Result};
use crate::warehouse::snapshot::{Shelf, SnapshotManifest};

/// How an incremental model was computed tonight (for the ledger and the summary).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateRun {
    /// The state it started from, when only the changed keys were recomputed.
    pub since: Option<NaiveDate>,
    pub changed_keys: Option<u64>,
    /// Why every key was computed instead.
    pub full: Option<String>,
}

impl StateRun {
    pub fn full(why: impl Into<String>) -> StateRun {
        StateRun { since: None, changed_keys: None, full: Some(why.into()) }
    }
}

/// The change sets of one night, shared by the incremental models with the same key and
/// previous state (their inputs restricted to the changed keys are computed once).
#[derive(Default)]
pub struct Increments {
    sets: BTreeMap<(Vec<String>, NaiveDate), std::result::Result<ChangeSet, String>>,
}

pub struct ChangeSet {
    /// Names this set's tables: `<P as YYYYMMDD>_<key columns>`.
    tag: String,
    key: Vec<String>,
    keys: u64,
    /// Inputs whose rows of the changed keys are registered as `restricted_name`.
    restricted: BTreeSet<String>,
}

impl ChangeSet {
    fn keys_table(&self) -> String {
        format!("__keys_{}", self.tag)
    }

    fn restricted_name(&self, table: &str) -> String {
        format!("__k_{}_{table}", self.tag)
    }

    fn dir(&self, transform: &Transform<'_>, what: &str) -> String {
        format!("{}/changes/{}/{what}", transform.warehouse.layout().staging(transform.run_id), self.tag)
    }
}

impl Transform<'_> {
    /// Compute an incremental model from `previous` (its last state, or why there is none to
    /// start from) and write tonight's state under `state/<model>/as_of=D/<run_id>/`.
    pub async fn materialize_incremental(
        &self,
        model: &Model,
        previous: std::result::Result<SnapshotManifest, String>,
        increments: &mut Increments,
    ) -> Result<super::Materialization> {
        let started = std::time::Instant::now();
        let set = match &previous {
            Ok(state) => increments.prepare(self, &model.key, state.as_of).await?.map(|set| (state, set)),
            Err(why) => Err(why.clone()),
        };
        let (planned, run) = match set {
            Ok((state, set)) => {
                let recomputed = self.recompute(model, set).await?;
                let merged = self.merge(model, state, set, recomputed).await?;
                (merged, StateRun { since: Some(state.as_of), changed_keys: Some(set.keys), full: None })
            }
            Err(why) => {
                let planned = self.engine.sql(&model.sql, self.params).await.map_err(|e| super::in_model(model, e))?;
                (planned, StateRun::full(why))
            }
        };
        let dir = self.warehouse.layout().run_snapshot_dir(Shelf::State, &model.name, self.as_of, self.run_id);
        let mut materialization = self.write_table(model, planned, &dir, started).await?;
        materialization.state = Some(run);
        Ok(materialization)
    }

    /// The model over its inputs' rows of the changed keys, written for the run and registered
    /// as its restricted table (which incremental models downstream read in turn).
    async fn recompute(&self, model: &Model, set: &mut ChangeSet) -> Result<DataFrame> {
        let inputs = &self.dag.inputs[&model.name];
        let mut renames = BTreeMap::new();
        for input in inputs.sources.iter().chain(&inputs.models) {
            renames.insert(input.clone(), self.restricted(set, input).await?);
        }
        let planned =
            self.engine.sql_reading(&model.sql, self.params, &renames).await.map_err(|e| super::in_model(model, e))?;
        let name = set.restricted_name(&model.name);
        self.write_for_run(&name, planned, &set.dir(self, &format!("models/{}", model.name))).await?;
        set.restricted.insert(model.name.clone());
        self.table(&name).await
    }

    /// The previous state without the changed keys, and the recomputed rows.
    async fn merge(
        &self,
        model: &Model,
        previous: &SnapshotManifest,
        set: &ChangeSet,
        recomputed: DataFrame,
    ) -> Result<DataFrame> {
        let name = format!("__previous_{}", model.name);
        self.engine.register_files(&name, &self.warehouse.file_urls(&previous.files), None).await?;
        let columns: Vec<String> = recomputed.schema().fields().iter().map(|f| f.name().clone()).collect();
        let kept = self.without_keys(set, self.table(&name).await?).await?;
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let fail = |e| super::in_model(model, engine_error("merging with the previous state", e));
        kept.select_columns(&columns).map_err(fail)?.union(recomputed).map_err(fail)
    }

    /// `input`'s rows of the changed keys, as a registered table name: an incremental model
    /// recomputed tonight has them already; a source or view is read once for all models.
    async fn restricted(&self, set: &mut ChangeSet, input: &str) -> Result<String> {
        let name = set.restricted_name(input);
        if set.restricted.contains(input) {
            return Ok(name);
        }
        let rows = self.with_keys(set, self.table(input).await?).await?;
        let is_incremental = self.pipeline.model(input).is_some_and(|m| m.materialized == Materialized::Incremental);
        if is_incremental {
            // Computed over every key tonight (it had no state to start from): filtered on read.
            self.engine.register_view(&name, rows)?;
        } else {
            self.write_for_run(&name, rows, &set.dir(self, &format!("inputs/{input}"))).await?;
        }
        set.restricted.insert(input.to_string());
        Ok(name)
    }

    /// Rows of `df` whose key is a changed key. The keys are the join's build side (they are
    /// few; the rows may be all history).
    async fn with_keys(&self, set: &ChangeSet, df: DataFrame) -> Result<DataFrame> {
        self.keyed_join(set, df, JoinType::RightSemi).await
    }

    async fn without_keys(&self, set: &ChangeSet, df: DataFrame) -> Result<DataFrame> {
        self.keyed_join(set, df, JoinType::RightAnti).await
    }

    async fn keyed_join(&self, set: &ChangeSet, df: DataFrame, join: JoinType) -> Result<DataFrame> {
        let key: Vec<&str> = set.key.iter().map(String::as_str).collect();
        let missing: Vec<&str> =
            key.iter().copied().filter(|k| df.schema().field_with_unqualified_name(k).is_err()).collect();
        if !missing.is_empty() {
            return Err(Error::Usage(format!(
                "incremental models keyed by {} read a table without column(s) {}",
                key.join(", "),
                missing.join(", ")
            )));
        }
        let keys = self.table(&set.keys_table()).await?;
        keys.join(df, join, &key, &key, None).map_err(|e| engine_error("joining with the changed keys", e))
    }

    async fn table(&self, name: &str) -> Result<DataFrame> {
        self.engine.ctx.table(name).await.map_err(|e| engine_error(format!("reading {name}"), e))
    }

    /// Write a plan's result for this run only and register it under `name`: the number of rows.
    async fn write_for_run(&self, name: &str, planned: DataFrame, dir: &str) -> Result<u64> {
        let started = std::time::Instant::now();
        let (plan, streams) =
            super::start(planned, true).await.map_err(|e| engine_error(format!("computing {name}"), e))?;
        let files = self.write_files(dir, streams).await?;
        super::log_plan(name, started, plan.as_ref());
        let urls: Vec<String> = files.iter().map(|(_, w)| self.warehouse.location.url_of(&w.key)).collect();
        self.engine.register_files(name, &urls, None).await?;
        Ok(files.iter().map(|(_, w)| w.rows).sum())
    }

    /// The incremental models keyed by `key`.
    fn incremental_models(&self, key: &[String]) -> impl Iterator<Item = &Model> {
        self.pipeline.models.iter().filter(move |m| m.materialized == Materialized::Incremental && m.key == key)
    }

    /// For each source the incremental models keyed by `key` read (through views and each
    /// other), the window offsets in days at which those models and their views compare dates
    /// with `$as_of`, 0 for the date itself.
    async fn source_windows(&self, key: &[String]) -> Result<BTreeMap<String, BTreeSet<i64>>> {
        let mut found: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for model in self.incremental_models(key) {
            let mut days = BTreeSet::from([0]);
            let views = super::dag::views_read(self.pipeline, &self.dag.inputs, &model.name);
            for name in std::iter::once(&model.name).chain(&views) {
                for window in &self.dag.inputs[name].as_of.windows {
                    days.insert(window.sign * self.window_offset(name, &window.offset).await?);
                }
            }
            for source in self.sources_behind(&model.name) {
                found.entry(source).or_default().extend(&days);
            }
        }
        Ok(found)
    }

    /// The value of a window's offset (`$rfm_window_days`, `2 * $churn_window_days`) in days.
    async fn window_offset(&self, model: &str, offset: &str) -> Result<i64> {
        match self.scalar(&format!("SELECT CAST(({offset}) AS BIGINT) AS days")).await? {
            Some(ScalarValue::Int64(Some(days))) => Ok(days),
            _ => Err(Error::Usage(format!(
                "{}: the window `$as_of - {offset}` is not a whole number of days",
                self.pipeline.model(model).map(|m| m.file.display().to_string()).unwrap_or_default(),
            ))),
        }
    }

    /// The one value a one-row query gives.
    async fn scalar(&self, sql: &str) -> Result<Option<ScalarValue>> {
        let batches = self
            .engine
            .sql(sql, self.params)
            .await?
            .collect()
            .await
            .map_err(|e| engine_error(format!("evaluating {sql}"), e))?;
        Ok(batches.first().and_then(|b| ScalarValue::try_from_array(b.column(0), 0).ok()))
    }

    /// The sources and views the incremental models keyed by `key` read directly: where their
    /// inputs are restricted to the changed keys, and through which the keys are found.
    fn entry_relations(&self, key: &[String]) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for model in self.incremental_models(key) {
            let inputs = &self.dag.inputs[&model.name];
            found.extend(inputs.sources.iter().cloned());
            found.extend(inputs.models.iter().filter(|m| self.is_view(m)).cloned());
        }
        found
    }

    fn is_view(&self, name: &str) -> bool {
        self.pipeline.model(name).is_some_and(|m| m.materialized == Materialized::View)
    }

    /// The sources a relation reads, directly or through other models; itself for a source.
    fn sources_behind(&self, relation: &str) -> BTreeSet<String> {
        if self.pipeline.source(relation).is_some() {
            return BTreeSet::from([relation.to_string()]);
        }
        let inputs = &self.dag.inputs[relation];
        let mut found: BTreeSet<String> = inputs.sources.iter().cloned().collect();
        for model in &inputs.models {
            found.extend(self.sources_behind(model));
        }
        found
    }

    /// `relation` with `source` replaced by its changed rows, planned at `at` (views are
    /// re-planned over the changed rows, through any views between): the registered name.
    fn over_delta<'a>(
        &'a self,
        set: &'a ChangeSet,
        relation: &'a str,
        source: &'a str,
        at: NaiveDate,
    ) -> futures::future::BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            if relation == source {
                return Ok(format!("__delta_{}_{source}", set.tag));
            }
            let name = format!("__d_{}_{source}_{}_{relation}", set.tag, at.format("%Y%m%d"));
            if self.engine.ctx.table_exist(name.as_str()).unwrap_or(false) {
                return Ok(name);
            }
            let view = self.pipeline.model(relation).ok_or_else(|| Error::Internal(format!("no view {relation}")))?;
            let inputs = &self.dag.inputs[relation];
            let mut renames = BTreeMap::new();
            for input in inputs.sources.iter().chain(&inputs.models) {
                if self.sources_behind(input).contains(source) {
                    renames.insert(input.clone(), self.over_delta(set, input, source, at).await?);
                }
            }
            let mut params = self.params.clone();
            params.set("as_of", date_value(at));
            let planned =
                self.engine.sql_reading(&view.sql, &params, &renames).await.map_err(|e| super::in_model(view, e))?;
            self.engine.register_view(&name, planned)?;
            Ok(name)
        })
    }
}

impl Increments {
    /// The change set of the incremental models keyed by `key` since the state of `previous`,
    /// or why every key must be computed.
    async fn prepare(
        &mut self,
        transform: &Transform<'_>,
        key: &[String],
        previous: NaiveDate,
    ) -> Result<std::result::Result<&mut ChangeSet, String>> {
        let id = (key.to_vec(), previous);
        if !self.sets.contains_key(&id) {
            let set = change_set(transform, key, previous).await?;
            self.sets.insert(id.clone(), set);
        }
        Ok(self.sets.get_mut(&id).expect("inserted").as_mut().map_err(|why| why.clone()))
    }
}

async fn change_set(
    transform: &Transform<'_>,
    key: &[String],
    previous: NaiveDate,
) -> Result<std::result::Result<ChangeSet, String>> {
    let mut set = ChangeSet {
        tag: format!("{}_{}", previous.format("%Y%m%d"), key.join("_")).to_ascii_lowercase(),
        key: key.to_vec(),
        keys: 0,
        restricted: BTreeSet::new(),
    };
    let relations = transform.entry_relations(key);
    let windows = transform.source_windows(key).await?;
    for (source, windows) in &windows {
        let contract =
            transform.pipeline.source(source).ok_or_else(|| Error::Internal(format!("no source {source}")))?;
        let loads = transform.load_dates(contract).await?;
        if contract.load == LoadMode::Full && loads.iter().any(|d| *d > previous) {
            return Ok(Err(format!("source {source} is loaded whole and has a load after {previous}")));
        }
        let latest = loads.last().copied().unwrap_or(previous);
        let mut params = transform.params.clone();
        params.set("__previous", date_value(previous));
        params.set("__latest_load", date_value(latest));
        let delta = transform.engine.sql(&delta_sql(contract, windows), &params).await?;
        let name = format!("__delta_{}_{source}", set.tag);
        transform.write_for_run(&name, delta, &set.dir(transform, &format!("delta/{source}"))).await?;
    }
    let mut keys: Option<DataFrame> = None;
    let key_columns: Vec<&str> = key.iter().map(String::as_str).collect();
    for relation in &relations {
        for source in transform.sources_behind(relation) {
            for at in [previous, transform.as_of] {
                let name = transform.over_delta(&set, relation, &source, at).await?;
                let rows = transform.table(&name).await?;
                let shown = rows.select_columns(&key_columns).map_err(|e| {
                    Error::Usage(format!(
                        "incremental models keyed by {} read `{relation}`, which has no such column(s): {e}",
                        key.join(", ")
                    ))
                })?;
                keys = Some(match keys {
                    None => shown,
                    Some(all) => all.union(shown).map_err(|e| engine_error("collecting the changed keys", e))?,
                });
            }
        }
    }
    let Some(keys) = keys else { return Ok(Err("the model reads no source".into())) };
    let keys = keys.distinct().map_err(|e| engine_error("collecting the changed keys", e))?;
    set.keys = transform.write_for_run(&set.keys_table(), keys, &set.dir(transform, "keys")).await?;
    let nulls = key.iter().map(|k| format!("{} IS NULL", quote(k))).collect::<Vec<_>>().join(" OR ");
    let null_keys = transform.scalar(&format!("SELECT count(*) AS n FROM {} WHERE {nulls}", set.keys_table())).await?;
    if null_keys != Some(ScalarValue::Int64(Some(0))) {
        return Ok(Err(format!("a changed row has no {}", key.join(", "))));
    }
    Ok(Ok(set))
}

/// A source's rows that may differ between the previous state's date (`$__previous`) and
/// tonight (`$as_of`): (a), (b) and (c) of the module comment, every version, as loaded.
fn delta_sql(contract: &SourceContract, windows: &BTreeSet<i64>) -> String {
    let raw = format!("{}{}", super::RAW_PREFIX, contract.name);
    let columns: Vec<String> = contract.columns().map(|c| quote(&c.name)).chain(["load_date".into()]).collect();
    let select = columns.join(", ");
    let mut passed = Vec::new();
    for column in contract.columns() {
        let name = quote(&column.name);
        for w in windows {
            passed.push(match column.data_type {
                ColumnType::Date => format!("({name} > $__previous - ({w}) AND {name} <= $as_of - ({w}))"),
                // Its UTC date, as the models read a timestamp's date (the contracts store UTC).
                ColumnType::Timestamp => {
                    format!("(CAST({name} AS DATE) > $__previous - ({w}) AND CAST({name} AS DATE) <= $as_of - ({w}))")
                }
                _ => continue,
            });
        }
    }
    let mut parts = Vec::new();
    match contract.load {
        LoadMode::Full => {
            if !passed.is_empty() {
                parts.push(format!(
                    "SELECT {select} FROM {raw} WHERE load_date = $__latest_load AND ({})",
                    passed.join(" OR ")
                ));
            }
        }
        LoadMode::Incremental => {
            parts.push(format!("SELECT {select} FROM {raw} WHERE load_date > $__previous AND load_date <= $as_of"));
            let matches: Vec<String> =
                contract.primary_key.value.iter().map(|k| format!("n.{k} = r.{k}", k = quote(k))).collect();
            let old: Vec<String> = columns.iter().map(|c| format!("r.{c}")).collect();
            parts.push(format!(
                "SELECT {} FROM {raw} r WHERE r.load_date <= $__previous AND EXISTS (SELECT 1 FROM {raw} n \
                 WHERE n.load_date > $__previous AND n.load_date <= $as_of AND {})",
                old.join(", "),
                matches.join(" AND ")
            ));
            if !passed.is_empty() {
                parts.push(format!(
                    "SELECT {select} FROM {raw} WHERE load_date <= $__previous AND ({})",
                    passed.join(" OR ")
                ));
            }
        }
    }
    if parts.is_empty() {
        // Nothing can change: no rows, with the source's columns.
        return format!("SELECT {select} FROM {raw} WHERE false");
    }
    parts.join("\nUNION ALL\n")
}
