//! `/png-info`: image bytes → the infotext in their metadata → `parse_generation_parameters`.

use crate::api::errors::ApiError;
use crate::api::responses::PngInfoResponse;

impl PngInfoResponse {
    /// `/png-info` from image bytes: metadata → infotext → `parse_generation_parameters`. Text
    /// over Pillow's bounds is A1111's "Invalid encoded image".
    pub fn from_image_bytes(bytes: &[u8], skip_fields: &[&str]) -> Result<Self, ApiError> {
        let (info, items) = crate::images::read_infotext(bytes).map_err(|_| ApiError::invalid_encoded_image())?;
        let parameters = super::parse_generation_parameters(&info, skip_fields);
        Ok(Self { info, items, parameters })
    }
}

#[cfg(test)]
mod tests {
    use crate::api::responses::PngInfoResponse;
    use serde_json::json;

    #[test]
    fn png_info_without_metadata_still_has_defaults() {
        let png = crate::images::encode_png(&image::RgbImage::new(2, 2), None).unwrap();
        let r = PngInfoResponse::from_image_bytes(&png, &[]).unwrap();
        assert_eq!(r.info, "");
        assert_eq!(r.parameters["Prompt"], json!(""));
        assert_eq!(r.parameters["Clip skip"], json!("1"));
    }
}
