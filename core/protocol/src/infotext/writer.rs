//! `create_infotext` (docs/a1111-behaviour.md §3.2): the "parameters" text of one image.

use serde_json::{Map, Value};

use crate::api::options::Options;
use crate::choices::SamplerKind;
use crate::python_json::{UNICODE, dumps_with, py_str};

/// Everything `create_infotext` reads from the processing object, resolved for one image.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InfotextInput {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: i64,
    /// Canonical sampler name ("Euler a").
    pub sampler_name: String,
    /// Scheduler label ("Automatic", "Karras"); `None` omits the entry.
    pub scheduler: Option<String>,
    pub cfg_scale: f64,
    /// img2img edit models only.
    pub image_cfg_scale: Option<f64>,
    /// This image's seed.
    pub seed: i64,
    /// `opts.face_restoration_model` when faces were restored.
    pub face_restoration: Option<String>,
    pub width: i64,
    pub height: i64,
    /// sha256[:10] of the checkpoint.
    pub model_hash: Option<String>,
    /// Checkpoint file name without extension.
    pub model_name: Option<String>,
    pub vae_hash: Option<String>,
    pub vae_name: Option<String>,
    /// This image's variation seed.
    pub subseed: i64,
    /// As on the request: int `0` when defaulted, a float when sent.
    pub subseed_strength: Value,
    pub seed_resize_from_w: i64,
    pub seed_resize_from_h: i64,
    /// `inpainting_mask_weight` when the model uses inpainting conditioning.
    pub conditional_mask_weight: Option<f64>,
    /// The effective eta (request `eta`, else the sampler's); decides whether ENSD is written.
    pub eta: Option<f64>,
    pub init_image_hash: Option<String>,
    pub tiling: bool,
    /// `p.extra_generation_params` for this image, in insertion order (`Null` = None).
    pub extra_generation_params: Map<String, Value>,
    /// `Version:` value; pass `crate::VERSION` in production, "v1.10.1" to compare fixtures.
    pub version: Option<String>,
    pub user: Option<String>,
}

fn opt_str(v: &Option<String>) -> Value {
    v.clone().map(Value::from).unwrap_or(Value::Null)
}

fn is_zero(v: &Value) -> bool {
    v.as_f64().is_none_or(|f| f == 0.0)
}

/// A1111's ENSD rule: written only if ENSD ≠ 0, eta ≠ 0 and the sampler declares `uses_ensd`.
fn uses_ensd(input: &InfotextInput, opts: &Options) -> bool {
    if opts.eta_noise_seed_delta() == 0 {
        return false;
    }
    let eta = input.eta.unwrap_or(1.0);
    eta != 0.0 && SamplerKind::find(&input.sampler_name).is_some_and(|s| s.flags().uses_ensd)
}

/// The ordered `generation_params` dict (None entries kept as `Null`).
pub fn generation_params(input: &InfotextInput, opts: &Options) -> Map<String, Value> {
    let mut p = Map::new();
    let mut put = |k: &str, v: Value| {
        p.insert(k.to_string(), v);
    };
    put("Steps", input.steps.into());
    put("Sampler", input.sampler_name.clone().into());
    put("Schedule type", opt_str(&input.scheduler));
    put("CFG scale", input.cfg_scale.into());
    put("Image CFG scale", input.image_cfg_scale.map(Value::from).unwrap_or(Value::Null));
    put("Seed", input.seed.into());
    put("Face restoration", opt_str(&input.face_restoration));
    put("Size", format!("{}x{}", input.width, input.height).into());
    put("Model hash", if opts.add_model_hash_to_info() { opt_str(&input.model_hash) } else { Value::Null });
    put("Model", if opts.add_model_name_to_info() { opt_str(&input.model_name) } else { Value::Null });
    // We never store weights in fp8, so "FP8 weight" / "Cache FP16 weight for LoRA" are always None.
    put("FP8 weight", Value::Null);
    put("Cache FP16 weight for LoRA", Value::Null);
    put("VAE hash", if opts.add_vae_hash_to_info() { opt_str(&input.vae_hash) } else { Value::Null });
    put("VAE", if opts.add_vae_name_to_info() { opt_str(&input.vae_name) } else { Value::Null });
    let variation = !is_zero(&input.subseed_strength);
    put("Variation seed", if variation { input.subseed.into() } else { Value::Null });
    put("Variation seed strength", if variation { input.subseed_strength.clone() } else { Value::Null });
    let resized = input.seed_resize_from_w > 0 && input.seed_resize_from_h > 0;
    put(
        "Seed resize from",
        if resized { format!("{}x{}", input.seed_resize_from_w, input.seed_resize_from_h).into() } else { Value::Null },
    );
    put("Denoising strength", input.extra_generation_params.get("Denoising strength").cloned().unwrap_or(Value::Null));
    put("Conditional mask weight", input.conditional_mask_weight.map(Value::from).unwrap_or(Value::Null));
    let clip_skip = opts.clip_stop_at_last_layers();
    put("Clip skip", if clip_skip <= 1 { Value::Null } else { clip_skip.into() });
    put("ENSD", if uses_ensd(input, opts) { opts.eta_noise_seed_delta().into() } else { Value::Null });
    // Token merging is not implemented: ratios are always 0 → None.
    put("Token merging ratio", Value::Null);
    put("Token merging ratio hr", Value::Null);
    put("Init image hash", opt_str(&input.init_image_hash));
    let rng = opts.randn_source_option();
    put("RNG", if rng != "GPU" { rng.into() } else { Value::Null });
    put("Tiling", if input.tiling { "True".into() } else { Value::Null });
    // `**p.extra_generation_params`: existing keys keep their position, take the new value.
    for (k, v) in &input.extra_generation_params {
        put(k, v.clone());
    }
    put("Version", if opts.add_version_to_infotext() { opt_str(&input.version) } else { Value::Null });
    put("User", opt_str(&input.user));
    p
}

/// `infotext_utils.quote`: JSON-quote (ensure_ascii=False) values containing `,`, `\n` or `:`.
pub fn quote(v: &Value) -> String {
    let text = py_str(v);
    if text.contains(',') || text.contains('\n') || text.contains(':') { dumps_with(v, UNICODE) } else { text }
}

/// Renders generation params as A1111 does: `k: quote(v)` (or just `k` when `v == k`),
/// skipping None, joined with `", "`.
pub fn params_line(params: &Map<String, Value>) -> String {
    params
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| if v.as_str() == Some(k.as_str()) { k.clone() } else { format!("{k}: {}", quote(v)) })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `create_infotext`: prompt, optional `Negative prompt:` line, params line; Python-`strip()`ped.
pub fn create_infotext(input: &InfotextInput, opts: &Options) -> String {
    let params = params_line(&generation_params(input, opts));
    let negative = if input.negative_prompt.is_empty() {
        String::new()
    } else {
        format!("\nNegative prompt: {}", input.negative_prompt)
    };
    format!("{}{}\n{}", input.prompt, negative, params).trim().to_string()
}
