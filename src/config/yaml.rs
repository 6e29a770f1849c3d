//! YAML → typed config, every error located, every entry read on its own.
//!
//! The text is parsed into a tree of located nodes (`node.rs`), and typed values are
//! deserialized from it, so each error comes with the line, column and field path of its node.
//! The lists and maps of entries of the config (sources, columns, vars, models, tests) are
//! [`Each`] and [`EachEntry`]: each entry is deserialized on its own from its node, so a bad entry
//! records its error and is left out while its siblings are still read — one `keymart check`
//! shows every broken entry. Structs stay strict (`deny_unknown_fields` in the config types);
//! semantic checks are `validate.rs`'s.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::node::{self, EACH, LOCATED, NodeDeserializer};

/// Where a YAML node stands: 1-based line and column, and the field path from the document root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    pub line: u64,
    pub column: u64,
    pub path: String,
}

/// A located error from parsing or deserializing one YAML file.
#[derive(Debug, Clone, PartialEq)]
pub struct YamlError {
    pub position: Option<Position>,
    pub message: String,
}

impl fmt::Display for YamlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.position {
            Some(p) if !p.path.is_empty() => write!(f, "{}:{}: {}: {}", p.line, p.column, p.path, self.message),
            Some(p) => write!(f, "{}:{}: {}", p.line, p.column, self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for YamlError {}

impl de::Error for YamlError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        YamlError { position: None, message: msg.to_string() }
    }
}

/// Parse and deserialize `text`: the value, with the entries that failed left out (`None` when
/// the document as a whole failed), and every error found, in document order.
pub fn read<T: for<'de> Deserialize<'de>>(text: &str) -> (Option<T>, Vec<YamlError>) {
    let root = match node::parse(text) {
        Ok(root) => root,
        Err(e) => return (None, vec![e]),
    };
    let errors = RefCell::new(Vec::new());
    let value = NodeDeserializer::root(&root, &errors).feed(PhantomData, true).ok();
    let mut errors = errors.into_inner();
    errors.sort_by_key(|e| e.position.as_ref().map(|p| (p.line, p.column)));
    (value, errors)
}

/// A value together with where it stands in the YAML file, for errors found after parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    pub value: T,
    pub position: Position,
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Default> Default for Located<T> {
    fn default() -> Self {
        Located { value: T::default(), position: Position::default() }
    }
}

impl<T> Located<T> {
    pub fn new(value: T, position: Position) -> Self {
        Located { value, position }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Located<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a located value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Located<T>, A::Error> {
                let missing = || de::Error::custom("incomplete located value");
                let line = seq.next_element()?.ok_or_else(missing)?;
                let column = seq.next_element()?.ok_or_else(missing)?;
                let path = seq.next_element()?.ok_or_else(missing)?;
                let value = seq.next_element()?.ok_or_else(missing)?;
                Ok(Located { value, position: Position { line, column, path } })
            }
        }
        d.deserialize_newtype_struct(LOCATED, V(PhantomData))
    }
}

/// A list of entries, each read on its own: one that fails is left out (its error is recorded
/// with the file's errors) and the others are still read.
#[derive(Debug, Clone, PartialEq)]
pub struct Each<T> {
    pub entries: Vec<T>,
    /// How many entries failed and were left out.
    pub failed: usize,
}

/// A mapping of entries (YAML order kept), each read on its own like those of [`Each`].
#[derive(Debug, Clone, PartialEq)]
pub struct EachEntry<T>(pub Vec<(String, T)>);

impl<T> Default for Each<T> {
    fn default() -> Self {
        Each { entries: Vec::new(), failed: 0 }
    }
}

impl<T> Default for EachEntry<T> {
    fn default() -> Self {
        EachEntry(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Each<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Each<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_unit<E>(self) -> Result<Each<T>, E> {
                Ok(Each::default())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Each<T>, A::Error> {
                let mut each = Each::default();
                loop {
                    match seq.next_element() {
                        Ok(Some(entry)) => each.entries.push(entry),
                        Ok(None) => return Ok(each),
                        // The entry's error, recorded by `NodeDeserializer::feed`: leave it out.
                        Err(_) => each.failed += 1,
                    }
                }
            }
        }
        d.deserialize_newtype_struct(EACH, V(PhantomData))
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for EachEntry<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = EachEntry<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E>(self) -> Result<EachEntry<T>, E> {
                Ok(EachEntry::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EachEntry<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    // An error is the entry's, recorded by `NodeDeserializer::feed`: leave it out.
                    if let Ok(value) = map.next_value() {
                        entries.push((key, value));
                    }
                }
                Ok(EachEntry(entries))
            }
        }
        d.deserialize_newtype_struct(EACH, V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Column {
        name: String,
        #[serde(default)]
        nullable: Option<bool>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        kind: Option<u8>,
        columns: Each<Located<Column>>,
        #[serde(default)]
        limits: EachEntry<u32>,
    }

    fn shown(text: &str) -> Vec<String> {
        read::<Doc>(text).1.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn reports_every_broken_element_with_its_position() {
        let text = "columns:\n  - name: a\n  - name: b\n    nulable: true\n  - name: c\n    nullable: maybe\nlimits:\n  first: 1\n  second: -2\n";
        let shown = shown(text);
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(shown[0].starts_with("4:5: columns[1].nulable: unknown field `nulable`"), "{}", shown[0]);
        assert!(shown[1].starts_with("6:15: columns[2].nullable: "), "{}", shown[1]);
        assert!(shown[2].starts_with("9:11: limits.second: "), "{}", shown[2]);
    }

    #[test]
    fn keeps_good_elements_and_order() {
        let (doc, errors) = read::<Doc>("columns:\n  - name: a\n  - name: 7\n  - nme: x\nlimits:\n  z: 3\n  a: 4\n");
        let doc = doc.unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(doc.columns.entries.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "7"]);
        assert_eq!(doc.columns.failed, 1);
        assert_eq!(doc.limits.0, vec![("z".to_string(), 3), ("a".to_string(), 4)]);
        assert!(doc.columns.entries[0].nullable.is_none() && doc.kind.is_none());
        assert_eq!(doc.columns.entries[1].position.line, 3);
        assert_eq!(doc.columns.entries[1].position.path, "columns[1]");
    }

    #[test]
    fn an_error_in_a_field_does_not_hide_the_errors_of_the_entries_after_it() {
        let shown = shown("kind: 300\ncolumns:\n  - name: [a]\n");
        assert_eq!(shown.len(), 2, "{shown:#?}");
        assert!(shown[0].starts_with("1:7: kind: "), "{}", shown[0]);
        assert_eq!(shown[1], "3:11: columns[0].name: expected a string, found a list");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let (doc, errors) = read::<Doc>("columns:\n  - name: [a\n");
        assert!(doc.is_none());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].position.as_ref().unwrap().line >= 2, "{:?}", errors[0]);
    }
}
