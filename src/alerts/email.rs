//! E-mail targets: one message through SMTP per try (lettre), STARTTLS by default, TLS from the
//! first byte, or in clear to a loopback relay only.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::Failure;
use crate::config::{SmtpTls, is_loopback_host};

/// An SMTP target with its settings read from the environment.
pub(super) struct Mail {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub credentials: Option<(String, String)>,
    pub from: String,
    pub to: Vec<String>,
    pub timeout: Duration,
}

impl Mail {
    /// One try: connect, secure, authenticate, send.
    pub async fn send(&self, subject: &str, body: &str) -> Result<(), Failure> {
        let message = self.message(subject, body)?;
        let tls = |host: &str| {
            TlsParameters::new(host.to_string()).map_err(|e| Failure::permanent(format!("TLS settings: {e}")))
        };
        let security = match self.tls {
            SmtpTls::Starttls => Tls::Required(tls(&self.host)?),
            SmtpTls::Tls => Tls::Wrapper(tls(&self.host)?),
            // `keymart check` allows it for a loopback host only; the host may come from ${VAR}.
            SmtpTls::None if is_loopback_host(&self.host) => Tls::None,
            SmtpTls::None => {
                return Err(Failure::permanent(format!(
                    "tls: none is only allowed to a loopback host, not {}",
                    self.host
                )));
            }
        };
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.as_str())
            .port(self.port)
            .tls(security)
            .timeout(Some(self.timeout));
        if let Some((user, password)) = &self.credentials {
            transport = transport.credentials(Credentials::new(user.clone(), password.clone()));
        }
        transport.build().send(message).await.map(|_| ()).map_err(|e| {
            let message = format!("SMTP {}:{}: {e}", self.host, self.port);
            if e.is_permanent() { Failure::permanent(message) } else { Failure::transient(message) }
        })
    }

    fn message(&self, subject: &str, body: &str) -> Result<Message, Failure> {
        let mailbox = |address: &str| {
            address
                .parse::<Mailbox>()
                .map_err(|e| Failure::permanent(format!("`{address}` is not an e-mail address: {e}")))
        };
        let mut builder = Message::builder().from(mailbox(&self.from)?).subject(subject);
        for to in &self.to {
            builder = builder.to(mailbox(to)?);
        }
        builder
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_string())
            .map_err(|e| Failure::permanent(format!("the message could not be built: {e}")))
    }
}
