//! A YAML document as a tree of located nodes, and a serde `Deserializer` over it.
//!
//! serde-saphyr parses the text into a [`Node`] tree that remembers where each node starts;
//! [`NodeDeserializer`] deserializes typed values from it and gives each error the line, column
//! and field path of its node. It answers two private names: `Located` asks for a position, and
//! `Each` / `EachEntry` for entries read each on its own (see `yaml.rs`).

use std::cell::RefCell;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::MessageFormatter;

use super::yaml::{Position, YamlError};

/// Parse YAML text into a located node tree (syntax errors only).
pub(super) fn parse(text: &str) -> Result<Node, YamlError> {
    if text.trim().is_empty() {
        return Ok(Node { value: Value::Map(Vec::new()), line: 1, column: 1 });
    }
    serde_saphyr::from_str(text).map_err(|e| {
        let position = e.location().map(|l| Position { line: l.line(), column: l.column(), path: String::new() });
        // The message alone: the position is reported separately.
        let message = serde_saphyr::DefaultMessageFormatter.format_message(e.without_snippet());
        let first = message.lines().next().unwrap_or("invalid YAML").trim().replace(char::is_control, " ");
        YamlError { position, message: first }
    })
}

/// One YAML node and where it starts.
pub(super) struct Node {
    value: Value,
    line: u64,
    column: u64,
}

enum Value {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::UInt(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// A scalar as the text a user wrote (where a string is expected and YAML typed it).
    fn scalar_text(&self) -> Option<String> {
        match self {
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::UInt(u) => Some(u.to_string()),
            Value::Float(f) => Some(f.to_string()),
            Value::Str(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// A list or mapping of mappings: entries, such as a source's columns or a pipeline's sources.
    fn holds_entries(&self) -> bool {
        let is_map = |node: &Node| matches!(node.value, Value::Map(_));
        match self {
            Value::Seq(items) => items.iter().any(is_map),
            Value::Map(entries) => entries.iter().any(|(_, v)| is_map(v)),
            _ => false,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<Value>::deserialize(d)?;
        Ok(Node { value: spanned.value, line: spanned.referenced.line(), column: spanned.referenced.column() })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                Ok(i64::try_from(v).map(Value::Int).unwrap_or(Value::UInt(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                Ok(Value::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Str(v.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Value, E> {
                Ok(Value::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Value::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Value::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// The errors of entries that were left out.
pub(super) type Errors = RefCell<Vec<YamlError>>;

/// A serde `Deserializer` over a located [`Node`]: its field path, and where errors go that an
/// entry recorded before it was left out.
pub(super) struct NodeDeserializer<'a> {
    node: &'a Node,
    path: String,
    errors: &'a Errors,
}

impl<'a> NodeDeserializer<'a> {
    pub(super) fn root(node: &'a Node, errors: &'a Errors) -> Self {
        NodeDeserializer { node, path: String::new(), errors }
    }

    /// Deserialize this node with `seed`. An error without a position gets this node's; the error
    /// of an `entry` is recorded too, since its collection leaves it out and goes on.
    pub(super) fn feed<'de, S: DeserializeSeed<'de>>(self, seed: S, entry: bool) -> Result<S::Value, YamlError> {
        let position = Position { line: self.node.line, column: self.node.column, path: self.path.clone() };
        let errors = self.errors;
        seed.deserialize(self).map_err(|mut e| {
            e.position.get_or_insert(position);
            if entry {
                errors.borrow_mut().push(e.clone());
            }
            e
        })
    }

    fn expected<T>(&self, what: &str) -> Result<T, YamlError> {
        Err(de::Error::custom(format!("expected {what}, found {}", self.node.value.kind())))
    }

    /// The items of a list (none for null); with `entries`, each is read on its own.
    fn seq(self, entries: bool) -> NodeSeq<'a> {
        let items: &'a [Node] = match &self.node.value {
            Value::Seq(items) => items,
            _ => &[],
        };
        NodeSeq { items: items.iter().enumerate(), parent: self, entries }
    }

    /// The entries of a mapping (none for null); with `entries`, each value is read on its own.
    /// A struct reads its entries first (`holds_entries`): an error in one of its own fields then
    /// does not hide the errors of its columns or tests.
    fn map(self, is_struct: bool, entries: bool) -> NodeMap<'a> {
        let mut pairs: Vec<&'a (Node, Node)> = match &self.node.value {
            Value::Map(pairs) => pairs.iter().collect(),
            _ => Vec::new(),
        };
        if is_struct {
            pairs.sort_by_key(|(_, value)| !value.value.holds_entries());
        }
        NodeMap { pairs: pairs.into_iter(), value: None, parent: self, entries }
    }

    fn child(&self, node: &'a Node, path: String) -> Self {
        NodeDeserializer { node, path, errors: self.errors }
    }
}

impl<'de> Deserializer<'de> for NodeDeserializer<'_> {
    type Error = YamlError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::UInt(u) => visitor.visit_u64(*u),
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(_) => visitor.visit_seq(self.seq(false)),
            Value::Map(_) => visitor.visit_map(self.map(false, false)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        match self.node.value.scalar_text() {
            Some(text) => visitor.visit_string(text),
            None => self.expected("a string"),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        match self.node.value {
            Value::Seq(_) | Value::Null => visitor.visit_seq(self.seq(false)),
            _ => self.expected("a list"),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        match self.node.value {
            Value::Map(_) | Value::Null => visitor.visit_map(self.map(false, false)),
            _ => self.expected("a mapping"),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, YamlError> {
        match self.node.value {
            Value::Map(_) => visitor.visit_map(self.map(true, false)),
            _ => self.expected("a mapping"),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, YamlError> {
        match &self.node.value {
            Value::Str(s) => {
                let name: de::value::StrDeserializer<'_, YamlError> = s.as_str().into_deserializer();
                visitor.visit_enum(name)
            }
            _ => self.expected("one of the listed names"),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, YamlError> {
        match (name, &self.node.value) {
            (LOCATED, _) => visitor.visit_seq(LocatedSeq { node: Some(self), next: 0 }),
            (EACH, Value::Seq(_)) => visitor.visit_seq(self.seq(true)),
            (EACH, Value::Map(_)) => visitor.visit_map(self.map(false, true)),
            (EACH, _) => self.deserialize_any(visitor),
            _ => visitor.visit_newtype_struct(self),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct
        tuple tuple_struct identifier ignored_any
    }
}

struct NodeSeq<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    parent: NodeDeserializer<'a>,
    entries: bool,
}

impl<'de> SeqAccess<'de> for NodeSeq<'_> {
    type Error = YamlError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, YamlError> {
        let Some((i, item)) = self.items.next() else {
            return Ok(None);
        };
        let path = format!("{}[{i}]", self.parent.path);
        self.parent.child(item, path).feed(seed, self.entries).map(Some)
    }
}

struct NodeMap<'a> {
    pairs: std::vec::IntoIter<&'a (Node, Node)>,
    value: Option<NodeDeserializer<'a>>,
    parent: NodeDeserializer<'a>,
    entries: bool,
}

impl<'de> MapAccess<'de> for NodeMap<'_> {
    type Error = YamlError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, YamlError> {
        let Some((key, value)) = self.pairs.next() else {
            return Ok(None);
        };
        let name = key.value.scalar_text().unwrap_or_else(|| "?".to_string());
        let path = if self.parent.path.is_empty() { name } else { format!("{}.{name}", self.parent.path) };
        self.value = Some(self.parent.child(value, path.clone()));
        self.parent.child(key, path).feed(seed, false).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, YamlError> {
        self.value.take().expect("next_value_seed after next_key_seed").feed(seed, self.entries)
    }
}

/// Name by which `Located` asks [`NodeDeserializer`] for its node's position.
pub(super) const LOCATED: &str = "__keymart_located";
/// Name by which `Each` and `EachEntry` ask [`NodeDeserializer`] to read entries on their own.
pub(super) const EACH: &str = "__keymart_each";

/// Feeds a `Located` visitor: line, column, path, then the value.
struct LocatedSeq<'a> {
    node: Option<NodeDeserializer<'a>>,
    next: u8,
}

impl<'de> SeqAccess<'de> for LocatedSeq<'_> {
    type Error = YamlError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, YamlError> {
        let Some(d) = &self.node else {
            return Ok(None);
        };
        self.next += 1;
        match self.next {
            1 => seed.deserialize(d.node.line.into_deserializer()).map(Some),
            2 => seed.deserialize(d.node.column.into_deserializer()).map(Some),
            3 => seed.deserialize(d.path.as_str().into_deserializer()).map(Some),
            _ => self.node.take().expect("checked above").feed(seed, false).map(Some),
        }
    }
}
