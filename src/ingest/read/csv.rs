//! Delimited text (CSV, TSV, …) in UTF-8, GBK or GB18030, streamed with `csv-core`.
//!
//! Structure (quotes, delimiters, newlines) is parsed on bytes: in GBK and GB18030 no byte of a
//! multi-byte character can be a quote, comma or newline, so decoding can wait until a field is
//! typed. The raw text of each record is kept for rejects.

use std::io::Read;
use std::sync::Arc;

use csv_core::{ReadRecordResult, Reader as CoreReader, ReaderBuilder};

use super::{ChunkBuilder, FileEnd, FileShape, Hangup, ReadStop, match_header};
use crate::config::contract::reason;
use crate::config::{CsvOptions, Encoding};
use crate::ingest::decode::Decoder;
use crate::ingest::values::FieldError;

const READ_BLOCK: usize = 1 << 20;

/// What one landing file is, for a reader.
pub struct FileInput<'a> {
    pub file: &'a str,
    pub file_index: usize,
    /// Contract columns by their name in the file, in contract order.
    pub fields: &'a [&'a str],
    pub decoder: Decoder,
    /// Called with the number of bytes read, for progress.
    pub on_bytes: &'a dyn Fn(u64),
}

pub fn read(
    input: &mut dyn Read,
    file: &FileInput<'_>,
    options: &CsvOptions,
    emit: &mut dyn FnMut(super::Chunk) -> Result<(), Hangup>,
) -> Result<FileEnd, ReadStop> {
    let io_error = |e: std::io::Error| ReadStop::file(file.file, format!("cannot read: {e}"));
    let mut records = Records::new(input, options, file.on_bytes);
    records.fill().map_err(io_error)?;
    if records.total_bytes == 0 {
        return Err(ReadStop::file(file.file, "empty file (0 bytes): the extract has no header and no rows"));
    }
    if options.encoding == Encoding::Utf8 && records.buf[records.pos..records.len].starts_with(b"\xEF\xBB\xBF") {
        records.pos += 3;
    }

    let mut scratch = Record::default();
    let shape = if options.header {
        let found = records.next(&mut scratch).map_err(io_error)?;
        if found.is_none() {
            return Err(ReadStop::file(file.file, "no header line"));
        }
        let mut names = Vec::with_capacity(scratch.ends.len());
        for i in 0..scratch.ends.len() {
            let name = file.decoder.decode(scratch.field(i)).ok_or_else(|| {
                ReadStop::file(
                    file.file,
                    format!("header is not valid {}: is the file in another encoding?", file.decoder.encoding()),
                )
            })?;
            names.push(name.trim().to_string());
        }
        let positions = match_header(&names, file.fields).map_err(|m| ReadStop::file(file.file, m))?;
        FileShape { file: Arc::from(file.file), positions, field_count: names.len() }
    } else {
        FileShape {
            file: Arc::from(file.file),
            positions: (0..file.fields.len()).map(Some).collect(),
            field_count: file.fields.len(),
        }
    };

    let expected_fields = shape.field_count;
    let mut chunks = ChunkBuilder::new(file.file_index, Arc::new(shape), true, emit);
    let mut truncated = false;
    while let Some(info) = records.next(&mut scratch).map_err(io_error)? {
        let (data, ends) = chunks.field_buffers();
        let base = data.len();
        data.extend_from_slice(&scratch.data);
        ends.extend(scratch.ends.iter().map(|e| base + e));
        let truncated_here = !info.terminated && (info.open_quote || scratch.ends.len() < expected_fields);
        let problem = if truncated_here {
            truncated = true;
            Some(FieldError::new(
                reason::TRUNCATED_RECORD,
                format!("the file ends inside this record ({} of {expected_fields} fields)", scratch.ends.len()),
            ))
        } else if scratch.ends.len() != expected_fields {
            Some(FieldError::new(
                reason::WRONG_FIELD_COUNT,
                format!("expected {expected_fields} fields, found {}", scratch.ends.len()),
            ))
        } else {
            None
        };
        chunks.end_record(info.line, scratch.raw_text(), problem)?;
    }
    let end = FileEnd { truncated, bytes: records.total_bytes };
    chunks.finish(end)?;
    Ok(end)
}

/// One record's unescaped fields and its raw text.
#[derive(Default)]
struct Record {
    data: Vec<u8>,
    ends: Vec<usize>,
    raw: Vec<u8>,
    /// Where the record's own text starts in `raw` (after skipped blank lines).
    raw_start: usize,
}

impl Record {
    fn field(&self, i: usize) -> &[u8] {
        let from = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[from..self.ends[i]]
    }

    /// The record as written, without blank lines before it or the line break after it.
    fn raw_text(&self) -> &[u8] {
        let raw = &self.raw[self.raw_start..];
        let end = raw.iter().rposition(|b| *b != b'\n' && *b != b'\r').map_or(0, |p| p + 1);
        &raw[..end]
    }
}

struct RecordInfo {
    line: u64,
    /// A line break followed the record (false only for the last record of a file).
    terminated: bool,
    open_quote: bool,
}

struct Records<'a> {
    input: &'a mut dyn Read,
    core: CoreReader,
    quote: u8,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    total_bytes: u64,
    /// Line number of the next unread byte.
    line: u64,
    out: Vec<u8>,
    ends: Vec<usize>,
    on_bytes: &'a dyn Fn(u64),
}

impl<'a> Records<'a> {
    fn new(input: &'a mut dyn Read, options: &CsvOptions, on_bytes: &'a dyn Fn(u64)) -> Self {
        let delimiter = options.delimiter.as_bytes().first().copied().unwrap_or(b',');
        let quote = options.quote.as_bytes().first().copied().unwrap_or(b'"');
        Records {
            input,
            core: ReaderBuilder::new().delimiter(delimiter).quote(quote).build(),
            quote,
            buf: vec![0; READ_BLOCK],
            pos: 0,
            len: 0,
            eof: false,
            total_bytes: 0,
            line: 1,
            out: vec![0; 4096],
            ends: vec![0; 64],
            on_bytes,
        }
    }

    /// Read more input after the unread bytes; sets `eof` when the input is exhausted.
    fn fill(&mut self) -> std::io::Result<()> {
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
        if self.len == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = loop {
            match self.input.read(&mut self.buf[self.len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.len += n;
        self.total_bytes += n as u64;
        (self.on_bytes)(n as u64);
        self.eof = n == 0;
        Ok(())
    }

    fn next(&mut self, record: &mut Record) -> std::io::Result<Option<RecordInfo>> {
        record.data.clear();
        record.raw.clear();
        let (mut out_len, mut ends_len) = (0, 0);
        loop {
            if self.pos == self.len && !self.eof {
                self.fill()?;
            }
            let input = &self.buf[self.pos..self.len];
            let (result, n_in, n_out, n_ends) =
                self.core.read_record(input, &mut self.out[out_len..], &mut self.ends[ends_len..]);
            record.raw.extend_from_slice(&input[..n_in]);
            self.pos += n_in;
            out_len += n_out;
            ends_len += n_ends;
            match result {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => self.out.resize(self.out.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                ReadRecordResult::Record => break,
                ReadRecordResult::End => return Ok(None),
            }
        }
        record.data.extend_from_slice(&self.out[..out_len]);
        record.ends.clear();
        record.ends.extend_from_slice(&self.ends[..ends_len]);

        // csv-core skips blank lines before a record: they belong to the line count, not to it.
        record.raw_start = record.raw.iter().position(|b| *b != b'\n' && *b != b'\r').unwrap_or(record.raw.len());
        let skipped_lines = record.raw[..record.raw_start].iter().filter(|b| **b == b'\n').count() as u64;
        let line = self.line + skipped_lines;
        self.line += record.raw.iter().filter(|b| **b == b'\n').count() as u64;
        let terminated = record.raw.last() == Some(&b'\n') || record.raw.last() == Some(&b'\r');
        let open_quote = !terminated && record.raw.iter().filter(|b| **b == self.quote).count() % 2 == 1;
        Ok(Some(RecordInfo { line, terminated, open_quote }))
    }
}
