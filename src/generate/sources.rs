//! The four extracts the generator writes, laid out as the shipped pipeline's contracts expect,
//! and the rows of each: customer master, order lines, shipments, call-centre contacts.

use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};
use rand::Rng;
use rand_distr::{Distribution, Exp, Poisson};

use super::names;
use super::population::{Customer, STREAM_MASTER, stream};
use super::write::Cell;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    Csv { gbk: bool },
    Jsonl,
    Xlsx,
}

/// How one source's extracts look on disk, and which columns can carry which mess.
#[derive(Debug)]
pub struct SourceLayout {
    pub source: &'static str,
    /// Folder under the landing root; files go to `<folder>/<YYYY-MM-DD>/`.
    pub folder: &'static str,
    pub stem: &'static str,
    pub format: OutFormat,
    /// Column names as written in the file (CSV/Excel header, JSON keys), in row order.
    pub headers: &'static [&'static str],
    pub key_column: usize,
    /// Prefix of keys made up for extra (rejected) rows; never a real key.
    pub fresh_key_prefix: &'static str,
    pub date_columns: &'static [usize],
    /// The date columns hold timestamps (a bad one is an invalid timestamp, not date).
    pub dates_are_timestamps: bool,
    pub amount_columns: &'static [usize],
    /// Free-text columns (no accepted values) that may carry blanks or bad bytes.
    pub text_columns: &'static [usize],
    pub customer_column: Option<usize>,
    pub quantity_column: Option<usize>,
}

impl SourceLayout {
    pub fn can_carry_bad_bytes(&self) -> bool {
        self.format != OutFormat::Xlsx
    }

    /// Extract file for a date; `resent` is the second file some systems send with repeated lines.
    pub fn file_path(&self, root: &Path, date: NaiveDate, resent: bool) -> PathBuf {
        let extension = match self.format {
            OutFormat::Csv { .. } => "csv",
            OutFormat::Jsonl => "jsonl",
            OutFormat::Xlsx => "xlsx",
        };
        let suffix = if resent { "_resent" } else { "" };
        root.join(self.folder).join(date.to_string()).join(format!(
            "{}_{}{suffix}.{extension}",
            self.stem,
            date.format("%Y%m%d")
        ))
    }
}

pub const CUSTOMERS: SourceLayout = SourceLayout {
    source: "erp_customers",
    folder: "erp/customers",
    stem: "customers",
    format: OutFormat::Csv { gbk: true },
    headers: &[
        "客户编号",
        "客户名称",
        "客户类型",
        "行业",
        "区域",
        "客户经理",
        "信用等级",
        "年营业额",
        "创建日期",
        "联系人",
        "电话",
        "邮箱",
        "地址",
    ],
    key_column: 0,
    fresh_key_prefix: "CX",
    date_columns: &[8],
    dates_are_timestamps: false,
    amount_columns: &[7],
    text_columns: &[1, 9, 12],
    customer_column: None,
    quantity_column: None,
};

pub const ORDERS: SourceLayout = SourceLayout {
    source: "erp_orders",
    folder: "erp/orders",
    stem: "orders",
    format: OutFormat::Csv { gbk: false },
    headers: &[
        "order_id",
        "line_no",
        "customer_id",
        "order_date",
        "product_id",
        "category",
        "quantity",
        "unit_price",
        "discount",
        "net_amount",
        "cost_amount",
        "currency",
        "status",
        "order_channel",
    ],
    key_column: 0,
    fresh_key_prefix: "SOX",
    date_columns: &[3],
    dates_are_timestamps: false,
    amount_columns: &[7, 9, 10],
    text_columns: &[5],
    customer_column: Some(2),
    quantity_column: Some(6),
};

pub const SHIPMENTS: SourceLayout = SourceLayout {
    source: "scm_shipments",
    folder: "scm/shipments",
    stem: "shipments",
    format: OutFormat::Jsonl,
    headers: &[
        "shipment_id",
        "order_id",
        "customer_id",
        "ship_date",
        "promised_date",
        "delivered_date",
        "carrier",
        "freight_cost",
        "status",
        "returned_qty",
    ],
    key_column: 0,
    fresh_key_prefix: "SHX",
    date_columns: &[3, 4],
    dates_are_timestamps: false,
    amount_columns: &[7],
    text_columns: &[6],
    customer_column: Some(2),
    quantity_column: None,
};

pub const INTERACTIONS: SourceLayout = SourceLayout {
    source: "cc_interactions",
    folder: "cc/interactions",
    stem: "interactions",
    format: OutFormat::Xlsx,
    headers: &[
        "interaction_id",
        "customer_id",
        "started_at",
        "channel",
        "duration_sec",
        "category",
        "is_complaint",
        "resolved_at",
        "satisfaction",
        "agent_id",
    ],
    key_column: 0,
    fresh_key_prefix: "CCX",
    date_columns: &[2],
    dates_are_timestamps: true,
    amount_columns: &[],
    text_columns: &[5, 9],
    customer_column: Some(1),
    quantity_column: None,
};

pub const ALL: [&SourceLayout; 4] = [&CUSTOMERS, &ORDERS, &SHIPMENTS, &INTERACTIONS];

pub fn customer_id(index: u32) -> String {
    format!("C{:07}", index + 1)
}

/// Product categories with their gross margin.
const CATEGORIES: &[(&str, &str, f64)] = &[
    ("electronics", "EL", 0.18),
    ("office_supplies", "OF", 0.32),
    ("furniture", "FU", 0.27),
    ("industrial_parts", "IP", 0.22),
    ("packaging", "PK", 0.30),
    ("chemicals", "CH", 0.20),
    ("software", "SW", 0.55),
    ("services", "SV", 0.40),
];
const ORDER_CHANNELS: &[&str] = &["sales_rep", "online", "phone", "edi", "distributor"];
const CARRIERS: &[&str] = &["顺丰速运", "京东物流", "中通快递", "圆通速递", "德邦物流"];
const DISCOUNT_LEVELS: &[i64] = &[0, 200, 500, 1000, 1500];

/// Stable buying and service habits of a customer.
#[derive(Debug, Clone, Copy)]
pub struct Habits {
    pub order_channel: u8,
    pub discount_level: u8,
    pub favourite_category: u8,
    /// Mean extra transit days (late deliveries cluster on some customers).
    pub lateness: f32,
}

pub fn habits(seed: u64, index: u32, customer: &Customer) -> Habits {
    let mut rng = stream(seed, STREAM_MASTER + 1000, index as u64);
    let channel = if customer.enterprise { rng.random_range(0..ORDER_CHANNELS.len()) } else { rng.random_range(0..3) };
    let discount =
        if customer.enterprise { rng.random_range(2..DISCOUNT_LEVELS.len()) } else { rng.random_range(0..3) };
    Habits {
        order_channel: channel as u8,
        discount_level: discount as u8,
        favourite_category: rng.random_range(0..CATEGORIES.len()) as u8,
        lateness: if rng.random_bool(0.15) { 2.5 } else { 0.4 },
    }
}

/// Customer master row; `version` > 0 is a later change (account manager, credit rating).
pub fn customer_row(seed: u64, index: u32, customer: &Customer, created: NaiveDate, version: u32) -> Vec<Cell> {
    let mut rng = stream(seed, STREAM_MASTER, index as u64);
    let (city, region) = names::city(&mut rng);
    let (industry, industry_word) = *names::pick(&mut rng, names::INDUSTRIES);
    let contact = names::person(&mut rng);
    let name = if customer.enterprise { names::company(&mut rng, city, industry_word) } else { contact.clone() };
    let ratings: &[&str] = if customer.enterprise { &["AAA", "AA", "A", "BBB"] } else { &["A", "BBB", "BB", "B"] };
    let mut rating = *names::pick(&mut rng, ratings);
    let mut manager = rng.random_range(1..=40);
    let revenue = customer.enterprise.then(|| {
        let exponent: f64 = rng.random_range(7.0..10.0);
        Cell::Decimal(((10f64.powf(exponent) / 1000.0).round() as i64) * 100_000, 2)
    });
    let phone = names::phone(&mut rng);
    let address = names::address(&mut rng, city);
    if version > 0 {
        let mut change = stream(seed, STREAM_MASTER + 100 * version as u64, index as u64);
        rating = *names::pick(&mut change, ratings);
        manager = change.random_range(1..=40);
    }
    vec![
        Cell::Text(customer_id(index)),
        Cell::Text(name),
        Cell::Text(if customer.enterprise { "enterprise" } else { "person" }.to_string()),
        Cell::Text(industry.to_string()),
        Cell::Text(names::region_name(region).to_string()),
        Cell::Text(format!("AM{manager:03}")),
        Cell::Text(rating.to_string()),
        revenue.unwrap_or(Cell::Null),
        Cell::Date(created),
        Cell::Text(contact),
        Cell::Text(phone),
        Cell::Text(format!("contact{}@example.cn", index + 1)),
        Cell::Text(address),
    ]
}

/// One order of an occasion: its completed lines carry exactly `spend_cents` in net amount.
pub struct Order {
    pub lines: Vec<Vec<Cell>>,
    pub completed_cents: i64,
    pub returned_qty: i64,
}

/// Lines of one order. `status` applies to every line; `returned_line` adds a returned line on top.
#[allow(clippy::too_many_arguments)] // each argument is another fact of the one order drawn
pub fn order_lines<R: Rng>(
    rng: &mut R,
    order_id: &str,
    customer: u32,
    enterprise: bool,
    habits: Habits,
    date: NaiveDate,
    spend_cents: i64,
    status: &str,
    returned_line: bool,
) -> Order {
    let count = (1 + Poisson::new(1.8).expect("rate").sample(rng) as i64).min(10).min(spend_cents.max(1));
    let weights: Vec<f64> = (0..count).map(|_| rng.random_range(0.2..1.0)).collect();
    let total_weight: f64 = weights.iter().sum();
    let mut amounts: Vec<i64> =
        weights.iter().map(|w| ((spend_cents as f64 * w / total_weight).floor() as i64).max(1)).collect();
    let assigned: i64 = amounts[..amounts.len() - 1].iter().sum();
    *amounts.last_mut().expect("at least one line") = (spend_cents - assigned).max(1);

    let mut lines = Vec::with_capacity(amounts.len() + 1);
    let mut returned_qty = 0;
    for (i, net) in amounts.iter().copied().enumerate() {
        lines.push(order_line(rng, order_id, i as i64 + 1, customer, enterprise, habits, date, net, status));
    }
    if returned_line {
        let net = (spend_cents / 4).max(100);
        let line =
            order_line(rng, order_id, lines.len() as i64 + 1, customer, enterprise, habits, date, net, "returned");
        if let Cell::Int(q) = line[6] {
            returned_qty = q;
        }
        lines.push(line);
    }
    let completed_cents = if status == "completed" { amounts.iter().sum() } else { 0 };
    Order { lines, completed_cents, returned_qty }
}

#[allow(clippy::too_many_arguments)]
fn order_line<R: Rng>(
    rng: &mut R,
    order_id: &str,
    line_no: i64,
    customer: u32,
    enterprise: bool,
    habits: Habits,
    date: NaiveDate,
    net_cents: i64,
    status: &str,
) -> Vec<Cell> {
    let category =
        if rng.random_bool(0.5) { habits.favourite_category as usize } else { rng.random_range(0..CATEGORIES.len()) };
    let (category_name, prefix, margin) = CATEGORIES[category];
    let max_quantity = if enterprise { 200 } else { 10 };
    let quantity = rng.random_range(1..=max_quantity).min(net_cents.max(1));
    let level = (habits.discount_level as i64 + rng.random_range(-1..=1)).clamp(0, DISCOUNT_LEVELS.len() as i64 - 1);
    let discount = DISCOUNT_LEVELS[level as usize];
    // net = quantity × unit_price × (1 − discount); net is what the ERP books, the price is rounded.
    let unit_price = ((net_cents as f64) / (quantity as f64 * (1.0 - discount as f64 / 10_000.0))).round() as i64;
    let cost = ((net_cents as f64) * (1.0 - margin + rng.random_range(-0.05..0.05))).round() as i64;
    let channel =
        if rng.random_bool(0.8) { habits.order_channel as usize } else { rng.random_range(0..ORDER_CHANNELS.len()) };
    vec![
        Cell::Text(order_id.to_string()),
        Cell::Int(line_no),
        Cell::Text(customer_id(customer)),
        Cell::Date(date),
        Cell::Text(format!("{prefix}-{:04}", rng.random_range(1..=500))),
        Cell::Text(category_name.to_string()),
        Cell::Int(quantity),
        Cell::Decimal(unit_price.max(1), 2),
        Cell::Decimal(discount, 4),
        Cell::Decimal(net_cents, 2),
        Cell::Decimal(cost.max(0), 2),
        Cell::Text("CNY".to_string()),
        Cell::Text(status.to_string()),
        Cell::Text(ORDER_CHANNELS[channel].to_string()),
    ]
}

/// A shipment of one order: the in-transit version (day shipped) and the final one (day delivered).
pub struct Shipment {
    pub shipped_day: u32,
    pub delivered_day: u32,
    pub in_transit: Vec<Cell>,
    pub delivered: Vec<Cell>,
    pub late: bool,
}

#[allow(clippy::too_many_arguments)]
pub fn shipment<R: Rng>(
    rng: &mut R,
    shipment_id: &str,
    order_id: &str,
    customer: u32,
    habits: Habits,
    order_day: u32,
    window_start: NaiveDate,
    order_cents: i64,
    returned_qty: i64,
) -> Shipment {
    let date = |day: u32| window_start + Duration::days(day as i64);
    let shipped_day = order_day + rng.random_range(0..=2);
    let promised_day = order_day + 4;
    let transit = 1 + Poisson::new(1.0 + habits.lateness as f64).expect("rate").sample(rng) as u32;
    let delivered_day = shipped_day + transit;
    let freight = 1500 + order_cents / 120 + rng.random_range(0..500);
    let carrier = *names::pick(rng, CARRIERS);
    let row = |delivered: Option<u32>, status: &str, returned: i64| {
        vec![
            Cell::Text(shipment_id.to_string()),
            Cell::Text(order_id.to_string()),
            Cell::Text(customer_id(customer)),
            Cell::Date(date(shipped_day)),
            Cell::Date(date(promised_day)),
            delivered.map_or(Cell::Null, |d| Cell::Date(date(d))),
            Cell::Text(carrier.to_string()),
            Cell::Decimal(freight, 2),
            Cell::Text(status.to_string()),
            Cell::Int(returned),
        ]
    };
    let final_status = if returned_qty > 0 { "returned" } else { "delivered" };
    Shipment {
        shipped_day,
        delivered_day,
        in_transit: row(None, "in_transit", 0),
        delivered: row(Some(delivered_day), final_status, returned_qty),
        late: delivered_day > promised_day,
    }
}

const CONTACT_CHANNELS: &[&str] = &["phone", "email", "web", "chat", "visit"];
const COMPLAINT_CATEGORIES: &[&str] = &["delivery", "quality", "billing", "service"];
const QUESTION_CATEGORIES: &[&str] = &["inquiry", "order", "technical", "account"];

/// A call-centre contact: the row when it was opened, and the row when it was resolved (same
/// row twice when resolved the same day; no resolution row when it stays open).
pub struct Contact {
    pub opened: Vec<Cell>,
    pub resolved_day: Option<u32>,
    pub resolved: Option<Vec<Cell>>,
}

#[allow(clippy::too_many_arguments)]
pub fn contact<R: Rng>(
    rng: &mut R,
    interaction_id: &str,
    customer: u32,
    enterprise: bool,
    day: u32,
    window_start: NaiveDate,
    complaint: bool,
    complaint_category: Option<&str>,
) -> Contact {
    let weights: [u32; 5] = if enterprise { [40, 20, 5, 10, 25] } else { [45, 20, 15, 18, 2] };
    let mut roll = rng.random_range(0..weights.iter().sum::<u32>());
    let channel = weights
        .iter()
        .position(|w| {
            if roll < *w {
                true
            } else {
                roll -= w;
                false
            }
        })
        .unwrap_or(0);
    let duration: i64 = match CONTACT_CHANNELS[channel] {
        "phone" => rng.random_range(60..1800),
        "chat" => rng.random_range(120..2400),
        "visit" => rng.random_range(1800..7200),
        _ => 0,
    };
    let started = NaiveDateTime::new(
        window_start + Duration::days(day as i64),
        NaiveTime::from_hms_opt(rng.random_range(8..20), rng.random_range(0..60), rng.random_range(0..60))
            .expect("valid time"),
    );
    let category = match (complaint, complaint_category) {
        (true, Some(c)) => c,
        (true, None) => *names::pick(rng, COMPLAINT_CATEGORIES),
        (false, _) => *names::pick(rng, QUESTION_CATEGORIES),
    };
    let resolved_at = if complaint {
        rng.random_bool(0.85).then(|| {
            let hours = Exp::new(1.0 / 36.0).expect("rate").sample(rng);
            started + Duration::seconds((hours * 3600.0) as i64 + duration)
        })
    } else {
        Some(started + Duration::seconds(duration))
    };
    let satisfaction = if rng.random_bool(0.5) {
        Cell::Null
    } else if complaint {
        Cell::Int(rng.random_range(1..=3))
    } else {
        Cell::Int(rng.random_range(3..=5))
    };
    let row = |resolved: Option<NaiveDateTime>| {
        vec![
            Cell::Text(interaction_id.to_string()),
            Cell::Text(customer_id(customer)),
            Cell::Timestamp(started),
            Cell::Text(CONTACT_CHANNELS[channel].to_string()),
            Cell::Int(duration),
            Cell::Text(category.to_string()),
            Cell::Bool(complaint),
            resolved.map_or(Cell::Null, Cell::Timestamp),
            satisfaction.clone(),
            Cell::Text(format!("A{:03}", (customer % 97) + 1)),
        ]
    };
    let resolved_day = resolved_at.map(|t| (t.date() - window_start).num_days() as u32);
    match resolved_day {
        Some(d) if d == day => Contact { opened: row(resolved_at), resolved_day: None, resolved: None },
        Some(d) => Contact { opened: row(None), resolved_day: Some(d), resolved: Some(row(resolved_at)) },
        None => Contact { opened: row(None), resolved_day: None, resolved: None },
    }
}
