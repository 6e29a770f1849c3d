//! Hostile extracts through the real binary: every limit of `limits:` breached by a tiny crafted
//! file refuses its file with one line naming it (exit 3, nothing of the source committed); a
//! value no type can hold rejects its row; a landing entry leading outside the landing root is
//! never read. RELIABILITY.md lists which test proves what.

use std::io::Write;

use crate::support::{TestProject, assert_exit, stderr};

const PIPELINE: &str = r#"
sources:
  orders:
    path: orders/{as_of}/*.FORMAT
    format: FORMAT
    values: {timezone: "+08:00"}
    load: incremental
    primary_key: [order_id]
    max_reject_ratio: 1
    columns:
      - {name: order_id, type: string, nullable: false}
      - {name: amount, type: "decimal(10,2)"}
      - {name: placed_at, type: timestamp}
"#;

fn project(format: &str, limits: &str) -> TestProject {
    let project = TestProject::new(&PIPELINE.replace("FORMAT", format));
    project.write("keymart.yaml", &format!("warehouse: ./warehouse\n{limits}"));
    project
}

/// The one stderr line naming `file`, which must say `says`; exit 3 and nothing committed.
fn assert_refused(project: &TestProject, file: &str, says: &str) -> String {
    let output = project.ingest("2024-06-01");
    assert_exit(&output, 3);
    let errors = stderr(&output);
    let line = errors
        .lines()
        .find(|l| l.contains(file))
        .unwrap_or_else(|| panic!("no line names {file}:\n{errors}"))
        .to_string();
    assert!(line.starts_with(&format!("error: orders: orders/2024-06-01/{file}: ")), "{line}");
    assert!(line.contains(says), "`{line}` does not say `{says}`");
    assert!(!project.warehouse().join("raw/orders").exists(), "nothing committed");
    line
}

/// A one-sheet workbook: a header row (order_id, amount, placed_at) and `rows` as sheet XML;
/// style 1 shows dates; `strings` is the shared-strings part (string 0 is `order_id`…).
fn workbook(rows: &str, strings: &str, method: zip::CompressionMethod) -> Vec<u8> {
    let sheet = format!(
        r#"<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><dimension ref="A1:XFD1048576"/><sheetData><row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="s"><v>2</v></c></row>{rows}</sheetData></worksheet>"#
    );
    let parts = [
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
            r#"<styleSheet><cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="22"/></cellXfs></styleSheet>"#,
        ),
        ("xl/worksheets/sheet1.xml", &sheet),
    ];
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, text) in parts {
        zip.start_file(name, options).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

const STRINGS: &str = r#"<sst uniqueCount="4294967295"><si><t>order_id</t></si><si><t>amount</t></si><si><t>placed_at</t></si><si><t>O1</t></si></sst>"#;

#[test]
fn a_zip_bomb_sheet_is_refused_at_its_inflate_ratio() {
    let project = project("xlsx", "");
    // 16 MiB of blanks between the rows deflate to a few KiB: a ratio of about a thousand.
    let bomb = workbook(&" ".repeat(16 << 20), STRINGS, zip::CompressionMethod::Deflated);
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    project.land("orders/2024-06-01/a.xlsx", bomb);
    let line = assert_refused(&project, "a.xlsx", "is over limits.max_inflate_ratio (100); the file is refused");
    assert!(line.contains("cannot read sheet `S`: xl/worksheets/sheet1.xml: the part's inflate ratio"), "{line}");
}

#[test]
fn count_and_dimension_hints_are_not_trusted_and_the_rows_load() {
    let project = project("xlsx", "");
    let rows = r#"<row r="2"><c r="A2" t="s"><v>3</v></c><c r="B2"><v>12.5</v></c></row>"#;
    project.land("orders/2024-06-01/a.xlsx", workbook(rows, STRINGS, zip::CompressionMethod::Deflated));
    assert_exit(&project.ingest("2024-06-01"), 0);
    let rows = project.parquet_rows("raw/orders/load_date=2024-06-01/part-0.parquet");
    assert_eq!(rows, [["O1", "12.50", "NULL"]]);
}

#[test]
fn a_cell_beyond_xfd1048576_refuses_the_file() {
    let project = project("xlsx", "");
    let rows = r#"<row r="2"><c r="A2" t="s"><v>3</v></c><c r="XFE2"><v>1</v></c></row>"#;
    project.land("orders/2024-06-01/a.xlsx", workbook(rows, STRINGS, zip::CompressionMethod::Stored));
    assert_refused(&project, "a.xlsx", "row 2: cell `XFE2` is beyond XFD1048576, the last cell of a sheet");
}

#[test]
fn a_shared_string_index_that_is_no_number_refuses_the_file() {
    let project = project("xlsx", "");
    let rows = r#"<row r="2"><c r="A2" t="s"><v>three</v></c></row>"#;
    project.land("orders/2024-06-01/a.xlsx", workbook(rows, STRINGS, zip::CompressionMethod::Stored));
    assert_refused(&project, "a.xlsx", "row 2: `three` is not a shared string index");
}

#[test]
fn a_row_of_many_empty_cells_over_max_record_bytes_refuses_the_file() {
    let project = project("xlsx", "limits:\n  max_record_bytes: 65536\n");
    let empty = r#"<c r="C2" s="1"/>"#.repeat(100_000);
    let rows = format!(r#"<row r="2"><c r="A2" t="s"><v>3</v></c>{empty}</row>"#);
    project.land("orders/2024-06-01/a.xlsx", workbook(&rows, STRINGS, zip::CompressionMethod::Deflated));
    assert_refused(
        &project,
        "a.xlsx",
        "row 2: its XML (more than 65536 bytes) is over limits.max_record_bytes (65536); the file is refused",
    );
}

#[test]
fn a_workbook_over_max_workbook_bytes_is_refused_unread() {
    let project = project("xlsx", "limits:\n  max_workbook_bytes: 1024\n");
    let rows = r#"<row r="2"><c r="A2" t="s"><v>3</v></c></row>"#;
    project.land("orders/2024-06-01/a.xlsx", workbook(rows, STRINGS, zip::CompressionMethod::Stored));
    assert_refused(&project, "a.xlsx", "the workbook's size is over limits.max_workbook_bytes (1024)");
}

#[test]
fn a_date_cell_far_outside_the_date_range_rejects_its_row() {
    let project = project("xlsx", "");
    let rows = r#"<row r="2"><c r="A2" t="s"><v>3</v></c><c r="C2" s="1"><v>-1e300</v></c></row><row r="3"><c r="A3" t="inlineStr"><is><t>O2</t></is></c><c r="C3" s="1"><v>45657.5</v></c></row>"#;
    project.land("orders/2024-06-01/a.xlsx", workbook(rows, STRINGS, zip::CompressionMethod::Stored));
    assert_exit(&project.ingest("2024-06-01"), 0);
    let rejects = project.parquet_rows("rejects/orders/load_date=2024-06-01/part-0.parquet");
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(
        (rejects[0][1].as_str(), rejects[0][3].as_str(), rejects[0][4].as_str()),
        ("2", "out of range", "column placed_at: date -1e300 out of range")
    );
    let rows = project.parquet_rows("raw/orders/load_date=2024-06-01/part-0.parquet");
    assert_eq!(rows, [["O2", "NULL", "2024-12-31T04:00:00Z"]]);
}

#[test]
fn a_timestamp_at_the_edge_of_the_range_with_a_zone_rejects_its_row() {
    let project = project("csv", "");
    // chrono's first instant, written in +08:00, is eight hours before it in UTC.
    let csv = "order_id,amount,placed_at\nO1,1.00,-262143-01-01 00:00:00\nO2,1.00,-262143-01-01 08:00:00\nO3,1.00,+262142-12-31 23:59:59\n";
    project.land("orders/2024-06-01/a.csv", csv);
    assert_exit(&project.ingest("2024-06-01"), 0);
    let rejects = project.parquet_rows("rejects/orders/load_date=2024-06-01/part-0.parquet");
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!((rejects[0][1].as_str(), rejects[0][3].as_str()), ("2", "invalid timestamp"));
    assert!(rejects[0][4].contains("is outside the range of timestamps"), "{rejects:?}");
    let loaded: Vec<String> = project
        .parquet_rows("raw/orders/load_date=2024-06-01/part-0.parquet")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(loaded, ["O2", "O3"]);
}

#[test]
fn a_csv_record_without_a_line_break_over_max_record_bytes_refuses_the_file() {
    let project = project("csv", "limits:\n  max_record_bytes: 4096\n");
    let mut csv = b"order_id,amount,placed_at\nO1,1.00,\n".to_vec();
    csv.extend(std::iter::repeat_n(b'x', 100_000));
    project.land("orders/2024-06-01/a.csv", csv);
    assert_refused(
        &project,
        "a.csv",
        "line 3: the record (more than 4096 bytes) is over limits.max_record_bytes (4096); the file is refused",
    );
}

#[test]
fn a_json_line_over_max_record_bytes_refuses_the_file() {
    let project = project("jsonl", "limits:\n  max_record_bytes: 4096\n");
    let mut jsonl = b"{\"order_id\":\"O1\"}\n{\"order_id\":\"".to_vec();
    jsonl.extend(std::iter::repeat_n(b'x', 100_000));
    project.land("orders/2024-06-01/a.jsonl", jsonl);
    assert_refused(&project, "a.jsonl", "line 2: the record (more than 4096 bytes) is over limits.max_record_bytes");
}

#[test]
fn too_many_records_or_fields_refuse_the_file() {
    let project = project("csv", "limits:\n  max_rows: 2\n  max_columns: 5\n");
    project.land("orders/2024-06-01/a.csv", "order_id,amount,placed_at\nO1,1,\nO2,2,\nO3,3,\n");
    assert_refused(&project, "a.csv", "line 4: record 3 is over limits.max_rows (2); the file is refused");
    project.land("orders/2024-06-01/a.csv", "order_id,amount,placed_at\nO1,1,,,,,,,,\n");
    assert_refused(&project, "a.csv", "line 2: a record of 10 or more fields is over limits.max_columns (5)");
}

#[test]
fn a_landing_entry_leading_outside_the_landing_root_is_refused_unread() {
    let project = project("csv", "");
    let secret = project.path().join("secret.csv");
    std::fs::write(&secret, "order_id,amount,placed_at\nTOP-SECRET,1.00,\n").unwrap();
    std::fs::create_dir_all(project.landing().join("orders/2024-06-01")).unwrap();
    std::os::unix::fs::symlink(&secret, project.landing().join("orders/2024-06-01/a.csv")).unwrap();
    let line =
        assert_refused(&project, "a.csv", "resolves outside the landing root (a symbolic link?): refused, not read");
    assert!(!line.contains("TOP-SECRET"));
    let ledger = project.last_ledger().to_string();
    assert!(!ledger.contains("TOP-SECRET") && ledger.contains("resolves outside the landing root"), "{ledger}");
    // A link to a file inside the landing root is an ordinary file.
    std::fs::remove_file(project.landing().join("orders/2024-06-01/a.csv")).unwrap();
    project.land("real.csv", "order_id,amount,placed_at\nO1,1.00,\n");
    std::os::unix::fs::symlink(project.landing().join("real.csv"), project.landing().join("orders/2024-06-01/z.csv"))
        .unwrap();
    assert_exit(&project.ingest("2024-06-01"), 0);
    assert_eq!(project.parquet_rows("raw/orders/load_date=2024-06-01/part-0.parquet"), [["O1", "1.00", "NULL"]]);
}

#[test]
fn raw_text_quoted_in_a_reject_is_cut_to_4_kib() {
    let project = project("csv", "");
    let long = "9".repeat(10_000);
    project.land("orders/2024-06-01/a.csv", format!("order_id,amount,placed_at\nO1,{long},\nO2,1.00,\n"));
    assert_exit(&project.ingest("2024-06-01"), 0);
    let rejects = project.parquet_rows("rejects/orders/load_date=2024-06-01/part-0.parquet");
    let (detail, raw) = (&rejects[0][4], &rejects[0][5]);
    assert!(raw.starts_with("O1,999") && raw.ends_with("… (cut: 10004 bytes in all)"), "{raw}");
    assert!(raw.len() < 4096 + 40 && detail.len() < 4096 + 40, "{} {}", raw.len(), detail.len());
    assert!(detail.ends_with("bytes in all)"), "{detail}");
}

#[test]
fn limits_out_of_range_are_configuration_errors() {
    let project = project(
        "csv",
        "limits:\n  max_record_bytes: 0\n  max_inflate_ratio: 99999999999\n  max_workbook_memory_bytes: 1\n",
    );
    let output = project.keymart(&["check"]);
    assert_exit(&output, 2);
    let errors = stderr(&output);
    assert!(
        errors.contains("keymart.yaml:3:21: limits.max_record_bytes: must be between 1024 and 1073741824"),
        "{errors}"
    );
    assert!(errors.contains("limits.max_inflate_ratio: must be between 2 and 10000"), "{errors}");
    assert!(errors.contains("limits.max_workbook_memory_bytes: must be between 268435456 and"), "{errors}");
    let project = project_with_typo();
    let errors = stderr(&project.keymart(&["check"]));
    assert!(errors.contains("max_record_byte"), "{errors}");
}

fn project_with_typo() -> TestProject {
    project("csv", "limits:\n  max_record_byte: 4096\n")
}

/// An OpenDocument spreadsheet of one sheet `S`: the header row (order_id, amount, placed_at),
/// then `rows` as table XML.
fn ods(rows: &str) -> Vec<u8> {
    let text =
        |t: &str| format!(r#"<table:table-cell office:value-type="string"><text:p>{t}</text:p></table:table-cell>"#);
    let content = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"><office:body><office:spreadsheet><table:table table:name="S"><table:table-row>{}{}{}</table:table-row>{rows}</table:table></office:spreadsheet></office:body></office:document-content>"#,
        text("order_id"),
        text("amount"),
        text("placed_at")
    );
    let parts = [
        ("mimetype", "application/vnd.oasis.opendocument.spreadsheet".to_string()),
        (
            "META-INF/manifest.xml",
            r#"<manifest:manifest xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"><manifest:file-entry manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/><manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/></manifest:manifest>"#.to_string(),
        ),
        ("content.xml", content),
    ];
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, text) in parts {
        let method = if name == "mimetype" { zip::CompressionMethod::Stored } else { zip::CompressionMethod::Deflated };
        zip.start_file(name, zip::write::SimpleFileOptions::default().compression_method(method)).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn ods_project(limits: &str) -> TestProject {
    let project = TestProject::new(&PIPELINE.replace("*.FORMAT", "*.ods").replace("FORMAT", "xlsx"));
    project.write("keymart.yaml", &format!("warehouse: ./warehouse\n{limits}"));
    project
}

#[test]
fn an_ods_workbook_loads_through_the_isolated_reader() {
    let project = ods_project("");
    let row = r#"<table:table-row><table:table-cell office:value-type="string"><text:p>O1</text:p></table:table-cell><table:table-cell office:value-type="float" office:value="12.5"/></table:table-row>"#;
    project.land("orders/2024-06-01/a.ods", ods(row));
    assert_exit(&project.ingest("2024-06-01"), 0);
    let rows = project.parquet_rows("raw/orders/load_date=2024-06-01/part-0.parquet");
    assert_eq!(rows, [["O1", "12.50", "NULL"]]);
}

#[test]
fn a_workbook_calamine_would_expand_past_memory_is_refused_and_the_process_lives() {
    // Each row repeats one cell across all 16,384 columns: calamine holds 6,000 × 16,384 cells,
    // gigabytes, from a file of a few kilobytes.
    let project = ods_project("limits:\n  max_workbook_memory_bytes: 1073741824\n");
    let row = r#"<table:table-row><table:table-cell table:number-columns-repeated="16384" office:value-type="float" office:value="1"/></table:table-row>"#;
    let bomb = ods(&row.repeat(6000));
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    project.land("orders/2024-06-01/a.ods", bomb);
    assert_refused(
        &project,
        "a.ods",
        "the memory reading this workbook's sheet needs is over limits.max_workbook_memory_bytes (1073741824)",
    );
}
