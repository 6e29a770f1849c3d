//! The models as SQL functions, registered wherever keymart runs SQL:
//!
//! | function | kind | result |
//! |---|---|---|
//! | `bgnbd_fit(x, t_x, T)` | aggregate | `{r, alpha, a, b, ll, n}` |
//! | `bgnbd_p_alive(r, alpha, a, b, x, t_x, T)` | scalar | probability |
//! | `bgnbd_expected_purchases(r, alpha, a, b, x, t_x, T, t)` | scalar | expected purchases in the next t weeks |
//! | `gamma_gamma_fit(x, m)` | aggregate | `{p, q, v, ll, n}` |
//! | `gamma_gamma_expected_spend(p, q, v, x, m)` | scalar | expected spend per purchase |
//!
//! A fit that the data cannot support gives NULL parameters; every scalar function gives NULL
//! (never NaN) when an input is NULL or the value is not finite.

use std::collections::HashMap;
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3Builder;

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, Float64Array, Float64Builder, Int64Array, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};

use super::bgnbd::{self, BgNbd};
use super::gamma_gamma::{self, GammaGamma};

/// Every scalar function keymart adds to SQL.
pub fn scalar_functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(ModelFunction::new("bgnbd_p_alive", 7, |v| {
            BgNbd { r: v[0], alpha: v[1], a: v[2], b: v[3] }.p_alive(v[4], v[5], v[6])
        })),
        ScalarUDF::from(ModelFunction::new("bgnbd_expected_purchases", 8, |v| {
            BgNbd { r: v[0], alpha: v[1], a: v[2], b: v[3] }.expected_purchases(v[4], v[5], v[6], v[7])
        })),
        ScalarUDF::from(ModelFunction::new("gamma_gamma_expected_spend", 5, |v| {
            GammaGamma { p: v[0], q: v[1], v: v[2] }.expected_spend(v[3], v[4])
        })),
    ]
}

/// Every aggregate function keymart adds to SQL.
pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![AggregateUDF::from(FitFunction::bgnbd()), AggregateUDF::from(FitFunction::gamma_gamma())]
}

/// A scalar function of Float64 arguments computed row by row.
#[derive(Debug)]
struct ModelFunction {
    name: &'static str,
    signature: Signature,
    compute: fn(&[f64]) -> f64,
}

// Functions are told apart by name (function pointers have no meaningful equality).
impl PartialEq for ModelFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ModelFunction {}

impl std::hash::Hash for ModelFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ModelFunction {
    fn new(name: &'static str, arguments: usize, compute: fn(&[f64]) -> f64) -> ModelFunction {
        ModelFunction {
            name,
            signature: Signature::uniform(arguments, vec![DataType::Float64], Volatility::Immutable),
            compute,
        }
    }
}

impl ScalarUDFImpl for ModelFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let columns: Vec<&Float64Array> =
            arrays.iter().map(|a| a.as_any().downcast_ref::<Float64Array>().expect("coerced to Float64")).collect();
        let rows = args.number_rows;
        let mut out = Float64Builder::with_capacity(rows);
        let mut values = vec![0.0; columns.len()];
        for row in 0..rows {
            if columns.iter().any(|c| c.is_null(row)) {
                out.append_null();
                continue;
            }
            for (value, column) in values.iter_mut().zip(&columns) {
                *value = column.value(row);
            }
            let result = (self.compute)(&values);
            if result.is_finite() { out.append_value(result) } else { out.append_null() }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// Which model an aggregate fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Model {
    BgNbd,
    GammaGamma,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FitFunction {
    name: &'static str,
    model: Model,
    signature: Signature,
}

impl FitFunction {
    fn bgnbd() -> FitFunction {
        FitFunction {
            name: "bgnbd_fit",
            model: Model::BgNbd,
            signature: Signature::uniform(3, vec![DataType::Float64], Volatility::Immutable),
        }
    }

    fn gamma_gamma() -> FitFunction {
        FitFunction {
            name: "gamma_gamma_fit",
            model: Model::GammaGamma,
            signature: Signature::uniform(2, vec![DataType::Float64], Volatility::Immutable),
        }
    }

    fn parameter_names(&self) -> &'static [&'static str] {
        match self.model {
            Model::BgNbd => &["r", "alpha", "a", "b"],
            Model::GammaGamma => &["p", "q", "v"],
        }
    }

    fn fields(&self) -> Fields {
        let mut fields: Vec<Field> =
            self.parameter_names().iter().map(|n| Field::new(*n, DataType::Float64, true)).collect();
        fields.push(Field::new("ll", DataType::Float64, true));
        fields.push(Field::new("n", DataType::Int64, false));
        Fields::from(fields)
    }
}

impl AggregateUDFImpl for FitFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.fields()))
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let groups = HashMap::with_hasher(Xxh3Builder::new());
        Ok(Box::new(FitAccumulator { model: self.model, fields: self.fields(), groups }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(format!("{}[observations]", args.name), DataType::Binary, true))])
    }
}

/// Collects the observations, grouped: identical rows count once with a weight. The state
/// between partitions is the grouped observations, packed as little-endian f64s.
#[derive(Debug)]
struct FitAccumulator {
    model: Model,
    fields: Fields,
    /// Observation (as f64 bit patterns, unused places 0) → number of customers.
    groups: HashMap<Observation, f64, Xxh3Builder>,
}

/// One customer's arguments: at most three (x, t_x, T), fixed-size so that a million customers
/// cost no allocation each.
type Observation = [u64; 3];

impl FitAccumulator {
    fn add(&mut self, key: Observation, count: f64) {
        *self.groups.entry(key).or_default() += count;
    }

    fn encode(&self) -> Vec<u8> {
        let arity = self.arity();
        let mut bytes = Vec::with_capacity(self.groups.len() * (arity + 1) * 8);
        // In any order: `fit` sorts the merged observations, and the counts are whole numbers.
        for (key, count) in &self.groups {
            for bits in &key[..arity] {
                bytes.extend_from_slice(&bits.to_le_bytes());
            }
            bytes.extend_from_slice(&count.to_le_bytes());
        }
        bytes
    }

    fn arity(&self) -> usize {
        match self.model {
            Model::BgNbd => 3,
            Model::GammaGamma => 2,
        }
    }

    /// The fitted parameters, ll and n; parameters and ll are None without a fit.
    fn fit(&self) -> (Option<Vec<f64>>, Option<f64>, i64) {
        // Sorted so the optimiser sees the same order every time: same data, same bits.
        let mut rows: Vec<([f64; 3], f64)> = self.groups.iter().map(|(k, c)| (k.map(f64::from_bits), *c)).collect();
        rows.sort_unstable_by(|a, b| {
            a.0.iter().zip(&b.0).map(|(x, y)| x.total_cmp(y)).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
        });
        let n = rows.iter().map(|(_, c)| c).sum::<f64>() as i64;
        match self.model {
            Model::BgNbd => {
                let groups: Vec<bgnbd::Group> =
                    rows.iter().map(|(v, c)| bgnbd::Group { x: v[0], t_x: v[1], t: v[2], count: *c }).collect();
                match bgnbd::fit(&groups) {
                    Some(f) => (Some(vec![f.params.r, f.params.alpha, f.params.a, f.params.b]), Some(f.ll), n),
                    None => (None, None, n),
                }
            }
            Model::GammaGamma => {
                let data: Vec<(f64, f64)> =
                    rows.iter().flat_map(|(v, c)| std::iter::repeat_n((v[0], v[1]), *c as usize)).collect();
                let repeat_buyers = data.iter().filter(|(x, m)| *x > 0.0 && *m > 0.0).count() as i64;
                match gamma_gamma::fit(&data) {
                    Some(f) => (Some(vec![f.params.p, f.params.q, f.params.v]), Some(f.ll), f.n as i64),
                    None => (None, None, repeat_buyers),
                }
            }
        }
    }
}

impl Accumulator for FitAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let columns: Vec<&Float64Array> =
            values.iter().map(|a| a.as_any().downcast_ref::<Float64Array>().expect("coerced to Float64")).collect();
        for row in 0..columns[0].len() {
            if columns.iter().any(|c| c.is_null(row) || !c.value(row).is_finite()) {
                continue;
            }
            let mut key = [0; 3];
            for (place, column) in key.iter_mut().zip(&columns) {
                *place = column.value(row).to_bits();
            }
            self.add(key, 1.0);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        tracing::debug!("{:?} fit: {} distinct observations", self.model, self.groups.len());
        let (params, ll, n) = self.fit();
        let parameters = self.fields.len() - 2;
        let mut columns: Vec<ArrayRef> = (0..parameters)
            .map(|i| Arc::new(Float64Array::from(vec![params.as_ref().map(|p| p[i])])) as ArrayRef)
            .collect();
        columns.push(Arc::new(Float64Array::from(vec![ll])));
        columns.push(Arc::new(Int64Array::from(vec![n])));
        Ok(ScalarValue::Struct(Arc::new(StructArray::new(self.fields.clone(), columns, None))))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.groups.capacity() * (std::mem::size_of::<(Observation, f64)>() + 8)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.encode()))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let packed = states[0].as_any().downcast_ref::<BinaryArray>().expect("binary state");
        let width = self.arity() + 1;
        for bytes in packed.iter().flatten() {
            for record in bytes.chunks_exact(width * 8) {
                let words: Vec<u64> =
                    record.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes"))).collect();
                let mut key = [0; 3];
                key[..width - 1].copy_from_slice(&words[..width - 1]);
                self.add(key, f64::from_bits(words[width - 1]));
            }
        }
        Ok(())
    }
}
