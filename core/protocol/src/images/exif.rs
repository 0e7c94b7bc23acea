//! The EXIF blob A1111 (piexif) writes into JPEG/WebP: big-endian TIFF with IFD0 holding only
//! the Exif-IFD pointer, and the Exif IFD holding only UserComment (0x9286, UNDEFINED) =
//! `b"UNICODE\0"` + UTF-16BE text. Also the reader for that tag.

const USER_COMMENT: u16 = 0x9286;
const EXIF_IFD_POINTER: u16 = 0x8769;
const UNICODE_PREFIX: &[u8; 8] = b"UNICODE\0";
const ASCII_PREFIX: &[u8; 8] = b"ASCII\0\0\0";

/// Builds the TIFF-structured EXIF payload (without the JPEG `Exif\0\0` marker).
pub fn user_comment_exif(text: &str) -> Vec<u8> {
    let mut comment = UNICODE_PREFIX.to_vec();
    for unit in text.encode_utf16() {
        comment.extend_from_slice(&unit.to_be_bytes());
    }
    let mut out = Vec::new();
    out.extend_from_slice(b"MM\x00\x2a");
    out.extend_from_slice(&8u32.to_be_bytes()); // IFD0 right after the header
    // IFD0: 1 entry (2 + 12 bytes) + next-IFD offset (4) = 18 bytes, so the Exif IFD is at 26.
    let exif_ifd_offset: u32 = 8 + 18;
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&EXIF_IFD_POINTER.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes()); // LONG
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&exif_ifd_offset.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    // Exif IFD: 1 entry + next offset; the value follows (it never fits in 4 bytes: prefix is 8).
    let value_offset = exif_ifd_offset + 18;
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&USER_COMMENT.to_be_bytes());
    out.extend_from_slice(&7u16.to_be_bytes()); // UNDEFINED
    out.extend_from_slice(&(comment.len() as u32).to_be_bytes());
    out.extend_from_slice(&value_offset.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&comment);
    out
}

/// Byte-order aware reads from a TIFF blob.
struct Tiff<'a> {
    data: &'a [u8],
    big_endian: bool,
}

impl Tiff<'_> {
    fn u16(&self, at: usize) -> Option<u16> {
        let b: [u8; 2] = self.data.get(at..at + 2)?.try_into().ok()?;
        Some(if self.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) })
    }
    fn u32(&self, at: usize) -> Option<u32> {
        let b: [u8; 4] = self.data.get(at..at + 4)?.try_into().ok()?;
        Some(if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) })
    }
    /// Finds `tag` in the IFD at `ifd`; returns (type, count, value-or-offset position).
    fn find(&self, ifd: usize, tag: u16) -> Option<(u16, u32, usize)> {
        let n = self.u16(ifd)? as usize;
        (0..n).find_map(|i| {
            let e = ifd + 2 + 12 * i;
            (self.u16(e)? == tag).then_some(())?;
            Some((self.u16(e + 2)?, self.u32(e + 4)?, e + 8))
        })
    }
}

/// Reads the raw UserComment bytes from a TIFF-structured EXIF blob (accepts a leading
/// `Exif\0\0` marker and either byte order).
pub fn read_user_comment_raw(exif: &[u8]) -> Option<Vec<u8>> {
    let data = exif.strip_prefix(b"Exif\0\0").unwrap_or(exif);
    let big_endian = match data.get(0..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let t = Tiff { data, big_endian };
    let ifd0 = t.u32(4)? as usize;
    let (_, _, ptr) = t.find(ifd0, EXIF_IFD_POINTER)?;
    let exif_ifd = t.u32(ptr)? as usize;
    let (_, count, pos) = t.find(exif_ifd, USER_COMMENT)?;
    let count = count as usize;
    let start = if count <= 4 { pos } else { t.u32(pos)? as usize };
    data.get(start..start + count).map(|s| s.to_vec())
}

/// A1111's decoding: piexif `UserComment.load` (UNICODE → UTF-16BE, ASCII), falling back to
/// lossy UTF-8 when the prefix is unknown.
pub fn decode_user_comment(raw: &[u8]) -> String {
    if raw.len() >= 8 && &raw[..8] == UNICODE_PREFIX {
        let units: Vec<u16> = raw[8..].chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        return String::from_utf16_lossy(&units);
    }
    if raw.len() >= 8 && &raw[..8] == ASCII_PREFIX {
        return String::from_utf8_lossy(&raw[8..]).into_owned();
    }
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_layout_is_big_endian_piexif_style() {
        let blob = user_comment_exif("hi");
        assert_eq!(&blob[..8], b"MM\x00\x2a\x00\x00\x00\x08");
        // comment = "UNICODE\0" + UTF-16BE "hi"
        assert_eq!(&blob[blob.len() - 12..], b"UNICODE\0\x00h\x00i");
        assert_eq!(decode_user_comment(&read_user_comment_raw(&blob).unwrap()), "hi");
    }

    #[test]
    fn round_trip_non_ascii() {
        let text = "a cat é 😀\nSteps: 20";
        assert_eq!(decode_user_comment(&read_user_comment_raw(&user_comment_exif(text)).unwrap()), text);
    }
}
