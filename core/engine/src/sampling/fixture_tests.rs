//! Schedules and noise-draw counts against the A1111 parity fixtures.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};

use super::test_support::{AnalyticModel, fixture_alphas_cumprod};
use super::{SamplerContext, SamplerKind, SamplerParams, SamplingPlan, Scheduler, SchedulerOptions, sample};
use crate::rng::{ImageRng, ImageRngOptions, RandnSource};

struct Case {
    name: String,
    request: serde_json::Value,
    seeds: Vec<i64>,
    tensors: HashMap<String, Tensor>,
}

fn cases() -> Vec<Case> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/a1111-parity/cases");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let dir = entry.unwrap().path();
        let read = |f: &str| {
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
        };
        let case = read("case.json");
        out.push(Case {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            request: read("request.json"),
            seeds: case["seeds"].as_array().unwrap().iter().map(|s| s.as_i64().unwrap()).collect(),
            tensors: candle_core::safetensors::load(dir.join("intermediates.safetensors"), &Device::Cpu).unwrap(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn plan_for(case: &Case, ac: &[f32]) -> SamplingPlan {
    let r = &case.request;
    let kind = SamplerKind::find(r["sampler_name"].as_str().unwrap_or("Euler")).unwrap();
    let scheduler = Scheduler::find(r["scheduler"].as_str().unwrap_or("Automatic")).unwrap();
    let steps = r["steps"].as_u64().unwrap_or(50) as usize;
    let options = SchedulerOptions::default();
    match r["denoising_strength"].as_f64() {
        Some(ds) if case.name.starts_with("i2i") => {
            SamplingPlan::img2img(kind, scheduler, steps, ds, false, ac, &options, false).unwrap()
        }
        _ => SamplingPlan::txt2img(kind, scheduler, steps, ac, &options, false).unwrap(),
    }
}

fn max_rel_err(got: &[f64], want: &Tensor) -> f64 {
    let want: Vec<f32> = want.to_vec1().unwrap();
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    got.iter()
        .zip(&want)
        .map(|(g, &w)| {
            let w = f64::from(w);
            if w == 0.0 { g.abs() } else { ((g - w) / w).abs() }
        })
        .fold(0.0, f64::max)
}

#[test]
fn fixture_sigmas_timesteps_and_img2img_truncation() {
    let ac = fixture_alphas_cumprod();
    let mut worst = 0f64;
    let mut checked = 0;
    for case in cases() {
        let plan = plan_for(&case, &ac);
        let batches = case.seeds.len() / case.request["batch_size"].as_u64().unwrap_or(1) as usize;
        for n in 0..batches {
            if let Some(want) = case.tensors.get(&format!("iter{n}.sigmas")) {
                let err = max_rel_err(&plan.sigmas, want);
                assert!(err <= 1e-6, "{} iter{n} sigmas: rel err {err}: {:?}", case.name, plan.sigmas);
                worst = worst.max(err);
                checked += 1;
            }
            if let Some(want) = case.tensors.get(&format!("iter{n}.sigmas_full")) {
                let err = max_rel_err(&plan.full_sigmas, want);
                assert!(err <= 1e-6, "{} sigmas_full: {err}", case.name);
            }
            if let Some(want) = case.tensors.get(&format!("iter{n}.timesteps")) {
                let want: Vec<i64> = want.to_vec1().unwrap();
                let got: Vec<i64> = plan.timesteps.iter().map(|&t| t as i64).collect();
                assert_eq!(got, want, "{}", case.name);
                checked += 1;
            }
            if let Some(want) = case.tensors.get(&format!("iter{n}.img2img_steps_t_enc")) {
                let want: Vec<i64> = want.to_vec1().unwrap();
                let (steps, t_enc) = plan.img2img_steps.unwrap();
                assert_eq!(vec![steps as i64, t_enc as i64], want);
            }
        }
    }
    eprintln!("fixture schedules: {checked} checked, worst relative sigma error {worst:.3e}");
    assert!(checked >= 17);
}

/// Each covered sampler draws the same number of noise tensors per image as A1111 did.
#[test]
fn fixture_rng_draw_counts() {
    let ac = fixture_alphas_cumprod();
    for case in cases() {
        let plan = plan_for(&case, &ac);
        let r = &case.request;
        let batch = r["batch_size"].as_u64().unwrap_or(1) as usize;
        let source = RandnSource::from_option(r["override_settings"]["randn_source"].as_str().unwrap()).unwrap();
        let (h, w) = (r["height"].as_u64().unwrap() as usize / 8, r["width"].as_u64().unwrap() as usize / 8);
        for (n, seeds) in case.seeds.chunks(batch).enumerate() {
            let options = ImageRngOptions { source, ..Default::default() };
            let mut rng = ImageRng::new([4, h, w], seeds.to_vec(), options, Device::Cpu);
            let noise = rng.next().unwrap();
            let x = if plan.is_img2img {
                plan.img2img_start(&noise.zeros_like().unwrap(), &noise, &ac).unwrap()
            } else {
                plan.txt2img_start(&noise).unwrap()
            };
            let mut model = AnalyticModel::new(1.0, ac.clone());
            let mut ctx = SamplerContext::new(&mut model, &mut rng, SamplerParams::default(), &ac);
            let out = sample(&mut ctx, &plan, x).unwrap();
            assert!(!out.interrupted);
            let want: Vec<i64> = case.tensors[&format!("iter{n}.rng_draws")].to_vec1().unwrap();
            assert_eq!(rng.draws() as i64, want[0], "{} iter{n}", case.name);
        }
    }
}

/// A1111's Automatic DPM++ 2M is Karras; README example: Karras n=20 on SD1 starts 14.6146, 11.7254.
#[test]
fn automatic_resolves_to_sampler_default() {
    let ac = fixture_alphas_cumprod();
    let o = SchedulerOptions::default();
    let auto = SamplingPlan::txt2img(SamplerKind::DpmPp2M, Scheduler::Automatic, 20, &ac, &o, false).unwrap();
    let karras = SamplingPlan::txt2img(SamplerKind::Euler, Scheduler::Karras, 20, &ac, &o, false).unwrap();
    assert_eq!(auto.sigmas, karras.sigmas);
    assert!((auto.sigmas[1] - 11.7254).abs() < 1e-4 && (auto.sigmas[19] - 0.0292).abs() < 1e-4);
    // DPM2 builds a 9-step Karras schedule and drops its penultimate value (sigma_min): n+1 values.
    let dpm2 = SamplingPlan::txt2img(SamplerKind::Dpm2, Scheduler::Automatic, 8, &ac, &o, false).unwrap();
    let k9 = SamplingPlan::txt2img(SamplerKind::Euler, Scheduler::Karras, 9, &ac, &o, false).unwrap();
    assert_eq!(dpm2.sigmas.len(), 9);
    assert_eq!(dpm2.sigmas[..8], k9.sigmas[..8]);
    assert_eq!(dpm2.sigmas[8], 0.0);
    // DDIM with 13 steps: 1000 // 13 = 76 -> 14 timesteps (README).
    let ddim = SamplingPlan::txt2img(SamplerKind::Ddim, Scheduler::Automatic, 13, &ac, &o, false).unwrap();
    assert_eq!(ddim.timesteps.len(), 14);
    assert_eq!(ddim.timesteps[..3], [1, 77, 153]);
}

/// The sampler input `iter{n}.x_T` from the fixture noise (and `init_latent` for img2img).
#[test]
fn fixture_sampler_inputs() {
    let ac = fixture_alphas_cumprod();
    let mut worst = 0f32;
    for case in cases() {
        let plan = plan_for(&case, &ac);
        let noise = &case.tensors["iter0.noise"];
        let x = match case.tensors.get("init_latent") {
            Some(init) => plan.img2img_start(init, noise, &ac).unwrap(),
            None => plan.txt2img_start(noise).unwrap(),
        };
        let want = &case.tensors["iter0.x_T"];
        let err: f32 = (x - want).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        let scale: f32 = want.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(err <= 1e-6 * scale, "{}: x_T error {err}", case.name);
        worst = worst.max(err / scale);
    }
    eprintln!("x_T worst relative error {worst:.2e}");
}
