//! JSON lines: one object per line, fields by key. Lines are split here; each object is parsed
//! by the workers (see `convert`), so parsing runs in parallel.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use super::csv::FileInput;
use super::{ChunkBuilder, FileEnd, FileShape, Hangup, ReadStop};
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
    let mut reader = BufReader::with_capacity(1 << 20, input);
    let mut chunks = ChunkBuilder::new(file.file_index, Arc::new(shape), false, emit);
    let (mut line_no, mut bytes, mut truncated) = (0u64, 0u64, false);
    let mut line = Vec::with_capacity(1024);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io_error)?;
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

fn trim_line_end(line: &[u8]) -> &[u8] {
    let end = line.iter().rposition(|b| *b != b'\n' && *b != b'\r').map_or(0, |p| p + 1);
    &line[..end]
}
