//! A1111's `shared.state`, as `GET /sdapi/v1/progress` reports it (docs/a1111-behaviour.md §2.7).

use std::sync::Mutex;
use std::time::Instant;

/// The mutable generation state. One per runner (one device, one job at a time).
#[derive(Debug, Default)]
pub struct ProgressState {
    inner: Mutex<StateInner>,
}

#[derive(Debug, Clone, Default)]
struct StateInner {
    skipped: bool,
    interrupted: bool,
    job: String,
    job_count: i64,
    job_timestamp: String,
    job_no: i64,
    sampling_step: i64,
    sampling_steps: i64,
    textinfo: Option<String>,
    time_start: Option<Instant>,
    current_image: Option<String>,
    current_image_sampling_step: i64,
    /// Task id whose batches must not run any more (`/interrupt` stops the whole request).
    interrupted_task: Option<String>,
    /// Task ids of the batch on the device, the one whose batch counts drive the progress
    /// first (several when requests share a run; empty when idle).
    current_tasks: Vec<String>,
    /// Tasks cancelled out of a shared run: the run goes on for the others, these get what it
    /// produced marked interrupted.
    detached: Vec<String>,
}

/// A consistent copy of the state, with the derived progress figures of A1111's `progressapi`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressSnapshot {
    pub progress: f64,
    pub eta_relative: f64,
    pub skipped: bool,
    pub interrupted: bool,
    pub job: String,
    pub job_count: i64,
    pub job_timestamp: String,
    pub job_no: i64,
    pub sampling_step: i64,
    pub sampling_steps: i64,
    pub textinfo: Option<String>,
    pub current_image: Option<String>,
    /// Seconds since the request's first batch started (0 when idle).
    pub elapsed: f64,
}

impl ProgressState {
    fn with<R>(&self, f: impl FnOnce(&mut StateInner) -> R) -> R {
        // A poisoned lock only means a panic elsewhere while holding it; the data is still usable.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }

    /// Start of a batch job (A1111's `state.begin` for the first batch, `nextjob` afterwards).
    /// `passes`: sampling passes per batch (2 with the hires fix, whose `job_count` A1111 doubles).
    pub fn begin_batch(&self, task_id: &str, batch_index: usize, batch_count: usize, passes: usize) {
        self.with(|s| {
            if batch_index == 0 {
                s.job_timestamp = chrono::Local::now().format("%Y%m%d%H%M%S").to_string();
                s.time_start = Some(Instant::now());
                s.interrupted = false;
                s.current_image = None;
                s.current_image_sampling_step = 0;
                if s.interrupted_task.as_deref() != Some(task_id) {
                    s.interrupted_task = None;
                }
            }
            if s.time_start.is_none() {
                s.time_start = Some(Instant::now());
            }
            s.skipped = false;
            s.textinfo = None;
            s.current_tasks = vec![task_id.to_string()];
            s.detached.clear();
            let passes = passes.max(1);
            s.job_count = (batch_count * passes) as i64;
            s.job_no = (batch_index * passes) as i64;
            s.sampling_step = 0;
            s.sampling_steps = 0;
            s.job = if batch_count > 1 {
                format!("Batch {} out of {}", batch_index + 1, batch_count)
            } else {
                String::new()
            };
        })
    }

    /// The next sampling pass of the same batch (A1111's `nextjob` before the hires pass).
    pub fn next_pass(&self) {
        self.with(|s| {
            s.job_no += 1;
            s.sampling_step = 0;
            s.sampling_steps = 0;
        })
    }

    /// The sampler's callback: step `i` (0-based) of `total`.
    pub fn set_sampling(&self, step: usize, total: usize) {
        self.with(|s| {
            s.sampling_step = step as i64;
            s.sampling_steps = total as i64;
        })
    }

    pub fn set_current_image(&self, b64_png: String, at_step: i64) {
        self.with(|s| {
            s.current_image = Some(b64_png);
            s.current_image_sampling_step = at_step;
        })
    }

    /// Whether a live preview is due (A1111: every `show_progress_every_n_steps` steps).
    pub fn preview_due(&self, every_n: i64) -> bool {
        every_n > 0 && self.with(|s| s.sampling_step - s.current_image_sampling_step >= every_n)
    }

    /// End of the request (A1111's `state.end`): idle again, `job_no` etc. keep their last values.
    pub fn end(&self) {
        self.with(|s| {
            s.job.clear();
            s.job_count = 0;
            s.time_start = None;
            s.current_tasks.clear();
            s.detached.clear();
        })
    }

    /// Tasks whose jobs ride along in the running batch ([`Self::begin_batch`] named the first).
    pub fn add_riders(&self, task_ids: impl IntoIterator<Item = String>) {
        self.with(|s| s.current_tasks.extend(task_ids))
    }

    /// Stops one task: a task running alone is interrupted as `/interrupt` would (and its
    /// queued batches dropped); one sharing a run with others is detached from it (the run goes on
    /// for them). False when the task is not running.
    pub fn cancel_task(&self, task_id: &str) -> bool {
        let running_alone = self.with(|s| {
            if !s.current_tasks.iter().any(|t| t == task_id) {
                return None;
            }
            if !s.detached.iter().any(|t| t == task_id) {
                s.detached.push(task_id.to_string());
            }
            s.interrupted_task = Some(task_id.to_string());
            Some(s.current_tasks.iter().all(|t| s.detached.contains(t)))
        });
        match running_alone {
            None => false,
            Some(true) => {
                self.interrupt_task(task_id);
                true
            }
            Some(false) => true,
        }
    }

    /// After a shared run whose lead task has more batches: only that task stays current.
    pub fn leave_batch(&self, lead_task: &str) {
        self.with(|s| {
            s.current_tasks.retain(|t| t == lead_task);
            s.detached.clear();
        })
    }

    /// Whether `task_id` was cancelled out of the running shared batch.
    pub fn is_detached(&self, task_id: &str) -> bool {
        self.with(|s| s.detached.iter().any(|t| t == task_id))
    }

    pub fn interrupt(&self) {
        self.with(|s| s.interrupted = true)
    }

    /// Mark a whole task as interrupted so its queued batches are not started.
    pub fn interrupt_task(&self, task_id: &str) {
        self.with(|s| {
            s.interrupted = true;
            s.interrupted_task = Some(task_id.to_string());
        })
    }

    pub fn skip(&self) {
        self.with(|s| s.skipped = true)
    }

    pub fn is_interrupted(&self) -> bool {
        self.with(|s| s.interrupted)
    }

    pub fn is_skipped(&self) -> bool {
        self.with(|s| s.skipped)
    }

    pub fn task_interrupted(&self, task_id: &str) -> bool {
        self.with(|s| s.interrupted_task.as_deref() == Some(task_id))
    }

    pub fn snapshot(&self) -> ProgressSnapshot {
        self.with(|s| {
            let (mut progress, mut eta_relative) = (0.0, 0.0);
            let elapsed = s.time_start.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
            if s.job_count != 0 {
                progress = 0.01;
                if s.job_count > 0 {
                    progress += s.job_no as f64 / s.job_count as f64;
                    if s.sampling_steps > 0 {
                        progress += (1.0 / s.job_count as f64) * (s.sampling_step as f64 / s.sampling_steps as f64);
                    }
                }
                eta_relative = elapsed / progress - elapsed;
                progress = progress.min(1.0);
            }
            ProgressSnapshot {
                progress,
                eta_relative,
                skipped: s.skipped,
                interrupted: s.interrupted,
                job: s.job.clone(),
                job_count: s.job_count,
                job_timestamp: s.job_timestamp.clone(),
                job_no: s.job_no,
                sampling_step: s.sampling_step,
                sampling_steps: s.sampling_steps,
                textinfo: s.textinfo.clone(),
                current_image: if s.job_count == 0 { None } else { s.current_image.clone() },
                elapsed,
            }
        })
    }

    /// The task id whose batch drives the progress now, if any.
    pub fn current_task(&self) -> Option<String> {
        self.with(|s| s.current_tasks.first().cloned())
    }

    /// Every task with rows in the batch running now (several when requests share a run).
    pub fn running_tasks(&self) -> Vec<String> {
        self.with(|s| s.current_tasks.clone())
    }

    pub fn is_running(&self, task_id: &str) -> bool {
        self.with(|s| s.current_tasks.iter().any(|t| t == task_id))
    }

    pub fn job_timestamp(&self) -> String {
        self.with(|s| s.job_timestamp.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_state_reports_zero_progress() {
        let s = ProgressState::default();
        let snap = s.snapshot();
        assert_eq!(snap.progress, 0.0);
        assert_eq!(snap.eta_relative, 0.0);
        assert_eq!(snap.job_count, 0);
    }

    #[test]
    fn progress_follows_a1111_formula() {
        let s = ProgressState::default();
        s.begin_batch("t", 1, 2, 1);
        s.set_sampling(5, 10);
        let snap = s.snapshot();
        // 0.01 + job_no/job_count + (1/job_count) * step/steps
        assert!((snap.progress - (0.01 + 0.5 + 0.5 * 0.5)).abs() < 1e-12);
        assert_eq!(snap.job, "Batch 2 out of 2");
        s.end();
        assert_eq!(s.snapshot().progress, 0.0);
        assert_eq!(s.snapshot().job_no, 1, "job_no keeps its last value after end()");
    }

    #[test]
    fn cancelling_a_rider_detaches_it_and_the_last_one_interrupts() {
        let s = ProgressState::default();
        s.begin_batch("a", 0, 1, 1);
        s.add_riders(["b".to_string()]);
        assert_eq!(s.running_tasks(), ["a", "b"]);
        assert!(!s.cancel_task("c"), "not running");
        assert!(s.cancel_task("b"));
        assert!(s.is_detached("b") && !s.is_interrupted(), "the run goes on for a");
        assert!(s.task_interrupted("b"), "b's later batches are dropped");
        assert!(s.cancel_task("a"));
        assert!(s.is_interrupted(), "nobody is left: the run stops");
        s.end();
        assert!(s.running_tasks().is_empty() && !s.is_detached("b"));
        s.begin_batch("solo", 0, 1, 1);
        assert!(s.cancel_task("solo") && s.is_interrupted(), "alone: interrupted as /interrupt");
    }

    #[test]
    fn hires_batches_count_two_jobs_each() {
        let s = ProgressState::default();
        s.begin_batch("t", 1, 2, 2);
        assert_eq!((s.snapshot().job_no, s.snapshot().job_count), (2, 4));
        s.set_sampling(3, 4);
        s.next_pass();
        let snap = s.snapshot();
        assert_eq!((snap.job_no, snap.sampling_step, snap.sampling_steps), (3, 0, 0));
        assert!((snap.progress - (0.01 + 0.75)).abs() < 1e-12, "{}", snap.progress);
    }
}
