//! The fingerprint of everything a date's marts are computed from. A date whose marts were all
//! committed with the same fingerprint is skipped (unless `--rebuild`): same inputs, same output.

use chrono::NaiveDate;
use object_store::ObjectStoreExt;
use xxhash_rust::xxh3::Xxh3;

use crate::config::{Pipeline, Project};
use crate::error::Result;
use crate::ingest;
use crate::run::Session;
use crate::transform::Dag;
use crate::transform::state::add_definition;
use crate::warehouse::load_date_of;

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
        for object in location.list(&session.warehouse.layout().raw_dir(&contract.name)).await? {
            let key = location.relative(&object.location);
            let earlier = load_date_of(&key).is_some_and(|d| d < as_of);
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
