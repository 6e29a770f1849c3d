//! `keymart query`: read-only SQL over the committed marts (the latest snapshot, or the one at
//! `--as-of`), their `<mart>_history`, and Parquet files named by path.

use chrono::NaiveDate;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::execution::context::SQLOptions;

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

pub async fn query(
    session: &Session,
    pipeline: Option<&str>,
    sql: &str,
    as_of: Option<NaiveDate>,
    format: OutputFormat,
) -> Result<String> {
    let pipeline = session.project.select_pipeline(pipeline).map_err(Error::Usage)?;
    let engine = session.engine().await?;
    let engine = Engine { ctx: engine.ctx.enable_url_table(), name: engine.name.clone() };
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
    let batches = df.collect().await.map_err(|e| engine_error("running the query", e))?;
    render(&batches, format)
}

fn render(batches: &[RecordBatch], format: OutputFormat) -> Result<String> {
    use datafusion::arrow::{csv, json, util::pretty};
    let arrow = |e| Error::arrow("formatting the result", e);
    Ok(match format {
        OutputFormat::Table => pretty::pretty_format_batches(batches).map_err(arrow)?.to_string(),
        OutputFormat::Csv => {
            let mut writer = csv::WriterBuilder::new().with_header(true).build(Vec::new());
            for batch in batches {
                writer.write(&nested_as_text(batch).map_err(arrow)?).map_err(arrow)?;
            }
            String::from_utf8_lossy(&writer.into_inner()).trim_end().to_string()
        }
        OutputFormat::Json => {
            let mut writer = json::ArrayWriter::new(Vec::new());
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            writer.write_batches(&refs).map_err(arrow)?;
            writer.finish().map_err(arrow)?;
            String::from_utf8_lossy(&writer.into_inner()).to_string()
        }
    })
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
