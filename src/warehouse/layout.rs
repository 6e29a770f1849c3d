//! Where each thing lives in the warehouse (DESIGN.md, "Warehouse layout"). Every key the pipeline
//! writes is built here, so the layout has one definition.

use chrono::NaiveDate;
use object_store::path::Path;

use super::Location;

const STAGING: &str = "_staging";

pub struct Layout<'a> {
    pub location: &'a Location,
}

impl Layout<'_> {
    /// `raw/<source>/load_date=<D>/` (relative).
    pub fn raw_partition(&self, source: &str, load_date: NaiveDate) -> String {
        format!("raw/{source}/load_date={load_date}")
    }

    /// `rejects/<source>/load_date=<D>/` (relative).
    pub fn rejects_partition(&self, source: &str, load_date: NaiveDate) -> String {
        format!("rejects/{source}/load_date={load_date}")
    }

    /// A numbered Parquet file inside a partition.
    pub fn part_file(&self, partition: &str, n: usize) -> Path {
        self.location.key(&format!("{partition}/part-{n}.parquet"))
    }

    /// Where a run writes files before they are moved into place (removed when the run ends).
    pub fn staging(&self, run_id: &str) -> String {
        format!("{STAGING}/{run_id}")
    }

    /// Every run's staging files: what a run holding the lock removes when it ends, its own and
    /// those of runs killed before they could remove theirs.
    pub fn staging_root(&self) -> &'static str {
        STAGING
    }

    pub fn staging_file(&self, run_id: &str, name: &str) -> Path {
        self.location.key(&format!("{}/{name}", self.staging(run_id)))
    }

    /// Rejects of a load that failed its threshold: kept for the operator, outside `rejects/`.
    pub fn failed_load_rejects(&self, run_id: &str, source: &str, load_date: NaiveDate) -> Path {
        self.location.key(&format!("_runs/{run_id}/rejects/{source}/load_date={load_date}/part-0.parquet"))
    }

    pub fn runs_dir(&self) -> &'static str {
        "_runs"
    }

    pub fn run_ledger(&self, run_id: &str) -> Path {
        self.location.key(&format!("_runs/{run_id}.json"))
    }

    /// The report of one night: `reports/as_of=<D>/index.html`.
    pub fn report(&self, as_of: NaiveDate) -> Path {
        self.location.key(&format!("reports/as_of={as_of}/index.html"))
    }

    /// The report of the newest night: `reports/latest.html` (a copy, so that it opens by itself).
    pub fn latest_report(&self) -> Path {
        self.location.key("reports/latest.html")
    }
}
