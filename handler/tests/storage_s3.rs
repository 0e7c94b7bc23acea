//! Generation responses with the S3 output store, against a real S3 API (moto on loopback).

mod common;
mod support;

use std::sync::Arc;

use base64::Engine;
use common::{RecordingRunner, body_json, post_json, send, test_config};
use sdapi_core::runner::{
    BatchExecutor, BatchJob, BatchOutput, JobControl, JobTicket, ProgressState, RgbImage, Runner, RunnerCounters,
    RunnerError,
};
use sdapi_handler::app::{AppState, router};
use sdapi_handler::config::Config;
use sdapi_handler::storage::Outputs;
use serde_json::Value;
use support::{Moto, get_object, list_keys};

const BUCKET: &str = "sdapi-test-outputs";
const PREFIX: &str = "outputs/";

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).expect("base64 image")
}

fn s3_config() -> Config {
    let mut c = test_config();
    c.output_bucket = Some(BUCKET.into());
    c.output_prefix = PREFIX.into();
    c
}

fn app(moto: &Moto, config: Config, runner: Arc<dyn Runner>) -> axum::Router {
    let outputs = Outputs::with_s3(&config, moto.store(BUCKET, PREFIX));
    router(AppState::with_runner(config, runner).expect("state").with_outputs(outputs))
}

fn locations(resp: &axum::http::Response<axum::body::Body>) -> Vec<String> {
    let h = resp.headers().get("x-output-locations").expect("X-Output-Locations header").to_str().unwrap();
    serde_json::from_str(h).expect("header is a JSON array")
}

/// Key of an `s3://bucket/key` location.
fn key_of(location: &str) -> &str {
    location.strip_prefix(&format!("s3://{BUCKET}/")).expect("location in the bucket")
}

fn info_of(body: &Value) -> Value {
    serde_json::from_str(body["info"].as_str().expect("info string")).expect("info JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn txt2img_stores_what_it_returns_with_a1111_names_and_metadata() {
    let moto = Moto::start();
    let s3 = moto.create_bucket(BUCKET).await;
    let app = app(&moto, s3_config(), Arc::new(RecordingRunner::default()));
    let req = r#"{"prompt": "a cat, ünïcode", "seed": 1234, "width": 64, "height": 64, "batch_size": 2, "steps": 2}"#;
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", req)).await;
    assert_eq!(status, 200);
    let locs = locations(&resp);
    assert!(resp.headers().get("x-output-error").is_none());
    let body = body_json(resp).await;
    let images = body["images"].as_array().unwrap();
    assert_eq!((images.len(), locs.len()), (2, 2));
    let date = chrono::Local::now().format("%Y-%m-%d").to_string();
    assert_eq!(key_of(&locs[0]), format!("outputs/txt2img-images/{date}/00000-1234.png"));
    assert_eq!(key_of(&locs[1]), format!("outputs/txt2img-images/{date}/00001-1235.png"));
    // The info string keeps A1111's keys first and adds where the images went.
    let info_str = body["info"].as_str().unwrap();
    assert!(
        info_str.starts_with(r#"{"prompt": "#)
            && info_str.ends_with(&format!(r#", "output_locations": ["{}", "{}"]}}"#, locs[0], locs[1]))
    );
    let info = info_of(&body);
    assert_eq!(info["seed"], 1234);
    for (img, loc) in images.iter().zip(&locs) {
        let (bytes, head) = get_object(&s3, BUCKET, key_of(loc)).await;
        assert_eq!(bytes, b64(img.as_str().unwrap()), "stored object equals the returned image");
        assert_eq!(head.content_type(), Some("image/png"));
        let meta = head.metadata().expect("metadata");
        assert_eq!(meta.get("mode").map(String::as_str), Some("txt2img"));
        assert!(meta.get("parameters").is_some_and(|p| p.starts_with("a cat, %C3%BCn%C3%AFcode%0A")), "{meta:?}");
    }
    // The next request continues the running number.
    let (_, resp) = send(&app, post_json("/sdapi/v1/txt2img", r#"{"seed": 7, "width": 64, "height": 64}"#)).await;
    assert_eq!(key_of(&locations(&resp)[0]), format!("outputs/txt2img-images/{date}/00002-7.png"));
}

#[tokio::test(flavor = "multi_thread")]
async fn send_images_false_returns_nothing_but_stores_everything() {
    let moto = Moto::start();
    let s3 = moto.create_bucket(BUCKET).await;
    let app = app(&moto, s3_config(), Arc::new(RecordingRunner::default()));
    let req = r#"{"seed": 5, "width": 64, "height": 64, "n_iter": 2, "send_images": false}"#;
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", req)).await;
    assert_eq!(status, 200);
    let locs = locations(&resp);
    let body = body_json(resp).await;
    assert_eq!(body["images"], serde_json::json!([]));
    assert_eq!(locs.len(), 2);
    assert_eq!(info_of(&body)["output_locations"], serde_json::json!(locs));
    let keys = list_keys(&s3, BUCKET, "outputs/txt2img-images/").await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    for loc in &locs {
        assert_eq!(&get_object(&s3, BUCKET, key_of(loc)).await.0[..8], b"\x89PNG\r\n\x1a\n");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn save_all_false_follows_a1111_save_images() {
    let moto = Moto::start();
    let s3 = moto.create_bucket(BUCKET).await;
    let mut config = s3_config();
    config.storage.save_all = Some(false);
    let app = app(&moto, config, Arc::new(RecordingRunner::default()));
    let (_, resp) = send(&app, post_json("/sdapi/v1/txt2img", r#"{"width": 64, "height": 64}"#)).await;
    assert!(resp.headers().get("x-output-locations").is_none());
    assert!(!body_json(resp).await["info"].as_str().unwrap().contains("output_locations"));
    assert!(list_keys(&s3, BUCKET, "").await.is_empty());
    let (_, resp) =
        send(&app, post_json("/sdapi/v1/txt2img", r#"{"width": 64, "height": 64, "save_images": true}"#)).await;
    assert_eq!(locations(&resp).len(), 1);
    assert_eq!(list_keys(&s3, BUCKET, "").await.len(), 1);
}

/// Stops moto when the runner gets the job: S3 was fine at start and vanishes mid-request.
struct StopS3OnSubmit {
    inner: RecordingRunner,
    moto: std::sync::Mutex<Option<Moto>>,
}

impl Runner for StopS3OnSubmit {
    fn submit(&self, job: BatchJob) -> JobTicket {
        if let Some(mut m) = self.moto.lock().unwrap().take() {
            m.stop();
        }
        self.inner.submit(job)
    }
    fn state(&self) -> &ProgressState {
        self.inner.state()
    }
    fn counters(&self) -> RunnerCounters {
        self.inner.counters()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_gone_mid_request_still_returns_the_images_and_reports_the_failure() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET).await;
    let config = s3_config();
    let outputs = Outputs::with_s3(&config, moto.store(BUCKET, PREFIX));
    let runner =
        Arc::new(StopS3OnSubmit { inner: RecordingRunner::default(), moto: std::sync::Mutex::new(Some(moto)) });
    let app = router(AppState::with_runner(config, runner).unwrap().with_outputs(outputs));
    let started = std::time::Instant::now();
    let req = r#"{"seed": 9, "width": 64, "height": 64, "batch_size": 3}"#;
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", req)).await;
    assert_eq!(status, 200);
    // Bounded by the retry/timeout budget (3 s in tests), once: later images are not retried.
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "{:?}", started.elapsed());
    assert_eq!(locations(&resp), Vec::<String>::new());
    let err = resp.headers().get("x-output-error").expect("X-Output-Error").to_str().unwrap().to_string();
    assert!(err.starts_with("3 of 3 not stored"), "{err}");
    let body = body_json(resp).await;
    assert_eq!(body["images"].as_array().unwrap().len(), 3, "the images are still returned");
    let info = info_of(&body);
    assert_eq!(info["output_locations"], serde_json::json!([]));
    assert_eq!(info["output_errors"].as_array().unwrap().len(), 3);
    assert_eq!(info["seed"], 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_response_limit_is_a_413_naming_the_stored_objects() {
    let moto = Moto::start();
    let s3 = moto.create_bucket(BUCKET).await;
    // A limit between the sizes of the response with and without its images.
    let req = r#"{"seed": 3, "width": 64, "height": 64, "batch_size": 2}"#;
    let lean = r#"{"seed": 3, "width": 64, "height": 64, "batch_size": 2, "send_images": false}"#;
    let unlimited = app(&moto, s3_config(), Arc::new(RecordingRunner::default()));
    let mut sizes = Vec::new();
    for r in [req, lean] {
        let (_, resp) = send(&unlimited, post_json("/sdapi/v1/txt2img", r)).await;
        sizes.push(serde_json::to_vec(&body_json(resp).await).unwrap().len());
    }
    assert!(sizes[0] > sizes[1] + 100, "{sizes:?}");
    let mut config = s3_config();
    config.storage.max_response_bytes = Some((sizes[0] + sizes[1]) / 2);
    let app = app(&moto, config, Arc::new(RecordingRunner::default()));
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", req)).await;
    assert_eq!(status, 413);
    let locs = locations(&resp);
    let body = body_json(resp).await;
    let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["error", "detail", "body", "errors"]);
    assert_eq!(body["error"], "ResponseTooLarge");
    let detail = body["detail"].as_str().unwrap();
    assert_eq!(locs.len(), 2);
    for loc in &locs {
        assert!(detail.contains(loc.as_str()), "{detail}");
        assert_eq!(&get_object(&s3, BUCKET, key_of(loc)).await.0[..4], b"\x89PNG");
    }
    // The same request with send_images false fits.
    let (status, _) = send(&app, post_json("/sdapi/v1/txt2img", lean)).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_limit_without_saving_stores_the_images_first() {
    let moto = Moto::start();
    let s3 = moto.create_bucket(BUCKET).await;
    let mut config = s3_config();
    config.storage.max_response_bytes = Some(1000); // the parameters echo alone is larger
    config.storage.save_all = Some(false);
    let app = app(&moto, config, Arc::new(RecordingRunner::default()));
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", r#"{"width": 64, "height": 64}"#)).await;
    assert_eq!(status, 413);
    assert_eq!(locations(&resp).len(), 1);
    assert_eq!(list_keys(&s3, BUCKET, "outputs/").await.len(), 1, "nothing is lost");
}

/// A device side without a model: one grey image per seed. The handler crate cannot name the
/// engine; the real engine is exercised through the `sdapi` binary (tests/e2e) and sdapi-engine.
struct GreyExecutor;

impl BatchExecutor for GreyExecutor {
    fn prepare(&mut self, _job: &BatchJob) -> Result<bool, RunnerError> {
        Ok(false)
    }

    fn execute(&mut self, job: &BatchJob, _control: &JobControl<'_>) -> Result<BatchOutput, RunnerError> {
        let (width, height) = (job.width as u32, job.height as u32);
        let images = job
            .seeds
            .iter()
            .map(|&seed| RgbImage { width, height, pixels: vec![(seed % 256) as u8; (width * height * 3) as usize] })
            .collect();
        Ok(BatchOutput { images, ..BatchOutput::default() })
    }
}

/// The real `ProcessingRunner` and the bundled models index, end to end into S3.
#[tokio::test(flavor = "multi_thread")]
async fn processing_runner_txt2img_lands_in_s3() {
    let moto = Moto::start();
    let s3 = moto.create_bucket(BUCKET).await;
    let config = s3_config();
    let outputs = Outputs::with_s3(&config, moto.store(BUCKET, PREFIX));
    let app = router(AppState::from_config(config, GreyExecutor).expect("runner").with_outputs(outputs));
    let req = std::fs::read_to_string(common::repo_root().join("samples/requests/txt2img-minimal.json")).unwrap();
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", &req)).await;
    assert_eq!(status, 200);
    let locs = locations(&resp);
    let body = body_json(resp).await;
    assert_eq!(locs.len(), 1);
    let (bytes, head) = get_object(&s3, BUCKET, key_of(&locs[0])).await;
    assert_eq!(bytes, b64(body["images"][0].as_str().unwrap()));
    let seed = info_of(&body)["seed"].as_i64().unwrap();
    assert!(key_of(&locs[0]).ends_with(&format!("00000-{seed}.png")));
    assert_eq!(head.metadata().unwrap().get("seed"), Some(&seed.to_string()));
}

/// Extras results go to the store like generated images when the operator stores everything
/// (A1111's own API does not save them): `extras-images/NNNNN.png`, named in the headers.
#[tokio::test(flavor = "multi_thread")]
async fn extras_results_are_stored_with_a_bucket() {
    let moto = Moto::start();
    let s3 = moto.create_bucket(BUCKET).await;
    let app = app(&moto, s3_config(), Arc::new(RecordingRunner::default()));
    let png =
        std::fs::read(common::repo_root().join("tests/fixtures/a1111-parity/init_images/init_a_64x64.png")).unwrap();
    let image = base64::engine::general_purpose::STANDARD.encode(png);
    let body = serde_json::json!({"upscaler_1": "Lanczos", "upscaling_resize": 2, "image": image}).to_string();
    let (status, resp) = send(&app, post_json("/sdapi/v1/extra-single-image", &body)).await;
    assert_eq!(status, 200);
    let locs = locations(&resp);
    assert_eq!(locs.len(), 1);
    assert!(locs[0].ends_with("outputs/extras-images/00000.png"), "{locs:?}");
    let stored = get_object(&s3, BUCKET, key_of(&locs[0])).await.0;
    let returned =
        base64::engine::general_purpose::STANDARD.decode(body_json(resp).await["image"].as_str().unwrap()).unwrap();
    assert_eq!(stored, returned, "the stored file is the returned image");
}
