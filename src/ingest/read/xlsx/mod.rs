//! Excel workbooks: `.xlsx` by keymart's own streaming reader (`ooxml`), `.xls`, `.xlsb` and
//! `.ods` through calamine. The first row of the sheet with a value is the header; cells are
//! rendered as the text Excel would show, then typed like any other field.

use std::io::Read;
use std::sync::Arc;

use calamine::DataType;
use chrono::{Datelike, Timelike};

use super::csv::FileInput;
use super::{ChunkBuilder, FileEnd, FileShape, Hangup, Limit, ReadStop, match_header};
use crate::config::XlsxOptions;
use crate::config::contract::reason;
use crate::ingest::values::{FieldError, push_excel_number};

pub mod legacy;
mod ooxml;
mod xml;

pub fn read(
    input: &mut dyn Read,
    file: &FileInput<'_>,
    options: &XlsxOptions,
    emit: &mut dyn FnMut(super::Chunk) -> Result<(), Hangup>,
) -> Result<FileEnd, ReadStop> {
    // A zip is read from its end, so the workbook is held whole: up to its limit, and never
    // sized by the file's length as the store reports it (a sparse file can claim anything).
    let max_bytes = file.limits.workbook_bytes;
    let mut bytes = Vec::new();
    input
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| ReadStop::file(file.file, format!("cannot read: {e}")))?;
    (file.on_bytes)(bytes.len() as u64);
    if bytes.len() as u64 > max_bytes {
        return Err(ReadStop::file(file.file, Limit::WorkbookBytes.breached("the workbook's size", max_bytes)));
    }
    let end = FileEnd { truncated: false, bytes: bytes.len() as u64 };
    if bytes.is_empty() {
        return Err(ReadStop::file(file.file, "empty file (0 bytes)"));
    }
    let not_readable = |e: &dyn std::fmt::Display| {
        ReadStop::file(file.file, format!("not a readable workbook (truncated or not Excel?): {e}"))
    };
    let sheet_error =
        |sheet: &str, e: &dyn std::fmt::Display| ReadStop::file(file.file, format!("cannot read sheet `{sheet}`: {e}"));

    // .xlsx: keymart's own reader, streaming the sheet (`ooxml`).
    if let Some(package) = ooxml::Package::open(&bytes, file.limits) {
        let mut package = package.map_err(|e| not_readable(&e))?;
        let names: Vec<&str> = package.workbook.sheets.iter().map(|(name, _)| name.as_str()).collect();
        let names_shown = || crate::ingest::reject::quoted(&names.join(", ")).into_owned();
        let sheet = match &options.sheet {
            Some(wanted) => names.iter().position(|name| name == wanted).ok_or_else(|| {
                ReadStop::file(file.file, format!("no sheet `{wanted}` in the workbook (it has: {})", names_shown()))
            })?,
            None if names.is_empty() => return Err(ReadStop::file(file.file, "the workbook has no sheet")),
            None => 0,
        };
        let (name, part) = package.workbook.sheets[sheet].clone();
        let mut rows = Rows::new(file, &name, emit);
        package.for_each_row(&part, |row, cells| rows.row(row, cells), |e| sheet_error(&name, &e))?;
        return rows.finish(end);
    }

    // .xls, .xlsb, .ods: calamine, in a child process with bounded memory (`legacy`).
    let memory = file.limits.workbook_memory_bytes;
    let failed = |failure: legacy::Failure| match failure {
        legacy::Failure::NotReadable(message) => not_readable(&message),
        legacy::Failure::NoSheet => ReadStop::file(file.file, "the workbook has no sheet"),
        legacy::Failure::Sheet { sheet, message } => sheet_error(&sheet, &message),
        legacy::Failure::Memory => ReadStop::file(
            file.file,
            Limit::WorkbookMemory.breached("the memory reading this workbook's sheet needs", memory),
        ),
        legacy::Failure::Child(message) => not_readable(&message),
    };
    let mut sheet = legacy::open(bytes, options.sheet.as_deref(), memory).map_err(failed)?;
    let name = sheet.name.clone();
    let mut rows = Rows::new(file, &name, emit);
    while let Some((row, cells)) = sheet.next_row().map_err(failed)? {
        rows.row(row, &cells)?;
    }
    rows.finish(end)
}

/// A sheet's rows into chunks: the first row with a value is the header and says where the table
/// starts; every later row with a value is a record, its line the Excel row number.
struct Rows<'r, 'e> {
    file: &'r FileInput<'r>,
    sheet: &'r str,
    /// Until the header is found.
    emit: Option<&'e mut dyn FnMut(super::Chunk) -> Result<(), Hangup>>,
    table: Option<Table<'e>>,
    /// The row as comma-separated text (what a reject keeps); each field is written into it once
    /// and handed on as its slice.
    raw: String,
}

/// Where the table is, once its header has been read.
struct Table<'e> {
    chunks: ChunkBuilder<'e>,
    header: Vec<String>,
    start_col: u32,
    width: usize,
}

impl<'r, 'e> Rows<'r, 'e> {
    fn new(
        file: &'r FileInput<'r>,
        sheet: &'r str,
        emit: &'e mut dyn FnMut(super::Chunk) -> Result<(), Hangup>,
    ) -> Self {
        Rows { file, sheet, emit: Some(emit), table: None, raw: String::new() }
    }

    /// One row: its 0-based index and its cells with their 0-based columns.
    fn row<C: DataType>(&mut self, row: u32, cells: &[(u32, C)]) -> Result<(), ReadStop> {
        if !cells.iter().any(|(_, c)| !c.is_empty()) {
            return Ok(());
        }
        let Some(table) = &mut self.table else {
            self.table = Some(self.header(cells)?);
            return Ok(());
        };
        let raw = &mut self.raw;
        raw.clear();
        let mut problem = cells.iter().find(|(col, c)| *col < table.start_col && !c.is_empty()).map(|(col, _)| {
            FieldError::new(reason::INVALID_VALUE, format!("a value in column {} is left of the header", col + 1))
        });
        for (col, cell) in dense(cells, table.start_col, table.width).into_iter().enumerate() {
            if col > 0 {
                raw.push(',');
            }
            let field_start = raw.len();
            let cell_error = cell.and_then(|c| push_cell_text(raw, c));
            table.chunks.push_field(&raw.as_bytes()[field_start..]);
            // Shared strings are stored once and may be shown in every cell: a row's text is
            // bounded by itself, not by its XML.
            if raw.len() > self.file.limits.record_bytes {
                let max = self.file.limits.record_bytes;
                let what = format!("sheet `{}` row {}: its text (more than {max} bytes)", self.sheet, row as u64 + 1);
                return Err(ReadStop::file(
                    self.file.file,
                    Limit::RecordBytes.breached(what, self.file.limits.record_bytes as u64),
                ));
            }
            if let (Some(e), None) = (cell_error, &problem) {
                let name = &table.header[col];
                problem = Some(match e {
                    CellProblem::ErrorValue(_) => {
                        FieldError::new(reason::INVALID_VALUE, format!("column {name}: Excel error cell {e}"))
                    }
                    CellProblem::DateOutOfRange(_) => {
                        FieldError::new(reason::OUT_OF_RANGE, format!("column {name}: {e}"))
                    }
                });
            }
        }
        // Excel numbers rows from 1.
        table.chunks.end_record(row as u64 + 1, raw.as_bytes(), problem)?;
        Ok(())
    }

    fn header<C: DataType>(&mut self, cells: &[(u32, C)]) -> Result<Table<'e>, ReadStop> {
        let start_col = cells.iter().find(|(_, c)| !c.is_empty()).map_or(0, |(col, _)| *col);
        // The header's last column with a value: the width of every row after it.
        let header_width = cells
            .iter()
            .filter(|(_, c)| !c.is_empty())
            .map(|(col, _)| col.saturating_sub(start_col) as usize + 1)
            .max()
            .unwrap_or(0);
        let max_columns = self.file.limits.columns;
        if header_width > max_columns {
            let what = format!("sheet `{}`: a header {header_width} columns wide", self.sheet);
            return Err(ReadStop::file(self.file.file, Limit::Columns.breached(what, max_columns as u64)));
        }
        let mut header = Vec::with_capacity(header_width);
        let mut header_bytes = 0;
        for cell in dense(cells, start_col, header_width) {
            let mut text = String::new();
            if let Some(c) = cell {
                push_cell_text(&mut text, c);
            }
            header_bytes += text.len();
            if header_bytes > self.file.limits.record_bytes {
                let what = format!("sheet `{}`: the header's text (more than {header_bytes} bytes)", self.sheet);
                return Err(ReadStop::file(
                    self.file.file,
                    Limit::RecordBytes.breached(what, self.file.limits.record_bytes as u64),
                ));
            }
            header.push(text.trim().to_string());
        }
        // Trailing empty header cells are formatting, not columns.
        let width = header.iter().rposition(|h| !h.is_empty()).map_or(0, |p| p + 1);
        let positions =
            match_header(&header[..width], self.file.fields).map_err(|m| ReadStop::file(self.file.file, m))?;
        let shape = FileShape { file: Arc::from(self.file.file), positions, field_count: width };
        let emit = self.emit.take().expect("the header is read once");
        Ok(Table {
            chunks: ChunkBuilder::new(self.file.file_index, Arc::new(shape), true, self.file.limits.rows, emit),
            header,
            start_col,
            width,
        })
    }

    fn finish(self, end: FileEnd) -> Result<FileEnd, ReadStop> {
        let Some(table) = self.table else {
            return Err(ReadStop::file(self.file.file, format!("sheet `{}` is empty: no header row", self.sheet)));
        };
        table.chunks.finish(end)?;
        Ok(end)
    }
}

/// The cells from `start_col` on, one per column up to `width` (none where the sheet has none).
fn dense<C>(cells: &[(u32, C)], start_col: u32, width: usize) -> Vec<Option<&C>> {
    let mut row = vec![None; width];
    for (col, cell) in cells {
        if let Some(slot) = col.checked_sub(start_col).and_then(|c| row.get_mut(c as usize)) {
            *slot = Some(cell);
        }
    }
    row
}

/// Write the text of a cell as Excel shows it onto `out` (nothing for an empty cell); the error if
/// the cell holds one (`#N/A`, …) or a date out of range. Either calamine cell type (owned `Data`
/// from a Range, borrowed `DataRef` from a streamed .xlsx) through calamine's `DataType`, so a
/// shared string is read in place, never copied.
fn push_cell_text(out: &mut String, cell: &impl DataType) -> Option<CellProblem> {
    if let Some(text) = cell.get_string().or_else(|| cell.get_datetime_iso()).or_else(|| cell.get_duration_iso()) {
        out.push_str(text);
    } else if let Some(f) = cell.get_float() {
        push_excel_number(out, f);
    } else if let Some(i) = cell.get_int() {
        out.push_str(itoa::Buffer::new().format(i));
    } else if let Some(dt) = cell.get_datetime() {
        // Digit by digit: formatting machinery per cell was a tenth of reading a sheet. calamine
        // turns the serial into milliseconds as an i64 and panics past its range: only a serial
        // within chrono's range of days (±262,143 years) is turned into a date.
        const MAX_SERIAL_DAYS: f64 = 1e8;
        let serial = dt.as_f64();
        let in_range = serial.is_finite() && serial.abs() < MAX_SERIAL_DAYS;
        let Some(t) = in_range.then(|| dt.as_datetime()).flatten() else {
            out.push_str(&serial_text(serial));
            return Some(CellProblem::DateOutOfRange(serial));
        };
        push_padded(out, t.year(), 4);
        out.push('-');
        push_padded(out, t.month() as i32, 2);
        out.push('-');
        push_padded(out, t.day() as i32, 2);
        if t.time() != chrono::NaiveTime::MIN {
            for (separator, part) in [(' ', t.hour()), (':', t.minute()), (':', t.second())] {
                out.push(separator);
                push_padded(out, part as i32, 2);
            }
        }
    } else if let Some(b) = cell.get_bool() {
        out.push_str(if b { "true" } else { "false" });
    } else if let Some(e) = cell.get_error() {
        let text = e.to_string();
        out.push_str(&text);
        return Some(CellProblem::ErrorValue(text));
    }
    None
}

/// What is wrong with a cell's value: it holds an Excel error (`#N/A`, …), or a date serial
/// outside the dates a timestamp can hold.
#[derive(Debug, Clone, PartialEq)]
enum CellProblem {
    ErrorValue(String),
    DateOutOfRange(f64),
}

impl std::fmt::Display for CellProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CellProblem::ErrorValue(text) => f.write_str(text),
            CellProblem::DateOutOfRange(serial) => write!(f, "date {} out of range", serial_text(*serial)),
        }
    }
}

/// A date serial as text: in exponent form when it is too large to write out (1e300 would be
/// 301 digits).
fn serial_text(serial: f64) -> String {
    if serial.abs() < 1e15 || !serial.is_finite() { serial.to_string() } else { format!("{serial:e}") }
}

/// `value` with leading zeros to `width` digits, as `{:0width$}` writes it.
fn push_padded(out: &mut String, value: i32, width: usize) {
    let mut digits = itoa::Buffer::new();
    let text = digits.format(value.unsigned_abs());
    if value < 0 {
        out.push('-');
    }
    for _ in text.len()..width.saturating_sub(usize::from(value < 0)) {
        out.push('0');
    }
    out.push_str(text);
}

#[cfg(test)]
mod tests {
    use calamine::{CellErrorType, Data, ExcelDateTime, ExcelDateTimeType};

    use super::*;

    fn shown(cell: Data) -> (String, Option<String>) {
        let mut out = String::new();
        let error = push_cell_text(&mut out, &cell).map(|e| e.to_string());
        (out, error)
    }

    #[test]
    fn cells_read_as_excel_shows_them() {
        let serial = |value| Data::DateTime(ExcelDateTime::new(value, ExcelDateTimeType::DateTime, false));
        // 45657 is 2024-12-31 in Excel's 1900 date system; .75 of a day is 18:00.
        assert_eq!(shown(serial(45657.0)), ("2024-12-31".into(), None));
        assert_eq!(shown(serial(45657.75)), ("2024-12-31 18:00:00".into(), None));
        assert_eq!(shown(serial(45657.0 + (9.0 * 3600.0 + 5.0 * 60.0 + 7.0) / 86400.0)).0, "2024-12-31 09:05:07");
        assert_eq!(shown(serial(-1e9)).1, Some("date -1000000000 out of range".into()));
        assert_eq!(shown(Data::Int(-42)), ("-42".into(), None));
        assert_eq!(shown(Data::Float(4.0)), ("4".into(), None));
        assert_eq!(shown(Data::Bool(true)), ("true".into(), None));
        assert_eq!(shown(Data::Error(CellErrorType::NA)), ("#N/A".into(), Some("#N/A".into())));
        assert_eq!(shown(Data::Empty), (String::new(), None));
    }

    #[test]
    fn padding_matches_the_format_macro() {
        for (value, width) in [(7, 2), (12, 2), (2024, 4), (99, 4), (-5, 4), (123, 2)] {
            let mut out = String::new();
            push_padded(&mut out, value, width);
            assert_eq!(out, format!("{value:0width$}"));
        }
    }
}
