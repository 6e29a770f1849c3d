//! YAML → typed config with every error located, and as many errors as possible per file.
//!
//! serde-saphyr parses the text into a [`Node`] tree that remembers where every node stands
//! (line, column, field path). Typed structs are then deserialized from that tree by
//! [`NodeDeserializer`]. Because the tree is already in memory, a failure inside one element of a
//! list or one entry of a map does not stop the others: the failed entry is skipped, its error is
//! kept, and deserialization goes on — so one `keymart check` shows every broken column and
//! source at once. Structs stay strict (`deny_unknown_fields` in the config types).

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};

/// Where a YAML node stands: 1-based line and column, and the field path from the document root.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    pub line: u64,
    pub column: u64,
    pub path: String,
}

/// One YAML node with its position.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: NodeValue,
    pub position: Position,
}

#[derive(Debug, Clone)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl NodeValue {
    fn kind(&self) -> &'static str {
        match self {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) | NodeValue::UInt(_) => "an integer",
            NodeValue::Float(_) => "a number",
            NodeValue::Str(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
        }
    }

    /// A scalar as the text a user wrote (used where a string is expected and YAML typed it).
    fn scalar_text(&self) -> Option<String> {
        match self {
            NodeValue::Bool(b) => Some(b.to_string()),
            NodeValue::Int(i) => Some(i.to_string()),
            NodeValue::UInt(u) => Some(u.to_string()),
            NodeValue::Float(f) => Some(f.to_string()),
            NodeValue::Str(s) => Some(s.clone()),
            _ => None,
        }
    }
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
            Some(p) if !p.path.is_empty() => {
                write!(f, "{}:{}: {}: {}", p.line, p.column, p.path, self.message)
            }
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

impl YamlError {
    /// Give an error without a position the position of the node being deserialized.
    fn at(mut self, node: &Node) -> Self {
        if self.position.is_none() && !self.is_marker() {
            self.position = Some(node.position.clone());
        }
        self
    }
}

/// Parse `text` and deserialize it into `T`. Returns the value only when there was no error at
/// all; otherwise every error found, in document order.
pub fn from_str<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, Vec<YamlError>> {
    match from_str_partial(text) {
        (Some(value), errors) if errors.is_empty() => Ok(value),
        (_, errors) => Err(errors),
    }
}

/// Parse and deserialize as far as possible: the value with the entries that failed left out
/// (`None` when even the top level failed), and every error found, in document order.
pub fn from_str_partial<T: for<'de> Deserialize<'de>>(text: &str) -> (Option<T>, Vec<YamlError>) {
    let root = match parse_tree(text) {
        Ok(root) => root,
        Err(e) => return (None, vec![e]),
    };
    let sink = Rc::new(RefCell::new(Vec::new()));
    let result = T::deserialize(NodeDeserializer { node: &root, sink: sink.clone() });
    let mut errors = sink.take();
    let value = match result {
        Ok(value) => Some(value),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    errors.sort_by_key(|e| e.position.as_ref().map(|p| (p.line, p.column)));
    // A retried entry (see `Recovery`) reads its nested collections again.
    errors.dedup();
    (value, errors)
}

/// Parse YAML text into a located node tree (syntax errors only).
pub fn parse_tree(text: &str) -> Result<Node, YamlError> {
    if text.trim().is_empty() {
        return Ok(Node {
            value: NodeValue::Map(Vec::new()),
            position: Position { line: 1, column: 1, path: String::new() },
        });
    }
    let mut root: RawNode = serde_saphyr::from_str(text).map_err(|e| {
        let position = e.location().map(|l| Position { line: l.line(), column: l.column(), path: String::new() });
        YamlError { position, message: first_line(&e.without_snippet().to_string()) }
    })?;
    Ok(root.take_with_path(String::new()))
}

fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or("invalid YAML").trim();
    // serde-saphyr appends " at line L column C"; the position is reported separately.
    match line.rfind(" at line ") {
        Some(cut) => line[..cut].to_string(),
        None => line.to_string(),
    }
}

/// The tree as serde-saphyr hands it over, before field paths are filled in.
struct RawNode {
    value: RawValue,
    line: u64,
    column: u64,
}

enum RawValue {
    Scalar(NodeValue),
    Seq(Vec<RawNode>),
    Map(Vec<(RawNode, RawNode)>),
}

impl RawNode {
    fn take_with_path(&mut self, path: String) -> Node {
        let value = match std::mem::replace(&mut self.value, RawValue::Scalar(NodeValue::Null)) {
            RawValue::Scalar(v) => v,
            RawValue::Seq(items) => NodeValue::Seq(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut item)| item.take_with_path(format!("{path}[{i}]")))
                    .collect(),
            ),
            RawValue::Map(entries) => NodeValue::Map(
                entries
                    .into_iter()
                    .map(|(mut k, mut v)| {
                        let key_text = match &k.value {
                            RawValue::Scalar(s) => s.scalar_text().unwrap_or_default(),
                            _ => "?".to_string(),
                        };
                        let child = if path.is_empty() { key_text } else { format!("{path}.{key_text}") };
                        (k.take_with_path(child.clone()), v.take_with_path(child))
                    })
                    .collect(),
            ),
        };
        Node { value, position: Position { line: self.line, column: self.column, path } }
    }
}

impl<'de> Deserialize<'de> for RawNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned: serde_saphyr::Spanned<RawValue> = serde_saphyr::Spanned::deserialize(d)?;
        Ok(RawNode { value: spanned.value, line: spanned.referenced.line(), column: spanned.referenced.column() })
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(NodeValue::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(NodeValue::Int(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(match i64::try_from(v) {
                    Ok(i) => NodeValue::Int(i),
                    Err(_) => NodeValue::UInt(v),
                }))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(NodeValue::Float(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(NodeValue::Str(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(NodeValue::Str(v)))
            }
            fn visit_unit<E>(self) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(NodeValue::Null))
            }
            fn visit_none<E>(self) -> Result<RawValue, E> {
                Ok(RawValue::Scalar(NodeValue::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
                RawValue::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<RawNode>()? {
                    items.push(item);
                }
                Ok(RawValue::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<RawNode, RawNode>()? {
                    entries.push(entry);
                }
                Ok(RawValue::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Errors of entries that were skipped so that their siblings could still be checked.
type ErrorSink = Rc<RefCell<Vec<YamlError>>>;

/// A serde `Deserializer` over a located [`Node`].
pub struct NodeDeserializer<'a> {
    node: &'a Node,
    sink: ErrorSink,
}

impl<'a> NodeDeserializer<'a> {
    fn invalid_type(&self, expected: &str) -> YamlError {
        <YamlError as de::Error>::custom(format!("expected {expected}, found {}", self.node.value.kind())).at(self.node)
    }

    /// With `lenient`, a failed entry is recorded in the sink and skipped (see [`Each`]);
    /// otherwise the first error ends the collection.
    fn visit_collection<'de, V: Visitor<'de>>(self, visitor: V, lenient: bool) -> Result<V::Value, YamlError> {
        let node = self.node;
        let result = match &node.value {
            NodeValue::Seq(items) => visitor.visit_seq(NodeSeq {
                items: items.iter(),
                sink: self.sink.clone(),
                lenient,
                recovery: Recovery::default(),
            }),
            NodeValue::Map(entries) => visitor.visit_map(NodeMap {
                entries: entries.iter(),
                value: None,
                sink: self.sink.clone(),
                lenient,
                recovery: Recovery::default(),
            }),
            _ => return Err(self.invalid_type("a list or mapping")),
        };
        result.map_err(|e| e.at(node))
    }
}

impl<'de, 'a> Deserializer<'de> for NodeDeserializer<'a> {
    type Error = YamlError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        let node = self.node;
        let result: Result<V::Value, YamlError> = match &node.value {
            NodeValue::Null => visitor.visit_unit(),
            NodeValue::Bool(b) => visitor.visit_bool(*b),
            NodeValue::Int(i) => visitor.visit_i64(*i),
            NodeValue::UInt(u) => visitor.visit_u64(*u),
            NodeValue::Float(f) => visitor.visit_f64(*f),
            NodeValue::Str(s) => visitor.visit_str(s),
            NodeValue::Seq(_) | NodeValue::Map(_) => return self.visit_collection(visitor, false),
        };
        result.map_err(|e| e.at(node))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        match self.node.value {
            NodeValue::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        let node = self.node;
        match node.value.scalar_text() {
            Some(text) => visitor.visit_string::<YamlError>(text).map_err(|e| e.at(node)),
            None => Err(self.invalid_type("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        match self.node.value {
            NodeValue::Seq(_) => self.visit_collection(visitor, false),
            NodeValue::Null => visitor.visit_seq(NodeSeq {
                items: [].iter(),
                sink: self.sink,
                lenient: false,
                recovery: Recovery::default(),
            }),
            _ => Err(self.invalid_type("a list")),
        }
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, YamlError> {
        match self.node.value {
            NodeValue::Map(_) => self.visit_collection(visitor, false),
            NodeValue::Null => visitor.visit_map(NodeMap {
                entries: [].iter(),
                value: None,
                sink: self.sink,
                lenient: false,
                recovery: Recovery::default(),
            }),
            _ => Err(self.invalid_type("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, YamlError> {
        match self.node.value {
            NodeValue::Map(_) => self.visit_collection(visitor, false),
            _ => Err(self.invalid_type("a mapping")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, YamlError> {
        let node = self.node;
        match &node.value {
            NodeValue::Str(s) => {
                let access: de::value::StrDeserializer<'_, YamlError> = s.as_str().into_deserializer();
                visitor.visit_enum(access).map_err(|e| e.at(node))
            }
            _ => Err(self.invalid_type("one of the listed names")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, YamlError> {
        if name == LOCATED_MARKER {
            return visitor.visit_seq(LocatedSeq { node: self.node, sink: self.sink, next: 0 });
        }
        if name == EACH_MARKER {
            return match self.node.value {
                NodeValue::Seq(_) | NodeValue::Map(_) => self.visit_collection(visitor, true),
                NodeValue::Null => visitor.visit_unit(),
                _ => Err(self.invalid_type("a list or mapping")),
            };
        }
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit unit_struct
        tuple tuple_struct identifier ignored_any
    }
}

struct NodeSeq<'a> {
    items: std::slice::Iter<'a, Node>,
    sink: ErrorSink,
    lenient: bool,
    recovery: Recovery,
}

impl<'de, 'a> SeqAccess<'de> for NodeSeq<'a> {
    type Error = YamlError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, YamlError> {
        if let Some(pruned) = self.recovery.node.take() {
            let attempt = seed.deserialize(NodeDeserializer { node: &pruned, sink: self.sink.clone() });
            return Err(self.recovery.after_retry(&self.sink, &pruned, attempt.err()));
        }
        let Some(item) = self.items.next() else {
            return Ok(None);
        };
        match seed.deserialize(NodeDeserializer { node: item, sink: self.sink.clone() }) {
            Ok(value) => Ok(Some(value)),
            Err(e) if self.lenient => Err(self.recovery.failed(&self.sink, item, e)),
            Err(e) => Err(e.at(item)),
        }
    }
}

struct NodeMap<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
    sink: ErrorSink,
    lenient: bool,
    recovery: Recovery,
}

impl<'de, 'a> MapAccess<'de> for NodeMap<'a> {
    type Error = YamlError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, YamlError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(NodeDeserializer { node: key, sink: self.sink.clone() })
                    .map(Some)
                    .map_err(|e| e.at(key))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, YamlError> {
        if let Some(pruned) = self.recovery.node.take() {
            let attempt = seed.deserialize(NodeDeserializer { node: &pruned, sink: self.sink.clone() });
            return Err(self.recovery.after_retry(&self.sink, &pruned, attempt.err()));
        }
        let node = self.value.take().expect("next_value_seed before next_key_seed");
        match seed.deserialize(NodeDeserializer { node, sink: self.sink.clone() }) {
            Ok(v) => Ok(v),
            Err(e) if self.lenient => Err(self.recovery.failed(&self.sink, node, e)),
            Err(e) => Err(e.at(node)),
        }
    }
}

/// Error recovery inside one entry of a lenient collection. Derived struct deserializers stop at
/// their first error, so after an error the failing part is pruned from a copy of the entry and
/// the entry is read again: the errors further on in it are found too. The entry itself is
/// dropped either way (its error is already recorded).
#[derive(Default)]
struct Recovery {
    /// The pruned copy to read next, when a retry is due.
    node: Option<Node>,
    pruned: Vec<String>,
    attempts: u32,
}

const MAX_RECOVERY_ATTEMPTS: u32 = 32;

impl Recovery {
    /// Record an error of `entry`; returns the marker telling the collection to retry or skip.
    fn failed(&mut self, sink: &ErrorSink, entry: &Node, error: YamlError) -> YamlError {
        let error = error.at(entry);
        if !self.is_consequence(&error) {
            sink.borrow_mut().push(error.clone());
        }
        let path = error.position.as_ref().map(|p| p.path.clone()).unwrap_or_default();
        let pruned = (self.attempts < MAX_RECOVERY_ATTEMPTS && path != entry.position.path)
            .then(|| prune(entry, &path))
            .flatten();
        match pruned {
            Some(node) => {
                self.pruned.push(path);
                self.attempts += 1;
                self.node = Some(node);
                YamlError::retry()
            }
            None => {
                *self = Recovery::default();
                YamlError::skip()
            }
        }
    }

    /// After reading a pruned copy: on success the entry is done (and dropped); on error, go on.
    fn after_retry(&mut self, sink: &ErrorSink, pruned: &Node, error: Option<YamlError>) -> YamlError {
        match error {
            Some(e) => self.failed(sink, pruned, e),
            None => {
                *self = Recovery::default();
                YamlError::skip()
            }
        }
    }

    /// "missing field `x`" for a field this recovery pruned is not a new problem.
    fn is_consequence(&self, error: &YamlError) -> bool {
        let Some(field) = error.message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) else {
            return false;
        };
        let parent = error.position.as_ref().map(|p| p.path.as_str()).unwrap_or_default();
        let child = if parent.is_empty() { field.to_string() } else { format!("{parent}.{field}") };
        self.pruned.contains(&child)
    }
}

/// A copy of `node` without the map entry or list element whose path is `path`.
fn prune(node: &Node, path: &str) -> Option<Node> {
    let mut copy = node.clone();
    remove_path(&mut copy, path).then_some(copy)
}

fn remove_path(node: &mut Node, path: &str) -> bool {
    match &mut node.value {
        NodeValue::Map(entries) => {
            if let Some(i) = entries.iter().position(|(k, v)| k.position.path == path || v.position.path == path) {
                entries.remove(i);
                return true;
            }
            entries.iter_mut().any(|(_, v)| remove_path(v, path))
        }
        NodeValue::Seq(items) => {
            if let Some(i) = items.iter().position(|item| item.position.path == path) {
                items.remove(i);
                return true;
            }
            items.iter_mut().any(|item| remove_path(item, path))
        }
        _ => false,
    }
}

/// Marker errors (the real error is already in the sink): skip to the next entry, or read the
/// current entry again after pruning. Generic code sees them only through `Display`.
const SKIP_MARK: &str = "";
const RETRY_MARK: &str = "\u{1}";

impl YamlError {
    fn skip() -> YamlError {
        YamlError { position: None, message: SKIP_MARK.to_string() }
    }

    fn retry() -> YamlError {
        YamlError { position: None, message: RETRY_MARK.to_string() }
    }

    fn is_marker(&self) -> bool {
        self.position.is_none() && (self.message == SKIP_MARK || self.message == RETRY_MARK)
    }
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

const LOCATED_MARKER: &str = "__keymart_located";

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Located<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a located value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Located<T>, A::Error> {
                let missing = || de::Error::custom("incomplete located value");
                let line: u64 = seq.next_element()?.ok_or_else(missing)?;
                let column: u64 = seq.next_element()?.ok_or_else(missing)?;
                let path: String = seq.next_element()?.ok_or_else(missing)?;
                let value: T = seq.next_element()?.ok_or_else(missing)?;
                Ok(Located { value, position: Position { line, column, path } })
            }
        }
        d.deserialize_newtype_struct(LOCATED_MARKER, V(std::marker::PhantomData))
    }
}

/// Feeds a [`Located`] visitor: line, column, path, then the node itself.
struct LocatedSeq<'a> {
    node: &'a Node,
    sink: ErrorSink,
    next: u8,
}

impl<'de, 'a> SeqAccess<'de> for LocatedSeq<'a> {
    type Error = YamlError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, YamlError> {
        self.next += 1;
        let p = &self.node.position;
        match self.next {
            1 => seed.deserialize(p.line.into_deserializer()).map(Some),
            2 => seed.deserialize(p.column.into_deserializer()).map(Some),
            3 => seed.deserialize(p.path.as_str().into_deserializer()).map(Some),
            4 => seed.deserialize(NodeDeserializer { node: self.node, sink: self.sink.clone() }).map(Some),
            _ => Ok(None),
        }
    }
}

/// Name by which [`Each`] and [`EachEntry`] ask [`NodeDeserializer`] for lenient iteration.
const EACH_MARKER: &str = "__keymart_each";

/// A list that drops elements that failed to deserialize (their errors are in the file's sink).
/// Use it for every list or map in the config whose elements should be checked independently.
#[derive(Debug, Clone, PartialEq)]
pub struct Each<T>(pub Vec<T>);

impl<T> Default for Each<T> {
    fn default() -> Self {
        Each(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Each<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Each<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list")
            }
            fn visit_unit<E>(self) -> Result<Each<T>, E> {
                Ok(Each(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Each<T>, A::Error> {
                let mut items = Vec::new();
                loop {
                    match seq.next_element::<T>() {
                        Ok(Some(item)) => items.push(item),
                        Ok(None) => return Ok(Each(items)),
                        Err(e) if is_mark(&e, SKIP_MARK) || is_mark(&e, RETRY_MARK) => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        d.deserialize_newtype_struct(EACH_MARKER, V(std::marker::PhantomData))
    }
}

/// An ordered map (YAML order kept) that drops entries that failed to deserialize.
#[derive(Debug, Clone, PartialEq)]
pub struct EachEntry<T>(pub Vec<(String, T)>);

impl<T> Default for EachEntry<T> {
    fn default() -> Self {
        EachEntry(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for EachEntry<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = EachEntry<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_unit<E>(self) -> Result<EachEntry<T>, E> {
                Ok(EachEntry(Vec::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EachEntry<T>, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    loop {
                        match map.next_value::<T>() {
                            Ok(value) => entries.push((key.clone(), value)),
                            Err(e) if is_mark(&e, RETRY_MARK) => continue,
                            Err(e) if is_mark(&e, SKIP_MARK) => {}
                            Err(e) => return Err(e),
                        }
                        break;
                    }
                }
                Ok(EachEntry(entries))
            }
        }
        d.deserialize_newtype_struct(EACH_MARKER, V(std::marker::PhantomData))
    }
}

/// Whether a deserializer error is one of the recovery markers. Generic errors can only be
/// inspected through `Display`; a marker displays as its mark alone.
fn is_mark<E: de::Error>(e: &E, mark: &str) -> bool {
    e.to_string() == mark
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
        columns: Each<Located<Column>>,
        #[serde(default)]
        limits: EachEntry<u32>,
    }

    #[test]
    fn reports_every_broken_element_with_its_position() {
        let text = "columns:\n  - name: a\n  - name: b\n    nulable: true\n  - name: c\n    nullable: maybe\nlimits:\n  first: 1\n  second: -2\n";
        let errors = from_str::<Doc>(text).unwrap_err();
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown.len(), 3, "{shown:#?}");
        assert!(shown[0].starts_with("4:5: columns[1].nulable: unknown field `nulable`"), "{}", shown[0]);
        assert!(shown[1].starts_with("6:15: columns[2].nullable: "), "{}", shown[1]);
        assert!(shown[2].starts_with("9:11: limits.second: "), "{}", shown[2]);
    }

    #[test]
    fn keeps_good_elements_and_order() {
        let doc: Doc = from_str("columns:\n  - name: a\n  - name: 7\nlimits:\n  z: 3\n  a: 4\n").unwrap();
        assert_eq!(doc.columns.0.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "7"]);
        assert_eq!(doc.limits.0, vec![("z".to_string(), 3), ("a".to_string(), 4)]);
        assert!(doc.columns.0[0].nullable.is_none());
        assert_eq!(doc.columns.0[1].position.line, 3);
        assert_eq!(doc.columns.0[1].position.path, "columns[1]");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let errors = from_str::<Doc>("columns:\n  - name: [a\n").unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].position.as_ref().unwrap().line >= 2, "{:?}", errors[0]);
    }
}
