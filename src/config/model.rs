//! Models (SQL files), their materialization and data tests, and the pipeline's typed variables.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use super::contract::ColumnType;
use super::yaml::{Each, Located};

/// A `models:` entry: one SQL file or a glob of them, and how to materialize them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// `sql/marts/customer_rfm.sql` or `sql/staging/*.sql`, relative to the project.
    pub path: Located<String>,
    pub materialized: Materialized,
    /// A mart's rows are sorted by these columns (then by every other column), so files are
    /// reproducible; an incremental model is recomputed per value of them.
    #[serde(default)]
    pub key: Located<Vec<String>>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tests: Each<Located<TestSpec>>,
    /// PII columns this mart may carry (any other column named as PII in a contract is refused).
    #[serde(default)]
    pub allow_pii: Vec<String>,
    /// The output columns with their types: the mart is cast to them, and an empty
    /// `<mart>_history` (before the first commit) has this schema.
    #[serde(default)]
    pub columns: Vec<OutputColumn>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Materialized {
    /// Inlined into the models that read it; never written.
    View,
    /// Written to the warehouse for this run only, read by later models.
    Table,
    /// A table kept from night to night (`state/<name>/as_of=D/`): each night recomputes only
    /// the keys whose input rows changed since the previous state, and keeps the rest.
    Incremental,
    /// Written, tested and published as `marts/<name>/as_of=D/`.
    Mart,
}

impl fmt::Display for Materialized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Materialized::View => "view",
            Materialized::Table => "table",
            Materialized::Incremental => "incremental",
            Materialized::Mart => "mart",
        })
    }
}

/// One model: a SQL file with one SELECT.
#[derive(Debug, Clone)]
pub struct Model {
    /// The file stem.
    pub name: String,
    /// Relative to the project.
    pub file: PathBuf,
    pub sql: String,
    pub materialized: Materialized,
    pub key: Vec<String>,
    pub description: String,
    pub tests: Vec<DataTest>,
    pub allow_pii: Vec<String>,
    pub columns: Vec<OutputColumn>,
}

/// A data test as written: exactly one kind, and a severity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSpec {
    #[serde(default)]
    pub unique: Option<Columns>,
    #[serde(default)]
    pub not_null: Option<Columns>,
    #[serde(default)]
    pub accepted_values: Option<AcceptedValues>,
    #[serde(default)]
    pub relationships: Option<Relationship>,
    /// A SQL predicate that must be true for every row.
    #[serde(default)]
    pub expression: Option<String>,
    #[serde(default)]
    pub row_count: Option<RowCount>,
    #[serde(default)]
    pub severity: Severity,
}

/// One column or several.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Columns {
    One(String),
    Many(Vec<String>),
}

impl Columns {
    pub fn names(&self) -> Vec<String> {
        match self {
            Columns::One(c) => vec![c.clone()],
            Columns::Many(cs) => cs.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceptedValues {
    pub column: String,
    pub values: Vec<Scalar>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Relationship {
    pub column: String,
    /// `model.column` (or `source.column`) every non-null value must exist in.
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowCount {
    #[serde(default)]
    pub min: Option<u64>,
    #[serde(default)]
    pub max: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A failure stops the publish of the model and everything downstream of it.
    #[default]
    Error,
    /// A failure is recorded in the ledger; publishing goes on.
    Warn,
}

/// A validated data test.
#[derive(Debug, Clone, PartialEq)]
pub struct DataTest {
    pub kind: TestKind,
    pub severity: Severity,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestKind {
    Unique(Vec<String>),
    NotNull(Vec<String>),
    AcceptedValues { column: String, values: Vec<Scalar> },
    Relationships { column: String, to_table: String, to_column: String },
    Expression(String),
    RowCount { min: Option<u64>, max: Option<u64> },
}

impl TestKind {
    /// A `unique` test of exactly these columns, in any order.
    pub fn is_unique_on(&self, columns: &[String]) -> bool {
        let wanted: BTreeSet<&String> = columns.iter().collect();
        matches!(self, TestKind::Unique(tested) if tested.iter().collect::<BTreeSet<_>>() == wanted)
    }
}

impl fmt::Display for TestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TestKind::Unique(cols) => write!(f, "unique({})", cols.join(", ")),
            TestKind::NotNull(cols) => write!(f, "not_null({})", cols.join(", ")),
            TestKind::AcceptedValues { column, .. } => write!(f, "accepted_values({column})"),
            TestKind::Relationships { column, to_table, to_column } => {
                write!(f, "relationships({column} → {to_table}.{to_column})")
            }
            TestKind::Expression(e) => write!(f, "expression({e})"),
            TestKind::RowCount { min, max } => write!(
                f,
                "row_count({}..{})",
                min.map(|m| m.to_string()).unwrap_or_default(),
                max.map(|m| m.to_string()).unwrap_or_default()
            ),
        }
    }
}

impl TestSpec {
    /// The one kind this entry declares.
    pub fn to_test(&self) -> Result<DataTest, String> {
        let mut kinds = Vec::new();
        if let Some(c) = &self.unique {
            kinds.push(TestKind::Unique(c.names()));
        }
        if let Some(c) = &self.not_null {
            kinds.push(TestKind::NotNull(c.names()));
        }
        if let Some(a) = &self.accepted_values {
            kinds.push(TestKind::AcceptedValues { column: a.column.clone(), values: a.values.clone() });
        }
        if let Some(r) = &self.relationships {
            let (to_table, to_column) =
                r.to.split_once('.').ok_or_else(|| format!("relationships.to `{}`: write model.column", r.to))?;
            kinds.push(TestKind::Relationships {
                column: r.column.clone(),
                to_table: to_table.to_string(),
                to_column: to_column.to_string(),
            });
        }
        if let Some(e) = &self.expression {
            kinds.push(TestKind::Expression(e.clone()));
        }
        if let Some(r) = &self.row_count {
            kinds.push(TestKind::RowCount { min: r.min, max: r.max });
        }
        match kinds.len() {
            1 => Ok(DataTest { kind: kinds.remove(0), severity: self.severity }),
            0 => {
                Err("a test needs one of unique, not_null, accepted_values, relationships, expression, row_count"
                    .into())
            }
            _ => Err("one test per entry: split this entry".into()),
        }
    }
}

/// A YAML scalar kept with its type: a test value or a variable.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Text(s) => f.write_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, boolean or string")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v).map(Scalar::Int).map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A pipeline variable: a plain scalar (typed by YAML) or `{type: decimal(10,2), value: 2.50}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum VarSpec {
    Typed(TypedVar),
    Plain(Scalar),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedVar {
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    pub value: Scalar,
}
