//! `keymart report` end to end: the shipped sample through the shipped pipeline, the report
//! written, every headline figure and every row of "what changed tonight" compared with the same
//! figure asked of the marts with `keymart query` (its own SQL, over `<mart>` at `--as-of`, not the
//! report's `_history` queries); and headless Chromium opening the file with the network cut off:
//! no console error, the scripts ran, the DOM holds the same figures, a screenshot that is not
//! blank, and a PDF with one A4 page per section.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::{TestProject, assert_exit, copy_dir, repo_root, stderr, stdout};

const D1: &str = "2024-06-01";
const D2: &str = "2024-06-02";
const D3: &str = "2024-06-03";

fn sample_project() -> TestProject {
    let project = TestProject::shipped();
    copy_dir(&repo_root().join("warehouse/landing"), &project.landing());
    project
}

fn run(project: &TestProject, args: &[&str]) {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    assert_exit(&project.keymart(&all), 0);
}

/// `keymart report … --out FILE`: the file's text.
fn report(project: &TestProject, name: &str, args: &[&str]) -> (PathBuf, String) {
    let out = project.path().join(name);
    let mut all = vec!["report", "--out", out.to_str().unwrap()];
    all.extend_from_slice(args);
    let output = project.keymart(&all);
    assert_exit(&output, 0);
    assert!(stdout(&output).contains(&out.display().to_string()), "{}", stdout(&output));
    let html = std::fs::read_to_string(&out).unwrap();
    (out, html)
}

/// The rows of `keymart query SQL --as-of D --format json`.
fn query(project: &TestProject, sql: &str, as_of: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let output = project.keymart(&["query", sql, "--as-of", as_of, "--format", "json"]);
    assert_exit(&output, 0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(stdout(&output).trim()).unwrap();
    rows.into_iter().map(|r| r.as_object().unwrap().clone()).collect()
}

/// A JSON value as the text the report would hold (`None` for null or absent).
fn json_text(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// The same figure: equal text, or equal numbers (to 1e-12 relative, for floats computed in
/// another order).
#[track_caller]
fn assert_same(what: &str, shown: Option<&str>, expected: Option<&str>) {
    let number = |s: &str| s.parse::<f64>().ok();
    match (shown, expected) {
        (Some(a), Some(b)) if a == b => {}
        (Some(a), Some(b)) => {
            let (x, y) = (number(a), number(b));
            assert!(
                x.zip(y).is_some_and(|(x, y)| (x - y).abs() <= 1e-12 * y.abs().max(1.0)),
                "{what}: the report shows {a}, the marts say {b}"
            );
        }
        (a, b) => assert_eq!(a, b, "{what}"),
    }
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// The value of `attribute="…"` in `tag` (an element's start tag).
fn attribute(tag: &str, attribute: &str) -> Option<String> {
    let start = tag.find(&format!(" {attribute}=\""))? + attribute.len() + 3;
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

/// Start tags of the elements carrying `attribute`, in document order.
fn tags_with<'a>(html: &'a str, attribute: &str) -> Vec<&'a str> {
    let needle = format!(" {attribute}=\"");
    let mut tags = Vec::new();
    let mut from = 0;
    while let Some(found) = html[from..].find(&needle) {
        let at = from + found;
        let start = html[..at].rfind('<').unwrap();
        let end = at + html[at..].find('>').unwrap();
        tags.push(&html[start..=end]);
        from = end;
    }
    tags
}

/// Every `data-key` → `data-value` of the page.
pub(crate) fn figures(html: &str) -> BTreeMap<String, String> {
    tags_with(html, "data-key")
        .into_iter()
        .filter_map(|tag| Some((attribute(tag, "data-key")?, attribute(tag, "data-value")?)))
        .collect()
}

/// The rows of "what changed tonight": customer → column → data-value (`None`: NULL).
fn tonight_rows(html: &str) -> BTreeMap<String, BTreeMap<String, Option<String>>> {
    let mut rows = BTreeMap::new();
    for (i, piece) in html.split("<tr data-customer=\"").enumerate().skip(1) {
        let row = &piece[..piece.find("</tr>").unwrap_or_else(|| panic!("row {i} never ends"))];
        let customer = unescape(&row[..row.find('"').unwrap()]);
        let cells: BTreeMap<String, Option<String>> = tags_with(row, "data-col")
            .into_iter()
            .map(|tag| (attribute(tag, "data-col").unwrap(), attribute(tag, "data-value")))
            .collect();
        assert!(rows.insert(customer.clone(), cells).is_none(), "{customer} twice");
    }
    rows
}

/// The headline, asked of the marts at `as_of` in the test's own words.
const HEADLINE: &str = "
SELECT
    (SELECT count(*) FROM customer_rfm WHERE frequency > 0) AS active_customers,
    (SELECT count(*) FROM key_accounts WHERE is_key_account) AS key_accounts,
    (SELECT CAST(sum(net_value) AS DOUBLE) FROM key_accounts WHERE is_key_account)
        / (SELECT CAST(sum(net_value) AS DOUBLE) FROM key_accounts WHERE net_value > 0) AS key_value_share,
    (SELECT sum(revenue) FROM customer_value) AS revenue,
    (SELECT sum(net_value) FROM customer_value) AS net_value,
    (SELECT count(*) FROM key_accounts WHERE status = 'at_risk') AS at_risk_key_accounts";

const HEADLINE_KEYS: [&str; 6] =
    ["active_customers", "key_accounts", "key_value_share", "revenue", "net_value", "at_risk_key_accounts"];

/// Every key account new, lost or at risk at `as_of`, with what the report lists for it.
const TONIGHT: &str = "
SELECT k.customer_id, k.status, k.net_value, v.clv, c.p_alive, c.days_since_last_order, c.typical_gap_days,
       c.recent_complaints, c.churn_reasons
FROM key_accounts k
JOIN customer_value v ON v.customer_id = k.customer_id
JOIN customer_churn c ON c.customer_id = k.customer_id
WHERE k.status IS NOT NULL AND k.status <> 'retained'";

/// Check the headline of `html` for `tonight` (and `previous`, when given) against the marts.
fn check_headline(project: &TestProject, shown: &BTreeMap<String, String>, tonight: &str, previous: Option<&str>) {
    let expected = &query(project, HEADLINE, tonight)[0];
    for key in HEADLINE_KEYS {
        assert_same(key, shown.get(key).map(String::as_str), json_text(expected.get(key)).as_deref());
    }
    if let Some(previous) = previous {
        let expected = &query(project, HEADLINE, previous)[0];
        for key in HEADLINE_KEYS {
            let shown_key = format!("{key}.previous");
            assert_same(&shown_key, shown.get(&shown_key).map(String::as_str), json_text(expected.get(key)).as_deref());
        }
    }
}

/// Check every row of "what changed tonight" against the marts, and the counts above the table.
fn check_tonight(project: &TestProject, html: &str, shown: &BTreeMap<String, String>, tonight: &str) -> usize {
    let rows = tonight_rows(html);
    let expected = query(project, TONIGHT, tonight);
    let expected_customers: Vec<String> =
        expected.iter().map(|r| r["customer_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(rows.keys().cloned().collect::<Vec<_>>(), {
        let mut c = expected_customers.clone();
        c.sort();
        c
    });
    for row in &expected {
        let customer = row["customer_id"].as_str().unwrap();
        for (column, value) in row {
            let shown = rows[customer].get(column).unwrap_or_else(|| panic!("{customer}: no {column}")).as_deref();
            assert_same(&format!("{customer}.{column}"), shown, json_text(Some(value)).as_deref());
        }
    }
    for status in ["new", "lost", "at_risk"] {
        let count = expected.iter().filter(|r| r["status"] == status).count();
        assert_eq!(shown.get(&format!("tonight.{status}")), Some(&count.to_string()), "tonight.{status}");
    }
    expected.len()
}

/// Data health: the night's loads as the run's ledger recorded them.
fn check_health(project: &TestProject, shown: &BTreeMap<String, String>, night: &str) {
    let ledger = project.last_ledger();
    let loads: Vec<&serde_json::Value> = ledger["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["step"] == "ingest" && s["load_date"] == night)
        .collect();
    assert_eq!(loads.len(), 4, "four sources loaded on {night}");
    for load in loads {
        let source = load["source"].as_str().unwrap();
        for field in ["rows_read", "rows_loaded", "rows_rejected"] {
            assert_eq!(
                shown.get(&format!("health.{source}.{field}")),
                Some(&load[field].to_string()),
                "{source} {field}"
            );
        }
    }
}

#[test]
fn the_report_shows_the_figures_of_the_marts_in_both_languages() {
    let project = sample_project();
    run(&project, &["--from", D1, "--to", D3]);

    let (en_file, en) = report(&project, "en.html", &["--lang", "en"]);
    assert!(en.len() < 1 << 20, "the page stays under 1 MB: {} bytes", en.len());
    assert!(en.contains("<html lang=\"en\" data-as-of=\"2024-06-03\">"), "{}", &en[..300]);
    let shown = figures(&en);
    check_headline(&project, &shown, D3, Some(D2));
    assert!(en.contains("no snapshot 30 days before"));
    let changed = check_tonight(&project, &en, &shown, D3);
    assert!(changed > 0, "the sample has key accounts that changed on {D3}");

    // The 80/20: what the customer closing the top 20 % of customers brings.
    let top20 = query(
        &project,
        "SELECT cumulative_share FROM key_accounts
         WHERE value_rank = (SELECT CAST(ceil(count(*) * 0.2) AS BIGINT) FROM key_accounts)",
        D3,
    );
    assert_same(
        "top20_value_share",
        shown.get("top20_value_share").map(String::as_str),
        json_text(top20[0].get("cumulative_share")).as_deref(),
    );

    check_health(&project, &shown, D3);

    // Chinese: the same figures, other labels and number formats (the default without report.lang).
    let (zh_file, zh) = report(&project, "zh.html", &[]);
    assert!(zh.contains("<html lang=\"zh-CN\"") && zh.contains("大客户日报") && zh.contains("今晚的变化"));
    assert!(zh.contains('¥') && zh.contains('万'), "Chinese money is written with ¥ and 万");
    assert_eq!(figures(&zh), shown, "the numbers do not depend on the language");
    assert_eq!(tonight_rows(&zh), tonight_rows(&en));

    // The previous night as of its date: what was the newest then.
    let (_, june2) = report(&project, "june2.html", &["--lang", "en", "--as-of", D2]);
    let june2_figures = figures(&june2);
    check_headline(&project, &june2_figures, D2, Some(D1));
    check_tonight(&project, &june2, &june2_figures, D2);

    // In the browser: the DOM after the scripts ran holds the same figures; it shows something
    // and prints one A4 page per section.
    let chromium = Chromium::new(&project);
    for (file, html) in [(&en_file, &en), (&zh_file, &zh)] {
        let dom = chromium.open(file, html);
        assert_eq!(figures(&dom), figures(html), "{}", file.display());
        assert_eq!(tonight_rows(&dom), tonight_rows(html), "{}", file.display());
        chromium.check_screenshot(file);
        chromium.check_pdf(file, html, 0);
    }
}

#[test]
fn the_report_is_published_into_the_warehouse_and_latest_follows_the_newest_night() {
    let project = sample_project();
    run(&project, &["--from", D1, "--to", D2]);
    let output = project.keymart(&["report", "--lang", "en"]);
    assert_exit(&output, 0);
    let dated = project.warehouse().join(format!("reports/as_of={D2}/index.html"));
    let latest = project.warehouse().join("reports/latest.html");
    assert!(stdout(&output).contains(&format!("report of {D2} written to")), "{}", stdout(&output));
    assert!(stdout(&output).contains("reports/latest.html"), "{}", stdout(&output));
    assert_eq!(std::fs::read(&dated).unwrap(), std::fs::read(&latest).unwrap());

    // An older night (a backfill) gets its own report and leaves latest alone.
    let output = project.keymart(&["report", "--lang", "en", "--as-of", D1]);
    assert_exit(&output, 0);
    assert!(!stdout(&output).contains("latest.html"), "{}", stdout(&output));
    let first = std::fs::read_to_string(project.warehouse().join(format!("reports/as_of={D1}/index.html"))).unwrap();
    assert!(first.contains(&format!("data-as-of=\"{D1}\"")));
    assert!(std::fs::read_to_string(&latest).unwrap().contains(&format!("data-as-of=\"{D2}\"")));

    // report.lang in keymart.yaml sets the language; a bad one is a configuration error.
    let settings = std::fs::read_to_string(project.path().join("keymart.yaml")).unwrap();
    std::fs::write(project.path().join("keymart.yaml"), format!("{settings}report:\n  lang: en\n")).unwrap();
    let output = project.keymart(&["report"]);
    assert_exit(&output, 0);
    assert!(std::fs::read_to_string(&latest).unwrap().contains("<html lang=\"en\""));
    for (block, field, message) in [
        ("lang: fr", "report.lang", "unknown variant `fr`, expected `zh` or `en`"),
        ("base_url: ftp://reports", "report.base_url", "must be an absolute http(s) URL"),
        ("colour: blue", "report", "colour"),
    ] {
        std::fs::write(project.path().join("keymart.yaml"), format!("{settings}report:\n  {block}\n")).unwrap();
        let output = project.keymart(&["check"]);
        assert_exit(&output, 2);
        let errors = stderr(&output);
        let line = settings.lines().count() + 2;
        assert!(
            errors.contains(&format!("keymart.yaml:{line}:")) && errors.contains(field) && errors.contains(message),
            "{errors}"
        );
    }
}

#[test]
fn a_first_night_report_says_what_is_missing_and_prints() {
    let project = sample_project();
    run(&project, &["--as-of", D1]);
    let (file, html) = report(&project, "first.html", &["--lang", "en"]);
    let shown = figures(&html);
    check_headline(&project, &shown, D1, None);
    assert!(html.contains("no previous snapshot (first night)"));
    assert!(html.contains("First night: there is no previous snapshot, so every key account is new."));
    assert!(html.contains("Only one snapshot is committed so far"));
    let changed = check_tonight(&project, &html, &shown, D1);
    assert_eq!(shown.get("tonight.new"), Some(&changed.to_string()), "on the first night every key account is new");
    assert!(!shown.contains_key("key_accounts.previous"));
    check_health(&project, &shown, D1);
    assert_ne!(
        shown.get("health.erp_orders.rows_rejected").map(String::as_str),
        Some("0"),
        "the first extract has rejects"
    );

    let chromium = Chromium::new(&project);
    let dom = chromium.open(&file, &html);
    assert_eq!(figures(&dom), shown);
    chromium.check_screenshot(&file);
    // Every key account is new on a first night: their table takes a second page.
    chromium.check_pdf(&file, &html, 1);
}

#[test]
fn an_empty_warehouse_gives_a_page_saying_so() {
    let project = sample_project();
    let (file, html) = report(&project, "empty.html", &["--lang", "en"]);
    assert!(stdout(&project.keymart(&["report", "--out", file.to_str().unwrap()])).contains("no committed marts yet"));
    assert!(html.contains("data-missing=\"marts\""));
    assert!(html.contains("no committed key_accounts snapshot"), "{html}");
    let chromium = Chromium::new(&project);
    chromium.open(&file, &html);
    chromium.check_pdf(&file, &html, 0);

    let (_, zh) = report(&project, "empty-zh.html", &["--lang", "zh"]);
    assert!(zh.contains("还没有已提交的"), "{zh}");
}

/// Headless Chromium with the network cut off (every host resolves to nothing, a dead proxy) and
/// a profile of its own.
struct Chromium {
    binary: PathBuf,
    profile: PathBuf,
    out: PathBuf,
}

impl Chromium {
    fn new(project: &TestProject) -> Chromium {
        let binary =
            std::env::var_os("KEYMART_CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
        assert!(
            binary.exists(),
            "the report tests need headless Chromium at {} (install it: `apt-get update && apt-get install -y chromium`, \
             or point KEYMART_CHROMIUM at it)",
            binary.display()
        );
        let profile = project.path().join("chromium-profile");
        std::fs::create_dir_all(&profile).unwrap();
        Chromium { binary, profile, out: project.path().to_path_buf() }
    }

    fn run(&self, args: &[&str], file: &Path) -> Output {
        let output = Command::new(&self.binary)
            .args(["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--no-default-browser-check"])
            .args([
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-sync",
                "--disable-component-update",
            ])
            .args([
                "--host-resolver-rules=MAP * ~NOTFOUND",
                "--proxy-server=http://127.0.0.1:9",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .args(args)
            .arg(format!("file://{}", file.display()))
            .output()
            .expect("start chromium");
        assert!(output.status.success(), "chromium {args:?} failed:\n{}", stderr(&output));
        output
    }

    /// Open the page: no console message at all (a CSP refusal, a script error or a failed
    /// request would each log one), its scripts ran to the end; the DOM after them.
    fn open(&self, file: &Path, html: &str) -> String {
        let output = self.run(&["--dump-dom"], file);
        let log = stderr(&output);
        let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE") || l.contains("Uncaught")).collect();
        assert!(console.is_empty(), "{}: console messages:\n{}", file.display(), console.join("\n"));
        let dom = stdout(&output);
        assert!(dom.contains("data-script=\"ready\""), "{}: the scripts did not finish:\n{log}", file.display());
        assert!(!html.contains("http://") && !html.contains("https://"), "the page names no network address");
        dom
    }

    /// A screenshot much larger than the one of an empty page (a blank PNG compresses to almost
    /// nothing).
    fn check_screenshot(&self, file: &Path) {
        let shot = self.out.join(format!("{}.png", file.file_stem().unwrap().to_str().unwrap()));
        let blank_page = self.out.join("blank.html");
        std::fs::write(&blank_page, "<!DOCTYPE html><html><body></body></html>").unwrap();
        let blank = self.out.join("blank.png");
        for (page, png) in [(file, &shot), (blank_page.as_path(), &blank)] {
            self.run(
                &[&format!("--screenshot={}", png.display()), "--window-size=1200,3000", "--hide-scrollbars"],
                page,
            );
        }
        let (size, blank_size) = (std::fs::metadata(&shot).unwrap().len(), std::fs::metadata(&blank).unwrap().len());
        assert!(size > 5 * blank_size, "screenshot {} is {size} bytes, a blank page's {blank_size}", shot.display());
        if let Ok(keep) = std::env::var("KEYMART_KEEP_SCREENSHOTS") {
            std::fs::copy(&shot, Path::new(&keep).join(shot.file_name().unwrap())).unwrap();
        }
    }

    /// Print to PDF: A4, one page per section, and `overflow` more pages for sections too long for one.
    fn check_pdf(&self, file: &Path, html: &str, overflow: usize) {
        let pdf = self.out.join(format!("{}.pdf", file.file_stem().unwrap().to_str().unwrap()));
        self.run(&[&format!("--print-to-pdf={}", pdf.display()), "--no-pdf-header-footer"], file);
        let bytes = std::fs::read(&pdf).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let pages = text.matches("/Type /Page").count() - text.matches("/Type /Pages").count();
        let sections = html.matches("<section ").count();
        assert_eq!(pages, sections + overflow, "{}: {pages} pages for {sections} sections", pdf.display());
        let media_box = text.split("/MediaBox [").nth(1).and_then(|b| b.split(']').next()).expect("a MediaBox");
        let size: Vec<f64> = media_box.split_whitespace().map(|n| n.parse().unwrap()).collect();
        assert!((size[2] - 595.3).abs() < 1.0 && (size[3] - 841.9).abs() < 1.0, "A4 pages (595 × 842 pt): {media_box}");
        if let Ok(keep) = std::env::var("KEYMART_KEEP_SCREENSHOTS") {
            std::fs::copy(&pdf, Path::new(&keep).join(pdf.file_name().unwrap())).unwrap();
        }
    }
}
