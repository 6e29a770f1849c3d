//! A rejected row, as `rejects/<source>/` keeps it, and how much of an input's text is quoted.

use std::borrow::Cow;
use std::sync::Arc;

/// Bytes of an input's text quoted in a reject (`raw`, `detail`) or in a file's error message;
/// what is longer is cut at a character boundary and says how long it was.
pub const MAX_QUOTED_BYTES: usize = 4096;

/// One rejected row: where it was, what was wrong, what it said.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub file: Arc<str>,
    pub line: u64,
    pub column: Option<String>,
    pub reason: &'static str,
    pub detail: String,
    pub raw: String,
}

impl Reject {
    /// A reject whose detail and raw text are cut to [`MAX_QUOTED_BYTES`].
    pub fn new(
        file: Arc<str>,
        line: u64,
        column: Option<String>,
        reason: &'static str,
        detail: String,
        raw: String,
    ) -> Reject {
        Reject { file, line, column, reason, detail: cut(detail), raw: cut(raw) }
    }
}

/// `text` cut to [`MAX_QUOTED_BYTES`] (at a character boundary), with how long it was.
pub fn quoted(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_QUOTED_BYTES {
        return Cow::Borrowed(text);
    }
    let end = text.floor_char_boundary(MAX_QUOTED_BYTES);
    Cow::Owned(format!("{}… (cut: {} bytes in all)", &text[..end], text.len()))
}

/// [`quoted`] for an owned string: no copy when it is short enough.
pub fn cut(text: String) -> String {
    match quoted(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(cut) => cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_at_a_character_boundary_and_says_its_length() {
        assert_eq!(quoted("short"), "short");
        let long = "客".repeat(MAX_QUOTED_BYTES); // 3 bytes each
        let shown = quoted(&long);
        let kept = shown.split('…').next().unwrap();
        assert!(kept.len() <= MAX_QUOTED_BYTES && kept.len() > MAX_QUOTED_BYTES - 3, "{}", kept.len());
        assert!(kept.chars().all(|c| c == '客'));
        assert!(shown.ends_with(&format!("(cut: {} bytes in all)", 3 * MAX_QUOTED_BYTES)), "{shown}");
        assert_eq!(cut("x".repeat(MAX_QUOTED_BYTES)).len(), MAX_QUOTED_BYTES, "at the limit, kept whole");
    }
}
