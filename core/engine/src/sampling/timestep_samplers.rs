//! A1111's timestep samplers (`sd_samplers_timesteps_impl`): DDIM, DDIM CFG++ and PLMS. They walk
//! integer timesteps from the last index down to 1 and end at timesteps[0] without a final step to 0.

use candle_core::Tensor;

use super::SamplingError;
use super::context::{SamplerContext, lin2};

/// Per-index alpha values: a_t = ac[timesteps[k]], a_prev = ac[timesteps[k-1]] (ac[0] for k = 0).
fn alphas(ac: &[f32], timesteps: &[usize]) -> Result<(Vec<f64>, Vec<f64>), SamplingError> {
    let get = |t: usize| {
        ac.get(t).map(|&a| f64::from(a)).ok_or_else(|| SamplingError::Other(format!("timestep {t} out of range")))
    };
    let a: Vec<f64> = timesteps.iter().map(|&t| get(t)).collect::<Result<_, _>>()?;
    let prev: Vec<f64> =
        (0..timesteps.len()).map(|k| if k == 0 { get(0) } else { get(timesteps[k - 1]) }).collect::<Result<_, _>>()?;
    Ok((a, prev))
}

/// DDIM (eta from the params; `cfg_pp` uses the unconditional eps for the direction term and the
/// CFG scale / 12.5, as "DDIM CFG++").
pub fn ddim(
    ctx: &mut SamplerContext<'_>,
    mut x: Tensor,
    timesteps: &[usize],
    cfg_pp: bool,
) -> Result<Tensor, SamplingError> {
    let (a, a_prev) = alphas(ctx.alphas_cumprod, timesteps)?;
    let eta = ctx.params.eta;
    let sigma: Vec<f64> =
        a.iter().zip(&a_prev).map(|(&at, &ap)| eta * ((1.0 - ap) / (1.0 - at) * (1.0 - at / ap)).sqrt()).collect();
    for i in 0..timesteps.len().saturating_sub(1) {
        let index = timesteps.len() - 1 - i;
        let t = timesteps[index];
        let (e_t, e_dir) = if cfg_pp {
            ctx.model.eps_and_uncond_at_timestep(&x, t, 1.0 / 12.5)?
        } else {
            let e = ctx.model.eps_at_timestep(&x, t)?;
            (e.clone(), e)
        };
        let (at, ap, st) = (a[index], a_prev[index], sigma[index]);
        let pred_x0 = (lin2(&x, 1.0, &e_t, -(1.0 - at).sqrt())? / at.sqrt())?;
        let noise = (ctx.randn_like(&x)? * st)?;
        x = (lin2(&pred_x0, ap.sqrt(), &e_dir, (1.0 - ap - st * st).sqrt())? + noise)?;
        ctx.report(i, &x, &pred_x0, 0.0)?;
    }
    Ok(x)
}

/// PLMS: pseudo improved Euler first, then Adams–Bashforth of order 2, 3, 4 on the eps history.
pub fn plms(ctx: &mut SamplerContext<'_>, mut x: Tensor, timesteps: &[usize]) -> Result<Tensor, SamplingError> {
    let (a, a_prev) = alphas(ctx.alphas_cumprod, timesteps)?;
    let step = |x: &Tensor, e: &Tensor, index: usize| -> Result<(Tensor, Tensor), SamplingError> {
        let (at, ap) = (a[index], a_prev[index]);
        let pred_x0 = (lin2(x, 1.0, e, -(1.0 - at).sqrt())? / at.sqrt())?;
        Ok((lin2(&pred_x0, ap.sqrt(), e, (1.0 - ap).sqrt())?, pred_x0))
    };
    let mut old_eps: Vec<Tensor> = Vec::new();
    for i in 0..timesteps.len().saturating_sub(1) {
        let index = timesteps.len() - 1 - i;
        let t_next = timesteps[index.saturating_sub(1)];
        let e_t = ctx.model.eps_at_timestep(&x, timesteps[index])?;
        let e_prime = match old_eps.len() {
            0 => {
                let (x_prev, _) = step(&x, &e_t, index)?;
                let e_next = ctx.model.eps_at_timestep(&x_prev, t_next)?;
                ((&e_t + e_next)? / 2.0)?
            }
            1 => lin2(&e_t, 1.5, &old_eps[0], -0.5)?,
            2 => ((lin2(&e_t, 23.0, &old_eps[1], -16.0)? + (&old_eps[0] * 5.0)?)? / 12.0)?,
            n => {
                let (e1, e2, e3) = (&old_eps[n - 1], &old_eps[n - 2], &old_eps[n - 3]);
                ((lin2(&e_t, 55.0, e1, -59.0)? + lin2(e2, 37.0, e3, -9.0)?)? / 24.0)?
            }
        };
        let (x_prev, pred_x0) = step(&x, &e_prime, index)?;
        old_eps.push(e_t);
        if old_eps.len() >= 4 {
            old_eps.remove(0);
        }
        x = x_prev;
        ctx.report(i, &x, &pred_x0, 0.0)?;
    }
    Ok(x)
}
