//! A1111's built-in pixel upscalers (`modules/upscaler.py`) and the resize that calls them
//! (`images.resize_image`'s inner `resize`). Model upscalers (ESRGAN and kin) are not built in.

use image::RgbImage;

use super::pil_resize::{PilFilter, Raster, pil_resize_raster};

/// `UpscalerNone`, `UpscalerLanczos`, `UpscalerNearest`: the single source of their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinUpscaler {
    None,
    Lanczos,
    Nearest,
}

impl BuiltinUpscaler {
    /// In A1111's `sd_upscalers` order.
    pub const ALL: [BuiltinUpscaler; 3] = [BuiltinUpscaler::None, BuiltinUpscaler::Lanczos, BuiltinUpscaler::Nearest];

    pub fn name(self) -> &'static str {
        match self {
            BuiltinUpscaler::None => "None",
            BuiltinUpscaler::Lanczos => "Lanczos",
            BuiltinUpscaler::Nearest => "Nearest",
        }
    }

    /// Exact name match, as A1111 compares `x.name == upscaler_name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|u| u.name() == name)
    }

    /// One `do_upscale` step at `scale`.
    fn step(self, img: &Raster, scale: f64) -> Raster {
        let (w, h) = ((img.width as f64 * scale) as usize, (img.height as f64 * scale) as usize);
        match self {
            BuiltinUpscaler::None => img.clone(),
            BuiltinUpscaler::Lanczos => pil_resize_raster(img, w, h, PilFilter::Lanczos),
            BuiltinUpscaler::Nearest => pil_resize_raster(img, w, h, PilFilter::Nearest),
        }
    }

    /// `Upscaler.upscale` with this upscaler's steps (see [`upscale_loop`]).
    pub fn upscale(self, img: &Raster, scale: f64) -> Raster {
        match upscale_loop(img, scale, |i| Ok::<_, std::convert::Infallible>(self.step(i, scale))) {
            Ok(out) => out,
            Err(never) => match never {},
        }
    }
}

/// `Upscaler.upscale(img, scale)` with any `do_upscale` step (a built-in resize, a model): the
/// target is `floor(size * scale / 8) * 8`; up to three steps while the image is smaller (a step
/// that changes nothing ends it), then Lanczos to the target.
pub fn upscale_loop<E>(
    img: &Raster,
    scale: f64,
    mut step: impl FnMut(&Raster) -> Result<Raster, E>,
) -> Result<Raster, E> {
    let dest_w = ((img.width as f64 * scale) / 8.0).floor() as usize * 8;
    let dest_h = ((img.height as f64 * scale) / 8.0).floor() as usize * 8;
    let mut img = img.clone();
    for i in 0..3 {
        if img.width >= dest_w && img.height >= dest_h && (i > 0 || scale != 1.0) {
            break;
        }
        let before = img.dimensions();
        img = step(&img)?;
        if img.dimensions() == before {
            break;
        }
    }
    if img.dimensions() != (dest_w, dest_h) {
        img = pil_resize_raster(&img, dest_w, dest_h, PilFilter::Lanczos);
    }
    Ok(img)
}

/// An upscaler's `Upscaler.upscale(img, scale)`.
pub type UpscaleFn<'a, E> = dyn FnMut(&Raster, f64) -> Result<Raster, E> + 'a;

/// `resize_image`'s inner `resize(im, w, h)` with an upscaler given as its `Upscaler.upscale`
/// (`None`: a plain Lanczos resize): it runs when the image grows, and Lanczos makes the exact size.
pub fn resize_with<E>(
    img: &Raster,
    width: usize,
    height: usize,
    upscale: Option<&mut UpscaleFn<'_, E>>,
) -> Result<Raster, E> {
    let Some(upscale) = upscale else {
        return Ok(pil_resize_raster(img, width, height, PilFilter::Lanczos));
    };
    let scale = (width as f64 / img.width.max(1) as f64).max(height as f64 / img.height.max(1) as f64);
    let up = if scale > 1.0 { upscale(img, scale)? } else { img.clone() };
    Ok(if up.dimensions() != (width, height) { pil_resize_raster(&up, width, height, PilFilter::Lanczos) } else { up })
}

/// `resize_image(0, …)` with a built-in upscaler ("None" and `None` are a plain Lanczos resize).
pub fn resize_with_upscaler(img: &RgbImage, width: u32, height: u32, upscaler: Option<BuiltinUpscaler>) -> RgbImage {
    let raster = Raster::from_rgb(img);
    let (w, h) = (width as usize, height as usize);
    let out = match upscaler {
        None | Some(BuiltinUpscaler::None) => resize_with::<std::convert::Infallible>(&raster, w, h, None),
        Some(u) => resize_with(&raster, w, h, Some(&mut |i: &Raster, scale: f64| Ok(u.upscale(i, scale)))),
    };
    match out {
        Ok(r) => r.into_rgb().unwrap_or_else(|| RgbImage::new(width, height)),
        Err(never) => match never {},
    }
}

/// Pillow's `Image.blend(a, b, alpha)` on 8-bit pixels: `a + alpha·(b − a)` in float, truncated
/// and clipped; alpha 0 and 1 copy an input.
pub fn pil_blend(a: &Raster, b: &Raster, alpha: f32) -> Raster {
    if alpha == 0.0 {
        return a.clone();
    }
    if alpha == 1.0 {
        return b.clone();
    }
    let data = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| {
            let t = f32::from(x) + alpha * (f32::from(y) - f32::from(x));
            if t <= 0.0 {
                0
            } else if t >= 255.0 {
                255
            } else {
                t as u8
            }
        })
        .collect();
    Raster { data, ..a.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blend_truncates_like_pillow() {
        let a = Raster { width: 1, height: 1, channels: 3, data: vec![0, 100, 255] };
        let b = Raster { width: 1, height: 1, channels: 3, data: vec![255, 101, 0] };
        assert_eq!(pil_blend(&a, &b, 0.5).data, vec![127, 100, 127]);
        assert_eq!(pil_blend(&a, &b, 0.0), a);
        assert_eq!(pil_blend(&a, &b, 1.0), b);
    }

    #[test]
    fn names_round_trip() {
        for u in BuiltinUpscaler::ALL {
            assert_eq!(BuiltinUpscaler::from_name(u.name()), Some(u));
        }
        assert_eq!(BuiltinUpscaler::from_name("lanczos"), None, "A1111 matches names exactly");
    }

    #[test]
    fn upscale_targets_multiples_of_eight() {
        let img = RgbImage::from_fn(10, 6, |x, y| image::Rgb([(x * 20) as u8, (y * 40) as u8, 9]));
        // 10 × 2.5 = 25 → 24; 6 × 2.5 = 15 → 8.
        let out = BuiltinUpscaler::Nearest.upscale(&Raster::from_rgb(&img), 2.5);
        assert_eq!(out.dimensions(), (24, 8));
        assert_eq!(resize_with_upscaler(&img, 25, 15, Some(BuiltinUpscaler::Lanczos)).dimensions(), (25, 15));
    }
}
