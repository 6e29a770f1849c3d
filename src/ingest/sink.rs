//! The ordered end of a load: duplicate keys, per-file counts, file-level verdicts, and the two
//! Parquet files (rows, rejects) being written.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, Int64Builder, StringBuilder};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::HashSet;
use object_store::path::Path;
use serde::Serialize;

use super::convert::{Converted, Converter};
use super::decode::EncodingEvidence;
use super::read::FileError;
use super::reject::Reject;
use crate::config::contract::reason;
use crate::config::{Encoding, SourceContract};
use crate::error::Result;
use crate::key_rows::KeyRun;
use crate::warehouse::Location;
use crate::warehouse::parquet::{ParquetFile, WrittenFile};

/// Counts for one landing file: `rows_read = rows_loaded + rows_rejected` always.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FileCounts {
    pub file: String,
    pub bytes: u64,
    pub rows_read: u64,
    pub rows_loaded: u64,
    pub rows_rejected: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    encoding_rejects: u64,
    #[serde(skip)]
    evidence: EncodingEvidence,
}

/// The schema of `rejects/<source>/`.
pub fn rejects_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("column", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, false),
        Field::new("raw", DataType::Utf8, false),
    ]))
}

pub struct LoadSink<'c> {
    converter: &'c Converter,
    key_names: Vec<String>,
    rows: ParquetFile,
    rejects: ParquetFile,
    seen_keys: SeenKeys,
    /// Bytes of all the load's files, to size `seen_keys` once.
    load_bytes: u64,
    /// The keys the load is expected to hold, estimated from its first chunk.
    expected_keys: Option<usize>,
    /// `max_rows` of a file times the files: no more keys than that can come.
    max_keys: u64,
    pub files: Vec<FileCounts>,
    pub file_errors: Vec<FileError>,
    pub rejects_by_reason: BTreeMap<String, u64>,
}

/// The most keys a load's set is sized for before it has seen them (a set of 16-byte hashes,
/// half a GiB at this size): above it, the set grows as keys come.
const MAX_PRESIZED_KEYS: u64 = 1 << 25;

/// The primary keys of the load so far, as xxh3-128 hashes.
enum SeenKeys {
    /// Every key so far was greater than the one before it (the extract is sorted by its key), so
    /// none has repeated. Their hashes are kept in order, which costs less than a set's insert
    /// per row (a cache miss in a table of millions), for the set to be built from if a key ever
    /// comes out of order.
    Ascending { seen: Option<KeyRun>, hashes: Vec<u128> },
    /// In hashbrown (foldhash): std's SipHash showed in the orders ingest's profile.
    Set(HashSet<u128>),
}

impl SeenKeys {
    /// Which of `hashes` (a batch's keys, in order) are seen for the first time; None when all
    /// are. `expected` is how many keys the whole load is expected to hold.
    fn first_seen(&mut self, hashes: &[u128], run: Option<KeyRun>, expected: usize) -> Option<Vec<bool>> {
        if let SeenKeys::Ascending { seen, hashes: kept } = self {
            let so_far = match (seen.take(), run) {
                (Some(before), Some(run)) => Some(before.then(run)),
                (None, run) => run,
                (Some(_), None) => None,
            };
            match so_far {
                Some(so_far) if so_far.ascends() => {
                    kept.reserve(expected.saturating_sub(kept.len()).max(hashes.len()));
                    kept.extend_from_slice(hashes);
                    *seen = Some(so_far);
                    return None;
                }
                _ => {
                    let mut set = HashSet::with_capacity(expected.max(kept.len() + hashes.len()));
                    set.extend(kept.drain(..));
                    *self = SeenKeys::Set(set);
                }
            }
        }
        let SeenKeys::Set(set) = self else { unreachable!("a load whose keys came out of order has a set") };
        let keep: Vec<bool> = hashes.iter().map(|h| set.insert(*h)).collect();
        keep.iter().any(|k| !k).then_some(keep)
    }
}

pub struct SinkOutput {
    pub rows: WrittenFile,
    pub rejects: WrittenFile,
}

impl<'c> LoadSink<'c> {
    pub fn create(
        converter: &'c Converter,
        contract: &SourceContract,
        location: &Location,
        rows_key: Path,
        rejects_key: Path,
        files: Vec<(String, u64)>,
        max_rows_per_file: u64,
    ) -> Result<Self> {
        let plain_columns = contract.mostly_distinct_columns();
        Ok(LoadSink {
            converter,
            key_names: contract.primary_key.value.clone(),
            rows: ParquetFile::create(location, rows_key, converter.schema(), &plain_columns)?,
            rejects: ParquetFile::create(location, rejects_key, rejects_schema(), &[])?,
            seen_keys: SeenKeys::Ascending { seen: None, hashes: Vec::new() },
            load_bytes: files.iter().map(|(_, bytes)| bytes).sum(),
            expected_keys: None,
            max_keys: max_rows_per_file.saturating_mul(files.len() as u64),
            files: files.into_iter().map(|(file, bytes)| FileCounts { file, bytes, ..Default::default() }).collect(),
            file_errors: Vec::new(),
            rejects_by_reason: BTreeMap::new(),
        })
    }

    pub fn accept(&mut self, converted: Converted) -> Result<()> {
        let Converted { file_index, shape, batch, key_hashes, key_run, row_records, text, mut rejects, .. } = converted;
        let mut batch = batch;
        if !key_hashes.is_empty() {
            if self.expected_keys.is_none() && !text.raw.is_empty() {
                // Size the keys for the whole load from the first chunk's rows per byte: a set
                // grown by doubling holds the old and the new table at once. Compressed files
                // (Excel) underestimate, and then it still grows; a first chunk of unusually short
                // rows overestimates, so no more than a row per 8 bytes is assumed.
                // The files' sizes come from the store's listing, which a sparse file can make
                // anything: the estimate sizes nothing beyond `MAX_PRESIZED_KEYS` (or the rows
                // the files may hold); a larger load grows its set as it comes.
                let rows_per_byte = (text.len() as f64 / text.raw.len() as f64).min(1.0 / 8.0);
                let estimate = (self.load_bytes as f64 * rows_per_byte) as u64;
                let cap = self.max_keys.min(MAX_PRESIZED_KEYS);
                self.expected_keys = Some(usize::try_from(estimate.min(cap)).unwrap_or(0));
            }
            let expected = self.expected_keys.unwrap_or(0);
            if let Some(keep) = self.seen_keys.first_seen(&key_hashes, key_run, expected) {
                for (row, _) in keep.iter().enumerate().filter(|(_, k)| !**k) {
                    let record = row_records[row] as usize;
                    rejects.push(Reject::new(
                        shape.file.clone(),
                        text.lines[record],
                        None,
                        reason::DUPLICATE_KEY,
                        format!("{} appears earlier in this load", self.key_description(&batch, row)),
                        self.converter.raw_text(text.raw(record)),
                    ));
                }
                rejects.sort_by_key(|r| r.line);
                batch = filter_record_batch(&batch, &BooleanArray::from(keep))
                    .map_err(|e| crate::error::Error::arrow("dropping duplicate keys", e))?;
            }
        }

        let counts = &mut self.files[file_index];
        counts.rows_read += text.len() as u64;
        counts.rows_loaded += batch.num_rows() as u64;
        counts.rows_rejected += rejects.len() as u64;
        counts.encoding_rejects += converted.encoding_rejects;
        counts.evidence.add(converted.evidence);
        for r in &rejects {
            *self.rejects_by_reason.entry(r.reason.to_string()).or_default() += 1;
        }
        self.rows.write(&batch)?;
        if !rejects.is_empty() {
            self.rejects.write(&rejects_batch(&rejects))?;
        }
        if let Some(end) = converted.end_of_file {
            counts.bytes = end.bytes;
            if let Some(message) = file_verdict(counts, end.truncated, self.converter.decoder().encoding()) {
                counts.error = Some(message.clone());
                self.file_errors.push(FileError { file: counts.file.clone(), message });
            }
        }
        Ok(())
    }

    fn key_description(&self, batch: &RecordBatch, row: usize) -> String {
        let parts: Vec<String> = self
            .key_names
            .iter()
            .filter_map(|name| {
                let column = batch.column_by_name(name)?;
                Some(format!("{name}={}", array_value_to_string(column, row).unwrap_or_default()))
            })
            .collect();
        format!("key ({})", parts.join(", "))
    }

    pub fn finish(self) -> Result<SinkOutput> {
        Ok(SinkOutput { rows: self.rows.finish()?, rejects: self.rejects.finish()? })
    }
}

/// A whole file that cannot be trusted, even if some of its rows typed correctly.
fn file_verdict(counts: &FileCounts, truncated: bool, encoding: Encoding) -> Option<String> {
    if truncated {
        return Some("truncated: the last record stops in the middle (an incomplete extract?)".to_string());
    }
    // Valid UTF-8 is the more precise diagnosis for a file declared GBK, so it comes first.
    if encoding != Encoding::Utf8 && counts.evidence.looks_like_utf8() {
        return Some(format!("declared {encoding} but its text is UTF-8: set `encoding: utf-8` or re-export the file"));
    }
    if counts.rows_read > 0 && counts.encoding_rejects * 2 > counts.rows_read {
        return Some(format!(
            "not valid {encoding} ({} of {} records): is the file in another encoding?",
            counts.encoding_rejects, counts.rows_read
        ));
    }
    None
}

fn rejects_batch(rejects: &[Reject]) -> RecordBatch {
    let mut file = StringBuilder::new();
    let mut line = Int64Builder::with_capacity(rejects.len());
    let mut column = StringBuilder::new();
    let mut why = StringBuilder::new();
    let mut detail = StringBuilder::new();
    let mut raw = StringBuilder::new();
    for r in rejects {
        file.append_value(&r.file);
        line.append_value(r.line as i64);
        column.append_option(r.column.as_deref());
        why.append_value(r.reason);
        detail.append_value(&r.detail);
        raw.append_value(&r.raw);
    }
    RecordBatch::try_new(
        rejects_schema(),
        vec![
            Arc::new(file.finish()),
            Arc::new(line.finish()),
            Arc::new(column.finish()),
            Arc::new(why.finish()),
            Arc::new(detail.finish()),
            Arc::new(raw.finish()),
        ],
    )
    .expect("rejects schema")
}
