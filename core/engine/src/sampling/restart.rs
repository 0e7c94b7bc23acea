//! A1111's Restart sampler (`sd_samplers_extra.restart_sampler`, Xu et al. 2023): Heun steps on a
//! Karras schedule, with segments that jump back up in noise (fresh noise added) and re-descend.

use candle_core::Tensor;

use super::context::{SamplerContext, lin2, to_d};
use super::{SamplingError, karras};

fn karras_f32(n: usize, sigma_min: f64, sigma_max: f64) -> Vec<f64> {
    let mut v: Vec<f64> = karras(n, sigma_min, sigma_max, 7.0).into_iter().map(|s| f64::from(s as f32)).collect();
    v.push(0.0);
    v
}

fn nearest_index(sigmas: &[f64], target: f64) -> usize {
    sigmas
        .iter()
        .enumerate()
        .fold(
            (0, f64::INFINITY),
            |best, (i, &s)| {
                if (s - target).abs() < best.1 { (i, (s - target).abs()) } else { best }
            },
        )
        .0
}

/// The (old_sigma, new_sigma) pairs the sampler walks, with A1111's automatic restart list.
pub(super) fn restart_step_list(sigmas: &[f64]) -> Vec<(f64, f64)> {
    let steps = sigmas.len().saturating_sub(1);
    let mut sigmas = sigmas.to_vec();
    // restart list entry: (at sigma 0.1) -> (restart_steps, restart_times, restart_max sigma 2).
    let mut restart: Option<(usize, usize, usize, f64)> = None;
    if steps >= 20 {
        let (mut restart_steps, mut restart_times) = (9usize, 1usize);
        if steps >= 36 {
            restart_steps = steps / 4;
            restart_times = 2;
        }
        sigmas = karras_f32(steps - restart_steps * restart_times, sigmas[sigmas.len() - 2], sigmas[0]);
        restart = Some((nearest_index(&sigmas, 0.1), restart_steps + 1, restart_times, 2.0));
    }
    let mut list = Vec::new();
    for i in 0..sigmas.len() - 1 {
        list.push((sigmas[i], sigmas[i + 1]));
        if let Some((at, restart_steps, restart_times, restart_max)) = restart
            && at == i + 1
        {
            let (min_idx, max_idx) = (i + 1, nearest_index(&sigmas, restart_max));
            if max_idx < min_idx {
                let mut sigma_restart = karras_f32(restart_steps, sigmas[min_idx], sigmas[max_idx]);
                sigma_restart.pop();
                for _ in 0..restart_times {
                    list.extend(sigma_restart.windows(2).map(|w| (w[0], w[1])));
                }
            }
        }
    }
    list
}

pub fn restart(ctx: &mut SamplerContext<'_>, mut x: Tensor, sigmas: &[f64]) -> Result<Tensor, SamplingError> {
    if sigmas.len() < 2 {
        return Ok(x);
    }
    let s_noise = ctx.params.s_noise;
    let mut last_sigma: Option<f64> = None;
    for (step, (old_sigma, new_sigma)) in restart_step_list(sigmas).into_iter().enumerate() {
        match last_sigma {
            Some(last) if last < old_sigma => {
                let noise = ctx.randn_like(&x)?;
                x = lin2(&x, 1.0, &noise, s_noise * (old_sigma.powi(2) - last.powi(2)).sqrt())?;
            }
            _ => {}
        }
        // Heun step (Euler when stepping to 0).
        let denoised = ctx.denoise(&x, old_sigma)?;
        let d = to_d(&x, old_sigma, &denoised)?;
        ctx.report(step, &x, &denoised, new_sigma)?;
        let dt = new_sigma - old_sigma;
        if new_sigma == 0.0 {
            x = lin2(&x, 1.0, &d, dt)?;
        } else {
            let x_2 = lin2(&x, 1.0, &d, dt)?;
            let denoised_2 = ctx.denoise(&x_2, new_sigma)?;
            let d_2 = to_d(&x_2, new_sigma, &denoised_2)?;
            x = lin2(&x, 1.0, &((d + d_2)? / 2.0)?, dt)?;
        }
        last_sigma = Some(new_sigma);
    }
    Ok(x)
}
