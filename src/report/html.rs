//! The report as one self-contained HTML page: inline CSS (screen, and A4 print with one section
//! per page), inline SVG charts written here, a little inline JavaScript (sorting, CSV download),
//! and a Content-Security-Policy that lets the page load nothing from anywhere.
//!
//! Every number a reader (or a test) may want exactly is in a `data-value` attribute beside its
//! formatted text: `<span data-key="revenue" data-value="1234567.89">¥123.46万</span>`.

use std::fmt::Write as _;

use chrono::NaiveDate;

use super::data::{Cell, Nights, Present, ReportData, Row, TONIGHT_ROWS};
use super::health::Health;
use super::i18n::{Labels, Numbers, labels, segment};
use crate::config::ReportLang;

/// The segments of customer_rfm in the order the grids and the migration show them.
const SEGMENTS: [&str; 10] = [
    "Champions",
    "Loyal",
    "Potential Loyalists",
    "New",
    "Promising",
    "Need Attention",
    "About to Sleep",
    "At Risk",
    "Can't Lose",
    "Hibernating",
];

/// What the page is made of.
pub(crate) struct Inputs<'a> {
    pub lang: ReportLang,
    /// The date asked for, when it has no snapshot and an earlier night is shown.
    pub requested: Option<NaiveDate>,
    pub nights: &'a Nights,
    pub present: &'a Present,
    pub data: &'a ReportData,
    /// The night's run and its ledger (`None`: the ledger is not in the warehouse).
    pub health: (String, Option<Health>),
}

struct Page<'a> {
    inputs: &'a Inputs<'a>,
    l: &'static Labels,
    n: Numbers,
}

/// The report of a night.
pub(crate) fn report(inputs: &Inputs) -> String {
    let page = Page { inputs, l: labels(inputs.lang), n: Numbers { lang: inputs.lang } };
    let mut notes = Vec::new();
    if let Some(asked) = inputs.requested {
        notes.push(
            page.l
                .requested_missing
                .replace("{asked}", &asked.to_string())
                .replace("{shown}", &inputs.nights.tonight.to_string()),
        );
    }
    let sections = [
        page.headline(),
        page.pareto(),
        page.grids(),
        page.tonight(),
        page.trends(),
        page.migration(),
        page.service(),
        page.health(),
    ];
    document(inputs.lang, Some(inputs.nights.tonight), &notes, &sections)
}

/// The page of a warehouse with no committed snapshot to report on.
pub(crate) fn nothing_committed(lang: ReportLang, requested: Option<NaiveDate>) -> String {
    let l = labels(lang);
    let upto = match (requested, lang) {
        (Some(d), ReportLang::En) => format!(" up to {d}"),
        (Some(d), ReportLang::Zh) => format!("（截至 {d}）"),
        (None, _) => String::new(),
    };
    let section = format!(
        "<section id=\"missing\"><h2>{}</h2><p class=\"missing\" data-missing=\"marts\">{}</p></section>",
        esc(l.headline),
        esc(&l.no_marts.replace("{upto}", &upto))
    );
    document(lang, None, &[], &[section])
}

fn document(lang: ReportLang, night: Option<NaiveDate>, notes: &[String], sections: &[String]) -> String {
    let l = labels(lang);
    let night_text = night.map(|d| d.to_string()).unwrap_or_else(|| l.missing_value.to_string());
    let mut html = String::with_capacity(64 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"{lang}\" data-as-of=\"{as_of}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; \
         script-src 'unsafe-inline'; img-src data:\">\n<link rel=\"icon\" href=\"data:,\">\n\
         <title>{title} · {night}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n\
         <header><h1>{title}</h1><p class=\"sub\">{as_of_label} <b>{night}</b> · {subtitle}</p>",
        lang = l.html_lang,
        as_of = night.map(|d| d.to_string()).unwrap_or_default(),
        title = esc(l.title),
        night = esc(&night_text),
        as_of_label = esc(l.as_of),
        subtitle = esc(l.subtitle),
    );
    for note in notes {
        let _ = write!(html, "<p class=\"missing\">{}</p>", esc(note));
    }
    html.push_str("</header>\n");
    for section in sections {
        html.push_str(section);
        html.push('\n');
    }
    let _ = write!(html, "</main>\n<script>{SCRIPT}</script>\n</body>\n</html>\n");
    html
}

impl Page<'_> {
    fn data(&self) -> &ReportData {
        self.inputs.data
    }

    fn night(&self) -> NaiveDate {
        self.inputs.nights.tonight
    }

    /// A section, or the sentence saying which snapshots it lacks.
    fn section(&self, id: &str, title: &str, needs: &[&str], body: impl FnOnce() -> String) -> String {
        let missing: Vec<&str> = needs.iter().copied().filter(|m| !self.inputs.present.contains(*m)).collect();
        let body = if missing.is_empty() {
            body()
        } else {
            format!(
                "<p class=\"missing\" data-missing=\"{}\">{}</p>",
                esc(&missing.join(" ")),
                esc(&self
                    .l
                    .missing_marts
                    .replace("{marts}", &missing.join(", "))
                    .replace("{night}", &self.night().to_string()))
            )
        };
        format!("<section id=\"{id}\"><h2>{}</h2>{body}</section>", esc(title))
    }

    // ---- headline -------------------------------------------------------------------------

    fn headline(&self) -> String {
        self.section("headline", self.l.headline, &["key_accounts"], || {
            let metrics: [(&str, &str, Kind, &[Row]); 6] = [
                ("active_customers", self.l.active_customers, Kind::Count, &self.data().rfm_by_night),
                ("key_accounts", self.l.key_accounts, Kind::Count, &self.data().key_accounts_by_night),
                ("key_value_share", self.l.key_value_share, Kind::Share, &self.data().key_accounts_by_night),
                ("revenue", self.l.revenue, Kind::Money, &self.data().value_by_night),
                ("net_value", self.l.net_value, Kind::Money, &self.data().value_by_night),
                (
                    "at_risk_key_accounts",
                    self.l.at_risk_key_accounts,
                    Kind::CountBadUp,
                    &self.data().key_accounts_by_night,
                ),
            ];
            let nights = self.inputs.nights;
            let mut html = String::from("<div class=\"cards\">");
            for (key, label, kind, rows) in metrics {
                let value = |night: NaiveDate| night_row(rows, night).map(|r| r.cell(key)).unwrap_or_default();
                let tonight = value(nights.tonight);
                let _ = write!(
                    html,
                    "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{}</div>",
                    esc(label),
                    self.figure(key, &tonight, kind)
                );
                let comparisons = [
                    ("previous", self.l.vs_previous, nights.previous, self.l.no_previous),
                    ("month_ago", self.l.vs_month_ago, nights.month_ago, self.l.no_month_ago),
                ];
                for (suffix, vs, night, none) in comparisons {
                    html.push_str("<div class=\"delta\">");
                    match night {
                        Some(night) => {
                            let before = value(night);
                            let _ = write!(
                                html,
                                "{} {}: {} {}",
                                esc(vs),
                                night,
                                self.figure(&format!("{key}.{suffix}"), &before, kind),
                                self.change(&tonight, &before, kind)
                            );
                        }
                        None => html.push_str(&esc(none)),
                    }
                    html.push_str("</div>");
                }
                html.push_str("</div>");
            }
            let _ = write!(html, "</div><p class=\"note\">{}</p>", esc(self.l.headline_note));
            html
        })
    }

    /// A number with its exact value in `data-value`.
    fn figure(&self, key: &str, cell: &Cell, kind: Kind) -> String {
        let shown = match (cell.number, kind) {
            (None, _) => self.l.missing_value.to_string(),
            (Some(x), Kind::Count | Kind::CountBadUp) => self.n.count(x),
            (Some(x), Kind::Money) => self.n.money(x),
            (Some(x), Kind::Share) => self.n.percent(x),
        };
        format!("<span data-key=\"{}\"{}>{}</span>", esc(key), value_attribute(cell), esc(&shown))
    }

    fn change(&self, now: &Cell, before: &Cell, kind: Kind) -> String {
        let (Some(now), Some(before)) = (now.number, before.number) else { return String::new() };
        let (text, delta) = match kind {
            Kind::Share => (self.n.points(now - before), now - before),
            _ if before == 0.0 => return String::new(),
            _ => (self.n.change((now - before) / before.abs()), now - before),
        };
        let good = if kind == Kind::CountBadUp { delta < 0.0 } else { delta > 0.0 };
        let class = if delta == 0.0 {
            "flat"
        } else if good {
            "good"
        } else {
            "bad"
        };
        format!("<b class=\"{class}\">{}</b>", esc(&text))
    }

    // ---- the 80/20 ------------------------------------------------------------------------

    fn pareto(&self) -> String {
        self.section("pareto", self.l.pareto, &["key_accounts"], || {
            let points = &self.data().pareto;
            let share = |r: &Row| r.number("cumulative_share");
            if points.is_empty() || points.iter().any(|p| share(p).is_none()) {
                return format!("<p class=\"missing\">{}</p>", esc(self.l.pareto_empty));
            }
            let first = &points[0];
            let customers = first.number("customers").unwrap_or(0.0);
            let key_accounts = first.number("key_accounts").unwrap_or(0.0);
            let at_rank = |rank: f64| points.iter().find(|p| p.number("value_rank") == Some(rank));
            let top20 = first.number("top20_rank").and_then(at_rank);
            let cutoff = at_rank(key_accounts);
            let mut html = String::new();
            if let Some(top20) = top20 {
                let share = self.figure("top20_value_share", &top20.cell("cumulative_share"), Kind::Share);
                let _ = write!(html, "<p class=\"lead\">{}</p>", self.l.pareto_top20.replace("{share}", &share));
            }
            if let Some(cutoff) = cutoff {
                let _ = write!(
                    html,
                    "<p class=\"lead\">{}</p>",
                    self.l
                        .pareto_key_accounts
                        .replace(
                            "{count}",
                            &self.figure("pareto_key_accounts", &first.cell("key_accounts"), Kind::Count)
                        )
                        .replace(
                            "{customers}",
                            &self.figure("key_account_customer_share", &cutoff.cell("customer_share"), Kind::Share)
                        )
                        .replace(
                            "{share}",
                            &self.figure("key_account_value_share", &cutoff.cell("cumulative_share"), Kind::Share)
                        )
                );
            }
            html.push_str(&self.pareto_svg(points, top20, cutoff, customers));
            html
        })
    }

    fn pareto_svg(&self, points: &[Row], top20: Option<&Row>, cutoff: Option<&Row>, customers: f64) -> String {
        let (width, height, left, right, top, bottom) = (640.0, 340.0, 56.0, 20.0, 14.0, 44.0);
        let x = |share: f64| left + share * (width - left - right);
        let y = |share: f64| height - bottom - share.clamp(0.0, 1.0) * (height - top - bottom);
        let mut svg = format!(
            "<svg class=\"chart\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" \
             aria-label=\"{}\" data-points=\"{}\">",
            esc(self.l.pareto),
            points.len()
        );
        for step in 0..=5 {
            let share = f64::from(step) / 5.0;
            let _ = write!(
                svg,
                "<line class=\"grid\" x1=\"{x0}\" y1=\"{yv}\" x2=\"{x1}\" y2=\"{yv}\"/>\
                 <line class=\"grid\" x1=\"{xv}\" y1=\"{y0}\" x2=\"{xv}\" y2=\"{y1}\"/>\
                 <text class=\"tick\" x=\"{tx}\" y=\"{ty}\" text-anchor=\"end\">{pct}</text>\
                 <text class=\"tick\" x=\"{xv}\" y=\"{bx}\" text-anchor=\"middle\">{pct}</text>",
                x0 = x(0.0),
                x1 = x(1.0),
                yv = y(share),
                xv = x(share),
                y0 = y(0.0),
                y1 = y(1.0),
                tx = left - 6.0,
                ty = y(share) + 4.0,
                bx = height - bottom + 16.0,
                pct = self.n.percent(share),
            );
        }
        let _ = write!(
            svg,
            "<line class=\"diagonal\" x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/>",
            x(0.0),
            y(0.0),
            x(1.0),
            y(1.0)
        );
        let mut path = format!("M{:.1},{:.1}", x(0.0), y(0.0));
        for point in points {
            let rank = point.number("value_rank").unwrap_or(0.0);
            let share = point.number("cumulative_share").unwrap_or(0.0);
            let _ = write!(path, " L{:.1},{:.1}", x(rank / customers.max(1.0)), y(share));
        }
        let _ = write!(svg, "<path class=\"curve\" d=\"{path}\"/>");
        // The two marks, each with a legend line in the empty lower right of the plot.
        let marks =
            [(top20, "mark20", self.l.legend_top20, 0.30), (cutoff, "markka", self.l.legend_key_accounts, 0.20)];
        for (row, class, legend, legend_y) in marks {
            let Some(row) = row else { continue };
            let (customer_share, value_share) =
                (row.number("customer_share").unwrap_or(0.0), row.number("cumulative_share").unwrap_or(0.0));
            let (cx, cy) = (x(customer_share), y(value_share));
            let _ = write!(
                svg,
                "<line class=\"{class}\" x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{cy:.1}\"/>\
                 <line class=\"{class}\" x1=\"{:.1}\" y1=\"{cy:.1}\" x2=\"{cx:.1}\" y2=\"{cy:.1}\"/>\
                 <circle class=\"{class}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\"/>\
                 <circle class=\"{class}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\"/>\
                 <text class=\"label\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                y(0.0),
                x(0.0),
                x(0.42),
                y(legend_y) - 4.0,
                x(0.42) + 10.0,
                y(legend_y),
                esc(&format!("{legend}: {} → {}", self.n.percent(customer_share), self.n.percent(value_share))),
            );
        }
        let _ = write!(
            svg,
            "<text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
             <text class=\"axis\" transform=\"translate(14 {}) rotate(-90)\" text-anchor=\"middle\">{}</text></svg>",
            x(0.5),
            height - 6.0,
            esc(self.l.customers_axis),
            y(0.5),
            esc(self.l.value_axis)
        );
        svg
    }

    // ---- grids and segments ---------------------------------------------------------------

    fn grids(&self) -> String {
        self.section("grids", self.l.grids, &["customer_rfm"], || {
            let mut html = String::from("<div class=\"pair\">");
            html.push_str(&self.grid("fm", self.l.grid_fm, self.l.monetary_score, &self.data().grid_fm));
            html.push_str(&self.grid("fr", self.l.grid_fr, self.l.recency_score, &self.data().grid_fr));
            let _ = write!(html, "</div><p class=\"note\">{}</p>", esc(self.l.grid_note));
            let _ = write!(
                html,
                "<h3>{}</h3><table class=\"numbers\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
                esc(self.l.segments),
                esc(self.l.segment),
                esc(self.l.customers),
                esc(self.l.share_of_customers),
                esc(self.l.rfm_value),
                esc(self.l.share_of_value)
            );
            for row in &self.data().segments {
                let name = row.text("segment");
                let _ = write!(
                    html,
                    "<tr data-segment=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&name),
                    esc(&segment(self.inputs.lang, &name)),
                    self.figure(&format!("segment.{name}.customers"), &row.cell("customers"), Kind::Count),
                    self.figure(&format!("segment.{name}.customer_share"), &row.cell("customer_share"), Kind::Share),
                    self.figure(&format!("segment.{name}.monetary"), &row.cell("monetary"), Kind::Money),
                    self.figure(&format!("segment.{name}.monetary_share"), &row.cell("monetary_share"), Kind::Share),
                );
            }
            html.push_str("</tbody></table>");
            html
        })
    }

    /// A 5×5 grid, F from 5 (top) to 1 against the other score from 1 to 5.
    fn grid(&self, id: &str, title: &str, other: &str, rows: &[Row]) -> String {
        let cell = |f: u8, o: u8| {
            rows.iter()
                .find(|r| r.number("f_score") == Some(f64::from(f)) && r.number("other_score") == Some(f64::from(o)))
        };
        let most = rows.iter().filter_map(|r| r.number("customers")).fold(0.0, f64::max).max(1.0);
        let mut html = format!(
            "<div><h3>{}</h3><table class=\"grid\" data-grid=\"{id}\"><thead><tr><th>{} \\ {}</th>",
            esc(title),
            esc(self.l.frequency),
            esc(other)
        );
        for o in 1..=5 {
            let _ = write!(html, "<th>{o}</th>");
        }
        html.push_str("</tr></thead><tbody>");
        for f in (1..=5).rev() {
            let _ = write!(html, "<tr><th>{f}</th>");
            for o in 1..=5 {
                let (customers, monetary) = cell(f, o)
                    .map_or((Cell::default(), Cell::default()), |r| (r.cell("customers"), r.cell("monetary")));
                let count = customers.number.unwrap_or(0.0);
                let alpha = 0.08 + 0.8 * count / most;
                let ink = if alpha > 0.5 { "#fff" } else { "inherit" };
                let _ = write!(
                    html,
                    "<td data-f=\"{f}\" data-other=\"{o}\" data-customers=\"{}\" data-value=\"{}\" \
                     style=\"background:rgba(31,111,235,{alpha:.2});color:{ink}\">{}<small>{}</small></td>",
                    esc(customers.text()),
                    esc(monetary.text()),
                    esc(&self.n.count(count)),
                    esc(&monetary.number.map(|m| self.n.money(m)).unwrap_or_default()),
                );
            }
            html.push_str("</tr>");
        }
        html.push_str("</tbody></table></div>");
        html
    }

    // ---- what changed tonight -------------------------------------------------------------

    fn tonight(&self) -> String {
        self.section("tonight", self.l.tonight, &["key_accounts", "customer_value", "customer_churn"], || {
            let mut html = String::new();
            let counts = &self.data().tonight_counts;
            let total: f64 = counts.iter().filter_map(|r| r.number("customers")).sum();
            if self.inputs.nights.previous.is_none() {
                let _ = write!(html, "<p class=\"note\">{}</p>", esc(self.l.tonight_first_night));
            }
            html.push_str("<div class=\"cards small\">");
            for (status, label) in
                [("at_risk", self.l.status_at_risk), ("lost", self.l.status_lost), ("new", self.l.status_new)]
            {
                let row = counts.iter().find(|r| r.text("status") == status);
                let (customers, value) = row.map_or((Cell::default(), Cell::default()), |r| (r.cell("customers"), r.cell("net_value")));
                let customers = if customers.text.is_none() { Cell { text: Some("0".into()), number: Some(0.0) } } else { customers };
                let _ = write!(
                    html,
                    "<div class=\"card status-{status}\"><div class=\"label\">{}</div><div class=\"value\">{}</div><div class=\"delta\">{}</div></div>",
                    esc(label),
                    self.figure(&format!("tonight.{status}"), &customers, Kind::Count),
                    self.figure(&format!("tonight.{status}.net_value"), &value, Kind::Money),
                );
            }
            html.push_str("</div>");
            let rows = &self.data().tonight;
            if rows.is_empty() {
                let _ = write!(html, "<p class=\"note\">{}</p>", esc(self.l.tonight_none));
                return html;
            }
            if total as usize > rows.len() {
                let _ = write!(
                    html,
                    "<p class=\"note\">{}</p>",
                    esc(&self
                        .l
                        .tonight_shown
                        .replace("{shown}", &self.n.count(rows.len() as f64))
                        .replace("{total}", &self.n.count(total)))
                );
            }
            let _ = write!(
                html,
                "<p class=\"note noprint\">{} <button type=\"button\" id=\"tonight-csv\" data-file=\"key_accounts_{}.csv\">{}</button></p>",
                esc(self.l.sort_hint),
                self.night(),
                esc(self.l.download_csv)
            );
            let columns: [(&str, &str, bool); 9] = [
                ("customer_id", self.l.customer, false),
                ("status", self.l.status, false),
                ("net_value", self.l.net_value, true),
                ("clv", self.l.clv, true),
                ("p_alive", self.l.p_alive, true),
                ("days_since_last_order", self.l.days_since_last_order, true),
                ("typical_gap_days", self.l.usual_gap, true),
                ("recent_complaints", self.l.complaints_90d, true),
                ("churn_reasons", self.l.churn_reasons, false),
            ];
            html.push_str("<table id=\"tonight-table\" class=\"numbers sortable\"><thead><tr>");
            for (column, label, numeric) in columns {
                let _ = write!(
                    html,
                    "<th data-col=\"{column}\" data-type=\"{}\">{}</th>",
                    if numeric { "num" } else { "text" },
                    esc(label)
                );
            }
            html.push_str("</tr></thead><tbody>");
            debug_assert!(rows.len() <= TONIGHT_ROWS);
            for row in rows {
                let status = row.text("status");
                let _ = write!(html, "<tr data-customer=\"{}\" data-status=\"{}\">", esc(&row.text("customer_id")), esc(&status));
                for (column, _, _) in columns {
                    let cell = row.cell(column);
                    let shown = match (column, cell.number) {
                        ("status", _) => match status.as_str() {
                            "new" => self.l.status_new.to_string(),
                            "lost" => self.l.status_lost.to_string(),
                            "at_risk" => self.l.status_at_risk.to_string(),
                            other => other.to_string(),
                        },
                        (_, None) if cell.text.is_none() => self.l.missing_value.to_string(),
                        ("net_value" | "clv", Some(x)) => self.n.money(x),
                        ("p_alive", Some(x)) => self.n.decimal(x, 3),
                        ("typical_gap_days", Some(x)) => self.n.decimal(x, 0),
                        (_, Some(x)) => self.n.count(x),
                        _ => cell.text().to_string(),
                    };
                    let class = if matches!(column, "customer_id" | "status" | "churn_reasons") { " class=\"text\"" } else { "" };
                    let _ = write!(
                        html,
                        "<td data-col=\"{column}\"{}{class}>{}</td>",
                        value_attribute(&cell),
                        esc(&shown)
                    );
                }
                html.push_str("</tr>");
            }
            html.push_str("</tbody></table>");
            html
        })
    }

    // ---- trends ---------------------------------------------------------------------------

    fn trends(&self) -> String {
        self.section("trends", self.l.trends, &["key_accounts"], || {
            let since = self.inputs.nights.trend_since;
            let key_rows: Vec<&Row> =
                self.data().key_accounts_by_night.iter().filter(|r| row_night(r).is_some_and(|d| d >= since)).collect();
            if key_rows.len() < 2 {
                return format!("<p class=\"note\">{}</p>", esc(self.l.trends_one));
            }
            let churn = &self.data().churn_by_night;
            let series: [Series<'_>; 4] = [
                ("key_accounts", self.l.trend_key_accounts, Kind::Count, points(&key_rows, "key_accounts")),
                ("key_value_share", self.l.trend_value_share, Kind::Share, points(&key_rows, "key_value_share")),
                (
                    "at_risk_key_accounts",
                    self.l.trend_at_risk,
                    Kind::CountBadUp,
                    points(&key_rows, "at_risk_key_accounts"),
                ),
                (
                    "median_p_alive",
                    self.l.trend_median_p_alive,
                    Kind::Share,
                    key_rows
                        .iter()
                        .filter_map(|r| row_night(r))
                        .map(|d| (d, night_row(churn, d).and_then(|r| r.number("median_p_alive"))))
                        .collect(),
                ),
            ];
            let mut html = String::from("<div class=\"quad\">");
            for (key, title, kind, values) in &series {
                html.push_str(&self.sparkline(key, title, *kind, values));
            }
            let _ = write!(
                html,
                "</div><details class=\"noprint\"><summary>{}</summary><table class=\"numbers\"><thead><tr><th>{}</th>",
                esc(self.l.trend_data),
                esc(self.l.night)
            );
            for (_, title, _, _) in &series {
                let _ = write!(html, "<th>{}</th>", esc(title));
            }
            html.push_str("</tr></thead><tbody>");
            for (i, row) in key_rows.iter().enumerate() {
                let _ = write!(html, "<tr><td>{}</td>", esc(&row.text("as_of")));
                for (_, _, kind, values) in &series {
                    let shown =
                        values[i].1.map(|v| self.shown(v, *kind)).unwrap_or_else(|| self.l.missing_value.into());
                    let _ = write!(html, "<td>{}</td>", esc(&shown));
                }
                html.push_str("</tr>");
            }
            html.push_str("</tbody></table></details>");
            html
        })
    }

    fn shown(&self, value: f64, kind: Kind) -> String {
        match kind {
            Kind::Count | Kind::CountBadUp => self.n.count(value),
            Kind::Money => self.n.money(value),
            Kind::Share => self.n.percent(value),
        }
    }

    fn sparkline(&self, key: &str, title: &str, kind: Kind, values: &[(NaiveDate, Option<f64>)]) -> String {
        let (width, height, left, right, top, bottom) = (480.0, 150.0, 64.0, 10.0, 10.0, 22.0);
        let known: Vec<f64> = values.iter().filter_map(|v| v.1).collect();
        let (low, high) = known.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        // A flat series is drawn in the middle, not on an axis.
        let (floor, ceiling) = if !low.is_finite() {
            (0.0, 1.0)
        } else if (high - low).abs() < 1e-12 {
            (low - 1.0, high + 1.0)
        } else {
            (low, high)
        };
        let steps = (values.len().max(2) - 1) as f64;
        let x = |i: usize| left + (i as f64) / steps * (width - left - right);
        let y = |v: f64| height - bottom - (v - floor) / (ceiling - floor) * (height - top - bottom);
        let mut path = String::new();
        let mut dots = String::new();
        for (i, (night, value)) in values.iter().enumerate() {
            let Some(value) = value else { continue };
            let _ = write!(path, "{}{:.1},{:.1}", if path.is_empty() { "M" } else { " L" }, x(i), y(*value));
            let _ = write!(
                dots,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\"><title>{night}: {}</title></circle>",
                x(i),
                y(*value),
                esc(&self.shown(*value, kind))
            );
        }
        let mut axis = String::new();
        if low.is_finite() {
            for value in if high > low { vec![low, high] } else { vec![low] } {
                let _ = write!(
                    axis,
                    "<line class=\"grid\" x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\"/>\
                     <text class=\"tick\" x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{4}</text>",
                    y(value),
                    width - right,
                    left - 6.0,
                    y(value) + 4.0,
                    esc(&self.shown(value, kind))
                );
            }
        }
        let last = values.last().and_then(|v| v.1).map(|v| self.shown(v, kind)).unwrap_or_default();
        let first_night = values.first().map(|v| v.0.to_string()).unwrap_or_default();
        let last_night = values.last().map(|v| v.0.to_string()).unwrap_or_default();
        format!(
            "<figure class=\"trend\" data-trend=\"{key}\" data-snapshots=\"{}\"><figcaption>{} <b>{}</b></figcaption>\
             <svg viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\">{axis}\
             <path class=\"curve\" d=\"{path}\"/>{dots}\
             <text class=\"tick\" x=\"{left}\" y=\"{}\">{first_night}</text>\
             <text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{last_night}</text></svg></figure>",
            values.len(),
            esc(title),
            esc(&last),
            height - 4.0,
            width - right,
            height - 4.0,
        )
    }

    // ---- segment migration ----------------------------------------------------------------

    fn migration(&self) -> String {
        self.section("migration", self.l.migration, &["segment_migration"], || {
            let rows = &self.data().migration;
            let mut html = String::new();
            match self.inputs.nights.previous {
                Some(previous) => {
                    let _ = write!(
                        html,
                        "<p class=\"note\">{}</p>",
                        esc(&self.l.migration_note.replace("{previous}", &previous.to_string()))
                    );
                }
                None => {
                    let _ = write!(html, "<p class=\"note\">{}</p>", esc(self.l.migration_first_night));
                }
            }
            let present = |column: &str, name: &str| rows.iter().any(|r| r.text(column) == name);
            let from: Vec<&str> =
                std::iter::once("new").chain(SEGMENTS).filter(|s| present("from_segment", s)).collect();
            let to: Vec<&str> =
                SEGMENTS.into_iter().chain(std::iter::once("lost")).filter(|s| present("to_segment", s)).collect();
            let name = |s: &str| match s {
                "new" => self.l.new_customers.to_string(),
                "lost" => self.l.lost_customers.to_string(),
                other => segment(self.inputs.lang, other),
            };
            let _ = write!(html, "<table class=\"heat\"><thead><tr><th>{}</th>", esc(self.l.from_to));
            for t in &to {
                let _ = write!(html, "<th>{}</th>", esc(&name(t)));
            }
            html.push_str("</tr></thead><tbody>");
            for f in &from {
                let _ = write!(html, "<tr><th>{}</th>", esc(&name(f)));
                for t in &to {
                    match rows.iter().find(|r| r.text("from_segment") == *f && r.text("to_segment") == *t) {
                        Some(row) => {
                            let probability = row.number("probability").unwrap_or(0.0);
                            let ink = if probability > 0.5 { "#fff" } else { "inherit" };
                            let _ = write!(
                                html,
                                "<td data-from=\"{}\" data-to=\"{}\" data-customers=\"{}\" data-value=\"{}\" \
                                 style=\"background:rgba(31,111,235,{:.2});color:{ink}\">{}<small>{}</small></td>",
                                esc(f),
                                esc(t),
                                esc(&row.text("customers")),
                                esc(&row.text("probability")),
                                0.06 + 0.9 * probability,
                                esc(&self.n.percent(probability)),
                                esc(&self.n.count(row.number("customers").unwrap_or(0.0))),
                            );
                        }
                        None => html.push_str("<td class=\"empty\"></td>"),
                    }
                }
                html.push_str("</tr>");
            }
            html.push_str("</tbody></table>");
            html
        })
    }

    // ---- service --------------------------------------------------------------------------

    fn service(&self) -> String {
        self.section("service", self.l.service, &["service_quality", "key_accounts"], || {
            let rows = &self.data().service;
            let group = |key_account: bool| rows.iter().find(|r| r.text("is_key_account") == key_account.to_string());
            let groups =
                [("key_accounts", self.l.key_account_group, group(true)), ("others", self.l.other_group, group(false))];
            let mut html = format!(
                "<p class=\"note\">{}</p><table class=\"numbers\"><thead><tr><th></th>",
                esc(self.l.service_note)
            );
            for (_, label, _) in &groups {
                let _ = write!(html, "<th>{}</th>", esc(label));
            }
            html.push_str("</tr></thead><tbody>");
            let measures: [(&str, &str, Option<usize>); 7] = [
                ("customers", self.l.customers, None),
                ("contacts_per_customer", self.l.contacts_per_customer, Some(2)),
                ("complaints", self.l.complaints, None),
                ("complaints_per_100", self.l.complaints_per_100, Some(1)),
                ("open_complaints", self.l.open_complaints, None),
                ("median_resolution_hours", self.l.median_resolution_hours, Some(1)),
                ("mean_satisfaction", self.l.mean_satisfaction, Some(2)),
            ];
            for (measure, label, digits) in measures {
                let _ = write!(html, "<tr><td>{}</td>", esc(label));
                for (group, _, row) in &groups {
                    let cell = row.map(|r| r.cell(measure)).unwrap_or_default();
                    let shown = match (cell.number, digits) {
                        (None, _) => self.l.missing_value.to_string(),
                        (Some(x), Some(digits)) => self.n.decimal(x, digits),
                        (Some(x), None) => self.n.count(x),
                    };
                    let _ = write!(
                        html,
                        "<td><span data-key=\"service.{group}.{measure}\"{}>{}</span></td>",
                        value_attribute(&cell),
                        esc(&shown)
                    );
                }
                html.push_str("</tr>");
            }
            html.push_str("</tbody></table>");
            html
        })
    }

    // ---- data health ----------------------------------------------------------------------

    fn health(&self) -> String {
        let (run_id, health) = &self.inputs.health;
        let mut html = String::new();
        match health {
            None => {
                let _ =
                    write!(html, "<p class=\"missing\">{}</p>", esc(&self.l.health_no_ledger.replace("{run}", run_id)));
            }
            Some(health) => {
                let _ = write!(
                    html,
                    "<p class=\"note\">{}</p>",
                    esc(&self.l.health_run.replace("{run}", &health.run_id).replace("{status}", &health.run_status))
                );
                if let Some(error) = &health.run_error {
                    let _ = write!(html, "<p class=\"missing\">{}</p>", esc(error));
                }
                if health.sources.is_empty() {
                    let _ = write!(html, "<p class=\"note\">{}</p>", esc(self.l.no_loads));
                } else {
                    let _ = write!(
                        html,
                        "<table class=\"numbers\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
                        esc(self.l.source),
                        esc(self.l.rows_read),
                        esc(self.l.rows_loaded),
                        esc(self.l.rows_rejected),
                        esc(self.l.reject_reasons)
                    );
                    for source in &health.sources {
                        let reasons =
                            source.reasons.iter().map(|(r, n)| format!("{r} ({n})")).collect::<Vec<_>>().join(", ");
                        let count = |field: &str, n: u64| {
                            format!(
                                "<span data-key=\"health.{}.{field}\" data-value=\"{n}\">{}</span>",
                                esc(&source.source),
                                esc(&self.n.count(n as f64))
                            )
                        };
                        let _ = write!(
                            html,
                            "<tr data-source=\"{0}\" data-status=\"{1}\"><td>{0}</td><td>{2}</td><td>{3}</td><td>{4}</td><td class=\"text\">{5}</td></tr>",
                            esc(&source.source),
                            esc(&source.status),
                            count("rows_read", source.rows_read),
                            count("rows_loaded", source.rows_loaded),
                            count("rows_rejected", source.rows_rejected),
                            esc(&reasons)
                        );
                    }
                    html.push_str("</tbody></table>");
                }
                let _ = write!(
                    html,
                    "<p class=\"note\">{}</p>",
                    self.l
                        .tests_summary
                        .replace(
                            "{tests}",
                            &format!("<span data-key=\"health.tests\" data-value=\"{0}\">{0}</span>", health.tests)
                        )
                        .replace(
                            "{failed}",
                            &format!(
                                "<span data-key=\"health.tests_failed\" data-value=\"{0}\">{0}</span>",
                                health.failed.len()
                            )
                        )
                        .replace(
                            "{warned}",
                            &format!(
                                "<span data-key=\"health.tests_warned\" data-value=\"{0}\">{0}</span>",
                                health.warned.len()
                            )
                        )
                );
                let failures: Vec<_> = health
                    .failed
                    .iter()
                    .map(|t| (t, self.l.tests_failed))
                    .chain(health.warned.iter().map(|t| (t, self.l.tests_warned)))
                    .collect();
                if !failures.is_empty() {
                    let _ = write!(
                        html,
                        "<table class=\"numbers\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
                        esc(self.l.model),
                        esc(self.l.test),
                        esc(self.l.status),
                        esc(self.l.failing_rows)
                    );
                    for (test, outcome) in failures {
                        let _ = write!(
                            html,
                            "<tr><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td>{}</td></tr>",
                            esc(&test.model),
                            esc(&test.test),
                            esc(outcome),
                            esc(&self.n.count(test.failing_rows as f64))
                        );
                    }
                    html.push_str("</tbody></table>");
                }
            }
        }
        html.push_str(&self.parameters());
        format!("<section id=\"health\"><h2>{}</h2>{html}</section>", esc(self.l.health))
    }

    fn parameters(&self) -> String {
        let mut html = format!("<h3>{}</h3>", esc(self.l.parameters));
        if !self.inputs.present.contains("model_parameters") {
            let _ = write!(
                html,
                "<p class=\"missing\" data-missing=\"model_parameters\">{}</p>",
                esc(&self
                    .l
                    .missing_marts
                    .replace("{marts}", "model_parameters")
                    .replace("{night}", &self.night().to_string()))
            );
            return html;
        }
        let _ = write!(
            html,
            "<table class=\"numbers\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
            esc(self.l.parameter),
            esc(self.l.tonight_value),
            esc(self.l.previous_value),
            esc(self.l.drift)
        );
        for row in &self.data().parameters {
            let name = row.text("parameter");
            let value = |column: &str| {
                let cell = row.cell(column);
                let shown = match cell.number {
                    None => self.l.missing_value.to_string(),
                    Some(x) if name.ends_with("_customers") => self.n.count(x),
                    Some(x) => format!("{x:.4}"),
                };
                format!(
                    "<span data-key=\"parameter.{}.{column}\"{}>{}</span>",
                    esc(&name),
                    value_attribute(&cell),
                    esc(&shown)
                )
            };
            let drift = row.number("relative_change").map(|c| self.n.change(c)).unwrap_or_default();
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&name),
                value("tonight"),
                value("previous"),
                esc(&drift)
            );
        }
        html.push_str("</tbody></table>");
        html
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Count,
    /// A count where up is bad news (at-risk key accounts).
    CountBadUp,
    Money,
    Share,
}

fn row_night(row: &Row) -> Option<NaiveDate> {
    row.text("as_of").parse().ok()
}

fn night_row(rows: &[Row], night: NaiveDate) -> Option<&Row> {
    rows.iter().find(|r| row_night(r) == Some(night))
}

fn points(rows: &[&Row], column: &str) -> Vec<(NaiveDate, Option<f64>)> {
    rows.iter().filter_map(|r| Some((row_night(r)?, r.number(column)))).collect()
}

/// ` data-value="…"` with a value's exact text; nothing for NULL (an empty string is a value).
fn value_attribute(cell: &Cell) -> String {
    cell.text.as_deref().map(|text| format!(" data-value=\"{}\"", esc(text))).unwrap_or_default()
}

/// Text for HTML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root{--ink:#1f2933;--muted:#5f6b7a;--line:#d9e2ec;--accent:#1f6feb;--good:#16794c;--bad:#b42318;--warn:#b54708}
*{box-sizing:border-box}
body{margin:0;background:#f3f5f8;color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI","PingFang SC","Hiragino Sans GB","Microsoft YaHei","Noto Sans CJK SC","WenQuanYi Micro Hei",sans-serif}
main{max-width:1080px;margin:0 auto;padding:24px}
header h1{margin:0;font-size:24px}
header .sub{margin:4px 0 16px;color:var(--muted)}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:18px 22px;margin:0 0 18px}
h2{margin:0 0 12px;font-size:18px}
h3{margin:14px 0 8px;font-size:15px}
.cards{display:grid;grid-template-columns:repeat(3,1fr);gap:12px}
.card{border:1px solid var(--line);border-radius:6px;padding:10px 12px}
.card .label{color:var(--muted);font-size:13px}
.card .value{font-size:26px;font-weight:600;margin:2px 0 4px}
.cards.small{margin-bottom:12px}
.cards.small .value{font-size:20px}
.status-at_risk .value{color:var(--bad)}
.status-lost .value{color:var(--warn)}
.status-new .value{color:var(--good)}
.delta{font-size:12px;color:var(--muted)}
.good{color:var(--good)}.bad{color:var(--bad)}.flat{color:var(--muted)}
.note{color:var(--muted);font-size:13px}
.lead{font-size:15px;margin:4px 0}
.missing{background:#fff7e6;border-left:4px solid var(--warn);padding:8px 12px;color:#7a4b00}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right;vertical-align:top}
th:first-child,td:first-child,td.text{text-align:left}
td:not(.text),td[data-col=status]{white-space:nowrap}
th[data-type=text]{text-align:left}
thead th{background:#f7f9fb;font-weight:600}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[aria-sort=ascending]::after{content:" ▲"}
table.sortable th[aria-sort=descending]::after{content:" ▼"}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:20px}
table.grid td,table.heat td{text-align:center;border:1px solid #fff;min-width:56px}
table.grid td small,table.heat td small{display:block;font-size:11px;opacity:.85}
table.grid th,table.heat th{text-align:center}
table.heat{font-size:12px}
table.heat td.empty{background:#fafbfc}
svg.chart{max-width:100%;height:auto}
svg .grid{stroke:#e4e9f0}
svg .diagonal{stroke:#9aa5b1;stroke-dasharray:4 4}
svg .curve{fill:none;stroke:var(--accent);stroke-width:2.5}
svg circle{fill:var(--accent)}
svg .mark20{stroke:var(--warn);stroke-dasharray:3 3;fill:var(--warn)}
svg .markka{stroke:var(--good);stroke-dasharray:3 3;fill:var(--good)}
svg .tick{font-size:11px;fill:var(--muted)}
svg .label{font-size:12px;fill:var(--ink)}
svg .axis{font-size:12px;fill:var(--muted)}
.quad{display:grid;grid-template-columns:1fr 1fr;gap:12px}
figure.trend{margin:0;border:1px solid var(--line);border-radius:6px;padding:8px}
figure.trend figcaption{font-size:13px;color:var(--muted)}
figure.trend figcaption b{color:var(--ink);margin-left:6px}
figure.trend svg{width:100%;height:auto}
button{font:inherit;padding:3px 10px;border:1px solid var(--accent);background:#fff;color:var(--accent);border-radius:4px;cursor:pointer}
details summary{cursor:pointer;color:var(--muted);margin-top:10px}
@page{size:A4;margin:12mm}
@media print{
  body{background:#fff;font-size:12px}
  main{max-width:none;padding:0}
  section{border:0;border-radius:0;padding:0;margin:0;break-before:page;break-inside:avoid}
  header+section{break-before:auto}
  .noprint{display:none}
  table{font-size:11px}
  th,td{padding:3px 6px}
  thead{display:table-header-group}
  tr{break-inside:avoid}
  .card .value{font-size:20px}
  *{-webkit-print-color-adjust:exact;print-color-adjust:exact}
}
"#;

/// Sorting by a column header (numbers by their exact `data-value`), and the CSV of the table
/// as a Blob (a download that needs no network); marks `<html data-script="ready">` when done.
const SCRIPT: &str = r#"
(function () {
  "use strict";
  var table = document.getElementById("tonight-table");
  if (table) {
    var headers = table.tHead.rows[0].cells;
    var sortKey = function (cell, numeric) {
      var raw = cell.getAttribute("data-value");
      if (numeric) { return raw === null || raw === "" ? -Infinity : parseFloat(raw); }
      return (raw === null ? cell.textContent : raw).toLowerCase();
    };
    Array.prototype.forEach.call(headers, function (header, index) {
      header.addEventListener("click", function () {
        var numeric = header.getAttribute("data-type") === "num";
        var ascending = header.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(headers, function (h) { h.removeAttribute("aria-sort"); });
        header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = sortKey(a.cells[index], numeric), y = sortKey(b.cells[index], numeric);
          return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
    var button = document.getElementById("tonight-csv");
    if (button) {
      button.addEventListener("click", function () {
        var quote = function (text) { return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text; };
        var lines = [Array.prototype.map.call(headers, function (h) { return quote(h.getAttribute("data-col")); }).join(",")];
        Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
          lines.push(Array.prototype.map.call(row.cells, function (c) { return quote(c.getAttribute("data-value") || ""); }).join(","));
        });
        var blob = new Blob(["\ufeff" + lines.join("\r\n") + "\r\n"], { type: "text/csv;charset=utf-8" });
        var link = document.createElement("a");
        link.href = URL.createObjectURL(blob);
        link.download = button.getAttribute("data-file");
        document.body.appendChild(link);
        link.click();
        setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 0);
      });
    }
  }
  document.documentElement.setAttribute("data-script", "ready");
})();
"#;

/// One trend line: its key, its label, how its values read, and its points by night.
type Series<'a> = (&'a str, &'a str, Kind, Vec<(NaiveDate, Option<f64>)>);
