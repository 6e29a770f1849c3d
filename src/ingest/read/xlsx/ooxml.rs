//! .xlsx read by keymart itself: the package's workbook, relationships, shared strings and number
//! formats, then the sheet streamed row by row with the tokenizer in `xml`. Cells come out as
//! calamine's `DataRef` values, typed by the same rules calamine applies, so they are shown by the
//! same code as the workbooks calamine still reads (.xls, .xlsb, .ods), and a test reads the same
//! workbooks both ways and compares every cell.
//!
//! Why: calamine's cell reader was the one thread a contacts load waited on (an event per tag,
//! every name checked, a String per inline string); this reader hands out slices of the inflated
//! sheet and borrows every text that needs no decoding.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{Cursor, Read};

use calamine::{DataRef, ExcelDateTime, ExcelDateTimeType};
use zip::ZipArchive;

use super::xml::{self, Incomplete, Token, Tokens};
use crate::ingest::read::{Limit, ReadLimits};

/// Inflated sheet bytes read at a time.
const BLOCK: usize = 1 << 20;

/// The last row and column of a sheet (`XFD1048576`), 1-based: a reference beyond them refuses
/// the file before it sizes anything.
const MAX_ROW: u32 = 1_048_576;
const MAX_COLUMN: u32 = 16_384;

/// Inflated bytes of a part before its inflate ratio is checked: small parts compress unevenly.
const RATIO_FREE_BYTES: u64 = 1 << 20;

/// How a cell's number is shown, by its style's number format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumberKind {
    Plain,
    DateTime,
    Duration,
}

/// An opened .xlsx: its parts by name, and what every sheet needs from the workbook.
pub struct Package<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
    /// Part names as stored, by their lowercase form with `/` separators: OOXML part names are
    /// compared without case.
    parts: HashMap<String, String>,
    pub workbook: Workbook,
    limits: ReadLimits,
    /// Inflated bytes read at a time from a sheet (a parameter for the tests).
    block: usize,
}

pub struct Workbook {
    /// Sheet names and their parts, in the workbook's order.
    pub sheets: Vec<(String, String)>,
    is_1904: bool,
    strings: Vec<String>,
    /// By style (`s` of a cell, an index into `cellXfs`).
    number_kinds: Vec<NumberKind>,
}

impl<'a> Package<'a> {
    /// `None` when `bytes` are not an OOXML spreadsheet with an XML workbook (an .xls, .xlsb or
    /// .ods, or not a workbook at all): calamine reads those, or says what is wrong.
    pub fn open(bytes: &'a [u8], limits: ReadLimits) -> Option<Result<Package<'a>, String>> {
        let archive = ZipArchive::new(Cursor::new(bytes)).ok()?;
        let parts = archive
            .file_names()
            .filter_map(Result::ok)
            .map(|name| (normalized(&name), name.into_owned()))
            .collect::<HashMap<_, _>>();
        let mut package = Package {
            archive,
            parts,
            workbook: Workbook { sheets: Vec::new(), is_1904: false, strings: Vec::new(), number_kinds: Vec::new() },
            limits,
            block: BLOCK,
        };
        let workbook_part = match package.relationships("") {
            Ok(rels) => rels.into_iter().find(|(kind, _, _)| kind.ends_with("/officeDocument")).map(|(_, _, t)| t),
            Err(e) => return Some(Err(e)),
        }
        .unwrap_or_else(|| "xl/workbook.xml".to_string());
        if !workbook_part.to_ascii_lowercase().ends_with(".xml")
            || !package.parts.contains_key(&normalized(&workbook_part))
        {
            return None;
        }
        Some(package.read_workbook(&workbook_part).map(|()| package))
    }

    fn read_workbook(&mut self, workbook_part: &str) -> Result<(), String> {
        let rels = self.relationships(workbook_part)?;
        let target = |kind: &str| rels.iter().find(|(k, _, _)| k.ends_with(kind)).map(|(_, _, t)| t.clone());
        let (strings_part, styles_part) = (target("/sharedStrings"), target("/styles"));
        let xml = self.part(workbook_part)?.unwrap_or_default();
        let mut tokens = Tokens::new(&xml);
        while let Some(token) = tokens.next_token().map_err(|_| cut_off(workbook_part))? {
            let Token::Start { name, attributes, .. } = token else { continue };
            match name {
                b"workbookPr" => {
                    self.workbook.is_1904 = matches!(xml::attribute(attributes, b"date1904"), Some(b"1" | b"true"));
                }
                b"sheet" => {
                    let text = |name: &[u8]| {
                        xml::attribute(attributes, name).map(|v| xml::decode(v).map(Cow::into_owned)).transpose()
                    };
                    let bad = |e: xml::TextError| format!("{workbook_part}: {e}");
                    let (Some(sheet), Some(id)) = (text(b"name").map_err(bad)?, text(b"id").map_err(bad)?) else {
                        continue;
                    };
                    if let Some((_, _, part)) = rels.iter().find(|(_, rid, _)| *rid == id) {
                        self.workbook.sheets.push((sheet, part.clone()));
                    }
                }
                _ => {}
            }
        }
        let dir = workbook_part.rsplit_once('/').map_or("", |(dir, _)| dir);
        let strings_part = strings_part.unwrap_or_else(|| join(dir, "sharedStrings.xml"));
        if let Some(xml) = self.part(&strings_part)? {
            self.workbook.strings = shared_strings(&xml).map_err(|e| format!("{strings_part}: {e}"))?;
        }
        let styles_part = styles_part.unwrap_or_else(|| join(dir, "styles.xml"));
        if let Some(xml) = self.part(&styles_part)? {
            self.workbook.number_kinds = number_kinds(&xml).map_err(|e| format!("{styles_part}: {e}"))?;
        }
        Ok(())
    }

    /// The relationships of `part` (`""`: of the package): type, id and target part.
    fn relationships(&mut self, part: &str) -> Result<Vec<(String, String, String)>, String> {
        let (dir, file) = part.rsplit_once('/').unwrap_or(("", part));
        let rels_part = join(dir, &format!("_rels/{file}.rels"));
        let Some(xml) = self.part(&rels_part)? else { return Ok(Vec::new()) };
        let mut rels = Vec::new();
        let mut tokens = Tokens::new(&xml);
        while let Some(token) = tokens.next_token().map_err(|_| cut_off(&rels_part))? {
            let Token::Start { name: b"Relationship", attributes, .. } = token else { continue };
            let text =
                |name: &[u8]| xml::attribute(attributes, name).and_then(|v| xml::decode(v).ok()).map(Cow::into_owned);
            if let (Some(kind), Some(id), Some(target)) = (text(b"Type"), text(b"Id"), text(b"Target")) {
                let target = match target.strip_prefix('/') {
                    Some(absolute) => absolute.to_string(),
                    None => join(dir, &target),
                };
                rels.push((kind, id, target));
            }
        }
        Ok(rels)
    }

    /// A whole part, inflated (within the limits); `None` if the package has no such part.
    fn part(&mut self, name: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(stored) = self.parts.get(&normalized(name)) else { return Ok(None) };
        let entry = self.archive.by_name(stored).map_err(|e| format!("{name}: {e}"))?;
        let mut bytes = Vec::new();
        Inflating::new(entry, self.limits).read_to_end(&mut bytes).map_err(|e| format!("{name}: {e}"))?;
        Ok(Some(bytes))
    }

    /// Call `row(row, cells)` for every `<row>` of the sheet `part`, in order: its 0-based index
    /// and its cells (0-based column, value), empty cells left out.
    pub fn for_each_row<E>(
        &mut self,
        part: &str,
        mut row: impl FnMut(u32, &[(u32, DataRef<'_>)]) -> Result<(), E>,
        sheet_error: impl Fn(String) -> E,
    ) -> Result<(), E> {
        let stored = self.parts.get(&normalized(part)).ok_or_else(|| sheet_error(format!("no part {part}")))?;
        let entry = self.archive.by_name(stored).map_err(|e| sheet_error(format!("{part}: {e}")))?;
        let mut sheet = SheetStream {
            input: Inflating::new(entry, self.limits),
            buf: Vec::with_capacity(2 * self.block),
            start: 0,
            eof: false,
            block: self.block,
        };
        let io_error = |e: std::io::Error| sheet_error(format!("{part}: {e}"));
        // What the buffer may hold unread: one row's XML (or one tag before the rows).
        let max_record_bytes = self.limits.record_bytes;
        let too_long = |row: u32| {
            let what = format!("row {row}: its XML (more than {max_record_bytes} bytes)");
            sheet_error(Limit::RecordBytes.breached(what, max_record_bytes as u64))
        };

        // Up to <sheetData>.
        loop {
            let mut tokens = Tokens::new(sheet.unread());
            match tokens.next_token() {
                Ok(Some(Token::Start { name: b"sheetData", closed, .. })) => {
                    sheet.start += tokens.position();
                    if closed {
                        return Ok(());
                    }
                    break;
                }
                Ok(Some(_)) => sheet.start += tokens.position(),
                Ok(None) | Err(Incomplete) if sheet.unread().len() > max_record_bytes => return Err(too_long(1)),
                Ok(None) | Err(Incomplete) if !sheet.eof => sheet.fill().map_err(io_error)?,
                Ok(None) | Err(Incomplete) => return Err(sheet_error("the sheet has no <sheetData>".into())),
            }
        }
        // Row by row: a row is read once the buffer holds all of it; a row the buffer ends in is
        // read again after the next block.
        let mut row_index = 0u32;
        loop {
            let mut tokens = Tokens::new(sheet.unread());
            let token = tokens.next_token();
            let more = match token {
                Ok(Some(Token::Start { name: b"row", attributes, closed, .. })) => {
                    if let Some(r) = xml::attribute(attributes, b"r") {
                        row_index = row_number(r).map_err(&sheet_error)?;
                    } else if row_index >= MAX_ROW {
                        return Err(sheet_error(format!("a row after row {MAX_ROW}, the last of a sheet")));
                    }
                    let cells = if closed {
                        Ok((row_index, Vec::new()))
                    } else {
                        cells(&mut tokens, row_index, &self.workbook)
                    };
                    match cells {
                        Ok((at, cells)) => {
                            row(at, &cells)?;
                            // A row without a reference after the last row of a sheet is refused
                            // when it comes (`row_index` stays below u32::MAX).
                            row_index = at + 1;
                            false
                        }
                        Err(CellStop::More) => true,
                        Err(CellStop::Bad(e)) => return Err(sheet_error(format!("row {}: {e}", row_index + 1))),
                    }
                }
                Ok(Some(Token::End { name: b"sheetData" })) => return Ok(()),
                Ok(Some(_)) => false,
                Ok(None) | Err(Incomplete) => true,
            };
            if !more {
                sheet.start += tokens.position();
            } else if sheet.unread().len() > max_record_bytes {
                return Err(too_long(row_index.saturating_add(1)));
            } else if !sheet.eof {
                sheet.fill().map_err(io_error)?;
            } else {
                return Err(sheet_error(format!(
                    "the sheet ends inside row {} or before </sheetData> (a truncated file?)",
                    row_index + 1
                )));
            }
        }
    }
}

/// The inflated sheet, a block at a time; `buf[start..]` is not read yet.
struct SheetStream<R> {
    input: R,
    buf: Vec<u8>,
    start: usize,
    eof: bool,
    block: usize,
}

impl<R: Read> SheetStream<R> {
    fn unread(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Drop what was read and append the next block. When nothing was read since the last fill
    /// (a row longer than the buffer), the buffer doubles instead: a row is parsed again after
    /// each fill, and doubling keeps the work for a long row linear in its length (a block at a
    /// time, a row of millions of cells was read over and over: quadratic).
    fn fill(&mut self) -> std::io::Result<()> {
        let grow = if self.start == 0 { self.buf.len().max(self.block) } else { self.block };
        self.buf.drain(..self.start);
        self.start = 0;
        let len = self.buf.len();
        self.buf.resize(len + grow, 0);
        let mut filled = len;
        while filled < self.buf.len() {
            match self.input.read(&mut self.buf[filled..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.truncate(filled);
        Ok(())
    }
}

/// A part being inflated, refused (as an I/O error naming the limit) once it inflates to more
/// than `max_xlsx_part_bytes`, or past its first MiB to more than `max_inflate_ratio` times its
/// compressed size: a zip bomb stops there, whatever the sizes its headers claim.
struct Inflating<R> {
    input: R,
    inflated: u64,
    max_bytes: u64,
    /// Bytes it may inflate to by its ratio (from its compressed size).
    max_by_ratio: u64,
    ratio: u64,
}

impl<'z, R: Read> Inflating<zip::read::ZipFile<'z, R>> {
    fn new(entry: zip::read::ZipFile<'z, R>, limits: ReadLimits) -> Self {
        let max_by_ratio = entry.compressed_size().saturating_mul(limits.inflate_ratio).max(RATIO_FREE_BYTES);
        Inflating {
            input: entry,
            inflated: 0,
            max_bytes: limits.xlsx_part_bytes,
            max_by_ratio,
            ratio: limits.inflate_ratio,
        }
    }
}

impl<R: Read> Read for Inflating<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        self.inflated += n as u64;
        if self.inflated > self.max_bytes {
            let what = format!("the part inflated (more than {} bytes)", self.max_bytes);
            return Err(std::io::Error::other(Limit::XlsxPartBytes.breached(what, self.max_bytes)));
        }
        if self.inflated > self.max_by_ratio {
            let what = format!("the part's inflate ratio (more than {} bytes inflated)", self.max_by_ratio);
            return Err(std::io::Error::other(Limit::InflateRatio.breached(what, self.ratio)));
        }
        Ok(n)
    }
}

/// Why a row or string could not be read from the bytes at hand.
enum CellStop {
    /// They end before it does: read it again with more.
    More,
    Bad(String),
}

impl From<Incomplete> for CellStop {
    fn from(_: Incomplete) -> Self {
        CellStop::More
    }
}

impl From<String> for CellStop {
    fn from(message: String) -> Self {
        CellStop::Bad(message)
    }
}

/// The cells of the row whose start tag `tokens` just read, up to its `</row>`: the row (as the
/// first cell's reference says, else `row_index`) and its non-empty cells. A cell without a
/// reference follows the one before it.
fn cells<'b>(
    tokens: &mut Tokens<'b>,
    row_index: u32,
    workbook: &'b Workbook,
) -> Result<(u32, Vec<(u32, DataRef<'b>)>), CellStop> {
    let mut cells = Vec::with_capacity(16);
    let mut row = None;
    let mut next_col = 0u32;
    loop {
        let (attributes, closed) = match tokens.next_token()?.ok_or(CellStop::More)? {
            Token::Start { name: b"c", attributes, closed, .. } => (attributes, closed),
            Token::End { name: b"row" } => return Ok((row.unwrap_or(row_index), cells)),
            _ => continue,
        };
        let (mut reference, mut style, mut kind) = (None, None, None);
        for (name, value) in xml::attributes(attributes) {
            match name {
                b"r" => reference = Some(value),
                b"s" => style = Some(value),
                b"t" => kind = Some(value),
                _ => {}
            }
        }
        let (cell_row, col) = match reference {
            Some(r) => cell_reference(r)?,
            None if next_col < MAX_COLUMN => (row_index, next_col),
            None => return Err(CellStop::Bad(format!("a cell after column XFD ({MAX_COLUMN}), the last of a sheet"))),
        };
        row.get_or_insert(cell_row);
        next_col = col + 1;
        if closed {
            continue;
        }
        let mut value = DataRef::Empty;
        loop {
            match tokens.next_token()?.ok_or(CellStop::More)? {
                Token::End { name: b"c" } => break,
                Token::Start { name: b"is", closed, .. } => {
                    value = DataRef::SharedString("");
                    if !closed {
                        value = borrowed_or_owned(rich_text(tokens, b"is")?);
                    }
                }
                Token::Start { name: b"v", qualified, closed: false, .. } => {
                    let content = element_content(tokens, qualified)?;
                    if !matches!(kind, Some(b"inlineStr" | b"is")) {
                        value = cell_value(content, style, kind, workbook)?;
                    }
                }
                // A formula (its cached result is the <v>), or anything else a cell may carry.
                Token::Start { qualified, closed: false, .. } => tokens.skip_element(qualified)?,
                _ => {}
            }
        }
        if value != DataRef::Empty {
            cells.push((col, value));
        }
    }
}

/// The value of a `<v>` by the cell's type and style, as calamine types it.
fn cell_value<'b>(
    raw: &'b [u8],
    style: Option<&[u8]>,
    kind: Option<&[u8]>,
    workbook: &'b Workbook,
) -> Result<DataRef<'b>, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "a value is not UTF-8".to_string())?;
    Ok(match kind {
        Some(b"s") if text.is_empty() => DataRef::Empty,
        Some(b"s") => {
            let shown = || crate::ingest::reject::quoted(text).into_owned();
            let index =
                text.trim().parse::<usize>().map_err(|_| format!("`{}` is not a shared string index", shown()))?;
            let string = workbook.strings.get(index).ok_or_else(|| {
                format!("shared string {index} is not in the table ({} strings)", workbook.strings.len())
            })?;
            DataRef::SharedString(string)
        }
        Some(b"b") => match text.trim() {
            "" => DataRef::Empty,
            t if t == "0" || t.eq_ignore_ascii_case("false") => DataRef::Bool(false),
            t if t == "1" || t.eq_ignore_ascii_case("true") => DataRef::Bool(true),
            t => return Err(format!("`{t}` in a boolean cell")),
        },
        Some(b"e") => DataRef::Error(text.parse().map_err(|_| format!("`{text}` in an error cell"))?),
        Some(b"d") => DataRef::DateTimeIso(xml::decode(raw).map_err(|e| e.to_string())?.into_owned()),
        Some(b"str") => borrowed_or_owned(xml::unescape_ooxml(xml::decode(raw).map_err(|e| e.to_string())?)),
        Some(b"n") | None if text.is_empty() => DataRef::Empty,
        Some(b"n") | None => match text.parse::<f64>() {
            Ok(number) => {
                let number_kind = match style {
                    None => Some(NumberKind::Plain),
                    Some(s) => {
                        let index =
                            std::str::from_utf8(s).ok().and_then(|s| s.parse::<usize>().ok()).ok_or_else(|| {
                                format!(
                                    "`{}` is not a style index",
                                    crate::ingest::reject::quoted(&String::from_utf8_lossy(s))
                                )
                            })?;
                        // A style the workbook does not list shows a plain number, as calamine reads it.
                        workbook.number_kinds.get(index).copied()
                    }
                };
                match number_kind {
                    Some(NumberKind::DateTime) => {
                        DataRef::DateTime(ExcelDateTime::new(number, ExcelDateTimeType::DateTime, workbook.is_1904))
                    }
                    Some(NumberKind::Duration) => {
                        DataRef::DateTime(ExcelDateTime::new(number, ExcelDateTimeType::TimeDelta, workbook.is_1904))
                    }
                    _ => DataRef::Float(number),
                }
            }
            // No declared type: a value that is no number is text.
            Err(_) if kind.is_none() => DataRef::SharedString(text),
            Err(_) => return Err(format!("`{text}` in a number cell")),
        },
        Some(other) => return Err(format!("unknown cell type t=\"{}\"", String::from_utf8_lossy(other))),
    })
}

fn borrowed_or_owned(text: Cow<'_, str>) -> DataRef<'_> {
    match text {
        Cow::Borrowed(text) => DataRef::SharedString(text),
        Cow::Owned(text) => DataRef::String(text),
    }
}

/// The text of a string item (`<si>` of the shared strings, `<is>` of a cell) up to its end tag
/// `</closing>`: its `<t>` runs joined, phonetic runs (`<rPh>`) left out, each run trimmed of
/// ASCII blanks unless it says `xml:space="preserve"`.
fn rich_text<'b>(tokens: &mut Tokens<'b>, closing: &[u8]) -> Result<Cow<'b, str>, CellStop> {
    let mut text: Option<Cow<'b, str>> = None;
    let mut phonetic = false;
    loop {
        match tokens.next_token()? {
            Some(Token::Start { name: b"rPh", closed: false, .. }) => phonetic = true,
            Some(Token::End { name: b"rPh" }) => phonetic = false,
            Some(Token::Start { name: b"t", qualified, attributes, closed }) if !phonetic => {
                let raw = if closed { &b""[..] } else { element_content(tokens, qualified)? };
                let piece = element_text(raw)?;
                let piece =
                    if xml::attribute(attributes, b"space") == Some(b"preserve") { piece } else { trim_blanks(piece) };
                let piece = xml::unescape_ooxml(piece);
                text = Some(match text {
                    None => piece,
                    Some(before) => Cow::Owned(before.into_owned() + &piece),
                });
            }
            Some(Token::End { name }) if name == closing => return Ok(text.unwrap_or(Cow::Borrowed(""))),
            Some(_) => {}
            None => return Err(CellStop::More),
        }
    }
}

fn trim_blanks(text: Cow<'_, str>) -> Cow<'_, str> {
    const BLANKS: [char; 4] = [' ', '\t', '\r', '\n'];
    match text {
        Cow::Borrowed(t) => Cow::Borrowed(t.trim_matches(BLANKS)),
        Cow::Owned(t) if t.trim_matches(BLANKS).len() == t.len() => Cow::Owned(t),
        Cow::Owned(t) => Cow::Owned(t.trim_matches(BLANKS).to_string()),
    }
}

/// What an element just started holds, as written, up to its end tag `</qualified>`.
fn element_content<'b>(tokens: &mut Tokens<'b>, qualified: &[u8]) -> Result<&'b [u8], CellStop> {
    let rest = tokens.rest();
    let (end_start, end) = xml::find_end_tag(rest, qualified).ok_or(CellStop::More)?;
    tokens.skip_to(tokens.position() + end);
    Ok(&rest[..end_start])
}

/// Character data with its entities decoded; CDATA sections taken as they are.
fn element_text(raw: &[u8]) -> Result<Cow<'_, str>, String> {
    if memchr::memchr(b'<', raw).is_none() {
        return xml::decode(raw).map_err(|e| e.to_string());
    }
    let mut out = String::new();
    let mut tokens = Tokens::new(raw);
    while let Some(token) = tokens.next_token().map_err(|_| "text is cut off".to_string())? {
        match token {
            Token::Text(t) => out.push_str(&xml::decode(t).map_err(|e| e.to_string())?),
            Token::CData(t) => out.push_str(std::str::from_utf8(t).map_err(|_| "text is not UTF-8".to_string())?),
            _ => {}
        }
    }
    Ok(Cow::Owned(out))
}

/// The shared strings table (`<sst>`): one string per `<si>`.
fn shared_strings(xml: &[u8]) -> Result<Vec<String>, String> {
    let mut strings = Vec::new();
    let mut tokens = Tokens::new(xml);
    while let Some(token) = tokens.next_token().map_err(|_| "cut off".to_string())? {
        match token {
            Token::Start { name: b"sst", attributes, .. } => {
                // A count the part claims, trusted only as far as its bytes could hold that many
                // strings (`<si/>` is five bytes): a hint of billions sizes nothing.
                let count = xml::attribute(attributes, b"uniqueCount").and_then(|c| std::str::from_utf8(c).ok());
                strings.reserve(count.and_then(|c| c.parse::<usize>().ok()).unwrap_or(0).min(xml.len() / 5));
            }
            Token::Start { name: b"si", closed: true, .. } => strings.push(String::new()),
            Token::Start { name: b"si", closed: false, .. } => match rich_text(&mut tokens, b"si") {
                Ok(text) => strings.push(text.into_owned()),
                Err(CellStop::More) => return Err("cut off".into()),
                Err(CellStop::Bad(e)) => return Err(e),
            },
            _ => {}
        }
    }
    Ok(strings)
}

/// How each style (`<xf>` of `<cellXfs>`) shows numbers, from its number format: a custom
/// `<numFmt>` of that id, else Excel's built-in formats.
fn number_kinds(xml: &[u8]) -> Result<Vec<NumberKind>, String> {
    let mut custom = HashMap::new();
    let mut kinds = Vec::new();
    let mut in_cell_xfs = false;
    let mut tokens = Tokens::new(xml);
    while let Some(token) = tokens.next_token().map_err(|_| "cut off".to_string())? {
        match token {
            Token::Start { name: b"numFmt", attributes, .. } => {
                if let (Some(id), Some(code)) =
                    (xml::attribute(attributes, b"numFmtId"), xml::attribute(attributes, b"formatCode"))
                {
                    custom.insert(id.to_vec(), xml::decode(code).map_err(|e| e.to_string())?.into_owned());
                }
            }
            Token::Start { name: b"cellXfs", closed, .. } => in_cell_xfs = !closed,
            Token::End { name: b"cellXfs" } => in_cell_xfs = false,
            Token::Start { name: b"xf", attributes, .. } if in_cell_xfs => {
                kinds.push(match xml::attribute(attributes, b"numFmtId") {
                    None => NumberKind::Plain,
                    Some(id) => match custom.get(id) {
                        Some(code) => custom_number_kind(code),
                        None => builtin_number_kind(id),
                    },
                });
            }
            _ => {}
        }
    }
    Ok(kinds)
}

/// Excel's built-in number formats that show dates and times (ECMA-376 Part 1, 18.8.30; 27–36
/// and 50–58 are East Asian dates), and its one built-in duration, `[h]:mm:ss`.
fn builtin_number_kind(id: &[u8]) -> NumberKind {
    match std::str::from_utf8(id).ok().and_then(|id| id.parse::<u32>().ok()) {
        Some(14..=22 | 27..=36 | 45 | 47 | 50..=58) => NumberKind::DateTime,
        Some(46) => NumberKind::Duration,
        _ => NumberKind::Plain,
    }
}

/// A custom number format shows a date or time when its first section has a date or time code
/// (d, m, y, h, s, or AM/PM) outside quoted text, escaped characters and `[…]`; an elapsed-time
/// bracket (`[h]`, `[mm]`, `[ss]`) before any of them makes it a duration.
fn custom_number_kind(code: &str) -> NumberKind {
    let mut chars = code.chars();
    while let Some(c) = chars.next() {
        match c {
            ';' => break,
            '"' => {
                chars.by_ref().find(|&c| c == '"');
            }
            '\\' | '_' | '*' => {
                chars.next();
            }
            '[' => {
                let inside: String = chars.by_ref().take_while(|&c| c != ']').collect();
                let mut letters = inside.chars().map(|c| c.to_ascii_lowercase());
                let first = letters.next();
                if matches!(first, Some('h' | 'm' | 's')) && letters.all(|c| Some(c) == first) {
                    return NumberKind::Duration;
                }
            }
            'd' | 'm' | 'y' | 'h' | 's' | 'D' | 'M' | 'Y' | 'H' | 'S' => return NumberKind::DateTime,
            'a' | 'A' => {
                let rest = chars.as_str().to_ascii_lowercase();
                if rest.starts_with("m/pm") || rest.starts_with("/p") {
                    return NumberKind::DateTime;
                }
            }
            _ => {}
        }
    }
    NumberKind::Plain
}

/// `A1`-style reference to a 0-based (row, column), within `XFD1048576`.
fn cell_reference(r: &[u8]) -> Result<(u32, u32), String> {
    let shown = || crate::ingest::reject::quoted(&String::from_utf8_lossy(r)).into_owned();
    let letters = r.iter().take_while(|b| b.is_ascii_alphabetic()).count();
    // Three letters at most (XFD): no fold to overflow, whatever the reference's length.
    let col = r[..letters].iter().take(4).fold(0u32, |col, b| col * 26 + u32::from(b.to_ascii_uppercase() - b'A') + 1);
    match col {
        0 => Err(format!("`{}` is not a cell reference", shown())),
        col if letters > 3 || col > MAX_COLUMN => {
            Err(format!("cell `{}` is beyond XFD{MAX_ROW}, the last cell of a sheet", shown()))
        }
        col => row_number(&r[letters..]).map(|row| (row, col - 1)).map_err(|e| format!("cell `{}`: {e}", shown())),
    }
}

/// A 1-based row number (at most 1,048,576) as a 0-based index.
fn row_number(r: &[u8]) -> Result<u32, String> {
    let shown = || crate::ingest::reject::quoted(&String::from_utf8_lossy(r)).into_owned();
    if r.is_empty() || !r.iter().all(u8::is_ascii_digit) {
        return Err(format!("`{}` is not a row number", shown()));
    }
    // Digits past u64 are beyond the last row as surely as any number above it.
    match std::str::from_utf8(r).ok().and_then(|r| r.parse::<u64>().ok()).unwrap_or(u64::MAX) {
        0 => Err("row 0 is not a row number".to_string()),
        n if n <= u64::from(MAX_ROW) => Ok(n as u32 - 1),
        _ => Err(format!("row {} is beyond row {MAX_ROW}, the last of a sheet", shown())),
    }
}

fn normalized(name: &str) -> String {
    name.replace('\\', "/").trim_start_matches('/').to_ascii_lowercase()
}

/// `target` relative to the folder `dir`, with `..` and `.` resolved.
fn join(dir: &str, target: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

fn cut_off(part: &str) -> String {
    format!("{part} is cut off")
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use calamine::{Data, Reader};
    use rust_xlsxwriter::{Format, Workbook as XlsxWriter};

    use super::*;
    use crate::ingest::read::xlsx::push_cell_text;

    /// A cell as read: row, column, the text shown, the error it holds.
    type Cell = (u32, u32, String, Option<String>);

    /// Every non-empty cell of a sheet as (row, column, text shown, error), read by calamine.
    fn by_calamine(bytes: &[u8], sheet: &str) -> Vec<(u32, u32, String, Option<String>)> {
        let mut workbook = calamine::open_workbook_auto_from_rs(Cursor::new(bytes.to_vec())).unwrap();
        let range = workbook.worksheet_range(sheet).unwrap();
        let (first_row, first_col) = range.start().unwrap_or((0, 0));
        let mut cells = Vec::new();
        for (r, row) in range.rows().enumerate() {
            for (c, cell) in row.iter().enumerate().filter(|(_, cell)| **cell != Data::Empty) {
                let mut text = String::new();
                let error = push_cell_text(&mut text, cell).map(|e| e.to_string());
                cells.push((first_row + r as u32, first_col + c as u32, text, error));
            }
        }
        cells
    }

    /// The same, read by this module.
    fn by_keymart(bytes: &[u8], sheet: &str) -> Vec<(u32, u32, String, Option<String>)> {
        read_in_blocks(bytes, sheet, BLOCK, ReadLimits::default()).unwrap()
    }

    /// The same, reading the sheet `block` bytes at a time, within `limits`.
    fn read_in_blocks(bytes: &[u8], sheet: &str, block: usize, limits: ReadLimits) -> Result<Vec<Cell>, String> {
        let mut package = Package::open(bytes, limits).expect("an xlsx")?;
        package.block = block;
        let part = package.workbook.sheets.iter().find(|(name, _)| name == sheet).unwrap().1.clone();
        let mut cells = Vec::new();
        package.for_each_row(
            &part,
            |row, found| {
                for (col, cell) in found {
                    let mut text = String::new();
                    let error = push_cell_text(&mut text, cell).map(|e| e.to_string());
                    cells.push((row, *col, text, error));
                }
                Ok::<(), String>(())
            },
            |e| e,
        )?;
        Ok(cells)
    }

    fn assert_read_alike(bytes: &[u8], sheet: &str, expected_cells: usize) {
        let (theirs, ours) = (by_calamine(bytes, sheet), by_keymart(bytes, sheet));
        for (a, b) in theirs.iter().zip(&ours) {
            assert_eq!(a, b, "calamine (left) and keymart (right) differ");
        }
        assert_eq!(theirs.len(), ours.len());
        assert_eq!(ours.len(), expected_cells, "{ours:#?}");
    }

    /// Cells of every kind a writer produces, on two sheets, through rust_xlsxwriter: with shared
    /// strings (what Excel writes) and with inline strings (what keymart's generator writes).
    fn written(constant_memory: bool) -> Vec<u8> {
        let mut workbook = XlsxWriter::new();
        let formats = [
            Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
            Format::new().set_num_format_index(14),
            Format::new().set_num_format("[h]:mm:ss"),
            Format::new().set_num_format("hh:mm AM/PM"),
            Format::new().set_num_format("#,##0.00 \"d\""),
            Format::new().set_num_format("0.0%"),
        ];
        for name in ["Sheet1", "Data"] {
            let sheet = if constant_memory {
                workbook.add_worksheet_with_constant_memory().unwrap()
            } else {
                workbook.add_worksheet()
            };
            sheet.set_name(name).unwrap();
            let texts = ["id", "a < b & \"c\" 'd'", "  padded  ", "中文 客户", "two\nlines", "_x000D_ literal", ""];
            for (col, text) in texts.iter().enumerate() {
                sheet.write_string(0, col as u16, *text).unwrap();
            }
            for (col, number) in [0.0, 42.0, -7.25, 1e20, 0.1 + 0.2, 45657.75, 123456789012.5].iter().enumerate() {
                sheet.write_number(1, col as u16, *number).unwrap();
            }
            for (col, format) in formats.iter().enumerate() {
                sheet.write_number_with_format(3, col as u16, 45657.0 + col as f64 / 7.0, format).unwrap();
            }
            sheet.write_boolean(4, 0, true).unwrap();
            sheet.write_boolean(4, 1, false).unwrap();
            sheet.write_blank(4, 2, &formats[0]).unwrap();
            sheet.write_formula(4, 3, "=1+1").unwrap();
            sheet.set_formula_result(4, 3, "2");
            sheet.write_formula(4, 4, "=\"x\"&\"y\"").unwrap();
            sheet.set_formula_result(4, 4, "xy");
            let bold = Format::new().set_bold();
            sheet.write_rich_string(4, 5, &[(&bold, "rich "), (&Format::default(), "text")]).unwrap();
            sheet.write_string(9, 3, "after a gap").unwrap();
            sheet.write_number(20_000, 25, 1.0).unwrap();
        }
        workbook.save_to_buffer().unwrap()
    }

    #[test]
    fn written_workbooks_read_as_calamine_reads_them() {
        for constant_memory in [false, true] {
            let bytes = written(constant_memory);
            // 6 texts (an empty string is written as no cell), 7 numbers, 6 formatted numbers,
            // 2 booleans, 2 formulas, 1 rich text, 2 more; the blank cell is none.
            assert_read_alike(&bytes, "Sheet1", 26);
            assert_read_alike(&bytes, "Data", 26);
        }
    }

    /// A package with the given parts, stored without compression.
    fn package(parts: &[(&str, &str)]) -> Vec<u8> {
        package_with(parts, zip::CompressionMethod::Stored)
    }

    fn package_with(parts: &[(&str, &str)], method: zip::CompressionMethod) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default().compression_method(method);
        for (name, text) in parts {
            zip.start_file(*name, stored).unwrap();
            zip.write_all(text.as_bytes()).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn hand_written_xml_reads_as_calamine_reads_it() {
        // Namespace prefixes, the 1904 date system, rows and cells without references, error and
        // ISO-date cells, entities and CDATA, phonetic runs, empty elements, odd part-name case.
        let bytes = package(&[
            (
                "_rels/.rels",
                r#"<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#,
            ),
            (
                "xl/workbook.xml",
                r#"<x:workbook xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><x:workbookPr date1904="1"/><x:sheets><x:sheet name="S &amp; P" sheetId="1" r:id="rId1"/></x:sheets></x:workbook>"#,
            ),
            (
                "xl/_rels/workbook.xml.rels",
                r#"<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="/xl/worksheets/Sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/><Relationship Id="rId3" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" Target="styles.xml"/></Relationships>"#,
            ),
            (
                "xl/sharedStrings.xml",
                r#"<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" uniqueCount="4"><si><t>plain</t></si><si><r><t xml:space="preserve">rich </t></r><r><t>run</t></r><rPh><t>ルビ</t></rPh></si><si/><si><t><![CDATA[<cdata> & more]]></t></si></sst>"#,
            ),
            (
                "xl/styles.xml",
                r#"<styleSheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><numFmts count="1"><numFmt numFmtId="164" formatCode="yyyy&quot;年&quot;m&quot;月&quot;d&quot;日&quot;"/></numFmts><cellStyleXfs count="1"><xf numFmtId="14"/></cellStyleXfs><cellXfs count="3"><xf numFmtId="0"/><xf numFmtId="164" applyNumberFormat="1"/><xf numFmtId="46"/></cellXfs></styleSheet>"#,
            ),
            (
                "xl/worksheets/sheet1.xml",
                r#"<x:worksheet xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><x:sheetData><x:row><x:c t="s"><x:v>0</x:v></x:c><x:c t="s"><x:v>1</x:v></x:c><x:c t="s"><x:v>2</x:v></x:c><x:c t="s"><x:v>3</x:v></x:c></x:row><x:row r="3"><x:c r="B3" s="1"><x:v>45000</x:v></x:c><x:c s="2"><x:v>1.5</x:v></x:c><x:c t="e"><x:v>#N/A</x:v></x:c><x:c t="d"><x:v>2024-06-01T08:00:00</x:v></x:c><x:c/><x:c t="str"><x:f>A1</x:f><x:v>a&amp;b_x0041_</x:v></x:c><x:c t="inlineStr"><x:is><x:t> inline </x:t></x:is></x:c><x:c><x:v>not a number</x:v></x:c></x:row><x:row/><x:row><x:c t="b"><x:v>TRUE</x:v></x:c></x:row></x:sheetData></x:worksheet>"#,
            ),
        ]);
        // 4 shared strings; 7 cells of row 3 (the empty <c/> is none); the boolean.
        assert_read_alike(&bytes, "S & P", 12);
        let ours = by_keymart(&bytes, "S & P");
        assert_eq!(ours[1].2, "rich run");
        assert_eq!(ours[3].2, "<cdata> & more");
        assert_eq!((ours[6].2.as_str(), ours[6].3.as_deref()), ("#N/A", Some("#N/A")));
        assert_eq!(ours.last().unwrap().0, 4, "rows without references follow the row before");
    }

    #[test]
    fn a_sheet_cut_off_names_where() {
        let bytes = written(true);
        let mut archive = ZipArchive::new(Cursor::new(&bytes[..])).unwrap();
        let mut parts = Vec::new();
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).unwrap();
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            parts.push((entry.name().unwrap().into_owned(), text));
        }
        let sheet = parts.iter_mut().find(|(name, _)| name == "xl/worksheets/sheet1.xml").unwrap();
        let cut = sheet.1.find("<row r=\"5\"").unwrap() + 40;
        sheet.1.truncate(cut);
        let parts: Vec<(&str, &str)> = parts.iter().map(|(n, t)| (n.as_str(), t.as_str())).collect();
        let bytes = package(&parts);
        let mut package = Package::open(&bytes, ReadLimits::default()).unwrap().unwrap();
        let error = package.for_each_row("xl/worksheets/sheet1.xml", |_, _| Ok(()), |e| e).unwrap_err();
        assert_eq!(error, "the sheet ends inside row 5 or before </sheetData> (a truncated file?)");
    }

    #[test]
    fn number_formats_that_show_dates_and_durations() {
        for code in ["yyyy-mm-dd hh:mm:ss", "DD/MM/YY", "H:MM:SS;@", "[$-409]h:mm AM/PM", "mmm-yy", "[Red]d-m", "am/pm"]
        {
            assert_eq!(custom_number_kind(code), NumberKind::DateTime, "{code}");
        }
        for code in ["[h]:mm:ss", "[mm]:ss", "[SS].00"] {
            assert_eq!(custom_number_kind(code), NumberKind::Duration, "{code}");
        }
        for code in
            ["General", "0.00", "#,##0\\ [$\\u20bd-46D]", "0 \"days\"", "0.00E+00", "0;[Red]-0 \"d\"", "[Red]0", "@"]
        {
            assert_eq!(custom_number_kind(code), NumberKind::Plain, "{code}");
        }
        assert_eq!(builtin_number_kind(b"14"), NumberKind::DateTime);
        assert_eq!(builtin_number_kind(b"46"), NumberKind::Duration);
        assert_eq!(builtin_number_kind(b"4"), NumberKind::Plain);
    }

    #[test]
    fn references_and_paths() {
        assert_eq!(cell_reference(b"A1"), Ok((0, 0)));
        assert_eq!(cell_reference(b"ab12"), Ok((11, 27)));
        assert!(cell_reference(b"12").is_err() && cell_reference(b"A0").is_err() && cell_reference(b"A").is_err());
        assert_eq!(join("xl", "worksheets/sheet1.xml"), "xl/worksheets/sheet1.xml");
        assert_eq!(join("xl/worksheets", "../styles.xml"), "xl/styles.xml");
        assert_eq!(join("", "_rels/.rels"), "_rels/.rels");
    }

    /// A one-sheet package around `sheet_data` (the rows), with `strings` as its shared strings
    /// and style 1 showing dates.
    fn one_sheet(sheet_data: &str, strings: &str, method: zip::CompressionMethod) -> Vec<u8> {
        let sheet = format!(
            r#"<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><dimension ref="A1:XFD1048576"/><sheetData>{sheet_data}</sheetData></worksheet>"#
        );
        package_with(
            &[
                (
                    "xl/workbook.xml",
                    r#"<workbook xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>"#,
                ),
                (
                    "xl/_rels/workbook.xml.rels",
                    r#"<Relationships><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#,
                ),
                ("xl/sharedStrings.xml", strings),
                (
                    "xl/styles.xml",
                    r#"<styleSheet><cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="14"/></cellXfs></styleSheet>"#,
                ),
                ("xl/worksheets/sheet1.xml", &sheet),
            ],
            method,
        )
    }

    const STRINGS: &str =
        r#"<sst uniqueCount="4294967295" count="18446744073709551615"><si><t>zero</t></si><si><t>one</t></si></sst>"#;

    fn read_sheet(bytes: &[u8], limits: ReadLimits) -> Result<Vec<Cell>, String> {
        read_in_blocks(bytes, "S", BLOCK, limits)
    }

    #[test]
    fn count_and_dimension_hints_size_nothing() {
        // uniqueCount of four billion and a dimension of the whole sheet: read as what is there.
        let bytes =
            one_sheet(r#"<row r="2"><c r="B2" t="s"><v>1</v></c></row>"#, STRINGS, zip::CompressionMethod::Stored);
        assert_eq!(read_sheet(&bytes, ReadLimits::default()).unwrap(), [(1, 1, "one".to_string(), None)]);
    }

    #[test]
    fn a_zip_bomb_part_stops_at_its_inflate_ratio_or_size() {
        let filler = " ".repeat(8 << 20);
        let bytes = one_sheet(&filler, STRINGS, zip::CompressionMethod::Deflated);
        assert!(bytes.len() < 100_000, "{} bytes", bytes.len());
        let error = read_sheet(&bytes, ReadLimits::default()).unwrap_err();
        assert!(error.starts_with("xl/worksheets/sheet1.xml: the part's inflate ratio"), "{error}");
        assert!(error.ends_with("is over limits.max_inflate_ratio (100); the file is refused"), "{error}");
        let small = ReadLimits { xlsx_part_bytes: 1 << 20, inflate_ratio: 10_000, ..ReadLimits::default() };
        let error = read_sheet(&bytes, small).unwrap_err();
        assert_eq!(
            error,
            "xl/worksheets/sheet1.xml: the part inflated (more than 1048576 bytes) is over limits.max_xlsx_part_bytes (1048576); the file is refused"
        );
        // The shared strings are read whole: within the same limits.
        let strings = format!("<sst>{filler}</sst>");
        let bytes = one_sheet("", &strings, zip::CompressionMethod::Deflated);
        let error = Package::open(&bytes, small).unwrap().err().unwrap();
        assert!(error.starts_with("xl/sharedStrings.xml: the part inflated"), "{error}");
    }

    #[test]
    fn references_beyond_the_last_cell_of_a_sheet_refuse_the_file() {
        for (row, error) in [
            (
                r#"<row><c r="XFE1"><v>1</v></c></row>"#,
                "row 1: cell `XFE1` is beyond XFD1048576, the last cell of a sheet",
            ),
            (
                r#"<row><c r="AAAAAAAAAAAAAAAAAAAA1"><v>1</v></c></row>"#,
                "row 1: cell `AAAAAAAAAAAAAAAAAAAA1` is beyond XFD1048576, the last cell of a sheet",
            ),
            (
                r#"<row><c r="A1048577"><v>1</v></c></row>"#,
                "row 1: cell `A1048577`: row 1048577 is beyond row 1048576, the last of a sheet",
            ),
            (
                r#"<row r="99999999999999999999999"/>"#,
                "row 99999999999999999999999 is beyond row 1048576, the last of a sheet",
            ),
            (r#"<row r="1048576"/><row/>"#, "a row after row 1048576, the last of a sheet"),
        ] {
            let bytes = one_sheet(row, STRINGS, zip::CompressionMethod::Stored);
            assert_eq!(read_sheet(&bytes, ReadLimits::default()).unwrap_err(), error);
        }
        let cells: String = (0..16_385).map(|_| "<c><v>1</v></c>").collect();
        let bytes = one_sheet(&format!("<row>{cells}</row>"), STRINGS, zip::CompressionMethod::Stored);
        let error = read_sheet(&bytes, ReadLimits::default()).unwrap_err();
        assert_eq!(error, "row 1: a cell after column XFD (16384), the last of a sheet");
        // XFD1048576 itself is a cell.
        let bytes = one_sheet(
            r#"<row r="1048576"><c r="XFD1048576"><v>7</v></c></row>"#,
            STRINGS,
            zip::CompressionMethod::Stored,
        );
        assert_eq!(read_sheet(&bytes, ReadLimits::default()).unwrap(), [(1_048_575, 16_383, "7".to_string(), None)]);
    }

    #[test]
    fn a_bad_shared_string_or_style_index_refuses_the_file_never_loads_another_value() {
        for (cell, error) in [
            (r#"<c t="s"><v>x</v></c>"#, "row 1: `x` is not a shared string index"),
            (r#"<c t="s"><v>-1</v></c>"#, "row 1: `-1` is not a shared string index"),
            (r#"<c t="s"><v>2</v></c>"#, "row 1: shared string 2 is not in the table (2 strings)"),
            (r#"<c s="x"><v>1</v></c>"#, "row 1: `x` is not a style index"),
        ] {
            let bytes = one_sheet(&format!("<row>{cell}</row>"), STRINGS, zip::CompressionMethod::Stored);
            assert_eq!(read_sheet(&bytes, ReadLimits::default()).unwrap_err(), error);
        }
    }

    #[test]
    fn a_date_cell_far_outside_the_date_range_is_a_cell_problem_not_a_panic() {
        let cells = r#"<row><c s="1"><v>-1e300</v></c><c s="1"><v>1e20</v></c><c s="1"><v>NaN</v></c><c s="1"><v>45657</v></c></row>"#;
        let bytes = one_sheet(cells, STRINGS, zip::CompressionMethod::Stored);
        let read = read_sheet(&bytes, ReadLimits::default()).unwrap();
        let errors: Vec<Option<&str>> = read.iter().map(|c| c.3.as_deref()).collect();
        assert_eq!(
            errors,
            [Some("date -1e300 out of range"), Some("date 1e20 out of range"), Some("date NaN out of range"), None]
        );
        assert_eq!(read[3].2, "2024-12-31");
    }

    #[test]
    fn a_row_of_many_empty_cells_is_read_in_linear_time_or_refused_by_its_limit() {
        // Two million empty cells (26 MB of XML) in one row, read 4 KiB at a time: a row is read
        // again after each fill, so without the buffer doubling this is quadratic (hours).
        let cells = r#"<c r="B2" s="1"/>"#.repeat(2_000_000);
        let sheet =
            format!(r#"<row r="1"><c r="A1" t="s"><v>0</v></c></row><row r="2">{cells}<c r="C2"><v>5</v></c></row>"#);
        let bytes = one_sheet(&sheet, STRINGS, zip::CompressionMethod::Deflated);
        // One cell repeated deflates about 500 times: past the default ratio, which is not tested here.
        let roomy = ReadLimits { record_bytes: 64 << 20, inflate_ratio: 10_000, ..ReadLimits::default() };
        let started = std::time::Instant::now();
        let read = read_in_blocks(&bytes, "S", 4096, roomy).unwrap();
        assert_eq!(read, [(0, 0, "zero".to_string(), None), (1, 2, "5".to_string(), None)]);
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "{:?}", started.elapsed());
        let error = read_in_blocks(&bytes, "S", 4096, ReadLimits { record_bytes: 1 << 20, ..roomy }).unwrap_err();
        assert_eq!(
            error,
            "row 2: its XML (more than 1048576 bytes) is over limits.max_record_bytes (1048576); the file is refused"
        );
    }

    /// One generated cell: a text, number, boolean or date, or a blank with a style.
    #[derive(Debug, Clone)]
    enum Generated {
        Text(String),
        Number(f64),
        Bool(bool),
        Date(f64),
        Blank,
    }

    fn any_cell() -> impl proptest::strategy::Strategy<Value = Generated> {
        use proptest::prelude::*;
        prop_oneof![
            proptest::collection::vec(
                prop_oneof![Just("a"), Just(" "), Just("&<>\"'"), Just("中文"), Just("_x000D_"), Just("\n"), Just("9")],
                0..6
            )
            .prop_map(|p| Generated::Text(p.concat())),
            prop_oneof![any::<i32>().prop_map(f64::from), -1e15..1e15f64, Just(0.1 + 0.2), Just(1e20), Just(-7.25)]
                .prop_map(Generated::Number),
            any::<bool>().prop_map(Generated::Bool),
            (0.0..2_958_465.0f64).prop_map(Generated::Date),
            Just(Generated::Blank),
        ]
    }

    /// A workbook of `cells` (row, column, cell; the first of each position wins), written with
    /// shared strings or, in constant-memory mode, inline strings.
    fn generated(cells: &[(u32, u16, Generated)], constant_memory: bool) -> Vec<u8> {
        let mut sorted: Vec<&(u32, u16, Generated)> = cells.iter().collect();
        sorted.sort_by_key(|(r, c, _)| (*r, *c));
        sorted.dedup_by_key(|(r, c, _)| (*r, *c));
        let mut workbook = XlsxWriter::new();
        let sheet = if constant_memory {
            workbook.add_worksheet_with_constant_memory().unwrap()
        } else {
            workbook.add_worksheet()
        };
        let date = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
        for (row, col, cell) in sorted {
            match cell {
                Generated::Text(t) => sheet.write_string(*row, *col, t).map(|_| ()),
                Generated::Number(n) => sheet.write_number(*row, *col, *n).map(|_| ()),
                Generated::Bool(b) => sheet.write_boolean(*row, *col, *b).map(|_| ()),
                Generated::Date(d) => sheet.write_number_with_format(*row, *col, *d, &date).map(|_| ()),
                Generated::Blank => sheet.write_blank(*row, *col, &date).map(|_| ()),
            }
            .unwrap();
        }
        workbook.save_to_buffer().unwrap()
    }

    proptest::proptest! {
        #![proptest_config(crate::ingest::proptest_config(24))]

        /// Generated sheets read cell for cell as calamine reads them: whole, and with the sheet
        /// inflated in blocks of any size (rows and cells cut anywhere).
        #[test]
        fn generated_sheets_read_as_calamine_reads_them_in_any_blocks(
            cells in proptest::collection::vec((0u32..300, 0u16..40, any_cell()), 0..200),
            constant_memory in proptest::prelude::any::<bool>(),
            block in 1usize..2048,
        ) {
            let bytes = generated(&cells, constant_memory);
            let theirs = by_calamine(&bytes, "Sheet1");
            proptest::prop_assert_eq!(&by_keymart(&bytes, "Sheet1"), &theirs);
            proptest::prop_assert_eq!(&read_in_blocks(&bytes, "Sheet1", block, ReadLimits::default()).unwrap(), &theirs);
        }
    }
}
