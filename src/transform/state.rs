//! The lifecycle of an incremental model's state: which committed state a night may start from,
//! what the state of a date is computed from, and which states are kept for the nights after.
//! Committing and deleting states is publish's work; the run asks here what to commit and keep.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use xxhash_rust::xxh3::Xxh3;

use crate::config::{Model, Pipeline, Project};
use crate::error::{Error, Result};
use crate::warehouse::snapshot::SnapshotManifest;
use crate::warehouse::{Shelf, Warehouse, load_date_of};

/// The states of one night's incremental models, with the input hash of each date the night
/// looked at computed once.
pub struct States<'a> {
    pub project: &'a Project,
    pub warehouse: &'a Warehouse,
    pub pipeline: &'a Pipeline,
    /// `--full`: compute every incremental model from all history.
    pub full: bool,
    inputs_by_date: BTreeMap<NaiveDate, String>,
}

impl<'a> States<'a> {
    pub fn new(project: &'a Project, warehouse: &'a Warehouse, pipeline: &'a Pipeline, full: bool) -> States<'a> {
        States { project, warehouse, pipeline, full, inputs_by_date: BTreeMap::new() }
    }

    /// Hash of what a state at `date` is computed from ([`state_inputs`]), once per date.
    pub async fn inputs_at(&mut self, date: NaiveDate) -> Result<String> {
        if let Some(hash) = self.inputs_by_date.get(&date) {
            return Ok(hash.clone());
        }
        let hash = state_inputs(self.project, self.warehouse, self.pipeline, date).await?;
        self.inputs_by_date.insert(date, hash.clone());
        Ok(hash)
    }

    /// The state an incremental model starts from tonight: its latest committed state before
    /// `as_of`, if that was computed from the loads and pipeline there are now; else why not.
    pub async fn previous(
        &mut self,
        model: &Model,
        as_of: NaiveDate,
    ) -> Result<std::result::Result<SnapshotManifest, String>> {
        if self.full {
            return Ok(Err("--full".into()));
        }
        let committed = self.warehouse.shelved_snapshots(Shelf::State, &model.name).await?;
        let Some(latest) = committed.into_iter().rfind(|s| s.as_of < as_of) else {
            return Ok(Err("no earlier state".into()));
        };
        if latest.inputs != self.inputs_at(latest.as_of).await? {
            return Ok(Err(format!("the state of {} was computed from other loads or another pipeline", latest.as_of)));
        }
        // A state is a cache of what all history gives: one that lost a file costs a whole
        // computation, not the night.
        let dir = self.warehouse.layout().snapshot_dir(Shelf::State, &model.name, latest.as_of);
        let present = self.warehouse.location.relative_keys(&dir).await?;
        if let Some(missing) = latest.files.iter().find(|f| !present.contains(f)) {
            tracing::warn!("{}: the state of {} has lost {missing}; computing it whole", model.name, latest.as_of);
            return Ok(Err(format!("the state of {} has lost {missing}", latest.as_of)));
        }
        Ok(Ok(latest))
    }
}

/// The states to keep once tonight's (`as_of`) is committed: it, the one it started from
/// (`since`) and the two newest; no night starts from any other.
pub fn states_to_keep(committed: &[SnapshotManifest], as_of: NaiveDate, since: Option<NaiveDate>) -> Vec<NaiveDate> {
    let mut keep: Vec<NaiveDate> = committed.iter().rev().take(2).map(|s| s.as_of).collect();
    keep.push(as_of);
    keep.extend(since);
    keep
}

/// Hash of what an incremental model's state at `up_to` is computed from: the keymart version,
/// the pipeline and every model's SQL, and every raw load up to that date. A night starts from
/// a state only when this still holds for the state's date: an old load re-ingested, or a
/// changed pipeline, and the state is recomputed whole.
pub async fn state_inputs(
    project: &Project,
    warehouse: &Warehouse,
    pipeline: &Pipeline,
    up_to: NaiveDate,
) -> Result<String> {
    let mut hash = InputHash::of_definition(project, pipeline)?;
    for contract in &pipeline.sources {
        hash.add_raw_loads(warehouse, &contract.name, |d| d <= up_to).await?;
    }
    Ok(hash.finish())
}

/// A hash of what something is computed from, fed part by part.
pub struct InputHash(Xxh3);

impl InputHash {
    /// Starting with the definition of the pipeline's models: the keymart version, the pipeline
    /// file and every model's SQL.
    pub fn of_definition(project: &Project, pipeline: &Pipeline) -> Result<InputHash> {
        let mut hash = InputHash(Xxh3::new());
        hash.add(env!("CARGO_PKG_VERSION"));
        let pipeline_path = project.root.join(&pipeline.file);
        hash.add(&std::fs::read_to_string(&pipeline_path).map_err(|e| Error::io(&pipeline_path, e))?);
        for model in &pipeline.models {
            hash.add(&model.name);
            hash.add(&model.sql);
        }
        Ok(hash)
    }

    pub fn add(&mut self, part: &str) {
        self.0.update(part.as_bytes());
        self.0.update(b"\x1f");
    }

    /// Every raw load of `source` whose date is `wanted`: its key, size and version tag.
    pub async fn add_raw_loads(
        &mut self,
        warehouse: &Warehouse,
        source: &str,
        wanted: impl Fn(NaiveDate) -> bool,
    ) -> Result<()> {
        let location = &warehouse.location;
        for object in location.list(&warehouse.layout().raw_dir(source)).await? {
            let key = location.relative(&object.location);
            if load_date_of(&key).is_some_and(&wanted) {
                self.add(&format!("{key} {} {:?}", object.size, object.e_tag));
            }
        }
        Ok(())
    }

    pub fn finish(self) -> String {
        format!("{:032x}", self.0.digest128())
    }
}
