//! Contract tests: generation routes reach `process_images` and the runner exactly once per batch,
//! through the same `Runner` interface the real runner implements.

mod common;
use common::*;

#[tokio::test]
async fn txt2img_invokes_the_runner_once_per_batch() {
    let (app, runner) = app_with(test_config());
    let body = r#"{"prompt":"a cat","seed":10,"batch_size":2,"n_iter":3,"steps":4,"width":64,"height":64}"#;
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", body)).await;
    assert!(resp.headers().contains_key("x-runner-job"));
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    let jobs = runner.jobs.lock().unwrap().clone();
    assert_eq!(jobs.len(), 3, "one runner job per batch (n_iter)");
    assert_eq!(jobs[0].seeds, vec![10, 11]);
    assert_eq!(jobs[2].seeds, vec![14, 15]);
    assert!(jobs.iter().all(|j| j.sampler == sdapi_protocol::choices::SamplerKind::Euler && j.steps == 4));
    assert_eq!(v["images"].as_array().unwrap().len(), 6);
    assert_eq!(v["parameters"]["prompt"], "a cat");
    let info: serde_json::Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["all_seeds"], serde_json::json!([10, 11, 12, 13, 14, 15]));
}

#[tokio::test]
async fn img2img_invokes_the_runner_once_per_batch() {
    let (app, runner) = app_with(test_config());
    let png = std::fs::read(repo_root().join("tests/fixtures/a1111-parity/init_images/init_a_64x64.png")).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    let body = serde_json::json!({
        "prompt": "x", "init_images": [format!("data:image/png;base64,{b64}")],
        "n_iter": 2, "steps": 4, "width": 64, "height": 64, "seed": 3
    });
    let (status, resp) = send(&app, post_json("/sdapi/v1/img2img", &body.to_string())).await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(runner.jobs.lock().unwrap().len(), 2);
    assert!(v["parameters"]["init_images"].is_null(), "init images are not echoed by default");
}

/// Two init images with batch_size 4: A1111 shrinks the batch to 2 images per iteration, keeping
/// the seeds it laid out for 4 (iteration 1 takes seeds 5 and 6).
#[tokio::test]
async fn several_init_images_set_the_batch_size() {
    let (app, runner) = app_with(test_config());
    let png = std::fs::read(repo_root().join("tests/fixtures/a1111-parity/init_images/init_a_64x64.png")).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    let body = serde_json::json!({
        "prompt": "x", "init_images": [b64, b64], "batch_size": 4, "n_iter": 2, "steps": 2,
        "width": 64, "height": 64, "seed": 3
    });
    let (status, resp) = send(&app, post_json("/sdapi/v1/img2img", &body.to_string())).await;
    let v = body_json(resp).await;
    assert_eq!(status, 200, "{v}");
    let seeds: Vec<Vec<i64>> = runner.jobs.lock().unwrap().iter().map(|j| j.seeds.clone()).collect();
    assert_eq!(seeds, vec![vec![3, 4], vec![5, 6]]);
    assert_eq!(v["images"].as_array().unwrap().len(), 4);
    let info: serde_json::Value = serde_json::from_str(v["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["batch_size"], 2);
    assert_eq!(info["all_seeds"], serde_json::json!([3, 4, 5, 6, 7, 8, 9, 10]));
}

#[tokio::test]
async fn validation_errors_never_reach_the_runner() {
    let (app, runner) = app_with(test_config());
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", r#"{"steps":"abc"}"#)).await;
    assert_eq!(status, 422);
    let v = body_json(resp).await;
    assert_eq!(v["detail"][0]["loc"], serde_json::json!(["body", "steps"]));
    assert_eq!(v["detail"][0]["type"], "type_error.integer");
    assert!(runner.jobs.lock().unwrap().is_empty());
}

/// `Prefer: respond-async` goes through the same runner path as a job (202, then the record holds
/// the synchronous body); where jobs cannot run after the answer (Lambda) it is ignored.
#[tokio::test]
async fn async_jobs_reach_the_runner_and_are_ignored_where_disabled() {
    let body = r#"{"prompt":"a cat","seed":10,"steps":4,"width":64,"height":64}"#;
    let with_prefer = || {
        let mut req = post_json("/sdapi/v1/txt2img", body);
        req.headers_mut().insert("prefer", "respond-async".parse().unwrap());
        req
    };
    let (app, runner) = app_with(test_config());
    let (status, resp) = send(&app, with_prefer()).await;
    assert_eq!(status, 202);
    assert_eq!(resp.headers()["preference-applied"], "respond-async");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let record = loop {
        let (status, resp) = send(&app, get(&location)).await;
        assert_eq!(status, 200);
        let record = body_json(resp).await;
        if record["state"] == "succeeded" {
            break record;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(record["status_code"], 200);
    assert_eq!(record["result"]["images"].as_array().unwrap().len(), 1);
    assert_eq!(runner.jobs.lock().unwrap().len(), 1, "one batch through the runner");

    let mut config = test_config();
    config.jobs.async_enabled = false;
    let (app, runner) = app_with(config);
    let (status, resp) = send(&app, with_prefer()).await;
    assert_eq!(status, 200, "answered synchronously");
    assert!(!resp.headers().contains_key("preference-applied"));
    assert_eq!(runner.jobs.lock().unwrap().len(), 1);
}
