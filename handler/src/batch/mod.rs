//! Batch jobs from S3 / SQS events (docs/batch-jobs.md).
//!
//! Each request of a job runs through `process_images` and the runner, exactly as over HTTP. Output
//! keys are deterministic (`batch/<job-id>/<entry>/<NNNNN>-<seed>.<ext>`, NNNNN = image index), and
//! `result.json` is written last: a redelivered event whose job already has a manifest is not run
//! again, and one that died half-way rewrites the same keys, so nothing is duplicated.

mod events;
pub mod file;

use std::time::SystemTime;

use sdapi_core::processing::{GenerationRequest, Processed, process_images};
use sdapi_core::store::{PutOptions, StoreError, validate_key};
use sdapi_protocol::images::SampleFormat;
use serde_json::{Value, json};

pub use events::{handle_event, is_batch_event};
use file::{FileError, JobEntry, JobRequest};

use crate::app::AppState;
use crate::storage::{encode_image, image_metadata};

/// A job that did not reach a final manifest, or whose manifest says it failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Reading the request file or writing outputs failed: retrying later can succeed.
    #[error("job {job_id}: {source}")]
    Store { job_id: String, source: StoreError },
    /// The request file does not exist (deleted after the event was sent).
    #[error("job {job_id}: request file {source_uri} not found")]
    SourceMissing { job_id: String, source_uri: String },
    /// The manifest records a failure (bad file, a request that failed); a retry would fail the same.
    #[error("job {job_id} {status}: see {manifest}")]
    Failed { job_id: String, status: String, manifest: String },
    #[error("job id {0:?} cannot be used in an object key")]
    BadJobId(String),
    #[error("batch events need the S3 store: set SDAPI_OUTPUT_BUCKET")]
    NoS3,
    #[error("event: {0}")]
    Event(String),
}

/// What a finished job left behind.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Completed {
        manifest: String,
    },
    /// `result.json` already existed with status `completed`: a redelivery, nothing re-run.
    AlreadyDone {
        manifest: String,
    },
}

fn now_rfc3339() -> String {
    chrono::DateTime::<chrono::Utc>::from(SystemTime::now()).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn manifest_key(job_id: &str) -> String {
    format!("batch/{job_id}/result.json")
}

/// Runs one job from the bytes of its request file (or why the file cannot be used).
pub async fn run_job(
    state: &AppState,
    job_id: &str,
    source: &str,
    file: Result<&[u8], FileError>,
) -> Result<JobOutcome, JobError> {
    let store = state.outputs.store.as_ref();
    let key = manifest_key(job_id);
    validate_key(&key).map_err(|_| JobError::BadJobId(job_id.to_string()))?;
    let store_err = |source| JobError::Store { job_id: job_id.to_string(), source };
    if let Some(existing) = store.get(&key).await.map_err(store_err)? {
        let status = serde_json::from_slice::<Value>(&existing)
            .ok()
            .and_then(|m| m.get("status").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "unreadable".into());
        tracing::info!(job_id, status, "manifest exists: redelivered event, not re-running");
        return match status.as_str() {
            "completed" => Ok(JobOutcome::AlreadyDone { manifest: key }),
            _ => Err(JobError::Failed { job_id: job_id.into(), status, manifest: key }),
        };
    }
    let started_at = now_rfc3339();
    let (requests, file_error) = match file.and_then(file::parse_file) {
        Ok(entries) => {
            let mut results = Vec::with_capacity(entries.len());
            for entry in &entries {
                results.push(run_entry(state, job_id, entry).await.map_err(store_err)?);
            }
            (results, None)
        }
        Err(e) => (Vec::new(), Some(e)),
    };
    let failed = requests.iter().filter(|r| r["status"] != "completed").count();
    let status = match (&file_error, failed) {
        (Some(_), _) => "failed",
        (None, 0) => "completed",
        (None, n) if n == requests.len() => "failed",
        _ => "partial",
    };
    let manifest = json!({
        "job_id": job_id,
        "source": source,
        "status": status,
        "started_at": started_at,
        "finished_at": now_rfc3339(),
        "requests": requests,
        "error": file_error.as_ref().map(FileError::to_error_object),
    });
    let body = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    let options = PutOptions { content_type: "application/json".into(), ..Default::default() };
    let stored = store.put(&key, body, options).await.map_err(store_err)?;
    tracing::info!(job_id, status, manifest = %stored.location, "batch job finished");
    if status == "completed" {
        Ok(JobOutcome::Completed { manifest: stored.key })
    } else {
        Err(JobError::Failed { job_id: job_id.into(), status: status.into(), manifest: stored.key })
    }
}

/// One entry: validate, generate, store. Request errors become the entry's `error`; store errors
/// abort the job (no manifest, so a retry runs it again onto the same keys).
async fn run_entry(state: &AppState, job_id: &str, entry: &JobEntry) -> Result<Value, StoreError> {
    let mut result = json!({
        "index": entry.index, "name": entry.name, "mode": entry.mode, "status": "failed",
        "images": [], "info": Value::Null, "runner_jobs": [], "error": Value::Null,
    });
    let processed = match generate(state, entry).await {
        Ok(p) => p,
        Err(error) => {
            tracing::warn!(job_id, index = entry.index, %error, "batch request failed");
            result["error"] = error;
            return Ok(result);
        }
    };
    let format = match SampleFormat::from_options(&processed.options) {
        Ok(format) => format,
        Err(e) => {
            result["error"] = file::api_error_json(&e);
            return Ok(result);
        }
    };
    let (content_type, ext) = (format.mime_type(), format.extension());
    let folder = format!("batch/{job_id}/{}", entry.folder());
    let mut keys = Vec::with_capacity(processed.images.len());
    for (i, (img, infotext)) in processed.images.iter().zip(&processed.infotexts).enumerate() {
        let bytes = match encode_image(img, infotext, &processed.options) {
            Ok(b) => b,
            Err(e) => {
                result["error"] = file::api_error_json(&e);
                return Ok(result);
            }
        };
        let seed = processed.all_seeds.get(i).copied().unwrap_or(-1);
        let key = format!("{folder}/{}", sdapi_core::store::naming::sample_file_name(i as u64, seed, ext));
        let options = PutOptions {
            content_type: content_type.into(),
            metadata: image_metadata(entry.mode, seed, infotext),
            if_absent: false,
        };
        keys.push(Value::String(state.outputs.store.put(&key, bytes, options).await?.key));
    }
    result["status"] = json!("completed");
    result["images"] = Value::Array(keys);
    result["info"] = Value::String(processed.info.clone());
    result["runner_jobs"] = json!(processed.jobs.iter().map(|j| j.job_id).collect::<Vec<_>>());
    Ok(result)
}

/// Validation and generation, with errors as the JSON the HTTP route would have answered.
async fn generate(state: &AppState, entry: &JobEntry) -> Result<Processed, Value> {
    let request = match file::validate(entry)? {
        JobRequest::Txt2Img(r) => GenerationRequest::Txt2Img(r),
        JobRequest::Img2Img(r) => {
            let init_images = sdapi_core::processing::decode_init_images(&state.ctx, &r)
                .await
                .map_err(|e| file::api_error_json(&e))?;
            GenerationRequest::Img2Img { request: r, init_images }
        }
    };
    process_images(&state.ctx, request).await.map_err(|e| file::api_error_json(&e))
}
