//! `storage:` in keymart.yaml: how the warehouse and landing stores are reached. What opening a
//! store does with these settings is the warehouse's business (`warehouse::store`).

use std::collections::BTreeMap;

use serde::Deserialize;

/// `storage:` in keymart.yaml.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// object_store configuration keys (`aws_endpoint`, `aws_region`, `aws_allow_http`,
    /// `google_service_account`, `azure_storage_account_name`, `timeout`, …); values may use `${VAR}`.
    pub options: BTreeMap<String, String>,
    /// Retries of a failed request before the run fails.
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout_seconds: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings { options: BTreeMap::new(), max_retries: 3, retry_timeout_seconds: 30 }
    }
}
