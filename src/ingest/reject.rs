//! A rejected row, as `rejects/<source>/` keeps it.

use std::sync::Arc;

/// One rejected row: where it was, what was wrong, what it said.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub file: Arc<str>,
    pub line: u64,
    pub column: Option<String>,
    pub reason: &'static str,
    pub detail: String,
    pub raw: String,
}
