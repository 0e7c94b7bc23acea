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
    // Everything that bounds the decoding work is checked before any image is decoded.
    super::validate(&super::params::CommonParams::from_img2img(req), &ctx.limits)?;
    check_init_image_count(encoded.len(), req.batch_size.unwrap_or(1))?;
    let (width, height) =
        (req.width.unwrap_or(512).clamp(8, 8192) as u32, req.height.unwrap_or(512).clamp(8, 8192) as u32);
    let resize_mode = req.resize_mode.unwrap_or(0);
    let background = {
        let opts = ctx.options.read().unwrap_or_else(|e| e.into_inner());
        opts.get("img2img_background_color").and_then(Value::as_str).unwrap_or("#ffffff").to_string()
    };
    let max_pixels = ctx.limits.max_batch_megapixels as f64 * 1e6;
    // "SD upscale" and the outpainting script tile the image as it was sent; inpainting crops
    // ("only masked") and overlays at the image's own size.
    let has_mask = req.mask.as_deref().is_some_and(|m| !m.is_empty());
    let keep_size = super::scripts::is_sd_upscale(req) || super::scripts::is_poor_mans_outpainting(req) || has_mask;
    // Decoding and resizing is CPU work: keep it off the async executor.
    tokio::task::spawn_blocking(move || -> Result<Vec<RgbImage>, ApiError> {
        encoded
            .iter()
            .map(|v| {
                let s = v.as_str().ok_or_else(ApiError::invalid_encoded_image)?;
                let img = decode_base64_image(s)?.flatten(parse_hex_color(&background));
                if resize_mode == LATENT_UPSCALE || keep_size {
                    // Encoded at its own size and resized as a latent: its size is the bound.
                    let pixels = f64::from(img.width()) * f64::from(img.height());
                    if pixels > max_pixels {
                        return Err(ApiError::http(
                            422,
                            format!(
                                "an init image of {}x{} is more than this server takes at its own size ({} megapixels, SDAPI_MAX_BATCH_MEGAPIXELS)",
                                img.width(),
                                img.height(),
                                max_pixels / 1e6
                            ),
                        ));
                    }
                    return Ok(img.into());
                }
                Ok(resize_image(resize_mode, &img, width, height).into())
            })
            .collect()
    })
    .await
    .map_err(|e| ApiError::runtime(e.to_string()))?
}

/// `resize_mode` 3, "Just resize (latent upscale)".
const LATENT_UPSCALE: i64 = 3;

/// A1111 takes one init image for the whole batch, or up to `batch_size` of them (the batch then
/// shrinks to their number, see [`img2img_batch_size`]); more is its RuntimeError.
pub fn check_init_image_count(count: usize, batch_size: i64) -> Result<(), ApiError> {
    if count > 1 && count as i64 > batch_size {
        return Err(ApiError::python(
            "RuntimeError",
            format!("bad number of images passed: {count}; expecting {batch_size} or less"),
        ));
    }
    Ok(())
}

/// The images per batch of an img2img request: with several init images A1111 sets `batch_size`
/// to their number (its seeds and prompts were already laid out for the requested size).
pub fn img2img_batch_size(init_images: usize, requested: usize) -> usize {
    if init_images > 1 { init_images.min(requested) } else { requested }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_image_count_follows_a1111() {
        assert!(check_init_image_count(1, 4).is_ok());
        assert!(check_init_image_count(4, 4).is_ok());
        let err = check_init_image_count(5, 4).unwrap_err();
        assert_eq!((err.status, err.errors.as_str()), (500, "bad number of images passed: 5; expecting 4 or less"));
        assert_eq!(img2img_batch_size(1, 4), 4);
        assert_eq!(img2img_batch_size(2, 4), 2);
        assert_eq!(img2img_batch_size(4, 4), 4);
    }
}
