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

/// PNG of an RGB or RGBA raster with text chunks in order (Pillow's `PngInfo.add_text`: `tEXt`
/// when Latin-1, else `iTXt`), as `encode_pil_to_base64` writes an image's `info`.
pub fn encode_png_raster(img: &super::pil_resize::Raster, texts: &[(&str, &str)]) -> Result<Vec<u8>, ImageError> {
    let color = match img.channels {
        3 => png::ColorType::Rgb,
        4 => png::ColorType::Rgba,
        n => return Err(ImageError::Encode(format!("{n} channels cannot be written as PNG here"))),
    };
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, img.width as u32, img.height as u32);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Default);
        for (key, text) in texts {
            if is_latin1(text) {
                enc.add_text_chunk((*key).into(), (*text).into())?;
            } else {
                enc.add_itxt_chunk((*key).into(), (*text).into())?;
            }
        }
        let mut writer = enc.write_header()?;
        writer.write_image_data(&img.data)?;
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

/// The image formats of A1111's `samples_format` option: the one table of names, MIME types and
/// file extensions, for the response, the local store, S3 and batch outputs alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    Png,
    Jpeg,
    Webp,
}

impl SampleFormat {
    /// `opts.samples_format` as `encode_pil_to_base64` reads it (lower-cased); any other value is
    /// A1111's 500 "Invalid image format".
    pub fn from_options(opts: &Options) -> Result<Self, ApiError> {
        match opts.samples_format().as_str() {
            "png" => Ok(Self::Png),
            "jpg" | "jpeg" => Ok(Self::Jpeg),
            "webp" => Ok(Self::Webp),
            _ => Err(ApiError::invalid_image_format()),
        }
    }

    pub fn mime_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }
}

/// `encode_pil_to_base64` before the base64 step: the bytes in the options' format, with the
/// infotext when `opts.enable_pnginfo`.
pub fn encode_sample(img: &RgbImage, infotext: Option<&str>, opts: &Options) -> Result<Vec<u8>, ApiError> {
    let info = if opts.enable_pnginfo() { infotext } else { None };
    match SampleFormat::from_options(opts)? {
        SampleFormat::Png => encode_png(img, info),
        SampleFormat::Jpeg => encode_jpeg(img, info, opts.jpeg_quality().clamp(1, 100) as u8),
        SampleFormat::Webp => encode_webp(img, info),
    }
    .map_err(|e| ApiError::python("OSError", e.to_string()))
}

/// `encode_pil_to_base64`: [`encode_sample`], then base64. Unknown formats → 500 "Invalid image format".
pub fn encode_image_base64(img: &RgbImage, infotext: Option<&str>, opts: &Options) -> Result<String, ApiError> {
    Ok(to_base64(&encode_sample(img, infotext, opts)?))
}
