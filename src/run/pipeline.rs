//! `keymart run`: lock → for each date: ingest → models → tests → publish → ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};

use super::ledger::{self, Ledger, Request, RunStatus, Step};
use super::{Session, failpoint, inputs};
use crate::audit::{self, TestOutcome};
use crate::config::{Materialized, Model, Pipeline};
use crate::engine::Params;
use crate::error::{Error, Result};
use crate::ingest::LoadStatus;
use crate::publish::lock::RunLock;
use crate::publish::{self, Snapshot};
use crate::transform::dag::is_mart;
use crate::transform::{Dag, Increments, Materialization, Transform};
use crate::warehouse::snapshot::{Shelf, SnapshotManifest};

pub struct RunRequest {
    pub pipeline: Option<String>,
    pub dates: Vec<NaiveDate>,
    /// `model` or `model+` (with everything downstream); all models when empty.
    pub select: Vec<String>,
    pub rebuild: bool,
    /// Compute incremental models from all history, not from their previous state.
    pub full: bool,
    pub workers: usize,
}

/// What happened to one date.
#[derive(Debug, Clone, PartialEq)]
pub enum DateStatus {
    Published,
    /// Already committed from the same inputs.
    Skipped,
    /// Some marts were not published because a blocking test failed.
    TestsFailed,
}

pub struct DateReport {
    pub as_of: NaiveDate,
    pub status: DateStatus,
    pub models: Vec<ModelLine>,
}

/// One line of the run summary.
pub struct ModelLine {
    pub model: String,
    pub materialized: Materialized,
    pub rows: Option<u64>,
    pub tests_passed: usize,
    pub tests_failed: usize,
    pub outcome: String,
}

pub struct RunReport {
    pub run_id: String,
    pub ledger: String,
    pub dates: Vec<DateReport>,
}

impl RunReport {
    /// `Err` when a date's blocking test failed (exit code: tests failed).
    pub fn outcome(&self) -> Result<()> {
        let failed: Vec<String> = self
            .dates
            .iter()
            .filter(|d| d.status == DateStatus::TestsFailed)
            .map(|d| {
                let blocked: Vec<&str> = d
                    .models
                    .iter()
                    .filter(|m| m.outcome.starts_with("NOT PUBLISHED"))
                    .map(|m| m.model.as_str())
                    .collect();
                format!("{}: data tests failed; not published: {}", d.as_of, blocked.join(", "))
            })
            .collect();
        if failed.is_empty() { Ok(()) } else { Err(Error::TestsFailed(failed.join("\n"))) }
    }
}

pub async fn run(session: &Session, request: &RunRequest) -> Result<RunReport> {
    let project = &session.project;
    let pipeline = project.select_pipeline(request.pipeline.as_deref()).map_err(Error::Usage)?;
    let dag = Dag::build(pipeline).map_err(Error::Config)?;
    let selected = dag.select(&request.select).map_err(Error::Usage)?;
    let run_id = ledger::new_run_id();
    let lock = RunLock::acquire(&session.warehouse.location, &run_id, "run", project.lock_ttl()).await?;
    let mut ledger = Ledger::start(
        &run_id,
        "run",
        Request {
            pipeline: pipeline.name.clone(),
            dates: request.dates.clone(),
            select: request.select.clone(),
            rebuild: request.rebuild,
            full: request.full,
        },
        &session.warehouse.location.display,
        &session.landing.display,
    );
    let plan = Plan { session, pipeline, dag: &dag, selected: &selected, request, run_id: &run_id };
    let result = plan.run_dates(&mut ledger).await;
    session.clear_staging().await;
    let (status, error) = match &result {
        Ok(dates) if dates.iter().all(|d| d.status != DateStatus::TestsFailed) => (RunStatus::Succeeded, None),
        Ok(_) => (RunStatus::Failed, Some("data tests failed".to_string())),
        Err(e) => (RunStatus::Failed, Some(e.to_string())),
    };
    ledger.finish(status, error);
    ledger.count_requests(&session.warehouse.location, &session.landing);
    let saved = ledger.save(&session.warehouse).await;
    lock.release().await?;
    saved?;
    let dates = result?;
    let ledger_url = session.warehouse.location.url_of(&session.warehouse.layout().run_ledger(&run_id));
    Ok(RunReport { run_id, ledger: ledger_url, dates })
}

/// What every date of one run shares.
struct Plan<'a> {
    session: &'a Session,
    pipeline: &'a Pipeline,
    dag: &'a Dag,
    selected: &'a [String],
    request: &'a RunRequest,
    run_id: &'a str,
}

impl Plan<'_> {
    async fn run_dates(&self, ledger: &mut Ledger) -> Result<Vec<DateReport>> {
        ledger.save(&self.session.warehouse).await?;
        let mut reports = Vec::new();
        for &as_of in &self.request.dates {
            let report = self.run_date(as_of, ledger).await;
            ledger.save(&self.session.warehouse).await?;
            let report = report?;
            let stop = report.status == DateStatus::TestsFailed;
            reports.push(report);
            if stop {
                // Later dates would build on a snapshot that was not published.
                break;
            }
        }
        Ok(reports)
    }

    async fn run_date(&self, as_of: NaiveDate, ledger: &mut Ledger) -> Result<DateReport> {
        let Plan { session, pipeline, dag, selected, request, run_id } = *self;
        let fingerprint = inputs::fingerprint(session, &session.project, pipeline, dag, as_of).await?;
        let marts: Vec<&String> = selected.iter().filter(|m| is_mart(pipeline, m)).collect();
        if !request.rebuild && !marts.is_empty() && all_committed_with(session, &marts, as_of, &fingerprint).await? {
            ledger.steps.push(Step::Skip { as_of, reason: "every mart is committed from the same inputs".into() });
            return Ok(DateReport { as_of, status: DateStatus::Skipped, models: Vec::new() });
        }

        // Ingest every source of the date; any failure stops the date before any model runs.
        let (loads, warehouse_error) = session.load_date(pipeline, run_id, as_of, request.workers, &[]).await;
        let mut failures = Vec::new();
        for load in loads {
            if load.status == LoadStatus::Failed {
                failures.push(format!("{}: {}", load.source, load.error.clone().unwrap_or_default()));
            }
            ledger.steps.push(Step::Ingest(load));
        }
        if let Some(e) = warehouse_error {
            return Err(e);
        }
        if !failures.is_empty() {
            return Err(Error::InputRejected(format!("{as_of}: {}", failures.join("\n"))));
        }

        let engine = session.engine().await?;
        let params = Params::new(as_of, &pipeline.vars)?;
        let transform =
            Transform { engine: &engine, warehouse: &session.warehouse, pipeline, dag, as_of, run_id, params: &params };
        let to_run = with_upstream_views_and_tables(pipeline, dag, selected);
        let sources: BTreeSet<String> = to_run.iter().flat_map(|m| dag.inputs[m].sources.clone()).collect();
        let tables = transform.register_sources(&sources).await?;
        ledger.steps.push(Step::Sources { as_of, tables });
        let histories: BTreeSet<String> = to_run.iter().flat_map(|m| dag.inputs[m].histories.clone()).collect();
        transform.register_histories(&histories).await?;
        for upstream in to_run.iter().flat_map(|m| dag.inputs[m].models.clone()).collect::<BTreeSet<_>>() {
            if !to_run.contains(&upstream) {
                transform.register_committed(pipeline.model(&upstream).expect("dag model")).await?;
            }
        }

        let task = session.progress.steps(format!("models {as_of}"), to_run.len() as u64, "models");
        let mut blocked: BTreeSet<String> = BTreeSet::new();
        let mut lines = Vec::new();
        let mut written: Vec<Materialization> = Vec::new();
        let mut increments = Increments::default();
        let mut states = StateInputs::default();
        for batch in batches(pipeline, dag, &to_run) {
            // Models of one batch read none of each other, so what blocks them is known now.
            let causes: BTreeMap<&String, &String> = batch
                .iter()
                .filter_map(|name| dag.inputs[name].models.iter().find(|m| blocked.contains(*m)).map(|c| (name, c)))
                .collect();
            let ready: Vec<&Model> = batch
                .iter()
                .filter(|name| !causes.contains_key(name))
                .map(|name| pipeline.model(name).expect("dag model"))
                .collect();
            let runs = if let [model] = ready[..]
                && model.materialized == Materialized::Incremental
            {
                // Incremental models share the night's change sets and commit states: one at a time.
                let previous = self.previous_state(model, as_of, &mut states).await?;
                let materialization = transform.materialize_incremental(model, previous, &mut increments).await?;
                let outcomes = audit::run_tests(&engine, model, materialization.key_repeats).await?;
                vec![(model, materialization, outcomes)]
            } else {
                // Up to `workers` at a time: a mart's windows over every customer and its final
                // merge run on one core, so one mart alone leaves the other core idle. In order, so
                // the ledger and the summary keep the DAG's order.
                let runs = futures::stream::iter(ready.iter().map(|&model| {
                    let (transform, engine) = (&transform, &engine);
                    async move {
                        let materialization = transform.materialize(model).await?;
                        let outcomes = audit::run_tests(engine, model, materialization.key_repeats).await?;
                        Ok::<_, Error>((model, materialization, outcomes))
                    }
                }));
                runs.buffered(request.workers.max(1)).try_collect::<Vec<_>>().await?
            };
            crate::engine::return_free_memory();
            let mut runs = runs.into_iter();
            for name in batch {
                task.inc(1);
                if let Some(cause) = causes.get(name) {
                    let model = pipeline.model(name).expect("dag model");
                    blocked.insert(name.clone());
                    ledger.steps.push(Step::Blocked {
                        as_of,
                        model: name.clone(),
                        because: format!("{cause} failed a test"),
                    });
                    lines.push(line(
                        name,
                        model.materialized,
                        None,
                        &[],
                        format!("NOT PUBLISHED (upstream {cause} failed)"),
                    ));
                    continue;
                }
                let (model, materialization, outcomes) = runs.next().expect("one run per model ready");
                let failed_blocking: Vec<&TestOutcome> = outcomes.iter().filter(|o| o.blocks()).collect();
                let outcome = if !failed_blocking.is_empty() {
                    blocked.insert(name.clone());
                    publish::discard(&session.warehouse, &materialization.files).await?;
                    let tests: Vec<&str> = failed_blocking.iter().map(|o| o.test.as_str()).collect();
                    format!("NOT PUBLISHED (failed {})", tests.join(", "))
                } else if model.materialized == Materialized::Mart {
                    "tested".to_string()
                } else if let Some(state) = &materialization.state {
                    self.keep_state(&materialization, as_of, &mut states).await?;
                    match (state.since, state.changed_keys, &state.full) {
                        (Some(since), Some(keys), _) => format!("kept ({keys} keys recomputed since {since})"),
                        (_, _, Some(why)) => format!("kept (computed whole: {why})"),
                        _ => "kept".to_string(),
                    }
                } else {
                    "ok".to_string()
                };
                lines.push(line(name, model.materialized, materialization.rows, &outcomes, outcome));
                ledger.steps.push(Step::Model { as_of, engine: engine.name.clone(), run: materialization.clone() });
                ledger.steps.extend(outcomes.into_iter().map(|outcome| Step::Test { as_of, outcome }));
                written.push(materialization);
            }
        }

        task.finish(&format!("{} models, {} blocked", to_run.len(), blocked.len()));
        for materialization in
            written.iter().filter(|m| m.materialized == Materialized::Mart && !blocked.contains(&m.model))
        {
            failpoint::pause("before_commit");
            let manifest = publish::commit(
                &session.warehouse,
                Snapshot {
                    shelf: Shelf::Marts,
                    table: &materialization.model,
                    as_of,
                    run_id,
                    files: materialization.files.clone(),
                    rows: materialization.rows.unwrap_or(0),
                    schema: materialization.schema.clone(),
                    inputs: fingerprint.clone(),
                },
            )
            .await?;
            if let Some(line) = lines.iter_mut().find(|l| l.model == materialization.model) {
                line.outcome = "published".to_string();
            }
            ledger.steps.push(Step::Publish {
                as_of,
                mart: manifest.table.clone(),
                files: manifest.files.clone(),
                rows: manifest.rows,
                manifest: session.warehouse.location.relative(&session.warehouse.manifest_key(
                    Shelf::Marts,
                    &manifest.table,
                    as_of,
                )),
            });
        }
        let status = if blocked.is_empty() { DateStatus::Published } else { DateStatus::TestsFailed };
        Ok(DateReport { as_of, status, models: lines })
    }
}

/// The state hash of each date a night looked at (`inputs::state_inputs`), computed once.
#[derive(Default)]
struct StateInputs(BTreeMap<NaiveDate, String>);

impl Plan<'_> {
    async fn state_inputs(&self, states: &mut StateInputs, date: NaiveDate) -> Result<String> {
        if let Some(hash) = states.0.get(&date) {
            return Ok(hash.clone());
        }
        let hash = inputs::state_inputs(self.session, self.pipeline, date).await?;
        states.0.insert(date, hash.clone());
        Ok(hash)
    }

    /// The state an incremental model starts from tonight: its latest committed state before
    /// `as_of`, if that was computed from the loads and pipeline there are now; else why not.
    async fn previous_state(
        &self,
        model: &Model,
        as_of: NaiveDate,
        states: &mut StateInputs,
    ) -> Result<std::result::Result<SnapshotManifest, String>> {
        if self.request.full {
            return Ok(Err("--full".into()));
        }
        let committed = self.session.warehouse.shelved_snapshots(Shelf::State, &model.name).await?;
        let Some(latest) = committed.into_iter().rfind(|s| s.as_of < as_of) else {
            return Ok(Err("no earlier state".into()));
        };
        if latest.inputs != self.state_inputs(states, latest.as_of).await? {
            return Ok(Err(format!("the state of {} was computed from other loads or another pipeline", latest.as_of)));
        }
        // A state is a cache of what all history gives: one that lost a file costs a whole
        // computation, not the night.
        let warehouse = &self.session.warehouse;
        let present =
            warehouse.location.relative_keys(&warehouse.snapshot_dir(Shelf::State, &model.name, latest.as_of)).await?;
        if let Some(missing) = latest.files.iter().find(|f| !present.contains(f)) {
            tracing::warn!("{}: the state of {} has lost {missing}; computing it whole", model.name, latest.as_of);
            return Ok(Err(format!("the state of {} has lost {missing}", latest.as_of)));
        }
        Ok(Ok(latest))
    }

    /// Commit an incremental model's tested state for the next night, and remove the states no
    /// night will start from: all but this one, the one it started from and the two newest.
    async fn keep_state(&self, state: &Materialization, as_of: NaiveDate, states: &mut StateInputs) -> Result<()> {
        let warehouse = &self.session.warehouse;
        let snapshot = Snapshot {
            shelf: Shelf::State,
            table: &state.model,
            as_of,
            run_id: self.run_id,
            files: state.files.clone(),
            rows: state.rows.unwrap_or(0),
            schema: state.schema.clone(),
            inputs: self.state_inputs(states, as_of).await?,
        };
        publish::commit(warehouse, snapshot).await?;
        let committed = warehouse.shelved_snapshots(Shelf::State, &state.model).await?;
        let mut keep: Vec<NaiveDate> = committed.iter().rev().take(2).map(|s| s.as_of).collect();
        keep.push(as_of);
        keep.extend(state.state.as_ref().and_then(|s| s.since));
        publish::prune_states(warehouse, &state.model, &keep).await
    }
}

fn line(
    model: &str,
    materialized: Materialized,
    rows: Option<u64>,
    outcomes: &[TestOutcome],
    outcome: String,
) -> ModelLine {
    let failed = outcomes.iter().filter(|o| o.status == audit::TestStatus::Failed).count();
    ModelLine {
        model: model.to_string(),
        materialized,
        rows,
        tests_passed: outcomes.len() - failed,
        tests_failed: failed,
        outcome,
    }
}

/// `models` (in run order) cut into the groups that run side by side: a staging model alone, or
/// the marts that follow one another without reading each other (their other inputs are done by
/// then).
fn batches<'m>(pipeline: &Pipeline, dag: &Dag, models: &'m [String]) -> Vec<&'m [String]> {
    let mut batches = Vec::new();
    let mut next = 0;
    while next < models.len() {
        let size = side_by_side(pipeline, dag, &models[next..]);
        batches.push(&models[next..next + size]);
        next += size;
    }
    batches
}

/// How many of `models` run side by side from the first.
fn side_by_side(pipeline: &Pipeline, dag: &Dag, models: &[String]) -> usize {
    if !models.first().is_some_and(|first| is_mart(pipeline, first)) {
        return 1;
    }
    let mut batch: BTreeSet<&str> = BTreeSet::new();
    for name in models {
        if !is_mart(pipeline, name) || reads(pipeline, dag, name).any(|input| batch.contains(input)) {
            break;
        }
        batch.insert(name.as_str());
    }
    batch.len()
}

/// The models a model and its relationship tests read.
fn reads<'a>(pipeline: &'a Pipeline, dag: &'a Dag, name: &str) -> impl Iterator<Item = &'a str> {
    let tested = pipeline.model(name).into_iter().flat_map(|m| &m.tests).filter_map(|t| match &t.kind {
        crate::config::TestKind::Relationships { to_table, .. } if dag.inputs.contains_key(to_table) => {
            Some(to_table.as_str())
        }
        _ => None,
    });
    dag.inputs[name].models.iter().map(String::as_str).chain(tested)
}

/// The selected models plus the views and tables they and their tests read (transitively), in
/// run order. Upstream marts are read from their committed snapshots instead.
fn with_upstream_views_and_tables(pipeline: &Pipeline, dag: &Dag, selected: &[String]) -> Vec<String> {
    let mut wanted: BTreeSet<String> = selected.iter().cloned().collect();
    let mut frontier: Vec<String> = selected.to_vec();
    while let Some(name) = frontier.pop() {
        for input in reads(pipeline, dag, &name) {
            if !is_mart(pipeline, input) && wanted.insert(input.to_string()) {
                frontier.push(input.to_string());
            }
        }
    }
    dag.order.iter().filter(|m| wanted.contains(*m)).cloned().collect()
}

async fn all_committed_with(session: &Session, marts: &[&String], as_of: NaiveDate, fingerprint: &str) -> Result<bool> {
    for mart in marts {
        match session.warehouse.manifest(mart, as_of).await? {
            Some(manifest) if manifest.inputs == fingerprint => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for date in &self.dates {
            match date.status {
                DateStatus::Skipped => {
                    writeln!(
                        f,
                        "{}: skipped — every mart is committed from the same inputs (use --rebuild to recompute)",
                        date.as_of
                    )?;
                    continue;
                }
                DateStatus::Published => writeln!(f, "{}: published", date.as_of)?,
                DateStatus::TestsFailed => writeln!(f, "{}: data tests failed", date.as_of)?,
            }
            let width = date.models.iter().map(|m| m.model.len()).max().unwrap_or(5).max(5);
            for m in &date.models {
                let rows = m.rows.map_or("-".to_string(), |r| r.to_string());
                let tests = if m.tests_passed + m.tests_failed == 0 {
                    "-".to_string()
                } else {
                    format!("{}/{} tests passed", m.tests_passed, m.tests_passed + m.tests_failed)
                };
                writeln!(
                    f,
                    "  {:<width$}  {:<5}  {:>10} rows  {:<18}  {}",
                    m.model,
                    m.materialized.to_string(),
                    rows,
                    tests,
                    m.outcome
                )?;
            }
        }
        write!(f, "run {} — ledger {}", self.run_id, self.ledger)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Project;

    /// The shipped pipeline: its staging models one by one, then the marts in the groups the
    /// DAG allows in its order (customer_value and customer_churn read model_parameters,
    /// key_accounts reads them, key_account_history and customer_profile read key_accounts), then
    /// the two check views, which read marts.
    #[test]
    fn marts_that_read_none_of_each_other_run_side_by_side() {
        let project = Project::load(Path::new(env!("CARGO_MANIFEST_DIR"))).expect("the shipped project loads");
        let pipeline = project.select_pipeline(None).expect("one pipeline");
        let dag = Dag::build(pipeline).expect("the shipped DAG builds");
        let groups: Vec<String> = batches(pipeline, &dag, &dag.order).iter().map(|b| b.join(" ‖ ")).collect();
        let staging = groups.iter().take_while(|g| g.starts_with("stg_")).count();
        assert!(groups[..staging].iter().all(|g| !g.contains('‖')), "{groups:#?}");
        assert_eq!(
            groups[staging..],
            [
                "model_parameters ‖ customer_rfm ‖ service_quality",
                "customer_value ‖ customer_churn",
                "key_accounts",
                "key_account_history ‖ segment_migration ‖ customer_profile",
                "segment_migration_rows",
                "key_account_current_rows",
            ]
        );
    }
}
