//! `/png-info` reads back what generation writes (PNG `parameters` chunk), and parses the public
//! fixtures' infotexts as A1111's `parse_generation_parameters` does.

mod common;
use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn png_info_round_trips_a_generated_image() {
    let (app, _) = app_with(test_config());
    let body = r#"{"prompt":"a (red:1.2) cube, on a table","negative_prompt":"blurry","seed":42,"steps":3,"width":64,"height":64,"cfg_scale":5}"#;
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", body)).await;
    assert_eq!(status, 200);
    let v = body_json(resp).await;
    let info: Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    let infotext = info["infotexts"][0].as_str().unwrap().to_string();
    let image = v["images"][0].as_str().unwrap();

    let (status, resp) = send(&app, post_json("/sdapi/v1/png-info", &json!({ "image": image }).to_string())).await;
    assert_eq!(status, 200);
    let got = body_json(resp).await;
    assert_eq!(got["info"], infotext, "the PNG carries the infotext");
    let p = &got["parameters"];
    assert_eq!(p["Prompt"], "a (red:1.2) cube, on a table");
    assert_eq!(p["Negative prompt"], "blurry");
    assert_eq!(p["Seed"], "42");
    assert_eq!(p["Steps"], "3");
    assert_eq!(p["CFG scale"], "5.0");
    assert_eq!(p["Size-1"], "64");
    assert_eq!(p["Emphasis"], "Original", "default added because the prompt uses weights");
}

#[tokio::test]
async fn png_info_parses_every_fixture_infotext() {
    let (app, _) = app_with(test_config());
    let mut checked = 0;
    for set in ["a1111-parity", "a1111-parity-sdxl", "a1111-parity-sd2"] {
        let cases = repo_root().join("tests/fixtures").join(set).join("cases");
        for entry in std::fs::read_dir(cases).unwrap() {
            let dir = entry.unwrap().path();
            let case: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
            let png = std::fs::read(dir.join("image_0.png")).unwrap();
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(png);
            let (status, resp) =
                send(&app, post_json("/sdapi/v1/png-info", &json!({ "image": b64 }).to_string())).await;
            assert_eq!(status, 200);
            let got = body_json(resp).await;
            assert_eq!(got["info"], case["infotexts"][0], "{}", dir.display());
            let seed = case["seeds"][0].as_i64().unwrap().to_string();
            assert_eq!(got["parameters"]["Seed"], seed.as_str());
            assert_eq!(got["parameters"]["Model hash"], &case["model_sha256"].as_str().unwrap()[..10]);
            checked += 1;
        }
    }
    assert_eq!(checked, 24);
}

#[tokio::test]
async fn png_info_rejects_garbage_in_a1111_shape() {
    let (app, _) = app_with(test_config());
    let (status, resp) = send(&app, post_json("/sdapi/v1/png-info", r#"{"image":"@@not base64@@"}"#)).await;
    assert_eq!(status, 500);
    let v = body_json(resp).await;
    assert_eq!(v["detail"], "Invalid encoded image");
    let (status, _) = send(&app, post_json("/sdapi/v1/png-info", r#"{}"#)).await;
    assert_eq!(status, 422);
}
