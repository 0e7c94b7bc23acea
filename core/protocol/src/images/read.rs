//! `read_info_from_image` for `/png-info`: the `parameters` PNG text chunk or the EXIF
//! UserComment of JPEG/WebP, plus the other metadata items.

use serde_json::{Map, Value};

use super::exif::{decode_user_comment, read_user_comment_raw};

/// Keys A1111 drops from `items` (Pillow `image.info` entries that are not user text).
const IGNORED_INFO_KEYS: [&str; 15] = [
    "jfif",
    "jfif_version",
    "jfif_unit",
    "jfif_density",
    "dpi",
    "exif",
    "loop",
    "background",
    "timestamp",
    "duration",
    "progressive",
    "progression",
    "icc_profile",
    "chromaticity",
    "photoshop",
];

/// Pillow's bounds on PNG text (`PngImagePlugin.MAX_TEXT_CHUNK`, `MAX_TEXT_MEMORY`), which
/// A1111's png-info inherits: one decompressed chunk, and all text of a file together.
pub const MAX_TEXT_CHUNK: usize = 1 << 20;
pub const MAX_TEXT_MEMORY: usize = 64 << 20;
/// Pixels are decoded only to reach text chunks after the image data; beyond this size only the
/// chunks before it are read (A1111 and Pillow write theirs before it).
const MAX_FRAME_BYTES: usize = 256 << 20;

/// A PNG whose text exceeds Pillow's bounds; Pillow refuses to open it ("Decompressed Data Too
/// Large"), so A1111 answers such an image as an invalid one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PNG text larger than {MAX_TEXT_CHUNK} bytes per chunk or {MAX_TEXT_MEMORY} bytes in all")]
pub struct TextTooLarge;

/// `(info, items)`: the infotext ("" if none) and the remaining text metadata.
pub fn read_infotext(bytes: &[u8]) -> Result<(String, Map<String, Value>), TextTooLarge> {
    let mut items = Map::new();
    let mut info: Option<String> = None;
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        for (k, v) in png_text_chunks(bytes)? {
            items.insert(k, Value::String(v));
        }
    } else if let Some(exif) = find_exif(bytes)
        && let Some(raw) = read_user_comment_raw(&exif)
    {
        info = Some(decode_user_comment(&raw));
    }
    if let Some(Value::String(p)) = items.shift_remove("parameters") {
        info = Some(p);
    }
    for k in IGNORED_INFO_KEYS {
        items.shift_remove(k);
    }
    Ok((info.unwrap_or_default(), items))
}

/// All tEXt/zTXt/iTXt chunks of a PNG (before and after the image data), in file order, with
/// compressed text inflated within Pillow's bounds.
fn png_text_chunks(bytes: &[u8]) -> Result<Vec<(String, String)>, TextTooLarge> {
    let mut out = Vec::new();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let Ok(mut reader) = decoder.read_info() else { return Ok(out) };
    let frame_bytes = reader.output_buffer_size();
    if frame_bytes <= MAX_FRAME_BYTES {
        let mut buf = vec![0; frame_bytes];
        if reader.next_frame(&mut buf).is_ok() {
            let _ = reader.finish();
        }
    }
    let info = reader.info();
    let mut total = 0usize;
    let mut keep = |k: &str, text: String| -> Result<(), TextTooLarge> {
        total += text.len();
        if total > MAX_TEXT_MEMORY {
            return Err(TextTooLarge);
        }
        out.push((k.to_string(), text));
        Ok(())
    };
    for t in &info.uncompressed_latin1_text {
        keep(&t.keyword, t.text.clone())?;
    }
    for t in &info.compressed_latin1_text {
        let mut t = t.clone();
        t.decompress_text_with_limit(MAX_TEXT_CHUNK).map_err(|_| TextTooLarge)?;
        if let Ok(text) = t.get_text() {
            keep(&t.keyword, text)?;
        }
    }
    for t in &info.utf8_text {
        let mut t = t.clone();
        t.decompress_text_with_limit(MAX_TEXT_CHUNK).map_err(|_| TextTooLarge)?;
        if let Ok(text) = t.get_text() {
            keep(&t.keyword, text)?;
        }
    }
    Ok(out)
}

/// The EXIF payload of a JPEG (APP1 `Exif\0\0`) or WebP (RIFF `EXIF` chunk).
pub fn find_exif(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.starts_with(&[0xFF, 0xD8]) {
        let mut i = 2;
        while i + 4 <= bytes.len() && bytes[i] == 0xFF {
            let marker = bytes[i + 1];
            if marker == 0xDA || marker == 0xD9 {
                break; // start of scan: no more metadata segments
            }
            let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
            let seg = bytes.get(i + 4..i + 2 + len)?;
            if marker == 0xE1 && seg.starts_with(b"Exif\0\0") {
                return Some(seg[6..].to_vec());
            }
            i += 2 + len;
        }
        return None;
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        let mut i = 12;
        while i + 8 <= bytes.len() {
            let id = &bytes[i..i + 4];
            let len = u32::from_le_bytes([bytes[i + 4], bytes[i + 5], bytes[i + 6], bytes[i + 7]]) as usize;
            let data = bytes.get(i + 8..i + 8 + len)?;
            if id == b"EXIF" {
                return Some(data.strip_prefix(b"Exif\0\0").unwrap_or(data).to_vec());
            }
            i += 8 + len + (len & 1);
        }
    }
    None
}
