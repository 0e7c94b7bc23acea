//! `POST /sdapi/v1/txt2img` and `/img2img`: validate, hand to `process_images`, encode, respond.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sdapi_core::processing::{GenerationRequest, Processed, create_task_id, decode_init_images, process_images};
use sdapi_core::store::report::append_info_key;
use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::request::{Img2ImgRequest, Txt2ImgRequest};
use sdapi_protocol::python_json;
use serde_json::{Map, Value, json};

use super::json_body;
use crate::app::AppState;
use crate::errors::{HandlerError, json_response};
use crate::jobs;
use crate::storage;

pub async fn txt2img(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HandlerError> {
    refuse_when_queue_full(&s)?;
    let value = json_body(&headers, body)?;
    generate(&s, &headers, Parsed::Txt2Img(Txt2ImgRequest::from_json(&value)?), &value).await
}

pub async fn img2img(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HandlerError> {
    refuse_when_queue_full(&s)?;
    let value = json_body(&headers, body)?;
    generate(&s, &headers, Parsed::Img2Img(Img2ImgRequest::from_json(&value)?), &value).await
}

/// A validated request of one of the two generation routes.
enum Parsed {
    Txt2Img(Txt2ImgRequest),
    Img2Img(Img2ImgRequest),
}

/// Synchronously, or as a job with `Prefer: respond-async`: in this process where jobs can run,
/// else handed to the jobs queue where one is configured (docs/jobs.md). `body`: the request as
/// sent, which a handed-off job is run from.
async fn generate(s: &AppState, headers: &HeaderMap, request: Parsed, body: &Value) -> Result<Response, HandlerError> {
    if jobs::prefers_async(headers) {
        if s.config.jobs.async_enabled {
            return submit_async(s, headers, request).await;
        }
        if let Some(queue) = &s.job_queue {
            return hand_off(s, queue.as_ref(), headers, request, body).await;
        }
    }
    request.run(s, None).await
}

/// Runs a job handed off through the jobs queue: the request JSON of route `kind` through the
/// synchronous pipeline under `task_id`.
pub(crate) async fn run_handed_off(s: &AppState, kind: &str, request: &Value, task_id: String) -> jobs::Answer {
    let parsed = match kind {
        "txt2img" => Txt2ImgRequest::from_json(request).map(Parsed::Txt2Img),
        "img2img" => Img2ImgRequest::from_json(request).map(Parsed::Img2Img),
        other => {
            let error = HandlerError::from(ApiError::http(422, format!("unknown job kind {other:?}")));
            return answer_of(error.into_response()).await;
        }
    };
    let response = match parsed {
        Ok(p) => p.run(s, Some(task_id)).await.unwrap_or_else(IntoResponse::into_response),
        Err(e) => HandlerError::from(e).into_response(),
    };
    answer_of(response).await
}

/// A route's response as a job records it: status and JSON body.
async fn answer_of(response: Response) -> jobs::Answer {
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// `Prefer: respond-async` on Lambda: stored and queued for the queue's consumer; 202.
async fn hand_off(
    s: &AppState,
    queue: &dyn jobs::handoff::JobQueue,
    headers: &HeaderMap,
    request: Parsed,
    body: &Value,
) -> Result<Response, HandlerError> {
    let id = jobs::new_id();
    let task_id = request.forced_task_id().unwrap_or_else(|| id.clone());
    let webhook = jobs::webhook_url(headers);
    jobs::check_webhook(s, webhook.as_deref()).await.map_err(|e| ApiError::http(422, e.to_string()))?;
    let record = jobs::JobRecord::queued(id, request.name(), webhook);
    let bytes = serde_json::to_vec(body).map_err(|e| ApiError::http(500, e.to_string()))?;
    let record = jobs::handoff::hand_off(s, queue, record, task_id, bytes).await.map_err(|e| {
        tracing::error!("asynchronous request not handed off: {e}");
        ApiError::http(503, format!("the job could not be queued: {e}"))
    })?;
    Ok(accepted(&record))
}

/// `202 Accepted` for a queued job, with its location.
fn accepted(record: &jobs::JobRecord) -> Response {
    let location = format!("/sdapi/v1/jobs/{}", record.id);
    let body = json!({"id": record.id, "state": record.state, "location": location});
    let mut resp = json_response(StatusCode::ACCEPTED, &body);
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert("location", v);
    }
    resp.headers_mut().insert("preference-applied", HeaderValue::from_static("respond-async"));
    resp
}

impl Parsed {
    fn name(&self) -> &'static str {
        match self {
            Parsed::Txt2Img(_) => "txt2img",
            Parsed::Img2Img(_) => "img2img",
        }
    }

    /// The request's own `force_task_id`, if it sent one.
    fn forced_task_id(&self) -> Option<String> {
        let forced = match self {
            Parsed::Txt2Img(r) => r.force_task_id.as_deref(),
            Parsed::Img2Img(r) => r.force_task_id.as_deref(),
        };
        forced.filter(|t| !t.is_empty()).map(String::from)
    }

    /// The synchronous pipeline: (decode), process_images, store and answer. The task id is the
    /// request's `force_task_id`, else `task_id`, else a fresh one; it is tracked as A1111 tracks
    /// it (pending from arrival, finished at the end, even on failure). The `parameters` echo is
    /// taken before the task id is set, so it stays A1111's.
    async fn run(self, s: &AppState, task_id: Option<String>) -> Result<Response, HandlerError> {
        let task_id = self.forced_task_id().or(task_id).unwrap_or_else(|| create_task_id(self.name()));
        s.tasks.add(&task_id);
        let answer = self.run_task(s, task_id.clone()).await;
        s.tasks.finish(&task_id);
        answer
    }

    async fn run_task(self, s: &AppState, task_id: String) -> Result<Response, HandlerError> {
        let (request, parameters, send_images, save_images) = match self {
            Parsed::Txt2Img(mut req) => {
                let (p, send, save) = (req.to_parameters(), req.send_images, req.save_images);
                req.force_task_id = Some(task_id);
                (GenerationRequest::Txt2Img(req), p, send, save)
            }
            Parsed::Img2Img(mut req) => {
                let init_images = decode_init_images(&s.ctx, &req).await?;
                let (p, send, save) = (req.to_parameters(), req.send_images, req.save_images);
                req.force_task_id = Some(task_id);
                (GenerationRequest::Img2Img { request: req, init_images }, p, send, save)
            }
        };
        let processed = process_images(&s.ctx, request).await?;
        respond(s, processed, parameters, send_images, save_images).await
    }
}

/// `Prefer: respond-async`: the same pipeline as a job; 202 with its location (docs/jobs.md).
async fn submit_async(s: &AppState, headers: &HeaderMap, request: Parsed) -> Result<Response, HandlerError> {
    let id = jobs::new_id();
    // The runner reports the job under its task id: the request's own, else the job id.
    let task_id = request.forced_task_id().unwrap_or_else(|| id.clone());
    let kind = request.name();
    let (state, run_id) = (s.clone(), task_id.clone());
    let run = async move {
        let response = match request.run(&state, Some(run_id)).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        answer_of(response).await
    };
    let record = jobs::submit(s, id, kind, task_id, jobs::webhook_url(headers), run)
        .await
        .map_err(|e| ApiError::http(422, e.to_string()))?;
    Ok(accepted(&record))
}

/// `X-Runner-Job`: every runner job of this request with its timings, e.g.
/// `id=3;queue_ms=0;execute_ms=812;total_ms=812`, comma-separated for n_iter > 1.
fn runner_header(processed: &Processed) -> Option<HeaderValue> {
    let v = processed
        .jobs
        .iter()
        .map(|j| {
            format!(
                "id={};queue_ms={};execute_ms={};total_ms={}",
                j.job_id,
                j.timings.queue_wait.as_millis(),
                j.timings.execute.as_millis(),
                j.timings.total.as_millis()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&v).ok()
}

/// A full queue (`SDAPI_MAX_QUEUE`) is a 503 with `Retry-After`, before the body is read.
fn refuse_when_queue_full(s: &AppState) -> Result<(), HandlerError> {
    if super::control::queue_full(s) {
        return Err(HandlerError::Busy {
            detail: format!(
                "the server's queue is full ({} jobs waiting or running, SDAPI_MAX_QUEUE); retry later",
                s.config.max_queue
            ),
            retry_after_s: super::control::RETRY_AFTER_S,
        });
    }
    Ok(())
}

/// Header values must be ASCII: compact JSON with non-ASCII escaped.
const HEADER_JSON: python_json::DumpStyle = python_json::DumpStyle { item_sep: ",", key_sep: ":", ensure_ascii: true };

/// Encodes the images once, stores them (S3 or the local folder, see `crate::storage`) and builds
/// A1111's `{"images", "parameters", "info"}` body. Where images went is reported without touching
/// what A1111 clients parse: `X-Output-Locations` (JSON array) and an `output_locations` key after
/// A1111's keys in `info`; storage failures in `X-Output-Error` and `output_errors` (the images are
/// still returned). Over the response limit (Lambda) → 413 naming the stored objects.
async fn respond(
    s: &AppState,
    processed: Processed,
    parameters: Map<String, Value>,
    send_images: bool,
    save_images: bool,
) -> Result<Response, HandlerError> {
    let header = runner_header(&processed);
    let task_id = HeaderValue::from_str(&processed.task_id).ok();
    let save = s.outputs.should_save(save_images, processed.options.samples_save());
    let mut saved = storage::save_and_encode(&s.outputs, &processed, send_images, save).await?;
    let info = output_info(&processed.info, save, &saved);
    let mut body = json!({ "images": saved.base64, "parameters": parameters, "info": info });
    let mut status = StatusCode::OK;
    if let Some(limit) = s.outputs.max_response_bytes {
        let size = serde_json::to_vec(&body).map(|b| b.len()).unwrap_or(usize::MAX);
        if size > limit {
            if !save {
                // Nothing may be lost: store what cannot be returned, then name it in the error.
                let bytes = saved.base64.iter().filter_map(|b| sdapi_protocol::images::py_b64decode(b)).collect();
                saved = storage::store_encoded(&s.outputs, &processed, bytes).await;
            }
            let err = response_too_large(size, limit, &saved);
            tracing::warn!(size, limit, stored = saved.stored.len(), "generation response over the limit");
            status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::PAYLOAD_TOO_LARGE);
            body = serde_json::to_value(&err).map_err(|e| ApiError::runtime(e.to_string()))?;
        }
    }
    let mut resp = json_response(status, &body);
    let headers = resp.headers_mut();
    if let Some(h) = header {
        headers.insert("x-runner-job", h);
    }
    if let Some(t) = task_id {
        headers.insert("x-task-id", t);
    }
    storage_headers(headers, &saved, processed.images.len(), save);
    Ok(resp.into_response())
}

/// `X-Output-Locations` (JSON array, when storing was asked or happened) and `X-Output-Error`
/// (the first failure, ASCII-safe) for a response whose images went to the store.
pub(super) fn storage_headers(headers: &mut HeaderMap, saved: &storage::SavedOutputs, total: usize, asked: bool) {
    if asked || !saved.stored.is_empty() {
        let locations: Vec<Value> = saved.stored.iter().map(|o| Value::String(o.location.clone())).collect();
        if let Ok(v) = HeaderValue::from_str(&python_json::dumps_with(&Value::Array(locations), HEADER_JSON)) {
            headers.insert("x-output-locations", v);
        }
    }
    if let Some(first) = saved.failures.first() {
        let msg: String = format!("{} of {total} not stored: {first}", saved.failures.len())
            .chars()
            .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' })
            .take(1024)
            .collect();
        if let Ok(v) = HeaderValue::from_str(&msg) {
            headers.insert("x-output-error", v);
        }
    }
}

/// `info` plus `output_locations` (and `output_errors` when some failed) when images were stored;
/// untouched otherwise, so A1111 parity holds byte for byte.
fn output_info(info: &str, saved_requested: bool, saved: &storage::SavedOutputs) -> String {
    if !saved_requested {
        return info.to_string();
    }
    let locations: Vec<Value> = saved.stored.iter().map(|o| Value::String(o.location.clone())).collect();
    let mut out = append_info_key(info, "output_locations", &Value::Array(locations));
    if !saved.failures.is_empty() {
        let errors: Vec<Value> = saved.failures.iter().map(|f| Value::String(f.clone())).collect();
        out = append_info_key(&out, "output_errors", &Value::Array(errors));
    }
    out
}

/// The over-limit error in A1111's four-key shape; `detail` names every stored object.
fn response_too_large(size: usize, limit: usize, saved: &storage::SavedOutputs) -> ApiError {
    let mut detail = format!(
        "Response too large: {size} bytes exceeds the limit of {limit} bytes (SDAPI_LAMBDA_MAX_RESPONSE_BYTES; \
         Lambda returns at most 6 MB). "
    );
    if saved.stored.is_empty() {
        detail.push_str("The images could not be stored");
    } else {
        let list: Vec<&str> = saved.stored.iter().map(|o| o.location.as_str()).collect();
        detail.push_str(&format!("The {} images were stored at: {}", list.len(), list.join(", ")));
    }
    if !saved.failures.is_empty() {
        detail.push_str(&format!("; {} could not be stored: {}", saved.failures.len(), saved.failures.join("; ")));
    }
    detail.push_str(". Send \"send_images\": false to receive only the locations.");
    ApiError {
        status: 413,
        error: "ResponseTooLarge".into(),
        detail: Value::String(detail),
        body: String::new(),
        errors: format!("response of {size} bytes over the {limit}-byte limit"),
    }
}
