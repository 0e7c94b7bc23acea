//! 2-D convolution on the CPU in f32 as one GEMM per image, written straight into NCHW:
//! `out (C_out × H·W) = W (C_out × C_in·k_h·k_w) · columns (C_in·k_h·k_w × H·W) + bias`.
//!
//! The columns use Caffe's im2col layout — one shifted copy of an input plane per (channel, ky,
//! kx), built with whole-row copies — and a 1×1 convolution reads the input planes as they are.
//! The output starts as the bias and the GEMM adds into it. candle's `conv2d` instead gathers
//! the columns element by element, produces (H·W × C_out) and transposes it, then adds the bias
//! in another pass: together about a quarter of a UNet step (docs/benchmarks.md).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};

use crate::cpu_storage::contiguous_f32;
use rayon::prelude::*;

/// Stride and zero padding (the same on every side), as `Conv2dConfig` has them; no groups or
/// dilation (callers send those to candle).
pub(super) struct GemmConv {
    pub stride: usize,
    pub padding: usize,
    pub bias: Option<Vec<f32>>,
}

impl CustomOp2 for GemmConv {
    fn name(&self) -> &'static str {
        "gemm-conv2d"
    }

    fn cpu_fwd(&self, x_s: &CpuStorage, x_l: &Layout, w_s: &CpuStorage, w_l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, weight) =
            (contiguous_f32(x_s, x_l, "gemm conv", "input")?, contiguous_f32(w_s, w_l, "gemm conv", "weight")?);
        let (batch, c_in, h, w) = x_l.shape().dims4()?;
        let (c_out, w_c_in, kh, kw) = w_l.shape().dims4()?;
        let (s, p) = (self.stride.max(1), self.padding);
        if w_c_in != c_in || h + 2 * p < kh || w + 2 * p < kw {
            candle_core::bail!(
                "gemm conv: input {:?} does not fit kernel {:?} (padding {p})",
                x_l.shape(),
                w_l.shape()
            );
        }
        if let Some(bias) = &self.bias
            && bias.len() != c_out
        {
            candle_core::bail!("gemm conv: {} biases for {c_out} output channels", bias.len());
        }
        let (out_h, out_w) = ((h + 2 * p - kh) / s + 1, (w + 2 * p - kw) / s + 1);
        let (plane, depth) = (out_h * out_w, c_in * kh * kw);
        let mut out = vec![0f32; batch * c_out * plane];
        if let Some(bias) = &self.bias {
            out.par_chunks_mut(plane).enumerate().for_each(|(i, o)| o.fill(bias[i % c_out]));
        }
        let direct = kh == 1 && kw == 1 && s == 1 && p == 0;
        let mut columns = if direct { Vec::new() } else { vec![0f32; depth * plane] };
        for b in 0..batch {
            let image = &x[b * c_in * h * w..(b + 1) * c_in * h * w];
            if !direct {
                columns.par_chunks_mut(plane).enumerate().for_each(|(row, dst)| {
                    let (c, ky, kx) = (row / (kh * kw), (row / kw) % kh, row % kw);
                    fill_column_row(&image[c * h * w..(c + 1) * h * w], (h, w), (ky, kx), (s, p), out_w, dst);
                });
            }
            let rhs = if direct { image } else { &columns[..] };
            let dst = &mut out[b * c_out * plane..(b + 1) * c_out * plane];
            // SAFETY: dst is c_out × plane, weight c_out × depth, rhs depth × plane, all row-major
            // and of exactly those lengths (checked shapes above).
            unsafe {
                gemm::gemm(
                    c_out,
                    plane,
                    depth,
                    dst.as_mut_ptr(),
                    1,
                    plane as isize,
                    self.bias.is_some(),
                    weight.as_ptr(),
                    1,
                    depth as isize,
                    rhs.as_ptr(),
                    1,
                    plane as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(rayon::current_num_threads()),
                );
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, c_out, out_h, out_w))))
    }
}

/// One im2col row: input plane `src` (h × w) seen through kernel tap (ky, kx) at every output
/// position, zeros where the tap falls into the padding.
fn fill_column_row(
    src: &[f32],
    (h, w): (usize, usize),
    (ky, kx): (usize, usize),
    (stride, pad): (usize, usize),
    out_w: usize,
    dst: &mut [f32],
) {
    for (oy, row) in dst.chunks_exact_mut(out_w).enumerate() {
        let iy = (oy * stride + ky) as isize - pad as isize;
        if iy < 0 || iy >= h as isize {
            row.fill(0.0);
            continue;
        }
        let line = &src[iy as usize * w..(iy as usize + 1) * w];
        if stride == 1 {
            // Output columns whose tap lands inside the line: ox + kx - pad in 0..w.
            let first = pad.saturating_sub(kx).min(out_w);
            let last = (w + pad).saturating_sub(kx).min(out_w).max(first);
            row.fill(0.0);
            if first < last {
                row[first..last].copy_from_slice(&line[first + kx - pad..last + kx - pad]);
            }
        } else {
            for (ox, v) in row.iter_mut().enumerate() {
                let ix = (ox * stride + kx) as isize - pad as isize;
                *v = if ix >= 0 && ix < w as isize { line[ix as usize] } else { 0.0 };
            }
        }
    }
}
