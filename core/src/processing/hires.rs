//! txt2img's hires fix (docs/a1111-behaviour.md §6.4), resolved before the first pass runs: the
//! target size and crop, the upscaler, the second pass's sampler, scheduler and steps, and the
//! `extra_generation_params` A1111's `init` adds, in its order. Everything A1111 would only fail on
//! after the first pass (an unknown upscaler or sampler, a missing `denoising_strength`) is
//! answered here, before any work.

use serde_json::{Map, Value};

use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::request::Txt2ImgRequest;
use sdapi_protocol::choices::{HiresUpscaler, SamplerKind, Scheduler};

use super::limits::{RequestLimits, WorkCost};
use crate::models_dir::CheckpointInfo;
use crate::runner::{HiresPass, HiresUpscale, ModelSelection, ModelUpscaler, PixelUpscaler};

/// The second pass of every batch, before its prompts are resolved per request.
#[derive(Debug, Clone)]
pub struct HiresSetup {
    /// Everything but `prompts` / `negative_prompts` (empty here).
    pub pass: HiresPass,
    /// `hr_prompt` / `hr_negative_prompt` as sent ("" = the first-pass prompt).
    pub prompt: String,
    pub negative_prompt: String,
    /// A1111's keys in insertion order; `null` values are in `info` but not in the infotext.
    pub extra: Map<String, Value>,
}

/// `calculate_target_resolution`: (upscale_to_x, upscale_to_y, truncate_x, truncate_y) and the
/// infotext entry naming the scale or the box.
fn target_resolution(
    width: i64,
    height: i64,
    hr_scale: f64,
    resize_x: i64,
    resize_y: i64,
) -> (i64, i64, i64, i64, (&'static str, Value)) {
    if resize_x == 0 && resize_y == 0 {
        let (x, y) = ((width as f64 * hr_scale) as i64, (height as f64 * hr_scale) as i64);
        return (x, y, 0, 0, ("Hires upscale", Value::from(hr_scale)));
    }
    let entry = ("Hires resize", Value::String(format!("{resize_x}x{resize_y}")));
    if resize_y == 0 {
        return (resize_x, resize_x * height / width, 0, 0, entry);
    }
    if resize_x == 0 {
        return (resize_y * width / height, resize_y, 0, 0, entry);
    }
    let (src_ratio, dst_ratio) = (width as f64 / height as f64, resize_x as f64 / resize_y as f64);
    let (x, y) = if src_ratio < dst_ratio {
        (resize_x, resize_x * height / width)
    } else {
        (resize_y * width / height, resize_y)
    };
    // Python's floor division: the box never exceeds the covering size, so these are ≥ 0.
    (x, y, (x - resize_x).div_euclid(8), (y - resize_y).div_euclid(8), entry)
}

fn bad(message: String) -> ApiError {
    ApiError::http(422, message)
}

/// Resolves the hires fix of a txt2img request (`None` without `enable_hr`). `width`/`height` are
/// the first pass's size, `sampler`/`scheduler` its resolved sampler, `model` its checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn setup(
    r: &Txt2ImgRequest,
    width: i64,
    height: i64,
    batch: (i64, i64, i64),
    sampler: SamplerKind,
    scheduler: Scheduler,
    model: &ModelSelection,
    find_checkpoint: impl Fn(&str) -> Option<CheckpointInfo>,
    find_model_upscaler: impl Fn(&str) -> Option<ModelUpscaler>,
    limits: &RequestLimits,
) -> Result<Option<HiresSetup>, ApiError> {
    if !r.enable_hr.unwrap_or(false) {
        return Ok(None);
    }
    let (batch_size, n_iter, steps) = batch;
    // A1111 only fails on these after the whole first pass (TypeError in setup_img2img_steps).
    let denoising_strength = r
        .denoising_strength
        .ok_or_else(|| ApiError::python("TypeError", "'>' not supported between instances of 'NoneType' and 'int'"))?;
    // At 0 or below A1111 samples nothing: the second pass returns the upscaled first pass.
    if !denoising_strength.is_finite() {
        return Err(bad(format!("denoising_strength must be a finite number, got {denoising_strength}")));
    }
    // Latent modes and the built-in upscalers by name, then the model upscalers' files.
    let upscale = match HiresUpscaler::resolve(r.hr_upscaler.as_deref()) {
        Some(HiresUpscaler::Latent(mode)) => HiresUpscale::Latent(mode),
        Some(HiresUpscaler::Pixel(builtin)) => HiresUpscale::Pixel(PixelUpscaler::Builtin(builtin)),
        None => {
            let name = r.hr_upscaler.as_deref().unwrap_or("");
            let model = find_model_upscaler(name)
                .ok_or_else(|| ApiError::python("Exception", format!("could not find upscaler named {name}")))?;
            HiresUpscale::Pixel(PixelUpscaler::Model(model))
        }
    };
    let mut extra = Map::new();
    let mut other_checkpoint = None;
    extra.insert("Denoising strength".into(), Value::from(denoising_strength));
    if let Some(name) = r.hr_checkpoint_name.as_deref().filter(|n| !n.is_empty() && *n != "Use same checkpoint") {
        let found = find_checkpoint(name)
            .ok_or_else(|| ApiError::python("Exception", format!("Could not find checkpoint with name {name}")))?;
        if found.path() != model.checkpoint {
            other_checkpoint = Some(ModelSelection { checkpoint: found.path(), vae: model.vae.clone() });
        }
        extra.insert("Hires checkpoint".into(), Value::String(found.short_title()));
    }
    let hr_sampler = match r.hr_sampler_name.as_deref() {
        None => sampler,
        Some(name) => SamplerKind::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| ApiError::assertion(format!("bad sampler name: {name}")))?,
    };
    if let Some(name) = r.hr_sampler_name.as_deref().filter(|n| *n != sampler.name()) {
        extra.insert("Hires sampler".into(), Value::String(name.to_string()));
    }
    extra.insert("Hires prompt".into(), Value::Null);
    extra.insert("Hires negative prompt".into(), Value::Null);
    extra.insert("Hires schedule type".into(), Value::Null);
    let hr_scheduler = match r.hr_scheduler.as_deref() {
        None => scheduler,
        Some(name) => Scheduler::find(name).unwrap_or(Scheduler::Automatic),
    };

    let hr_scale = r.hr_scale.unwrap_or(2.0);
    let (resize_x, resize_y) = (r.hr_resize_x.unwrap_or(0), r.hr_resize_y.unwrap_or(0));
    if !hr_scale.is_finite() || hr_scale <= 0.0 {
        return Err(bad(format!("hr_scale must be a positive number, got {hr_scale}")));
    }
    for (name, v) in [("hr_resize_x", resize_x), ("hr_resize_y", resize_y)] {
        if !(0..=8192).contains(&v) {
            return Err(bad(format!("{name} must be between 0 and 8192, got {v}")));
        }
    }
    let (up_x, up_y, trunc_x, trunc_y, entry) = target_resolution(width, height, hr_scale, resize_x, resize_y);
    for (name, v) in [("width", up_x), ("height", up_y)] {
        if !(8..=8192).contains(&v) {
            return Err(bad(format!("the hires fix's target {name} must be between 8 and 8192, got {v}")));
        }
    }
    if trunc_x >= up_x / 8 || trunc_y >= up_y / 8 {
        return Err(bad(format!("hr_resize {resize_x}x{resize_y} crops away the whole image")));
    }
    extra.insert(entry.0.into(), entry.1);
    let hr_steps = r.hr_second_pass_steps.unwrap_or(0);
    if !(0..=1000).contains(&hr_steps) {
        return Err(bad(format!("hr_second_pass_steps must be between 0 and 1000, got {hr_steps}")));
    }
    if hr_steps != 0 {
        extra.insert("Hires steps".into(), Value::from(hr_steps));
    }
    if let Some(name) = r.hr_upscaler.as_deref() {
        extra.insert("Hires upscaler".into(), Value::String(name.to_string()));
    }
    let second_steps = if hr_steps != 0 { hr_steps } else { steps };

    // Both passes count against the limits: the larger batch and the sum of the work.
    let first = WorkCost::of(width, height, batch_size, n_iter, steps);
    let second = WorkCost::of(up_x, up_y, batch_size, n_iter, second_steps);
    let both = WorkCost {
        batch_megapixels: first.batch_megapixels.max(second.batch_megapixels),
        megapixel_steps: first.megapixel_steps + second.megapixel_steps,
    };
    if let Some(message) = both.over(limits) {
        return Err(bad(format!("with the hires fix, {message}")));
    }

    Ok(Some(HiresSetup {
        pass: HiresPass {
            upscale_width: up_x as usize,
            upscale_height: up_y as usize,
            truncate_x: trunc_x as usize,
            truncate_y: trunc_y as usize,
            upscale,
            checkpoint: other_checkpoint,
            steps: second_steps as usize,
            denoising_strength,
            sampler: hr_sampler,
            scheduler: hr_scheduler,
            prompts: Vec::new(),
            negative_prompts: Vec::new(),
        },
        prompt: r.hr_prompt.clone().unwrap_or_default(),
        negative_prompt: r.hr_negative_prompt.clone().unwrap_or_default(),
        extra,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_resolution_follows_a1111() {
        // hr_scale: int() of the products; the infotext keeps the float.
        let (x, y, tx, ty, e) = target_resolution(64, 64, 1.5, 0, 0);
        assert_eq!((x, y, tx, ty, e.0), (96, 96, 0, 0, "Hires upscale"));
        // Both sides: cover the box, then crop in latent space (the fixture's 96x128 from 64²).
        let (x, y, tx, ty, e) = target_resolution(64, 64, 2.0, 96, 128);
        assert_eq!((x, y, tx, ty), (128, 128, 4, 0));
        assert_eq!(e.1, Value::String("96x128".into()));
        // One side: the other from the aspect ratio, no crop.
        let (x, y, ..) = target_resolution(512, 768, 2.0, 1024, 0);
        assert_eq!((x, y), (1024, 1536));
        let (x, y, ..) = target_resolution(512, 768, 2.0, 0, 1000);
        assert_eq!((x, y), (666, 1000));
    }
}
