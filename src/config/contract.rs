//! Source contracts: what an extract must look like to be loaded into `raw/`.

use std::fmt;

use serde::Deserialize;

use super::yaml::{Each, Located};

/// One source of a pipeline: where its extracts land, how to read them, which rows are valid.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceContract {
    /// Filled in from the key under `sources:`.
    #[serde(skip)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The system the extract comes from (erp, scm, call_centre, …): documentation only.
    #[serde(default)]
    pub system: Option<String>,
    /// Glob under the landing root with an `{as_of}` (or `{as_of:%Y%m%d}`) date placeholder.
    pub path: Located<String>,
    pub format: FileFormat,
    #[serde(default)]
    pub csv: Option<Located<CsvOptions>>,
    #[serde(default)]
    pub xlsx: Option<Located<XlsxOptions>>,
    /// How text values are read, for every format.
    #[serde(default)]
    pub values: ValueOptions,
    pub load: LoadMode,
    #[serde(default)]
    pub primary_key: Located<Vec<String>>,
    /// Share of rows that may be rejected before the whole load fails (default from keymart.yaml).
    #[serde(default)]
    pub max_reject_ratio: Option<Located<f64>>,
    pub columns: Located<Each<Located<ColumnSpec>>>,
}

impl SourceContract {
    pub fn columns(&self) -> impl ExactSizeIterator<Item = &ColumnSpec> {
        self.columns.value.entries.iter().map(|c| &c.value)
    }

    pub fn column(&self, name: &str) -> Option<&ColumnSpec> {
        self.columns().find(|c| c.name == name)
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns().position(|c| c.name == name)
    }

    pub fn csv_options(&self) -> CsvOptions {
        self.csv.as_ref().map(|c| c.value.clone()).unwrap_or_default()
    }

    pub fn xlsx_options(&self) -> XlsxOptions {
        self.xlsx.as_ref().map(|c| c.value.clone()).unwrap_or_default()
    }

    /// Columns whose values are mostly distinct, written to Parquet without a dictionary
    /// (`warehouse::parquet::writer_properties`): text keys (in the primary key or
    /// `references`) and decimals of ten digits or more (amounts).
    pub fn mostly_distinct_columns(&self) -> Vec<String> {
        let is_key = |c: &ColumnSpec| c.references.is_some() || self.primary_key.value.contains(&c.name);
        self.columns()
            .filter(|c| match c.data_type {
                ColumnType::String => is_key(c),
                ColumnType::Decimal { precision, .. } => precision >= 10,
                _ => false,
            })
            .map(|c| c.name.clone())
            .collect()
    }

    /// The sources this one's `references` point at.
    pub fn referenced_sources(&self) -> impl Iterator<Item = &str> {
        self.columns().filter_map(|c| c.references.as_ref().map(|r| r.value.source.as_str()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Csv,
    Jsonl,
    Xlsx,
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Csv => "csv",
            FileFormat::Jsonl => "jsonl",
            FileFormat::Xlsx => "xlsx",
        })
    }
}

/// `full`: each extract is a complete snapshot (readers take the latest load);
/// `incremental`: each extract holds new and changed rows (readers keep the latest version per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    Full,
    Incremental,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvOptions {
    pub delimiter: String,
    pub quote: String,
    /// Whether the first line names the columns (matched against the contract by `from`/`name`).
    pub header: bool,
    pub encoding: Encoding,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions { delimiter: ",".into(), quote: "\"".into(), header: true, encoding: Encoding::Utf8 }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XlsxOptions {
    /// Sheet to read; the first sheet when absent.
    pub sheet: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Encoding {
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    #[serde(rename = "gbk")]
    Gbk,
    #[serde(rename = "gb18030")]
    Gb18030,
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Gbk => "gbk",
            Encoding::Gb18030 => "gb18030",
        })
    }
}

/// How text is turned into typed values (CSV fields, JSON strings, Excel text cells).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValueOptions {
    /// Field texts that mean "no value" (after trimming).
    pub null_tokens: Vec<String>,
    /// chrono formats tried in order after ISO `%Y-%m-%d`.
    pub date_formats: Located<Vec<String>>,
    /// chrono formats tried in order after RFC 3339 and `%Y-%m-%d %H:%M:%S`.
    pub timestamp_formats: Located<Vec<String>>,
    /// Offset of timestamps written without one, as `+08:00`; UTC when absent.
    pub timezone: Option<Located<String>>,
    /// Grouping character allowed in numbers (`1,234.50`), none when absent.
    pub thousands_separator: Option<Located<String>>,
    /// Remove leading and trailing blanks (including the ideographic space) before parsing.
    pub trim: bool,
}

impl Default for ValueOptions {
    fn default() -> Self {
        ValueOptions {
            null_tokens: vec![String::new()],
            date_formats: Located::new(Vec::new(), Default::default()),
            timestamp_formats: Located::new(Vec::new(), Default::default()),
            timezone: None,
            thousands_separator: None,
            trim: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// Field name in the file (CSV header, JSON key, Excel header) when it differs from `name`.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default = "yes")]
    pub nullable: bool,
    /// Personal data: stays in raw/, reaches a mart only where the pipeline allows it.
    #[serde(default)]
    pub pii: bool,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub accepted_values: Option<Located<Vec<String>>>,
    #[serde(default)]
    pub min: Option<Located<f64>>,
    #[serde(default)]
    pub max: Option<Located<f64>>,
    /// `source.column` that every non-null value must exist in (checked at ingest).
    #[serde(default)]
    pub references: Option<Located<Reference>>,
}

fn yes() -> bool {
    true
}

impl ColumnSpec {
    /// The name this column has in the extract.
    pub fn field_name(&self) -> &str {
        self.from.as_deref().unwrap_or(&self.name)
    }
}

/// The type of a contract column, written `string`, `int`, `decimal(p,s)`, `date`, `timestamp`, `bool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Int,
    Decimal {
        precision: u8,
        scale: i8,
    },
    Date,
    Timestamp,
    Bool,
    /// 64-bit float: for model scores and probabilities, never for money.
    Float,
}

impl ColumnType {
    pub fn is_numeric(&self) -> bool {
        matches!(self, ColumnType::Int | ColumnType::Decimal { .. } | ColumnType::Float)
    }

    /// How the type is stored (DESIGN.md: Date32, µs UTC timestamps, Decimal128 money).
    pub fn arrow_type(&self) -> datafusion::arrow::datatypes::DataType {
        use datafusion::arrow::datatypes::{DataType, TimeUnit};
        match *self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Int => DataType::Int64,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(precision, scale),
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Float => DataType::Float64,
        }
    }
}

/// Days since 1970-01-01, the Date32 value of a date.
pub fn days_since_epoch(date: chrono::NaiveDate) -> i32 {
    const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;
    chrono::Datelike::num_days_from_ce(&date) - UNIX_EPOCH_DAYS_FROM_CE
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::String => f.write_str("string"),
            ColumnType::Int => f.write_str("int"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::Bool => f.write_str("bool"),
            ColumnType::Float => f.write_str("float"),
        }
    }
}

impl std::str::FromStr for ColumnType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_lowercase();
        let simple = match compact.as_str() {
            "string" | "text" => Some(ColumnType::String),
            "int" | "integer" | "bigint" => Some(ColumnType::Int),
            "date" => Some(ColumnType::Date),
            "timestamp" => Some(ColumnType::Timestamp),
            "bool" | "boolean" => Some(ColumnType::Bool),
            "float" | "double" => Some(ColumnType::Float),
            _ => None,
        };
        if let Some(t) = simple {
            return Ok(t);
        }
        let expected = "expected string, int, decimal(p,s), date, timestamp, bool or float";
        let args = compact
            .strip_prefix("decimal(")
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(|| format!("unknown column type `{text}`: {expected}"))?;
        let (p, s) = args.split_once(',').ok_or_else(|| format!("`{text}`: write decimal(precision,scale)"))?;
        let precision: u8 = p.parse().map_err(|_| format!("`{text}`: precision must be a number"))?;
        let scale: i8 = s.parse().map_err(|_| format!("`{text}`: scale must be a number"))?;
        if !(1..=38).contains(&precision) || scale < 0 || scale as u8 > precision {
            return Err(format!("`{text}`: need 1 ≤ precision ≤ 38 and 0 ≤ scale ≤ precision"));
        }
        Ok(ColumnType::Decimal { precision, scale })
    }
}

impl<'de> Deserialize<'de> for ColumnType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `source.column`, written as one string in YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub source: String,
    pub column: String,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.source, self.column)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.split_once('.') {
            Some((source, column)) if !source.is_empty() && !column.is_empty() && !column.contains('.') => {
                Ok(Reference { source: source.to_string(), column: column.to_string() })
            }
            _ => Err(serde::de::Error::custom(format!("`{text}`: write the reference as source.column"))),
        }
    }
}

/// Stable reject reasons (the `reason` column of `rejects/`): what a contract says a row can be
/// rejected for. Here, not in ingest, so that whatever checks ingest (the generator) depends on
/// the contract only.
pub mod reason {
    pub const INVALID_ENCODING: &str = "invalid encoding";
    pub const INVALID_INTEGER: &str = "invalid integer";
    pub const INVALID_DECIMAL: &str = "invalid decimal";
    pub const INVALID_DATE: &str = "invalid date";
    pub const INVALID_TIMESTAMP: &str = "invalid timestamp";
    pub const INVALID_BOOLEAN: &str = "invalid boolean";
    pub const INVALID_VALUE: &str = "invalid value";
    pub const MISSING_VALUE: &str = "missing value";
    pub const NOT_ACCEPTED: &str = "value not accepted";
    pub const OUT_OF_RANGE: &str = "out of range";
    pub const UNKNOWN_REFERENCE: &str = "unknown reference";
    pub const DUPLICATE_KEY: &str = "duplicate key";
    pub const WRONG_FIELD_COUNT: &str = "wrong field count";
    pub const INVALID_JSON: &str = "invalid json";
    pub const UNEXPECTED_FIELD: &str = "unexpected field";
    pub const TRUNCATED_RECORD: &str = "truncated record";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_types_parse() {
        assert_eq!("decimal(18, 2)".parse::<ColumnType>(), Ok(ColumnType::Decimal { precision: 18, scale: 2 }));
        assert_eq!("Date".parse::<ColumnType>(), Ok(ColumnType::Date));
        assert!("decimal(40,2)".parse::<ColumnType>().is_err());
        assert!("decimal(4,5)".parse::<ColumnType>().is_err());
        assert!("money".parse::<ColumnType>().unwrap_err().contains("unknown column type `money`"));
    }
}

/// Expand the `{as_of}` (ISO date) and `{as_of:FORMAT}` (chrono format) placeholders of a landing
/// path pattern. Errors name the problem; a pattern without a placeholder is refused, since every
/// date would read the same files.
pub fn expand_as_of(pattern: &str, as_of: chrono::NaiveDate) -> Result<String, String> {
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut rest = pattern;
    let mut placeholders = 0;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find('}').ok_or_else(|| format!("unclosed `{{` in `{pattern}`"))?;
        let inner = &after[..end];
        let format = match inner.split_once(':') {
            None if inner == "as_of" => "%Y-%m-%d",
            Some(("as_of", format)) => format,
            _ => {
                return Err(format!(
                    "unknown placeholder `{{{inner}}}` in `{pattern}`: use {{as_of}} or {{as_of:%Y%m%d}}"
                ));
            }
        };
        check_chrono_format(format)?;
        out.push_str(&as_of.format(format).to_string());
        placeholders += 1;
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if placeholders == 0 {
        return Err(format!("`{pattern}` has no {{as_of}} placeholder: every date would read the same files"));
    }
    Ok(out)
}

/// A fixed UTC offset written `+08:00`, `-0500`, `+08` or `Z`.
pub fn parse_offset(text: &str) -> Option<chrono::FixedOffset> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("z") || text.eq_ignore_ascii_case("utc") {
        return chrono::FixedOffset::east_opt(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (hours, minutes) = match digits.len() {
        2 => (digits.parse::<i32>().ok()?, 0),
        4 => (digits[..2].parse::<i32>().ok()?, digits[2..].parse::<i32>().ok()?),
        _ => return None,
    };
    if hours > 14 || minutes > 59 {
        return None;
    }
    chrono::FixedOffset::east_opt(sign * (hours * 3600 + minutes * 60))
}

/// A chrono format string is usable: no unknown `%` specifier.
pub fn check_chrono_format(format: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return Err(format!("`{format}` is not a valid chrono format (see %Y, %m, %d, %H, %M, %S)"));
    }
    Ok(())
}

#[cfg(test)]
mod expand_tests {
    use super::*;

    #[test]
    fn placeholders_expand() {
        let d = chrono::NaiveDate::from_ymd_opt(2024, 6, 1).unwrap();
        assert_eq!(expand_as_of("erp/orders/{as_of}/*.csv", d).unwrap(), "erp/orders/2024-06-01/*.csv");
        assert_eq!(expand_as_of("x/{as_of:%Y%m%d}_*.csv", d).unwrap(), "x/20240601_*.csv");
        assert!(expand_as_of("x/*.csv", d).unwrap_err().contains("no {as_of}"));
        assert!(expand_as_of("x/{date}/*.csv", d).unwrap_err().contains("unknown placeholder"));
        assert!(expand_as_of("x/{as_of:%Q}/*.csv", d).is_err());
    }
}
