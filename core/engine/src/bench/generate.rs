//! One generation's compute with random weights, on any device and precision: `steps` Euler
//! steps of a CFG pair through the UNet, then the VAE decode. This is what
//! `scripts/gpu-check/check.py` times against diffusers (`scripts/bench/reference.py gen`, the
//! same loop written in PyTorch) on the same GPU. Both sides leave the text encoders out (a fixed
//! random context instead; they are under 1 % of a 20-step run) and build the weights in memory,
//! so SDXL needs no 5 GB file.
//!
//! The loop is plain k-diffusion Euler on SD's training schedule with integer timesteps, written
//! identically on both sides; it exists to cost what a real run costs, with activations of a real
//! run's scale (so an f16 overflow shows up as NaN), not to reproduce A1111's images.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

use super::weights::{Shared, SplitMix, init_values};
use super::{Arch, BenchDevice, BenchError, Samples};
use crate::loader::diffusers_names::{UNET_PREFIX, VAE_PREFIX};
use crate::schedule::{SD_BETAS, alphas_cumprod};
use crate::unet::UNetModel;
use crate::vae::AutoencoderKl;

/// Classifier-free guidance scale of the timed loop (A1111's default).
const CFG_SCALE: f64 = 7.0;

/// Hands out torch-default-initialised tensors (see `init_values`) on the target device, each
/// seeded from its own name so the values do not depend on construction order.
/// Counts the UNet's parameters as it hands them out (the reference reports its count too).
#[derive(Default)]
struct RandomWeights {
    unet_params: AtomicU64,
}

impl SimpleBackend for RandomWeights {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if name.starts_with(UNET_PREFIX) {
            self.unet_params.fetch_add(s.elem_count() as u64, Ordering::Relaxed);
        }
        let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
        let values = init_values(name, s.dims(), &mut SplitMix(seed));
        Tensor::from_vec(values, s, &Device::Cpu)?.to_dtype(dtype)?.to_device(dev)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights: unchecked get of {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        // Modules with two naming schemes (the VAE's attention) pick LDM's.
        false
    }
}

/// What one `bench gen` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GenResult {
    /// Whole generation: every UNet step and the decode, device synchronised.
    pub total: Samples,
    /// The decode alone (same runs).
    pub decode: Samples,
    /// Building the random-weight models on the device.
    pub build_ms: f64,
    /// Parameters of the UNet (SD 1.5: 859.5 M, SDXL: 2567.5 M).
    pub unet_params: u64,
    /// The `(sigma, timestep)` schedule of each run.
    pub sigmas: Vec<(f64, usize)>,
    /// Whether any run's latent or image held a NaN or an infinity.
    pub non_finite: bool,
    /// Standard deviation of the last decoded image (a sanity figure: ~0 means a dead network).
    pub image_std: f32,
}

/// Random-weight UNet and VAE of `arch` on `device` in `dtype`.
pub struct GenModel {
    unet: UNetModel,
    vae: AutoencoderKl,
    device: Device,
    dtype: DType,
    build_ms: f64,
    unet_params: u64,
}

impl GenModel {
    /// On the device `device` names (`cpu`, `cuda`, `cuda:N`; no fallback) in `dtype`
    /// (`auto`, `f32`, `f16`), as `SDAPI_DEVICE`/`SDAPI_DTYPE` choose them for the server.
    pub fn open(arch: Arch, device: &str, dtype: &str) -> Result<Self, BenchError> {
        let target = BenchDevice::open(device, dtype)?;
        Self::build(arch, &target.device, target.dtype)
    }

    /// The precision the model runs in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn build(arch: Arch, device: &Device, dtype: DType) -> Result<Self, BenchError> {
        let start = Instant::now();
        let weights = Arc::new(RandomWeights::default());
        let vb = VarBuilder::from_backend(Box::new(Shared(weights.clone())), dtype, device.clone());
        let unet = UNetModel::new(arch.unet(), vb.pp(UNET_PREFIX.trim_end_matches('.')))?;
        let vae = AutoencoderKl::new(arch.vae(), vb.pp(VAE_PREFIX.trim_end_matches('.')))?;
        device.synchronize()?;
        let build_ms = start.elapsed().as_secs_f64() * 1e3;
        let unet_params = weights.unet_params.load(Ordering::Relaxed);
        Ok(Self { unet, vae, device: device.clone(), dtype, build_ms, unet_params })
    }

    /// `warmup` untimed and `iters` timed generations of a `size`×`size` image in `steps` steps.
    pub fn run(&self, size: usize, steps: usize, warmup: usize, iters: usize) -> Result<GenResult, BenchError> {
        if !size.is_multiple_of(8) || size == 0 || steps == 0 {
            return Err(BenchError::Request(format!(
                "size {size} must be a positive multiple of 8, steps {steps} positive"
            )));
        }
        let sigmas = euler_sigmas(steps);
        let latent = size / 8;
        let dev = &self.device;
        let x0 = (super::input(&[1, 4, latent, latent], 21)?.to_device(dev)? * sigmas[0].0)?;
        let config = self.unet.config();
        let context = super::input(&[2, 77, config.context_dim], 22)?.to_device(dev)?.to_dtype(self.dtype)?;
        let vector = match config.adm_in_channels {
            Some(width) => Some(super::input(&[2, width], 23)?.to_device(dev)?.to_dtype(self.dtype)?),
            None => None,
        };
        let mut decode = Samples::default();
        let mut non_finite = false;
        let mut image_std = 0f32;
        let mut one = || -> Result<(), BenchError> {
            let mut x = x0.clone();
            for pair in sigmas.windows(2) {
                let ((sigma, t), (next, _)) = (pair[0], pair[1]);
                let scaled = (&x / (sigma * sigma + 1.0).sqrt())?.to_dtype(self.dtype)?;
                let batch = Tensor::cat(&[&scaled, &scaled], 0)?;
                let ts = Tensor::new(&[t as f32, t as f32], dev)?;
                let eps =
                    self.unet.forward_with_vector(&batch, &ts, &context, vector.as_ref())?.to_dtype(DType::F32)?;
                let (uncond, cond) = (eps.narrow(0, 0, 1)?, eps.narrow(0, 1, 1)?);
                let guided = (&uncond + ((cond - &uncond)? * CFG_SCALE)?)?;
                x = (x + (guided * (next - sigma))?)?;
            }
            let start = Instant::now();
            let image = self.vae.decode(&x.to_dtype(self.dtype)?)?.to_dtype(DType::F32)?;
            dev.synchronize()?;
            decode.push(start.elapsed().as_secs_f64() * 1e3);
            let finite = |t: &Tensor| -> Result<bool, BenchError> {
                Ok(t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.is_finite())
            };
            non_finite |= !finite(&x)? || !finite(&image)?;
            image_std = image.flatten_all()?.var(0)?.sqrt()?.to_scalar::<f32>()?;
            Ok(())
        };
        let total = Samples::measure(warmup, iters, || {
            one()?;
            dev.synchronize()?;
            Ok(())
        })?;
        // Only the timed runs' decodes.
        let decode = Samples { ms: decode.ms.split_off(warmup.min(decode.ms.len())) };
        Ok(GenResult {
            total,
            decode,
            build_ms: self.build_ms,
            unet_params: self.unet_params,
            sigmas,
            non_finite,
            image_std,
        })
    }
}

/// `(sigma, timestep)` pairs of a `steps`-step Euler run on SD's training schedule: integer
/// timesteps evenly spread from 999 to 0, then sigma 0. The reference computes the same list.
pub fn euler_sigmas(steps: usize) -> Vec<(f64, usize)> {
    let alphas = alphas_cumprod(SD_BETAS, 1000);
    let mut out: Vec<(f64, usize)> = (0..steps)
        .map(|i| {
            let t = if steps == 1 { 999 } else { (999.0 - i as f64 * 999.0 / (steps - 1) as f64).round() as usize };
            let a = alphas[t] as f64;
            (((1.0 - a) / a).sqrt(), t)
        })
        .collect();
    out.push((0.0, 0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::weights::unet_parameter_count;

    #[test]
    fn sigmas_run_from_the_schedule_top_to_zero() {
        let s = euler_sigmas(20);
        assert_eq!(s.len(), 21);
        assert_eq!((s[0].1, s[19].1, s[20]), (999, 0, (0.0, 0)));
        // SD's sigma_max and sigma_min (k-diffusion's values for this schedule).
        assert!((s[0].0 - 14.6146).abs() < 1e-3, "{}", s[0].0);
        assert!((s[19].0 - 0.0292).abs() < 1e-3, "{}", s[19].0);
        assert!(s.windows(2).all(|w| w[0].0 > w[1].0));
    }

    #[test]
    fn unet_sizes_are_the_published_ones() {
        // diffusers' parameter counts of the SD 1.5 and SDXL base UNets.
        assert_eq!(unet_parameter_count(Arch::Sd15).unwrap(), 859_520_964);
        assert_eq!(unet_parameter_count(Arch::Sdxl).unwrap(), 2_567_463_684);
    }

    #[test]
    fn a_tiny_generation_runs_and_stays_finite() {
        let model = GenModel::build(Arch::Tiny, &Device::Cpu, DType::F32).unwrap();
        // The count the random backend keeps agrees with the shape recorder's.
        assert_eq!(model.unet_params, unet_parameter_count(Arch::Tiny).unwrap());
        let r = model.run(64, 2, 0, 1).unwrap();
        assert_eq!((r.total.ms.len(), r.decode.ms.len()), (1, 1));
        assert!(!r.non_finite);
        assert!(r.image_std > 0.0, "dead network: std {}", r.image_std);
    }
}
