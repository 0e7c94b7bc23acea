//! One sampling pass over a batch in A1111's order: conditioning (negative prompts first), noise
//! from a fresh per-image generator, the sigma schedule (img2img's truncation included), sampling
//! with CFG. txt2img and img2img are one pass; the hires fix runs a second one.

use candle_core::Tensor;
use sdapi_core::runner::{BatchJob, JobControl, Refiner, RefinerPass, RunnerError};
use sdapi_protocol::choices::{SamplerKind, Scheduler};
use sdapi_protocol::prompt::ScheduleParams;
use sdapi_protocol::python_json::float_repr;

use super::cfg_denoiser::{CfgDenoiser, RefinerSwitch};
use super::inpaint::LatentBlend;
use super::{exec_err, preview_png, text_err};
use crate::checkpoint::ModelFamily;
use crate::model::{LoadedModel, ModelConditioner};
use crate::rng::{ImageRng, ImageRngOptions};
use crate::sampling::{
    self, BrownianTreeNoise, SamplerContext, SamplerParams, SamplingError, SamplingPlan, SchedulerOptions, StepInfo,
    resolve_sampler_params,
};
use crate::text::{
    ChunkingOptions, EmbeddingTable, MulticondLearnedConditioning, PromptSchedule, SdxlSizes, TextConditioner,
};

/// Where a pass starts: pure noise (txt2img) or a latent to denoise from (img2img, hires).
pub(super) enum PassStart<'a> {
    Noise,
    Img2Img { init: &'a Tensor, denoising_strength: f64, fix_steps: bool, noise_multiplier: f64 },
}

/// What one pass samples.
pub(super) struct PassSpec<'a> {
    pub prompts: &'a [String],
    pub negative_prompts: &'a [String],
    /// (height, width) of the latent.
    pub latent_size: (usize, usize),
    /// (width, height) SDXL's size conditioning states (A1111: the pass's target size).
    pub condition_size: (usize, usize),
    pub sampler: SamplerKind,
    pub scheduler: Scheduler,
    pub steps: usize,
    /// Prompt-editing schedule: the first pass's step count, and the hires pass's when this is it.
    pub schedule: ScheduleParams,
    pub start: PassStart<'a>,
    /// Inpainting checkpoints: the mask and masked-image latent beside the input.
    pub image_cond: Option<&'a Tensor>,
    /// Inpainting: the latent mask blend, during and after sampling.
    pub blend: Option<&'a LatentBlend>,
}

/// A pass's latent and what it adds to the infotext.
pub(super) struct PassOutput {
    pub latent: Tensor,
    pub interrupted: bool,
    /// The refiner took over during this pass.
    pub refined: bool,
    ti_hashes: Option<String>,
    /// The schedule the k-diffusion sampler used (Automatic resolved), if it names one.
    schedule_type: Option<Scheduler>,
    sampler_params: Vec<(&'static str, f64)>,
    /// img2img's `initial_noise_multiplier` when it is not 1.
    noise_multiplier: Option<f64>,
}

impl PassOutput {
    /// The first pass's entries: `TI hashes` (set while conditioning), `Schedule type`, then the
    /// sampler's own parameters.
    pub fn first_pass_params(&self, ti_hashes_wanted: bool) -> Vec<(String, String)> {
        self.ti_hashes
            .clone()
            .filter(|_| ti_hashes_wanted)
            .map(|v| ("TI hashes".to_string(), v))
            .into_iter()
            .chain(self.noise_multiplier.map(|m| ("Noise multiplier".to_string(), float_repr(m))))
            .chain(self.schedule_type.map(|s| ("Schedule type".to_string(), s.label().to_string())))
            .chain(self.sampler_params.iter().map(|(k, v)| (k.to_string(), float_repr(*v))))
            .collect()
    }

    /// `Hires refiner` (with the hires fix, unless the default second pass), `Refiner` and
    /// `Refiner switch at`, added when the refiner took over.
    pub fn refiner_params(&self, job: &BatchJob, extra: &mut Vec<(String, String)>) {
        let Some(r) = job.refiner.as_ref().filter(|_| self.refined) else { return };
        if !extra.iter().any(|(k, _)| k == "Refiner") {
            if job.hires.is_some() && r.pass != RefinerPass::Second {
                let pass = if r.pass == RefinerPass::First { "first pass" } else { "both passes" };
                extra.push(("Hires refiner".to_string(), pass.to_string()));
            }
            extra.push(("Refiner".to_string(), r.title.clone()));
            if let Some(at) = r.switch_at {
                extra.push(("Refiner switch at".to_string(), float_repr(at)));
            }
        }
    }

    /// Merges the hires pass's entries into the first pass's: its embeddings' hashes go in front
    /// of the existing `TI hashes` (A1111 prepends per encoder call), `Hires schedule type` when
    /// its schedule differs from the first pass's, new sampler parameters at the end.
    pub fn merge_hires_params(&self, extra: &mut Vec<(String, String)>, ti_hashes_wanted: bool) {
        if let Some(hashes) = self.ti_hashes.clone().filter(|_| ti_hashes_wanted) {
            match extra.iter_mut().find(|(k, _)| k == "TI hashes") {
                Some((_, v)) => *v = format!("{hashes}, {v}"),
                None => extra.push(("TI hashes".to_string(), hashes)),
            }
        }
        let first_schedule = extra.iter().find(|(k, _)| k == "Schedule type").map(|(_, v)| v.clone());
        if let Some(s) = self.schedule_type.filter(|s| Some(s.label()) != first_schedule.as_deref()) {
            extra.push(("Hires schedule type".to_string(), s.label().to_string()));
        }
        for (k, v) in &self.sampler_params {
            if !extra.iter().any(|(ek, _)| ek == k) {
                extra.push((k.to_string(), float_repr(*v)));
            }
        }
    }
}

/// The text encoders of `model` as `job`'s settings use them, for a pass conditioned on
/// `condition_size` (width, height).
pub(super) fn model_conditioner<'a>(
    model: &'a LoadedModel,
    job: &BatchJob,
    condition_size: (usize, usize),
) -> ModelConditioner<'a> {
    let sizes = SdxlSizes {
        crop_top_left: job.settings.sdxl_crop,
        aesthetic_scores: job.settings.refiner_aesthetic_scores,
        ..SdxlSizes::for_request(condition_size.0, condition_size.1)
    };
    ModelConditioner { model, emphasis: job.settings.emphasis, clip_skip: job.settings.clip_skip, sizes }
}

/// Prompts → conditioning through `model_conditioner`, with `job`'s chunking, chunk bound and
/// embeddings.
pub(super) fn text_conditioner<'a>(
    model_conditioner: &'a ModelConditioner<'a>,
    table: &'a EmbeddingTable,
    job: &BatchJob,
) -> TextConditioner<'a> {
    let settings = &job.settings;
    let chunking =
        ChunkingOptions { emphasis: settings.emphasis, comma_padding_backtrack: settings.comma_padding_backtrack };
    TextConditioner::new(model_conditioner, chunking)
        .with_max_chunks(settings.max_prompt_chunks)
        .with_embeddings(table, model_conditioner.model.text_widths().len())
}

/// (negative, positive) conditioning of a pass's prompts on `model`, and its `TI hashes`.
fn conditioning(
    model: &LoadedModel,
    table: &EmbeddingTable,
    job: &BatchJob,
    spec: &PassSpec<'_>,
) -> Result<(Vec<PromptSchedule>, MulticondLearnedConditioning, Option<String>), RunnerError> {
    let model_conditioner = model_conditioner(model, job, spec.condition_size);
    let conditioner = text_conditioner(&model_conditioner, table, job);
    let uncond = conditioner.learned_conditioning_negative(spec.negative_prompts, &spec.schedule).map_err(text_err)?;
    let cond = conditioner.multicond_learned_conditioning(spec.prompts, &spec.schedule).map_err(text_err)?;
    Ok((uncond, cond, conditioner.ti_hashes.value()))
}

/// Runs one pass of `job` as `spec` describes it; `refiner`: the model the pass may switch to.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_pass(
    model: &LoadedModel,
    table: &EmbeddingTable,
    job: &BatchJob,
    spec: &PassSpec<'_>,
    refiner: Option<(&LoadedModel, &Refiner)>,
    device: &candle_core::Device,
    control: &JobControl<'_>,
) -> Result<PassOutput, RunnerError> {
    let settings = &job.settings;
    let (lh, lw) = spec.latent_size;
    let sampler = spec.sampler;
    let flags = sampler.flags();

    let (uncond, cond, ti_hashes) = conditioning(model, table, job, spec)?;
    // A1111 recomputes the conditioning on the refiner when it switches; the same prompts give
    // the same result computed now.
    let refiner_conds = refiner.map(|(m, _)| conditioning(m, table, job, spec)).transpose()?;

    // Noise: one generator per image seed (docs/a1111-behaviour.md §4.3), fresh for every pass.
    let source = settings.randn_source;
    let rng_options = ImageRngOptions {
        source,
        subseeds: Some(job.subseeds.clone()),
        subseed_strength: job.subseed_strength,
        seed_resize_from_h: job.seed_resize_from_h,
        seed_resize_from_w: job.seed_resize_from_w,
        eta_noise_seed_delta: settings.eta_noise_seed_delta,
    };
    let mut rng = ImageRng::new([4, lh, lw], job.seeds.clone(), rng_options, device.clone());

    let discrete = sampling::DiscreteSchedule::from_alphas_cumprod(&model.alphas_cumprod).map_err(exec_err)?;
    let sigma_to_t = |s: f64| discrete.sigma_to_t(s);
    let total_calls = if flags.second_order { spec.steps * 2 } else { spec.steps };
    let refiner_switch = refiner.zip(refiner_conds.as_ref()).map(|((m, r), (u, c, _))| RefinerSwitch {
        model: m,
        cond: c,
        uncond: u,
        switch_at: r.switch_at,
        by_sample_steps: r.by_sample_steps,
        total_steps: total_calls,
        sigmas: discrete.sigmas(),
    });
    let mut denoiser = CfgDenoiser {
        model,
        cond: &cond,
        uncond: &uncond,
        cfg_scale: job.cfg_scale,
        sigma_to_t: &sigma_to_t,
        control,
        step: 0,
        refiner: refiner_switch,
        refined: false,
        image_cond: spec.image_cond,
        blend: spec.blend,
    };

    // Sigma schedule (and DDIM-family timesteps), A1111's img2img truncation included.
    let sched_opts = SchedulerOptions {
        sigma_min: settings.sigma_min,
        sigma_max: settings.sigma_max,
        rho: settings.rho,
        beta_alpha: settings.beta_dist_alpha,
        beta_beta: settings.beta_dist_beta,
        is_sdxl: model.family == ModelFamily::Sdxl,
        use_old_karras_scheduler_sigmas: settings.use_old_karras_scheduler_sigmas,
    };
    let alphas = &model.alphas_cumprod;
    let discard = settings.always_discard_next_to_last_sigma;
    let plan = match &spec.start {
        PassStart::Noise => SamplingPlan::txt2img(sampler, spec.scheduler, spec.steps, alphas, &sched_opts, discard),
        PassStart::Img2Img { denoising_strength, fix_steps, .. } => SamplingPlan::img2img(
            sampler,
            spec.scheduler,
            spec.steps,
            *denoising_strength,
            *fix_steps,
            alphas,
            &sched_opts,
            discard,
        ),
    }
    .map_err(exec_err)?;
    let (params, sampler_params) = resolve_sampler_params(sampler, &settings.request_extra, &settings.extra_options);
    let params = SamplerParams { unipc: settings.unipc, ..params };

    // The first draw of every image generator is the initial noise; later draws feed the sampler.
    let noise = rng.next().map_err(exec_err)?;
    let x = match &spec.start {
        PassStart::Noise => plan.txt2img_start(&noise).map_err(exec_err)?,
        PassStart::Img2Img { init, noise_multiplier, .. } => {
            let noise = if *noise_multiplier != 1.0 { (noise * *noise_multiplier).map_err(exec_err)? } else { noise };
            plan.img2img_start(init, &noise, alphas).map_err(exec_err)?
        }
    };
    let state = control.state;
    let (family, every_n) = (model.family, settings.show_progress_every_n_steps);
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
    let brownian = flags.brownian_noise.then(|| BrownianTreeNoise::for_plan(&plan, &job.seeds, source, numel));
    let mut ctx = SamplerContext::new(&mut denoiser, &mut rng, params, alphas).with_callback(&mut callback);
    if let Some(tree) = brownian {
        ctx = ctx.with_brownian(tree);
    }
    let mut output = sampling::sample(&mut ctx, &plan, x).map_err(exec_err)?;
    drop(ctx);
    if let Some(blend) = spec.blend {
        output.latent = blend.apply(&output.latent).map_err(exec_err)?;
    }
    let refined = denoiser.refined;
    // k-diffusion samplers record the schedule they used, an Automatic one resolved to the
    // sampler's default (DPM++ 2M → Karras).
    let schedule_type = match spec.scheduler {
        Scheduler::Automatic => flags.default_scheduler,
        explicit => Some(explicit),
    }
    .filter(|s| !flags.timesteps && *s != Scheduler::Automatic);
    Ok(PassOutput {
        latent: output.latent,
        interrupted: output.interrupted,
        refined,
        ti_hashes,
        schedule_type,
        sampler_params,
        noise_multiplier: match spec.start {
            PassStart::Img2Img { noise_multiplier, .. } if noise_multiplier != 1.0 => Some(noise_multiplier),
            _ => None,
        },
    })
}
