//! pydantic v1's lax coercions (`int_validator`, `float_validator`, `bool_validator`,
//! `str_validator`, `list_validator`, `dict_validator`) on JSON values, so requests that
//! A1111 accepts are accepted here with the same resulting values.

use serde_json::{Map, Number, Value};

use super::errors::LaxError;
use crate::python_json::py_float_str;

/// pydantic 1.10 refuses to `int()` strings longer than this (CPython's int max str digits).
const MAX_STR_INT: usize = 4300;

/// `int` field: ints pass; bools → 0/1; floats truncate; strings go through Python's `int()`.
pub fn to_int(v: &Value) -> Result<Value, LaxError> {
    match v {
        Value::Number(n) => {
            if n.is_i64() || n.is_u64() {
                return Ok(v.clone());
            }
            let f = n.as_f64().ok_or(LaxError::Int)?;
            float_to_int(f)
        }
        Value::Bool(b) => Ok(Value::from(*b as i64)),
        Value::String(s) if s.len() <= MAX_STR_INT => py_int_from_str(s).map(Value::from).ok_or(LaxError::Int),
        _ => Err(LaxError::Int),
    }
}

fn float_to_int(f: f64) -> Result<Value, LaxError> {
    if !f.is_finite() {
        return Err(LaxError::Int);
    }
    let t = f.trunc();
    if t >= i64::MIN as f64 && t < i64::MAX as f64 {
        Ok(Value::from(t as i64))
    } else {
        // Python would keep a big int; we cannot represent it, so report it as invalid.
        Err(LaxError::Int)
    }
}

/// Python's `int(str)`: surrounding whitespace, optional sign, decimal digits with single
/// underscores between digits. No decimal point.
pub fn py_int_from_str(s: &str) -> Option<i64> {
    let t = s.trim();
    let (neg, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let cleaned = strip_digit_underscores(digits)?;
    if cleaned.is_empty() || !cleaned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude: i128 = cleaned.parse().ok()?;
    let value = if neg { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

/// Removes underscores that sit between two digits; any other underscore is an error.
fn strip_digit_underscores(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in b.iter().enumerate() {
        if c == b'_' {
            let ok = i > 0 && i + 1 < b.len() && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit();
            if !ok {
                return None;
            }
        } else {
            out.push(c as char);
        }
    }
    Some(out)
}

/// `float` field: numbers and bools via `float()`, strings via Python's `float(str)`.
pub fn to_float(v: &Value) -> Result<Value, LaxError> {
    let f = match v {
        Value::Number(n) => n.as_f64().ok_or(LaxError::Float)?,
        Value::Bool(b) => *b as i64 as f64,
        Value::String(s) => py_float_from_str(s).ok_or(LaxError::Float)?,
        _ => return Err(LaxError::Float),
    };
    // NaN/inf are valid Python floats but not representable in serde_json; treat as invalid.
    Number::from_f64(f).map(Value::Number).ok_or(LaxError::Float)
}

/// Python's `float(str)`: whitespace, digit underscores, `inf`/`nan` spellings, exponents.
pub fn py_float_from_str(s: &str) -> Option<f64> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    if unsigned.len() + 1 < lower.len() {
        return None; // more than one sign
    }
    if matches!(unsigned, "inf" | "infinity" | "nan") {
        let f = if unsigned == "nan" { f64::NAN } else { f64::INFINITY };
        return Some(if lower.starts_with('-') { -f } else { f });
    }
    let cleaned = strip_digit_underscores(t)?;
    let ok_chars = cleaned.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if cleaned.is_empty() || !ok_chars || !cleaned.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    cleaned.parse::<f64>().ok()
}

/// pydantic v1 `bool_validator`: True/False, then (lower-cased strings) membership in
/// `{1,'1','on','t','true','y','yes'}` / `{0,'0','off','f','false','n','no'}`.
/// Numbers compare by value, so `1.0` is True and `2` is an error.
pub fn to_bool(v: &Value) -> Result<Value, LaxError> {
    match v {
        Value::Bool(_) => Ok(v.clone()),
        Value::Number(n) => match n.as_f64() {
            Some(1.0) => Ok(Value::Bool(true)),
            Some(0.0) => Ok(Value::Bool(false)),
            _ => Err(LaxError::Bool),
        },
        Value::String(s) => match s.to_lowercase().as_str() {
            "1" | "on" | "t" | "true" | "y" | "yes" => Ok(Value::Bool(true)),
            "0" | "off" | "f" | "false" | "n" | "no" => Ok(Value::Bool(false)),
            _ => Err(LaxError::Bool),
        },
        _ => Err(LaxError::Bool),
    }
}

/// pydantic v1 `str_validator`: strings pass, numbers become `str(n)` (bools are ints: "True").
pub fn to_str(v: &Value) -> Result<Value, LaxError> {
    match v {
        Value::String(_) => Ok(v.clone()),
        Value::Bool(b) => Ok(Value::from(if *b { "True" } else { "False" })),
        Value::Number(n) => {
            Ok(Value::from(if n.is_f64() { py_float_str(n.as_f64().unwrap_or(0.0)) } else { n.to_string() }))
        }
        _ => Err(LaxError::Str),
    }
}

/// `list` field: only JSON arrays are lists.
pub fn to_list(v: &Value) -> Result<Vec<Value>, LaxError> {
    match v {
        Value::Array(a) => Ok(a.clone()),
        _ => Err(LaxError::List),
    }
}

/// pydantic v1 `dict_validator`: objects pass; otherwise Python's `dict(v)`, which accepts a
/// list of 2-item sequences (2-element arrays or 2-character strings).
pub fn to_dict(v: &Value) -> Result<Map<String, Value>, LaxError> {
    match v {
        Value::Object(m) => Ok(m.clone()),
        Value::Array(items) => {
            let mut out = Map::new();
            for item in items {
                let (k, val) = match item {
                    Value::Array(pair) if pair.len() == 2 => (pair[0].clone(), pair[1].clone()),
                    Value::String(s) if s.chars().count() == 2 => {
                        let mut cs = s.chars();
                        let a = cs.next().map(String::from).unwrap_or_default();
                        let b = cs.next().map(String::from).unwrap_or_default();
                        (Value::String(a), Value::String(b))
                    }
                    _ => return Err(LaxError::Dict),
                };
                // Keys must be hashable (no lists/dicts); `dict[str, Any]` then str-coerces them.
                let key = match &k {
                    Value::Array(_) | Value::Object(_) => return Err(LaxError::Dict),
                    other => {
                        to_str(other).ok().and_then(|s| s.as_str().map(String::from)).unwrap_or_else(|| "None".into())
                    }
                };
                out.insert(key, val);
            }
            Ok(out)
        }
        _ => Err(LaxError::Dict),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ints_follow_python_int() {
        // Python: int("12") == 12, int(5.7) == 5, int(-5.7) == -5, int(True) == 1, int(" 7 ") == 7, int("1_000") == 1000
        assert_eq!(to_int(&json!("12")), Ok(json!(12)));
        assert_eq!(to_int(&json!(5.7)), Ok(json!(5)));
        assert_eq!(to_int(&json!(-5.7)), Ok(json!(-5)));
        assert_eq!(to_int(&json!(true)), Ok(json!(1)));
        assert_eq!(to_int(&json!(" 7 ")), Ok(json!(7)));
        assert_eq!(to_int(&json!("1_000")), Ok(json!(1000)));
        // int("5.7"), int("abc"), int("1__0"), int([]) all raise
        for bad in [json!("5.7"), json!("abc"), json!("1__0"), json!([]), json!({}), json!("")] {
            assert_eq!(to_int(&bad), Err(LaxError::Int), "{bad}");
        }
    }

    #[test]
    fn floats_follow_python_float() {
        assert_eq!(to_float(&json!(0)), Ok(json!(0.0)));
        assert_eq!(to_float(&json!("7.5")), Ok(json!(7.5)));
        assert_eq!(to_float(&json!(" 1e-3 ")), Ok(json!(0.001)));
        assert_eq!(to_float(&json!(false)), Ok(json!(0.0)));
        assert_eq!(to_float(&json!("x")), Err(LaxError::Float));
        assert_eq!(to_float(&json!([1])), Err(LaxError::Float));
    }

    #[test]
    fn bools_follow_pydantic_sets() {
        for t in [json!("yes"), json!("TRUE"), json!("On"), json!(1), json!(1.0), json!("1"), json!("t"), json!("y")] {
            assert_eq!(to_bool(&t), Ok(json!(true)), "{t}");
        }
        for f in [json!("no"), json!("off"), json!(0), json!("0"), json!("F"), json!("n"), json!(0.0)] {
            assert_eq!(to_bool(&f), Ok(json!(false)), "{f}");
        }
        for bad in [json!(2), json!("maybe"), json!(" true"), json!([]), json!("")] {
            assert_eq!(to_bool(&bad), Err(LaxError::Bool), "{bad}");
        }
    }

    #[test]
    fn strs_and_containers() {
        assert_eq!(to_str(&json!(5)), Ok(json!("5")));
        assert_eq!(to_str(&json!(5.0)), Ok(json!("5.0")));
        assert_eq!(to_str(&json!(true)), Ok(json!("True")));
        assert_eq!(to_str(&json!([])), Err(LaxError::Str));
        assert_eq!(to_list(&json!("a")), Err(LaxError::List));
        assert_eq!(to_dict(&json!([["a", 1], "bc"])), Ok(json!({"a": 1, "b": "c"}).as_object().unwrap().clone()));
        assert_eq!(to_dict(&json!("ab")), Err(LaxError::Dict));
        assert_eq!(to_dict(&json!(3)), Err(LaxError::Dict));
    }
}
