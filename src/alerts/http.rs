//! Webhook targets: one JSON POST per try (keymart's JSON, Slack, DingTalk, WeCom), DingTalk's
//! signed-request mode, and each service's way of saying a message was refused.

use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;

use super::Failure;
use crate::config::AlertKind;

/// Bytes of a response body read to tell success from refusal (the services answer in a line).
const RESPONSE_BYTES: usize = 4096;

/// A webhook with its secrets read from the environment.
pub(super) struct Webhook {
    pub kind: AlertKind,
    pub url: String,
    /// DingTalk's signing secret.
    pub secret: Option<String>,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

impl Webhook {
    /// One try: POST `body`, then read whether the service took it.
    pub async fn post(&self, body: &Value) -> Result<(), Failure> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            // A webhook answers where it is; following a redirect would carry the message elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Failure::permanent(describe(e)))?;
        let url = match &self.secret {
            Some(secret) => signed_url(&self.url, secret, chrono::Utc::now().timestamp_millis())?,
            None => self.url.clone(),
        };
        let mut request = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).expect("a JSON value serializes"));
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| Failure::transient(describe(e)))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| Failure::transient(describe(e)))?;
        let text: String = text.chars().take(RESPONSE_BYTES).collect();
        if !status.is_success() {
            let message = format!("HTTP {status}: {}", first_line(&text));
            // A request the service refuses is refused again; a busy or failing service may recover.
            let retry = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
            return Err(if retry { Failure::transient(message) } else { Failure::permanent(message) });
        }
        match self.kind {
            // Both robots answer 200 with `errcode` 0, or another code and `errmsg`.
            AlertKind::Dingtalk | AlertKind::Wecom => robot_answer(&text),
            _ => Ok(()),
        }
    }
}

/// DingTalk's and WeCom's `{"errcode": 0, "errmsg": "ok"}`.
fn robot_answer(text: &str) -> Result<(), Failure> {
    let answer: Value = serde_json::from_str(text)
        .map_err(|_| Failure::transient(format!("an answer that is not the robot's JSON: {}", first_line(text))))?;
    match answer["errcode"].as_i64() {
        Some(0) => Ok(()),
        Some(code) => Err(Failure::transient(format!(
            "the robot refused the message: errcode {code}: {}",
            answer["errmsg"].as_str().unwrap_or("")
        ))),
        None => Err(Failure::transient(format!("an answer without errcode: {}", first_line(text)))),
    }
}

fn first_line(text: &str) -> &str {
    let line = text.lines().next().unwrap_or("").trim();
    &line[..line.char_indices().nth(200).map_or(line.len(), |(i, _)| i)]
}

/// DingTalk's signature of a request made at `timestamp_ms`:
/// base64(HMAC-SHA256(key = secret, "{timestamp_ms}\n{secret}")).
pub fn dingtalk_sign(secret: &str, timestamp_ms: i64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
}

/// The webhook URL with `timestamp` and the URL-encoded `sign` appended.
fn signed_url(url: &str, secret: &str, timestamp_ms: i64) -> Result<String, Failure> {
    let mut parsed = url::Url::parse(url).map_err(|_| Failure::permanent("the url is not a valid URL".into()))?;
    parsed
        .query_pairs_mut()
        .append_pair("timestamp", &timestamp_ms.to_string())
        .append_pair("sign", &dingtalk_sign(secret, timestamp_ms));
    Ok(parsed.into())
}

/// A request error without its URL (which holds the token), with its causes.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_body() || error.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.dedup();
    if causes.is_empty() { what.to_string() } else { format!("{what}: {}", causes.join(": ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dingtalk_signature_is_the_documented_hmac() {
        // Computed apart with Python: base64(hmac.new(secret, f"{t}\n{secret}", sha256)), and
        // urllib.parse.quote_plus of it for the URL.
        let sign = dingtalk_sign("SEC000000000000000000000", 1_577_262_236_757);
        assert_eq!(sign, "xOJIB8eNoYWeLy26EMZOlc2RjOJbtPv9HYjm+E3uALU=");
        let url = signed_url(
            "https://oapi.dingtalk.com/robot/send?access_token=abc",
            "SEC000000000000000000000",
            1_577_262_236_757,
        )
        .unwrap_or_else(|_| panic!("a URL"));
        assert_eq!(
            url,
            "https://oapi.dingtalk.com/robot/send?access_token=abc&timestamp=1577262236757&sign=xOJIB8eNoYWeLy26EMZOlc2RjOJbtPv9HYjm%2BE3uALU%3D"
        );
    }
}
