//! Keeping secrets out of messages: a webhook shown by its origin only, and every secret value
//! a target was given masked in any error text before it is logged or recorded.

use url::Url;

/// Shorter strings are not masked (they would mask ordinary words of a message).
const MIN_SECRET_CHARS: usize = 4;

/// A webhook as messages show it: scheme, host and port; its path and query (where the tokens
/// are) as `…`.
pub fn shown_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(parsed) => {
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let host = parsed.host_str().unwrap_or("?");
            let hidden = if parsed.path() != "/" || parsed.query().is_some() { "/…" } else { "" };
            format!("{}://{host}{port}{hidden}", parsed.scheme())
        }
        Err(_) => "(an invalid URL)".to_string(),
    }
}

/// The secret values of one target, masked in any text.
#[derive(Debug, Default, Clone)]
pub struct Secrets(Vec<String>);

impl Secrets {
    pub fn add(&mut self, value: &str) {
        if value.chars().count() >= MIN_SECRET_CHARS {
            self.0.push(value.to_string());
        }
    }

    /// A webhook URL: the whole, its path and every query value (each a possible token), and
    /// their percent-encoded forms as they appear in a request line.
    pub fn add_url(&mut self, url: &str) {
        self.add(url);
        if let Ok(parsed) = Url::parse(url) {
            self.add(parsed.as_str());
            if parsed.path() != "/" {
                self.add(parsed.path());
            }
            for (_, value) in parsed.query_pairs() {
                self.add(&value);
                self.add(&url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>());
            }
            for pair in parsed.query().unwrap_or("").split('&') {
                self.add(pair.split_once('=').map_or(pair, |(_, raw)| raw));
            }
        }
    }

    /// `text` with every secret replaced by `***`, the longest first (a token inside a URL).
    pub fn mask(&self, text: &str) -> String {
        let mut secrets: Vec<&String> = self.0.iter().collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut masked = text.to_string();
        for secret in secrets {
            masked = masked.replace(secret.as_str(), "***");
        }
        masked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_is_shown_without_its_path_and_query() {
        let url = "https://oapi.dingtalk.com/robot/send?access_token=0123abcd";
        assert_eq!(shown_url(url), "https://oapi.dingtalk.com/…");
        assert_eq!(shown_url("http://127.0.0.1:8080/"), "http://127.0.0.1:8080");
        let mut secrets = Secrets::default();
        secrets.add_url("https://hooks.slack.com/services/T0/B0/XyZ?token=s3cr%2Bt");
        let text = "POST /services/T0/B0/XyZ?token=s3cr%2Bt failed; token s3cr+t";
        assert_eq!(secrets.mask(text), "POST ***?token=*** failed; token ***");
    }
}
