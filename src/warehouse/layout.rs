//! Where each thing lives in the warehouse (DESIGN.md, "Warehouse layout"). Every key the pipeline
//! reads or writes is built here, and every key's date is read back here, so the layout has one
//! definition.

use chrono::NaiveDate;
use object_store::path::Path;

use super::Location;

const STAGING: &str = "_staging";
const RUNS: &str = "_runs";
const LOCK: &str = "_lock";
const MANIFEST_NAME: &str = "_SUCCESS";
const DELTA_LOG: &str = "_delta_log";

/// Where a kind of snapshot lives: `marts/` (published for readers) or `state/` (incremental
/// models' tables, kept for the next night; DESIGN.md has no place for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shelf {
    Marts,
    State,
}

impl Shelf {
    fn prefix(self) -> &'static str {
        match self {
            Shelf::Marts => "marts",
            Shelf::State => "state",
        }
    }
}

pub struct Layout<'a> {
    pub location: &'a Location,
}

impl Layout<'_> {
    /// `raw/<source>/` (relative): every load of a source, one partition per date.
    pub fn raw_dir(&self, source: &str) -> String {
        format!("raw/{source}")
    }

    /// `raw/<source>/load_date=<D>/` (relative).
    pub fn raw_partition(&self, source: &str, load_date: NaiveDate) -> String {
        format!("{}/load_date={load_date}", self.raw_dir(source))
    }

    /// `rejects/<source>/load_date=<D>/` (relative).
    pub fn rejects_partition(&self, source: &str, load_date: NaiveDate) -> String {
        format!("rejects/{source}/load_date={load_date}")
    }

    /// A numbered Parquet file inside a partition.
    pub fn part_file(&self, partition: &str, n: usize) -> Path {
        self.location.key(&part_name(partition, n))
    }

    /// The same numbered file, written first under the run's staging folder.
    pub fn staged_part_file(&self, run_id: &str, partition: &str, n: usize) -> Path {
        self.staging_file(run_id, &part_name(partition, n))
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
        let partition = self.rejects_partition(source, load_date);
        self.location.key(&format!("{RUNS}/{run_id}/{}", part_name(&partition, 0)))
    }

    pub fn runs_dir(&self) -> &'static str {
        RUNS
    }

    pub fn run_ledger(&self, run_id: &str) -> Path {
        self.location.key(&format!("{RUNS}/{run_id}.json"))
    }

    /// `marts` or `state` (relative): every table of a shelf.
    pub fn shelf_dir(&self, shelf: Shelf) -> &'static str {
        shelf.prefix()
    }

    /// `marts/<mart>` or `state/<model>` (relative): every snapshot of it.
    pub fn table_dir(&self, shelf: Shelf, table: &str) -> String {
        format!("{}/{table}", shelf.prefix())
    }

    /// `marts/<mart>/_delta_log` (relative): a mart table's log.
    pub fn table_log_dir(&self, mart: &str) -> String {
        format!("{}/{DELTA_LOG}", self.table_dir(Shelf::Marts, mart))
    }

    /// `marts/<mart>/as_of=<D>` or `state/<model>/as_of=<D>` (relative).
    pub fn snapshot_dir(&self, shelf: Shelf, table: &str, as_of: NaiveDate) -> String {
        format!("{}/as_of={as_of}", self.table_dir(shelf, table))
    }

    /// `<snapshot dir>/<run_id>` (relative): the files one run writes for a snapshot, so that
    /// a rerun's files never overwrite those a reader may be reading.
    pub fn run_snapshot_dir(&self, shelf: Shelf, table: &str, as_of: NaiveDate, run_id: &str) -> String {
        format!("{}/{run_id}", self.snapshot_dir(shelf, table, as_of))
    }

    /// The `_SUCCESS` manifest that commits a snapshot.
    pub fn manifest_key(&self, shelf: Shelf, table: &str, as_of: NaiveDate) -> Path {
        self.location.key(&format!("{}/{MANIFEST_NAME}", self.snapshot_dir(shelf, table, as_of)))
    }
}

impl Layout<'_> {
    /// The report of one night: `reports/as_of=<D>/index.html`.
    pub fn report(&self, as_of: NaiveDate) -> Path {
        self.location.key(&format!("reports/as_of={as_of}/index.html"))
    }

    /// The report of the newest night: `reports/latest.html` (a copy, so that it opens by itself).
    pub fn latest_report(&self) -> Path {
        self.location.key("reports/latest.html")
    }

    /// `_lock/`: the chain of the run lock's links (`publish::lock`).
    pub fn lock_dir(&self) -> &'static str {
        LOCK
    }

    /// `_lock/<number>.json`, numbered with leading zeros so that keys sort as numbers do.
    pub fn lock_link(&self, number: u64) -> Path {
        self.location.key(&format!("{LOCK}/{number:020}.json"))
    }
}

/// The number of a lock link's key (`_lock/<number>.json`).
pub fn lock_link_number(key: &Path) -> Option<u64> {
    key.filename()?.strip_suffix(".json")?.parse().ok()
}

/// Whether a key is a snapshot's `_SUCCESS` manifest.
pub fn is_manifest(key: &Path) -> bool {
    key.filename() == Some(MANIFEST_NAME)
}

/// Whether a key lies in a Delta table's log (`marts/<mart>/_delta_log/…`).
pub fn is_table_log(key: &Path) -> bool {
    key.parts().any(|part| part.as_ref() == DELTA_LOG)
}

/// The date of the load a key lies in: the `load_date=<D>` part of `raw/<source>/load_date=<D>/…`.
pub fn load_date_of(relative_key: &str) -> Option<NaiveDate> {
    date_part(relative_key, "load_date=")
}

/// The date of the snapshot a key lies in: the `as_of=<D>` part of `state/<model>/as_of=<D>/…`.
pub fn snapshot_date(relative_key: &str) -> Option<NaiveDate> {
    date_part(relative_key, "as_of=")
}

fn date_part(relative_key: &str, prefix: &str) -> Option<NaiveDate> {
    relative_key.split('/').find_map(|p| p.strip_prefix(prefix)).and_then(|d| d.parse().ok())
}

fn part_name(partition: &str, n: usize) -> String {
    format!("{partition}/part-{n}.parquet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gives_back_the_date_it_was_built_with() {
        let day = NaiveDate::from_ymd_opt(2024, 6, 2).unwrap();
        assert_eq!(load_date_of("raw/erp_orders/load_date=2024-06-02/part-0.parquet"), Some(day));
        assert_eq!(snapshot_date("marts/customer_rfm/as_of=2024-06-02/r1/part-0.parquet"), Some(day));
        assert_eq!(load_date_of("raw/erp_orders/load_date=2024-13-02/part-0.parquet"), None);
        assert_eq!(snapshot_date("raw/erp_orders/load_date=2024-06-02/part-0.parquet"), None);
    }
}
