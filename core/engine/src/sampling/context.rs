//! What a running sampler holds (model, noise, parameters, progress callback) and [`sample`], the
//! single entry point that dispatches to the sampler modules and handles interruption.

use candle_core::Tensor;

use super::{
    BrownianTreeNoise, Model, NoiseSource, SamplerKind, SamplerParams, SamplingError, SamplingPlan, dpm_solver, dpmpp,
    k_euler, lcm, lms, restart, timestep_samplers, unipc,
};

/// Progress of one sampler step, reported after the step's model evaluation.
#[derive(Debug)]
pub struct StepInfo<'a> {
    /// 0-based step index (A1111 `state.sampling_step`).
    pub step: usize,
    /// Steps of this run (A1111 `state.sampling_steps`).
    pub total_steps: usize,
    pub x: &'a Tensor,
    pub denoised: &'a Tensor,
    pub sigma: f64,
}

/// Called after every step; returning `Err(SamplingError::Interrupted)` stops the sampler.
pub trait StepCallback {
    fn on_step(&mut self, info: &StepInfo<'_>) -> Result<(), SamplingError>;
}

impl<F: FnMut(&StepInfo<'_>) -> Result<(), SamplingError>> StepCallback for F {
    fn on_step(&mut self, info: &StepInfo<'_>) -> Result<(), SamplingError> {
        self(info)
    }
}

/// Result of [`sample`]. On interruption `latent` is the last denoised prediction (A1111 returns
/// `last_latent`, the latest `denoised` seen by its callback) and `interrupted` is set.
#[derive(Debug)]
pub struct SampleOutput {
    pub latent: Tensor,
    pub interrupted: bool,
}

/// Everything a sampler needs besides the latent and the schedule.
pub struct SamplerContext<'a> {
    pub model: &'a mut dyn Model,
    /// Per-image step noise (`torch.randn_like`), e.g. [`crate::rng::ImageRng`].
    pub noise: &'a mut dyn NoiseSource,
    pub params: SamplerParams,
    /// Brownian-tree noise for the SDE samplers (A1111 builds one per batch from the batch seeds);
    /// without it they fall back to `noise`.
    pub brownian: Option<BrownianTreeNoise>,
    /// The model's `alphas_cumprod` (timestep samplers, UniPC, LCM).
    pub alphas_cumprod: &'a [f32],
    pub callback: Option<&'a mut dyn StepCallback>,
    total_steps: usize,
    last_denoised: Option<Tensor>,
}

impl<'a> SamplerContext<'a> {
    pub fn new(
        model: &'a mut dyn Model,
        noise: &'a mut dyn NoiseSource,
        params: SamplerParams,
        alphas_cumprod: &'a [f32],
    ) -> Self {
        Self {
            model,
            noise,
            params,
            brownian: None,
            alphas_cumprod,
            callback: None,
            total_steps: 0,
            last_denoised: None,
        }
    }

    pub fn with_callback(mut self, callback: &'a mut dyn StepCallback) -> Self {
        self.callback = Some(callback);
        self
    }

    pub fn with_brownian(mut self, brownian: BrownianTreeNoise) -> Self {
        self.brownian = Some(brownian);
        self
    }

    pub(super) fn denoise(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor, SamplingError> {
        self.model.denoised(x, sigma)
    }

    /// Reports a finished step (and remembers its prediction for interruption).
    pub(super) fn report(
        &mut self,
        step: usize,
        x: &Tensor,
        denoised: &Tensor,
        sigma: f64,
    ) -> Result<(), SamplingError> {
        self.last_denoised = Some(denoised.clone());
        let total_steps = self.total_steps;
        match self.callback.as_deref_mut() {
            Some(cb) => cb.on_step(&StepInfo { step, total_steps, x, denoised, sigma }),
            None => Ok(()),
        }
    }

    /// One `torch.randn_like(x)` draw (one tensor per image generator).
    pub(super) fn randn_like(&mut self, x: &Tensor) -> Result<Tensor, SamplingError> {
        Ok(self.noise.randn_like(x)?)
    }

    /// k-diffusion `noise_sampler(sigma, sigma_next)`: Brownian increment if configured, else randn_like.
    pub(super) fn step_noise(&mut self, sigma: f64, sigma_next: f64, x: &Tensor) -> Result<Tensor, SamplingError> {
        match self.brownian.as_mut() {
            Some(tree) => tree.noise(sigma, sigma_next, x),
            None => Ok(self.noise.randn_like(x)?),
        }
    }
}

/// Runs `plan.kind` from latent `x` (already scaled: see `SamplingPlan::txt2img_start`).
pub fn sample(ctx: &mut SamplerContext<'_>, plan: &SamplingPlan, x: Tensor) -> Result<SampleOutput, SamplingError> {
    ctx.total_steps = plan.sampling_steps();
    ctx.last_denoised = None;
    let sigmas = plan.sigmas.as_slice();
    let start = x.clone();
    let result = match plan.kind {
        SamplerKind::Euler => k_euler::euler(ctx, x, sigmas),
        SamplerKind::EulerAncestral => k_euler::euler_ancestral(ctx, x, sigmas),
        SamplerKind::Heun => k_euler::heun(ctx, x, sigmas),
        SamplerKind::Dpm2 => k_euler::dpm_2(ctx, x, sigmas),
        SamplerKind::Dpm2Ancestral => k_euler::dpm_2_ancestral(ctx, x, sigmas),
        SamplerKind::Lms => lms::lms(ctx, x, sigmas, 4),
        SamplerKind::DpmPp2SAncestral => dpmpp::dpmpp_2s_ancestral(ctx, x, sigmas),
        SamplerKind::DpmPp2M => dpmpp::dpmpp_2m(ctx, x, sigmas),
        SamplerKind::DpmPpSde => dpmpp::dpmpp_sde(ctx, x, sigmas),
        SamplerKind::DpmPp2MSde => dpmpp::dpmpp_2m_sde(ctx, x, sigmas, dpmpp::SolverType::Midpoint),
        SamplerKind::DpmPp2MSdeHeun => dpmpp::dpmpp_2m_sde(ctx, x, sigmas, dpmpp::SolverType::Heun),
        SamplerKind::DpmPp3MSde => dpmpp::dpmpp_3m_sde(ctx, x, sigmas),
        SamplerKind::DpmFast => dpm_solver::dpm_fast(ctx, x, plan.dpm_sigma_min, plan.dpm_sigma_max, plan.dpm_steps),
        SamplerKind::DpmAdaptive => dpm_solver::dpm_adaptive(ctx, x, plan.dpm_sigma_min, plan.dpm_sigma_max),
        SamplerKind::Restart => restart::restart(ctx, x, sigmas),
        SamplerKind::Lcm => lcm::lcm(ctx, x, sigmas),
        SamplerKind::Ddim => timestep_samplers::ddim(ctx, x, &plan.timesteps, false),
        SamplerKind::DdimCfgPp => timestep_samplers::ddim(ctx, x, &plan.timesteps, true),
        SamplerKind::Plms => timestep_samplers::plms(ctx, x, &plan.timesteps),
        SamplerKind::UniPc => unipc::unipc(ctx, x, &plan.timesteps, plan.is_img2img),
    };
    match result {
        Ok(latent) => Ok(SampleOutput { latent, interrupted: false }),
        Err(SamplingError::Interrupted) => {
            Ok(SampleOutput { latent: ctx.last_denoised.take().unwrap_or(start), interrupted: true })
        }
        Err(e) => Err(e),
    }
}

/// `a * ca + b * cb`, the shape of almost every sampler update.
pub(super) fn lin2(a: &Tensor, ca: f64, b: &Tensor, cb: f64) -> Result<Tensor, SamplingError> {
    Ok(((a * ca)? + (b * cb)?)?)
}

/// k-diffusion `to_d`: the Karras ODE derivative (x - denoised) / sigma.
pub(super) fn to_d(x: &Tensor, sigma: f64, denoised: &Tensor) -> Result<Tensor, SamplingError> {
    Ok(((x - denoised)? / sigma)?)
}

/// k-diffusion `get_ancestral_step`: (sigma_down, sigma_up).
pub(super) fn ancestral_step(sigma_from: f64, sigma_to: f64, eta: f64) -> (f64, f64) {
    if eta == 0.0 {
        return (sigma_to, 0.0);
    }
    let up =
        sigma_to.min(eta * (sigma_to.powi(2) * (sigma_from.powi(2) - sigma_to.powi(2)) / sigma_from.powi(2)).sqrt());
    ((sigma_to.powi(2) - up.powi(2)).sqrt(), up)
}
