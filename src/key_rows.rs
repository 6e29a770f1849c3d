//! How rows stand on a key, in order: whether each row's key comes after the one before it, and how
//! many repeat it. A key repeated in rows sorted by it shows up as two neighbours with the same key,
//! so both a load sorted by its primary key (ingest) and a mart written sorted by its key
//! (transform) learn whether a key repeats from one comparison per row instead of a set or a query.

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};

/// A key's columns as comparable rows (Arrow's row format), ascending with nulls first as
/// `shape_mart` sorts.
#[derive(Debug)]
pub struct KeyRows {
    columns: Vec<usize>,
    converter: RowConverter,
}

impl KeyRows {
    /// None when the key has no columns, names a column not in `schema`, or has a floating-point
    /// column (a sort, a grouping and a hash of the values need not agree on -0 and NaN).
    pub fn new(schema: &Schema, key: &[String]) -> Option<KeyRows> {
        let ascending_nulls_first = SortOptions { descending: false, nulls_first: true };
        let (columns, fields): (Vec<usize>, Vec<SortField>) = key
            .iter()
            .map(|name| {
                let index = schema.index_of(name).ok()?;
                let data_type = schema.field(index).data_type();
                (!data_type.is_floating())
                    .then(|| (index, SortField::new_with_options(data_type.clone(), ascending_nulls_first)))
            })
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .unzip();
        if columns.is_empty() {
            return None;
        }
        Some(KeyRows { columns, converter: RowConverter::new(fields).ok()? })
    }

    /// How the batch's rows stand on the key; None for a batch without rows.
    pub fn run(&self, batch: &RecordBatch) -> Result<Option<KeyRun>, ArrowError> {
        let Some(last) = batch.num_rows().checked_sub(1) else { return Ok(None) };
        let columns: Vec<ArrayRef> = self.columns.iter().map(|&i| batch.column(i).clone()).collect();
        let keys = self.converter.convert_columns(&columns)?;
        let mut repeated_rows = Some(0);
        for i in 1..=last {
            match keys.row(i - 1).cmp(&keys.row(i)) {
                std::cmp::Ordering::Greater => {
                    repeated_rows = None;
                    break;
                }
                std::cmp::Ordering::Equal => repeated_rows = repeated_rows.map(|r| r + 1),
                std::cmp::Ordering::Less => {}
            }
        }
        Ok(Some(KeyRun { first: keys.row(0).owned(), last: keys.row(last).owned(), repeated_rows }))
    }
}

/// Consecutive rows, as they stand on the key.
#[derive(Debug)]
pub struct KeyRun {
    first: OwnedRow,
    last: OwnedRow,
    /// Rows with the same key as the row before them; None once a row came before the one
    /// preceding it (then neighbours cannot tell whether a key repeats).
    pub repeated_rows: Option<u64>,
}

impl KeyRun {
    /// These rows followed by `next`.
    pub fn then(self, next: KeyRun) -> KeyRun {
        let repeated_rows = match (self.repeated_rows, next.repeated_rows, self.last.row().cmp(&next.first.row())) {
            (Some(a), Some(b), std::cmp::Ordering::Less) => Some(a + b),
            (Some(a), Some(b), std::cmp::Ordering::Equal) => Some(a + b + 1),
            _ => None,
        };
        KeyRun { first: self.first, last: next.last, repeated_rows }
    }

    /// Every key came after the one before it: none repeats.
    pub fn ascends(&self) -> bool {
        self.repeated_rows == Some(0)
    }
}
