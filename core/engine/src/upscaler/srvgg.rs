//! SRVGGNetCompact (Real-ESRGAN's compact models, e.g. `realesr-general-x4v3`): a plain stack of
//! 3×3 convolutions with PReLU, a pixel shuffle, and the nearest-upsampled input added back.
//! Keys `body.{2k}` are the convolutions and `body.{2k+1}` the PReLU weights; the scale comes from
//! the last convolution's output channels (3·scale²).

use std::collections::HashMap;

use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig};

pub struct SrvggNet {
    convs: Vec<Conv2d>,
    /// PReLU weights, one per hidden convolution, shaped (1, C, 1, 1).
    prelus: Vec<Tensor>,
    pub scale: usize,
}

impl SrvggNet {
    /// `body.0` is a convolution and `body.1` a one-dimensional PReLU weight.
    pub fn matches(tensors: &HashMap<String, Tensor>) -> bool {
        tensors.get("body.0.weight").is_some_and(|t| t.rank() == 4)
            && tensors.get("body.1.weight").is_some_and(|t| t.rank() == 1)
    }

    pub fn from_tensors(t: HashMap<String, Tensor>) -> Result<Self> {
        let count = (0..).take_while(|i| t.contains_key(&format!("body.{i}.weight"))).count();
        let mut convs = Vec::new();
        let mut prelus = Vec::new();
        for i in 0..count {
            let weight = &t[&format!("body.{i}.weight")];
            if weight.rank() == 4 {
                let bias = t.get(&format!("body.{i}.bias")).cloned();
                convs.push(Conv2d::new(weight.clone(), bias, Conv2dConfig { padding: 1, ..Default::default() }));
            } else {
                prelus.push(weight.reshape((1, weight.dim(0)?, 1, 1))?);
            }
        }
        let last = t[&format!("body.{}.weight", count - 1)].dim(0)?;
        let scale = ((last / 3) as f64).sqrt().round() as usize;
        if convs.len() != prelus.len() + 1 || scale * scale * 3 != last {
            candle_core::bail!(
                "not a compact Real-ESRGAN model ({} convolutions, {} activations)",
                convs.len(),
                prelus.len()
            );
        }
        Ok(Self { convs, prelus, scale })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut out = x.clone();
        for (conv, prelu) in self.convs.iter().zip(&self.prelus) {
            let y = crate::conv::forward(conv, &out)?;
            out = (y.relu()? + prelu.broadcast_mul(&y.minimum(0f32)?)?)?;
        }
        let out = crate::conv::forward(&self.convs[self.convs.len() - 1], &out)?;
        let out = pixel_shuffle(&out, self.scale)?;
        let (_, _, h, w) = x.dims4()?;
        out + x.upsample_nearest2d(h * self.scale, w * self.scale)?
    }
}

/// `F.pixel_shuffle(x, r)`: (N, C·r², H, W) → (N, C, H·r, W·r).
fn pixel_shuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let c = c / (r * r);
    x.reshape((n, c, r, r, h, w))?.permute((0, 1, 4, 2, 5, 3))?.reshape((n, c, h * r, w * r))
}
