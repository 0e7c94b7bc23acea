//! `process_images`: A1111's request processing (docs/a1111-behaviour.md §6.1–6.2) up to the runner. It applies
//! `override_settings` on a per-request copy of the options (so nothing leaks into concurrent or later
//! requests), resolves the checkpoint, sampler, prompts and seeds, hands each batch to the runner,
//! and builds infotexts, the `info` JSON and the encoded images of a [`Processed`].
//!
//! This module cannot reach the diffusion engine: it only sees the [`Runner`] trait.

mod hires;
mod init_images;
pub mod inpaint;
mod limits;
mod params;
mod prompts;
mod scripts;
pub use scripts::xyz_axis_labels;
mod seeds;

pub use init_images::decode_init_images;
pub use limits::{RequestLimits, WorkCost};
pub use seeds::{all_seeds, all_subseeds, fixed_seed, fixed_seed_with};

pub use params::CommonParams;
pub use prompts::request_prompts;

use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::models_dir::{CheckpointInfo, ModelIndex};
use crate::networks::NetworkFetcher;
use crate::runner::{
    BatchJob, GenerationSettings, HiresPass, JobMode, JobTimings, ModelSelection, RgbImage, Runner, RunnerError,
};
use crate::styles::StyleDatabase;
use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::options::{Options, option_def};
use sdapi_protocol::api::request::{Img2ImgRequest, Txt2ImgRequest};
use sdapi_protocol::api::sampler_resolution::resolve_request_sampler;
use sdapi_protocol::choices::{ExtraParamOptions, RequestExtraParams, SamplerKind, UniPcSettings, UniPcVariant};
use sdapi_protocol::infotext::{InfoJson, InfotextInput, create_infotext};

/// Shared services `process_images` needs.
#[derive(Clone)]
pub struct ProcessingContext {
    pub runner: Arc<dyn Runner>,
    /// The server-wide options (`/sdapi/v1/options`).
    pub options: Arc<RwLock<Options>>,
    pub models: Arc<RwLock<ModelIndex>>,
    /// Written into infotexts' `Version:` and the `info` JSON.
    pub version: String,
    pub limits: RequestLimits,
    /// `styles.csv` (`SDAPI_STYLES_FILE`).
    pub styles: Arc<RwLock<StyleDatabase>>,
    /// Fetches LoRAs and embeddings the models folder lacks (the models bucket), if configured.
    pub fetcher: Option<Arc<dyn NetworkFetcher>>,
}

impl ProcessingContext {
    /// A context with A1111's default options, no styles and no fetcher.
    pub fn new(runner: Arc<dyn Runner>, models: ModelIndex, version: impl Into<String>) -> Self {
        Self {
            runner,
            options: Arc::new(RwLock::new(Options::new())),
            models: Arc::new(RwLock::new(models)),
            version: version.into(),
            limits: RequestLimits::default(),
            styles: Default::default(),
            fetcher: None,
        }
    }
}

/// A generation request as it arrives from the API.
#[derive(Debug, Clone)]
pub enum GenerationRequest {
    Txt2Img(Txt2ImgRequest),
    Img2Img { request: Img2ImgRequest, init_images: Vec<RgbImage> },
}

impl GenerationRequest {
    /// A validated field as the request holds it (`Null` when the model has no such field).
    pub fn field(&self, name: &str) -> &Value {
        match self {
            GenerationRequest::Txt2Img(r) => r.fields.get(name),
            GenerationRequest::Img2Img { request, .. } => request.fields.get(name),
        }
    }

    /// Sets a field after validation (scripts derive their runs this way).
    pub fn set_field(&mut self, name: &str, value: Value) {
        match self {
            GenerationRequest::Txt2Img(r) => r.set_field(name, value),
            GenerationRequest::Img2Img { request, .. } => request.set_field(name, value),
        }
    }

    /// The fields both endpoints share.
    pub fn common(&self) -> CommonParams {
        match self {
            GenerationRequest::Txt2Img(r) => CommonParams::from_txt2img(r),
            GenerationRequest::Img2Img { request, .. } => CommonParams::from_img2img(request),
        }
    }
}

/// One job the runner executed for this request (for `X-Runner-Job`).
#[derive(Debug, Clone)]
pub struct RunnerJobRecord {
    pub job_id: u64,
    pub timings: JobTimings,
}

/// The result of `process_images`, A1111's `Processed`.
#[derive(Debug, Clone)]
pub struct Processed {
    pub images: Vec<RgbImage>,
    pub infotexts: Vec<String>,
    /// `Processed.js()`: the `info` JSON string.
    pub info: String,
    pub all_seeds: Vec<i64>,
    pub jobs: Vec<RunnerJobRecord>,
    pub interrupted: bool,
    /// Options in force for this request (after overrides), e.g. for image encoding.
    pub options: Options,
    pub task_id: String,
    pub mode: &'static str,
    /// Images before the generated ones (a script's grid): image `i` has seed
    /// `all_seeds[i - index_of_first_image]`, the grid the first seed.
    pub index_of_first_image: usize,
}

fn runner_error(e: RunnerError) -> ApiError {
    match e {
        RunnerError::Model(m) => ApiError::runtime(m),
        RunnerError::Panicked(m) => ApiError::runtime(format!("generation panicked: {m}")),
        RunnerError::OverLimit(m) => ApiError::http(422, m),
        other => ApiError::runtime(other.to_string()),
    }
}

/// A1111's `create_task_id`: `task(<kind>-XXXXXXX)` with 7 random `[A-Z0-9]`.
pub fn create_task_id(kind: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS per process; mixing in the time keeps ids distinct.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
    );
    let mut state = hasher.finish();
    let id: String = (0..7)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ALPHABET[((state >> 33) % ALPHABET.len() as u64) as usize] as char
        })
        .collect();
    format!("task({kind}-{id})")
}

/// Bad values A1111 would only fail on deep inside; we answer them up front with a clear 422.
fn validate(p: &CommonParams, limits: &RequestLimits) -> Result<(), ApiError> {
    let bad = |msg: String| Err(ApiError::http(422, msg));
    for (name, text) in [("prompt", &p.prompt), ("negative_prompt", &p.negative_prompt)] {
        let chars = text.chars().count();
        if chars > limits.max_prompt_chars {
            return bad(format!(
                "{name} has {chars} characters, more than this server accepts ({}, SDAPI_MAX_PROMPT_CHARS)",
                limits.max_prompt_chars
            ));
        }
    }
    if p.steps < 1 || p.steps > 1000 {
        return bad(format!("steps must be between 1 and 1000, got {}", p.steps));
    }
    if p.batch_size < 1 || p.batch_size > 64 {
        return bad(format!("batch_size must be between 1 and 64, got {}", p.batch_size));
    }
    if p.n_iter < 1 || p.n_iter > 1000 {
        return bad(format!("n_iter must be between 1 and 1000, got {}", p.n_iter));
    }
    for (name, v) in [("width", p.width), ("height", p.height)] {
        if !(8..=8192).contains(&v) {
            return bad(format!("{name} must be between 8 and 8192, got {v}"));
        }
    }
    // Seed resize draws noise at the "from" size: bounded like the image itself, so a huge value
    // cannot make the allocation abort the process (A1111 only uses it when both are positive).
    if p.seed_resize_from_w > 0 && p.seed_resize_from_h > 0 {
        for (name, v) in [("seed_resize_from_w", p.seed_resize_from_w), ("seed_resize_from_h", p.seed_resize_from_h)] {
            if v > 8192 {
                return bad(format!("{name} must be at most 8192, got {v}"));
            }
        }
    }
    // Costed only once each field is in range, so the products are bounded too.
    if let Some(message) = WorkCost::of(p.width, p.height, p.batch_size, p.n_iter, p.steps).over(limits) {
        return bad(message);
    }
    if !p.cfg_scale.is_finite() {
        return bad("cfg_scale must be a finite number".into());
    }
    if p.restore_faces == Some(true) {
        return Err(ApiError::http(501, "Face restoration (restore_faces) is not supported by this server"));
    }
    if let Some(name) = p.alwayson_scripts.keys().next() {
        return Err(ApiError::alwayson_script_not_found(name));
    }
    Ok(())
}

/// Applies `override_settings` to a copy of the options (A1111 docs/a1111-behaviour.md §6.1 steps 3–4): an unknown
/// `sd_model_checkpoint` is dropped, unknown keys fail with A1111's KeyError.
fn apply_overrides(base: &Options, overrides: &Map<String, Value>, models: &ModelIndex) -> Result<Options, ApiError> {
    let mut opts = base.clone();
    for (k, v) in overrides {
        if k == "sd_model_checkpoint" {
            let known = v.as_str().map(|s| models.find_checkpoint(s).is_some()).unwrap_or(false);
            if !known {
                continue;
            }
        }
        opts.set(k, v.clone())?;
    }
    Ok(opts)
}

fn settings_from(opts: &Options, p: &CommonParams, limits: &RequestLimits) -> GenerationSettings {
    // Options the typed accessors do not cover; finite numbers only.
    let number =
        |key: &str, default: f64| opts.get(key).and_then(Value::as_f64).filter(|v| v.is_finite()).unwrap_or(default);
    GenerationSettings {
        clip_skip: opts.clip_stop_at_last_layers().max(1) as usize,
        randn_source: opts.randn_source(),
        eta_noise_seed_delta: opts.eta_noise_seed_delta(),
        request_extra: RequestExtraParams {
            eta: p.eta,
            s_churn: p.s_churn,
            s_tmin: p.s_tmin,
            s_tmax: p.s_tmax,
            s_noise: p.s_noise,
        },
        extra_options: ExtraParamOptions {
            eta_ancestral: opts.eta_ancestral(),
            eta_ddim: opts.eta_ddim(),
            s_churn: opts.s_churn(),
            s_tmin: opts.s_tmin(),
            s_tmax: opts.s_tmax(),
            s_noise: opts.s_noise(),
        },
        sigma_min: opts.sigma_min(),
        sigma_max: opts.sigma_max(),
        rho: opts.rho(),
        always_discard_next_to_last_sigma: opts.always_discard_next_to_last_sigma(),
        emphasis: opts.emphasis(),
        comma_padding_backtrack: opts.comma_padding_backtrack().max(0) as usize,
        img2img_fix_steps: opts.img2img_fix_steps(),
        inpainting_mask_weight: opts.inpainting_mask_weight(),
        // A1111's slider stops at 10; more would only hold more copies in memory.
        checkpoints_limit: opts.get("sd_checkpoints_limit").and_then(Value::as_i64).unwrap_or(1).clamp(1, 10) as usize,
        use_old_scheduling: opts.use_old_scheduling(),
        beta_dist_alpha: opts.beta_dist_alpha(),
        beta_dist_beta: opts.beta_dist_beta(),
        // A1111 makes previews only with `live_previews_enable` on.
        show_progress_every_n_steps: if opts.live_previews_enable() { opts.show_progress_every_n_steps() } else { 0 },
        use_old_karras_scheduler_sigmas: opts.use_old_karras_scheduler_sigmas(),
        unipc: UniPcSettings::default(),
        max_prompt_chunks: limits.max_prompt_chunks,
        sdxl_crop: (number("sdxl_crop_top", 0.0), number("sdxl_crop_left", 0.0)),
        refiner_aesthetic_scores: (
            number("sdxl_refiner_high_aesthetic_score", 6.0),
            number("sdxl_refiner_low_aesthetic_score", 2.5),
        ),
    }
}

/// The checkpoint with its hash (the infotext's `Model hash`): a read-only models root lists
/// checkpoints unhashed, and the first request that uses one hashes it, once, off the async
/// threads. A hashing failure is logged and the hash left out, as A1111 does.
async fn ensure_hash(ctx: &ProcessingContext, checkpoint: CheckpointInfo) -> CheckpointInfo {
    if checkpoint.item.sha256.is_some() || checkpoint.is_diffusers_folder {
        return checkpoint;
    }
    let models = ctx.models.clone();
    let name = checkpoint.name.clone();
    let hashed =
        tokio::task::spawn_blocking(move || models.write().unwrap_or_else(|e| e.into_inner()).ensure_hash(&name)).await;
    match hashed {
        Ok(Ok(Some(updated))) => updated,
        Ok(Ok(None)) => checkpoint,
        Ok(Err(e)) => {
            tracing::warn!(checkpoint = %checkpoint.name, "cannot hash: {e}");
            checkpoint
        }
        Err(e) => {
            tracing::warn!(checkpoint = %checkpoint.name, "hashing task failed: {e}");
            checkpoint
        }
    }
}

/// Options A1111 reads while generating that this server stores but does not apply yet
/// (docs/options.md). A request that runs with any of them away from its default is logged, so an
/// image that differs from A1111's is explained in the logs.
const NOT_HONOURED_OPTIONS: [&str; 10] = [
    "s_min_uncond",
    "skip_early_cond",
    "pad_cond_uncond",
    "batch_cond_uncond",
    "sgm_noise_multiplier",
    "img2img_extra_noise",
    "sd_noise_schedule",
    "use_downcasted_alpha_bar",
    "tiling",
    "face_restoration",
];

/// The options of [`NOT_HONOURED_OPTIONS`] whose value differs from A1111's default.
pub fn not_honoured_options(opts: &Options) -> Vec<&'static str> {
    NOT_HONOURED_OPTIONS.into_iter().filter(|key| opts.get(key) != option_def(key).map(|d| &d.default)).collect()
}

/// Runs a generation request through the runner, batch by batch (or through its script).
pub async fn process_images(ctx: &ProcessingContext, request: GenerationRequest) -> Result<Processed, ApiError> {
    let script = request.field("script_name").as_str().map(str::to_string);
    match request {
        GenerationRequest::Img2Img { request, init_images } if scripts::is_sd_upscale(&request) => {
            validate(&CommonParams::from_img2img(&request), &ctx.limits)?;
            scripts::sd_upscale(ctx, request, init_images).await
        }
        GenerationRequest::Img2Img { request, init_images } if scripts::is_poor_mans_outpainting(&request) => {
            validate(&CommonParams::from_img2img(&request), &ctx.limits)?;
            scripts::poor_mans_outpainting(ctx, request, init_images).await
        }
        GenerationRequest::Img2Img { request, init_images } if scripts::is_loopback(&request) => {
            validate(&CommonParams::from_img2img(&request), &ctx.limits)?;
            scripts::loopback(ctx, request, init_images).await
        }
        request if scripts::is_prompts_from_file(&request) => scripts::prompts_from_file(ctx, request).await,
        request if scripts::is_prompt_matrix(&request) => scripts::prompt_matrix(ctx, request).await,
        request if scripts::is_xyz_plot(&request) => scripts::xyz_plot(ctx, request).await,
        request => match script.filter(|s| !s.is_empty()) {
            Some(name) => Err(ApiError::script_not_found(&name)),
            None => process_images_with(ctx, request, &Map::new()).await,
        },
    }
}

/// What a script sets on A1111's `p` before `process_images` when it assigns lists to
/// `p.prompt` (or `p.negative_prompt`) and `p.seed`: one prompt and one seed per image. The
/// request's `n_iter` batches of `batch_size` slice them; the last batch may be short.
#[derive(Debug, Clone, Default)]
pub(crate) struct ImagePlan {
    /// Per-image prompts (None: the request's prompt for every image).
    pub prompts: Option<Vec<String>>,
    /// Per-image negative prompts (None: the request's).
    pub negative_prompts: Option<Vec<String>>,
    /// Per-image seeds, used as given (A1111: `all_seeds = p.seed` for a list).
    pub seeds: Vec<i64>,
}

impl ImagePlan {
    /// A1111's `setup_prompts`: the images are the prompt list's, else the negative list's.
    fn images(&self) -> usize {
        self.prompts.as_ref().or(self.negative_prompts.as_ref()).map_or(self.seeds.len(), Vec::len)
    }
}

/// [`process_images`] without scripts; `script_extra`: the infotext entries a script adds first.
pub(crate) async fn process_images_with(
    ctx: &ProcessingContext,
    request: GenerationRequest,
    script_extra: &Map<String, Value>,
) -> Result<Processed, ApiError> {
    process_images_planned(ctx, request, script_extra, None).await
}

/// [`process_images_with`] with a script's per-image prompts and seeds.
pub(crate) async fn process_images_planned(
    ctx: &ProcessingContext,
    request: GenerationRequest,
    script_extra: &Map<String, Value>,
    plan: Option<&ImagePlan>,
) -> Result<Processed, ApiError> {
    let (p, mode_name, denoising_strength, img2img) = match &request {
        GenerationRequest::Txt2Img(r) => (CommonParams::from_txt2img(r), "txt2img", r.denoising_strength, None),
        GenerationRequest::Img2Img { request: r, init_images } => {
            if init_images.is_empty() {
                return Err(ApiError::init_image_not_found());
            }
            init_images::check_init_image_count(init_images.len(), r.batch_size.unwrap_or(1))?;
            (CommonParams::from_img2img(r), "img2img", Some(r.denoising_strength), Some((r, init_images)))
        }
    };
    validate(&p, &ctx.limits)?;
    let img2img_mode = img2img.is_some();
    let task_id = p.force_task_id.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| create_task_id(mode_name));

    // Per-request options: overrides never touch the shared copy unless asked to persist.
    let (opts, checkpoint, vae) = {
        let base = ctx.options.read().unwrap_or_else(|e| e.into_inner()).clone();
        let models = ctx.models.read().unwrap_or_else(|e| e.into_inner());
        let opts = apply_overrides(&base, &p.override_settings, &models)?;
        let wanted = opts.sd_model_checkpoint().unwrap_or_default();
        let checkpoint = models
            .find_checkpoint(&wanted)
            .or_else(|| models.default_checkpoint())
            .cloned()
            .ok_or_else(|| ApiError::runtime("No checkpoints found in the models directory"))?;
        let vae = opts
            .get("sd_vae")
            .and_then(Value::as_str)
            .filter(|v| !matches!(*v, "Automatic" | "None" | ""))
            .and_then(|v| models.find_vae(v))
            .map(|v| std::path::PathBuf::from(&v.filename));
        (opts, checkpoint, vae)
    };
    if !p.override_settings_restore_afterwards && !p.override_settings.is_empty() {
        let mut shared = ctx.options.write().unwrap_or_else(|e| e.into_inner());
        *shared = opts.clone();
    }
    let checkpoint = ensure_hash(ctx, checkpoint).await;
    let ignored = not_honoured_options(&opts);
    if !ignored.is_empty() {
        tracing::warn!(?ignored, "options set away from A1111's defaults that this server does not apply yet");
    }

    // Names are parsed here, once: the runner gets enums.
    let (sampler, scheduler) = resolve_request_sampler(&p.requested_sampler, p.scheduler.as_deref());
    let (sampler_name, scheduler_label) = (sampler.name().to_string(), scheduler.label().to_string());
    let n_iter = p.n_iter as usize;
    // Seeds and prompts are laid out for the requested batch size, as A1111 does before img2img's
    // init may shrink the batch to the number of init images.
    let total = plan.map_or(p.batch_size as usize * n_iter, ImagePlan::images);
    let batch_size = match &img2img {
        Some((_, images)) => init_images::img2img_batch_size(images.len(), p.batch_size as usize),
        None => p.batch_size as usize,
    };

    // Seeds (docs/a1111-behaviour.md §4.1): -1 resolves to a random seed; variation seeds pin the main seed.
    let seed = fixed_seed(p.seed);
    let subseed = fixed_seed(p.subseed);
    let strength = p.subseed_strength_f64();
    let all_seeds = match plan {
        Some(plan) => plan.seeds.iter().copied().chain(std::iter::repeat(seed)).take(total).collect(),
        None => all_seeds(seed, strength, total),
    };
    let all_subseeds = all_subseeds(subseed, total);
    // Styles, comments and the default LoRA apply to each prompt (A1111's `setup_prompts`).
    let styled = |prompt: &str, negative: &str| {
        let styles = ctx.styles.read().unwrap_or_else(|e| e.into_inner());
        let texts = CommonParams { prompt: prompt.to_string(), negative_prompt: negative.to_string(), ..p.clone() };
        let (prompt, negative) = request_prompts(&texts, &styles, &opts);
        (prompts::with_default_lora(ctx, prompt, &opts), negative)
    };
    let (prompt, negative_prompt) = styled(&p.prompt, &p.negative_prompt);
    let model = ModelSelection { checkpoint: checkpoint.path(), vae };
    let hires = match &request {
        GenerationRequest::Txt2Img(r) => {
            let models = ctx.models.read().unwrap_or_else(|e| e.into_inner());
            hires::setup(
                r,
                p.width,
                p.height,
                (p.batch_size, p.n_iter, p.steps),
                sampler,
                scheduler,
                &model,
                |name| models.find_checkpoint(name).cloned(),
                |name| model_upscaler(&models, &opts, name),
                &ctx.limits,
            )?
        }
        GenerationRequest::Img2Img { .. } => None,
    };
    // `hr_prompt` / `hr_negative_prompt` ("" = the first pass's), through the same styles and comments.
    let hr_texts = hires.as_ref().map(|h| {
        let mut hp = p.clone();
        if !h.prompt.is_empty() {
            hp.prompt = h.prompt.clone();
        }
        if !h.negative_prompt.is_empty() {
            hp.negative_prompt = h.negative_prompt.clone();
        }
        let styles = ctx.styles.read().unwrap_or_else(|e| e.into_inner());
        let (hr_prompt, hr_negative) = request_prompts(&hp, &styles, &opts);
        (prompts::with_default_lora(ctx, hr_prompt, &opts), hr_negative)
    });
    let (all_prompts, all_negative_prompts): (Vec<String>, Vec<String>) = match plan {
        Some(plan) => (0..total)
            .map(|i| {
                let at = |list: &Option<Vec<String>>, own: &str| {
                    list.as_ref().and_then(|l| l.get(i)).cloned().unwrap_or_else(|| own.to_string())
                };
                styled(&at(&plan.prompts, &p.prompt), &at(&plan.negative_prompts, &p.negative_prompt))
            })
            .unzip(),
        None => (vec![prompt; total], vec![negative_prompt; total]),
    };
    // Without a plan every batch has the same prompts (the API takes one prompt), so one
    // resolution serves all; a plan's batches are resolved one by one.
    let first_batch = ..batch_size.min(total);
    let (batch_networks, job_networks) =
        prompts::batch_networks_for(ctx, &all_prompts[first_batch], &all_negative_prompts[first_batch], &opts).await?;

    // The second pass's prompts without their tags; it runs on the first pass's model, so its
    // LoRAs must be the same.
    let hr_prompts_for_jobs = match &hr_texts {
        None => None,
        Some((hr_prompt, hr_negative)) => {
            let hr_prompts = vec![hr_prompt.clone(); batch_size];
            let hr_negatives = vec![hr_negative.clone(); batch_size];
            let (hr_batch, hr_job) = prompts::batch_networks_for(ctx, &hr_prompts, &hr_negatives, &opts).await?;
            if hr_job.loras != job_networks.loras {
                return Err(ApiError::http(
                    501,
                    "A hires prompt with other LoRAs than the first pass's is not supported by this server yet",
                ));
            }
            Some((hr_batch.prompts, hr_negatives))
        }
    };

    let mut settings = settings_from(&opts, &p, &ctx.limits);
    if sampler == SamplerKind::UniPc {
        settings.unipc = opts.uni_pc()?;
        if settings.unipc.variant == UniPcVariant::VaryCoeff {
            return Err(ApiError::http(501, "UniPC variant \"vary_coeff\" is not supported by this server"));
        }
    }
    let refiner = refiner_for(ctx, &request, &checkpoint, &model, &opts)?;
    let mut inpainting = None;
    let job_mode = match img2img {
        None => JobMode::Txt2Img,
        Some((r, images)) => {
            let (init_images, inpaint) = match inpaint::MaskSettings::from_request(r)? {
                Some(settings) => {
                    let inpaint::PreparedInpaint { init_images, job, overlay, extra } =
                        prepare_inpaint(ctx, r, settings, images).await?;
                    inpainting = Some((overlay, extra));
                    (init_images, job)
                }
                None => (images.clone(), None),
            };
            JobMode::Img2Img {
                init_images,
                denoising_strength: r.denoising_strength,
                initial_noise_multiplier: r.initial_noise_multiplier.unwrap_or(opts.initial_noise_multiplier()),
                inpaint,
            }
        }
    };
    let overlay_inpaint = opts.get("overlay_inpaint").and_then(Value::as_bool).unwrap_or(true);
    let mut inpainting_conditioning = false;

    let mut images = Vec::with_capacity(total);
    let mut image_index = Vec::with_capacity(total);
    let mut jobs = Vec::with_capacity(n_iter);
    let mut interrupted = false;
    let mut extra_params: Vec<(String, String)> = Vec::new();
    if let Some(hashes) = &batch_networks.lora_hashes {
        extra_params.push(("Lora hashes".into(), hashes.clone()));
    }
    for n in 0..n_iter {
        if n > 0 && ctx.runner.state().is_interrupted() {
            interrupted = true;
            ctx.runner.state().end();
            break;
        }
        let range = (n * batch_size).min(total)..((n + 1) * batch_size).min(total);
        if range.is_empty() {
            break;
        }
        let planned = match plan {
            Some(_) if n > 0 => Some(
                prompts::batch_networks_for(
                    ctx,
                    &all_prompts[range.clone()],
                    &all_negative_prompts[range.clone()],
                    &opts,
                )
                .await?,
            ),
            _ => None,
        };
        let (batch_prompts, networks) = match &planned {
            Some((batch, job)) => (batch.prompts.clone(), job.clone()),
            None => (batch_networks.prompts.clone(), job_networks.clone()),
        };
        let job = BatchJob {
            task_id: task_id.clone(),
            batch_index: n,
            batch_count: n_iter,
            model: model.clone(),
            mode: job_mode.clone(),
            prompts: batch_prompts.clone(),
            negative_prompts: all_negative_prompts[range.clone()].to_vec(),
            seeds: all_seeds[range.clone()].to_vec(),
            subseeds: all_subseeds[range.clone()].to_vec(),
            subseed_strength: strength,
            seed_resize_from_w: p.seed_resize_from_w,
            seed_resize_from_h: p.seed_resize_from_h,
            sampler,
            scheduler,
            steps: p.steps as usize,
            cfg_scale: p.cfg_scale,
            width: p.width as usize,
            height: p.height as usize,
            settings: settings.clone(),
            networks,
            refiner: refiner.clone(),
            hires: hires.as_ref().zip(hr_prompts_for_jobs.as_ref()).map(|(h, (prompts, negatives))| {
                // A planned batch without its own hires prompt repeats its first-pass prompts.
                let own = plan.is_some();
                HiresPass {
                    prompts: if own && h.prompt.is_empty() {
                        batch_prompts.clone()
                    } else {
                        prompts.iter().take(range.len()).cloned().collect()
                    },
                    negative_prompts: if own && h.negative_prompt.is_empty() {
                        all_negative_prompts[range.clone()].to_vec()
                    } else {
                        negatives.iter().take(range.len()).cloned().collect()
                    },
                    ..h.pass.clone()
                }
            }),
        };
        let report = ctx.runner.submit(job).wait().await.map_err(runner_error)?;
        jobs.push(RunnerJobRecord { job_id: report.job_id, timings: report.timings });
        for (k, v) in report.output.extra_generation_params {
            if !extra_params.iter().any(|(ek, _)| ek == &k) {
                extra_params.push((k, v));
            }
        }
        inpainting_conditioning |= report.output.inpainting_conditioning;
        let batch_images = report.output.images;
        let offset = n * batch_size;
        for (i, img) in batch_images.into_iter().enumerate() {
            let img = match inpainting.as_ref().filter(|_| overlay_inpaint) {
                Some((overlay, _)) => inpaint::apply_overlay(&img, overlay, i),
                None => img,
            };
            images.push(img);
            image_index.push(offset + i);
        }
        if report.output.interrupted {
            interrupted = true;
            break;
        }
    }

    let mut extra = script_extra.clone();
    if let Some(ds) = denoising_strength.filter(|_| img2img_mode) {
        extra.insert("Denoising strength".into(), Value::from(ds));
    }
    for (k, v) in inpainting.iter().flat_map(|(_, extra)| extra) {
        extra.insert(k.clone(), v.clone());
    }
    let conditional_mask_weight = inpainting_conditioning.then_some(settings.inpainting_mask_weight);
    if let Some(h) = &hires {
        extra.extend(h.extra.clone());
    }
    for (k, v) in extra_params {
        extra.insert(k, Value::String(v));
    }
    let version = Some(ctx.version.clone());
    let infotext_for = |index: usize| {
        let input = InfotextInput {
            prompt: all_prompts[index].clone(),
            negative_prompt: all_negative_prompts[index].clone(),
            steps: p.steps,
            sampler_name: sampler_name.clone(),
            scheduler: Some(scheduler_label.clone()),
            cfg_scale: p.cfg_scale,
            seed: all_seeds[index],
            width: p.width,
            height: p.height,
            model_hash: checkpoint.item.hash.clone(),
            model_name: Some(checkpoint.model_name()),
            subseed: all_subseeds[index],
            subseed_strength: p.subseed_strength.clone(),
            seed_resize_from_w: p.seed_resize_from_w,
            seed_resize_from_h: p.seed_resize_from_h,
            eta: p.eta,
            conditional_mask_weight,
            tiling: p.tiling.unwrap_or(false),
            extra_generation_params: hires_prompt_entries(
                &extra,
                hr_texts.as_ref(),
                &all_prompts[index],
                &all_negative_prompts[index],
            ),
            version: version.clone(),
            ..Default::default()
        };
        create_infotext(&input, &opts)
    };
    let infotexts: Vec<String> = image_index.into_iter().map(infotext_for).collect();
    let info = InfoJson {
        prompt: all_prompts[0].clone(),
        all_prompts: all_prompts.clone(),
        negative_prompt: all_negative_prompts[0].clone(),
        all_negative_prompts: all_negative_prompts.clone(),
        seed: all_seeds[0],
        all_seeds: all_seeds.clone(),
        subseed: all_subseeds[0],
        all_subseeds: all_subseeds.clone(),
        subseed_strength: p.subseed_strength.clone(),
        width: p.width,
        height: p.height,
        sampler_name: sampler_name.clone(),
        cfg_scale: p.cfg_scale,
        steps: p.steps,
        batch_size: batch_size as i64,
        restore_faces: p.restore_faces.unwrap_or(false),
        face_restoration_model: None,
        sd_model_name: Some(checkpoint.model_name()),
        sd_model_hash: checkpoint.item.hash.clone(),
        sd_vae_name: None,
        sd_vae_hash: None,
        seed_resize_from_w: p.seed_resize_from_w,
        seed_resize_from_h: p.seed_resize_from_h,
        denoising_strength: denoising_strength.map(Value::from).unwrap_or(Value::Null),
        extra_generation_params: extra.clone(),
        index_of_first_image: 0,
        infotexts: infotexts.clone(),
        styles: p.styles.clone(),
        job_timestamp: ctx.runner.state().job_timestamp(),
        clip_skip: opts.clip_stop_at_last_layers(),
        is_using_inpainting_conditioning: inpainting_conditioning,
        version,
    }
    .to_info_string();
    Ok(Processed {
        images,
        infotexts,
        info,
        all_seeds,
        jobs,
        interrupted,
        options: opts,
        task_id,
        mode: mode_name,
        index_of_first_image: 0,
    })
}

/// The mask branch of img2img, on a blocking thread (decoding, blurring and resizing are CPU work).
async fn prepare_inpaint(
    ctx: &ProcessingContext,
    r: &Img2ImgRequest,
    settings: inpaint::MaskSettings,
    images: &[RgbImage],
) -> Result<inpaint::PreparedInpaint, ApiError> {
    let (r, images) = (r.clone(), images.to_vec());
    let max_pixels = ctx.limits.max_batch_megapixels as u64 * 1_000_000;
    tokio::task::spawn_blocking(move || inpaint::prepare(&r, &settings, &images, max_pixels))
        .await
        .map_err(|e| ApiError::runtime(e.to_string()))?
}

/// `refiner_checkpoint` (not "", "None", "none"): an unknown name is A1111's Exception; the
/// first pass's own checkpoint changes nothing (A1111 does not switch to the loaded model).
fn refiner_for(
    ctx: &ProcessingContext,
    request: &GenerationRequest,
    checkpoint: &CheckpointInfo,
    model: &ModelSelection,
    opts: &Options,
) -> Result<Option<crate::runner::Refiner>, ApiError> {
    let (name, switch_at) = match request {
        GenerationRequest::Txt2Img(r) => (r.refiner_checkpoint.clone(), r.refiner_switch_at),
        GenerationRequest::Img2Img { request: r, .. } => (r.refiner_checkpoint.clone(), r.refiner_switch_at),
    };
    let Some(name) = name.filter(|n| !matches!(n.as_str(), "" | "None" | "none")) else {
        return Ok(None);
    };
    let found = ctx
        .models
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .find_checkpoint(&name)
        .cloned()
        .ok_or_else(|| ApiError::python("Exception", format!("Could not find checkpoint with name {name}")))?;
    if found.path() == checkpoint.path() {
        return Ok(None);
    }
    if switch_at.is_some_and(|v| !v.is_finite()) {
        return Err(ApiError::http(422, "refiner_switch_at must be a finite number"));
    }
    let pass = match opts.get("hires_fix_refiner_pass").and_then(Value::as_str) {
        Some("first pass") => crate::runner::RefinerPass::First,
        Some("both passes") => crate::runner::RefinerPass::Both,
        _ => crate::runner::RefinerPass::Second,
    };
    let title = found.short_title();
    Ok(Some(crate::runner::Refiner {
        checkpoint: ModelSelection { checkpoint: found.path(), vae: model.vae.clone() },
        switch_at,
        by_sample_steps: opts.get("refiner_switch_by_sample_steps").and_then(Value::as_bool).unwrap_or(false),
        title,
        pass,
    }))
}

/// The model upscaler named `name` (`ESRGAN/`, `RealESRGAN/`), tiled as the options say.
pub fn model_upscaler(models: &ModelIndex, opts: &Options, name: &str) -> Option<crate::runner::ModelUpscaler> {
    let file = models.upscalers.iter().find(|u| u.name == name)?;
    let int = |key: &str, default: i64| opts.get(key).and_then(Value::as_i64).unwrap_or(default).max(0) as usize;
    Some(crate::runner::ModelUpscaler {
        name: file.name.clone(),
        path: file.path.clone(),
        tile: int("ESRGAN_tile", 192),
        tile_overlap: int("ESRGAN_tile_overlap", 8),
    })
}

/// A1111 evaluates `Hires prompt` / `Hires negative prompt` per image: the hires text when it
/// differs from the image's prompt, else nothing (`info` keeps them null).
fn hires_prompt_entries(
    extra: &Map<String, Value>,
    hr_texts: Option<&(String, String)>,
    prompt: &str,
    negative_prompt: &str,
) -> Map<String, Value> {
    let mut extra = extra.clone();
    if let Some((hr_prompt, hr_negative)) = hr_texts {
        if hr_prompt != prompt {
            extra.insert("Hires prompt".into(), Value::String(hr_prompt.clone()));
        }
        if hr_negative != negative_prompt {
            extra.insert("Hires negative prompt".into(), Value::String(hr_negative.clone()));
        }
    }
    extra
}

#[cfg(test)]
mod option_tests {
    use super::*;

    #[test]
    fn only_options_moved_from_their_default_are_reported() {
        let mut opts = Options::new();
        assert!(not_honoured_options(&opts).is_empty());
        opts.set("tiling", Value::Bool(true)).unwrap();
        opts.set("s_min_uncond", Value::from(0.5)).unwrap();
        opts.set("CLIP_stop_at_last_layers", Value::from(2)).unwrap();
        assert_eq!(not_honoured_options(&opts), vec!["s_min_uncond", "tiling"]);
    }
}
