//! The pipeline YAML's descriptions as the tables' and columns' comments: PostgreSQL's
//! `obj_description(oid, 'pg_class')` and `col_description(oid, attnum)`, which `\d+` and DBeaver
//! call, and the rows of `pg_description` that SQLAlchemy's inspector and pgJDBC's
//! `getTables`/`getColumns` (REMARKS) join. The oids are the ones this session's `pg_catalog`
//! gave the tables.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use crate::config::{HISTORY_SUFFIX, Model};
use crate::engine::{Engine, engine_error};
use crate::error::{Error, Result as KeymartResult};

/// Descriptions by table and by (table, column), for the marts and their `_history` tables.
#[derive(Debug, Default)]
pub struct Docs {
    tables: HashMap<String, String>,
    columns: HashMap<(String, String), String>,
}

impl Docs {
    pub fn new<'a>(marts: impl IntoIterator<Item = &'a Model>) -> Docs {
        let mut docs = Docs::default();
        for model in marts {
            for (table, suffix) in
                [(model.name.clone(), ""), (format!("{}{HISTORY_SUFFIX}", model.name), " (every snapshot)")]
            {
                if !model.description.is_empty() {
                    docs.tables.insert(table.clone(), format!("{}{suffix}", model.description.trim()));
                }
                for column in model.columns.iter().filter(|c| !c.description.is_empty()) {
                    docs.columns.insert((table.clone(), column.name.clone()), column.description.trim().to_string());
                }
                docs.columns.entry((table.clone(), "as_of".into())).or_insert_with(|| "the snapshot's date".into());
            }
        }
        docs
    }
}

/// (Re)register `obj_description` and `col_description` for the tables registered now.
pub async fn register(engine: &Engine, docs: &Docs) -> KeymartResult<()> {
    let sql = "SELECT CAST(c.oid AS BIGINT) AS oid, c.relname, CAST(a.attnum AS BIGINT) AS attnum, a.attname \
               FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
               JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid WHERE n.nspname = 'public'";
    let batches = engine
        .ctx
        .sql(sql)
        .await
        .map_err(|e| engine_error("reading pg_catalog", e))?
        .collect()
        .await
        .map_err(|e| engine_error("reading pg_catalog", e))?;
    let (mut tables, mut columns) = (BTreeMap::new(), BTreeMap::new());
    for batch in &batches {
        let text = |i: usize| cast(batch.column(i), &DataType::Utf8).map_err(|e| Error::arrow("reading pg_catalog", e));
        let (relname, attname) = (text(1)?, text(3)?);
        let (oid, attnum) = (batch.column(0).as_primitive::<Int64Type>(), batch.column(2).as_primitive::<Int64Type>());
        for row in 0..batch.num_rows() {
            let (table, column) = (relname.as_string::<i32>().value(row), attname.as_string::<i32>().value(row));
            if let Some(text) = docs.tables.get(table) {
                tables.insert((oid.value(row), 0), text.clone());
            }
            if let Some(text) = docs.columns.get(&(table.to_string(), column.to_string())) {
                columns.insert((oid.value(row), attnum.value(row)), text.clone());
            }
        }
    }
    describe_in_pg_description(engine, &tables, &columns).await?;
    engine.ctx.register_udf(ScalarUDF::from(Description::new("obj_description", tables)));
    engine.ctx.register_udf(ScalarUDF::from(Description::new("col_description", columns)));
    Ok(())
}

/// PostgreSQL's fixed oid of `pg_class`, for when the emulated catalog does not list it.
const PG_CLASS_OID: i64 = 1259;

/// `pg_catalog.pg_description` with a row per comment: (objoid, classoid = pg_class's oid,
/// objsubid = 0 for the table or the column's number, description), in the emulated table's
/// own column types.
async fn describe_in_pg_description(
    engine: &Engine,
    tables: &BTreeMap<(i64, i64), String>,
    columns: &BTreeMap<(i64, i64), String>,
) -> KeymartResult<()> {
    let context = "describing the marts in pg_description";
    let catalog = engine.ctx.catalog(super::DATABASE).ok_or_else(|| Error::Usage(format!("{context}: no catalog")))?;
    let pg_catalog = catalog.schema("pg_catalog").ok_or_else(|| Error::Usage(format!("{context}: no pg_catalog")))?;
    let described = match pg_catalog.downcast_ref::<Described>() {
        Some(described) => described.clone(),
        None => Described { inner: pg_catalog, descriptions: Arc::default() },
    };
    let emulated = described.inner.table("pg_description").await.map_err(|e| engine_error(context, e))?;
    let schema = emulated.ok_or_else(|| Error::Usage(format!("{context}: no pg_description")))?.schema();
    let class_oid = engine
        .ctx
        .sql("SELECT CAST(oid AS BIGINT) FROM pg_catalog.pg_class WHERE relname = 'pg_class' LIMIT 1")
        .await
        .map_err(|e| engine_error(context, e))?
        .collect()
        .await
        .map_err(|e| engine_error(context, e))?
        .first()
        .filter(|batch| batch.num_rows() > 0)
        .map_or(PG_CLASS_OID, |batch| batch.column(0).as_primitive::<Int64Type>().value(0));
    let rows: Vec<(&(i64, i64), &String)> = tables.iter().chain(columns).collect();
    let values: [ArrayRef; 4] = [
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|((oid, _), _)| *oid))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|_| class_oid))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|((_, attnum), _)| *attnum))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, text)| text.as_str()))),
    ];
    let arrays = schema
        .fields()
        .iter()
        .zip(values)
        .map(|(field, values)| cast(&values, field.data_type()))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::arrow(context, e))?;
    let batch = RecordBatch::try_new(schema.clone(), arrays).map_err(|e| Error::arrow(context, e))?;
    let table = MemTable::try_new(schema, vec![vec![batch]]).map_err(|e| engine_error(context, e))?;
    *described.descriptions.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Arc::new(table));
    catalog.register_schema("pg_catalog", Arc::new(described)).map_err(|e| engine_error(context, e))?;
    Ok(())
}

/// The emulated `pg_catalog`, with keymart's comments as its `pg_description`.
#[derive(Debug, Clone)]
struct Described {
    inner: Arc<dyn SchemaProvider>,
    descriptions: Arc<RwLock<Option<Arc<dyn TableProvider>>>>,
}

#[async_trait]
impl SchemaProvider for Described {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>, DataFusionError> {
        if name.eq_ignore_ascii_case("pg_description") {
            let descriptions = self.descriptions.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
            if descriptions.is_some() {
                return Ok(descriptions);
            }
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// `obj_description(oid[, catalog])` (keyed by (oid, 0)) or `col_description(oid, attnum)`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Description {
    name: &'static str,
    texts: Arc<BTreeMap<(i64, i64), String>>,
    signature: Signature,
}

impl Description {
    fn new(name: &'static str, texts: BTreeMap<(i64, i64), String>) -> Description {
        Description { name, texts: Arc::new(texts), signature: Signature::variadic_any(Volatility::Stable) }
    }
}

impl ScalarUDFImpl for Description {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let oid = cast(&arrays[0], &DataType::Int64)?;
        let oid = oid.as_primitive::<Int64Type>();
        // obj_description's second argument is the catalog name, not a column.
        let attnum = match (self.name, arrays.get(1)) {
            ("col_description", Some(attnum)) => Some(cast(attnum, &DataType::Int64)?),
            _ => None,
        };
        let mut out = StringBuilder::new();
        for row in 0..args.number_rows {
            let column = match &attnum {
                Some(a) if a.is_null(row) => None,
                Some(a) => Some(a.as_primitive::<Int64Type>().value(row)),
                None => Some(0),
            };
            match column.filter(|_| oid.is_valid(row)).and_then(|c| self.texts.get(&(oid.value(row), c))) {
                Some(text) => out.append_value(text),
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}
