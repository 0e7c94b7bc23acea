//! Request overhead outside diffusion: the whole `POST /sdapi/v1/txt2img` through the real router
//! in process (JSON parse and validation, process_images, PNG + base64, JSON response), minus the
//! runner's own execute time (`X-Runner-Job: execute_ms`). Bundled tiny model, 64×64.

use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use sdapi_engine::bench::{BenchError, Samples};
use sdapi_engine::executor::DiffusionExecutor;
use sdapi_handler::app::{AppState, router};
use sdapi_handler::config::Config;
use serde_json::json;
use tower::ServiceExt;

use super::{Args, report};

/// `execute_ms` summed over the jobs of an `X-Runner-Job` header (`id=..;execute_ms=..;…, …`).
fn execute_ms(header: &str) -> f64 {
    header
        .split([',', ';'])
        .filter_map(|kv| kv.trim().strip_prefix("execute_ms="))
        .filter_map(|v| v.parse::<f64>().ok())
        .sum()
}

pub fn bundled_models() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/models")
}

pub fn tiny_request(steps: usize) -> String {
    json!({"prompt": "a red cube on a wooden table", "negative_prompt": "blurry", "seed": 1234, "steps": steps,
           "width": 64, "height": 64, "sampler_name": "Euler a",
           "override_settings": {"sd_model_checkpoint": "tiny-sd15"}})
    .to_string()
}

/// The router over the bundled tiny model, outputs in a fresh temporary folder (returned for
/// removal).
pub fn tiny_app() -> Result<(axum::Router, std::path::PathBuf), BenchError> {
    let out = std::env::temp_dir().join(format!("sdapi-bench-out-{}", std::process::id()));
    let config = Config {
        models_dir: bundled_models(),
        checkpoint: Some("tiny-sd15".into()),
        device: "cpu".into(),
        dtype: None,
        listen: "127.0.0.1:0".parse().expect("literal address"),
        api_auth: vec![],
        output_dir: out.clone(),
        output_bucket: None,
        output_prefix: String::new(),
        max_body_bytes: 64 << 20,
        max_header_bytes: 64 << 10,
        max_queue: 256,
        batch_max_images: 1,
        storage: Default::default(),
        limits: Default::default(),
        header_read_timeout: std::time::Duration::from_secs(30),
        shutdown_grace: std::time::Duration::from_secs(30),
        jobs: Default::default(),
        preload: false,
        styles_file: bundled_models().join("styles.csv"),
    };
    let executor = DiffusionExecutor::with_dtype(&config.device, config.dtype.as_deref())
        .map_err(|e| BenchError::Request(e.to_string()))?;
    let state = AppState::from_config(config, executor).map_err(|e| BenchError::Request(e.to_string()))?;
    Ok((router(state), out))
}

/// One POST through the router: (wall ms, the runner's execute ms), or the error body.
pub async fn post_timed(app: &axum::Router, route: &str, body: &str) -> Result<(f64, f64), BenchError> {
    let req = Request::post(route)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .map_err(|e| BenchError::Request(e.to_string()))?;
    let start = Instant::now();
    let resp = app.clone().oneshot(req).await.map_err(|e| BenchError::Request(e.to_string()))?;
    let status = resp.status();
    let header = resp.headers().get("x-runner-job").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = resp.into_body().collect().await.map_err(|e| BenchError::Request(e.to_string()))?.to_bytes();
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if !status.is_success() {
        return Err(BenchError::Request(format!("status {status}: {}", String::from_utf8_lossy(&bytes))));
    }
    Ok((ms, execute_ms(&header)))
}

pub async fn run(args: &Args, iters: usize, steps: usize) -> Result<(), BenchError> {
    let (app, out) = tiny_app()?;
    let body = tiny_request(steps);
    let (mut total, mut exec, mut over) = (Samples::default(), Samples::default(), Samples::default());
    // One untimed request loads the model.
    for i in 0..=iters {
        let (ms, e) = post_timed(&app, "/sdapi/v1/txt2img", &body).await?;
        if i == 0 {
            continue;
        }
        total.push(ms);
        exec.push(e);
        over.push(ms - e);
    }
    let _ = std::fs::remove_dir_all(&out);
    let extra = json!({"model": "tiny-sd15", "size": 64, "steps": steps});
    report("request_total", extra.clone(), &total);
    report("request_execute", extra.clone(), &exec);
    report("request_overhead", extra, &over);
    println!(
        "{}",
        json!({"bench": "request_overhead_ratio", "ratio": super::round(over.median() / total.median() * 1e4) / 1e4})
    );
    let _ = args;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_execute_ms_over_jobs() {
        assert_eq!(
            super::execute_ms("id=1;queue_ms=0;execute_ms=12;total_ms=13, id=2;queue_ms=1;execute_ms=3;total_ms=4"),
            15.0
        );
    }
}
