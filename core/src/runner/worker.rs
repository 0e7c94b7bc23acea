//! The worker thread: owns the executor (device + models) and runs queued commands in order.

use super::{
    AtomicCounters, BatchExecutor, BatchJob, BatchOutput, BatchingLimits, JobControl, JobReport, JobTimings,
    ProgressState, RunnerError, Stage, StageObserver, UpscaleJob,
};
use sdapi_protocol::images::Raster;
use std::collections::VecDeque;
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
    executor: Box<dyn BatchExecutor>,
    state: Arc<ProgressState>,
    counters: Arc<AtomicCounters>,
    observer: Option<StageObserver>,
    batching: BatchingLimits,
) -> mpsc::Sender<Command> {
    let (tx, rx) = mpsc::channel::<Command>();
    let spawned = std::thread::Builder::new().name("sdapi-runner".into()).spawn(move || {
        let mut worker = Worker { executor, state, counters, observer, batching, rx, backlog: VecDeque::new() };
        while let Some(cmd) = worker.next_command() {
            worker.handle(cmd);
        }
    });
    if let Err(e) = spawned {
        // Without a worker every submission fails with `Stopped` (the receiver is dropped).
        tracing::error!("could not start the runner thread: {e}");
    }
    tx
}

/// The state of the worker thread.
struct Worker {
    executor: Box<dyn BatchExecutor>,
    state: Arc<ProgressState>,
    counters: Arc<AtomicCounters>,
    observer: Option<StageObserver>,
    batching: BatchingLimits,
    rx: mpsc::Receiver<Command>,
    /// Commands taken off the channel to look for jobs that may share a run, in arrival order.
    backlog: VecDeque<Command>,
}

impl Worker {
    fn next_command(&mut self) -> Option<Command> {
        self.backlog.pop_front().or_else(|| self.rx.recv().ok())
    }

    fn handle(&mut self, cmd: Command) {
        let counters = &self.counters;
        match cmd {
            Command::Run(q) => {
                let riders = self.riders_for(&q.job);
                if riders.is_empty() {
                    run_one(self.executor.as_mut(), *q, &self.state, &self.counters, self.observer.as_ref());
                } else {
                    self.run_shared(q, &riders);
                }
            }
            Command::Unload => self.executor.unload(),
            Command::Prepare(job) => {
                let started = std::time::Instant::now();
                match catch_unwind(AssertUnwindSafe(|| self.executor.prepare(&job))) {
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
                    return;
                }
                let result = catch_unwind(AssertUnwindSafe(|| self.executor.upscale(&job)))
                    .unwrap_or_else(|p| Err(RunnerError::Panicked(panic_message(p))));
                let _ = reply.send(result);
            }
        }
    }

    /// Positions in the backlog of the queued jobs that may share `lead`'s run, oldest first,
    /// within the limits. The search stops at the first command that is not a generation (an
    /// unload or preload sees the queue as it was). Jobs passed over keep their places: the lead
    /// is always the oldest job, so sharing never delays anyone by more than one run.
    fn riders_for(&mut self, lead: &BatchJob) -> Vec<usize> {
        if !self.batching.enabled() || !lead.can_share_run_with(lead) {
            return Vec::new();
        }
        while let Ok(cmd) = self.rx.try_recv() {
            self.backlog.push_back(cmd);
        }
        let state = &self.state;
        let candidates: Vec<usize> = self
            .backlog
            .iter()
            .map_while(|cmd| match cmd {
                Command::Run(q) => Some(q),
                _ => None,
            })
            .enumerate()
            .filter(|(_, q)| {
                let dropped = q.reply.is_closed() || (q.job.batch_index > 0 && state.task_interrupted(&q.job.task_id));
                !dropped && lead.can_share_run_with(&q.job)
            })
            .map(|(i, _)| i)
            .collect();
        if candidates.is_empty() {
            return candidates;
        }
        // What the model decides (e.g. prompt chunk counts): asked with the lead's model ready.
        let (executor, counters) = (&mut self.executor, &self.counters);
        let signature = |executor: &mut Box<dyn BatchExecutor>, job: &BatchJob| {
            catch_unwind(AssertUnwindSafe(|| executor.sharing_signature(job))).ok().flatten()
        };
        let prepared = catch_unwind(AssertUnwindSafe(|| executor.prepare(lead)));
        match prepared {
            Ok(Ok(true)) => {
                counters.model_loads.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Ok(false)) => {}
            // The lead's own run reports the failure.
            _ => return Vec::new(),
        }
        let Some(lead_signature) = signature(executor, lead) else { return Vec::new() };
        let mut rows = lead.rows();
        let mut riders = Vec::new();
        for i in candidates {
            let Some(Command::Run(q)) = self.backlog.get(i) else { continue };
            if self.batching.admits(lead, rows + q.job.rows()) && signature(executor, &q.job) == Some(lead_signature) {
                rows += q.job.rows();
                riders.push(i);
            }
        }
        riders
    }

    /// Runs `lead` with the backlog's jobs at `riders` (taken out of it) as one batch.
    fn run_shared(&mut self, lead: Box<QueuedJob>, riders: &[usize]) {
        // Taken out from the back so the positions stay valid.
        let mut group: Vec<QueuedJob> = Vec::with_capacity(riders.len() + 1);
        for &i in riders.iter().rev() {
            if let Some(Command::Run(q)) = self.backlog.remove(i) {
                group.push(*q);
            }
        }
        group.push(*lead);
        group.reverse();
        let jobs: Vec<&BatchJob> = group.iter().map(|q| &q.job).collect();
        let Some(joined) = BatchJob::joined(&jobs) else { return };
        run_joined(self.executor.as_mut(), group, joined, &self.state, &self.counters, self.observer.as_ref());
    }
}

/// One run for `group` (the lead job first; `joined` holds their rows in that order); each
/// job gets its own rows back. A job cancelled meanwhile gets its rows marked interrupted; the run
/// stops early only on `/interrupt` or `/skip`, or when every caller went away.
fn run_joined(
    executor: &mut dyn BatchExecutor,
    group: Vec<QueuedJob>,
    joined: BatchJob,
    state: &ProgressState,
    counters: &AtomicCounters,
    observer: Option<&StageObserver>,
) {
    let n = group.len() as u64;
    counters.jobs_started.fetch_add(n, Ordering::SeqCst);
    counters.shared_runs.fetch_add(1, Ordering::SeqCst);
    counters.jobs_in_shared_runs.fetch_add(n, Ordering::SeqCst);
    let notify = |stage| {
        if let Some(o) = observer {
            group.iter().for_each(|q| o(q.job_id, stage));
        }
    };
    let started = Instant::now();
    tracing::info!(jobs = n, images = joined.rows(), task = %joined.task_id, "shared run");
    state.begin_batch(&joined.task_id, joined.batch_index, joined.batch_count, 1);
    state.add_riders(group.iter().skip(1).map(|q| q.job.task_id.clone()));
    notify(Stage::Prepare);
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<_, RunnerError> {
        executor.prepare(&joined)?;
        notify(Stage::Execute);
        let abandoned = || group.iter().all(|q| q.reply.is_closed() || state.is_detached(&q.job.task_id));
        let control = JobControl { state, task_id: &joined.task_id, abandoned: &abandoned };
        executor.execute(&joined, &control)
    }))
    .unwrap_or_else(|p| Err(RunnerError::Panicked(panic_message(p))));
    let execute = started.elapsed();
    notify(Stage::Finalize);
    counters.execute_ms_total.fetch_add(execute.as_millis() as u64, Ordering::SeqCst);
    let rows: Vec<usize> = group.iter().map(|q| q.job.rows()).collect();
    let parts: Vec<Result<BatchOutput, RunnerError>> = match result {
        Ok(output) => output.split(&rows).into_iter().map(Ok).collect(),
        Err(e) => rows.iter().map(|_| Err(e.clone())).collect(),
    };
    let parts: Vec<_> = parts
        .into_iter()
        .zip(&group)
        .map(|(part, q)| {
            part.map(|mut out| {
                out.interrupted |= state.is_detached(&q.job.task_id);
                out
            })
        })
        .collect();
    let lead = &group[0];
    // A lead cancelled out of the run is marked already; one stopped by `/interrupt` is not.
    let lead_interrupted =
        matches!(parts.first(), Some(Ok(out)) if out.interrupted) && !state.is_detached(&lead.job.task_id);
    let lead_over = matches!(parts.first(), Some(Ok(out)) if out.interrupted)
        || lead.job.batch_index + 1 >= lead.job.batch_count
        || lead.reply.is_closed()
        || !matches!(parts.first(), Some(Ok(_)));
    // The lead's request may have more batches; the riders' rows are done.
    if lead_over {
        state.end();
    } else {
        state.leave_batch(&joined.task_id);
    }
    if lead_interrupted {
        state.interrupt_task(&joined.task_id);
    }
    for (q, part) in group.into_iter().zip(parts) {
        let timings = JobTimings { queue_wait: started - q.queued_at, execute, total: q.queued_at.elapsed() };
        let _ = q.reply.send(settle(q.job_id, &q.job.task_id, part, timings, counters));
    }
}

/// Counts a finished job and wraps its output as the caller's report.
fn settle(
    job_id: u64,
    task_id: &str,
    result: Result<BatchOutput, RunnerError>,
    timings: JobTimings,
    counters: &AtomicCounters,
) -> Result<JobReport, RunnerError> {
    match result {
        Ok(output) => {
            counters.jobs_completed.fetch_add(1, Ordering::SeqCst);
            counters.images_generated.fetch_add(output.images.len() as u64, Ordering::SeqCst);
            Ok(JobReport { job_id, output, timings })
        }
        Err(e) => {
            counters.jobs_failed.fetch_add(1, Ordering::SeqCst);
            tracing::error!(job_id, task = %task_id, error = %e, "job failed");
            Err(e)
        }
    }
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
    if matches!(&result, Ok(out) if out.interrupted) {
        state.interrupt_task(&job.task_id);
    }
    let report = settle(job_id, &job.task_id, result, timings, counters);
    // The receiver may be gone (client disconnected mid-job); the work is simply discarded.
    if reply.is_closed() {
        tracing::info!(job_id, task = %job.task_id, "job stopped: caller went away");
    }
    let _ = reply.send(report);
}
