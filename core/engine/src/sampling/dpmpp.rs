//! DPM-Solver++ family of k-diffusion (ab527a9a): 2S ancestral, 2M, SDE, 2M SDE (midpoint/Heun),
//! 3M SDE. They work in t = -ln(sigma).

use candle_core::Tensor;

use super::SamplingError;
use super::context::{SamplerContext, ancestral_step, lin2, to_d};

fn t_of(sigma: f64) -> f64 {
    -sigma.ln()
}
fn sigma_of(t: f64) -> f64 {
    (-t).exp()
}

pub fn dpmpp_2s_ancestral(
    ctx: &mut SamplerContext<'_>,
    mut x: Tensor,
    sigmas: &[f64],
) -> Result<Tensor, SamplingError> {
    let (eta, s_noise) = (ctx.params.eta, ctx.params.s_noise);
    for i in 0..sigmas.len().saturating_sub(1) {
        let denoised = ctx.denoise(&x, sigmas[i])?;
        let (sigma_down, sigma_up) = ancestral_step(sigmas[i], sigmas[i + 1], eta);
        ctx.report(i, &x, &denoised, sigmas[i])?;
        if sigma_down == 0.0 {
            let d = to_d(&x, sigmas[i], &denoised)?;
            x = lin2(&x, 1.0, &d, sigma_down - sigmas[i])?;
        } else {
            let (t, t_next) = (t_of(sigmas[i]), t_of(sigma_down));
            let h = t_next - t;
            let s = t + 0.5 * h;
            let x_2 = lin2(&x, sigma_of(s) / sigma_of(t), &denoised, -(-h * 0.5).exp_m1())?;
            let denoised_2 = ctx.denoise(&x_2, sigma_of(s))?;
            x = lin2(&x, sigma_of(t_next) / sigma_of(t), &denoised_2, -(-h).exp_m1())?;
        }
        if sigmas[i + 1] > 0.0 {
            let noise = ctx.step_noise(sigmas[i], sigmas[i + 1], &x)?;
            x = lin2(&x, 1.0, &noise, s_noise * sigma_up)?;
        }
    }
    Ok(x)
}

pub fn dpmpp_2m(ctx: &mut SamplerContext<'_>, mut x: Tensor, sigmas: &[f64]) -> Result<Tensor, SamplingError> {
    let mut old_denoised: Option<Tensor> = None;
    for i in 0..sigmas.len().saturating_sub(1) {
        let denoised = ctx.denoise(&x, sigmas[i])?;
        ctx.report(i, &x, &denoised, sigmas[i])?;
        let (t, t_next) = (t_of(sigmas[i]), t_of(sigmas[i + 1]));
        let h = t_next - t;
        let ratio = sigma_of(t_next) / sigma_of(t);
        x = match &old_denoised {
            Some(old) if sigmas[i + 1] != 0.0 => {
                let r = (t - t_of(sigmas[i - 1])) / h;
                let denoised_d = lin2(&denoised, 1.0 + 1.0 / (2.0 * r), old, -1.0 / (2.0 * r))?;
                lin2(&x, ratio, &denoised_d, -(-h).exp_m1())?
            }
            // First step, and the last step to sigma 0 (ratio 0, -expm1(-inf) = 1: x = denoised).
            _ => lin2(&x, ratio, &denoised, -(-h).exp_m1())?,
        };
        old_denoised = Some(denoised);
    }
    Ok(x)
}

/// The points DPM++ SDE asks the Brownian tree about, as k-diffusion computes them: `t = -log σ`,
/// `s = t + h·r` and `σ(·) = exp(-·)` on float32 tensors. The tree rounds its query times to six
/// decimals, so a one-ulp difference from a float64 chain can move an increment; these are
/// reproduced in float32 (σ(t), σ(s), σ(t_next)).
fn sde_query_points(sigma: f64, sigma_next: f64, r: f64) -> (f64, f64, f64) {
    let t = -(sigma as f32).ln();
    let t_next = -(sigma_next as f32).ln();
    let s = t + (t_next - t) * r as f32;
    let sigma_of = |x: f32| f64::from((-x).exp());
    (sigma_of(t), sigma_of(s), sigma_of(t_next))
}

pub fn dpmpp_sde(ctx: &mut SamplerContext<'_>, mut x: Tensor, sigmas: &[f64]) -> Result<Tensor, SamplingError> {
    const R: f64 = 0.5;
    let (eta, s_noise) = (ctx.params.eta, ctx.params.s_noise);
    for i in 0..sigmas.len().saturating_sub(1) {
        let denoised = ctx.denoise(&x, sigmas[i])?;
        ctx.report(i, &x, &denoised, sigmas[i])?;
        if sigmas[i + 1] == 0.0 {
            let d = to_d(&x, sigmas[i], &denoised)?;
            x = lin2(&x, 1.0, &d, sigmas[i + 1] - sigmas[i])?;
            continue;
        }
        let (t, t_next) = (t_of(sigmas[i]), t_of(sigmas[i + 1]));
        let h = t_next - t;
        let s = t + h * R;
        let (query_t, query_s, query_next) = sde_query_points(sigmas[i], sigmas[i + 1], R);
        let fac = 1.0 / (2.0 * R);
        // Step 1: to the midpoint s, with ancestral noise.
        let (sd, su) = ancestral_step(sigma_of(t), sigma_of(s), eta);
        let s_ = t_of(sd);
        let x_2 = lin2(&x, sigma_of(s_) / sigma_of(t), &denoised, -(t - s_).exp_m1())?;
        let noise = ctx.step_noise(query_t, query_s, &x_2)?;
        let x_2 = lin2(&x_2, 1.0, &noise, s_noise * su)?;
        let denoised_2 = ctx.denoise(&x_2, sigma_of(s))?;
        // Step 2: full step with the blended prediction.
        let (sd, su) = ancestral_step(sigma_of(t), sigma_of(t_next), eta);
        let t_next_ = t_of(sd);
        let denoised_d = lin2(&denoised, 1.0 - fac, &denoised_2, fac)?;
        x = lin2(&x, sigma_of(t_next_) / sigma_of(t), &denoised_d, -(t - t_next_).exp_m1())?;
        let noise = ctx.step_noise(query_t, query_next, &x)?;
        x = lin2(&x, 1.0, &noise, s_noise * su)?;
    }
    Ok(x)
}

/// Second-order correction of DPM++ 2M SDE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SolverType {
    Midpoint,
    Heun,
}

pub fn dpmpp_2m_sde(
    ctx: &mut SamplerContext<'_>,
    mut x: Tensor,
    sigmas: &[f64],
    solver: SolverType,
) -> Result<Tensor, SamplingError> {
    let (eta, s_noise) = (ctx.params.eta, ctx.params.s_noise);
    let mut old_denoised: Option<Tensor> = None;
    let mut h_last: Option<f64> = None;
    for i in 0..sigmas.len().saturating_sub(1) {
        let denoised = ctx.denoise(&x, sigmas[i])?;
        ctx.report(i, &x, &denoised, sigmas[i])?;
        let mut h = None;
        if sigmas[i + 1] == 0.0 {
            x = denoised.clone();
        } else {
            let (t, s) = (-sigmas[i].ln(), -sigmas[i + 1].ln());
            let hh = s - t;
            let eta_h = eta * hh;
            x = lin2(&x, sigmas[i + 1] / sigmas[i] * (-eta_h).exp(), &denoised, -(-hh - eta_h).exp_m1())?;
            if let (Some(old), Some(hl)) = (&old_denoised, h_last) {
                let r = hl / hh;
                let diff = (&denoised - old)?;
                let coeff = match solver {
                    SolverType::Heun => (-(-hh - eta_h).exp_m1() / (-hh - eta_h) + 1.0) * (1.0 / r),
                    SolverType::Midpoint => 0.5 * -(-hh - eta_h).exp_m1() * (1.0 / r),
                };
                x = lin2(&x, 1.0, &diff, coeff)?;
            }
            if eta != 0.0 {
                let noise = ctx.step_noise(sigmas[i], sigmas[i + 1], &x)?;
                let scale = sigmas[i + 1] * (-(-2.0 * eta_h).exp_m1()).sqrt() * s_noise;
                x = lin2(&x, 1.0, &noise, scale)?;
            }
            h = Some(hh);
        }
        old_denoised = Some(denoised);
        // k-diffusion keeps the previous h when the step to 0 leaves it unassigned.
        if h.is_some() {
            h_last = h;
        }
    }
    Ok(x)
}

pub fn dpmpp_3m_sde(ctx: &mut SamplerContext<'_>, mut x: Tensor, sigmas: &[f64]) -> Result<Tensor, SamplingError> {
    let (eta, s_noise) = (ctx.params.eta, ctx.params.s_noise);
    let (mut denoised_1, mut denoised_2): (Option<Tensor>, Option<Tensor>) = (None, None);
    let (mut h_1, mut h_2): (Option<f64>, Option<f64>) = (None, None);
    let mut h = None;
    for i in 0..sigmas.len().saturating_sub(1) {
        let denoised = ctx.denoise(&x, sigmas[i])?;
        ctx.report(i, &x, &denoised, sigmas[i])?;
        if sigmas[i + 1] == 0.0 {
            x = denoised.clone();
        } else {
            let (t, s) = (-sigmas[i].ln(), -sigmas[i + 1].ln());
            let hh = s - t;
            let h_eta = hh * (eta + 1.0);
            x = lin2(&x, (-h_eta).exp(), &denoised, -(-h_eta).exp_m1())?;
            let phi_2 = (-h_eta).exp_m1() / h_eta + 1.0;
            match (&denoised_1, &denoised_2, h_1, h_2) {
                (Some(d1), Some(d2), Some(h1), Some(h2)) => {
                    let (r0, r1) = (h1 / hh, h2 / hh);
                    let d1_0 = ((&denoised - d1)? / r0)?;
                    let d1_1 = ((d1 - d2)? / r1)?;
                    let diff = (&d1_0 - &d1_1)?;
                    let first = lin2(&d1_0, 1.0, &diff, r0 / (r0 + r1))?;
                    let second = (diff / (r0 + r1))?;
                    let phi_3 = phi_2 / h_eta - 0.5;
                    x = lin2(&lin2(&x, 1.0, &first, phi_2)?, 1.0, &second, -phi_3)?;
                }
                (Some(d1), _, Some(h1), _) => {
                    let d = ((&denoised - d1)? / (h1 / hh))?;
                    x = lin2(&x, 1.0, &d, phi_2)?;
                }
                _ => {}
            }
            if eta != 0.0 {
                let noise = ctx.step_noise(sigmas[i], sigmas[i + 1], &x)?;
                let scale = sigmas[i + 1] * (-(-2.0 * hh * eta).exp_m1()).sqrt() * s_noise;
                x = lin2(&x, 1.0, &noise, scale)?;
            }
            h = Some(hh);
        }
        denoised_2 = denoised_1.take();
        denoised_1 = Some(denoised);
        h_2 = h_1;
        h_1 = h;
    }
    Ok(x)
}

#[cfg(test)]
mod query_tests {
    use super::sde_query_points;

    /// The points k-diffusion's DPM++ SDE gave torchsde in a recorded A1111 run (Karras, 10 steps;
    /// core/engine/tests/data/brownian-refs.safetensors, case 0): (σ(t), σ(s), σ(t_next)).
    #[test]
    fn dpmpp_sde_asks_the_tree_what_k_diffusion_asks() {
        let recorded = [
            (14.614643096923828, 11.53412914276123, 9.102932929992676),
            (9.102932929992676, 7.06183385848999, 5.478399276733398),
            (5.478399276733398, 4.166402339935303, 3.168609380722046),
            (3.168609380722046, 2.3544085025787354, 1.7494233846664429),
        ];
        // torch's CPU log/exp (MKL) are not glibc's: one value in this run is a float32 ulp off.
        let ulps = |a: f64, b: f64| ((a as f32).to_bits() as i64 - (b as f32).to_bits() as i64).abs();
        let mut exact = 0;
        for (sigma, s, next) in recorded {
            let (qt, qs, qn) = sde_query_points(sigma, next, 0.5);
            let off = [ulps(qt, sigma), ulps(qs, s), ulps(qn, next)];
            assert!(off.iter().all(|u| *u <= 1), "{off:?}");
            exact += off.iter().filter(|u| **u == 0).count();
        }
        assert!(exact >= 11, "{exact} of 12 exact");
    }
}
