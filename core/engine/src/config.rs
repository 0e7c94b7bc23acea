//! Architecture configs of the three networks, inferred from tensor shapes.
//!
//! Everything is read from the canonical (LDM) tensor names of a [`TensorStore`]; nothing is
//! guessed from file names. The only facts shapes cannot tell are the attention head counts: they
//! come from the configs shipped with the model (`shipped_config`), else from the family's
//! published defaults (`model`), and are passed in here.

use crate::EngineError;
use crate::loader::diffusers_names::{UNET_PREFIX, VAE_PREFIX};
use crate::loader::tensor_store::TensorStore;

/// Model generation, recognised from tensor names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    Sd1,
    Sd2,
    Sdxl,
}

/// What the UNet predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PredictionType {
    /// The added noise (SD 1.x, SD 2.x base, SDXL).
    Eps,
    /// v = alpha * eps - sigma * x0 (SD 2.x 768-v).
    V,
}

/// How the UNet's attention layers split channels into heads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnetHeads {
    /// The same number of heads at every level (LDM `num_heads`; SD 1.x: 8).
    Count(usize),
    /// A fixed head width (LDM `num_head_channels`; SD 2.x / SDXL: 64).
    HeadDim(usize),
    /// A head count per resolution level, the middle block taking the last (diffusers'
    /// `attention_head_dim` / `num_attention_heads` lists).
    PerLevel(Vec<usize>),
}

impl UnetHeads {
    /// Heads of the attention at `level` (0 = full resolution) with `channels` channels.
    pub fn heads_at(&self, level: usize, channels: usize) -> usize {
        match self {
            UnetHeads::Count(n) => *n,
            UnetHeads::HeadDim(d) => channels / (*d).max(1),
            UnetHeads::PerLevel(list) => list.get(level).or(list.last()).copied().unwrap_or(0),
        }
    }
}

/// LDM `UNetModel` hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct UnetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub model_channels: usize,
    /// Width of the time embedding MLP (4 x model_channels in SD).
    pub time_embed_dim: usize,
    /// Channel multiplier per level (level count = `channel_mult.len()`).
    pub channel_mult: Vec<usize>,
    /// ResBlocks per level on the way down (the way up has one more).
    pub num_res_blocks: Vec<usize>,
    /// SpatialTransformer depth per level; 0 = no attention at that level.
    pub transformer_depth: Vec<usize>,
    /// Depth of the middle block's SpatialTransformer.
    pub transformer_depth_middle: usize,
    /// Cross-attention context width (CLIP hidden size).
    pub context_dim: usize,
    /// `proj_in`/`proj_out` are linear layers (SD 2.x, SDXL) instead of 1x1 convolutions.
    pub use_linear_proj: bool,
    pub heads: UnetHeads,
    /// Input width of SDXL's `label_emb` (pooled text + size conditioning); `None` for SD 1.x.
    pub adm_in_channels: Option<usize>,
}

impl UnetConfig {
    /// Infers the config from the `model.diffusion_model.*` tensors of `store`.
    pub fn infer(store: &TensorStore, heads: UnetHeads) -> Result<Self, EngineError> {
        let shape = |name: &str| store.require_shape(&format!("{UNET_PREFIX}{name}"));
        let has = |name: &str| store.contains(&format!("{UNET_PREFIX}{name}"));
        let conv_in = shape("input_blocks.0.0.weight")?;
        let (model_channels, in_channels) = (conv_in[0], conv_in[1]);
        let out_channels = shape("out.2.weight")?[0];
        let time_embed_dim = shape("time_embed.0.weight")?[0];

        // Walk input_blocks.1.. in order: ResBlocks fill the current level, a downsampler ends it.
        let mut levels: Vec<ScannedLevel> = vec![ScannedLevel::default()];
        for index in 1.. {
            let block = format!("input_blocks.{index}");
            let res_conv = format!("{block}.0.in_layers.2.weight");
            if has(&format!("{block}.0.op.weight")) {
                levels.push(ScannedLevel::default());
            } else if has(&res_conv) {
                let depth = count_indexed(store, &format!("{UNET_PREFIX}{block}.1.transformer_blocks."));
                let channels = shape(&res_conv)?[0];
                if let Some(level) = levels.last_mut() {
                    level.channels = channels;
                    level.res_blocks += 1;
                    level.depth = level.depth.max(depth);
                }
            } else {
                break;
            }
        }
        let mut channel_mult = Vec::with_capacity(levels.len());
        for (i, level) in levels.iter().enumerate() {
            if level.res_blocks == 0 || model_channels == 0 || !level.channels.is_multiple_of(model_channels) {
                return Err(EngineError::Unsupported(format!(
                    "UNet level {i} has {} res blocks of {} channels (model_channels {model_channels})",
                    level.res_blocks, level.channels
                )));
            }
            channel_mult.push(level.channels / model_channels);
        }
        let num_res_blocks = levels.iter().map(|l| l.res_blocks).collect();
        let transformer_depth = levels.iter().map(|l| l.depth).collect();
        let transformer_depth_middle =
            count_indexed(store, &format!("{UNET_PREFIX}middle_block.1.transformer_blocks."));

        // Context width and projection kind, from the first SpatialTransformer found.
        let transformer = store
            .names()
            .filter(|n| n.starts_with(UNET_PREFIX) && n.ends_with(".transformer_blocks.0.attn2.to_k.weight"))
            .min()
            .map(|n| n.trim_end_matches(".transformer_blocks.0.attn2.to_k.weight").to_string())
            .ok_or_else(|| EngineError::Unsupported("UNet without cross-attention".into()))?;
        let context_dim = store.require_shape(&format!("{transformer}.transformer_blocks.0.attn2.to_k.weight"))?[1];
        let use_linear_proj = store.require_shape(&format!("{transformer}.proj_in.weight"))?.len() == 2;
        let adm_in_channels = store.shape(&format!("{UNET_PREFIX}label_emb.0.0.weight")).map(|s| s[1]);

        Ok(Self {
            in_channels,
            out_channels,
            model_channels,
            time_embed_dim,
            channel_mult,
            num_res_blocks,
            transformer_depth,
            transformer_depth_middle,
            context_dim,
            use_linear_proj,
            heads,
            adm_in_channels,
        })
    }
}

impl UnetConfig {
    /// The head count at each resolution level (the middle block uses the last): what the
    /// different ways of stating heads (count, width, per-level list) amount to for this UNet.
    pub fn level_heads(&self) -> Vec<usize> {
        (0..self.channel_mult.len())
            .map(|level| self.heads.heads_at(level, self.model_channels * self.channel_mult[level]))
            .collect()
    }

    /// Every attention layer must split its channels into whole heads.
    pub fn check_heads(&self) -> Result<(), EngineError> {
        let levels = self.channel_mult.len();
        let attention_levels = (0..levels)
            .filter(|&l| self.transformer_depth[l] > 0)
            .chain((self.transformer_depth_middle > 0).then_some(levels.saturating_sub(1)));
        for level in attention_levels {
            let channels = self.model_channels * self.channel_mult[level];
            let heads = self.heads.heads_at(level, channels);
            if heads == 0 || !channels.is_multiple_of(heads) {
                return Err(EngineError::Unsupported(format!(
                    "UNet attention at level {level} has {channels} channels, which {:?} does not split into whole heads; ship the model's config (diffusers unet/config.json or <checkpoint>.yaml)",
                    self.heads
                )));
            }
        }
        Ok(())
    }
}

/// One resolution level of the input blocks, as found while scanning tensor names.
#[derive(Default)]
struct ScannedLevel {
    channels: usize,
    res_blocks: usize,
    depth: usize,
}

/// Number of consecutive indices `i = 0, 1, …` with some tensor named `{prefix}{i}.…`.
fn count_indexed(store: &TensorStore, prefix: &str) -> usize {
    let mut present = std::collections::BTreeSet::new();
    for name in store.names() {
        if let Some(i) =
            name.strip_prefix(prefix).and_then(|r| r.split('.').next()).and_then(|s| s.parse::<usize>().ok())
        {
            present.insert(i);
        }
    }
    (0..).take_while(|i| present.contains(i)).count()
}

/// LDM `AutoencoderKL` hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Base width `ch`.
    pub ch: usize,
    /// Width multiplier per level; `len() - 1` downsamplings.
    pub ch_mult: Vec<usize>,
    /// ResnetBlocks per encoder level (the decoder has one more).
    pub num_res_blocks: usize,
    pub z_channels: usize,
    /// Latent channels after `quant_conv` (the UNet's input width).
    pub embed_dim: usize,
    /// Latent scale factor (`0.18215` SD 1/2, `0.13025` SDXL).
    pub scale_factor: f64,
}

impl VaeConfig {
    pub fn infer(store: &TensorStore, scale_factor: f64) -> Result<Self, EngineError> {
        let shape = |name: &str| store.require_shape(&format!("{VAE_PREFIX}{name}"));
        let conv_in = shape("encoder.conv_in.weight")?;
        let (ch, in_channels) = (conv_in[0], conv_in[1]);
        let levels = count_indexed(store, &format!("{VAE_PREFIX}encoder.down."));
        let num_res_blocks = count_indexed(store, &format!("{VAE_PREFIX}encoder.down.0.block."));
        if levels == 0 || num_res_blocks == 0 || ch == 0 {
            return Err(EngineError::MissingTensor(format!("{VAE_PREFIX}encoder.down.0.block.0.conv1.weight")));
        }
        let mut ch_mult = Vec::with_capacity(levels);
        for level in 0..levels {
            let width = shape(&format!("encoder.down.{level}.block.0.conv2.weight"))?[0];
            ch_mult.push(width / ch);
        }
        let has_level_attention = store.names().any(|n| {
            n.starts_with(VAE_PREFIX)
                && (n.contains(".attn.") && (n.contains("coder.down.") || n.contains("coder.up.")))
        });
        if has_level_attention {
            return Err(EngineError::Unsupported("VAE with attention inside its resolution levels".into()));
        }
        Ok(Self {
            in_channels,
            out_channels: shape("decoder.conv_out.weight")?[0],
            ch,
            ch_mult,
            num_res_blocks,
            z_channels: shape("decoder.conv_in.weight")?[1],
            embed_dim: shape("post_quant_conv.weight")?[0],
            scale_factor,
        })
    }
}

/// Activation of the CLIP MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP, SD 1.x).
    QuickGelu,
    /// Exact erf GELU (OpenCLIP, SD 2.x / SDXL's second encoder).
    Gelu,
}

/// CLIP text transformer hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_positions: usize,
    pub activation: ClipActivation,
    pub layer_norm_eps: f64,
}

impl ClipConfig {
    /// Every published CLIP text encoder (L/14: 768 wide, OpenCLIP H: 1024, bigG: 1280) uses
    /// 64-wide heads; that is the default when no config names the head count.
    pub const PUBLISHED_HEAD_DIM: usize = 64;

    /// Infers a text tower stored in transformers naming under `prefix` (`…text_model.`).
    /// `heads`: from the shipped config; `None` takes the published 64-wide heads, and a width
    /// that does not divide into them is an error asking for the config.
    pub fn infer_at(
        store: &TensorStore,
        prefix: &str,
        activation: ClipActivation,
        heads: Option<usize>,
    ) -> Result<Self, EngineError> {
        let shape = |name: &str| store.require_shape(&format!("{prefix}{name}"));
        let token = shape("embeddings.token_embedding.weight")?;
        let (vocab_size, hidden_size) = (token[0], token[1]);
        let num_layers = count_indexed(store, &format!("{prefix}encoder.layers."));
        if num_layers == 0 {
            return Err(EngineError::MissingTensor(format!("{prefix}encoder.layers.0.layer_norm1.weight")));
        }
        let num_heads = match heads {
            Some(n) => n,
            None if hidden_size.is_multiple_of(Self::PUBLISHED_HEAD_DIM) => hidden_size / Self::PUBLISHED_HEAD_DIM,
            None => {
                return Err(EngineError::Unsupported(format!(
                    "the text encoder at {prefix} is {hidden_size} wide, not a multiple of the published 64-wide heads, and no config names its attention heads; ship the model's config (diffusers text_encoder/config.json, or an `arch: {{num_attention_heads: N}}` entry in <checkpoint>.yaml)"
                )));
            }
        };
        if num_heads == 0 || !hidden_size.is_multiple_of(num_heads) {
            return Err(EngineError::Unsupported(format!(
                "the text encoder at {prefix} is {hidden_size} wide, which does not split into {num_heads} heads"
            )));
        }
        Ok(Self {
            vocab_size,
            hidden_size,
            num_layers,
            num_heads,
            intermediate_size: shape("encoder.layers.0.mlp.fc1.weight")?[0],
            max_positions: shape("embeddings.position_embedding.weight")?[0],
            activation,
            layer_norm_eps: 1e-5,
        })
    }
}
