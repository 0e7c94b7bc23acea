//! Shared helpers for the in-process router tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response};
use http_body_util::BodyExt;
use sdapi_core::runner::{
    BatchJob, BatchOutput, JobReport, JobTicket, JobTimings, ProgressState, RgbImage, Runner, RunnerCounters,
};
use sdapi_handler::app::{AppState, router};
use sdapi_handler::config::Config;
use tower::ServiceExt;

/// A runner that records every job and answers with flat grey images (no engine involved).
#[derive(Default)]
pub struct RecordingRunner {
    pub jobs: Mutex<Vec<BatchJob>>,
    state: ProgressState,
}

impl Runner for RecordingRunner {
    fn submit(&self, job: BatchJob) -> JobTicket {
        let images = job
            .seeds
            .iter()
            .map(|_| RgbImage {
                width: job.width as u32,
                height: job.height as u32,
                pixels: vec![128; job.width * job.height * 3],
            })
            .collect();
        let mut jobs = self.jobs.lock().unwrap();
        jobs.push(job);
        let id = jobs.len() as u64;
        JobTicket::ready(
            id,
            Ok(JobReport {
                job_id: id,
                output: BatchOutput { images, ..Default::default() },
                timings: JobTimings::default(),
            }),
        )
    }
    fn state(&self) -> &ProgressState {
        &self.state
    }
    fn counters(&self) -> RunnerCounters {
        RunnerCounters { jobs_submitted: self.jobs.lock().unwrap().len() as u64, ..Default::default() }
    }
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn test_config() -> Config {
    Config {
        models_dir: repo_root().join("samples/models"),
        checkpoint: Some("tiny-sd15".into()),
        device: "cpu".into(),
        dtype: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        api_auth: vec![],
        output_dir: std::env::temp_dir().join("sdapi-test-outputs"),
        output_bucket: None,
        output_prefix: String::new(),
        max_body_bytes: 4 * 1024 * 1024,
        max_header_bytes: 64 * 1024,
        max_queue: 256,
        batch_max_images: 1,
        storage: Default::default(),
        limits: Default::default(),
        header_read_timeout: std::time::Duration::from_secs(30),
        shutdown_grace: std::time::Duration::from_secs(30),
        jobs: Default::default(),
        preload: false,
        styles_file: repo_root().join("samples/models/styles.csv"),
    }
}

pub fn app_with(config: Config) -> (Router, Arc<RecordingRunner>) {
    let runner = Arc::new(RecordingRunner::default());
    let state = AppState::with_runner(config, runner.clone()).expect("state");
    (router(state), runner)
}

pub async fn send(app: &Router, req: Request<Body>) -> (u16, Response<Body>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    (resp.status().as_u16(), resp)
}

pub async fn body_json(resp: Response<Body>) -> serde_json::Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
}

pub fn post_json(path: &str, body: &str) -> Request<Body> {
    Request::post(path).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap()
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}
