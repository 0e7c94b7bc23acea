//! Input decoding (`decode_base64_to_image`, §2.5): data URLs, Python's non-validating
//! `b64decode`, and RGBA flattening over a background colour.

use image::{DynamicImage, RgbImage, RgbaImage};

use crate::api::errors::ApiError;

/// Python's `base64.b64decode(s)` (non-strict): characters outside the alphabet are skipped,
/// a complete pad sequence ends the input, leftover bits are an error ("Incorrect padding").
pub fn py_b64decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a' + 26) as u32),
            b'0'..=b'9' => Some((c - b'0' + 52) as u32),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut quad_pos = 0u32;
    let mut left: u32 = 0;
    let mut pads = 0u32;
    for &c in s.as_bytes() {
        if c == b'=' {
            pads += 1;
            if quad_pos >= 2 && quad_pos + pads >= 4 {
                return Some(out);
            }
            continue;
        }
        let Some(v) = val(c) else { continue };
        pads = 0;
        match quad_pos {
            0 => {
                left = v;
                quad_pos = 1;
            }
            1 => {
                out.push(((left << 2) | (v >> 4)) as u8);
                left = v & 0x0f;
                quad_pos = 2;
            }
            2 => {
                out.push(((left << 4) | (v >> 2)) as u8);
                left = v & 0x03;
                quad_pos = 3;
            }
            _ => {
                out.push(((left << 6) | v) as u8);
                quad_pos = 0;
            }
        }
    }
    (quad_pos == 0).then_some(out)
}

/// A decoded input image: RGBA when the source had transparency, else RGB.
#[derive(Debug, Clone)]
pub enum DecodedImage {
    Rgb(RgbImage),
    Rgba(RgbaImage),
}

impl DecodedImage {
    pub fn width(&self) -> u32 {
        match self {
            DecodedImage::Rgb(i) => i.width(),
            DecodedImage::Rgba(i) => i.width(),
        }
    }
    pub fn height(&self) -> u32 {
        match self {
            DecodedImage::Rgb(i) => i.height(),
            DecodedImage::Rgba(i) => i.height(),
        }
    }
    /// `images.flatten(img, bgcolor)`: RGBA is composited over `bg` (Pillow's paste-with-mask
    /// rounding), then converted to RGB.
    pub fn flatten(&self, bg: [u8; 3]) -> RgbImage {
        match self {
            DecodedImage::Rgb(i) => i.clone(),
            DecodedImage::Rgba(i) => RgbImage::from_fn(i.width(), i.height(), |x, y| {
                let p = i.get_pixel(x, y).0;
                let a = p[3] as u32;
                let blend = |fg: u8, bg: u8| {
                    let v = bg as u32 * (255 - a) + fg as u32 * a + 128;
                    ((v + (v >> 8)) >> 8) as u8
                };
                image::Rgb([blend(p[0], bg[0]), blend(p[1], bg[1]), blend(p[2], bg[2])])
            }),
        }
    }
}

/// Parses `#rrggbb` (A1111's colour pickers); anything else is white.
pub fn parse_hex_color(s: &str) -> [u8; 3] {
    let h = s.trim().trim_start_matches('#');
    let byte = |i: usize| h.get(i..i + 2).and_then(|x| u8::from_str_radix(x, 16).ok());
    match (h.len(), byte(0), byte(2), byte(4)) {
        (6, Some(r), Some(g), Some(b)) => [r, g, b],
        _ => [255, 255, 255],
    }
}

/// Pillow's decompression-bomb bound (2 × `Image.MAX_IMAGE_PIXELS`).
pub const MAX_DECODE_PIXELS: u64 = 2 * 89_478_485;
/// Memory one decode may allocate: an RGBA image at Pillow's bound, plus the decoder's own.
pub const MAX_DECODE_ALLOC: u64 = 768 << 20;

/// Decodes image file bytes (PNG/JPEG/WebP/GIF). PNG palette/RGB images with a tRNS chunk come
/// back as RGBA, as A1111's `images.read` transparency fix does.
pub fn decode_image_bytes(bytes: &[u8]) -> Option<DecodedImage> {
    let reader = || image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format().ok();
    // Pillow refuses images over twice its MAX_IMAGE_PIXELS (DecompressionBombError), which
    // A1111 answers as an invalid image; the size is read from the header before decoding.
    let (width, height) = reader()?.into_dimensions().ok()?;
    if u64::from(width) * u64::from(height) > MAX_DECODE_PIXELS {
        return None;
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    let mut decoder = reader()?;
    decoder.limits(limits);
    let img = decoder.decode().ok()?;
    Some(match img {
        DynamicImage::ImageRgb8(i) => DecodedImage::Rgb(i),
        i if i.color().has_alpha() => DecodedImage::Rgba(i.to_rgba8()),
        i => DecodedImage::Rgb(i.to_rgb8()),
    })
}

/// Whether image file bytes are what Pillow opens as mode "RGBA" (a true alpha channel; grey +
/// alpha, palettes and `tRNS` chunks are other modes to Pillow). A1111 reads an inpainting mask's
/// alpha only for RGBA images.
pub fn opens_as_rgba(bytes: &[u8]) -> bool {
    use image::{ExtendedColorType, ImageDecoder};
    let Some(decoder) = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_decoder().ok())
    else {
        return false;
    };
    matches!(decoder.original_color_type(), ExtendedColorType::Rgba8 | ExtendedColorType::Rgba16)
}

/// `decode_base64_to_image`: http(s) URLs are refused (we never fetch URLs: 500
/// "Requests not allowed"); `data:image/...;base64,` prefixes are stripped the way A1111
/// splits them; garbage → 500 "Invalid encoded image".
pub fn decode_base64_image(encoding: &str) -> Result<DecodedImage, ApiError> {
    let bytes = decode_base64_file(encoding)?;
    decode_image_bytes(&bytes).ok_or_else(ApiError::invalid_encoded_image)
}

/// The file bytes of an image field as [`decode_base64_image`] reads them (for callers that also
/// need the file itself, e.g. its text chunks).
pub fn decode_base64_file(encoding: &str) -> Result<Vec<u8>, ApiError> {
    if encoding.starts_with("http://") || encoding.starts_with("https://") {
        return Err(ApiError::requests_not_allowed());
    }
    let mut payload = encoding;
    if encoding.starts_with("data:image/") {
        // encoding.split(";")[1].split(",")[1] — outside A1111's try, so a malformed data URL
        // is an IndexError 500.
        let index_error = || ApiError::python("IndexError", "list index out of range");
        let after_semicolon = encoding.split(';').nth(1).ok_or_else(index_error)?;
        payload = after_semicolon.split(',').nth(1).ok_or_else(index_error)?;
    }
    py_b64decode(payload).ok_or_else(ApiError::invalid_encoded_image)
}
