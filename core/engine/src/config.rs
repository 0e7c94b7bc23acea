//! Architecture configs of the three networks, inferred from tensor shapes.
//!
//! Everything is read from the canonical (LDM) tensor names of a [`TensorStore`]; nothing is
//! guessed from file names. The only facts shapes cannot tell are the attention head counts,
//! fixed per model family (see [`UnetHeads`] and [`ClipConfig::heads_for_width`]).

use crate::EngineError;
use crate::loader::diffusers_names::{CLIP_PREFIX, UNET_PREFIX, VAE_PREFIX};
use crate::loader::tensor_store::TensorStore;

/// How the UNet's attention layers split channels into heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnetHeads {
    /// The same number of heads at every level (SD 1.x: 8).
    Count(usize),
    /// A fixed head size (SD 2.x / SDXL: 64).
    HeadDim(usize),
    /// `head_dim`-wide heads where the channels are a multiple of it (every real SD 2.x / SDXL
    /// level: 320, 640, 1280 with 64), else `narrow_head_dim`-wide heads (test models narrower
    /// than 64 channels; the parity fixtures use 16: 32 channels = 2 heads).
    HeadDimOr {
        head_dim: usize,
        narrow_head_dim: usize,
    },
}

impl UnetHeads {
    pub fn heads_for(&self, channels: usize) -> usize {
        match *self {
            UnetHeads::Count(n) => n,
            UnetHeads::HeadDim(d) => (channels / d).max(1),
            UnetHeads::HeadDimOr {
                head_dim,
                narrow_head_dim,
            } => {
                if head_dim > 0 && channels >= head_dim && channels.is_multiple_of(head_dim) {
                    channels / head_dim
                } else {
                    (channels / narrow_head_dim.max(1)).max(1)
                }
            }
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
                let depth = count_indexed(
                    store,
                    &format!("{UNET_PREFIX}{block}.1.transformer_blocks."),
                );
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
            if level.res_blocks == 0
                || model_channels == 0
                || !level.channels.is_multiple_of(model_channels)
            {
                return Err(EngineError::Unsupported(format!(
                    "UNet level {i} has {} res blocks of {} channels (model_channels {model_channels})",
                    level.res_blocks, level.channels
                )));
            }
            channel_mult.push(level.channels / model_channels);
        }
        let num_res_blocks = levels.iter().map(|l| l.res_blocks).collect();
        let transformer_depth = levels.iter().map(|l| l.depth).collect();
        let transformer_depth_middle = count_indexed(
            store,
            &format!("{UNET_PREFIX}middle_block.1.transformer_blocks."),
        );

        // Context width and projection kind, from the first SpatialTransformer found.
        let transformer = store
            .names()
            .filter(|n| {
                n.starts_with(UNET_PREFIX) && n.ends_with(".transformer_blocks.0.attn2.to_k.weight")
            })
            .min()
            .map(|n| {
                n.trim_end_matches(".transformer_blocks.0.attn2.to_k.weight")
                    .to_string()
            })
            .ok_or_else(|| EngineError::Unsupported("UNet without cross-attention".into()))?;
        let context_dim = store.require_shape(&format!(
            "{transformer}.transformer_blocks.0.attn2.to_k.weight"
        ))?[1];
        let use_linear_proj = store
            .require_shape(&format!("{transformer}.proj_in.weight"))?
            .len()
            == 2;
        let adm_in_channels = store
            .shape(&format!("{UNET_PREFIX}label_emb.0.0.weight"))
            .map(|s| s[1]);

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
        if let Some(i) = name
            .strip_prefix(prefix)
            .and_then(|r| r.split('.').next())
            .and_then(|s| s.parse::<usize>().ok())
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
            return Err(EngineError::MissingTensor(format!(
                "{VAE_PREFIX}encoder.down.0.block.0.conv1.weight"
            )));
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
            return Err(EngineError::Unsupported(
                "VAE with attention inside its resolution levels".into(),
            ));
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
    /// Heads are not visible in the weights: real CLIP text encoders (L/14: 768, OpenCLIP H: 1024,
    /// bigG: 1280) all use 64-wide heads; narrower test models use 8-wide heads with at least 2
    /// heads (the tiny fixtures: width 32 → 4 heads, 24 → 3, 16 → 2, 8 → 2).
    pub fn heads_for_width(hidden: usize) -> usize {
        if hidden >= 64 && hidden.is_multiple_of(64) {
            hidden / 64
        } else if hidden >= 2 && hidden.is_multiple_of(2) {
            (hidden / 8).max(2)
        } else {
            1
        }
    }

    /// Infers the SD 1.x text encoder (`cond_stage_model.transformer.text_model.*`).
    pub fn infer(store: &TensorStore, activation: ClipActivation) -> Result<Self, EngineError> {
        Self::infer_at(store, CLIP_PREFIX, activation)
    }

    /// Infers a text tower stored in transformers naming under `prefix` (`…text_model.`).
    pub fn infer_at(
        store: &TensorStore,
        prefix: &str,
        activation: ClipActivation,
    ) -> Result<Self, EngineError> {
        let shape = |name: &str| store.require_shape(&format!("{prefix}{name}"));
        let token = shape("embeddings.token_embedding.weight")?;
        let (vocab_size, hidden_size) = (token[0], token[1]);
        let num_layers = count_indexed(store, &format!("{prefix}encoder.layers."));
        if num_layers == 0 {
            return Err(EngineError::MissingTensor(format!(
                "{prefix}encoder.layers.0.layer_norm1.weight"
            )));
        }
        Ok(Self {
            vocab_size,
            hidden_size,
            num_layers,
            num_heads: Self::heads_for_width(hidden_size),
            intermediate_size: shape("encoder.layers.0.mlp.fc1.weight")?[0],
            max_positions: shape("embeddings.position_embedding.weight")?[0],
            activation,
            layer_norm_eps: 1e-5,
        })
    }
}
