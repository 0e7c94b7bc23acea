//! The SDXL refiner architecture: a conditioner with OpenCLIP-bigG alone and a `y` vector of
//! pooled text, original size, crop and aesthetic score (sgm's `sd_xl_refiner.yaml`). The test
//! builds a tiny refiner from the tiny SDXL fixture's own bigG and VAE and a fresh refiner-shaped
//! UNet (random weights, real layout and names), then checks what the refiner conditions on
//! against the base model's bigG and an independent sinusoid, and runs it as A1111's refiner.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{D, DType, Device, IndexOp, Tensor};
use candle_nn::{VarBuilder, VarMap};
use sdapi_core::models_dir::ModelIndex;
use sdapi_core::processing::{GenerationRequest, ProcessingContext, process_images};
use sdapi_core::runner::{ProcessingRunner, Runner};
use sdapi_engine::executor::DiffusionExecutor;
use sdapi_engine::text::{ChunkedBatch, ChunkingOptions, ClipTokenizer, TextSide};
use sdapi_engine::{LoadedModel, ModelFamily, SdxlSizes, UNetModel, UnetConfig, UnetHeads};
use sdapi_protocol::api::request::Txt2ImgRequest;
use sdapi_protocol::choices::EmphasisMode;

/// The tiny SDXL fixture's bigG width and pooled width, and its size-embedding width.
const G_WIDTH: usize = 16;
const POOLED: usize = 12;
const EMBED: usize = 8;

fn base_checkpoint() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/a1111-parity-sdxl/models/tiny-sdxl.safetensors")
}

/// A refiner-shaped UNet: attention only at the middle level, as the real refiner has none at
/// its first and last levels; context = bigG alone; `label_emb` takes pooled + 5 numbers.
fn refiner_unet() -> UnetConfig {
    UnetConfig {
        in_channels: 4,
        out_channels: 4,
        model_channels: 32,
        time_embed_dim: 128,
        channel_mult: vec![1, 1, 2],
        num_res_blocks: vec![1; 3],
        transformer_depth: vec![0, 2, 0],
        transformer_depth_middle: 1,
        context_dim: G_WIDTH,
        use_linear_proj: true,
        heads: UnetHeads::HeadDim(16),
        adm_in_channels: Some(POOLED + 5 * EMBED),
    }
}

const REFINER_YAML: &str = "model:\n  params:\n    scale_factor: 0.13025\n    network_config:\n      params:\n        num_head_channels: 16\n        context_dim: 16\n        adm_in_channels: 52\n    conditioner:\n      params:\n        emb_models:\n          - target: sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2\n            arch:\n              hidden_size: 16\n              num_attention_heads: 2\n          - target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND\n          - target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND\n          - target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND\n";

/// Writes `<dir>/tiny-refiner.safetensors` (+ `.yaml`) in the refiner's single-file layout.
fn write_refiner(dir: &Path) -> PathBuf {
    let base = candle_core::safetensors::load(base_checkpoint(), &Device::Cpu).unwrap();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in base {
        if name.starts_with("first_stage_model.") {
            tensors.insert(name, t);
        } else if let Some(rest) = name.strip_prefix("conditioner.embedders.1.model.") {
            tensors.insert(format!("conditioner.embedders.0.model.{rest}"), t);
        }
    }
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    UNetModel::new(refiner_unet(), vb.pp("model.diffusion_model")).unwrap();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        // Small weights keep the random UNet's outputs in a sane range.
        tensors.insert(name.clone(), (var.as_tensor() * 0.5).unwrap());
    }
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("tiny-refiner.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    std::fs::write(path.with_extension("yaml"), REFINER_YAML).unwrap();
    path
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("sdapi-refiner-arch-{name}-{}", std::process::id()))
}

/// sgm's `timestep_embedding` of one number, computed here in f64: `[cos(n·f_i) | sin(n·f_i)]`,
/// `f_i = 10000^(−i/half)`.
fn sinusoid(n: f64, dim: usize) -> Vec<f64> {
    let half = dim / 2;
    let freqs: Vec<f64> = (0..half).map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp()).collect();
    freqs.iter().map(|f| (n * f).cos()).chain(freqs.iter().map(|f| (n * f).sin())).collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn the_refiner_conditions_on_bigg_alone_with_an_aesthetic_score() {
    let dir = scratch("cond");
    let refiner = LoadedModel::load(&write_refiner(&dir), None, &Device::Cpu, DType::F32).unwrap();
    let base = LoadedModel::load(&base_checkpoint(), None, &Device::Cpu, DType::F32).unwrap();
    assert_eq!(refiner.family, ModelFamily::Sdxl);
    assert_eq!(refiner.text_widths(), [G_WIDTH], "one text encoder: bigG");
    assert_eq!(refiner.unet.config().adm_in_channels, Some(52));

    let texts = ["a red cube on a table".to_string(), "a (blue:1.3) ball".to_string()];
    let batch = ChunkedBatch::new(ClipTokenizer::shared(), &texts, &ChunkingOptions::default()).unwrap();
    let columns = batch.columns();
    let sizes = SdxlSizes::for_request(64, 96);
    let ours = refiner.condition(&columns, EmphasisMode::Original, 1, &sizes, TextSide::Positive).unwrap();
    let theirs = base.condition(&columns, EmphasisMode::Original, 1, &sizes, TextSide::Positive).unwrap();
    // The base model's context is [CLIP-L | bigG]; the refiner's is the same bigG part.
    let base_g =
        theirs.crossattn.narrow(D::Minus1, theirs.crossattn.dim(D::Minus1).unwrap() - G_WIDTH, G_WIDTH).unwrap();
    assert_eq!(max_diff(&ours.crossattn, &base_g), 0.0);

    let vector = ours.vector.expect("the refiner takes a y vector");
    assert_eq!(vector.dims(), [2, POOLED + 5 * EMBED]);
    let base_vector = theirs.vector.unwrap();
    assert_eq!(max_diff(&vector.i((.., ..POOLED)).unwrap(), &base_vector.i((.., ..POOLED)).unwrap()), 0.0, "pooled");
    // original size (h, w), crop (top, left), aesthetic score: 6.0 for prompts, 2.5 for negatives.
    for (side, score) in [(TextSide::Positive, 6.0), (TextSide::Negative { all_empty: false }, 2.5)] {
        let v = refiner.condition(&columns, EmphasisMode::Original, 1, &sizes, side).unwrap().vector.unwrap();
        let expected: Vec<f32> =
            [96.0, 64.0, 0.0, 0.0, score].iter().flat_map(|&n| sinusoid(n, EMBED)).map(|x| x as f32).collect();
        for row in 0..2 {
            let got: Vec<f32> = v.i((row, POOLED..)).unwrap().to_vec1().unwrap();
            let worst = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "{side:?} row {row}: {worst}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdxl_refiner_takes_over_sampling_from_the_base_model() {
    let root = scratch("run");
    let sd = root.join("Stable-diffusion");
    write_refiner(&sd);
    std::fs::copy(base_checkpoint(), sd.join("tiny-sdxl.safetensors")).unwrap();
    std::fs::copy(base_checkpoint().with_extension("yaml"), sd.join("tiny-sdxl.yaml")).unwrap();
    let runner: Arc<dyn Runner> = Arc::new(ProcessingRunner::start(DiffusionExecutor::new("cpu").unwrap()));
    let ctx = ProcessingContext::new(runner, ModelIndex::scan(&root).unwrap(), "v1.10.1");
    let run = |at: Option<f64>| {
        let mut body = serde_json::json!({
            "prompt": "a red cube", "negative_prompt": "blurry", "seed": 3, "steps": 4, "width": 64, "height": 64,
            "sampler_name": "Euler", "override_settings": {"sd_model_checkpoint": "tiny-sdxl"},
        });
        if let Some(at) = at {
            body["refiner_checkpoint"] = serde_json::json!("tiny-refiner");
            body["refiner_switch_at"] = serde_json::json!(at);
        }
        process_images(&ctx, GenerationRequest::Txt2Img(Txt2ImgRequest::from_json(&body).unwrap()))
    };
    let plain = run(None).await.unwrap();
    let refined = run(Some(0.5)).await.unwrap();
    assert_ne!(plain.images, refined.images, "the refiner took over half way");
    assert!(refined.infotexts[0].contains("Refiner: tiny-refiner ["), "{}", refined.infotexts[0]);
    assert!(refined.infotexts[0].contains("Refiner switch at: 0.5"), "{}", refined.infotexts[0]);
    // Another aesthetic score conditions the refiner differently.
    let mut body = serde_json::json!({
        "prompt": "a red cube", "negative_prompt": "blurry", "seed": 3, "steps": 4, "width": 64, "height": 64,
        "sampler_name": "Euler", "refiner_checkpoint": "tiny-refiner", "refiner_switch_at": 0.5,
        "override_settings": {"sd_model_checkpoint": "tiny-sdxl", "sdxl_refiner_high_aesthetic_score": 9.0},
    });
    let scored = process_images(&ctx, GenerationRequest::Txt2Img(Txt2ImgRequest::from_json(&body).unwrap()));
    assert_ne!(scored.await.unwrap().images, refined.images, "sdxl_refiner_high_aesthetic_score reaches the refiner");
    // The refiner alone serves as a txt2img model too (A1111 can load it as the main checkpoint).
    body["override_settings"]["sd_model_checkpoint"] = serde_json::json!("tiny-refiner");
    body.as_object_mut().unwrap().remove("refiner_checkpoint");
    let alone = process_images(&ctx, GenerationRequest::Txt2Img(Txt2ImgRequest::from_json(&body).unwrap()));
    assert_eq!(alone.await.unwrap().images.len(), 1);
    std::fs::remove_dir_all(&root).ok();
}
