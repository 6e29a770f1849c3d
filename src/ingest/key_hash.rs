//! A row's primary key as one 128-bit hash, and a key value as the text referenced keys are held in.

use std::borrow::Cow;

use super::values::Value;

/// A key value as text, the form in which referenced keys are held.
pub fn key_text<'v>(value: &'v Value) -> Cow<'v, str> {
    match value {
        Value::Null => Cow::Borrowed(""),
        Value::Str(s) => Cow::Borrowed(s.as_ref()),
        Value::Int(i) => Cow::Owned(i.to_string()),
        Value::Decimal(d) => Cow::Owned(d.to_string()),
        Value::Date(d) => Cow::Owned(d.to_string()),
        Value::Timestamp(t) => Cow::Owned(t.to_string()),
        Value::Bool(b) => Cow::Owned(b.to_string()),
        Value::Float(f) => Cow::Owned(f.to_string()),
    }
}

/// 128 bits: the chance that two different keys of a 100M-row load collide is about 1e-23, so a
/// hash set of these stands in for a set of the keys themselves at a fraction of the memory (the
/// same holds for the referenced keys of a `KeySet`). The bytes hashed tell every two different
/// keys apart: each value is marked null or not, and a string carries its length.
pub fn key_hash<'v>(values: impl Iterator<Item = &'v Value<'v>>) -> u128 {
    let mut bytes = KeyBytes::default();
    for value in values {
        bytes.push(&[u8::from(!matches!(value, Value::Null))]);
        match value {
            Value::Null => {}
            Value::Str(s) => {
                bytes.push(&(s.len() as u64).to_le_bytes());
                bytes.push(s.as_bytes());
            }
            Value::Int(i) => bytes.push(&i.to_le_bytes()),
            Value::Decimal(d) => bytes.push(&d.to_le_bytes()),
            Value::Date(d) => bytes.push(&d.to_le_bytes()),
            Value::Timestamp(t) => bytes.push(&t.to_le_bytes()),
            Value::Bool(b) => bytes.push(&[*b as u8]),
            Value::Float(f) => bytes.push(&f.to_bits().to_le_bytes()),
        }
    }
    xxhash_rust::xxh3::xxh3_128(bytes.as_slice())
}

/// A row's key bytes: on the stack (a key is an id or two), on the heap only when longer. A
/// `Vec` per row was an allocation and a free per row of every load with a primary key.
struct KeyBytes {
    stack: [u8; 128],
    len: usize,
    heap: Option<Vec<u8>>,
}

impl Default for KeyBytes {
    fn default() -> Self {
        KeyBytes { stack: [0; 128], len: 0, heap: None }
    }
}

impl KeyBytes {
    fn push(&mut self, bytes: &[u8]) {
        match &mut self.heap {
            Some(heap) => heap.extend_from_slice(bytes),
            None if self.len + bytes.len() <= self.stack.len() => {
                self.stack[self.len..self.len + bytes.len()].copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.heap = Some([&self.stack[..self.len], bytes].concat()),
        }
    }

    fn as_slice(&self) -> &[u8] {
        self.heap.as_deref().unwrap_or(&self.stack[..self.len])
    }
}
