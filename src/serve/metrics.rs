//! What `/metrics` shows, in Prometheus's text format (version 0.0.4): sessions, queries by
//! outcome, their durations, the rows and bytes of results sent, and the snapshot each mart is
//! served at. Counters are atomics updated where the event happens (a session opening, a query's
//! log line); the page is rendered from them when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::NaiveDate;

/// A query's outcome, as the query log and `keymart_serve_queries_total{outcome}` name it.
pub const OUTCOMES: [&str; 6] = ["ok", "error", "timeout", "cancelled", "refused", "abandoned"];

/// Upper bounds (seconds) of the query-duration histogram's buckets.
const DURATION_BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

#[derive(Default)]
pub(crate) struct Metrics {
    sessions: AtomicU64,
    sessions_total: AtomicU64,
    sessions_refused: AtomicU64,
    queries_running: AtomicU64,
    queries: [AtomicU64; OUTCOMES.len()],
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_micros: AtomicU64,
    rows_sent: AtomicU64,
    bytes_sent: AtomicU64,
    /// Per mart: the date and version of the newest committed snapshot sessions read.
    snapshots: Mutex<BTreeMap<String, (NaiveDate, i64)>>,
}

/// An open session: counted until dropped.
pub(crate) struct Session(Arc<Metrics>);

impl Drop for Session {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A query in progress: counted in `keymart_serve_queries_running` until dropped.
pub(crate) struct Running(Arc<Metrics>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.queries_running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Metrics {
    /// Count a new session, unless `limit` sessions are open already.
    pub fn open_session(self: &Arc<Self>, limit: usize) -> Option<Session> {
        let open = self.sessions.fetch_add(1, Ordering::SeqCst);
        if open >= limit as u64 {
            self.sessions.fetch_sub(1, Ordering::SeqCst);
            self.sessions_refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.sessions_total.fetch_add(1, Ordering::Relaxed);
        Some(Session(self.clone()))
    }

    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::SeqCst)
    }

    pub fn queries_running(&self) -> u64 {
        self.queries_running.load(Ordering::SeqCst)
    }

    pub fn query_started(self: &Arc<Self>) -> Running {
        self.queries_running.fetch_add(1, Ordering::SeqCst);
        Running(self.clone())
    }

    pub fn query_ended(&self, outcome: &str, duration: Duration, rows: u64) {
        let index = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(OUTCOMES.len() - 1);
        self.queries[index].fetch_add(1, Ordering::Relaxed);
        let seconds = duration.as_secs_f64();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.duration_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_micros.fetch_add(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.rows_sent.fetch_add(rows, Ordering::Relaxed);
    }

    /// Bytes of DataRow messages (type byte and length included) about to be sent.
    pub fn bytes_sent(&self, bytes: u64) {
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn snapshot_served(&self, mart: &str, as_of: NaiveDate, version: i64) {
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        snapshots.insert(mart.to_string(), (as_of, version));
    }

    /// The Prometheus text page, with the requests made to the warehouse's store so far.
    pub fn render(&self, store_requests: &BTreeMap<String, u64>) -> String {
        let mut page = String::new();
        let load = |counter: &AtomicU64| counter.load(Ordering::SeqCst);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(page, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(page, "{name}{labels} {value}");
            }
        };
        let plain = |value: u64| vec![(String::new(), value.to_string())];
        for (name, kind, help, value) in [
            ("keymart_serve_connections", "gauge", "Client sessions open now.", &self.sessions),
            (
                "keymart_serve_connections_total",
                "counter",
                "Client sessions accepted since the server started.",
                &self.sessions_total,
            ),
            (
                "keymart_serve_connections_refused_total",
                "counter",
                "Sessions refused over serve.max_connections (SQLSTATE 53300).",
                &self.sessions_refused,
            ),
            (
                "keymart_serve_queries_running",
                "gauge",
                "Statements in progress now (waiting for a slot, running or sending rows).",
                &self.queries_running,
            ),
            ("keymart_serve_rows_sent_total", "counter", "Result rows sent to clients.", &self.rows_sent),
            (
                "keymart_serve_bytes_sent_total",
                "counter",
                "Bytes of result rows (DataRow messages) sent to clients.",
                &self.bytes_sent,
            ),
        ] {
            metric(name, kind, help, &plain(load(value)));
        }
        let by_outcome: Vec<_> = OUTCOMES
            .iter()
            .zip(&self.queries)
            .map(|(outcome, count)| (format!("{{outcome=\"{outcome}\"}}"), load(count).to_string()))
            .collect();
        metric("keymart_serve_queries_total", "counter", "Statements answered, by outcome.", &by_outcome);
        let mut cumulative = 0;
        let mut buckets: Vec<_> = DURATION_BUCKETS
            .iter()
            .zip(&self.duration_buckets)
            .map(|(bound, count)| {
                cumulative += load(count);
                (format!("_bucket{{le=\"{bound}\"}}"), cumulative.to_string())
            })
            .collect();
        let count: u64 = self.queries.iter().map(load).sum();
        buckets.push(("_bucket{le=\"+Inf\"}".into(), count.to_string()));
        buckets.push(("_sum".into(), (load(&self.duration_micros) as f64 / 1e6).to_string()));
        buckets.push(("_count".into(), count.to_string()));
        metric(
            "keymart_serve_query_duration_seconds",
            "histogram",
            "Statements' durations, from receipt to the last row sent.",
            &buckets,
        );
        let snapshots = self.snapshots.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let as_of: Vec<_> = snapshots
            .iter()
            .map(|(mart, (date, _))| {
                let seconds = date.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp());
                (format!("{{mart=\"{mart}\"}}"), seconds.to_string())
            })
            .collect();
        metric(
            "keymart_serve_snapshot_as_of_seconds",
            "gauge",
            "The as_of date (Unix time of its midnight UTC) of each mart's newest snapshot served.",
            &as_of,
        );
        let versions: Vec<_> = snapshots
            .iter()
            .map(|(mart, (_, version))| (format!("{{mart=\"{mart}\"}}"), version.to_string()))
            .collect();
        metric(
            "keymart_serve_snapshot_version",
            "gauge",
            "The version (as in keymart_snapshots) of each mart's newest snapshot served.",
            &versions,
        );
        let requests: Vec<_> =
            store_requests.iter().map(|(kind, n)| (format!("{{kind=\"{kind}\"}}"), n.to_string())).collect();
        metric(
            "keymart_serve_store_requests_total",
            "counter",
            "Requests made to the warehouse's object store, by kind (a HEAD the server already asked is not asked again).",
            &requests,
        );
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_counts_sessions_outcomes_and_durations() {
        let metrics = Arc::new(Metrics::default());
        let first = metrics.open_session(1).unwrap();
        assert!(metrics.open_session(1).is_none());
        drop(first);
        metrics.query_ended("ok", Duration::from_millis(2), 200);
        metrics.query_ended("timeout", Duration::from_secs(2), 0);
        metrics.snapshot_served("customer_rfm", NaiveDate::from_ymd_opt(2024, 6, 2).unwrap(), 2);
        let page = metrics.render(&BTreeMap::from([("get".to_string(), 7)]));
        for line in [
            "keymart_serve_connections 0",
            "keymart_serve_connections_total 1",
            "keymart_serve_connections_refused_total 1",
            "keymart_serve_queries_total{outcome=\"ok\"} 1",
            "keymart_serve_queries_total{outcome=\"timeout\"} 1",
            "keymart_serve_query_duration_seconds_bucket{le=\"0.001\"} 0",
            "keymart_serve_query_duration_seconds_bucket{le=\"0.005\"} 1",
            "keymart_serve_query_duration_seconds_bucket{le=\"1\"} 1",
            "keymart_serve_query_duration_seconds_bucket{le=\"5\"} 2",
            "keymart_serve_query_duration_seconds_bucket{le=\"+Inf\"} 2",
            "keymart_serve_query_duration_seconds_sum 2.002",
            "keymart_serve_query_duration_seconds_count 2",
            "keymart_serve_rows_sent_total 200",
            "keymart_serve_snapshot_as_of_seconds{mart=\"customer_rfm\"} 1717286400",
            "keymart_serve_snapshot_version{mart=\"customer_rfm\"} 2",
            "keymart_serve_store_requests_total{kind=\"get\"} 7",
        ] {
            assert!(page.lines().any(|l| l == line), "no `{line}` in\n{page}");
        }
    }
}
