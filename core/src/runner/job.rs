//! The unit of work the runner executes: one batch of images, fully resolved by `process_images`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sdapi_protocol::choices::{
    EmphasisMode, ExtraParamOptions, LatentUpscaleMode, RandnSource, RequestExtraParams, SamplerKind, Scheduler,
    UniPcSettings,
};
use sdapi_protocol::images::BuiltinUpscaler;

/// An 8-bit RGB image, row-major HWC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

/// Which checkpoint (and optional separate VAE) a job needs; the worker keeps a cache keyed by this.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelSelection {
    /// Single-file checkpoint or diffusers folder.
    pub checkpoint: PathBuf,
    pub vae: Option<PathBuf>,
}

/// A LoRA merged into the model for a batch: A1111's `<lora:name:te:unet:dyn>`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraActivation {
    pub path: PathBuf,
    /// Multiplier of the text-encoder layers.
    pub te_multiplier: f64,
    /// Multiplier of every other layer (UNet).
    pub unet_multiplier: f64,
    /// `dyn`: use only the first `dyn` ranks of the update (None: all).
    pub dyn_dim: Option<usize>,
}

/// An embedding file the tokenizer may find in the prompts (matched by its name's tokens).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EmbeddingFile {
    pub name: String,
    pub path: PathBuf,
}

/// The extra networks of a batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobNetworks {
    /// In prompt order; the model the batch runs on has exactly these merged.
    pub loras: Vec<LoraActivation>,
    /// Every embedding available (A1111 registers them all and matches them by token ids).
    pub embeddings: Arc<Vec<EmbeddingFile>>,
    /// `textual_inversion_add_hashes_to_infotext`: report `TI hashes`.
    pub ti_hashes_in_infotext: bool,
}

/// txt2img or img2img specifics.
#[derive(Clone, Debug)]
pub enum JobMode {
    Txt2Img,
    Img2Img {
        /// Resized to the job's width x height (at their own size with `resize_mode` 3, whose
        /// latent is resized instead), one per image or one shared.
        init_images: Vec<RgbImage>,
        denoising_strength: f64,
        initial_noise_multiplier: f64,
        /// Inpainting: the mask prepared by `process_images` (None: plain img2img).
        inpaint: Option<InpaintJob>,
    },
}

/// What the sampler needs of an inpainting mask (A1111's `init` mask branch, done on the CPU
/// before queueing): where to regenerate in latent space, how to seed the masked latent, and
/// the pixel mask inpainting checkpoints are conditioned on.
#[derive(Clone, Debug, PartialEq)]
pub struct InpaintJob {
    /// A1111's `nmask`, (height/8) × (width/8), row-major: 1 = regenerate, 0 = keep the init
    /// latent (values between when `mask_round` is off).
    pub latent_nmask: Vec<f32>,
    /// `inpainting_fill` 2 and 3 act on the encoded latent.
    pub latent_fill: LatentFill,
    /// The processed mask, width × height in [0, 1], not rounded: the conditioning of 9-channel
    /// inpainting checkpoints.
    pub conditioning_mask: Vec<f32>,
    /// `mask_round`: round the conditioning mask (SDXL inpainting models always round).
    pub round_conditioning_mask: bool,
}

/// `inpainting_fill` in latent space: 2 replaces the masked latent by the seed's noise, 3 by zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatentFill {
    Keep,
    Noise,
    Nothing,
}

/// Generation settings that come from options (possibly overridden per request).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationSettings {
    pub clip_skip: usize,
    pub randn_source: RandnSource,
    pub eta_noise_seed_delta: i64,
    /// The request's `eta`, `s_churn`, `s_tmin`, `s_tmax`, `s_noise` (None: not sent).
    pub request_extra: RequestExtraParams,
    /// The options A1111 combines with them (`eta_ancestral`, `eta_ddim`, `s_*`).
    pub extra_options: ExtraParamOptions,
    pub sigma_min: f64,
    pub sigma_max: f64,
    pub rho: f64,
    pub always_discard_next_to_last_sigma: bool,
    pub emphasis: EmphasisMode,
    pub comma_padding_backtrack: usize,
    pub img2img_fix_steps: bool,
    /// `inpainting_mask_weight`: how much of the masked image inpainting checkpoints see.
    pub inpainting_mask_weight: f64,
    /// `sd_checkpoints_limit`: checkpoints kept loaded, the current one included.
    pub checkpoints_limit: usize,
    pub use_old_scheduling: bool,
    pub beta_dist_alpha: f64,
    pub beta_dist_beta: f64,
    /// 0 disables live previews (`live_previews_enable` off, or the option itself ≤ 0).
    pub show_progress_every_n_steps: i64,
    /// `use_old_karras_scheduler_sigmas`: Karras over (0.1, 10) instead of the model's range.
    pub use_old_karras_scheduler_sigmas: bool,
    /// UniPC's options, parsed (and checked) when the request uses UniPC.
    pub unipc: UniPcSettings,
    /// Most 75-token chunks one prompt text may encode to (`SDAPI_MAX_PROMPT_CHUNKS`).
    pub max_prompt_chunks: usize,
    /// `sdxl_crop_top`, `sdxl_crop_left`: SDXL's crop conditioning.
    pub sdxl_crop: (f64, f64),
    /// `sdxl_refiner_high_aesthetic_score`, `sdxl_refiner_low_aesthetic_score`: what the SDXL
    /// refiner is conditioned on for prompts and for negative prompts.
    pub refiner_aesthetic_scores: (f64, f64),
}

impl Default for GenerationSettings {
    fn default() -> Self {
        Self {
            clip_skip: 1,
            randn_source: RandnSource::Gpu,
            eta_noise_seed_delta: 0,
            request_extra: RequestExtraParams::default(),
            extra_options: ExtraParamOptions::default(),
            sigma_min: 0.0,
            sigma_max: 0.0,
            rho: 0.0,
            always_discard_next_to_last_sigma: false,
            emphasis: EmphasisMode::Original,
            comma_padding_backtrack: 20,
            img2img_fix_steps: false,
            inpainting_mask_weight: 1.0,
            checkpoints_limit: 1,
            use_old_scheduling: false,
            beta_dist_alpha: 0.6,
            beta_dist_beta: 0.6,
            show_progress_every_n_steps: 10,
            use_old_karras_scheduler_sigmas: false,
            unipc: UniPcSettings::default(),
            max_prompt_chunks: 64,
            sdxl_crop: (0.0, 0.0),
            refiner_aesthetic_scores: (6.0, 2.5),
        }
    }
}

/// One batch: `prompts.len() == seeds.len() == batch size`.
#[derive(Clone, Debug)]
pub struct BatchJob {
    /// A1111 task id of the request this batch belongs to (`task(txt2img-XXXXXXX)`).
    pub task_id: String,
    /// 0-based batch number within the request and the request's batch count (`n_iter`).
    pub batch_index: usize,
    pub batch_count: usize,
    pub model: ModelSelection,
    pub mode: JobMode,
    pub prompts: Vec<String>,
    pub negative_prompts: Vec<String>,
    pub seeds: Vec<i64>,
    pub subseeds: Vec<i64>,
    pub subseed_strength: f64,
    pub seed_resize_from_w: i64,
    pub seed_resize_from_h: i64,
    /// Resolved by `process_images` (legacy combined names, Automatic conversion) before queueing.
    pub sampler: SamplerKind,
    pub scheduler: Scheduler,
    pub steps: usize,
    pub cfg_scale: f64,
    pub width: usize,
    pub height: usize,
    pub settings: GenerationSettings,
    /// LoRAs and embeddings; `prompts` no longer contain the `<lora:…>` tags.
    pub networks: JobNetworks,
    /// txt2img's hires fix: a second pass at the upscaled size (`width`/`height` are the first pass).
    pub hires: Option<HiresPass>,
    /// `refiner_checkpoint` / `refiner_switch_at`: sampling continues on another model.
    pub refiner: Option<Refiner>,
}

impl BatchJob {
    /// A job that only names a model (no images): what a preload prepares.
    pub fn model_only(model: ModelSelection) -> Self {
        Self {
            task_id: String::new(),
            batch_index: 0,
            batch_count: 1,
            model,
            mode: JobMode::Txt2Img,
            prompts: Vec::new(),
            negative_prompts: Vec::new(),
            seeds: Vec::new(),
            subseeds: Vec::new(),
            subseed_strength: 0.0,
            seed_resize_from_w: -1,
            seed_resize_from_h: -1,
            sampler: SamplerKind::Euler,
            scheduler: Scheduler::Automatic,
            steps: 0,
            cfg_scale: 7.0,
            width: 512,
            height: 512,
            settings: GenerationSettings::default(),
            networks: JobNetworks::default(),
            hires: None,
            refiner: None,
        }
    }
}

/// A1111's refiner (`sd_samplers_common.apply_refiner`): at the first denoiser call whose
/// completed ratio — `(999 − t) / 1000` for the timestep nearest the current sigma, or
/// `step / steps` with `refiner_switch_by_sample_steps` — reaches `switch_at` (at once when
/// unset), the sampler continues on `checkpoint` with conditioning recomputed for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Refiner {
    pub checkpoint: ModelSelection,
    pub switch_at: Option<f64>,
    pub by_sample_steps: bool,
    /// The infotext's `Refiner` (the checkpoint's short title).
    pub title: String,
    /// With the hires fix, which pass it applies to (`hires_fix_refiner_pass`).
    pub pass: RefinerPass,
}

/// `hires_fix_refiner_pass`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefinerPass {
    First,
    Second,
    Both,
}

/// The hires fix's second pass (A1111's `sample_hr_pass`): the first pass upscaled to
/// `upscale_width` × `upscale_height`, cropped by `truncate_x/y` latent columns/rows, then sampled
/// as img2img with exactly `steps` steps at `denoising_strength`.
#[derive(Clone, Debug)]
pub struct HiresPass {
    pub upscale_width: usize,
    pub upscale_height: usize,
    /// `truncate_x`/`truncate_y`: latent pixels cut off (half before, half after) to reach the
    /// requested box when both `hr_resize_x` and `hr_resize_y` were given.
    pub truncate_x: usize,
    pub truncate_y: usize,
    pub upscale: HiresUpscale,
    /// `hr_checkpoint_name` when it names another checkpoint: the second pass runs on it.
    pub checkpoint: Option<ModelSelection>,
    pub steps: usize,
    pub denoising_strength: f64,
    pub sampler: SamplerKind,
    pub scheduler: Scheduler,
    /// `hr_prompt` / `hr_negative_prompt` per image (the first-pass prompts when not sent).
    pub prompts: Vec<String>,
    pub negative_prompts: Vec<String>,
}

impl HiresPass {
    /// The latent size after the crop, i.e. the output image size / 8.
    pub fn latent_size(&self) -> (usize, usize) {
        let (h, w) = (self.upscale_height / 8, self.upscale_width / 8);
        (h.saturating_sub(self.truncate_y), w.saturating_sub(self.truncate_x))
    }
}

/// What a finished batch hands back.
#[derive(Clone, Debug, Default)]
pub struct BatchOutput {
    pub images: Vec<RgbImage>,
    /// The batch was cut short by `/interrupt` or `/skip`; `images` hold the partial results.
    pub interrupted: bool,
    pub skipped: bool,
    /// Extra infotext parameters the engine determined (insertion order), e.g. `Schedule type`.
    pub extra_generation_params: Vec<(String, String)>,
    /// The model took inpainting conditioning (a 9-channel UNet): A1111's
    /// `is_using_inpainting_conditioning`.
    pub inpainting_conditioning: bool,
}

/// Per-job timings, exposed to callers outside the process via the `X-Runner-Job` header.
#[derive(Clone, Debug, Default)]
pub struct JobTimings {
    pub queue_wait: Duration,
    pub execute: Duration,
    pub total: Duration,
}

/// A finished job as the submitter sees it.
#[derive(Clone, Debug)]
pub struct JobReport {
    pub job_id: u64,
    pub output: BatchOutput,
    pub timings: JobTimings,
}

impl From<image::RgbImage> for RgbImage {
    fn from(img: image::RgbImage) -> Self {
        Self { width: img.width(), height: img.height(), pixels: img.into_raw() }
    }
}

impl RgbImage {
    /// The same pixels as an `image` crate buffer (for the codecs).
    pub fn to_image(&self) -> Option<image::RgbImage> {
        image::RgbImage::from_raw(self.width, self.height, self.pixels.clone())
    }

    /// The same pixels as a [`Raster`](sdapi_protocol::images::Raster) (for the pixel tools).
    pub fn to_raster(&self) -> sdapi_protocol::images::Raster {
        sdapi_protocol::images::Raster {
            width: self.width as usize,
            height: self.height as usize,
            channels: 3,
            data: self.pixels.clone(),
        }
    }

    /// An RGB raster as an image (a raster of other channels is converted first).
    pub fn from_raster(raster: sdapi_protocol::images::Raster) -> Self {
        let raster = raster.with_channels(3);
        Self { width: raster.width as u32, height: raster.height as u32, pixels: raster.data }
    }
}

/// How the hires fix upscales the first pass: in latent space, or in pixels between a decode and
/// an encode.
#[derive(Clone, Debug, PartialEq)]
pub enum HiresUpscale {
    Latent(LatentUpscaleMode),
    Pixel(PixelUpscaler),
}

/// A pixel upscaler: built in (`None`, `Lanczos`, `Nearest`) or a model file.
#[derive(Clone, Debug, PartialEq)]
pub enum PixelUpscaler {
    Builtin(BuiltinUpscaler),
    Model(ModelUpscaler),
}

impl PixelUpscaler {
    /// The name A1111 lists it under (the infotext's).
    pub fn name(&self) -> &str {
        match self {
            PixelUpscaler::Builtin(b) => b.name(),
            PixelUpscaler::Model(m) => &m.name,
        }
    }
}

/// A model upscaler file (`models/ESRGAN`, `models/RealESRGAN`) and how A1111 tiles its input
/// (`ESRGAN_tile`, `ESRGAN_tile_overlap`; a tile of 0 runs the whole image at once).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ModelUpscaler {
    pub name: String,
    pub path: PathBuf,
    pub tile: usize,
    pub tile_overlap: usize,
}

/// A1111's `Upscaler.upscale(img, scale)` with a model upscaler, run by the runner on its device:
/// the model at its own scale up to three times, then Lanczos to `floor(size·scale/8)·8`.
#[derive(Clone, Debug)]
pub struct UpscaleJob {
    pub image: sdapi_protocol::images::Raster,
    pub upscaler: ModelUpscaler,
    pub scale: f64,
}
