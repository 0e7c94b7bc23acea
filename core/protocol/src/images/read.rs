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

/// `(info, items)`: the infotext ("" if none) and the remaining text metadata.
pub fn read_infotext(bytes: &[u8]) -> (String, Map<String, Value>) {
    let mut items = Map::new();
    let mut info: Option<String> = None;
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        for (k, v) in png_text_chunks(bytes) {
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
    (info.unwrap_or_default(), items)
}

/// All tEXt/zTXt/iTXt chunks of a PNG (before and after the image data), in file order.
fn png_text_chunks(bytes: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let Ok(mut reader) = decoder.read_info() else { return out };
    let mut buf = vec![0; reader.output_buffer_size()];
    if reader.next_frame(&mut buf).is_ok() {
        let _ = reader.finish();
    }
    let info = reader.info();
    for t in &info.uncompressed_latin1_text {
        out.push((t.keyword.clone(), t.text.clone()));
    }
    for t in &info.compressed_latin1_text {
        if let Ok(text) = t.get_text() {
            out.push((t.keyword.clone(), text));
        }
    }
    for t in &info.utf8_text {
        if let Ok(text) = t.get_text() {
            out.push((t.keyword.clone(), text));
        }
    }
    out
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
