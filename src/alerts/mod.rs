//! Alerts (issue 30): after a night's marts are published, the key accounts that became at risk,
//! were lost (or, when asked, became key accounts) since the previous snapshot are sent to each
//! target of `alerts:` — a JSON webhook, Slack, a DingTalk or WeCom robot, or e-mail.
//!
//! A consumer of the committed marts like `report`: it reads them through
//! [`register_committed_marts`](crate::engine::register_committed_marts) and imports the ground
//! floor only. Which nights were already delivered is the run ledger's to remember (`run`
//! decides what to send; this stage sends and says how it went). Secrets are read from the
//! environment when a message is sent and masked in every error it returns.

mod changes;
mod email;
mod http;
mod message;
mod redact;

use std::fmt;
use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

pub use changes::{ALERT_MARTS, ChangedAccount, Changes, changes};
pub use http::dingtalk_sign;
pub use message::Message;
pub use redact::shown_url;

use crate::config::{AlertKind, AlertTarget, ReportLang, expand_env};
use redact::Secrets;

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Delivered,
    /// No key account of the target's statuses changed (or it is the first night): nothing sent.
    NothingToSend,
    Failed,
}

/// What became of one target's alert of one night (what the ledger records: no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub target: String,
    pub kind: String,
    /// Where it went: the webhook's origin, or the SMTP server and recipients.
    pub to: String,
    pub as_of: NaiveDate,
    pub status: DeliveryStatus,
    pub tries: u64,
    /// Key accounts the message was about (named or counted).
    pub accounts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Delivery { target, kind, to, as_of, .. } = self;
        match self.status {
            DeliveryStatus::Delivered => {
                write!(f, "alert of {as_of} sent to `{target}` ({kind}, {to}): {} key accounts", self.accounts)
            }
            DeliveryStatus::NothingToSend => {
                write!(f, "alert of {as_of} for `{target}` ({kind}): no key account to report")
            }
            DeliveryStatus::Failed => write!(
                f,
                "alert of {as_of} to `{target}` ({kind}, {to}) failed after {} {}: {}",
                self.tries,
                if self.tries == 1 { "try" } else { "tries" },
                self.error.as_deref().unwrap_or("unknown error")
            ),
        }
    }
}

/// One try's failure: tried again, unless it is permanent (a refusal that would repeat).
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    permanent: bool,
}

impl Failure {
    fn transient(message: String) -> Failure {
        Failure { message, permanent: false }
    }

    fn permanent(message: String) -> Failure {
        Failure { message, permanent: true }
    }
}

/// The link to a night's report: `<base_url>/as_of=D/index.html`.
pub fn report_url(base_url: Option<&str>, as_of: NaiveDate) -> Option<String> {
    base_url.map(|base| format!("{}/as_of={as_of}/index.html", base.trim_end_matches('/')))
}

/// A target ready to send: its settings read from the environment.
enum Ready {
    Webhook(http::Webhook),
    Mail(email::Mail),
}

/// Send `changes` to `target`: tried up to `attempts` times, waiting `backoff_ms` and doubling;
/// never an `Err` — a failure is a [`Delivery`] that says why, with every secret masked.
pub async fn deliver(
    target: &AlertTarget,
    changes: &Changes,
    lang: ReportLang,
    report_url: Option<String>,
) -> Delivery {
    let max_accounts = usize::try_from(target.max_accounts.value).unwrap_or(usize::MAX);
    let message = Message::new(changes, &target.on, max_accounts, lang, report_url);
    let mut secrets = Secrets::default();
    let ready = prepare(target, &mut secrets);
    let mut delivery = Delivery {
        target: target.name.value.clone(),
        kind: target.kind.name().to_string(),
        to: shown_target(target, ready.as_ref().ok()),
        as_of: changes.as_of,
        status: DeliveryStatus::NothingToSend,
        tries: 0,
        accounts: message.total(),
        error: None,
    };
    if message.total() == 0 {
        return delivery;
    }
    let ready = match ready {
        Ok(ready) => ready,
        Err(problem) => {
            delivery.status = DeliveryStatus::Failed;
            delivery.error = Some(secrets.mask(&problem));
            return delivery;
        }
    };
    let mut wait = Duration::from_millis(target.backoff_ms.value);
    let mut last_error = None;
    while delivery.tries < target.attempts.value {
        if delivery.tries > 0 {
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2);
        }
        delivery.tries += 1;
        let sent = match &ready {
            Ready::Webhook(webhook) => {
                let body = match target.kind.value {
                    AlertKind::Slack => message.slack(),
                    AlertKind::Dingtalk => message.dingtalk(),
                    AlertKind::Wecom => message.wecom(),
                    AlertKind::Webhook | AlertKind::Email => message.webhook(),
                };
                webhook.post(&body).await
            }
            Ready::Mail(mail) => {
                let (subject, body) = message.email();
                mail.send(&subject, &body).await
            }
        };
        match sent {
            Ok(()) => {
                delivery.status = DeliveryStatus::Delivered;
                return delivery;
            }
            Err(failure) => {
                tracing::debug!(
                    "alert `{}`: try {} failed: {}",
                    delivery.target,
                    delivery.tries,
                    secrets.mask(&failure.message)
                );
                let permanent = failure.permanent;
                last_error = Some(failure.message);
                if permanent {
                    break;
                }
            }
        }
    }
    delivery.status = DeliveryStatus::Failed;
    delivery.error = last_error.map(|e| secrets.mask(&e));
    delivery
}

/// The target's settings with `${VAR}` read, every secret value noted for masking; an unset
/// variable is an error naming the setting and the variable.
fn prepare(target: &AlertTarget, secrets: &mut Secrets) -> Result<Ready, String> {
    let read = |field: &str, value: &str| expand_env(value).map_err(|e| format!("{field}: {e}"));
    let timeout = Duration::from_secs(target.timeout_seconds.value);
    if target.kind.value == AlertKind::Email {
        let credentials = match (&target.user, &target.password) {
            (Some(user), Some(password)) => {
                let password = read("password", password)?;
                secrets.add(&password);
                Some((read("user", user)?, password))
            }
            _ => None,
        };
        let host = read("host", target.host.as_deref().map_or("", |h| h.as_str()))?;
        let port = target.port.as_ref().map_or_else(|| target.tls.default_port(), |p| p.value);
        let from = read("from", target.from.as_deref().map_or("", |f| f.as_str()))?;
        let to = target.to.iter().flat_map(|to| to.iter()).map(|a| read("to", a)).collect::<Result<_, _>>()?;
        return Ok(Ready::Mail(email::Mail { host, port, tls: target.tls.value, credentials, from, to, timeout }));
    }
    let url = read("url", target.url.as_deref().map_or("", |u| u.as_str()))?;
    secrets.add_url(&url);
    let secret = match &target.secret {
        Some(secret) => {
            let secret = read("secret", secret)?;
            secrets.add(&secret);
            Some(secret)
        }
        None => None,
    };
    let mut headers = Vec::new();
    for (name, value) in target.headers.iter().flat_map(|h| h.iter()) {
        let value = read(&format!("headers.{name}"), value)?;
        secrets.add(&value);
        headers.push((name.clone(), value));
    }
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err("url: not an http(s) URL".to_string());
    }
    Ok(Ready::Webhook(http::Webhook { kind: target.kind.value, url, secret, headers, timeout }))
}

/// Where a target sends, as messages and the ledger show it.
fn shown_target(target: &AlertTarget, ready: Option<&Ready>) -> String {
    match ready {
        Some(Ready::Webhook(webhook)) => shown_url(&webhook.url),
        Some(Ready::Mail(mail)) => format!("smtp://{}:{} → {}", mail.host, mail.port, mail.to.join(", ")),
        None => target.kind.name().to_string(),
    }
}
