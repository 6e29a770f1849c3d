//! Excel workbooks (`.xlsx`, and `.xls`/`.ods` through calamine). The first row of the sheet is the
//! header; cells are rendered as the text Excel would show, then typed like any other field.

use std::io::{Cursor, Read};
use std::sync::Arc;

use calamine::{Data, Reader};

use super::csv::FileInput;
use super::{ChunkBuilder, FileEnd, FileShape, Hangup, ReadStop, match_header};
use crate::config::XlsxOptions;
use crate::ingest::values::{FieldError, excel_number_text, reason};

pub fn read(
    input: &mut dyn Read,
    file: &FileInput<'_>,
    options: &XlsxOptions,
    emit: &mut dyn FnMut(super::Chunk) -> Result<(), Hangup>,
) -> Result<FileEnd, ReadStop> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes).map_err(|e| ReadStop::file(file.file, format!("cannot read: {e}")))?;
    (file.on_bytes)(bytes.len() as u64);
    let size = bytes.len() as u64;
    if bytes.is_empty() {
        return Err(ReadStop::file(file.file, "empty file (0 bytes)"));
    }
    let mut workbook = calamine::open_workbook_auto_from_rs(Cursor::new(bytes))
        .map_err(|e| ReadStop::file(file.file, format!("not a readable workbook (truncated or not Excel?): {e}")))?;
    let sheet = match &options.sheet {
        Some(name) => name.clone(),
        None => workbook
            .sheet_names()
            .first()
            .cloned()
            .ok_or_else(|| ReadStop::file(file.file, "the workbook has no sheet"))?,
    };
    let range = workbook
        .worksheet_range(&sheet)
        .map_err(|e| ReadStop::file(file.file, format!("cannot read sheet `{sheet}`: {e}")))?;
    let first_row = range.start().map_or(0, |(row, _)| row as u64);
    let mut rows = range.rows();
    let header: Vec<String> = match rows.next() {
        Some(cells) => cells.iter().map(|c| cell_text(c).0.trim().to_string()).collect(),
        None => {
            return Err(ReadStop::file(file.file, format!("sheet `{sheet}` is empty: no header row")));
        }
    };
    // Trailing empty header cells are formatting, not columns.
    let width = header.iter().rposition(|h| !h.is_empty()).map_or(0, |p| p + 1);
    let positions = match_header(&header[..width], file.fields).map_err(|m| ReadStop::file(file.file, m))?;
    let shape = FileShape { file: Arc::from(file.file), positions, field_count: width };

    let mut chunks = ChunkBuilder::new(file.file_index, Arc::new(shape), true, emit);
    let mut raw = String::new();
    for (i, cells) in rows.enumerate() {
        if cells.iter().all(|c| matches!(c, Data::Empty)) {
            continue;
        }
        raw.clear();
        let mut problem = None;
        for (col, cell) in cells.iter().take(width).enumerate() {
            let (text, cell_error) = cell_text(cell);
            if col > 0 {
                raw.push(',');
            }
            raw.push_str(&text);
            chunks.push_field(text.as_bytes());
            if let (Some(e), None) = (cell_error, &problem) {
                problem = Some(FieldError::new(
                    reason::INVALID_VALUE,
                    format!("column {}: Excel error cell {e}", header[col]),
                ));
            }
        }
        for _ in cells.len()..width {
            chunks.push_field(b"");
        }
        // Excel rows are numbered from 1; the header is the range's first row.
        let line = first_row + i as u64 + 2;
        chunks.end_record(line, raw.as_bytes(), problem)?;
    }
    let end = FileEnd { truncated: false, bytes: size };
    chunks.finish(end)?;
    Ok(end)
}

/// The text of a cell as Excel shows it, and the error if the cell holds one (`#N/A`, …).
fn cell_text(cell: &Data) -> (String, Option<String>) {
    match cell {
        Data::Empty => (String::new(), None),
        Data::String(s) => (s.clone(), None),
        Data::Int(i) => (i.to_string(), None),
        Data::Float(f) => (excel_number_text(*f), None),
        Data::Bool(b) => (b.to_string(), None),
        Data::DateTime(dt) => match dt.as_datetime() {
            Some(t) if t.time() == chrono::NaiveTime::MIN => (t.date().format("%Y-%m-%d").to_string(), None),
            Some(t) => (t.format("%Y-%m-%d %H:%M:%S").to_string(), None),
            None => (dt.to_string(), Some(format!("date {dt} out of range"))),
        },
        Data::DateTimeIso(s) | Data::DurationIso(s) => (s.clone(), None),
        Data::Error(e) => (format!("{e}"), Some(format!("{e}"))),
    }
}
