//! Alerts end to end: the shipped sample through the shipped pipeline over three nights, alerts
//! configured for the third. Real receivers: an HTTP server in this file that records every
//! request (webhook, Slack, DingTalk, WeCom) and an SMTP server (Python's aiosmtpd, a
//! subprocess) that records every message. What each got is compared with the key accounts that
//! `keymart query` finds slipped; the DingTalk signature is checked apart with `ring`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

use crate::support::{
    KilledOnDrop, TestProject, assert_exit, copy_dir, free_ports, keymart, repo_root, stderr, stdout,
};

const D1: &str = "2024-06-01";
const D2: &str = "2024-06-02";
const BASE_URL: &str = "https://bi.example.com/keymart/reports";

/// Secrets the targets are given through the environment: none may show in output or ledgers.
const SLACK_PATH: &str = "T0SLACK/B0SLACK/slack-path-secret-5d1";
const DINGTALK_TOKEN: &str = "dingtalk-token-secret-77a";
const DINGTALK_SECRET: &str = "SECdingtalk-signing-secret-0b3";
const WECOM_KEY: &str = "wecom-key-secret-e42";
const WEBHOOK_TOKEN: &str = "webhook-bearer-secret-19f";
const SMTP_PASSWORD: &str = "smtp-password-secret-a8c";
const DEAD_TOKEN: &str = "dead-receiver-secret-3c7";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    /// Path and query.
    target: String,
    headers: BTreeMap<String, String>,
    body: serde_json::Value,
    at_ms: i64,
}

/// An HTTP/1.1 receiver on loopback: records each request and answers from a script per path
/// (the status of each successive request; 200 when the script runs out).
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(scripts: &[(&str, &[u16])]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let scripts: BTreeMap<String, Vec<u16>> = scripts.iter().map(|(p, s)| (p.to_string(), s.to_vec())).collect();
        let scripts = Arc::new(Mutex::new(scripts));
        let log = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (log, scripts) = (log.clone(), scripts.clone());
                std::thread::spawn(move || serve_one(stream, &log, &scripts));
            }
        });
        Receiver { port, received }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The requests to a path (the query left out).
    fn to(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.target.split('?').next() == Some(path)).collect()
    }
}

fn serve_one(stream: TcpStream, log: &Mutex<Vec<Received>>, scripts: &Mutex<BTreeMap<String, Vec<u16>>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers.get("content-length").map_or(0, |l| l.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let path = target.split('?').next().unwrap().to_string();
    let status =
        scripts.lock().unwrap().get_mut(&path).and_then(|s| (!s.is_empty()).then(|| s.remove(0))).unwrap_or(200);
    log.lock().unwrap().push(Received {
        target,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        at_ms: chrono::Utc::now().timestamp_millis(),
    });
    let answer = if path.starts_with("/dingtalk") || path.starts_with("/wecom") {
        r#"{"errcode":0,"errmsg":"ok"}"#
    } else {
        "ok"
    };
    let answer = if status == 200 { answer } else { "server error" };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

/// aiosmtpd on a free loopback port: each message it accepts is written to `dir` as JSON
/// (envelope, subject and decoded text), with the login and password it was given.
const SMTP_SERVER: &str = r#"
import email, email.policy, json, os, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, out = int(sys.argv[1]), sys.argv[2]

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword)
    if ok:
        session.keymart_login = [auth_data.login.decode(), auth_data.password.decode()]
    return AuthResult(success=ok)

class Handler:
    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "subject": str(message["subject"]),
            "text": message.get_content(),
            "login": getattr(session, "keymart_login", None),
        }
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        with open(os.path.join(out, f"{n}.tmp"), "w") as f:
            json.dump(record, f)
        os.rename(os.path.join(out, f"{n}.tmp"), os.path.join(out, f"{n}.json"))
        return "250 OK"

controller = Controller(Handler(), hostname="127.0.0.1", port=port, authenticator=authenticator,
                        auth_require_tls=False)
controller.start()
while True:
    time.sleep(3600)
"#;

struct SmtpServer {
    port: u16,
    dir: PathBuf,
    _process: KilledOnDrop,
}

impl SmtpServer {
    fn start(under: &Path) -> SmtpServer {
        let dir = under.join("smtp-received");
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_ports(1)[0];
        let log = under.join("smtp-server.log");
        let process = Command::new("python3")
            .args(["-c", SMTP_SERVER, &port.to_string()])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd, see .ci/run)");
        let process = KilledOnDrop(process);
        crate::support::wait_for_port(port, || std::fs::read_to_string(&log).unwrap_or_default());
        SmtpServer { port, dir, _process: process }
    }

    fn messages(&self) -> Vec<serde_json::Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort_by_key(|p| p.file_stem().unwrap().to_str().unwrap().parse::<u32>().unwrap());
        files.iter().map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()).collect()
    }
}

fn sample_project() -> TestProject {
    let project = TestProject::shipped();
    copy_dir(&repo_root().join("warehouse/landing"), &project.landing());
    project
}

/// `keymart <args>` in the project with the targets' secrets in the environment (and `-v`
/// when asked, so that the debug lines are checked for secrets too).
fn keymart_with(project: &TestProject, env: &[(&str, String)], args: &[&str]) -> Output {
    keymart()
        .arg("--project")
        .arg(project.path())
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

fn add_settings(project: &TestProject, yaml: &str) {
    let settings = std::fs::read_to_string(project.path().join("keymart.yaml")).unwrap();
    std::fs::write(project.path().join("keymart.yaml"), format!("{settings}\n{yaml}")).unwrap();
}

/// A key account that slipped, as the marts say.
#[derive(Debug, Clone, PartialEq)]
struct Slipped {
    customer_id: String,
    status: String,
    net_value: String,
    churn_reasons: Option<String>,
}

fn query(project: &TestProject, sql: &str, as_of: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let output = project.keymart(&["query", sql, "--as-of", as_of, "--format", "json"]);
    assert_exit(&output, 0);
    let rows: Vec<serde_json::Value> = serde_json::from_str(stdout(&output).trim()).unwrap();
    rows.into_iter().map(|r| r.as_object().unwrap().clone()).collect()
}

/// The key accounts that became at risk or were lost on `night` (compared with `before`), the
/// most valuable first — in the test's own words, over `<mart>` at each date.
fn slipped(project: &TestProject, night: &str, before: &str) -> Vec<Slipped> {
    let previous: BTreeMap<String, Option<String>> =
        query(project, "SELECT customer_id, status FROM key_accounts", before)
            .into_iter()
            .map(|r| {
                (
                    r["customer_id"].as_str().unwrap().to_string(),
                    r.get("status").and_then(|s| s.as_str()).map(String::from),
                )
            })
            .collect();
    let rows = query(
        project,
        "SELECT k.customer_id, k.status, CAST(k.net_value AS VARCHAR) AS value_text, c.churn_reasons
         FROM key_accounts k LEFT JOIN customer_churn c ON c.customer_id = k.customer_id
         WHERE k.status IN ('at_risk', 'lost', 'new')
         ORDER BY k.net_value DESC, k.customer_id",
        night,
    );
    rows.into_iter()
        .map(|r| Slipped {
            customer_id: r["customer_id"].as_str().unwrap().to_string(),
            status: r["status"].as_str().unwrap().to_string(),
            net_value: r["value_text"].as_str().unwrap().to_string(),
            churn_reasons: r.get("churn_reasons").and_then(|s| s.as_str()).map(String::from),
        })
        .filter(|s| {
            s.status != "at_risk" || previous.get(&s.customer_id).cloned().flatten().as_deref() != Some("at_risk")
        })
        .collect()
}

/// Every ledger of the warehouse, as text.
fn ledgers(project: &TestProject) -> String {
    let runs = project.warehouse().join("_runs");
    std::fs::read_dir(&runs).unwrap().map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect()
}

/// The alert steps of the ledger that started last.
fn alert_steps(project: &TestProject) -> Vec<serde_json::Value> {
    let ledger = project.last_ledger();
    ledger["steps"].as_array().unwrap().iter().filter(|s| s["step"] == "alert").cloned().collect()
}

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    for secret in [SLACK_PATH, DINGTALK_TOKEN, DINGTALK_SECRET, WECOM_KEY, WEBHOOK_TOKEN, SMTP_PASSWORD, DEAD_TOKEN] {
        assert!(!text.contains(secret), "{what} holds the secret {secret}:\n{text}");
    }
}

/// How the account reads in every kind's message.
fn named(account: &Slipped) -> String {
    format!("{} · {} · net value {}", account.customer_id, account.status.replace('_', " "), account.net_value)
}

#[test]
fn every_kind_of_target_gets_the_key_accounts_that_slipped_once() {
    let project = sample_project();
    let http = Receiver::start(&[]);
    let smtp = SmtpServer::start(project.path());
    assert_exit(&project.keymart(&["run", "--as-of", D1]), 0);
    add_settings(
        &project,
        &format!(
            r#"report:
  lang: en
  base_url: {BASE_URL}/
alerts:
  - name: crm
    kind: webhook
    "on": [at_risk, lost, new]
    url: ${{KM_WEBHOOK_URL}}
    headers: {{Authorization: "Bearer ${{KM_WEBHOOK_TOKEN}}"}}
  - name: sales-slack
    kind: slack
    "on": [at_risk, lost, new]
    url: ${{KM_SLACK_URL}}
  - name: kam-dingtalk
    kind: dingtalk
    "on": [at_risk, lost, new]
    url: {}?access_token=${{KM_DINGTALK_TOKEN}}
    secret: ${{KM_DINGTALK_SECRET}}
  - name: kam-wecom
    kind: wecom
    "on": [at_risk, lost, new]
    url: {}?key=${{KM_WECOM_KEY}}
    max_accounts: 1
  - name: kam-mail
    kind: email
    "on": [at_risk, lost, new]
    host: 127.0.0.1
    port: {}
    tls: none
    user: keymart
    password: ${{KM_SMTP_PASSWORD}}
    from: keymart <keymart@example.com>
    to: [kam@example.com, sales@example.com]
"#,
            http.url("/dingtalk/robot/send"),
            http.url("/wecom/webhook/send"),
            smtp.port
        ),
    );
    assert_exit(&project.keymart(&["check"]), 0);
    let env = [
        ("KM_WEBHOOK_URL", http.url("/crm/hook")),
        ("KM_WEBHOOK_TOKEN", WEBHOOK_TOKEN.to_string()),
        ("KM_SLACK_URL", http.url(&format!("/slack/services/{SLACK_PATH}"))),
        ("KM_DINGTALK_TOKEN", DINGTALK_TOKEN.to_string()),
        ("KM_DINGTALK_SECRET", DINGTALK_SECRET.to_string()),
        ("KM_WECOM_KEY", WECOM_KEY.to_string()),
        ("KM_SMTP_PASSWORD", SMTP_PASSWORD.to_string()),
    ];
    let started_ms = chrono::Utc::now().timestamp_millis();
    let output = keymart_with(&project, &env, &["run", "--as-of", D2]);
    assert_exit(&output, 0);
    let mut printed = format!("{}{}", stdout(&output), stderr(&output));

    let expected = slipped(&project, D2, D1);
    assert!(!expected.is_empty(), "the sample has key accounts that slip on {D2}");
    let report_url = format!("{BASE_URL}/as_of={D2}/index.html");
    let count = |status: &str| expected.iter().filter(|a| a.status == status).count();
    let title = {
        let counts: Vec<String> = [("at_risk", "at risk"), ("lost", "lost"), ("new", "new")]
            .iter()
            .filter(|(s, _)| count(s) > 0)
            .map(|(s, label)| format!("{} {label}", count(s)))
            .collect();
        format!("Key accounts {D2}: {}", counts.join(", "))
    };

    // keymart's JSON: the facts, the bearer token in its header.
    let crm = http.to("/crm/hook");
    assert_eq!(crm.len(), 1, "{crm:?}");
    assert_eq!(crm[0].headers["authorization"], format!("Bearer {WEBHOOK_TOKEN}"));
    let body = &crm[0].body;
    assert_eq!(body["event"], "key_accounts_changed");
    assert_eq!((body["as_of"].as_str(), body["previous"].as_str()), (Some(D2), Some(D1)));
    assert_eq!(body["title"], title.as_str());
    assert_eq!(body["report_url"], report_url.as_str());
    let accounts: Vec<Slipped> = body["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| Slipped {
            customer_id: a["customer_id"].as_str().unwrap().to_string(),
            status: a["status"].as_str().unwrap().to_string(),
            net_value: a["net_value"].as_str().unwrap().to_string(),
            churn_reasons: a["churn_reasons"].as_str().map(String::from),
        })
        .collect();
    let top: Vec<Slipped> = expected.iter().take(10).cloned().collect();
    assert_eq!(accounts, top);
    assert_eq!(body["more"], expected.len().saturating_sub(10));
    for status in ["at_risk", "lost", "new"] {
        assert_eq!(body["counts"].get(status).and_then(|c| c.as_u64()).unwrap_or(0), count(status) as u64, "{status}");
    }

    // Slack: `text` and blocks (header, sections of accounts, the link).
    let slack = http.to(&format!("/slack/services/{SLACK_PATH}"));
    assert_eq!(slack.len(), 1);
    let blocks = slack[0].body["blocks"].as_array().unwrap();
    assert_eq!(slack[0].body["text"], title.as_str());
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["text"], title.as_str());
    let sections: Vec<&str> =
        blocks[1..].iter().filter(|b| b["type"] == "section").map(|b| b["text"]["text"].as_str().unwrap()).collect();
    let listed = sections[..sections.len() - 1].join("\n");
    assert_eq!(listed.lines().count(), top.len(), "{listed}");
    for (line, account) in listed.lines().zip(&top) {
        let named = named(account);
        let (id, rest) = named.split_once(' ').unwrap();
        assert!(line.starts_with(&format!("• *{id}* {rest}")), "{line} / {named}");
    }
    assert_eq!(sections.last().unwrap(), &format!("<{report_url}|Open the report>"));

    // DingTalk: markdown, signed: the signature recomputed here from the timestamp it carries.
    let dingtalk = http.to("/dingtalk/robot/send");
    assert_eq!(dingtalk.len(), 1);
    let query: BTreeMap<String, String> = url::Url::parse(&format!("http://x{}", dingtalk[0].target))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(query["access_token"], DINGTALK_TOKEN);
    let timestamp: i64 = query["timestamp"].parse().unwrap();
    assert!(timestamp >= started_ms && timestamp <= dingtalk[0].at_ms, "{timestamp} not when it was sent");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, DINGTALK_SECRET.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{timestamp}\n{DINGTALK_SECRET}").as_bytes());
    assert_eq!(query["sign"], base64::engine::general_purpose::STANDARD.encode(tag.as_ref()));
    let raw_sign = dingtalk[0].target.split("sign=").nth(1).unwrap();
    assert!(!raw_sign.contains('+') && !raw_sign.contains('/'), "the signature is URL-encoded: {raw_sign}");
    let body = &dingtalk[0].body;
    assert_eq!(body["msgtype"], "markdown");
    assert_eq!(body["markdown"]["title"], title.as_str());
    let text = body["markdown"]["text"].as_str().unwrap();
    assert!(text.starts_with(&format!("### {title}\n\n")), "{text}");
    for account in &top {
        let (id, rest) = named(account).split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
        assert!(text.contains(&format!("- **{id}** {rest}")), "{text}");
    }
    assert!(text.ends_with(&format!("[Open the report]({report_url})")), "{text}");

    // WeCom: markdown content, one account named (max_accounts: 1), the others counted.
    let wecom = http.to("/wecom/webhook/send");
    assert_eq!(wecom.len(), 1);
    assert_eq!(wecom[0].body["msgtype"], "markdown");
    let content = wecom[0].body["markdown"]["content"].as_str().unwrap();
    let (id, rest) = named(&expected[0]).split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
    assert!(content.starts_with(&format!("### {title}\n> **{id}** {rest}")), "{content}");
    assert_eq!(content.matches("> **").count(), 1, "{content}");
    if expected.len() > 1 {
        assert!(content.contains(&format!("and {} more", expected.len() - 1)), "{content}");
    }

    // E-mail: through the SMTP server, logged in with the password from the environment.
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail["mail_from"], "keymart@example.com");
    assert_eq!(mail["rcpt_tos"], serde_json::json!(["kam@example.com", "sales@example.com"]));
    assert_eq!(mail["login"], serde_json::json!(["keymart", SMTP_PASSWORD]));
    assert_eq!(mail["subject"], title.as_str());
    let text = mail["text"].as_str().unwrap();
    for account in &top {
        assert!(text.contains(&format!("- {}", named(account))), "{text}");
    }
    assert!(text.contains(&format!("Open the report: {report_url}")), "{text}");

    // The ledger says each was delivered, and where, without a secret.
    let steps = alert_steps(&project);
    let delivered: Vec<(&str, &str)> =
        steps.iter().map(|s| (s["target"].as_str().unwrap(), s["status"].as_str().unwrap())).collect();
    assert_eq!(
        delivered,
        [
            ("crm", "delivered"),
            ("sales-slack", "delivered"),
            ("kam-dingtalk", "delivered"),
            ("kam-wecom", "delivered"),
            ("kam-mail", "delivered")
        ]
    );
    assert!(steps.iter().all(|s| s["accounts"] == expected.len() && s["tries"] == 1 && s["as_of"] == D2), "{steps:?}");

    // A rerun of the night (skipped: same inputs) and a rebuild of it send nothing again.
    let requests = http.received().len();
    for args in [&["run", "--as-of", D2][..], &["run", "--as-of", D2, "--rebuild"]] {
        let output = keymart_with(&project, &env, args);
        assert_exit(&output, 0);
        printed.push_str(&stderr(&output));
        assert_eq!(http.received().len(), requests, "{args:?} sent again");
        assert_eq!(smtp.messages().len(), 1, "{args:?} sent again");
    }
    assert!(printed.contains("not sent again: delivered by run"), "{printed}");

    // On request: refused for a night already delivered, saying so; sent again with --resend.
    let output = keymart_with(&project, &env, &["-q", "alerts", "--as-of", D2]);
    assert_exit(&output, 2);
    assert!(
        stderr(&output).contains(&format!("the alerts of {D2} were delivered already to `crm` (run ")),
        "{}",
        stderr(&output)
    );
    assert!(stderr(&output).contains("--resend sends them again"));
    let output = keymart_with(&project, &env, &["-q", "alerts", "--as-of", D2, "--resend"]);
    assert_exit(&output, 0);
    printed.push_str(&stdout(&output));
    assert!(
        stdout(&output)
            .contains(&format!("alert of {D2} sent to `kam-dingtalk` (dingtalk, http://127.0.0.1:{}/…)", http.port))
    );
    assert_eq!(http.received().len(), requests + 4);
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(http.to("/crm/hook")[1].body["accounts"], http.to("/crm/hook")[0].body["accounts"]);
    assert_eq!(alert_steps(&project).len(), 5);

    assert_no_secret("the output", &printed);
    assert_no_secret("the ledgers", &ledgers(&project));
}

#[test]
fn a_failing_receiver_is_tried_again_and_a_dead_one_is_recorded_without_failing_the_night() {
    let project = sample_project();
    let http = Receiver::start(&[("/flaky", &[500, 503])]);
    let dead_port = free_ports(1)[0];
    assert_exit(&project.keymart(&["run", "--as-of", D1]), 0);
    add_settings(
        &project,
        r#"alerts:
  - name: flaky
    kind: webhook
    "on": [at_risk, lost, new]
    url: ${KM_FLAKY_URL}
    attempts: 3
    backoff_ms: 50
  - name: dead
    kind: slack
    "on": [at_risk, lost, new]
    url: ${KM_DEAD_URL}
    attempts: 2
    backoff_ms: 50
    timeout_seconds: 2
  - name: unset
    kind: wecom
    "on": [at_risk, lost, new]
    url: ${KM_NOT_SET}
"#,
    );
    let env = [
        ("KM_FLAKY_URL", http.url("/flaky")),
        ("KM_DEAD_URL", format!("http://127.0.0.1:{dead_port}/services/{DEAD_TOKEN}?token={DEAD_TOKEN}")),
    ];
    let output = keymart_with(&project, &env, &["-v", "run", "--as-of", D2]);
    assert_exit(&output, 0);
    let printed = format!("{}{}", stdout(&output), stderr(&output));
    assert!(!slipped(&project, D2, D1).is_empty());

    // 500, 503, then 200: three tries, delivered.
    assert_eq!(http.to("/flaky").len(), 3);
    assert_eq!(http.to("/flaky")[2].body, http.to("/flaky")[0].body);
    let steps = alert_steps(&project);
    assert_eq!(steps[0]["target"], "flaky");
    assert_eq!((steps[0]["status"].as_str(), steps[0]["tries"].as_u64()), (Some("delivered"), Some(3)));

    // Nothing listens: both tries fail, a warning names the target and the reason, not the URL.
    assert_eq!(steps[1]["target"], "dead");
    assert_eq!((steps[1]["status"].as_str(), steps[1]["tries"].as_u64()), (Some("failed"), Some(2)));
    assert!(steps[1]["error"].as_str().unwrap().contains("could not connect"), "{}", steps[1]);
    assert_eq!(steps[1]["to"], format!("http://127.0.0.1:{dead_port}/…"));
    let warning = format!(
        "alert of {D2} to `dead` (slack, http://127.0.0.1:{dead_port}/…) failed after 2 tries: could not connect"
    );
    assert!(printed.contains(&warning), "{printed}");

    // An unset variable: no try, the variable named.
    assert_eq!((steps[2]["status"].as_str(), steps[2]["tries"].as_u64()), (Some("failed"), Some(0)));
    assert_eq!(steps[2]["error"], "url: environment variable KM_NOT_SET is not set");
    assert_eq!(project.last_ledger()["status"], "succeeded");

    // A rebuild of the night tries the failed targets again, not the delivered one.
    let output = keymart_with(&project, &env, &["-q", "run", "--as-of", D2, "--rebuild"]);
    assert_exit(&output, 0);
    assert_eq!(http.to("/flaky").len(), 3);
    let retried: Vec<String> =
        alert_steps(&project).iter().map(|s| s["target"].as_str().unwrap().to_string()).collect();
    assert_eq!(retried, ["dead", "unset"]);

    // On request, a failure is the command's failure (exit 1), still without the secret.
    let output = keymart_with(&project, &env, &["-q", "alerts", "--as-of", D2]);
    assert_exit(&output, 1);
    assert!(stderr(&output).contains("failed after 2 tries"), "{}", stderr(&output));

    assert_no_secret("the output", &format!("{printed}{}{}", stdout(&output), stderr(&output)));
    assert_no_secret("the ledgers", &ledgers(&project));
}

#[test]
fn alert_targets_are_checked_with_each_problem_at_its_line() {
    let project = TestProject::new("sources: {}\n");
    std::fs::write(
        project.path().join("keymart.yaml"),
        r#"warehouse: ./warehouse
alerts:
  - name: ops
    kind: slack
  - name: ops
    kind: dingtalk
    url: https://oapi.dingtalk.com/robot/send?access_token=${T}
    secret: SEC0123literal
    "on": []
  - name: mail
    kind: email
    host: smtp.example.com
    tls: none
    from: not an address
    to: [kam@example.com]
    password: ${P}
    attempts: 0
  - name: hook
    kind: pager
  - name: wecom
    kind: wecom
    url: ftp://example.com/${K}
    host: smtp.example.com
"#,
    )
    .unwrap();
    let output = project.keymart(&["check"]);
    assert_exit(&output, 2);
    let errors = stderr(&output);
    for expected in [
        "keymart.yaml:4:11: alerts[0].kind: a `slack` target needs `url`",
        "keymart.yaml:5:11: alerts[1].name: a second target named `ops`",
        "keymart.yaml:8:13: alerts[1].secret: a secret comes from the environment: write `${VAR}`",
        "keymart.yaml:9:11: alerts[1].on: names no status (at_risk, lost, new)",
        "keymart.yaml:13:10: alerts[2].tls: `none` sends the password and the accounts in clear",
        "keymart.yaml:14:11: alerts[2].from: `not an address` is not an e-mail address",
        "keymart.yaml:16:15: alerts[2].password: `user` and `password` go together",
        "keymart.yaml:17:15: alerts[2].attempts: must be between 1 and 10",
        "keymart.yaml:19:11: alerts[3].kind: unknown variant `pager`",
        "keymart.yaml:22:10: alerts[4].url: must be an http(s) URL, or `${VAR}` holding one",
        "keymart.yaml:23:11: alerts[4].host: not a setting of a `wecom` target",
    ] {
        assert!(errors.contains(expected), "missing `{expected}` in\n{errors}");
    }
}
