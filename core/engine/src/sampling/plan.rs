//! What a sampler is driven with: the sigma schedule (k-diffusion samplers) or integer timesteps
//! (DDIM/PLMS/UniPC) for txt2img and img2img, as A1111's `get_sigmas` / `get_timesteps` /
//! `sample_img2img` build them (docs/a1111-behaviour.md §5.2, §5.3, §5.5).

use candle_core::Tensor;

use super::{DiscreteSchedule, SamplerKind, SamplingError, Scheduler, SchedulerOptions, SchedulerSigmas};

/// The schedule of one sampling run.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingPlan {
    pub kind: SamplerKind,
    /// Sigmas passed to a k-diffusion sampler (img2img: the truncated `sigma_sched`).
    pub sigmas: Vec<f64>,
    /// The schedule before img2img truncation (Brownian trees span its range, as in A1111).
    pub full_sigmas: Vec<f64>,
    /// Timesteps passed to a timestep sampler (img2img: `timesteps[:t_enc]`).
    pub timesteps: Vec<usize>,
    /// DPM fast / adaptive range and step count (txt2img: the model's range and `steps`).
    pub dpm_sigma_min: f64,
    pub dpm_sigma_max: f64,
    pub dpm_steps: usize,
    pub is_img2img: bool,
    /// Requested steps (A1111 reports them as `state.sampling_steps` for txt2img).
    pub steps: usize,
    /// img2img: `(steps, t_enc)`; the sampler runs `t_enc + 1` steps.
    pub img2img_steps: Option<(usize, usize)>,
    /// Timestep samplers, img2img: the timestep the init latent is noised to (`timesteps[t_enc]`).
    pub img2img_noise_timestep: Option<usize>,
}

/// The model schedule a sampler sees: LCM uses its own 50-entry table.
pub fn model_schedule(kind: SamplerKind, alphas_cumprod: &[f32]) -> Result<DiscreteSchedule, SamplingError> {
    if kind == SamplerKind::Lcm {
        DiscreteSchedule::lcm(alphas_cumprod)
    } else {
        DiscreteSchedule::from_alphas_cumprod(alphas_cumprod)
    }
}

/// A1111 `get_timesteps`: `clip(arange(0, 1000, 1000 // steps) + 1, 0, 999)`.
pub fn timestep_schedule(steps: usize, num_timesteps: usize) -> Result<Vec<usize>, SamplingError> {
    let stride = num_timesteps.checked_div(steps).unwrap_or(0);
    if stride == 0 {
        return Err(SamplingError::Other(format!("steps must be in 1..={num_timesteps}, got {steps}")));
    }
    Ok((0..num_timesteps).step_by(stride).map(|t| (t + 1).min(num_timesteps - 1)).collect())
}

/// `setup_img2img_steps`: `(steps, t_enc)`. With `fix_steps` (opts.img2img_fix_steps or explicit
/// hires steps) the schedule is stretched so that exactly `requested` steps run.
pub fn img2img_steps(requested: usize, denoising_strength: f64, fix_steps: bool) -> (usize, usize) {
    if fix_steps {
        let steps =
            if denoising_strength > 0.0 { (requested as f64 / denoising_strength.min(0.999)) as usize } else { 0 };
        (steps, requested.saturating_sub(1))
    } else {
        (requested, (denoising_strength.min(0.999) * requested as f64) as usize)
    }
}

/// Rounds to float32 precision: A1111 holds every schedule in a float32 tensor.
fn to_f32_precision(v: Vec<f64>) -> Vec<f64> {
    v.into_iter().map(|s| f64::from(s as f32)).collect()
}

impl SamplingPlan {
    /// Full schedule for `steps` (A1111 `get_sigmas` / `get_timesteps`), resolving "Automatic" to the
    /// sampler default and applying `discard_next_to_last_sigma` (or the "always" option).
    fn schedule(
        kind: SamplerKind,
        scheduler: Scheduler,
        steps: usize,
        alphas_cumprod: &[f32],
        options: &SchedulerOptions,
        always_discard_next_to_last_sigma: bool,
    ) -> Result<(Vec<f64>, Vec<usize>, DiscreteSchedule), SamplingError> {
        if steps == 0 {
            return Err(SamplingError::Other("steps must be at least 1".into()));
        }
        let flags = kind.flags();
        let discard = flags.discard_next_to_last_sigma || always_discard_next_to_last_sigma;
        let n = steps + usize::from(discard);
        let model = model_schedule(kind, alphas_cumprod)?;
        if flags.timesteps {
            return Ok((vec![], timestep_schedule(n, alphas_cumprod.len())?, model));
        }
        let scheduler = match scheduler {
            Scheduler::Automatic => flags.default_scheduler.unwrap_or(Scheduler::Uniform),
            s => s,
        };
        let mut sigmas = to_f32_precision(scheduler.sigmas(n, &model, options));
        if discard && sigmas.len() >= 2 {
            sigmas.remove(sigmas.len() - 2);
        }
        Ok((sigmas, vec![], model))
    }

    /// txt2img plan.
    pub fn txt2img(
        kind: SamplerKind,
        scheduler: Scheduler,
        steps: usize,
        alphas_cumprod: &[f32],
        options: &SchedulerOptions,
        always_discard_next_to_last_sigma: bool,
    ) -> Result<Self, SamplingError> {
        let (sigmas, timesteps, model) =
            Self::schedule(kind, scheduler, steps, alphas_cumprod, options, always_discard_next_to_last_sigma)?;
        Ok(Self {
            kind,
            full_sigmas: sigmas.clone(),
            sigmas,
            timesteps,
            dpm_sigma_min: model.sigma_min(),
            dpm_sigma_max: model.sigma_max(),
            dpm_steps: steps,
            is_img2img: false,
            steps,
            img2img_steps: None,
            img2img_noise_timestep: None,
        })
    }

    /// img2img plan: the full schedule for `steps`, truncated to the last `t_enc + 1` steps
    /// (`sigmas[steps - t_enc - 1:]`; timestep samplers: `timesteps[:t_enc]`).
    #[allow(clippy::too_many_arguments)]
    pub fn img2img(
        kind: SamplerKind,
        scheduler: Scheduler,
        requested_steps: usize,
        denoising_strength: f64,
        fix_steps: bool,
        alphas_cumprod: &[f32],
        options: &SchedulerOptions,
        always_discard_next_to_last_sigma: bool,
    ) -> Result<Self, SamplingError> {
        let (steps, t_enc) = img2img_steps(requested_steps, denoising_strength, fix_steps);
        let (full_sigmas, full_timesteps, _) =
            Self::schedule(kind, scheduler, steps, alphas_cumprod, options, always_discard_next_to_last_sigma)?;
        let (sigmas, timesteps, noise_t) = if kind.flags().timesteps {
            let t = *full_timesteps.get(t_enc).ok_or_else(|| {
                SamplingError::Other(format!("t_enc {t_enc} beyond {} timesteps", full_timesteps.len()))
            })?;
            (vec![], full_timesteps[..t_enc].to_vec(), Some(t))
        } else {
            let start = steps
                .checked_sub(t_enc + 1)
                .filter(|&s| s + 1 < full_sigmas.len())
                .ok_or_else(|| SamplingError::Other(format!("cannot truncate {steps} steps at t_enc {t_enc}")))?;
            (full_sigmas[start..].to_vec(), vec![], None)
        };
        let (dpm_min, dpm_max) = match sigmas.len() {
            n if n >= 2 => (sigmas[n - 2], sigmas[0]),
            _ => (0.0, 0.0),
        };
        Ok(Self {
            kind,
            dpm_sigma_min: dpm_min,
            dpm_sigma_max: dpm_max,
            dpm_steps: sigmas.len().saturating_sub(1),
            sigmas,
            full_sigmas,
            timesteps,
            is_img2img: true,
            steps: requested_steps,
            img2img_steps: Some((steps, t_enc)),
            img2img_noise_timestep: noise_t,
        })
    }

    /// Sampler steps shown as progress (`state.sampling_steps`): steps, or t_enc + 1 for img2img.
    pub fn sampling_steps(&self) -> usize {
        match self.img2img_steps {
            Some((_, t_enc)) => t_enc + 1,
            None => self.steps,
        }
    }

    /// txt2img sampler input: `noise * sigmas[0]` (timestep samplers: the raw noise).
    pub fn txt2img_start(&self, noise: &Tensor) -> Result<Tensor, SamplingError> {
        if self.kind.flags().timesteps {
            return Ok(noise.clone());
        }
        let s0 = self.sigmas.first().copied().ok_or_else(|| SamplingError::Other("empty sigma schedule".into()))?;
        Ok((noise * s0)?)
    }

    /// img2img sampler input: `init + noise * sigma_sched[0]`, or for timestep samplers
    /// `sqrt(a) init + sqrt(1 - a) noise` at `timesteps[t_enc]`.
    pub fn img2img_start(
        &self,
        init_latent: &Tensor,
        noise: &Tensor,
        alphas_cumprod: &[f32],
    ) -> Result<Tensor, SamplingError> {
        if let Some(t) = self.img2img_noise_timestep {
            let a = alphas_cumprod
                .get(t)
                .copied()
                .ok_or_else(|| SamplingError::Other(format!("timestep {t} out of range")))?;
            let (sa, s1a) = (a.sqrt(), (1.0 - a).sqrt());
            return Ok(((init_latent * f64::from(sa))? + (noise * f64::from(s1a))?)?);
        }
        let s0 = self.sigmas.first().copied().ok_or_else(|| SamplingError::Other("empty sigma schedule".into()))?;
        Ok((init_latent + (noise * s0)?)?)
    }
}
