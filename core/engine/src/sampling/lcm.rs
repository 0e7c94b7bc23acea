//! A1111's LCM sampler (`sd_samplers_lcm`): each step jumps to the consistency-model prediction
//! and re-noises to the next sigma. The LCM denoiser evaluates eps at the quantized timestep of its
//! 50-entry table and applies the LCM boundary scalings (sigma_data 0.5, timestep scale 10).

use candle_core::Tensor;

use super::context::{SamplerContext, lin2};
use super::{DiscreteSchedule, SamplingError};

/// `LCMCompVisDenoiser.forward` on top of the CFG eps model.
fn lcm_denoised(
    ctx: &mut SamplerContext<'_>,
    table: &DiscreteSchedule,
    x: &Tensor,
    sigma: f64,
) -> Result<Tensor, SamplingError> {
    let t = table.sigma_to_t(sigma);
    let c_in = 1.0 / (sigma * sigma + 1.0).sqrt();
    let eps = ctx.model.eps_at_timestep(&(x * c_in)?, t as usize)?;
    let plain = lin2(x, 1.0, &eps, -sigma)?;
    const SIGMA_DATA: f64 = 0.5;
    let st = t * 10.0;
    let c_skip = SIGMA_DATA.powi(2) / (st * st + SIGMA_DATA.powi(2));
    let c_out = st / (st * st + SIGMA_DATA.powi(2)).sqrt();
    lin2(&plain, c_out, x, c_skip)
}

pub fn lcm(ctx: &mut SamplerContext<'_>, mut x: Tensor, sigmas: &[f64]) -> Result<Tensor, SamplingError> {
    let table = DiscreteSchedule::lcm(ctx.alphas_cumprod)?;
    for i in 0..sigmas.len().saturating_sub(1) {
        let denoised = lcm_denoised(ctx, &table, &x, sigmas[i])?;
        ctx.report(i, &x, &denoised, sigmas[i])?;
        x = denoised;
        if sigmas[i + 1] > 0.0 {
            let noise = ctx.step_noise(sigmas[i], sigmas[i + 1], &x)?;
            x = lin2(&x, 1.0, &noise, sigmas[i + 1])?;
        }
    }
    Ok(x)
}
