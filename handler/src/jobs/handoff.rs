//! Asynchronous requests on Lambda: an invocation cannot keep working after it answers, so a
//! `Prefer: respond-async` request is handed to the deployment's SQS queue instead of being run
//! in-process (docs/jobs.md, "On Lambda").
//!
//! The HTTP invocation validates the request, stores its body as `jobs/{id}.request.json` and the
//! queued record as `jobs/{id}.json` in the output store, sends a small message naming them (SQS
//! bodies are limited to 256 KiB; init images are not), and answers 202. The queue's consumer (the
//! same function, through its SQS event source) runs the request through the synchronous pipeline,
//! writes the finished record and calls the webhook before acknowledging the message. Delivery is
//! at least once: a redelivered message whose record is final is acknowledged without running; one
//! whose run died half-way (record still `running`) runs again.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{JobRecord, JobState, load, now, persist, put_record};
use crate::app::AppState;
use sdapi_core::store::PutOptions;

/// The key of a hand-off message's body (`{"sdapi_job": {…}}`): what tells it from a batch
/// request file on the same queue.
pub const MESSAGE_KEY: &str = "sdapi_job";

/// What the queue carries for one asynchronous request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HandOff {
    pub id: String,
    /// `txt2img` or `img2img`.
    pub kind: String,
    /// The A1111 task id the request runs under.
    pub task_id: String,
    /// The store key of the request body.
    pub request_key: String,
}

/// Why a request could not be handed off, or a handed-off one could not be run.
#[derive(Debug, thiserror::Error)]
pub enum HandOffError {
    #[error("storing the job: {0}")]
    Store(String),
    #[error("queueing the job: {0}")]
    Queue(String),
    #[error("hand-off message: {0}")]
    Message(String),
}

impl HandOffError {
    /// Worth another delivery (the store or the queue failed), unlike a malformed message.
    pub fn is_transient(&self) -> bool {
        !matches!(self, HandOffError::Message(_))
    }
}

type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where hand-off messages go: the SQS queue in a deployment, a recorder in tests.
pub trait JobQueue: Send + Sync {
    fn send<'a>(&'a self, body: String) -> SendFuture<'a>;
    fn describe(&self) -> String;
}

/// The deployment's SQS queue (`SDAPI_JOBS_QUEUE_URL`).
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsQueue {
    /// A client from the AWS environment (region, credentials, `AWS_ENDPOINT_URL`).
    pub async fn from_env(url: String) -> Self {
        let shared = aws_config::load_from_env().await;
        Self { client: aws_sdk_sqs::Client::new(&shared), url }
    }
}

impl JobQueue for SqsQueue {
    fn send<'a>(&'a self, body: String) -> SendFuture<'a> {
        Box::pin(async move {
            self.client
                .send_message()
                .queue_url(&self.url)
                .message_body(body)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
        })
    }

    fn describe(&self) -> String {
        format!("sqs {}", self.url)
    }
}

fn request_key(id: &str) -> String {
    format!("jobs/{id}.request.json")
}

/// Stores the request and its queued record, then queues the message. The record is written
/// first so the 202's location answers at once.
pub async fn hand_off(
    s: &AppState,
    queue: &dyn JobQueue,
    record: JobRecord,
    task_id: String,
    body: Vec<u8>,
) -> Result<JobRecord, HandOffError> {
    let json = PutOptions { content_type: "application/json".into(), ..Default::default() };
    let key = request_key(&record.id);
    s.outputs.store.put(&key, body, json).await.map_err(|e| HandOffError::Store(e.to_string()))?;
    store_record(s, &record).await?;
    let message = HandOff { id: record.id.clone(), kind: record.kind.clone(), task_id, request_key: key };
    let body = serde_json::json!({ MESSAGE_KEY: message }).to_string();
    queue.send(body).await.map_err(HandOffError::Queue)?;
    tracing::info!(job = %record.id, queue = %queue.describe(), "asynchronous request handed off");
    Ok(record)
}

/// The record in the store, failures surfaced (unlike [`persist`], which only logs them: here
/// a lost record would lose the job).
async fn store_record(s: &AppState, record: &JobRecord) -> Result<(), HandOffError> {
    put_record(s, record).await.map_err(HandOffError::Store)
}

/// The hand-off in a queue message body, if it is one.
pub fn parse_message(body: &Value) -> Option<Result<HandOff, HandOffError>> {
    let inner = body.get(MESSAGE_KEY)?;
    Some(serde_json::from_value(inner.clone()).map_err(|e| HandOffError::Message(e.to_string())))
}

/// The consumer's side: runs a handed-off request unless its record is final already, records
/// the outcome and delivers the webhook (awaited: the invocation may freeze once it returns).
/// `run` is the synchronous pipeline for (kind, request JSON, task id).
pub async fn consume<F, Fut>(s: &AppState, message: HandOff, run: F) -> Result<(), HandOffError>
where
    F: FnOnce(String, Value, String) -> Fut,
    Fut: Future<Output = super::Answer>,
{
    if !super::valid_id(&message.id) || message.request_key != request_key(&message.id) {
        return Err(HandOffError::Message(format!("job id {:?} or request key {:?}", message.id, message.request_key)));
    }
    let Some(mut record) = load(s, &message.id).await else {
        return Err(HandOffError::Store(format!("record of job {} not found", message.id)));
    };
    if record.state.is_final() {
        tracing::info!(job = %record.id, state = ?record.state, "hand-off redelivered after the job ended: not run again");
        return Ok(());
    }
    let bytes = s
        .outputs
        .store
        .get(&message.request_key)
        .await
        .map_err(|e| HandOffError::Store(e.to_string()))?
        .ok_or_else(|| HandOffError::Store(format!("request of job {} not found", message.id)))?;
    record.state = JobState::Running;
    store_record(s, &record).await?;
    let (status, body) = match serde_json::from_slice::<Value>(&bytes) {
        Ok(request) => run(message.kind.clone(), request, message.task_id.clone()).await,
        Err(e) => (
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"error": "ValueError", "detail": format!("stored request: {e}"), "body": "", "errors": ""}),
        ),
    };
    // Cancelled while it ran (another invocation's DELETE): the result is kept, the state stays.
    let cancelled = matches!(load(s, &record.id).await, Some(r) if r.state == JobState::Cancelled);
    record.finish(status, body, cancelled);
    store_record(s, &record).await?;
    if let Some(done) = super::deliver_webhook(s, record).await {
        persist(s, &done).await;
    }
    Ok(())
}

/// DELETE of a job another invocation queued: a queued one is marked cancelled in the store
/// (the consumer then skips it); a running or finished one is returned as it is.
pub async fn cancel_stored(s: &AppState, mut record: JobRecord) -> JobRecord {
    if record.state == JobState::Queued {
        record.state = JobState::Cancelled;
        record.finished = Some(now());
        if let Err(e) = store_record(s, &record).await {
            tracing::warn!(job = %record.id, "cancellation not stored: {e}");
        }
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_told_apart_from_batch_files() {
        let m = HandOff {
            id: "job-1".into(),
            kind: "txt2img".into(),
            task_id: "t".into(),
            request_key: request_key("job-1"),
        };
        let body = serde_json::json!({ MESSAGE_KEY: m });
        assert_eq!(parse_message(&body).unwrap().unwrap(), m);
        assert!(parse_message(&serde_json::json!({"requests": []})).is_none(), "a batch request file");
        let bad = parse_message(&serde_json::json!({ MESSAGE_KEY: {"id": 3} })).unwrap().unwrap_err();
        assert!(!bad.is_transient(), "a malformed message is not retried");
    }
}
