//! The library's one error type. The binary maps [`Error::kind`] to documented exit codes.

use std::path::{Path, PathBuf};

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub mod secrets;

/// Every variant's message passes through [`secrets::scrub`] when it is shown (`Display`): no
/// credential reaches stderr, a summary or the ledger, whatever store or engine the error came
/// from.
#[derive(Debug)]
pub enum Error {
    /// The project's YAML is invalid (every problem listed).
    Config(Diagnostics),

    /// A command was called with arguments that cannot work.
    Usage(String),

    /// Landing data could not be accepted: a file unreadable as declared, or more rejected rows
    /// than a source allows. The message lists each failed source.
    InputRejected(String),

    /// Another run holds the warehouse lock.
    Locked(String),

    /// The run lost the warehouse lock (taken over, released by an operator, or not renewed in
    /// time): it stopped before its next commit or delete.
    LockLost(String),

    /// A data test with severity `error` failed: the affected marts were not published.
    TestsFailed(String),

    /// A bounded wait ran out: the Ballista cluster had no live executor in time, or a query
    /// passed its `--timeout`.
    TimedOut(String),

    Storage {
        context: String,
        source: object_store::Error,
    },

    /// A mart's Delta table could not be read or committed; a commit that lost the race to
    /// another writer's is one (nothing of it was committed).
    Table {
        context: String,
        source: Box<deltalake::DeltaTableError>,
    },

    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    Parquet {
        context: String,
        source: datafusion::parquet::errors::ParquetError,
    },

    Arrow {
        context: String,
        source: datafusion::arrow::error::ArrowError,
    },

    /// The query engine failed (planning or executing SQL).
    Engine {
        context: String,
        source: Box<datafusion::error::DataFusionError>,
    },

    /// An alert could not be delivered (`keymart alerts`; a night only warns). The message names
    /// the targets, never a secret.
    AlertsFailed(String),

    /// A bug or an unexpected state: the message says which.
    Internal(String),
}

impl Error {
    /// The message as its parts say it, before scrubbing.
    fn unscrubbed(&self) -> String {
        match self {
            Error::Config(diagnostics) => diagnostics.to_string(),
            Error::Usage(message)
            | Error::InputRejected(message)
            | Error::Locked(message)
            | Error::LockLost(message)
            | Error::TestsFailed(message)
            | Error::TimedOut(message)
            | Error::AlertsFailed(message)
            | Error::Internal(message) => message.clone(),
            Error::Storage { context, source } => format!("{context}: {}", one_line(&source.to_string())),
            Error::Table { context, source } => format!("{context}: {}", one_line(&source.to_string())),
            Error::Io { path, source } => format!("{}: {source}", path.display()),
            Error::Parquet { context, source } => format!("{context}: {source}"),
            Error::Arrow { context, source } => format!("{context}: {source}"),
            Error::Engine { context, source } => format!("{context}: {source}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&secrets::scrub(&self.unscrubbed()))
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Storage { source, .. } => Some(source),
            Error::Table { source, .. } => Some(source.as_ref()),
            Error::Io { source, .. } => Some(source),
            Error::Parquet { source, .. } => Some(source),
            Error::Arrow { source, .. } => Some(source),
            Error::Engine { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// What kind of failure an error is; each kind has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Config,
    Usage,
    InputRejected,
    Locked,
    LockLost,
    TestsFailed,
    /// The warehouse or landing store could not be reached or refused access.
    Storage,
    TimedOut,
    RunFailed,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) => ErrorKind::Config,
            Error::Usage(_) => ErrorKind::Usage,
            Error::InputRejected(_) => ErrorKind::InputRejected,
            Error::Locked(_) => ErrorKind::Locked,
            Error::LockLost(_) => ErrorKind::LockLost,
            Error::TestsFailed(_) => ErrorKind::TestsFailed,
            Error::Storage { .. } => ErrorKind::Storage,
            Error::TimedOut(_) => ErrorKind::TimedOut,
            Error::Table { source, .. } if matches!(**source, deltalake::DeltaTableError::ObjectStore { .. }) => {
                ErrorKind::Storage
            }
            Error::Table { .. }
            | Error::Io { .. }
            | Error::Parquet { .. }
            | Error::Arrow { .. }
            | Error::Engine { .. }
            | Error::AlertsFailed(_)
            | Error::Internal(_) => ErrorKind::RunFailed,
        }
    }

    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }

    pub fn storage(context: impl Into<String>, source: object_store::Error) -> Error {
        Error::Storage { context: context.into(), source }
    }

    pub fn parquet(context: impl Into<String>, source: datafusion::parquet::errors::ParquetError) -> Error {
        Error::Parquet { context: context.into(), source }
    }

    pub fn arrow(context: impl Into<String>, source: datafusion::arrow::error::ArrowError) -> Error {
        Error::Arrow { context: context.into(), source }
    }
}

/// A query engine error with what keymart was doing; running out of the engine's memory says
/// which setting raises it (DataFusion's own advice names its setting, not keymart.yaml's).
pub fn engine_error(context: impl Into<String>, e: datafusion::error::DataFusionError) -> Error {
    let mut context = context.into();
    // A bounded wait that ran out inside the engine (a Ballista cluster without executors) keeps
    // its kind, and its exit code.
    if let datafusion::error::DataFusionError::External(inner) = e.find_root()
        && let Some(Error::TimedOut(message)) = inner.downcast_ref::<Error>()
    {
        return Error::TimedOut(format!("{context}: {message}"));
    }
    if matches!(e.find_root(), datafusion::error::DataFusionError::ResourcesExhausted(_)) {
        context.push_str(" (out of the query engine's memory: raise `memory_limit_mb` in keymart.yaml)");
    }
    Error::Engine { context, source: Box::new(e) }
}

/// A store's error on one line: S3 and Azure answer with XML documents, whose code and message
/// are what matters; the rest is folded.
fn one_line(message: &str) -> String {
    let tag = |name: &str| {
        let start = message.find(&format!("<{name}>"))? + name.len() + 2;
        let end = message[start..].find(&format!("</{name}>"))? + start;
        Some(message[start..end].to_string())
    };
    let head = message.split("<?xml").next().unwrap_or(message);
    let mut line: String = head.split_whitespace().collect::<Vec<_>>().join(" ");
    if let (Some(code), Some(text)) = (tag("Code"), tag("Message")) {
        line = format!("{} ({code}: {text})", line.trim_end_matches(':').trim_end());
    }
    line
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

#[cfg(test)]
mod tests {
    #[test]
    fn storage_errors_fold_to_one_line() {
        let message = "Error performing PUT http://h/b/k - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?>\n<Error><Code>InvalidAccessKeyId</Code><Message>The key does not exist.</Message></Error>";
        assert_eq!(
            super::one_line(message),
            "Error performing PUT http://h/b/k - Server returned non-2xx status code: 403 Forbidden (InvalidAccessKeyId: The key does not exist.)"
        );
        assert_eq!(super::one_line("a\n  b"), "a b");
    }
}
