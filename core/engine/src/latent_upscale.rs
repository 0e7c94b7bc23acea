//! `torch.nn.functional.interpolate(latent, size, mode, antialias)` on the CPU as PyTorch computes
//! it in float32, for the hires fix's latent upscalers (A1111's `latent_upscale_modes`).
//!
//! * bilinear / bicubic (`align_corners=False`): source position `scale·(i + 0.5) − 0.5` with
//!   `scale = in / out`; bilinear clamps negative positions to 0; bicubic uses A = −0.75 and
//!   clamps the four taps to the edge. Rows of the output are the weighted sum of interpolated
//!   input rows.
//! * antialiased: separable, width first then height; window and weights as Pillow computes them
//!   (centre `scale·(i + 0.5)`, support scaled when shrinking, weights normalised), bicubic with
//!   A = −0.5.
//! * nearest: `floor(i · scale)` (an exact 2× doubles each index); nearest-exact:
//!   `floor((i + 0.5) · scale)`.

use candle_core::{DType, Device, Tensor};
use sdapi_protocol::choices::Interpolation;

/// One output position: input indices and their weights.
struct Taps {
    index: Vec<usize>,
    weight: Vec<f32>,
}

fn scale_of(input: usize, output: usize) -> f32 {
    input as f32 / output as f32
}

fn linear_taps(input: usize, output: usize) -> Vec<Taps> {
    let scale = scale_of(input, output);
    (0..output)
        .map(|i| {
            let real = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (real.floor() as usize).min(input - 1);
            let lambda1 = (real - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            Taps { index: vec![i0, i1], weight: vec![1.0 - lambda1, lambda1] }
        })
        .collect()
}

fn cubic_taps(input: usize, output: usize) -> Vec<Taps> {
    const A: f32 = -0.75;
    let conv1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let conv2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = scale_of(input, output);
    let last = input as i64 - 1;
    (0..output)
        .map(|i| {
            let real = scale * (i as f32 + 0.5) - 0.5;
            let i0 = (real.floor() as i64).min(last);
            let t = (real - i0 as f32).clamp(0.0, 1.0);
            let weight = vec![conv2(t + 1.0), conv1(t), conv1(1.0 - t), conv2(2.0 - t)];
            let index = (0..4).map(|k| (i0 - 1 + k).clamp(0, last) as usize).collect();
            Taps { index, weight }
        })
        .collect()
}

fn antialiased_taps(input: usize, output: usize, interpolation: Interpolation) -> Vec<Taps> {
    let (support_base, filter): (f32, fn(f32) -> f32) = match interpolation {
        Interpolation::Bicubic => (2.0, |x| {
            const A: f32 = -0.5;
            let x = x.abs();
            if x < 1.0 {
                ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                (((x - 5.0) * x + 8.0) * x - 4.0) * A
            } else {
                0.0
            }
        }),
        _ => (1.0, |x| {
            let x = x.abs();
            if x < 1.0 { 1.0 - x } else { 0.0 }
        }),
    };
    let scale = scale_of(input, output);
    let support = if scale >= 1.0 { support_base * scale } else { support_base };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..output)
        .map(|i| {
            let center = scale * (i as f32 + 0.5);
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64).max(xmin as i64) as usize;
            let mut weight: Vec<f32> = (xmin..xmax).map(|j| filter((j as f32 - center + 0.5) * invscale)).collect();
            let total: f32 = weight.iter().sum();
            if total != 0.0 {
                weight.iter_mut().for_each(|w| *w /= total);
            }
            Taps { index: (xmin..xmax).collect(), weight }
        })
        .collect()
}

fn nearest_taps(input: usize, output: usize, exact: bool) -> Vec<Taps> {
    let scale = scale_of(input, output);
    (0..output)
        .map(|i| {
            let src = if exact {
                ((i as f32 + 0.5) * scale).floor() as usize
            } else if output == input {
                i
            } else if output == 2 * input {
                i >> 1
            } else {
                (i as f32 * scale).floor() as usize
            };
            Taps { index: vec![src.min(input - 1)], weight: vec![1.0] }
        })
        .collect()
}

fn taps(input: usize, output: usize, interpolation: Interpolation, antialias: bool) -> Vec<Taps> {
    match (interpolation, antialias) {
        (Interpolation::Bilinear | Interpolation::Bicubic, true) => antialiased_taps(input, output, interpolation),
        (Interpolation::Bilinear, false) => linear_taps(input, output),
        (Interpolation::Bicubic, false) => cubic_taps(input, output),
        (Interpolation::Nearest, _) => nearest_taps(input, output, false),
        (Interpolation::NearestExact, _) => nearest_taps(input, output, true),
    }
}

/// Resizes each (H, W) plane of a (N, C, H, W) latent to (`height`, `width`).
pub fn interpolate(
    latent: &Tensor,
    height: usize,
    width: usize,
    interpolation: Interpolation,
    antialias: bool,
) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = latent.dims4()?;
    if height == 0 || width == 0 || h == 0 || w == 0 {
        candle_core::bail!("cannot resize a {h}x{w} latent to {height}x{width}");
    }
    let device = latent.device().clone();
    let src: Vec<f32> = latent.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
    let rows = taps(h, height, interpolation, antialias);
    let cols = taps(w, width, interpolation, antialias);
    let mut out = vec![0f32; n * c * height * width];
    for (plane, dst) in src.chunks_exact(h * w).zip(out.chunks_exact_mut(height * width)) {
        if antialias {
            // Separable: width first (each input row), then height.
            let mut horizontal = vec![0f32; h * width];
            for y in 0..h {
                for (x, tap) in cols.iter().enumerate() {
                    horizontal[y * width + x] = weighted(tap, |k| plane[y * w + k]);
                }
            }
            for (y, row_tap) in rows.iter().enumerate() {
                for x in 0..width {
                    dst[y * width + x] = weighted(row_tap, |k| horizontal[k * width + x]);
                }
            }
        } else {
            // PyTorch's generic kernel: interpolate along the width within each tapped row, then
            // combine the rows.
            for (y, row_tap) in rows.iter().enumerate() {
                for (x, col_tap) in cols.iter().enumerate() {
                    dst[y * width + x] = weighted(row_tap, |r| weighted(col_tap, |k| plane[r * w + k]));
                }
            }
        }
    }
    Tensor::from_vec(out, (n, c, height, width), &Device::Cpu)?.to_device(&device)
}

/// `t0·w0 + t1·w1 + …`, accumulated in order as PyTorch does.
fn weighted(tap: &Taps, value: impl Fn(usize) -> f32) -> f32 {
    let mut terms = tap.index.iter().zip(&tap.weight).map(|(&i, &wt)| value(i) * wt);
    let first = terms.next().unwrap_or(0.0);
    terms.fold(first, |acc, term| acc + term)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plane(h: usize, w: usize) -> Tensor {
        let data: Vec<f32> = (0..h * w).map(|i| (i as f32 * 0.37).sin()).collect();
        Tensor::from_vec(data, (1, 1, h, w), &Device::Cpu).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn nearest_doubling_repeats_each_value() {
        let x = plane(2, 3);
        let up = interpolate(&x, 4, 6, Interpolation::Nearest, false).unwrap();
        let (src, dst) = (values(&x), values(&up));
        for y in 0..4 {
            for xx in 0..6 {
                assert_eq!(dst[y * 6 + xx], src[(y / 2) * 3 + xx / 2]);
            }
        }
    }

    #[test]
    fn constant_planes_stay_constant_in_every_mode() {
        let x = Tensor::full(0.25f32, (1, 2, 5, 7), &Device::Cpu).unwrap();
        for (mode, aa) in [
            (Interpolation::Bilinear, false),
            (Interpolation::Bilinear, true),
            (Interpolation::Bicubic, false),
            (Interpolation::Bicubic, true),
            (Interpolation::Nearest, false),
            (Interpolation::NearestExact, false),
        ] {
            for (h, w) in [(10, 14), (3, 4), (8, 7)] {
                let y = interpolate(&x, h, w, mode, aa).unwrap();
                assert!(values(&y).iter().all(|v| (v - 0.25).abs() < 1e-6), "{mode:?} aa={aa} {h}x{w}");
            }
        }
    }

    #[test]
    fn bilinear_doubling_matches_the_half_pixel_rule() {
        // Input [0, 1] along the width, doubled: positions -0.25 (clamped 0), 0.25, 0.75, 1.25 (edge).
        let x = Tensor::from_vec(vec![0f32, 1.0], (1, 1, 1, 2), &Device::Cpu).unwrap();
        let y = interpolate(&x, 1, 4, Interpolation::Bilinear, false).unwrap();
        assert_eq!(values(&y), vec![0.0, 0.25, 0.75, 1.0]);
    }
}
