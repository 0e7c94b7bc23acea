//! Batch jobs from S3 and SQS events through the Lambda dispatcher, against moto.

mod common;
mod support;

use std::sync::Arc;

use common::{RecordingRunner, repo_root, test_config};
use lambda_http::lambda_runtime::Context;
use sdapi_core::runner::Runner;
use sdapi_handler::app::{AppState, router};
use sdapi_handler::lambda::dispatch;
use sdapi_handler::storage::Outputs;
use serde_json::{Value, json};
use support::{Moto, get_object, list_keys};

/// The bucket named in samples/events/s3-put-batch-request.json.
const BUCKET: &str = "sdapi-outputs-123456789012";
const PREFIX: &str = "outputs/";

fn event(name: &str) -> Value {
    let text = std::fs::read_to_string(repo_root().join(format!("samples/events/{name}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

struct Fixture {
    _moto: Moto,
    s3: aws_sdk_s3::Client,
    state: AppState,
    runner: Arc<RecordingRunner>,
}

impl Fixture {
    async fn new() -> Self {
        let moto = Moto::start();
        let s3 = moto.create_bucket(BUCKET).await;
        let mut config = test_config();
        config.output_bucket = Some(BUCKET.into());
        config.output_prefix = PREFIX.into();
        let outputs = Outputs::with_s3(&config, moto.store(BUCKET, PREFIX));
        let runner = Arc::new(RecordingRunner::default());
        let state = AppState::with_runner(config, runner.clone()).unwrap().with_outputs(outputs);
        Self { _moto: moto, s3, state, runner }
    }

    async fn invoke(&self, payload: Value) -> Result<Value, String> {
        dispatch(router(self.state.clone()), &self.state, payload, Context::default()).await.map_err(|e| e.to_string())
    }

    async fn put_request(&self, key: &str, body: &[u8]) {
        self.s3.put_object().bucket(BUCKET).key(key).body(body.to_vec().into()).send().await.unwrap();
    }

    async fn manifest(&self, job_id: &str) -> Value {
        let (bytes, head) = get_object(&self.s3, BUCKET, &format!("{PREFIX}batch/{job_id}/result.json")).await;
        assert_eq!(head.content_type(), Some("application/json"));
        serde_json::from_slice(&bytes).unwrap()
    }

    fn jobs_run(&self) -> u64 {
        self.runner.counters().jobs_submitted
    }
}

fn sqs_event(message_id: &str, body: &str) -> Value {
    let mut ev = event("sqs-batch-request");
    ev["Records"][0]["messageId"] = json!(message_id);
    ev["Records"][0]["body"] = json!(body);
    ev
}

async fn check_completed(f: &Fixture, m: &Value, job_id: &str, images: usize) {
    assert_eq!((m["job_id"].as_str(), m["status"].as_str()), (Some(job_id), Some("completed")), "{m}");
    let req = &m["requests"][0];
    assert_eq!(req["status"], "completed");
    let keys = req["images"].as_array().unwrap();
    assert_eq!(keys.len(), images);
    for (i, key) in keys.iter().enumerate() {
        let key = key.as_str().unwrap();
        assert_eq!(key, format!("{PREFIX}batch/{job_id}/0/{i:05}-{}.png", 1234 + i), "deterministic key");
        let (bytes, head) = get_object(&f.s3, BUCKET, key).await;
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(head.metadata().unwrap().get("mode").map(String::as_str), Some("txt2img"));
    }
    assert_eq!(serde_json::from_str::<Value>(req["info"].as_str().unwrap()).unwrap()["seed"], 1234);
    assert!(m["error"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_event_runs_the_request_file_and_redelivery_makes_no_duplicates() {
    let f = Fixture::new().await;
    let file = std::fs::read(repo_root().join("samples/requests/batch-job-single.json")).unwrap();
    f.put_request("requests/batch-job-single.json", &file).await;
    let reply = f.invoke(event("s3-put-batch-request")).await.expect("invocation succeeds");
    assert_eq!(reply["jobs"][0]["status"], "completed", "{reply}");
    check_completed(&f, &f.manifest("batch-job-single").await, "batch-job-single", 1).await;
    assert_eq!(f.jobs_run(), 1, "through the runner");
    let keys_before = list_keys(&f.s3, BUCKET, PREFIX).await;

    let again = f.invoke(event("s3-put-batch-request")).await.expect("redelivery succeeds");
    assert_eq!(again["jobs"][0]["status"], "already_done", "{again}");
    assert_eq!(f.jobs_run(), 1, "not generated again");
    assert_eq!(list_keys(&f.s3, BUCKET, PREFIX).await, keys_before, "no new objects");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_event_with_a_request_file_runs_it() {
    let f = Fixture::new().await;
    let ev = event("sqs-batch-request");
    let id = ev["Records"][0]["messageId"].as_str().unwrap().to_string();
    let reply = f.invoke(ev.clone()).await.unwrap();
    assert_eq!(reply, json!({"batchItemFailures": []}));
    check_completed(&f, &f.manifest(&id).await, &id, 1).await;
    // Redelivered message: acknowledged, not re-run.
    assert_eq!(f.invoke(ev).await.unwrap(), json!({"batchItemFailures": []}));
    assert_eq!(f.jobs_run(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqs_event_carrying_an_s3_notification_and_a_list_file() {
    let f = Fixture::new().await;
    let file = r#"[{"name": "a", "txt2img": {"seed": 1234, "width": 64, "height": 64, "batch_size": 2}},
                   {"txt2img": {"seed": 1234, "width": 64, "height": 64, "steps": "many"}}]"#;
    f.put_request("requests/two+parts.json", file.as_bytes()).await;
    let mut notification = event("s3-put-batch-request");
    notification["Records"][0]["s3"]["object"]["key"] = json!("requests/two%2Bparts.json");
    let reply = f.invoke(sqs_event("m-1", &notification.to_string())).await.unwrap();
    // One request failed validation: the manifest says partial and the message is reported.
    assert_eq!(reply, json!({"batchItemFailures": [{"itemIdentifier": "m-1"}]}));
    let m = f.manifest("two+parts").await;
    assert_eq!(m["status"], "partial");
    assert_eq!(m["source"], format!("s3://{BUCKET}/requests/two+parts.json"));
    let keys = m["requests"][0]["images"].as_array().unwrap();
    assert_eq!(keys[1], format!("{PREFIX}batch/two+parts/0-a/00001-1235.png"));
    assert_eq!(m["requests"][1]["status"], "failed");
    assert_eq!(m["requests"][1]["error"]["detail"][0]["loc"], json!(["body", "steps"]), "A1111's 422 body");
    // S3's test event is acknowledged and ignored.
    let reply = f.invoke(sqs_event("m-2", r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#)).await;
    assert_eq!(reply.unwrap(), json!({"batchItemFailures": []}));
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_request_file_gives_an_error_manifest_and_a_failed_item() {
    let f = Fixture::new().await;
    let reply = f.invoke(sqs_event("bad-1", "{not json")).await.unwrap();
    assert_eq!(reply, json!({"batchItemFailures": [{"itemIdentifier": "bad-1"}]}));
    let m = f.manifest("bad-1").await;
    assert_eq!(m["status"], "failed");
    assert_eq!(m["requests"], json!([]));
    let keys: Vec<&str> = m["error"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["error", "detail", "body", "errors"]);
    assert!(m["error"]["detail"].as_str().unwrap().contains("not JSON"));
    assert_eq!(f.jobs_run(), 0);
    // Redelivered: still failed (so it ends in the dead-letter queue), not re-run.
    let again = f.invoke(sqs_event("bad-1", "{not json")).await.unwrap();
    assert_eq!(again, json!({"batchItemFailures": [{"itemIdentifier": "bad-1"}]}));
    // The same through a direct S3 event: the invocation fails, so Lambda retries it.
    f.put_request("requests/broken.json", b"[]").await;
    let mut ev = event("s3-put-batch-request");
    ev["Records"][0]["s3"]["object"]["key"] = json!("requests/broken.json");
    let err = f.invoke(ev).await.unwrap_err();
    assert!(err.contains("broken") && err.contains("failed"), "{err}");
    assert_eq!(f.manifest("broken").await["error"]["detail"], "the job list is empty");
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_request_file_fails_the_invocation() {
    let f = Fixture::new().await;
    let err = f.invoke(event("s3-put-batch-request")).await.unwrap_err();
    assert!(err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_events_still_reach_the_router() {
    let f = Fixture::new().await;
    let reply = f.invoke(event("function-url-samplers")).await.unwrap();
    assert_eq!(reply["statusCode"], 200, "{reply}");
    let samplers: Value = serde_json::from_str(reply["body"].as_str().unwrap()).unwrap();
    assert_eq!(samplers.as_array().unwrap().len(), 20);
}
