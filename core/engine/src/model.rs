//! [`LoadedModel`]: a checkpoint ready to run — text encoders, UNet, VAE and noise schedule —
//! and the conditioning entry point every family goes through.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use sdapi_protocol::choices::EmphasisMode;

use crate::checkpoint::{self, ModelFamily, PredictionType};
use crate::clip::ClipTextModel;
use crate::config::{ClipActivation, ClipConfig, UnetConfig, UnetHeads, VaeConfig};
use crate::error::EngineError;
use crate::loader;
use crate::loader::diffusers_names::{CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX};
use crate::loader::tensor_store::{ResidentWeights, WeightPatch};
use crate::loader::text_names::{SD2_TEXT_PREFIX, SDXL_CLIP_G_PREFIX, SDXL_CLIP_L_PREFIX, SDXL_TEXT_PROJECTION};
use crate::networks::{LayerIndex, LoraFile, LoraPatch, LoraResolution};
use crate::text::{
    ChunkColumn, ChunkedBatch, Conditioner, Conditioning, OpenClipG, SdxlSizes, TextEncoders, TextError, TextSide,
    VectorKind, sdxl_vector,
};
use crate::unet::UNetModel;
use crate::vae::AutoencoderKl;
use crate::vae_precision::VaeUpcast;

// The families' published defaults (A1111's v1-inference.yaml, v2-inference(-v).yaml,
// sd_xl_base.yaml), used where the shipped configs say nothing.

/// SD 1.x / 2.x latent scale factor.
pub const SD_VAE_SCALE_FACTOR: f64 = 0.18215;
/// SDXL latent scale factor.
pub const SDXL_VAE_SCALE_FACTOR: f64 = 0.13025;
/// SD 1.x UNets use 8 heads at every level (`num_heads: 8`).
pub const SD1_UNET_HEADS: UnetHeads = UnetHeads::Count(8);
/// SD 2.x / SDXL UNets use 64-wide heads (`num_head_channels: 64`).
pub const SD2_SDXL_UNET_HEADS: UnetHeads = UnetHeads::HeadDim(64);
/// OpenCLIP-H has 24 layers; diffusers SD 2.x exports keep only the first 23.
const OPEN_CLIP_H_WIDTH: usize = 1024;
const OPEN_CLIP_H_TRUNCATED_LAYERS: usize = 23;

/// One LoRA-family network to merge, with A1111's multipliers.
pub struct LoraApplication<'a> {
    pub file: &'a LoraFile,
    pub te_multiplier: f64,
    pub unet_multiplier: f64,
    pub dyn_dim: Option<usize>,
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
    /// In half precision: where the VAE is rebuilt in f32 when a decode gives NaNs.
    pub vae_upcast: Option<VaeUpcast>,
    /// DDPM `alphas_cumprod` (f32, 1000 entries for SD), from the file or computed.
    pub alphas_cumprod: Vec<f32>,
    pub device: Device,
    pub dtype: DType,
}

impl LoadedModel {
    /// Loads a single `.safetensors` checkpoint or a diffusers folder, optionally replacing its
    /// VAE, onto `device` in `dtype`. The files are memory-mapped, never hashed here: the models
    /// index hashes each file once and the caller reports that hash.
    pub fn load(path: &Path, vae_override: Option<&Path>, device: &Device, dtype: DType) -> Result<Self, EngineError> {
        Self::load_patched(path, vae_override, &[], device, dtype)
    }

    /// [`Self::load`] with weight patches merged into the tensors they target as they load.
    pub fn load_patched(
        path: &Path,
        vae_override: Option<&Path>,
        patches: &[Arc<dyn WeightPatch>],
        device: &Device,
        dtype: DType,
    ) -> Result<Self, EngineError> {
        let mut ckpt = checkpoint::open_checkpoint(path)?;
        if let Some(vae_path) = vae_override {
            checkpoint::apply_vae_override(&mut ckpt.store, vae_path)?;
        }
        for patch in patches {
            ckpt.store.add_patch(Arc::clone(patch));
        }
        Self::from_checkpoint(ckpt, device, dtype)
    }

    /// [`Self::load`] with LoRA-family networks merged (A1111's order: each network's update added
    /// in turn). Returns how each network matched the model's layers.
    ///
    /// `resident`: the checkpoint's unpatched weights kept from an earlier load (same checkpoint,
    /// VAE, dtype and device); weights no network touches are shared with it instead of read again.
    pub fn load_with_loras(
        path: &Path,
        vae_override: Option<&Path>,
        loras: &[LoraApplication<'_>],
        resident: Option<ResidentWeights>,
        device: &Device,
        dtype: DType,
    ) -> Result<(Self, Vec<LoraResolution>), EngineError> {
        let mut ckpt = checkpoint::open_checkpoint(path)?;
        if let Some(vae_path) = vae_override {
            checkpoint::apply_vae_override(&mut ckpt.store, vae_path)?;
        }
        if let Some(resident) = resident {
            ckpt.store.use_resident(resident);
        }
        let index = LayerIndex::new(ckpt.family, ckpt.store.names());
        let mut reports = Vec::with_capacity(loras.len());
        for lora in loras {
            let (patch, report) =
                LoraPatch::new(lora.file, ckpt.family, &index, lora.te_multiplier, lora.unet_multiplier, lora.dyn_dim);
            ckpt.store.add_patch(Arc::new(patch));
            reports.push(report);
        }
        ckpt.store.premerge(dtype, device)?;
        Ok((Self::from_checkpoint(ckpt, device, dtype)?, reports))
    }

    fn from_checkpoint(ckpt: checkpoint::Checkpoint, device: &Device, dtype: DType) -> Result<Self, EngineError> {
        let mut store = ckpt.store;
        store.preload(dtype, device)?;
        let store = Arc::new(store);
        let shipped = ckpt.shipped;
        let (default_heads, default_scale) = match ckpt.family {
            ModelFamily::Sd1 => (SD1_UNET_HEADS, SD_VAE_SCALE_FACTOR),
            ModelFamily::Sd2 => (SD2_SDXL_UNET_HEADS, SD_VAE_SCALE_FACTOR),
            ModelFamily::Sdxl => (SD2_SDXL_UNET_HEADS, SDXL_VAE_SCALE_FACTOR),
        };
        let unet_config = UnetConfig::infer(&store, shipped.unet_heads.clone().unwrap_or(default_heads))?;
        unet_config.check_heads()?;
        let vae_config = VaeConfig::infer(&store, shipped.vae_scale_factor.unwrap_or(default_scale))?;
        let vb = store.var_builder(dtype, device);
        let text = load_text_encoders(ckpt.family, &store, &vb, shipped.text_heads)?;
        if let Some((clip_g, kind)) = sdxl_text_parts(&text) {
            check_sdxl_vector_width(&unet_config, &clip_g.text_projection, kind)?;
        }
        let unet = UNetModel::new(unet_config, vb.pp(UNET_PREFIX.trim_end_matches('.')))?;
        let vae = AutoencoderKl::new(vae_config.clone(), vb.pp(VAE_PREFIX.trim_end_matches('.')))?;
        let vae_upcast = (dtype != DType::F32).then(|| VaeUpcast::new(Arc::clone(&store), vae_config, device.clone()));
        Ok(Self {
            family: ckpt.family,
            prediction: ckpt.prediction,
            text,
            unet,
            vae,
            vae_upcast,
            alphas_cumprod: ckpt.alphas_cumprod,
            device: device.clone(),
            dtype,
        })
    }

    /// `latent` (f32) decoded to f32 pixels, in f32 after A1111's NaN fallback (see
    /// [`crate::vae_precision`]).
    pub fn decode_latent(&self, latent: &Tensor) -> candle_core::Result<Tensor> {
        crate::vae_precision::decode(&self.vae, self.dtype, self.vae_upcast.as_ref(), latent)
    }

    /// f32 pixels in [-1, 1] encoded to f32 latents (the f32 VAE once a decode needed it).
    pub fn encode_pixels(&self, pixels: &Tensor) -> candle_core::Result<Tensor> {
        crate::vae_precision::encode(&self.vae, self.dtype, self.vae_upcast.as_ref(), pixels)
    }

    /// The first (SD 1.x / 2.x: only) text encoder: CLIP-L for SD 1.x / SDXL, OpenCLIP-H for SD 2.x.
    pub fn clip(&self) -> &ClipTextModel {
        match &self.text {
            TextEncoders::Sd1(m) | TextEncoders::Sd2 { open_clip: m, .. } => m,
            TextEncoders::Sdxl { clip_l, .. } => clip_l,
            TextEncoders::SdxlRefiner { clip_g } => &clip_g.model,
        }
    }

    /// Token-vector width of each text encoder, in encoder order (SDXL: CLIP-L, bigG).
    pub fn text_widths(&self) -> Vec<usize> {
        match &self.text {
            TextEncoders::Sd1(m) | TextEncoders::Sd2 { open_clip: m, .. } => vec![m.config().hidden_size],
            TextEncoders::Sdxl { clip_l, clip_g } => {
                vec![clip_l.config().hidden_size, clip_g.model.config().hidden_size]
            }
            TextEncoders::SdxlRefiner { clip_g } => vec![clip_g.model.config().hidden_size],
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
        emphasis: EmphasisMode,
        clip_skip: usize,
        sizes: &SdxlSizes,
        side: TextSide,
    ) -> Result<Conditioning, EngineError> {
        let mut crossattn = Vec::with_capacity(columns.len());
        let mut first_pooled = None;
        for column in columns {
            let encoded =
                self.text.encode_with(&column.tokens, &column.multipliers, &column.embeddings, emphasis, clip_skip)?;
            crossattn.push(encoded.crossattn);
            if first_pooled.is_none() {
                first_pooled = encoded.pooled;
            }
        }
        if crossattn.is_empty() {
            return Err(EngineError::Unsupported("no prompt chunks to encode".into()));
        }
        let mut crossattn = Tensor::cat(&crossattn, 1)?;
        let zero = side.zeroes_text() && self.family == ModelFamily::Sdxl;
        if zero {
            crossattn = crossattn.zeros_like()?;
        }
        let vector = match first_pooled {
            Some(pooled) => {
                let pooled = if zero { pooled.zeros_like()? } else { pooled };
                Some(self.sdxl_vector(&pooled, sizes, side)?)
            }
            None => None,
        };
        Ok(Conditioning { crossattn, vector })
    }

    /// SDXL's `y` from a pooled text output (texts, P); the per-number embedding width is what
    /// `label_emb` leaves after the pooled part (base: (2816 − 1280) / 6 = 256; refiner:
    /// (2560 − 1280) / 5 = 256).
    pub fn sdxl_vector(&self, pooled: &Tensor, sizes: &SdxlSizes, side: TextSide) -> Result<Tensor, EngineError> {
        let adm = self
            .unet
            .config()
            .adm_in_channels
            .ok_or_else(|| EngineError::Unsupported("this UNet takes no SDXL vector".into()))?;
        let kind = sdxl_text_parts(&self.text).map_or(VectorKind::Base, |(_, kind)| kind);
        let embed_dim = (adm - pooled.dim(1)?.min(adm)) / kind.numbers();
        Ok(sdxl_vector(pooled, sizes, kind, side, embed_dim)?)
    }
}

/// `heads`: the shipped configs' head counts of the first and second text encoder.
fn load_text_encoders(
    family: ModelFamily,
    store: &Arc<loader::tensor_store::TensorStore>,
    vb: &candle_nn::VarBuilder<'static>,
    heads: [Option<usize>; 2],
) -> Result<TextEncoders, EngineError> {
    let tower = |prefix: &str, activation, heads| -> Result<ClipTextModel, EngineError> {
        let config = ClipConfig::infer_at(store, prefix, activation, heads)?;
        Ok(ClipTextModel::new(config, vb.pp(prefix.trim_end_matches('.')))?)
    };
    Ok(match family {
        ModelFamily::Sd1 => TextEncoders::Sd1(tower(CLIP_PREFIX, ClipActivation::QuickGelu, heads[0])?),
        ModelFamily::Sd2 => {
            let open_clip = tower(SD2_TEXT_PREFIX, ClipActivation::Gelu, heads[0])?;
            let c = open_clip.config();
            let last_layer_dropped = c.hidden_size == OPEN_CLIP_H_WIDTH && c.num_layers == OPEN_CLIP_H_TRUNCATED_LAYERS;
            TextEncoders::Sd2 { open_clip, last_layer_dropped }
        }
        ModelFamily::Sdxl => {
            // The refiner's conditioner has bigG alone (its head count is the first text
            // encoder's in its config).
            let refiner = !store.contains(&format!("{SDXL_CLIP_L_PREFIX}embeddings.token_embedding.weight"));
            let clip_l =
                if refiner { None } else { Some(tower(SDXL_CLIP_L_PREFIX, ClipActivation::QuickGelu, heads[0])?) };
            let model = tower(SDXL_CLIP_G_PREFIX, ClipActivation::Gelu, if refiner { heads[0] } else { heads[1] })?;
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
            let clip_g = OpenClipG { model, text_projection };
            match clip_l {
                Some(clip_l) => TextEncoders::Sdxl { clip_l, clip_g },
                None => TextEncoders::SdxlRefiner { clip_g },
            }
        }
    })
}

/// SDXL's bigG encoder and the `y` vector its model takes (None for SD 1.x / 2.x).
fn sdxl_text_parts(text: &TextEncoders) -> Option<(&OpenClipG, VectorKind)> {
    match text {
        TextEncoders::Sdxl { clip_g, .. } => Some((clip_g, VectorKind::Base)),
        TextEncoders::SdxlRefiner { clip_g } => Some((clip_g, VectorKind::Refiner)),
        TextEncoders::Sd1(_) | TextEncoders::Sd2 { .. } => None,
    }
}

/// `label_emb` must take `pooled + k·E` channels (k numbers of `kind`), E a positive even
/// embedding width.
fn check_sdxl_vector_width(unet: &UnetConfig, projection: &Tensor, kind: VectorKind) -> Result<(), EngineError> {
    let pooled = projection.dim(1)?;
    let k = kind.numbers();
    match unet.adm_in_channels {
        Some(adm) if adm > pooled && (adm - pooled) % (2 * k) == 0 => Ok(()),
        other => Err(EngineError::Unsupported(format!(
            "SDXL label_emb input {other:?} does not fit pooled width {pooled} + {k} embedded numbers"
        ))),
    }
}

/// The model side of the one conditioning path, with the settings of one request: every family
/// goes through [`LoadedModel::condition`].
pub struct ModelConditioner<'a> {
    pub model: &'a LoadedModel,
    pub emphasis: EmphasisMode,
    /// `CLIP_stop_at_last_layers` (1 = last layer); only SD 1.x reads it.
    pub clip_skip: usize,
    /// SDXL size conditioning of this request.
    pub sizes: SdxlSizes,
}

impl Conditioner for ModelConditioner<'_> {
    fn condition(&self, batch: &ChunkedBatch, side: TextSide) -> Result<Conditioning, TextError> {
        self.model
            .condition(&batch.columns(), self.emphasis, self.clip_skip, &self.sizes, side)
            .map_err(|e| TextError::Encoder(e.to_string()))
    }
}
