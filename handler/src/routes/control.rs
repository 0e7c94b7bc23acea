//! Progress, interrupt/skip, model lifecycle and health routes.

use axum::Json;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;

#[derive(Debug, Deserialize)]
pub struct ProgressQuery {
    #[serde(default)]
    skip_current_image: Option<String>,
}

/// `GET /sdapi/v1/progress` (docs/a1111-behaviour.md §2.7).
pub async fn progress(State(s): State<AppState>, Query(q): Query<ProgressQuery>) -> impl IntoResponse {
    let snap = s.ctx.runner.state().snapshot();
    let skip_image = matches!(
        q.skip_current_image.as_deref().map(str::to_ascii_lowercase).as_deref(),
        Some("true" | "1" | "yes" | "on")
    );
    Json(json!({
        "progress": snap.progress,
        "eta_relative": snap.eta_relative,
        "state": {
            "skipped": snap.skipped,
            "interrupted": snap.interrupted,
            "stopping_generation": false,
            "job": snap.job,
            "job_count": snap.job_count,
            "job_timestamp": snap.job_timestamp,
            "job_no": snap.job_no,
            "sampling_step": snap.sampling_step,
            "sampling_steps": snap.sampling_steps,
        },
        "current_image": if skip_image { None } else { snap.current_image },
        "textinfo": snap.textinfo,
    }))
}

/// `POST /sdapi/v1/interrupt` → `{}`.
pub async fn interrupt(State(s): State<AppState>) -> impl IntoResponse {
    s.ctx.runner.interrupt();
    Json(json!({}))
}

/// `POST /sdapi/v1/skip` → `null`.
pub async fn skip(State(s): State<AppState>) -> impl IntoResponse {
    s.ctx.runner.skip();
    Json(Value::Null)
}

/// `POST /sdapi/v1/unload-checkpoint` → `{}`.
pub async fn unload_checkpoint(State(s): State<AppState>) -> impl IntoResponse {
    s.ctx.runner.unload_models();
    Json(json!({}))
}

/// `POST /sdapi/v1/reload-checkpoint` → `{}`; the model loads again lazily on the next job.
pub async fn reload_checkpoint() -> impl IntoResponse {
    Json(json!({}))
}

/// `GET /`: must answer for A1111 test suites' `--verify-base-url`.
pub async fn root() -> impl IntoResponse {
    Json(json!({ "name": "sdapi-rs", "version": sdapi_core::VERSION, "api": "/sdapi/v1", "docs": "/docs" }))
}

/// `GET /internal/ping`.
pub async fn ping() -> impl IntoResponse {
    Json(json!({}))
}

/// `GET /health`: liveness — the process answers.
pub async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `GET /ready`: readiness for load balancers — 503 while the runner's queue is full.
pub async fn ready(State(s): State<AppState>) -> axum::response::Response {
    // One reading of the counters decides both the status and the body.
    let depth = s.ctx.runner.counters().queue_depth;
    let full = depth >= s.config.max_queue as u64;
    let body =
        json!({"status": if full { "busy" } else { "ready" }, "queue_depth": depth, "max_queue": s.config.max_queue});
    if full {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, [(axum::http::header::RETRY_AFTER, RETRY_AFTER_S)], Json(body))
            .into_response()
    } else {
        Json(body).into_response()
    }
}

/// Seconds a client is told to wait when the queue is full.
pub const RETRY_AFTER_S: &str = "5";

/// Whether the runner already holds `SDAPI_MAX_QUEUE` jobs (waiting or running).
pub fn queue_full(s: &AppState) -> bool {
    s.ctx.runner.counters().queue_depth >= s.config.max_queue as u64
}

/// `GET /internal/runner`: the runner's counters, readable from outside the process.
pub async fn runner_counters(State(s): State<AppState>) -> impl IntoResponse {
    Json(s.ctx.runner.counters())
}
