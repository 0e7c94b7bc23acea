//! `ProcessingRunner`: the single execution boundary between request processing and the device.
//!
//! One worker thread owns the device and the loaded models. Jobs (one batch of images each) queue
//! first-in first-out, as under A1111's `queue_lock`; submitting returns a [`JobTicket`] the caller
//! awaits. Every job goes `prepare → execute → finalize`. A panic or error inside a job fails that job
//! only; the worker serves the next one. Work whose caller went away is dropped before it starts.
//!
//! This crate holds no model code: the device side is a [`BatchExecutor`], implemented by the
//! engine crate (`sdapi_engine::executor::DiffusionExecutor`) and handed to
//! [`ProcessingRunner::start`] by the binary. The handler depends on this crate, not on the engine,
//! so it cannot reach the device except through a [`Runner`].

mod batching;
mod job;
mod progress;
mod worker;

pub use batching::BatchingLimits;
pub use job::*;
pub use progress::{ProgressSnapshot, ProgressState};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// Why a job failed. The message is what the API reports.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunnerError {
    /// Model missing, unsupported or unreadable (A1111 answers such errors with a 500 RuntimeError).
    #[error("{0}")]
    Model(String),
    /// Any failure while generating.
    #[error("{0}")]
    Execution(String),
    /// The request asks for more than a configured limit allows, found when the job is prepared
    /// (e.g. its prompts tokenize to too many chunks); answered as a 422, not a server error.
    #[error("{0}")]
    OverLimit(String),
    /// The job panicked; the runner survived.
    #[error("generation panicked: {0}")]
    Panicked(String),
    /// The runner is shut down.
    #[error("the processing runner is not running")]
    Stopped,
    /// The job was dropped before it ran because its task was interrupted.
    #[error("interrupted before start")]
    Cancelled,
}

/// The lifecycle stage a job is in; observers see them in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prepare,
    Execute,
    Finalize,
}

/// Counters readable from outside the process (`GET /internal/runner`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunnerCounters {
    pub jobs_submitted: u64,
    pub jobs_started: u64,
    pub jobs_completed: u64,
    pub jobs_failed: u64,
    pub jobs_cancelled: u64,
    pub images_generated: u64,
    pub queue_depth: u64,
    pub execute_ms_total: u64,
    pub model_loads: u64,
    /// Runs that carried the jobs of several requests, and how many jobs rode in them.
    pub shared_runs: u64,
    pub jobs_in_shared_runs: u64,
}

#[derive(Debug, Default)]
pub(crate) struct AtomicCounters {
    pub jobs_submitted: AtomicU64,
    pub jobs_started: AtomicU64,
    pub jobs_completed: AtomicU64,
    pub jobs_failed: AtomicU64,
    pub jobs_cancelled: AtomicU64,
    pub images_generated: AtomicU64,
    pub execute_ms_total: AtomicU64,
    pub model_loads: AtomicU64,
    pub shared_runs: AtomicU64,
    pub jobs_in_shared_runs: AtomicU64,
}

impl AtomicCounters {
    fn snapshot(&self) -> RunnerCounters {
        let g = |a: &AtomicU64| a.load(Ordering::SeqCst);
        let submitted = g(&self.jobs_submitted);
        let done = g(&self.jobs_completed) + g(&self.jobs_failed) + g(&self.jobs_cancelled);
        RunnerCounters {
            jobs_submitted: submitted,
            jobs_started: g(&self.jobs_started),
            jobs_completed: g(&self.jobs_completed),
            jobs_failed: g(&self.jobs_failed),
            jobs_cancelled: g(&self.jobs_cancelled),
            images_generated: g(&self.images_generated),
            queue_depth: submitted.saturating_sub(done),
            execute_ms_total: g(&self.execute_ms_total),
            model_loads: g(&self.model_loads),
            shared_runs: g(&self.shared_runs),
            jobs_in_shared_runs: g(&self.jobs_in_shared_runs),
        }
    }
}

/// A queued job; await [`JobTicket::wait`] for its result. Dropping the ticket cancels the job: a
/// queued one is never run, a running one stops at its next sampling step.
#[derive(Debug)]
pub struct JobTicket {
    pub job_id: u64,
    rx: oneshot::Receiver<Result<JobReport, RunnerError>>,
}

impl JobTicket {
    pub(crate) fn new(job_id: u64, rx: oneshot::Receiver<Result<JobReport, RunnerError>>) -> Self {
        Self { job_id, rx }
    }

    /// A ticket for a job that already finished (used by test runners).
    pub fn ready(job_id: u64, result: Result<JobReport, RunnerError>) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        Self { job_id, rx }
    }

    pub async fn wait(self) -> Result<JobReport, RunnerError> {
        self.rx.await.unwrap_or(Err(RunnerError::Stopped))
    }
}

/// The interface `process_images` and the handler use. [`ProcessingRunner`] is the real one; tests
/// inject recording runners through the same trait.
pub trait Runner: Send + Sync + 'static {
    /// Queue one batch (FIFO).
    fn submit(&self, job: BatchJob) -> JobTicket;
    /// Live generation state behind `/progress`.
    fn state(&self) -> &ProgressState;
    /// `/interrupt`: stop the running job (partial result kept) and the rest of its request.
    fn interrupt(&self) {
        self.state().interrupt();
    }
    /// `/skip`: stop the running batch only.
    fn skip(&self) {
        self.state().skip();
    }
    fn counters(&self) -> RunnerCounters;
    /// Drop the loaded model(s) from the device (`/unload-checkpoint`).
    fn unload_models(&self) {}
    /// Load `model` now, ahead of the requests queued after it (`SDAPI_PRELOAD`).
    fn preload(&self, _model: ModelSelection) {}
    /// Run a model upscaler (extras) on the runner's device, in the same queue as generations.
    fn upscale(&self, _job: UpscaleJob) -> UpscaleTicket {
        UpscaleTicket::ready(Err(RunnerError::Model("this runner has no model upscalers".into())))
    }
}

/// The pending result of an [`UpscaleJob`].
pub struct UpscaleTicket {
    rx: oneshot::Receiver<Result<sdapi_protocol::images::Raster, RunnerError>>,
}

impl UpscaleTicket {
    pub fn ready(result: Result<sdapi_protocol::images::Raster, RunnerError>) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        Self { rx }
    }

    pub async fn wait(self) -> Result<sdapi_protocol::images::Raster, RunnerError> {
        self.rx.await.unwrap_or(Err(RunnerError::Stopped))
    }
}

/// Hands each job the state it may consult: progress, interrupt and skip.
pub struct JobControl<'a> {
    pub state: &'a ProgressState,
    pub task_id: &'a str,
    /// True once whoever submitted the job stopped waiting for it (the client disconnected and
    /// its request was dropped): the device is not spent on a result nobody will read.
    pub abandoned: &'a (dyn Fn() -> bool + 'a),
}

impl JobControl<'_> {
    /// Whether sampling should stop now (A1111's CFG denoiser raises on either flag; an
    /// abandoned job stops too).
    pub fn should_stop(&self) -> bool {
        self.state.is_interrupted() || self.state.is_skipped() || (self.abandoned)()
    }
}

/// What the worker thread drives: the device-owning side. `DiffusionExecutor` is the real one.
pub trait BatchExecutor: Send + 'static {
    /// Make the job's model ready (load or switch checkpoints; cached otherwise).
    /// Returns true if a model had to be loaded.
    fn prepare(&mut self, job: &BatchJob) -> Result<bool, RunnerError>;
    /// What the model decides about sharing a run (see [`BatchJob::can_share_run_with`] for
    /// the rest): jobs with equal signatures give every row the image it would get in its own
    /// job when joined (e.g. their prompts tokenize to the same chunk counts). None (the
    /// default): the job runs alone. Asked with the job's model prepared.
    fn sharing_signature(&mut self, _job: &BatchJob) -> Option<u64> {
        None
    }
    /// Generate the batch.
    fn execute(&mut self, job: &BatchJob, control: &JobControl<'_>) -> Result<BatchOutput, RunnerError>;
    /// Release device memory.
    fn unload(&mut self) {}
    /// Run a model upscaler ([`UpscaleJob`]).
    fn upscale(&mut self, _job: &UpscaleJob) -> Result<sdapi_protocol::images::Raster, RunnerError> {
        Err(RunnerError::Model("this executor has no model upscalers".into()))
    }
}

/// Observes lifecycle stages (tests, metrics).
pub type StageObserver = Arc<dyn Fn(u64, Stage) + Send + Sync>;

/// The real runner: a FIFO queue in front of one worker thread that owns a [`BatchExecutor`].
pub struct ProcessingRunner {
    sender: std::sync::Mutex<std::sync::mpsc::Sender<worker::Command>>,
    state: Arc<ProgressState>,
    counters: Arc<AtomicCounters>,
    next_job_id: AtomicU64,
}

impl ProcessingRunner {
    pub fn start(executor: impl BatchExecutor) -> Self {
        Self::start_observed(executor, None)
    }

    pub fn start_observed(executor: impl BatchExecutor, observer: Option<StageObserver>) -> Self {
        Self::start_with(executor, BatchingLimits::default(), observer)
    }

    /// A runner that joins compatible queued jobs into shared runs within `batching`.
    pub fn start_with(executor: impl BatchExecutor, batching: BatchingLimits, observer: Option<StageObserver>) -> Self {
        let state = Arc::new(ProgressState::default());
        let counters = Arc::new(AtomicCounters::default());
        let sender = worker::spawn(Box::new(executor), state.clone(), counters.clone(), observer, batching);
        Self { sender: std::sync::Mutex::new(sender), state, counters, next_job_id: AtomicU64::new(1) }
    }

    fn send(&self, cmd: worker::Command) -> bool {
        let guard = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        guard.send(cmd).is_ok()
    }
}

impl Runner for ProcessingRunner {
    fn submit(&self, job: BatchJob) -> JobTicket {
        let job_id = self.next_job_id.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.counters.jobs_submitted.fetch_add(1, Ordering::SeqCst);
        let queued = worker::QueuedJob { job_id, job, reply: tx, queued_at: std::time::Instant::now() };
        if !self.send(worker::Command::Run(Box::new(queued))) {
            self.counters.jobs_failed.fetch_add(1, Ordering::SeqCst);
            return JobTicket::ready(job_id, Err(RunnerError::Stopped));
        }
        JobTicket::new(job_id, rx)
    }

    fn state(&self) -> &ProgressState {
        &self.state
    }

    fn interrupt(&self) {
        self.state.interrupt();
    }

    fn counters(&self) -> RunnerCounters {
        self.counters.snapshot()
    }

    fn unload_models(&self) {
        self.send(worker::Command::Unload);
    }

    fn preload(&self, model: ModelSelection) {
        self.send(worker::Command::Prepare(Box::new(BatchJob::model_only(model))));
    }

    fn upscale(&self, job: UpscaleJob) -> UpscaleTicket {
        let (tx, rx) = oneshot::channel();
        if !self.send(worker::Command::Upscale(Box::new(job), tx)) {
            return UpscaleTicket::ready(Err(RunnerError::Stopped));
        }
        UpscaleTicket { rx }
    }
}

#[cfg(test)]
mod tests;
