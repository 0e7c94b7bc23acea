//! Test doubles: an analytic denoiser with a known exact answer and a counting noise source.

use candle_core::{Device, Tensor};

use super::{Model, NoiseSource, SamplingError};
use crate::rng::PhiloxGenerator;

/// Data distributed as N(0, s²) per element: the exact denoiser is D(x, σ) = x·s²/(s²+σ²), so the
/// probability-flow ODE from σ_a to σ_b scales x by sqrt((s²+σ_b²)/(s²+σ_a²)).
pub struct AnalyticModel {
    pub s2: f64,
    pub alphas_cumprod: Vec<f32>,
    pub calls: usize,
}

impl AnalyticModel {
    pub fn new(s: f64, alphas_cumprod: Vec<f32>) -> Self {
        Self { s2: s * s, alphas_cumprod, calls: 0 }
    }

    pub fn factor(&self, sigma: f64) -> f64 {
        self.s2 / (self.s2 + sigma * sigma)
    }

    /// Alpha at a fractional timestep: log alpha interpolated linearly between table entries.
    fn alpha_at(&self, t: f64) -> f64 {
        let last = (self.alphas_cumprod.len() - 1) as f64;
        let t = t.clamp(0.0, last);
        let (lo, hi) = (t.floor() as usize, t.ceil() as usize);
        let w = t - t.floor();
        let la = |i: usize| f64::from(self.alphas_cumprod[i]).ln();
        ((1.0 - w) * la(lo) + w * la(hi)).exp()
    }

    /// Eps prediction for the DDPM-scaled input x_t = sqrt(a)(x0 + σ ε).
    fn eps_scaled(&mut self, x: &Tensor, alpha: f64) -> Result<Tensor, SamplingError> {
        self.calls += 1;
        let sigma = ((1.0 - alpha) / alpha).sqrt();
        let xk = (x / alpha.sqrt())?;
        Ok(((&xk - (&xk * self.factor(sigma))?)? / sigma)?)
    }
}

impl Model for AnalyticModel {
    fn denoised(&mut self, x: &Tensor, sigma: f64) -> Result<Tensor, SamplingError> {
        self.calls += 1;
        Ok((x * self.factor(sigma))?)
    }
    fn eps_at_timestep(&mut self, x: &Tensor, t: usize) -> Result<Tensor, SamplingError> {
        let a = self.alpha_at(t as f64);
        self.eps_scaled(x, a)
    }
    fn eps_at_continuous_timestep(&mut self, x: &Tensor, t: f64) -> Result<Tensor, SamplingError> {
        let a = self.alpha_at(t);
        self.eps_scaled(x, a)
    }
    fn eps_and_uncond_at_timestep(&mut self, x: &Tensor, t: usize, _m: f64) -> Result<(Tensor, Tensor), SamplingError> {
        let e = self.eps_at_timestep(x, t)?;
        Ok((e.clone(), e))
    }
}

/// Philox noise (seed 0) that counts its draws.
pub struct CountingNoise {
    pub draws: usize,
    generator: PhiloxGenerator,
}

impl CountingNoise {
    pub fn new() -> Self {
        Self { draws: 0, generator: PhiloxGenerator::new(0) }
    }
}

impl NoiseSource for CountingNoise {
    fn randn_like(&mut self, like: &Tensor) -> candle_core::Result<Tensor> {
        self.draws += 1;
        Tensor::from_vec(self.generator.randn(like.elem_count()), like.dims(), &Device::Cpu)
    }
}

/// The fixture checkpoint's `alphas_cumprod` (float32, 1000 entries).
pub fn fixture_alphas_cumprod() -> Vec<f32> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/a1111-parity/models/tiny-sd15.safetensors");
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    tensors["alphas_cumprod"].to_vec1::<f32>().unwrap()
}

/// SD1 schedule computed independently (linear-in-sqrt betas 0.00085..0.012 in float64).
pub fn sd1_alphas_cumprod() -> Vec<f32> {
    let (a, b) = (0.00085f64.sqrt(), 0.012f64.sqrt());
    let mut acc = 1.0f64;
    (0..1000)
        .map(|i| {
            let beta = (a + (b - a) * i as f64 / 999.0).powi(2);
            acc *= 1.0 - beta;
            acc as f32
        })
        .collect()
}

pub fn scalar(t: &Tensor) -> f64 {
    f64::from(t.flatten_all().unwrap().get(0).unwrap().to_scalar::<f32>().unwrap())
}
