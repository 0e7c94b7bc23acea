//! RRDBNet (ESRGAN, Real-ESRGAN): the architecture A1111 loads through spandrel for files in
//! `models/ESRGAN` and `models/RealESRGAN`. Both key layouts are read: BasicSR's
//! (`conv_first`, `body.N.rdbK.convJ`, `conv_body`, `conv_upN`, `conv_hr`, `conv_last`) and the
//! original ESRGAN's (`model.0`, `model.1.sub.N.RDBK.convJ.0`, …, upsampling convs every third
//! index, then the HR conv and the last conv). Sizes, block counts and the scale come from the
//! tensors; Real-ESRGAN's ×2 and ×1 models take a pixel-unshuffled input (12 or 48 channels).

use std::collections::HashMap;

use candle_core::{Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig};

fn conv(tensors: &HashMap<String, Tensor>, name: &str) -> Result<Conv2d> {
    let weight = tensors
        .get(&format!("{name}.weight"))
        .ok_or_else(|| candle_core::Error::Msg(format!("missing {name}.weight")))?
        .clone();
    let bias = tensors.get(&format!("{name}.bias")).cloned();
    let padding = weight.dim(3)? / 2;
    Ok(Conv2d::new(weight, bias, Conv2dConfig { padding, ..Default::default() }))
}

fn lrelu(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::leaky_relu(x, 0.2)
}

struct DenseBlock {
    convs: [Conv2d; 5],
}

impl DenseBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut features = vec![x.clone()];
        for conv in &self.convs[..4] {
            let input = Tensor::cat(&features, 1)?;
            features.push(lrelu(&crate::conv::forward(conv, &input)?)?);
        }
        let x5 = crate::conv::forward(&self.convs[4], &Tensor::cat(&features, 1)?)?;
        (x5 * 0.2)? + x
    }
}

struct Rrdb {
    blocks: [DenseBlock; 3],
}

impl Rrdb {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut out = x.clone();
        for block in &self.blocks {
            out = block.forward(&out)?;
        }
        (out * 0.2)? + x
    }
}

/// An RRDBNet read from a state dict.
pub struct RrdbNet {
    unshuffle: usize,
    conv_first: Conv2d,
    body: Vec<Rrdb>,
    conv_body: Conv2d,
    upsample: Vec<Conv2d>,
    conv_hr: Conv2d,
    conv_last: Conv2d,
    pub scale: usize,
}

/// Renames the original ESRGAN layout to BasicSR's; other dicts are returned unchanged.
fn to_basicsr_names(tensors: HashMap<String, Tensor>) -> HashMap<String, Tensor> {
    if !tensors.contains_key("model.0.weight") {
        return tensors;
    }
    let top: Vec<usize> = tensors
        .keys()
        .filter_map(|k| k.strip_prefix("model.")?.strip_suffix(".weight")?.parse::<usize>().ok())
        .collect();
    let last = top.iter().copied().max().unwrap_or(0);
    let mut out = HashMap::new();
    for (key, t) in tensors {
        let renamed = if let Some(rest) = key.strip_prefix("model.1.sub.") {
            // `N.RDBk.convj.0.weight` → `body.N.rdbk.convj.weight`; `NB.weight` → conv_body.
            let parts: Vec<&str> = rest.split('.').collect();
            match parts.as_slice() {
                [n, rdb, conv, "0", param] => {
                    format!("body.{n}.{}.{conv}.{param}", rdb.to_ascii_lowercase())
                }
                [_, param] => format!("conv_body.{param}"),
                _ => key.clone(),
            }
        } else if let Some(rest) = key.strip_prefix("model.") {
            let (index, param) = rest.split_once('.').unwrap_or((rest, ""));
            match index.parse::<usize>() {
                Ok(0) => format!("conv_first.{param}"),
                Ok(i) if i == last => format!("conv_last.{param}"),
                Ok(i) if i + 2 == last => format!("conv_hr.{param}"),
                Ok(i) if i >= 3 && i % 3 == 0 => format!("conv_up{}.{param}", i / 3),
                _ => key.clone(),
            }
        } else {
            key.clone()
        };
        out.insert(renamed, t);
    }
    out
}

impl RrdbNet {
    /// Whether a state dict is an RRDBNet (either layout).
    pub fn matches(tensors: &HashMap<String, Tensor>) -> bool {
        tensors.contains_key("conv_first.weight") || tensors.contains_key("model.1.sub.0.RDB1.conv1.0.weight")
    }

    pub fn from_tensors(tensors: HashMap<String, Tensor>) -> Result<Self> {
        let t = to_basicsr_names(tensors);
        let nb = (0..).take_while(|i| t.contains_key(&format!("body.{i}.rdb1.conv1.weight"))).count();
        let ups = (1..).take_while(|i| t.contains_key(&format!("conv_up{i}.weight"))).count();
        // Published models upscale ×2 or ×4 (one or two upsampling convolutions); ×16 is the most
        // this reads, so the scale arithmetic below stays small.
        if ups > 4 {
            candle_core::bail!("{ups} upsampling layers: not an ESRGAN model this server reads");
        }
        let in_channels = t.get("conv_first.weight").map(|w| w.dim(1)).transpose()?.unwrap_or(3);
        let unshuffle = match in_channels {
            12 => 2,
            48 => 4,
            _ => 1,
        };
        let body = (0..nb)
            .map(|i| {
                let block = |k: usize| -> Result<DenseBlock> {
                    let c = |j: usize| conv(&t, &format!("body.{i}.rdb{k}.conv{j}"));
                    Ok(DenseBlock { convs: [c(1)?, c(2)?, c(3)?, c(4)?, c(5)?] })
                };
                Ok(Rrdb { blocks: [block(1)?, block(2)?, block(3)?] })
            })
            .collect::<Result<Vec<_>>>()?;
        let upsample = (1..=ups).map(|i| conv(&t, &format!("conv_up{i}"))).collect::<Result<Vec<_>>>()?;
        Ok(Self {
            unshuffle,
            conv_first: conv(&t, "conv_first")?,
            body,
            conv_body: conv(&t, "conv_body")?,
            conv_hr: conv(&t, "conv_hr")?,
            conv_last: conv(&t, "conv_last")?,
            scale: (1usize << upsample.len()) / unshuffle,
            upsample,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.unshuffle > 1 {
            // spandrel pads to a multiple of the factor (reflecting) and crops the result.
            let (_, _, h, w) = x.dims4()?;
            let r = self.unshuffle;
            let padded = reflect_pad_end(&reflect_pad_end(x, 2, (r - h % r) % r)?, 3, (r - w % r) % r)?;
            let out = self.forward_inner(&pixel_unshuffle(&padded, r)?)?;
            return out.narrow(2, 0, h * self.scale)?.narrow(3, 0, w * self.scale);
        }
        self.forward_inner(x)
    }

    fn forward_inner(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.clone();
        let feat = crate::conv::forward(&self.conv_first, &x)?;
        let mut body = feat.clone();
        for block in &self.body {
            body = block.forward(&body)?;
        }
        let mut feat = (feat + crate::conv::forward(&self.conv_body, &body)?)?;
        for conv in &self.upsample {
            let (_, _, h, w) = feat.dims4()?;
            feat = lrelu(&crate::conv::forward(conv, &feat.upsample_nearest2d(h * 2, w * 2)?)?)?;
        }
        crate::conv::forward(&self.conv_last, &lrelu(&crate::conv::forward(&self.conv_hr, &feat)?)?)
    }
}

/// `F.pixel_unshuffle(x, r)`: (N, C, H·r, W·r) → (N, C·r², H, W).
pub fn pixel_unshuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h / r, r, w / r, r))?.permute((0, 1, 3, 5, 2, 4))?.reshape((n, c * r * r, h / r, w / r))
}

/// `F.pad(x, …, "reflect")` at the end of dimension `dim` by `pad` (< its size).
fn reflect_pad_end(x: &Tensor, dim: usize, pad: usize) -> Result<Tensor> {
    if pad == 0 {
        return Ok(x.clone());
    }
    let n = x.dim(dim)?;
    let index: Vec<u32> = (0..pad).map(|i| (n - 2 - i) as u32).collect();
    let index = Tensor::new(index, x.device())?;
    Tensor::cat(&[x, &x.index_select(&index, dim)?], dim)
}
