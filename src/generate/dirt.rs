//! The mess real extracts carry (DESIGN.md), injected on purpose, and what ingest must make of it.
//!
//! Kinds a contract accepts (alternative date formats, thousands separators, trailing blanks)
//! change a clean row in a way that must load to the same value. Kinds a contract rejects are
//! *added* as extra rows (a corrupted copy with a fresh key, or an exact duplicate), so the clean
//! data stays exactly what the population drew and every rejected row has one known reason.

use std::collections::BTreeMap;

use rand::Rng;
use serde::Serialize;

use super::sources::SourceLayout;
use super::write::{Cell, grouped_decimal_text};
use crate::config::contract::reason;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dirt {
    BadDate,
    BadTimestamp,
    ThousandsSeparator,
    UnknownCustomer,
    DuplicateLine,
    NegativeQuantity,
    TrailingBlanks,
    BadEncoding,
    AltDateFormat,
}

impl Dirt {
    /// The reject reason ingest must give, or `None` when the row must load unchanged.
    pub fn expected_reason(self) -> Option<&'static str> {
        match self {
            Dirt::BadDate => Some(reason::INVALID_DATE),
            Dirt::BadTimestamp => Some(reason::INVALID_TIMESTAMP),
            Dirt::UnknownCustomer => Some(reason::UNKNOWN_REFERENCE),
            Dirt::DuplicateLine => Some(reason::DUPLICATE_KEY),
            Dirt::NegativeQuantity => Some(reason::OUT_OF_RANGE),
            Dirt::BadEncoding => Some(reason::INVALID_ENCODING),
            Dirt::ThousandsSeparator | Dirt::TrailingBlanks | Dirt::AltDateFormat => None,
        }
    }

    /// The kinds that make sense for a source (a column must exist to carry them).
    pub fn kinds_for(layout: &SourceLayout) -> Vec<Dirt> {
        let mut kinds = vec![Dirt::DuplicateLine];
        if !layout.date_columns.is_empty() {
            kinds.push(if layout.dates_are_timestamps { Dirt::BadTimestamp } else { Dirt::BadDate });
            kinds.push(Dirt::AltDateFormat);
        }
        if !layout.amount_columns.is_empty() {
            kinds.push(Dirt::ThousandsSeparator);
        }
        if layout.customer_column.is_some() {
            kinds.push(Dirt::UnknownCustomer);
        }
        if layout.quantity_column.is_some() {
            kinds.push(Dirt::NegativeQuantity);
        }
        if !layout.text_columns.is_empty() {
            kinds.push(Dirt::TrailingBlanks);
            if layout.can_carry_bad_bytes() {
                kinds.push(Dirt::BadEncoding);
            }
        }
        kinds.sort();
        kinds
    }
}

/// What a dirty row turned into.
pub struct Dirtied {
    /// An extra row to write right after the clean one (same file).
    pub extra: Option<Vec<Cell>>,
    /// Write the clean row again into the re-sent file (or again in the same file for formats
    /// that have one file per day).
    pub duplicate: bool,
}

/// Apply one kind of mess to `row` (changed in place for accepted kinds). `fresh_key` makes the
/// key of an extra row unique.
pub fn apply<R: Rng>(dirt: Dirt, row: &mut [Cell], layout: &SourceLayout, fresh_key: String, rng: &mut R) -> Dirtied {
    let extra = || {
        let mut copy = row.to_vec();
        copy[layout.key_column] = Cell::Text(fresh_key.clone());
        copy
    };
    let pick = |rng: &mut R, columns: &[usize]| columns[rng.random_range(0..columns.len())];
    match dirt {
        Dirt::DuplicateLine => Dirtied { extra: None, duplicate: true },
        Dirt::BadDate | Dirt::BadTimestamp => {
            let mut copy = extra();
            let column = pick(rng, layout.date_columns);
            let bad = ["2024-02-30", "2023-13-01", "31.02.2024", "N/A", "0000-00-00"][rng.random_range(0..5)];
            copy[column] = Cell::Text(bad.to_string());
            Dirtied { extra: Some(copy), duplicate: false }
        }
        Dirt::UnknownCustomer => {
            let mut copy = extra();
            let column = layout.customer_column.expect("kind chosen for a source with a customer column");
            copy[column] = Cell::Text(format!("C9{:07}", rng.random_range(0..10_000_000)));
            Dirtied { extra: Some(copy), duplicate: false }
        }
        Dirt::NegativeQuantity => {
            let mut copy = extra();
            let column = layout.quantity_column.expect("kind chosen for a source with a quantity");
            if let Cell::Int(q) = copy[column] {
                copy[column] = Cell::Int(-q.abs().max(1));
            }
            Dirtied { extra: Some(copy), duplicate: false }
        }
        Dirt::BadEncoding => {
            let mut copy = extra();
            let column = pick(rng, layout.text_columns);
            let mut bytes = copy[column].text().into_bytes();
            // 0xFF starts no character in UTF-8, GBK or GB18030.
            bytes.extend_from_slice(b"\xFF\xFE");
            copy[column] = Cell::Bytes(bytes);
            Dirtied { extra: Some(copy), duplicate: false }
        }
        Dirt::AltDateFormat => {
            let column = pick(rng, layout.date_columns);
            let format = if rng.random_bool(0.5) { "%Y/%m/%d" } else { "%Y%m%d" };
            row[column] = match &row[column] {
                Cell::Date(d) => Cell::Text(d.format(format).to_string()),
                Cell::Timestamp(t) => Cell::Text(t.format("%Y/%m/%d %H:%M:%S").to_string()),
                other => other.clone(),
            };
            Dirtied { extra: None, duplicate: false }
        }
        Dirt::ThousandsSeparator => {
            let column = pick(rng, layout.amount_columns);
            if let Cell::Decimal(unscaled, scale) = row[column] {
                row[column] = Cell::Text(grouped_decimal_text(unscaled, scale));
            }
            Dirtied { extra: None, duplicate: false }
        }
        Dirt::TrailingBlanks => {
            let column = pick(rng, layout.text_columns);
            if let Cell::Text(s) = &row[column] {
                row[column] = Cell::Text(format!("{s}{}", " ".repeat(rng.random_range(1..4))));
            }
            Dirtied { extra: None, duplicate: false }
        }
    }
}

/// What ingest must report for one extract file set (one source, one date).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Expected {
    /// Data records written, in all files of the date.
    pub rows: u64,
    pub loaded: u64,
    pub rejected: BTreeMap<String, u64>,
    pub dirt: BTreeMap<Dirt, u64>,
}

impl Expected {
    pub fn clean_row(&mut self) {
        self.rows += 1;
        self.loaded += 1;
    }

    pub fn dirt(&mut self, dirt: Dirt) {
        *self.dirt.entry(dirt).or_default() += 1;
        if let Some(reason) = dirt.expected_reason() {
            self.rows += 1;
            *self.rejected.entry(reason.to_string()).or_default() += 1;
        }
    }

    pub fn add(&mut self, other: &Expected) {
        self.rows += other.rows;
        self.loaded += other.loaded;
        for (reason, n) in &other.rejected {
            *self.rejected.entry(reason.clone()).or_default() += n;
        }
        for (dirt, n) in &other.dirt {
            *self.dirt.entry(*dirt).or_default() += n;
        }
    }
}
