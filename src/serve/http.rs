//! The HTTP listener: `/healthz` for load balancers and orchestrators (200 while the server can
//! list the warehouse's committed snapshots, 503 otherwise), `/metrics` for Prometheus, and the
//! nightly reports `keymart run` publishes — the newest at `/`, a night's at `/as_of/YYYY-MM-DD`.
//! Off loopback every path but `/healthz` asks for HTTP Basic credentials, checked against the
//! same users (and SCRAM verifiers) as the PostgreSQL listener.

use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Server;
use crate::error::Error;

/// Whether requests must carry a user's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Loopback: whoever can reach the port is on the host already.
    Open,
    /// HTTP Basic against `serve.users`.
    Basic,
}

/// The most a request's line and headers may take; a longer request is refused.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn serve(listener: TcpListener, server: Arc<Server>, access: Access) {
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                tokio::spawn(answer(socket, server.clone(), access));
            }
            Err(e) => tracing::warn!("keymart serve: accepting an HTTP connection failed: {e}"),
        }
    }
}

struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
}

struct Answer {
    status: &'static str,
    content_type: &'static str,
    headers: &'static str,
    body: Vec<u8>,
}

impl Answer {
    fn json(status: &'static str, body: String) -> Answer {
        Answer { status, content_type: "application/json", headers: "", body: body.into_bytes() }
    }

    fn not_found(what: &str) -> Answer {
        let body = format!("{{\"error\": \"not found: {what}; try /, /as_of/YYYY-MM-DD, /metrics or /healthz\"}}\n");
        Answer::json("404 Not Found", body)
    }
}

/// One request, one answer, then the connection closes.
async fn answer(mut socket: TcpStream, server: Arc<Server>, access: Access) {
    let (answer, head_only) = match read_request(&mut socket).await {
        Ok(request) => (route(&server, access, &request).await, request.method == "HEAD"),
        Err(status) => (Answer::json(status, "{\"error\": \"malformed request\"}\n".into()), false),
    };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nX-Content-Type-Options: nosniff\r\n\
         Cache-Control: no-cache\r\n{}Connection: close\r\n\r\n",
        answer.status,
        answer.content_type,
        answer.body.len(),
        answer.headers
    );
    let _ = socket.write_all(head.as_bytes()).await;
    if !head_only {
        let _ = socket.write_all(&answer.body).await;
    }
    let _ = socket.shutdown().await;
}

/// The request line and headers (a GET has no body to read).
async fn read_request(socket: &mut TcpStream) -> Result<Request, &'static str> {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 2048];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > MAX_REQUEST_HEAD {
                return Err("431 Request Header Fields Too Large");
            }
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return Err("400 Bad Request"),
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, read).await.map_err(|_| "408 Request Timeout")??;
    let text = std::str::from_utf8(&head).map_err(|_| "400 Bad Request")?;
    let mut lines = text.split("\r\n");
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("authorization").then(|| value.trim().to_string())
    });
    Ok(Request { method: method.to_string(), path: path.to_string(), authorization })
}

async fn route(server: &Arc<Server>, access: Access, request: &Request) -> Answer {
    let path = request.path.split(['?', '#']).next().unwrap_or_default();
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        return Answer::json("405 Method Not Allowed", "{\"error\": \"only GET and HEAD\"}\n".into());
    }
    if path == "/healthz" {
        return health(server).await;
    }
    if access == Access::Basic && !authorized(server, request.authorization.as_deref()).await {
        return Answer {
            status: "401 Unauthorized",
            content_type: "application/json",
            headers: "WWW-Authenticate: Basic realm=\"keymart\", charset=\"UTF-8\"\r\n",
            body: b"{\"error\": \"a user of keymart serve (serve.users) and its password, please\"}\n".to_vec(),
        };
    }
    let layout = server.warehouse.layout();
    match path {
        "/metrics" => Answer {
            status: "200 OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            headers: "",
            body: server.metrics.render(&server.warehouse.location.requests.snapshot()).into_bytes(),
        },
        "/" => report(server, &layout.latest_report(), "no report has been published yet").await,
        other => match other.strip_prefix("/as_of/").map(|date| date.strip_suffix('/').unwrap_or(date)) {
            Some(text) => match strict_date(text) {
                Some(date) => {
                    report(server, &layout.report(date), &format!("no report was published for {date}")).await
                }
                None => Answer::not_found("a report's address is /as_of/YYYY-MM-DD"),
            },
            None => Answer::not_found(other.split('/').nth(1).unwrap_or_default()),
        },
    }
}

/// A date written exactly `YYYY-MM-DD` (what the layout's keys are made of, and nothing else:
/// no other character reaches a key).
fn strict_date(text: &str) -> Option<NaiveDate> {
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    (date.format("%Y-%m-%d").to_string() == text).then_some(date)
}

async fn report(server: &Server, key: &object_store::path::Path, missing: &str) -> Answer {
    match server.warehouse.location.get_bytes(key).await {
        Ok(html) => {
            Answer { status: "200 OK", content_type: "text/html; charset=utf-8", headers: "", body: html.to_vec() }
        }
        Err(Error::Storage { source: object_store::Error::NotFound { .. }, .. }) => Answer {
            status: "404 Not Found",
            content_type: "text/html; charset=utf-8",
            headers: "",
            body: format!("<!DOCTYPE html><html><body><p>{missing}</p></body></html>\n").into_bytes(),
        },
        Err(e) => {
            tracing::warn!("keymart serve: reading a report: {e}");
            Answer::json("503 Service Unavailable", "{\"error\": \"the warehouse cannot be read now\"}\n".into())
        }
    }
}

/// HTTP Basic credentials of a configured user.
async fn authorized(server: &Arc<Server>, authorization: Option<&str>) -> bool {
    let Some((user, password)) = authorization.and_then(super::auth::basic_credentials) else { return false };
    super::auth::password_is_valid(&server.users, &user, &password).await
}

async fn health(server: &Server) -> Answer {
    let connections = server.metrics.sessions();
    match server.catalog.refresh().await {
        Ok(_) => Answer::json(
            "200 OK",
            format!(
                "{{\"status\": \"ok\", \"connections\": {connections}, \"marts\": {}}}\n",
                server.catalog.marts().len()
            ),
        ),
        Err(e) => {
            let reason = e.to_string().replace('"', "'");
            Answer::json(
                "503 Service Unavailable",
                format!("{{\"status\": \"unavailable\", \"reason\": \"{reason}\"}}\n"),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::strict_date;

    #[test]
    fn only_a_plain_date_names_a_report() {
        assert_eq!(strict_date("2024-06-02").map(|d| d.to_string()), Some("2024-06-02".into()));
        for text in
            ["2024-6-2", "2024-06-02/../../state", "..%2F..%2Fstate", "2024-06-31", " 2024-06-02", "+2024-06-02"]
        {
            assert_eq!(strict_date(text), None, "{text}");
        }
    }
}
