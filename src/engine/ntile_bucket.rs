//! `ntile_bucket(rank, rows, n)`: the bucket `ntile(n)` gives the `rank`-th of `rows` ordered rows
//! (1-based; the first `rows % n` buckets one row larger), from a row number and a count.
//!
//! `ntile` itself needs its whole input in one batch: DataFusion's WindowAggExec concatenates it,
//! and the sort after it asks the memory pool for all of it at once, which a large night fails.
//! `row_number()` streams out of a sort that spills, and the count is a one-row aggregate.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Builder};
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NtileBucket {
    signature: Signature,
}

impl NtileBucket {
    pub fn new() -> NtileBucket {
        NtileBucket { signature: Signature::user_defined(Volatility::Immutable) }
    }
}

/// The bucket of 1-based `rank` among `rows` rows split into `n` buckets as SQL's `ntile` does.
pub fn bucket(rank: i64, rows: i64, n: i64) -> Option<i64> {
    if n < 1 || rank < 1 || rank > rows {
        return None;
    }
    let (base, remainder) = (rows / n, rows % n);
    let large_rows = remainder * (base + 1);
    let index = rank - 1;
    Some(if index < large_rows { index / (base + 1) + 1 } else { remainder + (index - large_rows) / base + 1 })
}

impl ScalarUDFImpl for NtileBucket {
    fn name(&self) -> &str {
        "ntile_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    // row_number() is UInt64, count(*) Int64, a literal Int64: all taken as Int64.
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 3 || !arg_types.iter().all(|t| t.is_integer() || t.is_null()) {
            return plan_err!("ntile_bucket(rank, rows, n) takes three integers, not {arg_types:?}");
        }
        Ok(vec![DataType::Int64; 3])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [rank, rows, n] = [0, 1, 2].map(|i| arrays[i].as_primitive::<Int64Type>());
        let mut out = Int64Builder::with_capacity(args.number_rows);
        for row in 0..args.number_rows {
            if rank.is_null(row) || rows.is_null(row) || n.is_null(row) {
                out.append_null();
                continue;
            }
            let (rank, rows, n) = (rank.value(row), rows.value(row), n.value(row));
            match bucket(rank, rows, n) {
                Some(b) => out.append_value(b),
                None => return exec_err!("ntile_bucket: rank {rank} of {rows} rows in {n} buckets is out of range"),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `ntile(n)` assigns, row by row: bucket sizes as equal as possible, larger ones first.
    fn ntile(rows: i64, n: i64) -> Vec<i64> {
        let (base, remainder) = (rows / n, rows % n);
        (1..=n).flat_map(|b| std::iter::repeat_n(b, (base + i64::from(b <= remainder)) as usize)).collect()
    }

    #[test]
    fn buckets_are_ntiles() {
        for rows in 1..=40 {
            for n in 1..=7 {
                let got: Vec<i64> = (1..=rows).map(|rank| bucket(rank, rows, n).unwrap()).collect();
                assert_eq!(got, ntile(rows, n), "{rows} rows in {n} buckets");
            }
        }
        // Fewer rows than buckets: each row its own bucket.
        assert_eq!(bucket(3, 3, 5), Some(3));
        assert_eq!(bucket(0, 3, 5), None);
        assert_eq!(bucket(4, 3, 5), None);
        assert_eq!(bucket(1, 3, 0), None);
    }
}
