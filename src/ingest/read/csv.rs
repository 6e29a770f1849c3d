//! Delimited text (CSV, TSV, …) in UTF-8, GBK or GB18030, streamed with `csv-core`.
//!
//! Structure (quotes, delimiters, newlines) is parsed on bytes: in GBK and GB18030 no byte of a
//! multi-byte character can be a quote, comma or newline, so decoding can wait until a field is
//! typed. The raw text of each record is kept for rejects.

use std::io::Read;
use std::sync::Arc;

use csv_core::{ReadRecordResult, Reader as CoreReader, ReaderBuilder};

use super::{ChunkBuilder, FileEnd, FileShape, Hangup, Limit, ReadLimits, ReadStop, match_header};
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
    pub limits: ReadLimits,
}

pub fn read(
    input: &mut dyn Read,
    file: &FileInput<'_>,
    options: &CsvOptions,
    emit: &mut dyn FnMut(super::Chunk) -> Result<(), Hangup>,
) -> Result<FileEnd, ReadStop> {
    let io_error = |e: std::io::Error| ReadStop::file(file.file, format!("cannot read: {e}"));
    let limits = file.limits;
    let next_error = |e: NextError| match e {
        NextError::Io(e) => io_error(e),
        NextError::TooLong { line } => {
            let what = format!("line {line}: the record (more than {} bytes)", limits.record_bytes);
            ReadStop::file(file.file, Limit::RecordBytes.breached(what, limits.record_bytes as u64))
        }
        NextError::TooWide { line, fields } => {
            let what = format!("line {line}: a record of {fields} or more fields");
            ReadStop::file(file.file, Limit::Columns.breached(what, limits.columns as u64))
        }
    };
    let mut records = Records::new(input, options, file.on_bytes, limits);
    records.fill().map_err(io_error)?;
    if records.total_bytes == 0 {
        return Err(ReadStop::file(file.file, "empty file (0 bytes): the extract has no header and no rows"));
    }
    if options.encoding == Encoding::Utf8 && records.buf[records.pos..records.len].starts_with(b"\xEF\xBB\xBF") {
        records.pos += 3;
    }

    let mut scratch = Record::default();
    let shape = if options.header {
        let found = records.next(&mut scratch).map_err(next_error)?;
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
    let mut chunks = ChunkBuilder::new(file.file_index, Arc::new(shape), true, limits.rows, emit);
    let mut truncated = false;
    while let Some(info) = records.next(&mut scratch).map_err(next_error)? {
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

/// Why the next record could not be had.
enum NextError {
    Io(std::io::Error),
    /// More than `max_record_bytes` without the record ending (the line it starts on).
    TooLong {
        line: u64,
    },
    /// More than `max_columns` fields.
    TooWide {
        line: u64,
        fields: usize,
    },
}

impl From<std::io::Error> for NextError {
    fn from(e: std::io::Error) -> Self {
        NextError::Io(e)
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
    limits: ReadLimits,
}

impl<'a> Records<'a> {
    fn new(input: &'a mut dyn Read, options: &CsvOptions, on_bytes: &'a dyn Fn(u64), limits: ReadLimits) -> Self {
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
            limits,
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

    fn next(&mut self, record: &mut Record) -> Result<Option<RecordInfo>, NextError> {
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
                ReadRecordResult::OutputEndsFull if ends_len > self.limits.columns => {
                    return Err(NextError::TooWide { line: self.line_of(&record.raw), fields: ends_len });
                }
                ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                ReadRecordResult::Record => {
                    self.check_length(&mut record.raw)?;
                    break;
                }
                ReadRecordResult::End => return Ok(None),
            }
            // Once per block read or buffer grown, not per byte.
            self.check_length(&mut record.raw)?;
        }
        if ends_len > self.limits.columns {
            return Err(NextError::TooWide { line: self.line_of(&record.raw), fields: ends_len });
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

    /// A record, its line break included, may not hold more than `max_record_bytes` (blank lines
    /// before it are no part of it).
    fn check_length(&mut self, raw: &mut Vec<u8>) -> Result<(), NextError> {
        if raw.len() > self.limits.record_bytes {
            self.drop_leading_blank_lines(raw);
            if raw.len() > self.limits.record_bytes {
                return Err(NextError::TooLong { line: self.line_of(raw) });
            }
        }
        Ok(())
    }

    /// The line a record starts on, from its text so far (blank lines before it skipped).
    fn line_of(&self, raw: &[u8]) -> u64 {
        let blank = raw.iter().position(|b| *b != b'\n' && *b != b'\r').unwrap_or(raw.len());
        self.line + raw[..blank].iter().filter(|b| **b == b'\n').count() as u64
    }

    /// Count the blank lines a record's text starts with and drop them: they are no part of it.
    fn drop_leading_blank_lines(&mut self, raw: &mut Vec<u8>) {
        let blank = raw.iter().position(|b| *b != b'\n' && *b != b'\r').unwrap_or(raw.len());
        self.line += raw[..blank].iter().filter(|b| **b == b'\n').count() as u64;
        raw.drain(..blank);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ingest::read::testing::{Blocks, Record, records};

    const FIELDS: [&str; 3] = ["a", "b", "c"];

    fn read_csv(bytes: &[u8], sizes: Vec<usize>, limits: ReadLimits) -> Result<(Vec<Record>, FileEnd), String> {
        records(&FIELDS, limits, |file, emit| {
            read(&mut Blocks { bytes, sizes, turn: 0 }, file, &CsvOptions::default(), emit)
        })
    }

    /// A field as a CSV writer writes it: quoted when it must be (or when `quote` says so).
    fn written(field: &str, quote: bool) -> String {
        if quote || field.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", field.replace('"', "\"\""))
        } else {
            field.to_string()
        }
    }

    /// A CSV file of `rows`, each with its line break and blank lines before it; the records a
    /// reader must find in it (line, raw text, fields).
    fn csv_file(rows: &[(Vec<String>, Vec<bool>, &str, usize)], last_break: bool) -> (Vec<u8>, Vec<Record>) {
        let mut text = String::from("a,b,c\n");
        let mut line = 2;
        let mut expected = Vec::new();
        for (i, (fields, quoted, line_break, blank_lines)) in rows.iter().enumerate() {
            text.push_str(&"\n".repeat(*blank_lines));
            line += *blank_lines as u64;
            let raw = fields.iter().zip(quoted).map(|(f, q)| written(f, *q)).collect::<Vec<_>>().join(",");
            text.push_str(&raw);
            if i + 1 < rows.len() || last_break {
                text.push_str(line_break);
            }
            let fields = fields.iter().map(|f| f.as_bytes().to_vec()).collect();
            expected.push((line, raw.as_bytes().to_vec(), fields, None));
            line += raw.matches('\n').count() as u64 + 1;
        }
        (text.into_bytes(), expected)
    }

    fn any_field() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9 ]{0,6}",
            proptest::collection::vec(
                prop_oneof![Just(","), Just("\""), Just("\n"), Just("\r\n"), Just("x"), Just("客户"), Just(" ")],
                0..8
            )
            .prop_map(|parts| parts.concat()),
        ]
    }

    fn any_rows() -> impl Strategy<Value = Vec<(Vec<String>, Vec<bool>, &'static str, usize)>> {
        let row = (
            proptest::collection::vec(any_field(), 3),
            proptest::collection::vec(any::<bool>(), 3),
            prop_oneof![Just("\n"), Just("\r\n")],
            prop_oneof![4 => Just(0usize), 1 => 1usize..3],
        );
        // A record of three empty fields is `,,`: never a blank line.
        proptest::collection::vec(row, 0..40)
    }

    proptest! {
        #![proptest_config(crate::ingest::proptest_config(128))]

        /// The same records, lines and raw text whatever the blocks the input comes in: whole,
        /// or cut anywhere (inside a quote, between `\r` and `\n`, inside a multi-byte character).
        #[test]
        fn records_do_not_depend_on_where_the_input_is_cut(
            rows in any_rows(),
            last_break in any::<bool>(),
            sizes in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let (bytes, expected) = csv_file(&rows, last_break);
            let whole = read_csv(&bytes, vec![usize::MAX], ReadLimits::default()).unwrap();
            prop_assert_eq!(&whole.0, &expected);
            prop_assert_eq!(whole.1, FileEnd { truncated: false, bytes: bytes.len() as u64 });
            let cut = read_csv(&bytes, sizes, ReadLimits::default()).unwrap();
            prop_assert_eq!(cut, whole);
        }
    }

    #[test]
    fn a_record_over_max_record_bytes_refuses_the_file_naming_its_line() {
        let limits = ReadLimits { record_bytes: 1024, ..ReadLimits::default() };
        let mut bytes = b"a,b,c\n1,2,3\n\n\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'x', 5000));
        for sizes in [vec![usize::MAX], vec![7, 100]] {
            let error = read_csv(&bytes, sizes, limits).unwrap_err();
            assert_eq!(
                error,
                "t: line 5: the record (more than 1024 bytes) is over limits.max_record_bytes (1024); the file is refused"
            );
        }
        // Blank lines are no part of a record: 2000 of them before a short record are fine.
        let mut bytes = b"a,b,c\n".to_vec();
        bytes.extend(std::iter::repeat_n(b'\n', 2000));
        bytes.extend(b"1,2,3\n");
        let (found, _) = read_csv(&bytes, vec![100], limits).unwrap();
        assert_eq!(found, vec![(2002, b"1,2,3".to_vec(), vec![b"1".to_vec(), b"2".to_vec(), b"3".to_vec()], None)]);
    }

    #[test]
    fn too_many_fields_or_records_refuse_the_file() {
        let narrow = ReadLimits { columns: 4, ..ReadLimits::default() };
        let error = read_csv(b"a,b,c\n1,2,3,4,5,6\n", vec![usize::MAX], narrow).unwrap_err();
        assert_eq!(
            error,
            "t: line 2: a record of 6 or more fields is over limits.max_columns (4); the file is refused"
        );
        let short = ReadLimits { rows: 2, ..ReadLimits::default() };
        let error = read_csv(b"a,b,c\n1,2,3\n4,5,6\n7,8,9\n", vec![usize::MAX], short).unwrap_err();
        assert_eq!(error, "t: line 4: record 3 is over limits.max_rows (2); the file is refused");
        assert_eq!(read_csv(b"a,b,c\n1,2,3\n4,5,6\n", vec![usize::MAX], short).unwrap().0.len(), 2);
    }
}
