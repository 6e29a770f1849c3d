//! What a run tells its caller: each date's status and one line per model, printed as the run
//! summary and turned into the exit code by the binary.

use std::fmt;

use chrono::NaiveDate;

use crate::audit::{TestOutcome, TestStatus};
use crate::config::Materialized;
use crate::error::{Error, Result};
use crate::transform::StateRun;

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

/// What became of one model's output.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelOutcome {
    /// A view, registered for the models after it.
    Registered,
    /// A table or mart whose tests passed (a mart waits for its commit).
    Tested,
    Published,
    /// An incremental model's state, committed for the next night.
    Kept(StateRun),
    /// Not run: a model it reads failed a blocking test.
    UpstreamFailed(String),
    /// Its files were discarded: it failed these blocking tests.
    FailedTests(Vec<String>),
}

impl ModelOutcome {
    pub fn is_not_published(&self) -> bool {
        matches!(self, ModelOutcome::UpstreamFailed(_) | ModelOutcome::FailedTests(_))
    }
}

impl fmt::Display for ModelOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelOutcome::Registered => write!(f, "ok"),
            ModelOutcome::Tested => write!(f, "tested"),
            ModelOutcome::Published => write!(f, "published"),
            ModelOutcome::Kept(state) => match (state.since, state.changed_keys, &state.full) {
                (Some(since), Some(keys), _) => write!(f, "kept ({keys} keys recomputed since {since})"),
                (_, _, Some(why)) => write!(f, "kept (computed whole: {why})"),
                _ => write!(f, "kept"),
            },
            ModelOutcome::UpstreamFailed(cause) => write!(f, "NOT PUBLISHED (upstream {cause} failed)"),
            ModelOutcome::FailedTests(tests) => write!(f, "NOT PUBLISHED (failed {})", tests.join(", ")),
        }
    }
}

/// One line of the run summary.
pub struct ModelLine {
    pub model: String,
    pub materialized: Materialized,
    pub rows: Option<u64>,
    pub tests_passed: usize,
    pub tests_failed: usize,
    pub outcome: ModelOutcome,
}

impl ModelLine {
    pub fn new(
        model: &str,
        materialized: Materialized,
        rows: Option<u64>,
        tests: &[TestOutcome],
        outcome: ModelOutcome,
    ) -> ModelLine {
        let failed = tests.iter().filter(|o| o.status == TestStatus::Failed).count();
        ModelLine {
            model: model.to_string(),
            materialized,
            rows,
            tests_passed: tests.len() - failed,
            tests_failed: failed,
            outcome,
        }
    }
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
                let blocked: Vec<&str> =
                    d.models.iter().filter(|m| m.outcome.is_not_published()).map(|m| m.model.as_str()).collect();
                format!("{}: data tests failed; not published: {}", d.as_of, blocked.join(", "))
            })
            .collect();
        if failed.is_empty() { Ok(()) } else { Err(Error::TestsFailed(failed.join("\n"))) }
    }
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
