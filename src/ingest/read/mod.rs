//! Readers turn one landing file into [`Chunk`]s of records as text, in file order. Each format
//! has its own file; they share the chunk type so that typing and validation are written once.

pub mod csv;
pub mod jsonl;
pub mod xlsx;

use std::sync::Arc;

use super::reject::cut;
use super::values::FieldError;
use crate::config::Limits;

/// Records per chunk: large enough to amortise per-chunk work, small enough to keep memory flat.
pub const CHUNK_RECORDS: usize = 16 * 1024;

/// Bytes of record text after which a chunk is full whatever its records: long records (up to
/// `max_record_bytes` each) must not make a chunk of 16,384 of them.
pub const CHUNK_BYTES: usize = 64 << 20;

/// The `limits:` of keymart.yaml, as the readers check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    pub record_bytes: usize,
    pub columns: usize,
    pub rows: u64,
    pub workbook_bytes: u64,
    pub xlsx_part_bytes: u64,
    pub inflate_ratio: u64,
    pub workbook_memory_bytes: u64,
}

impl From<&Limits> for ReadLimits {
    fn from(limits: &Limits) -> Self {
        let size = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
        ReadLimits {
            record_bytes: size(limits.max_record_bytes.value),
            columns: size(limits.max_columns.value),
            rows: limits.max_rows.value,
            workbook_bytes: limits.max_workbook_bytes.value,
            xlsx_part_bytes: limits.max_xlsx_part_bytes.value,
            inflate_ratio: limits.max_inflate_ratio.value,
            workbook_memory_bytes: limits.max_workbook_memory_bytes.value,
        }
    }
}

impl Default for ReadLimits {
    fn default() -> Self {
        ReadLimits::from(&Limits::default())
    }
}

/// One of the limits, named as keymart.yaml names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    RecordBytes,
    Columns,
    Rows,
    WorkbookBytes,
    XlsxPartBytes,
    InflateRatio,
    WorkbookMemory,
}

impl Limit {
    pub fn setting(self) -> &'static str {
        match self {
            Limit::RecordBytes => "limits.max_record_bytes",
            Limit::Columns => "limits.max_columns",
            Limit::Rows => "limits.max_rows",
            Limit::WorkbookBytes => "limits.max_workbook_bytes",
            Limit::XlsxPartBytes => "limits.max_xlsx_part_bytes",
            Limit::InflateRatio => "limits.max_inflate_ratio",
            Limit::WorkbookMemory => "limits.max_workbook_memory_bytes",
        }
    }

    /// `{what} is over {setting} ({max})`: the message of a file refused for this limit.
    pub fn breached(self, what: impl std::fmt::Display, max: u64) -> String {
        format!("{what} is over {} ({max}); the file is refused", self.setting())
    }
}

/// How one file's fields map onto the contract's columns.
#[derive(Debug)]
pub struct FileShape {
    /// Key relative to the landing root, as written into rejects and the ledger.
    pub file: Arc<str>,
    /// For each contract column, the index of its field in a record (`None`: not in the file).
    pub positions: Vec<Option<usize>>,
    /// Fields every record must have (split formats).
    pub field_count: usize,
}

/// Facts about a file known only once it has been read to the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileEnd {
    /// The last record stops in the middle (no final newline and too few fields, or an open quote).
    pub truncated: bool,
    pub bytes: u64,
}

/// Records of one file, as text.
#[derive(Debug)]
pub enum Fields {
    /// Records already split into fields (CSV, Excel).
    Split { data: Vec<u8>, field_ends: Vec<usize>, record_ends: Vec<usize> },
    /// One JSON object per record, in `RecordText::raw`.
    Json,
}

/// Where each record came from: its line and its text as written, for rejects.
#[derive(Debug, Default)]
pub struct RecordText {
    pub lines: Vec<u64>,
    pub raw: Vec<u8>,
    pub raw_ends: Vec<usize>,
    /// Problems a reader found with a whole record (by record index), before any field is typed.
    pub problems: Vec<(usize, FieldError)>,
}

impl RecordText {
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn raw(&self, record: usize) -> &[u8] {
        let start = if record == 0 { 0 } else { self.raw_ends[record - 1] };
        &self.raw[start..self.raw_ends[record]]
    }

    fn push(&mut self, line: u64, raw: &[u8]) {
        self.lines.push(line);
        self.raw.extend_from_slice(raw);
        self.raw_ends.push(self.raw.len());
    }
}

#[derive(Debug)]
pub struct Chunk {
    /// Position of the chunk in the whole load (all files of the source), for reordering.
    pub seq: usize,
    /// Index of the file in the load's file list.
    pub file_index: usize,
    pub shape: Arc<FileShape>,
    pub fields: Fields,
    pub text: RecordText,
    /// Set on the last chunk of a file (which may hold no records).
    pub end_of_file: Option<FileEnd>,
}

impl Chunk {
    /// The fields of a split record.
    pub fn split_record(&self, record: usize) -> SplitRecord<'_> {
        match &self.fields {
            Fields::Split { data, field_ends, record_ends } => {
                let first = if record == 0 { 0 } else { record_ends[record - 1] };
                let data_start = if first == 0 { 0 } else { field_ends[first - 1] };
                SplitRecord { data, ends: &field_ends[first..record_ends[record]], start: data_start }
            }
            Fields::Json => SplitRecord { data: &[], ends: &[], start: 0 },
        }
    }
}

/// The fields of one record of a split chunk.
pub struct SplitRecord<'a> {
    data: &'a [u8],
    ends: &'a [usize],
    start: usize,
}

impl<'a> SplitRecord<'a> {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn field(&self, i: usize) -> &'a [u8] {
        let from = if i == 0 { self.start } else { self.ends[i - 1] };
        &self.data[from..self.ends[i]]
    }
}

/// Collects records of one file into chunks and hands full chunks to `emit`.
pub struct ChunkBuilder<'e> {
    file_index: usize,
    /// Records of the file so far, and how many it may have.
    rows: u64,
    max_rows: u64,
    shape: Arc<FileShape>,
    split: bool,
    data: Vec<u8>,
    field_ends: Vec<usize>,
    record_ends: Vec<usize>,
    text: RecordText,
    emit: &'e mut dyn FnMut(Chunk) -> Result<(), Hangup>,
}

/// The consumer stopped listening (the load failed elsewhere); the reader should stop too.
#[derive(Debug, Clone, Copy)]
pub struct Hangup;

impl<'e> ChunkBuilder<'e> {
    pub fn new(
        file_index: usize,
        shape: Arc<FileShape>,
        split: bool,
        max_rows: u64,
        emit: &'e mut dyn FnMut(Chunk) -> Result<(), Hangup>,
    ) -> Self {
        ChunkBuilder {
            file_index,
            rows: 0,
            max_rows,
            shape,
            split,
            data: Vec::new(),
            field_ends: Vec::new(),
            record_ends: Vec::new(),
            text: RecordText::default(),
            emit,
        }
    }

    /// Append one field to the record being built (split formats).
    pub fn push_field(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.field_ends.push(self.data.len());
    }

    /// Field storage for readers that write fields in place: the buffer and the ends so far.
    pub fn field_buffers(&mut self) -> (&mut Vec<u8>, &mut Vec<usize>) {
        (&mut self.data, &mut self.field_ends)
    }

    /// Close the current record; emits the chunk when it is full. A record past `max_rows`
    /// refuses the file.
    pub fn end_record(&mut self, line: u64, raw: &[u8], problem: Option<FieldError>) -> Result<(), ReadStop> {
        self.rows += 1;
        if self.rows > self.max_rows {
            let what = format!("line {line}: record {}", self.rows);
            return Err(ReadStop::file(&self.shape.file, Limit::Rows.breached(what, self.max_rows)));
        }
        if let Some(problem) = problem {
            self.text.problems.push((self.text.len(), problem));
        }
        self.text.push(line, raw);
        if self.split {
            self.record_ends.push(self.field_ends.len());
        }
        if self.text.len() >= CHUNK_RECORDS || self.text.raw.len() >= CHUNK_BYTES {
            self.flush(None)?;
        }
        Ok(())
    }

    /// Mark a problem on the last closed record.
    pub fn mark_last(&mut self, problem: FieldError) {
        if let Some(last) = self.text.len().checked_sub(1) {
            self.text.problems.retain(|(i, _)| *i != last);
            self.text.problems.push((last, problem));
        }
    }

    fn flush(&mut self, end_of_file: Option<FileEnd>) -> Result<(), Hangup> {
        let fields = if self.split {
            Fields::Split {
                data: take_sized(&mut self.data),
                field_ends: take_sized(&mut self.field_ends),
                record_ends: take_sized(&mut self.record_ends),
            }
        } else {
            Fields::Json
        };
        let text = RecordText {
            lines: take_sized(&mut self.text.lines),
            raw: take_sized(&mut self.text.raw),
            raw_ends: take_sized(&mut self.text.raw_ends),
            problems: std::mem::take(&mut self.text.problems),
        };
        let chunk = Chunk { seq: 0, file_index: self.file_index, shape: self.shape.clone(), fields, text, end_of_file };
        (self.emit)(chunk)
    }

    /// Emit what is left, marked as the end of the file.
    pub fn finish(mut self, end: FileEnd) -> Result<(), Hangup> {
        self.flush(Some(end))
    }
}

/// A full buffer of a chunk, leaving an empty one the size of it and an eighth: chunks hold the
/// same number of records, and a buffer grown from empty by doubling, chunk after chunk, copies
/// its bytes up to twice more (reallocation showed in the orders load's profile).
fn take_sized<T>(buffer: &mut Vec<T>) -> Vec<T> {
    let len = buffer.len();
    std::mem::replace(buffer, Vec::with_capacity(len + len / 8))
}

/// A file that cannot be read as its contract declares: one line, naming the file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileError {
    pub file: String,
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

/// Why a reader stopped before the end of its file.
#[derive(Debug)]
pub enum ReadStop {
    File(FileError),
    Hangup,
}

impl From<Hangup> for ReadStop {
    fn from(_: Hangup) -> Self {
        ReadStop::Hangup
    }
}

impl ReadStop {
    /// The file cannot be read as declared: `message` says why in one line (cut to
    /// `MAX_QUOTED_BYTES`, as it may quote the file).
    pub fn file(file: &str, message: impl Into<String>) -> ReadStop {
        ReadStop::File(FileError { file: file.to_string(), message: cut(message.into()) })
    }
}

/// Match a file's header names against the contract: the position of each contract field, or
/// one message listing every difference.
pub fn match_header(header: &[String], contract_fields: &[&str]) -> Result<Vec<Option<usize>>, String> {
    let positions: Vec<Option<usize>> = contract_fields.iter().map(|f| header.iter().position(|h| h == f)).collect();
    let missing: Vec<&str> =
        contract_fields.iter().zip(&positions).filter(|(_, p)| p.is_none()).map(|(f, _)| *f).collect();
    let unexpected: Vec<&str> =
        header.iter().filter(|h| !contract_fields.contains(&h.as_str())).map(String::as_str).collect();
    let mut seen = std::collections::HashSet::new();
    let repeated: Vec<&str> = header.iter().filter(|h| !seen.insert(h.as_str())).map(String::as_str).collect();
    if missing.is_empty() && unexpected.is_empty() && repeated.is_empty() {
        return Ok(positions);
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing {}", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected {}", unexpected.join(", ")));
    }
    if !repeated.is_empty() {
        parts.push(format!("repeated {}", repeated.join(", ")));
    }
    Err(format!("header does not match the contract: {}", parts.join("; ")))
}

/// Helpers for the readers' tests: input handed out in blocks, and the records a reader emits.
#[cfg(test)]
pub(crate) mod testing {
    use std::io::Read;

    use super::{Chunk, Fields, FileEnd, Hangup, ReadLimits, ReadStop};
    use crate::config::Encoding;
    use crate::ingest::decode::Decoder;
    use crate::ingest::read::csv::FileInput;

    /// Bytes handed out at most `sizes[i]` at a time, the sizes taken in turn: the boundaries a
    /// stream from a store or a pipe may cut anywhere.
    pub struct Blocks<'a> {
        pub bytes: &'a [u8],
        pub sizes: Vec<usize>,
        pub turn: usize,
    }

    impl Read for Blocks<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let size = self.sizes[self.turn % self.sizes.len()].max(1);
            self.turn += 1;
            let n = size.min(buf.len()).min(self.bytes.len());
            buf[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// One record as a reader emitted it: line, raw text, fields (split formats), problem.
    pub type Record = (u64, Vec<u8>, Vec<Vec<u8>>, Option<&'static str>);

    /// Run `read` over a file named `t` with these fields and limits; its records and its end,
    /// or the message it stopped with.
    pub fn records(
        fields: &[&str],
        limits: ReadLimits,
        read: impl FnOnce(&FileInput<'_>, &mut dyn FnMut(Chunk) -> Result<(), Hangup>) -> Result<FileEnd, ReadStop>,
    ) -> Result<(Vec<Record>, FileEnd), String> {
        let mut found = Vec::new();
        let on_bytes = |_| {};
        let file = FileInput {
            file: "t",
            file_index: 0,
            fields,
            decoder: Decoder::new(Encoding::Utf8),
            on_bytes: &on_bytes,
            limits,
        };
        let mut emit = |chunk: Chunk| {
            let mut problems = chunk.text.problems.iter().peekable();
            for i in 0..chunk.text.len() {
                let problem = problems.next_if(|(at, _)| *at == i).map(|(_, p)| p.reason);
                let fields = match chunk.fields {
                    Fields::Split { .. } => {
                        let record = chunk.split_record(i);
                        (0..record.len()).map(|f| record.field(f).to_vec()).collect()
                    }
                    Fields::Json => Vec::new(),
                };
                found.push((chunk.text.lines[i], chunk.text.raw(i).to_vec(), fields, problem));
            }
            Ok(())
        };
        match read(&file, &mut emit) {
            Ok(end) => Ok((found, end)),
            Err(ReadStop::File(e)) => Err(e.to_string()),
            Err(ReadStop::Hangup) => Err("hung up".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_mismatch_lists_every_difference() {
        let header: Vec<String> = ["id", "amount", "extra", "id"].iter().map(|s| s.to_string()).collect();
        let err = match_header(&header, &["id", "amount", "date"]).unwrap_err();
        assert_eq!(err, "header does not match the contract: missing date; unexpected extra; repeated id");
        let ok: Vec<String> = ["b", "a"].iter().map(|s| s.to_string()).collect();
        assert_eq!(match_header(&ok, &["a", "b"]).unwrap(), vec![Some(1), Some(0)]);
    }
}
