//! Character classes of Python's `re`/`str` that A1111's regexes rely on.

/// Python's `\s` / `str.isspace()`: Unicode White_Space plus the separators U+001C..U+001F.
pub(crate) fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `\w` for `str` patterns (close approximation: alphanumeric or underscore).
pub(crate) fn is_py_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `str.strip()`-like trimming with Python's notion of whitespace, at the end only.
pub(crate) fn trim_end_py(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}
