//! One JSON-lines record: its object's entries, and each scalar as field text.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::values::FieldError;
use crate::config::contract::reason;

pub type JsonObject<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

pub fn parse_json_object(line: &[u8]) -> Result<JsonObject<'_>, FieldError> {
    let text = std::str::from_utf8(line).map_err(|e| {
        FieldError::new(reason::INVALID_ENCODING, format!("not valid UTF-8 at byte {}", e.valid_up_to()))
    })?;
    let Entries(mut entries) = serde_json::from_str(text)
        .map_err(|e| FieldError::new(reason::INVALID_JSON, format!("not a JSON object: {e}")))?;
    // Sorted by key, so the first unexpected key reported is the same whatever the field order;
    // a repeated key keeps its last value, as a JSON map would.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            earlier.1 = later.1;
        }
        same
    });
    Ok(entries)
}

/// A JSON object's entries in a Vec, keys borrowed from the line unless they hold escapes: a map
/// per record (and an owned String per key) was a fifth of the JSON-lines ingest in malloc/free.
struct Entries<'a>(JsonObject<'a>);

impl<'de> serde::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some((JsonText(key), value)) = map.next_entry::<JsonText<'de>, &'de RawValue>()? {
                    entries.push((key, value));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

/// A JSON string (a key or a value) borrowed from the line unless it holds escapes (serde's `borrow`
/// does the choosing).
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct JsonText<'a>(#[serde(borrow)] Cow<'a, str>);

/// A JSON scalar as field text: strings unescaped, numbers as written, `null` as no value.
pub fn json_scalar_text(raw: &RawValue) -> Result<Option<Cow<'_, str>>, FieldError> {
    let text = raw.get();
    match text.as_bytes().first() {
        // Borrowed from the line unless it holds escapes (a plain `Cow<str>` always allocates).
        Some(b'"') => serde_json::from_str::<JsonText>(text)
            .map(|JsonText(text)| Some(text))
            .map_err(|e| FieldError::new(reason::INVALID_JSON, e.to_string())),
        Some(b'n') => Ok(None),
        Some(b'{') | Some(b'[') => Err(FieldError::new(reason::INVALID_VALUE, format!("`{text}` is not a scalar"))),
        _ => Ok(Some(Cow::Borrowed(text))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_are_sorted_by_key_and_a_repeated_key_keeps_its_last_value() {
        let entries = parse_json_object(br#"{"b":1,"a\u0062":"x","a":2,"b":[3]}"#).unwrap();
        let seen: Vec<(&str, &str)> = entries.iter().map(|(k, v)| (k.as_ref(), v.get())).collect();
        assert_eq!(seen, [("a", "2"), ("ab", "\"x\""), ("b", "[3]")]);
        assert!(matches!(entries[0].0, Cow::Borrowed(_)), "plain keys are borrowed from the line");
        assert_eq!(parse_json_object(b"[1]").unwrap_err().reason, reason::INVALID_JSON);
    }

    #[test]
    fn json_strings_are_unescaped_and_borrowed_when_they_need_no_unescaping() {
        fn text(json: &str) -> Option<Cow<'_, str>> {
            json_scalar_text(serde_json::from_str::<&RawValue>(json).unwrap()).unwrap()
        }
        let plain = text(r#""DHL 顺丰""#).unwrap();
        assert_eq!(plain, "DHL 顺丰");
        assert!(matches!(plain, Cow::Borrowed(_)), "a string without escapes is borrowed from the line");
        assert_eq!(text(r#""a\"b\nc\u00e9""#).unwrap(), "a\"b\nc\u{e9}");
        assert_eq!(text("12.50").unwrap(), "12.50");
        assert_eq!(text("null"), None);
        let nested = serde_json::from_str::<&RawValue>("[1]").unwrap();
        assert_eq!(json_scalar_text(nested).unwrap_err().reason, reason::INVALID_VALUE);
    }
}
