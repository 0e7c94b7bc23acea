//! Telling an A1111 client where its images went without changing anything it already parses.
//!
//! `info` is a Python-`json.dumps` string whose keys and formatting clients (and our parity tests)
//! compare; the extra keys go after A1111's last key, formatted the same way.

use serde_json::Value;

use sdapi_protocol::python_json;

/// Appends `"<key>": <value>` (Python json formatting) before the closing brace of `info`.
/// Returns `info` unchanged when it is not a JSON object string.
pub fn append_info_key(info: &str, key: &str, value: &Value) -> String {
    let trimmed = info.trim_end();
    let Some(body) = trimmed.strip_suffix('}') else {
        return info.to_string();
    };
    let mut out = String::with_capacity(info.len() + 64);
    out.push_str(body);
    if !body.trim_end().ends_with('{') {
        out.push_str(", ");
    }
    python_json::write_str(&mut out, key, true);
    out.push_str(": ");
    out.push_str(&python_json::dumps(value));
    out.push('}');
    out
}
