//! The warehouse on S3: a real S3-protocol server (moto's server, from PyPI `moto[server]`, which
//! `.ci/run` installs) started on loopback for each test, with its own bucket.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::support::{
    DeltaLog, KilledOnDrop, SAMPLE_MARTS, TestProject, assert_exit, files_under, free_ports, keymart, manifest_files,
    repo_root, stderr, stdout, wait_for_port,
};

pub(crate) const SECRET: &str = "s3cr3t-never-shown";

/// A moto S3 server on a free loopback port, stopped when dropped.
pub(crate) struct S3Server {
    _child: KilledOnDrop,
    pub(crate) port: u16,
    /// moto's log: a line per request it answered (`"GET /bucket/key?… HTTP/1.1" 200 -`).
    log: tempfile::NamedTempFile,
}

impl S3Server {
    pub(crate) fn start(env: &[(&str, &str)]) -> S3Server {
        let installed =
            Command::new("python3").args(["-c", "import moto.server"]).output().is_ok_and(|o| o.status.success());
        assert!(installed, "moto is needed for the S3 tests: pip install 'moto[server]' (.ci/run does)");
        let port = free_ports(1)[0];
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("python3 runs");
        let server = S3Server { _child: KilledOnDrop(child), port, log };
        wait_for_port(port, || "the moto server".to_string());
        server
    }

    /// The requests moto answered while `act` ran: method and target of each, in order. moto
    /// logs a request once it has answered it, so the log is read once it stops growing.
    pub(crate) fn requests_during<T>(&self, act: impl FnOnce() -> T) -> (T, Vec<String>) {
        let settled = || {
            let mut last = self.requests().len();
            loop {
                std::thread::sleep(Duration::from_millis(300));
                let now = self.requests().len();
                if now == last {
                    return now;
                }
                last = now;
            }
        };
        let before = settled();
        let result = act();
        settled();
        (result, self.requests().split_off(before))
    }

    /// Every request moto answered so far: `METHOD /target`.
    fn requests(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        log.lines()
            .filter_map(|line| line.split('"').nth(1))
            .filter_map(|request| request.strip_suffix(" HTTP/1.1"))
            .map(str::to_string)
            .collect()
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Create a bucket with a plain (unsigned) request, as moto accepts.
    pub(crate) fn create_bucket(&self, bucket: &str) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "creating bucket {bucket}: {response}");
    }

    /// A client of the bucket, for putting extracts in and reading marts out.
    pub(crate) fn bucket(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .with_region("us-east-1")
                .with_access_key_id("testing")
                .with_secret_access_key(SECRET)
                .build()
                .unwrap(),
        )
    }
}

/// A TCP relay in front of the server that can be cut and restored: the server keeps its data
/// while keymart sees it go away.
pub(crate) struct Relay {
    port: u16,
    target: u16,
    running: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    pub(crate) fn start(target: u16) -> Relay {
        let relay = Relay {
            port: free_ports(1)[0],
            target,
            running: Arc::new(AtomicBool::new(false)),
            connections: Arc::default(),
        };
        relay.open();
        relay
    }

    pub(crate) fn open(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        self.running.store(true, Ordering::SeqCst);
        let (running, connections, target) = (self.running.clone(), self.connections.clone(), self.target);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if !running.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else { continue };
                connections.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                pump(server, client);
            }
        });
    }

    /// Refuse new connections and break the open ones.
    pub(crate) fn cut(&self) {
        self.running.store(false, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the accept loop so it exits
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Upload a local folder under a key prefix.
pub(crate) fn upload(store: &Arc<dyn ObjectStore>, dir: &Path, prefix: &str) {
    let rt = runtime();
    for relative in files_under(dir) {
        let key = Key::from(format!("{prefix}/{relative}"));
        rt.block_on(store.put(&key, std::fs::read(dir.join(&relative)).unwrap().into())).unwrap();
    }
}

/// Download every object under a key prefix into a local folder, keeping the keys' paths.
pub(crate) fn download(store: &Arc<dyn ObjectStore>, prefix: &str, dir: &Path) {
    for key in keys_under(store, prefix) {
        let path = dir.join(key.strip_prefix(prefix).unwrap().trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, get(store, &key).unwrap()).unwrap();
    }
}

pub(crate) fn get(store: &Arc<dyn ObjectStore>, key: &str) -> Option<Vec<u8>> {
    runtime().block_on(async { Some(store.get(&Key::from(key)).await.ok()?.bytes().await.ok()?.to_vec()) })
}

/// The shipped project with its warehouse and landing zone in the bucket.
pub(crate) fn s3_project(endpoint: &str, bucket: &str, extra_storage: &str) -> TestProject {
    let project = TestProject::shipped();
    let settings = format!(
        "warehouse: s3://{bucket}/wh\nlanding: s3://{bucket}/landing\nlock_ttl_seconds: 60\nstorage:\n  max_retries: 1\n  retry_timeout_seconds: 2\n  options:\n    aws_endpoint: {endpoint}\n    aws_allow_http: \"true\"\n    aws_region: us-east-1\n    aws_access_key_id: testing\n    aws_secret_access_key: ${{KEYMART_TEST_SECRET}}\n{extra_storage}"
    );
    std::fs::write(project.path().join("keymart.yaml"), settings).unwrap();
    project
}

pub(crate) fn keymart_s3(project: &TestProject, args: &[&str]) -> std::process::Output {
    keymart()
        .arg("--project")
        .arg(project.path())
        .arg("-q")
        .args(args)
        .env("KEYMART_TEST_SECRET", SECRET)
        .output()
        .unwrap()
}

/// A server with bucket `lake` holding the sample's landing zone under `landing/`.
pub(crate) fn sample_lake() -> (S3Server, Arc<dyn ObjectStore>) {
    let server = S3Server::start(&[]);
    server.create_bucket("lake");
    let bucket = server.bucket("lake");
    upload(&bucket, &repo_root().join("warehouse/landing"), "landing");
    (server, bucket)
}

/// Every key under a prefix of the bucket.
fn keys_under(bucket: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    runtime()
        .block_on(async { futures::TryStreamExt::try_collect::<Vec<_>>(bucket.list(Some(&Key::from(prefix)))).await })
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .collect()
}

/// A mart's snapshot of a date in a warehouse at `wh/` of the bucket, from its Delta log.
pub(crate) fn snapshot_on_bucket(bucket: &Arc<dyn ObjectStore>, mart: &str, day: &str) -> Option<serde_json::Value> {
    let log = format!("wh/marts/{mart}/_delta_log/");
    let commits = keys_under(bucket, &log)
        .into_iter()
        .filter_map(|key| {
            let version = key.strip_prefix(&log)?.strip_suffix(".json")?.parse().ok()?;
            Some((version, get(bucket, &key).unwrap()))
        })
        .collect();
    DeltaLog::replay(commits).snapshot(&format!("marts/{mart}"), day)
}

/// The committed file of a mart and date in a warehouse at `wh/` of the bucket.
pub(crate) fn committed_on_bucket(bucket: &Arc<dyn ObjectStore>, mart: &str, day: &str) -> Vec<u8> {
    let manifest = snapshot_on_bucket(bucket, mart, day).unwrap_or_else(|| panic!("{mart} {day} not committed"));
    manifest_files(&manifest).iter().flat_map(|f| get(bucket, &format!("wh/{f}")).expect(f)).collect()
}

const DAYS: [&str; 3] = ["2024-06-01", "2024-06-02", "2024-06-03"];
#[test]
fn the_sample_on_s3_publishes_the_same_bytes_as_on_local_disk() {
    let (server, bucket) = sample_lake();
    let on_s3 = s3_project(&server.endpoint(), "lake", "");
    let output = keymart_s3(&on_s3, &["run", "--from", DAYS[0], "--to", DAYS[2]]);
    assert_exit(&output, 0);

    let local = TestProject::shipped();
    crate::support::copy_dir(&repo_root().join("warehouse/landing"), &local.landing());
    assert_exit(&local.keymart(&["run", "--from", DAYS[0], "--to", DAYS[2]]), 0);

    for day in DAYS {
        for mart in SAMPLE_MARTS {
            let manifest = snapshot_on_bucket(&bucket, mart, day).unwrap();
            let local_manifest = local.snapshot(mart, day).unwrap();
            assert_eq!(manifest["rows"], local_manifest["rows"], "{mart} {day}");
            assert_eq!(manifest["schema_hash"], local_manifest["schema_hash"], "{mart} {day}");
            assert!(
                committed_on_bucket(&bucket, mart, day) == local.committed_file(mart, day),
                "{mart} {day}: the S3 file differs from the local one"
            );
        }
    }
    // Queries and the ledger work against the bucket too; the secret is nowhere in the ledger.
    let query = keymart_s3(&on_s3, &["query", "SELECT count(*) AS n FROM customer_rfm", "--format", "csv"]);
    assert_exit(&query, 0);
    assert_eq!(stdout(&query).trim(), "n\n200");
    let runs = keymart_s3(&on_s3, &["runs"]);
    assert_exit(&runs, 0);
    let ledger_key =
        format!("wh/_runs/{}.json", stdout(&runs).lines().nth(1).unwrap().split_whitespace().next().unwrap());
    let ledger = String::from_utf8(get(&bucket, &ledger_key).unwrap()).unwrap();
    assert!(!ledger.contains(SECRET));
    assert!(ledger.contains("\"requests\""), "request counts are recorded");
}

#[test]
fn a_second_run_on_the_same_bucket_is_locked_out() {
    let server = S3Server::start(&[]);
    server.create_bucket("lake");
    upload(&server.bucket("lake"), &repo_root().join("warehouse/landing"), "landing");
    let project = s3_project(&server.endpoint(), "lake", "");
    let (mut first, marker) = project.start_paused(&["--as-of", DAYS[0]], &[("KEYMART_TEST_SECRET", SECRET)]);
    let second = keymart_s3(&project, &["run", "--as-of", DAYS[1]]);
    assert_exit(&second, 4);
    assert!(stderr(&second).contains("the warehouse s3://lake/wh is locked by run"), "{}", stderr(&second));
    std::fs::remove_file(&marker).unwrap();
    assert!(first.wait().unwrap().success(), "the first run finishes once resumed");
}

#[test]
fn storage_lost_during_publish_fails_cleanly_and_the_rerun_completes() {
    let server = S3Server::start(&[]);
    server.create_bucket("lake");
    let bucket = server.bucket("lake");
    upload(&bucket, &repo_root().join("warehouse/landing"), "landing");
    let relay = Relay::start(server.port);
    let project = s3_project(&relay.endpoint(), "lake", "");
    let (child, marker) = project.start_paused(&["--as-of", DAYS[0]], &[("KEYMART_TEST_SECRET", SECRET)]);
    relay.cut();
    std::fs::remove_file(&marker).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_exit(&output, 6);
    let message = stderr(&output);
    assert!(
        message.contains(&relay.endpoint().replace("http://", "")) || message.contains("s3://lake/wh"),
        "{message}"
    );
    assert!(!message.contains(SECRET), "{message}");
    assert_eq!(message.trim().lines().count(), 1, "one line: {message}");

    // Nothing committed points at files that are not there.
    let keys = keys_under(&bucket, "wh/marts");
    for mart in SAMPLE_MARTS {
        for day in DAYS {
            for file in snapshot_on_bucket(&bucket, mart, day).map(|s| manifest_files(&s)).unwrap_or_default() {
                assert!(keys.contains(&format!("wh/{file}")), "the log of {mart} names a missing file {file}");
            }
        }
    }

    relay.open();
    // The crashed run's lock is still there (its process lived on): the operator clears it.
    assert_exit(&keymart_s3(&project, &["unlock"]), 0);
    assert_exit(&keymart_s3(&project, &["run", "--as-of", DAYS[0]]), 0);
    for mart in SAMPLE_MARTS {
        assert!(snapshot_on_bucket(&bucket, mart, DAYS[0]).is_some(), "{mart}");
    }
}

#[test]
fn storage_problems_are_one_line_naming_the_url_with_exit_code_6() {
    // Wrong credentials: moto checks them once its first request (the bucket) is made.
    let strict = S3Server::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]);
    strict.create_bucket("lake");
    let unreachable = format!("http://127.0.0.1:{}", free_ports(1)[0]);
    let open = S3Server::start(&[]);
    let cases = [
        ("wrong credentials", s3_project(&strict.endpoint(), "lake", ""), "s3://lake/wh"),
        ("missing bucket", s3_project(&open.endpoint(), "nothere", ""), "s3://nothere/wh"),
        ("unreachable endpoint", s3_project(&unreachable, "lake", ""), "s3://lake/wh"),
    ];
    for (what, project, url) in cases {
        let output = keymart_s3(&project, &["run", "--as-of", DAYS[0]]);
        assert_exit(&output, 6);
        let message = stderr(&output);
        assert_eq!(message.trim().lines().count(), 1, "{what}: one line: {message}");
        assert!(message.contains(url), "{what}: names {url}: {message}");
        assert!(!message.contains(SECRET), "{what}: {message}");
    }
}

/// Credentials given every way a store takes them, each a distinct string.
const URL_PASSWORD: &str = "urlpass-0451-never-shown";
const URL_SIGNATURE: &str = "urlsig-0451-never-shown";
const ENDPOINT_PASSWORD: &str = "endpointpass-0451-never-shown";
const OPTION_SECRET: &str = "optionsecret-0451-never-shown";
const EXPANDED_TOKEN: &str = "expandedtoken-0451-never-shown";
const ENV_ACCESS_KEY: &str = "ENVKEY0451NEVERSHOWN";
const ENV_SECRET: &str = "envsecret-0451-never-shown";
const ALL_SECRETS: [&str; 7] =
    [URL_PASSWORD, URL_SIGNATURE, ENDPOINT_PASSWORD, OPTION_SECRET, EXPANDED_TOKEN, ENV_ACCESS_KEY, ENV_SECRET];

/// On every storage failure path (wrong credentials, missing bucket, unreachable endpoint), for
/// the warehouse and for the landing zone, with a secret in the URL (`user:password@`, a
/// signature), in the endpoint URL, in `storage.options` (as written and from `${VAR}`) and in
/// the environment: none reaches stdout, stderr (logs included) or the ledger, and the error
/// still names the store that failed.
#[test]
fn no_credential_reaches_any_output_on_any_storage_failure() {
    let strict = S3Server::start(&[("INITIAL_NO_AUTH_ACTION_COUNT", "1")]);
    strict.create_bucket("lake");
    let open = S3Server::start(&[]);
    let unreachable = format!("127.0.0.1:{}", free_ports(1)[0]);
    let failures = [
        ("wrong credentials", strict.endpoint().replace("http://", ""), "lake"),
        ("missing bucket", open.endpoint().replace("http://", ""), "nothere"),
        ("unreachable endpoint", unreachable, "lake"),
    ];
    for (failure, host, bucket) in failures {
        let with_secrets = format!("s3://urluser:{URL_PASSWORD}@{bucket}");
        let signed = format!("?X-Amz-Signature={URL_SIGNATURE}");
        let endpoint = format!("http://{host}");
        // An endpoint with `user:password@` fails every request before it is sent: a case of its own.
        let endpoint_with_secret = format!("http://epuser:{ENDPOINT_PASSWORD}@{host}");
        for (store, warehouse, landing, endpoint, named) in [
            ("warehouse", format!("{with_secrets}/wh{signed}"), format!("s3://{bucket}/landing"), &endpoint, "s3://"),
            ("landing", "./warehouse".to_string(), format!("{with_secrets}/landing{signed}"), &endpoint, "landing"),
            ("landing", "./warehouse".to_string(), format!("s3://{bucket}/landing"), &endpoint_with_secret, "landing"),
        ] {
            let project = TestProject::shipped();
            let settings = format!(
                "warehouse: \"{warehouse}\"\nlanding: \"{landing}\"\nstorage:\n  max_retries: 1\n  retry_timeout_seconds: 2\n  options:\n    aws_endpoint: \"{endpoint}\"\n    aws_allow_http: \"true\"\n    aws_region: us-east-1\n    aws_secret_access_key: {OPTION_SECRET}\n    aws_session_token: ${{KEYMART_TEST_TOKEN}}\n"
            );
            std::fs::write(project.path().join("keymart.yaml"), settings).unwrap();
            let output = keymart()
                .arg("--project")
                .arg(project.path())
                .args(["-v", "run", "--as-of", DAYS[0]])
                .env("KEYMART_TEST_TOKEN", EXPANDED_TOKEN)
                .env("AWS_ACCESS_KEY_ID", ENV_ACCESS_KEY)
                .env("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
                .output()
                .unwrap();
            let password = if endpoint.contains('@') { ", the endpoint with a password" } else { "" };
            let case = format!("{failure}, {store} on S3{password}");
            let code = output.status.code();
            assert!(matches!(code, Some(3 | 6)), "{case}: exit {code:?}\n{}", stderr(&output));
            let error = stderr(&output).lines().filter(|l| l.starts_with("error: ")).collect::<Vec<_>>().join("\n");
            assert!(error.contains(named) && error.contains(bucket), "{case}: names the store: {error}");
            let mut outputs = vec![("stdout", stdout(&output)), ("stderr", stderr(&output))];
            for file in files_under(&project.warehouse().join("_runs")) {
                let text = std::fs::read_to_string(project.warehouse().join("_runs").join(&file)).unwrap_or_default();
                outputs.push(("ledger", text));
            }
            if store == "landing" {
                assert!(outputs.iter().any(|(what, _)| *what == "ledger"), "{case}: a ledger is written");
            }
            for (what, text) in &outputs {
                for secret in ALL_SECRETS {
                    assert!(!text.contains(secret), "{case}: {secret} in {what}:\n{text}");
                }
            }
        }
    }
}
