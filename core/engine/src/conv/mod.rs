//! Convolutions whose working memory stays bounded at any image size.
//!
//! candle's CPU `conv2d` lowers a convolution to one matrix product over an im2col buffer of
//! `out_h · out_w · c_in · k_h · k_w` values: 19 GB for a 3×3 convolution over 128 channels of a
//! 2048² image (the VAE's last block when the hires fix decodes 2× of 1024²), where the weights
//! and activations are a fraction of that. [`forward`] computes such a convolution over strips of
//! output rows, each reading its input rows plus the kernel's reach, so no buffer exceeds
//! [`MAX_COLUMN_BYTES`]; every output pixel is the same sum of the same products as in one pass.
//! On the CPU the product itself is ours ([`gemm_conv`]): im2col columns, or for large planes the
//! shifted-taps lowering, whose copies are about the size of the input and output.

mod gemm_conv;

pub use gemm_conv::Lowering;

use candle_core::{DType, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Module};

/// Largest working memory (im2col columns, or the shifted taps' padded copy and wide output) one
/// convolution call may need (256 MiB).
pub const MAX_COLUMN_BYTES: usize = 256 << 20;

/// `conv.forward(x)`, through [`gemm_conv`] on the CPU in f32: the same dot products (equal to
/// candle's within float rounding, tested), without its element-by-element im2col, output
/// transpose and separate bias pass. Other devices and dtypes go to candle.
pub fn apply(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    apply_lowered(conv, x, lowering(conv, x)?)
}

/// The [`Lowering`] for `conv` over all of `x`. Strips of a convolution are computed with the
/// whole one's lowering, so every output pixel is the same sum whichever way it is split.
pub(crate) fn lowering(conv: &Conv2d, x: &Tensor) -> Result<Lowering> {
    let cfg = conv.config();
    let (batch, _, h, w) = x.dims4()?;
    let (c_out, _, kh, kw) = conv.weight().dims4()?;
    let (s, p) = (cfg.stride.max(1), cfg.padding);
    let out_h = (h + 2 * p).saturating_sub(kh) / s + 1;
    let out_w = (w + 2 * p).saturating_sub(kw) / s + 1;
    Ok(Lowering::choose(batch, out_h * out_w, c_out, (kh, kw), s))
}

/// [`apply`] with a given lowering (the whole convolution's, for a strip of it).
pub(crate) fn apply_lowered(conv: &Conv2d, x: &Tensor, lowering: Lowering) -> Result<Tensor> {
    let cfg = conv.config();
    let weight = conv.weight();
    if x.device().is_cuda() && x.dtype() == DType::F16 {
        return half_with_f32_accumulation(conv, x);
    }
    if !(x.device().is_cpu() && x.dtype() == DType::F32 && weight.dtype() == DType::F32)
        || cfg.groups != 1
        || cfg.dilation != 1
    {
        return conv.forward(x);
    }
    let bias = conv.bias().map(|b| b.to_vec1::<f32>()).transpose()?;
    let op = gemm_conv::GemmConv { stride: cfg.stride, padding: cfg.padding, bias, lowering };
    x.contiguous()?.apply_op2_no_bwd(&weight.contiguous()?, &op)
}

/// A half-precision convolution on CUDA, summed in f32 and rounded to f16 once.
///
/// candle's f16 convolution asks cuDNN for half-precision accumulation, which PyTorch does not
/// use; on an H200 a whole f16 generation with it ran 4x slower than in f32 (the GPU ~10% busy,
/// docs/cuda.md). Every f16 value is exact in
/// f32 (and in the TF32 cuDNN may use for f32 data), so converting the operands and running the
/// f32 convolution gives f16 inputs with f32 accumulation, as PyTorch computes it.
fn half_with_f32_accumulation(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    let weight = conv.weight().to_dtype(DType::F32)?;
    let bias = conv.bias().map(|b| b.to_dtype(DType::F32)).transpose()?;
    let wide = Conv2d::new(weight, bias, *conv.config());
    wide.forward(&x.to_dtype(DType::F32)?)?.to_dtype(DType::F16)
}

/// [`apply`] with its working memory (im2col columns or shifted-taps copies) bounded by
/// [`MAX_COLUMN_BYTES`].
pub fn forward(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    forward_bounded(conv, x, MAX_COLUMN_BYTES)
}

fn forward_bounded(conv: &Conv2d, x: &Tensor, max_bytes: usize) -> Result<Tensor> {
    let cfg = *conv.config();
    let (batch, c_in, h, w) = x.dims4()?;
    let (c_out, _, kh, kw) = conv.weight().dims4()?;
    if cfg.groups != 1 || cfg.dilation != 1 || h + 2 * cfg.padding < kh || w + 2 * cfg.padding < kw {
        return apply(conv, x);
    }
    let (p, s) = (cfg.padding, cfg.stride.max(1));
    let out_h = (h + 2 * p - kh) / s + 1;
    let out_w = (w + 2 * p - kw) / s + 1;
    let lowering = lowering(conv, x)?;
    let row_bytes = lowering.bytes_per_output_row(batch, (c_in, c_out), (kh, kw), out_w);
    if out_h * row_bytes <= max_bytes {
        return apply_lowered(conv, x, lowering);
    }
    let rows = (max_bytes / row_bytes.max(1)).max(1);
    let padded = if p > 0 { x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)? } else { x.clone() };
    let unpadded = Conv2d::new(conv.weight().clone(), conv.bias().cloned(), Conv2dConfig { padding: 0, ..cfg });
    let out = output_for(conv, x, out_h, out_w)?;
    for first in (0..out_h).step_by(rows) {
        let last = (first + rows).min(out_h) - 1;
        let (from, to) = (first * s, last * s + kh);
        out.slice_set(&apply_lowered(&unpadded, &padded.narrow(2, from, to - from)?, lowering)?, 2, first)?;
    }
    Ok(out)
}

/// The input rows a strip of `n` output rows from `first` of a stride-1 convolution reads: rows
/// `from..to` of an image `height` rows tall, plus `top` and `bottom` rows of zero padding.
pub(crate) struct RowWindow {
    pub from: usize,
    pub to: usize,
    pub top: usize,
    pub bottom: usize,
}

pub(crate) fn row_window(first: usize, n: usize, kernel: usize, padding: usize, height: usize) -> RowWindow {
    let want_from = first as isize - padding as isize;
    let want_to = (first + n - 1 + kernel) as isize - padding as isize;
    let (from, to) = (want_from.max(0) as usize, want_to.min(height as isize).max(0) as usize);
    RowWindow { from, to, top: (from as isize - want_from) as usize, bottom: (want_to - to as isize) as usize }
}

/// The output tensor strips are written into (one allocation: no list of strips to concatenate).
pub(crate) fn output_for(conv: &Conv2d, x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    Tensor::zeros((x.dim(0)?, conv.weight().dim(0)?, out_h, out_w), x.dtype(), x.device())
}

/// `conv.forward(&x.upsample_nearest2d(2h, 2w))` (the VAE decoder's upsampling) without the
/// full-size upsampled tensor when it would be large: each strip of output rows upsamples only the
/// input rows it reads. Nearest 2× copies row `r` from row `r / 2` either way, so the values are
/// the same. Other convolutions than stride 1 with symmetric padding take the plain path.
pub fn forward_upsampled_2x(conv: &Conv2d, x: &Tensor) -> Result<Tensor> {
    upsampled_2x_bounded(conv, x, MAX_COLUMN_BYTES)
}

fn upsampled_2x_bounded(conv: &Conv2d, x: &Tensor, max_bytes: usize) -> Result<Tensor> {
    let cfg = *conv.config();
    let (batch, c_in, h, w) = x.dims4()?;
    let (_, _, kh, kw) = conv.weight().dims4()?;
    let (th, tw) = (2 * h, 2 * w);
    let upsampled_bytes = batch * c_in * th * tw * x.dtype().size_in_bytes();
    let plain = cfg.stride != 1 || cfg.groups != 1 || cfg.dilation != 1 || th + 2 * cfg.padding < kh;
    if plain || upsampled_bytes <= max_bytes {
        return forward_bounded(conv, &x.upsample_nearest2d(th, tw)?, max_bytes);
    }
    let p = cfg.padding;
    let out_h = th + 2 * p - kh + 1;
    let out_w = tw + 2 * p - kw + 1;
    let c_out = conv.weight().dim(0)?;
    let lowering = Lowering::choose(batch, out_h * out_w, c_out, (kh, kw), 1);
    // Per output row: the convolution's working memory and its share of the upsampled input.
    let row_bytes = lowering.bytes_per_output_row(batch, (c_in, c_out), (kh, kw), out_w)
        + batch * x.dtype().size_in_bytes() * c_in * tw;
    let rows = (max_bytes / row_bytes.max(1)).max(1);
    let unpadded = Conv2d::new(conv.weight().clone(), conv.bias().cloned(), Conv2dConfig { padding: 0, ..cfg });
    let out = output_for(conv, x, out_h, out_w)?;
    for first in (0..out_h).step_by(rows) {
        let RowWindow { from, to, top, bottom } = row_window(first, rows.min(out_h - first), kh, p, th);
        let (low_from, low_to) = (from / 2, to.div_ceil(2));
        let up = x.narrow(2, low_from, low_to - low_from)?.upsample_nearest2d(2 * (low_to - low_from), tw)?;
        let up = up.narrow(2, from - 2 * low_from, to - from)?;
        let strip = up.pad_with_zeros(2, top, bottom)?.pad_with_zeros(3, p, p)?;
        out.slice_set(&apply_lowered(&unpadded, &strip, lowering)?, 2, first)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn conv(c_in: usize, c_out: usize, k: usize, cfg: Conv2dConfig) -> Conv2d {
        let dev = Device::Cpu;
        let weight = Tensor::randn(0f32, 1.0, (c_out, c_in, k, k), &dev).unwrap();
        let bias = Tensor::randn(0f32, 1.0, c_out, &dev).unwrap();
        Conv2d::new(weight, Some(bias), cfg)
    }

    // gemm multiplies products of at most 256 outputs with other kernels, which sum in another
    // order; real strips are far larger (MAX_COLUMN_BYTES), so the tests keep every strip above
    // that too (c_out × padded width > 256) to compare like with like.

    #[test]
    fn strips_give_the_whole_convolution() {
        let x = Tensor::randn(0f32, 1.0, (2, 3, 37, 23), &Device::Cpu).unwrap();
        let cases = [
            (3, Conv2dConfig { padding: 1, ..Default::default() }),
            (3, Conv2dConfig { stride: 2, ..Default::default() }),
            (1, Conv2dConfig::default()),
            (5, Conv2dConfig { padding: 2, stride: 2, ..Default::default() }),
        ];
        for (k, cfg) in cases {
            let c = conv(3, 12, k, cfg);
            let whole = apply(&c, &x).unwrap();
            // A bound of one output row's columns: every row is its own strip.
            let tiny = forward_bounded(&c, &x, 1).unwrap();
            let few = forward_bounded(&c, &x, 2 * 23 * 3 * k * k * 4 * 5).unwrap();
            for strips in [tiny, few] {
                assert_eq!(strips.dims(), whole.dims(), "k {k} {cfg:?}");
                let diff = (&strips - &whole).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                // Each output pixel is the same dot product in the same order: bit for bit.
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "k {k} {cfg:?}");
            }
        }
    }

    #[test]
    fn upsampling_strips_give_the_whole_upsampled_convolution() {
        let x = Tensor::randn(0f32, 1.0, (2, 3, 11, 7), &Device::Cpu).unwrap();
        for (k, p) in [(3, 1), (1, 0), (5, 2)] {
            let c = conv(3, 20, k, Conv2dConfig { padding: p, ..Default::default() });
            let whole = apply(&c, &x.upsample_nearest2d(22, 14).unwrap()).unwrap();
            for bound in [1, 2 * 3 * 14 * 4 * 3, 2 * 3 * 14 * 4 * 40] {
                let strips = upsampled_2x_bounded(&c, &x, bound).unwrap();
                assert_eq!(strips.dims(), whole.dims(), "k {k} bound {bound}");
                let diff = (&strips - &whole).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
                assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "k {k} bound {bound}");
            }
        }
    }

    #[test]
    fn small_inputs_take_one_pass() {
        let c = conv(4, 4, 3, Conv2dConfig { padding: 1, ..Default::default() });
        let x = Tensor::randn(0f32, 1.0, (1, 4, 8, 8), &Device::Cpu).unwrap();
        let diff = (forward(&c, &x).unwrap() - apply(&c, &x).unwrap()).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn the_gemm_convolution_matches_candles() {
        // Strides, paddings wider than a tap reaches into a 1-pixel-wide image, 1×1 (read in
        // place), no bias, odd sizes, a batch of two.
        let dev = Device::Cpu;
        let cases = [
            ((2, 5, 13, 9), 3, Conv2dConfig { padding: 1, ..Default::default() }, true),
            ((2, 5, 13, 9), 3, Conv2dConfig { stride: 2, padding: 1, ..Default::default() }, true),
            ((1, 5, 13, 9), 1, Conv2dConfig::default(), true),
            ((1, 5, 13, 9), 1, Conv2dConfig::default(), false),
            ((1, 3, 4, 1), 7, Conv2dConfig { padding: 3, ..Default::default() }, true),
            ((2, 4, 8, 8), 3, Conv2dConfig { stride: 2, ..Default::default() }, false),
        ];
        for (shape, k, cfg, with_bias) in cases {
            let x = Tensor::randn(0f32, 1.0, shape, &dev).unwrap();
            let mut c = conv(shape.1, 6, k, cfg);
            if !with_bias {
                c = Conv2d::new(c.weight().clone(), None, cfg);
            }
            let theirs = c.forward(&x).unwrap();
            // Both lowerings on every case (shifted taps fall back to columns at stride 2).
            for lowering in [Lowering::Columns, Lowering::ShiftedTaps] {
                let ours = apply_lowered(&c, &x, lowering).unwrap();
                assert_eq!(ours.dims(), theirs.dims(), "{shape:?} k {k} {cfg:?}");
                let max_abs =
                    |t: &Tensor| t.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                // Float rounding of sums of up to 245 products: relative to the outputs' size.
                let diff = max_abs(&(&ours - &theirs).unwrap()) / max_abs(&theirs).max(1.0);
                assert!(diff < 4e-6, "{shape:?} k {k} {cfg:?} bias {with_bias} {lowering:?}: differs by {diff}");
            }
        }
    }

    #[test]
    fn the_lowering_follows_pixels_per_output_channel() {
        // A VAE decoder level (128 channels over 256²) and a deep UNet level (1280 over 8², CFG).
        assert_eq!(Lowering::choose(1, 256 * 256, 128, (3, 3), 1), Lowering::ShiftedTaps);
        assert_eq!(Lowering::choose(2, 8 * 8, 1280, (3, 3), 1), Lowering::Columns);
        // Shifted taps need stride 1 and more than one tap.
        assert_eq!(Lowering::choose(1, 256 * 256, 128, (3, 3), 2), Lowering::Columns);
        assert_eq!(Lowering::choose(1, 256 * 256, 128, (1, 1), 1), Lowering::Columns);
    }
}
