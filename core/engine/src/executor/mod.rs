//! The real [`BatchExecutor`] of the runner: runs a batch through the engine on the runner's
//! device, in A1111's order — conditioning, noise, sigma schedule, sampling with CFG, VAE decode
//! per image.

mod cfg_denoiser;
mod hires;
mod inpaint;
mod networks;
mod pass;
mod sharing;

use candle_core::{DType, Device, Tensor};
use std::path::PathBuf;

use sdapi_core::runner::{
    BatchExecutor, BatchJob, BatchOutput, HiresUpscale, JobControl, JobMode, LoraActivation, ModelSelection,
    PixelUpscaler, Refiner, RefinerPass, RgbImage, RunnerError, UpscaleJob,
};
use sdapi_protocol::choices::Interpolation;
use sdapi_protocol::images::{Raster, upscale_loop};
use sdapi_protocol::images::{encode_png, to_base64};
use sdapi_protocol::prompt::ScheduleParams;

use crate::checkpoint::ModelFamily;
use crate::loader::tensor_store::ResidentWeights;
use crate::model::LoadedModel;
use crate::preview::cheap_preview;
use crate::text::TextError;
use crate::upscaler::UpscaleModel;
use crate::vae::to_rgb8;
use inpaint::{ConditioningSource, LatentBlend};
use pass::{PassOutput, PassSpec, PassStart, run_pass};

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
    /// The model upscaler used last (ESRGAN and kin), kept for the next image.
    upscaler: Option<(PathBuf, UpscaleModel)>,
    /// The refiner of the current job, held beside the base model.
    refiner: Option<(LoadedKey, LoadedModel)>,
    /// Other checkpoints kept loaded (`sd_checkpoints_limit` − 1 of them), least recent first.
    cached: Vec<(LoadedKey, LoadedModel)>,
}

impl DiffusionExecutor {
    /// `device`: `cpu`, `cuda` or `cuda:N` (CUDA needs a build with the `cuda` feature), in the
    /// device's default precision.
    pub fn new(device: &str) -> Result<Self, RunnerError> {
        Self::with_dtype(device, None)
    }

    /// [`Self::new`] with the weights' and activations' precision: `f32`, `f16`, or `None`/`auto`
    /// for the default — f32 on the CPU (f16 is slower there and A1111 parity is defined in f32),
    /// f16 on CUDA (A1111's default half precision).
    pub fn with_dtype(device: &str, dtype: Option<&str>) -> Result<Self, RunnerError> {
        let device = parse_device(device)?;
        let dtype = parse_dtype(dtype, &device)?;
        Ok(Self {
            device,
            dtype,
            loaded: None,
            networks: networks::NetworkCache::default(),
            upscaler: None,
            refiner: None,
            cached: Vec::new(),
        })
    }

    /// The model upscaler at `path`, loaded once and kept until another one is asked for.
    fn upscale_model(&mut self, path: &std::path::Path) -> Result<&UpscaleModel, RunnerError> {
        if !matches!(&self.upscaler, Some((loaded, _)) if loaded == path) {
            self.upscaler = None;
            let model = UpscaleModel::load(path, &self.device).map_err(|e| RunnerError::Model(e.to_string()))?;
            self.upscaler = Some((path.to_path_buf(), model));
        }
        self.upscaler.as_ref().map(|(_, m)| m).ok_or_else(|| RunnerError::Model("no upscaler loaded".into()))
    }

    /// Loads the job's refiner (with the job's LoRAs) beside the base model, or frees the slot.
    fn prepare_refiner(&mut self, job: &BatchJob) -> Result<(), RunnerError> {
        let Some(r) = &job.refiner else {
            self.refiner = None;
            return Ok(());
        };
        let key = LoadedKey { model: r.checkpoint.clone(), loras: job.networks.loras.clone() };
        if !matches!(&self.refiner, Some((loaded, _)) if *loaded == key) {
            self.refiner = None;
            // Its own weights (the resident cache holds the base model's).
            let model = self.load(&key, ResidentWeights::new(), "refiner loaded")?;
            self.refiner = Some((key, model));
        }
        Ok(())
    }

    /// Builds the model of `key` (its LoRAs merged as the weights are read).
    fn load(&mut self, key: &LoadedKey, resident: ResidentWeights, what: &str) -> Result<LoadedModel, RunnerError> {
        let started = std::time::Instant::now();
        let files = self.networks.lora_files(&key.loras)?;
        let model = networks::load_model(key, &files, resident, &self.device, self.dtype)?;
        tracing::info!(
            checkpoint = %key.model.checkpoint.display(),
            loras = key.loras.len(),
            ms = started.elapsed().as_millis() as u64,
            "{what}"
        );
        Ok(model)
    }

    /// Makes `checkpoint` with the job's LoRAs the loaded model (freeing the previous one first:
    /// one checkpoint on the device, as A1111) and its embeddings ready; true if it was loaded.
    fn load_base(&mut self, checkpoint: &ModelSelection, job: &BatchJob, what: &str) -> Result<bool, RunnerError> {
        let key = LoadedKey { model: checkpoint.clone(), loras: job.networks.loras.clone() };
        let mut reloaded = false;
        if !matches!(&self.loaded, Some((loaded, _)) if *loaded == key) {
            // `sd_checkpoints_limit` > 1: the previous model waits in the cache, the least
            // recently used beyond the limit is freed (before loading, to bound the peak).
            let others = job.settings.checkpoints_limit.max(1) - 1;
            let hit = self.cached.iter().position(|(k, _)| *k == key).map(|i| self.cached.remove(i));
            if let Some(previous) = self.loaded.take().filter(|_| others > 0) {
                self.cached.push(previous);
            }
            while self.cached.len() > others {
                self.cached.remove(0);
            }
            self.loaded = match hit {
                Some(model) => {
                    tracing::info!(checkpoint = %key.model.checkpoint.display(), "model taken from the checkpoint cache");
                    Some(model)
                }
                None => {
                    // A different LoRA set is a fresh load with the networks merged as the weights
                    // are read, so the base weights are never modified and nothing needs restoring.
                    let resident = self.networks.resident_for(&key.model);
                    reloaded = true;
                    Some((key.clone(), self.load(&key, resident, what)?))
                }
            };
        }
        let widths = self.model()?.text_widths();
        self.networks.prepare_embeddings(&job.networks.embeddings, &widths);
        Ok(reloaded)
    }

    /// The refiner for a pass (`hires_fix_refiner_pass` decides with the hires fix).
    fn refiner_for<'a>(&'a self, job: &'a BatchJob, second_pass: bool) -> Option<(&'a LoadedModel, &'a Refiner)> {
        let r = job.refiner.as_ref()?;
        let applies = match (job.hires.is_some(), r.pass) {
            (false, _) | (true, RefinerPass::Both) => true,
            (true, RefinerPass::First) => !second_pass,
            (true, RefinerPass::Second) => second_pass,
        };
        applies.then_some(())?;
        self.refiner.as_ref().map(|(_, m)| (m, r))
    }

    /// txt2img's only pass, or img2img's from its encoded init images.
    fn first_pass(
        &self,
        job: &BatchJob,
        first_steps: usize,
        control: &JobControl<'_>,
    ) -> Result<(PassOutput, bool), RunnerError> {
        let model = self.model()?;
        let table = self.networks.embedding_table();
        let batch = job.seeds.len();
        let latent_size = (job.height / 8, job.width / 8);
        let inpainting_model = inpaint::uses_inpainting_conditioning(model)?;
        let (init_latent, image_cond, blend) = match &job.mode {
            JobMode::Txt2Img => {
                let blank = ConditioningSource::Blank { batch, width: job.width, height: job.height };
                let cond = inpainting_model
                    .then(|| {
                        inpaint::image_conditioning(model, blank, latent_size, self.mask_weight(job), &self.device)
                    })
                    .transpose()?;
                (None, cond, None)
            }
            JobMode::Img2Img { init_images, inpaint: mask, .. } => {
                let init = self.encode_init_images(model, init_images, batch, latent_size)?;
                let init = match mask {
                    Some(m) => LatentBlend::fill(m, init, job, &self.device)?,
                    None => init,
                };
                let cond = if inpainting_model {
                    let pixels = inpaint::batch_pixels(init_images, batch, &self.device)?;
                    if pixels.dims()[2..] != [job.height, job.width] {
                        return Err(RunnerError::Model(
                            "resize_mode 3 (latent upscale) with an inpainting checkpoint is not supported".into(),
                        ));
                    }
                    let source = ConditioningSource::Images { pixels: &pixels, mask: mask.as_ref() };
                    Some(inpaint::image_conditioning(model, source, latent_size, self.mask_weight(job), &self.device)?)
                } else {
                    None
                };
                let blend = mask.as_ref().map(|m| LatentBlend::new(m, init.clone())).transpose()?;
                (Some(init), cond, blend)
            }
        };
        let start = match (&job.mode, &init_latent) {
            (JobMode::Img2Img { denoising_strength, initial_noise_multiplier, .. }, Some(init)) => PassStart::Img2Img {
                init,
                denoising_strength: *denoising_strength,
                fix_steps: job.settings.img2img_fix_steps,
                noise_multiplier: *initial_noise_multiplier,
            },
            _ => PassStart::Noise,
        };
        let spec = PassSpec {
            prompts: &job.prompts,
            negative_prompts: &job.negative_prompts,
            latent_size,
            condition_size: (job.width, job.height),
            sampler: job.sampler,
            scheduler: job.scheduler,
            steps: job.steps,
            schedule: ScheduleParams {
                steps: first_steps,
                hires_steps: None,
                use_old_scheduling: job.settings.use_old_scheduling,
            },
            start,
            image_cond: image_cond.as_ref(),
            blend: blend.as_ref(),
        };
        let out = run_pass(model, &table, job, &spec, self.refiner_for(job, false), &self.device, control)?;
        Ok((out, inpainting_model))
    }

    /// img2img's init latents, one VAE encode per image as A1111 does.
    fn encode_init_images(
        &self,
        model: &LoadedModel,
        init_images: &[RgbImage],
        batch: usize,
        (lh, lw): (usize, usize),
    ) -> Result<Tensor, RunnerError> {
        let mut latents = Vec::with_capacity(batch);
        for i in 0..batch {
            let mut latent = encode_image(model, init_image_for(init_images, i)?, &self.device)?;
            // resize_mode 3 hands the image over at its own size: A1111 then resizes the
            // latent (`interpolate(..., mode="bilinear")`).
            if latent.dims()[2..] != [lh, lw] {
                latent = crate::latent_upscale::interpolate(&latent, lh, lw, Interpolation::Bilinear, false)
                    .map_err(exec_err)?;
            }
            latents.push(latent);
        }
        Tensor::cat(&latents, 0).map_err(exec_err)
    }

    /// `inpainting_mask_weight` of the batch.
    fn mask_weight(&self, job: &BatchJob) -> f64 {
        job.settings.inpainting_mask_weight
    }

    /// The hires fix's `hr_checkpoint_name`: the first pass's model is replaced by another
    /// checkpoint (with the batch's LoRAs), as A1111 reloads the weights; the next batch's
    /// `prepare` loads its own model again.
    fn switch_model(&mut self, checkpoint: &ModelSelection, job: &BatchJob) -> Result<(), RunnerError> {
        self.load_base(checkpoint, job, "hires checkpoint loaded").map(|_| ())
    }

    fn model(&self) -> Result<&LoadedModel, RunnerError> {
        self.loaded.as_ref().map(|(_, m)| m).ok_or_else(|| RunnerError::Model("no model loaded".into()))
    }
}

/// `auto` (or none): f32 on the CPU, f16 on a GPU; else `f32` or `f16`.
pub fn parse_dtype(spec: Option<&str>, device: &Device) -> Result<DType, RunnerError> {
    match spec.map(|d| d.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("auto") => Ok(if device.is_cpu() { DType::F32 } else { DType::F16 }),
        Some("f32") | Some("float32") => Ok(DType::F32),
        Some("f16") | Some("float16") => Ok(DType::F16),
        Some(other) => Err(RunnerError::Model(format!("SDAPI_DTYPE {other:?}: expected auto, f32 or f16"))),
    }
}

/// `cpu`, `cuda` or `cuda:N` → the device, opened (no silent fallback to the CPU).
pub fn parse_device(spec: &str) -> Result<Device, RunnerError> {
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

/// The step count A1111's prompt schedules count in for the first pass (second-order samplers
/// call the model twice per step).
fn first_pass_steps(job: &BatchJob) -> usize {
    if job.sampler.flags().second_order { job.steps * 2 } else { job.steps }
}

/// The init image of batch row `i`: its own, or the one image the whole batch shares.
fn init_image_for(images: &[RgbImage], i: usize) -> Result<&RgbImage, RunnerError> {
    images
        .get(i.min(images.len().saturating_sub(1)))
        .ok_or_else(|| RunnerError::Execution("img2img without init images".into()))
}

/// Pixels of an init image as A1111 feeds the VAE: (1, 3, H, W) in [-1, 1].
fn image_to_tensor(img: &RgbImage, device: &Device) -> candle_core::Result<Tensor> {
    let (w, h) = (img.width as usize, img.height as usize);
    let data: Vec<f32> = img.pixels.iter().map(|&p| p as f32 / 255.0 * 2.0 - 1.0).collect();
    Tensor::from_vec(data, (h, w, 3), &Device::Cpu)?.permute((2, 0, 1))?.unsqueeze(0)?.to_device(device)
}

/// One init image as the VAE encodes it (img2img, the hires fix's pixel upscalers).
fn encode_image(model: &LoadedModel, img: &RgbImage, device: &Device) -> Result<Tensor, RunnerError> {
    encode_pixels(model, &image_to_tensor(img, device).map_err(exec_err)?)
}

/// (B, 3, H, W) pixels in [-1, 1] through the VAE encoder, as float32 latents.
fn encode_pixels(model: &LoadedModel, pixels: &Tensor) -> Result<Tensor, RunnerError> {
    model.encode_pixels(pixels).map_err(exec_err)
}

/// Each latent of a batch decoded on its own, as A1111's `decode_latent_batch` does.
fn decode_images(model: &LoadedModel, latent: &Tensor) -> Result<Vec<RgbImage>, RunnerError> {
    let (batch, _, lh, lw) = latent.dims4().map_err(exec_err)?;
    let mut images = Vec::with_capacity(batch);
    for i in 0..batch {
        let z = latent.narrow(0, i, 1).map_err(exec_err)?;
        let decoded = model.decode_latent(&z).map_err(exec_err)?;
        let pixels = to_rgb8(&decoded.squeeze(0).map_err(exec_err)?).map_err(exec_err)?;
        images.push(RgbImage { width: (lw * 8) as u32, height: (lh * 8) as u32, pixels });
    }
    Ok(images)
}

impl BatchExecutor for DiffusionExecutor {
    fn prepare(&mut self, job: &BatchJob) -> Result<bool, RunnerError> {
        let reloaded = self.load_base(&job.model, job, "model loaded")?;
        self.prepare_refiner(job)?;
        Ok(reloaded)
    }

    fn sharing_signature(&mut self, job: &BatchJob) -> Option<u64> {
        let model = self.model().ok()?;
        let table = self.networks.embedding_table();
        // A prompt the job cannot encode fails in its own run, with its own error.
        sharing::chunk_signature(model, &table, job).ok().flatten()
    }

    fn execute(&mut self, job: &BatchJob, control: &JobControl<'_>) -> Result<BatchOutput, RunnerError> {
        // A hires pass with a model upscaler: have it loaded before the batch borrows the model.
        if let Some(HiresUpscale::Pixel(PixelUpscaler::Model(m))) = job.hires.as_ref().map(|h| &h.upscale) {
            self.upscale_model(&m.path)?;
        }
        let first_steps = first_pass_steps(job);
        let (first_out, inpainting_conditioning) = self.first_pass(job, first_steps, control)?;
        let ti_wanted = job.networks.ti_hashes_in_infotext;
        let mut extra = first_out.first_pass_params(ti_wanted);
        first_out.refiner_params(job, &mut extra);
        let (mut latent, mut interrupted) = (first_out.latent, first_out.interrupted);

        if let (Some(hires), false) = (&job.hires, interrupted) {
            control.state.next_pass();
            // Pixel upscalers decode with the first pass's model, before any checkpoint switch.
            let loaded_upscaler = self.upscaler.as_ref().map(|(_, u)| u);
            let upscale = hires::upscale_first_pass(self.model()?, &latent, hires, loaded_upscaler)?;
            if let Some(checkpoint) = &hires.checkpoint {
                self.switch_model(checkpoint, job)?;
            }
            let model = self.model()?;
            let table = self.networks.embedding_table();
            let upscaled = hires::into_latent(model, upscale, hires, &self.device)?;
            // No strength, no steps (A1111's schedule is then the single sigma 0).
            if hires.denoising_strength <= 0.0 {
                let images = decode_images(model, &upscaled)?;
                return Ok(BatchOutput {
                    images,
                    extra_generation_params: extra,
                    inpainting_conditioning,
                    ..Default::default()
                });
            }
            let second_steps = if hires.sampler.flags().second_order { hires.steps * 2 } else { hires.steps };
            let (uh, uw) = (upscaled.dim(2).map_err(exec_err)?, upscaled.dim(3).map_err(exec_err)?);
            // Inpainting checkpoints: everything is "masked" in the second pass too (A1111's
            // txt2img conditioning, at the second pass's size).
            let image_cond = if inpaint::uses_inpainting_conditioning(model)? {
                let blank = ConditioningSource::Blank { batch: job.seeds.len(), width: uw * 8, height: uh * 8 };
                Some(inpaint::image_conditioning(model, blank, (uh, uw), self.mask_weight(job), &self.device)?)
            } else {
                None
            };
            let second = PassSpec {
                prompts: &hires.prompts,
                negative_prompts: &hires.negative_prompts,
                latent_size: (uh, uw),
                condition_size: (hires.upscale_width, hires.upscale_height),
                sampler: hires.sampler,
                scheduler: hires.scheduler,
                steps: hires.steps,
                schedule: ScheduleParams {
                    steps: first_steps,
                    hires_steps: Some(second_steps),
                    use_old_scheduling: job.settings.use_old_scheduling,
                },
                // A1111's hires pass always takes img2img's fixed-steps branch.
                start: PassStart::Img2Img {
                    init: &upscaled,
                    denoising_strength: hires.denoising_strength,
                    fix_steps: true,
                    noise_multiplier: 1.0,
                },
                image_cond: image_cond.as_ref(),
                blend: None,
            };
            let second_out = run_pass(model, &table, job, &second, self.refiner_for(job, true), &self.device, control)?;
            second_out.merge_hires_params(&mut extra, ti_wanted);
            second_out.refiner_params(job, &mut extra);
            (latent, interrupted) = (second_out.latent, second_out.interrupted);
        }

        // Decode each latent separately, as A1111's decode_first_stage loop does.
        let images = decode_images(self.model()?, &latent)?;
        let stopped_by_skip = interrupted && !control.state.is_interrupted();
        Ok(BatchOutput {
            images,
            interrupted: interrupted && !stopped_by_skip,
            skipped: stopped_by_skip,
            extra_generation_params: extra,
            inpainting_conditioning,
        })
    }

    fn upscale(&mut self, job: &UpscaleJob) -> Result<Raster, RunnerError> {
        let (tile, overlap) = (job.upscaler.tile, job.upscaler.tile_overlap);
        let model = self.upscale_model(&job.upscaler.path)?;
        upscale_loop(&job.image, job.scale, |img| model.upscale_tiled(img, tile, overlap)).map_err(exec_err)
    }

    fn unload(&mut self) {
        self.upscaler = None;
        self.refiner = None;
        self.cached.clear();
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

#[cfg(test)]
mod device_spec_tests {
    use super::*;

    #[test]
    fn dtype_spec_defaults_per_device_and_refuses_anything_else() {
        let cpu = Device::Cpu;
        for auto in [None, Some(""), Some("auto"), Some(" AUTO ")] {
            assert_eq!(parse_dtype(auto, &cpu).unwrap(), DType::F32, "{auto:?}");
        }
        assert_eq!(parse_dtype(Some("f16"), &cpu).unwrap(), DType::F16);
        assert_eq!(parse_dtype(Some("float32"), &cpu).unwrap(), DType::F32);
        for bad in ["bf16", "f64", "half", "32"] {
            let err = parse_dtype(Some(bad), &cpu).unwrap_err().to_string();
            assert!(err.contains("SDAPI_DTYPE") && err.contains("expected auto, f32 or f16"), "{bad}: {err}");
        }
        // The server refuses to start on a bad value instead of guessing.
        assert!(DiffusionExecutor::with_dtype("cpu", Some("bf16")).is_err());
    }
}
