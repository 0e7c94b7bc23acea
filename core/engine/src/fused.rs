//! GroupNorm → SiLU → convolution (→ + residual) over strips of rows, for large activations.
//!
//! A ResNet block computed op by op keeps several full-size tensors alive at once: the normalised
//! input, its SiLU, the convolution's output and the residual sum. At the VAE decoder's last level
//! when the hires fix decodes 2× of 1024² each of them is 2–4 GB. [`norm_silu_conv`] takes the
//! GroupNorm statistics of the whole input first (they are all the rows need), then for each strip
//! of output rows normalises, activates and convolves only the input rows that strip reads, adds
//! the residual's rows and writes the strip into the one output tensor. Every output value goes
//! through the same operations in the same order as the op-by-op path, so the results are the same
//! bit for bit; small inputs simply take the op-by-op path.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig};

use crate::conv::{self, RowWindow};
use crate::norm::GroupNorm32;

/// Inputs above this many bytes take the strip path (the same bound as the convolutions' buffers).
const FUSE_ABOVE_BYTES: usize = conv::MAX_COLUMN_BYTES;

/// What is added to the convolution's output.
#[derive(Clone, Copy)]
pub enum Residual<'a> {
    None,
    /// The block's input itself (same shape as the output).
    Identity(&'a Tensor),
    /// A 1×1 convolution of the block's input (a channel-changing shortcut).
    Projected(&'a Conv2d, &'a Tensor),
}

impl Residual<'_> {
    /// `residual + output` over output rows `first..first + rows` (all rows: the blocks' own sum).
    fn add_rows(&self, output: Tensor, first: usize, rows: usize) -> Result<Tensor> {
        match self {
            Residual::None => Ok(output),
            Residual::Identity(x) => x.narrow(2, first, rows)? + output,
            Residual::Projected(shortcut, x) => conv::forward(shortcut, &x.narrow(2, first, rows)?)? + output,
        }
    }
}

/// `residual + conv(silu(norm(x)))`, with bounded temporaries for large `x`.
pub fn norm_silu_conv(norm: &GroupNorm32, conv: &Conv2d, x: &Tensor, residual: Residual) -> Result<Tensor> {
    norm_silu_conv_bounded(norm, conv, x, residual, FUSE_ABOVE_BYTES)
}

fn norm_silu_conv_bounded(
    norm: &GroupNorm32,
    conv: &Conv2d,
    x: &Tensor,
    residual: Residual,
    max_bytes: usize,
) -> Result<Tensor> {
    let cfg = *conv.config();
    let (batch, c_in, h, w) = x.dims4()?;
    let (_, _, kh, kw) = conv.weight().dims4()?;
    let p = cfg.padding;
    let plain = cfg.stride != 1 || cfg.groups != 1 || cfg.dilation != 1 || h + 2 * p < kh || w + 2 * p < kw;
    if plain || x.elem_count() * x.dtype().size_in_bytes() <= max_bytes {
        let output = conv::forward(conv, &norm.forward(x)?.silu()?)?;
        let rows = output.dim(2)?;
        return residual.add_rows(output, 0, rows);
    }
    let out_h = h + 2 * p - kh + 1;
    let out_w = w + 2 * p - kw + 1;
    // Per output row: its input rows' activations and the convolution's working memory.
    let lowering = conv::lowering(conv, x)?;
    let c_out = conv.weight().dim(0)?;
    let row_bytes = batch * x.dtype().size_in_bytes() * c_in * w
        + lowering.bytes_per_output_row(batch, (c_in, c_out), (kh, kw), out_w);
    let rows = (max_bytes / row_bytes.max(1)).max(1);
    let stats = norm.statistics(x)?;
    let unpadded = Conv2d::new(conv.weight().clone(), conv.bias().cloned(), Conv2dConfig { padding: 0, ..cfg });
    let out = conv::output_for(conv, x, out_h, out_w)?;
    for first in (0..out_h).step_by(rows) {
        let n = rows.min(out_h - first);
        let RowWindow { from, to, top, bottom } = conv::row_window(first, n, kh, p, h);
        let activated = norm.normalise_rows(&x.narrow(2, from, to - from)?, &stats)?.silu()?;
        let strip = activated.pad_with_zeros(2, top, bottom)?.pad_with_zeros(3, p, p)?;
        let strip = residual.add_rows(conv::apply_lowered(&unpadded, &strip, lowering)?, first, n)?;
        out.slice_set(&strip.contiguous()?, 2, first)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    fn conv(c_in: usize, c_out: usize, k: usize, padding: usize) -> Conv2d {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 0.3, (c_out, c_in, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, c_out, &dev).unwrap();
        Conv2d::new(weight, Some(bias), Conv2dConfig { padding, ..Default::default() })
    }

    fn group_norm(channels: usize) -> GroupNorm32 {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let norm = GroupNorm32::new(4, channels, 1e-6, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
        for (_, var) in varmap.data().lock().unwrap().iter() {
            var.set(&Tensor::randn(0f32, 1.0, channels, &dev).unwrap()).unwrap();
        }
        norm
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn strips_give_the_op_by_op_block() {
        let dev = Device::Cpu;
        // 45 wide: a one-row strip still has more than 256 outputs (see conv's tests).
        let x = (Tensor::randn(0f32, 2.0, (2, 8, 13, 45), &dev).unwrap() + 0.3).unwrap();
        let norm = group_norm(8);
        let shortcut = conv(8, 6, 1, 0);
        for (k, p, c_out) in [(3, 1, 8), (3, 1, 6), (1, 0, 8)] {
            let c = conv(8, c_out, k, p);
            let skip = if c_out == 8 { Residual::Identity(&x) } else { Residual::Projected(&shortcut, &x) };
            for residual in [Residual::None, skip] {
                let whole = norm_silu_conv_bounded(&norm, &c, &x, residual, usize::MAX).unwrap();
                // A bound of a few bytes: every output row is its own strip.
                for bound in [1, 8 * 45 * 4 * 2 * 10] {
                    let strips = norm_silu_conv_bounded(&norm, &c, &x, residual, bound).unwrap();
                    assert_eq!(strips.dims(), whole.dims());
                    assert_eq!(max_diff(&strips, &whole), 0.0, "k {k} c_out {c_out} bound {bound}");
                }
            }
        }
    }

    #[test]
    fn the_whole_path_is_the_blocks_arithmetic() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 8, 6, 5), &dev).unwrap();
        let (norm, c) = (group_norm(8), conv(8, 8, 3, 1));
        let fused = norm_silu_conv(&norm, &c, &x, Residual::Identity(&x)).unwrap();
        let plain = (&x + conv::apply(&c, &norm.forward(&x).unwrap().silu().unwrap()).unwrap()).unwrap();
        assert_eq!(max_diff(&fused, &plain), 0.0);
    }
}
