//! The whole conditioning path the runner uses (prompt parsing, chunking, CLIP through
//! `ModelConditioner`, emphasis, schedules, AND, SDXL vectors) against A1111's `iter0.cond`,
//! `iter0.uncond` (and SDXL `*_vector`) of every public fixture case, SD-1.x, SDXL and SD 2.x.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use sdapi_protocol::api::sampler_resolution::resolve_sampler_and_scheduler;
use sdapi_protocol::choices::EmphasisMode;
use sdapi_protocol::prompt::ScheduleParams;

use crate::model::{LoadedModel, ModelConditioner};
use crate::text::{
    ChunkingOptions, SdxlSizes, TextConditioner, reconstruct_cond_batch, reconstruct_cond_vectors,
    reconstruct_multicond_batch, reconstruct_multicond_vectors,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// Tolerance of the issue (1e-4 absolute); `sdxl_t2i_negative_emphasis` is the documented
/// exception: its OpenCLIP mean is ~-1.45e-3, so A1111's mean-restoring rescale amplifies f32
/// rounding of the mean itself (see the SDXL fixture README) — there 1e-3 is allowed.
fn tolerance(case: &str) -> f32 {
    if case == "sdxl_t2i_negative_emphasis" { 1e-3 } else { 1e-4 }
}

fn check_set(set: &str, model_file: &str) -> usize {
    let model =
        LoadedModel::load(&fixtures().join(set).join("models").join(model_file), None, &Device::Cpu, DType::F32)
            .expect("fixture model loads");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(fixtures().join(set).join("cases")).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.sort();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let req: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("request.json")).unwrap()).unwrap();
        let t = candle_core::safetensors::load(dir.join("intermediates.safetensors"), &Device::Cpu).unwrap();
        let batch = req["batch_size"].as_u64().unwrap_or(1) as usize;
        let prompts = vec![req["prompt"].as_str().unwrap_or("").to_string(); batch];
        let negatives = vec![req["negative_prompt"].as_str().unwrap_or("").to_string(); batch];
        let requested = req["sampler_name"].as_str().unwrap_or("Euler");
        let (sampler, _) = resolve_sampler_and_scheduler(Some(requested), None, true);
        let steps = req["steps"].as_u64().unwrap_or(50) as usize;
        let second_order = sampler.flags().second_order;
        let params = ScheduleParams::new(if second_order { steps * 2 } else { steps });
        let clip_skip = req["override_settings"]["CLIP_stop_at_last_layers"].as_u64().unwrap_or(1) as usize;
        let (w, h) = (req["width"].as_u64().unwrap_or(512) as usize, req["height"].as_u64().unwrap_or(512) as usize);
        let encoder = ModelConditioner {
            model: &model,
            emphasis: EmphasisMode::Original,
            clip_skip,
            sizes: SdxlSizes::for_request(w, h),
        };
        let conditioner = TextConditioner::new(&encoder, ChunkingOptions::default());
        let uc = conditioner.learned_conditioning_negative(&negatives, &params).unwrap();
        let c = conditioner.multicond_learned_conditioning(&prompts, &params).unwrap();
        let (_, cond) = reconstruct_multicond_batch(&c, 0).unwrap();
        let uncond = reconstruct_cond_batch(&uc, 0).unwrap();
        let tol = tolerance(&name);
        let err_c = max_abs(&cond, &t["iter0.cond"]);
        let err_u = max_abs(&uncond, &t["iter0.uncond"]);
        println!("{name:36} cond {err_c:.2e} uncond {err_u:.2e}");
        assert!(err_c < tol && err_u < tol, "{name}: cond {err_c} uncond {err_u}");
        if let Some(want) = t.get("iter0.cond_vector") {
            let got = reconstruct_multicond_vectors(&c, 0).unwrap().expect("SDXL vector");
            assert!(max_abs(&got, want) < tol, "{name}: cond vector");
            let got = reconstruct_cond_vectors(&uc, 0).unwrap().expect("SDXL vector");
            assert!(max_abs(&got, &t["iter0.uncond_vector"]) < tol, "{name}: uncond vector");
        }
    }
    dirs.len()
}

#[test]
fn sd15_conditioning_matches_a1111_for_every_case() {
    assert_eq!(check_set("a1111-parity", "tiny-sd15.safetensors"), 16);
}

#[test]
fn sdxl_conditioning_matches_a1111_for_every_case() {
    assert_eq!(check_set("a1111-parity-sdxl", "tiny-sdxl.safetensors"), 4);
}

#[test]
fn sd2_conditioning_matches_a1111_for_every_case() {
    assert_eq!(check_set("a1111-parity-sd2", "tiny-sd2v.safetensors"), 4);
}
