//! LDM `AutoencoderKL`: the encoder (pixels → latent posterior mean) and decoder.
//!
//! Why not `candle-transformers`' VAE: it follows diffusers' module tree and names, while every
//! checkpoint here is addressed by LDM names (A1111's single-file keys; diffusers folders are
//! renamed onto them by the loader). Using it would need the opposite renaming for every tensor and
//! a new parity proof; this module matches A1111's decoded pixels within one level (docs/parity.md).

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use crate::conv;
use crate::fused::{Residual, norm_silu_conv};

use crate::attention::multi_head_attention;
use crate::config::VaeConfig;
use crate::norm::GroupNorm32;

const GROUPS: usize = 32;
const EPS: f64 = 1e-6;

fn conv3(in_ch: usize, out_ch: usize, vb: VarBuilder) -> Result<Conv2d> {
    candle_nn::conv2d(in_ch, out_ch, 3, Conv2dConfig { padding: 1, ..Default::default() }, vb)
}

fn conv1(in_ch: usize, out_ch: usize, vb: VarBuilder) -> Result<Conv2d> {
    candle_nn::conv2d(in_ch, out_ch, 1, Default::default(), vb)
}

/// LDM `ResnetBlock` without time embedding.
struct ResnetBlock {
    norm1: GroupNorm32,
    conv1: Conv2d,
    norm2: GroupNorm32,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    fn new(in_ch: usize, out_ch: usize, vb: VarBuilder) -> Result<Self> {
        let nin_shortcut = if in_ch == out_ch { None } else { Some(conv1(in_ch, out_ch, vb.pp("nin_shortcut"))?) };
        Ok(Self {
            norm1: GroupNorm32::new(GROUPS, in_ch, EPS, vb.pp("norm1"))?,
            conv1: conv3(in_ch, out_ch, vb.pp("conv1"))?,
            norm2: GroupNorm32::new(GROUPS, out_ch, EPS, vb.pp("norm2"))?,
            conv2: conv3(out_ch, out_ch, vb.pp("conv2"))?,
            nin_shortcut,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = norm_silu_conv(&self.norm1, &self.conv1, x, Residual::None)?;
        let skip = match &self.nin_shortcut {
            Some(shortcut) => Residual::Projected(shortcut, x),
            None => Residual::Identity(x),
        };
        norm_silu_conv(&self.norm2, &self.conv2, &h, skip)
    }
}

/// Single-head self-attention over all pixels (`AttnBlock`); q/k/v/proj_out are 1x1 convs
/// (diffusers' linear weights are reshaped to that form by the tensor store).
struct AttnBlock {
    norm: GroupNorm32,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    fn new(ch: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm32::new(GROUPS, ch, EPS, vb.pp("norm"))?,
            q: conv1(ch, ch, vb.pp("q"))?,
            k: conv1(ch, ch, vb.pp("k"))?,
            v: conv1(ch, ch, vb.pp("v"))?,
            proj_out: conv1(ch, ch, vb.pp("proj_out"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let tokens = |t: Tensor| t.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous();
        let q = tokens(conv::forward(&self.q, &normed)?)?;
        let k = tokens(conv::forward(&self.k, &normed)?)?;
        let v = tokens(conv::forward(&self.v, &normed)?)?;
        let out = multi_head_attention(&q, &k, &v, 1, None)?;
        let out = out.transpose(1, 2)?.reshape((b, c, h, w))?;
        x + conv::forward(&self.proj_out, &out)?
    }
}

/// The mid section shared by encoder and decoder: resnet, attention, resnet.
struct MidBlock {
    block_1: ResnetBlock,
    attn_1: AttnBlock,
    block_2: ResnetBlock,
}

impl MidBlock {
    fn new(ch: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            block_1: ResnetBlock::new(ch, ch, vb.pp("block_1"))?,
            attn_1: AttnBlock::new(ch, vb.pp("attn_1"))?,
            block_2: ResnetBlock::new(ch, ch, vb.pp("block_2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.block_2.forward(&self.attn_1.forward(&self.block_1.forward(x)?)?)
    }
}

struct EncoderLevel {
    blocks: Vec<ResnetBlock>,
    /// Stride-2 conv after zero padding right and bottom only (LDM `Downsample`).
    downsample: Option<Conv2d>,
}

struct Encoder {
    conv_in: Conv2d,
    levels: Vec<EncoderLevel>,
    mid: MidBlock,
    norm_out: GroupNorm32,
    conv_out: Conv2d,
}

impl Encoder {
    fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let mut levels = Vec::new();
        let mut ch = cfg.ch;
        for (i, mult) in cfg.ch_mult.iter().enumerate() {
            let vb = vb.pp("down").pp(i);
            let out_ch = cfg.ch * mult;
            let mut blocks = Vec::new();
            for j in 0..cfg.num_res_blocks {
                blocks.push(ResnetBlock::new(ch, out_ch, vb.pp("block").pp(j))?);
                ch = out_ch;
            }
            let downsample = if i + 1 != cfg.ch_mult.len() {
                let stride2 = Conv2dConfig { stride: 2, ..Default::default() };
                Some(candle_nn::conv2d(ch, ch, 3, stride2, vb.pp("downsample.conv"))?)
            } else {
                None
            };
            levels.push(EncoderLevel { blocks, downsample });
        }
        Ok(Self {
            conv_in: conv3(cfg.in_channels, cfg.ch, vb.pp("conv_in"))?,
            levels,
            mid: MidBlock::new(ch, vb.pp("mid"))?,
            norm_out: GroupNorm32::new(GROUPS, ch, EPS, vb.pp("norm_out"))?,
            conv_out: conv3(ch, 2 * cfg.z_channels, vb.pp("conv_out"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = conv::forward(&self.conv_in, x)?;
        for level in &self.levels {
            for block in &level.blocks {
                h = block.forward(&h)?;
            }
            if let Some(conv) = &level.downsample {
                h = conv::forward(conv, &h.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?)?;
            }
        }
        let h = self.mid.forward(&h)?;
        norm_silu_conv(&self.norm_out, &self.conv_out, &h, Residual::None)
    }
}

struct DecoderLevel {
    blocks: Vec<ResnetBlock>,
    /// Nearest x2 then a 3x3 conv (LDM `Upsample`).
    upsample: Option<Conv2d>,
}

struct Decoder {
    conv_in: Conv2d,
    mid: MidBlock,
    /// Indexed like LDM's `up.{i}`: level 0 is the highest resolution (run last).
    levels: Vec<DecoderLevel>,
    norm_out: GroupNorm32,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(cfg: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let top = cfg.ch * cfg.ch_mult.last().copied().unwrap_or(1);
        let mut ch = top;
        let mut levels: Vec<DecoderLevel> = Vec::new();
        for i in (0..cfg.ch_mult.len()).rev() {
            let vb = vb.pp("up").pp(i);
            let out_ch = cfg.ch * cfg.ch_mult[i];
            let mut blocks = Vec::new();
            for j in 0..=cfg.num_res_blocks {
                blocks.push(ResnetBlock::new(ch, out_ch, vb.pp("block").pp(j))?);
                ch = out_ch;
            }
            let upsample = if i != 0 { Some(conv3(ch, ch, vb.pp("upsample.conv"))?) } else { None };
            levels.push(DecoderLevel { blocks, upsample });
        }
        levels.reverse();
        Ok(Self {
            conv_in: conv3(cfg.z_channels, top, vb.pp("conv_in"))?,
            mid: MidBlock::new(top, vb.pp("mid"))?,
            levels,
            norm_out: GroupNorm32::new(GROUPS, ch, EPS, vb.pp("norm_out"))?,
            conv_out: conv3(ch, cfg.out_channels, vb.pp("conv_out"))?,
        })
    }

    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.mid.forward(&conv::forward(&self.conv_in, z)?)?;
        for level in self.levels.iter().rev() {
            for block in &level.blocks {
                h = block.forward(&h)?;
            }
            if let Some(conv) = &level.upsample {
                h = conv::forward_upsampled_2x(conv, &h)?;
            }
        }
        norm_silu_conv(&self.norm_out, &self.conv_out, &h, Residual::None)
    }
}

pub struct AutoencoderKl {
    config: VaeConfig,
    encoder: Encoder,
    decoder: Decoder,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
}

impl AutoencoderKl {
    /// `vb` points at `first_stage_model`.
    pub fn new(config: VaeConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            encoder: Encoder::new(&config, vb.pp("encoder"))?,
            decoder: Decoder::new(&config, vb.pp("decoder"))?,
            quant_conv: conv1(2 * config.z_channels, 2 * config.embed_dim, vb.pp("quant_conv"))?,
            post_quant_conv: conv1(config.embed_dim, config.z_channels, vb.pp("post_quant_conv"))?,
            config,
        })
    }

    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// A1111's `decode_first_stage`: `decoder(post_quant_conv(latent / scale_factor))`.
    /// (B, embed_dim, h, w) → (B, 3, 8h, 8w), nominally in [-1, 1].
    pub fn decode(&self, latent: &Tensor) -> Result<Tensor> {
        let z = (latent * (1.0 / self.config.scale_factor))?;
        self.decoder.forward(&conv::forward(&self.post_quant_conv, &z)?)
    }

    /// Pixels in [-1, 1], (B, 3, H, W) → posterior mean x scale_factor, (B, embed_dim, H/8, W/8).
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let moments = conv::forward(&self.quant_conv, &self.encoder.forward(pixels)?)?;
        let mean = moments.narrow(1, 0, self.config.embed_dim)?;
        mean * self.config.scale_factor
    }
}

/// One decoded image (3, H, W) → RGB8 bytes in HWC order, as A1111 converts it:
/// `clamp((x + 1) / 2, 0, 1)`, then `floor(255 x)` in f32.
pub fn to_rgb8(decoded: &Tensor) -> Result<Vec<u8>> {
    let x = ((decoded.to_dtype(DType::F32)? + 1.0)? / 2.0)?.clamp(0f32, 1f32)?;
    let x = (x * 255.0)?.floor()?;
    let hwc = x.permute((1, 2, 0))?.flatten_all()?.to_vec1::<f32>()?;
    Ok(hwc.into_iter().map(|v| v as u8).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn rgb8_conversion_clamps_truncates_and_interleaves() -> Result<()> {
        // (3 channels, 1 row, 4 pixels). Expected bytes by hand from floor(255 * clamp((x+1)/2, 0, 1)):
        // ch0: -1 -> 0, 1 -> 255, 0 -> floor(127.5) = 127, 2 -> 255 (clamped)
        // ch1: -3 -> 0 (clamped), 0.5 -> floor(191.25) = 191, -0.999 -> floor(0.1275) = 0, 0.99 -> floor(253.725) = 253
        // ch2: 0.1 -> floor(140.25) = 140, -0.1 -> floor(114.75) = 114, 0.25 -> floor(159.375) = 159, -0.5 -> floor(63.75) = 63
        let values = [-1.0f32, 1.0, 0.0, 2.0, -3.0, 0.5, -0.999, 0.99, 0.1, -0.1, 0.25, -0.5];
        let t = Tensor::from_slice(&values, (3, 1, 4), &Device::Cpu)?;
        assert_eq!(to_rgb8(&t)?, vec![0, 0, 140, 255, 191, 114, 127, 0, 159, 255, 253, 63]);
        Ok(())
    }
}
