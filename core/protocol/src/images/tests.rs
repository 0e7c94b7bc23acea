use image::{Rgb, RgbImage};
use serde_json::json;

use super::*;
use crate::api::options::Options;

fn test_image() -> RgbImage {
    RgbImage::from_fn(16, 8, |x, y| Rgb([(x * 15) as u8, (y * 30) as u8, 128]))
}

const INFOTEXT: &str =
    "a red cube\nNegative prompt: blurry\nSteps: 8, Sampler: Euler, Lora hashes: \"a: b\", Version: v1.10.1";

#[test]
fn png_round_trip_latin1_uses_text_chunk() {
    let bytes = encode_png(&test_image(), Some(INFOTEXT)).unwrap();
    assert!(bytes.windows(4).any(|w| w == b"tEXt"));
    assert!(!bytes.windows(4).any(|w| w == b"iTXt"));
    let (info, items) = read_infotext(&bytes).unwrap();
    assert_eq!(info, INFOTEXT);
    assert!(items.is_empty());
    let decoded = decode_image_bytes(&bytes).unwrap();
    assert_eq!(decoded.flatten([0, 0, 0]), test_image());
}

#[test]
fn png_round_trip_non_latin1_uses_itxt() {
    let text = "一只猫 😀\nSteps: 8, Sampler: Euler, Seed: 1";
    let bytes = encode_png(&test_image(), Some(text)).unwrap();
    assert!(bytes.windows(4).any(|w| w == b"iTXt"));
    assert_eq!(read_infotext(&bytes).unwrap().0, text);
    // "é" is Latin-1 → tEXt
    let bytes = encode_png(&test_image(), Some("café")).unwrap();
    assert!(bytes.windows(4).any(|w| w == b"tEXt"));
    assert_eq!(read_infotext(&bytes).unwrap().0, "café");
}

#[test]
fn jpeg_and_webp_round_trip_user_comment() {
    let text = "a cat é 😀\nSteps: 20, Seed: 1";
    let jpg = encode_jpeg(&test_image(), Some(text), 80).unwrap();
    assert_eq!(&jpg[..2], &[0xFF, 0xD8]);
    assert_eq!(read_infotext(&jpg).unwrap().0, text);
    let webp = encode_webp(&test_image(), Some(text)).unwrap();
    assert_eq!(&webp[8..12], b"WEBP");
    assert_eq!(read_infotext(&webp).unwrap().0, text);
    // lossless: pixels survive
    assert_eq!(decode_image_bytes(&webp).unwrap().flatten([0, 0, 0]), test_image());
    assert_eq!(decode_image_bytes(&jpg).unwrap().width(), 16);
}

#[test]
fn encode_by_samples_format() {
    let mut opts = Options::new();
    let b64 = encode_image_base64(&test_image(), Some("x"), &opts).unwrap();
    let bytes = py_b64decode(&b64).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"));
    assert_eq!(b64.len() % 4, 0);
    opts.set("samples_format", json!("JPG")).unwrap();
    let bytes = py_b64decode(&encode_image_base64(&test_image(), Some("x"), &opts).unwrap()).unwrap();
    assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
    opts.set("samples_format", json!("gif")).unwrap();
    let e = encode_image_base64(&test_image(), None, &opts).unwrap_err();
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"error":"HTTPException","detail":"Invalid image format","body":"","errors":""})
    );
    // enable_pnginfo off → no text chunk
    opts.set("samples_format", json!("png")).unwrap();
    opts.set("enable_pnginfo", json!(false)).unwrap();
    let bytes = py_b64decode(&encode_image_base64(&test_image(), Some("x"), &opts).unwrap()).unwrap();
    assert_eq!(read_infotext(&bytes).unwrap().0, "");
}

#[test]
fn data_urls_and_plain_base64_decode() {
    let png = encode_png(&test_image(), None).unwrap();
    let b64 = to_base64(&png);
    for s in [b64.clone(), format!("data:image/png;base64,{b64}"), format!("{}\n{}", &b64[..10], &b64[10..])] {
        let img = decode_base64_image(&s).unwrap();
        assert_eq!(img.flatten([255, 255, 255]), test_image());
    }
    // the fixture's init image as A1111's tests send it (data URL)
    let req: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/a1111-parity/cases/i2i_euler_ds06/request.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let init = req["init_images"][0].as_str().unwrap();
    let img = decode_base64_image(init).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
}

#[test]
fn garbage_and_urls_give_a1111_errors() {
    let e = decode_base64_image("not an image at all!!").unwrap_err();
    assert_eq!(e.status, 500);
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"error":"HTTPException","detail":"Invalid encoded image","body":"","errors":""})
    );
    // valid base64 of non-image bytes
    assert_eq!(decode_base64_image("aGVsbG8=").unwrap_err().detail, json!("Invalid encoded image"));
    assert_eq!(decode_base64_image("https://example.com/a.png").unwrap_err().detail, json!("Requests not allowed"));
    let e = decode_base64_image("data:image/png,abc").unwrap_err();
    assert_eq!(e.error, "IndexError");
}

#[test]
fn python_b64decode_semantics() {
    // Python: b64decode("aGVsbG8=") == b"hello"; b64decode("aGVs bG8=") == b"hello" (junk skipped);
    // b64decode("aGVsbG8") raises (Incorrect padding); b64decode("aGVsbG8=trailing") == b"hello"
    assert_eq!(py_b64decode("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(py_b64decode("aGVs bG8=").unwrap(), b"hello");
    assert_eq!(py_b64decode("aGVsbG8"), None);
    assert_eq!(py_b64decode("aGVsbG8=trailing").unwrap(), b"hello");
    assert_eq!(py_b64decode("").unwrap(), b"");
}

#[test]
fn rgba_flattening_over_background() {
    let mut rgba = image::RgbaImage::new(2, 1);
    rgba.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
    rgba.put_pixel(1, 0, image::Rgba([200, 100, 0, 128]));
    let flat = DecodedImage::Rgba(rgba).flatten(parse_hex_color("#ffffff"));
    assert_eq!(flat.get_pixel(0, 0).0, [255, 255, 255]);
    // Pillow: DIV255(255*127 + 200*128) = round(57985/255) = 227, etc.
    assert_eq!(flat.get_pixel(1, 0).0, [227, 177, 127]);
    assert_eq!(parse_hex_color("#102030"), [16, 32, 48]);
}

/// A1111 reads GIF init images (Pillow: the first frame, palette → RGB); so do we.
#[test]
fn gif_init_images_decode() {
    let flat = RgbImage::from_pixel(8, 4, Rgb([200, 40, 10]));
    let mut gif = Vec::new();
    image::DynamicImage::ImageRgb8(flat.clone())
        .write_to(&mut std::io::Cursor::new(&mut gif), image::ImageFormat::Gif)
        .unwrap();
    assert!(gif.starts_with(b"GIF8"));
    let decoded = decode_image_bytes(&gif).expect("GIF decodes");
    assert_eq!(decoded.flatten([255, 255, 255]), flat);
}

/// A PNG that announces 20000 × 20000 pixels in a few bytes is refused from its header, before
/// anything is allocated (Pillow's decompression-bomb bound; A1111 answers "Invalid encoded image").
#[test]
fn decompression_bomb_dimensions_are_refused_from_the_header() {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, 20_000, 20_000);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        // A token IDAT: decoders read the header up to the first image data chunk.
        writer.write_chunk(png::chunk::IDAT, &[0x78, 0x9c, 0x03, 0x00]).unwrap();
        drop(writer);
    }
    assert!(bytes.len() < 1000);
    let dims = image::ImageReader::new(std::io::Cursor::new(&bytes)).with_guessed_format().unwrap().into_dimensions();
    assert_eq!(dims.unwrap(), (20_000, 20_000), "the header alone gives the size");
    assert!(decode_image_bytes(&bytes).is_none());
}
