//! Emphasis syntax (docs/a1111-behaviour.md §7.1): `(x)`, `[x]`, `(x:w)`, escapes and `BREAK`, as A1111's
//! `prompt_parser.parse_prompt_attention` reads them.
//!
//! The prompt is cut into lexemes left to right (first matching kind wins, like the alternation
//! of A1111's regex), brackets are tracked on two stacks and closing one multiplies every
//! fragment emitted since it opened. Weights are kept in `f64` like Python's floats so that the
//! merge of equal-weight runs and the products of nested brackets match A1111 bit for bit;
//! they become `f32` only where a tensor is built.

use super::PromptError;
use super::text::{is_py_space, is_py_word_char};

/// Weight A1111 gives to the `BREAK` marker fragment.
pub const BREAK_WEIGHT: f64 = -1.0;
/// Text of the `BREAK` marker fragment.
pub const BREAK_TEXT: &str = "BREAK";

const ROUND_MULTIPLIER: f64 = 1.1;
const SQUARE_MULTIPLIER: f64 = 1.0 / 1.1;

/// A piece of prompt text and the emphasis weight of its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedText {
    pub text: String,
    pub weight: f64,
}

impl WeightedText {
    /// True for the marker that closes a 75-token chunk. A marker inside brackets has had its
    /// weight multiplied and no longer counts (A1111 compares with exactly -1).
    pub fn is_break(&self) -> bool {
        self.text == BREAK_TEXT && self.weight == BREAK_WEIGHT
    }
}

/// `parse_prompt_attention` with the signature of the brief: (text, weight) pairs.
///
/// Where A1111 raises (a weight like `(a:1.2.3)` that Python's `float` rejects) this returns
/// the whole text with weight 1.0; use [`parse_attention`] to see the error instead.
pub fn parse_prompt_attention(text: &str) -> Vec<(String, f32)> {
    match parse_attention(text) {
        Ok(parts) => parts.into_iter().map(|p| (p.text, p.weight as f32)).collect(),
        Err(_) => vec![(text.to_string(), 1.0)],
    }
}

/// Exact port of the algorithm, weights in `f64`.
pub fn parse_attention(text: &str) -> Result<Vec<WeightedText>, PromptError> {
    let mut out: Vec<WeightedText> = Vec::new();
    let mut round_open: Vec<usize> = Vec::new();
    let mut square_open: Vec<usize> = Vec::new();

    let multiply_from = |out: &mut Vec<WeightedText>, start: usize, m: f64| {
        for part in &mut out[start..] {
            part.weight *= m;
        }
    };

    for lexeme in lex(text) {
        match lexeme {
            Lexeme::Escaped(s) => out.push(WeightedText { text: s.to_string(), weight: 1.0 }),
            Lexeme::OpenRound => round_open.push(out.len()),
            Lexeme::OpenSquare => square_open.push(out.len()),
            Lexeme::WeightClose { number, .. } if !round_open.is_empty() => {
                let weight =
                    parse_python_float(number).ok_or_else(|| PromptError::InvalidEmphasisWeight(number.to_string()))?;
                if let Some(start) = round_open.pop() {
                    multiply_from(&mut out, start, weight);
                }
            }
            Lexeme::CloseRound if !round_open.is_empty() => {
                if let Some(start) = round_open.pop() {
                    multiply_from(&mut out, start, ROUND_MULTIPLIER);
                }
            }
            Lexeme::CloseSquare if !square_open.is_empty() => {
                if let Some(start) = square_open.pop() {
                    multiply_from(&mut out, start, SQUARE_MULTIPLIER);
                }
            }
            // Plain text, and brackets/colons that close nothing, are literal text.
            other => push_text_with_breaks(&mut out, other.as_str()),
        }
    }

    // Unclosed brackets apply to the rest of the prompt: all round ones first, then square.
    for start in round_open {
        multiply_from(&mut out, start, ROUND_MULTIPLIER);
    }
    for start in square_open {
        multiply_from(&mut out, start, SQUARE_MULTIPLIER);
    }

    if out.is_empty() {
        out.push(WeightedText { text: String::new(), weight: 1.0 });
    }
    Ok(merge_equal_weights(out))
}

/// Adjacent fragments with exactly equal weights become one fragment.
fn merge_equal_weights(parts: Vec<WeightedText>) -> Vec<WeightedText> {
    let mut merged: Vec<WeightedText> = Vec::with_capacity(parts.len());
    for part in parts {
        match merged.last_mut() {
            Some(last) if last.weight == part.weight => last.text.push_str(&part.text),
            _ => merged.push(part),
        }
    }
    merged
}

/// Split a literal run on `\s*\bBREAK\b\s*`, putting a BREAK marker between the pieces.
fn push_text_with_breaks(out: &mut Vec<WeightedText>, text: &str) {
    let mut rest_start = 0;
    for (start, end) in break_matches(text) {
        out.push(WeightedText { text: text[rest_start..start].to_string(), weight: 1.0 });
        out.push(WeightedText { text: BREAK_TEXT.to_string(), weight: BREAK_WEIGHT });
        rest_start = end;
    }
    out.push(WeightedText { text: text[rest_start..].to_string(), weight: 1.0 });
}

/// Byte ranges of the matches of `\s*\bBREAK\b\s*` (leftmost, non-overlapping).
pub(crate) fn break_matches(text: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut search_from = 0;
    while let Some(rel) = text[search_from..].find(BREAK_TEXT) {
        let at = search_from + rel;
        let after = at + BREAK_TEXT.len();
        let before_ok = !text[..at].chars().next_back().is_some_and(is_py_word_char);
        let after_ok = !text[after..].chars().next().is_some_and(is_py_word_char);
        if before_ok && after_ok {
            // The leading \s* starts the match at the beginning of the whitespace run.
            let lead = text[search_from..at]
                .char_indices()
                .rev()
                .take_while(|(_, c)| is_py_space(*c))
                .last()
                .map_or(at, |(i, _)| search_from + i);
            let trail: usize = text[after..].chars().take_while(|c| is_py_space(*c)).map(char::len_utf8).sum();
            found.push((lead, after + trail));
            search_from = after + trail;
        } else {
            search_from = after;
        }
    }
    found
}

/// Python `float()` on the `[+-]?[.\d]+` text of a weight: at most one dot and a digit.
fn parse_python_float(s: &str) -> Option<f64> {
    let digits = s.trim_start_matches(['+', '-']);
    let has_digit = digits.chars().any(|c| c.is_ascii_digit());
    if !has_digit || digits.matches('.').count() > 1 {
        return None;
    }
    s.parse::<f64>().ok()
}

/// The lexemes of A1111's `re_attention`, in its order of preference.
#[derive(Debug)]
enum Lexeme<'a> {
    /// `\(` `\)` `\[` `\]` `\\` → the char; a lone `\` → "" (A1111 drops it).
    Escaped(&'a str),
    OpenRound,
    OpenSquare,
    /// `:\s*([+-]?[.\d]+)\s*\)`
    WeightClose {
        whole: &'a str,
        number: &'a str,
    },
    CloseRound,
    CloseSquare,
    /// A run of characters other than `\ ( ) [ ] :`, or a lone `:`.
    Text(&'a str),
}

impl<'a> Lexeme<'a> {
    /// The source text, for lexemes that end up as literal text.
    fn as_str(&self) -> &'a str {
        match self {
            Lexeme::Escaped(s) | Lexeme::Text(s) => s,
            Lexeme::WeightClose { whole, .. } => whole,
            Lexeme::OpenRound => "(",
            Lexeme::OpenSquare => "[",
            Lexeme::CloseRound => ")",
            Lexeme::CloseSquare => "]",
        }
    }
}

fn lex(text: &str) -> Vec<Lexeme<'_>> {
    let mut lexemes = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let rest = &text[pos..];
        let (lexeme, len) = next_lexeme(rest);
        lexemes.push(lexeme);
        pos += len;
    }
    lexemes
}

fn next_lexeme(rest: &str) -> (Lexeme<'_>, usize) {
    let mut chars = rest.chars();
    let Some(first) = chars.next() else {
        return (Lexeme::Text(""), 0);
    };
    match first {
        '\\' => match chars.next() {
            Some(c @ ('(' | ')' | '[' | ']' | '\\')) => (Lexeme::Escaped(&rest[1..1 + c.len_utf8()]), 2),
            _ => (Lexeme::Escaped(""), 1),
        },
        '(' => (Lexeme::OpenRound, 1),
        '[' => (Lexeme::OpenSquare, 1),
        ':' => match weight_close_len(rest) {
            Some((len, number)) => (Lexeme::WeightClose { whole: &rest[..len], number }, len),
            None => (Lexeme::Text(&rest[..1]), 1),
        },
        ')' => (Lexeme::CloseRound, 1),
        ']' => (Lexeme::CloseSquare, 1),
        _ => {
            let len = rest
                .char_indices()
                .find(|(_, c)| matches!(c, '\\' | '(' | ')' | '[' | ']' | ':'))
                .map_or(rest.len(), |(i, _)| i);
            (Lexeme::Text(&rest[..len]), len)
        }
    }
}

/// Matches `:\s*([+-]?[.\d]+)\s*\)` at the start of `rest`; returns (length, number text).
fn weight_close_len(rest: &str) -> Option<(usize, &str)> {
    let mut pos = 1; // the ':'
    pos += leading_len(&rest[pos..], is_py_space);
    let num_start = pos;
    if rest[pos..].starts_with(['+', '-']) {
        pos += 1;
    }
    let body = leading_len(&rest[pos..], |c| c == '.' || c.is_ascii_digit());
    if body == 0 {
        return None;
    }
    pos += body;
    let number = &rest[num_start..pos];
    pos += leading_len(&rest[pos..], is_py_space);
    rest[pos..].starts_with(')').then_some((pos + 1, number))
}

fn leading_len(s: &str, pred: impl Fn(char) -> bool) -> usize {
    s.chars().take_while(|c| pred(*c)).map(char::len_utf8).sum()
}
