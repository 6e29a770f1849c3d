//! Just enough XML for the parts of an .xlsx package: elements with their attributes, text, CDATA,
//! the five named entities and character references. Processing instructions, comments and a
//! DOCTYPE are skipped; names are compared without their namespace prefix (`x:row` is `row`).
//!
//! Why not a general XML reader: a sheet is hundreds of megabytes of one small vocabulary
//! (`<row>`, `<c>`, `<v>`, `<is><t>`), and a tokenizer that finds each `<` and `>` with memchr and
//! hands out slices of the input reads it faster than an event reader that decodes and checks
//! every name.

use std::borrow::Cow;

use memchr::{memchr, memchr3, memmem};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// `<name attributes>`, or `<name attributes/>` when `closed`.
    Start {
        name: &'a [u8],
        qualified: &'a [u8],
        attributes: &'a [u8],
        closed: bool,
    },
    End {
        name: &'a [u8],
    },
    /// Character data as written: entities not yet decoded.
    Text(&'a [u8]),
    /// The content of `<![CDATA[…]]>`: taken as it is.
    CData(&'a [u8]),
}

/// The input ends inside markup (a tag without its `>`, an open comment or CDATA section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Incomplete;

pub struct Tokens<'a> {
    xml: &'a [u8],
    pos: usize,
}

impl<'a> Tokens<'a> {
    pub fn new(xml: &'a [u8]) -> Self {
        Tokens { xml, pos: 0 }
    }

    /// Bytes read so far: where the next token starts.
    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn rest(&self) -> &'a [u8] {
        &self.xml[self.pos..]
    }

    /// Move on to `pos` (an offset into the input past the current position).
    pub fn skip_to(&mut self, pos: usize) {
        debug_assert!(pos >= self.pos && pos <= self.xml.len());
        self.pos = pos;
    }

    /// The next token, `Ok(None)` at the end of the input. On `Err(Incomplete)` nothing is
    /// consumed, so a caller streaming a larger document can append input and ask again.
    pub fn next_token(&mut self) -> Result<Option<Token<'a>>, Incomplete> {
        loop {
            let rest = &self.xml[self.pos..];
            if rest.is_empty() {
                return Ok(None);
            }
            if rest[0] != b'<' {
                let len = memchr(b'<', rest).unwrap_or(rest.len());
                self.pos += len;
                return Ok(Some(Token::Text(&rest[..len])));
            }
            if rest.starts_with(b"<?") {
                self.pos += past(rest, b"?>")?;
                continue;
            }
            if rest.starts_with(b"<!--") {
                self.pos += past(rest, b"-->")?;
                continue;
            }
            if let Some(body) = rest.strip_prefix(b"<![CDATA[") {
                let end = memmem::find(body, b"]]>").ok_or(Incomplete)?;
                self.pos += 9 + end + 3;
                return Ok(Some(Token::CData(&body[..end])));
            }
            if rest.starts_with(b"<!") {
                self.pos += past(rest, b">")?;
                continue;
            }
            let close = tag_end(rest).ok_or(Incomplete)?;
            self.pos += close + 1;
            let tag = &rest[1..close];
            if let Some(name) = tag.strip_prefix(b"/") {
                return Ok(Some(Token::End { name: local(name.trim_ascii()) }));
            }
            let (tag, closed) = match tag.strip_suffix(b"/") {
                Some(tag) => (tag, true),
                None => (tag, false),
            };
            let name_len = tag.iter().position(u8::is_ascii_whitespace).unwrap_or(tag.len());
            let qualified = &tag[..name_len];
            return Ok(Some(Token::Start { name: local(qualified), qualified, attributes: &tag[name_len..], closed }));
        }
    }

    /// Skip everything up to and including the end tag of an element just started
    /// (`qualified` as the start tag spelled it). An element of the same name nested inside it
    /// would end the skip early; none of a cell's children (`f`, `extLst`) nests in itself.
    pub fn skip_element(&mut self, qualified: &[u8]) -> Result<(), Incomplete> {
        let end = find_end_tag(self.rest(), qualified).ok_or(Incomplete)?;
        self.pos += end.1;
        Ok(())
    }
}

/// Where the end tag `</qualified>` starts in `xml`, and where it ends.
pub fn find_end_tag(xml: &[u8], qualified: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(at) = memchr(b'<', &xml[from..]) {
        let start = from + at;
        let after = &xml[start + 1..];
        if let Some(rest) = after.strip_prefix(b"/").and_then(|a| a.strip_prefix(qualified)) {
            let spaces = rest.iter().take_while(|b| b.is_ascii_whitespace()).count();
            match rest.get(spaces) {
                Some(b'>') => return Some((start, start + 2 + qualified.len() + spaces + 1)),
                None => return None,
                Some(_) => {}
            }
        }
        from = start + 1;
    }
    None
}

/// The offset of the `>` that closes the tag opening `rest`; a `>` inside a quoted attribute
/// value does not count.
fn tag_end(rest: &[u8]) -> Option<usize> {
    let mut from = 1;
    loop {
        let at = from + memchr3(b'>', b'"', b'\'', &rest[from..])?;
        if rest[at] == b'>' {
            return Some(at);
        }
        from = at + 1 + memchr(rest[at], &rest[at + 1..])? + 1;
    }
}

fn past(rest: &[u8], terminator: &[u8]) -> Result<usize, Incomplete> {
    memmem::find(rest, terminator).map(|at| at + terminator.len()).ok_or(Incomplete)
}

fn local(name: &[u8]) -> &[u8] {
    match memchr(b':', name) {
        Some(colon) => &name[colon + 1..],
        None => name,
    }
}

/// A tag's attributes: (local name, raw value) pairs, until the first that is not well formed.
pub struct Attributes<'a> {
    rest: &'a [u8],
}

pub fn attributes(attributes: &[u8]) -> Attributes<'_> {
    Attributes { rest: attributes }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest.trim_ascii_start();
        let eq = memchr(b'=', rest)?;
        let name = local(rest[..eq].trim_ascii());
        let after = rest[eq + 1..].trim_ascii_start();
        let quote = *after.first()?;
        if quote != b'"' && quote != b'\'' {
            return None;
        }
        let len = memchr(quote, &after[1..])?;
        self.rest = &after[1 + len + 1..];
        Some((name, &after[1..1 + len]))
    }
}

/// The raw value of the attribute named `wanted` (local name) among a tag's `attributes`.
pub fn attribute<'a>(attributes: &'a [u8], wanted: &[u8]) -> Option<&'a [u8]> {
    self::attributes(attributes).find(|(name, _)| *name == wanted).map(|(_, value)| value)
}

/// Why text could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    NotUtf8,
    Entity(String),
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextError::NotUtf8 => write!(f, "text is not UTF-8"),
            TextError::Entity(e) => write!(f, "unknown entity `&{e};`"),
        }
    }
}

/// Text or an attribute value as a string: entities and character references decoded and line
/// ends normalised to `\n` (as an XML processor must); borrowed when there is nothing to decode.
pub fn decode(raw: &[u8]) -> Result<Cow<'_, str>, TextError> {
    let text = std::str::from_utf8(raw).map_err(|_| TextError::NotUtf8)?;
    if memchr::memchr2(b'&', b'\r', raw).is_none() {
        return Ok(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(text.len());
    decode_into(text, &mut out)?;
    Ok(Cow::Owned(out))
}

/// Append the decoded `text` onto `out`.
pub fn decode_into(text: &str, out: &mut String) -> Result<(), TextError> {
    let mut rest = text;
    while let Some(at) = rest.find(['&', '\r']) {
        out.push_str(&rest[..at]);
        if rest.as_bytes()[at] == b'\r' {
            out.push('\n');
            rest = rest[at + 1..].strip_prefix('\n').unwrap_or(&rest[at + 1..]);
            continue;
        }
        let after = &rest[at + 1..];
        let semi = after.find(';').ok_or_else(|| TextError::Entity(after.chars().take(10).collect()))?;
        let entity = &after[..semi];
        let unknown = || TextError::Entity(entity.to_string());
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = match entity.strip_prefix("#x").or_else(|| entity.strip_prefix("#X")) {
                    Some(hex) => u32::from_str_radix(hex, 16),
                    None => entity.strip_prefix('#').ok_or_else(unknown)?.parse(),
                };
                code.ok().and_then(char::from_u32).ok_or_else(unknown)?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(())
}

/// OOXML's own escape for characters XML cannot carry (`_x000D_` is a carriage return): a
/// surrogate pair of two escapes is one character, a lone surrogate U+FFFD.
pub fn unescape_ooxml(text: Cow<'_, str>) -> Cow<'_, str> {
    if !text.contains("_x") {
        return text;
    }
    let unit = |s: &str, at: usize| -> Option<u16> {
        let b = s.as_bytes().get(at..at + 7)?;
        if b[0] != b'_' || b[1] != b'x' || b[6] != b'_' || !b[2..6].iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u16::from_str_radix(&s[at + 2..at + 6], 16).ok()
    };
    let s = text.as_ref();
    let mut out = String::with_capacity(s.len());
    let mut copied = 0;
    let mut at = 0;
    while let Some(offset) = s[at..].find('_') {
        let i = at + offset;
        let Some(first) = unit(s, i) else {
            at = i + 1;
            continue;
        };
        out.push_str(&s[copied..i]);
        let mut next = i + 7;
        let c = match first {
            0xD800..=0xDBFF => match unit(s, next) {
                Some(low @ 0xDC00..=0xDFFF) => {
                    next += 7;
                    char::from_u32(0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(low) - 0xDC00))
                }
                _ => None,
            },
            0xDC00..=0xDFFF => None,
            _ => char::from_u32(u32::from(first)),
        };
        out.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
        copied = next;
        at = next;
    }
    out.push_str(&s[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(xml: &str) -> Vec<Token<'_>> {
        let mut tokens = Tokens::new(xml.as_bytes());
        std::iter::from_fn(|| tokens.next_token().unwrap()).collect()
    }

    #[test]
    fn tokens_carry_local_names_attributes_and_raw_text() {
        let xml = "<?xml version=\"1.0\"?><!-- c --><x:row r=\"2\" spans='1:3 >'><c t=\"s\"/>a &amp; b<![CDATA[<z>]]></x:row >";
        let tokens = all(xml);
        assert_eq!(tokens.len(), 5, "{tokens:?}");
        let Token::Start { name, qualified, attributes, closed: false } = tokens[0] else { panic!("{tokens:?}") };
        assert_eq!((name, qualified), (&b"row"[..], &b"x:row"[..]));
        assert_eq!(attribute(attributes, b"r"), Some(&b"2"[..]));
        assert_eq!(attribute(attributes, b"spans"), Some(&b"1:3 >"[..]));
        assert_eq!(attribute(attributes, b"t"), None);
        assert!(matches!(tokens[1], Token::Start { name: b"c", closed: true, .. }));
        assert_eq!(tokens[2], Token::Text(b"a &amp; b"));
        assert_eq!(tokens[3], Token::CData(b"<z>"));
        assert_eq!(tokens[4], Token::End { name: b"row" });
    }

    #[test]
    fn an_unfinished_tag_consumes_nothing() {
        let mut tokens = Tokens::new(b"ab<c r=\"1\"");
        assert_eq!(tokens.next_token(), Ok(Some(Token::Text(b"ab"))));
        assert_eq!(tokens.next_token(), Err(Incomplete));
        assert_eq!(tokens.position(), 2);
    }

    #[test]
    fn end_tags_are_found_by_their_spelling() {
        let xml = b"<v>1</vx></v ><x:v>2</x:v>";
        assert_eq!(find_end_tag(xml, b"v"), Some((9, 14)));
        assert_eq!(find_end_tag(xml, b"x:v"), Some((20, 26)));
        assert_eq!(find_end_tag(b"</v", b"v"), None);
    }

    #[test]
    fn text_is_decoded_as_an_xml_processor_must() {
        assert_eq!(decode(b"a &lt;&gt;&amp;&quot;&apos; &#65;&#x42;").unwrap(), "a <>&\"' AB");
        assert_eq!(decode(b"one\r\ntwo\rthree").unwrap(), "one\ntwo\nthree");
        assert!(matches!(decode(b"plain").unwrap(), Cow::Borrowed("plain")));
        assert_eq!(decode(b"&nbsp;"), Err(TextError::Entity("nbsp".into())));
        assert_eq!(decode(b"\xff"), Err(TextError::NotUtf8));
    }

    #[test]
    fn ooxml_escapes_become_characters() {
        let unescaped = |s: &str| unescape_ooxml(Cow::Borrowed(s)).into_owned();
        assert_eq!(unescaped("a_x000D_b"), "a\rb");
        assert_eq!(unescaped("_xD83D__xDE00_"), "\u{1F600}");
        assert_eq!(unescaped("_xD83D_x"), "\u{FFFD}x");
        assert_eq!(unescaped("my_x_name_x00"), "my_x_name_x00");
    }
}
