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
    _process: KilledOnDrop,
    port: u16,
    http_port: u16,
    log: std::path::PathBuf,
}

impl Server {
    fn start(project: &TestProject, env: &[(&str, &str)]) -> Server {
        let ports = free_ports(2);
        let log = project.path().join("serve.log");
        let child = keymart()
            .arg("--project")
            .arg(project.path())
            .args(["--log-format", "json", "serve", "--pg"])
            .arg(format!("127.0.0.1:{}", ports[0]))
            .arg("--http")
            .arg(format!("127.0.0.1:{}", ports[1]))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start keymart serve");
        let server = Server { _process: KilledOnDrop(child), port: ports[0], http_port: ports[1], log };
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
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (head.lines().next().unwrap_or_default().to_string(), body.to_string())
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

#[test]
fn python_clients_query_with_scram_and_get_each_error_as_its_sqlstate() {
    let yaml = "warehouse: ./warehouse\nserve:\n  memory_limit_mb: 16\n  users:\n    - {name: analyst, password: \"${KEYMART_TEST_SERVE_PASSWORD}\"}\n";
    let project = sample(("2024-06-01", "2024-06-02"), yaml);
    let server = Server::start(&project, &[("KEYMART_TEST_SERVE_PASSWORD", PASSWORD)]);

    let script = repo_root().join("tests/it/serve/clients.py");
    let raw = project.warehouse().join("raw/erp_orders/load_date=2024-06-01/part-0.parquet");
    assert!(raw.exists(), "{}", raw.display());
    let output = python(&script, &[&server.port.to_string(), "analyst", PASSWORD, &raw.display().to_string()]);
    let report = stdout(&output);
    assert!(
        output.status.success(),
        "clients.py failed:\n{report}\n{}\nserver log:\n{}",
        stderr(&output),
        server.log()
    );
    let checks: std::collections::HashMap<String, serde_json::Value> = report
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .map(|v| (v["check"].as_str().unwrap().to_string(), v))
        .collect();
    let check = |name: &str| checks.get(name).unwrap_or_else(|| panic!("no {name} in\n{report}")).clone();

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
