//! `bench batching`: throughput of `--requests` (8) concurrent compatible txt2img requests with
//! the runner's batching on (`SDAPI_BATCH_MAX_IMAGES` = requests) against the same requests one
//! by one, alternating `--rounds` (2) times. The concurrent requests arrive at an idle runner, as
//! they would at a server: the first starts alone and the others share the next run.

use std::sync::Arc;
use std::time::Instant;

use sdapi_core::models_dir::ModelIndex;
use sdapi_core::processing::{GenerationRequest, ProcessingContext, process_images};
use sdapi_core::runner::{BatchingLimits, ProcessingRunner, Runner};
use sdapi_engine::bench::{Arch, BenchError, Samples, ensure_checkpoint};
use sdapi_engine::executor::DiffusionExecutor;
use sdapi_protocol::api::request::Txt2ImgRequest;
use serde_json::json;

use super::{Args, report, round};

/// One request of the set: its own prompt and seed, everything else shared.
fn request(model: &str, size: usize, steps: usize, i: usize) -> Result<Txt2ImgRequest, BenchError> {
    let subjects =
        ["a red cube", "a blue ball", "a green tree", "a yellow house", "a cat", "a dog", "a ship", "an apple"];
    let body = json!({
        "prompt": format!("{} on a wooden table, studio lighting", subjects[i % subjects.len()]),
        "negative_prompt": "blurry", "seed": 1000 + i, "steps": steps, "width": size, "height": size,
        "sampler_name": "Euler a", "cfg_scale": 7, "override_settings": {"sd_model_checkpoint": model},
    });
    Txt2ImgRequest::from_json(&body).map_err(|e| BenchError::Request(format!("{e:?}")))
}

async fn generate(ctx: &ProcessingContext, request: Txt2ImgRequest) -> Result<(), BenchError> {
    process_images(ctx, GenerationRequest::Txt2Img(request))
        .await
        .map(|_| ())
        .map_err(|e| BenchError::Request(format!("{e:?}")))
}

pub async fn run(args: &Args, arch: Arch) -> Result<(), BenchError> {
    let (size, steps) = (args.get("size", 256usize), args.get("steps", 4usize));
    let (requests, rounds) = (args.get("requests", 8usize), args.get("rounds", 2usize));
    let dir = args.models_dir();
    ensure_checkpoint(arch, &dir)?;
    let model = format!("bench-{}", arch.name());
    let limits = BatchingLimits { max_images: requests, max_pixels: usize::MAX };
    let executor = DiffusionExecutor::new("cpu").map_err(|e| BenchError::Request(e.to_string()))?;
    let runner = Arc::new(ProcessingRunner::start_with(executor, limits, None));
    let models = ModelIndex::scan(&dir).map_err(|e| BenchError::Request(e.to_string()))?;
    let ctx = ProcessingContext::new(runner.clone(), models, "bench");
    // Loads the checkpoint, kept out of the figures.
    generate(&ctx, request(&model, size, 1, 0)?).await?;

    let (mut alone, mut shared) = (Samples::default(), Samples::default());
    for _ in 0..rounds {
        let start = Instant::now();
        for i in 0..requests {
            generate(&ctx, request(&model, size, steps, i)?).await?;
        }
        alone.push(start.elapsed().as_secs_f64() * 1e3);

        let before = runner.counters();
        let start = Instant::now();
        let handles: Vec<_> = (0..requests)
            .map(|i| {
                let ctx = ctx.clone();
                let r = request(&model, size, steps, i);
                tokio::spawn(async move { generate(&ctx, r?).await })
            })
            .collect();
        for h in handles {
            h.await.map_err(|e| BenchError::Request(e.to_string()))??;
        }
        shared.push(start.elapsed().as_secs_f64() * 1e3);
        let after = runner.counters();
        let (runs, jobs) =
            (after.shared_runs - before.shared_runs, after.jobs_in_shared_runs - before.jobs_in_shared_runs);
        println!("{}", json!({"bench": "batching_round", "shared_runs": runs, "jobs_in_shared_runs": jobs}));
    }
    let extra = json!({"arch": arch.name(), "size": size, "steps": steps, "requests": requests, "sampler": "Euler a"});
    report("batching_one_by_one", extra.clone(), &alone);
    report("batching_concurrent_shared", extra, &shared);
    let throughput = |s: &Samples| requests as f64 / (s.median() / 1e3);
    println!(
        "{}",
        json!({"bench": "batching_throughput", "one_by_one_req_per_s": round(throughput(&alone)),
            "shared_req_per_s": round(throughput(&shared)), "speedup": round(alone.median() / shared.median())})
    );
    Ok(())
}
