//! img2img init images, prepared before the request reaches the runner.

use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::request::Img2ImgRequest;
use sdapi_protocol::images::{decode_base64_image, parse_hex_color, resize_image};
use serde_json::Value;

use super::ProcessingContext;
use crate::runner::RgbImage;

/// The img2img init images as A1111 prepares them: decoded (base64 or data URL), RGBA flattened over
/// `img2img_background_color`, resized to the requested size. Shared by the HTTP route and
/// batch jobs.
pub async fn decode_init_images(ctx: &ProcessingContext, req: &Img2ImgRequest) -> Result<Vec<RgbImage>, ApiError> {
    let Some(encoded) = req.init_images.clone() else {
        return Err(ApiError::init_image_not_found());
    };
    let (width, height) =
        (req.width.unwrap_or(512).clamp(8, 8192) as u32, req.height.unwrap_or(512).clamp(8, 8192) as u32);
    let resize_mode = req.resize_mode.unwrap_or(0);
    let background = {
        let opts = ctx.options.read().unwrap_or_else(|e| e.into_inner());
        opts.get("img2img_background_color").and_then(Value::as_str).unwrap_or("#ffffff").to_string()
    };
    // Decoding and resizing is CPU work: keep it off the async executor.
    tokio::task::spawn_blocking(move || -> Result<Vec<RgbImage>, ApiError> {
        encoded
            .iter()
            .map(|v| {
                let s = v.as_str().ok_or_else(ApiError::invalid_encoded_image)?;
                let img = decode_base64_image(s)?.flatten(parse_hex_color(&background));
                Ok(resize_image(resize_mode, &img, width, height)?.into())
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::runtime(e.to_string()))?
}
