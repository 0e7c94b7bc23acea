//! Response bodies of the generation, png-info, progress and memory endpoints.

use serde::Serialize;
use serde_json::{Map, Value};

/// `TextToImageResponse` / `ImageToImageResponse`: base64 images, the request echo, and the
/// `info` JSON *string*.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextToImageResponse {
    pub images: Vec<String>,
    pub parameters: Map<String, Value>,
    pub info: String,
}

/// Same shape for img2img.
pub type ImageToImageResponse = TextToImageResponse;

/// `PNGInfoResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PngInfoResponse {
    pub info: String,
    pub items: Map<String, Value>,
    pub parameters: Map<String, Value>,
}
