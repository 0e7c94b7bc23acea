//! Asynchronous generation jobs (docs/jobs.md): `Prefer: respond-async` on txt2img/img2img answers
//! `202` with `Location: /sdapi/v1/jobs/{id}`; the request then runs exactly as the synchronous
//! call would (same pipeline, same body), its record is kept in memory (bounded) and written to the
//! output store under `jobs/`, so any instance sharing the store can answer for it; an optional
//! webhook is called when it ends.

pub mod handoff;
pub mod tasks;
pub mod webhook;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use axum::http::{HeaderMap, StatusCode};
use sdapi_core::store::PutOptions;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::AppState;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

/// What happened to a job's webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebhookReport {
    pub url: String,
    pub attempts: u32,
    pub delivered: bool,
    pub error: Option<String>,
}

/// A job as `GET /sdapi/v1/jobs/{id}` answers it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// `txt2img` or `img2img`.
    pub kind: String,
    pub state: JobState,
    /// RFC 3339 times.
    pub created: String,
    pub finished: Option<String>,
    /// The HTTP status the synchronous call would have answered, once finished.
    pub status_code: Option<u16>,
    /// The synchronous call's body (A1111's response, or its error), once finished.
    pub result: Option<Value>,
    pub webhook: Option<WebhookReport>,
}

impl JobRecord {
    /// A job just accepted.
    pub fn queued(id: String, kind: &str, webhook: Option<String>) -> Self {
        Self {
            id,
            kind: kind.to_string(),
            state: JobState::Queued,
            created: now(),
            finished: None,
            status_code: None,
            result: None,
            webhook: webhook.map(|url| WebhookReport { url, attempts: 0, delivered: false, error: None }),
        }
    }

    /// The job ended with the synchronous call's status and body: `cancelled` when a cancellation
    /// was asked for meanwhile (the result is kept), else succeeded or failed by the status.
    pub fn finish(&mut self, status: StatusCode, body: Value, cancelled: bool) {
        self.state = if cancelled {
            JobState::Cancelled
        } else if status.is_success() {
            JobState::Succeeded
        } else {
            JobState::Failed
        };
        self.status_code = Some(status.as_u16());
        self.result = Some(body);
        self.finished = Some(now());
    }
}

struct Entry {
    record: JobRecord,
    /// The A1111 task id the runner reports while the job's batches run.
    task_id: String,
    cancel_requested: bool,
    handle: Option<tokio::task::AbortHandle>,
}

/// Jobs of this process, newest last; older ones are dropped beyond `keep` (their records stay
/// in the output store).
pub struct Jobs {
    entries: Mutex<(HashMap<String, Entry>, VecDeque<String>)>,
    keep: usize,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").field("keep", &self.keep).finish()
    }
}

/// Job ids name store objects: a fixed, harmless alphabet.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fresh random job id (`job-` + 24 hex digits).
pub fn new_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::from("job-");
    for salt in 0..3u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        out.push_str(&format!("{:08x}", h.finish() as u32));
    }
    out
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The store key of a job's record.
fn record_key(id: &str) -> String {
    format!("jobs/{id}.json")
}

impl Jobs {
    pub fn new(keep: usize) -> Self {
        Self { entries: Mutex::new((HashMap::new(), VecDeque::new())), keep: keep.max(1) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Entry>, &mut VecDeque<String>) -> R) -> R {
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *guard;
        f(map, order)
    }

    /// Registers a queued job; returns its record.
    fn insert(&self, id: String, kind: &str, task_id: String, webhook: Option<String>) -> JobRecord {
        let record = JobRecord::queued(id, kind, webhook);
        self.with(|map, order| {
            // Forget the oldest finished jobs beyond the bound (running ones are kept).
            while order.len() >= self.keep {
                let Some(pos) = order.iter().position(|id| map.get(id).is_none_or(|e| e.record.state.is_final()))
                else {
                    break;
                };
                if let Some(old) = order.remove(pos) {
                    map.remove(&old);
                }
            }
            order.push_back(record.id.clone());
            let entry = Entry { record: record.clone(), task_id, cancel_requested: false, handle: None };
            map.insert(record.id.clone(), entry);
        });
        record
    }

    fn set_handle(&self, id: &str, handle: tokio::task::AbortHandle) {
        self.with(|map, _| {
            if let Some(e) = map.get_mut(id) {
                e.handle = Some(handle);
            }
        })
    }

    /// The record with its live state (`running` once the runner works on its task).
    /// `running`: the tasks the runner works on now.
    pub fn get(&self, id: &str, running: &[String]) -> Option<JobRecord> {
        self.with(|map, _| {
            let e = map.get_mut(id)?;
            if e.record.state == JobState::Queued && running.contains(&e.task_id) {
                e.record.state = JobState::Running;
            }
            Some(e.record.clone())
        })
    }

    /// Recent jobs, newest first.
    pub fn list(&self, running: &[String]) -> Vec<JobRecord> {
        let ids: Vec<String> = self.with(|_, order| order.iter().rev().cloned().collect());
        ids.iter().filter_map(|id| self.get(id, running)).map(without_result).collect()
    }

    /// Jobs queued before `id` (its position in the queue, 0 when next or running).
    pub fn queue_position(&self, id: &str) -> usize {
        self.with(|map, order| {
            order
                .iter()
                .take_while(|other| other.as_str() != id)
                .filter(|other| map.get(*other).is_some_and(|e| !e.record.state.is_final()))
                .count()
        })
    }

    /// Marks the job finished with the synchronous call's status and body.
    fn finish(&self, id: &str, status: StatusCode, body: Value) -> Option<JobRecord> {
        self.with(|map, _| {
            let e = map.get_mut(id)?;
            e.record.finish(status, body, e.cancel_requested);
            Some(e.record.clone())
        })
    }

    fn set_webhook(&self, id: &str, report: WebhookReport) -> Option<JobRecord> {
        self.with(|map, _| {
            let e = map.get_mut(id)?;
            e.record.webhook = Some(report);
            Some(e.record.clone())
        })
    }
}

/// A list entry leaves the (possibly large) result out.
fn without_result(mut r: JobRecord) -> JobRecord {
    r.result = None;
    r
}

/// `Prefer: respond-async` (RFC 7240), among other preferences.
pub fn prefers_async(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|p| p.split(';').next().is_some_and(|name| name.trim().eq_ignore_ascii_case("respond-async")))
    })
}

/// The webhook a request names (`X-Webhook-Url`).
pub fn webhook_url(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-webhook-url")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
}

/// What the synchronous pipeline answers: status and JSON body.
pub type Answer = (StatusCode, Value);

/// Starts `run` as a job and returns its queued record. `task_id`: the A1111 task id the
/// request will run under (its `force_task_id`).
pub async fn submit<F>(
    s: &AppState,
    id: String,
    kind: &str,
    task_id: String,
    webhook: Option<String>,
    run: F,
) -> Result<JobRecord, webhook::DestinationError>
where
    F: std::future::Future<Output = Answer> + Send + 'static,
{
    check_webhook(s, webhook.as_deref()).await?;
    let record = s.jobs.insert(id, kind, task_id, webhook);
    persist(s, &record).await;
    let (state, id) = (s.clone(), record.id.clone());
    let handle = tokio::spawn(async move {
        let (status, body) = run.await;
        if let Some(done) = state.jobs.finish(&id, status, body) {
            persist(&state, &done).await;
            notify(&state, done).await;
        }
    });
    s.jobs.set_handle(&record.id, handle.abort_handle());
    Ok(record)
}

/// Cancels a job: a queued one never runs, a running one is interrupted (its finished images
/// are kept, as `/interrupt` keeps them; in a run shared with other requests only its own rows
/// are given up). None when the job is unknown here.
pub async fn cancel(s: &AppState, id: &str) -> Option<JobRecord> {
    let (record, abort) = s.jobs.with(|map, _| {
        let e = map.get_mut(id)?;
        if e.record.state.is_final() {
            return Some((e.record.clone(), false));
        }
        e.cancel_requested = true;
        if s.ctx.runner.state().cancel_task(&e.task_id) {
            e.record.state = JobState::Running;
            return Some((e.record.clone(), false));
        }
        if let Some(h) = e.handle.take() {
            h.abort();
        }
        // The aborted request never reaches its own end: its task is over here.
        s.tasks.finish(&e.task_id);
        e.record.state = JobState::Cancelled;
        e.record.finished = Some(now());
        Some((e.record.clone(), true))
    })?;
    if abort {
        persist(s, &record).await;
        notify(s, record.clone()).await;
    }
    Some(record)
}

/// The record of a job this process does not hold, from the output store.
pub async fn load(s: &AppState, id: &str) -> Option<JobRecord> {
    let bytes = s.outputs.store.get(&record_key(id)).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// A request's webhook destination, checked when the request arrives (a refused one is a 422).
pub async fn check_webhook(s: &AppState, url: Option<&str>) -> Result<(), webhook::DestinationError> {
    match url {
        Some(url) => webhook::check_destination(url, s.config.jobs.webhooks.allow_private).await,
        None => Ok(()),
    }
}

/// Writes the record to the output store as `jobs/{id}.json`.
async fn put_record(s: &AppState, record: &JobRecord) -> Result<(), String> {
    let body = serde_json::to_vec(record).map_err(|e| e.to_string())?;
    let options = PutOptions { content_type: "application/json".into(), ..Default::default() };
    s.outputs.store.put(&record_key(&record.id), body, options).await.map(|_| ()).map_err(|e| e.to_string())
}

/// [`put_record`] where a failure is only logged: the in-memory record still answers.
async fn persist(s: &AppState, record: &JobRecord) {
    if let Err(e) = put_record(s, record).await {
        tracing::warn!(job = %record.id, "job record not stored: {e}");
    }
}

/// Calls the job's webhook (off the request path) and records the delivery.
async fn notify(s: &AppState, record: JobRecord) {
    if record.webhook.is_none() {
        return;
    }
    let state = s.clone();
    tokio::spawn(async move {
        if let Some(updated) = deliver_webhook(&state, record).await {
            persist(&state, &updated).await;
        }
    });
}

/// Delivers the job's webhook (retries included) with the record, without the images when the
/// record is over the size bound; the record with the delivery report, None without a webhook.
async fn deliver_webhook(s: &AppState, record: JobRecord) -> Option<JobRecord> {
    let hook = record.webhook.clone()?;
    let state = serde_json::to_value(record.state).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    let event = serde_json::json!({"type": format!("job.{state}"), "timestamp": now(), "data": record});
    let mut body = serde_json::to_vec(&event).unwrap_or_default();
    if body.len() > s.config.jobs.max_webhook_bytes {
        let slim = serde_json::json!({"type": event["type"], "timestamp": event["timestamp"], "data": without_result(record.clone())});
        body = serde_json::to_vec(&slim).unwrap_or_default();
    }
    // One stable message id per job end: a receiver can drop repeats.
    let message_id = format!("msg_{}", record.id);
    let (attempts, error) = webhook::deliver(&s.config.jobs.webhooks, &hook.url, &message_id, body).await;
    let report = WebhookReport { url: hook.url, attempts, delivered: error.is_none(), error };
    // The registry's copy when this process holds the job (a handed-off one it does not).
    Some(s.jobs.set_webhook(&record.id, report.clone()).unwrap_or(JobRecord { webhook: Some(report), ..record }))
}

/// On shutdown: unfinished jobs get until `deadline` to end; then the running one is interrupted
/// (its finished images kept, as `/interrupt` keeps them) and given a moment to record itself, and
/// every job still unfinished is recorded `failed` with a 503 result that says to submit it again.
pub async fn drain(s: &AppState, deadline: tokio::time::Instant) {
    let unfinished = || -> Vec<(String, String)> {
        s.jobs.with(|map, _| {
            map.values()
                .filter(|e| !e.record.state.is_final())
                .map(|e| (e.record.id.clone(), e.task_id.clone()))
                .collect()
        })
    };
    while !unfinished().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let running = s.ctx.runner.state().running_tasks();
    let interrupted: Vec<String> =
        unfinished().into_iter().map(|(_, task)| task).filter(|task| running.contains(task)).collect();
    if !interrupted.is_empty() {
        // Interrupted by the shutdown: they end `cancelled`, with what they finished.
        s.jobs.with(|map, _| {
            map.values_mut().filter(|e| interrupted.contains(&e.task_id)).for_each(|e| e.cancel_requested = true)
        });
        s.ctx.runner.interrupt();
        let settle = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        while unfinished().iter().any(|(_, task)| interrupted.contains(task)) && tokio::time::Instant::now() < settle {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    for (id, _) in unfinished() {
        let body = serde_json::json!({"error": "ServiceUnavailable",
            "detail": "the server stopped before this job finished; submit it again", "body": "", "errors": ""});
        let abandoned = s.jobs.with(|map, _| {
            let e = map.get_mut(&id)?;
            if let Some(h) = e.handle.take() {
                h.abort();
            }
            Some(())
        });
        if abandoned.is_some()
            && let Some(record) = s.jobs.finish(&id, StatusCode::SERVICE_UNAVAILABLE, body)
        {
            persist(s, &record).await;
        }
    }
}

/// `SDAPI_JOBS_KEEP`, `SDAPI_WEBHOOK_*`.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// `Prefer: respond-async` runs the job in this process (server mode). On Lambda the
    /// environment freezes once the invocation has answered, so a job would not run there: it is
    /// handed to `queue_url` instead ([`handoff`]), or without one the preference is ignored
    /// (RFC 7240 lets a server ignore it) and the request answers synchronously.
    pub async_enabled: bool,
    /// `SDAPI_JOBS_QUEUE_URL`: the SQS queue asynchronous requests are handed to on Lambda.
    pub queue_url: Option<String>,
    /// Job records held in memory (older finished ones are answered from the store).
    pub keep: usize,
    pub webhooks: webhook::WebhookSettings,
    /// Largest webhook body; bigger records are sent without their result.
    pub max_webhook_bytes: usize,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            async_enabled: true,
            queue_url: None,
            keep: 1000,
            webhooks: webhook::WebhookSettings::default(),
            max_webhook_bytes: 256 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_header_is_parsed_as_rfc_7240_says() {
        let mut h = HeaderMap::new();
        assert!(!prefers_async(&h));
        h.insert("prefer", "return=minimal, Respond-Async; wait=10".parse().unwrap());
        assert!(prefers_async(&h));
        h.insert("prefer", "respond-asyncx".parse().unwrap());
        assert!(!prefers_async(&h));
    }

    #[test]
    fn ids_are_store_safe() {
        let id = new_id();
        assert!(valid_id(&id) && id.len() == 28, "{id}");
        assert_ne!(new_id(), new_id());
        for bad in ["", "../x", "a/b", "a.json", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn the_registry_is_bounded_and_keeps_unfinished_jobs() {
        let jobs = Jobs::new(2);
        let a = jobs.insert(new_id(), "txt2img", "t-a".into(), None);
        let b = jobs.insert(new_id(), "txt2img", "t-b".into(), None);
        // Both unfinished: a third is still accepted, nothing is dropped.
        let c = jobs.insert(new_id(), "txt2img", "t-c".into(), None);
        assert!(jobs.get(&a.id, &[]).is_some());
        jobs.finish(&a.id, StatusCode::OK, Value::Null);
        jobs.finish(&b.id, StatusCode::OK, Value::Null);
        let d = jobs.insert(new_id(), "txt2img", "t-d".into(), None);
        assert!(jobs.get(&a.id, &[]).is_none() && jobs.get(&b.id, &[]).is_none());
        assert_eq!(jobs.get(&c.id, &["t-c".to_string()]).unwrap().state, JobState::Running);
        assert_eq!(jobs.queue_position(&d.id), 1);
        assert_eq!(jobs.list(&[]).iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![d.id, c.id]);
    }
}
