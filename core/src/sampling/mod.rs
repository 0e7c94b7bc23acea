//! Samplers, sigma schedules and the denoiser interface they drive (A1111 §5, k-diffusion ab527a9a).
//!
//! The sampler code never sees a UNet: it calls a [`Model`] (CFG already applied) and draws noise from a
//! [`NoiseSource`] (each image's own generator), both injected by the caller.

use candle_core::Tensor;

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
}

/// Source of the per-step noise (`torch.randn_like` inside k-diffusion): one draw per image generator,
/// stacked to the latent batch shape.
pub trait NoiseSource {
    fn randn_like(&mut self, like: &Tensor) -> Result<Tensor, SamplingError>;
}
