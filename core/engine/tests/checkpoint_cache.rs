//! `sd_checkpoints_limit`: alternating between two checkpoints loads each once when the limit is
//! 2, and every time when it is A1111's default 1; the images are the same either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sdapi_core::models_dir::ModelIndex;
use sdapi_core::processing::{GenerationRequest, ProcessingContext, process_images};
use sdapi_core::runner::{ProcessingRunner, Runner};
use sdapi_engine::executor::DiffusionExecutor;
use sdapi_protocol::api::request::Txt2ImgRequest;

fn models_with_two_checkpoints() -> PathBuf {
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/a1111-parity/models/tiny-sd15.safetensors");
    let root = std::env::temp_dir().join(format!("sdapi-ckpt-cache-{}", std::process::id()));
    let sd = root.join("Stable-diffusion");
    std::fs::create_dir_all(&sd).unwrap();
    for name in ["first", "second"] {
        std::fs::copy(&src, sd.join(format!("{name}.safetensors"))).unwrap();
        std::fs::copy(src.with_extension("yaml"), sd.join(format!("{name}.yaml"))).unwrap();
    }
    root
}

async fn alternate(ctx: &ProcessingContext, limit: i64) -> Vec<Vec<u8>> {
    let mut images = Vec::new();
    for checkpoint in ["first", "second", "first", "second"] {
        let request = Txt2ImgRequest::from_json(&serde_json::json!({
            "prompt": "a red cube", "seed": 3, "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler",
            "override_settings": {"sd_model_checkpoint": checkpoint, "sd_checkpoints_limit": limit},
        }))
        .unwrap();
        let processed = process_images(ctx, GenerationRequest::Txt2Img(request)).await.unwrap();
        images.push(processed.images[0].pixels.clone());
    }
    images
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_checkpoint_stays_loaded_with_a_limit_of_two() {
    let root = models_with_two_checkpoints();
    let runner: Arc<dyn Runner> = Arc::new(ProcessingRunner::start(DiffusionExecutor::new("cpu").unwrap()));
    let ctx = ProcessingContext::new(runner.clone(), ModelIndex::scan(&root).unwrap(), "v1.10.1");

    let cached = alternate(&ctx, 2).await;
    assert_eq!(runner.counters().model_loads, 2, "each checkpoint read once");
    let uncached = alternate(&ctx, 1).await;
    // With the limit back at 1: the first switch still finds "first" held, then the other model
    // is freed and every further switch reads the file again.
    assert_eq!(runner.counters().model_loads, 2 + 3);
    assert_eq!(cached, uncached, "the cache changes no pixel");
    std::fs::remove_dir_all(&root).ok();
}
