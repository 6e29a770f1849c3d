//! Alerts as runs send them: after a night's publish (`keymart run`) and on request
//! (`keymart alerts --as-of D [--resend]`). The ledger remembers which target had which night, so
//! a rerun or a backfill does not alert twice; a failed delivery is a warning and a ledger step.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;

use super::Session;
use super::ledger::{self, Ledger, Request, RunStatus, Step};
use crate::alerts::{self, Delivery, DeliveryStatus};
use crate::config::AlertTarget;
use crate::error::{Error, Result};

/// Send the alerts of `as_of` to every target that has not had them (every target with
/// `resend`), each delivery recorded in `ledger` and logged; a failure is a warning.
pub(super) async fn send(session: &Session, as_of: NaiveDate, resend: bool, ledger: &mut Ledger) -> Result<Sent> {
    let targets: Vec<&AlertTarget> = session.project.settings.alerts.entries.iter().map(|t| &t.value).collect();
    let settled = if resend { BTreeMap::new() } else { ledger::settled_alerts(&session.warehouse).await? };
    let (skipped, due): (Vec<&AlertTarget>, Vec<&AlertTarget>) =
        targets.into_iter().partition(|t| settled.contains_key(&(t.name.value.clone(), as_of)));
    let skipped =
        skipped.into_iter().map(|t| (t.name.value.clone(), settled[&(t.name.value.clone(), as_of)].clone())).collect();
    let mut sent = Sent { as_of, skipped, deliveries: Vec::new() };
    if due.is_empty() {
        return Ok(sent);
    }
    let settings = &session.project.settings;
    let engine = session.engine().await?;
    let changes = alerts::changes(&engine, &session.warehouse, as_of).await?;
    let report_url = alerts::report_url(settings.report.base_url.as_ref().map(|u| u.value.as_str()), as_of);
    for target in due {
        let delivery = alerts::deliver(target, &changes, settings.report.lang, report_url.clone()).await;
        match delivery.status {
            DeliveryStatus::Failed => tracing::warn!("{delivery}"),
            _ => tracing::info!("{delivery}"),
        }
        ledger.steps.push(Step::Alert(delivery.clone()));
        sent.deliveries.push(delivery);
    }
    Ok(sent)
}

/// What one night's alerts came to.
#[derive(Debug)]
pub struct Sent {
    pub as_of: NaiveDate,
    /// Targets that had this night already, with the run that settled it.
    pub skipped: Vec<(String, String)>,
    pub deliveries: Vec<Delivery>,
}

impl fmt::Display for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines: Vec<String> = self.deliveries.iter().map(ToString::to_string).collect();
        lines.extend(self.skipped.iter().map(|(target, run)| {
            format!("alert of {} for `{target}` not sent again: delivered by run {run} (--resend sends it)", self.as_of)
        }));
        f.write_str(&lines.join("\n"))
    }
}

/// After a night's marts are published: its alerts, unless every target had them. Nothing that
/// goes wrong here fails the night: it is logged as a warning and recorded in the ledger.
pub(super) async fn after_publish(session: &Session, as_of: NaiveDate, ledger: &mut Ledger) {
    if session.project.settings.alerts.entries.is_empty() {
        return;
    }
    match send(session, as_of, false, ledger).await {
        Ok(sent) => {
            for (target, run) in &sent.skipped {
                tracing::info!("alert of {as_of} for `{target}` not sent again: delivered by run {run}");
            }
        }
        Err(e) => after_publish_failed(session, as_of, &e, ledger),
    }
}

/// The alerts of a night could not be worked out (its marts unreadable): each target's
/// delivery recorded as failed, so that a rerun tries again.
fn after_publish_failed(session: &Session, as_of: NaiveDate, e: &Error, ledger: &mut Ledger) {
    tracing::warn!("the alerts of {as_of} were not sent: {e}");
    for target in &session.project.settings.alerts.entries {
        ledger.steps.push(Step::Alert(Delivery {
            target: target.name.value.clone(),
            kind: target.kind.name().to_string(),
            to: target.kind.name().to_string(),
            as_of,
            status: DeliveryStatus::Failed,
            tries: 0,
            accounts: 0,
            error: Some(e.to_string()),
        }));
    }
}

/// `keymart alerts --as-of D [--resend]`: send a committed night's alerts on request. Without
/// `resend`, a night every target already had is refused (the message says when it was sent).
pub async fn alerts(session: &Session, as_of: NaiveDate, resend: bool) -> Result<Sent> {
    let settings = &session.project.settings;
    if settings.alerts.entries.is_empty() {
        return Err(Error::Usage("keymart.yaml has no `alerts:` targets".to_string()));
    }
    let run_id = ledger::new_run_id();
    let request = Request { pipeline: String::new(), dates: vec![as_of], rebuild: resend, ..Request::default() };
    let mut ledger =
        Ledger::start(&run_id, "alerts", request, &session.warehouse.location.display, &session.landing.display);
    let sent = send(session, as_of, resend, &mut ledger).await;
    let failed: Vec<String> = match &sent {
        Ok(sent) => {
            sent.deliveries.iter().filter(|d| d.status == DeliveryStatus::Failed).map(|d| d.to_string()).collect()
        }
        Err(e) => vec![e.to_string()],
    };
    let nothing_sent = matches!(&sent, Ok(s) if s.deliveries.is_empty());
    let status = if failed.is_empty() { RunStatus::Succeeded } else { RunStatus::Failed };
    ledger.finish(status, (!failed.is_empty()).then(|| failed.join("\n")));
    if !nothing_sent {
        ledger.save(&session.warehouse).await?;
    }
    let sent = sent?;
    if nothing_sent {
        let targets: Vec<String> = sent.skipped.iter().map(|(t, run)| format!("`{t}` (run {run})")).collect();
        return Err(Error::Usage(format!(
            "the alerts of {as_of} were delivered already to {}: --resend sends them again",
            targets.join(", ")
        )));
    }
    if !failed.is_empty() {
        return Err(Error::AlertsFailed(format!("{sent}")));
    }
    Ok(sent)
}
