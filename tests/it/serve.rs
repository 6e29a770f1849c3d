//! `keymart serve` with real clients: `psql` (Debian `postgresql-client`) and Python's psycopg 3,
//! SQLAlchemy 2 and pandas (`tests/it/serve/requirements.txt`), as `.ci/run` installs them. The
//! server runs as a child process on a free loopback port over a warehouse `keymart run` built
//! from the sample extracts. A missing client fails the test, naming what to install.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    KilledOnDrop, SAMPLE_MARTS, TestProject, assert_exit, free_ports, keymart, repo_root, stderr, stdout,
};

const PASSWORD: &str = "s3rve-pa55word-never-logged";
/// pipelines/nightly.yaml's descriptions of customer_rfm and its `monetary` column.
const RFM_DESCRIPTION: &str =
    "Recency, frequency, monetary value, their quintile scores, RFM segment and Pareto class.";
const MONETARY_DESCRIPTION: &str = "net amount of completed lines in the window";

/// The sample project, run for `days` (first to last).
fn sample(days: (&str, &str), keymart_yaml: &str) -> TestProject {
    let project = TestProject::shipped();
    crate::support::copy_dir(&repo_root().join("warehouse/landing"), &project.landing());
    std::fs::write(project.path().join("keymart.yaml"), keymart_yaml).unwrap();
    assert_exit(&project.keymart(&["run", "--from", days.0, "--to", days.1]), 0);
    project
}

/// A running `keymart serve`, killed when dropped; its log goes to a file.
struct Server {
    process: KilledOnDrop,
    port: u16,
    http_port: u16,
    log: std::path::PathBuf,
}

impl Server {
    fn start(project: &TestProject, env: &[(&str, &str)]) -> Server {
        Server::start_on(project, env, "127.0.0.1")
    }

    /// With both listeners bound to `host`.
    fn start_on(project: &TestProject, env: &[(&str, &str)], host: &str) -> Server {
        Server::start_with(project, env, host, &[])
    }

    /// With the password of `analyst` in the environment, the PostgreSQL and HTTP listeners bound
    /// to `host`, and Flight SQL on a free loopback port (returned).
    fn start_with_flight(project: &TestProject, host: &str) -> (Server, String) {
        let flight = free_ports(1)[0].to_string();
        let address = format!("127.0.0.1:{flight}");
        let env = [("KEYMART_TEST_SERVE_PASSWORD", PASSWORD)];
        (Server::start_with(project, &env, host, &["--flight", &address]), flight)
    }

    /// With `extra` arguments to `serve`, the PostgreSQL and HTTP listeners bound to `host`.
    fn start_with(project: &TestProject, env: &[(&str, &str)], host: &str, extra: &[&str]) -> Server {
        let ports = free_ports(2);
        let log = project.path().join("serve.log");
        let child = keymart()
            .arg("--project")
            .arg(project.path())
            .args(["--log-format", "json", "serve", "--pg"])
            .arg(format!("{host}:{}", ports[0]))
            .arg("--http")
            .arg(format!("{host}:{}", ports[1]))
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start keymart serve");
        let server = Server { process: KilledOnDrop(child), port: ports[0], http_port: ports[1], log };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "keymart serve did not listen: {}", server.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `psql` as user `user` (no password: the server has no users) with `args`.
    fn psql(&self, args: &[&str]) -> Output {
        let found = Command::new("psql").arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(found, "psql is needed for the serve tests: apt-get install -y postgresql-client (.ci/run does)");
        Command::new("psql")
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "analyst", "-d", "keymart"])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("run psql")
    }

    /// An HTTP GET on the server's HTTP port: the status line and the body.
    fn http_get(&self, path: &str) -> (String, String) {
        let (status, _, body) = self.http_request(path, "");
        (status, body)
    }

    /// An HTTP GET with extra header lines: the status line, the headers and the body.
    fn http_request(&self, path: &str, headers: &str) -> (String, String, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n").unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let response = String::from_utf8(response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        (status.to_string(), headers.to_string(), body.to_string())
    }

    /// One sample of `/metrics`, by its name with labels.
    fn metric(&self, name: &str) -> f64 {
        let (status, page) = self.http_get("/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK", "{page}");
        let line = page.lines().find(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ')));
        line.unwrap_or_else(|| panic!("no {name} in\n{page}")).rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Wait (bounded) for the process to exit after a signal; its status.
    fn exit_status(&mut self) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.process.0.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "keymart serve did not stop:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run tests/it/serve/operations.py's `command` against this server: its checks by name.
    fn operations(&self, command: &str) -> Checks {
        self.operations_with(command, &[])
    }

    /// The same, with the command's own arguments after the server's.
    fn operations_with(&self, command: &str, extra: &[&str]) -> Checks {
        let script = repo_root().join("tests/it/serve/operations.py");
        let (port, http_port, pid) =
            (self.port.to_string(), self.http_port.to_string(), self.process.0.id().to_string());
        let args: Vec<&str> = [command, &port, &http_port, &pid].into_iter().chain(extra.iter().copied()).collect();
        Checks::of(&format!("operations.py {command}"), &python(&script, &args), self)
    }
}

/// What a client program printed, one `{"check": name, …}` line per check, after it succeeded.
struct Checks {
    by_name: std::collections::HashMap<String, serde_json::Value>,
    report: String,
}

impl Checks {
    fn of(program: &str, output: &Output, server: &Server) -> Checks {
        let report = stdout(output);
        assert!(
            output.status.success(),
            "{program} failed:\n{report}\n{}\nserver log:\n{}",
            stderr(output),
            server.log()
        );
        let by_name = report
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .map(|v| (v["check"].as_str().unwrap().to_string(), v))
            .collect();
        Checks { by_name, report }
    }

    fn get(&self, name: &str) -> serde_json::Value {
        self.by_name.get(name).unwrap_or_else(|| panic!("no {name} in\n{}", self.report)).clone()
    }
}

fn psql_ok(server: &Server, args: &[&str]) -> String {
    let output = server.psql(args);
    assert!(
        output.status.success(),
        "psql {args:?}\n{}\n{}\nserver log:\n{}",
        stdout(&output),
        stderr(&output),
        server.log()
    );
    stdout(&output)
}

#[test]
fn psql_lists_describes_and_queries_the_marts_and_sees_a_new_publish() {
    let project = sample(("2024-06-01", "2024-06-02"), "warehouse: ./warehouse\n");
    let server = Server::start(&project, &[]);

    let tables = psql_ok(&server, &["-c", "\\dt"]);
    for mart in SAMPLE_MARTS {
        assert!(tables.contains(&format!(" {mart} ")), "\\dt lacks {mart}:\n{tables}");
    }
    assert!(!tables.contains("stg_"), "\\dt shows a staging table:\n{tables}");

    let described = psql_ok(&server, &["-c", "\\d+ customer_rfm"]);
    for column in ["customer_id", "recency_days", "monetary", "segment", "pareto_class"] {
        assert!(described.contains(column), "\\d+ customer_rfm lacks {column}:\n{described}");
    }
    // The column descriptions of pipelines/nightly.yaml are the columns' comments.
    let monetary = described.lines().find(|l| l.trim_start().starts_with("monetary ")).unwrap_or_default();
    assert!(monetary.ends_with("| net amount of completed lines in the window"), "{described}");

    // The same rows as `keymart query --format csv`.
    let sql = "SELECT customer_id, segment, rfm_code, frequency, monetary FROM customer_rfm ORDER BY customer_id";
    let from_psql = psql_ok(&server, &["-A", "-F", ",", "-P", "footer=off", "-c", sql]);
    let query = project.keymart(&["query", sql, "--format", "csv"]);
    assert_exit(&query, 0);
    assert_eq!(from_psql.trim(), stdout(&query).trim());
    assert_eq!(from_psql.trim().lines().count(), 201, "{from_psql}");

    // A publish while the server runs is what the next query sees, without a restart.
    let latest = "SELECT max(as_of) FROM keymart_snapshots WHERE mart = 'customer_rfm'";
    assert_eq!(psql_ok(&server, &["-A", "-t", "-c", latest]).trim(), "2024-06-02");
    assert_exit(&project.keymart(&["run", "--as-of", "2024-06-03"]), 0);
    assert_eq!(psql_ok(&server, &["-A", "-t", "-c", latest]).trim(), "2024-06-03");
    let distinct = "SELECT count(DISTINCT as_of) FROM customer_rfm_history";
    assert_eq!(psql_ok(&server, &["-A", "-t", "-c", distinct]).trim(), "3");

    // Nothing but the marts: no raw data, no staging or state tables, no files.
    let refused = server.psql(&["-c", "SELECT count(*) FROM stg_orders"]);
    assert!(stderr(&refused).contains("stg_orders"), "{}", stderr(&refused));
    assert!(!refused.status.success());

    let (status, body) = server.http_get("/healthz");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(body.contains("\"status\": \"ok\""), "{body}");

    // One log line per query, in JSON, with its outcome.
    let log = server.log();
    assert!(log.lines().any(|l| l.contains("\"outcome\":\"ok\"") && l.contains("\"rows\":200")), "{log}");
}

/// Requests of one kind among moto's: HEADs, GETs of an object, LISTs (a GET of the bucket).
fn of_kind<'a>(requests: &'a [String], kind: &str) -> Vec<&'a String> {
    let is_list = |r: &str| r.starts_with("GET /lake?list-type=2");
    requests
        .iter()
        .filter(|r| match kind {
            "head" => r.starts_with("HEAD "),
            "list" => is_list(r),
            "get" => r.starts_with("GET /lake/") && !is_list(r),
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn on_s3_a_repeated_query_asks_only_for_new_commits_and_its_data() {
    let (s3, _bucket) = crate::s3::sample_lake();
    let project = crate::s3::s3_project(&s3.endpoint(), "lake", "");
    assert_exit(&crate::s3::keymart_s3(&project, &["run", "--from", "2024-06-01", "--to", "2024-06-02"]), 0);
    let server = Server::start(&project, &[("KEYMART_TEST_SECRET", crate::s3::SECRET)]);
    let dashboard = "SELECT segment, count(*), sum(monetary) FROM customer_rfm GROUP BY segment ORDER BY segment; \
                     SELECT as_of, count(*) FROM customer_rfm_history GROUP BY as_of ORDER BY as_of";
    // Each psql is a connection of its own.
    let (first, cold) = s3.requests_during(|| psql_ok(&server, &["-A", "-t", "-c", dashboard]));
    let (again, warm) = s3.requests_during(|| psql_ok(&server, &["-A", "-t", "-c", dashboard]));
    assert_eq!(first, again);
    assert!(again.ends_with("2024-06-01|199\n2024-06-02|200\n"), "{again}");
    eprintln!(
        "requests: first {} ({} HEAD, {} GET, {} LIST), again {} ({} HEAD, {} GET, {} LIST)",
        cold.len(),
        of_kind(&cold, "head").len(),
        of_kind(&cold, "get").len(),
        of_kind(&cold, "list").len(),
        warm.len(),
        of_kind(&warm, "head").len(),
        of_kind(&warm, "get").len(),
        of_kind(&warm, "list").len()
    );
    // The first read the logs and the files' footers; the cold side is what the warm one saves.
    assert!(of_kind(&cold, "get").iter().any(|r| r.contains("/_delta_log/")), "{cold:#?}");
    assert!(!of_kind(&cold, "head").is_empty(), "{cold:#?}");
    // Again: per statement, one LIST of each mart's log from its newest commit on; then only
    // the data. No HEAD, no log or footer read again.
    let lists = of_kind(&warm, "list");
    assert_eq!(lists.len(), 2 * SAMPLE_MARTS.len(), "{warm:#?}");
    assert!(lists.iter().all(|r| r.contains("_delta_log") && r.contains("start-after=")), "{warm:#?}");
    assert!(of_kind(&warm, "head").is_empty(), "{warm:#?}");
    let gets = of_kind(&warm, "get");
    assert!(!gets.is_empty() && gets.iter().all(|r| r.contains(".parquet")), "{warm:#?}");
    assert_eq!(lists.len() + gets.len(), warm.len(), "{warm:#?}");
    assert!(warm.len() < cold.len(), "{} requests again against {} the first time", warm.len(), cold.len());

    // A night published meanwhile is read, and seen by the next statement.
    assert_exit(&crate::s3::keymart_s3(&project, &["run", "--as-of", "2024-06-03"]), 0);
    let (after, published) = s3.requests_during(|| psql_ok(&server, &["-A", "-t", "-c", dashboard]));
    assert!(after.contains("2024-06-01|199\n2024-06-02|200\n2024-06-03|"), "{after}");
    assert!(of_kind(&published, "get").iter().any(|r| r.contains("/_delta_log/")), "{published:#?}");
    let (_, settled) = s3.requests_during(|| psql_ok(&server, &["-A", "-t", "-c", dashboard]));
    let log_reads = of_kind(&settled, "get").into_iter().filter(|r| r.contains("/_delta_log/")).count();
    assert!(of_kind(&settled, "head").is_empty() && log_reads == 0, "{settled:#?}");
    // /metrics counts what the server asked of the store.
    assert!(server.metric("keymart_serve_store_requests_total{kind=\"list\"}") >= lists.len() as f64);
}

#[test]
fn python_clients_query_with_scram_and_get_each_error_as_its_sqlstate() {
    let yaml = "warehouse: ./warehouse\nserve:\n  memory_limit_mb: 16\n  users:\n    - {name: analyst, password: \"${KEYMART_TEST_SERVE_PASSWORD}\"}\n";
    let project = sample(("2024-06-01", "2024-06-02"), yaml);
    // The HTTP listener off loopback: it asks for a user's credentials.
    let server = Server::start_on(&project, &[("KEYMART_TEST_SERVE_PASSWORD", PASSWORD)], "0.0.0.0");
    let basic = |user: &str, password: &str| {
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Authorization: Basic {encoded}\r\n")
    };
    for path in ["/metrics", "/", "/as_of/2024-06-01"] {
        let (status, headers, _) = server.http_request(path, "");
        assert_eq!(status, "HTTP/1.1 401 Unauthorized", "{path}");
        assert!(headers.contains("WWW-Authenticate: Basic realm=\"keymart\""), "{headers}");
        let (status, _, _) = server.http_request(path, &basic("analyst", "not-the-password"));
        assert_eq!(status, "HTTP/1.1 401 Unauthorized", "{path}");
        let (status, _, body) = server.http_request(path, &basic("analyst", PASSWORD));
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}: {body}");
    }
    assert_eq!(server.http_get("/healthz").0, "HTTP/1.1 200 OK", "/healthz stays open for probes");

    let script = repo_root().join("tests/it/serve/clients.py");
    let raw = project.warehouse().join("raw/erp_orders/load_date=2024-06-01/part-0.parquet");
    assert!(raw.exists(), "{}", raw.display());
    let output = python(&script, &[&server.port.to_string(), "analyst", PASSWORD, &raw.display().to_string()]);
    let checks = Checks::of("clients.py", &output, &server);
    let check = |name: &str| checks.get(name);

    assert_eq!(check("simple_count")["rows"], 200);
    let extended = check("extended_count");
    assert_eq!(extended["rows"], extended["simple"], "{extended}");
    assert_eq!(check("extended_typed")["rows"], 3);
    assert_eq!(check("extended_typed")["types"], serde_json::json!(["str", "int"]));
    assert_eq!(check("binary_params")["row"], serde_json::json!(["2024-06-02", 42]));
    for write in ["write_create", "write_insert", "write_copy", "write_drop"] {
        assert_eq!(check(write)["sqlstate"], "42501", "{}", check(write));
    }
    assert_eq!(check("after_writes")["value"], 1);
    assert_eq!(check("file_path")["sqlstate"], "42P01", "{}", check("file_path"));
    assert!(check("raw_table")["sqlstate"].is_string(), "{}", check("raw_table"));
    assert_eq!(check("unknown_table")["sqlstate"], "42P01", "{}", check("unknown_table"));
    assert_eq!(check("syntax")["sqlstate"], "42601", "{}", check("syntax"));
    assert_eq!(check("timeout")["sqlstate"], "57014", "{}", check("timeout"));
    assert_eq!(check("memory")["sqlstate"], "53200", "{}", check("memory"));
    assert_eq!(check("after_errors")["value"], 200);
    let as_of = check("as_of");
    assert_eq!(as_of["latest"], "2024-06-02", "{as_of}");
    assert_eq!(as_of["pinned"], serde_json::json!(["2024-06-01"]), "{as_of}");
    assert_eq!(as_of["shown"], "2024-06-01", "{as_of}");
    assert_eq!(as_of["back"], serde_json::json!(["2024-06-02"]), "{as_of}");

    let cursor = check("server_cursor");
    assert_eq!(cursor["rows"], 200, "{cursor}");
    assert_eq!(cursor["distinct"], 200, "{cursor}");
    assert_eq!(cursor["batches"], 6, "200 rows in batches of 37: {cursor}");
    assert_eq!(cursor["ordered"], true, "{cursor}");

    let tables = check("sqlalchemy_tables")["tables"].clone();
    for mart in SAMPLE_MARTS {
        assert!(tables.as_array().unwrap().iter().any(|t| t == mart), "{mart} not in {tables}");
    }
    let columns = check("sqlalchemy_columns")["columns"].to_string();
    for column in ["customer_id", "recency_days", "monetary", "segment"] {
        assert!(columns.contains(&format!("\"{column}\"")), "{column} not in {columns}");
    }
    assert_eq!(check("pandas")["customers"], 200);
    let comments = check("sqlalchemy_comments");
    assert_eq!(comments["table"], RFM_DESCRIPTION, "{comments}");
    assert_eq!(comments["columns"]["monetary"], MONETARY_DESCRIPTION, "{comments}");
    assert_eq!(comments["columns"]["as_of"], "the snapshot's date", "{comments}");
    assert_eq!(check("descriptions")["rows"], serde_json::json!([[RFM_DESCRIPTION, MONETARY_DESCRIPTION]]));

    let wrong = check("wrong_password");
    assert!(
        wrong["message"].as_str().unwrap_or_default().contains("password authentication failed for user \"analyst\""),
        "{wrong}"
    );
    let other = check("other_database");
    assert!(other["message"].as_str().unwrap_or_default().contains("database \"postgres\" does not exist"), "{other}");

    // No secret in the log.
    let log = server.log();
    assert!(!log.contains(PASSWORD), "the password is in the server's log");
    assert!(log.contains("\"sqlstate\":\"42501\""), "{log}");
}

#[test]
fn listening_beyond_loopback_without_users_is_a_configuration_error() {
    let project = TestProject::shipped();
    let output = project.keymart(&["serve", "--pg", "0.0.0.0:0"]);
    assert_exit(&output, 2);
    assert!(stderr(&output).contains("with no users"), "{}", stderr(&output));
    let output = project.keymart(&["serve", "--http", "0.0.0.0:0"]);
    assert_exit(&output, 2);
    assert!(stderr(&output).contains("with no users to check"), "{}", stderr(&output));

    std::fs::write(
        project.path().join("keymart.yaml"),
        "warehouse: ./warehouse\nserve:\n  users:\n    - {name: analyst, password: \"${KEYMART_TEST_UNSET_SERVE_PASSWORD}\"}\n",
    )
    .unwrap();
    let output = project.keymart(&["serve"]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains("environment variable KEYMART_TEST_UNSET_SERVE_PASSWORD is not set"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn sigterm_lets_the_statement_in_flight_finish_refuses_new_ones_and_exits_0() {
    let project = sample(("2024-06-01", "2024-06-01"), "warehouse: ./warehouse\n");
    let mut server = Server::start(&project, &[]);
    let checks = server.operations("shutdown");
    let check = |name: &str| checks.get(name);

    // The query computing when SIGTERM came finished, with its result.
    let in_flight = check("in_flight");
    assert_eq!(in_flight["finished"], true, "{in_flight}");
    assert_eq!(in_flight["value"], in_flight["expected"], "{in_flight}");
    // No new connection, and the sessions are closed once their statement has answered.
    let refused = check("new_connection");
    assert!(refused["message"].as_str().unwrap_or_default().contains("refused"), "{refused}");
    for session in ["idle_session", "busy_session_after"] {
        let closed = check(session);
        assert!(closed.get("value").is_none(), "{session} still answers: {closed}");
        let notified = closed["notices"].as_array().unwrap().iter().any(|n| n == "57P01");
        assert!(notified || closed["sqlstate"] == "57P01", "{session}: {closed}");
    }
    let status = server.exit_status();
    assert_eq!(status.code(), Some(0), "{}", server.log());
    let log = server.log();
    assert!(log.contains("keymart serve: stopped"), "{log}");
    let shutting_down = log.find("shutting down").unwrap_or_else(|| panic!("{log}"));
    assert!(
        log[shutting_down..].lines().any(|l| l.contains("\"outcome\":\"ok\"") && l.contains("\"rows\":1")),
        "{log}"
    );
}

#[test]
fn cancel_requests_stop_a_computing_and_a_streaming_query_with_57014() {
    let project = sample(("2024-06-01", "2024-06-01"), "warehouse: ./warehouse\n");
    let server = Server::start(&project, &[]);
    let checks = server.operations("cancel");
    let check = |name: &str| checks.get(name);
    for cancelled in ["cancel_computing", "cancel_streaming"] {
        let cancelled = check(cancelled);
        assert_eq!(cancelled["sqlstate"], "57014", "{cancelled}");
        assert!(
            cancelled["message"].as_str().unwrap().contains("canceling statement due to user request"),
            "{cancelled}"
        );
    }
    assert_eq!(check("after_cancel_computing")["value"], 42);
    assert_eq!(check("after_cancel_streaming")["value"], 42);
    assert_eq!(server.metric("keymart_serve_queries_total{outcome=\"cancelled\"}"), 2.0);

    // psql sends a cancel request on SIGINT.
    let psql = Command::new("psql")
        .args(["-X", "-h", "127.0.0.1", "-p", &server.port.to_string(), "-U", "analyst", "-d", "keymart", "-c"])
        .arg("SELECT sum(a.value * b.value) FROM generate_series(1, 60000) a CROSS JOIN generate_series(1, 30000) b")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run psql");
    let started = Instant::now();
    while server.metric("keymart_serve_queries_running") < 1.0 {
        assert!(started.elapsed() < Duration::from_secs(60), "psql's query did not start: {}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(Command::new("kill").args(["-INT", &psql.id().to_string()]).status().unwrap().success());
    let output = psql.wait_with_output().unwrap();
    assert!(stderr(&output).contains("canceling statement due to user request"), "{}", stderr(&output));
    assert_eq!(server.metric("keymart_serve_queries_total{outcome=\"cancelled\"}"), 3.0);
}

#[test]
fn a_full_server_refuses_with_53300_and_53000_and_a_killed_client_gives_its_slot_back() {
    let yaml =
        "warehouse: ./warehouse\nserve:\n  max_connections: 3\n  max_concurrent_queries: 1\n  max_queued_queries: 1\n";
    let project = sample(("2024-06-01", "2024-06-01"), yaml);
    let server = Server::start(&project, &[]);
    let checks = server.operations("limits");
    let check = |name: &str| checks.get(name);
    assert_eq!(check("sessions_open")["value"], 3.0);
    let over = check("over_max_connections");
    assert!(over["message"].as_str().unwrap().contains("too many clients already"), "{over}");
    let wire = check("over_max_connections_wire");
    assert_eq!(
        (&wire["severity"], &wire["sqlstate"]),
        (&serde_json::json!("FATAL"), &serde_json::json!("53300")),
        "{wire}"
    );
    assert!(wire["message"].as_str().unwrap().contains("serve.max_connections"), "{wire}");
    let queue = check("over_the_queue");
    assert_eq!(queue["sqlstate"], "53000", "{queue}");
    assert!(queue["message"].as_str().unwrap().contains("serve.max_queued_queries"), "{queue}");
    // The killed client's slot went to the waiting query, its session to a new connection.
    let queued = check("queued_after_kill");
    assert_eq!(queued["alive"], false, "{queued}");
    let count = project.keymart(&["query", "SELECT count(*) AS customers FROM customer_rfm", "--format", "csv"]);
    assert_eq!(queued["value"].to_string(), stdout(&count).lines().nth(1).unwrap_or_default(), "{queued}");
    assert_eq!(check("session_after_kill")["value"], 7);
    let metrics = check("metrics");
    assert_eq!(metrics["refused_sessions"], 2.0, "{metrics}");
    assert_eq!(metrics["refused_queries"], 1.0, "{metrics}");
    assert_eq!(metrics["running"], 0.0, "{metrics}");
}

#[test]
fn the_http_listener_serves_exact_metrics_and_the_published_reports() {
    let project = sample(("2024-06-01", "2024-06-02"), "warehouse: ./warehouse\n");
    let server = Server::start(&project, &[]);

    // Known statements: two answered (200 rows and 1), one refused by the parser.
    let ids = psql_ok(&server, &["-A", "-t", "-c", "SELECT customer_id FROM customer_rfm"]);
    assert_eq!(psql_ok(&server, &["-A", "-t", "-c", "SELECT count(*) FROM customer_rfm"]).trim(), "200");
    assert!(!server.psql(&["-c", "SELEC 1"]).status.success());
    let started = Instant::now();
    while server.metric("keymart_serve_connections") > 0.0 {
        assert!(started.elapsed() < Duration::from_secs(30), "sessions stay open: {}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // A DataRow in text: type byte, length, field count, then each field's length and text.
    let id_bytes: usize = ids.lines().map(|id| 7 + 4 + id.len()).sum();
    for (metric, value) in [
        ("keymart_serve_connections_total", 3.0),
        ("keymart_serve_connections_refused_total", 0.0),
        ("keymart_serve_queries_total{outcome=\"ok\"}", 2.0),
        ("keymart_serve_queries_total{outcome=\"error\"}", 1.0),
        ("keymart_serve_queries_total{outcome=\"timeout\"}", 0.0),
        ("keymart_serve_query_duration_seconds_count", 3.0),
        ("keymart_serve_query_duration_seconds_bucket{le=\"+Inf\"}", 3.0),
        ("keymart_serve_rows_sent_total", 201.0),
        ("keymart_serve_bytes_sent_total", (id_bytes + 7 + 4 + "200".len()) as f64),
        // 2024-06-02T00:00:00Z, the second of the two snapshots.
        ("keymart_serve_snapshot_as_of_seconds{mart=\"customer_rfm\"}", 1_717_286_400.0),
        ("keymart_serve_snapshot_version{mart=\"customer_rfm\"}", 2.0),
    ] {
        assert_eq!(server.metric(metric), value, "{metric}");
    }
    let (_, headers, _) = server.http_request("/metrics", "");
    assert!(headers.contains("Content-Type: text/plain; version=0.0.4"), "{headers}");

    // The reports `keymart run` published: the newest at /, each night at /as_of/D.
    let warehouse = project.warehouse();
    for (path, file) in [("/", "reports/latest.html"), ("/as_of/2024-06-01", "reports/as_of=2024-06-01/index.html")] {
        let (status, headers, body) = server.http_request(path, "");
        assert_eq!(status, "HTTP/1.1 200 OK", "{path}: {body}");
        assert!(headers.contains("Content-Type: text/html; charset=utf-8"), "{headers}");
        assert_eq!(body, std::fs::read_to_string(warehouse.join(file)).unwrap(), "{path}");
    }
    assert_ne!(server.http_get("/").1, server.http_get("/as_of/2024-06-01").1, "/ is the newest night's");
    assert_eq!(server.http_get("/").1, server.http_get("/as_of/2024-06-02/").1);
    for path in [
        "/as_of/2024-05-31",
        "/as_of/2024-6-1",
        "/as_of/2024-06-01/../../keymart.yaml",
        "/as_of/..%2F..%2Fkeymart.yaml",
        "/../keymart.yaml",
        "/reports/latest.html",
        "/as_of/",
    ] {
        let (status, _) = server.http_get(path);
        assert_eq!(status, "HTTP/1.1 404 Not Found", "{path}");
    }

    // A browser renders the page served over HTTP, scripts and all.
    let chromium =
        std::env::var_os("KEYMART_CHROMIUM").map_or_else(|| std::path::PathBuf::from("/usr/bin/chromium"), Into::into);
    assert!(chromium.exists(), "the serve tests need headless Chromium (apt-get install -y chromium; .ci/run does)");
    let output = Command::new(&chromium)
        .args(["--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", project.path().join("chromium-profile").display()))
        .arg("--dump-dom")
        .arg(format!("http://127.0.0.1:{}/as_of/2024-06-01", server.http_port))
        .output()
        .expect("run chromium");
    let dom = stdout(&output);
    assert!(dom.contains("data-script=\"ready\""), "{dom}\n{}", stderr(&output));
    // Every headline figure of that night, as the browser shows it.
    let night = std::fs::read_to_string(warehouse.join("reports/as_of=2024-06-01/index.html")).unwrap();
    let figures = crate::report::figures(&night);
    assert!(figures.len() > 3, "{figures:?}");
    assert_eq!(crate::report::figures(&dom), figures);
}

#[test]
fn pgjdbc_lists_tables_and_columns_with_remarks_and_runs_a_prepared_statement() {
    let jar = Path::new("/usr/share/java/postgresql.jar");
    let java = Command::new("java").arg("-version").output().is_ok_and(|o| o.status.success());
    assert!(
        java && jar.exists(),
        "the pgJDBC test needs a JDK and pgJDBC: apt-get install -y default-jdk-headless libpostgresql-jdbc-java \
         (.ci/run does)"
    );
    let yaml = "warehouse: ./warehouse\nserve:\n  users:\n    - {name: analyst, password: \"${KEYMART_TEST_SERVE_PASSWORD}\"}\n";
    let project = sample(("2024-06-01", "2024-06-02"), yaml);
    let server = Server::start(&project, &[("KEYMART_TEST_SERVE_PASSWORD", PASSWORD)]);
    let output = Command::new("java")
        .arg("-cp")
        .arg(jar)
        .arg(repo_root().join("tests/it/serve/Client.java"))
        .args([&server.port.to_string(), "analyst", PASSWORD])
        .output()
        .expect("run java");
    let checks = Checks::of("Client.java", &output, &server);
    let check = |name: &str| checks.get(name);

    assert_eq!(check("connected")["product"], "PostgreSQL", "{}", checks.report);
    let tables = check("tables");
    for mart in SAMPLE_MARTS {
        assert!(tables["tables"].as_array().unwrap().iter().any(|t| t == mart), "{mart} not in {tables}");
    }
    assert_eq!(tables["customer_rfm_remarks"], RFM_DESCRIPTION, "{tables}");
    let columns = check("columns");
    let column = |name: &str| {
        columns["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c[0] == name)
            .unwrap_or_else(|| panic!("{name}: {columns}"))
            .clone()
    };
    // [name, TYPE_NAME, java.sql.Types, REMARKS]
    assert_eq!(column("monetary"), serde_json::json!(["monetary", "numeric", 2, MONETARY_DESCRIPTION]));
    assert_eq!(column("customer_id"), serde_json::json!(["customer_id", "text", 12, null]), "{columns}");
    assert_eq!(column("frequency")[2], -5, "BIGINT: {columns}");

    // The same rows as `keymart query`.
    let sql = "SELECT customer_id, frequency FROM customer_rfm WHERE frequency >= 2 AND segment <> 'Lost' \
               ORDER BY customer_id LIMIT 3";
    let query = project.keymart(&["query", sql, "--format", "csv"]);
    assert_exit(&query, 0);
    let expected: Vec<serde_json::Value> = stdout(&query)
        .lines()
        .skip(1)
        .map(|line| line.split_once(',').unwrap())
        .map(|(id, frequency)| serde_json::json!([id, frequency.parse::<i64>().unwrap()]))
        .collect();
    assert_eq!(expected.len(), 3, "{}", stdout(&query));
    assert_eq!(check("prepared")["rows"], serde_json::Value::Array(expected), "{}", checks.report);
    assert_eq!(check("query")["count"], 200);
    assert_eq!(check("write")["sqlstate"], "42501", "{}", checks.report);
}

#[test]
fn a_cursor_reading_snapshots_that_retention_removes_meanwhile_gets_every_row() {
    let project = sample(("2024-06-01", "2024-06-02"), "warehouse: ./warehouse\n");
    project.append("pipelines/nightly.yaml", "retention:\n  daily_days: 1\n");
    let history_files = |day: &str| {
        let log = crate::support::DeltaLog::read_dir(&project.warehouse().join("marts/customer_rfm"));
        let named: Vec<String> = log.files.iter().filter(|(_, d)| d.as_str() == day).map(|(f, _)| f.clone()).collect();
        named
    };
    let before = [history_files("2024-06-01"), history_files("2024-06-02")].concat();
    assert_eq!(before.len(), 2);
    let server = Server::start(&project, &[]);
    let keymart = env!("CARGO_BIN_EXE_keymart");
    let checks = server.operations_with("retention", &[keymart, project.path().to_str().unwrap(), "2024-06-03"]);
    assert_eq!(checks.get("publish")["exit"], 0, "{}", checks.report);
    // The night kept only itself: both snapshots the cursor reads left the table meanwhile...
    assert!(history_files("2024-06-01").is_empty() && history_files("2024-06-02").is_empty());
    // ...and the cursor still got every row of them, and nothing of the new night.
    assert_eq!(checks.get("cursor")["by_date"], serde_json::json!({"2024-06-01": 199, "2024-06-02": 200}));
    // Their files stay until file_retention_seconds (7 days): a running query keeps its files.
    for file in &before {
        assert!(project.warehouse().join("marts/customer_rfm").join(file).exists(), "{file}");
    }
    let after = checks.get("after")["by_date"].clone();
    assert_eq!(after.as_object().unwrap().keys().collect::<Vec<_>>(), ["2024-06-03"], "{after}");
}

#[test]
fn adbc_over_flight_sql_authenticates_lists_and_reads_the_marts_and_writes_are_refused() {
    let yaml = "warehouse: ./warehouse\nserve:\n  statement_timeout_seconds: 2\n  users:\n    - {name: analyst, password: \"${KEYMART_TEST_SERVE_PASSWORD}\"}\n";
    let project = sample(("2024-06-01", "2024-06-02"), yaml);
    let (server, flight) = Server::start_with_flight(&project, "127.0.0.1");
    let script = repo_root().join("tests/it/serve/flight.py");
    let checks = Checks::of("flight.py", &python(&script, &[&flight, "analyst", PASSWORD]), &server);
    let check = |name: &str| checks.get(name);

    let wrong = check("wrong_password");
    assert!(wrong["message"].as_str().unwrap().contains("password authentication failed"), "{wrong}");
    // The same rows and values as `keymart query`, as Arrow: the decimal stays a decimal.
    let query =
        project.keymart(&["query", "SELECT count(*) AS n, sum(monetary) AS m FROM customer_rfm", "--format", "csv"]);
    assert_exit(&query, 0);
    let expected = stdout(&query);
    let (count, sum) = expected.lines().nth(1).unwrap().split_once(',').unwrap();
    let read = check("query");
    assert_eq!(read["rows"].to_string(), count, "{read}");
    assert_eq!(read["monetary"].as_str().unwrap(), sum, "{read}");
    let typed =
        project.keymart(&["query", "SELECT arrow_typeof(monetary) AS t FROM customer_rfm LIMIT 1", "--format", "csv"]);
    let arrow_type = stdout(&typed).lines().nth(1).unwrap().trim_matches('"').to_lowercase();
    assert_eq!(read["types"]["monetary"].as_str().unwrap().replace(' ', ""), arrow_type.replace(' ', ""), "{read}");
    assert_eq!(check("history")["rows"], serde_json::json!([["2024-06-01", 199], ["2024-06-02", 200]]));
    // Reads only, and the marts only; each refusal leaves the session serving.
    for (name, said) in [
        ("write", "`DROP TABLE …` is not allowed"),
        ("insert", "is not allowed"),
        ("set", "only reading statements"),
        ("unknown_table", "stg_orders"),
        ("file", "/etc/passwd"),
        ("malformed", "SEL"),
        ("timeout", "canceling statement due to statement timeout (SQLSTATE 57014)"),
    ] {
        let refused = check(name);
        assert!(refused["error"].is_string(), "{name}: {refused}");
        assert!(refused["message"].as_str().unwrap().contains(said), "{name}: {refused}");
    }
    let serving = check("still_serving");
    assert_eq!(serving["value"], "(200,)", "{serving}");
    assert_eq!(serving["attempts"], 1, "{serving}");
    let tables = check("objects")["tables"].clone();
    for mart in SAMPLE_MARTS {
        assert!(tables.as_array().unwrap().iter().any(|t| t == mart), "{mart} not in {tables}");
    }
    assert!(!tables.to_string().contains("stg_"), "{tables}");
    let fields = check("table_schema")["fields"].clone();
    assert!(fields.as_array().unwrap().iter().any(|f| f == "monetary"), "{fields}");
    // Queries over Flight are logged and counted like the others; the password is in no line.
    let log = server.log();
    assert!(log.lines().any(|l| l.contains("\"user\":\"analyst\"") && l.contains("\"rows\":200")), "{log}");
    assert!(!log.contains(PASSWORD));
}

#[test]
fn with_serve_tls_psql_and_adbc_verify_the_servers_certificate_and_read_over_tls() {
    let yaml = "warehouse: ./warehouse\nserve:\n  tls: {cert: certs/server.pem, key: certs/server.key}\n  users:\n    - {name: analyst, password: \"${KEYMART_TEST_SERVE_PASSWORD}\"}\n";
    let project = sample(("2024-06-01", "2024-06-01"), yaml);
    // A self-signed certificate for localhost, made as an operator would.
    std::fs::create_dir_all(project.path().join("certs")).unwrap();
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost", "-keyout", "certs/server.key", "-out", "certs/server.pem"])
        .current_dir(project.path())
        .output()
        .expect("openssl (Debian's openssl; .ci/run installs it)");
    assert!(made.status.success(), "{}", stderr(&made));
    // Listening beyond loopback: a client there must use TLS, one on loopback need not.
    let (server, flight) = Server::start_with_flight(&project, "0.0.0.0");
    let root = project.path().join("certs/server.pem");
    // Flight SQL over the same certificate: ADBC trusting it reads; a client in the clear is refused.
    let script = repo_root().join("tests/it/serve/flight.py");
    let checks = Checks::of(
        "flight.py (TLS)",
        &python(&script, &[&flight, "analyst", PASSWORD, root.to_str().unwrap()]),
        &server,
    );
    assert_eq!(checks.get("tls_query")["count"], 199, "{}", checks.report);
    assert!(checks.get("plaintext")["error"].is_string(), "{}", checks.report);
    let psql_at = |host: &str, sslmode: &str, command: &str| {
        Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", command])
            .arg(format!(
                "host={host} port={} dbname=keymart user=analyst sslmode={sslmode} sslrootcert={}",
                server.port,
                root.display()
            ))
            .env("PGPASSWORD", PASSWORD)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("run psql")
    };
    let psql = |sslmode: &str, command: &str| psql_at("localhost", sslmode, command);
    let outward = outward_address();
    let clear = psql_at(&outward, "disable", "SELECT 1");
    assert!(!clear.status.success(), "in the clear from {outward}: {}", stdout(&clear));
    assert!(stderr(&clear).contains("only over TLS (serve.tls)"), "{}", stderr(&clear));
    let encrypted = psql_at(&outward, "require", "SELECT count(*) FROM customer_rfm");
    assert_eq!(stdout(&encrypted).trim(), "199", "{}", stderr(&encrypted));
    let on_loopback = psql_at("127.0.0.1", "disable", "SELECT count(*) FROM customer_rfm");
    assert_eq!(stdout(&on_loopback).trim(), "199", "{}", stderr(&on_loopback));
    // verify-full: the certificate chains to the given root and names the host.
    let info = psql("verify-full", "\\conninfo");
    assert!(info.status.success(), "{}\n{}", stderr(&info), server.log());
    assert!(stdout(&info).contains("SSL connection (protocol: TLSv1."), "{}", stdout(&info));
    let count = psql("verify-full", "SELECT count(*) FROM customer_rfm");
    assert_eq!(stdout(&count).trim(), "199", "{}", stderr(&count));
    // A client that trusts another root refuses the server.
    let other = project.path().join("other.pem");
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-keyout", "other.key", "-out", "other.pem"])
        .current_dir(project.path())
        .output()
        .unwrap();
    assert!(made.status.success());
    std::fs::copy(&other, &root).unwrap();
    let refused = psql("verify-full", "SELECT 1");
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("certificate verify failed"), "{}", stderr(&refused));
}

/// A statement stopped at its timeout stops computing: the server is idle right after the 57014,
/// though an aggregate over a cross join never yields to tokio by itself (without the stop
/// points it went on for minutes on both cores).
#[test]
fn a_timed_out_cross_join_stops_computing_at_its_timeout() {
    let project = sample(("2024-06-01", "2024-06-01"), "warehouse: ./warehouse\n");
    let server = Server::start(&project, &[]);
    let cross_join =
        "SELECT sum(a.value * b.value) FROM generate_series(1, 600000) a CROSS JOIN generate_series(1, 300000) b";
    let output = server.psql(&["-c", "SET statement_timeout = '1s'", "-c", cross_join]);
    assert!(!output.status.success());
    assert!(stderr(&output).contains("canceling statement due to statement timeout"), "{}", stderr(&output));
    let busy_before = cpu_seconds(server.process.0.id());
    std::thread::sleep(Duration::from_secs(2));
    let busy = cpu_seconds(server.process.0.id()) - busy_before;
    assert!(busy < 0.5, "the server computed for {busy:.2} CPU seconds in the 2 s after the timeout");
    let count = server.psql(&["-A", "-t", "-c", "SELECT count(*) FROM customer_rfm"]);
    assert_eq!(stdout(&count).trim(), "199", "{}", stderr(&count));
}

/// User and system CPU time a process has used so far (/proc/PID/stat).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf reads a constant of the system.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn flight_sql_off_loopback_without_tls_is_a_configuration_error() {
    let project = sample(("2024-06-01", "2024-06-01"), "warehouse: ./warehouse\n");
    let output = project.keymart(&["serve", "--flight", "0.0.0.0:0"]);
    assert_exit(&output, 2);
    assert!(stderr(&output).contains("off loopback, Flight SQL needs serve.tls"), "{}", stderr(&output));
}

/// This host's address on its default route, which is not loopback: the source address of a UDP
/// socket connected (no packet is sent) to a documentation address.
fn outward_address() -> String {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("192.0.2.1:9").expect("a route beyond loopback (the TLS test connects from it)");
    let address = socket.local_addr().unwrap().ip();
    assert!(!address.is_loopback(), "{address}");
    address.to_string()
}

/// Run a Python client script; psycopg, SQLAlchemy and pandas must be importable.
fn python(script: &Path, args: &[&str]) -> Output {
    let check = Command::new("python3").args(["-c", "import psycopg, sqlalchemy, pandas"]).output();
    assert!(
        check.as_ref().is_ok_and(|o| o.status.success()),
        "the serve tests need Python's psycopg 3, SQLAlchemy 2 and pandas: \
         python3 -m pip install -r tests/it/serve/requirements.txt (.ci/run does): {:?}",
        check.map(|o| stderr(&o))
    );
    Command::new("python3").arg(script).args(args).output().expect("run python3")
}
