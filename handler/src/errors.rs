//! Turning core errors into A1111-shaped HTTP responses.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sdapi_protocol::api::errors::{ApiError, ValidationError, ValidationErrors};
use serde_json::Value;

/// Compact JSON as FastAPI writes it (`separators=(",",":")`, non-ASCII kept).
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("serialisation failed: {e}")).into_response(),
    }
}

/// Any error a route can return.
#[derive(Debug)]
pub enum HandlerError {
    Api(ApiError),
    Validation(ValidationErrors),
    /// FastAPI's own `{"detail": "..."}` bodies (404 Not Found, 405 Method Not Allowed).
    Plain(StatusCode, String),
    /// The queue is full: 503 in A1111's error shape with `Retry-After`.
    Busy {
        detail: String,
        retry_after_s: &'static str,
    },
}

impl From<ApiError> for HandlerError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<ValidationErrors> for HandlerError {
    fn from(e: ValidationErrors) -> Self {
        Self::Validation(e)
    }
}

impl IntoResponse for HandlerError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => {
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if status.is_server_error() {
                    tracing::error!(error = %e.error, detail = %e.detail, errors = %e.errors, "request failed");
                }
                json_response(status, &e)
            }
            Self::Validation(v) => json_response(StatusCode::UNPROCESSABLE_ENTITY, &v),
            Self::Plain(status, detail) => json_response(status, &serde_json::json!({ "detail": detail })),
            Self::Busy { detail, retry_after_s } => {
                let mut resp = json_response(StatusCode::SERVICE_UNAVAILABLE, &ApiError::http(503, detail));
                resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static(retry_after_s));
                resp
            }
        }
    }
}

/// Parse a request body as JSON the way FastAPI does, with its 422 shapes for what fails.
pub fn parse_json_body(content_type: Option<&str>, body: &[u8]) -> Result<Value, HandlerError> {
    if body.is_empty() {
        return Err(ValidationErrors { detail: vec![ValidationError::body_missing()] }.into());
    }
    // FastAPI only JSON-decodes bodies declared as JSON (or undeclared); anything else reaches the
    // model as raw bytes and fails as "value is not a valid dict".
    let is_json = match content_type {
        None => true,
        Some(ct) => {
            let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        }
    };
    if !is_json {
        return Err(ValidationErrors { detail: vec![ValidationError::body_not_a_dict()] }.into());
    }
    serde_json::from_slice(body).map_err(|e| json_decode_error(body, &e).into())
}

/// `value_error.jsondecode` in the shape of Python's `json.JSONDecodeError`.
fn json_decode_error(body: &[u8], e: &serde_json::Error) -> ValidationErrors {
    let text = String::from_utf8_lossy(body);
    let (line, column) = (e.line(), e.column().max(1));
    // Character offset of (line, column), as Python reports `pos`.
    let pos: usize = text.split_inclusive('\n').take(line.saturating_sub(1)).map(|l| l.chars().count()).sum::<usize>()
        + column.saturating_sub(1);
    let what = match e.classify() {
        serde_json::error::Category::Eof => "Expecting value",
        _ if e.to_string().contains("expected value") => "Expecting value",
        _ => "Invalid JSON",
    };
    let msg = format!("{what}: line {line} column {column} (char {pos})");
    let mut item = ValidationError::new(vec!["body".into(), pos.into()], &msg, "value_error.jsondecode");
    item.ctx = Some(serde_json::json!({
        "msg": what, "doc": text, "pos": pos, "lineno": line, "colno": column
    }));
    ValidationErrors { detail: vec![item] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_json_gets_a_jsondecode_422() {
        let err = parse_json_body(Some("application/json"), b"{\"a\": }").unwrap_err();
        let HandlerError::Validation(v) = err else { panic!("expected 422") };
        assert_eq!(v.detail[0].kind, "value_error.jsondecode");
        assert_eq!(v.detail[0].loc[0], "body");
        assert!(v.detail[0].msg.starts_with("Expecting value: line 1 column"), "{}", v.detail[0].msg);
    }

    #[test]
    fn non_json_content_type_is_not_a_dict() {
        let err = parse_json_body(Some("text/plain"), b"hello").unwrap_err();
        let HandlerError::Validation(v) = err else { panic!("expected 422") };
        assert_eq!(v.detail[0].kind, "type_error.dict");
    }

    #[test]
    fn empty_body_is_field_required() {
        let HandlerError::Validation(v) = parse_json_body(None, b"").unwrap_err() else { panic!() };
        assert_eq!(v.detail[0].kind, "value_error.missing");
    }
}
