//! Lifecycle tests of the runner with a scripted executor (no engine involved).

use super::*;
use std::sync::Mutex;
use std::time::Duration;

/// Records what it was asked to do; can be told to panic, fail or take time.
#[derive(Clone, Default)]
struct ScriptedExecutor {
    log: Arc<Mutex<Vec<String>>>,
    delay: Duration,
}

impl BatchExecutor for ScriptedExecutor {
    fn prepare(&mut self, job: &BatchJob) -> Result<bool, RunnerError> {
        self.log.lock().unwrap().push(format!("prepare {}", job.task_id));
        Ok(false)
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
        self.log.lock().unwrap().push(format!("execute {}", job.task_id));
        let img = RgbImage { width: 1, height: 1, pixels: vec![0, 0, 0] };
        Ok(BatchOutput { images: vec![img; job.seeds.len()], interrupted, ..Default::default() })
    }
}

fn job(task: &str, prompt: &str, steps: usize) -> BatchJob {
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
