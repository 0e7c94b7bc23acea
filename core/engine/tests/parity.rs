//! End-to-end parity with A1111 v1.10.1: every public SD-1.x fixture case goes through
//! `process_images` → the real `ProcessingRunner` → the engine on CPU, and must give A1111's pixels
//! (max |difference| ≤ 2 levels per channel) and A1111's infotexts byte for byte (apart from
//! `Version`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sdapi_core::models_dir::ModelIndex;
use sdapi_core::processing::{GenerationRequest, ProcessingContext, process_images};
use sdapi_core::runner::{ProcessingRunner, RgbImage, Runner};
use sdapi_engine::executor::DiffusionExecutor;
use sdapi_protocol::api::request::{Img2ImgRequest, Txt2ImgRequest};
use sdapi_protocol::images::{decode_base64_image, parse_hex_color};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn context() -> ProcessingContext {
    let models = ModelIndex::scan(&root().join("samples/models")).expect("bundled models");
    let runner: Arc<dyn Runner> = Arc::new(ProcessingRunner::start(DiffusionExecutor::new("cpu").unwrap()));
    ProcessingContext::new(runner, models, "v1.10.1")
}

fn load_png(path: &Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

struct CaseResult {
    name: String,
    max_diff: u8,
    exact: bool,
}

async fn run_case(ctx: &ProcessingContext, dir: &Path) -> CaseResult {
    let name = dir.file_name().unwrap().to_string_lossy().to_string();
    let case: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let request: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("request.json")).unwrap()).unwrap();
    let gen_request = if case["mode"] == "img2img" {
        let r = Img2ImgRequest::from_json(&request).unwrap();
        let init_images: Vec<RgbImage> = r
            .init_images
            .clone()
            .unwrap()
            .iter()
            .map(|v| decode_base64_image(v.as_str().unwrap()).unwrap().flatten(parse_hex_color("#ffffff")).into())
            .collect();
        GenerationRequest::Img2Img { request: r, init_images }
    } else {
        GenerationRequest::Txt2Img(Txt2ImgRequest::from_json(&request).unwrap())
    };
    let processed = process_images(ctx, gen_request).await.unwrap_or_else(|e| panic!("{name}: {e:?}"));

    let expected_files: Vec<String> =
        case["images"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(processed.images.len(), expected_files.len(), "{name}: image count");
    let mut max_diff = 0u8;
    let mut exact = true;
    for (img, file) in processed.images.iter().zip(&expected_files) {
        let want = load_png(&dir.join(file));
        assert_eq!((img.width, img.height), want.dimensions(), "{name}: size");
        for (a, b) in img.pixels.iter().zip(want.as_raw()) {
            let d = a.abs_diff(*b);
            max_diff = max_diff.max(d);
            exact &= d == 0;
        }
    }

    let want_infotexts: Vec<String> =
        case["infotexts"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(processed.infotexts, want_infotexts, "{name}: infotexts");
    let info: Value = serde_json::from_str(&processed.info).unwrap();
    assert_eq!(info["all_seeds"], case["seeds"], "{name}: info.all_seeds");
    if let Some(extra) = case["info_expected"].get("extra_generation_params") {
        assert_eq!(&info["extra_generation_params"], extra, "{name}: info.extra_generation_params");
    }
    CaseResult { name, max_diff, exact }
}

async fn run_fixture_set(folder: &str, expected_cases: usize) {
    run_fixture_cases(folder, &[""], expected_cases).await
}

/// The cases of `folder` whose names start with one of `prefixes`.
async fn run_fixture_cases(folder: &str, prefixes: &[&str], expected_cases: usize) {
    let ctx = context();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("tests/fixtures").join(folder).join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| prefixes.iter().any(|prefix| p.file_name().unwrap().to_string_lossy().starts_with(prefix)))
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), expected_cases, "public cases of {folder}");
    let mut results = Vec::new();
    for dir in &dirs {
        results.push(run_case(&ctx, dir).await);
    }
    let mut failed = Vec::new();
    for r in &results {
        println!("{:32} max_diff {} {}", r.name, r.max_diff, if r.exact { "exact" } else { "" });
        if r.max_diff > 2 {
            failed.push(format!("{} ({})", r.name, r.max_diff));
        }
    }
    let exact = results.iter().filter(|r| r.exact).count();
    println!("parity {folder}: {} of {} cases PASS, {} exact", results.len() - failed.len(), results.len(), exact);
    assert!(failed.is_empty(), "cases over tolerance: {failed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_public_sd15_fixture_cases_match_a1111() {
    run_fixture_set("a1111-parity", 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_public_sdxl_fixture_cases_match_a1111() {
    run_fixture_set("a1111-parity-sdxl", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_public_sd2_fixture_cases_match_a1111() {
    run_fixture_set("a1111-parity-sd2", 4).await;
}

/// Request bounds through the real runner and engine: too many characters are refused before
/// queueing, too many chunks when the engine tokenizes (before CLIP), both as 422s naming the
/// limit; the runner then serves the next request.
#[tokio::test(flavor = "multi_thread")]
async fn prompt_bounds_are_422s_and_the_runner_keeps_serving() {
    let mut ctx = context();
    ctx.limits =
        sdapi_core::processing::RequestLimits { max_prompt_chars: 2000, max_prompt_chunks: 8, ..Default::default() };
    let request = |prompt: String| {
        let body = serde_json::json!({"prompt": prompt, "steps": 2, "width": 64, "height": 64, "seed": 1});
        GenerationRequest::Txt2Img(Txt2ImgRequest::from_json(&body).unwrap())
    };
    let long = process_images(&ctx, request("a ".repeat(1500))).await.expect_err("over the character bound");
    assert_eq!(long.status, 422);
    assert!(long.detail.as_str().unwrap().contains("SDAPI_MAX_PROMPT_CHARS"), "{long:?}");
    let breaks = process_images(&ctx, request("a BREAK ".repeat(20))).await.expect_err("over the chunk bound");
    assert_eq!(breaks.status, 422);
    assert!(breaks.detail.as_str().unwrap().contains("SDAPI_MAX_PROMPT_CHUNKS"), "{breaks:?}");
    assert!(process_images(&ctx, request("a red cube".into())).await.is_ok());
}

/// LoRA and textual-inversion cases (the bundled models folder links the fixture's LoRA and
/// embedding files into `Lora/` and `embeddings/`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_and_embedding_fixture_cases_match_a1111() {
    run_fixture_cases("a1111-parity-features", &["lora_", "ti_"], 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hires_fix_fixture_cases_match_a1111() {
    run_fixture_cases("a1111-parity-features", &["hr_"], 3).await;
}

/// img2img `resize_mode` 3 ("Just resize (latent upscale)"): the image is encoded at its own size
/// and the latent resized; at the target size already it is exactly mode 0, and a smaller image
/// comes out at the requested size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn img2img_latent_upscale_resize_mode() {
    let ctx = context();
    let init = load_png(&root().join("tests/fixtures/a1111-parity/init_images/init_a_64x64.png"));
    let small = image::imageops::resize(&init, 32, 32, image::imageops::FilterType::Triangle);
    let run = |mode: i64, img: image::RgbImage| {
        let request = Img2ImgRequest::from_json(&serde_json::json!({
            "prompt": "a red cube", "seed": 5, "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler",
            "denoising_strength": 0.6, "resize_mode": mode,
        }))
        .unwrap();
        GenerationRequest::Img2Img { request, init_images: vec![img.into()] }
    };
    let same_mode0 = process_images(&ctx, run(0, init.clone())).await.unwrap();
    let same_mode3 = process_images(&ctx, run(3, init)).await.unwrap();
    assert_eq!(same_mode0.images, same_mode3.images, "at the target size the latent resize is the identity");
    let upscaled = process_images(&ctx, run(3, small)).await.unwrap();
    assert_eq!((upscaled.images[0].width, upscaled.images[0].height), (64, 64));
}

/// `hr_checkpoint_name` naming another checkpoint: the second pass runs on it (here a copy of the
/// same weights, so the pixels equal a same-checkpoint hires run), and the next request gets its
/// own model back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hires_checkpoint_switches_models_for_the_second_pass() {
    let tmp = std::env::temp_dir().join(format!("sdapi-hires-ckpt-{}", std::process::id()));
    let sd = tmp.join("Stable-diffusion");
    std::fs::create_dir_all(&sd).unwrap();
    let source = root().join("samples/models/Stable-diffusion/tiny-sd15.safetensors");
    std::fs::copy(&source, sd.join("tiny-sd15.safetensors")).unwrap();
    std::fs::copy(&source, sd.join("tiny-copy.safetensors")).unwrap();
    // The tiny model's head counts come from its shipped config, which travels with each copy.
    let yaml = root().join("samples/models/Stable-diffusion/tiny-sd15.yaml");
    std::fs::copy(&yaml, sd.join("tiny-sd15.yaml")).unwrap();
    std::fs::copy(&yaml, sd.join("tiny-copy.yaml")).unwrap();
    let models = ModelIndex::scan(&tmp).expect("models");
    let runner: Arc<dyn Runner> = Arc::new(ProcessingRunner::start(DiffusionExecutor::new("cpu").unwrap()));
    let ctx = ProcessingContext::new(runner, models, "v1.10.1");
    let request = |hr_checkpoint: Option<&str>| {
        let mut body = serde_json::json!({
            "prompt": "a red cube", "seed": 3, "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler",
            "enable_hr": true, "hr_scale": 1.5, "hr_upscaler": "Lanczos", "denoising_strength": 0.5,
            "override_settings": {"sd_model_checkpoint": "tiny-sd15"},
        });
        if let Some(name) = hr_checkpoint {
            body["hr_checkpoint_name"] = serde_json::json!(name);
        }
        GenerationRequest::Txt2Img(Txt2ImgRequest::from_json(&body).unwrap())
    };
    let same = process_images(&ctx, request(None)).await.unwrap();
    let switched = process_images(&ctx, request(Some("tiny-copy"))).await.unwrap();
    assert_eq!(same.images, switched.images, "same weights under another name: same pixels");
    assert!(switched.infotexts[0].contains("Hires checkpoint: tiny-copy"), "{}", switched.infotexts[0]);
    let again = process_images(&ctx, request(None)).await.unwrap();
    assert_eq!(same.images, again.images);
    let counters = ctx.runner.counters();
    assert!(counters.model_loads >= 2, "the first model is loaded again after the switch: {counters:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// `refiner_checkpoint`: sampling continues on another model from `refiner_switch_at`. A copy of
/// the same weights gives the same pixels (and the infotext names it); another model changes the
/// image; a switch point never reached (1.0 > 0.999) changes nothing and adds no keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refiner_switches_models_mid_sampling() {
    let tmp = std::env::temp_dir().join(format!("sdapi-refiner-{}", std::process::id()));
    let sd = tmp.join("Stable-diffusion");
    std::fs::create_dir_all(&sd).unwrap();
    let samples = root().join("samples/models/Stable-diffusion");
    for (from, to) in [("tiny-sd15", "tiny-sd15"), ("tiny-sd15", "tiny-copy"), ("tiny-sd2v", "tiny-sd2v")] {
        std::fs::copy(samples.join(format!("{from}.safetensors")), sd.join(format!("{to}.safetensors"))).unwrap();
        std::fs::copy(samples.join(format!("{from}.yaml")), sd.join(format!("{to}.yaml"))).unwrap();
    }
    let models = ModelIndex::scan(&tmp).expect("models");
    let runner: Arc<dyn Runner> = Arc::new(ProcessingRunner::start(DiffusionExecutor::new("cpu").unwrap()));
    let ctx = ProcessingContext::new(runner, models, "v1.10.1");
    let run = |refiner: Option<(&str, f64)>| {
        let mut body = serde_json::json!({
            "prompt": "a red cube", "seed": 9, "steps": 4, "width": 64, "height": 64, "sampler_name": "Euler",
            "override_settings": {"sd_model_checkpoint": "tiny-sd15"},
        });
        if let Some((name, at)) = refiner {
            body["refiner_checkpoint"] = serde_json::json!(name);
            body["refiner_switch_at"] = serde_json::json!(at);
        }
        process_images(&ctx, GenerationRequest::Txt2Img(Txt2ImgRequest::from_json(&body).unwrap()))
    };
    let plain = run(None).await.unwrap();
    let copy = run(Some(("tiny-copy", 0.5))).await.unwrap();
    assert_eq!(plain.images, copy.images, "the same weights under another name: same pixels");
    assert!(copy.infotexts[0].contains("Refiner: tiny-copy ["), "{}", copy.infotexts[0]);
    assert!(copy.infotexts[0].contains("Refiner switch at: 0.5"), "{}", copy.infotexts[0]);
    let other = run(Some(("tiny-sd2v", 0.5))).await.unwrap();
    assert_ne!(plain.images, other.images, "another model takes over half way");
    let never = run(Some(("tiny-sd2v", 1.0))).await.unwrap();
    assert_eq!(plain.images, never.images);
    assert!(!never.infotexts[0].contains("Refiner"), "{}", never.infotexts[0]);
    let err = run(Some(("no-such-model", 0.5))).await.unwrap_err();
    assert_eq!(err.errors, "Could not find checkpoint with name no-such-model");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Inpainting: whole picture with blur, inverted mask with latent noise, "only masked" with
/// padding (returned at the init image's 96×96).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inpainting_fixture_cases_match_a1111() {
    run_fixture_cases("a1111-parity-features", &["ip_"], 3).await;
}

/// The SDE samplers against whole images computed with k-diffusion 0.1.1.post1 and torchsde 0.2.6
/// the way A1111 v1.10.1 wires them (tests/fixtures/sde-parity/README.md; made by a
/// reimplementation of A1111's path validated on a public fixture, not by A1111 itself): 4-step
/// DPM++ 2M SDE Karras and DPM++ SDE on the bundled model, within 1 level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sde_samplers_match_k_diffusion_with_torchsde() {
    let ctx = context();
    let folder = root().join("tests/fixtures/sde-parity");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&folder).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    assert_eq!(dirs.len(), 2, "SDE cases");
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let case: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
        let request: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("request.json")).unwrap()).unwrap();
        let request = Txt2ImgRequest::from_json(&request).unwrap();
        let processed = process_images(&ctx, GenerationRequest::Txt2Img(request)).await.unwrap();
        let want = load_png(&dir.join("image_0.png"));
        let got = &processed.images[0];
        assert_eq!((got.width, got.height), want.dimensions(), "{name}: size");
        let max_diff = got.pixels.iter().zip(want.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
        println!("{name:32} max_diff {max_diff}");
        assert!(max_diff <= 1, "{name}: max difference {max_diff} levels");
        assert_eq!(processed.infotexts[0], case["infotexts_expected_like"][0].as_str().unwrap(), "{name}: infotext");
    }
}
