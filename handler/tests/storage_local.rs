//! The local output folder: A1111's `save_images` behaviour by default.

mod common;

use base64::Engine;
use common::{app_with, body_json, post_json, send, test_config};

#[tokio::test]
async fn save_images_writes_a1111_names_into_the_output_dir_and_default_writes_nothing() {
    let dir = std::env::temp_dir().join(format!("sdapi-local-outputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = test_config();
    config.output_dir = dir.clone();
    let (app, _) = app_with(config);

    let (_, resp) = send(&app, post_json("/sdapi/v1/txt2img", r#"{"seed": 11, "width": 64, "height": 64}"#)).await;
    assert!(resp.headers().get("x-output-locations").is_none());
    let body = body_json(resp).await;
    assert!(!body["info"].as_str().unwrap().contains("output_locations"), "A1111's info untouched");
    assert!(!dir.exists(), "nothing saved without save_images");

    let req = r#"{"seed": 11, "width": 64, "height": 64, "save_images": true}"#;
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", req)).await;
    assert_eq!(status, 200);
    let locs: Vec<String> = serde_json::from_str(resp.headers()["x-output-locations"].to_str().unwrap()).unwrap();
    let body = body_json(resp).await;
    let date = chrono::Local::now().format("%Y-%m-%d").to_string();
    let expected = dir.join("txt2img-images").join(&date).join("00000-11.png");
    assert_eq!(locs, vec![expected.display().to_string()]);
    let returned = base64::engine::general_purpose::STANDARD.decode(body["images"][0].as_str().unwrap()).unwrap();
    assert_eq!(std::fs::read(&expected).unwrap(), returned);

    // With A1111's `samples_save` option off, save_images stores nothing either.
    let req = r#"{"seed": 12, "width": 64, "height": 64, "save_images": true,
                  "override_settings": {"samples_save": false}}"#;
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", req)).await;
    assert_eq!(status, 200);
    assert!(resp.headers().get("x-output-locations").is_none());
    assert!(!dir.join("txt2img-images").join(&date).join("00001-12.png").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
