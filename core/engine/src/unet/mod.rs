//! LDM `UNetModel` (openaimodel): the noise predictor `eps = unet(x, t, context)`.
//!
//! Why not `candle-transformers`' UNet: it is diffusers' `UNet2DConditionModel` (diffusers names,
//! diffusers' block layout), while A1111 checkpoints are LDM `openaimodel` trees, SDXL's `label_emb`
//! included; this file keeps LDM's layout so single files load without renaming and parity with
//! A1111's UNet outputs (≤ 2.2e-6) is checked on it directly.

mod resblock;
mod timestep;
mod transformer;

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};

use crate::config::UnetConfig;
use crate::conv;
use crate::norm::GroupNorm32;
pub use resblock::ResBlock;
pub use timestep::timestep_embedding;
pub use transformer::SpatialTransformer;

/// One layer of an LDM `TimestepEmbedSequential` block.
enum Layer {
    /// Plain 3x3 convolution (`conv_in`, the first input block).
    Conv(Conv2d),
    Res(ResBlock),
    Attention(SpatialTransformer),
    /// 3x3 conv, stride 2, padding 1 (`op`).
    Downsample(Conv2d),
    /// Nearest-neighbour upsampling to the next skip's size, then a 3x3 conv.
    Upsample(Conv2d),
}

/// One entry of `input_blocks` / `output_blocks` (layers applied in order).
struct Block(Vec<Layer>);

impl Block {
    fn forward(
        &self,
        x: &Tensor,
        emb: &Tensor,
        context: &Tensor,
        upsample_to: Option<(usize, usize)>,
    ) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in &self.0 {
            x = match layer {
                Layer::Conv(c) | Layer::Downsample(c) => conv::forward(c, &x)?,
                Layer::Res(res) => res.forward(&x, emb)?,
                Layer::Attention(attn) => attn.forward(&x, context)?,
                Layer::Upsample(c) => {
                    let (_, _, h, w) = x.dims4()?;
                    // x2 normally; odd latent sizes need the skip's size (e.g. 5 -> 9, not 10).
                    let (th, tw) = upsample_to.unwrap_or((2 * h, 2 * w));
                    conv::forward(c, &x.upsample_nearest2d(th, tw)?)?
                }
            };
        }
        Ok(x)
    }
}

/// SDXL's `label_emb`: Linear → SiLU → Linear from the "vector" (pooled text + size
/// embeddings) to the time-embedding width; its output is added to the time embedding.
struct LabelEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl LabelEmbedding {
    fn forward(&self, y: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(y)?.silu()?)
    }
}

pub struct UNetModel {
    config: UnetConfig,
    time_embed_1: Linear,
    time_embed_2: Linear,
    label_emb: Option<LabelEmbedding>,
    input_blocks: Vec<Block>,
    middle_block: Block,
    output_blocks: Vec<Block>,
    out_norm: GroupNorm32,
    out_conv: Conv2d,
}

impl UNetModel {
    /// Builds the network in openaimodel's construction order; `vb` points at
    /// `model.diffusion_model`.
    pub fn new(config: UnetConfig, vb: VarBuilder) -> Result<Self> {
        let cfg = &config;
        let pad1 = Conv2dConfig { padding: 1, ..Default::default() };
        let stride2 = Conv2dConfig { padding: 1, stride: 2, ..Default::default() };
        let emb_dim = cfg.time_embed_dim;
        let mc = cfg.model_channels;
        let levels = cfg.channel_mult.len();
        let attention = |level: usize, channels: usize, depth: usize, vb: VarBuilder| {
            SpatialTransformer::new(
                channels,
                depth,
                cfg.context_dim,
                cfg.heads.heads_at(level, channels),
                cfg.use_linear_proj,
                vb,
            )
        };

        let ib = vb.pp("input_blocks");
        let mut input_blocks =
            vec![Block(vec![Layer::Conv(candle_nn::conv2d(cfg.in_channels, mc, 3, pad1, ib.pp("0.0"))?)])];
        let mut skip_channels = vec![mc];
        let mut ch = mc;
        for level in 0..levels {
            let out_ch = mc * cfg.channel_mult[level];
            for _ in 0..cfg.num_res_blocks[level] {
                let vb = ib.pp(input_blocks.len());
                let mut layers = vec![Layer::Res(ResBlock::new(ch, out_ch, emb_dim, vb.pp("0"))?)];
                ch = out_ch;
                if cfg.transformer_depth[level] > 0 {
                    layers.push(Layer::Attention(attention(level, ch, cfg.transformer_depth[level], vb.pp("1"))?));
                }
                input_blocks.push(Block(layers));
                skip_channels.push(ch);
            }
            if level + 1 != levels {
                let vb = ib.pp(input_blocks.len()).pp("0.op");
                input_blocks.push(Block(vec![Layer::Downsample(candle_nn::conv2d(ch, ch, 3, stride2, vb)?)]));
                skip_channels.push(ch);
            }
        }

        let mb = vb.pp("middle_block");
        let middle_block = Block(vec![
            Layer::Res(ResBlock::new(ch, ch, emb_dim, mb.pp("0"))?),
            Layer::Attention(attention(levels - 1, ch, cfg.transformer_depth_middle, mb.pp("1"))?),
            Layer::Res(ResBlock::new(ch, ch, emb_dim, mb.pp("2"))?),
        ]);

        let ob = vb.pp("output_blocks");
        let mut output_blocks = Vec::new();
        for level in (0..levels).rev() {
            let out_ch = mc * cfg.channel_mult[level];
            for i in 0..=cfg.num_res_blocks[level] {
                let vb = ob.pp(output_blocks.len());
                let skip = skip_channels.pop().ok_or_else(|| candle_core::Error::Msg("UNet skip underflow".into()))?;
                let mut layers = vec![Layer::Res(ResBlock::new(ch + skip, out_ch, emb_dim, vb.pp("0"))?)];
                ch = out_ch;
                if cfg.transformer_depth[level] > 0 {
                    layers.push(Layer::Attention(attention(level, ch, cfg.transformer_depth[level], vb.pp("1"))?));
                }
                if level > 0 && i == cfg.num_res_blocks[level] {
                    let conv = candle_nn::conv2d(ch, ch, 3, pad1, vb.pp(layers.len()).pp("conv"))?;
                    layers.push(Layer::Upsample(conv));
                }
                output_blocks.push(Block(layers));
            }
        }

        let label_emb = match cfg.adm_in_channels {
            Some(adm) => Some(LabelEmbedding {
                linear_1: candle_nn::linear(adm, emb_dim, vb.pp("label_emb.0.0"))?,
                linear_2: candle_nn::linear(emb_dim, emb_dim, vb.pp("label_emb.0.2"))?,
            }),
            None => None,
        };

        Ok(Self {
            label_emb,
            time_embed_1: candle_nn::linear(mc, emb_dim, vb.pp("time_embed.0"))?,
            time_embed_2: candle_nn::linear(emb_dim, emb_dim, vb.pp("time_embed.2"))?,
            input_blocks,
            middle_block,
            output_blocks,
            out_norm: GroupNorm32::new(32, ch, 1e-5, vb.pp("out.0"))?,
            out_conv: candle_nn::conv2d(ch, cfg.out_channels, 3, pad1, vb.pp("out.2"))?,
            config,
        })
    }

    pub fn config(&self) -> &UnetConfig {
        &self.config
    }

    /// `x`: (B, in_channels, h, w) already scaled by c_in; `t`: (B,) continuous timesteps (f32);
    /// `context`: (B, T, context_dim). Returns the model output (eps, or v for v-prediction
    /// models). SDXL UNets need the vector: use [`Self::forward_with_vector`].
    pub fn forward(&self, x: &Tensor, t: &Tensor, context: &Tensor) -> Result<Tensor> {
        self.forward_with_vector(x, t, context, None)
    }

    /// Whether this UNet takes SDXL's `y` vector (it has a `label_emb`).
    pub fn needs_vector(&self) -> bool {
        self.label_emb.is_some()
    }

    /// [`Self::forward`] with SDXL's `y`: (B, adm_in_channels), required exactly when the UNet
    /// has a `label_emb` (sgm asserts the same).
    pub fn forward_with_vector(&self, x: &Tensor, t: &Tensor, context: &Tensor, y: Option<&Tensor>) -> Result<Tensor> {
        let dtype = x.dtype();
        let t_emb = timestep_embedding(t, self.config.model_channels, 10000.0, x.device())?.to_dtype(dtype)?;
        let mut emb = self.time_embed_2.forward(&self.time_embed_1.forward(&t_emb)?.silu()?)?;
        match (&self.label_emb, y) {
            (Some(label_emb), Some(y)) => {
                emb = (emb + label_emb.forward(&y.to_dtype(dtype)?)?)?;
            }
            (None, None) => {}
            (Some(_), None) => candle_core::bail!("this UNet (SDXL) needs the `y` vector"),
            (None, Some(_)) => candle_core::bail!("this UNet takes no `y` vector (not SDXL)"),
        }
        let context = context.to_dtype(dtype)?;

        let mut skips = Vec::with_capacity(self.input_blocks.len());
        let mut h = x.clone();
        for block in &self.input_blocks {
            h = block.forward(&h, &emb, &context, None)?;
            skips.push(h.clone());
        }
        h = self.middle_block.forward(&h, &emb, &context, None)?;
        for block in &self.output_blocks {
            let skip = skips.pop().ok_or_else(|| candle_core::Error::Msg("UNet skip underflow".into()))?;
            h = Tensor::cat(&[&h, &skip], 1)?;
            let upsample_to = skips.last().map(|s| s.dims4()).transpose()?.map(|(_, _, sh, sw)| (sh, sw));
            h = block.forward(&h, &emb, &context, upsample_to)?;
        }
        conv::forward(&self.out_conv, &self.out_norm.forward(&h)?.silu()?)
    }
}
