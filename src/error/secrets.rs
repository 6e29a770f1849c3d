//! Credentials never leave the process in text: every message keymart writes (an error, a log
//! line, a summary, the ledger) passes through [`scrub`]. It removes what looks like a
//! credential in any URL (`user:password@`, a signature or token in the query) and every secret
//! value of the configured stores, registered when a store is opened (`warehouse::store`): the
//! credential options of `storage.options` (after `${VAR}` expansion) and the provider's
//! credential variables in the environment (`AWS_SECRET_ACCESS_KEY`, `AZURE_STORAGE_SAS_KEY`, …).

use std::borrow::Cow;
use std::sync::RwLock;

/// What a removed credential is replaced with.
pub const HIDDEN: &str = "***";

/// Values shorter than this are not taken for secrets: no store issues one that short, and
/// hiding every `true` or `1` would garble the messages.
const MIN_SECRET_CHARS: usize = 4;

/// Words that make an option, a variable or a query parameter a credential by its name
/// (`aws_secret_access_key`, `AZURE_STORAGE_SAS_KEY`, `X-Amz-Signature`, `sig`, …).
const SECRET_NAME_WORDS: [&str; 7] = ["secret", "token", "password", "key", "sig", "sas", "credential"];

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Whether an option, environment variable or query parameter of this name holds a credential.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAME_WORDS.iter().any(|word| name.contains(word))
}

/// Remember a secret value: from now on it is hidden wherever it appears, as written and
/// percent-encoded (as it appears in a URL). Flags and numbers are not secrets.
pub fn register(value: &str) {
    let value = value.trim();
    if value.chars().count() < MIN_SECRET_CHARS || value.parse::<f64>().is_ok() || value.parse::<bool>().is_ok() {
        return;
    }
    let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    let mut secrets = SECRETS.write().unwrap_or_else(|poisoned| poisoned.into_inner());
    for form in [value.to_string(), encoded.replace('+', "%20"), encoded] {
        if !secrets.contains(&form) {
            secrets.push(form);
        }
    }
    // The longest first, so a secret containing another is hidden whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Remember the credentials a URL carries: its password (and the user name beside it), and
/// the values of its credential query parameters.
pub fn register_url(url: &url::Url) {
    if let Some(password) = url.password() {
        register(password);
        register(url.username());
    }
    for (name, value) in url.query_pairs() {
        if is_secret_name(&name) {
            register(&value);
        }
    }
}

/// `text` without any registered secret and without credentials in the URLs it quotes.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut scrubbed = Cow::Borrowed(text);
    for secret in secrets.iter() {
        if scrubbed.contains(secret.as_str()) {
            scrubbed = Cow::Owned(scrubbed.replace(secret.as_str(), HIDDEN));
        }
    }
    if let Some(text) = hide_user_info(&scrubbed) {
        scrubbed = Cow::Owned(text);
    }
    if let Some(text) = hide_query_secrets(&scrubbed) {
        scrubbed = Cow::Owned(text);
    }
    scrubbed
}

/// Where a URL's authority or a query value ends in running text.
fn ends_url_part(c: char) -> bool {
    c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '(' | ')' | '[' | ']' | '`' | ',')
}

/// `scheme://user:password@host` → `scheme://***@host` (a user name alone, as Azure's
/// `abfss://container@account` has, is no secret and stays). None when nothing changed.
fn hide_user_info(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let authority_end = after.find(ends_url_part).unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(user_end) if authority[..user_end].contains(':') => {
                out.push_str(HIDDEN);
                out.push_str(&after[user_end..authority_end]);
                changed = true;
            }
            _ => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// `?X-Amz-Signature=…&sig=…&token=…` → the values hidden. None when nothing changed.
fn hide_query_secrets(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut chars = text.char_indices().peekable();
    let mut copied_to = 0;
    while let Some((i, c)) = chars.next() {
        if c != '?' && c != '&' {
            continue;
        }
        let name_start = i + 1;
        let name_len = text[name_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .unwrap_or(text.len() - name_start);
        let name = &text[name_start..name_start + name_len];
        let value_start = name_start + name_len + 1;
        if name.is_empty() || !text[name_start + name_len..].starts_with('=') || !is_secret_name(name) {
            continue;
        }
        let value_len =
            text[value_start..].find(|c: char| c == '&' || ends_url_part(c)).unwrap_or(text.len() - value_start);
        if value_len == 0 {
            continue;
        }
        out.push_str(&text[copied_to..value_start]);
        out.push_str(HIDDEN);
        copied_to = value_start + value_len;
        changed = true;
        while chars.peek().is_some_and(|(j, _)| *j < copied_to) {
            chars.next();
        }
    }
    out.push_str(&text[copied_to..]);
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_hidden_whatever_quotes_them() {
        let message = "Error performing GET http://AKID:pa55word@127.0.0.1:9/lake/wh?X-Amz-Signature=abc123&x-id=GetObject \
                       in 1ms - error sending request (https://acct.blob.core.windows.net/c/k?sv=2022&sig=s1gn%2Bature&se=2030)";
        assert_eq!(
            scrub(message),
            "Error performing GET http://***@127.0.0.1:9/lake/wh?X-Amz-Signature=***&x-id=GetObject \
             in 1ms - error sending request (https://acct.blob.core.windows.net/c/k?sv=2022&sig=***&se=2030)"
        );
        // A user name alone is not a secret (Azure's container@account), nor is a plain URL.
        assert_eq!(
            scrub("abfss://container@account.dfs.core.windows.net/wh"),
            "abfss://container@account.dfs.core.windows.net/wh"
        );
        assert_eq!(
            scrub("listing s3://lake/wh/_lock: 404 (NoSuchKey: key?)"),
            "listing s3://lake/wh/_lock: 404 (NoSuchKey: key?)"
        );
    }

    #[test]
    fn registered_secrets_are_hidden_as_written_and_as_a_url_encodes_them() {
        register("wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz");
        register("true");
        register("12345");
        let message =
            "signing with wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz failed for ?k=wJalrXUtnFEMI%2FK7MDENG%2BbPxRfiCYzz, true";
        assert_eq!(scrub(message), "signing with *** failed for ?k=***, true");
        assert_eq!(scrub("12345 rows"), "12345 rows");
    }

    #[test]
    fn names_tell_credentials() {
        for name in ["aws_secret_access_key", "AWS_SESSION_TOKEN", "azure_storage_sas_key", "X-Amz-Signature", "sig"] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["aws_endpoint", "aws_region", "AWS_ALLOW_HTTP", "x-id"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
