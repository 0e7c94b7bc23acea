//! Router behaviour: every A1111 route is registered, error shapes and status codes, auth, limits.

mod common;
use axum::body::Body;
use axum::http::Request;
use common::*;
use serde_json::json;

/// A1111 v1.10.1 (docs/a1111-behaviour.md §2.1), in registration order (server-kill/restart/stop need --api-server-stop).
const A1111_ROUTES: &[(&str, &str)] = &[
    ("POST", "/sdapi/v1/txt2img"),
    ("POST", "/sdapi/v1/img2img"),
    ("POST", "/sdapi/v1/extra-single-image"),
    ("POST", "/sdapi/v1/extra-batch-images"),
    ("POST", "/sdapi/v1/png-info"),
    ("GET", "/sdapi/v1/progress"),
    ("POST", "/sdapi/v1/interrogate"),
    ("POST", "/sdapi/v1/interrupt"),
    ("POST", "/sdapi/v1/skip"),
    ("GET", "/sdapi/v1/options"),
    ("POST", "/sdapi/v1/options"),
    ("GET", "/sdapi/v1/cmd-flags"),
    ("GET", "/sdapi/v1/samplers"),
    ("GET", "/sdapi/v1/schedulers"),
    ("GET", "/sdapi/v1/upscalers"),
    ("GET", "/sdapi/v1/latent-upscale-modes"),
    ("GET", "/sdapi/v1/sd-models"),
    ("GET", "/sdapi/v1/sd-vae"),
    ("GET", "/sdapi/v1/hypernetworks"),
    ("GET", "/sdapi/v1/face-restorers"),
    ("GET", "/sdapi/v1/realesrgan-models"),
    ("GET", "/sdapi/v1/prompt-styles"),
    ("GET", "/sdapi/v1/embeddings"),
    ("POST", "/sdapi/v1/refresh-embeddings"),
    ("POST", "/sdapi/v1/refresh-checkpoints"),
    ("POST", "/sdapi/v1/refresh-vae"),
    ("POST", "/sdapi/v1/create/embedding"),
    ("POST", "/sdapi/v1/create/hypernetwork"),
    ("POST", "/sdapi/v1/train/embedding"),
    ("POST", "/sdapi/v1/train/hypernetwork"),
    ("GET", "/sdapi/v1/memory"),
    ("POST", "/sdapi/v1/unload-checkpoint"),
    ("POST", "/sdapi/v1/reload-checkpoint"),
    ("GET", "/sdapi/v1/scripts"),
    ("GET", "/sdapi/v1/script-info"),
    ("GET", "/sdapi/v1/extensions"),
];

#[test]
fn openapi_route_list_matches_a1111() {
    let ours: Vec<(String, String)> = sdapi_handler::routes::openapi::route_list()
        .into_iter()
        // The Lora routes come from A1111's built-in Lora extension; the jobs routes are ours.
        .filter(|(_, p)| !p.contains("loras") && !p.starts_with("/sdapi/v1/jobs"))
        .map(|(m, p)| (m.to_uppercase(), p.to_string()))
        .collect();
    let theirs: Vec<(String, String)> = A1111_ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(ours, theirs);
}

#[tokio::test]
async fn every_a1111_route_is_registered() {
    let (app, _) = app_with(test_config());
    for (method, path) in A1111_ROUTES {
        let req = Request::builder().method(*method).uri(*path).header("content-type", "application/json");
        let (status, resp) = send(&app, req.body(Body::from("{}")).unwrap()).await;
        // A 404 can be a route's own answer (img2img: "Init image not found"), never the router's.
        let body = body_json(resp).await;
        assert!(status != 405 && body != json!({"detail": "Not Found"}), "{method} {path} -> {status} {body}");
    }
    for path in ["/", "/internal/ping", "/internal/runner", "/openapi.json", "/docs"] {
        let (status, _) = send(&app, get(path)).await;
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test]
async fn unsupported_capabilities_answer_501_in_the_four_key_shape() {
    let (app, _) = app_with(test_config());
    for path in ["/sdapi/v1/interrogate", "/sdapi/v1/train/embedding"] {
        let (status, resp) = send(&app, post_json(path, "{}")).await;
        assert_eq!(status, 501, "{path}");
        let v = body_json(resp).await;
        assert_eq!(v["error"], "HTTPException");
        assert!(v["detail"].as_str().unwrap().contains("not supported"));
        assert_eq!((v["body"].as_str(), v["errors"].as_str()), (Some(""), Some("")));
    }
}

#[tokio::test]
async fn unknown_path_and_wrong_method_use_fastapi_bodies() {
    let (app, _) = app_with(test_config());
    let (status, resp) = send(&app, get("/sdapi/v1/nope")).await;
    assert_eq!(status, 404);
    assert_eq!(body_json(resp).await, json!({"detail": "Not Found"}));
    let (status, resp) = send(&app, get("/sdapi/v1/txt2img")).await;
    assert_eq!(status, 405);
    assert_eq!(body_json(resp).await, json!({"detail": "Method Not Allowed"}));
}

#[tokio::test]
async fn malformed_and_non_json_bodies_get_422() {
    let (app, _) = app_with(test_config());
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", "{not json")).await;
    assert_eq!(status, 422);
    assert_eq!(body_json(resp).await["detail"][0]["type"], "value_error.jsondecode");
    let req = Request::post("/sdapi/v1/txt2img").header("content-type", "text/plain").body(Body::from("hi")).unwrap();
    let (status, resp) = send(&app, req).await;
    assert_eq!(status, 422);
    assert_eq!(body_json(resp).await["detail"][0]["type"], "type_error.dict");
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", r#"{"send_images": null}"#)).await;
    assert_eq!(status, 422);
    assert_eq!(body_json(resp).await["detail"][0]["type"], "type_error.none.not_allowed");
}

#[tokio::test]
async fn oversized_body_gets_413_in_the_four_key_shape() {
    let mut config = test_config();
    config.max_body_bytes = 1024;
    let (app, runner) = app_with(config);
    let big = format!(r#"{{"prompt":"{}"}}"#, "x".repeat(4096));
    let (status, resp) = send(&app, post_json("/sdapi/v1/txt2img", &big)).await;
    assert_eq!(status, 413);
    let v = body_json(resp).await;
    assert_eq!(v["error"], "HTTPException");
    assert!(runner.jobs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn basic_auth_protects_sdapi_like_api_auth() {
    let mut config = test_config();
    config.api_auth = vec![("u".into(), "p".into())];
    let (app, _) = app_with(config);
    let (status, resp) = send(&app, get("/sdapi/v1/samplers")).await;
    assert_eq!(status, 401);
    assert_eq!(body_json(resp).await["detail"], "Not authenticated");
    use base64::Engine;
    let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("u:x"));
    let req = Request::get("/sdapi/v1/samplers").header("authorization", wrong).body(Body::empty()).unwrap();
    let (status, resp) = send(&app, req).await;
    assert_eq!(status, 401);
    assert_eq!(body_json(resp).await["detail"], "Incorrect username or password");
    let right = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("u:p"));
    let req = Request::get("/sdapi/v1/samplers").header("authorization", right).body(Body::empty()).unwrap();
    assert_eq!(send(&app, req).await.0, 200);
    assert_eq!(send(&app, get("/internal/ping")).await.0, 200, "the health check stays open");
    assert_eq!(send(&app, get("/internal/runner")).await.0, 401, "runner counters reveal state");
    assert_eq!(send(&app, get("/sdapi/v1/loras")).await.0, 200, "A1111 leaves the Lora routes open");
    assert_eq!(send(&app, get("/openapi.json")).await.0, 200);
}

#[tokio::test]
async fn listings_answer_with_a1111_data() {
    let (app, _) = app_with(test_config());
    let v = body_json(send(&app, get("/sdapi/v1/samplers")).await.1).await;
    assert_eq!(v.as_array().unwrap().len(), 20);
    assert_eq!(v[0]["name"], "DPM++ 2M");
    let v = body_json(send(&app, get("/sdapi/v1/schedulers")).await.1).await;
    assert_eq!(v.as_array().unwrap().len(), 12);
    let v = body_json(send(&app, get("/sdapi/v1/sd-models")).await.1).await;
    let names: Vec<&str> = v.as_array().unwrap().iter().map(|m| m["model_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["demo-shapes", "tiny-sd15", "tiny-sd2v", "tiny-sdxl"]);
    assert_eq!(v[1]["title"], "tiny-sd15.safetensors [7037055cdc]");
}

#[tokio::test]
async fn options_round_trip_and_reject_unknown_keys() {
    let (app, _) = app_with(test_config());
    let v = body_json(send(&app, get("/sdapi/v1/options")).await.1).await;
    let send_seed = v["send_seed"].as_bool().unwrap();
    let (status, _) = send(&app, post_json("/sdapi/v1/options", &json!({"send_seed": !send_seed}).to_string())).await;
    assert_eq!(status, 200);
    let v = body_json(send(&app, get("/sdapi/v1/options")).await.1).await;
    assert_eq!(v["send_seed"], json!(!send_seed));
    let (status, resp) = send(&app, post_json("/sdapi/v1/options", r#"{"no_such_option": 1}"#)).await;
    assert_eq!(status, 500);
    assert_eq!(body_json(resp).await["error"], "KeyError");
    let (status, resp) = send(&app, post_json("/sdapi/v1/options", r#"{"sd_model_checkpoint": "missing"}"#)).await;
    assert_eq!(status, 500);
    assert_eq!(body_json(resp).await["error"], "RuntimeError");
}
