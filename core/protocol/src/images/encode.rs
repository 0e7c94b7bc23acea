//! Output encoding (`encode_pil_to_base64`, §2.6): PNG with a `parameters` text chunk,
//! JPEG/WebP with the EXIF UserComment, then standard padded base64.

use base64::Engine;
use image::{ImageEncoder, RgbImage};

use super::ImageError;
use super::exif::user_comment_exif;
use crate::api::errors::ApiError;
use crate::api::options::Options;

/// Pillow writes `tEXt` when the text is Latin-1 encodable, else an uncompressed `iTXt`.
fn is_latin1(s: &str) -> bool {
    s.chars().all(|c| (c as u32) < 256)
}

/// PNG (zlib default level, like Pillow's 6) with optional `parameters` text chunk.
pub fn encode_png(img: &RgbImage, parameters: Option<&str>) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width(), img.height());
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Default);
        if let Some(text) = parameters {
            if is_latin1(text) {
                enc.add_text_chunk("parameters".into(), text.into())?;
            } else {
                enc.add_itxt_chunk("parameters".into(), text.into())?;
            }
        }
        let mut writer = enc.write_header()?;
        writer.write_image_data(img.as_raw())?;
        writer.finish()?;
    }
    Ok(out)
}

/// JPEG at `quality` with EXIF UserComment = infotext (empty string when none, as A1111).
pub fn encode_jpeg(img: &RgbImage, infotext: Option<&str>, quality: u8) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100));
    enc.set_exif_metadata(user_comment_exif(infotext.unwrap_or(""))).map_err(|e| ImageError::Encode(e.to_string()))?;
    enc.write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)?;
    Ok(out)
}

/// WebP with EXIF UserComment. The `image` crate only encodes lossless WebP, so this is always
/// lossless (A1111 v1.10.1 writes lossy quality-80 WebP unless `webp_lossless`).
pub fn encode_webp(img: &RgbImage, infotext: Option<&str>) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    let mut enc = image::codecs::webp::WebPEncoder::new_lossless(&mut out);
    enc.set_exif_metadata(user_comment_exif(infotext.unwrap_or(""))).map_err(|e| ImageError::Encode(e.to_string()))?;
    enc.write_image(img.as_raw(), img.width(), img.height(), image::ExtendedColorType::Rgb8)?;
    Ok(out)
}

/// Standard base64 with padding, no data-URL prefix.
pub fn to_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `encode_pil_to_base64`: format from `opts.samples_format`; the infotext goes in when
/// `opts.enable_pnginfo`. Unknown formats → 500 "Invalid image format".
pub fn encode_image_base64(img: &RgbImage, infotext: Option<&str>, opts: &Options) -> Result<String, ApiError> {
    let info = if opts.enable_pnginfo() { infotext } else { None };
    let bytes = match opts.samples_format().as_str() {
        "png" => encode_png(img, info),
        "jpg" | "jpeg" => encode_jpeg(img, info, opts.jpeg_quality().clamp(1, 100) as u8),
        "webp" => encode_webp(img, info),
        _ => return Err(ApiError::invalid_image_format()),
    }
    .map_err(|e| ApiError::python("OSError", e.to_string()))?;
    Ok(to_base64(&bytes))
}
