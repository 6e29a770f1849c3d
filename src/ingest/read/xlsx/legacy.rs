//! `.xls`, `.xlsb` and `.ods` workbooks, read by calamine. calamine holds a sheet whole, as a dense
//! range sized by what the file declares (a dimension record, a repeat count, its farthest cell):
//! a tiny crafted file can ask for terabytes, and an allocation that fails aborts the process.
//! So the keymart binary reads these workbooks in a child process of itself (`keymart
//! --read-workbook`) whose memory (RLIMIT_DATA: heap and anonymous mappings, not the binary's
//! own pages) is bounded by `limits.max_workbook_memory_bytes`. A
//! workbook that needs more, or on which calamine panics, ends the child and refuses its file with
//! one line; the night goes on. The child sends the sheet's rows as JSON lines.
//!
//! Without the binary (the library's unit tests) the sheet is read in this process.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::OnceLock;

use calamine::{CellErrorType, Data, ExcelDateTime, ExcelDateTimeType, Range, Reader};
use serde::{Deserialize, Serialize};

/// The argument that makes the keymart binary a workbook reader.
pub const CHILD_ARG: &str = "--read-workbook";

static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Read these workbooks in child processes of `binary` (keymart's `main` passes itself).
pub fn isolate_in(binary: PathBuf) {
    let _ = BINARY.set(binary);
}

/// Why a workbook's sheet could not be read.
pub enum Failure {
    NotReadable(String),
    NoSheet,
    Sheet {
        sheet: String,
        message: String,
    },
    /// The child needed more memory than it may have.
    Memory,
    /// The child ended otherwise (a panic in calamine): its last words.
    Child(String),
}

/// What the child says, one JSON line each: first the sheet (or why there is none), then its rows.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Message {
    NotReadable(String),
    NoSheet,
    SheetError {
        sheet: String,
        message: String,
    },
    Sheet(String),
    /// A row's 0-based index and its cells with their 0-based columns.
    Row(u32, Vec<(u32, Cell)>),
}

/// A cell as calamine read it, in a form JSON carries exactly.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Cell {
    Empty,
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    DateTime { value: f64, duration: bool, is_1904: bool },
    DateTimeIso(String),
    DurationIso(String),
    Error(String),
}

const CELL_ERRORS: [CellErrorType; 8] = [
    CellErrorType::Div0,
    CellErrorType::NA,
    CellErrorType::Name,
    CellErrorType::Null,
    CellErrorType::Num,
    CellErrorType::Ref,
    CellErrorType::Value,
    CellErrorType::GettingData,
];

impl From<&Data> for Cell {
    fn from(data: &Data) -> Cell {
        match data {
            Data::Empty => Cell::Empty,
            Data::Int(v) => Cell::Int(*v),
            Data::Float(v) => Cell::Float(*v),
            Data::String(v) => Cell::Text(v.clone()),
            Data::Bool(v) => Cell::Bool(*v),
            Data::DateTime(d) => {
                let kind = if d.is_duration() { ExcelDateTimeType::TimeDelta } else { ExcelDateTimeType::DateTime };
                // calamine keeps the workbook's date system private; its equality tells it.
                let is_1904 = *d == ExcelDateTime::new(d.as_f64(), kind, true);
                Cell::DateTime { value: d.as_f64(), duration: d.is_duration(), is_1904 }
            }
            Data::DateTimeIso(v) => Cell::DateTimeIso(v.clone()),
            Data::DurationIso(v) => Cell::DurationIso(v.clone()),
            Data::Error(e) => Cell::Error(e.to_string()),
        }
    }
}

impl From<Cell> for Data {
    fn from(cell: Cell) -> Data {
        match cell {
            Cell::Empty => Data::Empty,
            Cell::Int(v) => Data::Int(v),
            Cell::Float(v) => Data::Float(v),
            Cell::Text(v) => Data::String(v),
            Cell::Bool(v) => Data::Bool(v),
            Cell::DateTime { value, duration, is_1904 } => {
                let kind = if duration { ExcelDateTimeType::TimeDelta } else { ExcelDateTimeType::DateTime };
                Data::DateTime(ExcelDateTime::new(value, kind, is_1904))
            }
            Cell::DateTimeIso(v) => Data::DateTimeIso(v),
            Cell::DurationIso(v) => Data::DurationIso(v),
            Cell::Error(shown) => {
                CELL_ERRORS.into_iter().find(|e| e.to_string() == shown).map_or(Data::String(shown), Data::Error)
            }
        }
    }
}

/// A sheet row: its 0-based index and its cells with their 0-based columns.
pub type SheetRow = (u32, Vec<(u32, Data)>);

/// One sheet of a workbook, row by row.
pub struct Sheet {
    pub name: String,
    rows: Rows,
}

enum Rows {
    InProcess {
        range: Range<Data>,
        next: usize,
    },
    /// `stderr`: what the child wrote there, until its failure is read.
    Child {
        child: Child,
        lines: BufReader<ChildStdout>,
        stderr: Option<std::thread::JoinHandle<String>>,
    },
}

/// Open the sheet named `wanted` (the first when `None`) of a workbook's bytes.
pub fn open(bytes: Vec<u8>, wanted: Option<&str>, memory_bytes: u64) -> Result<Sheet, Failure> {
    match BINARY.get() {
        None => {
            let (name, range) = read_range(bytes, wanted)?;
            Ok(Sheet { name, rows: Rows::InProcess { range, next: 0 } })
        }
        Some(binary) => open_in_child(binary, bytes, wanted, memory_bytes),
    }
}

fn read_range(bytes: Vec<u8>, wanted: Option<&str>) -> Result<(String, Range<Data>), Failure> {
    let mut workbook = calamine::open_workbook_auto_from_rs(std::io::Cursor::new(bytes))
        .map_err(|e| Failure::NotReadable(e.to_string()))?;
    let name = match wanted {
        Some(name) => name.to_string(),
        None => workbook.sheet_names().first().cloned().ok_or(Failure::NoSheet)?,
    };
    let range =
        workbook.worksheet_range(&name).map_err(|e| Failure::Sheet { sheet: name.clone(), message: e.to_string() })?;
    Ok((name, range))
}

fn open_in_child(binary: &PathBuf, bytes: Vec<u8>, wanted: Option<&str>, memory_bytes: u64) -> Result<Sheet, Failure> {
    let mut command = Command::new(binary);
    command.arg(CHILD_ARG).args(wanted).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    bound_memory(&mut command, memory_bytes);
    let mut child = command.spawn().map_err(|e| Failure::Child(format!("cannot start the workbook reader: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    // The child reads the whole workbook before it writes: no deadlock on full pipes, and a
    // child that dies early only breaks this pipe.
    std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let mut stderr = child.stderr.take().expect("piped");
    let stderr = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut text);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        String::from_utf8_lossy(&text).into_owned()
    });
    let lines = BufReader::new(child.stdout.take().expect("piped"));
    let mut sheet = Sheet { name: String::new(), rows: Rows::Child { child, lines, stderr: Some(stderr) } };
    match sheet.next_message()? {
        Some(Message::Sheet(name)) => sheet.name = name,
        Some(Message::NotReadable(message)) => return Err(Failure::NotReadable(message)),
        Some(Message::NoSheet) => return Err(Failure::NoSheet),
        Some(Message::SheetError { sheet, message }) => return Err(Failure::Sheet { sheet, message }),
        Some(Message::Row(..)) | None => return Err(Failure::Child("the workbook reader said nothing".into())),
    }
    Ok(sheet)
}

/// RLIMIT_DATA in the child, before it runs: an allocation past it fails, and the child aborts.
fn bound_memory(command: &mut Command, bytes: u64) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent's state.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
                if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

impl Sheet {
    /// The next row with its 0-based index and cells (0-based columns); `None` after the last.
    pub fn next_row(&mut self) -> Result<Option<SheetRow>, Failure> {
        if let Rows::InProcess { range, next } = &mut self.rows {
            let (first_row, first_col) = range.start().unwrap_or((0, 0));
            let (height, width) = range.get_size();
            if *next >= height {
                return Ok(None);
            }
            let cell = |c: usize| range.get((*next, c)).cloned().unwrap_or_default();
            let placed = (0..width).map(|c| (first_col.saturating_add(c as u32), cell(c)));
            let row = (first_row.saturating_add(*next as u32), placed.collect());
            *next += 1;
            return Ok(Some(row));
        }
        match self.next_message()? {
            None => Ok(None),
            Some(Message::Row(row, cells)) => {
                Ok(Some((row, cells.into_iter().map(|(col, cell)| (col, Data::from(cell))).collect())))
            }
            Some(_) => Err(Failure::Child("the workbook reader said something out of turn".into())),
        }
    }

    /// The child's next line; `None` once it has ended well.
    fn next_message(&mut self) -> Result<Option<Message>, Failure> {
        let Rows::Child { child, lines, stderr } = &mut self.rows else { return Ok(None) };
        let mut line = String::new();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => {}
            Ok(_) => {
                return serde_json::from_str(&line)
                    .map(Some)
                    .map_err(|e| Failure::Child(format!("the workbook reader's output is not readable: {e}")));
            }
        }
        let status = child.wait().map_err(|e| Failure::Child(format!("waiting for the workbook reader: {e}")))?;
        if status.success() {
            return Ok(None);
        }
        let said = stderr.take().and_then(|said| said.join().ok()).unwrap_or_default();
        if said.contains("memory allocation") || said.contains("capacity overflow") {
            return Err(Failure::Memory);
        }
        let last = said.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("no message").to_string();
        Err(Failure::Child(format!("the workbook reader ended ({status}): {last}")))
    }
}

impl Drop for Sheet {
    fn drop(&mut self) {
        if let Rows::Child { child, .. } = &mut self.rows {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `keymart --read-workbook [SHEET]`: the workbook's bytes on stdin, its sheet's rows on stdout.
pub fn child_main(wanted: Option<&str>) -> ExitCode {
    let mut bytes = Vec::new();
    if std::io::stdin().read_to_end(&mut bytes).is_err() {
        return ExitCode::FAILURE;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut say = |message: &Message| -> std::io::Result<()> {
        serde_json::to_writer(&mut out, message)?;
        out.write_all(b"\n")
    };
    let said = match read_range(bytes, wanted) {
        Err(Failure::NotReadable(message)) => say(&Message::NotReadable(message)),
        Err(Failure::Sheet { sheet, message }) => say(&Message::SheetError { sheet, message }),
        Err(_) => say(&Message::NoSheet),
        Ok((name, range)) => say(&Message::Sheet(name)).and_then(|()| {
            let (first_row, first_col) = range.start().unwrap_or((0, 0));
            for (i, cells) in range.rows().enumerate() {
                let placed =
                    cells.iter().enumerate().map(|(c, cell)| (first_col.saturating_add(c as u32), Cell::from(cell)));
                say(&Message::Row(first_row.saturating_add(i as u32), placed.collect()))?;
            }
            Ok(())
        }),
    };
    match said.and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader stopped reading (a limit breached in a row): nothing more to say.
        Err(_) => ExitCode::SUCCESS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_cell_crosses_to_the_parent_unchanged() {
        let cells = [
            Data::Empty,
            Data::Int(-7),
            Data::Float(0.1 + 0.2),
            Data::String("客户 \"A\"\n".into()),
            Data::Bool(true),
            Data::DateTime(ExcelDateTime::new(45_000.25, ExcelDateTimeType::DateTime, false)),
            Data::DateTime(ExcelDateTime::new(43_538.5, ExcelDateTimeType::DateTime, true)),
            Data::DateTime(ExcelDateTime::new(1.5, ExcelDateTimeType::TimeDelta, false)),
            Data::DateTimeIso("2024-06-01T08:00:00".into()),
            Data::DurationIso("PT1H".into()),
            Data::Error(CellErrorType::Div0),
            Data::Error(CellErrorType::GettingData),
        ];
        for data in cells {
            let line = serde_json::to_string(&Cell::from(&data)).unwrap();
            let back: Cell = serde_json::from_str(&line).unwrap();
            assert_eq!(Data::from(back), data, "{line}");
        }
    }
}
