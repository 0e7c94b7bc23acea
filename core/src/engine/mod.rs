//! The diffusion engine: checkpoint loading, CLIP text encoder, UNet and VAE on candle.
//!
//! All modules address weights by LDM (A1111 single-file) names; diffusers folders and separate
//! VAE files are renamed onto them by [`loader`]. Everything takes a `Device` and `DType`.

pub mod attention;
pub mod checkpoint;
pub mod clip;
pub mod config;
mod error;
pub mod hash;
pub mod loader;
mod norm;
pub mod schedule;
pub mod unet;
pub mod vae;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device};

pub use checkpoint::{ModelFamily, PredictionType};
pub use clip::ClipTextModel;
pub use config::{ClipActivation, ClipConfig, UnetConfig, UnetHeads, VaeConfig};
pub use error::EngineError;
pub use unet::UNetModel;
pub use vae::{AutoencoderKl, to_rgb8};

use loader::diffusers_names::{CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX};

/// SD 1.x / 2.x latent scale factor (SDXL: 0.13025).
pub const SD_VAE_SCALE_FACTOR: f64 = 0.18215;
/// SD 1.x UNets use 8 heads at every level.
pub const SD1_UNET_HEADS: UnetHeads = UnetHeads::Count(8);

/// A file the model was loaded from, with the hashes A1111 reports for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFile {
    /// File or folder name (e.g. `tiny-sd15.safetensors`).
    pub file_name: String,
    /// Full sha256 (hex) of a single file; `None` for diffusers folders.
    pub sha256: Option<String>,
}

impl ModelFile {
    fn describe(path: &Path) -> Result<Self, EngineError> {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let sha256 = if path.is_file() {
            Some(hash::sha256_file(path)?)
        } else {
            None
        };
        Ok(Self { file_name, sha256 })
    }

    /// A1111's short hash (first 10 hex digits), if the file has a sha256.
    pub fn short_hash(&self) -> Option<&str> {
        self.sha256.as_deref().map(hash::short_hash)
    }
}

/// A checkpoint ready to run: text encoder, UNet, VAE and noise schedule.
pub struct LoadedModel {
    pub family: ModelFamily,
    pub prediction: PredictionType,
    pub clip: ClipTextModel,
    pub unet: UNetModel,
    pub vae: AutoencoderKl,
    /// DDPM `alphas_cumprod` (f32, 1000 entries for SD).
    pub alphas_cumprod: Vec<f32>,
    pub checkpoint: ModelFile,
    /// The separate VAE file, when one replaced the checkpoint's VAE.
    pub vae_file: Option<ModelFile>,
    pub device: Device,
    pub dtype: DType,
}

impl LoadedModel {
    /// Loads a single `.safetensors` checkpoint or a diffusers folder, optionally replacing its
    /// VAE, onto `device` in `dtype`. Computes the file's sha256 (one full read).
    pub fn load(
        path: &Path,
        vae_override: Option<&Path>,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, EngineError> {
        let mut ckpt = checkpoint::open_checkpoint(path)?;
        if let Some(vae_path) = vae_override {
            checkpoint::apply_vae_override(&mut ckpt.store, vae_path)?;
        }
        let store = Arc::new(ckpt.store);
        let clip_config = ClipConfig::infer(&store, ClipActivation::QuickGelu)?;
        let unet_config = UnetConfig::infer(&store, SD1_UNET_HEADS)?;
        let vae_config = VaeConfig::infer(&store, SD_VAE_SCALE_FACTOR)?;
        let vb = store.var_builder(dtype, device);
        let clip = ClipTextModel::new(clip_config, vb.pp(CLIP_PREFIX.trim_end_matches('.')))?;
        let unet = UNetModel::new(unet_config, vb.pp(UNET_PREFIX.trim_end_matches('.')))?;
        let vae = AutoencoderKl::new(vae_config, vb.pp(VAE_PREFIX.trim_end_matches('.')))?;
        Ok(Self {
            family: ckpt.family,
            prediction: ckpt.prediction,
            clip,
            unet,
            vae,
            alphas_cumprod: ckpt.alphas_cumprod,
            checkpoint: ModelFile::describe(path)?,
            vae_file: vae_override.map(ModelFile::describe).transpose()?,
            device: device.clone(),
            dtype,
        })
    }
}

impl crate::prompts::TextEncoder for LoadedModel {
    fn encode_chunks(
        &self,
        tokens: &[[u32; 77]],
        clip_skip: usize,
    ) -> candle_core::Result<candle_core::Tensor> {
        self.clip.encode_chunks(tokens, clip_skip)
    }
}
