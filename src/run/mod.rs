//! One command, end to end: open the project and warehouse, run the stages, write the ledger.
//! The binary calls these functions and prints what they return.

pub mod alerts;
mod inputs;
pub mod ledger;
pub mod pipeline;
pub mod query;
pub mod summary;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;

use crate::config::{Diagnostics, Project, SourceContract};
use crate::engine::{Engine, EngineSpec};
use crate::error::{Error, Result};
use crate::ingest::{self, IngestContext, LoadStatus, SourceLoad};
use crate::progress::Progress;
use crate::publish::lock::{self, RunLock};
use crate::transform::Dag;
use crate::warehouse::{Location, Warehouse};
use ledger::{Ledger, Request, RunStatus, Step};
pub use pipeline::{RunRequest, run};
pub use summary::RunReport;

/// Locations given on the command line or in the environment, over keymart.yaml.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub warehouse: Option<String>,
    pub landing: Option<String>,
    /// `local` or `ballista://HOST:PORT`; overrides keymart.yaml's `engine`.
    pub engine: Option<String>,
}

/// An opened project: configuration validated, warehouse and landing zone reachable.
pub struct Session {
    pub project: Project,
    pub warehouse: Warehouse,
    pub landing: Location,
    pub progress: Progress,
    /// Where the models run.
    pub engine: EngineSpec,
}

impl Session {
    /// Remove the staging files of this run and of any run killed before it could (called with
    /// the lock held, so no live run is writing there). Best effort: leftovers are only garbage,
    /// and a storage failure here is followed by the error that matters.
    async fn clear_staging(&self) {
        let root = self.warehouse.layout().staging_root();
        if let Err(e) = self.warehouse.location.delete_prefix(root).await {
            tracing::debug!("could not clear {root}/ (the next run will): {e}");
        }
    }

    /// Load `sources` (every source when empty) of `pipeline` for `as_of`, in reference waves,
    /// each with the project's reject threshold: the loads in reference order, and the first
    /// warehouse error if one stopped them (`ingest::load_sources`).
    async fn load_date(
        &self,
        pipeline: &crate::config::Pipeline,
        run_id: &str,
        as_of: NaiveDate,
        workers: usize,
        sources: &[String],
    ) -> (Vec<SourceLoad>, Option<Error>) {
        let ctx = IngestContext {
            warehouse: self.warehouse.clone(),
            landing: self.landing.clone(),
            run_id: run_id.to_string(),
            progress: self.progress.clone(),
            workers,
            limits: self.project.settings.limits.clone(),
        };
        let chosen = |c: &SourceContract| sources.is_empty() || sources.contains(&c.name);
        ingest::load_sources(&ctx, pipeline, as_of, chosen, |c| self.project.max_reject_ratio(c)).await
    }

    /// The query engine for this project's warehouse: this process, or the Ballista cluster
    /// the project (or --engine) names.
    pub async fn engine(&self) -> Result<Engine> {
        let limit = self.project.settings.memory_limit_mb.value.saturating_mul(1024 * 1024);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        match &self.engine {
            EngineSpec::Local => Engine::local(&self.warehouse.location, limit),
            EngineSpec::Ballista(scheduler) => {
                let wait = Duration::from_secs(self.project.settings.ballista_wait_seconds.value);
                Engine::ballista(scheduler, &self.warehouse.location, limit, wait).await
            }
        }
    }

    pub fn open(project_dir: &Path, overrides: &Overrides, progress: Progress) -> Result<Session> {
        let project = Project::load(project_dir).map_err(Error::Config)?;
        let storage = &project.settings.storage;
        let mut warehouse =
            Warehouse::open(&project.warehouse_url(overrides.warehouse.as_deref()), project_dir, storage)?;
        warehouse.location.row_group_rows =
            usize::try_from(project.settings.row_group_rows.value).unwrap_or(usize::MAX);
        let landing_spec = overrides.landing.clone().or_else(|| project.settings.landing.clone());
        let landing = warehouse.landing(landing_spec.as_deref(), project_dir, storage)?;
        let engine = match overrides.engine.as_deref().or(project.settings.engine.as_ref().map(|e| e.value.as_str())) {
            Some(spec) => EngineSpec::parse(spec).map_err(|e| Error::Usage(format!("engine {e}")))?,
            None => EngineSpec::Local,
        };
        Ok(Session { project, warehouse, landing, progress, engine })
    }
}

/// Validate the project, models included (SQL syntax, unknown tables, cycles); a one-line
/// summary when it is sound.
pub fn check(project_dir: &Path) -> Result<String> {
    let project = Project::load(project_dir).map_err(Error::Config)?;
    let mut diagnostics = Diagnostics::default();
    for pipeline in &project.pipelines {
        if let Err(found) = Dag::build(pipeline) {
            diagnostics.0.extend(found.0);
        }
    }
    if !diagnostics.is_empty() {
        return Err(Error::Config(diagnostics));
    }
    let sources: usize = project.pipelines.iter().map(|p| p.sources.len()).sum();
    let models: usize = project.pipelines.iter().map(|p| p.models.len()).sum();
    let names: Vec<&str> = project.pipelines.iter().map(|p| p.name.as_str()).collect();
    Ok(format!(
        "{}: ok — {} pipeline{} ({}), {sources} source{}, {models} model{}",
        display_dir(project_dir).display(),
        names.len(),
        plural(names.len()),
        names.join(", "),
        plural(sources),
        plural(models)
    ))
}

/// The model graph of a pipeline, as text or Graphviz dot.
pub fn dag(project_dir: &Path, pipeline: Option<&str>, dot: bool) -> Result<String> {
    let project = Project::load(project_dir).map_err(Error::Config)?;
    let pipeline = project.select_pipeline(pipeline).map_err(Error::Usage)?;
    let dag = Dag::build(pipeline).map_err(Error::Config)?;
    Ok(if dot { dag.to_dot(pipeline) } else { dag.to_text(pipeline) })
}

/// Recent runs, newest first.
pub async fn runs(session: &Session, limit: usize) -> Result<String> {
    let ledgers = ledger::list(&session.warehouse).await?;
    let mut out = String::from(
        "run_id                          command  pipeline  dates                   status     seconds  error\n",
    );
    for l in ledgers.iter().take(limit) {
        let dates = match (l.request.dates.first(), l.request.dates.last()) {
            (Some(a), Some(b)) if a != b => format!("{a}..{b}"),
            (Some(a), _) => a.to_string(),
            _ => "-".to_string(),
        };
        let seconds = l
            .finished_at
            .map_or("-".to_string(), |f| format!("{:.1}", (f - l.started_at).num_milliseconds() as f64 / 1000.0));
        let status = format!("{:?}", l.status).to_lowercase();
        let error = l.error.as_deref().and_then(|e| e.lines().next()).unwrap_or("");
        out.push_str(&format!(
            "{:<31} {:<8} {:<9} {:<23} {:<10} {:>7}  {error}\n",
            l.run_id, l.command, l.request.pipeline, dates, status, seconds
        ));
    }
    Ok(out.trim_end().to_string())
}

/// Remove the run lock (an operator's decision after a crashed run).
pub async fn unlock(session: &Session) -> Result<String> {
    Ok(match lock::force_unlock(&session.warehouse.location).await? {
        Some(holder) => format!("removed the lock of {holder}"),
        None => "the warehouse was not locked".to_string(),
    })
}

/// Turn a warehouse's `_SUCCESS`-committed marts into Delta tables, holding the run lock.
pub async fn migrate(session: &Session) -> Result<String> {
    let run_id = ledger::new_run_id();
    let lock = RunLock::acquire(&session.warehouse.location, &run_id, "migrate", session.project.lock_ttl()).await?;
    let migrated = crate::publish::migrate::migrate(&session.warehouse, session.project.file_retention()).await;
    lock.release().await?;
    let migrated = migrated?;
    Ok(match migrated.marts {
        0 => "nothing to migrate: every mart is a Delta table".to_string(),
        marts => format!(
            "migrated {marts} marts: {} snapshots committed to their Delta tables, {} committed by an earlier migration",
            migrated.committed, migrated.already
        ),
    })
}

/// The request of an earlier run, to replay it (`--retry`).
pub async fn retry_request(session: &Session, run_id: &str) -> Result<Request> {
    let ledgers = ledger::list(&session.warehouse).await?;
    let found = if run_id == "last" {
        ledgers.into_iter().find(|l| l.command == "run")
    } else {
        ledgers.into_iter().find(|l| l.run_id == run_id)
    };
    found.map(|l| l.request).ok_or_else(|| Error::Usage(format!("no run `{run_id}` in the ledger")))
}

fn display_dir(dir: &Path) -> PathBuf {
    if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir.to_path_buf() }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub struct IngestRequest {
    pub pipeline: Option<String>,
    pub as_of: NaiveDate,
    /// Only these sources (all when empty).
    pub sources: Vec<String>,
    pub workers: usize,
}

/// What `keymart ingest` did: one line per source and file.
pub struct IngestReport {
    pub run_id: String,
    pub ledger: String,
    pub loads: Vec<SourceLoad>,
}

/// Load the selected sources for one date, in reference waves, and write the ledger.
pub async fn ingest(session: &Session, request: &IngestRequest) -> Result<IngestReport> {
    let pipeline = session.project.select_pipeline(request.pipeline.as_deref()).map_err(Error::Usage)?;
    for wanted in &request.sources {
        if pipeline.source(wanted).is_none() {
            let known: Vec<&str> = pipeline.sources.iter().map(|s| s.name.as_str()).collect();
            return Err(Error::Usage(format!(
                "pipeline `{}` has no source `{wanted}` (sources: {})",
                pipeline.name,
                known.join(", ")
            )));
        }
    }
    let run_id = ledger::new_run_id();
    let lock = RunLock::acquire(&session.warehouse.location, &run_id, "ingest", session.project.lock_ttl()).await?;
    let recorded = Request {
        pipeline: pipeline.name.clone(),
        dates: vec![request.as_of],
        select: request.sources.clone(),
        ..Request::default()
    };
    let mut ledger =
        Ledger::start(&run_id, "ingest", recorded, &session.warehouse.location.display, &session.landing.display);
    let result = match ledger.save(&session.warehouse).await {
        Ok(()) => load_sources(session, pipeline, &run_id, request, &mut ledger).await,
        Err(e) => Err(e),
    };
    lock.release().await?;
    result
}

async fn load_sources(
    session: &Session,
    pipeline: &crate::config::Pipeline,
    run_id: &str,
    request: &IngestRequest,
    ledger: &mut Ledger,
) -> Result<IngestReport> {
    let run_id = run_id.to_string();
    let (loads, failure) = session.load_date(pipeline, &run_id, request.as_of, request.workers, &request.sources).await;
    ledger.steps.extend(loads.iter().cloned().map(Step::Ingest));
    session.clear_staging().await;

    let status = if failure.is_some() || loads.iter().any(|l| l.status == LoadStatus::Failed) {
        RunStatus::Failed
    } else {
        RunStatus::Succeeded
    };
    ledger.finish(status, failure.as_ref().map(ToString::to_string));
    ledger.count_requests(&session.warehouse.location, &session.landing);
    ledger.save(&session.warehouse).await?;
    if let Some(e) = failure {
        return Err(e);
    }
    let ledger_url = session.warehouse.location.url_of(&session.warehouse.layout().run_ledger(&run_id));
    Ok(IngestReport { run_id, ledger: ledger_url, loads })
}

impl IngestReport {
    /// `Err` naming every source that failed (exit code: data rejected).
    pub fn outcome(&self) -> Result<()> {
        let failed: Vec<String> = self
            .loads
            .iter()
            .filter(|l| l.status == LoadStatus::Failed)
            .map(|l| format!("{}: {}", l.source, l.error.as_deref().unwrap_or("failed")))
            .collect();
        if failed.is_empty() { Ok(()) } else { Err(Error::InputRejected(failed.join("\n"))) }
    }
}

impl fmt::Display for IngestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<[String; 6]> =
            vec![["source".into(), "file".into(), "read".into(), "loaded".into(), "rejected".into(), "status".into()]];
        for load in &self.loads {
            let status = match load.status {
                LoadStatus::Loaded => "loaded".to_string(),
                LoadStatus::Failed => "FAILED".to_string(),
            };
            if load.files.is_empty() {
                rows.push([load.source.clone(), "-".into(), "0".into(), "0".into(), "0".into(), status.clone()]);
            }
            for (i, file) in load.files.iter().enumerate() {
                rows.push([
                    if i == 0 { load.source.clone() } else { String::new() },
                    file.file.clone(),
                    file.rows_read.to_string(),
                    file.rows_loaded.to_string(),
                    file.rows_rejected.to_string(),
                    if i == 0 { status.clone() } else { String::new() },
                ]);
            }
        }
        let total = |pick: fn(&SourceLoad) -> u64| self.loads.iter().map(pick).sum::<u64>().to_string();
        rows.push([
            "total".into(),
            String::new(),
            total(|l| l.rows_read),
            total(|l| l.rows_loaded),
            total(|l| l.rows_rejected),
            String::new(),
        ]);
        let widths: Vec<usize> = (0..6).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                if (2..5).contains(&c) {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
                line.push_str("  ");
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        for load in &self.loads {
            if !load.rejects_by_reason.is_empty() {
                let reasons: Vec<String> = load.rejects_by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
                writeln!(f, "{} rejects: {}", load.source, reasons.join(", "))?;
            }
            if let Some(error) = &load.error {
                writeln!(f, "{} failed: {error}", load.source)?;
            }
        }
        write!(f, "run {} — ledger {}", self.run_id, self.ledger)
    }
}
