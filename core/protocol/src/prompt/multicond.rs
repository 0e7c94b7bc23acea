//! `AND` (composable diffusion, §7.3): A1111's `get_multicond_prompt_list`.
//!
//! Each prompt is split on `\bAND\b`; a sub-prompt may end in `:weight`. Sub-prompt texts are
//! deduplicated over the whole batch so each distinct text is encoded once.

use std::collections::HashMap;

use super::text::{is_py_space, is_py_word_char, trim_end_py};

/// Sub-prompts of a batch of prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct MulticondPromptList {
    /// Per prompt: (index into `flat`, weight) for each of its sub-prompts, in order.
    pub per_prompt: Vec<Vec<(usize, f64)>>,
    /// Distinct sub-prompt texts in order of first appearance.
    pub flat: Vec<String>,
}

pub fn get_multicond_prompt_list(prompts: &[String]) -> MulticondPromptList {
    let mut flat: Vec<String> = Vec::new();
    let mut index_of: HashMap<String, usize> = HashMap::new();
    let per_prompt = prompts
        .iter()
        .map(|prompt| {
            split_and(prompt)
                .into_iter()
                .map(|sub| {
                    let (text, weight) = split_weight(sub);
                    let index = *index_of.entry(text.to_string()).or_insert_with(|| {
                        flat.push(text.to_string());
                        flat.len() - 1
                    });
                    (index, weight)
                })
                .collect()
        })
        .collect();
    MulticondPromptList { per_prompt, flat }
}

/// `re.split(r"\bAND\b", prompt)`.
pub fn split_and(prompt: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut part_start = 0;
    let mut search_from = 0;
    while let Some(rel) = prompt[search_from..].find("AND") {
        let at = search_from + rel;
        let end = at + 3;
        let before_ok = !prompt[..at].chars().next_back().is_some_and(is_py_word_char);
        let after_ok = !prompt[end..].chars().next().is_some_and(is_py_word_char);
        if before_ok && after_ok {
            parts.push(&prompt[part_start..at]);
            part_start = end;
        }
        search_from = end;
    }
    parts.push(&prompt[part_start..]);
    parts
}

/// `^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$`: text and weight (default 1).
///
/// The weight, if any, follows the last `:` (a number holds no colon); the lazy text group
/// leaves all whitespace before that colon, or at the end, out of the text.
pub fn split_weight(sub: &str) -> (&str, f64) {
    if let Some(colon) = sub.rfind(':') {
        let number = sub[colon + 1..].trim_matches(is_py_space);
        if is_and_weight(number)
            && let Ok(weight) = number.parse::<f64>()
        {
            return (trim_end_py(&sub[..colon]), weight);
        }
    }
    (trim_end_py(sub), 1.0)
}

/// `[-+]?(?:\d+\.?|\d*\.\d+)` matching the whole string.
fn is_and_weight(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let all_digits = |t: &str| t.bytes().all(|c| c.is_ascii_digit());
    match frac {
        None => !int.is_empty() && all_digits(int),
        Some(f) => all_digits(int) && all_digits(f) && (!int.is_empty() || !f.is_empty()),
    }
}
