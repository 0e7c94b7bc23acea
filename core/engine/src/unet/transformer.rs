//! LDM `SpatialTransformer`: GroupNorm, proj_in, BasicTransformerBlocks over the h*w tokens
//! (self-attention, cross-attention on the text context, GEGLU feed-forward), proj_out, residual.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, LayerNorm, Linear, VarBuilder};

use crate::attention::multi_head_attention;
use crate::norm::GroupNorm32;

struct CrossAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl CrossAttention {
    fn new(dim: usize, context_dim: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            to_q: candle_nn::linear_no_bias(dim, dim, vb.pp("to_q"))?,
            to_k: candle_nn::linear_no_bias(context_dim, dim, vb.pp("to_k"))?,
            to_v: candle_nn::linear_no_bias(context_dim, dim, vb.pp("to_v"))?,
            to_out: candle_nn::linear(dim, dim, vb.pp("to_out.0"))?,
            heads,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        self.to_out.forward(&multi_head_attention(&q, &k, &v, self.heads, None)?)
    }
}

/// `GEGLU` projection followed by the output linear layer.
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let inner = 4 * dim;
        Ok(Self {
            proj: candle_nn::linear(dim, inner * 2, vb.pp("net.0.proj"))?,
            out: candle_nn::linear(inner, dim, vb.pp("net.2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(x)?;
        let halves = h.chunk(2, candle_core::D::Minus1)?;
        self.out.forward(&(&halves[0] * halves[1].gelu_erf()?)?)
    }
}

struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: CrossAttention,
    norm2: LayerNorm,
    attn2: CrossAttention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(dim: usize, context_dim: usize, heads: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm1"))?,
            attn1: CrossAttention::new(dim, dim, heads, vb.pp("attn1"))?,
            norm2: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm2"))?,
            attn2: CrossAttention::new(dim, context_dim, heads, vb.pp("attn2"))?,
            norm3: candle_nn::layer_norm(dim, 1e-5, vb.pp("norm3"))?,
            ff: FeedForward::new(dim, vb.pp("ff"))?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let h = self.norm1.forward(x)?;
        let x = (self.attn1.forward(&h, &h)? + x)?;
        let x = (self.attn2.forward(&self.norm2.forward(&x)?, context)? + x)?;
        self.ff.forward(&self.norm3.forward(&x)?)? + x
    }
}

/// 1x1 convolution (SD 1.x) or linear layer (SD 2.x, SDXL) around the transformer blocks.
enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

pub struct SpatialTransformer {
    norm: GroupNorm32,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl SpatialTransformer {
    pub fn new(
        channels: usize,
        depth: usize,
        context_dim: usize,
        heads: usize,
        linear_proj: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let projection = |name: &str| -> Result<Projection> {
            Ok(if linear_proj {
                Projection::Linear(candle_nn::linear(channels, channels, vb.pp(name))?)
            } else {
                Projection::Conv(candle_nn::conv2d(channels, channels, 1, Default::default(), vb.pp(name))?)
            })
        };
        let blocks = (0..depth)
            .map(|i| BasicTransformerBlock::new(channels, context_dim, heads, vb.pp("transformer_blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm32::new(32, channels, 1e-6, vb.pp("norm"))?,
            proj_in: projection("proj_in")?,
            blocks,
            proj_out: projection("proj_out")?,
        })
    }

    /// `x`: (B, C, H, W), `context`: (B, T, context_dim).
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let to_tokens = |t: &Tensor| t.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous();
        let to_image = |t: &Tensor| t.transpose(1, 2)?.reshape((b, c, h, w));
        let normed = self.norm.forward(x)?;
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(&crate::conv::forward(conv, &normed)?)?,
            Projection::Linear(linear) => linear.forward(&to_tokens(&normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let out = match &self.proj_out {
            Projection::Conv(conv) => crate::conv::forward(conv, &to_image(&tokens)?.contiguous()?)?,
            Projection::Linear(linear) => to_image(&linear.forward(&tokens)?)?,
        };
        out + x
    }
}
