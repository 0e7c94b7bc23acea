//! Capabilities this server does not offer answer 501 in A1111's four-key shape — never a fake
//! success.

use crate::errors::HandlerError;
use sdapi_protocol::api::errors::ApiError;

fn not_implemented(what: &str) -> HandlerError {
    HandlerError::Api(ApiError::http(501, format!("{what} is not supported by this server")))
}

pub async fn interrogate() -> HandlerError {
    not_implemented("Interrogate (CLIP/DeepDanbooru captioning)")
}

pub async fn training() -> HandlerError {
    not_implemented("Training and creating embeddings/hypernetworks")
}
