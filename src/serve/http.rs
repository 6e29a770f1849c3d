//! The HTTP listener: `/healthz` for load balancers and orchestrators. It answers 200 while the
//! server accepts connections and can list the warehouse's committed snapshots, 503 otherwise.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Server;

pub(crate) async fn serve(listener: TcpListener, server: Arc<Server>) {
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                tokio::spawn(answer(socket, server.clone()));
            }
            Err(e) => tracing::warn!("keymart serve: accepting an HTTP connection failed: {e}"),
        }
    }
}

/// One request, one answer, then the connection closes. Only the request line is looked at.
async fn answer(mut socket: TcpStream, server: Arc<Server>) {
    let mut request = vec![0u8; 2048];
    let read = match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut request)).await {
        Ok(Ok(n)) => n,
        _ => return,
    };
    let line = String::from_utf8_lossy(&request[..read]);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET" | "HEAD", "/healthz") => health(&server).await,
        _ => ("404 Not Found", "{\"error\": \"not found: try /healthz\"}\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        if method == "HEAD" { "" } else { body.as_str() }
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

async fn health(server: &Server) -> (&'static str, String) {
    let connections = server.open.load(Ordering::SeqCst);
    match super::snapshots::manifests_fingerprint(&server.warehouse).await {
        Ok(_) => (
            "200 OK",
            format!("{{\"status\": \"ok\", \"connections\": {connections}, \"marts\": {}}}\n", server.marts.len()),
        ),
        Err(e) => {
            let reason = e.to_string().replace('"', "'");
            ("503 Service Unavailable", format!("{{\"status\": \"unavailable\", \"reason\": \"{reason}\"}}\n"))
        }
    }
}
