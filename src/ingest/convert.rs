//! Chunk of text records → Arrow batch of typed rows + rejects. Runs on worker threads; everything
//! that needs the order of the whole load (duplicate keys) happens later, in `sink`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
// hashbrown with foldhash: these sets are probed once or more per field of every row, where std's
// SipHash showed up in the ingest profile.
use datafusion::common::HashMap as FastMap;
use serde_json::value::RawValue;

use super::decode::{Decoder, EncodingEvidence};
use super::read::{Chunk, Fields, FileEnd, FileShape, RecordText};
use super::values::{FieldError, TextParser, Value, reason};
use crate::config::{ColumnType, Encoding, FileFormat, SourceContract};
use crate::key_rows::{KeyRows, KeyRun};

/// The keys of a referenced column: the xxh3-128 of each key's text (the chance of a false
/// match is that of `key_hash`), 16 bytes a key instead of a string each. The hashes lie in one
/// open-addressed table probed linearly from their low bits, so a lookup reads one cache line
/// (four slots), where a set of strings missed the cache on every key it compared and a
/// hashbrown set of the hashes read its control bytes, then its slot: two misses in a table of
/// a million keys.
pub struct KeySet {
    /// A power of two of slots (or none), at most five eighths full; 0 marks an empty slot.
    slots: Vec<u128>,
    len: usize,
    /// Whether the key whose hash is 0, which no slot can hold, is in the set.
    has_zero: bool,
    /// Tells sets apart in the per-thread memo of `contains` (an address could be reused).
    id: u64,
}

/// The count, not the table (millions of slots).
impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet").field("keys", &(self.len + usize::from(self.has_zero))).finish()
    }
}

impl Default for KeySet {
    fn default() -> Self {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        KeySet {
            slots: Vec::new(),
            len: 0,
            has_zero: false,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl KeySet {
    pub fn insert(&mut self, key_text: &str) {
        self.insert_hash(xxhash_rust::xxh3::xxh3_128(key_text.as_bytes()));
    }

    fn insert_hash(&mut self, hash: u128) {
        if hash == 0 {
            self.has_zero = true;
            return;
        }
        if (self.len + 1) * 8 > self.slots.len() * 5 {
            let capacity = (self.slots.len() * 2).max(1024);
            let old = std::mem::replace(&mut self.slots, vec![0; capacity]);
            for hash in old.into_iter().filter(|h| *h != 0) {
                place(&mut self.slots, hash);
            }
        }
        if place(&mut self.slots, hash) {
            self.len += 1;
        }
    }

    fn contains_hash(&self, hash: u128) -> bool {
        if hash == 0 {
            return self.has_zero;
        }
        if self.slots.is_empty() {
            return false;
        }
        let mask = self.slots.len() - 1;
        let mut slot = hash as usize & mask;
        loop {
            match self.slots[slot] {
                h if h == hash => return true,
                0 => return false,
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    /// Whether the key is in the set. The last key found on this thread is remembered: an
    /// extract lists an order's lines together, all naming one customer, and a lookup in a set of
    /// millions of keys misses the cache.
    pub fn contains(&self, key_text: &str) -> bool {
        thread_local! {
            static LAST_FOUND: std::cell::Cell<(u64, u128)> = const { std::cell::Cell::new((0, 0)) };
        }
        let hash = xxhash_rust::xxh3::xxh3_128(key_text.as_bytes());
        if LAST_FOUND.get() == (self.id, hash) {
            return true;
        }
        let found = self.contains_hash(hash);
        if found {
            LAST_FOUND.set((self.id, hash));
        }
        found
    }
}

/// Put a non-zero `hash` into the first free slot from its own; false if it is there already.
fn place(slots: &mut [u128], hash: u128) -> bool {
    let mask = slots.len() - 1;
    let mut slot = hash as usize & mask;
    loop {
        match slots[slot] {
            h if h == hash => return false,
            0 => {
                slots[slot] = hash;
                return true;
            }
            _ => slot = (slot + 1) & mask,
        }
    }
}

/// One rejected row: where it was, what was wrong, what it said.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub file: Arc<str>,
    pub line: u64,
    pub column: Option<String>,
    pub reason: &'static str,
    pub detail: String,
    pub raw: String,
}

/// The schema of `raw/<source>/`: the contract's columns, in contract order.
pub fn raw_schema(contract: &SourceContract) -> SchemaRef {
    let fields: Vec<Field> =
        contract.columns().map(|c| Field::new(&c.name, c.data_type.arrow_type(), c.nullable)).collect();
    Arc::new(Schema::new(fields))
}

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
                    rejects.push(Reject {
                        file: chunk.shape.file.clone(),
                        line: chunk.text.lines[record],
                        column,
                        reason: error.reason,
                        detail: error.detail,
                        raw: self.raw_text(chunk.text.raw(record)),
                    });
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

/// A key value as text, the form in which referenced keys are held.
pub fn key_text<'v>(value: &'v Value) -> Cow<'v, str> {
    match value {
        Value::Null => Cow::Borrowed(""),
        Value::Str(s) => Cow::Borrowed(s.as_ref()),
        Value::Int(i) => Cow::Owned(i.to_string()),
        Value::Decimal(d) => Cow::Owned(d.to_string()),
        Value::Date(d) => Cow::Owned(d.to_string()),
        Value::Timestamp(t) => Cow::Owned(t.to_string()),
        Value::Bool(b) => Cow::Owned(b.to_string()),
        Value::Float(f) => Cow::Owned(f.to_string()),
    }
}

/// 128 bits: the chance that two different keys of a 100M-row load collide is about 1e-23, so a
/// hash set of these stands in for a set of the keys themselves at a fraction of the memory (the
/// same holds for the referenced keys of a `KeySet`). The bytes hashed tell every two different
/// keys apart: each value is marked null or not, and a string carries its length.
fn key_hash<'v>(values: impl Iterator<Item = &'v Value<'v>>) -> u128 {
    let mut bytes = KeyBytes::default();
    for value in values {
        bytes.push(&[u8::from(!matches!(value, Value::Null))]);
        match value {
            Value::Null => {}
            Value::Str(s) => {
                bytes.push(&(s.len() as u64).to_le_bytes());
                bytes.push(s.as_bytes());
            }
            Value::Int(i) => bytes.push(&i.to_le_bytes()),
            Value::Decimal(d) => bytes.push(&d.to_le_bytes()),
            Value::Date(d) => bytes.push(&d.to_le_bytes()),
            Value::Timestamp(t) => bytes.push(&t.to_le_bytes()),
            Value::Bool(b) => bytes.push(&[*b as u8]),
            Value::Float(f) => bytes.push(&f.to_bits().to_le_bytes()),
        }
    }
    xxhash_rust::xxh3::xxh3_128(bytes.as_slice())
}

/// A row's key bytes: on the stack (a key is an id or two), on the heap only when longer. A
/// `Vec` per row was an allocation and a free per row of every load with a primary key.
struct KeyBytes {
    stack: [u8; 128],
    len: usize,
    heap: Option<Vec<u8>>,
}

impl Default for KeyBytes {
    fn default() -> Self {
        KeyBytes { stack: [0; 128], len: 0, heap: None }
    }
}

impl KeyBytes {
    fn push(&mut self, bytes: &[u8]) {
        match &mut self.heap {
            Some(heap) => heap.extend_from_slice(bytes),
            None if self.len + bytes.len() <= self.stack.len() => {
                self.stack[self.len..self.len + bytes.len()].copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.heap = Some([&self.stack[..self.len], bytes].concat()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        self.heap.as_deref().unwrap_or(&self.stack[..self.len])
    }
}

type JsonObject<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

fn parse_json_object(line: &[u8]) -> Result<JsonObject<'_>, FieldError> {
    let text = std::str::from_utf8(line).map_err(|e| {
        FieldError::new(reason::INVALID_ENCODING, format!("not valid UTF-8 at byte {}", e.valid_up_to()))
    })?;
    let Entries(mut entries) = serde_json::from_str(text)
        .map_err(|e| FieldError::new(reason::INVALID_JSON, format!("not a JSON object: {e}")))?;
    // Sorted by key, so the first unexpected key reported is the same whatever the field order;
    // a repeated key keeps its last value, as a JSON map would.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            earlier.1 = later.1;
        }
        same
    });
    Ok(entries)
}

/// A JSON object's entries in a Vec, keys borrowed from the line unless they hold escapes: a map
/// per record (and an owned String per key) was a fifth of the JSON-lines ingest in malloc/free.
struct Entries<'a>(JsonObject<'a>);

impl<'de> serde::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((JsonText(key), value)) = map.next_entry::<JsonText<'de>, &'de RawValue>()? {
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// A JSON string (a key or a value) borrowed from the line unless it holds escapes (serde's `borrow`
/// does the choosing).
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct JsonText<'a>(#[serde(borrow)] Cow<'a, str>);

/// A JSON scalar as field text: strings unescaped, numbers as written, `null` as no value.
fn json_scalar_text(raw: &RawValue) -> Result<Option<Cow<'_, str>>, FieldError> {
    let text = raw.get();
    match text.as_bytes().first() {
        // Borrowed from the line unless it holds escapes (a plain `Cow<str>` always allocates).
        Some(b'"') => serde_json::from_str::<JsonText>(text)
            .map(|JsonText(text)| Some(text))
            .map_err(|e| FieldError::new(reason::INVALID_JSON, e.to_string())),
        Some(b'n') => Ok(None),
        Some(b'{') | Some(b'[') => Err(FieldError::new(reason::INVALID_VALUE, format!("`{text}` is not a scalar"))),
        _ => Ok(Some(Cow::Borrowed(text))),
    }
}

enum ColumnBuilder {
    Str(StringBuilder),
    Int(Int64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Bool(BooleanBuilder),
    Float(Float64Builder),
}

impl ColumnBuilder {
    fn new(data_type: ColumnType, capacity: usize) -> Self {
        match data_type {
            ColumnType::String => ColumnBuilder::Str(StringBuilder::with_capacity(capacity, capacity * 8)),
            ColumnType::Int => ColumnBuilder::Int(Int64Builder::with_capacity(capacity)),
            ColumnType::Decimal { precision, scale } => {
                ColumnBuilder::Decimal(Decimal128Builder::with_capacity(capacity), precision, scale)
            }
            ColumnType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(capacity)),
            ColumnType::Timestamp => ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::with_capacity(capacity)),
            ColumnType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Float => ColumnBuilder::Float(Float64Builder::with_capacity(capacity)),
        }
    }

    fn append(&mut self, value: &Value) {
        match (self, value) {
            (ColumnBuilder::Str(b), Value::Str(s)) => b.append_value(s),
            (ColumnBuilder::Int(b), Value::Int(i)) => b.append_value(*i),
            (ColumnBuilder::Decimal(b, ..), Value::Decimal(d)) => b.append_value(*d),
            (ColumnBuilder::Date(b), Value::Date(d)) => b.append_value(*d),
            (ColumnBuilder::Timestamp(b), Value::Timestamp(t)) => b.append_value(*t),
            (ColumnBuilder::Bool(b), Value::Bool(v)) => b.append_value(*v),
            (ColumnBuilder::Float(b), Value::Float(v)) => b.append_value(*v),
            (ColumnBuilder::Float(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Str(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Int(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Decimal(b, ..), Value::Null) => b.append_null(),
            (ColumnBuilder::Date(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Timestamp(b), Value::Null) => b.append_null(),
            (ColumnBuilder::Bool(b), Value::Null) => b.append_null(),
            _ => unreachable!("values are parsed for their column's type"),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            ColumnBuilder::Str(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Int(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Decimal(mut b, precision, scale) => {
                Arc::new(b.finish().with_precision_and_scale(precision, scale).expect("validated precision and scale"))
            }
            ColumnBuilder::Date(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(mut b) => Arc::new(b.finish().with_timezone("UTC")),
            ColumnBuilder::Bool(mut b) => Arc::new(b.finish()),
            ColumnBuilder::Float(mut b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_remembered_as_found_in_one_set_is_not_found_in_another() {
        let (mut customers, mut suppliers) = (KeySet::default(), KeySet::default());
        customers.insert("C1");
        suppliers.insert("S1");
        for _ in 0..2 {
            assert!(customers.contains("C1"));
            assert!(!suppliers.contains("C1"));
            assert!(!customers.contains("S1"));
            assert!(suppliers.contains("S1"));
        }
    }

    #[test]
    fn the_key_table_finds_what_was_inserted_through_collisions_and_growth() {
        let mut keys = KeySet::default();
        // Hashes sharing their low bits probe past each other; 0 has no slot of its own.
        let colliding: Vec<u128> = (1..=40u128).map(|i| i << 64).collect();
        for &h in colliding.iter().chain(&[0]) {
            keys.insert_hash(h);
        }
        let spread: Vec<u128> =
            (1..=5_000u128).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)).collect();
        for &h in spread.iter().chain(&colliding) {
            keys.insert_hash(h);
        }
        assert_eq!(keys.len, colliding.len() + spread.len(), "repeated inserts keep one slot");
        assert!(keys.slots.len().is_power_of_two() && keys.len * 8 <= keys.slots.len() * 5);
        assert!(colliding.iter().chain(&spread).chain(&[0]).all(|h| keys.contains_hash(*h)));
        assert!(!keys.contains_hash(41 << 64) && !keys.contains_hash(7));
        assert!(!KeySet::default().contains_hash(0) && !KeySet::default().contains_hash(5));
    }

    #[test]
    fn json_objects_are_sorted_by_key_and_a_repeated_key_keeps_its_last_value() {
        let entries = parse_json_object(br#"{"b":1,"a\u0062":"x","a":2,"b":[3]}"#).unwrap();
        let seen: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_ref(), v.get())).collect();
        assert_eq!(seen, [("a", "2"), ("ab", "\"x\""), ("b", "[3]")]);
        assert!(matches!(entries[0].0, Cow::Borrowed(_)), "plain keys are borrowed from the line");
        assert_eq!(parse_json_object(b"[1]").unwrap_err().reason, reason::INVALID_JSON);
    }

    #[test]
    fn json_strings_are_unescaped_and_borrowed_when_they_need_no_unescaping() {
        fn text(json: &str) -> Option<Cow<'_, str>> {
            json_scalar_text(serde_json::from_str::<&RawValue>(json).unwrap()).unwrap()
        }
        let plain = text(r#""DHL 顺丰""#).unwrap();
        assert_eq!(plain, "DHL 顺丰");
        assert!(matches!(plain, Cow::Borrowed(_)), "a string without escapes is borrowed from the line");
        assert_eq!(text(r#""a\"b\nc\u00e9""#).unwrap(), "a\"b\nc\u{e9}");
        assert_eq!(text("12.50").unwrap(), "12.50");
        assert_eq!(text("null"), None);
        let nested = serde_json::from_str::<&RawValue>("[1]").unwrap();
        assert_eq!(json_scalar_text(nested).unwrap_err().reason, reason::INVALID_VALUE);
    }
}
