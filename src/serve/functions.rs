//! PostgreSQL functions clients call when they connect that neither DataFusion nor the emulated
//! `pg_catalog` answers as PostgreSQL would.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;

/// What `version()` says: drivers parse the PostgreSQL version out of it (SQLAlchemy refuses a
/// server whose version it cannot read; DataFusion's own says "Apache DataFusion …").
pub const VERSION: &str = "PostgreSQL 16.6 (keymart serve, Apache DataFusion 55)";

pub fn register(ctx: &SessionContext) {
    ctx.register_udf(version());
    ctx.register_udf(to_regtype());
    ctx.register_udf(type_is_visible());
}

/// `pg_type_is_visible(oid)`: every type is visible (the search path is `public`, `pg_catalog`
/// and nothing of keymart's own). SQLAlchemy's inspector asks it when it lists columns.
fn type_is_visible() -> ScalarUDF {
    create_udf(
        "pg_type_is_visible",
        vec![DataType::Int64],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    )
}

fn version() -> ScalarUDF {
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(VERSION.into()))))),
    )
}

/// `to_regtype(name)`: keymart serve defines no types of its own, so a client looking one up
/// (psycopg and SQLAlchemy ask for `hstore` at connect) learns that there is none (NULL).
fn to_regtype() -> ScalarUDF {
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Int32(None)))),
    )
}
