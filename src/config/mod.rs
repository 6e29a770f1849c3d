//! The project: `keymart.yaml` and `pipelines/*.yaml`, parsed into typed structs and validated as a
//! whole. Every problem is reported at once as `file:line:column: field: message`.

mod alerts;
pub mod contract;
mod engine_spec;
pub mod model;
mod node;
mod storage;
mod validate;
pub mod yaml;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::error::{Diagnostic, Diagnostics};
pub use alerts::{AlertKind, AlertStatus, AlertTarget, MAX_ACCOUNTS as ALERT_MAX_ACCOUNTS, SmtpTls, is_loopback_host};
pub use contract::{
    ColumnSpec, ColumnType, CsvOptions, Encoding, FileFormat, LoadMode, Reference, SourceContract, ValueOptions,
    XlsxOptions,
};
pub use engine_spec::{EngineSpec, SchedulerUrl};
use model::ModelEntry;
pub use model::{DataTest, Materialized, Model, Scalar, Severity, TestKind, VarSpec};
pub use storage::StorageSettings;
use yaml::{Each, EachEntry, Located, Position, YamlError};

pub const PROJECT_FILE: &str = "keymart.yaml";
pub const PIPELINES_DIR: &str = "pipelines";

/// Suffix of the table holding every committed snapshot of a mart (`customer_rfm_history`).
pub const HISTORY_SUFFIX: &str = "_history";

/// `keymart.yaml`: where the warehouse and landing zone are, and project-wide defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Warehouse root: a path (relative to the project) or an object-store URL.
    #[serde(default)]
    pub warehouse: Option<String>,
    /// Landing root; `<warehouse>/landing` when absent.
    #[serde(default)]
    pub landing: Option<String>,
    /// Pipeline run when none is named; the only pipeline when there is just one.
    #[serde(default)]
    pub default_pipeline: Option<Located<String>>,
    #[serde(default)]
    pub defaults: Defaults,
    /// Seconds a run lock lives without renewal (a live run renews it every third of that).
    #[serde(default = "default_lock_ttl")]
    pub lock_ttl_seconds: Located<u64>,
    /// How long a mart's data file that no table version names any more (a replaced snapshot's, a
    /// failed or killed run's) is kept before it is deleted: longer than any query reading an
    /// older version runs, and than a run lock lives.
    #[serde(default = "default_file_retention")]
    pub file_retention_seconds: Located<u64>,
    /// Object-store options for the warehouse and landing URLs (endpoint, region, retries…).
    #[serde(default)]
    pub storage: Located<StorageSettings>,
    /// Memory the query engine's sorts and aggregations may hold before they spill to disk.
    #[serde(default = "default_memory_limit_mb")]
    pub memory_limit_mb: Located<u64>,
    /// Rows per row group of every Parquet file a run writes: a reader scans a file's row groups
    /// on as many cores as it has, and skips those its filter's statistics rule out.
    #[serde(default = "default_row_group_rows")]
    pub row_group_rows: Located<u64>,
    /// Where the models run: `local` (this process) or `ballista://HOST:PORT` (a Ballista cluster).
    #[serde(default)]
    pub engine: Option<Located<String>>,
    /// How long a run on a Ballista cluster waits for a live executor (before each model, and
    /// while one runs) before it fails.
    #[serde(default = "default_ballista_wait")]
    pub ballista_wait_seconds: Located<u64>,
    /// What one landing file may hold before ingest refuses it (exit 3).
    #[serde(default)]
    pub limits: Limits,
    /// The nightly HTML report's defaults (`keymart report`).
    #[serde(default)]
    pub report: ReportSettings,
    /// `keymart serve`: listeners, users, TLS and limits.
    #[serde(default)]
    pub serve: ServeSettings,
    /// Where the key accounts that slipped tonight are sent after the marts are published.
    #[serde(default)]
    pub alerts: Each<Located<AlertTarget>>,
}

/// `serve:` in keymart.yaml: how `keymart serve` listens, who may connect, and the bounds every
/// query runs under.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeSettings {
    /// The PostgreSQL listener (`--pg` overrides it); 127.0.0.1:5433 when absent.
    pub listen: Option<String>,
    /// The HTTP listener for `/healthz` (`--http` overrides it); 127.0.0.1:8080 when absent.
    pub http_listen: Option<String>,
    /// The Arrow Flight SQL listener (`--flight` overrides it); off when absent.
    pub flight_listen: Option<String>,
    /// Who may connect (SCRAM-SHA-256). With none, the server binds to loopback only.
    pub users: Vec<ServeUser>,
    /// Certificate and key (PEM files) for TLS (clients that ask for it get it).
    pub tls: Option<ServeTls>,
    /// A statement's default time limit; a session may `SET statement_timeout` up to the maximum.
    pub statement_timeout_seconds: u64,
    pub max_statement_timeout_seconds: u64,
    /// Connections beyond this are refused (SQLSTATE 53300).
    pub max_connections: usize,
    /// Queries running at once; more wait (within their statement timeout) for a slot.
    pub max_concurrent_queries: usize,
    /// Queries waiting for a slot at once; one more is refused at once (SQLSTATE 53000).
    pub max_queued_queries: usize,
    /// The memory pool every query shares (spilling sorts and aggregations); default
    /// `memory_limit_mb`.
    pub memory_limit_mb: Option<u64>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: None,
            http_listen: None,
            flight_listen: None,
            users: Vec::new(),
            tls: None,
            statement_timeout_seconds: 60,
            max_statement_timeout_seconds: 600,
            max_connections: 64,
            max_concurrent_queries: 4,
            max_queued_queries: 64,
            memory_limit_mb: None,
        }
    }
}

/// A user of `keymart serve`: `password` (usually `${ENV_VAR}`) or a PostgreSQL SCRAM verifier
/// (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, as `pg_authid` holds it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeUser {
    pub name: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub scram: Option<String>,
}

impl ServeUser {
    /// The password with `${VAR}` read from the environment; an unset variable is an error that
    /// names the variable (never the value).
    pub fn password(&self) -> Option<Result<String, String>> {
        self.password
            .as_deref()
            .map(|p| expand_env(p).map_err(|e| format!("serve.users `{}`: password: {e}", self.name)))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeTls {
    /// PEM certificate chain, relative to the project.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1), relative to the project.
    pub key: PathBuf,
}

/// `${VAR}` → the variable's value; an unset variable is an error (a silent empty credential
/// would fail later, far from its cause).
pub fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unclosed `${` (write `${VAR}`)".to_string())?;
        let name = &after[..end];
        out.push_str(&std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `report:` in keymart.yaml: the defaults of the nightly HTML report.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSettings {
    /// Language of the labels and number formats when `--lang` is not given.
    #[serde(default)]
    pub lang: ReportLang,
    /// Where `reports/` of the warehouse is served (e.g. `https://bi.example.com/keymart/reports`): links
    /// to a night's report are `<base_url>/as_of=D/index.html`. Validated as an http(s) URL.
    #[serde(default)]
    pub base_url: Option<Located<String>>,
}

/// The report's language: Chinese labels with 万/亿 and ¥, or English ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ReportLang {
    #[default]
    #[serde(rename = "zh")]
    Zh,
    #[serde(rename = "en")]
    En,
}

impl std::str::FromStr for ReportLang {
    type Err = String;
    fn from_str(text: &str) -> Result<ReportLang, String> {
        match text {
            "zh" => Ok(ReportLang::Zh),
            "en" => Ok(ReportLang::En),
            other => Err(format!("unknown report language `{other}` (zh or en)")),
        }
    }
}

fn default_memory_limit_mb() -> Located<u64> {
    Located { value: 1024, position: Position::default() }
}

/// The range `keymart check` accepts for `memory_limit_mb`: below it the marts' sorts spill
/// every batch; above it is more memory than any machine keymart runs on.
pub const MEMORY_LIMIT_MB: std::ops::RangeInclusive<u64> = 64..=1_048_576;

/// DuckDB's row groups are 122,880 rows; parquet-rs's default, 1Mi rows, made a 1M-customer mart
/// one row group, so every scan of it ran on one core (BENCHMARKS.md, "Row groups: 1Mi against
/// 128Ki rows").
pub const DEFAULT_ROW_GROUP_ROWS: u64 = 128 * 1024;

fn default_row_group_rows() -> Located<u64> {
    Located { value: DEFAULT_ROW_GROUP_ROWS, position: Position::default() }
}

/// The range `keymart check` accepts for `row_group_rows`: past it a row group of wide rows
/// would not fit a reader's memory.
pub const ROW_GROUP_ROWS: std::ops::RangeInclusive<u64> = 1..=16 * 1024 * 1024;

fn default_lock_ttl() -> Located<u64> {
    Located { value: 120, position: Position::default() }
}

fn default_file_retention() -> Located<u64> {
    Located { value: 7 * 24 * 3600, position: Position::default() }
}

/// The range `keymart check` accepts for `file_retention_seconds` (at least `lock_ttl_seconds` too).
pub const FILE_RETENTION_SECONDS: std::ops::RangeInclusive<u64> = 2..=366 * 24 * 3600;
fn default_ballista_wait() -> Located<u64> {
    Located { value: 60, position: Position::default() }
}

/// The range `keymart check` accepts for `ballista_wait_seconds`: an executor's first
/// heartbeat takes a second; past an hour a run without a cluster only holds the lock.
pub const BALLISTA_WAIT_SECONDS: std::ops::RangeInclusive<u64> = 1..=3600;

/// The range `keymart check` accepts for `lock_ttl_seconds`: a lock must outlive a renewal's
/// round trip, and a dead run's lock must not hold the warehouse for more than a day.
pub const LOCK_TTL_SECONDS: std::ops::RangeInclusive<u64> = 2..=86_400;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    /// Applies to sources that do not set their own `max_reject_ratio`.
    pub max_reject_ratio: Located<f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            warehouse: None,
            landing: None,
            default_pipeline: None,
            defaults: Defaults::default(),
            lock_ttl_seconds: default_lock_ttl(),
            file_retention_seconds: default_file_retention(),
            storage: Located::default(),
            memory_limit_mb: default_memory_limit_mb(),
            row_group_rows: default_row_group_rows(),
            engine: None,
            ballista_wait_seconds: default_ballista_wait(),
            limits: Limits::default(),
            report: ReportSettings::default(),
            serve: ServeSettings::default(),
            alerts: Each::default(),
        }
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { max_reject_ratio: Located::new(0.01, Position::default()) }
    }
}

/// `limits:` of keymart.yaml: what one landing file may hold. A file over a limit fails its source
/// with one line naming the file and where (exit 3, nothing of the source committed); no size,
/// count or dimension read from a file sizes an allocation before it is checked against these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bytes of one record: a CSV record or JSON line (a line break not found within it), or the
    /// XML of one sheet row of a workbook.
    pub max_record_bytes: Located<u64>,
    /// Fields of one CSV record or header; columns of a sheet (a cell right of it refuses the file).
    pub max_columns: Located<u64>,
    /// Records of one file (rows of a sheet).
    pub max_rows: Located<u64>,
    /// Bytes of one workbook file (a zip is read from its end, so a workbook is held whole).
    pub max_workbook_bytes: Located<u64>,
    /// Bytes one part of an .xlsx package inflates to (a sheet streams; the shared strings,
    /// styles and workbook parts are held whole).
    pub max_xlsx_part_bytes: Located<u64>,
    /// Inflated bytes per compressed byte of an .xlsx part, checked once a part is past 1 MiB.
    pub max_inflate_ratio: Located<u64>,
    /// Memory of the child process that reads an .xls, .xlsb or .ods workbook (calamine holds a
    /// sheet whole, sized by what the file declares).
    pub max_workbook_memory_bytes: Located<u64>,
}

impl Limits {
    pub const DEFAULT_MAX_RECORD_BYTES: u64 = 16 << 20;
    /// Excel's own: column XFD.
    pub const DEFAULT_MAX_COLUMNS: u64 = 16_384;
    pub const DEFAULT_MAX_ROWS: u64 = 1_000_000_000;
    pub const DEFAULT_MAX_WORKBOOK_BYTES: u64 = 1 << 30;
    pub const DEFAULT_MAX_XLSX_PART_BYTES: u64 = 4 << 30;
    pub const DEFAULT_MAX_INFLATE_RATIO: u64 = 100;
    pub const DEFAULT_MAX_WORKBOOK_MEMORY_BYTES: u64 = 4 << 30;

    /// Each limit with its name in keymart.yaml and the range `keymart check` accepts.
    pub fn each(&self) -> [(&'static str, &Located<u64>, std::ops::RangeInclusive<u64>); 7] {
        [
            ("max_record_bytes", &self.max_record_bytes, 1 << 10..=1 << 30),
            ("max_columns", &self.max_columns, 1..=1 << 20),
            ("max_rows", &self.max_rows, 1..=1 << 40),
            ("max_workbook_bytes", &self.max_workbook_bytes, 1 << 10..=16 << 30),
            ("max_xlsx_part_bytes", &self.max_xlsx_part_bytes, 1 << 10..=1 << 40),
            ("max_inflate_ratio", &self.max_inflate_ratio, 2..=10_000),
            ("max_workbook_memory_bytes", &self.max_workbook_memory_bytes, 256 << 20..=1 << 40),
        ]
    }
}

impl Default for Limits {
    fn default() -> Self {
        let at = |value| Located::new(value, Position::default());
        Limits {
            max_record_bytes: at(Self::DEFAULT_MAX_RECORD_BYTES),
            max_columns: at(Self::DEFAULT_MAX_COLUMNS),
            max_rows: at(Self::DEFAULT_MAX_ROWS),
            max_workbook_bytes: at(Self::DEFAULT_MAX_WORKBOOK_BYTES),
            max_xlsx_part_bytes: at(Self::DEFAULT_MAX_XLSX_PART_BYTES),
            max_inflate_ratio: at(Self::DEFAULT_MAX_INFLATE_RATIO),
            max_workbook_memory_bytes: at(Self::DEFAULT_MAX_WORKBOOK_MEMORY_BYTES),
        }
    }
}

/// `pipelines/<name>.yaml` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    sources: EachEntry<Located<SourceContract>>,
    /// Typed values bound to `$name` placeholders in the SQL (besides `$as_of`).
    #[serde(default)]
    vars: EachEntry<Located<VarSpec>>,
    #[serde(default)]
    models: Each<Located<ModelEntry>>,
    #[serde(default)]
    retention: Retention,
}

/// `retention:` in a pipeline: which of the marts' snapshots are kept. Each night, after its
/// marts are published, the older snapshots that neither rule keeps are removed from the marts'
/// tables (one commit per mart; their files go after `file_retention_seconds`). Without a rule,
/// every snapshot is kept.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retention {
    /// Keep the snapshots of the last N days (the night's own date is day 1).
    pub daily_days: Option<Located<u32>>,
    /// Keep month-end snapshots of the last M months (the night's month is month 1); all of them
    /// when absent.
    pub month_end_months: Option<Located<u32>>,
}

impl Retention {
    /// Whether the snapshot of `date` is kept after the night of `night`. Snapshots of the night
    /// and after it (a backfill of an old date) are always kept.
    pub fn keeps(&self, date: chrono::NaiveDate, night: chrono::NaiveDate) -> bool {
        use chrono::Datelike;
        let Some(days) = &self.daily_days else { return true };
        if date >= night || (night - date).num_days() < i64::from(days.value) {
            return true;
        }
        let month_end = date.succ_opt().is_some_and(|next| next.day() == 1);
        let months = |d: chrono::NaiveDate| i64::from(d.year()) * 12 + i64::from(d.month0());
        month_end && self.month_end_months.as_ref().is_none_or(|m| months(night) - months(date) < i64::from(m.value))
    }
}

/// A validated pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    /// Path relative to the project root, for messages.
    pub file: PathBuf,
    pub description: String,
    /// In YAML order.
    pub sources: Vec<SourceContract>,
    pub vars: Vec<(String, VarSpec)>,
    /// In file order (the order of `models:` entries, files sorted within a glob).
    pub models: Vec<Model>,
    pub retention: Retention,
}

impl Pipeline {
    pub fn source(&self, name: &str) -> Option<&SourceContract> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }

    /// Whether `name` is a model of this pipeline published as a mart.
    pub fn is_mart(&self, name: &str) -> bool {
        self.model(name).is_some_and(|m| m.materialized == Materialized::Mart)
    }

    /// Sources ordered so that a source comes after every source its columns reference.
    pub fn sources_in_reference_order(&self) -> Vec<&SourceContract> {
        self.sources_in_reference_waves().concat()
    }

    /// Sources in waves: each source references only sources of earlier waves (or itself), so
    /// the sources of one wave can be loaded side by side once the earlier waves are committed.
    pub fn sources_in_reference_waves(&self) -> Vec<Vec<&SourceContract>> {
        let mut waves: Vec<Vec<&SourceContract>> = Vec::new();
        let mut pending: Vec<&SourceContract> = self.sources.iter().collect();
        while !pending.is_empty() {
            let earlier = |name: &str| waves.iter().flatten().any(|o| o.name == name);
            let (ready, waiting): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|s| s.referenced_sources().all(|r| r == s.name || earlier(r)));
            if ready.is_empty() {
                // Validation refuses cycles; keep YAML order if one slipped through.
                waves.push(waiting);
                break;
            }
            waves.push(ready);
            pending = waiting;
        }
        waves
    }
}

/// A loaded and validated project.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    pub settings: Settings,
    pub pipelines: Vec<Pipeline>,
}

impl Project {
    /// Load and validate the project in `root`; every problem found, or the project.
    pub fn load(root: &Path) -> Result<Project, Diagnostics> {
        let mut diagnostics = Diagnostics::default();
        let settings_path = root.join(PROJECT_FILE);
        let settings: Settings = match std::fs::read_to_string(&settings_path) {
            Ok(text) => parse_file(&text, Path::new(PROJECT_FILE), &mut diagnostics).unwrap_or_default(),
            Err(e) => {
                diagnostics.file_error(PROJECT_FILE, format!("cannot read {}: {e}", settings_path.display()));
                Settings::default()
            }
        };

        let mut pipelines = Vec::new();
        for file in pipeline_files(root, &mut diagnostics) {
            let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let text = match std::fs::read_to_string(root.join(&file)) {
                Ok(text) => text,
                Err(e) => {
                    diagnostics.file_error(&file, format!("cannot read: {e}"));
                    continue;
                }
            };
            if let Some(parsed) = parse_file::<PipelineFile>(&text, &file, &mut diagnostics) {
                let sources = parsed
                    .sources
                    .0
                    .into_iter()
                    .map(|(source_name, contract)| SourceContract { name: source_name, ..contract.value })
                    .collect();
                let vars = parsed.vars.0.into_iter().map(|(n, v)| (n, v.value)).collect();
                let models = resolve_models(root, &file, &parsed.models.entries, &mut diagnostics);
                let (description, retention) = (parsed.description, parsed.retention);
                pipelines.push(Pipeline { name, file, description, sources, vars, models, retention });
            }
        }

        let project = Project { root: root.to_path_buf(), settings, pipelines };
        validate::project(&project, &mut diagnostics);
        if diagnostics.is_empty() { Ok(project) } else { Err(diagnostics) }
    }

    pub fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.pipelines.iter().find(|p| p.name == name)
    }

    /// The pipeline named, else `default_pipeline`, else the only one.
    pub fn select_pipeline(&self, name: Option<&str>) -> Result<&Pipeline, String> {
        let known = || self.pipelines.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
        let wanted =
            name.map(str::to_string).or_else(|| self.settings.default_pipeline.as_ref().map(|p| p.value.clone()));
        match wanted {
            Some(wanted) => {
                self.pipeline(&wanted).ok_or_else(|| format!("no pipeline named `{wanted}` (pipelines: {})", known()))
            }
            None if self.pipelines.len() == 1 => Ok(&self.pipelines[0]),
            None => Err(format!("several pipelines ({}): name one with --pipeline or set default_pipeline", known())),
        }
    }

    /// The warehouse given on the command line or in the environment, else keymart.yaml, else `./warehouse`.
    pub fn warehouse_url(&self, overridden: Option<&str>) -> String {
        overridden.map(str::to_string).or_else(|| self.settings.warehouse.clone()).unwrap_or_else(|| "warehouse".into())
    }

    pub fn lock_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.settings.lock_ttl_seconds.value.clamp(*LOCK_TTL_SECONDS.start(), *LOCK_TTL_SECONDS.end()),
        )
    }

    pub fn file_retention(&self) -> std::time::Duration {
        let seconds = self.settings.file_retention_seconds.value;
        std::time::Duration::from_secs(seconds.clamp(*FILE_RETENTION_SECONDS.start(), *FILE_RETENTION_SECONDS.end()))
    }

    pub fn max_reject_ratio(&self, source: &SourceContract) -> f64 {
        source.max_reject_ratio.as_ref().map(|r| r.value).unwrap_or(self.settings.defaults.max_reject_ratio.value)
    }
}

fn pipeline_files(root: &Path, diagnostics: &mut Diagnostics) -> Vec<PathBuf> {
    let dir = root.join(PIPELINES_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) => {
            diagnostics.file_error(PIPELINES_DIR, format!("cannot read the pipelines folder {}: {e}", dir.display()));
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .filter_map(|p| p.file_name().map(|n| Path::new(PIPELINES_DIR).join(n)))
        .collect();
    files.sort();
    if files.is_empty() {
        diagnostics.file_error(PIPELINES_DIR, "no pipeline: add pipelines/<name>.yaml".to_string());
    }
    files
}

/// Expand the `models:` entries into models: one per SQL file, named by the file stem.
fn resolve_models(root: &Path, file: &Path, entries: &[Located<ModelEntry>], d: &mut Diagnostics) -> Vec<Model> {
    let mut models: Vec<Model> = Vec::new();
    for entry in entries {
        let pattern = &entry.path;
        let full = root.join(&pattern.value);
        let mut paths: Vec<PathBuf> = match glob::glob(&full.to_string_lossy()) {
            Ok(found) => found.filter_map(|p| p.ok()).filter(|p| p.is_file()).collect(),
            Err(e) => {
                d.at(file, &pattern.position, format!("not a valid path or glob: {e}"));
                continue;
            }
        };
        paths.sort();
        if paths.is_empty() {
            d.at(file, &pattern.position, format!("no SQL file matches `{}`", pattern.value));
        }
        let mut tests = Vec::new();
        for spec in &entry.tests.entries {
            match spec.value.to_test() {
                Ok(test) => tests.push(test),
                Err(message) => d.at(file, &spec.position, message),
            }
        }
        for path in paths {
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            if let Some(other) = models.iter().find(|m| m.name == name) {
                let message = format!("model `{name}` ({}) is also {}", relative.display(), other.file.display());
                d.at(file, &pattern.position, message);
                continue;
            }
            let sql = match std::fs::read_to_string(&path) {
                Ok(sql) => sql,
                Err(e) => {
                    d.at(file, &pattern.position, format!("cannot read {}: {e}", relative.display()));
                    continue;
                }
            };
            models.push(Model {
                name,
                file: relative,
                sql,
                materialized: entry.materialized,
                key: entry.key.value.clone(),
                description: entry.description.clone(),
                tests: tests.clone(),
                allow_pii: entry.allow_pii.clone(),
                columns: entry.columns.clone(),
            });
        }
    }
    models
}

/// The file's value as far as it could be read (entries with errors left out), errors recorded.
fn parse_file<T: for<'de> Deserialize<'de>>(text: &str, file: &Path, diagnostics: &mut Diagnostics) -> Option<T> {
    let (value, errors) = yaml::read::<T>(text);
    for e in errors {
        diagnostics.push_yaml(file, e);
    }
    value
}

/// Constructors of configuration problems (the type lives in `error`, the floor below).
impl Diagnostics {
    pub fn at(&mut self, file: &Path, position: &Position, message: impl Into<String>) {
        self.0.push(Diagnostic {
            file: file.to_path_buf(),
            line: position.line,
            column: position.column,
            field: position.path.clone(),
            message: message.into(),
        });
    }

    fn file_error(&mut self, file: impl AsRef<Path>, message: String) {
        self.at(file.as_ref(), &Position::default(), message);
    }

    fn push_yaml(&mut self, file: &Path, error: YamlError) {
        let position = error.position.unwrap_or_default();
        self.at(file, &position, error.message);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SHIPPED_SETTINGS: &str = include_str!("../../keymart.yaml");
    const SHIPPED_PIPELINE: &str = include_str!("../../pipelines/nightly.yaml");

    /// What YAML parsers and typed loaders find hard: structure, anchors and aliases (nested
    /// aliases are the billion laughs), tags, numbers no type holds, dates that do not exist,
    /// unexpanded variables, a byte-order mark, NUL.
    #[rustfmt::skip]
    const TOKENS: &[&str] = &[
        ":", "- ", "{", "}", "[", "]", ",", "\"", "'", "\n", "\n  ", "\t", "#", "&a ", "*a", "<<: *a\n", "!!str ",
        "!!binary ", "? ", "|\n", ">-\n", "~", "null", ".nan", "-.inf", "99999999999999999999999", "-1",
        "0x7f", "1e400", "2024-02-30", "${NOPE}", "${", "%YAML 1.2\n---\n", "---\n", "...\n", "\u{feff}", "客户",
        "\0", "a: &a [b, b]\nc: &c [*a, *a, *a, *a]\nd: &d [*c, *c, *c, *c]\ne: [*d, *d, *d, *d]\n",
    ];

    /// The shipped file with up to five spans replaced by tokens (a span may cut a character).
    fn mutated(text: &'static str) -> impl Strategy<Value = String> {
        let edit = (0..=text.len(), 0..64usize, proptest::sample::select(TOKENS));
        proptest::collection::vec(edit, 1..6).prop_map(move |edits| {
            let mut bytes = text.as_bytes().to_vec();
            for (at, cut, token) in edits {
                let at = at.min(bytes.len());
                let end = (at + cut).min(bytes.len());
                bytes.splice(at..end, token.bytes());
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
        ))]

        /// The loader answers every document with a project or its diagnostics, never a panic.
        #[test]
        fn no_config_document_makes_the_loader_panic(
            settings in mutated(SHIPPED_SETTINGS),
            pipeline in mutated(SHIPPED_PIPELINE),
        ) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join(PROJECT_FILE), settings).unwrap();
            std::fs::create_dir(dir.path().join("pipelines")).unwrap();
            std::fs::write(dir.path().join("pipelines/nightly.yaml"), pipeline).unwrap();
            let _ = Project::load(dir.path());
        }
    }
}
