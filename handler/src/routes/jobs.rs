//! `GET /sdapi/v1/jobs`, `GET` and `DELETE /sdapi/v1/jobs/{id}` (docs/jobs.md).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use sdapi_protocol::api::errors::ApiError;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::errors::{HandlerError, json_response};
use crate::jobs::{self, JobRecord, JobState};

fn not_found(id: &str) -> HandlerError {
    ApiError::http(404, format!("Job {} not found", id.chars().take(80).collect::<String>())).into()
}

/// A record with what only this moment knows: the queue position, or the runner's progress.
fn with_live_fields(s: &AppState, record: &JobRecord) -> Value {
    let mut v = serde_json::to_value(record).unwrap_or(Value::Null);
    match record.state {
        JobState::Queued => v["queue_position"] = json!(s.jobs.queue_position(&record.id)),
        JobState::Running => {
            let snap = s.ctx.runner.state().snapshot();
            v["progress"] = json!({"progress": snap.progress, "eta_relative": snap.eta_relative,
                "sampling_step": snap.sampling_step, "sampling_steps": snap.sampling_steps});
        }
        _ => {}
    }
    v
}

pub async fn get_job(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, HandlerError> {
    if !jobs::valid_id(&id) {
        return Err(not_found(&id));
    }
    let running = s.ctx.runner.state().running_tasks();
    let record = match s.jobs.get(&id, &running) {
        Some(r) => r,
        // Another instance's job, or one this process no longer holds.
        None => jobs::load(&s, &id).await.ok_or_else(|| not_found(&id))?,
    };
    Ok(json_response(StatusCode::OK, &with_live_fields(&s, &record)))
}

pub async fn cancel_job(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, HandlerError> {
    if !jobs::valid_id(&id) {
        return Err(not_found(&id));
    }
    let record = match jobs::cancel(&s, &id).await {
        Some(r) => r,
        None => {
            let stored = jobs::load(&s, &id).await.ok_or_else(|| not_found(&id))?;
            if stored.state == jobs::JobState::Queued && s.job_queue.is_some() {
                // Handed off and not started: the consumer skips a cancelled record.
                let record = jobs::handoff::cancel_stored(&s, stored).await;
                return Ok(json_response(StatusCode::OK, &with_live_fields(&s, &record)));
            }
            if !stored.state.is_final() {
                return Err(ApiError::http(409, "the job runs on another instance; cancel it there").into());
            }
            stored
        }
    };
    Ok(json_response(StatusCode::OK, &with_live_fields(&s, &record)))
}

pub async fn list_jobs(State(s): State<AppState>) -> Response {
    let running = s.ctx.runner.state().running_tasks();
    let list: Vec<Value> = s.jobs.list(&running).iter().map(|r| with_live_fields(&s, r)).collect();
    json_response(StatusCode::OK, &list)
}
