//! Lifecycle tests of the runner with a scripted executor (no engine involved).

use super::*;
use std::sync::Mutex;
use std::time::Duration;

/// Records what it was asked to do; can be told to panic, fail or take time.
#[derive(Clone, Default)]
struct ScriptedExecutor {
    log: Arc<Mutex<Vec<String>>>,
    delay: Duration,
    /// Agrees to shared runs ([`BatchExecutor::sharing_signature`]: the prompt's length).
    batches: bool,
}

impl BatchExecutor for ScriptedExecutor {
    fn prepare(&mut self, job: &BatchJob) -> Result<bool, RunnerError> {
        self.log.lock().unwrap().push(format!("prepare {}", job.task_id));
        Ok(false)
    }
    fn sharing_signature(&mut self, job: &BatchJob) -> Option<u64> {
        self.batches.then(|| job.prompts.first().map_or(0, |p| p.len() as u64))
    }
    fn execute(&mut self, job: &BatchJob, control: &JobControl<'_>) -> Result<BatchOutput, RunnerError> {
        if job.prompts.first().map(String::as_str) == Some("panic") {
            panic!("boom");
        }
        if job.prompts.first().map(String::as_str) == Some("fail") {
            return Err(RunnerError::Execution("failed on purpose".into()));
        }
        let mut interrupted = false;
        for i in 0..job.steps {
            if control.should_stop() {
                interrupted = control.state.is_interrupted();
                break;
            }
            control.state.set_sampling(i, job.steps);
            std::thread::sleep(self.delay);
        }
        let line = match job.rows() {
            1 => format!("execute {}", job.task_id),
            n => format!("execute {} ({n} images)", job.task_id),
        };
        self.log.lock().unwrap().push(line);
        // Each image tells which seed it was made for.
        let images = job.seeds.iter().map(|&s| RgbImage { width: 1, height: 1, pixels: vec![s as u8; 3] }).collect();
        Ok(BatchOutput { images, interrupted, ..Default::default() })
    }
}

pub(super) fn job(task: &str, prompt: &str, steps: usize) -> BatchJob {
    BatchJob {
        task_id: task.into(),
        batch_index: 0,
        batch_count: 1,
        model: ModelSelection { checkpoint: "m".into(), vae: None },
        mode: JobMode::Txt2Img,
        prompts: vec![prompt.into()],
        negative_prompts: vec![String::new()],
        seeds: vec![1],
        subseeds: vec![1],
        subseed_strength: 0.0,
        seed_resize_from_w: -1,
        seed_resize_from_h: -1,
        sampler: sdapi_protocol::choices::SamplerKind::Euler,
        scheduler: sdapi_protocol::choices::Scheduler::Automatic,
        steps,
        cfg_scale: 7.0,
        width: 64,
        height: 64,
        settings: GenerationSettings::default(),
        networks: Default::default(),
        hires: None,
        refiner: None,
    }
}

#[tokio::test]
async fn stages_run_in_order_prepare_execute_finalize() {
    let stages = Arc::new(Mutex::new(Vec::new()));
    let s2 = stages.clone();
    let obs: StageObserver = Arc::new(move |id, st| s2.lock().unwrap().push((id, st)));
    let runner = ProcessingRunner::start_observed(ScriptedExecutor::default(), Some(obs));
    let report = runner.submit(job("a", "x", 2)).wait().await.unwrap();
    let got = stages.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![(report.job_id, Stage::Prepare), (report.job_id, Stage::Execute), (report.job_id, Stage::Finalize)]
    );
    assert_eq!(runner.counters().jobs_completed, 1);
    assert_eq!(runner.counters().images_generated, 1);
}

#[tokio::test]
async fn jobs_run_first_in_first_out() {
    let exec = ScriptedExecutor { delay: Duration::from_millis(2), ..Default::default() };
    let log = exec.log.clone();
    let runner = ProcessingRunner::start(exec);
    let tickets: Vec<_> = (0..8).map(|i| runner.submit(job(&format!("t{i}"), "x", 3))).collect();
    let ids: Vec<u64> = tickets.iter().map(|t| t.job_id).collect();
    let mut done = Vec::new();
    for t in tickets {
        done.push(t.wait().await.unwrap().job_id);
    }
    assert_eq!(ids, done);
    let order: Vec<String> = log.lock().unwrap().iter().filter(|l| l.starts_with("execute")).cloned().collect();
    let expected: Vec<String> = (0..8).map(|i| format!("execute t{i}")).collect();
    assert_eq!(order, expected);
}

#[tokio::test]
async fn a_panicking_job_fails_alone_and_the_runner_serves_the_next() {
    let runner = ProcessingRunner::start(ScriptedExecutor::default());
    let bad = runner.submit(job("p", "panic", 1)).wait().await;
    assert!(matches!(bad, Err(RunnerError::Panicked(ref m)) if m.contains("boom")), "{bad:?}");
    let failed = runner.submit(job("f", "fail", 1)).wait().await;
    assert!(matches!(failed, Err(RunnerError::Execution(_))));
    let ok = runner.submit(job("g", "fine", 1)).wait().await;
    assert!(ok.is_ok());
    let c = runner.counters();
    assert_eq!((c.jobs_failed, c.jobs_completed, c.queue_depth), (2, 1, 0));
}

#[tokio::test]
async fn interrupt_stops_the_running_job_with_a_partial_result() {
    let exec = ScriptedExecutor { delay: Duration::from_millis(20), ..Default::default() };
    let runner = Arc::new(ProcessingRunner::start(exec));
    let ticket = runner.submit(job("long", "x", 500));
    // Wait until sampling has visibly started, then interrupt.
    for _ in 0..200 {
        if runner.state().snapshot().sampling_step > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    runner.interrupt();
    let report = ticket.wait().await.unwrap();
    assert!(report.output.interrupted);
    assert_eq!(report.output.images.len(), 1, "partial result is still returned");
    // The next request is not affected by the old interrupt.
    let next = runner.submit(job("next", "x", 2)).wait().await.unwrap();
    assert!(!next.output.interrupted);
}

#[tokio::test]
async fn a_job_whose_caller_went_away_is_not_run() {
    let exec = ScriptedExecutor { delay: Duration::from_millis(10), ..Default::default() };
    let log = exec.log.clone();
    let runner = ProcessingRunner::start(exec);
    let first = runner.submit(job("busy", "x", 20));
    drop(runner.submit(job("gone", "x", 20))); // client disconnected while queued
    let third = runner.submit(job("after", "x", 1));
    first.wait().await.unwrap();
    third.wait().await.unwrap();
    let log = log.lock().unwrap().clone();
    assert!(!log.iter().any(|l| l.contains("gone")), "{log:?}");
    assert_eq!(runner.counters().jobs_cancelled, 1);
}

#[tokio::test]
async fn a_running_job_stops_when_its_caller_goes_away() {
    let exec = ScriptedExecutor { delay: Duration::from_millis(20), ..Default::default() };
    let log = exec.log.clone();
    let runner = ProcessingRunner::start(exec);
    let ticket = runner.submit(job("abandoned", "x", 100_000));
    for _ in 0..200 {
        if runner.state().snapshot().sampling_step > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(ticket); // the client disconnected mid-job
    // The worker is free again long before 100,000 steps of 20 ms.
    let next = tokio::time::timeout(Duration::from_secs(30), runner.submit(job("next", "x", 1)).wait())
        .await
        .expect("the worker stopped the abandoned job")
        .unwrap();
    assert!(!next.output.interrupted, "the next job is not affected");
    assert!(log.lock().unwrap().iter().any(|l| l == "execute abandoned"));
}

fn seeded(task: &str, seed: i64, steps: usize) -> BatchJob {
    BatchJob { seeds: vec![seed], subseeds: vec![seed], ..job(task, "x", steps) }
}

fn executes(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    log.lock().unwrap().iter().filter(|l| l.starts_with("execute")).cloned().collect()
}

fn batching_runner(exec: ScriptedExecutor, max_images: usize) -> ProcessingRunner {
    ProcessingRunner::start_with(exec, BatchingLimits { max_images, max_pixels: usize::MAX }, None)
}

/// Waits until the runner works on `task` (so the jobs submitted next queue behind it).
async fn until_running(runner: &ProcessingRunner, task: &str) {
    for _ in 0..1000 {
        if runner.state().is_running(task) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("{task} never started");
}

/// Submits `jobs` while a blocker runs (so they queue together) on a runner that shares runs up
/// to `max_images` (when the executor agrees: `batches`); their reports, the execute log and the
/// counters.
async fn behind_a_blocker(
    batches: bool,
    max_images: usize,
    jobs: Vec<BatchJob>,
) -> (Vec<JobReport>, Vec<String>, RunnerCounters) {
    let exec = ScriptedExecutor { delay: Duration::from_millis(5), batches, ..Default::default() };
    let log = exec.log.clone();
    let runner = batching_runner(exec, max_images);
    let blocker = runner.submit(seeded("blocker", 99, 20));
    until_running(&runner, "blocker").await;
    let tickets: Vec<_> = jobs.into_iter().map(|j| runner.submit(j)).collect();
    blocker.wait().await.unwrap();
    let mut reports = Vec::new();
    for t in tickets {
        reports.push(t.wait().await.unwrap());
    }
    (reports, executes(&log), runner.counters())
}

#[tokio::test]
async fn compatible_queued_jobs_share_one_run_and_get_their_own_images() {
    let jobs = (1..=4).map(|i| seeded(&format!("t{i}"), i, 3)).collect();
    let (reports, log, c) = behind_a_blocker(true, 8, jobs).await;
    for (i, report) in (1..=4).zip(reports) {
        let seeds: Vec<u8> = report.output.images.iter().map(|img| img.pixels[0]).collect();
        assert_eq!(seeds, [i as u8], "job t{i} gets its own row");
        assert!(!report.output.interrupted);
    }
    assert_eq!(log, ["execute blocker", "execute t1 (4 images)"]);
    assert_eq!((c.shared_runs, c.jobs_in_shared_runs, c.jobs_completed, c.images_generated), (1, 4, 5, 5));
}

#[tokio::test]
async fn sharing_keeps_first_in_first_out_across_incompatible_jobs() {
    // b and d have other step counts than a and c.
    let jobs = vec![seeded("a", 1, 3), seeded("b", 2, 4), seeded("c", 3, 3), seeded("d", 4, 4)];
    let (_, log, _) = behind_a_blocker(true, 8, jobs).await;
    // a is the oldest: c rides with it; b then leads and d rides with b.
    assert_eq!(log, ["execute blocker", "execute a (2 images)", "execute b (2 images)"]);
}

#[tokio::test]
async fn the_image_limit_bounds_a_shared_run() {
    let jobs = (1..=5).map(|i| seeded(&format!("t{i}"), i, 3)).collect();
    let (_, log, _) = behind_a_blocker(true, 2, jobs).await;
    assert_eq!(log, ["execute blocker", "execute t1 (2 images)", "execute t3 (2 images)", "execute t5"]);
}

#[tokio::test]
async fn jobs_run_alone_when_the_executor_refuses_to_share() {
    let jobs = (1..=3).map(|i| seeded(&format!("t{i}"), i, 3)).collect();
    let (_, log, c) = behind_a_blocker(false, 8, jobs).await;
    assert_eq!(log, ["execute blocker", "execute t1", "execute t2", "execute t3"]);
    assert_eq!(c.shared_runs, 0);
}

#[tokio::test]
async fn cancelling_one_job_of_a_shared_run_leaves_the_others_running() {
    let exec = ScriptedExecutor { delay: Duration::from_millis(5), batches: true, ..Default::default() };
    let runner = batching_runner(exec, 8);
    let blocker = runner.submit(seeded("blocker", 99, 20));
    until_running(&runner, "blocker").await;
    let a = runner.submit(seeded("a", 1, 60));
    let b = runner.submit(seeded("b", 2, 60));
    blocker.wait().await.unwrap();
    until_running(&runner, "b").await;
    assert_eq!(runner.state().running_tasks(), ["a", "b"]);
    assert!(runner.state().cancel_task("b"));
    let (a, b) = (a.wait().await.unwrap(), b.wait().await.unwrap());
    assert!(!a.output.interrupted, "a ran to the end");
    assert!(b.output.interrupted, "b is reported cancelled, with its image");
    assert_eq!(b.output.images.len(), 1);
    let c = runner.submit(seeded("c", 3, 3));
    c.wait().await.unwrap();
}

#[tokio::test]
async fn interrupt_stops_a_shared_run_for_every_job() {
    let exec = ScriptedExecutor { delay: Duration::from_millis(20), batches: true, ..Default::default() };
    let runner = batching_runner(exec, 8);
    let blocker = runner.submit(seeded("blocker", 99, 5));
    until_running(&runner, "blocker").await;
    let a = runner.submit(seeded("a", 1, 500));
    let b = runner.submit(seeded("b", 2, 500));
    blocker.wait().await.unwrap();
    until_running(&runner, "b").await;
    runner.interrupt();
    let (a, b) = (a.wait().await.unwrap(), b.wait().await.unwrap());
    assert!(a.output.interrupted && b.output.interrupted);
    assert!(runner.state().running_tasks().is_empty());
}

#[tokio::test]
async fn a_job_the_model_keeps_apart_runs_alone_without_holding_back_the_others() {
    // The scripted executor's signature is the prompt's length: "long" cannot share with a or c.
    let long = BatchJob { prompts: vec!["a much longer prompt".into()], ..seeded("long", 2, 3) };
    let (_, log, _) = behind_a_blocker(true, 8, vec![seeded("a", 1, 3), long, seeded("c", 3, 3)]).await;
    assert_eq!(log, ["execute blocker", "execute a (2 images)", "execute long"]);
}
