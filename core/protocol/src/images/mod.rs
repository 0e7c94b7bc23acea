//! Image codecs of the API: output encoding with infotext metadata, input decoding of
//! base64 / data URLs, and metadata reading for `/png-info`.

pub mod annotations;
pub mod cv_blur;
pub mod decode;
pub mod encode;
pub mod exif;
pub mod extras;
pub mod grid;
pub mod pil_ops;
pub mod pil_resize;
pub mod read;
pub mod resize;
pub mod text;
pub mod upscale;

pub use decode::{
    DecodedImage, decode_base64_file, decode_base64_image, decode_image_bytes, opens_as_rgba, parse_hex_color,
    py_b64decode,
};
pub use encode::{SampleFormat, encode_image_base64, encode_jpeg, encode_png, encode_sample, encode_webp, to_base64};
pub use pil_resize::{PilFilter, Raster, pil_resize, pil_resize_raster};
pub use read::read_infotext;
pub use resize::{resize_image, resize_raster};
pub use upscale::{BuiltinUpscaler, pil_blend, resize_with, resize_with_upscaler, upscale_loop};

/// Failures of the encoders.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("png encoding failed: {0}")]
    Png(#[from] png::EncodingError),
    #[error("image encoding failed: {0}")]
    Image(#[from] image::ImageError),
    #[error("encoding failed: {0}")]
    Encode(String),
}

#[cfg(test)]
mod tests;
