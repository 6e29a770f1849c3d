//! `keymart serve`: the committed marts for BI tools, over the PostgreSQL wire protocol.
//!
//! A thin adapter over the engine `keymart query` uses: each connection is a DataFusion session
//! over the shared memory pool, seeing the marts' committed snapshots (`snapshots`), PostgreSQL's
//! catalog as datafusion-postgres emulates it, and nothing else — no raw data, no staging or
//! state, no file paths. `pgwire` speaks the protocol; keymart's handlers (`session`) decide what
//! runs (`statement`), who connects (`auth`), and how long and how big a query may be.

mod auth;
mod cancel;
mod comments;
mod connection;
mod flight;
mod functions;
mod http;
mod metrics;
mod queries;
mod session;
mod snapshots;
mod statement;
mod store;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog;
use pgwire::error::PgWireResult;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{Materialized, Project, ServeSettings};
use crate::engine::{Engine, engine_error, session_parts};
use crate::error::{Error, Result};
use crate::warehouse::{Shelf, Warehouse};

pub use auth::DATABASE;

/// Where to listen (the command line's `--pg` and `--http`, over keymart.yaml's `serve:`).
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub pg: Option<String>,
    pub http: Option<String>,
    /// Arrow Flight SQL's listener: off unless given (here or as `serve.flight_listen`).
    pub flight: Option<String>,
}

const DEFAULT_PG: &str = "127.0.0.1:5433";
const DEFAULT_HTTP: &str = "127.0.0.1:8080";

/// Time limits of statements.
pub(crate) struct Limits {
    default_timeout: Duration,
    max_timeout: Duration,
}

impl Limits {
    /// A `SET statement_timeout` value: milliseconds, or a number with `ms`, `s`, `min` or `h`.
    fn statement_timeout(&self, text: &str) -> PgWireResult<Duration> {
        let text = text.trim().to_ascii_lowercase();
        let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let scale = match unit.trim() {
            "" | "ms" => 0.001,
            "s" => 1.0,
            "min" => 60.0,
            "h" => 3600.0,
            _ => f64::NAN,
        };
        let seconds = number.parse::<f64>().map(|n| n * scale).unwrap_or(f64::NAN);
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(session::error("22023", format!("invalid value for statement_timeout: \"{text}\"")));
        }
        // 0 means "no limit" in PostgreSQL; here the server's maximum is the limit.
        if seconds == 0.0 {
            return Ok(self.max_timeout);
        }
        let asked = Duration::from_secs_f64(seconds);
        if asked > self.max_timeout {
            return Err(session::error(
                "22023",
                format!(
                    "statement_timeout may be at most {} s on this server (serve.max_statement_timeout_seconds)",
                    self.max_timeout.as_secs()
                ),
            ));
        }
        Ok(asked)
    }
}

/// What every connection shares.
pub(crate) struct Server {
    warehouse: Warehouse,
    catalog: snapshots::Catalog,
    docs: comments::Docs,
    config: SessionConfig,
    runtime: Arc<RuntimeEnv>,
    users: Arc<auth::Users>,
    cancels: Arc<cancel::Cancels>,
    limits: Limits,
    slots: Arc<Semaphore>,
    /// The threads the queries compute on.
    queries: queries::QueryThreads,
    /// Statements waiting for a slot now, at most `max_queued`.
    queued: AtomicUsize,
    max_queued: usize,
    max_connections: usize,
    metrics: Arc<metrics::Metrics>,
}

impl Server {
    /// A new connection's session: keymart's functions, the marts (registered before each
    /// statement), and `pg_catalog` for clients' catalog queries.
    fn session(&self) -> Result<Engine> {
        let config = self.config.clone().with_default_catalog_and_schema(DATABASE, "public");
        let engine = Engine::local_sharing(&self.warehouse.location, config, self.runtime.clone());
        setup_pg_catalog(&engine.ctx, DATABASE, EmptyContextProvider)
            .map_err(|e| engine_error("setting up pg_catalog", *e))?;
        functions::register(&engine.ctx);
        Ok(engine)
    }
}

/// Run the server until SIGTERM or Ctrl-C: then stop accepting, let the connections' running
/// statements finish (up to the statement timeout), and return.
pub async fn serve(project: &Project, warehouse: &Warehouse, options: &ServeOptions) -> Result<()> {
    let settings = &project.settings.serve;
    let users = Arc::new(auth::Users::from_settings(&settings.users)?);
    let pg_addr = resolve(options.pg.as_deref().or(settings.listen.as_deref()).unwrap_or(DEFAULT_PG), "--pg")?;
    let http_addr =
        resolve(options.http.as_deref().or(settings.http_listen.as_deref()).unwrap_or(DEFAULT_HTTP), "--http")?;
    if users.is_empty() && !pg_addr.ip().is_loopback() {
        return Err(Error::Usage(format!(
            "keymart serve would listen on {pg_addr} with no users: anyone who reaches it could read the marts. \
             Add serve.users to keymart.yaml, or listen on loopback (127.0.0.1)"
        )));
    }
    if users.is_empty() && !http_addr.ip().is_loopback() {
        return Err(Error::Usage(format!(
            "keymart serve would serve the reports and /metrics on {http_addr} with no users to check: \
             add serve.users to keymart.yaml (HTTP Basic authentication), or listen on loopback (--http 127.0.0.1:8080)"
        )));
    }
    let flight_addr =
        options.flight.as_deref().or(settings.flight_listen.as_deref()).map(|a| resolve(a, "--flight")).transpose()?;
    if let Some(addr) = flight_addr.filter(|a| !a.ip().is_loopback()) {
        // Flight's handshake sends the password itself: off loopback, only inside TLS.
        if settings.tls.is_none() || users.is_empty() {
            return Err(Error::Usage(format!(
                "keymart serve --flight {addr}: off loopback, Flight SQL needs serve.tls (its handshake sends \
                 the password as it is) and serve.users; or listen on loopback (--flight 127.0.0.1:5434)"
            )));
        }
    }
    let tls_for = |alpn: &[u8]| {
        settings.tls.as_ref().map(|tls| tls_acceptor(&project.root, &tls.cert, &tls.key, alpn)).transpose()
    };
    let tls = tls_for(b"postgresql")?;
    let flight_tls = tls_for(b"h2")?;
    let server = Arc::new(server(project, warehouse, settings, users.clone())?);

    let listener = TcpListener::bind(pg_addr).await.map_err(|e| Error::io(Path::new(&pg_addr.to_string()), e))?;
    let http_listener =
        TcpListener::bind(http_addr).await.map_err(|e| Error::io(Path::new(&http_addr.to_string()), e))?;
    if users.is_empty() {
        tracing::warn!(
            "keymart serve: no users in keymart.yaml (serve.users): accepting every connection, on loopback only"
        );
    }
    // Off loopback, the HTTP listener asks for a user's name and password (all but /healthz).
    let http_access = if http_addr.ip().is_loopback() { http::Access::Open } else { http::Access::Basic };
    tracing::info!(
        "keymart serve: PostgreSQL protocol on {pg_addr} (database \"{DATABASE}\"{}), HTTP on {http_addr} \
         (/healthz, /metrics, the reports at / and /as_of/YYYY-MM-DD{}); {} marts",
        if tls.is_some() { ", TLS" } else { "" },
        if http_access == http::Access::Basic { ", Basic authentication" } else { "" },
        server.catalog.marts().len()
    );

    let http_task = tokio::spawn(http::serve(http_listener, server.clone(), http_access));
    let mut tasks = tokio::task::JoinSet::new();
    let stopping = CancellationToken::new();
    let flight_task = match flight_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(|e| Error::io(Path::new(&addr.to_string()), e))?;
            tracing::info!(
                "keymart serve: Arrow Flight SQL on {addr}{}",
                if flight_tls.is_some() { " (TLS)" } else { "" }
            );
            let service = flight::FlightSql::new(server.clone())?.service();
            Some(tokio::spawn(flight::serve(listener, flight_tls, service, stopping.clone())))
        }
        None => None,
    };
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    tasks.spawn(connection::serve_socket(server.clone(), socket, peer, tls.clone(), stopping.clone()));
                }
                Err(e) => tracing::warn!("keymart serve: accepting a connection failed: {e}"),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // No new connection from here; each session ends once its statement (if any) has answered.
    drop(listener);
    stopping.cancel();
    tracing::info!(
        "keymart serve: shutting down; no new connections; waiting for {} running statement(s)",
        server.metrics.queries_running()
    );
    // Running statements end by their statement timeout at the latest.
    let grace = server.limits.max_timeout + Duration::from_secs(1);
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await.is_err() {
        tasks.abort_all();
    }
    http_task.abort();
    if let Some(flight) = flight_task {
        // tonic lets the calls in flight end, then returns.
        let _ = tokio::time::timeout(grace, flight).await;
    }
    tracing::info!("keymart serve: stopped");
    Ok(())
}

fn server(
    project: &Project,
    warehouse: &Warehouse,
    settings: &ServeSettings,
    users: Arc<auth::Users>,
) -> Result<Server> {
    let pipeline = project.select_pipeline(None).map_err(Error::Usage)?;
    let mart_models: Vec<_> = pipeline.models.iter().filter(|m| m.materialized == Materialized::Mart).collect();
    let marts = mart_models.iter().map(|m| m.name.clone()).collect();
    let docs = comments::Docs::new(mart_models.iter().copied());
    let memory_mb = settings.memory_limit_mb.unwrap_or(project.settings.memory_limit_mb.value);
    let memory = usize::try_from(memory_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
    let (config, runtime) = session_parts(memory)?;
    let mut warehouse = warehouse.clone();
    let marts_prefix = warehouse.location.key(warehouse.layout().shelf_dir(Shelf::Marts));
    warehouse.location.store = store::KeptHeads::wrap(warehouse.location.store.clone(), marts_prefix);
    let builder = Engine::local_sharing(&warehouse.location, config.clone(), runtime.clone());
    let max_timeout = Duration::from_secs(settings.max_statement_timeout_seconds.max(1));
    Ok(Server {
        catalog: snapshots::Catalog::new(warehouse.clone(), marts, builder),
        warehouse,
        docs,
        config,
        runtime,
        users,
        cancels: Arc::default(),
        limits: Limits {
            default_timeout: Duration::from_secs(settings.statement_timeout_seconds.max(1)).min(max_timeout),
            max_timeout,
        },
        slots: Arc::new(Semaphore::new(settings.max_concurrent_queries.max(1))),
        queries: queries::QueryThreads::start()?,
        queued: AtomicUsize::new(0),
        max_queued: settings.max_queued_queries,
        max_connections: settings.max_connections.max(1),
        metrics: Arc::default(),
    })
}

fn resolve(addr: &str, flag: &str) -> Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut found| found.next())
        .ok_or_else(|| Error::Usage(format!("{flag} {addr}: not an address to listen on (HOST:PORT)")))
}

/// TLS from PEM files (relative to the project), with rustls and ring.
fn tls_acceptor(root: &Path, cert: &Path, key: &Path, alpn: &[u8]) -> Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let (cert, key) = (root.join(cert), root.join(key));
    let bad = |path: &Path, e: String| Error::Usage(format!("serve.tls: {}: {e}", path.display()));
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .map_err(|e| bad(&cert, e.to_string()))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(&cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(&cert, "no certificate in the file".into()));
    }
    let private_key = PrivateKeyDer::from_pem_file(&key).map_err(|e| bad(&key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(|e| bad(&cert, e.to_string()))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
