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
pub mod text;
pub mod unet;
pub mod vae;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

pub use checkpoint::{ModelFamily, PredictionType};
pub use clip::ClipTextModel;
pub use config::{ClipActivation, ClipConfig, UnetConfig, UnetHeads, VaeConfig};
pub use error::EngineError;
pub use text::{Emphasis, OpenClipG, SdxlSizes, TextEncoders, sdxl_vector};
pub use unet::UNetModel;
pub use vae::{AutoencoderKl, to_rgb8};

use loader::diffusers_names::{CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX};
use loader::text_names::{
    SD2_TEXT_PREFIX, SDXL_CLIP_G_PREFIX, SDXL_CLIP_L_PREFIX, SDXL_TEXT_PROJECTION,
};

/// SD 1.x / 2.x latent scale factor.
pub const SD_VAE_SCALE_FACTOR: f64 = 0.18215;
/// SDXL latent scale factor.
pub const SDXL_VAE_SCALE_FACTOR: f64 = 0.13025;
/// SD 1.x UNets use 8 heads at every level.
pub const SD1_UNET_HEADS: UnetHeads = UnetHeads::Count(8);
/// SD 2.x / SDXL UNets use 64-wide heads; see [`UnetHeads::HeadDimOr`] for narrow test models.
pub const SD2_SDXL_UNET_HEADS: UnetHeads = UnetHeads::HeadDimOr {
    head_dim: 64,
    narrow_head_dim: 16,
};
/// OpenCLIP-H has 24 layers; diffusers SD 2.x exports keep only the first 23.
const OPEN_CLIP_H_WIDTH: usize = 1024;
const OPEN_CLIP_H_TRUNCATED_LAYERS: usize = 23;

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

/// A checkpoint ready to run: text encoders, UNet, VAE and noise schedule.
pub struct LoadedModel {
    pub family: ModelFamily,
    /// Eps, or V (SD 2.x 768-v: a `.yaml` beside the file with `parameterization: "v"`, or the
    /// diffusers scheduler's `v_prediction`). The runner wraps V models in CompVisVDenoiser.
    pub prediction: PredictionType,
    pub text: TextEncoders,
    pub unet: UNetModel,
    pub vae: AutoencoderKl,
    /// DDPM `alphas_cumprod` (f32, 1000 entries for SD), from the file or computed.
    pub alphas_cumprod: Vec<f32>,
    pub checkpoint: ModelFile,
    /// The separate VAE file, when one replaced the checkpoint's VAE.
    pub vae_file: Option<ModelFile>,
    pub device: Device,
    pub dtype: DType,
}

/// The conditioning of a batch of texts as the UNet takes it.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// (texts, 77·chunks, context_dim): the UNet's cross-attention context.
    pub crossattn: Tensor,
    /// SDXL's `y`: (texts, adm_in_channels); `None` for SD 1.x / 2.x.
    pub vector: Option<Tensor>,
}

/// One chunk position of a batch of texts: per text, its 77 token ids (EOS padded, as A1111's
/// tokenizer makes them) and emphasis multipliers.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkColumn {
    pub tokens: Vec<[u32; text::CHUNK_LEN]>,
    pub multipliers: Vec<[f32; text::CHUNK_LEN]>,
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
        let (heads, vae_scale) = match ckpt.family {
            ModelFamily::Sd1 => (SD1_UNET_HEADS, SD_VAE_SCALE_FACTOR),
            ModelFamily::Sd2 => (SD2_SDXL_UNET_HEADS, SD_VAE_SCALE_FACTOR),
            ModelFamily::Sdxl => (SD2_SDXL_UNET_HEADS, SDXL_VAE_SCALE_FACTOR),
        };
        let unet_config = UnetConfig::infer(&store, heads)?;
        let vae_config = VaeConfig::infer(&store, vae_scale)?;
        let vb = store.var_builder(dtype, device);
        let text = load_text_encoders(ckpt.family, &store, &vb)?;
        if let TextEncoders::Sdxl { clip_g, .. } = &text {
            check_sdxl_vector_width(&unet_config, &clip_g.text_projection)?;
        }
        let unet = UNetModel::new(unet_config, vb.pp(UNET_PREFIX.trim_end_matches('.')))?;
        let vae = AutoencoderKl::new(vae_config, vb.pp(VAE_PREFIX.trim_end_matches('.')))?;
        Ok(Self {
            family: ckpt.family,
            prediction: ckpt.prediction,
            text,
            unet,
            vae,
            alphas_cumprod: ckpt.alphas_cumprod,
            checkpoint: ModelFile::describe(path)?,
            vae_file: vae_override.map(ModelFile::describe).transpose()?,
            device: device.clone(),
            dtype,
        })
    }

    /// The first (SD 1.x / 2.x: only) text encoder: CLIP-L for SD 1.x / SDXL, OpenCLIP-H for SD 2.x.
    pub fn clip(&self) -> &ClipTextModel {
        match &self.text {
            TextEncoders::Sd1(m) | TextEncoders::Sd2 { open_clip: m, .. } => m,
            TextEncoders::Sdxl { clip_l, .. } => clip_l,
        }
    }

    /// Latent scale factor (0.18215 SD 1.x / 2.x, 0.13025 SDXL): decode `latent / scale`.
    pub fn vae_scale_factor(&self) -> f64 {
        self.vae.config().scale_factor
    }

    /// A1111's `cond_stage_model(texts)` / SDXL `get_learned_conditioning(batch)`: every chunk
    /// position encoded as one batch, chunks concatenated on the token axis, SDXL's vector from the
    /// first chunk's pooled output and `sizes` (ignored by SD 1.x / 2.x).
    ///
    /// `zero_text`: A1111 zeroes SDXL's text parts (crossattn and pooled) when every negative
    /// prompt of the batch is empty; pass it only for such an uncond batch (no effect on SD 1/2).
    pub fn condition(
        &self,
        columns: &[ChunkColumn],
        emphasis: Emphasis,
        clip_skip: usize,
        sizes: &SdxlSizes,
        zero_text: bool,
    ) -> Result<Conditioning, EngineError> {
        let mut crossattn = Vec::with_capacity(columns.len());
        let mut first_pooled = None;
        for column in columns {
            let encoded =
                self.text
                    .encode(&column.tokens, &column.multipliers, emphasis, clip_skip)?;
            crossattn.push(encoded.crossattn);
            if first_pooled.is_none() {
                first_pooled = encoded.pooled;
            }
        }
        if crossattn.is_empty() {
            return Err(EngineError::Unsupported(
                "no prompt chunks to encode".into(),
            ));
        }
        let mut crossattn = Tensor::cat(&crossattn, 1)?;
        let zero = zero_text && self.family == ModelFamily::Sdxl;
        if zero {
            crossattn = crossattn.zeros_like()?;
        }
        let vector = match first_pooled {
            Some(pooled) => {
                let pooled = if zero { pooled.zeros_like()? } else { pooled };
                Some(self.sdxl_vector(&pooled, sizes)?)
            }
            None => None,
        };
        Ok(Conditioning { crossattn, vector })
    }

    /// SDXL's `y` from a pooled text output (texts, P); the per-number embedding width is what
    /// `label_emb` leaves after the pooled part (SDXL: (2816 − 1280) / 6 = 256).
    pub fn sdxl_vector(&self, pooled: &Tensor, sizes: &SdxlSizes) -> Result<Tensor, EngineError> {
        let adm = self
            .unet
            .config()
            .adm_in_channels
            .ok_or_else(|| EngineError::Unsupported("this UNet takes no SDXL vector".into()))?;
        let embed_dim = (adm - pooled.dim(1)?.min(adm)) / 6;
        Ok(sdxl_vector(pooled, sizes, embed_dim)?)
    }
}

fn load_text_encoders(
    family: ModelFamily,
    store: &Arc<loader::tensor_store::TensorStore>,
    vb: &candle_nn::VarBuilder<'static>,
) -> Result<TextEncoders, EngineError> {
    let tower = |prefix: &str, activation| -> Result<ClipTextModel, EngineError> {
        let config = ClipConfig::infer_at(store, prefix, activation)?;
        Ok(ClipTextModel::new(
            config,
            vb.pp(prefix.trim_end_matches('.')),
        )?)
    };
    Ok(match family {
        ModelFamily::Sd1 => TextEncoders::Sd1(tower(CLIP_PREFIX, ClipActivation::QuickGelu)?),
        ModelFamily::Sd2 => {
            let open_clip = tower(SD2_TEXT_PREFIX, ClipActivation::Gelu)?;
            let c = open_clip.config();
            let last_layer_dropped =
                c.hidden_size == OPEN_CLIP_H_WIDTH && c.num_layers == OPEN_CLIP_H_TRUNCATED_LAYERS;
            TextEncoders::Sd2 {
                open_clip,
                last_layer_dropped,
            }
        }
        ModelFamily::Sdxl => {
            let clip_l = tower(SDXL_CLIP_L_PREFIX, ClipActivation::QuickGelu)?;
            let model = tower(SDXL_CLIP_G_PREFIX, ClipActivation::Gelu)?;
            let width = model.config().hidden_size;
            let shape = store.require_shape(SDXL_TEXT_PROJECTION)?;
            if shape.len() != 2 || shape[0] != width {
                return Err(EngineError::ShapeMismatch {
                    name: SDXL_TEXT_PROJECTION.into(),
                    expected: vec![width, shape.get(1).copied().unwrap_or(0)],
                    actual: shape.to_vec(),
                });
            }
            let text_projection = store.load(SDXL_TEXT_PROJECTION, vb.dtype(), vb.device())?;
            TextEncoders::Sdxl {
                clip_l,
                clip_g: OpenClipG {
                    model,
                    text_projection,
                },
            }
        }
    })
}

/// `label_emb` must take `pooled + 6·E` channels, E a positive even embedding width.
fn check_sdxl_vector_width(unet: &UnetConfig, projection: &Tensor) -> Result<(), EngineError> {
    let pooled = projection.dim(1)?;
    match unet.adm_in_channels {
        Some(adm) if adm > pooled && (adm - pooled) % 12 == 0 => Ok(()),
        other => Err(EngineError::Unsupported(format!(
            "SDXL label_emb input {other:?} does not fit pooled width {pooled} + 6 size embeddings"
        ))),
    }
}

/// The SD 1.x path of the prompt code: one chunk position through the (first) text encoder.
/// SD 2.x: OpenCLIP penultimate with 0-padding, `clip_skip` ignored. SDXL: the concatenated
/// crossattn of both encoders *without* emphasis or pooled output; SDXL conditioning with
/// emphasis and the vector needs [`LoadedModel::condition`] / [`TextEncoders::encode`].
impl crate::prompts::TextEncoder for LoadedModel {
    fn encode_chunks(
        &self,
        tokens: &[[u32; 77]],
        clip_skip: usize,
    ) -> candle_core::Result<candle_core::Tensor> {
        let ones = vec![[1f32; 77]; tokens.len()];
        self.text
            .encode(tokens, &ones, Emphasis::Off, clip_skip)
            .map(|e| e.crossattn)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))
    }
}
