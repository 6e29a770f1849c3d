//! What the report shows, each figure computed by SQL over the committed marts (`<mart>_history`
//! restricted to the snapshot dates it needs, so that every section reads the same night).
//! Only aggregates and top-N lists come back to Rust: the report stays small at 1M customers.

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::ScalarValue;

use crate::engine::{Engine, Params, date_value, engine_error};
use crate::error::{Error, Result};

/// Rows of "what changed tonight" shown at most (by status, then net value): the full list is
/// in the marts; the page stays small when a night moves many key accounts.
pub(crate) const TONIGHT_ROWS: usize = 1000;

/// Snapshots of the trends (the newest this many, or what exists).
pub(crate) const TREND_SNAPSHOTS: usize = 90;

/// Points of the Pareto curve at most (plus the ranks the report marks).
const PARETO_POINTS: i64 = 200;

/// One value of a result: as Arrow displays it (exact: decimals keep their digits) and as a
/// number where it is one.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Cell {
    pub text: Option<String>,
    pub number: Option<f64>,
}

impl Cell {
    pub fn text(&self) -> &str {
        self.text.as_deref().unwrap_or("")
    }
}

/// A result row by column name.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row(BTreeMap<String, Cell>);

impl Row {
    pub fn cell(&self, column: &str) -> Cell {
        self.0.get(column).cloned().unwrap_or_default()
    }

    pub fn number(&self, column: &str) -> Option<f64> {
        self.0.get(column).and_then(|c| c.number)
    }

    pub fn text(&self, column: &str) -> String {
        self.0.get(column).map(|c| c.text().to_string()).unwrap_or_default()
    }
}

/// The snapshot dates a report reads, all of `key_accounts` (the mart the report is about).
#[derive(Debug, Clone)]
pub(crate) struct Nights {
    /// The night shown: the newest committed at or before the date asked for.
    pub tonight: NaiveDate,
    /// The snapshot before it (what the statuses compare with).
    pub previous: Option<NaiveDate>,
    /// The newest snapshot at least 30 days before tonight.
    pub month_ago: Option<NaiveDate>,
    /// The first snapshot of the trends.
    pub trend_since: NaiveDate,
}

impl Nights {
    pub fn from_dates(dates: &[NaiveDate], tonight: NaiveDate) -> Nights {
        let upto: Vec<NaiveDate> = dates.iter().copied().filter(|d| *d <= tonight).collect();
        let previous = upto.iter().copied().rfind(|d| *d < tonight);
        let month_ago = upto.iter().copied().rfind(|d| *d <= tonight - chrono::Duration::days(30));
        let trend_since = upto[upto.len().saturating_sub(TREND_SNAPSHOTS)];
        Nights { tonight, previous, month_ago, trend_since }
    }

    /// The dates whose headline figures are shown: tonight, the previous and the month-ago snapshot.
    fn compared(&self) -> Vec<NaiveDate> {
        let mut dates: Vec<NaiveDate> =
            [Some(self.tonight), self.previous, self.month_ago].into_iter().flatten().collect();
        dates.dedup();
        dates
    }

    fn params(&self) -> Params {
        let mut params = Params::default();
        params.set("as_of", date_value(self.tonight));
        params.set("previous", self.previous.map_or(ScalarValue::Date32(None), date_value));
        params.set("month_ago", self.month_ago.map_or(ScalarValue::Date32(None), date_value));
        params.set("since", date_value(self.month_ago.map_or(self.trend_since, |m| m.min(self.trend_since))));
        params.set("trend_since", date_value(self.trend_since));
        params
    }
}

/// Every figure of the report.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReportData {
    /// Per key_accounts snapshot from the trends' start (or the month-ago snapshot) to tonight.
    pub key_accounts_by_night: Vec<Row>,
    /// Per compared night: active customers (customer_rfm).
    pub rfm_by_night: Vec<Row>,
    /// Per compared night: revenue and net value (customer_value).
    pub value_by_night: Vec<Row>,
    /// Per trend night: median P(alive) (customer_churn).
    pub churn_by_night: Vec<Row>,
    pub pareto: Vec<Row>,
    pub grid_fm: Vec<Row>,
    pub grid_fr: Vec<Row>,
    pub segments: Vec<Row>,
    pub tonight: Vec<Row>,
    pub tonight_counts: Vec<Row>,
    pub migration: Vec<Row>,
    pub service: Vec<Row>,
    pub parameters: Vec<Row>,
}

/// The marts with a snapshot tonight, the sections ask which they can show.
pub(crate) type Present = BTreeSet<String>;

pub(crate) async fn gather(engine: &Engine, nights: &Nights, present: &Present) -> Result<ReportData> {
    let has = |mart: &str| present.contains(mart);
    let params = nights.params();
    let compared = nights.compared().iter().map(|d| format!("DATE '{d}'")).collect::<Vec<_>>().join(", ");
    let run = |sql: String| {
        let params = params.clone();
        async move { rows(engine, &sql, &params).await }
    };
    let mut data = ReportData::default();
    if has("key_accounts") {
        data.key_accounts_by_night = run(KEY_ACCOUNTS_BY_NIGHT.to_string()).await?;
        data.pareto = run(PARETO.replace("{points}", &PARETO_POINTS.to_string())).await?;
        data.tonight_counts = run(TONIGHT_COUNTS.to_string()).await?;
    }
    if has("customer_rfm") {
        data.rfm_by_night = run(RFM_BY_NIGHT.replace("{compared}", &compared)).await?;
        data.grid_fm = run(grid("m_score")).await?;
        data.grid_fr = run(grid("r_score")).await?;
        data.segments = run(SEGMENTS.to_string()).await?;
    }
    if has("customer_value") {
        data.value_by_night = run(VALUE_BY_NIGHT.replace("{compared}", &compared)).await?;
    }
    if has("customer_churn") {
        data.churn_by_night = run(CHURN_BY_NIGHT.to_string()).await?;
    }
    if has("key_accounts") && has("customer_value") && has("customer_churn") {
        data.tonight = run(TONIGHT.replace("{limit}", &TONIGHT_ROWS.to_string())).await?;
    }
    if has("segment_migration") {
        data.migration = run(MIGRATION.to_string()).await?;
    }
    if has("service_quality") && has("key_accounts") {
        data.service = run(SERVICE.to_string()).await?;
    }
    if has("model_parameters") {
        data.parameters = run(parameters_sql()).await?;
    }
    Ok(data)
}

/// Key accounts, their share of positive net value (as `cumulative_share` counts it) and the
/// at-risk ones, per snapshot: the headline's and the trends' figures.
const KEY_ACCOUNTS_BY_NIGHT: &str = "
SELECT
    as_of,
    count(*) AS customers,
    sum(CASE WHEN is_key_account THEN 1 ELSE 0 END) AS key_accounts,
    sum(CASE WHEN is_key_account THEN net_value END) AS key_net_value,
    CAST(sum(CASE WHEN is_key_account THEN net_value END) AS DOUBLE)
        / CAST(nullif(sum(CASE WHEN net_value > 0 THEN net_value ELSE 0 END), 0) AS DOUBLE) AS key_value_share,
    sum(CASE WHEN status = 'at_risk' THEN 1 ELSE 0 END) AS at_risk_key_accounts
FROM key_accounts_history
WHERE as_of BETWEEN $since AND $as_of
GROUP BY as_of
ORDER BY as_of";

/// Active customers: a completed purchase in the RFM window (as segment_migration counts them).
const RFM_BY_NIGHT: &str = "
SELECT as_of, count(*) AS customers, sum(CASE WHEN frequency > 0 THEN 1 ELSE 0 END) AS active_customers
FROM customer_rfm_history
WHERE as_of IN ({compared})
GROUP BY as_of
ORDER BY as_of";

const VALUE_BY_NIGHT: &str = "
SELECT as_of, sum(revenue) AS revenue, sum(net_value) AS net_value
FROM customer_value_history
WHERE as_of IN ({compared})
GROUP BY as_of
ORDER BY as_of";

/// The median by t-digest: an exact median over 90 snapshots of 1M customers would hold every
/// value in memory.
const CHURN_BY_NIGHT: &str = "
SELECT as_of, approx_median(p_alive) AS median_p_alive, count(p_alive) AS customers
FROM customer_churn_history
WHERE as_of BETWEEN $trend_since AND $as_of
GROUP BY as_of
ORDER BY as_of";

/// The Pareto curve: customers ranked by net value against the cumulative share of positive net
/// value, thinned to about {points} points, keeping the first and last rank, the last key account
/// and the customer closing the top 20 %.
const PARETO: &str = "
WITH k AS (
    SELECT value_rank, cumulative_share, is_key_account FROM key_accounts_history WHERE as_of = $as_of
),
n AS (
    SELECT
        count(*) AS customers,
        sum(CASE WHEN is_key_account THEN 1 ELSE 0 END) AS key_accounts,
        CAST(ceil(count(*) * 0.2) AS BIGINT) AS top20_rank
    FROM k
)
SELECT
    k.value_rank,
    CAST(k.value_rank AS DOUBLE) / CAST(n.customers AS DOUBLE) AS customer_share,
    k.cumulative_share,
    n.customers,
    n.key_accounts,
    n.top20_rank
FROM n
CROSS JOIN k
WHERE k.value_rank IN (1, n.customers, n.key_accounts, n.top20_rank)
    OR k.value_rank % greatest(1, n.customers / {points}) = 0
ORDER BY k.value_rank";

/// A 5×5 grid of frequency against another score: customers and value (RFM monetary) per cell.
fn grid(other: &str) -> String {
    format!(
        "SELECT f_score, {other} AS other_score, count(*) AS customers, sum(monetary) AS monetary
         FROM customer_rfm_history WHERE as_of = $as_of
         GROUP BY f_score, {other}
         ORDER BY f_score, {other}"
    )
}

const SEGMENTS: &str = "
SELECT
    segment,
    count(*) AS customers,
    CAST(count(*) AS DOUBLE) / CAST(sum(count(*)) OVER () AS DOUBLE) AS customer_share,
    sum(monetary) AS monetary,
    CAST(sum(monetary) AS DOUBLE) / CAST(nullif(sum(sum(monetary)) OVER (), 0) AS DOUBLE) AS monetary_share
FROM customer_rfm_history
WHERE as_of = $as_of
GROUP BY segment
ORDER BY monetary DESC, segment";

const TONIGHT_COUNTS: &str = "
SELECT status, count(*) AS customers, sum(net_value) AS net_value
FROM key_accounts_history
WHERE as_of = $as_of AND status IN ('new', 'lost', 'at_risk')
GROUP BY status
ORDER BY status";

/// Key accounts new, lost and at risk since the previous snapshot, with what the account
/// manager needs to act: value, CLV, P(alive), rhythm, complaints and the reasons.
const TONIGHT: &str = "
SELECT
    k.customer_id,
    k.status,
    k.net_value,
    v.clv,
    c.p_alive,
    c.days_since_last_order,
    c.typical_gap_days,
    c.recent_complaints,
    c.churn_risk,
    c.churn_reasons
FROM (
    SELECT customer_id, status, net_value FROM key_accounts_history
    WHERE as_of = $as_of AND status IN ('new', 'lost', 'at_risk')
) k
LEFT JOIN (SELECT customer_id, clv FROM customer_value_history WHERE as_of = $as_of) v
    ON v.customer_id = k.customer_id
LEFT JOIN (
    SELECT customer_id, p_alive, days_since_last_order, typical_gap_days, recent_complaints, churn_risk, churn_reasons
    FROM customer_churn_history WHERE as_of = $as_of
) c ON c.customer_id = k.customer_id
ORDER BY CASE k.status WHEN 'at_risk' THEN 0 WHEN 'lost' THEN 1 ELSE 2 END, k.net_value DESC, k.customer_id
LIMIT {limit}";

const MIGRATION: &str = "
SELECT from_segment, to_segment, customers, probability
FROM segment_migration_history
WHERE as_of = $as_of
ORDER BY from_segment, to_segment";

/// Service over the service window, key accounts against the rest: totals, per-customer rates,
/// the median of the customers' median resolution hours and the mean of their mean satisfaction.
const SERVICE: &str = "
SELECT
    coalesce(k.is_key_account, false) AS is_key_account,
    count(*) AS customers,
    sum(s.contacts) AS contacts,
    CAST(sum(s.contacts) AS DOUBLE) / CAST(count(*) AS DOUBLE) AS contacts_per_customer,
    sum(s.complaints) AS complaints,
    sum(s.open_complaints) AS open_complaints,
    CAST(sum(s.complaints) AS DOUBLE) * 100.0 / CAST(count(*) AS DOUBLE) AS complaints_per_100,
    median(s.median_resolution_hours) AS median_resolution_hours,
    avg(s.mean_satisfaction) AS mean_satisfaction
FROM (SELECT * FROM service_quality_history WHERE as_of = $as_of) s
LEFT JOIN (SELECT customer_id, is_key_account FROM key_accounts_history WHERE as_of = $as_of) k
    ON k.customer_id = s.customer_id
GROUP BY coalesce(k.is_key_account, false)
ORDER BY is_key_account DESC";

/// The model parameters tonight and at the previous snapshot, with the relative change.
pub(crate) const PARAMETERS: [&str; 11] = [
    "bgnbd_r",
    "bgnbd_alpha",
    "bgnbd_a",
    "bgnbd_b",
    "bgnbd_ll",
    "bgnbd_customers",
    "gg_p",
    "gg_q",
    "gg_v",
    "gg_ll",
    "gg_customers",
];

fn parameters_sql() -> String {
    let rows = PARAMETERS
        .iter()
        .enumerate()
        .map(|(position, name)| {
            format!(
                "SELECT {position} AS position, '{name}' AS parameter, \
                 (SELECT CAST({name} AS DOUBLE) FROM tonight) AS tonight, \
                 (SELECT CAST({name} AS DOUBLE) FROM previous) AS previous"
            )
        })
        .collect::<Vec<_>>()
        .join("\nUNION ALL ");
    format!(
        "WITH tonight AS (SELECT * FROM model_parameters_history WHERE as_of = $as_of),
         previous AS (SELECT * FROM model_parameters_history WHERE as_of = $previous),
         parameters AS ({rows})
         SELECT parameter, tonight, previous, (tonight - previous) / abs(previous) AS relative_change
         FROM parameters ORDER BY position"
    )
}

/// Run one query and bring its (small) result back as rows.
async fn rows(engine: &Engine, sql: &str, params: &Params) -> Result<Vec<Row>> {
    let df = engine.sql(sql, params).await?;
    let batches = df.collect().await.map_err(|e| engine_error("computing the report", e))?;
    let mut rows = Vec::new();
    for batch in &batches {
        rows.extend(batch_rows(batch)?);
    }
    Ok(rows)
}

fn batch_rows(batch: &RecordBatch) -> Result<Vec<Row>> {
    let options = FormatOptions::default();
    let schema = batch.schema();
    let mut rows = vec![Row::default(); batch.num_rows()];
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let formatter = ArrayFormatter::try_new(column.as_ref(), &options)
            .map_err(|e| Error::arrow(format!("formatting the report's column {}", field.name()), e))?;
        let numeric = field.data_type().is_numeric();
        for (index, row) in rows.iter_mut().enumerate() {
            let cell = if column.is_null(index) {
                Cell::default()
            } else {
                let text = formatter.value(index).to_string();
                let number = if numeric { text.parse::<f64>().ok().filter(|n| n.is_finite()) } else { None };
                Cell { text: Some(text), number }
            };
            row.0.insert(field.name().clone(), cell);
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2024, 6, 1).unwrap() + chrono::Duration::days(i64::from(d))
    }

    #[test]
    fn the_nights_compared_are_the_previous_snapshot_and_the_newest_30_days_back() {
        let dates: Vec<NaiveDate> = (0..200).map(day).filter(|d| *d != day(150)).collect();
        let nights = Nights::from_dates(&dates, day(151));
        assert_eq!(nights.previous, Some(day(149)));
        assert_eq!(nights.month_ago, Some(day(121)));
        assert_eq!(nights.trend_since, day(151 - 90));
        let first = Nights::from_dates(&dates, day(0));
        assert_eq!((first.previous, first.month_ago, first.trend_since), (None, None, day(0)));
    }
}
