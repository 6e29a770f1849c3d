//! What a mart's key looks like in the rows as they are written: a mart is written as one stream
//! sorted by its key, so a key repeated in it shows up as two neighbouring rows with the same key.
//! Watching for that while the rows pass costs a comparison per row; a `unique` test on the key
//! asked afterwards of the written files is a grouping of every row.

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::TryStreamExt;

use crate::key_rows::{KeyRows, KeyRun};

/// Watches the key columns of a stream sorted as `KeyRows` compares (as `shape_mart` sorts).
#[derive(Debug)]
struct Watch {
    rows: KeyRows,
    /// The rows so far (None before the first).
    seen: Option<KeyRun>,
}

impl Watch {
    fn observe(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.seen.as_ref().is_some_and(|seen| seen.repeated_rows.is_none()) {
            return Ok(());
        }
        if let Some(run) = self.rows.run(batch)? {
            self.seen = Some(match self.seen.take() {
                Some(seen) => seen.then(run),
                None => run,
            });
        }
        Ok(())
    }
}

/// The seen key of a watched stream, readable once the stream has ended.
#[derive(Debug, Clone)]
pub struct KeyWatch(Arc<Mutex<Watch>>);

impl KeyWatch {
    /// Wrap `stream`, whose rows are sorted by the `key` columns, so that its key is watched as
    /// it is consumed. The stream comes back unwatched when `KeyRows` cannot compare its key (a
    /// column that is not in the stream, or a floating-point one).
    pub fn wrap(stream: SendableRecordBatchStream, key: &[String]) -> (SendableRecordBatchStream, Option<KeyWatch>) {
        let schema = stream.schema();
        let Some(rows) = KeyRows::new(&schema, key) else { return (stream, None) };
        let watch = KeyWatch(Arc::new(Mutex::new(Watch { rows, seen: None })));
        let seen = watch.clone();
        let watched = stream.and_then(move |batch| {
            let observed = seen.0.lock().expect("key watch").observe(&batch);
            futures::future::ready(observed.map(|()| batch))
        });
        (Box::pin(RecordBatchStreamAdapter::new(schema, watched)), Some(watch))
    }

    /// Rows with the same key as the row before them, of the rows that have passed (all of them
    /// once the stream has ended); None when the rows were not sorted by the key.
    pub fn repeated_rows(&self) -> Option<u64> {
        self.0.lock().expect("key watch").seen.as_ref().map_or(Some(0), |seen| seen.repeated_rows)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use futures::StreamExt;

    use super::*;

    fn batch(ids: &[Option<&str>], lines: &[i64]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("customer_id", DataType::Utf8, true),
            Field::new("line", DataType::Int64, false),
        ]);
        let columns: Vec<ArrayRef> =
            vec![Arc::new(StringArray::from(ids.to_vec())), Arc::new(Int64Array::from(lines.to_vec()))];
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    fn watched(batches: Vec<RecordBatch>, key: &[&str]) -> Option<u64> {
        let schema = batches[0].schema();
        let stream = RecordBatchStreamAdapter::new(schema, futures::stream::iter(batches.into_iter().map(Ok)));
        let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
        let (mut stream, watch) = KeyWatch::wrap(Box::pin(stream), &key);
        let watch = watch.expect("a watchable key");
        futures::executor::block_on(async { while stream.next().await.is_some() {} });
        watch.repeated_rows()
    }

    #[test]
    fn a_sorted_unique_key_has_no_repeated_rows() {
        let seen = watched(
            vec![batch(&[None, Some("C1"), Some("C2")], &[1, 1, 1]), batch(&[Some("C3")], &[1])],
            &["customer_id"],
        );
        assert_eq!(seen, Some(0));
    }

    #[test]
    fn repeats_are_counted_within_and_across_batches_and_nulls_repeat_too() {
        let seen = watched(
            vec![
                batch(&[None, None, Some("C1"), Some("C2")], &[1, 2, 1, 1]),
                batch(&[Some("C2"), Some("C2"), Some("C3")], &[2, 3, 1]),
                batch(&[], &[]),
                batch(&[Some("C3")], &[2]),
            ],
            &["customer_id"],
        );
        assert_eq!(seen, Some(4));
        // The same rows keyed by (customer_id, line) repeat nothing.
        let seen = watched(
            vec![batch(&[None, None, Some("C1")], &[1, 2, 1]), batch(&[Some("C1")], &[2])],
            &["customer_id", "line"],
        );
        assert_eq!(seen, Some(0));
    }

    #[test]
    fn a_key_out_of_order_concludes_nothing() {
        // C1 repeats after C2: neighbours cannot tell whether a key repeats.
        let seen =
            watched(vec![batch(&[Some("C1"), Some("C2")], &[1, 1]), batch(&[Some("C1")], &[2])], &["customer_id"]);
        assert_eq!(seen, None);
        // Nulls sort first: a null after a value is out of order.
        let seen = watched(vec![batch(&[Some("C1"), None], &[1, 1])], &["customer_id"]);
        assert_eq!(seen, None);
    }

    #[test]
    fn floating_point_and_missing_key_columns_are_not_watched() {
        let schema = Arc::new(Schema::new(vec![Field::new("score", DataType::Float64, false)]));
        let one =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Float64Array::from(vec![0.5])) as ArrayRef]).unwrap();
        let stream =
            || Box::pin(RecordBatchStreamAdapter::new(schema.clone(), futures::stream::iter(vec![Ok(one.clone())])));
        assert!(KeyWatch::wrap(stream(), &["score".to_string()]).1.is_none());
        assert!(KeyWatch::wrap(stream(), &["customer_id".to_string()]).1.is_none());
    }
}
