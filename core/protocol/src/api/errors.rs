//! A1111's two error shapes: the four-key body its middleware writes for every exception
//! (docs/a1111-behaviour.md §2.3), and FastAPI's untouched 422 `{"detail": [...]}` for request validation errors.

use serde::Serialize;
use serde_json::{Value, json};

/// An error as A1111's `handle_exception` middleware renders it:
/// `{"error": <class name>, "detail": ..., "body": ..., "errors": str(e)}`.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{status} {error}: {detail} {errors}")]
pub struct ApiError {
    /// HTTP status code (not part of the body).
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    pub detail: Value,
    pub body: String,
    pub errors: String,
}

impl ApiError {
    /// `HTTPException(status_code, detail)`: starlette 0.26's HTTPException has no `__str__`,
    /// so `errors` is always empty.
    pub fn http(status: u16, detail: impl Into<String>) -> Self {
        Self {
            status,
            error: "HTTPException".into(),
            detail: Value::String(detail.into()),
            body: String::new(),
            errors: String::new(),
        }
    }

    /// Any other Python exception: status 500, empty `detail`, `errors` = `str(e)`.
    pub fn python(class: &str, message: impl Into<String>) -> Self {
        Self {
            status: 500,
            error: class.into(),
            detail: Value::String(String::new()),
            body: String::new(),
            errors: message.into(),
        }
    }

    /// `RuntimeError(msg)`.
    pub fn runtime(message: impl Into<String>) -> Self {
        Self::python("RuntimeError", message)
    }

    /// `KeyError(key)`: Python's `str(KeyError('k'))` is the repr of the key, `'k'`.
    pub fn key_error(key: &str) -> Self {
        Self::python("KeyError", crate::python_json::py_repr_str(key))
    }

    /// `AssertionError(msg)`.
    pub fn assertion(message: impl Into<String>) -> Self {
        Self::python("AssertionError", message)
    }

    /// `Exception(msg)` (e.g. "could not find upscaler named X").
    pub fn exception(message: impl Into<String>) -> Self {
        Self::python("Exception", message)
    }

    // ---- the catalogue of api.py (docs/a1111-behaviour.md §2.3) ----
    pub fn script_not_found(name: &str) -> Self {
        Self::http(422, format!("Script '{name}' not found"))
    }
    pub fn alwayson_script_not_found(name: &str) -> Self {
        Self::http(422, format!("always on script {name} not found"))
    }
    pub fn selectable_script_in_alwayson() -> Self {
        Self::http(422, "Cannot have a selectable script in the always on scripts params")
    }
    pub fn sampler_not_found() -> Self {
        Self::http(400, "Sampler not found")
    }
    pub fn init_image_not_found() -> Self {
        Self::http(404, "Init image not found")
    }
    pub fn requests_not_allowed() -> Self {
        Self::http(500, "Requests not allowed")
    }
    pub fn local_request_not_allowed() -> Self {
        Self::http(500, "Request to local resource not allowed")
    }
    pub fn invalid_image_url() -> Self {
        Self::http(500, "Invalid image url")
    }
    pub fn invalid_encoded_image() -> Self {
        Self::http(500, "Invalid encoded image")
    }
    pub fn invalid_image_format() -> Self {
        Self::http(500, "Invalid image format")
    }
    pub fn image_not_found() -> Self {
        Self::http(404, "Image not found")
    }
    pub fn model_not_found() -> Self {
        Self::http(404, "Model not found")
    }
    /// POST /options with an unknown `sd_model_checkpoint`: Python `f"model {name!r} not found"`.
    pub fn checkpoint_not_found(name: &str) -> Self {
        Self::runtime(format!("model {} not found", crate::python_json::py_repr_str(name)))
    }
    /// Unknown path: starlette's plain 404 (not the four-key shape).
    pub fn not_found_body() -> Value {
        json!({"detail": "Not Found"})
    }
    /// Wrong method: starlette's plain 405.
    pub fn method_not_allowed_body() -> Value {
        json!({"detail": "Method Not Allowed"})
    }
}

/// One pydantic v1 error item: `{"loc": [...], "msg": ..., "type": ..., "ctx"?: {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationError {
    pub loc: Vec<Value>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Value>,
}

impl ValidationError {
    pub fn new(loc: Vec<Value>, msg: &str, kind: &str) -> Self {
        Self { loc, msg: msg.into(), kind: kind.into(), ctx: None }
    }

    /// `loc: ["body", field, ...rest]`.
    pub fn at_field(field: &str, rest: &[Value], err: LaxError) -> Self {
        let mut loc = vec![Value::from("body"), Value::from(field)];
        loc.extend_from_slice(rest);
        Self::new(loc, err.msg(), err.kind())
    }

    /// Missing body: `{"loc": ["body"], "msg": "field required", "type": "value_error.missing"}`.
    pub fn body_missing() -> Self {
        Self::new(vec!["body".into()], "field required", "value_error.missing")
    }

    /// Body that is valid JSON but not an object (pydantic's model validator).
    pub fn body_not_a_dict() -> Self {
        Self::new(vec!["body".into()], LaxError::Dict.msg(), LaxError::Dict.kind())
    }
}

/// The 422 body FastAPI returns: `{"detail": [errors...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("request validation failed ({} errors)", detail.len())]
pub struct ValidationErrors {
    pub detail: Vec<ValidationError>,
}

impl ValidationErrors {
    pub const STATUS: u16 = 422;
}

/// The pydantic v1 coercion failures we reproduce, with their exact msg/type strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaxError {
    Int,
    Float,
    Bool,
    Str,
    List,
    Dict,
    NoneNotAllowed,
}

impl LaxError {
    pub fn msg(self) -> &'static str {
        match self {
            LaxError::Int => "value is not a valid integer",
            LaxError::Float => "value is not a valid float",
            LaxError::Bool => "value could not be parsed to a boolean",
            LaxError::Str => "str type expected",
            LaxError::List => "value is not a valid list",
            LaxError::Dict => "value is not a valid dict",
            LaxError::NoneNotAllowed => "none is not an allowed value",
        }
    }
    pub fn kind(self) -> &'static str {
        match self {
            LaxError::Int => "type_error.integer",
            LaxError::Float => "type_error.float",
            LaxError::Bool => "type_error.bool",
            LaxError::Str => "type_error.str",
            LaxError::List => "type_error.list",
            LaxError::Dict => "type_error.dict",
            LaxError::NoneNotAllowed => "type_error.none.not_allowed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_exception_shape() {
        let e = ApiError::init_image_not_found();
        assert_eq!(e.status, 404);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"error":"HTTPException","detail":"Init image not found","body":"","errors":""})
        );
    }

    #[test]
    fn python_exception_shapes() {
        let e = ApiError::key_error("zzz");
        assert_eq!(e.status, 500);
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"error":"KeyError","detail":"","body":"","errors":"'zzz'"})
        );
        let e = ApiError::checkpoint_not_found("x");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"error":"RuntimeError","detail":"","body":"","errors":"model 'x' not found"})
        );
    }

    #[test]
    fn validation_body_shape() {
        let errs = ValidationErrors { detail: vec![ValidationError::at_field("steps", &[], LaxError::Int)] };
        assert_eq!(
            serde_json::to_value(&errs).unwrap(),
            json!({"detail":[{"loc":["body","steps"],"msg":"value is not a valid integer","type":"type_error.integer"}]})
        );
        assert_eq!(
            serde_json::to_value(ValidationErrors { detail: vec![ValidationError::body_missing()] }).unwrap(),
            json!({"detail":[{"loc":["body"],"msg":"field required","type":"value_error.missing"}]})
        );
    }
}
