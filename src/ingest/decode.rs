//! Bytes → text in the encoding a contract declares. Invalid sequences are never replaced: a
//! field that does not decode is an error, so nothing is silently altered.

use std::borrow::Cow;

use crate::config::Encoding;

#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    encoding: Encoding,
}

impl Decoder {
    pub fn new(encoding: Encoding) -> Self {
        Decoder { encoding }
    }

    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Whether every field cut from this record is text as it stands: the record is ASCII, or
    /// valid UTF-8 under a UTF-8 contract. Fields are cut at ASCII bytes (delimiters, quotes), so
    /// each is then valid UTF-8 too, and one scan of the record replaces one per field.
    pub fn record_is_text(&self, raw_record: &[u8]) -> bool {
        match self.encoding {
            Encoding::Utf8 => std::str::from_utf8(raw_record).is_ok(),
            Encoding::Gbk | Encoding::Gb18030 => raw_record.is_ascii(),
        }
    }

    /// The text of a field of a record that `record_is_text`, or `decode` when it is not.
    pub fn decode_field<'a>(&self, bytes: &'a [u8], record_is_text: bool) -> Option<Cow<'a, str>> {
        if !record_is_text {
            return self.decode(bytes);
        }
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        // SAFETY: the field's bytes are a part of a record that is valid UTF-8, cut at ASCII
        // bytes (`record_is_text`), so they are valid UTF-8.
        Some(Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(bytes) }))
    }

    /// The text of `bytes`, or `None` when they are not valid in this encoding.
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Option<Cow<'a, str>> {
        if bytes.is_ascii() {
            return std::str::from_utf8(bytes).ok().map(Cow::Borrowed);
        }
        match self.encoding {
            Encoding::Utf8 => std::str::from_utf8(bytes).ok().map(Cow::Borrowed),
            // encoding_rs decodes GBK with the GB18030 decoder (WHATWG), so both accept all of GB18030.
            Encoding::Gbk => encoding_rs::GBK.decode_without_bom_handling_and_without_replacement(bytes),
            Encoding::Gb18030 => encoding_rs::GB18030.decode_without_bom_handling_and_without_replacement(bytes),
        }
    }
}

/// Looks for signs that a whole file is in another encoding than declared.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct EncodingEvidence {
    /// Records checked (fields with non-ASCII bytes only count once per record).
    pub records_with_non_ascii: u64,
    /// …of which the non-ASCII bytes were valid UTF-8.
    pub records_valid_utf8: u64,
}

impl EncodingEvidence {
    pub fn observe(&mut self, raw_record: &[u8]) {
        if !raw_record.is_ascii() {
            self.records_with_non_ascii += 1;
            if std::str::from_utf8(raw_record).is_ok() {
                self.records_valid_utf8 += 1;
            }
        }
    }

    pub fn add(&mut self, other: EncodingEvidence) {
        self.records_with_non_ascii += other.records_with_non_ascii;
        self.records_valid_utf8 += other.records_valid_utf8;
    }

    /// A GBK/GB18030 file whose every non-ASCII record is valid UTF-8 is almost surely UTF-8:
    /// Chinese text in GBK is practically never valid UTF-8 by accident.
    pub fn looks_like_utf8(&self) -> bool {
        self.records_with_non_ascii > 0 && self.records_valid_utf8 == self.records_with_non_ascii
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbk_decodes_and_invalid_bytes_are_refused() {
        let (gbk, _, _) = encoding_rs::GBK.encode("华东区");
        assert_eq!(Decoder::new(Encoding::Gbk).decode(&gbk).as_deref(), Some("华东区"));
        assert_eq!(Decoder::new(Encoding::Utf8).decode(&gbk), None);
        assert_eq!(Decoder::new(Encoding::Gbk).decode(b"ab\xFFcd"), None);
        assert_eq!(Decoder::new(Encoding::Utf8).decode("华东".as_bytes()).as_deref(), Some("华东"));
    }

    #[test]
    fn utf8_text_declared_gbk_is_noticed() {
        let mut evidence = EncodingEvidence::default();
        evidence.observe("C001,上海,华东".as_bytes());
        evidence.observe(b"C002,plain");
        assert!(evidence.looks_like_utf8());
        let (gbk, _, _) = encoding_rs::GBK.encode("C003,上海,华东");
        evidence.observe(&gbk);
        assert!(!evidence.looks_like_utf8());
    }
}
