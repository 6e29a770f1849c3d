//! The fingerprint of everything a date's marts are computed from. A date whose marts were all
//! committed with the same fingerprint is skipped (unless `--rebuild`): same inputs, same output.

use chrono::NaiveDate;
use object_store::ObjectStoreExt;

use crate::config::{Pipeline, Project};
use crate::error::Result;
use crate::ingest;
use crate::run::Session;
use crate::transform::Dag;
use crate::transform::state::InputHash;

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
    let mut hash = InputHash::of_definition(project, pipeline)?;
    for contract in &pipeline.sources {
        hash.add(&contract.name);
        if let Ok(files) = ingest::landing_files(&session.landing, contract, as_of).await? {
            for file in files {
                let meta = session.landing.store.head(&file.key).await.ok();
                hash.add(&format!("{} {} {:?}", file.name, file.size, meta.and_then(|m| m.e_tag)));
            }
        }
        hash.add_raw_loads(&session.warehouse, &contract.name, |d| d < as_of).await?;
    }
    let histories: std::collections::BTreeSet<&String> = dag.inputs.values().flat_map(|i| &i.histories).collect();
    for mart in histories {
        for snapshot in session.warehouse.committed_snapshots(mart).await? {
            if snapshot.as_of < as_of {
                hash.add(&format!("{mart} {} {}", snapshot.as_of, snapshot.run_id));
            }
        }
    }
    Ok(hash.finish())
}
