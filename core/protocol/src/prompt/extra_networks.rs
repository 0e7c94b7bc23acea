//! Prompt text helpers that run before conditioning: extra-network tags (`<lora:name:1>`,
//! docs/a1111-behaviour.md §7.5; the core resolves them into LoRAs) and `#` comments (`enable_prompt_comments`).

use super::text::is_py_word_char;

/// One `<kind:arg:arg…>` tag, A1111's `ExtraNetworkParams`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtraNetworkTag {
    /// The network kind: `lora`, `hypernet`, …
    pub kind: String,
    /// All `:`-separated arguments.
    pub items: Vec<String>,
    /// Arguments without `=` (or with more than one).
    pub positional: Vec<String>,
    /// `key=value` arguments, in order (a repeated key keeps its last value in A1111's dict).
    pub named: Vec<(String, String)>,
}

impl ExtraNetworkTag {
    fn new(kind: &str, args: &str) -> Self {
        let items: Vec<String> = args.split(':').map(str::to_string).collect();
        let mut positional = Vec::new();
        let mut named = Vec::new();
        for item in &items {
            // Python's `item.split('=', 2)` has exactly two parts only with a single '='.
            let parts: Vec<&str> = item.splitn(3, '=').collect();
            match parts.as_slice() {
                [key, value] => named.push((key.to_string(), value.to_string())),
                _ => positional.push(item.clone()),
            }
        }
        Self { kind: kind.to_string(), items, positional, named }
    }
}

/// A1111's `extra_networks.parse_prompt`: removes every `<(\w+):([^>]+)>` tag and returns the
/// remaining prompt and the tags in order of appearance.
pub fn parse_extra_networks(prompt: &str) -> (String, Vec<ExtraNetworkTag>) {
    let mut text = String::with_capacity(prompt.len());
    let mut tags = Vec::new();
    let mut pos = 0;
    while let Some(rel) = prompt[pos..].find('<') {
        let at = pos + rel;
        text.push_str(&prompt[pos..at]);
        match match_tag(&prompt[at..]) {
            Some((kind, args, len)) => {
                tags.push(ExtraNetworkTag::new(kind, args));
                pos = at + len;
            }
            None => {
                text.push('<');
                pos = at + 1;
            }
        }
    }
    text.push_str(&prompt[pos..]);
    (text, tags)
}

/// `<(\w+):([^>]+)>` at the start of `s`: (kind, args, match length).
fn match_tag(s: &str) -> Option<(&str, &str, usize)> {
    let body = &s[1..];
    let kind_len: usize = body.chars().take_while(|c| is_py_word_char(*c)).map(char::len_utf8).sum();
    if kind_len == 0 || !body[kind_len..].starts_with(':') {
        return None;
    }
    let args_start = kind_len + 1;
    let args_len = body[args_start..].find('>')?;
    if args_len == 0 {
        return None;
    }
    let args = &body[args_start..args_start + args_len];
    Some((&body[..kind_len], args, 1 + args_start + args_len + 1))
}

/// A1111's `strip_comments` (`enable_prompt_comments`): whole-line comments first, then `#`
/// to the end of any line; each comment and its newline become one newline.
pub fn strip_comments(text: &str) -> String {
    strip_inline_comments(&strip_line_comments(text))
}

/// `re.sub('(^|\n)#[^\n]*(\n|$)', '\n', text)`.
fn strip_line_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    let mut copied_to = 0;
    while pos < text.len() {
        let start_of_text = pos == 0 && text.starts_with('#');
        let after_newline = text[pos..].starts_with("\n#");
        if start_of_text || after_newline {
            let hash = if start_of_text { pos } else { pos + 1 };
            let end = comment_end(text, hash);
            out.push_str(&text[copied_to..pos]);
            out.push('\n');
            pos = end;
            copied_to = end;
        } else {
            pos += text[pos..].chars().next().map_or(1, char::len_utf8);
        }
    }
    out.push_str(&text[copied_to..]);
    out
}

/// `re.sub('#[^\n]*(\n|$)', '\n', text)`.
fn strip_inline_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(rel) = text[pos..].find('#') {
        let hash = pos + rel;
        out.push_str(&text[pos..hash]);
        out.push('\n');
        pos = comment_end(text, hash);
    }
    out.push_str(&text[pos..]);
    out
}

/// End of a comment starting at `hash`: after its newline, or the end of the text.
fn comment_end(text: &str, hash: usize) -> usize {
    text[hash..].find('\n').map_or(text.len(), |nl| hash + nl + 1)
}
