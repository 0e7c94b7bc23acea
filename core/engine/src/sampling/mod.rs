//! Samplers, sigma schedules and the denoiser interface they drive (A1111 v1.10.1, k-diffusion ab527a9a; docs/parity.md).
//!
//! The sampler code never sees a UNet: it calls a [`Model`] (CFG already applied) and draws noise from a
//! [`NoiseSource`] (each image's own generator), both injected by the caller.
//!
//! Entry points: [`SamplerKind`] (the 20 A1111 samplers; names and flags are the protocol's table), [`SamplingPlan`] (sigmas or
//! timesteps for txt2img / img2img), and [`sample`], which runs a sampler, reports every step to a
//! [`StepCallback`] and turns an interruption into the latest latent.

mod beta_dist;
mod context;
mod discrete;
mod dpm_solver;
mod dpmpp;
mod k_euler;
mod lcm;
mod lms;
mod params;
mod plan;
mod restart;
mod schedulers;
mod timestep_samplers;
mod torchsde;
mod unipc;

#[cfg(test)]
mod fixture_tests;
#[cfg(test)]
mod sampler_tests;
#[cfg(test)]
mod scheduler_tests;
#[cfg(test)]
mod test_support;

use candle_core::Tensor;

pub use beta_dist::{beta_ppf, regularized_incomplete_beta};
pub use context::{SampleOutput, SamplerContext, StepCallback, StepInfo, sample};
pub use discrete::{DiscreteSchedule, linspace_f32, linspace_f64};
pub use lms::linear_multistep_coeff;
pub use params::{ExtraParamOptions, RequestExtraParams, SamplerParams, resolve_sampler_params};
pub use plan::{SamplingPlan, img2img_steps, timestep_schedule};
pub use schedulers::{SchedulerOptions, SchedulerSigmas, karras};
pub use sdapi_protocol::choices::{SamplerFlags, SamplerKind, Scheduler};
pub use torchsde::BrownianTreeNoise;

/// Error raised while sampling. `Interrupted` stops the sampler early; the caller keeps the last latent.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    #[error("interrupted")]
    Interrupted,
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{0}")]
    Other(String),
}

/// The CFG-combined model as samplers see it.
pub trait Model {
    /// k-diffusion view: denoised prediction x0 for latent `x` (B,4,h,w) at noise level `sigma`.
    fn denoised(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor, SamplingError>;
    /// Timestep view used by DDIM/PLMS/UniPC ("timesteps" samplers): eps prediction at integer
    /// timestep `t`, `x` passed to the UNet unscaled.
    fn eps_at_timestep(&mut self, x: &Tensor, t: usize) -> Result<Tensor, SamplingError>;

    /// Eps at a continuous (fractional) model timestep, `x` unscaled. UniPC evaluates the model at
    /// `(t_continuous - 1/N) * 1000`, which is not an integer in general. The default serves
    /// integral values through [`Model::eps_at_timestep`]; engines should override it.
    fn eps_at_continuous_timestep(&mut self, x: &Tensor, t: f64) -> Result<Tensor, SamplingError> {
        if t >= 0.0 && t.fract() == 0.0 {
            self.eps_at_timestep(x, t as usize)
        } else {
            Err(SamplingError::Other(format!("model cannot evaluate fractional timestep {t}")))
        }
    }

    /// DDIM CFG++: returns (guided eps with the CFG scale multiplied by `cfg_scale_multiplier`,
    /// unconditional eps) at timestep `t` (A1111 `cond_scale_miltiplier = 1/12.5`,
    /// `last_noise_uncond`). Models without CFG access leave the default error.
    fn eps_and_uncond_at_timestep(
        &mut self,
        _x: &Tensor,
        _t: usize,
        _cfg_scale_multiplier: f64,
    ) -> Result<(Tensor, Tensor), SamplingError> {
        Err(SamplingError::Other("this model does not expose the unconditional prediction (DDIM CFG++)".into()))
    }
}

pub use crate::rng::NoiseSource;
