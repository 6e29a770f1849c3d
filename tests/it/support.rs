//! Shared test helpers: a throw-away project around the real `keymart` binary.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tempfile::TempDir;

/// The repository root (where the shipped project lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn keymart() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keymart"));
    cmd.env_remove("KEYMART_WAREHOUSE").env_remove("KEYMART_LANDING").env("NO_COLOR", "1");
    cmd
}

/// A project in a temporary folder: keymart.yaml, one pipeline, an embedded warehouse.
pub struct TestProject {
    pub dir: TempDir,
}

impl TestProject {
    /// Add `lines` at the end of the project's file `relative` (a setting, a pipeline's retention).
    pub fn append(&self, relative: &str, lines: &str) {
        let file = self.path().join(relative);
        let text = std::fs::read_to_string(&file).unwrap();
        std::fs::write(&file, format!("{text}\n{lines}")).unwrap();
    }

    /// A project whose only pipeline is `pipeline_yaml`.
    pub fn new(pipeline_yaml: &str) -> TestProject {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("keymart.yaml"), "warehouse: ./warehouse\n").unwrap();
        std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
        std::fs::write(dir.path().join("pipelines/test.yaml"), pipeline_yaml).unwrap();
        TestProject { dir }
    }

    /// A copy of the shipped project (keymart.yaml, pipelines/, sql/), with an empty warehouse.
    pub fn shipped() -> TestProject {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(repo_root().join("keymart.yaml"), dir.path().join("keymart.yaml")).unwrap();
        copy_dir(&repo_root().join("pipelines"), &dir.path().join("pipelines"));
        copy_dir(&repo_root().join("sql"), &dir.path().join("sql"));
        TestProject { dir }
    }

    /// Write a project file (SQL model, extra pipeline…), path relative to the project.
    pub fn write(&self, relative: &str, content: &str) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn warehouse(&self) -> PathBuf {
        self.path().join("warehouse")
    }

    pub fn landing(&self) -> PathBuf {
        self.warehouse().join("landing")
    }

    /// Write a landing file (path relative to the landing root).
    pub fn land(&self, relative: &str, bytes: impl AsRef<[u8]>) {
        let path = self.landing().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub fn keymart(&self, args: &[&str]) -> Output {
        keymart().arg("--project").arg(self.path()).arg("-q").args(args).output().expect("run keymart")
    }

    pub fn ingest(&self, as_of: &str) -> Output {
        self.keymart(&["ingest", "--as-of", as_of])
    }

    /// Start `keymart run <args>` paused just before its commit (KEYMART_PAUSE_AT) and wait
    /// until it is there; removing the returned marker file lets it go on.
    pub fn start_paused(&self, args: &[&str], env: &[(&str, &str)]) -> (Child, PathBuf) {
        self.start_paused_at("before_commit", args, env)
    }

    /// `keymart run ARGS` paused at a point of `src/failpoint.rs` (`before_commit`: its first
    /// mart's files written, not committed; `after_commit`: its first mart committed;
    /// `model_started`: its first model's plan started, not yet read).
    pub fn start_paused_at(&self, point: &str, args: &[&str], env: &[(&str, &str)]) -> (Child, PathBuf) {
        let marker = self.path().join("paused");
        // An earlier paused run that was killed left its marker.
        let _ = std::fs::remove_file(&marker);
        let child = keymart()
            .arg("--project")
            .arg(self.path())
            .args(["-q", "run"])
            .args(args)
            .envs(env.iter().copied())
            .env("KEYMART_PAUSE_AT", format!("{point}:{}", marker.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start keymart");
        let started = Instant::now();
        while !marker.exists() {
            assert!(started.elapsed() < Duration::from_secs(120), "the run never reached its commit");
            std::thread::sleep(Duration::from_millis(50));
        }
        (child, marker)
    }

    /// Rows of a Parquet file under the warehouse, each as display strings by column.
    pub fn parquet_rows(&self, relative: &str) -> Vec<Vec<String>> {
        rows(&read_parquet(&self.warehouse().join(relative)))
    }

    /// The bytes of a mart's committed files for a date (every file its Delta log names for
    /// the date, in key order, each of which must exist).
    pub fn committed_file(&self, mart: &str, day: &str) -> Vec<u8> {
        let manifest = self.snapshot(mart, day).unwrap_or_else(|| panic!("{mart} has no committed snapshot of {day}"));
        manifest_files(&manifest)
            .iter()
            .flat_map(|f| std::fs::read(self.warehouse().join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
            .collect()
    }

    /// A mart's committed snapshot of a date as the test reads its Delta log (`DeltaLog`).
    pub fn snapshot(&self, mart: &str, day: &str) -> Option<serde_json::Value> {
        DeltaLog::read_dir(&self.warehouse().join(format!("marts/{mart}"))).snapshot(&format!("marts/{mart}"), day)
    }

    /// The run ledger that started last.
    pub fn last_ledger(&self) -> serde_json::Value {
        let runs = self.warehouse().join("_runs");
        let ledgers = std::fs::read_dir(&runs)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| serde_json::from_slice::<serde_json::Value>(&std::fs::read(p).unwrap()).unwrap());
        ledgers.max_by_key(|l| l["started_at"].as_str().unwrap().to_string()).expect("a ledger")
    }
}

/// The marts the shipped pipeline publishes.
pub const SAMPLE_MARTS: [&str; 9] = [
    "model_parameters",
    "customer_rfm",
    "service_quality",
    "customer_value",
    "customer_churn",
    "key_accounts",
    "key_account_history",
    "segment_migration",
    "customer_profile",
];

/// A server process killed and reaped when dropped, so a failing test leaves none behind.
pub struct KilledOnDrop(pub Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `n` distinct loopback ports nothing listens on now (bound all at once, so none is handed out
/// twice).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// Wait until something listens on a loopback port; after a minute, fail with `what` (which may
/// read the server's log).
pub fn wait_for_port(port: u16, what: impl Fn() -> String) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "nothing listens on {port}: {}", what());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every file under a folder, as paths relative to it, sorted (none when it does not exist).
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

pub fn read_parquet(path: &Path) -> Vec<RecordBatch> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap().map(|b| b.unwrap()).collect()
}

/// Every row as display strings (`NULL` for nulls), in file order.
pub fn rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            out.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| if c.is_null(row) { "NULL".to_string() } else { array_value_to_string(c, row).unwrap() })
                    .collect(),
            );
        }
    }
    out
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Assert an exit code, showing the output when it differs.
#[track_caller]
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        stdout(output),
        stderr(output)
    );
}

/// A mart's Delta log replayed by the test itself, not by delta-rs: the JSON commits in version
/// order, files added minus files removed, and the newest metadata. A second reading of what
/// keymart committed, by the protocol's text rather than keymart's code.
#[derive(Debug, Default)]
pub struct DeltaLog {
    /// Live data files (relative to the table) and the `as_of` partition each is in.
    pub files: std::collections::BTreeMap<String, String>,
    /// The table's configuration (`metaData.configuration`) at the newest version.
    pub configuration: serde_json::Map<String, serde_json::Value>,
    pub version: Option<u64>,
}

impl DeltaLog {
    /// Replay commits given as (version, JSON lines), in any order.
    pub fn replay(mut commits: Vec<(u64, Vec<u8>)>) -> DeltaLog {
        commits.sort_by_key(|(version, _)| *version);
        let mut log = DeltaLog::default();
        for (version, body) in commits {
            for line in String::from_utf8(body).unwrap().lines().filter(|l| !l.trim().is_empty()) {
                let action: serde_json::Value = serde_json::from_str(line).unwrap();
                let decode = |p: &serde_json::Value| percent_decode(p.as_str().expect("a path"));
                if let Some(add) = action.get("add") {
                    let as_of = add["partitionValues"]["as_of"].as_str().unwrap_or_default().to_string();
                    log.files.insert(decode(&add["path"]), as_of);
                } else if let Some(remove) = action.get("remove") {
                    log.files.remove(&decode(&remove["path"]));
                } else if let Some(metadata) = action.get("metaData") {
                    log.configuration = metadata["configuration"].as_object().cloned().unwrap_or_default();
                }
            }
            log.version = Some(version);
        }
        log
    }

    /// The commits of a table folder on local disk.
    pub fn read_dir(table: &Path) -> DeltaLog {
        let Ok(entries) = std::fs::read_dir(table.join("_delta_log")) else { return DeltaLog::default() };
        let commits = entries
            .map(|e| e.unwrap().path())
            .filter_map(|path| {
                let version = path.file_name()?.to_str()?.strip_suffix(".json")?.parse().ok()?;
                Some((version, std::fs::read(&path).unwrap()))
            })
            .collect();
        DeltaLog::replay(commits)
    }

    /// A date's snapshot in the shape keymart's ledger and the tests use: `files` (relative to
    /// the warehouse, sorted) and the facts keymart recorded (`run_id`, `rows`, `inputs`,
    /// `committed_at`, `version`, `schema_hash`); `None` when the log has no file of that date.
    pub fn snapshot(&self, table_dir: &str, day: &str) -> Option<serde_json::Value> {
        let files: Vec<String> = self
            .files
            .iter()
            .filter(|(_, as_of)| *as_of == day)
            .map(|(path, _)| format!("{table_dir}/{path}"))
            .collect();
        if files.is_empty() {
            return None;
        }
        let facts = self.configuration.get(&format!("keymart.snapshot.{day}")).expect("facts of a committed date");
        let mut snapshot: serde_json::Value = serde_json::from_str(facts.as_str().unwrap()).unwrap();
        snapshot["files"] = serde_json::json!(files);
        Some(snapshot)
    }
}

/// `%XX` escapes decoded, as the Delta protocol encodes paths.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// The files a snapshot names (at least one: a snapshot without files is a bug).
pub fn manifest_files(manifest: &serde_json::Value) -> Vec<String> {
    let files: Vec<String> =
        manifest["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
    assert!(!files.is_empty(), "a manifest without files: {manifest}");
    files
}

/// Run a command to its end, failing the test (and killing the command) if it is still running
/// after `limit`: for commands whose bug would be to wait forever.
pub fn output_within(mut command: Command, limit: Duration) -> Output {
    let child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start the command");
    child_output_within(child, limit)
}

/// The output of a child started with piped stdout and stderr; killed, and the test failed, if
/// it has not exited after `limit`.
pub fn child_output_within(mut child: Child, limit: Duration) -> Output {
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let stdout = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut out, &mut bytes).map(|_| bytes).unwrap_or_default()
    });
    let stderr = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut bytes).map(|_| bytes).unwrap_or_default()
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}
