//! `alerts:` in keymart.yaml: where the key accounts that slipped tonight are sent. Sending is the
//! alerts stage's business (`crate::alerts`); this file holds the settings and their checks.
//!
//! Secrets (webhook URLs with their tokens, the DingTalk signing secret, the SMTP password) are
//! written `${VAR}` and read from the environment when a message is sent: an unset variable is a
//! failed delivery naming the variable, not a configuration error that would stop the night.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::Diagnostics;
use super::yaml::{Located, Position};

/// One target of `alerts:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTarget {
    /// What the ledger remembers deliveries by: letters, digits, `-` and `_`, unique.
    pub name: Located<String>,
    pub kind: Located<AlertKind>,
    /// The status changes sent; `[at_risk, lost]` when absent.
    #[serde(default = "default_on")]
    pub on: Located<Vec<AlertStatus>>,
    /// The webhook (all kinds but `email`), usually `${VAR}` or with `${VAR}` for its token.
    #[serde(default)]
    pub url: Option<Located<String>>,
    /// DingTalk's signing secret (`SEC…`), as `${VAR}`: requests are signed when it is set.
    #[serde(default)]
    pub secret: Option<Located<String>>,
    /// Extra request headers of a generic webhook (`Authorization: "Bearer ${TOKEN}"`).
    #[serde(default)]
    pub headers: Option<Located<BTreeMap<String, String>>>,
    /// SMTP server of an `email` target.
    #[serde(default)]
    pub host: Option<Located<String>>,
    /// SMTP port; 587 with STARTTLS, 465 with TLS, 25 without.
    #[serde(default)]
    pub port: Option<Located<u16>>,
    #[serde(default)]
    pub tls: Located<SmtpTls>,
    #[serde(default)]
    pub user: Option<Located<String>>,
    /// SMTP password, as `${VAR}`.
    #[serde(default)]
    pub password: Option<Located<String>>,
    #[serde(default)]
    pub from: Option<Located<String>>,
    #[serde(default)]
    pub to: Option<Located<Vec<String>>>,
    /// Accounts named in a message (the most valuable), the others counted ("and K more").
    #[serde(default = "default_max_accounts")]
    pub max_accounts: Located<u64>,
    /// Tries of a delivery before it is recorded as failed.
    #[serde(default = "default_attempts")]
    pub attempts: Located<u64>,
    /// Time limit of one try (connection, request and response).
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: Located<u64>,
    /// Wait before the second try, doubled before each next one.
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: Located<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A JSON POST of the accounts (keymart's own shape, README "Alerts").
    Webhook,
    /// A Slack incoming webhook: `text` and `blocks`.
    Slack,
    /// A DingTalk robot: a `markdown` message, signed when `secret` is set.
    Dingtalk,
    /// A WeCom (企业微信) group robot: a `markdown` message.
    Wecom,
    /// An e-mail through SMTP.
    Email,
}

impl AlertKind {
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::Webhook => "webhook",
            AlertKind::Slack => "slack",
            AlertKind::Dingtalk => "dingtalk",
            AlertKind::Wecom => "wecom",
            AlertKind::Email => "email",
        }
    }
}

/// The key-account statuses an alert is about (`key_accounts.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    AtRisk,
    Lost,
    New,
}

impl AlertStatus {
    pub const ALL: [AlertStatus; 3] = [AlertStatus::AtRisk, AlertStatus::Lost, AlertStatus::New];

    /// As `key_accounts.status` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::AtRisk => "at_risk",
            AlertStatus::Lost => "lost",
            AlertStatus::New => "new",
        }
    }

    pub fn parse(status: &str) -> Option<AlertStatus> {
        AlertStatus::ALL.into_iter().find(|s| s.as_str() == status)
    }
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required, not opportunistic).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: only to a server on this machine (a local relay).
    None,
}

impl SmtpTls {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

fn default_on() -> Located<Vec<AlertStatus>> {
    Located::new(vec![AlertStatus::AtRisk, AlertStatus::Lost], Position::default())
}

fn default_max_accounts() -> Located<u64> {
    Located::new(10, Position::default())
}

fn default_attempts() -> Located<u64> {
    Located::new(4, Position::default())
}

fn default_timeout_seconds() -> Located<u64> {
    Located::new(10, Position::default())
}

fn default_backoff_ms() -> Located<u64> {
    Located::new(1000, Position::default())
}

/// Whether `host` names this machine (where `tls: none` is allowed).
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `value` with each `${VAR}` replaced by `x`: its shape, for checks made before the variables
/// are read; `None` when its `${` are malformed.
fn shape(value: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}')?;
        out.push('x');
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Whether `value` is one environment variable and nothing else.
fn is_one_variable(value: &str) -> bool {
    value.starts_with("${") && value.ends_with('}') && value.matches("${").count() == 1
}

/// Ranges `keymart check` accepts for the delivery settings.
pub const MAX_ACCOUNTS: std::ops::RangeInclusive<u64> = 1..=200;
pub const ATTEMPTS: std::ops::RangeInclusive<u64> = 1..=10;
pub const TIMEOUT_SECONDS: std::ops::RangeInclusive<u64> = 1..=300;
pub const BACKOFF_MS: std::ops::RangeInclusive<u64> = 0..=60_000;

/// Every problem of `alerts:`, each at its line.
pub(super) fn validate(targets: &[Located<AlertTarget>], file: &Path, d: &mut Diagnostics) {
    let mut names = std::collections::HashSet::new();
    for target in targets {
        let name = &target.name;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            d.at(file, &name.position, "must be letters, digits, `-` or `_` (the ledger records deliveries by it)");
        } else if !names.insert(name.value.clone()) {
            d.at(file, &name.position, format!("a second target named `{}`", name.value));
        }
        if target.on.is_empty() {
            d.at(file, &target.on.position, "names no status (at_risk, lost, new)");
        }
        validate_kind(target, file, d);
        for (setting, range) in [
            (&target.max_accounts, MAX_ACCOUNTS),
            (&target.attempts, ATTEMPTS),
            (&target.timeout_seconds, TIMEOUT_SECONDS),
            (&target.backoff_ms, BACKOFF_MS),
        ] {
            if !range.contains(&setting.value) {
                d.at(file, &setting.position, format!("must be between {} and {}", range.start(), range.end()));
            }
        }
    }
}

fn validate_kind(target: &AlertTarget, file: &Path, d: &mut Diagnostics) {
    let kind = target.kind.value;
    let needs = |present: bool, field: &str, d: &mut Diagnostics| {
        if !present {
            d.at(file, &target.kind.position, format!("a `{}` target needs `{field}`", kind.name()));
        }
    };
    let refuse = |at: Option<&Position>, d: &mut Diagnostics| {
        if let Some(at) = at {
            d.at(file, at, format!("not a setting of a `{}` target", kind.name()));
        }
    };
    let tls_set = (target.tls.position != Position::default()).then_some(&target.tls.position);
    if kind == AlertKind::Email {
        needs(target.host.is_some(), "host", d);
        needs(target.from.is_some(), "from", d);
        needs(target.to.as_ref().is_some_and(|to| !to.is_empty()), "to", d);
        for at in [position(&target.url), position(&target.secret), position(&target.headers)] {
            refuse(at, d);
        }
        if let (Some(at), None) | (None, Some(at)) = (position(&target.user), position(&target.password)) {
            d.at(file, at, "`user` and `password` go together");
        }
        if let Some(host) = &target.host
            && target.tls.value == SmtpTls::None
            && !host.contains("${")
            && !is_loopback_host(host)
        {
            let message = "`none` sends the password and the accounts in clear: only to a loopback host \
                           (localhost, 127.0.0.1, ::1)";
            d.at(file, tls_set.unwrap_or(&target.kind.position), message);
        }
        let addresses = target.from.iter().map(|f| (&f.value, &f.position));
        let addresses = addresses.chain(target.to.iter().flat_map(|to| to.iter().map(|a| (a, &to.position))));
        for (address, at) in addresses {
            if !address.contains("${") && address.parse::<lettre::message::Mailbox>().is_err() {
                d.at(file, at, format!("`{address}` is not an e-mail address"));
            }
        }
    } else {
        needs(target.url.is_some(), "url", d);
        let email_only = [
            position(&target.host),
            position(&target.port),
            position(&target.user),
            position(&target.password),
            position(&target.from),
            position(&target.to),
            tls_set,
        ];
        for at in email_only {
            refuse(at, d);
        }
        if kind != AlertKind::Dingtalk {
            refuse(position(&target.secret), d);
        }
        if kind != AlertKind::Webhook {
            refuse(position(&target.headers), d);
        }
        if let Some(url) = &target.url {
            let parsed = shape(&url.value).map(|s| url::Url::parse(&s));
            let http = matches!(&parsed, Some(Ok(u)) if matches!(u.scheme(), "http" | "https"));
            if !http && !is_one_variable(&url.value) {
                d.at(file, &url.position, "must be an http(s) URL, or `${VAR}` holding one");
            }
        }
    }
    for (field, secret) in [("secret", &target.secret), ("password", &target.password)] {
        if let Some(secret) = secret
            && !is_one_variable(&secret.value)
        {
            d.at(file, &secret.position, format!("a {field} comes from the environment: write `${{VAR}}`"));
        }
    }
    let expanded = [&target.url, &target.secret, &target.host, &target.user, &target.password, &target.from];
    for value in expanded.into_iter().flatten() {
        if shape(&value.value).is_none() {
            d.at(file, &value.position, "unclosed `${` (write `${VAR}`)");
        }
    }
}

fn position<T>(setting: &Option<Located<T>>) -> Option<&Position> {
    setting.as_ref().map(|s| &s.position)
}
