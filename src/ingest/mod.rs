//! Stage 1 of the flow: landing files → `raw/<source>/load_date=D/` and `rejects/<source>/load_date=D/`.
//!
//! A load reads every landing file of one source for one date, types each record by the source
//! contract, quarantines bad rows with their reason, and commits the two Parquet files only when
//! the source passes its `max_reject_ratio` and no file is unreadable. Files are written to a
//! staging key first and moved into place, so a partition is replaced whole or not at all.

mod columns;
pub mod convert;
mod decode;
mod json;
mod key_hash;
mod key_set;
mod landing;
mod parallel;
pub mod read;
mod references;
mod reject;
pub mod sink;
pub mod values;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::config::{FileFormat, Pipeline, SourceContract};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::warehouse::{Location, Warehouse};
use convert::Converter;
pub use landing::{LandingFile, find as landing_files};
use read::csv::FileInput;
use read::{FileError, ReadLimits, ReadStop};
use sink::{FileCounts, LoadSink};

/// Property tests: `default_cases` each (kept small so the suite stays fast), or as many as
/// `PROPTEST_CASES` says (`PROPTEST_CASES=100000 cargo nextest run --lib ingest` for a long run).
#[cfg(test)]
pub(crate) fn proptest_config(default_cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default_cases);
    proptest::test_runner::Config { cases, failure_persistence: None, ..Default::default() }
}

/// What a load needs from the run around it.
#[derive(Clone)]
pub struct IngestContext {
    pub warehouse: Warehouse,
    pub landing: Location,
    pub run_id: String,
    pub progress: Progress,
    /// Threads that type records (the reader and writer have their own).
    pub workers: usize,
    /// What one landing file may hold (`limits:` of keymart.yaml).
    pub limits: crate::config::Limits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadStatus {
    Loaded,
    Failed,
}

/// The outcome of loading one source for one date, as recorded in the run ledger.
#[derive(Debug, Clone, Serialize)]
pub struct SourceLoad {
    pub source: String,
    pub load_date: NaiveDate,
    pub status: LoadStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    pub rejects_by_reason: BTreeMap<String, u64>,
    pub files: Vec<FileCounts>,
    /// Keys relative to the warehouse root of the committed files (or of kept rejects of a failed load).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects_file: Option<String>,
    pub seconds: f64,
}

impl SourceLoad {
    fn failed(source: &str, load_date: NaiveDate, error: String, started: Instant) -> SourceLoad {
        SourceLoad {
            source: source.to_string(),
            load_date,
            status: LoadStatus::Failed,
            error: Some(error),
            rows_read: 0,
            rows_loaded: 0,
            rows_rejected: 0,
            rejects_by_reason: BTreeMap::new(),
            files: Vec::new(),
            raw_file: None,
            rejects_file: None,
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// Load the chosen sources for `as_of` in reference waves, up to `ctx.workers` loads of a wave
/// side by side, Excel loads first: an Excel load is bounded by the one thread that parses its
/// sheet's XML, so beside it another load uses the core it leaves idle (two CPU-bound loads side
/// by side gain nothing, and each adds its key set and Parquet row group to memory). The loads
/// come back in reference order; with them the first warehouse error, after which no further
/// wave starts.
pub async fn load_sources(
    ctx: &IngestContext,
    pipeline: &Pipeline,
    as_of: NaiveDate,
    chosen: impl Fn(&SourceContract) -> bool,
    max_reject_ratio: impl Fn(&SourceContract) -> f64,
) -> (Vec<SourceLoad>, Option<Error>) {
    let mut loads = Vec::new();
    for wave in pipeline.sources_in_reference_waves() {
        let wave: Vec<&SourceContract> = wave.into_iter().filter(|c| chosen(c)).collect();
        let mut starts: Vec<usize> = (0..wave.len()).collect();
        starts.sort_by_key(|&i| wave[i].format != FileFormat::Xlsx);
        let wave = &wave;
        let mut results: Vec<(usize, Result<SourceLoad>)> = futures::stream::iter(starts)
            .map(|i| {
                let ratio = max_reject_ratio(wave[i]);
                async move { (i, load_source(ctx, pipeline, wave[i], as_of, ratio).await) }
            })
            // Unordered: a load starts as soon as any running one ends, not only when the one
            // started first does (it came back sorted below anyway).
            .buffer_unordered(ctx.workers.max(1))
            .collect()
            .await;
        results.sort_by_key(|(i, _)| *i);
        let mut failure = None;
        for (_, result) in results {
            match result {
                Ok(load) => loads.push(load),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if failure.is_some() {
            return (loads, failure);
        }
    }
    (loads, None)
}

/// Load one source for `as_of`. `Ok` with a failed status for bad input; `Err` only when the
/// warehouse itself cannot be read or written.
pub async fn load_source(
    ctx: &IngestContext,
    pipeline: &Pipeline,
    contract: &SourceContract,
    as_of: NaiveDate,
    max_reject_ratio: f64,
) -> Result<SourceLoad> {
    let started = Instant::now();
    let files = match landing::find(&ctx.landing, contract, as_of).await? {
        Ok(files) => files,
        Err(message) => return Ok(SourceLoad::failed(&contract.name, as_of, message, started)),
    };

    let mut references = HashMap::new();
    for column in contract.columns() {
        if let Some(reference) = &column.references {
            let target = pipeline
                .source(&reference.value.source)
                .ok_or_else(|| Error::Internal(format!("validated reference {} has no source", reference.value)))?;
            let keys = references::load_keys(&ctx.warehouse, target, &reference.value.column, as_of).await?;
            references.insert(reference.value.to_string(), keys);
        }
    }

    let layout = ctx.warehouse.layout();
    let staged_rows = layout.staged_part_file(&ctx.run_id, &layout.raw_partition(&contract.name, as_of), 0);
    let staged_rejects = layout.staged_part_file(&ctx.run_id, &layout.rejects_partition(&contract.name, as_of), 0);
    let total_bytes = files.iter().map(|f| f.size).sum();
    let task = Arc::new(ctx.progress.bytes(format!("ingest {}", contract.name), total_bytes));

    let converter = Arc::new(Converter::new(contract, &references));
    let read_job = ReadJob {
        contract: contract.clone(),
        files: files.clone(),
        landing: ctx.landing.clone(),
        warehouse: ctx.warehouse.location.clone(),
        workers: ctx.workers,
        limits: ReadLimits::from(&ctx.limits),
        staged_rows: staged_rows.clone(),
        staged_rejects: staged_rejects.clone(),
        task: task.clone(),
    };
    let outcome = tokio::task::spawn_blocking(move || read_job.run(&converter))
        .await
        .map_err(|e| Error::Internal(format!("ingest of {} stopped: {e}", contract.name)))??;

    let rows_read: u64 = outcome.files.iter().map(|f| f.rows_read).sum();
    let rows_loaded: u64 = outcome.files.iter().map(|f| f.rows_loaded).sum();
    let rows_rejected: u64 = outcome.files.iter().map(|f| f.rows_rejected).sum();
    let ratio = if rows_read == 0 { 0.0 } else { rows_rejected as f64 / rows_read as f64 };
    let error = if !outcome.file_errors.is_empty() {
        Some(outcome.file_errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    } else if ratio > max_reject_ratio {
        Some(format!(
            "rejected {rows_rejected} of {rows_read} rows ({:.2}%), more than max_reject_ratio {}%",
            ratio * 100.0,
            max_reject_ratio * 100.0
        ))
    } else {
        None
    };

    let location = &ctx.warehouse.location;
    let (status, raw_file, rejects_file) = if error.is_none() {
        let rows_key = layout.part_file(&layout.raw_partition(&contract.name, as_of), 0);
        let rejects_key = layout.part_file(&layout.rejects_partition(&contract.name, as_of), 0);
        location.rename(&staged_rejects, &rejects_key).await?;
        location.rename(&staged_rows, &rows_key).await?;
        (LoadStatus::Loaded, Some(location.relative(&rows_key)), Some(location.relative(&rejects_key)))
    } else {
        // The previous partition stays as it was; the rejects are kept beside the ledger.
        location.delete(&staged_rows).await?;
        if rows_rejected > 0 {
            let kept = layout.failed_load_rejects(&ctx.run_id, &contract.name, as_of);
            location.rename(&staged_rejects, &kept).await?;
            (LoadStatus::Failed, None, Some(location.relative(&kept)))
        } else {
            location.delete(&staged_rejects).await?;
            (LoadStatus::Failed, None, None)
        }
    };
    task.finish(&format!("{rows_read} read, {rows_loaded} loaded, {rows_rejected} rejected"));
    Ok(SourceLoad {
        source: contract.name.clone(),
        load_date: as_of,
        status,
        error,
        rows_read,
        rows_loaded,
        rows_rejected,
        rejects_by_reason: outcome.rejects_by_reason,
        files: outcome.files,
        raw_file,
        rejects_file,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The blocking part of a load: everything between listing the files and committing them.
struct ReadJob {
    contract: SourceContract,
    files: Vec<landing::LandingFile>,
    landing: Location,
    warehouse: Location,
    workers: usize,
    limits: ReadLimits,
    staged_rows: object_store::path::Path,
    staged_rejects: object_store::path::Path,
    task: Arc<crate::progress::Task>,
}

struct ReadOutcome {
    files: Vec<FileCounts>,
    file_errors: Vec<FileError>,
    rejects_by_reason: BTreeMap<String, u64>,
}

impl ReadJob {
    fn run(self, converter: &Converter) -> Result<ReadOutcome> {
        let runtime = tokio::runtime::Handle::current();
        let file_list = self.files.iter().map(|f| (f.name.clone(), f.size)).collect();
        let mut sink = LoadSink::create(
            converter,
            &self.contract,
            &self.warehouse,
            self.staged_rows.clone(),
            self.staged_rejects.clone(),
            file_list,
            self.limits.rows,
        )?;
        let fields: Vec<&str> = self.contract.columns().map(|c| c.field_name()).collect();
        let reader_error = parallel::run(
            self.workers,
            converter,
            |emit| {
                let _runtime = runtime.enter();
                for (index, file) in self.files.iter().enumerate() {
                    // Before anything of it is read.
                    landing::check_inside(&self.landing, &file.key).map_err(|m| ReadStop::file(&file.name, m))?;
                    let mut input = self
                        .landing
                        .open_read_blocking(&file.key)
                        .map_err(|e| ReadStop::file(&file.name, e.to_string()))?;
                    let on_bytes = |n| self.task.inc(n);
                    let input_file = FileInput {
                        file: &file.name,
                        file_index: index,
                        fields: &fields,
                        decoder: converter.decoder(),
                        on_bytes: &on_bytes,
                        limits: self.limits,
                    };
                    match self.contract.format {
                        FileFormat::Csv => {
                            read::csv::read(&mut input, &input_file, &self.contract.csv_options(), emit)?
                        }
                        FileFormat::Jsonl => read::jsonl::read(&mut input, &input_file, emit)?,
                        FileFormat::Xlsx => {
                            read::xlsx::read(&mut input, &input_file, &self.contract.xlsx_options(), emit)?
                        }
                    };
                }
                Ok(())
            },
            |converted| sink.accept(converted),
        )?;
        let mut file_errors = sink.file_errors.clone();
        if let Some(e) = reader_error {
            if let Some(counts) = sink.files.iter_mut().find(|f| f.file == e.file) {
                counts.error = Some(e.message.clone());
            }
            file_errors.push(e);
        }
        let files = sink.files.clone();
        let rejects_by_reason = sink.rejects_by_reason.clone();
        sink.finish()?;
        Ok(ReadOutcome { files, file_errors, rejects_by_reason })
    }
}
