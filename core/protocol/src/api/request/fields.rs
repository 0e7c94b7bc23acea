//! Field tables of the generated pydantic models and the validator that applies them.

use serde_json::{Map, Value};

use crate::api::errors::{LaxError, ValidationError, ValidationErrors};
use crate::api::lax;

/// The pydantic type of a request field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Str,
    Int,
    Float,
    Bool,
    /// `list[str]`
    StrList,
    /// bare `list` (items unchecked)
    List,
    /// `dict[str, Any]` (keys str-coerced)
    StrDict,
    /// bare `dict`
    Dict,
}

/// A field default as A1111 declares it (never coerced: int `0` stays int).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldDefault {
    Null,
    Str(&'static str),
    Int(i64),
    Float(f64),
    Bool(bool),
    EmptyList,
    EmptyDict,
}

impl FieldDefault {
    pub fn to_value(self) -> Value {
        match self {
            FieldDefault::Null => Value::Null,
            FieldDefault::Str(s) => Value::from(s),
            FieldDefault::Int(i) => Value::from(i),
            FieldDefault::Float(f) => Value::from(f),
            FieldDefault::Bool(b) => Value::Bool(b),
            FieldDefault::EmptyList => Value::Array(vec![]),
            FieldDefault::EmptyDict => Value::Object(Map::new()),
        }
    }
}

/// One field of a request model: name (= JSON key), type, default, whether `null` is accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FieldSpec {
    pub name: &'static str,
    pub kind: FieldKind,
    pub default: FieldDefault,
    pub nullable: bool,
}

/// A validated request: every field in model order (sent values coerced, defaults as declared)
/// and the names of the fields the client actually sent (pydantic's `exclude_unset`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValidatedFields {
    pub values: Map<String, Value>,
    pub explicitly_set: Vec<String>,
}

impl ValidatedFields {
    pub fn get(&self, name: &str) -> &Value {
        self.values.get(name).unwrap_or(&Value::Null)
    }
    pub fn is_set(&self, name: &str) -> bool {
        self.explicitly_set.iter().any(|n| n == name)
    }
}

/// Coerces one sent value; `Err` carries the location suffix (list index) and the error.
fn coerce(kind: FieldKind, v: &Value) -> Result<Value, (Vec<Value>, LaxError)> {
    let plain = |r: Result<Value, LaxError>| r.map_err(|e| (vec![], e));
    match kind {
        FieldKind::Str => plain(lax::to_str(v)),
        FieldKind::Int => plain(lax::to_int(v)),
        FieldKind::Float => plain(lax::to_float(v)),
        FieldKind::Bool => plain(lax::to_bool(v)),
        FieldKind::List => lax::to_list(v).map(Value::Array).map_err(|e| (vec![], e)),
        FieldKind::StrList => {
            let items = lax::to_list(v).map_err(|e| (vec![], e))?;
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                // list[str] items are not Optional: null is "none is not an allowed value".
                let r = if item.is_null() { Err(LaxError::NoneNotAllowed) } else { lax::to_str(item) };
                out.push(r.map_err(|e| (vec![Value::from(i)], e))?);
            }
            Ok(Value::Array(out))
        }
        FieldKind::StrDict | FieldKind::Dict => lax::to_dict(v).map(Value::Object).map_err(|e| (vec![], e)),
    }
}

/// Validates a JSON body against a field table, collecting every error like pydantic does.
/// Unknown keys are ignored. A non-object body is the model-level "not a valid dict" error.
pub fn validate(fields: &[FieldSpec], body: &Value) -> Result<ValidatedFields, ValidationErrors> {
    let obj = match body {
        Value::Object(o) => o,
        Value::Null => return Err(ValidationErrors { detail: vec![ValidationError::body_missing()] }),
        _ => return Err(ValidationErrors { detail: vec![ValidationError::body_not_a_dict()] }),
    };
    let mut out = ValidatedFields::default();
    let mut errors = Vec::new();
    for spec in fields {
        match obj.get(spec.name) {
            None => {
                out.values.insert(spec.name.into(), spec.default.to_value());
            }
            Some(sent) => {
                out.explicitly_set.push(spec.name.into());
                if sent.is_null() {
                    if spec.nullable {
                        out.values.insert(spec.name.into(), Value::Null);
                    } else {
                        errors.push(ValidationError::at_field(spec.name, &[], LaxError::NoneNotAllowed));
                    }
                    continue;
                }
                match coerce(spec.kind, sent) {
                    Ok(v) => {
                        out.values.insert(spec.name.into(), v);
                    }
                    Err((rest, e)) => errors.push(ValidationError::at_field(spec.name, &rest, e)),
                }
            }
        }
    }
    if errors.is_empty() { Ok(out) } else { Err(ValidationErrors { detail: errors }) }
}

/// Parses raw request bytes: empty → "field required"; malformed JSON → FastAPI's
/// `value_error.jsondecode` (best-effort reproduction of Python's message and position).
pub fn parse_body(bytes: &[u8]) -> Result<Value, ValidationErrors> {
    if bytes.is_empty() {
        return Err(ValidationErrors { detail: vec![ValidationError::body_missing()] });
    }
    serde_json::from_slice(bytes).map_err(|e| ValidationErrors { detail: vec![json_decode_error(bytes, &e)] })
}

/// Maps a serde_json error onto Python's `json.JSONDecodeError` wording (best effort: the
/// message category and the position can differ from CPython's for some inputs).
fn json_decode_error(bytes: &[u8], e: &serde_json::Error) -> ValidationError {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let line = e.line().max(1);
    let line_start: usize = text.split_inclusive('\n').take(line - 1).map(|l| l.chars().count()).sum();
    // serde columns are 1-based and point at the offending char; Python reports its 0-based index.
    let col = e.column().max(1);
    let mut pos = line_start + col - 1;
    if e.is_eof() {
        pos = text.chars().count();
    }
    let described = e.to_string();
    let msg = if described.contains("trailing characters") {
        "Extra data"
    } else if described.contains("key must be a string") {
        "Expecting property name enclosed in double quotes"
    } else if described.contains("expected `,` or `}`") || described.contains("expected `,` or `]`") {
        "Expecting ',' delimiter"
    } else if described.contains("expected `:`") {
        "Expecting ':' delimiter"
    } else if described.contains("control character") {
        "Invalid control character at"
    } else {
        "Expecting value"
    };
    let colno = pos - line_start + 1;
    ValidationError {
        loc: vec![Value::from("body"), Value::from(pos)],
        msg: format!("{msg}: line {line} column {colno} (char {pos})"),
        kind: "value_error.jsondecode".into(),
        ctx: Some(serde_json::json!({"msg": msg, "doc": text, "pos": pos, "lineno": line, "colno": colno})),
    }
}

/// An OpenAPI 3 schema object for a field table: each property with title, type, default,
/// and `nullable` where pydantic accepts null. The lead inserts it under `components.schemas`.
pub fn json_schema(title: &str, fields: &[FieldSpec]) -> Value {
    let mut props = Map::new();
    for f in fields {
        let mut p = Map::new();
        let words: Vec<String> = f
            .name
            .split('_')
            .map(|w| {
                let mut c = w.chars();
                c.next().map(|f| f.to_uppercase().collect::<String>() + c.as_str()).unwrap_or_default()
            })
            .collect();
        p.insert("title".into(), Value::from(words.join(" ")));
        let (ty, items) = match f.kind {
            FieldKind::Str => ("string", None),
            FieldKind::Int => ("integer", None),
            FieldKind::Float => ("number", None),
            FieldKind::Bool => ("boolean", None),
            FieldKind::StrList => ("array", Some(serde_json::json!({"type": "string"}))),
            FieldKind::List => ("array", Some(serde_json::json!({}))),
            FieldKind::StrDict | FieldKind::Dict => ("object", None),
        };
        p.insert("type".into(), Value::from(ty));
        if let Some(items) = items {
            p.insert("items".into(), items);
        }
        if f.default != FieldDefault::Null {
            p.insert("default".into(), f.default.to_value());
        }
        if f.nullable {
            p.insert("nullable".into(), Value::Bool(true));
        }
        props.insert(f.name.into(), Value::Object(p));
    }
    serde_json::json!({"title": title, "type": "object", "properties": props})
}
