//! The keys a referencing column may use: the referenced source's primary key as loaded in raw/
//! up to the load date (the latest load of a `full` source, every load of an `incremental` one).

use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{Array, Int64Array, StringArray};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::key_set::KeySet;
use crate::config::{LoadMode, SourceContract};
use crate::error::{Error, Result};
use crate::warehouse::{Warehouse, load_date_of};

pub async fn load_keys(
    warehouse: &Warehouse,
    target: &SourceContract,
    column: &str,
    as_of: NaiveDate,
) -> Result<Arc<KeySet>> {
    let location = &warehouse.location;
    let mut partitions: Vec<(NaiveDate, object_store::path::Path)> = Vec::new();
    for object in location.list(&warehouse.layout().raw_dir(&target.name)).await? {
        let relative = location.relative(&object.location);
        let date = load_date_of(&relative);
        if let Some(date) = date.filter(|d| *d <= as_of)
            && relative.ends_with(".parquet")
        {
            partitions.push((date, object.location));
        }
    }
    if target.load == LoadMode::Full
        && let Some(latest) = partitions.iter().map(|(d, _)| *d).max()
    {
        partitions.retain(|(d, _)| *d == latest);
    }
    let mut keys = KeySet::default();
    for (_, key) in partitions {
        let bytes = location.get_bytes(&key).await?;
        let url = location.url_of(&key);
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| Error::parquet(format!("reading {url}"), e))?;
        let index = builder
            .schema()
            .index_of(column)
            .map_err(|_| Error::Internal(format!("{url} has no column `{column}`")))?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
        let reader = builder.with_projection(mask).build().map_err(|e| Error::parquet(format!("reading {url}"), e))?;
        for batch in reader {
            let batch = batch.map_err(|e| Error::arrow(format!("reading {url}"), e))?;
            let values = batch.column(0);
            if let Some(strings) = values.as_any().downcast_ref::<StringArray>() {
                strings.iter().flatten().for_each(|key| keys.insert(key));
            } else if let Some(ints) = values.as_any().downcast_ref::<Int64Array>() {
                ints.iter().flatten().for_each(|key| keys.insert(&key.to_string()));
            } else {
                return Err(Error::Internal(format!(
                    "{url}: column `{column}` cannot be referenced (type {})",
                    values.data_type()
                )));
            }
        }
    }
    Ok(Arc::new(keys))
}
