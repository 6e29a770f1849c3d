//! Stage 3 of the flow: data tests on each model, run against what was just written. A failing
//! `error` test stops the publish of the model and everything downstream of it.

use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::{Column, JoinType};
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::DataFrame;
use serde::Serialize;

use crate::config::{DataTest, Model, Scalar, Severity, TestKind};
use crate::engine::{Engine, engine_error};
use crate::error::Result;

/// Failing rows kept in the ledger per test.
pub const SAMPLE_ROWS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    Passed,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    pub model: String,
    pub test: String,
    pub severity: Severity,
    pub status: TestStatus,
    /// Rows that break the test (for row_count: the row count when out of bounds).
    pub failing_rows: u64,
    /// Up to [`SAMPLE_ROWS`] failing rows, as JSON objects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<serde_json::Value>,
    pub seconds: f64,
    /// How the test was decided when not by a query of the written rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked: Option<&'static str>,
}

impl TestOutcome {
    /// A failure that must stop publishing.
    pub fn blocks(&self) -> bool {
        self.status == TestStatus::Failed && self.severity == Severity::Error
    }
}

/// Run every test of `model` (registered in `engine` under its name). `key_repeats`: when the
/// model's rows were written sorted by its key, how many of them had the same key as the row
/// before (the transform watches for it as it writes); a `unique` test on the key then needs no
/// query when there were none.
pub async fn run_tests(engine: &Engine, model: &Model, key_repeats: Option<u64>) -> Result<Vec<TestOutcome>> {
    engine.ready().await?;
    let mut outcomes = Vec::with_capacity(model.tests.len());
    for test in &model.tests {
        let outcome = match key_repeats {
            Some(0) if test.kind.is_unique_on(&model.key) => TestOutcome {
                checked: Some("while written: no row had the key of the row before it, in rows sorted by the key"),
                ..outcome(model, test, 0, Vec::new(), Instant::now())
            },
            _ => run_test(engine, model, test).await?,
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

fn outcome(
    model: &Model,
    test: &DataTest,
    failing_rows: u64,
    sample: Vec<serde_json::Value>,
    started: Instant,
) -> TestOutcome {
    TestOutcome {
        model: model.name.clone(),
        test: test.kind.to_string(),
        severity: test.severity,
        status: if failing_rows == 0 { TestStatus::Passed } else { TestStatus::Failed },
        failing_rows,
        sample,
        seconds: started.elapsed().as_secs_f64(),
        checked: None,
    }
}

async fn run_test(engine: &Engine, model: &Model, test: &DataTest) -> Result<TestOutcome> {
    let started = Instant::now();
    let context = format!("test {} on {}", test.kind, model.name);
    let fail = |e| engine_error(context.clone(), e);
    let table = engine.ctx.table(model.name.as_str()).await.map_err(fail)?;
    let (failing_rows, sample) = match &test.kind {
        TestKind::RowCount { min, max } => {
            let rows = table.count().await.map_err(fail)? as u64;
            let out_of_bounds = min.is_some_and(|m| rows < m) || max.is_some_and(|m| rows > m);
            (if out_of_bounds { rows.max(1) } else { 0 }, Vec::new())
        }
        kind => {
            let offending = offending_rows(engine, table, kind).await.map_err(fail)?;
            let failing = offending.clone().count().await.map_err(fail)? as u64;
            let sample = if failing == 0 {
                Vec::new()
            } else {
                rows_as_json(&offending.limit(0, Some(SAMPLE_ROWS)).map_err(fail)?.collect().await.map_err(fail)?)
            };
            (failing, sample)
        }
    };
    Ok(outcome(model, test, failing_rows, sample, started))
}

/// The rows that break a test.
async fn offending_rows(engine: &Engine, table: DataFrame, kind: &TestKind) -> datafusion::error::Result<DataFrame> {
    let column = |name: &str| col(Column::from_name(name));
    match kind {
        TestKind::Unique(columns) => {
            let keys: Vec<Expr> = columns.iter().map(|c| column(c)).collect();
            table.aggregate(keys, vec![count(lit(1)).alias("occurrences")])?.filter(col("occurrences").gt(lit(1i64)))
        }
        TestKind::NotNull(columns) => {
            let any_null = columns.iter().map(|c| column(c).is_null()).reduce(Expr::or).unwrap_or(lit(false));
            table.filter(any_null)
        }
        TestKind::AcceptedValues { column: name, values } => {
            let list: Vec<Expr> = values.iter().map(scalar_literal).collect();
            table.filter(column(name).is_not_null().and(column(name).in_list(list, true)))
        }
        TestKind::Relationships { column: name, to_table, to_column } => {
            // No distinct: an anti-join keeps a row that matches no target however many
            // targets repeat. (Not for speed: these tests' time is reading the two tables, not
            // the grouping.)
            let targets =
                engine.ctx.table(to_table.as_str()).await?.select(vec![column(to_column).alias("__target")])?;
            table.filter(column(name).is_not_null())?.join(
                targets,
                JoinType::LeftAnti,
                &[name.as_str()],
                &["__target"],
                None,
            )
        }
        TestKind::Expression(sql) => {
            let predicate = table.parse_sql_expr(sql)?;
            table.filter(predicate.is_not_true())
        }
        TestKind::RowCount { .. } => unreachable!("counted, not filtered"),
    }
}

fn scalar_literal(value: &Scalar) -> Expr {
    match value {
        Scalar::Bool(b) => lit(*b),
        Scalar::Int(i) => lit(*i),
        Scalar::Float(f) => lit(*f),
        Scalar::Text(s) => lit(s.clone()),
    }
}

fn rows_as_json(batches: &[RecordBatch]) -> Vec<serde_json::Value> {
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    if writer.write_batches(&refs).is_err() || writer.finish().is_err() {
        return Vec::new();
    }
    serde_json::from_slice(&writer.into_inner()).unwrap_or_default()
}
