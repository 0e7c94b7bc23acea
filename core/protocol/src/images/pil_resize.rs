//! Pillow's `Image.resize` for 8-bit RGB images, bit for bit: A1111 resizes with Pillow (init
//! images, the hires fix's pixel upscalers, extras), and the second pass re-encodes those pixels,
//! so a level of difference here moves the whole image.
//!
//! Pillow's separable resampling (`libImaging/Resample.c`): per output pixel a window of input
//! pixels, weights from the filter scaled by the reduction factor and normalised, converted to
//! fixed point with 22 fractional bits, accumulated in integers with rounding, clipped to 0..=255.
//! The horizontal pass runs first and its 8-bit result feeds the vertical pass. `NEAREST` is an
//! affine transform that samples `floor((x + 0.5) * scale)`, the position accumulated step by step.

use image::RgbImage;

/// Pillow's resampling filters that A1111 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilFilter {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos,
}

impl PilFilter {
    fn support(self) -> f64 {
        match self {
            PilFilter::Nearest => 0.0,
            PilFilter::Bilinear => 1.0,
            PilFilter::Bicubic => 2.0,
            PilFilter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            PilFilter::Nearest => 0.0,
            PilFilter::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            PilFilter::Bicubic => {
                // Pillow's cubic with a = -0.5.
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            PilFilter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// One output pixel's window: first input index and fixed-point weights.
struct Window {
    start: usize,
    weights: Vec<i32>,
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis.
fn windows(in_size: usize, out_size: usize, filter: PilFilter) -> Vec<Window> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64).max(xmin as i64) as usize;
            let mut k: Vec<f64> = (xmin..xmax).map(|x| filter.weight((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = k.iter().sum();
            if total != 0.0 {
                k.iter_mut().for_each(|w| *w /= total);
            }
            let weights = k
                .iter()
                .map(|&w| {
                    let scaled = w * f64::from(1u32 << PRECISION_BITS);
                    if w < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 }
                })
                .collect();
            Window { start: xmin, weights }
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// 8-bit pixels with any number of interleaved channels (RGB, RGBA), row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raster {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Raster {
    pub fn from_rgb(img: &RgbImage) -> Self {
        Self { width: img.width() as usize, height: img.height() as usize, channels: 3, data: img.as_raw().clone() }
    }

    pub fn from_rgba(img: &image::RgbaImage) -> Self {
        Self { width: img.width() as usize, height: img.height() as usize, channels: 4, data: img.as_raw().clone() }
    }

    pub fn into_rgb(self) -> Option<RgbImage> {
        (self.channels == 3).then_some(())?;
        RgbImage::from_raw(self.width as u32, self.height as u32, self.data)
    }

    pub fn into_rgba(self) -> Option<image::RgbaImage> {
        (self.channels == 4).then_some(())?;
        image::RgbaImage::from_raw(self.width as u32, self.height as u32, self.data)
    }

    pub fn dimensions(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// The same pixels as RGB or RGBA (Pillow's `convert` between the two: alpha dropped, or 255).
    pub fn with_channels(&self, channels: usize) -> Raster {
        if channels == self.channels {
            return self.clone();
        }
        let mut data = Vec::with_capacity(self.width * self.height * channels);
        for px in self.data.chunks_exact(self.channels) {
            data.extend_from_slice(&px[..3]);
            if channels == 4 {
                data.push(255);
            }
        }
        Raster { width: self.width, height: self.height, channels, data }
    }

    /// A black (zero) raster of the same channel count.
    pub fn blank(width: usize, height: usize, channels: usize) -> Self {
        Self { width, height, channels, data: vec![0; width * height * channels] }
    }
}

fn resample_horizontal(img: &Raster, out_w: usize, filter: PilFilter) -> Raster {
    let (w, h, ch) = (img.width, img.height, img.channels);
    let wins = windows(w, out_w, filter);
    let mut out = vec![0u8; out_w * h * ch];
    for y in 0..h {
        let row = &img.data[y * w * ch..(y + 1) * w * ch];
        for (x, win) in wins.iter().enumerate() {
            for c in 0..ch {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &k) in win.weights.iter().enumerate() {
                    acc += i64::from(row[(win.start + i) * ch + c]) * i64::from(k);
                }
                out[(y * out_w + x) * ch + c] = clip8(acc);
            }
        }
    }
    Raster { width: out_w, height: h, channels: ch, data: out }
}

fn resample_vertical(img: &Raster, out_h: usize, filter: PilFilter) -> Raster {
    let (w, h, ch) = (img.width, img.height, img.channels);
    let wins = windows(h, out_h, filter);
    let mut out = vec![0u8; w * out_h * ch];
    for (y, win) in wins.iter().enumerate() {
        for x in 0..w {
            for c in 0..ch {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &k) in win.weights.iter().enumerate() {
                    acc += i64::from(img.data[((win.start + i) * w + x) * ch + c]) * i64::from(k);
                }
                out[(y * w + x) * ch + c] = clip8(acc);
            }
        }
    }
    Raster { width: w, height: out_h, channels: ch, data: out }
}

/// Pillow's `ImagingScaleAffine`: sample positions accumulate `scale` step by step from half a
/// step (the accumulation's rounding is part of the result).
fn nearest_positions(in_size: usize, out_size: usize) -> Vec<usize> {
    let step = in_size as f64 / out_size as f64;
    let mut at = step * 0.5;
    (0..out_size)
        .map(|_| {
            let i = (at as usize).min(in_size.saturating_sub(1));
            at += step;
            i
        })
        .collect()
}

fn nearest(img: &Raster, out_w: usize, out_h: usize) -> Raster {
    let ch = img.channels;
    let xs = nearest_positions(img.width, out_w);
    let ys = nearest_positions(img.height, out_h);
    let mut data = Vec::with_capacity(out_w * out_h * ch);
    for &y in &ys {
        for &x in &xs {
            let at = (y * img.width + x) * ch;
            data.extend_from_slice(&img.data[at..at + ch]);
        }
    }
    Raster { width: out_w, height: out_h, channels: ch, data }
}

/// `img.resize((width, height), resample=filter)` on any channel count.
pub fn pil_resize_raster(img: &Raster, width: usize, height: usize, filter: PilFilter) -> Raster {
    if width == 0 || height == 0 || img.width == 0 || img.height == 0 {
        return Raster::blank(width, height, img.channels);
    }
    if img.dimensions() == (width, height) {
        return img.clone();
    }
    if filter == PilFilter::Nearest {
        return nearest(img, width, height);
    }
    let horizontal = if img.width != width { resample_horizontal(img, width, filter) } else { img.clone() };
    if horizontal.height != height { resample_vertical(&horizontal, height, filter) } else { horizontal }
}

/// `img.resize((width, height), resample=filter)`. A zero-sized target gives an empty image.
pub fn pil_resize(img: &RgbImage, width: u32, height: u32, filter: PilFilter) -> RgbImage {
    pil_resize_raster(&Raster::from_rgb(img), width as usize, height as usize, filter)
        .into_rgb()
        .unwrap_or_else(|| RgbImage::new(width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 37 % 256) as u8, (y * 59 % 256) as u8, ((x * y) % 256) as u8]))
    }

    #[test]
    fn same_size_is_unchanged_and_flat_colour_stays_flat() {
        let img = gradient(9, 7);
        assert_eq!(pil_resize(&img, 9, 7, PilFilter::Lanczos), img);
        let flat = RgbImage::from_pixel(5, 3, image::Rgb([200, 10, 77]));
        for filter in [PilFilter::Nearest, PilFilter::Bilinear, PilFilter::Bicubic, PilFilter::Lanczos] {
            let out = pil_resize(&flat, 13, 8, filter);
            assert!(out.pixels().all(|p| p.0 == [200, 10, 77]), "{filter:?}");
            let out = pil_resize(&flat, 2, 2, filter);
            assert!(out.pixels().all(|p| p.0 == [200, 10, 77]), "{filter:?}");
        }
    }

    #[test]
    fn nearest_samples_pixel_centres() {
        let img = gradient(4, 1);
        let out = pil_resize(&img, 8, 1, PilFilter::Nearest);
        let xs: Vec<u8> = out.pixels().map(|p| p.0[0]).collect();
        let src: Vec<u8> = img.pixels().map(|p| p.0[0]).collect();
        assert_eq!(xs, vec![src[0], src[0], src[1], src[1], src[2], src[2], src[3], src[3]]);
        let out = pil_resize(&img, 3, 1, PilFilter::Nearest);
        // floor((x + 0.5) * 4/3): 0, 2, 3
        assert_eq!(out.pixels().map(|p| p.0[0]).collect::<Vec<_>>(), vec![src[0], src[2], src[3]]);
    }
}
