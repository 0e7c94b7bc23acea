//! The worker thread: owns the executor (device + models) and runs queued commands in order.

use super::{
    AtomicCounters, BatchExecutor, BatchJob, JobControl, JobReport, JobTimings, ProgressState, RunnerError, Stage,
    StageObserver, UpscaleJob,
};
use sdapi_protocol::images::Raster;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;
use tokio::sync::oneshot;

pub(super) struct QueuedJob {
    pub job_id: u64,
    pub job: BatchJob,
    pub reply: oneshot::Sender<Result<JobReport, RunnerError>>,
    pub queued_at: Instant,
}

pub(super) enum Command {
    Run(Box<QueuedJob>),
    /// Load a job's model ahead of any request (`SDAPI_PRELOAD`).
    Prepare(Box<BatchJob>),
    Unload,
    Upscale(Box<UpscaleJob>, oneshot::Sender<Result<Raster, RunnerError>>),
}

pub(super) fn spawn(
    mut executor: Box<dyn BatchExecutor>,
    state: Arc<ProgressState>,
    counters: Arc<AtomicCounters>,
    observer: Option<StageObserver>,
) -> mpsc::Sender<Command> {
    let (tx, rx) = mpsc::channel::<Command>();
    let spawned = std::thread::Builder::new().name("sdapi-runner".into()).spawn(move || {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::Run(q) => run_one(executor.as_mut(), *q, &state, &counters, observer.as_ref()),
                Command::Unload => executor.unload(),
                Command::Prepare(job) => {
                    let started = std::time::Instant::now();
                    match catch_unwind(AssertUnwindSafe(|| executor.prepare(&job))) {
                        Ok(Ok(loaded)) => {
                            if loaded {
                                counters.model_loads.fetch_add(1, Ordering::SeqCst);
                            }
                            tracing::info!(ms = started.elapsed().as_millis() as u64, "model preloaded");
                        }
                        Ok(Err(e)) => tracing::warn!("preload failed (the first request loads it): {e}"),
                        Err(p) => tracing::warn!("preload panicked: {}", panic_message(p)),
                    }
                }
                Command::Upscale(job, reply) => {
                    // A caller that went away needs no result; a panic stays this job's error.
                    if reply.is_closed() {
                        continue;
                    }
                    let result = catch_unwind(AssertUnwindSafe(|| executor.upscale(&job)))
                        .unwrap_or_else(|p| Err(RunnerError::Panicked(panic_message(p))));
                    let _ = reply.send(result);
                }
            }
        }
    });
    if let Err(e) = spawned {
        // Without a worker every submission fails with `Stopped` (the receiver is dropped).
        tracing::error!("could not start the runner thread: {e}");
    }
    tx
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

fn run_one(
    executor: &mut dyn BatchExecutor,
    q: QueuedJob,
    state: &ProgressState,
    counters: &AtomicCounters,
    observer: Option<&StageObserver>,
) {
    let QueuedJob { job_id, job, reply, queued_at } = q;
    // The caller went away (client disconnected): don't spend the device on it.
    if reply.is_closed() {
        counters.jobs_cancelled.fetch_add(1, Ordering::SeqCst);
        tracing::info!(job_id, task = %job.task_id, "dropping queued job: caller went away");
        return;
    }
    if job.batch_index > 0 && state.task_interrupted(&job.task_id) {
        counters.jobs_cancelled.fetch_add(1, Ordering::SeqCst);
        let _ = reply.send(Err(RunnerError::Cancelled));
        return;
    }
    counters.jobs_started.fetch_add(1, Ordering::SeqCst);
    let started = Instant::now();
    let queue_wait = started - queued_at;
    let notify = |stage| {
        if let Some(o) = observer {
            o(job_id, stage)
        }
    };

    let passes = if job.hires.is_some() { 2 } else { 1 };
    state.begin_batch(&job.task_id, job.batch_index, job.batch_count, passes);
    notify(Stage::Prepare);
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<_, RunnerError> {
        if executor.prepare(&job)? {
            counters.model_loads.fetch_add(1, Ordering::SeqCst);
        }
        notify(Stage::Execute);
        let abandoned = || reply.is_closed();
        let control = JobControl { state, task_id: &job.task_id, abandoned: &abandoned };
        executor.execute(&job, &control)
    }))
    .unwrap_or_else(|p| Err(RunnerError::Panicked(panic_message(p))));
    let execute = started.elapsed();
    notify(Stage::Finalize);
    // An abandoned job's request submits no further batches: its task is over too.
    let task_over = reply.is_closed()
        || match &result {
            Ok(out) => out.interrupted || job.batch_index + 1 >= job.batch_count,
            Err(_) => true,
        };
    if task_over {
        state.end();
    }
    counters.execute_ms_total.fetch_add(execute.as_millis() as u64, Ordering::SeqCst);
    let timings = JobTimings { queue_wait, execute, total: queued_at.elapsed() };
    let report = match result {
        Ok(output) => {
            counters.jobs_completed.fetch_add(1, Ordering::SeqCst);
            counters.images_generated.fetch_add(output.images.len() as u64, Ordering::SeqCst);
            if output.interrupted {
                state.interrupt_task(&job.task_id);
            }
            Ok(JobReport { job_id, output, timings })
        }
        Err(e) => {
            counters.jobs_failed.fetch_add(1, Ordering::SeqCst);
            tracing::error!(job_id, task = %job.task_id, error = %e, "job failed");
            Err(e)
        }
    };
    // The receiver may be gone (client disconnected mid-job); the work is simply discarded.
    if reply.is_closed() {
        tracing::info!(job_id, task = %job.task_id, "job stopped: caller went away");
    }
    let _ = reply.send(report);
}
