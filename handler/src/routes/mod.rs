//! Route handlers, grouped by what they serve.

pub mod control;
pub mod extras;
pub mod generation;
pub mod jobs;
pub mod listing;
pub mod networks;
pub mod openapi;
pub mod table;
pub mod unsupported;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use sdapi_protocol::api::errors::ApiError;
use serde_json::Value;

use crate::errors::{HandlerError, parse_json_body};

/// Reads a JSON body with A1111's error shapes: 413 (four-key) when over the limit, 422 otherwise.
pub fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Value, HandlerError> {
    let bytes = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            HandlerError::Api(ApiError::http(413, format!("Request body too large: {}", e.body_text())))
        } else {
            HandlerError::Api(ApiError::http(400, format!("Could not read the request body: {}", e.body_text())))
        }
    })?;
    let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    parse_json_body(content_type, &bytes)
}
