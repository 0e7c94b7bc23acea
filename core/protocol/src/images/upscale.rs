//! A1111's built-in pixel upscalers (`modules/upscaler.py`) and the resize that calls them
//! (`images.resize_image`'s inner `resize`). Model upscalers (ESRGAN and kin) are not built in.

use image::RgbImage;

use super::pil_resize::{PilFilter, pil_resize};

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
    fn step(self, img: &RgbImage, scale: f64) -> RgbImage {
        let (w, h) = ((f64::from(img.width()) * scale) as u32, (f64::from(img.height()) * scale) as u32);
        match self {
            BuiltinUpscaler::None => img.clone(),
            BuiltinUpscaler::Lanczos => pil_resize(img, w, h, PilFilter::Lanczos),
            BuiltinUpscaler::Nearest => pil_resize(img, w, h, PilFilter::Nearest),
        }
    }

    /// `Upscaler.upscale`: the target is `floor(size * scale / 8) * 8`; up to three steps while
    /// the image is smaller (a step that changes nothing ends it), then Lanczos to the target.
    pub fn upscale(self, img: &RgbImage, scale: f64) -> RgbImage {
        let dest_w = ((f64::from(img.width()) * scale) / 8.0).floor() as u32 * 8;
        let dest_h = ((f64::from(img.height()) * scale) / 8.0).floor() as u32 * 8;
        let mut img = img.clone();
        for i in 0..3 {
            if img.width() >= dest_w && img.height() >= dest_h && (i > 0 || scale != 1.0) {
                break;
            }
            let before = img.dimensions();
            img = self.step(&img, scale);
            if img.dimensions() == before {
                break;
            }
        }
        if img.dimensions() != (dest_w, dest_h) {
            img = pil_resize(&img, dest_w, dest_h, PilFilter::Lanczos);
        }
        img
    }
}

/// `resize_image`'s inner `resize(im, w, h)`: without an upscaler (or "None") a plain Lanczos
/// resize; otherwise the upscaler runs when the image grows, and Lanczos makes the exact size.
pub fn resize_with_upscaler(img: &RgbImage, width: u32, height: u32, upscaler: Option<BuiltinUpscaler>) -> RgbImage {
    let upscaler = match upscaler {
        None | Some(BuiltinUpscaler::None) => return pil_resize(img, width, height, PilFilter::Lanczos),
        Some(u) => u,
    };
    let scale =
        (f64::from(width) / f64::from(img.width().max(1))).max(f64::from(height) / f64::from(img.height().max(1)));
    let img = if scale > 1.0 { upscaler.upscale(img, scale) } else { img.clone() };
    if img.dimensions() != (width, height) { pil_resize(&img, width, height, PilFilter::Lanczos) } else { img }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let out = BuiltinUpscaler::Nearest.upscale(&img, 2.5);
        assert_eq!(out.dimensions(), (24, 8));
        assert_eq!(resize_with_upscaler(&img, 25, 15, Some(BuiltinUpscaler::Lanczos)).dimensions(), (25, 15));
    }
}
