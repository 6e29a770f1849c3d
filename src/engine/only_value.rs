//! `only_value(x)`: the one non-NULL value of `x` in the group, NULL when there is none, and an
//! error when the group holds two different ones.
//!
//! For combining per-customer inputs by grouping over their `UNION ALL` (customer_profile), where
//! each column comes from one input with at most one row per customer. `max()` gives the same
//! answer there, but its grouped state for strings is a heap string per group and column,
//! compared and replaced on every row (with a dozen string columns that made the grouping slower
//! than the joins it replaces), and it would hide a second row instead of failing. Here a
//! group's value is taken from its batch once, into a chunk shared with the other groups that
//! got theirs from the same batch, and the answer is gathered from the chunks at the end.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array, make_comparator, new_null_array};
use datafusion::arrow::compute::{SortOptions, interleave, not, nullif, prep_null_mask_filter, take};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, Volatility};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct OnlyValue {
    signature: Signature,
}

impl OnlyValue {
    pub fn new() -> OnlyValue {
        OnlyValue { signature: Signature::any(1, Volatility::Immutable) }
    }
}

impl Default for OnlyValue {
    fn default() -> Self {
        OnlyValue::new()
    }
}

impl AggregateUDFImpl for OnlyValue {
    fn name(&self) -> &str {
        "only_value"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format!("{}[value]", args.name), args.return_type().clone(), true))])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(OnlyValueAccumulator { value: ScalarValue::try_from(args.return_type())? }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(OnlyValueGroups::new(args.return_type().clone())))
    }
}

fn two_values(first: impl std::fmt::Display, second: impl std::fmt::Display) -> Result<()> {
    exec_err!("only_value: the group has two different values, {first} and {second}")
}

/// One group (a grouping without GROUP BY, or a plan that does not use the grouped form).
#[derive(Debug)]
struct OnlyValueAccumulator {
    value: ScalarValue,
}

impl Accumulator for OnlyValueAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let array = &values[0];
        for row in (0..array.len()).filter(|&row| array.is_valid(row)) {
            let value = ScalarValue::try_from_array(array, row)?;
            if self.value.is_null() {
                self.value = value;
            } else if self.value != value {
                return two_values(&self.value, &value);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.value.clone()])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.value.clone())
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.value.size() - size_of_val(&self.value)
    }
}

/// Where a group's value is: a row of one of the chunks. Chunk 0 is a single NULL, so a group
/// without a value points at it and the answer is one `interleave`.
type Slot = (u32, u32);
const NO_VALUE: Slot = (0, 0);

struct OnlyValueGroups {
    data_type: DataType,
    chunks: Vec<ArrayRef>,
    chunk_bytes: usize,
    slots: Vec<Slot>,
}

impl OnlyValueGroups {
    fn new(data_type: DataType) -> Self {
        let nothing = new_null_array(&data_type, 1);
        OnlyValueGroups {
            chunk_bytes: nothing.get_array_memory_size(),
            chunks: vec![nothing],
            data_type,
            slots: Vec::new(),
        }
    }

    fn take(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let slots = emit_to.take_needed(&mut self.slots);
        let indices: Vec<(usize, usize)> = slots.iter().map(|&(c, r)| (c as usize, r as usize)).collect();
        let chunks: Vec<&dyn Array> = self.chunks.iter().map(|c| c.as_ref()).collect();
        let taken = interleave(&chunks, &indices)?;
        // Start over with the groups that are left, their values gathered into one chunk: a
        // grouping that emits as it goes (merging its spill files) would otherwise keep every
        // chunk alive until its last group is out.
        let left: Vec<(usize, usize)> = self.slots.iter().map(|&(c, r)| (c as usize, r as usize)).collect();
        let kept = interleave(&chunks, &left)?;
        let mut fresh = OnlyValueGroups::new(self.data_type.clone());
        fresh.slots = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, &slot)| if slot == NO_VALUE { NO_VALUE } else { (1, i as u32) })
            .collect();
        fresh.chunk_bytes += kept.get_array_memory_size();
        fresh.chunks.push(kept);
        *self = fresh;
        Ok(taken)
    }

    fn offer(&mut self, values: &ArrayRef, group_indices: &[usize], counts: Option<&BooleanArray>) -> Result<()> {
        let chunk = self.chunks.len() as u32;
        let mut rows: Vec<u32> = Vec::new();
        for (row, &group) in group_indices.iter().enumerate() {
            if values.is_null(row) || counts.is_some_and(|c| !c.value(row)) {
                continue;
            }
            let slot = self.slots[group];
            if slot == NO_VALUE {
                self.slots[group] = (chunk, rows.len() as u32);
                rows.push(row as u32);
                continue;
            }
            // A second value for the group: fine if it is the same one.
            let (held, held_row) = if slot.0 == chunk {
                (values, rows[slot.1 as usize] as usize)
            } else {
                (&self.chunks[slot.0 as usize], slot.1 as usize)
            };
            if make_comparator(held.as_ref(), values.as_ref(), SortOptions::default())?(held_row, row)
                != Ordering::Equal
            {
                return two_values(
                    ScalarValue::try_from_array(held, held_row)?,
                    ScalarValue::try_from_array(values, row)?,
                );
            }
        }
        if !rows.is_empty() {
            let taken = take(values.as_ref(), &UInt32Array::from(rows), None)?;
            self.chunk_bytes += taken.get_array_memory_size();
            self.chunks.push(taken);
        }
        Ok(())
    }
}

/// A FILTER's rows that count: true, not false or NULL.
fn rows_that_count(filter: &BooleanArray) -> BooleanArray {
    if filter.null_count() > 0 { prep_null_mask_filter(filter) } else { filter.clone() }
}

impl GroupsAccumulator for OnlyValueGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.slots.resize(total_num_groups, NO_VALUE);
        let counts = opt_filter.map(rows_that_count);
        self.offer(&values[0], group_indices, counts.as_ref())
    }

    fn merge_batch(&mut self, states: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.slots.resize(total_num_groups, NO_VALUE);
        self.offer(&states[0], group_indices, None)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        self.take(emit_to)
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.take(emit_to)?])
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        // Each row its own group: its value, or NULL where the row does not count.
        match opt_filter {
            None => Ok(vec![Arc::clone(&values[0])]),
            Some(filter) => Ok(vec![nullif(&values[0], &not(&rows_that_count(filter))?)?]),
        }
    }

    fn size(&self) -> usize {
        self.chunk_bytes + self.chunks.capacity() * size_of::<ArrayRef>() + self.slots.capacity() * size_of::<Slot>()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn grouped(sql: &str) -> Result<String> {
        let ctx = SessionContext::new();
        ctx.register_udaf(datafusion::logical_expr::AggregateUDF::from(OnlyValue::new()));
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test]
    async fn each_group_gets_its_one_value_or_null() {
        let shown = grouped(
            "SELECT g, only_value(s) AS s, only_value(n) AS n FROM (VALUES \
             (1, 'a', NULL), (1, NULL, 10), (2, NULL, NULL), (3, 'c', 30), (3, 'c', NULL)) t(g, s, n) \
             GROUP BY g ORDER BY g",
        )
        .await
        .unwrap();
        let rows: Vec<&str> = shown.lines().filter(|l| l.starts_with("| ") && !l.contains(" g ")).collect();
        assert_eq!(rows, ["| 1 | a | 10 |", "| 2 |   |    |", "| 3 | c | 30 |"], "{shown}");
    }

    #[tokio::test]
    async fn two_different_values_in_a_group_are_an_error() {
        let error = grouped("SELECT g, only_value(s) FROM (VALUES (1, 'a'), (1, 'b')) t(g, s) GROUP BY g")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("only_value: the group has two different values, a and b"), "{error}");
    }

    #[tokio::test]
    async fn without_group_by_the_whole_input_is_one_group() {
        let shown = grouped("SELECT only_value(s) AS s FROM (VALUES ('a'), (NULL), ('a')) t(s)").await.unwrap();
        assert!(shown.contains("| a |"), "{shown}");
        let error = grouped("SELECT only_value(s) FROM (VALUES ('a'), ('b')) t(s)").await.unwrap_err().to_string();
        assert!(error.contains("two different values, a and b"), "{error}");
    }

    #[test]
    fn values_from_many_batches_and_a_partial_emit_land_in_their_groups() {
        let mut groups = OnlyValueGroups::new(DataType::Utf8);
        let first: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None, Some("z")]));
        groups.update_batch(&[first], &[0, 1, 2], None, 3).unwrap();
        let second: ArrayRef = Arc::new(StringArray::from(vec![Some("y"), Some("x"), Some("w")]));
        let counts = BooleanArray::from(vec![true, true, false]);
        groups.update_batch(&[second], &[1, 0, 3], Some(&counts), 4).unwrap();
        let head = groups.evaluate(EmitTo::First(2)).unwrap();
        assert_eq!(head.as_any().downcast_ref::<StringArray>().unwrap(), &StringArray::from(vec!["x", "y"]));
        let rest = groups.evaluate(EmitTo::All).unwrap();
        assert_eq!(rest.as_any().downcast_ref::<StringArray>().unwrap(), &StringArray::from(vec![Some("z"), None]));
        let values: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
        let state = groups.convert_to_state(&[values], Some(&BooleanArray::from(vec![Some(true), None]))).unwrap();
        assert_eq!(state[0].as_any().downcast_ref::<Int64Array>().unwrap(), &Int64Array::from(vec![Some(1), None]));
    }
}
