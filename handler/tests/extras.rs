//! `/extra-single-image` and `/extra-batch-images` with the built-in upscalers: sizes, the
//! `html_info` A1111 writes, the result's PNG text, and A1111's errors for bad values.

mod common;
use base64::Engine;
use common::*;
use serde_json::{Value, json};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn init_png() -> Vec<u8> {
    std::fs::read(repo_root().join("tests/fixtures/a1111-parity/init_images/init_a_64x64.png")).unwrap()
}

fn decode(v: &Value) -> (image::RgbaImage, Vec<u8>) {
    let bytes = base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
    (image::load_from_memory(&bytes).unwrap().to_rgba8(), bytes)
}

#[tokio::test]
async fn a1111s_extras_tests_pass_and_the_upscale_is_pillows() {
    let (app, runner) = app_with(test_config());
    // test_extras.py's test_simple_upscaling_performed payload.
    let body = json!({
        "resize_mode": 0, "show_extras_results": true, "gfpgan_visibility": 0, "codeformer_visibility": 0,
        "codeformer_weight": 0, "upscaling_resize": 2, "upscaling_resize_w": 128, "upscaling_resize_h": 128,
        "upscaling_crop": true, "upscaler_1": "Lanczos", "upscaler_2": "None", "extras_upscaler_2_visibility": 0,
        "image": b64(&init_png()),
    });
    let (status, resp) = send(&app, post_json("/sdapi/v1/extra-single-image", &body.to_string())).await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["html_info"], "<p>Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos</p>");
    let (img, bytes) = decode(&v["image"]);
    assert_eq!(img.dimensions(), (128, 128));
    // Same pixels as the upscaler applied directly (checked against Pillow by the hires tests).
    let src = image::load_from_memory(&init_png()).unwrap().to_rgb8();
    let want = sdapi_protocol::images::resize_with_upscaler(
        &src,
        128,
        128,
        Some(sdapi_protocol::images::BuiltinUpscaler::Lanczos),
    );
    assert_eq!(image::DynamicImage::ImageRgba8(img).to_rgb8(), want);
    let (_, items) = sdapi_protocol::images::read_infotext(&bytes).unwrap();
    assert_eq!(items["postprocessing"], "Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos", "{items:?}");

    // test_png_info_performed / test_interrogate_performed: only an image (and an ignored field).
    for extra in [json!({}), json!({"model": "clip"})] {
        let mut body = json!({"image": b64(&init_png())});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, resp) = send(&app, post_json("/sdapi/v1/extra-single-image", &body.to_string())).await;
        let v = body_json(resp).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["html_info"], "<p></p>");
        assert_eq!(image::DynamicImage::ImageRgba8(decode(&v["image"]).0).to_rgb8(), src);
    }
    assert!(runner.jobs.lock().unwrap().is_empty(), "extras do not use the generation runner");
}

#[tokio::test]
async fn scale_to_with_crop_and_a_blended_second_upscaler() {
    let (app, _) = app_with(test_config());
    let body = json!({"resize_mode": 1, "upscaling_resize_w": 100, "upscaling_resize_h": 80, "upscaler_1": "Nearest",
                      "upscaler_2": "Lanczos", "extras_upscaler_2_visibility": 0.5, "image": b64(&init_png())});
    let (status, resp) = send(&app, post_json("/sdapi/v1/extra-single-image", &body.to_string())).await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(decode(&v["image"]).0.dimensions(), (100, 80));
    assert_eq!(
        v["html_info"],
        "<p>Postprocess upscale to: 100x80, Postprocess crop to: 100x80, Postprocess upscaler: Nearest, Postprocess upscaler 2: Lanczos</p>"
    );
}

#[tokio::test]
async fn batch_images_come_back_in_order() {
    let (app, _) = app_with(test_config());
    let list = json!([{"data": b64(&init_png()), "name": "a"}, {"data": b64(&init_png()), "name": "b"}]);
    let body = json!({"upscaler_1": "Lanczos", "upscaling_resize": 1.5, "imageList": list});
    let (status, resp) = send(&app, post_json("/sdapi/v1/extra-batch-images", &body.to_string())).await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    let images = v["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(decode(&images[1]).0.dimensions(), (96, 96));
    assert_eq!(v["html_info"], "<p>Postprocess upscale by: 1.5, Postprocess upscaler: Lanczos</p>");
}

#[tokio::test]
async fn bad_extras_requests_get_a1111_errors() {
    let (app, _) = app_with(test_config());
    let image = b64(&init_png());
    let cases = [
        ("/sdapi/v1/extra-single-image", json!({"upscaler_1": "ESRGAN_4x", "image": image}), 500, "AssertionError"),
        ("/sdapi/v1/extra-single-image", json!({"gfpgan_visibility": 0.5, "image": image}), 501, "HTTPException"),
        ("/sdapi/v1/extra-single-image", json!({"image": "not base64 !"}), 500, "HTTPException"),
        (
            "/sdapi/v1/extra-single-image",
            json!({"upscaler_1": "Lanczos", "upscaling_resize": 1000, "image": image}),
            422,
            "HTTPException",
        ),
    ];
    for (path, body, status, error) in cases {
        let (got, resp) = send(&app, post_json(path, &body.to_string())).await;
        let v = body_json(resp).await;
        assert_eq!((got, v["error"].as_str().unwrap_or("")), (status, error), "{body}: {v}");
    }
    for (path, body, loc) in [
        ("/sdapi/v1/extra-single-image", json!({"resize_mode": 2, "image": image}), json!(["body", "resize_mode"])),
        (
            "/sdapi/v1/extra-single-image",
            json!({"extras_upscaler_2_visibility": 2, "image": image}),
            json!(["body", "extras_upscaler_2_visibility"]),
        ),
        ("/sdapi/v1/extra-batch-images", json!({"upscaler_1": "Lanczos"}), json!(["body", "imageList"])),
        (
            "/sdapi/v1/extra-batch-images",
            json!({"imageList": [{"data": image}]}),
            json!(["body", "imageList", 0, "name"]),
        ),
    ] {
        let (got, resp) = send(&app, post_json(path, &body.to_string())).await;
        let v = body_json(resp).await;
        assert_eq!(got, 422, "{body}: {v}");
        assert_eq!(v["detail"][0]["loc"], loc, "{v}");
    }
    let (status, _) = send(&app, get("/internal/ping")).await;
    assert_eq!(status, 200);
}
