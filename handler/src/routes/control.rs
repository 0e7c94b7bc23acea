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
    let counters = s.ctx.runner.counters();
    let depth = counters.queue_depth;
    let full = depth >= s.config.max_queue as u64;
    // With SDAPI_PRELOAD the instance is ready once a model is on the device.
    let loading = s.config.preload && counters.model_loads == 0;
    let status = if loading {
        "loading"
    } else if full {
        "busy"
    } else {
        "ready"
    };
    let body = json!({"status": status, "queue_depth": depth, "max_queue": s.config.max_queue,
        "models_loaded": counters.model_loads});
    if loading {
        (axum::http::StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    } else if full {
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

/// A1111's `ProgressRequest` (`/internal/progress`).
#[derive(Debug, Deserialize)]
pub struct TaskProgressRequest {
    id_task: Option<String>,
    #[serde(default = "no_preview_id")]
    id_live_preview: i64,
    #[serde(default = "yes")]
    live_preview: bool,
}

fn no_preview_id() -> i64 {
    -1
}

fn yes() -> bool {
    true
}

/// `POST /internal/progress`: A1111's per-task progress (`modules/progress.py`): active, queued
/// (with "In queue: i/n"), completed, and for the active task progress, ETA and the live preview.
pub async fn task_progress(State(s): State<AppState>, Json(req): Json<TaskProgressRequest>) -> impl IntoResponse {
    let running = s.ctx.runner.state().running_tasks();
    let id = req.id_task.unwrap_or_default();
    let active = running.contains(&id);
    let status = s.tasks.status(&id, &running);
    if !active {
        let textinfo = match status.place {
            Some((i, n)) => format!("In queue: {i}/{n}"),
            None => "Waiting...".to_string(),
        };
        return Json(json!({"active": false, "queued": status.queued, "completed": status.completed,
            "progress": null, "eta": null, "live_preview": null, "id_live_preview": -1, "textinfo": textinfo}));
    }
    let snap = s.ctx.runner.state().snapshot();
    // A1111's progress here has no 0.01 head start (unlike /sdapi/v1/progress).
    let (mut progress, mut eta) = (0.0, Value::Null);
    if snap.job_count > 0 {
        progress += snap.job_no as f64 / snap.job_count as f64;
        if snap.sampling_steps > 0 {
            progress += snap.sampling_step as f64 / snap.sampling_steps as f64 / snap.job_count as f64;
        }
    }
    let progress: f64 = progress.min(1.0);
    if progress > 0.0 {
        eta = json!(snap.elapsed / progress - snap.elapsed);
    }
    let preview = snap.current_image.filter(|_| req.live_preview);
    let (live_preview, id_live_preview) = match preview {
        Some(png) => (json!(format!("data:image/png;base64,{png}")), json!(snap.sampling_step)),
        None => (Value::Null, json!(req.id_live_preview)),
    };
    Json(json!({"active": true, "queued": status.queued, "completed": status.completed, "progress": progress,
        "eta": eta, "live_preview": live_preview, "id_live_preview": id_live_preview, "textinfo": snap.textinfo}))
}

/// `GET /internal/pending-tasks`: `{"size", "tasks"}`.
pub async fn pending_tasks(State(s): State<AppState>) -> impl IntoResponse {
    let running = s.ctx.runner.state().running_tasks();
    let tasks = s.tasks.pending(&running);
    Json(json!({"size": tasks.len(), "tasks": tasks}))
}
