//! Inputs that used to take the process down or pin a core (reliability issue): each gets an
//! A1111-shaped answer, and the service keeps serving afterwards.

mod common;
use base64::Engine;
use common::*;
use sdapi_protocol::images::read::MAX_TEXT_CHUNK;
use serde_json::{Value, json};

/// Seed resize of 1,000,000,000 made the noise allocation abort the whole process.
#[tokio::test]
async fn huge_seed_resize_is_a_422_not_an_abort() {
    let (app, runner) = app_with(test_config());
    let body = r#"{"seed_resize_from_w": 1000000000, "seed_resize_from_h": 1000000000, "width": 64, "height": 64}"#;
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", body)).await;
    assert_eq!(status, 422);
    let v = body_json(resp).await;
    assert_eq!(v["error"], "HTTPException", "{v}");
    assert!(v["detail"].as_str().unwrap().contains("seed_resize_from_w"), "{v}");
    assert!(runner.jobs.lock().unwrap().is_empty(), "refused before anything was queued");
    // One positive value alone is ignored (A1111 needs both), so it is not refused either.
    let ok = r#"{"seed_resize_from_w": 1000000000, "seed_resize_from_h": -1, "width": 64, "height": 64, "steps": 2}"#;
    let (status, _) = send(&app, post_json("/sdapi/v1/txt2img", ok)).await;
    assert_eq!(status, 200);
}

fn png_with_ztxt(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, 2, 2);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.add_ztxt_chunk("parameters".into(), text.into()).unwrap();
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[0; 12]).unwrap();
    }
    out
}

/// A small PNG whose zTXt chunk inflates far beyond Pillow's 1 MB bound used to grow the process
/// by gigabytes; now it is A1111's "Invalid encoded image" (Pillow refuses to open it too).
#[tokio::test]
async fn decompression_bomb_in_png_info_is_refused() {
    let (app, _) = app_with(test_config());
    let bomb = png_with_ztxt(&"a".repeat(8 << 20));
    assert!(bomb.len() < 100_000, "the bomb is small: {} bytes", bomb.len());
    let image = base64::engine::general_purpose::STANDARD.encode(&bomb);
    let (status, resp) = send(&app, post_json("/sdapi/v1/png-info", &json!({ "image": image }).to_string())).await;
    assert_eq!(status, 500);
    assert_eq!(body_json(resp).await["detail"], "Invalid encoded image");

    // Text within the bound still reads back.
    let fine = png_with_ztxt("a red cube\nSteps: 3, Sampler: Euler, Seed: 7");
    let image = base64::engine::general_purpose::STANDARD.encode(&fine);
    let (status, resp) = send(&app, post_json("/sdapi/v1/png-info", &json!({ "image": image }).to_string())).await;
    assert_eq!(status, 200);
    let v: Value = body_json(resp).await;
    assert_eq!(v["parameters"]["Seed"], "7");
}

/// A 200 kB comma- and colon-free `parameters` text took 16 s to parse (a quadratic scan) on the
/// async threads, stalling every route; the scan is linear now and runs off those threads.
#[tokio::test]
async fn long_text_without_parameters_parses_and_the_server_stays_responsive() {
    let (app, _) = app_with(test_config());
    let text = format!("prompt\n{}", "word another word ".repeat(12_000));
    let png = png_with_ztxt(&text[..text.len().min(MAX_TEXT_CHUNK)]);
    let image = base64::engine::general_purpose::STANDARD.encode(&png);
    let request = post_json("/sdapi/v1/png-info", &json!({ "image": image }).to_string());
    let (status, resp) = send(&app, request).await;
    assert_eq!(status, 200);
    let v: Value = body_json(resp).await;
    // No parameter line: the whole text is the prompt, as in A1111.
    let prompt = v["parameters"]["Prompt"].as_str().unwrap_or_default();
    assert!(prompt.starts_with("prompt\nword another") && prompt.len() > 200_000, "{}", prompt.len());
    let (status, _) = send(&app, get("/internal/ping")).await;
    assert_eq!(status, 200);
}

/// A 5 MB prompt held the runner for more than a minute; it is refused before queueing now.
#[tokio::test]
async fn a_five_megabyte_prompt_is_a_422_before_queueing() {
    let mut config = test_config();
    config.max_body_bytes = 64 << 20; // the server's default body limit
    let (app, runner) = app_with(config);
    let body = json!({ "prompt": "word ".repeat(1_000_000), "width": 64, "height": 64 }).to_string();
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", &body)).await;
    assert_eq!(status, 422);
    let v = body_json(resp).await;
    assert!(v["detail"].as_str().unwrap().contains("SDAPI_MAX_PROMPT_CHARS"), "{v}");
    assert!(runner.jobs.lock().unwrap().is_empty());
    let (status, _) = send(&app, get("/internal/ping")).await;
    assert_eq!(status, 200);
}

/// A 1 MB `Authorization` header got hyper's bare 431; it is A1111's error shape now, before
/// authentication runs, and the server keeps serving.
#[tokio::test]
async fn oversized_headers_are_a_431_in_a1111_shape() {
    let mut config = test_config();
    config.api_auth = vec![("user".into(), "secret".into())];
    let (app, _) = app_with(config);
    let request = axum::http::Request::get("/sdapi/v1/options")
        .header("authorization", format!("Basic {}", "A".repeat(1_000_000)))
        .body(axum::body::Body::empty())
        .unwrap();
    let (status, resp) = send(&app, request).await;
    assert_eq!(status, 431);
    let v = body_json(resp).await;
    assert_eq!(v["error"], "HTTPException", "{v}");
    assert!(v["detail"].as_str().unwrap().contains("SDAPI_MAX_HEADER_KB"), "{v}");
    let (status, _) = send(&app, get("/internal/ping")).await;
    assert_eq!(status, 200);
}

/// Each field within its range can still multiply into hours of device time or more memory
/// than one batch may hold: the request is costed as a whole before it is queued.
#[tokio::test]
async fn work_over_the_limits_is_a_422_before_queueing() {
    let (app, runner) = app_with(test_config());
    for (body, limit) in [
        (json!({"width": 8192, "height": 8192, "batch_size": 64, "steps": 1}), "SDAPI_MAX_BATCH_MEGAPIXELS"),
        (json!({"width": 1024, "height": 1024, "n_iter": 1000, "steps": 1000}), "SDAPI_MAX_MEGAPIXEL_STEPS"),
    ] {
        let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", &body.to_string())).await;
        assert_eq!(status, 422, "{body}");
        let v = body_json(resp).await;
        assert!(v["detail"].as_str().unwrap().contains(limit), "{v}");
    }
    assert!(runner.jobs.lock().unwrap().is_empty(), "refused before anything was queued");
}

/// img2img is costed before its init images are decoded, and more init images than
/// `batch_size` is A1111's RuntimeError, also before decoding.
#[tokio::test]
async fn img2img_is_checked_before_its_images_are_decoded() {
    let (app, runner) = app_with(test_config());
    // Not even valid images: decoding them would be a 500 "Invalid encoded image".
    let body = json!({"init_images": ["not an image"], "width": 8192, "height": 8192, "batch_size": 64});
    let (status, resp) = send(&app, post_json("/sdapi/v1/img2img", &body.to_string())).await;
    assert_eq!(status, 422);
    assert!(body_json(resp).await["detail"].as_str().unwrap().contains("SDAPI_MAX_BATCH_MEGAPIXELS"));
    let body = json!({"init_images": ["x", "y", "z"], "batch_size": 2, "width": 64, "height": 64});
    let (status, resp) = send(&app, post_json("/sdapi/v1/img2img", &body.to_string())).await;
    assert_eq!(status, 500);
    let v = body_json(resp).await;
    assert_eq!(v["error"], "RuntimeError", "{v}");
    assert_eq!(v["errors"], "bad number of images passed: 3; expecting 2 or less", "{v}");
    assert!(runner.jobs.lock().unwrap().is_empty());
}

/// A runner whose queue already holds more jobs than `SDAPI_MAX_QUEUE` allows.
struct FullQueue(RecordingRunner);

impl sdapi_core::runner::Runner for FullQueue {
    fn submit(&self, job: sdapi_core::runner::BatchJob) -> sdapi_core::runner::JobTicket {
        self.0.submit(job)
    }
    fn state(&self) -> &sdapi_core::runner::ProgressState {
        self.0.state()
    }
    fn counters(&self) -> sdapi_core::runner::RunnerCounters {
        sdapi_core::runner::RunnerCounters { queue_depth: 300, ..Default::default() }
    }
}

/// Overload: with the queue full, generations get a 503 with `Retry-After` before their body is
/// read, `/ready` says busy, `/health` and `/progress` still answer.
#[tokio::test]
async fn a_full_queue_is_a_503_with_retry_after() {
    let runner = std::sync::Arc::new(FullQueue(RecordingRunner::default()));
    let app = sdapi_handler::app::router(
        sdapi_handler::app::AppState::with_runner(test_config(), runner.clone()).expect("state"),
    );
    for path in ["/sdapi/v1/txt2img", "/sdapi/v1/img2img"] {
        let (status, resp) = send(&app, post_json(path, r#"{"prompt": "x"}"#)).await;
        assert_eq!(status, 503, "{path}");
        assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
        let v = body_json(resp).await;
        assert_eq!(v["error"], "HTTPException");
        assert!(v["detail"].as_str().unwrap().contains("SDAPI_MAX_QUEUE"), "{v}");
    }
    assert!(runner.0.jobs.lock().unwrap().is_empty());
    let (status, resp) = send(&app, get("/ready")).await;
    assert_eq!(status, 503);
    assert_eq!(body_json(resp).await["status"], "busy");
    for path in ["/health", "/sdapi/v1/progress", "/internal/ping"] {
        assert_eq!(send(&app, get(path)).await.0, 200, "{path}");
    }
    // An idle runner is ready.
    let (app, _) = app_with(test_config());
    let (status, resp) = send(&app, get("/ready")).await;
    assert_eq!(status, 200);
    assert_eq!(body_json(resp).await["status"], "ready");
}
