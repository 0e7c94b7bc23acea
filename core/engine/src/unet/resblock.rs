//! LDM `ResBlock`: two GroupNorm-SiLU-conv stages with the time embedding added in between.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder};

use crate::conv;
use crate::norm::GroupNorm32;

const GROUPS: usize = 32;
const EPS: f64 = 1e-5;

pub struct ResBlock {
    in_norm: GroupNorm32,
    in_conv: Conv2d,
    emb_proj: Linear,
    out_norm: GroupNorm32,
    out_conv: Conv2d,
    /// 1x1 conv when the width changes (LDM uses an identity otherwise).
    skip: Option<Conv2d>,
}

impl ResBlock {
    pub fn new(in_ch: usize, out_ch: usize, emb_dim: usize, vb: VarBuilder) -> Result<Self> {
        let pad1 = Conv2dConfig { padding: 1, ..Default::default() };
        let skip = if in_ch == out_ch {
            None
        } else {
            Some(candle_nn::conv2d(in_ch, out_ch, 1, Default::default(), vb.pp("skip_connection"))?)
        };
        Ok(Self {
            in_norm: GroupNorm32::new(GROUPS, in_ch, EPS, vb.pp("in_layers.0"))?,
            in_conv: candle_nn::conv2d(in_ch, out_ch, 3, pad1, vb.pp("in_layers.2"))?,
            emb_proj: candle_nn::linear(emb_dim, out_ch, vb.pp("emb_layers.1"))?,
            out_norm: GroupNorm32::new(GROUPS, out_ch, EPS, vb.pp("out_layers.0"))?,
            out_conv: candle_nn::conv2d(out_ch, out_ch, 3, pad1, vb.pp("out_layers.3"))?,
            skip,
        })
    }

    /// `x`: (B, C_in, H, W), `emb`: (B, E) time embedding (before SiLU).
    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = conv::forward(&self.in_conv, &self.in_norm.forward(x)?.silu()?)?;
        let e = self.emb_proj.forward(&emb.silu()?)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = h.broadcast_add(&e)?;
        let h = conv::forward(&self.out_conv, &self.out_norm.forward(&h)?.silu()?)?;
        match &self.skip {
            Some(skip) => conv::forward(skip, x)? + h,
            None => x + h,
        }
    }
}
