//! 2-D convolution on the CPU in f32 as matrix products written straight into NCHW, lowered one of
//! two ways ([`Lowering`]):
//!
//! * **Columns** (im2col): `out (C_out × H·W) = W (C_out × C_in·k_h·k_w) · columns + bias`, the
//!   columns in Caffe's layout — one shifted copy of an input plane per (channel, ky, kx), built
//!   with whole-row copies; a 1×1 convolution reads the input planes as they are. The output starts
//!   as the bias and the GEMM adds into it.
//! * **Shifted taps** (stride 1): the input copied once, zero-padded and channels-last
//!   (`H_p × W_p × C_in`). Kernel row `ky`'s taps over all channels are then one strided matrix —
//!   element `(kx·C_in + c, y·W_p + x)` is at `((ky + y)·W_p + x + kx)·C_in + c`, affine in both
//!   indices — so the convolution is `k_h` GEMMs of depth `k_w·C_in` accumulating into an output
//!   `W_p` wide, whose valid columns are copied out with the bias. No buffer grows with `k_h·k_w`,
//!   but the weights are re-laid out on every call.
//!
//! candle's `conv2d` gathers the columns element by element, produces (H·W × C_out) and transposes
//! it, then adds the bias in another pass: together about a quarter of a UNet step
//! (docs/benchmarks.md).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape};

use crate::cpu_storage::contiguous_f32;
use crate::matmul::{Parallelism, View, gemm_f32};
use rayon::prelude::*;

/// Shifted taps pay once the columns they avoid outweigh the weights they re-lay out: columns hold
/// `C_in·k²` values per output pixel, the weights `C_in·k²` per output channel, so the ratio is
/// output pixels (times batch) per output channel. Measured on the SD shapes (docs/benchmarks.md):
/// equal at 6–25 (UNet levels), shifted taps 20–25 % faster on the VAE decoder's planes (8–512),
/// columns 2× faster at 0.1–0.8 (the UNet's deep levels).
const SHIFTED_MIN_PIXELS_PER_CHANNEL: usize = 8;

/// How a convolution becomes matrix products (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lowering {
    Columns,
    ShiftedTaps,
}

impl Lowering {
    /// The lowering for `batch` images of `out_plane` output pixels into `c_out` channels.
    pub fn choose(batch: usize, out_plane: usize, c_out: usize, (kh, kw): (usize, usize), stride: usize) -> Self {
        let taps = kh * kw > 1;
        if stride <= 1 && taps && batch * out_plane >= SHIFTED_MIN_PIXELS_PER_CHANNEL * c_out {
            Self::ShiftedTaps
        } else {
            Self::Columns
        }
    }

    /// Bytes of working memory per output row (beyond input and output), to size strips by.
    pub fn bytes_per_output_row(
        self,
        batch: usize,
        (c_in, c_out): (usize, usize),
        (kh, kw): (usize, usize),
        out_w: usize,
    ) -> usize {
        let values = match self {
            // The columns' share of one output row.
            Self::Columns => batch * out_w * c_in * kh * kw,
            // One padded input row (channels-last) and one wide output row, per image.
            Self::ShiftedTaps => (c_in + c_out) * (out_w + kw - 1),
        };
        values * std::mem::size_of::<f32>()
    }
}

/// Stride and zero padding (the same on every side), as `Conv2dConfig` has them; no groups or
/// dilation (callers send those to candle).
pub(super) struct GemmConv {
    pub stride: usize,
    pub padding: usize,
    pub bias: Option<Vec<f32>>,
    pub lowering: Lowering,
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
        let mut out = vec![0f32; batch * c_out * out_h * out_w];
        let image = Image { x, batch, c_in, h, w };
        let kernel = Kernel { weight, c_out, kh, kw, bias: self.bias.as_deref() };
        if self.lowering == Lowering::ShiftedTaps && s == 1 {
            shifted_taps(&image, &kernel, p, &mut out);
        } else {
            columns(&image, &kernel, (s, p), (out_h, out_w), &mut out);
        }
        Ok((CpuStorage::F32(out), Shape::from((batch, c_out, out_h, out_w))))
    }
}

/// The input batch, NCHW.
struct Image<'a> {
    x: &'a [f32],
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
}

impl Image<'_> {
    fn item(&self, b: usize) -> &[f32] {
        let len = self.c_in * self.h * self.w;
        &self.x[b * len..(b + 1) * len]
    }
}

/// The weights (C_out × C_in × k_h × k_w) and bias.
struct Kernel<'a> {
    weight: &'a [f32],
    c_out: usize,
    kh: usize,
    kw: usize,
    bias: Option<&'a [f32]>,
}

fn all_threads() -> Parallelism {
    Parallelism::Rayon(rayon::current_num_threads())
}

/// The im2col lowering (module docs).
fn columns(image: &Image, kernel: &Kernel, (s, p): (usize, usize), (out_h, out_w): (usize, usize), out: &mut [f32]) {
    let (c_in, h, w) = (image.c_in, image.h, image.w);
    let (c_out, kh, kw) = (kernel.c_out, kernel.kh, kernel.kw);
    let (plane, depth) = (out_h * out_w, c_in * kh * kw);
    if let Some(bias) = kernel.bias {
        out.par_chunks_mut(plane).enumerate().for_each(|(i, o)| o.fill(bias[i % c_out]));
    }
    let direct = kh == 1 && kw == 1 && s == 1 && p == 0;
    let mut columns = if direct { Vec::new() } else { vec![0f32; depth * plane] };
    for b in 0..image.batch {
        let item = image.item(b);
        if !direct {
            columns.par_chunks_mut(plane).enumerate().for_each(|(row, dst)| {
                let (c, ky, kx) = (row / (kh * kw), (row / kw) % kh, row % kw);
                fill_column_row(&item[c * h * w..(c + 1) * h * w], (h, w), (ky, kx), (s, p), out_w, dst);
            });
        }
        let rhs = if direct { item } else { &columns[..] };
        let dst = &mut out[b * c_out * plane..(b + 1) * c_out * plane];
        let d = View::row_major(c_out, plane);
        let accumulate = kernel.bias.is_some();
        gemm_f32(
            dst,
            d,
            accumulate,
            kernel.weight,
            View::row_major(c_out, depth),
            rhs,
            View::row_major(depth, plane),
            1.0,
            all_threads(),
        );
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

/// The shifted-taps lowering (module docs); stride 1.
fn shifted_taps(image: &Image, kernel: &Kernel, p: usize, out: &mut [f32]) {
    let (c_in, h, w) = (image.c_in, image.h, image.w);
    let (c_out, kh, kw) = (kernel.c_out, kernel.kh, kernel.kw);
    let (hp, wp) = (h + 2 * p, w + 2 * p);
    let (out_h, out_w) = (hp - kh + 1, wp - kw + 1);
    let (depth, n) = (kw * c_in, out_h * wp);
    // Weights as (ky, c_out, kx, c_in): kernel row ky's matrix is c_out × depth, row-major.
    let mut taps = vec![0f32; kh * c_out * depth];
    taps.par_chunks_mut(depth).enumerate().for_each(|(row, dst)| {
        let (ky, co) = (row / c_out, row % c_out);
        for (kx, dst) in dst.chunks_exact_mut(c_in).enumerate() {
            for (c, v) in dst.iter_mut().enumerate() {
                *v = kernel.weight[((co * c_in + c) * kh + ky) * kw + kx];
            }
        }
    });
    // The wide output's last columns read up to kw − 1 pixels past the padded image: zeros.
    let mut padded = vec![0f32; (hp * wp + kw) * c_in];
    let mut wide = vec![0f32; c_out * n];
    let plane = out_h * out_w;
    for b in 0..image.batch {
        let item = image.item(b);
        padded[..hp * wp * c_in].par_chunks_mut(wp * c_in).enumerate().for_each(|(py, line)| {
            if py < p || py >= p + h {
                return;
            }
            let y = py - p;
            for (xx, pixel) in line[p * c_in..(p + w) * c_in].chunks_exact_mut(c_in).enumerate() {
                for (c, v) in pixel.iter_mut().enumerate() {
                    *v = item[(c * h + y) * w + xx];
                }
            }
        });
        for ky in 0..kh {
            let lhs = View::row_major(c_out, depth).shifted(ky * c_out * depth);
            let rhs = View { offset: ky * wp * c_in, rows: depth, cols: n, row_stride: 1, col_stride: c_in };
            gemm_f32(&mut wide, View::row_major(c_out, n), ky > 0, &taps, lhs, &padded, rhs, 1.0, all_threads());
        }
        out[b * c_out * plane..(b + 1) * c_out * plane].par_chunks_mut(plane).enumerate().for_each(|(co, dst)| {
            let add = kernel.bias.map_or(0.0, |bias| bias[co]);
            let src = &wide[co * n..(co + 1) * n];
            for (line, wide_line) in dst.chunks_exact_mut(out_w).zip(src.chunks(wp)) {
                for (d, s) in line.iter_mut().zip(wide_line) {
                    *d = s + add;
                }
            }
        });
    }
}
