//! Karras-style first/second-order samplers of k-diffusion: Euler, Euler ancestral, Heun, DPM2,
//! DPM2 ancestral.
//!
//! Draw counts matter for parity: Euler, Heun and DPM2 call `randn_like` at every step even without
//! churn (the tensor is only used when gamma > 0); the ancestral ones draw only when the next sigma
//! is > 0.

use candle_core::Tensor;

use super::SamplingError;
use super::context::{SamplerContext, ancestral_step, lin2, to_d};

/// Churn factor gamma of step i (Karras et al. Algorithm 2).
fn churn_gamma(ctx: &SamplerContext<'_>, sigma: f64, n_sigmas: usize) -> f64 {
    let p = &ctx.params;
    if p.s_tmin <= sigma && sigma <= p.s_tmax {
        (p.s_churn / (n_sigmas - 1) as f64).min(2f64.sqrt() - 1.0)
    } else {
        0.0
    }
}

/// Shared start of Euler/Heun/DPM2 steps: draw the (maybe unused) churn noise and raise sigma.
fn churn(ctx: &mut SamplerContext<'_>, x: Tensor, sigma: f64, n_sigmas: usize) -> Result<(Tensor, f64), SamplingError> {
    let gamma = churn_gamma(ctx, sigma, n_sigmas);
    let eps = (ctx.randn_like(&x)? * ctx.params.s_noise)?;
    let sigma_hat = sigma * (gamma + 1.0);
    if gamma > 0.0 {
        let x = (x + (eps * (sigma_hat.powi(2) - sigma.powi(2)).sqrt())?)?;
        return Ok((x, sigma_hat));
    }
    Ok((x, sigma_hat))
}

pub fn euler(ctx: &mut SamplerContext<'_>, mut x: Tensor, sigmas: &[f64]) -> Result<Tensor, SamplingError> {
    for i in 0..sigmas.len().saturating_sub(1) {
        let (x_hat, sigma_hat) = churn(ctx, x, sigmas[i], sigmas.len())?;
        let denoised = ctx.denoise(&x_hat, sigma_hat)?;
        let d = to_d(&x_hat, sigma_hat, &denoised)?;
        ctx.report(i, &x_hat, &denoised, sigmas[i])?;
        x = lin2(&x_hat, 1.0, &d, sigmas[i + 1] - sigma_hat)?;
    }
    Ok(x)
}

pub fn euler_ancestral(ctx: &mut SamplerContext<'_>, mut x: Tensor, sigmas: &[f64]) -> Result<Tensor, SamplingError> {
    let (eta, s_noise) = (ctx.params.eta, ctx.params.s_noise);
    for i in 0..sigmas.len().saturating_sub(1) {
        let denoised = ctx.denoise(&x, sigmas[i])?;
        let (sigma_down, sigma_up) = ancestral_step(sigmas[i], sigmas[i + 1], eta);
        ctx.report(i, &x, &denoised, sigmas[i])?;
        let d = to_d(&x, sigmas[i], &denoised)?;
        x = lin2(&x, 1.0, &d, sigma_down - sigmas[i])?;
        if sigmas[i + 1] > 0.0 {
            let noise = ctx.step_noise(sigmas[i], sigmas[i + 1], &x)?;
            x = lin2(&x, 1.0, &noise, s_noise * sigma_up)?;
        }
    }
    Ok(x)
}

pub fn heun(ctx: &mut SamplerContext<'_>, mut x: Tensor, sigmas: &[f64]) -> Result<Tensor, SamplingError> {
    for i in 0..sigmas.len().saturating_sub(1) {
        let (x_hat, sigma_hat) = churn(ctx, x, sigmas[i], sigmas.len())?;
        let denoised = ctx.denoise(&x_hat, sigma_hat)?;
        let d = to_d(&x_hat, sigma_hat, &denoised)?;
        ctx.report(i, &x_hat, &denoised, sigmas[i])?;
        let dt = sigmas[i + 1] - sigma_hat;
        if sigmas[i + 1] == 0.0 {
            x = lin2(&x_hat, 1.0, &d, dt)?;
        } else {
            let x_2 = lin2(&x_hat, 1.0, &d, dt)?;
            let denoised_2 = ctx.denoise(&x_2, sigmas[i + 1])?;
            let d_2 = to_d(&x_2, sigmas[i + 1], &denoised_2)?;
            let d_prime = ((d + d_2)? / 2.0)?;
            x = lin2(&x_hat, 1.0, &d_prime, dt)?;
        }
    }
    Ok(x)
}

/// Geometric midpoint of two sigmas (k-diffusion: exp(lerp(log a, log b, 0.5))).
fn log_midpoint(a: f64, b: f64) -> f64 {
    (a.ln() + 0.5 * (b.ln() - a.ln())).exp()
}

pub fn dpm_2(ctx: &mut SamplerContext<'_>, mut x: Tensor, sigmas: &[f64]) -> Result<Tensor, SamplingError> {
    for i in 0..sigmas.len().saturating_sub(1) {
        let (x_hat, sigma_hat) = churn(ctx, x, sigmas[i], sigmas.len())?;
        let denoised = ctx.denoise(&x_hat, sigma_hat)?;
        let d = to_d(&x_hat, sigma_hat, &denoised)?;
        ctx.report(i, &x_hat, &denoised, sigmas[i])?;
        if sigmas[i + 1] == 0.0 {
            x = lin2(&x_hat, 1.0, &d, sigmas[i + 1] - sigma_hat)?;
        } else {
            let sigma_mid = log_midpoint(sigma_hat, sigmas[i + 1]);
            let x_2 = lin2(&x_hat, 1.0, &d, sigma_mid - sigma_hat)?;
            let denoised_2 = ctx.denoise(&x_2, sigma_mid)?;
            let d_2 = to_d(&x_2, sigma_mid, &denoised_2)?;
            x = lin2(&x_hat, 1.0, &d_2, sigmas[i + 1] - sigma_hat)?;
        }
    }
    Ok(x)
}

pub fn dpm_2_ancestral(ctx: &mut SamplerContext<'_>, mut x: Tensor, sigmas: &[f64]) -> Result<Tensor, SamplingError> {
    let (eta, s_noise) = (ctx.params.eta, ctx.params.s_noise);
    for i in 0..sigmas.len().saturating_sub(1) {
        let denoised = ctx.denoise(&x, sigmas[i])?;
        let (sigma_down, sigma_up) = ancestral_step(sigmas[i], sigmas[i + 1], eta);
        ctx.report(i, &x, &denoised, sigmas[i])?;
        let d = to_d(&x, sigmas[i], &denoised)?;
        if sigma_down == 0.0 {
            x = lin2(&x, 1.0, &d, sigma_down - sigmas[i])?;
        } else {
            let sigma_mid = log_midpoint(sigmas[i], sigma_down);
            let x_2 = lin2(&x, 1.0, &d, sigma_mid - sigmas[i])?;
            let denoised_2 = ctx.denoise(&x_2, sigma_mid)?;
            let d_2 = to_d(&x_2, sigma_mid, &denoised_2)?;
            x = lin2(&x, 1.0, &d_2, sigma_down - sigmas[i])?;
            let noise = ctx.step_noise(sigmas[i], sigmas[i + 1], &x)?;
            x = lin2(&x, 1.0, &noise, s_noise * sigma_up)?;
        }
    }
    Ok(x)
}
