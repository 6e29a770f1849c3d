//! `keymart run`: lock → for each date: ingest → models → tests → publish → report → ledger. This file
//! orchestrates: the DAG answers what runs when (`transform::dag`), the state lifecycle is
//! `transform::state`'s, and each stage does its own work.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};

use super::ledger::{self, Ledger, Request, RunStatus, Step};
use super::summary::{DateReport, DateStatus, ModelLine, ModelOutcome, RunReport};
use super::{Session, alerts, inputs};
use crate::audit::{self, TestOutcome};
use crate::config::{Materialized, Model, Pipeline};
use crate::engine::Params;
use crate::error::{Error, Result};
use crate::failpoint;
use crate::ingest::LoadStatus;
use crate::publish::lock::RunLock;
use crate::publish::{self, Snapshot};
use crate::report;
use crate::transform::state::states_to_keep;
use crate::transform::{Dag, Increments, Materialization, States, Transform};
use crate::warehouse::Shelf;

pub struct RunRequest {
    pub pipeline: Option<String>,
    pub dates: Vec<NaiveDate>,
    /// `model` or `model+` (with everything downstream); all models when empty.
    pub select: Vec<String>,
    pub rebuild: bool,
    /// Compute incremental models from all history, not from their previous state.
    pub full: bool,
    /// Marts whose tables start anew from the first date's snapshot, without their earlier
    /// snapshots (the way out of a column that changed type or disappeared).
    pub rebuild_tables: Vec<String>,
    pub workers: usize,
}

pub async fn run(session: &Session, request: &RunRequest) -> Result<RunReport> {
    let project = &session.project;
    let pipeline = project.select_pipeline(request.pipeline.as_deref()).map_err(Error::Usage)?;
    let dag = Dag::build(pipeline).map_err(Error::Config)?;
    let selected = dag.select(&request.select).map_err(Error::Usage)?;
    for mart in &request.rebuild_tables {
        if !pipeline.is_mart(mart) || !selected.contains(mart) {
            return Err(Error::Usage(format!(
                "--rebuild-table {mart}: not a mart this run builds in pipeline `{}`",
                pipeline.name
            )));
        }
    }
    let run_id = ledger::new_run_id();
    let lock = RunLock::acquire(&session.warehouse.location, &run_id, "run", project.lock_ttl()).await?;
    let recorded = Request {
        pipeline: pipeline.name.clone(),
        dates: request.dates.clone(),
        select: request.select.clone(),
        rebuild: request.rebuild,
        full: request.full,
        rebuild_tables: request.rebuild_tables.clone(),
    };
    let mut ledger =
        Ledger::start(&run_id, "run", recorded, &session.warehouse.location.display, &session.landing.display);
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

/// A model that ran tonight: its output and its tests' outcomes.
struct ModelRun<'m> {
    model: &'m Model,
    materialization: Materialization,
    tests: Vec<TestOutcome>,
}

/// One date's models as they run: what each step leaves for the steps after it.
struct Night<'s> {
    as_of: NaiveDate,
    /// Where the models run (recorded in the ledger).
    engine: String,
    lines: Vec<ModelLine>,
    /// Models that failed a blocking test, or read one that did: not published.
    blocked: BTreeSet<String>,
    written: Vec<Materialization>,
    increments: Increments,
    states: States<'s>,
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
        let rebuild = request.rebuild || !request.rebuild_tables.is_empty();
        if !rebuild && self.all_committed_with(as_of, &fingerprint).await? {
            ledger.steps.push(Step::Skip { as_of, reason: "every mart is committed from the same inputs".into() });
            return Ok(DateReport { as_of, status: DateStatus::Skipped, models: Vec::new() });
        }
        self.ingest_date(as_of, ledger).await?;

        let engine = session.engine().await?;
        let params = Params::new(as_of, &pipeline.vars)?;
        let transform =
            Transform { engine: &engine, warehouse: &session.warehouse, pipeline, dag, as_of, run_id, params: &params };
        let to_run = dag.with_upstream_views_and_tables(pipeline, selected);
        self.register_inputs(&transform, &to_run, ledger).await?;

        let task = session.progress.steps(format!("models {as_of}"), to_run.len() as u64, "models");
        let mut night = Night {
            as_of,
            engine: engine.name.clone(),
            lines: Vec::new(),
            blocked: BTreeSet::new(),
            written: Vec::new(),
            increments: Increments::default(),
            states: States::new(&session.project, &session.warehouse, pipeline, request.full),
        };
        for batch in dag.batches(pipeline, &to_run) {
            let upstream_failed = self.upstream_failed(batch, &night.blocked);
            let ready: Vec<&Model> = batch
                .iter()
                .filter(|name| !upstream_failed.contains_key(name))
                .map(|name| pipeline.model(name).expect("dag model"))
                .collect();
            let runs = self.run_batch(&transform, &ready, &mut night).await?;
            self.record_batch(batch, &upstream_failed, runs, &mut night, ledger).await?;
            task.inc(batch.len() as u64);
        }
        task.finish(&format!("{} models, {} blocked", to_run.len(), night.blocked.len()));

        self.publish_marts(&fingerprint, &mut night, ledger).await?;
        self.publish_report(as_of).await;
        if self.alerts_due(&night) {
            alerts::after_publish(session, as_of, ledger).await;
        }
        let status = if night.blocked.is_empty() { DateStatus::Published } else { DateStatus::TestsFailed };
        Ok(DateReport { as_of, status, models: night.lines })
    }

    /// Whether every selected mart is committed for `as_of` from inputs with this fingerprint.
    async fn all_committed_with(&self, as_of: NaiveDate, fingerprint: &str) -> Result<bool> {
        let marts: Vec<&String> = self.selected.iter().filter(|m| self.pipeline.is_mart(m)).collect();
        if marts.is_empty() {
            return Ok(false);
        }
        for mart in marts {
            match self.session.warehouse.manifest(mart, as_of).await? {
                Some(manifest) if manifest.inputs == fingerprint => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Ingest every source of the date; any failure stops the date before any model runs.
    async fn ingest_date(&self, as_of: NaiveDate, ledger: &mut Ledger) -> Result<()> {
        let (loads, warehouse_error) =
            self.session.load_date(self.pipeline, self.run_id, as_of, self.request.workers, &[]).await;
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
        Ok(())
    }

    /// Make what tonight's models read visible to the engine: the sources, the marts' histories,
    /// and the committed snapshots of upstream marts that are not rebuilt tonight.
    async fn register_inputs(&self, transform: &Transform<'_>, to_run: &[String], ledger: &mut Ledger) -> Result<()> {
        let inputs = self.dag.inputs_of(to_run);
        let tables = transform.register_sources(&inputs.sources.iter().cloned().collect()).await?;
        ledger.steps.push(Step::Sources { as_of: transform.as_of, tables });
        transform.register_histories(&inputs.histories.iter().cloned().collect()).await?;
        for upstream in &inputs.models {
            transform.register_committed(self.pipeline.model(upstream).expect("dag model")).await?;
        }
        Ok(())
    }

    /// For each model of a batch, the model it reads that failed (models of one batch read
    /// none of each other, so this is known before the batch runs).
    fn upstream_failed<'b>(&self, batch: &'b [String], blocked: &BTreeSet<String>) -> BTreeMap<&'b String, String> {
        batch
            .iter()
            .filter_map(|name| {
                let inputs = &self.dag.inputs[name].models;
                inputs.iter().find(|m| blocked.contains(*m)).map(|cause| (name, cause.clone()))
            })
            .collect()
    }

    /// Compute and test the ready models of one batch.
    async fn run_batch<'m>(
        &self,
        transform: &Transform<'_>,
        ready: &[&'m Model],
        night: &mut Night<'_>,
    ) -> Result<Vec<ModelRun<'m>>> {
        if let [model] = ready
            && model.materialized == Materialized::Incremental
        {
            // Incremental models share the night's change sets and commit states: one at a time.
            let previous = night.states.previous(model, transform.as_of).await?;
            let materialization = transform.materialize_incremental(model, previous, &mut night.increments).await?;
            let tests = audit::run_tests(transform.engine, model, materialization.key_repeats).await?;
            return Ok(vec![ModelRun { model, materialization, tests }]);
        }
        // Up to `workers` at a time: a mart's windows over every customer and its final merge
        // run on one core. In order, so the ledger and the summary keep the DAG's order.
        let runs = futures::stream::iter(ready.iter().map(|&model| async move {
            let materialization = transform.materialize(model).await?;
            let tests = audit::run_tests(transform.engine, model, materialization.key_repeats).await?;
            Ok::<_, Error>(ModelRun { model, materialization, tests })
        }));
        runs.buffered(self.request.workers.max(1)).try_collect().await
    }

    /// Record what became of each model of a batch: not run, failed a blocking test (its files
    /// discarded), tested, or an incremental state kept for the next night.
    async fn record_batch(
        &self,
        batch: &[String],
        upstream_failed: &BTreeMap<&String, String>,
        runs: Vec<ModelRun<'_>>,
        night: &mut Night<'_>,
        ledger: &mut Ledger,
    ) -> Result<()> {
        let as_of = night.as_of;
        let mut runs = runs.into_iter();
        for name in batch {
            if let Some(cause) = upstream_failed.get(name) {
                let model = self.pipeline.model(name).expect("dag model");
                night.blocked.insert(name.clone());
                ledger.steps.push(Step::Blocked {
                    as_of,
                    model: name.clone(),
                    because: format!("{cause} failed a test"),
                });
                let outcome = ModelOutcome::UpstreamFailed(cause.clone());
                night.lines.push(ModelLine::new(name, model.materialized, None, &[], outcome));
                continue;
            }
            let ModelRun { model, materialization, tests } = runs.next().expect("one run per model ready");
            let failed: Vec<String> = tests.iter().filter(|o| o.blocks()).map(|o| o.test.clone()).collect();
            let outcome = if !failed.is_empty() {
                night.blocked.insert(name.clone());
                publish::discard(&self.session.warehouse, &materialization.files).await?;
                ModelOutcome::FailedTests(failed)
            } else if model.materialized == Materialized::Mart {
                ModelOutcome::Tested
            } else if let Some(state) = &materialization.state {
                self.keep_state(&materialization, as_of, &mut night.states).await?;
                ModelOutcome::Kept(state.clone())
            } else {
                ModelOutcome::Registered
            };
            night.lines.push(ModelLine::new(name, model.materialized, materialization.rows, &tests, outcome));
            ledger.steps.push(Step::Model { as_of, engine: night.engine.clone(), run: materialization.clone() });
            ledger.steps.extend(tests.into_iter().map(|outcome| Step::Test { as_of, outcome }));
            night.written.push(materialization);
        }
        Ok(())
    }

    /// Commit an incremental model's tested state for the next night, and remove the states no
    /// night will start from.
    async fn keep_state(&self, state: &Materialization, as_of: NaiveDate, states: &mut States<'_>) -> Result<()> {
        let warehouse = &self.session.warehouse;
        let inputs = states.inputs_at(as_of).await?;
        let retention = self.session.project.file_retention();
        publish::commit(warehouse, self.snapshot(Shelf::State, state, as_of, inputs), retention).await?;
        let committed = warehouse.shelved_snapshots(Shelf::State, &state.model).await?;
        let since = state.state.as_ref().and_then(|s| s.since);
        publish::prune_states(warehouse, &state.model, &states_to_keep(&committed, as_of, since)).await
    }

    /// Commit every tested mart of the date that nothing blocked.
    async fn publish_marts(&self, fingerprint: &str, night: &mut Night<'_>, ledger: &mut Ledger) -> Result<()> {
        let (warehouse, as_of) = (&self.session.warehouse, night.as_of);
        let publishable =
            night.written.iter().filter(|m| m.materialized == Materialized::Mart && !night.blocked.contains(&m.model));
        for mart in publishable {
            failpoint::pause("before_commit");
            let mut snapshot = self.snapshot(Shelf::Marts, mart, as_of, fingerprint.to_string());
            snapshot.replaces_table =
                self.request.rebuild_tables.contains(&mart.model) && self.request.dates.first() == Some(&as_of);
            let started = std::time::Instant::now();
            let manifest = publish::commit(warehouse, snapshot, self.session.project.file_retention()).await?;
            let seconds = started.elapsed().as_secs_f64();
            failpoint::pause("after_commit");
            if let Some(line) = night.lines.iter_mut().find(|l| l.model == mart.model) {
                line.outcome = ModelOutcome::Published;
            }
            ledger.steps.push(Step::Publish {
                as_of,
                mart: manifest.table.clone(),
                files: manifest.files.clone(),
                rows: manifest.rows,
                version: manifest.version.unwrap_or_default(),
                seconds,
            });
            let pruned = publish::mart::prune(warehouse, &mart.model, as_of, &self.pipeline.retention).await?;
            if !pruned.is_empty() {
                ledger.steps.push(Step::Prune { as_of, mart: mart.model.clone(), dates: pruned });
            }
        }
        Ok(())
    }

    /// Write the night's report beside its marts, when the pipeline has the marts it shows. A
    /// report that cannot be written is a warning: the marts it shows are committed already.
    async fn publish_report(&self, as_of: NaiveDate) {
        if !report::REPORT_MARTS.iter().all(|mart| self.pipeline.is_mart(mart)) {
            return;
        }
        let lang = self.session.project.settings.report.lang;
        // A session of its own: the report registers the marts under the names the models use.
        let published = match self.session.engine().await {
            Ok(engine) => report::publish_report(&engine, &self.session.warehouse, Some(as_of), lang).await,
            Err(e) => Err(e),
        };
        match published {
            Ok(published) => tracing::info!("{published}"),
            Err(e) => tracing::warn!("the report of {as_of} was not written: {e}"),
        }
    }

    /// Whether tonight published what alerts read: `key_accounts` (the statuses) and
    /// `customer_churn` (the reasons). A selection without them changed no status.
    fn alerts_due(&self, night: &Night<'_>) -> bool {
        crate::alerts::ALERT_MARTS.iter().all(|mart| {
            self.pipeline.is_mart(mart)
                && !night.blocked.contains(*mart)
                && (*mart != "key_accounts" || night.written.iter().any(|m| m.model == *mart))
        })
    }

    /// The snapshot a tested model's output commits as.
    fn snapshot<'m>(
        &'m self,
        shelf: Shelf,
        written: &'m Materialization,
        as_of: NaiveDate,
        inputs: String,
    ) -> Snapshot<'m> {
        Snapshot {
            shelf,
            table: &written.model,
            as_of,
            run_id: self.run_id,
            files: written.files.clone(),
            rows: written.rows.unwrap_or(0),
            schema: written.schema.clone(),
            inputs,
            replaces_table: false,
        }
    }
}
