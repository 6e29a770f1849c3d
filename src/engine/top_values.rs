//! `top_values(value, weight, n)`: per group, the `n` values with the largest weight (ties: the
//! smaller value first), joined with ", " — the "usual channel" or "top three categories" of a
//! customer. NULL values and NULL weights are skipped; a group without any gives NULL.
//!
//! The same answer as ranking with `row_number() OVER (PARTITION BY … ORDER BY weight DESC,
//! value)` and keeping places 1..n, without sorting every (customer, value) pair, which made
//! those windows a large part of `customer_profile`. Weights are integers or decimals
//! and compared exactly (as i128), so ties are ties in every engine.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Builder, ListArray, ListBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Field, FieldRef, Int64Type};
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, EmitTo, GroupsAccumulator, Signature, TypeSignature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;

/// The most places `n` may ask for: the function keeps them per group, in a small sorted list.
const MAX_PLACES: i64 = 100;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TopValues {
    signature: Signature,
}

impl TopValues {
    pub fn new() -> TopValues {
        TopValues { signature: Signature::new(TypeSignature::UserDefined, Volatility::Immutable) }
    }
}

impl Default for TopValues {
    fn default() -> Self {
        TopValues::new()
    }
}

impl AggregateUDFImpl for TopValues {
    fn name(&self) -> &str {
        "top_values"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [_, weight, places] = arg_types else {
            return plan_err!("top_values takes (value, weight, n), got {} arguments", arg_types.len());
        };
        let weight = match weight {
            DataType::Decimal128(_, _) => weight.clone(),
            w if w.is_integer() || w.is_null() => DataType::Int64,
            other => return plan_err!("top_values: the weight must be an integer or a decimal, not {other}"),
        };
        if !places.is_integer() {
            return plan_err!("top_values: n must be an integer, not {places}");
        }
        Ok(vec![DataType::Utf8, weight, DataType::Int64])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = |t: DataType| Arc::new(Field::new_list_field(t, true));
        Ok(vec![
            Arc::new(Field::new(format!("{}[values]", args.name), DataType::List(item(DataType::Utf8)), true)),
            Arc::new(Field::new(format!("{}[weights]", args.name), DataType::List(item(WEIGHT_STATE)), true)),
        ])
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(TopAccumulator { top: Top::default(), places: places(&args)? }))
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(TopGroups { groups: Vec::new(), places: places(&args)?, entry_bytes: 0 }))
    }
}

/// Weights travel between aggregation phases as unscaled i128s (the scale is the input's, the
/// same on both sides of the exchange).
const WEIGHT_STATE: DataType = DataType::Decimal128(38, 0);

/// `n`, which must be a literal between 1 and MAX_PLACES.
fn places(args: &AccumulatorArgs) -> Result<usize> {
    let literal =
        args.exprs.get(2).and_then(|e| (e.as_ref() as &dyn std::any::Any).downcast_ref::<Literal>()).map(|l| l.value());
    match literal {
        Some(&ScalarValue::Int64(Some(n))) if (1..=MAX_PLACES).contains(&n) => Ok(n as usize),
        _ => plan_err!("top_values: n must be a literal integer from 1 to {MAX_PLACES}"),
    }
}

/// One group's best values so far, best first.
#[derive(Debug, Default)]
struct Top {
    entries: Vec<(i128, String)>,
}

impl Top {
    /// Heavier first; among equal weights, the smaller value first.
    fn rank(a: (i128, &str), b: (i128, &str)) -> Ordering {
        b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
    }

    fn offer(&mut self, weight: i128, value: &str, places: usize) {
        let at = self.entries.partition_point(|(w, v)| Top::rank((*w, v), (weight, value)) == Ordering::Less);
        if at >= places {
            return;
        }
        if self.entries.len() == places {
            self.entries.pop();
        } else if self.entries.capacity() == 0 {
            self.entries.reserve_exact(places.min(4)); // a Vec would start at 4 entries: 160 bytes
        }
        self.entries.insert(at, (weight, value.to_string()));
    }

    fn result(&self) -> Option<String> {
        if self.entries.is_empty() {
            return None;
        }
        Some(self.entries.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(", "))
    }

    /// Heap bytes of the entries.
    fn size(&self) -> usize {
        self.entries.capacity() * size_of::<(i128, String)>()
            + self.entries.iter().map(|(_, v)| v.capacity()).sum::<usize>()
    }
}

/// Each row's weight as an i128, None where the row does not count: a NULL value or weight, or
/// filtered out by the aggregate's FILTER clause.
fn weights(value: &ArrayRef, weight: &ArrayRef, filter: Option<&BooleanArray>) -> Result<Vec<Option<i128>>> {
    let weights: Vec<Option<i128>> = match weight.data_type() {
        DataType::Decimal128(_, _) => weight.as_primitive::<Decimal128Type>().iter().collect(),
        DataType::Int64 => weight.as_primitive::<Int64Type>().iter().map(|w| w.map(i128::from)).collect(),
        DataType::Null => vec![None; weight.len()],
        other => return exec_err!("top_values: unexpected weight type {other}"),
    };
    let counts = |row: usize| value.is_valid(row) && filter.is_none_or(|f| f.is_valid(row) && f.value(row));
    Ok(weights.into_iter().enumerate().map(|(row, w)| w.filter(|_| counts(row))).collect())
}

fn strings(array: &ArrayRef) -> Result<ArrayRef> {
    Ok(cast(array, &DataType::Utf8)?)
}

/// The per-group state as two list columns: values and their weights, best first.
fn state_arrays<'a>(tops: impl Iterator<Item = &'a Top>) -> Vec<ArrayRef> {
    let mut values = ListBuilder::new(StringBuilder::new());
    let mut weights = ListBuilder::new(Decimal128Builder::new().with_data_type(WEIGHT_STATE));
    for top in tops {
        for (weight, value) in &top.entries {
            values.values().append_value(value);
            weights.values().append_value(*weight);
        }
        values.append(true);
        weights.append(true);
    }
    vec![Arc::new(values.finish()), Arc::new(weights.finish())]
}

/// Feeds each state row's entries to `offer(row, weight, value)`.
fn merge_states(states: &[ArrayRef], mut offer: impl FnMut(usize, i128, &str)) -> Result<()> {
    let [values, weights] = states else {
        return exec_err!("top_values: expected 2 state columns, got {}", states.len());
    };
    let (values, weights): (&ListArray, &ListArray) = (values.as_list(), weights.as_list());
    // The flat children and the offsets: slicing each row's list would allocate twice per row.
    let (texts, amounts) = (values.values().as_string::<i32>(), weights.values().as_primitive::<Decimal128Type>());
    let rows = values.value_offsets().windows(2).zip(weights.value_offsets().windows(2));
    for (row, (v, w)) in rows.enumerate() {
        for (i, j) in (v[0] as usize..v[1] as usize).zip(w[0] as usize..w[1] as usize) {
            offer(row, amounts.value(j), texts.value(i));
        }
    }
    Ok(())
}

#[derive(Debug)]
struct TopAccumulator {
    top: Top,
    places: usize,
}

impl Accumulator for TopAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let value = strings(&values[0])?;
        let text = value.as_string::<i32>();
        for (row, weight) in weights(&value, &values[1], None)?.into_iter().enumerate() {
            if let Some(weight) = weight {
                self.top.offer(weight, text.value(row), self.places);
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        merge_states(states, |_, weight, value| self.top.offer(weight, value, self.places))
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        state_arrays(std::iter::once(&self.top)).iter().map(|a| ScalarValue::try_from_array(a, 0)).collect()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Utf8(self.top.result()))
    }

    fn size(&self) -> usize {
        size_of_val(self) + self.top.size()
    }
}

/// One `Top` per group index, and the heap bytes their entries hold (kept as they change:
/// `size` is asked once per batch and must not walk every group).
struct TopGroups {
    groups: Vec<Top>,
    places: usize,
    entry_bytes: usize,
}

impl TopGroups {
    fn offer(&mut self, group: usize, weight: i128, value: &str) {
        let top = &mut self.groups[group];
        let before = top.size();
        top.offer(weight, value, self.places);
        self.entry_bytes = self.entry_bytes + top.size() - before;
    }

    fn take(&mut self, emit_to: EmitTo) -> Vec<Top> {
        let taken = emit_to.take_needed(&mut self.groups);
        self.entry_bytes -= taken.iter().map(Top::size).sum::<usize>();
        taken
    }
}

impl GroupsAccumulator for TopGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, Top::default);
        let value = strings(&values[0])?;
        let text = value.as_string::<i32>();
        for (row, weight) in weights(&value, &values[1], opt_filter)?.into_iter().enumerate() {
            if let Some(weight) = weight {
                self.offer(group_indices[row], weight, text.value(row));
            }
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef], group_indices: &[usize], total_num_groups: usize) -> Result<()> {
        self.groups.resize_with(total_num_groups, Top::default);
        merge_states(states, |row, weight, value| self.offer(group_indices[row], weight, value))
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(Arc::new(self.take(emit_to).iter().map(Top::result).collect::<StringArray>()))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(state_arrays(self.take(emit_to).iter()))
    }

    fn convert_to_state(&self, values: &[ArrayRef], opt_filter: Option<&BooleanArray>) -> Result<Vec<ArrayRef>> {
        let value = strings(&values[0])?;
        let text = value.as_string::<i32>();
        // Each row its own group: one entry, or none where the row does not count.
        let tops: Vec<Top> = weights(&value, &values[1], opt_filter)?
            .into_iter()
            .enumerate()
            .map(|(row, weight)| Top {
                entries: weight.map(|w| (w, text.value(row).to_string())).into_iter().collect(),
            })
            .collect();
        Ok(state_arrays(tops.iter()))
    }

    fn size(&self) -> usize {
        self.groups.capacity() * size_of::<Top>() + self.entry_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(entries: &[(i128, &str)], places: usize) -> Option<String> {
        let mut top = Top::default();
        for (w, v) in entries {
            top.offer(*w, v, places);
        }
        top.result()
    }

    #[test]
    fn heavier_values_come_first_and_ties_go_to_the_smaller_value() {
        let offered = [(5, "b"), (9, "d"), (5, "a"), (1, "z"), (9, "c")];
        assert_eq!(top(&offered, 3).as_deref(), Some("c, d, a"));
        assert_eq!(top(&offered, 1).as_deref(), Some("c"));
        assert_eq!(top(&offered, 10).as_deref(), Some("c, d, a, b, z"));
        assert_eq!(top(&[], 3), None);
    }

    #[test]
    fn rows_are_ranked_not_distinct_values() {
        // Like row_number over the rows: a value on two rows takes two places.
        assert_eq!(top(&[(3, "x"), (3, "x"), (2, "y")], 2).as_deref(), Some("x, x"));
    }
}
