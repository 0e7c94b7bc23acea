//! Lambda event shapes that carry batch jobs, and their replies:
//! * an S3 event (`ObjectCreated` of a request file): any job failure fails the invocation, so
//!   Lambda's asynchronous retries (and its on-failure destination) take over;
//! * an SQS event whose bodies are request files (job id = `messageId`) or S3 notifications
//!   (S3 → SQS → Lambda): failed messages go to `batchItemFailures` (`ReportBatchItemFailures`), so
//!   SQS redelivers them and finally moves them to the dead-letter queue.

use aws_lambda_events::event::s3::{S3Event, S3EventRecord};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use serde_json::{Value, json};

use super::file::{self, FileError};
use super::{JobError, JobOutcome, run_job};
use crate::app::AppState;
use crate::jobs::handoff;
use crate::storage::s3::BoundedRead;

fn event_source(v: &Value) -> Option<&str> {
    let first = v.get("Records")?.as_array()?.first()?;
    first.get("eventSource").or_else(|| first.get("EventSource"))?.as_str()
}

/// True for S3 and SQS events (everything else is taken for an HTTP event).
pub fn is_batch_event(v: &Value) -> bool {
    matches!(event_source(v), Some("aws:s3" | "aws:sqs"))
}

/// Handles a batch event; the value is the Lambda reply.
pub async fn handle_event(state: &AppState, event: Value) -> Result<Value, JobError> {
    match event_source(&event) {
        Some("aws:sqs") => {
            let sqs: SqsEvent = serde_json::from_value(event).map_err(|e| JobError::Event(e.to_string()))?;
            let mut response = SqsBatchResponse::default();
            for message in &sqs.records {
                let id = message.message_id.clone().unwrap_or_default();
                if let Err(e) = handle_message(state, message).await {
                    tracing::error!(message_id = %id, error = %e, "batch message failed; reported for redelivery");
                    let mut failure = BatchItemFailure::default();
                    failure.item_identifier = id;
                    response.batch_item_failures.push(failure);
                }
            }
            serde_json::to_value(&response).map_err(|e| JobError::Event(e.to_string()))
        }
        Some("aws:s3") => {
            let s3: S3Event = serde_json::from_value(event).map_err(|e| JobError::Event(e.to_string()))?;
            let mut jobs = Vec::new();
            for record in &s3.records {
                jobs.push(outcome_json(&run_s3_record(state, record).await?));
            }
            Ok(json!({ "jobs": jobs }))
        }
        other => Err(JobError::Event(format!("not a batch event (eventSource {other:?})"))),
    }
}

fn outcome_json(o: &JobOutcome) -> Value {
    match o {
        JobOutcome::Completed { manifest } => json!({"status": "completed", "manifest": manifest}),
        JobOutcome::AlreadyDone { manifest } => json!({"status": "already_done", "manifest": manifest}),
    }
}

/// One SQS message: an S3 notification, S3's one-off test event, or a request file.
async fn handle_message(state: &AppState, message: &SqsMessage) -> Result<(), JobError> {
    let body = message.body.as_deref().unwrap_or("");
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    if let Some(v) = &parsed {
        if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
            return Ok(());
        }
        if let Some(handed_off) = handoff::parse_message(v) {
            return run_handed_off(state, handed_off).await;
        }
        if event_source(v) == Some("aws:s3") {
            let s3: S3Event = serde_json::from_value(v.clone()).map_err(|e| JobError::Event(e.to_string()))?;
            for record in &s3.records {
                run_s3_record(state, record).await?;
            }
            return Ok(());
        }
    }
    let job_id = message.message_id.clone().unwrap_or_default();
    let queue = message.event_source_arn.as_deref().unwrap_or("sqs");
    run_job(state, &job_id, &format!("{queue}#{job_id}"), Ok(body.as_bytes())).await.map(|_| ())
}

/// An asynchronous HTTP request handed off through the queue (docs/jobs.md, "On Lambda"). A
/// malformed message is dropped (another delivery cannot mend it); a store or queue failure is
/// reported for redelivery.
async fn run_handed_off(
    state: &AppState,
    message: Result<handoff::HandOff, handoff::HandOffError>,
) -> Result<(), JobError> {
    let outcome = match message {
        Ok(m) => {
            handoff::consume(state, m, |kind, request, task_id| async move {
                crate::routes::generation::run_handed_off(state, &kind, &request, task_id).await
            })
            .await
        }
        Err(e) => Err(e),
    };
    match outcome {
        Err(e) if e.is_transient() => Err(JobError::Event(e.to_string())),
        Err(e) => {
            tracing::error!("dropping a hand-off message: {e}");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// S3 object keys arrive URL-encoded, with `+` for space.
pub fn decode_s3_key(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() && key.is_char_boundary(i + 3) => {
                match u8::from_str_radix(&key[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The job id of a request file: its file name without `.json`.
pub fn job_id_for_key(key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    name.strip_suffix(".json").unwrap_or(name).to_string()
}

async fn run_s3_record(state: &AppState, record: &S3EventRecord) -> Result<JobOutcome, JobError> {
    let s3 = state.outputs.s3.as_ref().ok_or(JobError::NoS3)?;
    let bucket = record.s3.bucket.name.as_deref().ok_or_else(|| JobError::Event("S3 record without bucket".into()))?;
    let raw_key = record.s3.object.key.as_deref().ok_or_else(|| JobError::Event("S3 record without key".into()))?;
    let key = decode_s3_key(raw_key);
    let job_id = job_id_for_key(&key);
    let source = format!("s3://{bucket}/{key}");
    let read = s3
        .read_object_bounded(bucket, &key, file::MAX_FILE_BYTES as u64)
        .await
        .map_err(|source| JobError::Store { job_id: job_id.clone(), source })?;
    match read {
        BoundedRead::Missing => Err(JobError::SourceMissing { job_id, source_uri: source }),
        // Recorded in the manifest like any unreadable file: retrying cannot help.
        BoundedRead::TooLarge(size) => run_job(state, &job_id, &source, Err(FileError::TooLarge(size))).await,
        BoundedRead::Bytes(bytes) => run_job(state, &job_id, &source, Ok(&bytes)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_job_ids() {
        assert_eq!(decode_s3_key("requests/my+job%2B1.json"), "requests/my job+1.json");
        assert_eq!(decode_s3_key("a%zz%4"), "a%zz%4");
        assert_eq!(job_id_for_key("requests/job-001.json"), "job-001");
        assert_eq!(job_id_for_key("x"), "x");
    }

    #[test]
    fn batch_events_are_recognised() {
        assert!(is_batch_event(&json!({"Records": [{"eventSource": "aws:s3"}]})));
        assert!(is_batch_event(&json!({"Records": [{"eventSource": "aws:sqs"}]})));
        assert!(!is_batch_event(&json!({"version": "2.0", "rawPath": "/"})));
        assert!(!is_batch_event(&json!({"Records": []})));
    }
}
