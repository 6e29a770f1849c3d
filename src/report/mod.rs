//! `keymart report`: the executive view of a night (issue 30) as one self-contained HTML file.
//!
//! A consumer of the committed marts (DESIGN.md): it registers them with
//! [`register_committed_marts`] as every reader does, computes every figure by SQL over them
//! (aggregates and top-N lists only, so the page stays small at 1M customers), and reads the
//! night's run ledger for the data health. It imports the ground floor only.

mod data;
mod health;
mod html;
mod i18n;

use std::fmt;
use std::path::Path;

use chrono::NaiveDate;

use crate::config::ReportLang;
use crate::engine::{Engine, register_committed_marts};
use crate::error::{Error, Result};
use crate::warehouse::Warehouse;

/// The marts the report reads, each as `<mart>` and `<mart>_history`. `key_accounts` decides
/// which nights exist: the report is about key accounts.
pub const REPORT_MARTS: [&str; 7] = [
    "key_accounts",
    "customer_rfm",
    "customer_value",
    "customer_churn",
    "segment_migration",
    "service_quality",
    "model_parameters",
];

/// A rendered report.
#[derive(Debug, Clone)]
pub struct Report {
    /// The night it shows: the newest committed at or before the date asked for; `None` when the
    /// warehouse has none (the page says so).
    pub night: Option<NaiveDate>,
    pub html: String,
}

/// The report of the night `as_of` (the newest committed when `None`) as HTML.
///
/// Registers the committed marts in `engine` (replacing tables of the same names): give it a
/// session of its own. A first night, a mart whose snapshot is missing and a warehouse with no
/// committed marts give a page with a sentence saying what is missing, not an error.
pub async fn render_report(
    engine: &Engine,
    warehouse: &Warehouse,
    as_of: Option<NaiveDate>,
    lang: ReportLang,
) -> Result<String> {
    Ok(build_report(engine, warehouse, as_of, lang).await?.html)
}

/// [`render_report`], with the night it shows.
pub async fn build_report(
    engine: &Engine,
    warehouse: &Warehouse,
    as_of: Option<NaiveDate>,
    lang: ReportLang,
) -> Result<Report> {
    register_committed_marts(engine, warehouse, REPORT_MARTS, as_of).await?;
    let snapshots: Vec<_> = warehouse
        .committed_snapshots("key_accounts")
        .await?
        .into_iter()
        .filter(|s| as_of.is_none_or(|d| s.as_of <= d))
        .collect();
    let Some(newest) = snapshots.last() else {
        return Ok(Report { night: None, html: html::nothing_committed(lang, as_of) });
    };
    let tonight = newest.as_of;
    let dates: Vec<NaiveDate> = snapshots.iter().map(|s| s.as_of).collect();
    let nights = data::Nights::from_dates(&dates, tonight);
    let mut present = data::Present::new();
    for mart in REPORT_MARTS {
        if warehouse.manifest(mart, tonight).await?.is_some() {
            present.insert(mart.to_string());
        }
    }
    let figures = data::gather(engine, &nights, &present).await?;
    let health = health::read(warehouse, &newest.run_id, tonight).await?;
    let inputs = html::Inputs {
        lang,
        requested: as_of.filter(|d| *d != tonight),
        nights: &nights,
        present: &present,
        data: &figures,
        health: (newest.run_id.clone(), health),
    };
    Ok(Report { night: Some(tonight), html: html::report(&inputs) })
}

/// Write the report of `as_of` to a local file.
pub async fn write_report(
    engine: &Engine,
    warehouse: &Warehouse,
    as_of: Option<NaiveDate>,
    lang: ReportLang,
    out: &Path,
) -> Result<Report> {
    let report = build_report(engine, warehouse, as_of, lang).await?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    std::fs::write(out, &report.html).map_err(|e| Error::io(out, e))?;
    Ok(report)
}

/// Where [`publish_report`] wrote a report.
#[derive(Debug, Clone)]
pub struct PublishedReport {
    /// The night the report is filed under (`reports/as_of=D/`): the date asked for, else the
    /// night shown.
    pub night: Option<NaiveDate>,
    /// The night whose marts it shows.
    pub shown: Option<NaiveDate>,
    /// Full URLs of the objects written.
    pub written: Vec<String>,
}

impl fmt::Display for PublishedReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.night, self.shown) {
            (Some(night), Some(shown)) if night != shown => {
                write!(f, "report filed under {night} (showing {shown}, the newest night before it) written to")?
            }
            (_, Some(shown)) => write!(f, "report of {shown} written to")?,
            (_, None) => write!(f, "report (no committed marts yet) written to")?,
        }
        for url in &self.written {
            write!(f, "\n  {url}")?;
        }
        Ok(())
    }
}

/// Write the report of `as_of` (the newest night when `None`) into the warehouse:
/// `reports/as_of=D/index.html`, and `reports/latest.html` when D is the newest committed night
/// (a backfill of an older date leaves it alone). What `keymart run` calls after a night's marts
/// are committed; each object appears whole (a single put).
pub async fn publish_report(
    engine: &Engine,
    warehouse: &Warehouse,
    as_of: Option<NaiveDate>,
    lang: ReportLang,
) -> Result<PublishedReport> {
    let report = build_report(engine, warehouse, as_of, lang).await?;
    let layout = warehouse.layout();
    let night = as_of.or(report.night);
    let newest = warehouse.committed_snapshots("key_accounts").await?.last().map(|s| s.as_of);
    let mut keys = Vec::new();
    if let Some(night) = night {
        keys.push(layout.report(night));
    }
    if newest.is_none_or(|newest| night.is_none_or(|night| night >= newest)) {
        keys.push(layout.latest_report());
    }
    let mut written = Vec::new();
    for key in keys {
        warehouse.location.put_bytes(&key, report.html.clone().into_bytes()).await?;
        written.push(warehouse.location.url_of(&key));
    }
    Ok(PublishedReport { night, shown: report.night, written })
}
