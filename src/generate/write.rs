//! Writing generated rows as the source systems deliver them: CSV in UTF-8 or GBK, JSON lines,
//! Excel workbooks.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime};

use crate::error::{Error, Result};

/// One field of a generated row, typed so each format can render it natively.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Text(String),
    Int(i64),
    /// An exact decimal: `unscaled / 10^scale`.
    Decimal(i64, u32),
    Date(NaiveDate),
    Timestamp(NaiveDateTime),
    Bool(bool),
    /// Bytes that are not valid text in the file's encoding (injected mess).
    Bytes(Vec<u8>),
}

impl Cell {
    /// The cell as text, the way a CSV export writes it.
    pub fn text(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Text(s) => s.clone(),
            Cell::Int(i) => i.to_string(),
            Cell::Decimal(unscaled, scale) => decimal_text(*unscaled, *scale),
            Cell::Date(d) => d.format("%Y-%m-%d").to_string(),
            Cell::Timestamp(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            Cell::Bool(b) => b.to_string(),
            Cell::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        }
    }
}

pub fn decimal_text(unscaled: i64, scale: u32) -> String {
    if scale == 0 {
        return unscaled.to_string();
    }
    let factor = 10i64.pow(scale);
    let sign = if unscaled < 0 { "-" } else { "" };
    let abs = unscaled.unsigned_abs();
    format!("{sign}{}.{:0width$}", abs / factor as u64, abs % factor as u64, width = scale as usize)
}

/// `1234567.80` → `1,234,567.80`.
pub fn grouped_decimal_text(unscaled: i64, scale: u32) -> String {
    let plain = decimal_text(unscaled, scale);
    let (sign, rest) = plain.strip_prefix('-').map_or(("", plain.as_str()), |r| ("-", r));
    let (whole, fraction) = rest.split_once('.').map_or((rest, None), |(w, f)| (w, Some(f)));
    let mut grouped = String::new();
    for (i, ch) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    match fraction {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// Where rows of one extract file go.
pub trait ExtractWriter {
    fn write_row(&mut self, row: &[Cell]) -> Result<()>;
    fn finish(self: Box<Self>) -> Result<u64>;
    /// Whether the format has room for another row (Excel sheets stop at 1 048 576 rows).
    fn is_full(&self) -> bool {
        false
    }
}

/// Rows per Excel file: below the sheet limit of 1 048 576 with the header.
pub const XLSX_MAX_ROWS: u32 = 1_000_000;

fn create(path: &Path) -> Result<BufWriter<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(BufWriter::with_capacity(1 << 20, File::create(path).map_err(|e| Error::io(path, e))?))
}

pub struct CsvWriter {
    out: BufWriter<File>,
    path: std::path::PathBuf,
    gbk: bool,
    line: Vec<u8>,
    rows: u64,
}

impl CsvWriter {
    pub fn create(path: &Path, headers: &[&str], gbk: bool) -> Result<CsvWriter> {
        let mut writer = CsvWriter { out: create(path)?, path: path.to_path_buf(), gbk, line: Vec::new(), rows: 0 };
        let header: Vec<Cell> = headers.iter().map(|h| Cell::Text(h.to_string())).collect();
        writer.write_line(&header)?;
        writer.rows = 0;
        Ok(writer)
    }

    fn push_text(&mut self, text: &str) {
        let needs_quotes = text.contains([',', '"', '\n', '\r']);
        let text = if needs_quotes { format!("\"{}\"", text.replace('"', "\"\"")) } else { text.to_string() };
        if self.gbk && !text.is_ascii() {
            let (encoded, _, _) = encoding_rs::GBK.encode(&text);
            self.line.extend_from_slice(&encoded);
        } else {
            self.line.extend_from_slice(text.as_bytes());
        }
    }

    fn write_line(&mut self, row: &[Cell]) -> Result<()> {
        self.line.clear();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                self.line.push(b',');
            }
            match cell {
                Cell::Bytes(bytes) => self.line.extend_from_slice(bytes),
                other => self.push_text(&other.text()),
            }
        }
        self.line.push(b'\n');
        self.rows += 1;
        self.out.write_all(&self.line).map_err(|e| Error::io(&self.path, e))
    }
}

impl ExtractWriter for CsvWriter {
    fn write_row(&mut self, row: &[Cell]) -> Result<()> {
        self.write_line(row)
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.rows)
    }
}

pub struct JsonLinesWriter {
    out: BufWriter<File>,
    path: std::path::PathBuf,
    keys: Vec<String>,
    line: Vec<u8>,
    rows: u64,
}

impl JsonLinesWriter {
    pub fn create(path: &Path, keys: &[&str]) -> Result<JsonLinesWriter> {
        Ok(JsonLinesWriter {
            out: create(path)?,
            path: path.to_path_buf(),
            keys: keys.iter().map(|k| serde_json::to_string(k).expect("string")).collect(),
            line: Vec::new(),
            rows: 0,
        })
    }
}

impl ExtractWriter for JsonLinesWriter {
    fn write_row(&mut self, row: &[Cell]) -> Result<()> {
        self.line.clear();
        self.line.push(b'{');
        for (i, (key, cell)) in self.keys.iter().zip(row).enumerate() {
            if i > 0 {
                self.line.push(b',');
            }
            self.line.extend_from_slice(key.as_bytes());
            self.line.push(b':');
            match cell {
                Cell::Null => self.line.extend_from_slice(b"null"),
                Cell::Int(i) => self.line.extend_from_slice(i.to_string().as_bytes()),
                Cell::Decimal(u, s) => self.line.extend_from_slice(decimal_text(*u, *s).as_bytes()),
                Cell::Bool(b) => self.line.extend_from_slice(b.to_string().as_bytes()),
                Cell::Bytes(bytes) => {
                    self.line.push(b'"');
                    self.line.extend_from_slice(bytes);
                    self.line.push(b'"');
                }
                other => self.line.extend_from_slice(serde_json::to_string(&other.text()).expect("string").as_bytes()),
            }
        }
        self.line.extend_from_slice(b"}\n");
        self.rows += 1;
        self.out.write_all(&self.line).map_err(|e| Error::io(&self.path, e))
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.out.flush().map_err(|e| Error::io(&self.path, e))?;
        Ok(self.rows)
    }
}

pub struct XlsxWriter {
    workbook: rust_xlsxwriter::Workbook,
    path: std::path::PathBuf,
    row: u32,
    date_format: rust_xlsxwriter::Format,
    timestamp_format: rust_xlsxwriter::Format,
}

impl XlsxWriter {
    /// `date` becomes the workbook's creation time, so the same inputs give the same bytes.
    pub fn create(path: &Path, headers: &[&str], date: NaiveDate) -> Result<XlsxWriter> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut workbook = rust_xlsxwriter::Workbook::new();
        workbook.set_properties(&rust_xlsxwriter::DocProperties::new().set_creation_datetime(&date));
        // Rows stream to a temporary file instead of accumulating in memory.
        let sheet = workbook.add_worksheet_with_constant_memory().map_err(|e| xlsx_error(path, e))?;
        sheet.set_name("export").map_err(|e| xlsx_error(path, e))?;
        for (col, header) in headers.iter().enumerate() {
            sheet.write_string(0, col as u16, *header).map_err(|e| xlsx_error(path, e))?;
        }
        Ok(XlsxWriter {
            workbook,
            path: path.to_path_buf(),
            row: 1,
            date_format: rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd"),
            timestamp_format: rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
        })
    }
}

fn xlsx_error(path: &Path, e: rust_xlsxwriter::XlsxError) -> Error {
    Error::Internal(format!("writing {}: {e}", path.display()))
}

impl ExtractWriter for XlsxWriter {
    fn write_row(&mut self, row: &[Cell]) -> Result<()> {
        let sheet = self.workbook.worksheet_from_index(0).map_err(|e| xlsx_error(&self.path, e))?;
        for (col, cell) in row.iter().enumerate() {
            let col = col as u16;
            let written = match cell {
                Cell::Null => Ok(&mut *sheet),
                Cell::Text(s) => sheet.write_string(self.row, col, s),
                Cell::Int(i) => sheet.write_number(self.row, col, *i as f64),
                Cell::Decimal(u, s) => sheet.write_number(self.row, col, *u as f64 / 10f64.powi(*s as i32)),
                Cell::Date(d) => sheet.write_datetime_with_format(self.row, col, d, &self.date_format),
                Cell::Timestamp(t) => sheet.write_datetime_with_format(self.row, col, t, &self.timestamp_format),
                Cell::Bool(b) => sheet.write_boolean(self.row, col, *b),
                Cell::Bytes(b) => sheet.write_string(self.row, col, String::from_utf8_lossy(b)),
            };
            written.map_err(|e| xlsx_error(&self.path, e))?;
        }
        self.row += 1;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<u64> {
        self.workbook.save(&self.path).map_err(|e| xlsx_error(&self.path, e))?;
        Ok(self.row as u64 - 1)
    }

    fn is_full(&self) -> bool {
        self.row > XLSX_MAX_ROWS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_render_exactly() {
        assert_eq!(decimal_text(123456, 2), "1234.56");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(1500, 4), "0.1500");
        assert_eq!(grouped_decimal_text(123456789, 2), "1,234,567.89");
        assert_eq!(grouped_decimal_text(-99999, 2), "-999.99");
    }
}
