//! Random-weight checkpoints with the real architectures, written as A1111 single-file
//! `.safetensors` so the benchmark loads them through the real loader (`LoadedModel::load`).
//!
//! Why not time a `VarMap` model directly: the loader path (name mapping, f16 → f32 conversion,
//! config inference) is what the server runs, and the file doubles as the model for the
//! `process_images` benchmark.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;
use candle_nn::var_builder::SimpleBackend;

use super::BenchError;
use crate::clip::ClipTextModel;
use crate::config::{ClipActivation, ClipConfig, UnetConfig, VaeConfig};
use crate::model::{SD_VAE_SCALE_FACTOR, SD1_UNET_HEADS, SD2_SDXL_UNET_HEADS, SDXL_VAE_SCALE_FACTOR};
use crate::unet::UNetModel;
use crate::vae::AutoencoderKl;

/// Which architecture to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// SD 1.5: UNet 320/640/1280/1280, 2 res blocks, attention at the first 3 levels, context
    /// 768; CLIP-L (12 layers, width 768); VAE 128/256/512/512.
    Sd15,
    /// SDXL base: UNet 320/640/1280, transformer depths 0/2/10 (10 in the middle), 64-wide
    /// heads, linear projections, context 2048, `label_emb` of 2816; VAE as SD 1.5 with SDXL's
    /// latent scale. Built in memory only (`bench gen`): no single-file checkpoint is written.
    Sdxl,
    /// SD-1.5-shaped but tiny (CI smoke): same tensor names and latent ×8 factor.
    Tiny,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Sd15 => "sd15",
            Arch::Sdxl => "sdxl",
            Arch::Tiny => "tiny",
        }
    }

    /// `sd15`, `sdxl` or `tiny`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Arch::Sd15, Arch::Sdxl, Arch::Tiny].into_iter().find(|a| a.name() == name)
    }

    pub fn unet(self) -> UnetConfig {
        // (model channels, multipliers, res blocks, transformer depths, middle depth, linear
        // projections, heads, label_emb width)
        let (mc, mult, res, depth, middle, linear_proj, heads, adm) = match self {
            Arch::Sd15 => (320, vec![1, 2, 4, 4], vec![2; 4], vec![1, 1, 1, 0], 1, false, SD1_UNET_HEADS, None),
            Arch::Sdxl => (320, vec![1, 2, 4], vec![2; 3], vec![0, 2, 10], 10, true, SD2_SDXL_UNET_HEADS, Some(2816)),
            Arch::Tiny => (32, vec![1, 2], vec![1; 2], vec![1, 0], 1, false, SD1_UNET_HEADS, None),
        };
        UnetConfig {
            in_channels: 4,
            out_channels: 4,
            model_channels: mc,
            time_embed_dim: 4 * mc,
            channel_mult: mult,
            num_res_blocks: res,
            transformer_depth: depth,
            transformer_depth_middle: middle,
            context_dim: self.context_dim(),
            use_linear_proj: linear_proj,
            heads,
            adm_in_channels: adm,
        }
    }

    pub fn context_dim(self) -> usize {
        match self {
            Arch::Sd15 => 768,
            Arch::Sdxl => 2048,
            Arch::Tiny => 32,
        }
    }

    /// The (first) text encoder: CLIP-L for SD 1.5 and SDXL.
    pub fn clip(self) -> ClipConfig {
        let (hidden, layers, heads) = match self {
            Arch::Sd15 | Arch::Sdxl => (768, 12, 12),
            Arch::Tiny => (32, 2, 4),
        };
        ClipConfig {
            // The real vocabulary size: the request path tokenizes with the real CLIP BPE.
            vocab_size: 49408,
            hidden_size: hidden,
            num_layers: layers,
            num_heads: heads,
            intermediate_size: 4 * hidden,
            max_positions: 77,
            activation: ClipActivation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    pub fn vae(self) -> VaeConfig {
        let ch = match self {
            Arch::Sd15 | Arch::Sdxl => 128,
            Arch::Tiny => 32,
        };
        let full = self != Arch::Tiny;
        VaeConfig {
            in_channels: 3,
            out_channels: 3,
            ch,
            ch_mult: if full { vec![1, 2, 4, 4] } else { vec![1, 1, 2, 2] },
            num_res_blocks: if full { 2 } else { 1 },
            z_channels: 4,
            embed_dim: 4,
            scale_factor: if self == Arch::Sdxl { SDXL_VAE_SCALE_FACTOR } else { SD_VAE_SCALE_FACTOR },
        }
    }
}

/// Records every tensor a model constructor asks for. Hands back lazily zeroed tensors (calloc'd
/// pages are never touched), so building SD 1.5 this way costs no memory traffic.
#[derive(Default)]
struct ShapeRecorder(Mutex<Vec<(String, Vec<usize>)>>);

impl SimpleBackend for ShapeRecorder {
    fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push((name.to_string(), s.dims().to_vec()));
        Tensor::zeros(s, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("shape recorder: unchecked get of {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        // Nothing exists yet: modules with two naming schemes (the VAE's attention) pick LDM's.
        false
    }
}

/// A backend behind an `Arc`: the VarBuilder owns its backend, and the caller still reads what
/// the backend recorded once the model is built.
pub(super) struct Shared<B>(pub(super) std::sync::Arc<B>);

impl<B: SimpleBackend> SimpleBackend for Shared<B> {
    fn get(&self, s: Shape, n: &str, h: candle_nn::Init, d: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get(s, n, h, d, dev)
    }
    fn get_unchecked(&self, n: &str, d: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.0.get_unchecked(n, d, dev)
    }
    fn contains_tensor(&self, n: &str) -> bool {
        self.0.contains_tensor(n)
    }
}

/// LDM names and shapes of every tensor of `arch`'s checkpoint (SD 1.5-layout archs only: an
/// SDXL file would need both text encoders, which `bench gen` leaves out).
pub fn tensor_shapes(arch: Arch) -> Result<Vec<(String, Vec<usize>)>, BenchError> {
    if arch == Arch::Sdxl {
        return Err(BenchError::Request(
            "no SDXL checkpoint file is written; `bench gen --arch sdxl` builds it in memory".into(),
        ));
    }
    let recorder = std::sync::Arc::new(ShapeRecorder::default());
    let vb = VarBuilder::from_backend(Box::new(Shared(recorder.clone())), DType::F32, Device::Cpu);
    UNetModel::new(arch.unet(), vb.pp("model.diffusion_model"))?;
    ClipTextModel::new(arch.clip(), vb.pp("cond_stage_model.transformer.text_model"))?;
    AutoencoderKl::new(arch.vae(), vb.pp("first_stage_model"))?;
    drop(vb);
    let mut shapes = std::mem::take(&mut *recorder.0.lock().unwrap_or_else(|e| e.into_inner()));
    shapes.sort();
    shapes.dedup_by(|a, b| a.0 == b.0);
    Ok(shapes)
}

/// Parameters of `arch`'s UNet, counted from the shapes its constructor asks for.
pub fn unet_parameter_count(arch: Arch) -> Result<u64, BenchError> {
    let recorder = std::sync::Arc::new(ShapeRecorder::default());
    // f16 zeros: nothing is touched, and the address space reserved is half of f32's.
    let vb = VarBuilder::from_backend(Box::new(Shared(recorder.clone())), DType::F16, Device::Cpu);
    drop(UNetModel::new(arch.unet(), vb.pp("model.diffusion_model"))?);
    let shapes = std::mem::take(&mut *recorder.0.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(shapes.iter().map(|(_, dims)| dims.iter().product::<usize>() as u64).sum())
}

/// splitmix64: a tiny deterministic generator; quality is irrelevant, speed and reproducibility
/// are what matter for 1 G parameters.
pub(super) struct SplitMix(pub(super) u64);

impl SplitMix {
    pub(super) fn next_unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 40) as f32) / ((1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Values of one tensor, initialised like PyTorch's defaults so both sides of the comparison see
/// the same activation statistics (no denormal slow paths on one side only): norm scales 1,
/// biases 0, matrices and kernels U(±1/√fan_in) (torch's kaiming_uniform(a=√5) for Linear/Conv).
pub(super) fn init_values(name: &str, dims: &[usize], rng: &mut SplitMix) -> Vec<half::f16> {
    let n: usize = dims.iter().product();
    if name.ends_with(".bias") {
        return vec![half::f16::ZERO; n];
    }
    if dims.len() == 1 {
        return vec![half::f16::ONE; n];
    }
    let fan_in = (n / dims[0].max(1)).max(1);
    // Embeddings are N(0,1) in torch; a unit-variance uniform keeps their scale.
    let bound = if name.contains("embedding") { 3f32.sqrt() } else { 1.0 / (fan_in as f32).sqrt() };
    (0..n).map(|_| half::f16::from_f32(rng.next_unit() * bound)).collect()
}

/// Writes `arch`'s random checkpoint (f16, like pruned SD releases) to `path`.
pub fn write_checkpoint(arch: Arch, path: &Path, seed: u64) -> Result<u64, BenchError> {
    let shapes = tensor_shapes(arch)?;
    let mut rng = SplitMix(seed);
    let mut tensors = HashMap::with_capacity(shapes.len());
    let mut params = 0u64;
    for (name, dims) in shapes {
        let values = init_values(&name, &dims, &mut rng);
        params += values.len() as u64;
        tensors.insert(name, Tensor::from_vec(values, dims, &Device::Cpu)?);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| BenchError::Io(dir.display().to_string(), e))?;
    }
    // Write to a temporary name first: a half-written file must never be mistaken for a cache hit.
    let tmp = path.with_extension("partial");
    candle_core::safetensors::save(&tensors, &tmp)?;
    // The config a user would ship beside it: the text encoder's head count is not in the tensors.
    let yaml = path.with_extension("yaml");
    let text = format!(
        "model:\n  params:\n    unet_config:\n      params:\n        num_heads: 8\n    cond_stage_config:\n      arch:\n        num_attention_heads: {}\n",
        arch.clip().num_heads
    );
    std::fs::write(&yaml, text).map_err(|e| BenchError::Io(yaml.display().to_string(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| BenchError::Io(path.display().to_string(), e))?;
    Ok(params)
}

/// The checkpoint for `arch` under `dir` (`Stable-diffusion/bench-<arch>.safetensors`, an A1111
/// models layout), written once and reused.
pub fn ensure_checkpoint(arch: Arch, models_dir: &Path) -> Result<std::path::PathBuf, BenchError> {
    let path = models_dir.join("Stable-diffusion").join(format!("bench-{}.safetensors", arch.name()));
    if !path.exists() || !path.with_extension("yaml").exists() {
        write_checkpoint(arch, &path, 0x5d_a9_15)?;
    }
    Ok(path)
}
