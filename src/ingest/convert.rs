//! Chunk of text records → Arrow batch of typed rows + rejects. Runs on worker threads; everything
//! that needs the order of the whole load (duplicate keys) happens later, in `sink`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
// hashbrown with foldhash: these sets are probed once or more per field of every row, where std's
// SipHash showed up in the ingest profile (BENCHMARKS.md).
use datafusion::common::HashMap as FastMap;
use serde_json::value::RawValue;

use super::columns::{ColumnBuilder, raw_schema};
use super::decode::{Decoder, EncodingEvidence};
use super::json::{json_scalar_text, parse_json_object};
use super::key_hash::{key_hash, key_text};
use super::key_set::KeySet;
use super::read::{Chunk, Fields, FileEnd, FileShape, RecordText};
use super::reject::Reject;
use super::values::{FieldError, TextParser, Value};
use crate::config::contract::reason;
use crate::config::{ColumnType, Encoding, FileFormat, SourceContract};
use crate::key_rows::{KeyRows, KeyRun};

struct ColumnPlan {
    name: String,
    data_type: ColumnType,
    nullable: bool,
    /// The accepted values, sorted: a contract lists a handful, and comparing a field with each
    /// (most differ in length or first byte) costs less than hashing it.
    accepted: Option<Vec<String>>,
    min: Option<f64>,
    max: Option<f64>,
    /// `min` and `max` of a decimal column in its unscaled integers, when they are whole there:
    /// compared without turning every value into a float.
    unscaled_bounds: Option<(Option<i128>, Option<i128>)>,
    /// The referenced keys and how to name them (`erp_customers.customer_id`).
    reference: Option<(Arc<KeySet>, String)>,
}

/// A converted chunk.
pub struct Converted {
    pub seq: usize,
    pub file_index: usize,
    pub shape: Arc<FileShape>,
    pub batch: RecordBatch,
    /// Hash of each batch row's primary key (empty without a primary key).
    pub key_hashes: Vec<u128>,
    /// How the batch's rows stand on the primary key (None without rows or a comparable key): when
    /// every key comes after the one before it (an extract sorted by its key), none repeats, and
    /// the sink needs no set lookup per row to know it.
    pub key_run: Option<KeyRun>,
    /// Record index (in `text`) of each batch row.
    pub row_records: Vec<u32>,
    pub text: RecordText,
    pub rejects: Vec<Reject>,
    pub encoding_rejects: u64,
    pub evidence: EncodingEvidence,
    pub end_of_file: Option<FileEnd>,
}

pub struct Converter {
    columns: Vec<ColumnPlan>,
    parser: TextParser,
    decoder: Decoder,
    key_columns: Vec<usize>,
    /// The primary key as comparable rows (None without one, or with a floating-point column).
    key_rows: Option<KeyRows>,
    /// JSON key → contract column.
    json_fields: FastMap<String, usize>,
    schema: SchemaRef,
    watch_encoding: bool,
}

impl Converter {
    /// `references` holds the key sets of the sources this contract references, by `source.column`.
    pub fn new(contract: &SourceContract, references: &HashMap<String, Arc<KeySet>>) -> Converter {
        let columns = contract
            .columns()
            .map(|c| ColumnPlan {
                name: c.name.clone(),
                data_type: c.data_type,
                nullable: c.nullable,
                accepted: c.accepted_values.as_ref().map(|v| {
                    let mut values = v.value.clone();
                    values.sort_unstable();
                    values.dedup();
                    values
                }),
                min: c.min.as_ref().map(|m| m.value),
                max: c.max.as_ref().map(|m| m.value),
                unscaled_bounds: unscaled_bounds(
                    c.data_type,
                    c.min.as_ref().map(|m| m.value),
                    c.max.as_ref().map(|m| m.value),
                ),
                reference: c.references.as_ref().and_then(|r| {
                    let name = r.value.to_string();
                    references.get(&name).map(|keys| (keys.clone(), name))
                }),
            })
            .collect();
        let encoding = match contract.format {
            FileFormat::Csv => contract.csv_options().encoding,
            FileFormat::Jsonl | FileFormat::Xlsx => Encoding::Utf8,
        };
        let schema = raw_schema(contract);
        Converter {
            columns,
            parser: TextParser::new(&contract.values),
            decoder: Decoder::new(encoding),
            key_columns: contract.primary_key.value.iter().filter_map(|k| contract.column_index(k)).collect(),
            key_rows: KeyRows::new(&schema, &contract.primary_key.value),
            json_fields: contract.columns().enumerate().map(|(i, c)| (c.field_name().to_string(), i)).collect(),
            schema,
            watch_encoding: encoding != Encoding::Utf8,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn decoder(&self) -> Decoder {
        self.decoder
    }

    pub fn convert(&self, chunk: Chunk) -> Converted {
        let n = chunk.text.len();
        let mut builders: Vec<ColumnBuilder> =
            self.columns.iter().map(|c| ColumnBuilder::new(c.data_type, n)).collect();
        let mut key_hashes = Vec::with_capacity(if self.key_columns.is_empty() { 0 } else { n });
        let mut row_records = Vec::with_capacity(n);
        let mut rejects = Vec::new();
        let mut encoding_rejects = 0;
        let mut evidence = EncodingEvidence::default();
        let mut problems = chunk.text.problems.iter().peekable();
        let mut row: Vec<Value> = Vec::with_capacity(self.columns.len());

        for record in 0..n {
            if self.watch_encoding {
                evidence.observe(chunk.text.raw(record));
            }
            let reader_problem = problems.next_if(|(i, _)| *i == record).map(|(_, p)| (None, p.clone()));
            let outcome = match (reader_problem, &chunk.fields) {
                (Some(problem), _) => Err(problem),
                (None, Fields::Split { .. }) => {
                    row.clear();
                    self.split_record(&chunk, record, &mut row)
                        .map(|()| self.append_row(&row, &mut builders, &mut key_hashes))
                }
                (None, Fields::Json) => match parse_json_object(chunk.text.raw(record)) {
                    Ok(object) => {
                        // Values borrow from this record's parsed object, so the row is its own.
                        let mut json_row = Vec::with_capacity(self.columns.len());
                        self.json_record(&object, &mut json_row)
                            .map(|()| self.append_row(&json_row, &mut builders, &mut key_hashes))
                    }
                    Err(e) => Err((None, e)),
                },
            };
            match outcome {
                Ok(()) => row_records.push(record as u32),
                Err((column, error)) => {
                    if error.reason == reason::INVALID_ENCODING {
                        encoding_rejects += 1;
                    }
                    rejects.push(Reject::new(
                        chunk.shape.file.clone(),
                        chunk.text.lines[record],
                        column,
                        error.reason,
                        error.detail,
                        self.raw_text(chunk.text.raw(record)),
                    ));
                }
            }
        }
        let arrays: Vec<ArrayRef> = builders.into_iter().map(ColumnBuilder::finish).collect();
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).expect("builders follow the schema");
        // A key the row format cannot convert is only checked the slower way, by the set.
        let key_run = self.key_rows.as_ref().and_then(|rows| rows.run(&batch).ok().flatten());
        Converted {
            seq: chunk.seq,
            file_index: chunk.file_index,
            shape: chunk.shape,
            batch,
            key_hashes,
            key_run,
            row_records,
            text: chunk.text,
            rejects,
            encoding_rejects,
            evidence,
            end_of_file: chunk.end_of_file,
        }
    }

    fn append_row(&self, row: &[Value], builders: &mut [ColumnBuilder], key_hashes: &mut Vec<u128>) {
        for (builder, value) in builders.iter_mut().zip(row) {
            builder.append(value);
        }
        if !self.key_columns.is_empty() {
            key_hashes.push(key_hash(self.key_columns.iter().map(|&k| &row[k])));
        }
    }

    /// The raw text of a record for the rejects file: decoded when possible, else with U+FFFD.
    pub fn raw_text(&self, raw: &[u8]) -> String {
        match self.decoder.decode(raw) {
            Some(text) => text.into_owned(),
            None => match self.decoder.encoding() {
                Encoding::Utf8 => String::from_utf8_lossy(raw).into_owned(),
                Encoding::Gbk => encoding_rs::GBK.decode_without_bom_handling(raw).0.into_owned(),
                Encoding::Gb18030 => encoding_rs::GB18030.decode_without_bom_handling(raw).0.into_owned(),
            },
        }
    }

    fn split_record<'a>(
        &self,
        chunk: &'a Chunk,
        record: usize,
        row: &mut Vec<Value<'a>>,
    ) -> Result<(), (Option<String>, FieldError)> {
        let fields = chunk.split_record(record);
        let record_is_text = self.decoder.record_is_text(chunk.text.raw(record));
        for (plan, position) in self.columns.iter().zip(&chunk.shape.positions) {
            let bytes = position.map_or(&b""[..], |p| fields.field(p));
            let text = self.decoder.decode_field(bytes, record_is_text).ok_or_else(|| {
                let shown = String::from_utf8_lossy(bytes).into_owned();
                (
                    Some(plan.name.clone()),
                    FieldError::new(
                        reason::INVALID_ENCODING,
                        format!("`{shown}` is not valid {}", self.decoder.encoding()),
                    ),
                )
            })?;
            let value = self.value(plan, text)?;
            row.push(value);
        }
        Ok(())
    }

    fn json_record<'a>(
        &self,
        object: &'a [(Cow<'a, str>, &'a RawValue)],
        row: &mut Vec<Value<'a>>,
    ) -> Result<(), (Option<String>, FieldError)> {
        let mut texts: Vec<Option<Cow<'a, str>>> = vec![None; self.columns.len()];
        for (key, raw) in object {
            let column = *self.json_fields.get(key.as_ref()).ok_or_else(|| {
                (
                    Some(key.to_string()),
                    FieldError::new(reason::UNEXPECTED_FIELD, format!("key `{key}` is not in the contract")),
                )
            })?;
            texts[column] = json_scalar_text(raw).map_err(|e| (Some(self.columns[column].name.clone()), e))?;
        }
        for (plan, text) in self.columns.iter().zip(texts) {
            let value = match text {
                Some(text) => self.value(plan, text)?,
                None => no_value(plan)?,
            };
            row.push(value);
        }
        Ok(())
    }

    /// Type and check one field's text against its column.
    fn value<'a>(&self, plan: &ColumnPlan, text: Cow<'a, str>) -> Result<Value<'a>, (Option<String>, FieldError)> {
        let fail = |e: FieldError| (Some(plan.name.clone()), e);
        let prepared: Option<Cow<'a, str>> = match text {
            Cow::Borrowed(t) => self.parser.prepare(t).map(Cow::Borrowed),
            Cow::Owned(t) => self.parser.prepare(&t).map(|p| Cow::Owned(p.to_string())),
        };
        let Some(text) = prepared else {
            return no_value(plan);
        };
        let value = match text {
            Cow::Borrowed(t) => self.parser.parse(t, plan.data_type),
            Cow::Owned(t) => self.parser.parse(&t, plan.data_type).map(|v| match v {
                Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
                other => other.into_owned(),
            }),
        }
        .map_err(fail)?;
        self.check(plan, &value).map_err(fail)?;
        Ok(value)
    }

    fn check(&self, plan: &ColumnPlan, value: &Value) -> Result<(), FieldError> {
        if let (Some(accepted), Value::Str(s)) = (&plan.accepted, value)
            && !accepted.iter().any(|a| a == s)
        {
            return Err(FieldError::new(reason::NOT_ACCEPTED, format!("`{s}` is not one of {}", accepted.join(", "))));
        }
        if plan.min.is_some() || plan.max.is_some() {
            let number = match (value, plan.data_type) {
                (Value::Int(i), _) => Some(*i as f64),
                (Value::Decimal(d), ColumnType::Decimal { scale, .. }) => match plan.unscaled_bounds {
                    Some((min, max)) if min.is_none_or(|m| *d >= m) && max.is_none_or(|m| *d <= m) => None,
                    _ => Some(*d as f64 / 10f64.powi(scale as i32)),
                },
                (Value::Float(f), _) => Some(*f),
                _ => None,
            };
            if let Some(x) = number {
                if let Some(min) = plan.min.filter(|m| x < *m) {
                    return Err(FieldError::new(
                        reason::OUT_OF_RANGE,
                        format!("{} {x} is below the minimum {min}", plan.name),
                    ));
                }
                if let Some(max) = plan.max.filter(|m| x > *m) {
                    return Err(FieldError::new(
                        reason::OUT_OF_RANGE,
                        format!("{} {x} is above the maximum {max}", plan.name),
                    ));
                }
            }
        }
        if let Some((keys, target)) = &plan.reference {
            let key = key_text(value);
            if !key.is_empty() && !keys.contains(key.as_ref()) {
                return Err(FieldError::new(reason::UNKNOWN_REFERENCE, format!("`{key}` is not in {target}")));
            }
        }
        Ok(())
    }
}

/// A decimal column's bounds as unscaled integers (`min: 0` of a `decimal(5,4)` is 0, `max: 1`
/// is 10000), when both that exist are whole numbers there; None otherwise (then values are
/// compared as floats).
fn unscaled_bounds(data_type: ColumnType, min: Option<f64>, max: Option<f64>) -> Option<(Option<i128>, Option<i128>)> {
    let ColumnType::Decimal { scale, .. } = data_type else { return None };
    let unscaled = |bound: f64| {
        let scaled = bound * 10f64.powi(scale as i32);
        (scaled.fract() == 0.0 && scaled.abs() < 2f64.powi(52)).then_some(scaled as i128)
    };
    // An absent bound stays absent; a bound that is not whole gives up on both.
    let whole = |bound: Option<f64>| bound.map(|b| unscaled(b).ok_or(())).transpose().ok();
    Some((whole(min)?, whole(max)?))
}

/// A field with no value: null where the column allows it.
fn no_value<'a>(plan: &ColumnPlan) -> Result<Value<'a>, (Option<String>, FieldError)> {
    if plan.nullable {
        Ok(Value::Null)
    } else {
        Err((
            Some(plan.name.clone()),
            FieldError::new(reason::MISSING_VALUE, format!("`{}` must have a value", plan.name)),
        ))
    }
}

impl Value<'_> {
    fn into_owned(self) -> Value<'static> {
        match self {
            Value::Null => Value::Null,
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Int(i) => Value::Int(i),
            Value::Decimal(d) => Value::Decimal(d),
            Value::Date(d) => Value::Date(d),
            Value::Timestamp(t) => Value::Timestamp(t),
            Value::Bool(b) => Value::Bool(b),
            Value::Float(f) => Value::Float(f),
        }
    }
}
