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

impl PngInfoResponse {
    /// `/png-info` from image bytes: metadata → infotext → `parse_generation_parameters`.
    pub fn from_image_bytes(bytes: &[u8], skip_fields: &[&str]) -> Self {
        let (info, items) = crate::images::read_infotext(bytes);
        let parameters = crate::infotext::parse_generation_parameters(&info, skip_fields);
        Self { info, items, parameters }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn png_info_without_metadata_still_has_defaults() {
        let png = crate::images::encode_png(&image::RgbImage::new(2, 2), None).unwrap();
        let r = PngInfoResponse::from_image_bytes(&png, &[]);
        assert_eq!(r.info, "");
        assert_eq!(r.parameters["Prompt"], json!(""));
        assert_eq!(r.parameters["Clip skip"], json!("1"));
    }
}
