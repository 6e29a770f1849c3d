//! `keymart generate`: realistic ERP, SCM and call-centre extracts in the landing layout, from a
//! customer base with known BG/NBD and Gamma-Gamma parameters, with mess injected at a given
//! rate. Deterministic for a seed; memory grows with customers, not with order lines (rows are
//! streamed to the day's files as they are drawn).
//!
//! Timeline: a window of `history_days + days` days ending the day before `start + days`.
//! The extract dated `start` carries all the history before it (an initial load); each later
//! extract carries that day's new and changed rows.

mod dirt;
mod names;
pub mod population;
mod sources;
mod write;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDate};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};
use serde::Serialize;

pub use dirt::{Dirt, Expected};
use population::{BgNbdParams, Customer, GammaGammaParams, STREAM_CONTACTS, STREAM_DIRT, STREAM_ORDERS, stream};
use sources::{OutFormat, SourceLayout};
use write::{Cell, CsvWriter, ExtractWriter, JsonLinesWriter, XlsxWriter};

use crate::error::{Error, Result};
use crate::progress::Progress;

#[derive(Debug, Clone, Serialize)]
pub struct GenerateOptions {
    #[serde(skip)]
    pub out: PathBuf,
    pub customers: u32,
    pub days: u32,
    pub history_days: u32,
    pub start: NaiveDate,
    pub seed: u64,
    pub dirty_rate: f64,
    pub bgnbd: BgNbdParams,
    pub spend: GammaGammaParams,
    /// Share of customers (the most valuable) that are enterprise accounts.
    pub enterprise_share: f64,
}

impl GenerateOptions {
    fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.customers == 0 {
            problems.push("--customers must be at least 1");
        }
        if self.days == 0 {
            problems.push("--days must be at least 1");
        }
        if self.history_days + self.days > 60_000 {
            problems.push("--history-days + --days must stay below 60000");
        }
        if !(0.0..1.0).contains(&self.dirty_rate) {
            problems.push("--dirty-rate must be in [0, 1)");
        }
        let b = &self.bgnbd;
        let s = &self.spend;
        if [b.r, b.alpha, b.a, b.b, s.p, s.q, s.gamma].iter().any(|v| !(v.is_finite() && *v > 0.0)) {
            problems.push("model parameters must be positive numbers");
        }
        if !(0.0..=1.0).contains(&self.enterprise_share) {
            problems.push("--enterprise-share must be in [0, 1]");
        }
        if problems.is_empty() { Ok(()) } else { Err(Error::Usage(problems.join("; "))) }
    }
}

/// What was written, and what ingest must make of it.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub generator: GenerateOptions,
    /// Purchase occasions drawn (customer-days with completed lines).
    pub occasions: u64,
    pub extracts: Vec<ExtractRecord>,
    pub totals: BTreeMap<String, Expected>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExtractRecord {
    pub source: String,
    pub date: NaiveDate,
    pub files: Vec<String>,
    pub expected: Expected,
}

pub const MANIFEST_FILE: &str = "_manifest.json";

pub fn generate(options: &GenerateOptions, progress: &Progress) -> Result<Manifest> {
    options.validate()?;
    let window = options.history_days + options.days;
    let window_start = options.start - Duration::days(options.history_days as i64);
    let (population, occasions) = population::simulate(
        options.customers,
        window,
        options.bgnbd,
        options.spend,
        options.enterprise_share,
        options.seed,
    );
    let habits: Vec<sources::Habits> =
        population.iter().enumerate().map(|(i, c)| sources::habits(options.seed, i as u32, c)).collect();
    let mut run = Generation {
        options,
        window,
        window_start,
        first_extract: options.history_days,
        population: &population,
        habits: &habits,
        master: master_changes(options, &population, window),
        pending: BTreeMap::new(),
        triggered: BTreeMap::new(),
        order_seq: 0,
        shipment_seq: 0,
        contact_seq: 0,
        files: None,
        extracts: Vec::new(),
    };
    let contacts = contact_days(options, &population, window);
    let task = progress.steps("generate", window as u64, "days");
    let (mut next_occasion, mut next_contact) = (0, 0);
    for day in 0..window {
        run.open_extract(day.max(run.first_extract))?;
        while next_occasion < occasions.len() && occasions[next_occasion].day == day {
            run.occasion(&occasions[next_occasion])?;
            next_occasion += 1;
        }
        let mut todays: Vec<(u32, bool, Option<&'static str>)> = Vec::new();
        while next_contact < contacts.len() && contacts[next_contact].0 == day {
            todays.push((contacts[next_contact].1, contacts[next_contact].2, None));
            next_contact += 1;
        }
        todays.extend(run.triggered.remove(&day).unwrap_or_default());
        for (customer, complaint, category) in todays {
            run.contact(day, customer, complaint, category)?;
        }
        if day >= run.first_extract {
            run.close_extract()?;
        }
        task.inc(1);
    }
    task.finish(&format!("{} extract days, {} occasions", options.days, occasions.len()));

    let mut totals: BTreeMap<String, Expected> = BTreeMap::new();
    for record in &run.extracts {
        totals.entry(record.source.clone()).or_default().add(&record.expected);
    }
    let manifest =
        Manifest { generator: options.clone(), occasions: occasions.len() as u64, extracts: run.extracts, totals };
    let path = options.out.join(MANIFEST_FILE);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("manifest serializes"))
        .map_err(|e| Error::io(&path, e))?;
    Ok(manifest)
}

/// A short account of a generation, for the terminal.
pub fn summary(manifest: &Manifest) -> String {
    let mut lines = vec![format!(
        "wrote {} extract days to {} ({} customers, {} purchase occasions)",
        manifest.generator.days,
        manifest.generator.out.display(),
        manifest.generator.customers,
        manifest.occasions
    )];
    for (source, expected) in &manifest.totals {
        let rejected: u64 = expected.rejected.values().sum();
        lines.push(format!(
            "  {source:<16} {:>10} rows  ({} must load, {rejected} must be rejected)",
            expected.rows, expected.loaded
        ));
    }
    lines.push(format!("manifest: {}", manifest.generator.out.join(MANIFEST_FILE).display()));
    lines.join("\n")
}

/// Customer master versions by extract day: created on the first purchase day, and for one in
/// ten customers one later change. Within one extract only the latest version of a customer.
fn master_changes(
    options: &GenerateOptions,
    population: &[Customer],
    window: u32,
) -> BTreeMap<u32, BTreeMap<u32, u32>> {
    let first_extract = options.history_days;
    let mut changes: BTreeMap<u32, BTreeMap<u32, u32>> = BTreeMap::new();
    for (index, customer) in population.iter().enumerate() {
        let mut rng = stream(options.seed, population::STREAM_MASTER + 7, index as u64);
        changes.entry(customer.birth_day.max(first_extract)).or_default().insert(index as u32, 0);
        if rng.random_bool(0.1) {
            let day = customer.birth_day + rng.random_range(1..=365);
            if day < window {
                changes.entry(day.max(first_extract)).or_default().insert(index as u32, 1);
            }
        }
    }
    changes
}

/// Days on which customers contact the call centre on their own, and whether it is a complaint.
/// Customers who are about to drop out (high dropout probability) complain more.
fn contact_days(options: &GenerateOptions, population: &[Customer], window: u32) -> Vec<(u32, u32, bool)> {
    let mut contacts = Vec::new();
    for (index, customer) in population.iter().enumerate() {
        let mut rng = stream(options.seed, STREAM_CONTACTS, index as u64);
        let rate_per_day = (0.02 + 0.15 * customer.lambda).min(2.0) / 7.0 * if customer.enterprise { 2.0 } else { 1.0 };
        let gap = Exp::new(rate_per_day).expect("positive rate");
        let end = customer.death_day.map_or(window, |d| (d + 30).min(window));
        let mut t = customer.birth_day as f64;
        loop {
            t += gap.sample(&mut rng);
            if t >= end as f64 {
                break;
            }
            let complaint = rng.random_bool((0.03 + 0.6 * customer.dropout).min(0.9));
            contacts.push((t as u32, index as u32, complaint));
        }
    }
    contacts.sort_unstable();
    contacts
}

/// A contact a late delivery causes: the customer, whether it is a complaint, its category.
type TriggeredContact = (u32, bool, Option<&'static str>);

struct Generation<'a> {
    options: &'a GenerateOptions,
    window: u32,
    window_start: NaiveDate,
    first_extract: u32,
    population: &'a [Customer],
    habits: &'a [sources::Habits],
    master: BTreeMap<u32, BTreeMap<u32, u32>>,
    /// Rows waiting for a later extract (shipment deliveries, contact resolutions), by source index.
    pending: BTreeMap<u32, Vec<(usize, Vec<Cell>)>>,
    /// Contacts caused by late deliveries, by day.
    triggered: BTreeMap<u32, Vec<TriggeredContact>>,
    order_seq: u64,
    shipment_seq: u64,
    contact_seq: u64,
    files: Option<ExtractFiles>,
    extracts: Vec<ExtractRecord>,
}

const CUSTOMERS: usize = 0;
const ORDERS: usize = 1;
const SHIPMENTS: usize = 2;
const INTERACTIONS: usize = 3;

impl Generation<'_> {
    fn date(&self, day: u32) -> NaiveDate {
        self.window_start + Duration::days(day as i64)
    }

    fn extract_day(&self, day: u32) -> u32 {
        day.max(self.first_extract)
    }

    fn open_extract(&mut self, extract_day: u32) -> Result<()> {
        if self.files.as_ref().is_some_and(|f| f.day == extract_day) {
            return Ok(());
        }
        let date = self.date(extract_day);
        let mut files = ExtractFiles::open(self.options, extract_day, date)?;
        for (customer, version) in self.master.remove(&extract_day).unwrap_or_default() {
            let c = &self.population[customer as usize];
            let row = sources::customer_row(self.options.seed, customer, c, self.date(c.birth_day), version);
            files.emit(CUSTOMERS, row)?;
        }
        self.files = Some(files);
        Ok(())
    }

    fn close_extract(&mut self) -> Result<()> {
        let Some(mut files) = self.files.take() else {
            return Ok(());
        };
        for (source, row) in self.pending.remove(&files.day).unwrap_or_default() {
            files.emit(source, row)?;
        }
        self.extracts.extend(files.close(&self.options.out)?);
        Ok(())
    }

    /// Write a row now if it belongs to the open extract, else keep it for its day.
    fn route(&mut self, source: usize, day: u32, row: Vec<Cell>) -> Result<()> {
        if day >= self.window {
            return Ok(());
        }
        let extract_day = self.extract_day(day);
        match &mut self.files {
            Some(files) if files.day == extract_day => files.emit(source, row),
            _ => {
                self.pending.entry(extract_day).or_default().push((source, row));
                Ok(())
            }
        }
    }

    fn occasion(&mut self, occasion: &population::Occasion) -> Result<()> {
        let customer = occasion.customer;
        let c = &self.population[customer as usize];
        let habits = self.habits[customer as usize];
        let mut rng: ChaCha8Rng =
            stream(self.options.seed, STREAM_ORDERS, customer as u64 * 65_536 + occasion.day as u64);
        let date = self.date(occasion.day);

        self.order_seq += 1;
        let order_id = format!("SO{:09}", self.order_seq);
        let returned = rng.random_bool(0.02);
        let order = sources::order_lines(
            &mut rng,
            &order_id,
            customer,
            c.enterprise,
            habits,
            date,
            occasion.spend_cents,
            "completed",
            returned,
        );
        for line in order.lines {
            self.route(ORDERS, occasion.day, line)?;
        }
        if rng.random_bool(0.03) {
            self.order_seq += 1;
            let cancelled_id = format!("SO{:09}", self.order_seq);
            let amount = (occasion.spend_cents as f64 * rng.random_range(0.2..1.0)) as i64;
            let cancelled = sources::order_lines(
                &mut rng,
                &cancelled_id,
                customer,
                c.enterprise,
                habits,
                date,
                amount.max(100),
                "cancelled",
                false,
            );
            for line in cancelled.lines {
                self.route(ORDERS, occasion.day, line)?;
            }
        }

        self.shipment_seq += 1;
        let shipment = sources::shipment(
            &mut rng,
            &format!("SH{:09}", self.shipment_seq),
            &order_id,
            customer,
            habits,
            occasion.day,
            self.window_start,
            order.completed_cents,
            order.returned_qty,
        );
        // Within one extract only the latest version of a shipment.
        if self.extract_day(shipment.shipped_day) != self.extract_day(shipment.delivered_day)
            || shipment.delivered_day >= self.window
        {
            self.route(SHIPMENTS, shipment.shipped_day, shipment.in_transit)?;
        }
        self.route(SHIPMENTS, shipment.delivered_day, shipment.delivered)?;
        if shipment.late && rng.random_bool(0.4) {
            self.triggered.entry(shipment.delivered_day + 1).or_default().push((customer, true, Some("delivery")));
        }
        Ok(())
    }

    fn contact(&mut self, day: u32, customer: u32, complaint: bool, category: Option<&'static str>) -> Result<()> {
        self.contact_seq += 1;
        let mut rng = stream(self.options.seed, STREAM_CONTACTS + 100, self.contact_seq);
        let c = &self.population[customer as usize];
        let contact = sources::contact(
            &mut rng,
            &format!("CC{:09}", self.contact_seq),
            customer,
            c.enterprise,
            day,
            self.window_start,
            complaint,
            category,
        );
        match (contact.resolved_day, contact.resolved) {
            (Some(resolved_day), Some(resolved))
                if self.extract_day(resolved_day) == self.extract_day(day) && resolved_day < self.window =>
            {
                self.route(INTERACTIONS, day, resolved)
            }
            (Some(resolved_day), Some(resolved)) => {
                self.route(INTERACTIONS, day, contact.opened)?;
                self.route(INTERACTIONS, resolved_day, resolved)
            }
            _ => self.route(INTERACTIONS, day, contact.opened),
        }
    }
}

/// The open files of one extract day, one set per source, and what each must ingest to.
struct ExtractFiles {
    day: u32,
    date: NaiveDate,
    sources: Vec<SourceFiles>,
}

struct SourceFiles {
    layout: &'static SourceLayout,
    main: Box<dyn ExtractWriter>,
    main_path: PathBuf,
    /// Files already finished because the format ran out of room (Excel's row limit).
    full_parts: Vec<PathBuf>,
    resent_path: PathBuf,
    resent: Option<Box<dyn ExtractWriter>>,
    dirt_kinds: Vec<Dirt>,
    dirt_rng: ChaCha8Rng,
    dirty_rate: f64,
    fresh_keys: u64,
    expected: Expected,
}

fn open_writer(layout: &SourceLayout, path: &Path, date: NaiveDate) -> Result<Box<dyn ExtractWriter>> {
    Ok(match layout.format {
        OutFormat::Csv { gbk } => Box::new(CsvWriter::create(path, layout.headers, gbk)?),
        OutFormat::Jsonl => Box::new(JsonLinesWriter::create(path, layout.headers)?),
        OutFormat::Xlsx => Box::new(XlsxWriter::create(path, layout.headers, date)?),
    })
}

impl ExtractFiles {
    fn open(options: &GenerateOptions, day: u32, date: NaiveDate) -> Result<ExtractFiles> {
        let mut sources = Vec::new();
        for (i, layout) in sources::ALL.iter().enumerate() {
            let main_path = layout.file_path(&options.out, date, false);
            sources.push(SourceFiles {
                layout,
                main: open_writer(layout, &main_path, date)?,
                main_path,
                full_parts: Vec::new(),
                resent_path: layout.file_path(&options.out, date, true),
                resent: None,
                dirt_kinds: Dirt::kinds_for(layout),
                dirt_rng: stream(options.seed, STREAM_DIRT + i as u64, day as u64),
                dirty_rate: options.dirty_rate,
                fresh_keys: 0,
                expected: Expected::default(),
            });
        }
        Ok(ExtractFiles { day, date, sources })
    }

    fn emit(&mut self, source: usize, mut row: Vec<Cell>) -> Result<()> {
        let date = self.date;
        let files = &mut self.sources[source];
        if files.main.is_full() {
            // Keep going in `<name>_part<N>.<ext>` beside the first file.
            let part = files.full_parts.len() + 2;
            let stem = files.main_path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let extension = files.main_path.extension().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let next = files.main_path.with_file_name(format!("{stem}_part{part}.{extension}"));
            let full = std::mem::replace(&mut files.main, open_writer(files.layout, &next, date)?);
            full.finish()?;
            files.full_parts.push(std::mem::replace(&mut files.main_path, next));
        }
        if files.dirty_rate == 0.0 || !files.dirt_rng.random_bool(files.dirty_rate) {
            files.expected.clean_row();
            return files.main.write_row(&row);
        }
        let kind = files.dirt_kinds[files.dirt_rng.random_range(0..files.dirt_kinds.len())];
        files.fresh_keys += 1;
        let fresh_key = format!("{}{}{:07}", files.layout.fresh_key_prefix, date.format("%Y%m%d"), files.fresh_keys);
        let dirtied = dirt::apply(kind, &mut row, files.layout, fresh_key, &mut files.dirt_rng);
        files.expected.clean_row();
        files.expected.dirt(kind);
        files.main.write_row(&row)?;
        if let Some(extra) = dirtied.extra {
            files.main.write_row(&extra)?;
        }
        if dirtied.duplicate {
            // A re-sent file repeats lines; a workbook export repeats them in the same sheet.
            if files.layout.format == OutFormat::Xlsx {
                files.main.write_row(&row)?;
            } else {
                if files.resent.is_none() {
                    files.resent = Some(open_writer(files.layout, &files.resent_path, date)?);
                }
                files.resent.as_mut().expect("opened above").write_row(&row)?;
            }
        }
        Ok(())
    }

    fn close(self, out: &Path) -> Result<Vec<ExtractRecord>> {
        let mut records = Vec::new();
        for files in self.sources {
            let relative = |p: &Path| p.strip_prefix(out).unwrap_or(p).to_string_lossy().replace('\\', "/");
            let mut names: Vec<String> = files.full_parts.iter().map(|p| relative(p)).collect();
            names.push(relative(&files.main_path));
            files.main.finish()?;
            if let Some(writer) = files.resent {
                writer.finish()?;
                names.push(relative(&files.resent_path));
            }
            records.push(ExtractRecord {
                source: files.layout.source.to_string(),
                date: self.date,
                files: names,
                expected: files.expected,
            });
        }
        Ok(records)
    }
}
