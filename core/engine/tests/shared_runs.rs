//! Several requests in one UNet batch (the runner's batching): each request's images are the
//! ones it gets alone — same seeds, same noise, same conditioning — within one level where the
//! larger batch changes the summation order of matrix products, and its infotexts are equal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sdapi_core::models_dir::ModelIndex;
use sdapi_core::processing::{GenerationRequest, Processed, ProcessingContext, process_images};
use sdapi_core::runner::{BatchingLimits, ProcessingRunner, Runner};
use sdapi_engine::executor::DiffusionExecutor;
use sdapi_protocol::api::request::Txt2ImgRequest;
use serde_json::{Value, json};

fn models_root() -> PathBuf {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/a1111-parity/models/tiny-sd15.safetensors");
    let root = std::env::temp_dir().join(format!("sdapi-shared-runs-{}", std::process::id()));
    let sd = root.join("Stable-diffusion");
    std::fs::create_dir_all(&sd).unwrap();
    std::fs::copy(&src, sd.join("tiny.safetensors")).unwrap();
    std::fs::copy(src.with_extension("yaml"), sd.join("tiny.yaml")).unwrap();
    root
}

/// 120 words: two 75-token chunks, which A1111 would pad a one-chunk neighbour to.
fn long_prompt() -> String {
    vec!["red"; 120].join(" ")
}

fn requests() -> Vec<Value> {
    let base = json!({"steps": 4, "width": 64, "height": 64, "cfg_scale": 7});
    let with = |extra: Value| {
        let mut r = base.clone();
        r.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        r
    };
    vec![
        with(json!({"prompt": "a red cube", "seed": 1, "sampler_name": "Euler a"})),
        with(json!({"prompt": "a blue ball on green grass", "negative_prompt": "blurry", "seed": 2,
            "sampler_name": "Euler a", "batch_size": 2})),
        with(json!({"prompt": long_prompt(), "seed": 3, "sampler_name": "Euler a"})),
        with(json!({"prompt": "a red cube", "seed": 4, "subseed": 9, "sampler_name": "Euler a"})),
        with(json!({"prompt": "[a cat:a dog:2]", "seed": 5, "sampler_name": "DPM++ 2M SDE"})),
        with(json!({"prompt": "a house AND a tree", "seed": 6, "sampler_name": "DPM++ 2M SDE"})),
    ]
}

async fn generate(ctx: &ProcessingContext, request: &Value) -> Processed {
    let request = Txt2ImgRequest::from_json(request).unwrap();
    process_images(ctx, GenerationRequest::Txt2Img(request)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_sharing_a_run_get_the_images_they_get_alone() {
    let root = models_root();
    let limits = BatchingLimits { max_images: 8, max_pixels: usize::MAX };
    let runner = Arc::new(ProcessingRunner::start_with(DiffusionExecutor::new("cpu").unwrap(), limits, None));
    let ctx = ProcessingContext::new(runner.clone(), ModelIndex::scan(&root).unwrap(), "v1.10.1");
    let requests = requests();

    // One by one: every request runs alone.
    let mut alone = Vec::new();
    for r in &requests {
        alone.push(generate(&ctx, r).await);
    }
    assert_eq!(runner.counters().shared_runs, 0);

    // All at once, queued behind a request that keeps the device busy.
    let blocker = json!({"prompt": "busy", "steps": 30, "width": 64, "height": 64, "sampler_name": "Heun", "seed": 7});
    let busy = {
        let ctx = ctx.clone();
        tokio::spawn(async move { generate(&ctx, &blocker).await })
    };
    for _ in 0..2000 {
        if runner.state().current_task().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(runner.state().current_task().is_some(), "the blocker started");
    let handles: Vec<_> = requests
        .iter()
        .cloned()
        .map(|r| {
            let ctx = ctx.clone();
            tokio::spawn(async move { generate(&ctx, &r).await })
        })
        .collect();
    let mut together = Vec::new();
    for h in handles {
        together.push(h.await.unwrap());
    }
    busy.await.unwrap();

    let counters = runner.counters();
    // Euler a: the three one-chunk requests (four images); the two-chunk prompt runs alone.
    // DPM++ 2M SDE: both requests.
    assert_eq!((counters.shared_runs, counters.jobs_in_shared_runs), (2, 5), "{counters:?}");
    let (mut exact, mut images) = (0, 0);
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.infotexts, t.infotexts, "request {i}: infotexts");
        assert_eq!(a.images.len(), t.images.len());
        for (x, y) in a.images.iter().zip(&t.images) {
            let max = x.pixels.iter().zip(&y.pixels).map(|(p, q)| p.abs_diff(*q)).max().unwrap_or(0);
            assert!(max <= 1, "request {i}: max difference {max} levels");
            exact += usize::from(max == 0);
            images += 1;
        }
    }
    eprintln!("{exact} of {images} images bit-identical to their solo runs");
    std::fs::remove_dir_all(&root).ok();
}
