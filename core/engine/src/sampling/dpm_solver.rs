//! k-diffusion's DPM-Solver (Lu et al. 2022) samplers: "DPM fast" (fixed steps, orders 3/2/1) and
//! "DPM adaptive" (embedded 2/3 pairs with a PID step-size controller). Time is t = -ln(sigma);
//! the model is used as an eps predictor eps = (x - denoised) / sigma.
//!
//! A1111 passes `eta` (default `eta_ancestral` = 1) to both, so they run ancestral by default.

use candle_core::Tensor;

use super::SamplingError;
use super::context::{SamplerContext, ancestral_step, lin2};

fn sigma_of(t: f64) -> f64 {
    (-t).exp()
}
fn t_of(sigma: f64) -> f64 {
    -sigma.ln()
}

/// Model evaluations of one solver step, cached so x_low and x_high share them.
#[derive(Default)]
struct EpsCache {
    eps: Option<Tensor>,
    eps_r1: Option<Tensor>,
    eps_r2: Option<Tensor>,
}

struct Solver<'c, 'a> {
    ctx: &'c mut SamplerContext<'a>,
}

impl Solver<'_, '_> {
    fn eps(&mut self, x: &Tensor, t: f64) -> Result<Tensor, SamplingError> {
        let sigma = sigma_of(t);
        let denoised = self.ctx.denoise(x, sigma)?;
        Ok(((x - denoised)? / sigma)?)
    }

    fn cached(
        &mut self,
        slot: fn(&mut EpsCache) -> &mut Option<Tensor>,
        cache: &mut EpsCache,
        x: &Tensor,
        t: f64,
    ) -> Result<Tensor, SamplingError> {
        if let Some(e) = slot(cache) {
            return Ok(e.clone());
        }
        let e = self.eps(x, t)?;
        *slot(cache) = Some(e.clone());
        Ok(e)
    }

    fn step_1(&mut self, x: &Tensor, t: f64, t_next: f64, cache: &mut EpsCache) -> Result<Tensor, SamplingError> {
        let h = t_next - t;
        let eps = self.cached(|c| &mut c.eps, cache, x, t)?;
        lin2(x, 1.0, &eps, -sigma_of(t_next) * h.exp_m1())
    }

    fn step_2(
        &mut self,
        x: &Tensor,
        t: f64,
        t_next: f64,
        r1: f64,
        cache: &mut EpsCache,
    ) -> Result<Tensor, SamplingError> {
        let h = t_next - t;
        let eps = self.cached(|c| &mut c.eps, cache, x, t)?;
        let s1 = t + r1 * h;
        let u1 = lin2(x, 1.0, &eps, -sigma_of(s1) * (r1 * h).exp_m1())?;
        let eps_r1 = self.cached(|c| &mut c.eps_r1, cache, &u1, s1)?;
        let x2 = lin2(x, 1.0, &eps, -sigma_of(t_next) * h.exp_m1())?;
        lin2(&x2, 1.0, &(eps_r1 - &eps)?, -sigma_of(t_next) / (2.0 * r1) * h.exp_m1())
    }

    fn step_3(&mut self, x: &Tensor, t: f64, t_next: f64, cache: &mut EpsCache) -> Result<Tensor, SamplingError> {
        let (r1, r2) = (1.0 / 3.0, 2.0 / 3.0);
        let h = t_next - t;
        let eps = self.cached(|c| &mut c.eps, cache, x, t)?;
        let (s1, s2) = (t + r1 * h, t + r2 * h);
        let u1 = lin2(x, 1.0, &eps, -sigma_of(s1) * (r1 * h).exp_m1())?;
        let eps_r1 = self.cached(|c| &mut c.eps_r1, cache, &u1, s1)?;
        let u2 = lin2(x, 1.0, &eps, -sigma_of(s2) * (r2 * h).exp_m1())?;
        let u2 = lin2(&u2, 1.0, &(&eps_r1 - &eps)?, -sigma_of(s2) * (r2 / r1) * ((r2 * h).exp_m1() / (r2 * h) - 1.0))?;
        let eps_r2 = self.cached(|c| &mut c.eps_r2, cache, &u2, s2)?;
        let x3 = lin2(x, 1.0, &eps, -sigma_of(t_next) * h.exp_m1())?;
        lin2(&x3, 1.0, &(eps_r2 - &eps)?, -sigma_of(t_next) / r2 * (h.exp_m1() / h - 1.0))
    }

    /// Ancestral split of a step from t to t_next: (t_next_, su).
    fn ancestral(&self, t: f64, t_next: f64, t_end: f64) -> (f64, f64) {
        let eta = self.ctx.params.eta;
        if eta == 0.0 {
            return (t_next, 0.0);
        }
        let (sd, _) = ancestral_step(sigma_of(t), sigma_of(t_next), eta);
        let t_next_ = t_end.min(t_of(sd));
        (t_next_, (sigma_of(t_next).powi(2) - sigma_of(t_next_).powi(2)).sqrt())
    }
}

fn check_range(sigma_min: f64, sigma_max: f64) -> Result<(), SamplingError> {
    if sigma_min <= 0.0 || sigma_max <= 0.0 {
        return Err(SamplingError::Other("sigma_min and sigma_max must not be 0".into()));
    }
    Ok(())
}

/// k-diffusion `sample_dpm_fast` with `n` model evaluations.
pub fn dpm_fast(
    ctx: &mut SamplerContext<'_>,
    mut x: Tensor,
    sigma_min: f64,
    sigma_max: f64,
    n: usize,
) -> Result<Tensor, SamplingError> {
    check_range(sigma_min, sigma_max)?;
    let (t_start, t_end) = (t_of(sigma_max), t_of(sigma_min));
    let s_noise = ctx.params.s_noise;
    if t_end <= t_start && ctx.params.eta != 0.0 {
        return Err(SamplingError::Other("eta must be 0 for reverse sampling".into()));
    }
    let m = n / 3 + 1;
    let ts = super::linspace_f64(t_start, t_end, m + 1);
    let orders: Vec<usize> = if n.is_multiple_of(3) {
        [vec![3; m.saturating_sub(2)], vec![2, 1]].concat()
    } else {
        [vec![3; m - 1], vec![n % 3]].concat()
    };
    let mut solver = Solver { ctx };
    for (i, &order) in orders.iter().enumerate() {
        let mut cache = EpsCache::default();
        let (t, t_next) = (ts[i], ts[i + 1]);
        let (t_next_, su) = solver.ancestral(t, t_next, t_end);
        let eps = solver.cached(|c| &mut c.eps, &mut cache, &x, t)?;
        let denoised = lin2(&x, 1.0, &eps, -sigma_of(t))?;
        solver.ctx.report(i, &x, &denoised, sigma_of(t))?;
        x = match order {
            1 => solver.step_1(&x, t, t_next_, &mut cache)?,
            2 => solver.step_2(&x, t, t_next_, 0.5, &mut cache)?,
            _ => solver.step_3(&x, t, t_next_, &mut cache)?,
        };
        let noise = solver.ctx.step_noise(sigma_of(t), sigma_of(t_next), &x)?;
        x = lin2(&x, 1.0, &noise, su * s_noise)?;
    }
    Ok(x)
}

/// k-diffusion's PID step-size controller.
struct Pid {
    h: f64,
    b1: f64,
    b2: f64,
    b3: f64,
    accept_safety: f64,
    errs: Vec<f64>,
}

impl Pid {
    fn new(h: f64, (p, i, d): (f64, f64, f64), order: f64, accept_safety: f64) -> Self {
        Self { h, b1: (p + i + d) / order, b2: -(p + 2.0 * d) / order, b3: d / order, accept_safety, errs: vec![] }
    }

    fn propose_step(&mut self, error: f64) -> bool {
        let inv_error = 1.0 / (error + 1e-8);
        if self.errs.is_empty() {
            self.errs = vec![inv_error; 3];
        }
        self.errs[0] = inv_error;
        let factor = self.errs[0].powf(self.b1) * self.errs[1].powf(self.b2) * self.errs[2].powf(self.b3);
        let factor = 1.0 + (factor - 1.0).atan();
        let accept = factor >= self.accept_safety;
        if accept {
            self.errs[2] = self.errs[1];
            self.errs[1] = self.errs[0];
        }
        self.h *= factor;
        accept
    }
}

/// k-diffusion `sample_dpm_adaptive` with its defaults (order 3, rtol 0.05, atol 0.0078,
/// h_init 0.05, PID (0, 1, 0), accept_safety 0.81).
pub fn dpm_adaptive(
    ctx: &mut SamplerContext<'_>,
    mut x: Tensor,
    sigma_min: f64,
    sigma_max: f64,
) -> Result<Tensor, SamplingError> {
    check_range(sigma_min, sigma_max)?;
    let (order, rtol, atol, h_init, accept_safety) = (3usize, 0.05f64, 0.0078f64, 0.05f64, 0.81f64);
    let (t_start, t_end) = (t_of(sigma_max), t_of(sigma_min));
    let (eta, s_noise) = (ctx.params.eta, ctx.params.s_noise);
    let forward = t_end > t_start;
    if !forward && eta != 0.0 {
        return Err(SamplingError::Other("eta must be 0 for reverse sampling".into()));
    }
    let h_init = if forward { h_init.abs() } else { -h_init.abs() };
    let pid_order = if eta != 0.0 { 1.5 } else { order as f64 };
    let mut pid = Pid::new(h_init, (0.0, 1.0, 0.0), pid_order, accept_safety);
    let mut s = t_start;
    let mut x_prev = x.clone();
    let mut steps = 0usize;
    let numel = x.elem_count() as f64;
    let mut solver = Solver { ctx };
    while if forward { s < t_end - 1e-5 } else { s > t_end + 1e-5 } {
        let mut cache = EpsCache::default();
        let t = if forward { t_end.min(s + pid.h) } else { t_end.max(s + pid.h) };
        let (t_, su) = solver.ancestral(s, t, t_end);
        let eps = solver.cached(|c| &mut c.eps, &mut cache, &x, s)?;
        let denoised = lin2(&x, 1.0, &eps, -sigma_of(s))?;
        let x_low = solver.step_2(&x, s, t_, 1.0 / 3.0, &mut cache)?;
        let x_high = solver.step_3(&x, s, t_, &mut cache)?;
        let delta = x_low.abs()?.maximum(&x_prev.abs()?)?.affine(rtol, 0.0)?.maximum(atol)?;
        let scaled = ((&x_low - &x_high)? / delta)?;
        let error = f64::from(scaled.sqr()?.sum_all()?.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?).sqrt()
            / numel.sqrt();
        if pid.propose_step(error) {
            x_prev = x_low;
            let noise = solver.ctx.step_noise(sigma_of(s), sigma_of(t), &x_high)?;
            x = lin2(&x_high, 1.0, &noise, su * s_noise)?;
            s = t;
        }
        steps += 1;
        solver.ctx.report(steps - 1, &x, &denoised, sigma_of(s))?;
    }
    Ok(x)
}
