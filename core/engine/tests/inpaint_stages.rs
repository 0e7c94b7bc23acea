//! Inpainting's CPU stages against A1111's intermediates (the fixtures' `intermediates.safetensors`):
//! the blurred mask, the processed init image, the latent mask, the overlay and the final
//! composite must equal A1111's exactly (they are Pillow and OpenCV integer operations).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use sdapi_core::processing::inpaint::{MaskSettings, apply_overlay, prepare};
use sdapi_core::runner::{LatentFill, RgbImage};
use sdapi_protocol::api::request::Img2ImgRequest;
use sdapi_protocol::images::{decode_base64_image, parse_hex_color};
use serde_json::Value;

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/a1111-parity-features/cases").join(name)
}

fn intermediates(name: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(case(name).join("intermediates.safetensors"), &Device::Cpu).expect("intermediates")
}

fn request(name: &str) -> Img2ImgRequest {
    let text = std::fs::read_to_string(case(name).join("request.json")).expect("request.json");
    Img2ImgRequest::from_json(&serde_json::from_str::<Value>(&text).expect("json")).expect("request")
}

fn init_images(r: &Img2ImgRequest) -> Vec<RgbImage> {
    let list = r.init_images.clone().expect("init_images");
    list.iter()
        .map(|v| {
            decode_base64_image(v.as_str().expect("str")).expect("image").flatten(parse_hex_color("#ffffff")).into()
        })
        .collect()
}

fn u8s(t: &Tensor) -> Vec<u8> {
    t.flatten_all().unwrap().to_vec1::<u8>().unwrap()
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn differing(a: &[u8], b: &[u8]) -> usize {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

const CASES: [&str; 3] = ["ip_original_blur4_euler_a", "ip_latent_noise_invert_euler", "ip_only_masked_pad8_dpmpp2m"];

#[test]
fn prepared_images_and_masks_equal_a1111s() {
    for name in CASES {
        let t = intermediates(name);
        let r = request(name);
        let settings = MaskSettings::from_request(&r).unwrap().expect("the case has a mask");
        let prepared = prepare(&r, &settings, &init_images(&r), 64_000_000).unwrap();
        let job = prepared.job.as_ref().expect("a mask with content");

        // The processed init image: A1111 hands the VAE uint8 / 255 (CHW).
        let img = &prepared.init_images[0];
        let want: Vec<u8> = f32s(&t["init_image_processed"]).iter().map(|v| (v * 255.0).round() as u8).collect();
        let (h, w) = (img.height as usize, img.width as usize);
        let got: Vec<u8> =
            (0..3).flat_map(|c| (0..h * w).map(move |i| (c, i))).map(|(c, i)| img.pixels[i * 3 + c]).collect();
        assert_eq!(differing(&got, &want), 0, "{name}: init_image_processed");

        // The latent mask: the first of its 4 identical channels.
        let nmask = f32s(&t["latent_nmask"]);
        assert_eq!(job.latent_nmask, nmask[..job.latent_nmask.len()], "{name}: latent_nmask");
        let fill = if name.contains("latent_noise") { LatentFill::Noise } else { LatentFill::Keep };
        assert_eq!(job.latent_fill, fill, "{name}: latent fill");

        // The overlay, and the final composite from A1111's decoded image.
        assert_eq!(differing(&prepared.overlay.images[0].data, &u8s(&t["overlay_rgba"])), 0, "{name}: overlay_rgba");
        let before = &t["image_before_overlay"];
        let (bh, bw, _) = before.dims3().unwrap();
        let generated = RgbImage { width: bw as u32, height: bh as u32, pixels: u8s(before) };
        let out = apply_overlay(&generated, &prepared.overlay, 0);
        let want = image::open(case(name).join("image_0.png")).unwrap().to_rgb8();
        assert_eq!((out.width, out.height), want.dimensions(), "{name}: returned size");
        assert_eq!(differing(&out.pixels, want.as_raw()), 0, "{name}: final composite");
    }
}

#[test]
fn only_masked_crop_region_equals_a1111s() {
    let name = "ip_only_masked_pad8_dpmpp2m";
    let t = intermediates(name);
    let r = request(name);
    let settings = MaskSettings::from_request(&r).unwrap().unwrap();
    let prepared = prepare(&r, &settings, &init_images(&r), 64_000_000).unwrap();
    let region: Vec<i64> = t["crop_region"].to_vec1::<i64>().unwrap();
    let (x, y, w, h) = prepared.overlay.paste_to.expect("only masked pastes back");
    assert_eq!(vec![x as i64, y as i64, (x + w) as i64, (y + h) as i64], region);
}

#[test]
fn infotext_entries_follow_a1111s_order() {
    let r = request("ip_latent_noise_invert_euler");
    let settings = MaskSettings::from_request(&r).unwrap().unwrap();
    let prepared = prepare(&r, &settings, &init_images(&r), 64_000_000).unwrap();
    let keys: Vec<&str> = prepared.extra.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["Mask mode", "Mask blur", "Masked content"]);
    assert_eq!(prepared.extra[2].1, "latent noise");
}
