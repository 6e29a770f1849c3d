//! Hand-built cases for the shipped marts, one per `tests/fixtures/marts/*/case.yaml`: a few
//! customers and orders written by hand, the days to run, and the answers worked out by hand.
//!
//! Case files give each day's extracts as small CSV tables with only the columns that matter; the
//! runner fills the other contract columns with neutral defaults and writes each source in its
//! real format (GBK CSV with Chinese headers, CSV, JSON lines, Excel).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use rstest::rstest;
use serde::Deserialize;

use crate::support::{SAMPLE_MARTS, TestProject, assert_exit, stderr, stdout};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    #[allow(dead_code)]
    description: String,
    /// Extracts by date (YYYY-MM-DD), each source a small CSV table.
    days: BTreeMap<String, Extracts>,
    checks: Vec<Check>,
}

/// One day's extracts as small CSV tables (missing sources land as empty extracts).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Extracts {
    #[serde(default)]
    pub customers: Option<String>,
    #[serde(default)]
    pub orders: Option<String>,
    #[serde(default)]
    pub shipments: Option<String>,
    #[serde(default)]
    pub interactions: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    #[serde(default)]
    as_of: Option<String>,
    query: String,
    expect: String,
}

/// The contract columns of a source, with the value used when a case leaves one out.
struct Source {
    columns: &'static [(&'static str, &'static str)],
}

const CUSTOMERS: Source = Source {
    columns: &[
        ("customer_id", ""),
        ("name", "客户"),
        ("customer_type", "person"),
        ("industry", "retail"),
        ("region", "华东"),
        ("account_manager", "AM001"),
        ("credit_rating", "A"),
        ("annual_revenue", ""),
        ("created_date", "2024-01-01"),
        ("contact_name", ""),
        ("phone", ""),
        ("email", ""),
        ("address", ""),
    ],
};
const CUSTOMER_HEADERS: &str =
    "客户编号,客户名称,客户类型,行业,区域,客户经理,信用等级,年营业额,创建日期,联系人,电话,邮箱,地址";

const ORDERS: Source = Source {
    columns: &[
        ("order_id", ""),
        ("line_no", "1"),
        ("customer_id", ""),
        ("order_date", ""),
        ("product_id", "P1"),
        ("category", "general"),
        ("quantity", "1"),
        ("unit_price", "0"),
        ("discount", "0"),
        ("net_amount", "0"),
        ("cost_amount", "0"),
        ("currency", "CNY"),
        ("status", "completed"),
        ("order_channel", "online"),
    ],
};

const SHIPMENTS: Source = Source {
    columns: &[
        ("shipment_id", ""),
        ("order_id", ""),
        ("customer_id", ""),
        ("ship_date", ""),
        ("promised_date", ""),
        ("delivered_date", ""),
        ("carrier", "SF"),
        ("freight_cost", "0"),
        ("status", "delivered"),
        ("returned_qty", "0"),
    ],
};

const INTERACTIONS: Source = Source {
    columns: &[
        ("interaction_id", ""),
        ("customer_id", ""),
        ("started_at", ""),
        ("channel", "phone"),
        ("duration_sec", "0"),
        ("category", "inquiry"),
        ("is_complaint", "false"),
        ("resolved_at", ""),
        ("satisfaction", ""),
        ("agent_id", "A001"),
    ],
};

impl Source {
    /// The case's table as full rows in contract order.
    fn rows(&self, table: Option<&str>) -> Vec<Vec<String>> {
        let Some(table) = table else { return Vec::new() };
        let mut lines = table.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().map(|h| h.split(',').map(str::trim).collect()).unwrap_or_default();
        for name in &header {
            assert!(self.columns.iter().any(|(c, _)| c == name), "case column `{name}` is not in the contract");
        }
        lines
            .map(|line| {
                let values: Vec<&str> = line.split(',').map(str::trim).collect();
                self.columns
                    .iter()
                    .map(|(name, default)| match header.iter().position(|h| h == name) {
                        Some(i) => values[i].to_string(),
                        None => default.to_string(),
                    })
                    .collect()
            })
            .collect()
    }

    fn names(&self) -> Vec<&'static str> {
        self.columns.iter().map(|(n, _)| *n).collect()
    }
}

fn csv(header: &str, rows: &[Vec<String>]) -> String {
    let mut text = format!("{header}\n");
    for row in rows {
        writeln!(text, "{}", row.join(",")).unwrap();
    }
    text
}

/// Write one day's extracts in the shipped pipeline's formats.
pub fn land_day(project: &TestProject, day: &str, extracts: &Extracts) {
    let customers = CUSTOMERS.rows(extracts.customers.as_deref());
    project.land(
        &format!("erp/customers/{day}/customers.csv"),
        encoding_rs::GBK.encode(&csv(CUSTOMER_HEADERS, &customers)).0,
    );

    let orders = ORDERS.rows(extracts.orders.as_deref());
    project.land(&format!("erp/orders/{day}/orders.csv"), csv(&ORDERS.names().join(","), &orders));

    let mut jsonl = String::new();
    for row in SHIPMENTS.rows(extracts.shipments.as_deref()) {
        let fields: Vec<String> = SHIPMENTS
            .names()
            .iter()
            .zip(&row)
            .map(|(name, value)| {
                let value = if value.is_empty() { "null".to_string() } else { serde_json::to_string(value).unwrap() };
                format!("\"{name}\":{value}")
            })
            .collect();
        writeln!(jsonl, "{{{}}}", fields.join(",")).unwrap();
    }
    project.land(&format!("scm/shipments/{day}/shipments.jsonl"), jsonl);

    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    for (col, name) in INTERACTIONS.names().iter().enumerate() {
        sheet.write_string(0, col as u16, *name).unwrap();
    }
    for (r, row) in INTERACTIONS.rows(extracts.interactions.as_deref()).iter().enumerate() {
        for (col, value) in row.iter().enumerate() {
            if !value.is_empty() {
                sheet.write_string(r as u32 + 1, col as u16, value).unwrap();
            }
        }
    }
    project.land(&format!("cc/interactions/{day}/interactions.xlsx"), workbook.save_to_buffer().unwrap());
}

#[rstest]
fn mart_case(#[files("tests/fixtures/marts/*/case.yaml")] path: PathBuf) {
    let case: Case = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let project = TestProject::shipped();
    for (day, extracts) in &case.days {
        land_day(&project, day, extracts);
    }
    let first = case.days.keys().next().expect("a day").clone();
    let last = case.days.keys().next_back().expect("a day").clone();
    let run = project.keymart(&["run", "--from", &first, "--to", &last]);
    assert_exit(&run, 0);

    for check in &case.checks {
        let mut args = vec!["query", check.query.as_str(), "--format", "csv"];
        if let Some(as_of) = &check.as_of {
            args.extend(["--as-of", as_of.as_str()]);
        }
        let output = project.keymart(&args);
        assert_exit(&output, 0);
        assert_eq!(
            stdout(&output).trim(),
            check.expect.trim(),
            "{}: {}{}",
            path.display(),
            check.query,
            stderr(&output)
        );
    }
}

/// Two master rows whose ids differ only in case and spaces are one customer once conformed
/// (`upper(trim(…))`). customer_value groups its inputs by that key, so without a check it would
/// publish one row for the two, silently; stg_customers' uniqueness test stops every mart built
/// on the customer base instead.
#[test]
fn two_master_rows_with_one_conformed_key_stop_the_marts_built_on_them() {
    let project = TestProject::shipped();
    let extracts = Extracts {
        customers: Some("customer_id,created_date\nC1,2024-01-01\n c1,2024-02-01\nC2,2024-03-01\n".into()),
        ..Extracts::default()
    };
    land_day(&project, "2024-06-30", &extracts);
    let output = project.keymart(&["run", "--as-of", "2024-06-30"]);
    assert_exit(&output, 5);
    let summary = stdout(&output);
    let line = |model: &str| summary.lines().find(|l| l.trim_start().starts_with(model)).unwrap_or_default();
    assert!(line("stg_customers ").contains("NOT PUBLISHED (failed unique(customer_id))"), "{summary}");
    for mart in ["customer_value", "customer_profile", "key_accounts"] {
        assert!(line(mart).contains("NOT PUBLISHED (upstream"), "{mart}: {summary}");
    }
    assert!(project.snapshot("customer_value", "2024-06-30").is_none());
}

/// The README's first command: the shipped sample through the shipped pipeline publishes every
/// mart for every day, and every customer's segment follows the R×F map (written out here, cell by
/// cell, independently of the SQL).
#[test]
fn the_sample_publishes_every_mart_and_segments_follow_the_rf_map() {
    let project = TestProject::shipped();
    crate::support::copy_dir(&crate::support::repo_root().join("warehouse/landing"), &project.landing());
    assert_exit(&project.keymart(&["run", "--from", "2024-06-01", "--to", "2024-06-03"]), 0);

    for day in ["2024-06-01", "2024-06-02", "2024-06-03"] {
        for mart in SAMPLE_MARTS {
            assert!(project.snapshot(mart, day).is_some(), "{mart} {day}");
        }
    }

    const MAP: [[&str; 5]; 5] = [
        ["Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose"],
        ["Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose"],
        ["About to Sleep", "About to Sleep", "Need Attention", "Loyal", "Loyal"],
        ["Promising", "Potential Loyalists", "Potential Loyalists", "Loyal", "Loyal"],
        ["New", "Potential Loyalists", "Potential Loyalists", "Champions", "Champions"],
    ];
    let output = project.keymart(&["query", "SELECT r_score, f_score, segment FROM customer_rfm", "--format", "csv"]);
    assert_exit(&output, 0);
    let mut cells = std::collections::BTreeSet::new();
    for line in stdout(&output).lines().skip(1) {
        let (scores, segment) = line.split_at(4);
        let r: usize = scores[..1].parse().unwrap();
        let f: usize = scores[2..3].parse().unwrap();
        assert_eq!(segment.trim_matches(|c| c == ',' || c == '"'), MAP[r - 1][f - 1], "r={r} f={f}");
        cells.insert((r, f));
    }
    assert!(cells.len() >= 15, "the sample covers most of the map: {cells:?}");

    // CLV as DESIGN.md defines it — each future month's expected purchases (differences of the
    // cumulative BG/NBD curve) discounted, times the expected spend and the margin rate —
    // computed here month by month with a window, against the mart's sum by parts.
    let clv = project.keymart(&[
        "query",
        "WITH p AS (SELECT * FROM model_parameters),
         months AS (SELECT unnest(generate_series(1, 12)) AS month),
         curve AS (
             SELECT v.customer_id, m.month,
                 bgnbd_expected_purchases(p.bgnbd_r, p.bgnbd_alpha, p.bgnbd_a, p.bgnbd_b, v.repeat_purchases,
                     v.weeks_to_last_purchase, v.weeks_observed, m.month * 52.0 / 12.0) AS cumulative
             FROM customer_value v CROSS JOIN p CROSS JOIN months m),
         monthly AS (
             SELECT customer_id, month,
                 cumulative - coalesce(lag(cumulative) OVER (PARTITION BY customer_id ORDER BY month), 0) AS purchases
             FROM curve),
         direct AS (
             SELECT customer_id, sum(purchases / power(1.10, month / 12.0)) AS discounted FROM monthly GROUP BY customer_id),
         base AS (SELECT CAST(sum(gross_margin) AS DOUBLE) / CAST(sum(revenue) AS DOUBLE) AS rate FROM customer_value)
         SELECT count(*) AS customers,
             count(CASE WHEN abs(v.clv - d.discounted * v.expected_spend * CASE WHEN v.revenue > 0
                 THEN CAST(v.gross_margin AS DOUBLE) / CAST(v.revenue AS DOUBLE) ELSE base.rate END) > 1e-9 * abs(v.clv)
                 THEN 1 END) AS differing
         FROM customer_value v JOIN direct d USING (customer_id) CROSS JOIN base
         WHERE v.clv IS NOT NULL",
        "--format",
        "csv",
    ]);
    assert_exit(&clv, 0);
    assert_eq!(stdout(&clv).lines().nth(1), Some("200,0"), "{}", stdout(&clv));

    // The README's question: which key accounts are at risk, and why.
    let at_risk = project.keymart(&[
        "query",
        "SELECT k.customer_id, k.net_value, c.p_alive, c.churn_reasons FROM key_accounts k \
         JOIN customer_churn c USING (customer_id) WHERE k.status = 'at_risk' ORDER BY k.net_value DESC",
    ]);
    assert_exit(&at_risk, 0);
    assert!(stdout(&at_risk).lines().count() > 4, "{}", stdout(&at_risk));
}
