//! Opening an object store from a URL: local folders, S3, GCS, Azure, HTTP. Credentials and
//! endpoints come from the provider's usual environment variables and chains, overridden by
//! `storage.options` in keymart.yaml (object_store's own option names, `${VAR}` expanded).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ClientConfigKey, ObjectStore, ObjectStoreScheme, RetryConfig};
use url::Url;

pub use crate::config::StorageSettings;
use crate::config::expand_env;
use crate::error::{Error, Result, secrets};

impl StorageSettings {
    /// Problems with the options, for `keymart check` (unknown keys, unset variables).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, value) in &self.options {
            if !is_known_key(key) {
                problems.push(format!("unknown storage option `{key}` (see object_store's AmazonS3ConfigKey, GoogleConfigKey, AzureConfigKey, ClientConfigKey)"));
            }
            if let Err(e) = expand_env(value) {
                problems.push(format!("storage option `{key}`: {e}"));
            }
        }
        problems
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            max_retries: self.max_retries,
            retry_timeout: Duration::from_secs(self.retry_timeout_seconds),
            ..Default::default()
        }
    }

    /// Options that apply to this provider: its own keys and the generic client keys.
    fn options_for<K: FromStr>(&self) -> Result<Vec<(K, String)>> {
        let mut found = Vec::new();
        for (key, value) in &self.options {
            if let Ok(parsed) = key.parse::<K>() {
                let value = expand_env(value).map_err(|e| Error::Usage(format!("storage option `{key}`: {e}")))?;
                found.push((parsed, value));
            }
        }
        Ok(found)
    }
}

fn is_known_key(key: &str) -> bool {
    key.parse::<AmazonS3ConfigKey>().is_ok()
        || key.parse::<GoogleConfigKey>().is_ok()
        || key.parse::<AzureConfigKey>().is_ok()
        || key.parse::<ClientConfigKey>().is_ok()
}

/// The store for a URL and the key prefix of the URL's path inside it. Its credentials are
/// registered first, so no message about it (a builder's, a request's) can show them.
pub fn open(url: &Url, settings: &StorageSettings) -> Result<(Arc<dyn ObjectStore>, Path)> {
    register_secrets(url, settings);
    let shown = without_secrets(url);
    let (scheme, path) = ObjectStoreScheme::parse(url).map_err(|e| Error::Usage(format!("cannot use {shown}: {e}")))?;
    let bad = |e: object_store::Error| Error::Usage(format!("cannot use {shown}: {e}"));
    let store: Arc<dyn ObjectStore> = match scheme {
        // Folders left empty by deletes are removed, so replaced partitions leave no trace.
        ObjectStoreScheme::Local => Arc::new(LocalFileSystem::new().with_automatic_cleanup(true)),
        ObjectStoreScheme::Memory => Arc::new(InMemory::new()),
        ObjectStoreScheme::AmazonS3 => {
            let mut builder = AmazonS3Builder::from_env().with_url(url.as_str()).with_retry(settings.retry());
            // The run lock needs create-if-absent; S3 does it with If-None-Match.
            if !settings.options.keys().any(|k| k.ends_with("conditional_put")) {
                builder = builder.with_config(AmazonS3ConfigKey::ConditionalPut, "etag");
            }
            for (key, value) in settings.options_for::<AmazonS3ConfigKey>()? {
                builder = builder.with_config(key, value);
            }
            Arc::new(builder.build().map_err(bad)?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let mut builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str()).with_retry(settings.retry());
            for (key, value) in settings.options_for::<GoogleConfigKey>()? {
                builder = builder.with_config(key, value);
            }
            Arc::new(builder.build().map_err(bad)?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let mut builder = MicrosoftAzureBuilder::from_env().with_url(url.as_str()).with_retry(settings.retry());
            for (key, value) in settings.options_for::<AzureConfigKey>()? {
                builder = builder.with_config(key, value);
            }
            Arc::new(builder.build().map_err(bad)?)
        }
        ObjectStoreScheme::Http => {
            let mut builder =
                HttpBuilder::new().with_url(&url[..url::Position::BeforePath]).with_retry(settings.retry());
            for (key, value) in settings.options_for::<ClientConfigKey>()? {
                builder = builder.with_config(key, value);
            }
            Arc::new(builder.build().map_err(bad)?)
        }
        other => return Err(Error::Usage(format!("cannot use {shown}: {other:?} is not supported"))),
    };
    Ok((store, path))
}

/// The secret values a store opened from `url` with `settings` may use: the URL's own, the
/// credential options (after `${VAR}` expansion), and the providers' credential variables in
/// the environment, which the builders read (`…Builder::from_env`); URLs among the options and
/// variables (an endpoint with `user:password@`) give theirs.
fn register_secrets(url: &Url, settings: &StorageSettings) {
    secrets::register_url(url);
    let providers = ["AWS_", "AZURE_", "GOOGLE_", "OBJECT_STORE_"];
    let from_env = std::env::vars().filter(|(name, _)| providers.iter().any(|p| name.starts_with(p)));
    let options = settings.options.iter().filter_map(|(key, value)| Some((key.clone(), expand_env(value).ok()?)));
    for (name, value) in from_env.chain(options) {
        if secrets::is_secret_name(&name) {
            secrets::register(&value);
        }
        if let Ok(url) = Url::parse(&value) {
            secrets::register_url(&url);
        }
    }
}

/// A URL as it may be shown: user name, password and query (tokens, SAS signatures) removed.
pub fn without_secrets(url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.to_string().trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opened(url: &str) -> (String, String) {
        let settings = StorageSettings::default();
        let (store, path) = open(&Url::parse(url).unwrap(), &settings).unwrap();
        (store.to_string(), path.to_string())
    }

    #[test]
    fn cloud_url_forms_open_the_right_store() {
        // SAFETY of the assertions: building a store does not contact it.
        assert!(
            opened("s3://bucket/prefix/wh").0.starts_with("AmazonS3(bucket)"),
            "{:?}",
            opened("s3://bucket/prefix/wh")
        );
        assert_eq!(opened("s3://bucket/prefix/wh").1, "prefix/wh");
        assert!(opened("gs://bucket/wh").0.starts_with("GoogleCloudStorage(bucket)"), "{:?}", opened("gs://bucket/wh"));
        temp_env_azure(|| {
            assert!(opened("az://container/wh").0.contains("MicrosoftAzure"), "{:?}", opened("az://container/wh"));
            let (store, path) = opened("abfss://container@account.dfs.core.windows.net/wh");
            assert!(store.contains("MicrosoftAzure") && store.contains("account"), "{store}");
            assert_eq!(path, "wh");
        });
    }

    /// Azure needs an account name to build a client (from the URL or the environment).
    fn temp_env_azure(check: impl FnOnce()) {
        // SAFETY: tests in this module do not read this variable concurrently with other threads.
        unsafe { std::env::set_var("AZURE_STORAGE_ACCOUNT_NAME", "account") };
        check();
    }

    #[test]
    fn secrets_are_not_shown() {
        let url = Url::parse("s3://KEY:SECRET@bucket/wh?sig=abc").unwrap();
        assert_eq!(without_secrets(&url), "s3://bucket/wh");
    }

    #[test]
    fn options_are_checked_and_expanded() {
        let mut settings = StorageSettings::default();
        settings.options.insert("aws_endpoint".into(), "http://127.0.0.1:9000".into());
        settings.options.insert("aws_endpiont".into(), "x".into());
        settings.options.insert("aws_region".into(), "${KEYMART_TEST_UNSET_VARIABLE}".into());
        let problems = settings.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("unknown storage option `aws_endpiont`"));
        assert!(problems[1].contains("KEYMART_TEST_UNSET_VARIABLE is not set"));
    }
}
