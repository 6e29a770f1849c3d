//! The project: `keymart.yaml` and `pipelines/*.yaml`, parsed into typed structs and validated as a
//! whole. Every problem is reported at once as `file:line:column: field: message`.

pub mod contract;
pub mod model;
mod validate;
pub mod yaml;

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use contract::{
    ColumnSpec, ColumnType, CsvOptions, Encoding, FileFormat, LoadMode, Reference, SourceContract, ValueOptions,
    XlsxOptions,
};
use model::ModelEntry;
pub use model::{DataTest, Materialized, Model, Scalar, Severity, TestKind, VarSpec};
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
    pub lock_ttl_seconds: u64,
    /// Object-store options for the warehouse and landing URLs (endpoint, region, retries…).
    #[serde(default)]
    pub storage: Located<crate::warehouse::StorageSettings>,
    /// Memory the query engine's sorts and aggregations may hold before they spill to disk.
    #[serde(default = "default_memory_limit_mb")]
    pub memory_limit_mb: u64,
    /// Where the models run: `local` (this process) or `ballista://HOST:PORT` (a Ballista cluster).
    #[serde(default)]
    pub engine: Option<Located<String>>,
    /// `keymart serve`: listeners, users, TLS and limits.
    #[serde(default)]
    pub serve: ServeSettings,
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
    /// The memory pool every query shares (spilling sorts and aggregations); default
    /// `memory_limit_mb`.
    pub memory_limit_mb: Option<u64>,
}

impl Default for ServeSettings {
    fn default() -> Self {
        ServeSettings {
            listen: None,
            http_listen: None,
            users: Vec::new(),
            tls: None,
            statement_timeout_seconds: 60,
            max_statement_timeout_seconds: 600,
            max_connections: 64,
            max_concurrent_queries: 4,
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

fn default_memory_limit_mb() -> u64 {
    1024
}

fn default_lock_ttl() -> u64 {
    120
}

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
            storage: Located::default(),
            memory_limit_mb: default_memory_limit_mb(),
            engine: None,
            serve: ServeSettings::default(),
        }
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { max_reject_ratio: Located::new(0.01, Position::default()) }
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
    /// Sources left out or incomplete because of parse errors (their checks wait for a fix).
    damaged: BTreeSet<String>,
}

impl Pipeline {
    pub fn source(&self, name: &str) -> Option<&SourceContract> {
        self.sources.iter().find(|s| s.name == name)
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
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
            let errors_before = diagnostics.0.len();
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
                let damaged = damaged_entries(&diagnostics.0[errors_before..], "sources");
                let vars = parsed.vars.0.into_iter().map(|(n, v)| (n, v.value)).collect();
                let models = resolve_models(root, &file, &parsed.models.0, &mut diagnostics);
                pipelines.push(Pipeline {
                    name,
                    file,
                    description: parsed.description,
                    sources,
                    vars,
                    models,
                    damaged,
                });
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
        std::time::Duration::from_secs(self.settings.lock_ttl_seconds.max(1))
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
        for spec in &entry.tests.0 {
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
    let (value, errors) = yaml::from_str_partial::<T>(text);
    for e in errors {
        diagnostics.push_yaml(file, e);
    }
    value
}

/// Names of the entries under `section` (`sources.<name>…`) that had parse errors.
fn damaged_entries(diagnostics: &[Diagnostic], section: &str) -> BTreeSet<String> {
    let prefix = format!("{section}.");
    diagnostics
        .iter()
        .filter_map(|d| d.field.strip_prefix(&prefix))
        .map(|rest| rest.split(['.', '[']).next().unwrap_or_default().to_string())
        .collect()
}

/// One problem in the project's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 0 when the problem is about the whole file.
    pub line: u64,
    pub column: u64,
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every configuration problem found, in file and line order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

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

    fn sorted(&self) -> Vec<&Diagnostic> {
        let mut all: Vec<&Diagnostic> = self.0.iter().collect();
        all.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        all
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration error{}:", self.0.len(), if self.0.len() == 1 { "" } else { "s" })?;
        for d in self.sorted() {
            write!(f, "\n{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}
