//! The fingerprint of everything a date's marts are computed from. A date whose marts were all
//! committed with the same fingerprint is skipped (unless `--rebuild`): same inputs, same output.

use chrono::NaiveDate;
use object_store::ObjectStoreExt;
use xxhash_rust::xxh3::Xxh3;

use crate::config::{Pipeline, Project};
use crate::error::{Error, Result};
use crate::ingest;
use crate::run::Session;
use crate::transform::Dag;

/// Hash of: the keymart version, the pipeline file and every model's SQL, the landing files of
/// the date (name, size, version tag), the raw loads of earlier dates, and the committed
/// snapshots of earlier dates that models read as history.
pub async fn fingerprint(
    session: &Session,
    project: &Project,
    pipeline: &Pipeline,
    dag: &Dag,
    as_of: NaiveDate,
) -> Result<String> {
    let mut hash = Xxh3::new();
    let mut add = |part: &str| {
        hash.update(part.as_bytes());
        hash.update(b"\x1f");
    };
    add_definition(&mut add, project, pipeline)?;
    for contract in &pipeline.sources {
        add(&contract.name);
        if let Ok(files) = ingest::landing_files(&session.landing, contract, as_of).await? {
            for file in files {
                let meta = session.landing.store.head(&file.key).await.ok();
                add(&format!("{} {} {:?}", file.name, file.size, meta.and_then(|m| m.e_tag)));
            }
        }
        let location = &session.warehouse.location;
        for object in location.list(&format!("raw/{}", contract.name)).await? {
            let key = location.relative(&object.location);
            let earlier = load_date(&key).is_some_and(|d| d < as_of);
            if earlier {
                add(&format!("{key} {} {:?}", object.size, object.e_tag));
            }
        }
    }
    let histories: std::collections::BTreeSet<&String> = dag.inputs.values().flat_map(|i| &i.histories).collect();
    for mart in histories {
        for snapshot in session.warehouse.committed_snapshots(mart).await? {
            if snapshot.as_of < as_of {
                add(&format!("{mart} {} {}", snapshot.as_of, snapshot.run_id));
            }
        }
    }
    Ok(format!("{:032x}", hash.digest128()))
}

/// Hash of what an incremental model's state at `up_to` is computed from: the keymart version,
/// the pipeline and every model's SQL, and every raw load up to that date. A night starts from
/// a state only when this still holds for the state's date: an old load re-ingested, or a
/// changed pipeline, and the state is recomputed whole.
pub async fn state_inputs(session: &Session, pipeline: &Pipeline, up_to: NaiveDate) -> Result<String> {
    let mut hash = Xxh3::new();
    let mut add = |part: &str| {
        hash.update(part.as_bytes());
        hash.update(b"\x1f");
    };
    add_definition(&mut add, &session.project, pipeline)?;
    let location = &session.warehouse.location;
    for contract in &pipeline.sources {
        for object in location.list(&format!("raw/{}", contract.name)).await? {
            let key = location.relative(&object.location);
            if load_date(&key).is_some_and(|d| d <= up_to) {
                add(&format!("{key} {} {:?}", object.size, object.e_tag));
            }
        }
    }
    Ok(format!("{:032x}", hash.digest128()))
}

/// The keymart version, the pipeline file and every model's SQL.
fn add_definition(add: &mut impl FnMut(&str), project: &Project, pipeline: &Pipeline) -> Result<()> {
    add(env!("CARGO_PKG_VERSION"));
    let pipeline_path = project.root.join(&pipeline.file);
    add(&std::fs::read_to_string(&pipeline_path).map_err(|e| Error::io(&pipeline_path, e))?);
    for model in &pipeline.models {
        add(&model.name);
        add(&model.sql);
    }
    Ok(())
}

fn load_date(key: &str) -> Option<NaiveDate> {
    key.split('/').find_map(|p| p.strip_prefix("load_date=")).and_then(|d| d.parse().ok())
}
