//! The key accounts that slipped on a night, read by SQL from the committed marts: `key_accounts`
//! (status against the previous snapshot) and `customer_churn` (the reasons).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::ScalarValue;

use crate::config::AlertStatus;
use crate::engine::{Engine, Params, date_value, engine_error, register_committed_marts};
use crate::error::{Error, Result};
use crate::warehouse::Warehouse;

/// The marts an alert reads.
pub const ALERT_MARTS: [&str; 2] = ["key_accounts", "customer_churn"];

/// Accounts of one status brought back at most (the most valuable): the longest list a target
/// may name (`max_accounts` ≤ 200); the others are only counted.
const ACCOUNTS_PER_STATUS: u64 = *crate::config::ALERT_MAX_ACCOUNTS.end();

/// A key account whose status changed on the night.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedAccount {
    pub customer_id: String,
    pub status: AlertStatus,
    /// As the mart holds it (a decimal, digits kept).
    pub net_value: String,
    pub churn_risk: Option<String>,
    pub churn_reasons: Option<String>,
}

/// What changed on a night.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes {
    pub as_of: NaiveDate,
    /// The snapshot the statuses compare with; `None` on a first night (nothing is sent).
    pub previous: Option<NaiveDate>,
    /// Key accounts per status that changed (all of them, not only those listed).
    pub counts: BTreeMap<AlertStatus, u64>,
    /// The most valuable of each status, by net value (highest first) then customer id.
    pub accounts: Vec<ChangedAccount>,
}

/// The key accounts that became at risk (from any other status), were lost or became key accounts
/// on `as_of`, a night whose `key_accounts` is committed.
pub async fn changes(engine: &Engine, warehouse: &Warehouse, as_of: NaiveDate) -> Result<Changes> {
    let snapshots = warehouse.committed_snapshots("key_accounts").await?;
    if !snapshots.iter().any(|s| s.as_of == as_of) {
        return Err(Error::Usage(format!("no committed key_accounts snapshot of {as_of}: run that night first")));
    }
    if warehouse.manifest("customer_churn", as_of).await?.is_none() {
        return Err(Error::Usage(format!("no committed customer_churn snapshot of {as_of}: the reasons are missing")));
    }
    let previous = snapshots.iter().map(|s| s.as_of).rfind(|d| *d < as_of);
    let mut found = Changes { as_of, previous, counts: BTreeMap::new(), accounts: Vec::new() };
    let Some(previous) = previous else {
        return Ok(found);
    };
    register_committed_marts(engine, warehouse, ALERT_MARTS, Some(as_of)).await?;
    let mut params = Params::default();
    params.set("as_of", date_value(as_of));
    params.set("previous", date_value(previous));
    params.set("per_status", ScalarValue::UInt64(Some(ACCOUNTS_PER_STATUS)));
    let df = engine.sql(CHANGED, &params).await?;
    let batches = df.collect().await.map_err(|e| engine_error("reading the key accounts that changed", e))?;
    for batch in &batches {
        read_batch(batch, &mut found)?;
    }
    Ok(found)
}

/// At risk counts only when it is new: an account at risk on the previous snapshot too was
/// alerted then. Lost and new are changes by definition (`key_accounts.sql`).
const CHANGED: &str = "
WITH tonight AS (
    SELECT customer_id, status, net_value FROM key_accounts_history
    WHERE as_of = $as_of AND status IN ('at_risk', 'lost', 'new')
),
before AS (
    SELECT customer_id, status FROM key_accounts_history WHERE as_of = $previous
),
changed AS (
    SELECT t.customer_id, t.status, t.net_value
    FROM tonight t
    LEFT JOIN before b ON b.customer_id = t.customer_id
    WHERE t.status <> 'at_risk' OR b.status IS DISTINCT FROM 'at_risk'
),
ranked AS (
    SELECT
        customer_id,
        status,
        net_value,
        row_number() OVER (PARTITION BY status ORDER BY net_value DESC, customer_id) AS status_rank,
        count(*) OVER (PARTITION BY status) AS status_count
    FROM changed
)
SELECT r.customer_id, r.status, r.net_value, r.status_count, c.churn_risk, c.churn_reasons
FROM ranked r
LEFT JOIN (
    SELECT customer_id, churn_risk, churn_reasons FROM customer_churn_history WHERE as_of = $as_of
) c ON c.customer_id = r.customer_id
WHERE r.status_rank <= $per_status
ORDER BY r.net_value DESC, r.customer_id";

fn read_batch(batch: &RecordBatch, into: &mut Changes) -> Result<()> {
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .map(|c| c.as_ref())
            .ok_or_else(|| Error::Internal(format!("the changed key accounts lack {name}")))
    };
    let text = |array: &dyn Array, row: usize| -> Result<Option<String>> {
        if array.is_null(row) {
            return Ok(None);
        }
        array_value_to_string(array, row)
            .map(Some)
            .map_err(|e| Error::arrow("reading the key accounts that changed", e))
    };
    let (ids, statuses, values) = (column("customer_id")?, column("status")?, column("net_value")?);
    let (counts, risks, reasons) = (column("status_count")?, column("churn_risk")?, column("churn_reasons")?);
    for row in 0..batch.num_rows() {
        let status_text = text(statuses, row)?.unwrap_or_default();
        let status = AlertStatus::parse(&status_text)
            .ok_or_else(|| Error::Internal(format!("key_accounts.status `{status_text}` is not an alert status")))?;
        let count = text(counts, row)?.and_then(|c| c.parse().ok()).unwrap_or(0);
        into.counts.insert(status, count);
        into.accounts.push(ChangedAccount {
            customer_id: text(ids, row)?.unwrap_or_default(),
            status,
            net_value: text(values, row)?.unwrap_or_default(),
            churn_risk: text(risks, row)?,
            churn_reasons: text(reasons, row)?,
        });
    }
    Ok(())
}
