//! Excel workbooks (`.xlsx`, and `.xls`/`.ods` through calamine). The first row of the sheet is the
//! header; cells are rendered as the text Excel would show, then typed like any other field.

use std::io::{Cursor, Read};
use std::sync::Arc;

use calamine::{Data, DataType, Reader, Sheets};
use chrono::{Datelike, Timelike};

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
    // .xlsx streams cell by cell: a whole sheet as a calamine Range held ≈ 0.7 GB for 1.3M rows.
    let end = FileEnd { truncated: false, bytes: size };
    let sheet_error =
        |e: &dyn std::fmt::Display| ReadStop::file(file.file, format!("cannot read sheet `{sheet}`: {e}"));
    match &mut workbook {
        Sheets::Xlsx(xlsx) => {
            let mut cells = xlsx.worksheet_cells_reader(&sheet).map_err(|e| sheet_error(&e))?;
            let mut next = Next::Read;
            let mut rows =
                std::iter::from_fn(|| streamed_row(&mut cells, &mut next).map_err(|e| sheet_error(&e)).transpose());
            emit_rows(&mut rows, file, &sheet, end, emit)
        }
        other => {
            let range = other.worksheet_range(&sheet).map_err(|e| sheet_error(&e))?;
            let (first_row, first_col) = range.start().unwrap_or((0, 0));
            let mut rows = range.rows().enumerate().map(|(i, cells)| {
                let placed = cells.iter().enumerate().map(|(c, cell)| (first_col + c as u32, cell.clone()));
                Ok((first_row + i as u32, placed.collect()))
            });
            emit_rows(&mut rows, file, &sheet, end, emit)
        }
    }
}

/// A row of a sheet: its 0-based index and its cells with their 0-based columns.
type SheetRow = (u32, Vec<(u32, Data)>);

/// Where a streamed sheet stands between rows.
enum Next<'a> {
    Read,
    /// The first cell of the next row, read while finishing the previous one.
    Cell(calamine::Cell<calamine::DataRef<'a>>),
    /// `</sheetData>` was read; reading on would be an error.
    End,
}

/// The cells of the next row in a streamed sheet.
fn streamed_row<'a, RS: std::io::Read + std::io::Seek>(
    cells: &mut calamine::XlsxCellReader<'a, RS>,
    next: &mut Next<'a>,
) -> Result<Option<SheetRow>, calamine::XlsxError> {
    let first = match std::mem::replace(next, Next::End) {
        Next::Cell(cell) => cell,
        Next::Read => match cells.next_cell()? {
            Some(cell) => cell,
            None => return Ok(None),
        },
        Next::End => return Ok(None),
    };
    let (row, col) = first.get_position();
    let mut placed = vec![(col, Data::from(first.get_value().clone()))];
    while let Some(cell) = cells.next_cell()? {
        if cell.get_position().0 != row {
            *next = Next::Cell(cell);
            break;
        }
        placed.push((cell.get_position().1, Data::from(cell.get_value().clone())));
    }
    Ok(Some((row, placed)))
}

/// The first row with a value is the header and says where the table starts; every later row
/// with a value is a record, its line the Excel row number.
fn emit_rows(
    rows: &mut dyn Iterator<Item = Result<SheetRow, ReadStop>>,
    file: &FileInput<'_>,
    sheet: &str,
    end: FileEnd,
    emit: &mut dyn FnMut(super::Chunk) -> Result<(), Hangup>,
) -> Result<FileEnd, ReadStop> {
    let has_value = |cells: &[(u32, Data)]| cells.iter().any(|(_, c)| !c.is_empty());
    let header_cells = loop {
        match rows.next().transpose()? {
            Some((_, cells)) if has_value(&cells) => break cells,
            Some(_) => continue,
            None => return Err(ReadStop::file(file.file, format!("sheet `{sheet}` is empty: no header row"))),
        }
    };
    let start_col = header_cells.iter().find(|(_, c)| !c.is_empty()).map_or(0, |(col, _)| *col);
    let header_width =
        header_cells.iter().map(|(col, _)| col.saturating_sub(start_col) as usize + 1).max().unwrap_or(0);
    let header: Vec<String> =
        dense(header_cells, start_col, header_width).iter().map(|c| cell_text(c).0.trim().to_string()).collect();
    // Trailing empty header cells are formatting, not columns.
    let width = header.iter().rposition(|h| !h.is_empty()).map_or(0, |p| p + 1);
    let positions = match_header(&header[..width], file.fields).map_err(|m| ReadStop::file(file.file, m))?;
    let shape = FileShape { file: Arc::from(file.file), positions, field_count: width };

    let mut chunks = ChunkBuilder::new(file.file_index, Arc::new(shape), true, emit);
    let mut raw = String::new();
    while let Some((row, cells)) = rows.next().transpose()? {
        if !has_value(&cells) {
            continue;
        }
        raw.clear();
        let mut problem = cells.iter().find(|(col, c)| *col < start_col && !c.is_empty()).map(|(col, _)| {
            FieldError::new(reason::INVALID_VALUE, format!("a value in column {} is left of the header", col + 1))
        });
        for (col, cell) in dense(cells, start_col, width).iter().enumerate() {
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
        // Excel numbers rows from 1.
        chunks.end_record(row as u64 + 1, raw.as_bytes(), problem)?;
    }
    chunks.finish(end)?;
    Ok(end)
}

/// The cells from `start_col` on, one per column up to `width` (empty where the sheet has none).
fn dense(cells: Vec<(u32, Data)>, start_col: u32, width: usize) -> Vec<Data> {
    let mut row = vec![Data::Empty; width];
    for (col, cell) in cells {
        if let Some(slot) = col.checked_sub(start_col).and_then(|c| row.get_mut(c as usize)) {
            *slot = cell;
        }
    }
    row
}

/// The text of a cell as Excel shows it, and the error if the cell holds one (`#N/A`, …).
fn cell_text(cell: &Data) -> (String, Option<String>) {
    match cell {
        Data::Empty => (String::new(), None),
        Data::String(s) => (s.clone(), None),
        Data::Int(i) => (i.to_string(), None),
        Data::Float(f) => (excel_number_text(*f), None),
        Data::Bool(b) => (b.to_string(), None),
        // Written field by field: chrono's `format` re-reads its format string for every cell.
        Data::DateTime(dt) => match dt.as_datetime() {
            Some(t) => {
                let date = format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day());
                if t.time() == chrono::NaiveTime::MIN {
                    (date, None)
                } else {
                    (format!("{date} {:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()), None)
                }
            }
            None => (dt.to_string(), Some(format!("date {dt} out of range"))),
        },
        Data::DateTimeIso(s) | Data::DurationIso(s) => (s.clone(), None),
        Data::Error(e) => (format!("{e}"), Some(format!("{e}"))),
    }
}
