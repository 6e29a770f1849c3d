//! One client socket, from the TLS negotiation to its end: pgwire's message loop
//! (`process_socket`), kept here so that the server can act between messages. A cancel request
//! is answered before the connection limit is checked (a full server can still cancel); a
//! session over `serve.max_connections` is refused with 53300 after its startup message, as
//! PostgreSQL does; with `serve.tls`, a client from beyond loopback that did not ask for TLS is
//! refused with 28000 (SCRAM keeps its password safe, but not the results); and at shutdown a
//! session is closed with 57P01 once it is idle — after the ReadyForQuery of its statement, never
//! in the middle of one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, NoopHandler, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{MaybeTls, PgWireMessageServerCodec, negotiate_tls, process_error, process_message};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::Server;
use super::session::{self, Prepared};

/// How long a client may take from connecting to being authenticated (pgwire's own limit).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

type Socket = Framed<MaybeTls, PgWireMessageServerCodec<Prepared>>;

pub(crate) async fn serve_socket(
    server: Arc<Server>,
    socket: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    // With serve.tls, only a client on this host may connect in the clear.
    let peer_ip = peer.ip().to_canonical();
    let clear_refused = tls.is_some() && !peer_ip.is_loopback();
    let startup = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup);
    let negotiated = tokio::select! {
        _ = &mut startup => return,
        negotiated = negotiate_tls::<Prepared>(socket, tls) => negotiated,
    };
    let mut socket = match negotiated {
        Ok(Some(socket)) => socket,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!("keymart serve: TLS negotiation with {peer} failed: {e}");
            return;
        }
    };
    let first = tokio::select! {
        _ = &mut startup => return,
        first = socket.next() => first,
    };
    let first = match first {
        Some(Ok(message)) => message,
        _ => return,
    };
    // A cancel request comes on a connection of its own, and is not a session.
    if let PgWireFrontendMessage::CancelRequest(cancel) = first {
        server.cancels.cancel(cancel.pid, cancel.secret_key.to_bytes());
        return;
    }
    if clear_refused && !socket.is_secure() {
        tracing::warn!("keymart serve: refusing {peer}: a connection in the clear from beyond loopback (serve.tls)");
        let message = format!(
            "keymart serve accepts connections from {peer_ip} only over TLS (serve.tls): connect with sslmode=require \
             or stronger"
        );
        fatal(&mut socket, "28000", message).await;
        return;
    }
    let Some(_session) = server.metrics.open_session(server.max_connections) else {
        tracing::warn!(
            "keymart serve: refusing {peer}: {} sessions are open (serve.max_connections)",
            server.max_connections
        );
        let message = format!(
            "sorry, too many clients already: {} sessions are open (serve.max_connections in keymart.yaml)",
            server.max_connections
        );
        fatal(&mut socket, "53300", message).await;
        return;
    };
    if shutdown.is_cancelled() {
        fatal(&mut socket, "57P03", "the database system is shutting down".into()).await;
        return;
    }
    let engine = match server.session() {
        Ok(engine) => engine,
        Err(e) => {
            tracing::error!("keymart serve: cannot start a session for {peer}: {e}");
            fatal(&mut socket, "XX000", "keymart serve could not start a session (see its log)".into()).await;
            return;
        }
    };
    let connection = Arc::new(session::Connection::new(server.clone(), engine));
    let handlers =
        Arc::new(session::Handlers { connection: connection.clone(), parser: Arc::new(session::Parser(connection)) });
    let startup_handler = Arc::new(super::auth::Startup::new(server.users.clone(), server.cancels.clone()));
    // Neither COPY nor a cancel request reaches the handlers (one is refused, the other answered above).
    let (copy, cancel) = (Arc::new(NoopHandler), Arc::new(NoopHandler));

    let mut message = Some(first);
    // Idle: between statements, when the client waits for nothing (after a ReadyForQuery).
    let mut idle = false;
    loop {
        let Some(current) = message.take() else { break };
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
        );
        let extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => current.is_extended_query(),
        };
        let ends_a_statement = matches!(current, PgWireFrontendMessage::Query(_) | PgWireFrontendMessage::Sync(_));
        if matches!(current, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let processed = process_message(
            current,
            &mut socket,
            startup_handler.clone(),
            handlers.clone(),
            handlers.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await;
        if let Err(e) = processed {
            let fatal_error = matches!(&e, PgWireError::UserError(info) if info.severity == "FATAL");
            if process_error(&mut socket, e, extended).await.is_err() || fatal_error {
                break;
            }
        }
        let ready = matches!(socket.state(), PgWireConnectionState::ReadyForQuery);
        idle = ready && (ends_a_statement || starting);

        message = tokio::select! {
            biased;
            _ = shutdown.cancelled(), if idle => {
                fatal(&mut socket, "57P01", "terminating connection due to administrator command".into()).await;
                break;
            }
            _ = &mut startup, if !ready => None,
            next = socket.next() => next.and_then(Result::ok),
        };
    }
    tracing::debug!("keymart serve: connection from {peer} ended{}", if idle { "" } else { " mid-statement" });
}

/// A FATAL error, and the end of the connection.
async fn fatal(socket: &mut Socket, code: &str, message: String) {
    let info = ErrorInfo::new("FATAL".into(), code.into(), message);
    let _ = socket.send(PgWireBackendMessage::ErrorResponse(ErrorResponse::from(info))).await;
    let _ = socket.close().await;
}
