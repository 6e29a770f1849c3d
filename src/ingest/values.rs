//! Text → typed values, by the rules of a source contract. Every failure says why, in words a
//! data engineer can act on; the reason (first element) is a stable category used for grouping.

use std::borrow::Cow;
use std::fmt::Write;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime};

use crate::config::contract::{days_since_epoch, reason};
use crate::config::{ColumnType, ValueOptions};

/// A field that could not become a value: a reason category and a detail with the offending text.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub reason: &'static str,
    pub detail: String,
}

impl FieldError {
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        FieldError { reason, detail: detail.into() }
    }
}

/// One parsed value, in its Arrow physical form.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    /// Unscaled, at the column's scale.
    Decimal(i128),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    Bool(bool),
    Float(f64),
}

/// Parses text for one source: the options that hold for all its columns.
#[derive(Debug, Clone)]
pub struct TextParser {
    null_tokens: Vec<String>,
    date_formats: Vec<String>,
    timestamp_formats: Vec<String>,
    offset: FixedOffset,
    thousands: Option<char>,
    trim: bool,
}

impl TextParser {
    pub fn new(options: &ValueOptions) -> Self {
        TextParser {
            null_tokens: options.null_tokens.clone(),
            date_formats: options.date_formats.value.clone(),
            timestamp_formats: options.timestamp_formats.value.clone(),
            offset: options
                .timezone
                .as_ref()
                .and_then(|tz| crate::config::contract::parse_offset(&tz.value))
                .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset")),
            thousands: options.thousands_separator.as_ref().and_then(|s| s.value.chars().next()),
            trim: options.trim,
        }
    }

    /// Trim (when configured) and map null tokens to `None`.
    pub fn prepare<'t>(&self, text: &'t str) -> Option<&'t str> {
        let text = if self.trim { text.trim() } else { text };
        if self.null_tokens.iter().any(|t| t == text) { None } else { Some(text) }
    }

    /// Parse non-null text as `data_type`.
    pub fn parse<'t>(&self, text: &'t str, data_type: ColumnType) -> Result<Value<'t>, FieldError> {
        match data_type {
            ColumnType::String => Ok(Value::Str(Cow::Borrowed(text))),
            ColumnType::Int => self.parse_int(text).map(Value::Int),
            ColumnType::Decimal { precision, scale } => self.parse_decimal(text, precision, scale).map(Value::Decimal),
            ColumnType::Date => self.parse_date(text).map(Value::Date),
            ColumnType::Timestamp => self.parse_timestamp(text).map(Value::Timestamp),
            ColumnType::Bool => parse_bool(text).map(Value::Bool),
            ColumnType::Float => self.parse_float(text).map(Value::Float),
        }
    }

    /// Strip the thousands separator between digit groups; refuse it anywhere else.
    fn ungroup<'t>(&self, text: &'t str) -> Option<Cow<'t, str>> {
        let Some(sep) = self.thousands else {
            return Some(Cow::Borrowed(text));
        };
        if !text.contains(sep) {
            return Some(Cow::Borrowed(text));
        }
        let body = text.trim_start_matches(['-', '+']);
        let integer_part = body.split('.').next().unwrap_or("");
        let groups: Vec<&str> = integer_part.split(sep).collect();
        let well_grouped = (1..=3).contains(&groups[0].len())
            && groups[1..].iter().all(|g| g.len() == 3)
            && !body[integer_part.len()..].contains(sep);
        well_grouped.then(|| Cow::Owned(text.replace(sep, "")))
    }

    fn parse_int(&self, text: &str) -> Result<i64, FieldError> {
        let bad = || FieldError::new(reason::INVALID_INTEGER, format!("`{text}` is not a whole number"));
        let plain = self.ungroup(text).ok_or_else(bad)?;
        plain.parse::<i64>().map_err(|_| bad())
    }

    fn parse_float(&self, text: &str) -> Result<f64, FieldError> {
        let bad = || FieldError::new(reason::INVALID_VALUE, format!("`{text}` is not a number"));
        let plain = self.ungroup(text).ok_or_else(bad)?;
        plain.parse::<f64>().ok().filter(|f| f.is_finite()).ok_or_else(bad)
    }

    fn parse_decimal(&self, text: &str, precision: u8, scale: i8) -> Result<i128, FieldError> {
        let bad = |why: &str| FieldError::new(reason::INVALID_DECIMAL, format!("`{text}` {why}"));
        let plain = self.ungroup(text).ok_or_else(|| bad("has misplaced digit grouping"))?;
        let (negative, digits) = match plain.as_bytes().first() {
            Some(b'-') => (true, &plain[1..]),
            Some(b'+') => (false, &plain[1..]),
            _ => (false, &plain[..]),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() && fraction.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad("is not a decimal number"));
        }
        let scale = scale as usize;
        let (kept, dropped) = fraction.split_at(fraction.len().min(scale));
        if dropped.bytes().any(|b| b != b'0') {
            return Err(bad(&format!("has more than {scale} decimal places")));
        }
        let whole = whole.trim_start_matches('0');
        if whole.len() + scale > precision as usize {
            return Err(bad(&format!("does not fit decimal({precision},{scale})")));
        }
        let mut unscaled: i128 = 0;
        for b in whole.bytes().chain(kept.bytes()).chain(std::iter::repeat_n(b'0', scale - kept.len())) {
            unscaled = unscaled * 10 + (b - b'0') as i128;
        }
        Ok(if negative { -unscaled } else { unscaled })
    }

    fn parse_date(&self, text: &str) -> Result<i32, FieldError> {
        let date = iso_date(text)
            .or_else(|| self.date_formats.iter().find_map(|f| NaiveDate::parse_from_str(text, f).ok()))
            .ok_or_else(|| {
                let tried =
                    std::iter::once("%Y-%m-%d").chain(self.date_formats.iter().map(String::as_str)).collect::<Vec<_>>();
                FieldError::new(reason::INVALID_DATE, format!("`{text}` is not a date in {}", tried.join(", ")))
            })?;
        Ok(days_since_epoch(date))
    }

    fn parse_timestamp(&self, text: &str) -> Result<i64, FieldError> {
        if let Ok(with_offset) = DateTime::parse_from_rfc3339(text) {
            return Ok(with_offset.timestamp_micros());
        }
        const NAIVE: [&str; 3] = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"];
        let naive = iso_datetime(text)
            .or_else(|| {
                NAIVE
                    .iter()
                    .copied()
                    .chain(self.timestamp_formats.iter().map(String::as_str))
                    .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
            })
            .or_else(|| iso_date(text).and_then(|d| d.and_hms_opt(0, 0, 0)))
            .ok_or_else(|| {
                FieldError::new(
                    reason::INVALID_TIMESTAMP,
                    format!("`{text}` is not a timestamp (RFC 3339, `%Y-%m-%d %H:%M:%S` or a configured format)"),
                )
            })?;
        // A fixed offset is never ambiguous, but a time at the edge of chrono's range has no
        // instant in UTC (`+262142-12-31 23:59:59` at `-08:00`).
        let local = naive.and_local_timezone(self.offset).single().ok_or_else(|| {
            FieldError::new(
                reason::INVALID_TIMESTAMP,
                format!("`{text}` at {} is outside the range of timestamps", self.offset),
            )
        })?;
        Ok(local.timestamp_micros())
    }
}

/// `YYYY-MM-DD` without going through chrono's format machinery (the common case, on the hot path).
fn iso_date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    NaiveDate::from_ymd_opt(digits(&b[0..4])? as i32, digits(&b[5..7])?, digits(&b[8..10])?)
}

/// `YYYY-MM-DD HH:MM:SS[.f]` (or with `T`): what the first two naive formats accept, without
/// chrono re-reading the format string for every value (it showed in the Excel ingest's profile).
/// Anything else, a leap second included, is left to chrono.
fn iso_datetime(text: &str) -> Option<NaiveDateTime> {
    let b = text.as_bytes();
    if b.len() < 19 || !matches!(b[10], b' ' | b'T') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let nanos = match &b[19..] {
        [] => 0,
        [b'.', fraction @ ..] if (1..=9).contains(&fraction.len()) => {
            digits(fraction)? * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    iso_date(&text[..10])?.and_hms_nano_opt(digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?, nanos)
}

fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32))
}

fn parse_bool(text: &str) -> Result<bool, FieldError> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" | "是" => Ok(true),
        "false" | "f" | "no" | "n" | "0" | "否" => Ok(false),
        _ => Err(FieldError::new(reason::INVALID_BOOLEAN, format!("`{text}` is not true/false, yes/no or 1/0"))),
    }
}

/// Excel stores numbers as binary floats and shows them with 15 significant digits; read them the
/// same way so that 12.3 is `12.3`, not `12.300000000000001`. Written onto `out` (one buffer per
/// row, not a string per cell).
pub fn push_excel_number(out: &mut String, value: f64) {
    if value == 0.0 {
        return out.push('0');
    }
    // Whole numbers (counts, durations, ids) are most cells: their digits as an integer are what
    // the fixed-point formatting below gives, without its slow exact path.
    if value.fract() == 0.0 && value.abs() < 1e15 {
        return out.push_str(itoa::Buffer::new().format(value as i64));
    }
    if !value.is_finite() {
        return out.push_str(&value.to_string());
    }
    let magnitude = value.abs().log10().floor() as i32 + 1;
    let decimals = (15 - magnitude).clamp(0, 20) as usize;
    let start = out.len();
    write!(out, "{value:.decimals$}").expect("writing to a String cannot fail");
    if out[start..].contains('.') {
        let kept = out.trim_end_matches('0').trim_end_matches('.').len();
        out.truncate(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml::Located;

    fn parser(thousands: Option<&str>, date_formats: &[&str]) -> TextParser {
        let options = ValueOptions {
            thousands_separator: thousands.map(|s| Located::new(s.to_string(), Default::default())),
            date_formats: Located::new(date_formats.iter().map(|s| s.to_string()).collect(), Default::default()),
            ..ValueOptions::default()
        };
        TextParser::new(&options)
    }

    #[test]
    fn decimals_respect_scale_precision_and_grouping() {
        let p = parser(Some(","), &[]);
        let dec = |t| p.parse_decimal(t, 18, 2);
        assert_eq!(dec("1,234.5"), Ok(123_450));
        assert_eq!(dec("-0.07"), Ok(-7));
        assert_eq!(dec("12.3400"), Ok(1234));
        assert_eq!(dec("7"), Ok(700));
        assert_eq!(dec("12,34.5").unwrap_err().reason, reason::INVALID_DECIMAL);
        assert!(dec("1.234").unwrap_err().detail.contains("more than 2 decimal places"));
        assert!(p.parse_decimal("12345", 5, 2).unwrap_err().detail.contains("does not fit"));
        assert!(dec("abc").is_err());
        assert!(dec(".").is_err());
        assert!(parser(None, &[]).parse_decimal("1,234.5", 18, 2).is_err());
    }

    #[test]
    fn dates_in_every_declared_format() {
        let p = parser(None, &["%Y/%m/%d", "%Y%m%d"]);
        let day = days_since_epoch(NaiveDate::from_ymd_opt(2024, 6, 1).unwrap());
        for text in ["2024-06-01", "2024/06/01", "20240601"] {
            assert_eq!(p.parse_date(text), Ok(day), "{text}");
        }
        assert_eq!(p.parse_date("2024-02-30").unwrap_err().reason, reason::INVALID_DATE);
        assert!(p.parse_date("01.06.2024").unwrap_err().detail.contains("%Y/%m/%d"));
    }

    #[test]
    fn naive_timestamps_use_the_configured_offset() {
        let options = ValueOptions {
            timezone: Some(Located::new("+08:00".into(), Default::default())),
            ..ValueOptions::default()
        };
        let p = TextParser::new(&options);
        let utc = p.parse_timestamp("2024-06-01T02:00:00Z").unwrap();
        assert_eq!(p.parse_timestamp("2024-06-01 10:00:00"), Ok(utc));
        assert_eq!(p.parse_timestamp("2024-06-01T10:00:00+08:00"), Ok(utc));
        assert!(p.parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn the_timestamp_fast_path_agrees_with_chrono() {
        let chrono = |t: &str| {
            ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
        };
        for text in [
            "2024-06-01 10:00:00",
            "2024-06-01T23:59:59",
            "2024-06-01 10:00:00.5",
            "2024-06-01 10:00:00.123456",
            "2024-06-01 10:00:00.123456789",
            "2024-02-29 00:00:00",
        ] {
            assert_eq!(iso_datetime(text), chrono(text), "{text}");
            assert!(iso_datetime(text).is_some(), "{text}");
        }
        // Not taken by the fast path; chrono decides (and rejects all but the leap second).
        for text in [
            "2023-02-29 00:00:00",
            "2024-06-01 24:00:00",
            "2024-06-01 10:00:00.",
            "2024-06-01 10:00",
            "2024-06-01 10:00:60",
        ] {
            assert_eq!(iso_datetime(text), None, "{text}");
        }
    }

    #[test]
    fn trimming_and_null_tokens() {
        let options = ValueOptions { null_tokens: vec!["".into(), "NULL".into()], ..ValueOptions::default() };
        let p = TextParser::new(&options);
        assert_eq!(p.prepare("  ACME\u{3000}"), Some("ACME"));
        assert_eq!(p.prepare(" NULL "), None);
        assert_eq!(p.prepare(""), None);
    }

    #[test]
    fn excel_numbers_read_as_shown() {
        let shown = |value: f64| {
            let mut out = String::from("x,");
            push_excel_number(&mut out, value);
            out.split_off(2)
        };
        assert_eq!(shown(12.3), "12.3");
        assert_eq!(shown(1234.0), "1234");
        assert_eq!(shown(-1234.0), "-1234");
        assert_eq!(shown(-0.07), "-0.07");
        assert_eq!(shown(0.0), "0");
        assert_eq!(shown(100.5), "100.5");
        assert_eq!(shown(1e15), "1000000000000000");
        assert_eq!(shown(1e20), "100000000000000000000");
        assert_eq!(shown(0.1 + 0.2), "0.3");
    }

    /// The offsets a contract's `timezone` may name, the extremes included.
    const ZONES: [&str; 7] = ["Z", "+08:00", "-08:00", "+05:45", "-03:30", "+14:00", "-12:00"];

    fn zoned(zone: &str) -> TextParser {
        let options = ValueOptions {
            timezone: Some(Located::new(zone.to_string(), Default::default())),
            timestamp_formats: Located::new(vec!["%d.%m.%Y %H:%M".to_string()], Default::default()),
            ..ValueOptions::default()
        };
        TextParser::new(&options)
    }

    /// Days since 1970-01-01 by chrono's own subtraction (not `num_days_from_ce`).
    fn chrono_days(date: NaiveDate) -> i32 {
        (date - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() as i32
    }

    /// Every value chrono gives `text` as a timestamp by the formats the parser documents.
    fn chrono_timestamps(text: &str, offset: FixedOffset) -> Vec<i64> {
        let mut found = Vec::new();
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            found.push(t.timestamp_micros());
        }
        let naive = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%d.%m.%Y %H:%M"]
            .iter()
            .filter_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
            .chain(NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().map(|d| d.and_time(chrono::NaiveTime::MIN)));
        for t in naive {
            if let Some(utc) = utc_micros(t, offset) {
                found.push(utc);
            }
        }
        found
    }

    /// Microseconds since the epoch of `local` at `offset`, by subtraction, rounded down (a
    /// nanosecond before the epoch is its microsecond -1); None when the instant is outside
    /// chrono's range.
    /// A leap second (`23:59:60`, chrono's nanosecond past 999,999,999) counts as the second
    /// after it, as chrono's timestamps count it.
    fn utc_micros(local: NaiveDateTime, offset: FixedOffset) -> Option<i64> {
        local.checked_sub_signed(chrono::TimeDelta::seconds(offset.local_minus_utc().into()))?;
        let seconds = (local.date() - NaiveDate::from_ymd_opt(1970, 1, 1)?).num_seconds()
            + i64::from(local.time().num_seconds_from_midnight())
            - i64::from(offset.local_minus_utc());
        let nanos = i128::from(seconds) * 1_000_000_000 + i128::from(local.time().nanosecond());
        i64::try_from(nanos.div_euclid(1000)).ok()
    }

    /// A decimal by string arithmetic alone: sign, digits, the fraction padded to the scale.
    fn exact_decimal(text: &str, precision: u8, scale: i8) -> Option<i128> {
        let (negative, body) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !digits(fraction) || whole.is_empty() && fraction.is_empty() {
            return None;
        }
        let (whole, fraction) = (whole.trim_start_matches('0'), fraction.trim_end_matches('0'));
        let scale = scale as usize;
        if fraction.len() > scale || whole.len() + scale > precision as usize {
            return None;
        }
        let text = format!("{whole}{fraction:0<scale$}");
        let magnitude: i128 = if text.is_empty() { 0 } else { text.parse().ok()? };
        Some(if negative { -magnitude } else { magnitude })
    }

    fn any_datetime() -> impl Strategy<Value = NaiveDateTime> {
        let (min, max) = (NaiveDate::MIN.num_days_from_ce(), NaiveDate::MAX.num_days_from_ce());
        let day = prop_oneof![min..=max, Just(min), Just(max), min..min + 2, max - 1..=max, 1970 * 365..2100 * 365,];
        (day, 0u32..86_400, prop_oneof![Just(0u32), 0u32..1_000_000_000]).prop_map(|(day, secs, nanos)| {
            NaiveDate::from_num_days_from_ce_opt(day)
                .unwrap()
                .and_time(chrono::NaiveTime::from_num_seconds_from_midnight_opt(secs, nanos).unwrap())
        })
    }

    /// Text that looks like a date, a timestamp or a number, or anything at all.
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[-+0-9 :./TZ]{0,30}",
            "[+-]?[0-9]{1,7}-[0-9]{1,2}-[0-9]{1,2}([ T][0-9]{1,2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{0,10})?)?)?([+-][0-9]{2}:[0-9]{2}|Z)?",
            "[+-]?[0-9,]{0,45}(\\.[0-9]{0,40})?",
            any::<String>(),
        ]
    }

    use chrono::{Datelike, Timelike};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(crate::ingest::proptest_config(256))]

        /// Any text is a date chrono reads by one of the formats the parser names, or rejected.
        #[test]
        fn any_text_is_a_date_chrono_agrees_with_or_rejected(text in any_text()) {
            let p = parser(None, &["%Y/%m/%d", "%Y%m%d"]);
            match p.parse(&text, ColumnType::Date) {
                Ok(Value::Date(days)) => {
                    let by_chrono: Vec<i32> = ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d"]
                        .iter()
                        .filter_map(|f| NaiveDate::parse_from_str(&text, f).ok())
                        .map(chrono_days)
                        .collect();
                    prop_assert!(by_chrono.contains(&days), "{text} read as day {days}, chrono: {by_chrono:?}");
                }
                Ok(other) => prop_assert!(false, "{other:?}"),
                Err(e) => prop_assert_eq!(e.reason, reason::INVALID_DATE),
            }
        }

        /// Every date of chrono's range, written as the formats say, reads back as itself.
        #[test]
        fn every_date_in_every_format_reads_back(date in any_datetime().prop_map(|t| t.date())) {
            let p = parser(None, &["%Y/%m/%d", "%Y%m%d"]);
            // ISO `YYYY-MM-DD` has four-digit years; a configured format takes chrono's range.
            let iso = (0..=9999).contains(&date.year()).then_some("%Y-%m-%d");
            for format in iso.into_iter().chain(["%Y/%m/%d"]) {
                let text = date.format(format).to_string();
                prop_assert_eq!(p.parse(&text, ColumnType::Date), Ok(Value::Date(chrono_days(date))), "{}", text);
            }
        }

        /// A timestamp anywhere in chrono's range, at every zone: the instant chrono computes, or
        /// rejected when that instant is outside the range (never a panic).
        #[test]
        fn every_timestamp_at_every_zone_is_chronos_instant_or_rejected(
            local in any_datetime(),
            zone in proptest::sample::select(&ZONES[..]),
            t in prop_oneof![Just(" "), Just("T")],
        ) {
            let p = zoned(zone);
            let offset = crate::config::contract::parse_offset(zone).unwrap();
            let text = local.format(&format!("%Y-%m-%d{t}%H:%M:%S%.f")).to_string();
            match (p.parse(&text, ColumnType::Timestamp), utc_micros(local, offset)) {
                (Ok(Value::Timestamp(ours)), Some(theirs)) => prop_assert_eq!(ours, theirs, "{}", text),
                (Err(e), None) => prop_assert_eq!(e.reason, reason::INVALID_TIMESTAMP),
                (ours, theirs) => prop_assert!(false, "{text} at {zone}: ours {ours:?}, chrono {theirs:?}"),
            }
        }

        /// Any text at every zone: a timestamp chrono reads too, or rejected.
        #[test]
        fn any_text_is_a_timestamp_chrono_agrees_with_or_rejected(
            text in any_text(),
            zone in proptest::sample::select(&ZONES[..]),
        ) {
            let p = zoned(zone);
            let offset = crate::config::contract::parse_offset(zone).unwrap();
            match p.parse(&text, ColumnType::Timestamp) {
                Ok(Value::Timestamp(ours)) => {
                    let theirs = chrono_timestamps(&text, offset);
                    prop_assert!(theirs.contains(&ours), "{text} at {zone}: ours {ours}, chrono {theirs:?}");
                }
                Ok(other) => prop_assert!(false, "{other:?}"),
                Err(e) => prop_assert_eq!(e.reason, reason::INVALID_TIMESTAMP),
            }
        }

        /// Any text is exactly the decimal string arithmetic makes of it, or rejected by both.
        #[test]
        fn any_text_is_the_exact_decimal_or_rejected(
            text in any_text(),
            (precision, scale) in (1u8..=38).prop_flat_map(|p| (Just(p), 0..=p as i8)),
        ) {
            let p = parser(None, &[]);
            let ours = p.parse(&text, ColumnType::Decimal { precision, scale });
            match (&ours, exact_decimal(&text, precision, scale)) {
                (Ok(Value::Decimal(ours)), Some(exact)) => prop_assert_eq!(*ours, exact),
                (Err(e), None) => prop_assert_eq!(e.reason, reason::INVALID_DECIMAL),
                (ours, exact) => prop_assert!(false, "{text} as decimal({precision},{scale}): ours {ours:?}, exact {exact:?}"),
            }
        }

        /// Every decimal a column can hold, written with a sign, leading and trailing zeros and
        /// digit grouping, reads back as itself.
        #[test]
        fn every_decimal_written_any_way_reads_back(
            (precision, scale, unscaled) in (1u8..=38).prop_flat_map(|p| (Just(p), 0..=p as i8)).prop_flat_map(|(p, s)| {
                let bound = 10i128.pow(p as u32) - 1;
                (Just(p), Just(s), prop_oneof![-bound..=bound, Just(bound), Just(-bound), Just(0)])
            }),
            plus in any::<bool>(),
            leading_zeros in 0usize..3,
            trailing_zeros in 0usize..3,
            grouped in any::<bool>(),
        ) {
            let digits = unscaled.unsigned_abs().to_string();
            let scale_digits = scale as usize;
            let padded = format!("{digits:0>width$}", width = scale_digits + 1);
            let (whole, fraction) = padded.split_at(padded.len() - scale_digits);
            let whole = if grouped {
                let bytes = whole.as_bytes();
                let mut out = String::new();
                for (i, b) in bytes.iter().enumerate() {
                    if i > 0 && (bytes.len() - i) % 3 == 0 {
                        out.push(',');
                    }
                    out.push(*b as char);
                }
                out
            } else {
                format!("{}{whole}", "0".repeat(leading_zeros))
            };
            let sign = if unscaled < 0 { "-" } else if plus { "+" } else { "" };
            let fraction = format!("{fraction}{}", "0".repeat(trailing_zeros));
            let text = if fraction.is_empty() { format!("{sign}{whole}") } else { format!("{sign}{whole}.{fraction}") };
            let p = parser(Some(","), &[]);
            prop_assert_eq!(p.parse(&text, ColumnType::Decimal { precision, scale }), Ok(Value::Decimal(unscaled)), "{}", text);
        }
    }
}
