//! `engine:` in keymart.yaml (and `--engine`): where a run's models execute. Parsed here, on the
//! floor `keymart check` validates; opening a session on it is the engine's business.

use url::Url;

/// Where a run's models execute (`engine:` in keymart.yaml, `--engine`).
#[derive(Debug, Clone, PartialEq)]
pub enum EngineSpec {
    Local,
    Ballista(SchedulerUrl),
}

impl EngineSpec {
    pub fn parse(text: &str) -> std::result::Result<EngineSpec, String> {
        match text.trim() {
            "local" => Ok(EngineSpec::Local),
            other => SchedulerUrl::parse(other).map(EngineSpec::Ballista),
        }
    }
}

/// `ballista://HOST:PORT`, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerUrl {
    pub host: String,
    pub port: u16,
}

impl SchedulerUrl {
    pub fn parse(text: &str) -> std::result::Result<SchedulerUrl, String> {
        let url = Url::parse(text).map_err(|e| format!("`{text}` is not an engine URL: {e}"))?;
        if url.scheme() != "ballista" {
            return Err(format!("`{text}`: expected `local` or `ballista://HOST:PORT`"));
        }
        match (url.host_str(), url.port()) {
            (Some(host), Some(port)) if url.path().is_empty() || url.path() == "/" => {
                Ok(SchedulerUrl { host: host.to_string(), port })
            }
            _ => Err(format!("`{text}`: expected `ballista://HOST:PORT` (the scheduler's gRPC port)")),
        }
    }
}

impl std::fmt::Display for SchedulerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ballista://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_urls_are_checked() {
        assert_eq!(
            SchedulerUrl::parse("ballista://10.0.0.5:50050"),
            Ok(SchedulerUrl { host: "10.0.0.5".into(), port: 50050 })
        );
        assert!(SchedulerUrl::parse("ballista://host").unwrap_err().contains("HOST:PORT"));
        assert!(SchedulerUrl::parse("spark://host:7077").unwrap_err().contains("expected `local`"));
        assert!(SchedulerUrl::parse("ballista://host:1/x").unwrap_err().contains("HOST:PORT"));
    }
}
