//! The real [`BatchExecutor`] of the runner: runs a batch through the engine on the runner's
//! device, in A1111's order — conditioning, noise, sigma schedule, sampling with CFG, VAE decode
//! per image.

mod cfg_denoiser;
mod networks;

use candle_core::{DType, Device, Tensor};
use sdapi_core::runner::{
    BatchExecutor, BatchJob, BatchOutput, JobControl, JobMode, LoraActivation, ModelSelection, RgbImage, RunnerError,
};
use sdapi_protocol::choices::Scheduler;
use sdapi_protocol::images::{encode_png, to_base64};
use sdapi_protocol::prompt::ScheduleParams;
use sdapi_protocol::python_json::float_repr;

use crate::checkpoint::ModelFamily;
use crate::model::{LoadedModel, ModelConditioner};
use crate::preview::cheap_preview;
use crate::rng::{ImageRng, ImageRngOptions};
use crate::sampling::{
    self, BrownianTreeNoise, SamplerContext, SamplerParams, SamplingError, SamplingPlan, SchedulerOptions, StepInfo,
    resolve_sampler_params,
};
use crate::text::{ChunkingOptions, SdxlSizes, TextConditioner, TextError};
use crate::vae::to_rgb8;
use cfg_denoiser::CfgDenoiser;

/// What a loaded model was built from: the checkpoint (and VAE) with these LoRAs merged.
#[derive(Debug, Clone, PartialEq)]
struct LoadedKey {
    model: ModelSelection,
    loras: Vec<LoraActivation>,
}

/// Owns the device and the loaded model; lives on the runner's worker thread.
pub struct DiffusionExecutor {
    device: Device,
    dtype: DType,
    loaded: Option<(LoadedKey, LoadedModel)>,
    /// LoRA and embedding files read so far, and the embedding table of the loaded model.
    networks: networks::NetworkCache,
}

impl DiffusionExecutor {
    /// `device`: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with the `cuda` feature).
    pub fn new(device: &str) -> Result<Self, RunnerError> {
        let device = parse_device(device)?;
        // f32 on CPU (f16 is slower there and A1111 parity is defined in f32).
        let dtype = if device.is_cpu() { DType::F32 } else { DType::F16 };
        Ok(Self { device, dtype, loaded: None, networks: networks::NetworkCache::default() })
    }

    fn model(&self) -> Result<&LoadedModel, RunnerError> {
        self.loaded.as_ref().map(|(_, m)| m).ok_or_else(|| RunnerError::Model("no model loaded".into()))
    }
}

fn parse_device(spec: &str) -> Result<Device, RunnerError> {
    let spec = spec.trim().to_ascii_lowercase();
    if spec.is_empty() || spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| RunnerError::Model(format!("SDAPI_DEVICE {spec:?}: expected cpu, cuda or cuda:N")))?,
        None => return Err(RunnerError::Model(format!("SDAPI_DEVICE {spec:?}: expected cpu, cuda or cuda:N"))),
    };
    Device::new_cuda(ordinal).map_err(|e| RunnerError::Model(format!("cannot open CUDA device {ordinal}: {e}")))
}

/// The first line of an error: candle appends a backtrace when RUST_BACKTRACE is set, which does
/// not belong in an API response.
fn exec_err(e: impl std::fmt::Display) -> RunnerError {
    let text = e.to_string();
    RunnerError::Execution(text.lines().next().unwrap_or_default().to_string())
}

/// A prompt over the chunk bound is the client's doing (422); other text errors are failures.
fn text_err(e: TextError) -> RunnerError {
    match e {
        TextError::TooManyChunks { .. } => RunnerError::OverLimit(e.to_string()),
        other => exec_err(other),
    }
}

/// Pixels of an init image as A1111 feeds the VAE: (1, 3, H, W) in [-1, 1].
fn image_to_tensor(img: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = (img.width as usize, img.height as usize);
    let data: Vec<f32> = img.pixels.iter().map(|&p| p as f32 / 255.0 * 2.0 - 1.0).collect();
    Tensor::from_vec(data, (h, w, 3), &Device::Cpu)?.permute((2, 0, 1))?.unsqueeze(0)?.to_device(device)
}

impl BatchExecutor for DiffusionExecutor {
    fn prepare(&mut self, job: &BatchJob) -> Result<bool, RunnerError> {
        let key = LoadedKey { model: job.model.clone(), loras: job.networks.loras.clone() };
        let reloaded = if matches!(&self.loaded, Some((loaded, _)) if *loaded == key) {
            false
        } else {
            // Free the old model before loading the next (one checkpoint on the device, as A1111).
            // A different LoRA set is a fresh load with the networks merged as the weights are read,
            // so the base weights are never modified and nothing needs restoring.
            self.loaded = None;
            let started = std::time::Instant::now();
            let files = self.networks.lora_files(&key.loras)?;
            let resident = self.networks.resident_for(&key.model);
            let model = networks::load_model(&key, &files, resident, &self.device, self.dtype)?;
            tracing::info!(
                checkpoint = %job.model.checkpoint.display(),
                loras = key.loras.len(),
                ms = started.elapsed().as_millis() as u64,
                "model loaded"
            );
            self.loaded = Some((key, model));
            true
        };
        let model = self.model()?;
        let widths = model.text_widths();
        self.networks.prepare_embeddings(&job.networks.embeddings, &widths);
        Ok(reloaded)
    }

    fn execute(&mut self, job: &BatchJob, control: &JobControl<'_>) -> Result<BatchOutput, RunnerError> {
        let model = self.model()?;
        let batch = job.seeds.len();
        let (lh, lw) = (job.height / 8, job.width / 8);
        let sampler = job.sampler;
        let flags = sampler.flags();
        let total_steps = if flags.second_order { job.steps * 2 } else { job.steps };

        // Conditioning: negative prompts first, then the multicond positive prompts (A1111 order).
        let chunking = ChunkingOptions {
            emphasis: job.settings.emphasis,
            comma_padding_backtrack: job.settings.comma_padding_backtrack,
        };
        let model_conditioner = ModelConditioner {
            model,
            emphasis: job.settings.emphasis,
            clip_skip: job.settings.clip_skip,
            sizes: SdxlSizes::for_request(job.width, job.height),
        };
        let table = self.networks.embedding_table();
        let conditioner = TextConditioner::new(&model_conditioner, chunking)
            .with_max_chunks(job.settings.max_prompt_chunks)
            .with_embeddings(&table, model.text_widths().len());
        let mut schedule_params = ScheduleParams::new(total_steps);
        schedule_params.use_old_scheduling = job.settings.use_old_scheduling;
        let uncond =
            conditioner.learned_conditioning_negative(&job.negative_prompts, &schedule_params).map_err(text_err)?;
        let cond = conditioner.multicond_learned_conditioning(&job.prompts, &schedule_params).map_err(text_err)?;

        // Noise: one generator per image seed (docs/a1111-behaviour.md §4.3).
        let source = job.settings.randn_source;
        let rng_options = ImageRngOptions {
            source,
            subseeds: Some(job.subseeds.clone()),
            subseed_strength: job.subseed_strength,
            seed_resize_from_h: job.seed_resize_from_h,
            seed_resize_from_w: job.seed_resize_from_w,
            eta_noise_seed_delta: job.settings.eta_noise_seed_delta,
        };
        let mut rng = ImageRng::new([4, lh, lw], job.seeds.clone(), rng_options, self.device.clone());

        let discrete = sampling::DiscreteSchedule::from_alphas_cumprod(&model.alphas_cumprod).map_err(exec_err)?;
        let sigma_to_t = |s: f64| discrete.sigma_to_t(s);
        let mut denoiser = CfgDenoiser {
            model,
            cond: &cond,
            uncond: &uncond,
            cfg_scale: job.cfg_scale,
            sigma_to_t: &sigma_to_t,
            control,
            step: 0,
        };

        let init_latent = match &job.mode {
            JobMode::Txt2Img => None,
            JobMode::Img2Img { init_images, .. } => {
                let mut latents = Vec::with_capacity(batch);
                for i in 0..batch {
                    let img = &init_images[i.min(init_images.len() - 1)];
                    let x = image_to_tensor(img, &self.device)
                        .map_err(exec_err)?
                        .to_dtype(model.dtype)
                        .map_err(exec_err)?;
                    latents.push(model.vae.encode(&x).map_err(exec_err)?.to_dtype(DType::F32).map_err(exec_err)?);
                }
                Some(Tensor::cat(&latents, 0).map_err(exec_err)?)
            }
        };

        // Sigma schedule (and DDIM-family timesteps), A1111's img2img truncation included.
        let s = &job.settings;
        let scheduler = job.scheduler;
        let sched_opts = SchedulerOptions {
            sigma_min: s.sigma_min,
            sigma_max: s.sigma_max,
            rho: s.rho,
            beta_alpha: s.beta_dist_alpha,
            beta_beta: s.beta_dist_beta,
            is_sdxl: model.family == ModelFamily::Sdxl,
            use_old_karras_scheduler_sigmas: s.use_old_karras_scheduler_sigmas,
        };
        let alphas = &model.alphas_cumprod;
        let (plan, noise_multiplier) = match &job.mode {
            JobMode::Txt2Img => (
                SamplingPlan::txt2img(
                    sampler,
                    scheduler,
                    job.steps,
                    alphas,
                    &sched_opts,
                    s.always_discard_next_to_last_sigma,
                ),
                1.0,
            ),
            JobMode::Img2Img { denoising_strength, initial_noise_multiplier, .. } => (
                SamplingPlan::img2img(
                    sampler,
                    scheduler,
                    job.steps,
                    *denoising_strength,
                    s.img2img_fix_steps,
                    alphas,
                    &sched_opts,
                    s.always_discard_next_to_last_sigma,
                ),
                *initial_noise_multiplier,
            ),
        };
        let plan = plan.map_err(exec_err)?;
        let (params, param_infotext) = resolve_sampler_params(sampler, &s.request_extra, &s.extra_options);
        let params = SamplerParams { unipc: s.unipc, ..params };

        // The first draw of every image generator is the initial noise; later draws feed the sampler.
        let noise = rng.next().map_err(exec_err)?;
        let x = match &init_latent {
            None => plan.txt2img_start(&noise).map_err(exec_err)?,
            Some(init) => {
                let noise = if noise_multiplier != 1.0 { (noise * noise_multiplier).map_err(exec_err)? } else { noise };
                plan.img2img_start(init, &noise, alphas).map_err(exec_err)?
            }
        };
        let state = control.state;
        let (family, every_n) = (model.family, s.show_progress_every_n_steps);
        let mut callback = |info: &StepInfo<'_>| -> Result<(), SamplingError> {
            state.set_sampling(info.step, info.total_steps);
            // A1111 refreshes the live preview every `show_progress_every_n_steps` steps.
            if state.preview_due(every_n)
                && let Some(png) = preview_png(info.denoised, family)
            {
                state.set_current_image(png, info.step as i64);
            }
            Ok(())
        };
        let numel = 4 * lh * lw;
        let brownian =
            sampler.flags().brownian_noise.then(|| BrownianTreeNoise::for_plan(&plan, &job.seeds, source, numel));
        let mut ctx = SamplerContext::new(&mut denoiser, &mut rng, params, alphas).with_callback(&mut callback);
        if let Some(tree) = brownian {
            ctx = ctx.with_brownian(tree);
        }
        let output = sampling::sample(&mut ctx, &plan, x).map_err(exec_err)?;
        let (latent, interrupted) = (output.latent, output.interrupted);
        // A1111 sets `TI hashes` while conditioning, before the sampler adds its parameters.
        let ti_hashes = conditioner.ti_hashes.value().filter(|_| job.networks.ti_hashes_in_infotext);
        // k-diffusion samplers record the schedule they used, an Automatic one resolved to the
        // sampler's default (DPM++ 2M → Karras), before their own parameters.
        let schedule_type = match job.scheduler {
            Scheduler::Automatic => flags.default_scheduler,
            explicit => Some(explicit),
        }
        .filter(|s| !flags.timesteps && *s != Scheduler::Automatic)
        .map(|s| ("Schedule type".to_string(), s.label().to_string()));
        let mut extra_generation_params: Vec<(String, String)> = ti_hashes
            .map(|v| ("TI hashes".to_string(), v))
            .into_iter()
            .chain(schedule_type)
            .chain(param_infotext.into_iter().map(|(k, v)| (k.to_string(), float_repr(v))))
            .collect();
        if let Some(init) = init_latent.as_ref() {
            // A1111 blends the img2img result with the init latent only under a mask; keep the shape check.
            debug_assert_eq!(init.dims(), latent.dims());
        }

        // Decode each latent separately, as A1111's decode_first_stage loop does.
        let mut images = Vec::with_capacity(batch);
        for i in 0..batch {
            let z = latent.narrow(0, i, 1).map_err(exec_err)?.to_dtype(model.dtype).map_err(exec_err)?;
            let decoded = model.vae.decode(&z).map_err(exec_err)?.to_dtype(DType::F32).map_err(exec_err)?;
            let pixels = to_rgb8(&decoded.squeeze(0).map_err(exec_err)?).map_err(exec_err)?;
            images.push(RgbImage { width: (lw * 8) as u32, height: (lh * 8) as u32, pixels });
        }
        let stopped_by_skip = interrupted && !control.state.is_interrupted();
        Ok(BatchOutput {
            images,
            interrupted: interrupted && !stopped_by_skip,
            skipped: stopped_by_skip,
            extra_generation_params: std::mem::take(&mut extra_generation_params),
        })
    }

    fn unload(&mut self) {
        self.loaded = None;
        self.networks.forget_resident();
    }
}

/// The live preview as `/progress` serves it: a base64 PNG.
fn preview_png(latent: &Tensor, family: ModelFamily) -> Option<String> {
    let pixels = cheap_preview(latent, family)?;
    let img = image::RgbImage::from_raw(pixels.width, pixels.height, pixels.rgb)?;
    Some(to_base64(&encode_png(&img, None).ok()?))
}
