//! Prompt styles (A1111's `styles.csv`, docs/a1111-behaviour.md §7.8): named prompt and negative
//! prompt fragments a request applies by name through its `styles` field.

use std::path::{Path, PathBuf};

use sdapi_protocol::api::items::PromptStyleItem;

/// A styles file larger than this is refused (a real one is a few KiB).
pub const MAX_STYLES_FILE_BYTES: u64 = 8 << 20;

/// One style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptStyle {
    pub name: String,
    pub prompt: String,
    pub negative_prompt: String,
}

/// The styles of one file, in file order (a later row with the same name replaces the earlier).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StyleDatabase {
    pub path: Option<PathBuf>,
    pub styles: Vec<PromptStyle>,
}

#[derive(Debug, thiserror::Error)]
pub enum StylesError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl StyleDatabase {
    /// Reads `path` (UTF-8, optional BOM, header `name,prompt,negative_prompt`; the legacy `text`
    /// column stands for `prompt`). A missing file is an empty database, as in A1111.
    pub fn load(path: &Path) -> Result<Self, StylesError> {
        let io = |source| StylesError::Io { path: path.to_path_buf(), source };
        let size = match std::fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self { path: Some(path.to_path_buf()), styles: Vec::new() });
            }
            Err(e) => return Err(io(e)),
        };
        let invalid = |message: String| StylesError::Invalid { path: path.to_path_buf(), message };
        if size > MAX_STYLES_FILE_BYTES {
            return Err(invalid(format!("{size} bytes, more than {MAX_STYLES_FILE_BYTES}")));
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let text = String::from_utf8(bytes).map_err(|e| invalid(format!("not UTF-8: {e}")))?;
        let styles = parse_styles_csv(&text).map_err(invalid)?;
        Ok(Self { path: Some(path.to_path_buf()), styles })
    }

    pub fn find(&self, name: &str) -> Option<&PromptStyle> {
        self.styles.iter().find(|s| s.name == name)
    }

    /// A1111's `apply_styles_to_prompt`: each named style in order wraps the result; unknown
    /// names only strip the prompt.
    pub fn apply_to_prompt(&self, prompt: &str, names: &[String]) -> String {
        names.iter().fold(prompt.to_string(), |acc, name| {
            merge_prompts(self.find(name).map_or("", |s| s.prompt.as_str()), &acc)
        })
    }

    /// The same for the negative prompt, with each style's negative prompt.
    pub fn apply_to_negative_prompt(&self, prompt: &str, names: &[String]) -> String {
        names.iter().fold(prompt.to_string(), |acc, name| {
            merge_prompts(self.find(name).map_or("", |s| s.negative_prompt.as_str()), &acc)
        })
    }

    /// `GET /sdapi/v1/prompt-styles`.
    pub fn items(&self) -> Vec<PromptStyleItem> {
        self.styles
            .iter()
            .map(|s| PromptStyleItem {
                name: s.name.clone(),
                prompt: Some(s.prompt.clone()),
                negative_prompt: Some(s.negative_prompt.clone()),
            })
            .collect()
    }
}

/// A1111's `merge_prompts`: `{prompt}` in the style is replaced by the prompt (every occurrence,
/// nothing stripped); otherwise prompt and style are joined by ", ", both stripped, empty parts
/// dropped.
pub fn merge_prompts(style: &str, prompt: &str) -> String {
    if style.contains("{prompt}") {
        return style.replace("{prompt}", prompt);
    }
    let parts: Vec<&str> = [prompt.trim(), style.trim()].into_iter().filter(|p| !p.is_empty()).collect();
    parts.join(", ")
}

/// The styles of a `styles.csv` text (what [`StyleDatabase::load`] reads).
pub fn parse_styles_text(text: &str) -> Result<Vec<PromptStyle>, String> {
    parse_styles_csv(text)
}

/// Python's `csv.DictReader(skipinitialspace=True)` over the excel dialect, for the three columns.
fn parse_styles_csv(text: &str) -> Result<Vec<PromptStyle>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = parse_csv(text)?.into_iter();
    let Some(header) = rows.next() else { return Ok(Vec::new()) };
    let column = |names: &[&str]| names.iter().find_map(|n| header.iter().position(|h| h == n));
    let name_col = column(&["name"]).ok_or("no `name` column in the header")?;
    let prompt_col = column(&["prompt", "text"]);
    let negative_col = column(&["negative_prompt"]);
    let mut styles: Vec<PromptStyle> = Vec::new();
    for row in rows {
        let field = |i: Option<usize>| i.and_then(|i| row.get(i)).cloned().unwrap_or_default();
        let name = field(Some(name_col));
        // A1111 skips rows whose name starts with '#' (comments) and blank lines.
        if name.starts_with('#') || row.iter().all(String::is_empty) {
            continue;
        }
        let style = PromptStyle { name, prompt: field(prompt_col), negative_prompt: field(negative_col) };
        match styles.iter_mut().find(|s| s.name == style.name) {
            Some(existing) => *existing = style,
            None => styles.push(style),
        }
    }
    Ok(styles)
}

/// Rows of RFC 4180 CSV: `"` quotes (doubled inside), newlines allowed in quotes, spaces after a
/// delimiter skipped (Python's `skipinitialspace`).
fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut in_quotes = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                _ => field.push(c),
            }
            continue;
        }
        match c {
            ' ' if at_field_start => {}
            '"' if at_field_start => {
                in_quotes = true;
                at_field_start = false;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' | '\r' => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                at_field_start = true;
            }
            _ => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if in_quotes {
        return Err("a quoted field is not closed".into());
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_follows_a1111() {
        assert_eq!(merge_prompts("masterpiece, {prompt}, 4k", " a cat "), "masterpiece,  a cat , 4k");
        assert_eq!(merge_prompts(" best quality ", " a cat "), "a cat, best quality");
        assert_eq!(merge_prompts("best", ""), "best");
        assert_eq!(merge_prompts("", " a cat "), "a cat");
        assert_eq!(merge_prompts("{prompt} and {prompt}", "x"), "x and x");
    }

    #[test]
    fn csv_with_quotes_bom_and_comments() {
        let text = "\u{feff}name,prompt,negative_prompt\n\"Cinematic\", \"film still, {prompt}\",\"blurry, \"\"bad\"\"\"\n#hidden,x,y\nPlain,oil painting,\nCinematic,replaced,\n";
        let styles = parse_styles_csv(text).unwrap();
        assert_eq!(styles.len(), 2);
        assert_eq!(
            styles[0],
            PromptStyle { name: "Cinematic".into(), prompt: "replaced".into(), negative_prompt: "".into() }
        );
        assert_eq!(styles[1].prompt, "oil painting");
        let db = StyleDatabase { path: None, styles: parse_styles_csv("name,text\nA,\"x, {prompt}\"\n").unwrap() };
        assert_eq!(db.apply_to_prompt("cat", &["A".into(), "missing".into()]), "x, cat");
        assert!(parse_styles_csv("name,prompt\n\"open").is_err());
    }
}
