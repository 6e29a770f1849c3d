//! The query engine: a DataFusion session that sees the warehouse, with keymart's functions and
//! the helpers every stage uses to register tables and run SQL with typed parameters.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroUsize;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::config::Dialect;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser;

pub use crate::config::{EngineSpec, SchedulerUrl};
use crate::config::{Scalar, VarSpec};
pub use crate::error::engine_error;
use crate::error::{Error, Result};
use crate::warehouse::Location;

pub use committed::register_committed_marts;

pub mod ballista;
mod committed;
mod memory_pool;
mod ntile_bucket;
mod only_value;
mod top_values;

/// A session over the warehouse.
#[derive(Clone)]
pub struct Engine {
    pub ctx: SessionContext,
    /// Where the queries run: `local`, or the Ballista scheduler's URL (recorded in the ledger).
    pub name: String,
    /// On a Ballista cluster: the watch that bounds the wait for a live executor.
    pub cluster: Option<ballista::ClusterWatch>,
}

impl Engine {
    /// A local DataFusion session that can read and write `location`'s store, with its sorts and
    /// aggregations held to `memory_limit_bytes` (they spill to temporary files past it).
    pub fn local(location: &Location, memory_limit_bytes: usize) -> Result<Engine> {
        let (config, runtime) = session_parts(memory_limit_bytes)?;
        Ok(Engine::local_sharing(location, config, runtime))
    }

    /// A local session over `runtime` (its memory pool shared with every session made from
    /// it, as `keymart serve`'s connections share one pool): `config` with keymart's options.
    pub fn local_sharing(location: &Location, config: SessionConfig, runtime: Arc<RuntimeEnv>) -> Engine {
        let ctx = SessionContext::new_with_config_rt(with_keymart_options(config), runtime);
        ctx.register_object_store(&location.store_url, location.store.clone());
        register_functions(&ctx);
        Engine { ctx, name: "local".into(), cluster: None }
    }

    /// Wait (bounded) until the engine can run a query: at once locally; on a Ballista cluster,
    /// until it has a live executor ([`ballista::ClusterWatch`]).
    pub async fn ready(&self) -> Result<()> {
        match &self.cluster {
            Some(cluster) => cluster.ready().await,
            None => Ok(()),
        }
    }

    /// A query's output stream, failing instead of waiting forever when a Ballista cluster
    /// loses its last executor while it runs.
    pub fn watched(&self, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        match &self.cluster {
            Some(cluster) => cluster.watched(stream),
            None => stream,
        }
    }

    /// Parquet reading with the session's options (a bare `ParquetFormat::default()` would read
    /// strings as views again, see `local`).
    fn parquet_format(&self) -> Arc<ParquetFormat> {
        Arc::new(ParquetFormat::default().with_options(self.ctx.copied_table_options().parquet))
    }

    /// Register Parquet files (full URLs) as one table; the schema is read from the files
    /// unless given.
    pub async fn register_files(&self, name: &str, urls: &[String], schema: Option<SchemaRef>) -> Result<()> {
        let config = self.listing_config(name, urls)?;
        let config = match schema {
            Some(schema) => config.with_schema(schema),
            None => {
                config.infer_schema(&self.ctx.state()).await.map_err(|e| engine_error(format!("reading {name}"), e))?
            }
        };
        let table = ListingTable::try_new(config).map_err(|e| engine_error(format!("table {name}"), e))?;
        self.ctx.register_table(name, Arc::new(table)).map_err(|e| engine_error(format!("registering {name}"), e))?;
        Ok(())
    }

    /// Register a mart snapshot's files (full URLs) as one table ([`Engine::snapshot_table`]).
    pub async fn register_snapshot_files(&self, name: &str, urls: &[String], table: Option<&Schema>) -> Result<()> {
        let provider = self.snapshot_table(name, urls, table).await?;
        self.ctx.register_table(name, provider).map_err(|e| engine_error(format!("registering {name}"), e))?;
        Ok(())
    }

    /// A mart snapshot's files (full URLs) as one table: the columns read from the files, then
    /// the columns of `table` (its Delta table's schema) they do not have, as NULL: the columns
    /// the mart gained after those files were written.
    pub async fn snapshot_table(
        &self,
        name: &str,
        urls: &[String],
        table: Option<&Schema>,
    ) -> Result<Arc<dyn TableProvider>> {
        let inferred = self.file_schema(name, urls).await?;
        let gained: Vec<Field> = table
            .map(|t| t.fields().iter().filter(|f| inferred.field_with_name(f.name()).is_err()).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        let schema = if gained.is_empty() {
            inferred
        } else {
            Arc::new(Schema::new(
                inferred.fields().iter().map(|f| f.as_ref().clone()).chain(gained).collect::<Vec<_>>(),
            ))
        };
        let config = self.listing_config(name, urls)?.with_schema(schema);
        Ok(Arc::new(ListingTable::try_new(config).map_err(|e| engine_error(format!("table {name}"), e))?))
    }

    /// The schema of Parquet files (full URLs) read as one table.
    async fn file_schema(&self, name: &str, urls: &[String]) -> Result<SchemaRef> {
        let config = self.listing_config(name, urls)?;
        let config =
            config.infer_schema(&self.ctx.state()).await.map_err(|e| engine_error(format!("reading {name}"), e))?;
        config.file_schema.ok_or_else(|| Error::Internal(format!("{name}: no schema inferred")))
    }

    fn listing_config(&self, name: &str, urls: &[String]) -> Result<ListingTableConfig> {
        let paths = urls
            .iter()
            .map(|u| ListingTableUrl::parse(u).map_err(|e| engine_error(format!("table {name}: {u}"), e)))
            .collect::<Result<Vec<_>>>()?;
        let options = ListingOptions::new(self.parquet_format()).with_file_extension(".parquet");
        Ok(ListingTableConfig::new_with_multi_paths(paths).with_listing_options(options))
    }

    /// Register a folder of hive-partitioned Parquet (`<dir>/<column>=<value>/…`) as one table
    /// with the partition column typed.
    pub async fn register_partitioned(
        &self,
        name: &str,
        dir_url: &str,
        column: &str,
        data_type: DataType,
    ) -> Result<()> {
        let dir = if dir_url.ends_with('/') { dir_url.to_string() } else { format!("{dir_url}/") };
        let path = ListingTableUrl::parse(&dir).map_err(|e| engine_error(format!("table {name}: {dir}"), e))?;
        let options = ListingOptions::new(self.parquet_format())
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![(column.to_string(), data_type)]);
        let config = ListingTableConfig::new(path)
            .with_listing_options(options)
            .infer_schema(&self.ctx.state())
            .await
            .map_err(|e| engine_error(format!("reading {name}"), e))?;
        let table = ListingTable::try_new(config).map_err(|e| engine_error(format!("table {name}"), e))?;
        self.ctx.register_table(name, Arc::new(table)).map_err(|e| engine_error(format!("registering {name}"), e))?;
        Ok(())
    }

    /// Plan `sql` with `$name` placeholders bound to typed values.
    ///
    /// DataFusion guesses an untyped placeholder's type from its neighbour (`date + $days` would
    /// make `$days` a date), so each known placeholder is first wrapped in a cast to its value's
    /// type; the values themselves are bound to the plan, never written into the SQL.
    pub async fn sql(&self, sql: &str, params: &Params) -> Result<DataFrame> {
        self.sql_reading(sql, params, &BTreeMap::new()).await
    }

    /// Plan `sql` as `sql` does, with the tables it reads renamed (`renames`: from → to): the
    /// same query over other inputs (an incremental model over its changed keys' rows).
    pub async fn sql_reading(
        &self,
        sql: &str,
        params: &Params,
        renames: &BTreeMap<String, String>,
    ) -> Result<DataFrame> {
        let state = self.ctx.state();
        let mut statement = state.sql_to_statement(sql, &Dialect::Generic).map_err(|e| engine_error("parsing", e))?;
        if let DFStatement::Statement(inner) = &mut statement {
            type_placeholders(inner.as_mut(), params);
            if !renames.is_empty() {
                rename_tables(inner.as_mut(), renames);
            }
        }
        let plan = state.statement_to_plan(statement).await.map_err(|e| engine_error("planning", e))?;
        DataFrame::new(state, plan)
            .with_param_values(params.values())
            .map_err(|e| engine_error("binding parameters", e))
    }

    /// Register a planned query as a view (inlined where it is read).
    pub fn register_view(&self, name: &str, df: DataFrame) -> Result<()> {
        self.ctx.register_table(name, df.into_view()).map_err(|e| engine_error(format!("registering {name}"), e))?;
        Ok(())
    }
}

fn type_placeholders(statement: &mut sqlparser::ast::Statement, params: &Params) {
    use sqlparser::ast::{CastKind, Expr, Value, ValueWithSpan};
    let _ = sqlparser::ast::visit_expressions_mut(statement, |expr| {
        if let Expr::Value(ValueWithSpan { value: Value::Placeholder(name), .. }) = expr {
            let sql_type = params.get(name.trim_start_matches('$')).and_then(|v| sql_type(&v.data_type()));
            if let Some(data_type) = sql_type {
                let placeholder = Box::new(expr.clone());
                *expr = Expr::Cast { kind: CastKind::Cast, expr: placeholder, data_type, array: false, format: None };
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

fn rename_tables(statement: &mut sqlparser::ast::Statement, renames: &BTreeMap<String, String>) {
    use sqlparser::ast::{Ident, ObjectName};
    let _ = sqlparser::ast::visit_relations_mut(statement, |relation| {
        let name = relation.to_string().to_ascii_lowercase();
        if let Some(to) = renames.get(&name) {
            *relation = ObjectName::from(vec![Ident::new(to.clone())]);
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// The SQL type of a parameter value (strings are left to inference: it types them well).
fn sql_type(data_type: &DataType) -> Option<sqlparser::ast::DataType> {
    use sqlparser::ast::{DataType as Sql, ExactNumberInfo};
    Some(match data_type {
        DataType::Date32 => Sql::Date,
        DataType::Int64 => Sql::BigInt(None),
        DataType::Float64 => Sql::Double(ExactNumberInfo::None),
        DataType::Boolean => Sql::Boolean,
        DataType::Decimal128(p, s) => Sql::Decimal(ExactNumberInfo::PrecisionAndScale(*p as u64, *s as i64)),
        _ => return None,
    })
}

/// The options every keymart session runs with, local or on a Ballista cluster.
pub fn with_keymart_options(config: SessionConfig) -> SessionConfig {
    config
        .with_information_schema(true)
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        // Strings as plain Utf8, not views: a chain of joins over view arrays keeps every
        // input buffer the views point into alive, so memory grows with every join.
        .set_bool("datafusion.execution.parquet.schema_force_view_types", false)
        .set_bool("datafusion.sql_parser.enable_ident_normalization", true)
}

/// The configuration from DATAFUSION_* environment variables (e.g.
/// DATAFUSION_EXECUTION_TARGET_PARTITIONS) and a runtime whose sorts and aggregations share
/// `memory_limit_bytes` fairly and spill past it (the five largest consumers are named when the
/// limit is hit by one that cannot); a repartition is never refused (see `memory_pool`).
pub fn session_parts(memory_limit_bytes: usize) -> Result<(SessionConfig, Arc<RuntimeEnv>)> {
    let config = SessionConfig::from_env().map_err(|e| engine_error("reading DATAFUSION_* settings", e))?;
    let fair = TrackConsumersPool::new(FairSpillPool::new(memory_limit_bytes), NonZeroUsize::new(5).expect("5 > 0"));
    let pool = memory_pool::RepartitionsNeverRefused::new(fair);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .build_arc()
        .map_err(|e| engine_error("starting the query engine", e))?;
    Ok((config, runtime))
}

/// keymart's SQL functions: the customer-base models, `top_values` and `ntile_bucket`.
pub fn register_functions(ctx: &SessionContext) {
    for function in scalar_functions() {
        ctx.register_udf(function);
    }
    for function in aggregate_functions() {
        ctx.register_udaf(function);
    }
}

/// keymart's scalar functions (also given to Ballista's scheduler and executors).
pub fn scalar_functions() -> Vec<datafusion::logical_expr::ScalarUDF> {
    let mut functions = crate::models::udf::scalar_functions();
    functions.push(datafusion::logical_expr::ScalarUDF::from(ntile_bucket::NtileBucket::new()));
    functions
}

/// keymart's aggregate functions (also given to Ballista's scheduler and executors).
pub fn aggregate_functions() -> Vec<datafusion::logical_expr::AggregateUDF> {
    let mut functions = crate::models::udf::aggregate_functions();
    functions.push(datafusion::logical_expr::AggregateUDF::from(top_values::TopValues::new()));
    functions.push(datafusion::logical_expr::AggregateUDF::from(only_value::OnlyValue::new()));
    functions
}

/// Hand the heap's free pages back to the OS, between models: glibc keeps what a finished query
/// freed, and a night's resident memory crept up from model to model (BENCHMARKS.md).
pub fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds free; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Typed values for `$name` placeholders: `$as_of` and the pipeline's variables.
#[derive(Debug, Clone, Default)]
pub struct Params(HashMap<String, ScalarValue>);

impl Params {
    pub fn new(as_of: NaiveDate, vars: &[(String, VarSpec)]) -> Result<Params> {
        let mut values = HashMap::new();
        values.insert("as_of".to_string(), date_value(as_of));
        for (name, spec) in vars {
            values.insert(name.clone(), var_value(name, spec)?);
        }
        Ok(Params(values))
    }

    pub fn set(&mut self, name: &str, value: ScalarValue) {
        self.0.insert(name.to_string(), value);
    }

    pub fn get(&self, name: &str) -> Option<&ScalarValue> {
        self.0.get(name)
    }

    fn values(&self) -> ParamValues {
        ParamValues::from(self.0.clone())
    }
}

pub fn date_value(date: NaiveDate) -> ScalarValue {
    ScalarValue::Date32(Some(crate::config::contract::days_since_epoch(date)))
}

fn var_value(name: &str, spec: &VarSpec) -> Result<ScalarValue> {
    Ok(match spec {
        VarSpec::Plain(Scalar::Bool(b)) => ScalarValue::Boolean(Some(*b)),
        VarSpec::Plain(Scalar::Int(i)) => ScalarValue::Int64(Some(*i)),
        VarSpec::Plain(Scalar::Float(f)) => ScalarValue::Float64(Some(*f)),
        VarSpec::Plain(Scalar::Text(s)) => ScalarValue::Utf8(Some(s.clone())),
        VarSpec::Typed(typed) => {
            let target = typed.data_type.arrow_type();
            ScalarValue::try_from_string(typed.value.to_string(), &target).map_err(|e| {
                Error::Usage(format!("variable `{name}`: `{}` is not a {}: {e}", typed.value, typed.data_type))
            })?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::TypedVar;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    #[tokio::test]
    async fn running_out_of_the_memory_pool_names_keymarts_setting() {
        let (config, runtime) = session_parts(1 << 20).unwrap();
        let engine = Engine {
            ctx: SessionContext::new_with_config_rt(with_keymart_options(config), runtime),
            name: "local".into(),
            cluster: None,
        };
        // A hash join's build side cannot spill: 300k rows do not fit in 1 MB.
        let df = engine
            .sql(
                "SELECT count(*) FROM generate_series(1, 300000) a JOIN generate_series(1, 300000) b ON a.value = b.value",
                &Params::default(),
            )
            .await
            .unwrap();
        let error = engine_error("computing the join", df.collect().await.unwrap_err()).to_string();
        assert!(
            error.starts_with("computing the join (out of the query engine's memory: raise `memory_limit_mb`"),
            "{error}"
        );
        assert!(error.contains("Resources exhausted"), "{error}");
    }

    /// apache/datafusion#24883's reproduction: under a memory limit a repartition spilled and its
    /// reader could wait forever. keymart's pool never lets a repartition spill, so each of these
    /// finishes in a fraction of a second; the timeout turns a hang into a failure.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_grouping_under_a_tiny_memory_limit_finishes_instead_of_hanging() {
        let (config, runtime) = session_parts(2 << 20).unwrap();
        let config = with_keymart_options(config).with_target_partitions(2).with_batch_size(64);
        let engine =
            Engine { ctx: SessionContext::new_with_config_rt(config, runtime), name: "local".into(), cluster: None };
        let table = "CREATE TABLE t AS SELECT value % 13 AS g, md5(CAST(value % 337 AS VARCHAR)) AS trace_id \
                     FROM generate_series(1, 40000)";
        engine.ctx.sql(table).await.unwrap().collect().await.unwrap();
        for attempt in 0..12 {
            let df = engine.sql("SELECT g, count(DISTINCT trace_id) AS n FROM t GROUP BY g", &Params::default()).await;
            let run = tokio::time::timeout(std::time::Duration::from_secs(20), df.unwrap().collect());
            let batches = run.await.unwrap_or_else(|_| panic!("attempt {attempt} hung")).unwrap();
            assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 13);
        }
    }

    #[tokio::test]
    async fn placeholders_are_bound_as_typed_values() {
        let engine = Engine { ctx: SessionContext::new(), name: "local".into(), cluster: None };
        let vars = vec![
            ("window_days".to_string(), VarSpec::Plain(Scalar::Int(30))),
            (
                "rate".to_string(),
                VarSpec::Typed(TypedVar { data_type: "decimal(10,2)".parse().unwrap(), value: Scalar::Float(2.5) }),
            ),
        ];
        let params = Params::new(NaiveDate::from_ymd_opt(2024, 6, 1).unwrap(), &vars).unwrap();
        let df = engine
            .sql(
                "SELECT $as_of AS as_of, $as_of - DATE '2024-05-01' AS since, \
                 DATE '2024-05-01' + $window_days AS later, $rate * 3 AS cost",
                &params,
            )
            .await
            .unwrap();
        let batches = df.collect().await.unwrap();
        let shown = pretty_format_batches(&batches).unwrap().to_string();
        assert!(shown.contains("| 2024-06-01 | 31   "), "{shown}");
        assert!(shown.contains("2024-05-31"), "{shown}");
        assert!(shown.contains("7.50"), "{shown}");
    }
}
