//! `keymart serve --flight`: the same marts over Arrow Flight SQL, for ADBC clients that want
//! columnar results. A Flight session is a [`Connection`] like a PostgreSQL one: the same
//! catalog of snapshots, the same statement rules (only reads), query slots, statement timeout
//! and memory pool, the same query log and `/metrics`. Only the wire differs: a statement is
//! planned at GetFlightInfo (its schema) and run at DoGet, its batches sent as Arrow IPC.
//!
//! Authentication is Flight's: a handshake with HTTP Basic credentials, checked against
//! `serve.users`, answers a bearer token that every later call carries. With no users the
//! listener is on loopback and any caller is served, handshake or not.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandStatementQuery, ProstMessageExt, SqlInfo, SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use futures::{Stream, TryStreamExt};
use pgwire::error::PgWireError;
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::Server;
use super::session::Connection;
use super::statement::{Kind, classify};

/// A session idle this long is forgotten (its client handshakes again).
const IDLE_SESSION: Duration = Duration::from_secs(3600);

pub struct FlightSql {
    server: Arc<Server>,
    /// Sessions by bearer token, at most `serve.max_connections`.
    sessions: Mutex<HashMap<String, Session>>,
    /// What callers without a token share when the server has no users (loopback only).
    anonymous: Arc<Connection>,
    info: SqlInfoData,
}

struct Session {
    user: String,
    connection: Arc<Connection>,
    last_used: Instant,
}

impl FlightSql {
    pub fn new(server: Arc<Server>) -> crate::Result<FlightSql> {
        let anonymous = Arc::new(Connection::new(server.clone(), server.session()?));
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "keymart");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
        info.append(SqlInfo::FlightSqlServerCancel, false);
        let info = info.build().map_err(|e| crate::Error::Internal(format!("Flight SQL info: {e}")))?;
        Ok(FlightSql { server, sessions: Mutex::default(), anonymous, info })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The caller's session: its bearer token's, or (with no users) the shared one.
    fn caller(&self, metadata: &MetadataMap) -> Result<(String, Arc<Connection>), Status> {
        let token = metadata.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        match token {
            Some(token) => {
                let mut sessions = self.sessions();
                let session = sessions
                    .get_mut(token.trim())
                    .ok_or_else(|| Status::unauthenticated("unknown or expired session: handshake again"))?;
                session.last_used = Instant::now();
                Ok((session.user.clone(), session.connection.clone()))
            }
            None if self.server.users.is_empty() => Ok(("anonymous".into(), self.anonymous.clone())),
            None => Err(Status::unauthenticated("authenticate first: a handshake with a user and password")),
        }
    }

    /// Check Basic credentials and open a session: its token.
    async fn open_session(&self, metadata: &MetadataMap) -> Result<String, Status> {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let (user, password) = super::auth::basic_credentials(header)
            .ok_or_else(|| Status::unauthenticated("the handshake needs Basic credentials (a user and a password)"))?;
        let users = &self.server.users;
        if !users.is_empty() && !super::auth::password_is_valid(users, &user, &password).await {
            return Err(Status::unauthenticated(format!("password authentication failed for user \"{user}\"")));
        }
        let full =
            || Status::resource_exhausted("sorry, too many clients already (serve.max_connections Flight sessions)");
        {
            let mut sessions = self.sessions();
            sessions.retain(|_, s| s.last_used.elapsed() < IDLE_SESSION);
            if sessions.len() >= self.server.max_connections {
                return Err(full());
            }
        }
        let engine = self.server.session().map_err(|e| Status::internal(e.to_string()))?;
        let connection = Arc::new(Connection::new(self.server.clone(), engine));
        let token: String = rand::random::<[u8; 24]>().iter().map(|b| format!("{b:02x}")).collect();
        let mut sessions = self.sessions();
        // Another handshake may have taken the last place meanwhile.
        if sessions.len() >= self.server.max_connections {
            return Err(full());
        }
        sessions.insert(token.clone(), Session { user, connection, last_used: Instant::now() });
        Ok(token)
    }

    /// The one reading statement of `sql`.
    fn statement(connection: &Connection, sql: &str) -> Result<datafusion::sql::sqlparser::ast::Statement, Status> {
        let mut statements = connection.parse(sql).map_err(status)?;
        if statements.len() != 1 {
            return Err(Status::invalid_argument("one statement per query"));
        }
        let statement = statements.pop().expect("one statement");
        match classify(&statement) {
            Kind::Read => Ok(statement),
            Kind::Refused(message) => Err(Status::permission_denied(message)),
            _ => Err(Status::permission_denied(
                "only reading statements (SELECT, WITH, VALUES, EXPLAIN) run over Flight SQL; \
                 keymart serve is read-only and its session settings are the PostgreSQL listener's",
            )),
        }
    }
}

/// A PostgreSQL-classed error as the gRPC status a Flight client understands; the message (already
/// scrubbed of secrets) keeps its SQLSTATE.
fn status(e: PgWireError) -> Status {
    let PgWireError::UserError(info) = &e else { return Status::internal(e.to_string()) };
    let message = format!("{} (SQLSTATE {})", info.message, info.code);
    match info.code.as_str() {
        "42501" => Status::permission_denied(message),
        "57014" if info.message.contains("timeout") => Status::deadline_exceeded(message),
        "57014" => Status::cancelled(message),
        code if code.starts_with("53") => Status::resource_exhausted(message),
        "57P01" => Status::unavailable(message),
        code if code.starts_with("42") || code.starts_with("22") || code == "0A000" => {
            Status::invalid_argument(message)
        }
        code if code.starts_with("58") => Status::unavailable(message),
        _ => Status::internal(message),
    }
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

/// One batch as a DoGet answer.
fn one_batch<E: std::fmt::Display>(batch: Result<RecordBatch, E>) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::once(async { Ok(batch) }))
        .map_err(Status::from);
    Ok(Response::new(Box::pin(stream)))
}

/// A FlightInfo whose one endpoint's ticket is `command` itself.
fn info_for(
    command: impl ProstMessageExt,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    let ticket = Ticket { ticket: command.as_any().encode_to_vec().into() };
    FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))
        .map(|info| info.with_endpoint(FlightEndpoint::new().with_ticket(ticket)).with_descriptor(descriptor))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let token = self.open_session(request.metadata()).await?;
        let answer = HandshakeResponse { protocol_version: 0, payload: token.clone().into() };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        let bearer = format!("Bearer {token}").parse().map_err(|_| Status::internal("token"))?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (_, connection) = self.caller(request.metadata())?;
        let statement = FlightSql::statement(&connection, &query.query)?;
        connection.refresh().await.map_err(status)?;
        let plan = connection.plan(&statement).await.map_err(status)?;
        let schema = plan.schema().as_arrow().clone();
        let ticket = TicketStatementQuery { statement_handle: query.query.into_bytes().into() };
        Ok(Response::new(info_for(ticket, &schema, request.into_inner())?))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let (user, connection) = self.caller(request.metadata())?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("a statement handle is the statement's text"))?;
        let statement = FlightSql::statement(&connection, &sql)?;
        let (schema, batches) = connection.read_batches(&statement, &user).await.map_err(status)?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches.map_err(|e| FlightError::Tonic(Box::new(status(e)))))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.described(request, query, query.into_builder().schema())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append(super::DATABASE);
        one_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.described(request, query.clone(), query.into_builder().schema())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append(super::DATABASE, "public");
        one_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.described(request, query.clone(), query.into_builder().schema())
    }

    /// The marts, their histories and `keymart_snapshots`, as the caller's session sees them now.
    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let (_, connection) = self.caller(request.metadata())?;
        connection.refresh().await.map_err(status)?;
        let ctx = &connection.engine().ctx;
        let public = ctx
            .catalog(super::DATABASE)
            .and_then(|catalog| catalog.schema("public"))
            .ok_or_else(|| Status::internal("no public schema"))?;
        let mut names = public.table_names();
        names.sort();
        let mut builder = query.into_builder();
        for name in names {
            let table = public.table(&name).await.map_err(|e| Status::internal(e.to_string()))?;
            let Some(table) = table else { continue };
            builder
                .append(super::DATABASE, "public", &name, "TABLE", table.schema().as_ref())
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.described(request, query, query.into_builder().schema())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        one_batch(builder.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.info).schema();
        self.described(request, query, schema)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(request.metadata())?;
        one_batch(query.into_builder(&self.info).build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

impl FlightSql {
    /// A catalog call's FlightInfo, for an authenticated caller: its ticket is the command.
    fn described(
        &self,
        request: Request<FlightDescriptor>,
        command: impl ProstMessageExt,
        schema: datafusion::arrow::datatypes::SchemaRef,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(request.metadata())?;
        Ok(Response::new(info_for(command, &schema, request.into_inner())?))
    }

    /// What gRPC serves: Flight's service over this.
    pub fn service(self) -> arrow_flight::flight_service_server::FlightServiceServer<FlightSql> {
        arrow_flight::flight_service_server::FlightServiceServer::new(self)
    }
}

/// Serve Flight SQL on `listener` until `stopping`: over TLS when `tls` is given (each
/// handshake on its own task, so a slow client holds no other back), else in the clear.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: arrow_flight::flight_service_server::FlightServiceServer<FlightSql>,
    stopping: tokio_util::sync::CancellationToken,
) {
    let serving = tonic::transport::Server::builder().add_service(service);
    let stopped = stopping.clone().cancelled_owned();
    let served = match tls {
        None => {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            serving.serve_with_incoming_shutdown(incoming, stopped).await
        }
        Some(tls) => {
            let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<TlsSocket>>(16);
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = stopping.cancelled() => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((socket, peer)) = accepted else { continue };
                    let (tls, sender) = (tls.clone(), sender.clone());
                    tokio::spawn(async move {
                        let handshake = tokio::time::timeout(Duration::from_secs(10), tls.accept(socket)).await;
                        match handshake {
                            Ok(Ok(stream)) => {
                                let _ = sender.send(Ok(TlsSocket(stream))).await;
                            }
                            _ => tracing::debug!("keymart serve: Flight TLS handshake with {peer} failed"),
                        }
                    });
                }
            });
            let incoming = futures::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|socket| (socket, receiver))
            });
            serving.serve_with_incoming_shutdown(incoming, stopped).await
        }
    };
    if let Err(e) = served {
        tracing::error!("keymart serve: the Flight SQL listener stopped: {e}");
    }
}

/// A TLS connection as tonic takes one.
struct TlsSocket(tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsSocket {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for TlsSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsSocket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
