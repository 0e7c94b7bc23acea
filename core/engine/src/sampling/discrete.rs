//! The model's discrete noise schedule (k-diffusion `DiscreteSchedule` / `DiscreteEpsDDPMDenoiser`):
//! sigma_i = sqrt((1 - a_i) / a_i) from the checkpoint's `alphas_cumprod`, and the log-linear maps
//! between continuous timesteps and sigmas. Arithmetic is float32, as torch does it.

use super::SamplingError;

/// Sigma table of a discrete-time eps model, ascending (index = timestep).
#[derive(Debug, Clone)]
pub struct DiscreteSchedule {
    sigmas: Vec<f32>,
    log_sigmas: Vec<f32>,
    /// LCM's 50-entry table maps index k to model timestep k*skip + skip-1 (quantized lookups).
    lcm_skip: Option<usize>,
}

impl DiscreteSchedule {
    /// From `alphas_cumprod` (float32, usually 1000 entries).
    pub fn from_alphas_cumprod(alphas_cumprod: &[f32]) -> Result<Self, SamplingError> {
        Self::from_alphas(alphas_cumprod, None)
    }

    /// The schedule A1111's LCM sampler uses (`LCMCompVisDenoiser`): 50 of the 1000 model timesteps
    /// (999, 979, ..., 19), with quantized sigma->timestep lookups.
    pub fn lcm(alphas_cumprod: &[f32]) -> Result<Self, SamplingError> {
        const ORIGINAL_STEPS: usize = 50;
        let total = alphas_cumprod.len();
        let skip = total / ORIGINAL_STEPS;
        if skip == 0 {
            return Err(SamplingError::Other(format!("LCM needs >= 50 timesteps, model has {total}")));
        }
        let mut valid = vec![0f32; ORIGINAL_STEPS];
        for x in 0..ORIGINAL_STEPS {
            valid[ORIGINAL_STEPS - 1 - x] = alphas_cumprod[total - 1 - x * skip];
        }
        Self::from_alphas(&valid, Some(skip))
    }

    fn from_alphas(alphas_cumprod: &[f32], lcm_skip: Option<usize>) -> Result<Self, SamplingError> {
        if alphas_cumprod.len() < 2 || alphas_cumprod.iter().any(|&a| !(a > 0.0 && a <= 1.0)) {
            return Err(SamplingError::Other("alphas_cumprod must hold at least 2 values in (0, 1]".into()));
        }
        let sigmas: Vec<f32> = alphas_cumprod.iter().map(|&a| ((1.0 - a) / a).sqrt()).collect();
        let log_sigmas = sigmas.iter().map(|s| s.ln()).collect();
        Ok(Self { sigmas, log_sigmas, lcm_skip })
    }

    /// Ascending model sigmas (`model_wrap.sigmas`).
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// `model_wrap.sigmas[0]`, the smallest sigma (0.0291675 for SD1).
    pub fn sigma_min(&self) -> f64 {
        f64::from(self.sigmas[0])
    }

    /// `model_wrap.sigmas[-1]`, the largest sigma (14.614642 for SD1).
    pub fn sigma_max(&self) -> f64 {
        f64::from(self.sigmas[self.sigmas.len() - 1])
    }

    /// Continuous timestep for `sigma`: log-linear interpolation between the neighbouring table
    /// entries, clamped to the table (LCM: nearest entry, mapped to its model timestep).
    pub fn sigma_to_t(&self, sigma: f64) -> f64 {
        let log_sigma = (sigma as f32).ln();
        if let Some(skip) = self.lcm_skip {
            let nearest = self
                .log_sigmas
                .iter()
                .enumerate()
                .fold((0, f32::INFINITY), |best, (i, &l)| {
                    let d = (log_sigma - l).abs();
                    if d < best.1 { (i, d) } else { best }
                })
                .0;
            return (nearest * skip + skip - 1) as f64;
        }
        let n = self.log_sigmas.len();
        // Last index whose log sigma is <= log_sigma (0 if none), at most n-2.
        let low = self.log_sigmas.iter().rposition(|&l| log_sigma - l >= 0.0).unwrap_or(0).min(n - 2);
        let (lo, hi) = (self.log_sigmas[low], self.log_sigmas[low + 1]);
        let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
        f64::from((1.0 - w) * low as f32 + w * (low + 1) as f32)
    }

    /// Sigma at continuous timestep `t` (exp of the linear interpolation of log sigma).
    pub fn t_to_sigma(&self, t: f64) -> f64 {
        let last = (self.sigmas.len() - 1) as f32;
        let mut t = t as f32;
        if let Some(skip) = self.lcm_skip {
            t = ((t - (skip as f32 - 1.0)) / skip as f32).clamp(0.0, last);
        }
        let t = t.clamp(0.0, last);
        let (low, high) = (t.floor() as usize, t.ceil() as usize);
        let w = t - t.floor();
        f64::from(((1.0 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp())
    }

    /// `model_wrap.get_sigmas(n)`: n sigmas at evenly spaced timesteps from the top of the table
    /// down to 0, then a final 0 ("Uniform"; for LCM from sigma_to_t(max) to sigma_to_t(min)).
    pub fn uniform_sigmas(&self, n: usize) -> Vec<f64> {
        let (start, end) = match self.lcm_skip {
            Some(_) => (self.sigma_to_t(self.sigma_max()), self.sigma_to_t(self.sigma_min())),
            None => ((self.sigmas.len() - 1) as f64, 0.0),
        };
        let mut out: Vec<f64> =
            linspace_f32(start as f32, end as f32, n).into_iter().map(|t| self.t_to_sigma(f64::from(t))).collect();
        out.push(0.0);
        out
    }
}

/// `torch.linspace` in float32: the first half counts up from `start`, the second half down from `end`.
pub fn linspace_f32(start: f32, end: f32, n: usize) -> Vec<f32> {
    match n {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f32;
            let half = n / 2;
            (0..n).map(|i| if i < half { start + step * i as f32 } else { end - step * (n - 1 - i) as f32 }).collect()
        }
    }
}

/// `torch.linspace` / `np.linspace` in float64.
pub fn linspace_f64(start: f64, end: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f64;
            let half = n / 2;
            (0..n).map(|i| if i < half { start + step * i as f64 } else { end - step * (n - 1 - i) as f64 }).collect()
        }
    }
}
