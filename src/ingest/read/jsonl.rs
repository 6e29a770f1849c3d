//! JSON lines: one object per line, fields by key. Lines are split here; each object is parsed
//! by the workers (see `convert`), so parsing runs in parallel.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use super::csv::FileInput;
use super::{ChunkBuilder, FileEnd, FileShape, Hangup, Limit, ReadStop};
use crate::config::contract::reason;
use crate::ingest::values::FieldError;

pub fn read(
    input: &mut dyn Read,
    file: &FileInput<'_>,
    emit: &mut dyn FnMut(super::Chunk) -> Result<(), Hangup>,
) -> Result<FileEnd, ReadStop> {
    let io_error = |e: std::io::Error| ReadStop::file(file.file, format!("cannot read: {e}"));
    let shape = FileShape {
        file: Arc::from(file.file),
        positions: (0..file.fields.len()).map(Some).collect(),
        field_count: file.fields.len(),
    };
    let max_bytes = file.limits.record_bytes;
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut chunks = ChunkBuilder::new(file.file_index, Arc::new(shape), false, file.limits.rows, emit);
    let (mut line_no, mut bytes, mut truncated) = (0u64, 0u64, false);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let n = match read_line(&mut reader, &mut line, max_bytes).map_err(io_error)? {
            Line::Read(n) => n,
            Line::TooLong => {
                let what = format!("line {}: the record (more than {max_bytes} bytes)", line_no + 1);
                return Err(ReadStop::file(file.file, Limit::RecordBytes.breached(what, max_bytes as u64)));
            }
        };
        if n == 0 {
            break;
        }
        (file.on_bytes)(n as u64);
        bytes += n as u64;
        line_no += 1;
        let terminated = line.last() == Some(&b'\n');
        let text = trim_line_end(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let problem = if !terminated && serde_json::from_slice::<serde::de::IgnoredAny>(text).is_err() {
            truncated = true;
            Some(FieldError::new(reason::TRUNCATED_RECORD, "the file ends inside this JSON object"))
        } else {
            None
        };
        chunks.end_record(line_no, text, problem)?;
    }
    // JSON lines have no header, so a day without records is a file of 0 bytes: zero rows.
    let end = FileEnd { truncated, bytes };
    chunks.finish(end)?;
    Ok(end)
}

enum Line {
    /// Bytes read onto the line, its `\n` included (0 at the end of the input).
    Read(usize),
    /// More than the most a line may hold came without a `\n`.
    TooLong,
}

/// `read_until(b'\n')` that stops once `line` holds more than `max_bytes` (its line break included):
/// a file without line breaks is never read whole into one line.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>, max_bytes: usize) -> std::io::Result<Line> {
    let mut read = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(Line::Read(read));
        }
        let (taken, done) = match memchr::memchr(b'\n', available) {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..taken]);
        reader.consume(taken);
        read += taken;
        // Its line break included.
        if line.len() > max_bytes {
            return Ok(Line::TooLong);
        }
        if done {
            return Ok(Line::Read(read));
        }
    }
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let end = line.iter().rposition(|b| *b != b'\n' && *b != b'\r').map_or(0, |p| p + 1);
    &line[..end]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ingest::read::ReadLimits;
    use crate::ingest::read::testing::{Blocks, Record, records};

    fn read_jsonl(bytes: &[u8], sizes: Vec<usize>, limits: ReadLimits) -> Result<(Vec<Record>, FileEnd), String> {
        records(&["a", "n"], limits, |file, emit| read(&mut Blocks { bytes, sizes, turn: 0 }, file, emit))
    }

    fn any_line() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => (".{0,12}", any::<i64>()).prop_map(|(a, n)| serde_json::json!({"a": a, "n": n}).to_string()),
            1 => "[ \t]{0,3}".prop_map(String::from),
        ]
    }

    proptest! {
        #![proptest_config(crate::ingest::proptest_config(128))]

        /// The same records (lines, text) whatever the blocks the input comes in.
        #[test]
        fn records_do_not_depend_on_where_the_input_is_cut(
            lines in proptest::collection::vec((any_line(), prop_oneof![Just("\n"), Just("\r\n")]), 0..40),
            last_break in any::<bool>(),
            sizes in proptest::collection::vec(1usize..64, 1..8),
        ) {
            let mut bytes = Vec::new();
            let mut expected = Vec::new();
            for (i, (line, line_break)) in lines.iter().enumerate() {
                bytes.extend_from_slice(line.as_bytes());
                if i + 1 < lines.len() || last_break {
                    bytes.extend_from_slice(line_break.as_bytes());
                }
                if !line.trim().is_empty() {
                    expected.push((i as u64 + 1, line.as_bytes().to_vec(), Vec::new(), None));
                }
            }
            let whole = read_jsonl(&bytes, vec![usize::MAX], ReadLimits::default()).unwrap();
            prop_assert_eq!(&whole.0, &expected);
            let cut = read_jsonl(&bytes, sizes, ReadLimits::default()).unwrap();
            prop_assert_eq!(cut, whole);
        }
    }

    #[test]
    fn a_line_over_max_record_bytes_refuses_the_file_naming_its_line() {
        let limits = ReadLimits { record_bytes: 1024, ..ReadLimits::default() };
        let mut bytes = b"{\"a\":\"x\"}\n\n".to_vec();
        bytes.extend(std::iter::repeat_n(b' ', 5000));
        for sizes in [vec![usize::MAX], vec![3, 500]] {
            let error = read_jsonl(&bytes, sizes, limits).unwrap_err();
            assert_eq!(
                error,
                "t: line 3: the record (more than 1024 bytes) is over limits.max_record_bytes (1024); the file is refused"
            );
        }
    }

    #[test]
    fn a_line_is_read_up_to_its_limit_and_no_further() {
        let input = b"{\"a\":1}\r\n012345678\n0123456789\nend";
        let mut reader = BufReader::with_capacity(4, &input[..]);
        let mut lines = Vec::new();
        loop {
            let mut line = Vec::new();
            match read_line(&mut reader, &mut line, 10).unwrap() {
                Line::Read(0) => break,
                Line::Read(n) => lines.push((n, String::from_utf8(line).unwrap())),
                Line::TooLong => {
                    lines.push((0, "too long".into()));
                    break;
                }
            }
        }
        let expected = [(9, "{\"a\":1}\r\n"), (10, "012345678\n"), (0, "too long")];
        assert_eq!(lines, expected.map(|(n, l)| (n, l.to_string())));
    }
}
