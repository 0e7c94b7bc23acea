//! Python's `json.dumps` and `repr` formatting, byte for byte, for the texts clients compare:
//! the `info` JSON string (default separators, ASCII-escaped), infotext quoting
//! (`ensure_ascii=False`) and compact response bodies.

use serde_json::Value;

/// How `json.dumps` is configured at a call site.
#[derive(Debug, Clone, Copy)]
pub struct DumpStyle {
    pub item_sep: &'static str,
    pub key_sep: &'static str,
    pub ensure_ascii: bool,
}

/// `json.dumps(v)`: `", "`, `": "`, ensure_ascii.
pub const DEFAULT: DumpStyle = DumpStyle { item_sep: ", ", key_sep: ": ", ensure_ascii: true };
/// `json.dumps(v, ensure_ascii=False)` (infotext quoting).
pub const UNICODE: DumpStyle = DumpStyle { item_sep: ", ", key_sep: ": ", ensure_ascii: false };
/// FastAPI/starlette response bodies: `separators=(",", ":")`, `ensure_ascii=False`.
pub const COMPACT: DumpStyle = DumpStyle { item_sep: ",", key_sep: ":", ensure_ascii: false };

/// `json.dumps(v)` with Python's defaults.
pub fn dumps(v: &Value) -> String {
    dumps_with(v, DEFAULT)
}

/// Starlette `JSONResponse` rendering, for byte-identical response bodies.
pub fn dumps_compact(v: &Value) -> String {
    dumps_with(v, COMPACT)
}

pub fn dumps_with(v: &Value, style: DumpStyle) -> String {
    let mut out = String::new();
    write_value(&mut out, v, style);
    out
}

fn write_value(out: &mut String, v: &Value, style: DumpStyle) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_f64() {
                out.push_str(&float_repr(n.as_f64().unwrap_or(0.0)));
            } else {
                out.push_str(&n.to_string());
            }
        }
        Value::String(s) => write_str(out, s, style.ensure_ascii),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(style.item_sep);
                }
                write_value(out, item, style);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(style.item_sep);
                }
                write_str(out, k, style.ensure_ascii);
                out.push_str(style.key_sep);
                write_value(out, item, style);
            }
            out.push('}');
        }
    }
}

/// A JSON string literal as Python's encoder writes it (lower-case `\uXXXX`, surrogate pairs).
pub fn write_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if ensure_ascii && (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{:04x}", unit));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)` (= `str(float)`): shortest round-trip digits, fixed notation for
/// decimal exponents in [-4, 16), otherwise `d.ddde±XX`; `nan`/`inf` become JSON's `NaN`/`Infinity`.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    py_float_str(f)
}

/// `str(f)` in Python for a finite float (`nan`/`inf` spelled as Python does).
pub fn py_float_str(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    // Rust's `{:e}` yields the shortest round-trip digits, e.g. "7.5e-1", "-1e16".
    let sci = format!("{:e}", f);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if (point as usize) >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{body}")
    } else {
        let frac = if digits.len() > 1 { format!(".{}", &digits[1..]) } else { String::new() };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{}{frac}e{esign}{:02}", &digits[..1], exp.abs())
    }
}

/// Python's `str()` of a JSON value as A1111 would print it in an infotext:
/// strings as-is, floats as `repr`, bools `True`/`False`, None `None`, containers as Python reprs.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// Python's `repr()` of a JSON-like value (dicts/lists/str/int/float/bool/None).
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => {
            if *b {
                "True".into()
            } else {
                "False".into()
            }
        }
        Value::Number(n) => {
            if n.is_f64() {
                py_float_str(n.as_f64().unwrap_or(0.0))
            } else {
                n.to_string()
            }
        }
        Value::String(s) => py_repr_str(s),
        Value::Array(items) => format!("[{}]", items.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter().map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Python's `repr(str)`: single quotes unless the text holds `'` and no `"`.
pub fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn float_repr_matches_python() {
        // Expected strings are what CPython 3.11 prints for repr(x) (checked in a Python shell).
        let cases: &[(f64, &str)] = &[
            (7.0, "7.0"),
            (0.75, "0.75"),
            (1e-5, "1e-05"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (1e15, "1000000000000000.0"),
            (0.0001, "0.0001"),
            (0.1 + 0.2, "0.30000000000000004"),
            (-2.5, "-2.5"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (14.614642, "14.614642"),
            (1.5e-7, "1.5e-07"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
        ];
        for (f, want) in cases {
            assert_eq!(float_repr(*f), *want, "repr({f})");
        }
    }

    #[test]
    fn dumps_default_and_ascii_escapes() {
        let v = json!({"a": [1, 2.0, "é😀\n\"x\""], "b": null, "c": true, "d": {}});
        // json.dumps({"a": [1, 2.0, "é😀\n\"x\""], "b": None, "c": True, "d": {}})
        assert_eq!(dumps(&v), r#"{"a": [1, 2.0, "\u00e9\ud83d\ude00\n\"x\""], "b": null, "c": true, "d": {}}"#);
        assert_eq!(dumps_compact(&v), "{\"a\":[1,2.0,\"é😀\\n\\\"x\\\"\"],\"b\":null,\"c\":true,\"d\":{}}");
        assert_eq!(dumps(&json!("\u{1}\u{7f}")), r#""\u0001\u007f""#);
    }

    #[test]
    fn python_reprs() {
        assert_eq!(py_repr_str("zzz"), "'zzz'");
        assert_eq!(py_repr_str("it's"), "\"it's\"");
        assert_eq!(py_repr(&json!({"a": [true, null, 1.0]})), "{'a': [True, None, 1.0]}");
    }
}
