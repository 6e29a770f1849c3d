//! One night's changes as each kind of target wants them: keymart's JSON, Slack's `text` and
//! `blocks`, DingTalk's and WeCom's `markdown` robot messages, an e-mail's subject and text.
//! Labels follow `report.lang`.

use serde_json::{Value, json};

use super::changes::{ChangedAccount, Changes};
use crate::config::{AlertStatus, ReportLang};

/// A WeCom markdown message's `content` may hold this many bytes (its robot API refuses more).
const WECOM_CONTENT_BYTES: usize = 4096;

/// A Slack section's text may hold 3000 characters; a message, 50 blocks.
const SLACK_SECTION_CHARS: usize = 3000;
const SLACK_BLOCKS: usize = 50;

/// What a target is told: its statuses' accounts, the most valuable first, and how many more.
#[derive(Debug, Clone)]
pub struct Message<'c> {
    pub changes: &'c Changes,
    lang: ReportLang,
    /// The statuses the target asked for, with how many key accounts changed to each.
    pub counts: Vec<(AlertStatus, u64)>,
    pub accounts: Vec<&'c ChangedAccount>,
    pub report_url: Option<String>,
}

impl<'c> Message<'c> {
    pub fn new(
        changes: &'c Changes,
        on: &[AlertStatus],
        max_accounts: usize,
        lang: ReportLang,
        report_url: Option<String>,
    ) -> Message<'c> {
        let counts = AlertStatus::ALL
            .into_iter()
            .filter(|s| on.contains(s))
            .filter_map(|s| changes.counts.get(&s).filter(|n| **n > 0).map(|n| (s, *n)))
            .collect();
        let accounts = changes.accounts.iter().filter(|a| on.contains(&a.status)).take(max_accounts).collect();
        Message { changes, lang, counts, accounts, report_url }
    }

    /// Key accounts the message is about.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    /// Those counted but not named.
    pub fn more(&self) -> u64 {
        self.total().saturating_sub(self.accounts.len() as u64)
    }

    fn zh(&self) -> bool {
        self.lang == ReportLang::Zh
    }

    fn status(&self, status: AlertStatus) -> &'static str {
        match (status, self.zh()) {
            (AlertStatus::AtRisk, false) => "at risk",
            (AlertStatus::Lost, false) => "lost",
            (AlertStatus::New, false) => "new",
            (AlertStatus::AtRisk, true) => "有流失风险",
            (AlertStatus::Lost, true) => "已流失",
            (AlertStatus::New, true) => "新晋大客户",
        }
    }

    pub fn title(&self) -> String {
        let as_of = self.changes.as_of;
        let counts: Vec<String> = self.counts.iter().map(|(s, n)| format!("{n} {}", self.status(*s))).collect();
        if self.zh() {
            format!("大客户预警 {as_of}：{}", counts.join("，"))
        } else {
            format!("Key accounts {as_of}: {}", counts.join(", "))
        }
    }

    /// One account's facts, `strong` wrapping its id (markdown bold, or nothing).
    fn account_line(&self, account: &ChangedAccount, strong: &str) -> String {
        let (value, reasons) = if self.zh() { ("净价值", "原因") } else { ("net value", "reasons") };
        let mut line = format!(
            "{strong}{}{strong} · {} · {value} {}",
            account.customer_id,
            self.status(account.status),
            account.net_value
        );
        if let Some(why) = account.churn_reasons.as_deref().filter(|r| !r.is_empty()) {
            line.push_str(&format!(" · {reasons}: {why}"));
        }
        line
    }

    fn more_line(&self, more: u64) -> String {
        if self.zh() { format!("另有 {more} 个") } else { format!("and {more} more") }
    }

    fn link_label(&self) -> &'static str {
        if self.zh() { "查看报告" } else { "Open the report" }
    }

    /// Markdown lines of the accounts (the first `named`), the "more" line and the link.
    fn markdown(&self, named: usize, bullet: &str, link: impl Fn(&str, &str) -> String) -> Vec<String> {
        let mut lines: Vec<String> =
            self.accounts.iter().take(named).map(|a| format!("{bullet}{}", self.account_line(a, "**"))).collect();
        let more = self.total().saturating_sub(named as u64);
        if more > 0 {
            lines.push(self.more_line(more));
        }
        if let Some(url) = &self.report_url {
            lines.push(link(self.link_label(), url));
        }
        lines
    }

    /// keymart's own JSON (README "Alerts"): the facts, for a program to act on.
    pub fn webhook(&self) -> Value {
        let accounts: Vec<Value> = self
            .accounts
            .iter()
            .map(|a| {
                json!({
                    "customer_id": a.customer_id,
                    "status": a.status.as_str(),
                    "net_value": a.net_value,
                    "churn_risk": a.churn_risk,
                    "churn_reasons": a.churn_reasons,
                })
            })
            .collect();
        let counts: serde_json::Map<String, Value> =
            self.counts.iter().map(|(s, n)| (s.as_str().to_string(), json!(n))).collect();
        json!({
            "event": "key_accounts_changed",
            "as_of": self.changes.as_of.to_string(),
            "previous": self.changes.previous.map(|d| d.to_string()),
            "title": self.title(),
            "counts": counts,
            "accounts": accounts,
            "more": self.more(),
            "report_url": self.report_url,
        })
    }

    /// A Slack incoming-webhook message: `text` (notifications) and `blocks` (a header, the
    /// accounts in sections of at most 3000 characters, the link).
    pub fn slack(&self) -> Value {
        let escape = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        let lines: Vec<String> =
            self.accounts.iter().map(|a| format!("• {}", escape(&self.account_line(a, "*")))).collect();
        let mut blocks = vec![json!({"type": "header", "text": {"type": "plain_text", "text": self.title()}})];
        // Room for the header, the "more" context and the link.
        let mut sections: Vec<String> = Vec::new();
        let mut named = 0;
        for line in &lines {
            let fits = sections
                .last()
                .is_some_and(|last| last.chars().count() + 1 + line.chars().count() <= SLACK_SECTION_CHARS);
            if fits {
                let last = sections.last_mut().expect("a section");
                last.push('\n');
                last.push_str(line);
            } else if sections.len() + 4 > SLACK_BLOCKS {
                break;
            } else {
                sections.push(line.chars().take(SLACK_SECTION_CHARS).collect());
            }
            named += 1;
        }
        blocks.extend(
            sections.into_iter().map(|text| json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})),
        );
        let more = self.total().saturating_sub(named as u64);
        if more > 0 {
            blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": self.more_line(more)}]}));
        }
        if let Some(url) = &self.report_url {
            let text = format!("<{url}|{}>", self.link_label());
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
        }
        json!({"text": self.title(), "blocks": blocks})
    }

    /// A DingTalk robot `markdown` message.
    pub fn dingtalk(&self) -> Value {
        let title = self.title();
        let lines = self.markdown(self.accounts.len(), "- ", |label, url| format!("[{label}]({url})"));
        let text = format!("### {title}\n\n{}", lines.join("\n"));
        json!({"msgtype": "markdown", "markdown": {"title": title, "text": text}})
    }

    /// A WeCom group-robot `markdown` message, its content within the robot's 4096 bytes
    /// (accounts left out are counted in "more").
    pub fn wecom(&self) -> Value {
        let title = self.title();
        let mut named = self.accounts.len();
        loop {
            let lines = self.markdown(named, "> ", |label, url| format!("[{label}]({url})"));
            let content = format!("### {title}\n{}", lines.join("\n"));
            if content.len() <= WECOM_CONTENT_BYTES || named == 0 {
                return json!({"msgtype": "markdown", "markdown": {"content": content}});
            }
            named -= 1;
        }
    }

    /// An e-mail: subject and plain text.
    pub fn email(&self) -> (String, String) {
        let mut body = format!("{}\n\n", self.title());
        for account in &self.accounts {
            body.push_str(&format!("- {}\n", self.account_line(account, "")));
        }
        if self.more() > 0 {
            body.push_str(&format!("{}\n", self.more_line(self.more())));
        }
        if let Some(url) = &self.report_url {
            body.push_str(&format!("\n{}: {url}\n", self.link_label()));
        }
        (self.title(), body)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::NaiveDate;

    use super::*;

    fn changes(accounts: usize) -> Changes {
        let as_of = NaiveDate::from_ymd_opt(2024, 6, 3).unwrap();
        let accounts: Vec<ChangedAccount> = (0..accounts)
            .map(|i| ChangedAccount {
                customer_id: format!("C{i:05}"),
                status: if i % 3 == 2 { AlertStatus::Lost } else { AlertStatus::AtRisk },
                net_value: format!("{}.50", 100_000 - i),
                churn_risk: Some("high".into()),
                churn_reasons: Some("no order in 3 usual gaps; 2 complaints in 90 days".into()),
            })
            .collect();
        let mut counts = BTreeMap::new();
        for a in &accounts {
            *counts.entry(a.status).or_insert(0) += 1;
        }
        Changes { as_of, previous: as_of.pred_opt(), counts, accounts }
    }

    #[test]
    fn a_list_longer_than_the_cap_names_the_most_valuable_and_counts_the_rest() {
        let changes = changes(30);
        let message = Message::new(&changes, &[AlertStatus::AtRisk], 5, ReportLang::En, None);
        assert_eq!(message.total(), 20);
        assert_eq!(message.more(), 15);
        let (subject, body) = message.email();
        assert_eq!(subject, "Key accounts 2024-06-03: 20 at risk");
        assert!(body.contains("- C00000 · at risk · net value 100000.50 · reasons: no order"), "{body}");
        assert!(body.contains("and 15 more"), "{body}");
        assert!(!body.contains("C00002"), "a lost account is not in an at-risk message: {body}");
    }

    #[test]
    fn a_wecom_message_stays_within_the_robots_4096_bytes() {
        let changes = changes(200);
        let on = [AlertStatus::AtRisk, AlertStatus::Lost];
        let message =
            Message::new(&changes, &on, 200, ReportLang::Zh, Some("https://bi/r/as_of=2024-06-03/index.html".into()));
        let content = message.wecom()["markdown"]["content"].as_str().unwrap().to_string();
        assert!(content.len() <= WECOM_CONTENT_BYTES, "{} bytes", content.len());
        let named = content.matches("> **C").count();
        assert!(named > 10 && named < 200, "{named}");
        assert!(content.contains(&format!("另有 {} 个", 200 - named)), "{content}");
        assert!(content.ends_with("[查看报告](https://bi/r/as_of=2024-06-03/index.html)"));
    }

    #[test]
    fn slack_sections_hold_at_most_3000_characters_and_escape_markup() {
        let mut changes = changes(200);
        changes.accounts[0].churn_reasons = Some("<b>&".into());
        let on = [AlertStatus::AtRisk, AlertStatus::Lost];
        let slack = Message::new(&changes, &on, 200, ReportLang::En, None).slack();
        let blocks = slack["blocks"].as_array().unwrap();
        assert!(blocks.len() <= SLACK_BLOCKS);
        let sections: Vec<&str> =
            blocks.iter().filter(|b| b["type"] == "section").map(|b| b["text"]["text"].as_str().unwrap()).collect();
        assert!(sections.iter().all(|s| s.chars().count() <= SLACK_SECTION_CHARS));
        assert_eq!(sections.iter().map(|s| s.lines().count()).sum::<usize>(), 200);
        assert!(sections[0].contains("reasons: &lt;b&gt;&amp;"), "{}", sections[0]);
    }
}
