use super::*;
use serde_json::json;

fn settings(fields: Value) -> MaskSettings {
    let mut body = json!({"mask": "x", "width": 64, "height": 64});
    body.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
    MaskSettings::from_request(&Img2ImgRequest::from_json(&body).unwrap()).unwrap().unwrap()
}

fn solid(width: usize, height: usize, value: u8) -> Raster {
    Raster { width, height, channels: 1, data: vec![value; width * height] }
}

fn grey_image(width: u32, height: u32) -> RgbImage {
    RgbImage { width, height, pixels: vec![120; (width * height * 3) as usize] }
}

#[test]
fn no_mask_is_plain_img2img() {
    let r = Img2ImgRequest::from_json(&json!({"mask": ""})).unwrap();
    assert!(MaskSettings::from_request(&r).unwrap().is_none());
    assert!(MaskSettings::from_request(&Img2ImgRequest::from_json(&json!({})).unwrap()).unwrap().is_none());
}

#[test]
fn mask_blur_sets_both_directions_and_defaults_follow_the_api() {
    let s = settings(json!({}));
    assert_eq!((s.blur_x, s.blur_y, s.round, s.only_masked, s.padding, s.invert), (4, 4, true, true, 0, false));
    assert_eq!(s.content, MaskedContent::Fill { labelled: true });
    let s = settings(json!({"mask_blur": 9, "mask_blur_x": 2}));
    assert_eq!((s.blur_x, s.blur_y), (9, 9));
    let s = settings(json!({"mask_blur_x": 2, "mask_blur_y": 3, "inpainting_mask_invert": true, "inpainting_fill": 7}));
    assert_eq!(s.blur_value(), Value::Null);
    assert!(s.invert);
    assert_eq!(s.content, MaskedContent::Fill { labelled: false });
}

#[test]
fn out_of_range_fields_are_refused_before_any_work() {
    let r = |v: Value| MaskSettings::from_request(&Img2ImgRequest::from_json(&v).unwrap()).unwrap_err();
    assert_eq!(r(json!({"mask": "x", "inpaint_full_res_padding": -1})).status, 422);
    assert_eq!(r(json!({"mask": "x", "mask_blur": 5000})).status, 422);
}

#[test]
fn crop_region_grows_to_the_processing_ratio_inside_the_image() {
    // A1111's own numbers for the "only masked" fixture: (38, 0, 86, 44) → (38, 0, 86, 48).
    assert_eq!(expand_crop_region((38, 0, 86, 44), 64, 64, 96, 96), (38, 0, 86, 48));
    // Wider than tall near the bottom: grown upwards and shifted back inside.
    assert_eq!(expand_crop_region((10, 90, 50, 96), 64, 64, 96, 96), (10, 56, 50, 96));
    // Near the right edge the width shifts left.
    assert_eq!(expand_crop_region((90, 0, 96, 40), 64, 64, 96, 96), (56, 0, 96, 40));
}

#[test]
fn a_blank_mask_with_only_masked_falls_back_to_img2img() {
    let s = settings(json!({"mask_blur": 0}));
    let p = prepare_with(solid(32, 32, 0), None, &s, &[grey_image(32, 32)]).unwrap();
    assert!(p.job.is_none() && p.overlay.images.is_empty() && p.overlay.paste_to.is_none());
    assert_eq!((p.init_images[0].width, p.init_images[0].height), (64, 64), "resized as plain img2img");
    assert!(p.extra.is_empty());
}

#[test]
fn a_white_mask_regenerates_everything_and_a_black_one_nothing() {
    let s = settings(json!({"inpaint_full_res": false, "inpainting_fill": 1}));
    let all = prepare_with(solid(64, 64, 255), None, &s, &[grey_image(64, 64)]).unwrap();
    assert!(all.job.as_ref().unwrap().latent_nmask.iter().all(|v| *v == 1.0));
    let none = prepare_with(solid(64, 64, 0), None, &s, &[grey_image(64, 64)]).unwrap();
    assert!(none.job.as_ref().unwrap().latent_nmask.iter().all(|v| *v == 0.0));
    // Nothing regenerated: the overlay puts the init image back everywhere.
    let generated = RgbImage { width: 64, height: 64, pixels: vec![3; 64 * 64 * 3] };
    assert_eq!(apply_overlay(&generated, &none.overlay, 0).pixels, grey_image(64, 64).pixels);
}

#[test]
fn a_mask_of_another_size_is_resized_like_the_image() {
    let s = settings(json!({"inpaint_full_res": false}));
    let p = prepare_with(solid(17, 9, 255), None, &s, &[grey_image(100, 40)]).unwrap();
    let job = p.job.unwrap();
    assert_eq!((job.latent_nmask.len(), job.conditioning_mask.len()), (64, 64 * 64));
    assert_eq!((p.init_images[0].width, p.overlay.images[0].width), (64, 64));
}

#[test]
fn a_latent_mask_of_the_wrong_size_is_a_clear_error() {
    let s = settings(json!({"inpaint_full_res": false}));
    let err = prepare_with(solid(64, 64, 255), Some(solid(8, 8, 255)), &s, &[grey_image(64, 64)]).unwrap_err();
    assert_eq!(err.status, 422);
}

fn png_b64(color: image::ExtendedColorType, width: u32, height: u32, data: &[u8]) -> String {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(data, width, height, color).unwrap();
    sdapi_protocol::images::to_base64(&out)
}

#[test]
fn only_rgba_masks_are_read_through_their_alpha() {
    let s = settings(json!({"mask_blur": 0}));
    // RGBA: white pixels, alpha 255 on the left half only → the alpha (thresholded) is the mask.
    let rgba: Vec<u8> = (0..16).flat_map(|i| [255, 255, 255, if i % 4 < 2 { 255 } else { 0 }]).collect();
    let m = decode_mask(&png_b64(image::ExtendedColorType::Rgba8, 4, 4, &rgba), &s, 1 << 20).unwrap();
    assert_eq!(&m.data[..4], &[255, 255, 0, 0]);
    // Grey + alpha (Pillow's "LA"): the grey is the mask, the alpha is ignored.
    let la: Vec<u8> =
        (0..16).flat_map(|i| [if i % 4 == 0 { 200 } else { 10 }, if i % 4 < 2 { 255 } else { 0 }]).collect();
    let m = decode_mask(&png_b64(image::ExtendedColorType::La8, 4, 4, &la), &s, 1 << 20).unwrap();
    assert_eq!(&m.data[..4], &[200, 10, 10, 10]);
}
