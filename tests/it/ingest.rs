//! `keymart ingest` through the real binary: formats and encodings, every kind of bad row, counts,
//! atomic and byte-identical partitions, and one clear error per unreadable file.

use rstest::rstest;

use crate::support::{TestProject, assert_exit, stderr, stdout};

const ORDERS_PIPELINE: &str = r#"
sources:
  customers:
    path: crm/{as_of}/*.csv
    format: csv
    load: full
    primary_key: [id]
    columns:
      - {name: id, type: string, nullable: false}
      - {name: segment, type: string, accepted_values: [gold, silver]}
  orders:
    path: orders/{as_of}/*.csv
    format: csv
    values:
      date_formats: ["%Y/%m/%d", "%Y%m%d"]
      thousands_separator: ","
      null_tokens: ["", "NULL"]
      timezone: "+08:00"
    load: incremental
    primary_key: [order_id, line]
    max_reject_ratio: 1
    columns:
      - {name: order_id, type: string, nullable: false}
      - {name: line, type: int, nullable: false, min: 1}
      - {name: customer_id, type: string, nullable: false, references: customers.id}
      - {name: order_date, type: date, nullable: false}
      - {name: amount, type: "decimal(10,2)"}
      - {name: paid, type: bool}
      - {name: created_at, type: timestamp}
      - {name: status, type: string, accepted_values: [completed, cancelled]}
"#;

const CUSTOMERS_CSV: &str = "id,segment\nC1,gold\nC2,silver\n";

fn orders_project(orders_csv: &[u8]) -> TestProject {
    let project = TestProject::new(ORDERS_PIPELINE);
    project.land("crm/2024-06-01/customers.csv", CUSTOMERS_CSV);
    project.land("orders/2024-06-01/orders.csv", orders_csv);
    project
}

const HEADER: &str = "order_id,line,customer_id,order_date,amount,paid,created_at,status\n";

#[test]
fn every_kind_of_bad_row_is_quarantined_with_its_reason() {
    let mut csv = HEADER.as_bytes().to_vec();
    csv.extend_from_slice(
        concat!(
            "O1,1,C1,2024-06-01,\"1,234.50\",true,2024-06-01 10:00:00,completed\n", // 2 ok, grouped amount
            "O1,2,C2,2024/06/01,  12.5 ,no,2024-06-01T02:00:00Z,cancelled\n",       // 3 ok, blanks trimmed
            "O2,1,C1,20240601,NULL,1,,completed\n",                                 // 4 ok, nulls
            "O3,1,C1,2024-02-30,1.00,true,,completed\n",                            // 5 invalid date
            "O4,1,C1,2024-06-01,12.345,true,,completed\n",                          // 6 invalid decimal
            "O5,x,C1,2024-06-01,1.00,true,,completed\n",                            // 7 invalid integer
            "O6,1,,2024-06-01,1.00,true,,completed\n",                              // 8 missing value
            "O7,1,C1,2024-06-01,1.00,true,,shipped\n",                              // 9 value not accepted
            "O8,0,C1,2024-06-01,1.00,true,,completed\n",                            // 10 out of range
            "O9,1,C404,2024-06-01,1.00,true,,completed\n",                          // 11 unknown reference
            "O1,1,C1,2024-06-01,1.00,true,,completed\n",                            // 12 duplicate key
            "O10,1,C1,2024-06-01,1.00\n",                                           // 13 wrong field count
            "O11,1,C1,2024-06-01,1.00,maybe,,completed\n",                          // 14 invalid boolean
            "O12,1,C1,2024-06-01,1.00,true,yesterday,completed\n",                  // 15 invalid timestamp
        )
        .as_bytes(),
    );
    csv.extend_from_slice(b"O13,1,C1\xff,2024-06-01,1.00,true,,completed\n"); // 16 invalid encoding
    csv.extend_from_slice(b"O14,1,C1,2024-06-01,\"multi\nline\",true,,completed\n"); // 17-18 invalid decimal
    csv.extend_from_slice(b"O15,1,C1,2024-06-01,2.00,true,,completed\n"); // 19 ok
    let project = orders_project(&csv);

    let output = project.ingest("2024-06-01");
    assert_exit(&output, 0);

    let rejects: Vec<(String, String, String)> = project
        .parquet_rows("rejects/orders/load_date=2024-06-01/part-0.parquet")
        .into_iter()
        .map(|r| (r[1].clone(), r[2].clone(), r[3].clone()))
        .collect();
    let expected = [
        ("5", "order_date", "invalid date"),
        ("6", "amount", "invalid decimal"),
        ("7", "line", "invalid integer"),
        ("8", "customer_id", "missing value"),
        ("9", "status", "value not accepted"),
        ("10", "line", "out of range"),
        ("11", "customer_id", "unknown reference"),
        ("12", "NULL", "duplicate key"),
        ("13", "NULL", "wrong field count"),
        ("14", "paid", "invalid boolean"),
        ("15", "created_at", "invalid timestamp"),
        ("16", "customer_id", "invalid encoding"),
        ("17", "amount", "invalid decimal"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(l, c, r)| (l.to_string(), c.to_string(), r.to_string())).collect();
    assert_eq!(rejects, expected);

    let loaded = project.parquet_rows("raw/orders/load_date=2024-06-01/part-0.parquet");
    let summary: Vec<String> = loaded.iter().map(|r| r.join("|")).collect();
    assert_eq!(
        summary,
        [
            "O1|1|C1|2024-06-01|1234.50|true|2024-06-01T02:00:00Z|completed",
            "O1|2|C2|2024-06-01|12.50|false|2024-06-01T02:00:00Z|cancelled",
            "O2|1|C1|2024-06-01|NULL|true|NULL|completed",
            "O15|1|C1|2024-06-01|2.00|true|NULL|completed",
        ]
    );

    // The raw text and the detail say what was wrong; rows_read = loaded + rejected per file.
    let all_rejects = project.parquet_rows("rejects/orders/load_date=2024-06-01/part-0.parquet");
    assert_eq!(all_rejects[0][0], "orders/2024-06-01/orders.csv");
    assert_eq!(all_rejects[0][5], "O3,1,C1,2024-02-30,1.00,true,,completed");
    assert!(all_rejects[6][4].contains("`C404` is not in customers.id"), "{:?}", all_rejects[6]);
    assert!(all_rejects[7][4].contains("order_id=O1, line=1"), "{:?}", all_rejects[7]);
    let ledger = project.last_ledger();
    let orders = ledger["steps"].as_array().unwrap().iter().find(|s| s["source"] == "orders").unwrap();
    assert_eq!(
        (orders["rows_read"].as_u64(), orders["rows_loaded"].as_u64(), orders["rows_rejected"].as_u64()),
        (Some(17), Some(4), Some(13))
    );
    assert_eq!(orders["files"][0]["rows_read"], 17);
    assert_eq!(orders["rejects_by_reason"]["invalid decimal"], 2);
    assert_eq!(ledger["status"], "succeeded");
    assert!(stdout(&output).contains("orders/2024-06-01/orders.csv"), "{}", stdout(&output));
}

#[rstest]
// Bounds that are whole numbers of cents are compared as integers, others as floats; the rows
// kept and the messages are the same either way.
#[case::whole_in_cents("min: 0, max: 99.99", &["0.00", "99.98", "99.99"], &["amount -0.01 is below the minimum 0", "amount 100 is above the maximum 99.99"])]
#[case::not_whole_in_cents("min: -0.005, max: 99.985", &["0.00", "99.98"], &["amount -0.01 is below the minimum -0.005", "amount 99.99 is above the maximum 99.985", "amount 100 is above the maximum 99.985"])]
fn decimal_bounds_keep_the_values_within_them(#[case] bounds: &str, #[case] kept: &[&str], #[case] details: &[&str]) {
    let pipeline =
        ORDERS_PIPELINE.replace(r#"type: "decimal(10,2)"}"#, &format!(r#"type: "decimal(10,2)", {bounds}}}"#));
    let project = TestProject::new(&pipeline);
    project.land("crm/2024-06-01/customers.csv", CUSTOMERS_CSV);
    let rows: String = ["0.00", "-0.01", "99.98", "99.99", "100.00"]
        .iter()
        .enumerate()
        .map(|(i, amount)| format!("O{i},1,C1,2024-06-01,{amount},true,,completed\n"))
        .collect();
    project.land("orders/2024-06-01/orders.csv", format!("{HEADER}{rows}"));
    assert_exit(&project.ingest("2024-06-01"), 0);
    let loaded: Vec<String> = project
        .parquet_rows("raw/orders/load_date=2024-06-01/part-0.parquet")
        .into_iter()
        .map(|r| r[4].clone())
        .collect();
    let rejected: Vec<String> = project
        .parquet_rows("rejects/orders/load_date=2024-06-01/part-0.parquet")
        .into_iter()
        .map(|r| r[4].clone())
        .collect();
    assert_eq!(loaded, kept);
    assert_eq!(rejected.len(), details.len(), "{rejected:?}");
    for (detail, expected) in rejected.iter().zip(details) {
        assert!(detail.contains(expected), "{detail} does not say {expected}");
    }
}

#[test]
fn gbk_csv_jsonl_and_xlsx_load_to_typed_parquet() {
    let project = TestProject::new(
        r#"
sources:
  accounts:
    path: erp/{as_of}/*.csv
    format: csv
    csv: {encoding: gbk, delimiter: ";"}
    load: full
    primary_key: [id]
    max_reject_ratio: 1
    columns:
      - {name: id, from: 客户编号, type: string, nullable: false}
      - {name: name, from: 客户名称, type: string, pii: true}
      - {name: revenue, from: 年营业额, type: "decimal(18,2)"}
  events:
    path: scm/{as_of}/*.jsonl
    format: jsonl
    load: incremental
    primary_key: [id]
    max_reject_ratio: 1
    columns:
      - {name: id, type: string, nullable: false}
      - {name: qty, type: int}
      - {name: cost, type: "decimal(12,2)"}
      - {name: done, type: bool}
      - {name: day, type: date}
  contacts:
    path: cc/{as_of}/*.xlsx
    format: xlsx
    values: {timezone: "+08:00"}
    load: incremental
    primary_key: [id]
    max_reject_ratio: 1
    columns:
      - {name: id, type: string, nullable: false}
      - {name: started_at, type: timestamp}
      - {name: minutes, type: int}
      - {name: amount, type: "decimal(10,2)"}
      - {name: complaint, type: bool}
      - {name: day, type: date}
"#,
    );
    let (gbk, _, _) =
        encoding_rs::GBK.encode("客户编号;客户名称;年营业额\nC1;上海华信科技有限公司;\"1,000.00\"\nC2;王伟;\n");
    // The thousands separator is not configured for `accounts`: C1 is rejected, C2 loads.
    project.land("erp/2024-06-01/accounts.csv", &gbk);
    project.land(
        "scm/2024-06-01/events.jsonl",
        concat!(
            "{\"id\":\"E1\",\"qty\":3,\"cost\":12.50,\"done\":true,\"day\":\"2024-06-01\"}\n",
            "\n",
            "{\"id\":\"E2\",\"qty\":null,\"cost\":\"7\",\"done\":false}\n",
            "{\"id\":\"E3\",\"qty\":1,\"extra\":1}\n",
            "not json\n",
            "{\"id\":\"E4\",\"qty\":[1]}\n",
        ),
    );
    let xlsx = {
        let mut workbook = rust_xlsxwriter::Workbook::new();
        let sheet = workbook.add_worksheet();
        for (col, header) in ["id", "started_at", "minutes", "amount", "complaint", "day"].iter().enumerate() {
            sheet.write_string(0, col as u16, *header).unwrap();
        }
        let started = chrono::NaiveDate::from_ymd_opt(2024, 6, 1).unwrap().and_hms_opt(10, 30, 0).unwrap();
        let day = chrono::NaiveDate::from_ymd_opt(2024, 5, 31).unwrap();
        let stamp = rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
        sheet.write_string(1, 0, "K1").unwrap();
        sheet.write_datetime_with_format(1, 1, started, &stamp).unwrap();
        sheet.write_number(1, 2, 12.0).unwrap();
        sheet.write_number(1, 3, 12.3).unwrap();
        sheet.write_boolean(1, 4, true).unwrap();
        sheet.write_datetime_with_format(1, 5, day, &stamp).unwrap();
        sheet.write_string(2, 0, "K2").unwrap();
        sheet.write_string(2, 1, "2024-06-01 08:00:00").unwrap();
        sheet.write_number(2, 2, 1.5).unwrap();
        workbook.save_to_buffer().unwrap()
    };
    project.land("cc/2024-06-01/contacts.xlsx", xlsx);

    assert_exit(&project.ingest("2024-06-01"), 0);
    // The three load side by side (the Excel one first); the ledger keeps the pipeline's order.
    let ledger = project.last_ledger();
    let loaded: Vec<&str> = ledger["steps"].as_array().unwrap().iter().filter_map(|s| s["source"].as_str()).collect();
    assert_eq!(loaded, ["accounts", "events", "contacts"]);

    let accounts = project.parquet_rows("raw/accounts/load_date=2024-06-01/part-0.parquet");
    assert_eq!(accounts, vec![vec!["C2".to_string(), "王伟".to_string(), "NULL".to_string()]]);
    let account_rejects = project.parquet_rows("rejects/accounts/load_date=2024-06-01/part-0.parquet");
    assert_eq!(account_rejects[0][3], "invalid decimal");
    assert_eq!(account_rejects[0][5], "C1;上海华信科技有限公司;\"1,000.00\"", "raw text is decoded from GBK");

    let events: Vec<String> =
        project.parquet_rows("raw/events/load_date=2024-06-01/part-0.parquet").iter().map(|r| r.join("|")).collect();
    assert_eq!(events, ["E1|3|12.50|true|2024-06-01", "E2|NULL|7.00|false|NULL"]);
    let event_rejects: Vec<(String, String)> = project
        .parquet_rows("rejects/events/load_date=2024-06-01/part-0.parquet")
        .into_iter()
        .map(|r| (r[1].clone(), r[3].clone()))
        .collect();
    let expected_event_rejects = [("4", "unexpected field"), ("5", "invalid json"), ("6", "invalid value")];
    assert_eq!(event_rejects, expected_event_rejects.map(|(l, r)| (l.to_string(), r.to_string())));

    let contacts: Vec<String> =
        project.parquet_rows("raw/contacts/load_date=2024-06-01/part-0.parquet").iter().map(|r| r.join("|")).collect();
    assert_eq!(contacts, ["K1|2024-06-01T02:30:00Z|12|12.30|true|2024-05-31"]);
    let contact_rejects = project.parquet_rows("rejects/contacts/load_date=2024-06-01/part-0.parquet");
    assert_eq!((contact_rejects[0][1].as_str(), contact_rejects[0][3].as_str()), ("3", "invalid integer"));
}

#[test]
fn an_xlsx_table_is_found_where_its_header_is_and_keeps_excel_row_numbers() {
    let project = TestProject::new(
        r#"
sources:
  contacts:
    path: cc/{as_of}/*.xlsx
    format: xlsx
    load: incremental
    primary_key: [id]
    max_reject_ratio: 1
    columns:
      - {name: id, type: string, nullable: false}
      - {name: minutes, type: int}
      - {name: note, type: string}
"#,
    );
    // Row 1 and column A empty: the table starts at B2. Row 4 is blank, row 5 has no `minutes`,
    // row 6 has a stray value left of the table.
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    for (row, cells) in
        [(1, ["id", "minutes", "note"]), (2, ["K1", "3", "first"]), (4, ["K2", "", "gap"]), (5, ["K3", "4", "x"])]
    {
        for (col, text) in cells.iter().enumerate().filter(|(_, t)| !t.is_empty()) {
            match text.parse::<f64>() {
                Ok(n) => sheet.write_number(row, col as u16 + 1, n).unwrap(),
                Err(_) => sheet.write_string(row, col as u16 + 1, *text).unwrap(),
            };
        }
    }
    sheet.write_string(5, 0, "stray").unwrap();
    project.land("cc/2024-06-01/contacts.xlsx", workbook.save_to_buffer().unwrap());

    assert_exit(&project.ingest("2024-06-01"), 0);
    let contacts: Vec<String> =
        project.parquet_rows("raw/contacts/load_date=2024-06-01/part-0.parquet").iter().map(|r| r.join("|")).collect();
    assert_eq!(contacts, ["K1|3|first", "K2|NULL|gap"]);
    let rejects = project.parquet_rows("rejects/contacts/load_date=2024-06-01/part-0.parquet");
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!((rejects[0][1].as_str(), rejects[0][3].as_str()), ("6", "invalid value"));
    assert!(rejects[0][4].contains("left of the header"), "{rejects:?}");
}

/// An extract sorted by its key is checked for repeats without a set until a key comes out of
/// order; from then on the set holds every key before it too. Chunks are 16,384 records: the key
/// repeated right after the first chunk's last row starts the second chunk, and the first chunk's
/// fifth key comes back in the third.
#[test]
fn a_key_repeated_after_a_sorted_stretch_is_a_duplicate() {
    let row = |k: usize| format!("O{k:05},1,C1,2024-06-01,1.00,true,,completed\n");
    let mut csv = HEADER.to_string();
    for k in 1..=40_000 {
        csv.push_str(&row(k));
        if k == 16_384 {
            csv.push_str(&row(k));
        }
    }
    csv.push_str(&row(5));
    csv.push_str("O00005,2,C1,2024-06-01,1.00,true,,completed\n");
    let project = orders_project(csv.as_bytes());

    assert_exit(&project.ingest("2024-06-01"), 0);
    let rejects: Vec<(String, String, String)> = project
        .parquet_rows("rejects/orders/load_date=2024-06-01/part-0.parquet")
        .into_iter()
        .map(|r| (r[1].clone(), r[3].clone(), r[4].clone()))
        .collect();
    let repeated = |line: &str, key: &str| {
        (
            line.to_string(),
            "duplicate key".to_string(),
            format!("key (order_id={key}, line=1) appears earlier in this load"),
        )
    };
    assert_eq!(rejects, [repeated("16386", "O16384"), repeated("40003", "O00005")]);
    // The key after the repeats (line 2 of O00005) is new and kept.
    assert_eq!(project.parquet_rows("raw/orders/load_date=2024-06-01/part-0.parquet").len(), 40_001);
}

#[test]
fn reingest_is_byte_identical_and_replaces_the_partition() {
    let project = orders_project(
        format!("{HEADER}O1,1,C1,2024-06-01,1.00,true,,completed\nO2,1,C2,2024-06-01,2.00,true,,completed\n")
            .as_bytes(),
    );
    let raw = project.warehouse().join("raw/orders/load_date=2024-06-01/part-0.parquet");
    let rejects = project.warehouse().join("rejects/orders/load_date=2024-06-01/part-0.parquet");
    assert_exit(&project.ingest("2024-06-01"), 0);
    let (first_raw, first_rejects) = (std::fs::read(&raw).unwrap(), std::fs::read(&rejects).unwrap());
    assert_exit(&project.ingest("2024-06-01"), 0);
    assert_eq!(std::fs::read(&raw).unwrap(), first_raw, "same input, same bytes");
    assert_eq!(std::fs::read(&rejects).unwrap(), first_rejects);

    project.land("orders/2024-06-01/orders.csv", format!("{HEADER}O3,1,C1,2024-06-01,3.00,true,,completed\n"));
    assert_exit(&project.ingest("2024-06-01"), 0);
    assert_eq!(project.parquet_rows("raw/orders/load_date=2024-06-01/part-0.parquet").len(), 1);
    let partition: Vec<_> = std::fs::read_dir(raw.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(partition, ["part-0.parquet"], "one file, no leftovers");
    let staging = project.warehouse().join("_staging");
    let leftovers: Vec<_> =
        std::fs::read_dir(&staging).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "staging is cleaned up: {leftovers:?}");
}

/// Text keys and amounts, mostly distinct values, are written without a dictionary (it would fill
/// up and be abandoned, and plain zstd is smaller); the other columns keep one.
#[test]
fn keys_and_amounts_are_written_without_a_dictionary() {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

    let project = orders_project(
        format!("{HEADER}O1,1,C1,2024-06-01,1.00,true,,completed\nO2,1,C2,2024-06-01,2.00,true,,completed\n")
            .as_bytes(),
    );
    assert_exit(&project.ingest("2024-06-01"), 0);
    let raw = project.warehouse().join("raw/orders/load_date=2024-06-01/part-0.parquet");
    let reader = SerializedFileReader::new(std::fs::File::open(raw).unwrap()).unwrap();
    let has_dictionary: Vec<(String, bool)> = reader
        .metadata()
        .row_group(0)
        .columns()
        .iter()
        .map(|c| (c.column_path().string(), c.dictionary_page_offset().is_some()))
        .filter(|(name, _)| !["paid", "created_at"].contains(&name.as_str()))
        .collect();
    let expected = [
        ("order_id", false),
        ("line", true),
        ("customer_id", false),
        ("order_date", true),
        ("amount", false),
        ("status", true),
    ];
    assert_eq!(has_dictionary, expected.map(|(name, dictionary)| (name.to_string(), dictionary)));
}

#[test]
fn a_source_over_its_reject_ratio_fails_and_keeps_the_previous_partition() {
    let pipeline = ORDERS_PIPELINE.replace("max_reject_ratio: 1", "max_reject_ratio: 0.25");
    let project = TestProject::new(&pipeline);
    project.land("crm/2024-06-01/customers.csv", CUSTOMERS_CSV);
    project.land("orders/2024-06-01/orders.csv", format!("{HEADER}O1,1,C1,2024-06-01,1.00,true,,completed\n"));
    assert_exit(&project.ingest("2024-06-01"), 0);
    let raw = project.warehouse().join("raw/orders/load_date=2024-06-01/part-0.parquet");
    let before = std::fs::read(&raw).unwrap();

    project.land(
        "orders/2024-06-01/orders.csv",
        format!("{HEADER}O1,1,C1,2024-06-01,1.00,true,,completed\nO2,1,C1,bad,1.00,true,,completed\n"),
    );
    let output = project.ingest("2024-06-01");
    assert_exit(&output, 3);
    assert!(
        stderr(&output).contains("orders: rejected 1 of 2 rows (50.00%), more than max_reject_ratio 25%"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(&raw).unwrap(), before, "previous raw partition untouched");
    let ledger = project.last_ledger();
    assert_eq!(ledger["status"], "failed");
    let orders = ledger["steps"].as_array().unwrap().iter().find(|s| s["source"] == "orders").unwrap();
    assert_eq!(orders["status"], "failed");
    // The rejects of the failed load are kept for the operator, beside the ledger.
    let kept = orders["rejects_file"].as_str().unwrap();
    assert!(kept.starts_with(&format!("_runs/{}/rejects/orders/", ledger["run_id"].as_str().unwrap())), "{kept}");
    assert_eq!(project.parquet_rows(kept)[0][3], "invalid date");
}

const ONE_SOURCE: &str = r#"
sources:
  orders:
    path: orders/{as_of}/*.FORMAT
    format: FORMAT
    csv: {encoding: ENCODING}
    load: incremental
    primary_key: [order_id]
    columns:
      - {name: order_id, type: string, nullable: false}
      - {name: amount, type: "decimal(10,2)"}
      - {name: note, type: string}
"#;

#[rstest]
#[case::missing_folder("csv", "utf-8", None, "no landing folder for 2024-06-01: nothing under")]
#[case::empty_file("csv", "utf-8", Some(&b""[..]), "orders/2024-06-01/a.csv: empty file (0 bytes)")]
#[case::truncated_row("csv", "utf-8", Some(&b"order_id,amount,note\nO1,1.00,x\nO2,2.0"[..]), "orders/2024-06-01/a.csv: truncated")]
#[case::truncated_quote("csv", "utf-8", Some(&b"order_id,amount,note\nO1,1.00,\"unfinished"[..]), "orders/2024-06-01/a.csv: truncated")]
#[case::header_mismatch("csv", "utf-8", Some(&b"order_id,amount,remark\nO1,1.00,x\n"[..]), "orders/2024-06-01/a.csv: header does not match the contract: missing note; unexpected remark")]
#[case::gbk_declared_utf8("csv", "utf-8", Some(&b"order_id,amount,note\nO1,1.00,\xc9\xcf\xba\xa3\nO2,2.00,\xb1\xb1\xbe\xa9\n"[..]), "orders/2024-06-01/a.csv: not valid utf-8 (2 of 2 records): is the file in another encoding?")]
#[case::utf8_declared_gbk("csv", "gbk", Some("order_id,amount,note\nO1,1.00,上海\n".as_bytes()), "orders/2024-06-01/a.csv: declared gbk but its text is UTF-8")]
#[case::truncated_json("jsonl", "utf-8", Some(&b"{\"order_id\":\"O1\"}\n{\"order_id\":\"O2\",\"amo"[..]), "orders/2024-06-01/a.jsonl: truncated")]
#[case::corrupt_workbook("xlsx", "utf-8", Some(&b"PK\x03\x04 not really a workbook"[..]), "orders/2024-06-01/a.xlsx: not a readable workbook")]
fn an_unreadable_file_fails_its_source_with_one_line_naming_it(
    #[case] format: &str,
    #[case] encoding: &str,
    #[case] content: Option<&[u8]>,
    #[case] message: &str,
) {
    let mut pipeline = ONE_SOURCE.replace("FORMAT", format).replace("ENCODING", encoding);
    if format != "csv" {
        pipeline = pipeline.replace("    csv: {encoding: utf-8}\n", "");
    }
    let project = TestProject::new(&pipeline);
    if let Some(content) = content {
        project.land(&format!("orders/2024-06-01/a.{format}"), content);
    } else {
        project.land("orders/2024-05-31/a.csv", "order_id,amount,note\n");
    }
    let output = project.ingest("2024-06-01");
    assert_exit(&output, 3);
    let errors = stderr(&output);
    let line =
        errors.lines().find(|l| l.contains(message)).unwrap_or_else(|| panic!("no line with `{message}` in\n{errors}"));
    assert!(line.starts_with("error: orders: "), "{line}");
    assert!(!project.warehouse().join("raw/orders").exists(), "nothing committed");
}

#[test]
fn an_unknown_source_is_a_usage_error() {
    let project = orders_project(HEADER.as_bytes());
    let output = project.keymart(&["ingest", "--as-of", "2024-06-01", "--source", "ordrs"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("pipeline `test` has no source `ordrs` (sources: customers, orders)"),
        "{}",
        stderr(&output)
    );
}
