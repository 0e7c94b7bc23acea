//! A1111's `images.resize_image` for img2img init images (`resize_mode`): 0 just resize,
//! 1 crop and resize, 2 resize and fill. Mode 3 (latent upscale) happens in latent space and is not
//! offered. Resampling is Pillow's LANCZOS, exactly (A1111's `upscaler_for_img2img` is unset by
//! default).

use image::RgbImage;

use super::pil_ops::{crop, paste};
use super::pil_resize::{PilFilter, Raster, pil_resize_raster};

fn lanczos(img: &Raster, w: usize, h: usize) -> Raster {
    pil_resize_raster(img, w.max(1), h.max(1), PilFilter::Lanczos)
}

/// Mode 2 (and any other value): scale to fit, centre, fill the borders by stretching the edge
/// rows/columns.
fn fill(img: &Raster, width: usize, height: usize) -> Raster {
    let (iw, ih, w, h, ratio, src_ratio) = ratios(img, width, height);
    let src_w = if ratio < src_ratio { w } else { iw * h / ih };
    let src_h = if ratio >= src_ratio { h } else { ih * w / iw };
    let resized = lanczos(img, src_w, src_h);
    let mut out = Raster::blank(width, height, img.channels);
    paste(&mut out, &resized, (w as i64 - src_w as i64) / 2, (h as i64 - src_h as i64) / 2);
    let (sw, sh) = (src_w as i64, src_h as i64);
    if ratio < src_ratio {
        let fill = (h / 2) as i64 - (src_h / 2) as i64;
        if fill > 0 {
            let top = crop(&resized, 0, 0, sw, 1);
            let bottom = crop(&resized, 0, sh - 1, sw, sh);
            paste(&mut out, &lanczos(&top, width, fill as usize), 0, 0);
            paste(&mut out, &lanczos(&bottom, width, fill as usize), 0, fill + sh);
        }
    } else if ratio > src_ratio {
        let fill = (w / 2) as i64 - (src_w / 2) as i64;
        if fill > 0 {
            let left = crop(&resized, 0, 0, 1, sh);
            let right = crop(&resized, sw - 1, 0, sw, sh);
            paste(&mut out, &lanczos(&left, fill as usize, height), 0, 0);
            paste(&mut out, &lanczos(&right, fill as usize, height), fill + sw, 0);
        }
    }
    out
}

/// (source w, h, target w, h, target ratio, source ratio).
fn ratios(img: &Raster, width: usize, height: usize) -> (usize, usize, usize, usize, f64, f64) {
    let (iw, ih) = (img.width.max(1), img.height.max(1));
    let (w, h) = (width, height.max(1));
    (iw, ih, w, h, w as f64 / h as f64, iw as f64 / ih as f64)
}

/// Resizes an init image to `width` × `height` the way A1111's `resize_mode` says. Mode 3
/// ("latent upscale") never comes here: img2img encodes such an image as it is and resizes the
/// latent. Values other than 0 and 1 take A1111's `else` branch (mode 2).
pub fn resize_image(mode: i64, img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let out = resize_raster(mode, &Raster::from_rgb(img), width as usize, height as usize);
    RgbImage::from_raw(out.width as u32, out.height as u32, out.data).unwrap_or_else(|| RgbImage::new(width, height))
}

/// [`resize_image`] for any channel count (inpainting masks are single-channel).
pub fn resize_raster(mode: i64, img: &Raster, width: usize, height: usize) -> Raster {
    let (iw, ih, w, h, ratio, src_ratio) = ratios(img, width, height);
    match mode {
        0 => lanczos(img, width, height),
        1 => {
            // Scale to cover, centre, crop.
            let src_w = if ratio > src_ratio { w } else { iw * h / ih };
            let src_h = if ratio <= src_ratio { h } else { ih * w / iw };
            let resized = lanczos(img, src_w, src_h);
            let mut out = Raster::blank(width, height, img.channels);
            paste(&mut out, &resized, (w as i64 - src_w as i64) / 2, (h as i64 - src_h as i64) / 2);
            out
        }
        _ => fill(img, width, height),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Left half red, right half blue, 40×20.
    fn two_tone() -> RgbImage {
        RgbImage::from_fn(40, 20, |x, _| if x < 20 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) })
    }

    #[test]
    fn just_resize_stretches() {
        let out = resize_image(0, &two_tone(), 20, 20);
        assert_eq!(out.dimensions(), (20, 20));
        assert_eq!(out.get_pixel(2, 10)[0], 255);
        assert_eq!(out.get_pixel(17, 10)[2], 255);
    }

    #[test]
    fn crop_and_resize_keeps_the_centre() {
        // 40×20 → 20×20: scaled to 40×20 (covers), centre 20 columns kept: columns 10..30.
        let out = resize_image(1, &two_tone(), 20, 20);
        assert_eq!(out.dimensions(), (20, 20));
        assert_eq!(out.get_pixel(0, 10).0, [255, 0, 0], "left edge comes from source column 10 (red)");
        assert_eq!(out.get_pixel(19, 10).0, [0, 0, 255], "right edge from column 29 (blue)");
    }

    #[test]
    fn resize_and_fill_stretches_edges_into_the_border() {
        // 40×20 → 40×40: fits as 40×20 in the middle; rows above/below copy the edge rows.
        let out = resize_image(2, &two_tone(), 40, 40);
        assert_eq!(out.dimensions(), (40, 40));
        assert_eq!(out.get_pixel(2, 2).0, [255, 0, 0]);
        assert_eq!(out.get_pixel(37, 37).0, [0, 0, 255]);
    }

    #[test]
    fn other_modes_fill_as_a1111s_else_branch() {
        assert_eq!(resize_image(7, &two_tone(), 40, 40), resize_image(2, &two_tone(), 40, 40));
    }
}
