//! `keymart query`: read-only SQL over the committed marts (the latest snapshot, or the one at
//! `--as-of`), their `<mart>_history`, and Parquet files named by path.

use chrono::NaiveDate;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty;
use datafusion::arrow::{csv, json};
use datafusion::execution::context::SQLOptions;
use futures::StreamExt;

use super::Session;
use crate::config::Materialized;
use crate::engine::{Engine, engine_error, register_committed_marts};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// A table is printed as rows arrive, a table per this many rows (the first one whole for a
/// small result): the column widths of a larger result are never known before its last row.
const TABLE_ROWS: usize = 8192;

/// Run `sql` and write its rows to `out` as they come (a result larger than memory streams
/// through); with `timeout`, a query still running then is cancelled ([`Error::TimedOut`]).
pub async fn query(
    session: &Session,
    pipeline: Option<&str>,
    sql: &str,
    as_of: Option<NaiveDate>,
    format: OutputFormat,
    timeout: Option<Duration>,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let running = run(session, pipeline, sql, as_of, format, out);
    let Some(timeout) = timeout else { return running.await };
    match tokio::time::timeout(timeout, running).await {
        Ok(done) => done,
        Err(_) => Err(Error::TimedOut(format!(
            "query: cancelled after --timeout {} s (rows printed before it are a partial result)",
            timeout.as_secs_f64()
        ))),
    }
}

async fn run(
    session: &Session,
    pipeline: Option<&str>,
    sql: &str,
    as_of: Option<NaiveDate>,
    format: OutputFormat,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    let pipeline = session.project.select_pipeline(pipeline).map_err(Error::Usage)?;
    let engine = session.engine().await?;
    let engine = Engine { ctx: engine.ctx.enable_url_table(), ..engine };
    let marts = pipeline.models.iter().filter(|m| m.materialized == Materialized::Mart).map(|m| m.name.as_str());
    register_committed_marts(&engine, &session.warehouse, marts, as_of).await?;
    let read_only = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let df = engine.ctx.sql_with_options(sql, read_only).await.map_err(|e| {
        let message = e.to_string();
        if message.contains("not supported") || message.contains("not allowed") {
            Error::Usage(format!("keymart query is read-only (no DDL, DML or COPY): {message}"))
        } else {
            Error::Usage(format!("query: {message}"))
        }
    })?;
    let failed = |e| engine_error("running the query", e);
    let mut batches = engine.watched(df.execute_stream().await.map_err(failed)?);
    let mut printer = Printer::new(format, out);
    while let Some(batch) = batches.next().await {
        printer.print(batch.map_err(failed)?)?;
    }
    printer.finish()
}

/// Writes batches in the output format as they arrive.
struct Printer<'w> {
    format: OutputFormat,
    out: &'w mut (dyn Write + Send),
    /// Table rows not printed yet.
    table: Vec<RecordBatch>,
    tables_printed: usize,
    /// Whether the CSV header is out.
    csv_started: bool,
    json: Option<json::ArrayWriter<Vec<u8>>>,
}

fn arrow(e: ArrowError) -> Error {
    Error::arrow("formatting the result", e)
}

impl<'w> Printer<'w> {
    fn new(format: OutputFormat, out: &'w mut (dyn Write + Send)) -> Printer<'w> {
        Printer { format, out, table: Vec::new(), tables_printed: 0, csv_started: false, json: None }
    }

    fn print(&mut self, batch: RecordBatch) -> Result<()> {
        match self.format {
            OutputFormat::Table => {
                self.table.push(batch);
                if self.table.iter().map(RecordBatch::num_rows).sum::<usize>() >= TABLE_ROWS {
                    self.print_table()?;
                }
            }
            OutputFormat::Csv => {
                let mut writer = csv::WriterBuilder::new().with_header(!self.csv_started).build(Vec::new());
                writer.write(&nested_as_text(&batch).map_err(arrow)?).map_err(arrow)?;
                self.csv_started = true;
                self.write(&writer.into_inner())?;
            }
            OutputFormat::Json => {
                let writer = self.json.get_or_insert_with(|| json::ArrayWriter::new(Vec::new()));
                writer.write(&batch).map_err(arrow)?;
                let bytes = std::mem::take(writer.get_mut());
                self.write(&bytes)?;
            }
        }
        Ok(())
    }

    fn print_table(&mut self) -> Result<()> {
        let table = pretty::pretty_format_batches(&std::mem::take(&mut self.table)).map_err(arrow)?;
        self.tables_printed += 1;
        self.write(format!("{table}\n").as_bytes())
    }

    fn finish(mut self) -> Result<()> {
        match self.format {
            OutputFormat::Table if !self.table.is_empty() || self.tables_printed == 0 => self.print_table()?,
            OutputFormat::Table => {}
            // An empty result printed an empty line, as before.
            OutputFormat::Csv if !self.csv_started => self.write(b"\n")?,
            OutputFormat::Csv => {}
            OutputFormat::Json => {
                let mut writer = self.json.take().unwrap_or_else(|| json::ArrayWriter::new(Vec::new()));
                writer.finish().map_err(arrow)?;
                let mut bytes = writer.into_inner();
                bytes.push(b'\n');
                self.write(&bytes)?;
            }
        }
        self.out.flush().map_err(|e| Error::io(Path::new("<stdout>"), e))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| Error::io(Path::new("<stdout>"), e))
    }
}

/// CSV has no nested values: a struct, list or map column (a model fit's parameters, say) is
/// written as the table format shows it, `{alpha: 1.5, r: 0.24}`, instead of failing the query.
fn nested_as_text(batch: &RecordBatch) -> std::result::Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(batch.clone());
    }
    let (fields, columns): (Vec<Field>, Vec<ArrayRef>) = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| {
            if !field.data_type().is_nested() {
                return Ok((field.as_ref().clone(), column.clone()));
            }
            let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?;
            let text: StringArray =
                (0..column.len()).map(|row| column.is_valid(row).then(|| formatter.value(row).to_string())).collect();
            Ok((Field::new(field.name(), DataType::Utf8, true), Arc::new(text) as ArrayRef))
        })
        .collect::<std::result::Result<Vec<_>, ArrowError>>()?
        .into_iter()
        .unzip();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}
