//! Benchmarks of the engine and the request path with random weights and the real architectures.
//!
//! The `bench` binary (sdapi-server) drives these. Everything here runs on the
//! CPU in f32, the server's CPU configuration. Numbers are wall-clock medians of repeated runs;
//! compare them only with a reference measured in the same run on the same machine
//! (`scripts/bench/reference.py`), never as absolute figures.

mod generate;
mod lora;
mod ops;
mod weights;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

pub use generate::{GenModel, GenResult, euler_sigmas};
pub use lora::{LoraTimes, lora_times, write_lora};
pub use ops::{OpTiming, time_ops};
pub use weights::{Arch, ensure_checkpoint, tensor_shapes, unet_parameter_count, write_checkpoint};

use sdapi_core::models_dir::ModelIndex;
use sdapi_core::processing::{GenerationRequest, ProcessingContext, process_images};
use sdapi_core::runner::{ProcessingRunner, Runner};

use crate::executor::{DiffusionExecutor, parse_device, parse_dtype};
use crate::model::LoadedModel;
use crate::vae::to_rgb8;
use sdapi_protocol::api::request::Txt2ImgRequest;
use sdapi_protocol::images::encode_image_base64;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("tensor: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("engine: {0}")]
    Engine(#[from] crate::EngineError),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("request path: {0}")]
    Request(String),
    #[error("network file: {0}")]
    Network(#[from] crate::networks::NetworkError),
}

/// Wall-clock samples of one measured operation, in milliseconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Samples {
    pub ms: Vec<f64>,
}

impl Samples {
    /// Runs `f` `warmup` times untimed (allocator, rayon pool and page-cache warm-up), then
    /// `iters` times timed.
    pub fn measure<T>(
        warmup: usize,
        iters: usize,
        mut f: impl FnMut() -> Result<T, BenchError>,
    ) -> Result<Self, BenchError> {
        for _ in 0..warmup {
            f()?;
        }
        let mut ms = Vec::with_capacity(iters);
        for _ in 0..iters {
            let start = Instant::now();
            std::hint::black_box(f()?);
            ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        Ok(Self { ms })
    }

    pub fn push(&mut self, ms: f64) {
        self.ms.push(ms);
    }

    /// Median (mean of the middle two for an even count); NaN when empty.
    pub fn median(&self) -> f64 {
        let mut v = self.ms.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.ms.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.ms.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }
}

impl std::fmt::Display for Samples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "median {:.1} ms (min {:.1}, max {:.1}, n={})", self.median(), self.min(), self.max(), self.ms.len())
    }
}

/// Where and in which precision a benchmark runs.
#[derive(Debug, Clone)]
pub struct BenchDevice {
    pub device: Device,
    pub dtype: DType,
}

impl BenchDevice {
    pub fn cpu_f32() -> Self {
        Self { device: Device::Cpu, dtype: DType::F32 }
    }

    /// The device `device` names (`cpu`, `cuda`, `cuda:N`; no fallback) in `dtype` (`auto`,
    /// `f32`, `f16`), as `SDAPI_DEVICE`/`SDAPI_DTYPE` choose them for the server.
    pub fn open(device: &str, dtype: &str) -> Result<Self, BenchError> {
        let request = |e: sdapi_core::runner::RunnerError| BenchError::Request(e.to_string());
        let device = parse_device(device).map_err(request)?;
        let dtype = parse_dtype(Some(dtype), &device).map_err(request)?;
        Ok(Self { device, dtype })
    }

    /// [`input`] on this device in this precision.
    pub(crate) fn input(&self, shape: &[usize], seed: u64) -> Result<Tensor, BenchError> {
        Ok(input(shape, seed)?.to_device(&self.device)?.to_dtype(self.dtype)?)
    }

    /// `warmup` untimed and `iters` timed calls of `f`, each followed by a synchronisation.
    pub(crate) fn measure(
        &self,
        warmup: usize,
        iters: usize,
        f: impl Fn() -> candle_core::Result<Tensor>,
    ) -> Result<Samples, BenchError> {
        Samples::measure(warmup, iters, || {
            let out = f()?;
            self.device.synchronize()?;
            Ok(out)
        })
    }
}

/// Deterministic, non-zero inputs (zeros can hide wrong indexing and take faster paths).
fn input(shape: &[usize], seed: u64) -> Result<Tensor, BenchError> {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

/// A model loaded through the real loader, on the CPU in f32.
pub struct BenchModel {
    model: LoadedModel,
    pub load_ms: f64,
}

impl BenchModel {
    pub fn load(checkpoint: &Path) -> Result<Self, BenchError> {
        let start = Instant::now();
        let model = LoadedModel::load(checkpoint, None, &Device::Cpu, DType::F32)?;
        Ok(Self { model, load_ms: start.elapsed().as_secs_f64() * 1e3 })
    }

    /// One UNet evaluation of a CFG pair: batch 2 of `latent`×`latent` latents, as the CFG denoiser
    /// calls it (uncond and cond stacked).
    pub fn unet_cfg_step(&self, latent: usize, warmup: usize, iters: usize) -> Result<(Samples, f32), BenchError> {
        let ctx_dim = self.model.unet.config().context_dim;
        let x = input(&[2, 4, latent, latent], 1)?;
        let t = Tensor::new(&[500f32, 500.0], &Device::Cpu)?;
        let context = input(&[2, 77, ctx_dim], 2)?;
        let mut std = 0f32;
        let samples = Samples::measure(warmup, iters, || {
            let eps = self.model.unet.forward(&x, &t, &context)?;
            std = eps.flatten_all()?.var(0)?.sqrt()?.to_scalar::<f32>()?;
            Ok(())
        })?;
        Ok((samples, std))
    }

    /// VAE decode of one latent to (3, 8·latent, 8·latent) RGB8 bytes.
    pub fn vae_decode(&self, latent: usize, warmup: usize, iters: usize) -> Result<Samples, BenchError> {
        let z = input(&[1, 4, latent, latent], 3)?;
        Samples::measure(warmup, iters, || {
            let img = self.model.vae.decode(&z)?;
            Ok(to_rgb8(&img.squeeze(0)?)?)
        })
    }

    /// VAE encoder on one `pixels`×`pixels` RGB image in [-1, 1] (the hires fix's pixel-upscaler
    /// path and img2img encode a decoded, upscaled image this way).
    pub fn vae_encode(&self, pixels: usize, warmup: usize, iters: usize) -> Result<Samples, BenchError> {
        let img = input(&[1, 3, pixels, pixels], 5)?;
        Samples::measure(warmup, iters, || Ok(self.model.vae.encode(&img)?))
    }

    /// Text encoder on a batch of two 77-token chunks (prompt + negative prompt).
    pub fn text_encode(&self, warmup: usize, iters: usize) -> Result<Samples, BenchError> {
        let ids: Vec<u32> = (0..154u32).map(|i| if i % 77 == 0 { 49406 } else { 320 + i }).collect();
        let ids = Tensor::from_vec(ids, (2, 77), &Device::Cpu)?;
        Samples::measure(warmup, iters, || Ok(self.model.clip().forward(&ids, 1)?))
    }
}

/// The real request path in process: `process_images` → `ProcessingRunner` → engine, then the
/// PNG + base64 encoding the handler does.
pub struct PipelineBench {
    ctx: ProcessingContext,
    model_name: String,
}

/// One txt2img through the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Txt2ImgRun {
    /// From submit to images back (conditioning, sampling, VAE decode, RGB8).
    pub process_ms: f64,
    /// The runner's own execute time (the X-Runner-Job `execute_ms`).
    pub execute_ms: f64,
    /// PNG encode (with infotext chunk) + base64 of every image.
    pub encode_ms: f64,
}

impl PipelineBench {
    /// `models_dir` in A1111 layout; `model_name` a checkpoint alias in it.
    pub fn new(models_dir: &Path, model_name: &str) -> Result<Self, BenchError> {
        let models = ModelIndex::scan(models_dir).map_err(|e| BenchError::Request(e.to_string()))?;
        let runner: Arc<dyn Runner> = Arc::new(ProcessingRunner::start(
            DiffusionExecutor::new("cpu").map_err(|e| BenchError::Request(e.to_string()))?,
        ));
        let ctx = ProcessingContext::new(runner, models, "bench");
        Ok(Self { ctx, model_name: model_name.into() })
    }

    /// One txt2img with Euler a (the A1111 default sampler) and CFG 7.
    pub async fn txt2img(&self, size: usize, steps: usize, seed: u64) -> Result<Txt2ImgRun, BenchError> {
        let body = serde_json::json!({
            "prompt": "a red cube on a wooden table, studio lighting",
            "negative_prompt": "blurry",
            "steps": steps, "width": size, "height": size, "seed": seed,
            "sampler_name": "Euler a", "cfg_scale": 7,
            "override_settings": {"sd_model_checkpoint": self.model_name},
        });
        let request = Txt2ImgRequest::from_json(&body).map_err(|e| BenchError::Request(format!("{e:?}")))?;
        let start = Instant::now();
        let processed = process_images(&self.ctx, GenerationRequest::Txt2Img(request))
            .await
            .map_err(|e| BenchError::Request(format!("{e:?}")))?;
        let process_ms = start.elapsed().as_secs_f64() * 1e3;
        let execute_ms = processed.jobs.iter().map(|j| j.timings.execute.as_secs_f64() * 1e3).sum();
        let start = Instant::now();
        for (img, info) in processed.images.iter().zip(&processed.infotexts) {
            let buf = img.to_image().ok_or_else(|| BenchError::Request("bad image size".into()))?;
            let b64 = encode_image_base64(&buf, Some(info), &processed.options)
                .map_err(|e| BenchError::Request(format!("{e:?}")))?;
            std::hint::black_box(b64);
        }
        Ok(Txt2ImgRun { process_ms, execute_ms, encode_ms: start.elapsed().as_secs_f64() * 1e3 })
    }
}

/// Default working folder for generated checkpoints (A1111 models layout).
pub fn default_models_dir() -> PathBuf {
    std::env::temp_dir().join("sdapi-bench-models")
}

/// Whether a CUDA device can actually be opened, with the reason if not. candle's
/// `Device::cuda_if_available` returns Err (not the CPU) in a CUDA build on a machine without a
/// GPU, so callers that want a fallback must decide it themselves, visibly.
pub fn select_device(want_cuda: bool) -> (Device, String) {
    if !want_cuda {
        return (Device::Cpu, "cpu (requested)".into());
    }
    match Device::new_cuda(0) {
        Ok(d) => (d, "cuda:0".into()),
        Err(e) => (Device::Cpu, format!("cpu (CUDA unavailable: {})", e.to_string().lines().next().unwrap_or(""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(Samples { ms: vec![3.0, 1.0, 2.0] }.median(), 2.0);
        assert_eq!(Samples { ms: vec![4.0, 1.0, 2.0, 3.0] }.median(), 2.5);
        assert!(Samples::default().median().is_nan());
    }

    #[test]
    fn sd15_checkpoint_has_the_real_parameter_count() {
        // SD 1.5: UNet 859.5 M, VAE 83.7 M, CLIP-L text 123.1 M (diffusers' counts).
        let shapes = tensor_shapes(Arch::Sd15).unwrap();
        let count = |prefix: &str| -> usize {
            shapes.iter().filter(|(n, _)| n.starts_with(prefix)).map(|(_, d)| d.iter().product::<usize>()).sum()
        };
        let m = |n: usize| n as f64 / 1e6;
        assert!(
            (m(count("model.diffusion_model.")) - 859.5).abs() < 1.0,
            "unet {}",
            m(count("model.diffusion_model."))
        );
        assert!((m(count("first_stage_model.")) - 83.65).abs() < 0.5, "vae {}", m(count("first_stage_model.")));
        assert!((m(count("cond_stage_model.")) - 123.06).abs() < 0.5, "clip {}", m(count("cond_stage_model.")));
    }

    #[test]
    fn tiny_checkpoint_loads_and_runs_every_stage() {
        let dir = std::env::temp_dir().join(format!("sdapi-bench-test-{}", std::process::id()));
        let path = ensure_checkpoint(Arch::Tiny, &dir).unwrap();
        let m = BenchModel::load(&path).unwrap();
        assert_eq!(m.model.unet.config(), &Arch::Tiny.unet());
        let (s, std) = m.unet_cfg_step(8, 0, 1).unwrap();
        assert_eq!(s.ms.len(), 1);
        assert!(std.is_finite() && std > 0.0, "eps std {std}");
        m.vae_decode(8, 0, 1).unwrap();
        m.text_encode(0, 1).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
