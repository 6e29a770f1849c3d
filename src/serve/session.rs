//! One client connection: its DataFusion session (the marts as of its `keymart.as_of`, the
//! emulated `pg_catalog`), its settings and cursors, and the pgwire handlers that answer the
//! simple and the extended query protocol. Results stream from the engine to the socket.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::NaiveDate;
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::{Sink, StreamExt, stream};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::{MemPortalStore, PortalStore};
use pgwire::api::{ClientInfo, ClientPortalStore, METADATA_USER, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::DataRow;
use tokio::sync::OwnedSemaphorePermit;

use super::Server;
use super::cancel::{Requests, Watch};
use super::metrics::{self, Metrics};
use super::statement::{Kind, classify};
use crate::engine::Engine;

/// A statement as the extended protocol keeps it between Parse and Execute.
#[derive(Clone, Debug)]
pub struct Prepared {
    statement: Option<Statement>,
    kind: Kind,
    /// The result's columns as planned at Parse (what Describe answers).
    schema: Option<SchemaRef>,
    /// Parameter types inferred at Parse, in `$1, $2, …` order.
    parameters: Vec<Option<DataType>>,
}

/// Per-connection settings (`SET` / `RESET` / `SHOW`).
struct Settings {
    as_of: Option<NaiveDate>,
    timeout: Duration,
    params: BTreeMap<String, String>,
    /// The columns of each open cursor, for Describe of a FETCH.
    cursors: HashMap<String, SchemaRef>,
}

pub struct Connection {
    server: Arc<Server>,
    engine: Engine,
    parser: PostgresCompatibilityParser,
    settings: Mutex<Settings>,
    /// What is registered now: the catalog's generation and the `as_of` it was registered at.
    registered: tokio::sync::Mutex<Option<(u64, Option<NaiveDate>)>>,
}

impl Connection {
    pub fn new(server: Arc<Server>, engine: Engine) -> Connection {
        let timeout = server.limits.default_timeout;
        Connection {
            server,
            engine,
            parser: PostgresCompatibilityParser::new(),
            settings: Mutex::new(Settings { as_of: None, timeout, params: BTreeMap::new(), cursors: HashMap::new() }),
            registered: tokio::sync::Mutex::new(None),
        }
    }

    pub(super) fn engine(&self) -> &Engine {
        &self.engine
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Make the session see the committed snapshots as they are now (at its `as_of`).
    pub(super) async fn refresh(&self) -> PgWireResult<Option<NaiveDate>> {
        let as_of = self.settings().as_of;
        let mut registered = self.registered.lock().await;
        let catalog = &self.server.catalog;
        let generation =
            catalog.refresh().await.map_err(|e| error("58030", format!("reading the committed snapshots: {e}")))?;
        if *registered != Some((generation, as_of)) {
            let (generation, served) = catalog
                .register(&self.engine, as_of)
                .await
                .map_err(|e| error("58030", format!("reading the committed snapshots: {e}")))?;
            if as_of.is_none() {
                for (mart, date, version) in served {
                    self.server.metrics.snapshot_served(&mart, date, version);
                }
            }
            super::comments::register(&self.engine, &self.server.docs)
                .await
                .map_err(|e| error("XX000", format!("describing the marts: {e}")))?;
            *registered = Some((generation, as_of));
        }
        Ok(as_of)
    }

    pub(super) fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        let sql = super::statement::qualify_catalog_regclass(sql);
        let mut statements = self.parser.parse(&sql).map_err(|e| error("42601", e.to_string()))?;
        statements.iter_mut().for_each(super::statement::rewrite_catalog_query);
        Ok(statements)
    }

    /// Plan a reading statement against the snapshots registered now.
    pub(super) async fn plan(&self, statement: &Statement) -> PgWireResult<LogicalPlan> {
        let state = self.engine.ctx.state();
        let plan =
            state.statement_to_plan(DFStatement::Statement(Box::new(statement.clone()))).await.map_err(engine_error)?;
        // A second guard behind the statement's classification.
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| error("42501", format!("keymart serve is read-only: {e}")))?;
        Ok(plan)
    }

    /// Run a reading statement (with its parameters' values, if any) against the snapshots
    /// committed now: wait for a query slot, plan, execute, stream its rows. A cancel request
    /// or the deadline stops it at any of these steps.
    async fn read(
        &self,
        statement: &Statement,
        values: Option<&ParamValues>,
        format: &Format,
        user: &str,
        cancel: Cancel,
    ) -> PgWireResult<(QueryResponse, SchemaRef)> {
        let (running, schema) = self
            .start(statement, values, user, cancel, |schema| {
                arrow_schema_to_pg_fields(schema, format, None).map(Arc::new)
            })
            .await?;
        let (running, fields) = running;
        Ok((rows(running, fields), schema))
    }

    /// The same for Flight SQL: the result's schema and its batches, as Arrow.
    pub(super) async fn read_batches(
        &self,
        statement: &Statement,
        user: &str,
    ) -> PgWireResult<(SchemaRef, stream::BoxStream<'static, PgWireResult<RecordBatch>>)> {
        let ((running, ()), schema) = self.start(statement, None, user, None, |_| Ok(())).await?;
        Ok((schema, batches(running).boxed()))
    }

    /// A statement's start: a slot, the snapshots, the plan (checked by `describe`, which also
    /// says how its rows will be sent) and the engine's stream.
    async fn start<D>(
        &self,
        statement: &Statement,
        values: Option<&ParamValues>,
        user: &str,
        cancel: Cancel,
        describe: impl FnOnce(&SchemaRef) -> PgWireResult<D>,
    ) -> PgWireResult<((Running, D), SchemaRef)> {
        let started = Instant::now();
        let (timeout, as_of) = {
            let settings = self.settings();
            (settings.timeout, settings.as_of)
        };
        let deadline = started + timeout;
        let mut log = QueryLog::new(&self.server.metrics, user, as_of, started);
        let permit = self.slot(deadline, &cancel).await.map_err(|e| log.fail(e))?;
        self.refresh().await.map_err(|e| log.fail(e))?;
        let mut plan = self.plan(statement).await.map_err(|e| log.fail(e))?;
        if let Some(values) = values {
            plan = plan.replace_params_with_values(values).map_err(|e| log.fail(engine_error(e)))?;
        }
        let schema = Arc::new(plan.schema().as_arrow().clone());
        let described = describe(&schema).map_err(|e| log.fail(e))?;
        let (batches, producer) = self.server.queries.execute(self.engine.ctx.clone(), plan, schema.clone());
        Ok(((Running { batches, deadline, cancel, _producer: producer, _permit: permit, log }, described), schema))
    }

    /// A query slot (`serve.max_concurrent_queries`): at once when one is free, else after a wait
    /// in a queue of at most `serve.max_queued_queries`; over that, refused at once (53000).
    async fn slot(&self, deadline: Instant, cancel: &Cancel) -> PgWireResult<OwnedSemaphorePermit> {
        let server = &self.server;
        if let Ok(permit) = server.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let waiting = Queued::join(&server.queued);
        if waiting.ahead >= server.max_queued {
            return Err(error(
                "53000",
                format!(
                    "too many queries: every query slot is busy and {} queries are waiting for one \
                     (serve.max_concurrent_queries and serve.max_queued_queries in keymart.yaml); try again later",
                    waiting.ahead
                ),
            ));
        }
        until(deadline, cancel, server.slots.clone().acquire_owned())
            .await?
            .map_err(|_| error("57P01", "the server is shutting down".into()))
    }

    /// Answer one statement of the simple protocol.
    async fn simple<C>(&self, client: &mut C, statement: Statement, user: &str) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
    {
        let kind = classify(&statement);
        match kind {
            Kind::Read => {
                let cancel = cancel_signal(client);
                Ok(Response::Query(self.read(&statement, None, &Format::UnifiedText, user, cancel).await?.0))
            }
            Kind::Declare { .. } | Kind::Fetch { .. } | Kind::Close(_) => {
                let store = client
                    .portal_store()
                    .as_any()
                    .downcast_ref::<MemPortalStore<Prepared>>()
                    .ok_or_else(|| error("XX000", "cursors are not available on this connection".into()))?;
                self.cursor(store, kind, user, cancel_signal(client)).await
            }
            other => self.session_command(other, user),
        }
    }

    /// DECLARE, FETCH and CLOSE: a cursor is a portal whose rows are fetched as asked.
    async fn cursor(
        &self,
        store: &MemPortalStore<Prepared>,
        kind: Kind,
        user: &str,
        cancel: Cancel,
    ) -> PgWireResult<Response> {
        match kind {
            Kind::Declare { name, query } => {
                let statement = Statement::Query(query);
                let (response, schema) = self.read(&statement, None, &Format::UnifiedText, user, cancel).await?;
                let prepared = Prepared {
                    statement: Some(statement),
                    kind: Kind::Read,
                    schema: Some(schema.clone()),
                    parameters: vec![],
                };
                let portal =
                    Portal::new_cursor(name.clone(), Arc::new(StoredStatement::new(name.clone(), prepared, vec![])));
                portal.start(response).await;
                store.put_portal(Arc::new(portal));
                self.settings().cursors.insert(name, schema);
                Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
            }
            Kind::Fetch { name, rows } => {
                let portal = store
                    .get_portal(&name)
                    .and_then(|entry| entry.value().cloned())
                    .ok_or_else(|| error("34000", format!("cursor \"{name}\" does not exist")))?;
                let fetched = portal.fetch(rows.unwrap_or(0)).await?;
                Ok(Response::Query(fetched.response))
            }
            Kind::Close(name) => {
                match name {
                    Some(name) => {
                        store.rm_portal(&name);
                        self.settings().cursors.remove(&name);
                    }
                    None => {
                        store.clear_portals();
                        self.settings().cursors.clear();
                    }
                }
                Ok(Response::Execution(Tag::new("CLOSE CURSOR")))
            }
            other => self.session_command(other, user),
        }
    }

    /// SET, RESET, SHOW, transaction control and refusals: answered without the engine (and
    /// logged like every statement).
    fn session_command(&self, kind: Kind, user: &str) -> PgWireResult<Response> {
        let mut log = QueryLog::new(&self.server.metrics, user, self.settings().as_of, Instant::now());
        let answer = self.answer_session_command(kind).map_err(|e| log.fail(e))?;
        log.outcome = "ok";
        Ok(answer)
    }

    fn answer_session_command(&self, kind: Kind) -> PgWireResult<Response> {
        match kind {
            Kind::Set { name, value } => {
                self.set(&name, value)?;
                Ok(Response::Execution(Tag::new("SET")))
            }
            Kind::Reset(name) => {
                match name {
                    Some(name) => self.set(&name, None)?,
                    None => self.reset_all(),
                }
                Ok(Response::Execution(Tag::new("RESET")))
            }
            Kind::Show(name) => self.show(&name),
            Kind::Begin => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Kind::Commit => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
            Kind::Rollback => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
            Kind::Savepoint(tag) => Ok(Response::Execution(Tag::new(tag))),
            Kind::DiscardAll => {
                self.reset_all();
                Ok(Response::Execution(Tag::new("DISCARD ALL")))
            }
            Kind::Refused(message) => Err(error("42501", message)),
            Kind::Read | Kind::Declare { .. } | Kind::Fetch { .. } | Kind::Close(_) => {
                Err(error("XX000", "statement routed to the wrong handler".into()))
            }
        }
    }

    fn reset_all(&self) {
        let mut settings = self.settings();
        settings.as_of = None;
        settings.timeout = self.server.limits.default_timeout;
        settings.params.clear();
    }

    fn set(&self, name: &str, value: Option<String>) -> PgWireResult<()> {
        let mut settings = self.settings();
        match (name, value) {
            ("keymart.as_of", None) => settings.as_of = None,
            ("keymart.as_of", Some(text)) if text.eq_ignore_ascii_case("latest") => settings.as_of = None,
            ("keymart.as_of", Some(text)) => {
                let date = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| {
                    error("22007", format!("keymart.as_of must be a date YYYY-MM-DD (or 'latest'), not '{text}'"))
                })?;
                settings.as_of = Some(date);
            }
            ("statement_timeout", None) => settings.timeout = self.server.limits.default_timeout,
            ("statement_timeout", Some(text)) => settings.timeout = self.server.limits.statement_timeout(&text)?,
            ("transaction", _) => {}
            (name, None) => {
                settings.params.remove(name);
            }
            (name, Some(value)) => {
                settings.params.insert(name.to_string(), value);
            }
        }
        Ok(())
    }

    fn show(&self, name: &str) -> PgWireResult<Response> {
        let settings = self.settings();
        let (column, value) = match name {
            "keymart.as_of" => (name, settings.as_of.map_or("latest".to_string(), |d| d.to_string())),
            "statement_timeout" => (name, format!("{}ms", settings.timeout.as_millis())),
            "transaction isolation level" | "transaction_isolation" => {
                ("transaction_isolation", "read committed".to_string())
            }
            "transaction_read_only" | "default_transaction_read_only" => (name, "on".to_string()),
            "server_version" => (name, "16.6".to_string()),
            "server_version_num" => (name, "160006".to_string()),
            "server_encoding" => (name, "UTF8".to_string()),
            "max_identifier_length" => (name, "63".to_string()),
            "integer_datetimes" => (name, "on".to_string()),
            "is_superuser" => (name, "off".to_string()),
            name => {
                let default = match name {
                    "standard_conforming_strings" => "on",
                    "client_encoding" => "UTF8",
                    "datestyle" => "ISO, MDY",
                    "intervalstyle" => "postgres",
                    "timezone" => "UTC",
                    "search_path" => "public",
                    "application_name" => "",
                    "extra_float_digits" => "1",
                    "bytea_output" => "hex",
                    "client_min_messages" => "notice",
                    "lock_timeout" | "idle_in_transaction_session_timeout" => "0",
                    "default_transaction_isolation" => "read committed",
                    _ => return Err(error("42704", format!("unrecognized configuration parameter \"{name}\""))),
                };
                (name, settings.params.get(name).cloned().unwrap_or_else(|| default.to_string()))
            }
        };
        let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec![value]))])
            .map_err(|e| error("XX000", e.to_string()))?;
        let fields = Arc::new(arrow_schema_to_pg_fields(&schema, &Format::UnifiedText, None)?);
        let rows: Vec<PgWireResult<DataRow>> = encode_recordbatch(fields.clone(), batch).collect();
        Ok(Response::Query(QueryResponse::new(fields, stream::iter(rows))))
    }

    /// A statement refused before it ran (a syntax error), logged and counted.
    fn rejected(&self, user: &str, e: PgWireError) -> PgWireError {
        QueryLog::new(&self.server.metrics, user, self.settings().as_of, Instant::now()).fail(e)
    }

    fn cursor_schema(&self, name: &str) -> Option<SchemaRef> {
        self.settings().cursors.get(name).cloned()
    }
}

fn user_of<C: ClientInfo>(client: &C) -> String {
    client.metadata().get(METADATA_USER).cloned().unwrap_or_default()
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = user_of(client);
        let statements = self.parse(query).map_err(|e| self.rejected(&user, e))?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            responses.push(self.simple(client, statement, &user).await?);
        }
        Ok(responses)
    }
}

/// The extended protocol's Parse: classify, and plan a read to describe its parameters and columns.
pub struct Parser(pub Arc<Connection>);

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let connection = &self.0;
        let mut statements = connection.parse(sql).map_err(|e| connection.rejected(&user_of(client), e))?;
        if statements.len() > 1 {
            return Err(error("42601", "cannot insert multiple commands into a prepared statement".into()));
        }
        let Some(statement) = statements.pop() else { return Ok(None) };
        let kind = classify(&statement);
        let (schema, parameters) = match &kind {
            Kind::Read => {
                connection.refresh().await?;
                let plan = connection.plan(&statement).await?;
                (Some(Arc::new(plan.schema().as_arrow().clone())), parameter_types(&plan)?)
            }
            Kind::Fetch { name, .. } => (connection.cursor_schema(name), vec![]),
            Kind::Show(_) => (Some(Arc::new(Schema::new(vec![Field::new("setting", DataType::Utf8, false)]))), vec![]),
            _ => (None, vec![]),
        };
        Ok(Some(Prepared { statement: Some(statement), kind, schema, parameters }))
    }

    fn get_parameter_types(&self, prepared: &Prepared) -> PgWireResult<Vec<Type>> {
        prepared.parameters.iter().map(|t| t.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type)).collect()
    }

    fn get_result_schema(&self, prepared: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        match &prepared.schema {
            Some(schema) => arrow_schema_to_pg_fields(schema, format.unwrap_or(&Format::UnifiedText), None),
            None => Ok(vec![]),
        }
    }
}

/// The plan's `$1, $2, …` in order, with the types DataFusion inferred for them.
fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let found = plan.get_parameter_types().map_err(engine_error)?;
    let mut numbered: Vec<(usize, Option<DataType>)> = found
        .into_iter()
        .map(|(name, t)| (name.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX), t))
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    Ok(numbered.into_iter().map(|(_, t)| t).collect())
}

/// The handlers a connection answers with; pgwire asks for them once per connection.
pub struct Handlers {
    pub connection: Arc<Connection>,
    pub parser: Arc<Parser>,
}

#[async_trait]
impl ExtendedQueryHandler for Handlers {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let connection = &self.connection;
        let user = user_of(client);
        let prepared = &portal.statement.statement;
        let Some(statement) = &prepared.statement else { return Ok(Response::EmptyQuery) };
        match &prepared.kind {
            Kind::Read => {
                let inferred: Vec<Option<&DataType>> = prepared.parameters.iter().map(Option::as_ref).collect();
                let values: ParamValues = deserialize_parameters(portal, &inferred)?;
                // Planned again: the snapshots may have moved since Parse.
                let cancel = cancel_signal(client);
                let (response, _) =
                    connection.read(statement, Some(&values), &portal.result_column_format, &user, cancel).await?;
                Ok(Response::Query(response))
            }
            kind @ (Kind::Declare { .. } | Kind::Fetch { .. } | Kind::Close(_)) => {
                let store = client
                    .portal_store()
                    .as_any()
                    .downcast_ref::<MemPortalStore<Prepared>>()
                    .ok_or_else(|| error("XX000", "cursors are not available on this connection".into()))?;
                connection.cursor(store, kind.clone(), &user, cancel_signal(client)).await
            }
            other => connection.session_command(other.clone(), &user),
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Handlers {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        SimpleQueryHandler::do_query(self.connection.as_ref(), client, query).await
    }
}

/// The cancel requests for the statement starting now (none before the session is registered).
type Cancel = Option<Watch>;

fn cancel_signal<C: ClientInfo>(client: &C) -> Cancel {
    let requests = client.session_extensions().get::<Arc<Requests>>()?;
    Some(Watch::start(requests.as_ref().clone()))
}

/// `work`, unless the deadline passes (57014, statement timeout) or the client cancels first
/// (57014, user request).
async fn until<T>(deadline: Instant, cancel: &Cancel, work: impl Future<Output = T>) -> PgWireResult<T> {
    let cancelled = async {
        match cancel {
            Some(watch) => watch.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = cancelled => Err(error("57014", "canceling statement due to user request".into())),
        done = tokio::time::timeout_at(deadline.into(), work) => done.map_err(|_| timeout_error()),
    }
}

/// A place in the queue for a query slot, left when dropped.
struct Queued<'a> {
    queue: &'a std::sync::atomic::AtomicUsize,
    /// How many were waiting before this one.
    ahead: usize,
}

impl<'a> Queued<'a> {
    fn join(queue: &'a std::sync::atomic::AtomicUsize) -> Queued<'a> {
        let ahead = queue.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Queued { queue, ahead }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.queue.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A running query: its batches, the deadline it must finish by, its cancel signal, its query
/// slot and its log line.
struct Running {
    batches: SendableRecordBatchStream,
    /// The task computing them on the query threads, stopped when the query ends.
    _producer: super::queries::Producer,
    deadline: Instant,
    cancel: Cancel,
    _permit: OwnedSemaphorePermit,
    log: QueryLog,
}

/// The query's rows as they come out of the engine, one batch at a time: nothing is collected.
fn rows(running: Running, fields: Arc<Vec<FieldInfo>>) -> QueryResponse {
    let metrics = running.log.metrics.clone();
    let encode_fields = fields.clone();
    let rows = batches(running).flat_map(move |batch| {
        let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send> = match batch {
            Ok(batch) => {
                let metrics = metrics.clone();
                // A DataRow message: its type byte, length and field count, then the fields.
                Box::new(encode_recordbatch(encode_fields.clone(), batch).inspect(move |row| {
                    if let Ok(row) = row {
                        metrics.bytes_sent(7 + row.data.len() as u64);
                    }
                }))
            }
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
        stream::iter(rows)
    });
    QueryResponse::new(fields, rows)
}

/// The query's batches until the engine's last, its deadline or its cancel; its log line
/// says which.
fn batches(running: Running) -> impl futures::Stream<Item = PgWireResult<RecordBatch>> + Send + 'static {
    stream::unfold(Some(running), |state| async move {
        let mut running = state?;
        match until(running.deadline, &running.cancel, running.batches.next()).await {
            Err(e) => Some((Err(running.log.fail(e)), None)),
            Ok(None) => {
                running.log.outcome = "ok";
                None
            }
            Ok(Some(Err(e))) => Some((Err(running.log.fail(engine_error(e))), None)),
            Ok(Some(Ok(batch))) => {
                running.log.rows += batch.num_rows() as u64;
                Some((Ok(batch), Some(running)))
            }
        }
    })
}

/// One log line per query, written when the query ends (finished, failed, or dropped by a
/// client that went away): user, seconds, rows, outcome, the snapshot date it read. Never the
/// SQL's literals or a secret. The same end is counted in `/metrics`.
struct QueryLog {
    metrics: Arc<Metrics>,
    _running: metrics::Running,
    user: String,
    as_of: Option<NaiveDate>,
    started: Instant,
    rows: u64,
    outcome: &'static str,
    code: Option<String>,
}

impl QueryLog {
    fn new(metrics: &Arc<Metrics>, user: &str, as_of: Option<NaiveDate>, started: Instant) -> QueryLog {
        QueryLog {
            metrics: metrics.clone(),
            _running: metrics.query_started(),
            user: user.to_string(),
            as_of,
            started,
            rows: 0,
            outcome: "abandoned",
            code: None,
        }
    }

    fn fail(&mut self, e: PgWireError) -> PgWireError {
        self.outcome = "error";
        if let PgWireError::UserError(info) = &e {
            self.outcome = match info.code.as_str() {
                "57014" if info.message.contains("user request") => "cancelled",
                "57014" => "timeout",
                "53000" | "53300" | "57P01" => "refused",
                _ => "error",
            };
            self.code = Some(info.code.clone());
        }
        e
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        let as_of = self.as_of.map_or("latest".to_string(), |d| d.to_string());
        let elapsed = self.started.elapsed();
        self.metrics.query_ended(self.outcome, elapsed, self.rows);
        tracing::info!(
            target: "keymart::serve::query",
            user = %self.user,
            seconds = elapsed.as_secs_f64(),
            rows = self.rows,
            outcome = self.outcome,
            sqlstate = self.code.as_deref().unwrap_or("00000"),
            snapshots = %as_of,
            "query"
        );
    }
}

/// An error for the client. Its message is scrubbed like every other output: an engine error can
/// quote a storage URL or option.
pub fn error(code: &str, message: String) -> PgWireError {
    let message = crate::error::secrets::scrub(&message).into_owned();
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message)))
}

fn timeout_error() -> PgWireError {
    error("57014", "canceling statement due to statement timeout".into())
}

/// A DataFusion error as PostgreSQL would class it.
fn engine_error(e: DataFusionError) -> PgWireError {
    let message = e.to_string();
    let code = match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => {
            return error(
                "53200",
                format!(
                    "out of memory: this query needs more than its share of the server's query memory \
                     (serve.memory_limit_mb in keymart.yaml; other queries keep running): {message}"
                ),
            );
        }
        DataFusionError::SQL(..) => "42601",
        DataFusionError::SchemaError(..) if message.contains("No field named") => "42703",
        DataFusionError::Plan(m) if m.contains("not found") && m.contains("table") => "42P01",
        DataFusionError::Plan(m) if m.contains("No field named") => "42703",
        DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => "42000",
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::Execution(_) | DataFusionError::ArrowError(..) => "22000",
        _ => "XX000",
    };
    error(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_sent_to_a_client_carries_no_secret() {
        crate::error::secrets::register("serve-client-s3cr3t");
        let failed = engine_error(DataFusionError::Execution(
            "reading s3://lake/wh/marts/x.parquet?aws_secret=serve-client-s3cr3t from http://u:pw-9f8e7d@host/".into(),
        ));
        let PgWireError::UserError(info) = failed else { panic!("a user error") };
        assert_eq!(info.code, "22000");
        assert!(!info.message.contains("serve-client-s3cr3t"), "{}", info.message);
        assert!(!info.message.contains("pw-9f8e7d"), "{}", info.message);
        assert!(info.message.contains("s3://lake/wh/marts/x.parquet"), "{}", info.message);
    }
}
