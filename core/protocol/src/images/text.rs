//! Text on images, for the labels A1111 draws on script grids (`images.get_font`: Roboto
//! Regular, the same file A1111 ships, Apache-2.0, `assets/fonts/`). Pillow renders it with
//! FreeType; this renders the same outlines with `ab_glyph` (unhinted, antialiased), so glyphs
//! can differ by a pixel of hinting while sizes, positions and layout follow Pillow's rules.

use std::sync::OnceLock;

use ab_glyph::{Font as _, FontRef, PxScale, ScaleFont, point};

use super::Raster;

static ROBOTO_BYTES: &[u8] = include_bytes!("../../assets/fonts/Roboto-Regular.ttf");

/// A TrueType font at any pixel size (Pillow's `ImageFont.truetype(file, size)`: `size` is the
/// em size in pixels).
pub struct Font {
    font: FontRef<'static>,
}

/// Ink box of a text drawn from the top-left of its line (Pillow's `textbbox((0, 0), text)`
/// with the default "la" anchor: y = 0 is the ascender line).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextBox {
    pub left: f32,
    pub top: f32,
    pub right: f32,
    pub bottom: f32,
}

impl TextBox {
    pub fn width(&self) -> f32 {
        self.right - self.left
    }
    pub fn height(&self) -> f32 {
        self.bottom - self.top
    }
}

impl Font {
    /// The bundled Roboto Regular (what A1111 uses when the `font` option is empty).
    pub fn roboto() -> &'static Font {
        static FONT: OnceLock<Font> = OnceLock::new();
        FONT.get_or_init(|| Font {
            // The bytes are compiled in and checked by the tests; a failure here is a build error.
            font: FontRef::try_from_slice(ROBOTO_BYTES).unwrap_or_else(|e| panic!("bundled font unreadable: {e}")),
        })
    }

    /// ab_glyph scales by ascent − descent; Pillow's size is the em square.
    fn scale(&self, size: f32) -> PxScale {
        let units = self.font.units_per_em().unwrap_or(1000.0);
        PxScale::from(size * self.font.height_unscaled() / units)
    }

    /// Ascender and descender in pixels (descender negative), FreeType's size metrics.
    pub fn metrics(&self, size: f32) -> (f32, f32) {
        let scaled = self.font.as_scaled(self.scale(size));
        (scaled.ascent(), scaled.descent())
    }

    /// Pillow's `textlength`: the sum of the glyph advances (Pillow's basic layout, no kerning).
    pub fn text_length(&self, text: &str, size: f32) -> f32 {
        let scaled = self.font.as_scaled(self.scale(size));
        text.chars().map(|c| scaled.h_advance(self.font.glyph_id(c))).sum()
    }

    /// Pillow's `textbbox((0, 0), text)`: from x = 0 to the advance or the ink, whichever
    /// reaches further, and from the ink's top to its bottom (y from the ascender line).
    pub fn text_box(&self, text: &str, size: f32) -> TextBox {
        let scaled = self.font.as_scaled(self.scale(size));
        let ascent = scaled.ascent();
        let (mut x, mut top, mut bottom, mut right) = (0.0f32, f32::MAX, f32::MIN, 0.0f32);
        for c in text.chars() {
            let id = self.font.glyph_id(c);
            let glyph = id.with_scale_and_position(self.scale(size), point(x, ascent));
            if let Some(outlined) = self.font.outline_glyph(glyph) {
                let b = outlined.px_bounds();
                top = top.min(b.min.y);
                bottom = bottom.max(b.max.y);
                right = right.max(b.max.x);
            }
            x += scaled.h_advance(id);
        }
        if top > bottom {
            // Only spaces: no ink; Pillow reports the line's ascender-to-baseline box.
            (top, bottom) = (0.0, ascent);
        }
        TextBox { left: 0.0, top, right: right.max(x), bottom }
    }

    /// Pillow's `text(xy, text, fill, anchor="mm")`: centred on `(x, y)` horizontally by the
    /// advance width and vertically halfway between ascender and descender; glyph coverage blends
    /// `color` over what is there.
    pub fn draw_centered(&self, image: &mut Raster, text: &str, size: f32, (x, y): (f32, f32), color: [u8; 3]) {
        let scale = self.scale(size);
        let (ascent, descent) = self.metrics(size);
        let baseline = y + (ascent + descent) / 2.0;
        let mut pen = x - self.text_length(text, size) / 2.0;
        let scaled = self.font.as_scaled(scale);
        for c in text.chars() {
            let id = self.font.glyph_id(c);
            let glyph = id.with_scale_and_position(scale, point(pen, baseline));
            pen += scaled.h_advance(id);
            let Some(outlined) = self.font.outline_glyph(glyph) else { continue };
            let bounds = outlined.px_bounds();
            outlined.draw(|gx, gy, coverage| {
                let px = bounds.min.x as i64 + i64::from(gx);
                let py = bounds.min.y as i64 + i64::from(gy);
                blend(image, px, py, color, coverage);
            });
        }
    }
}

/// `color` over the pixel at (x, y) with `coverage` in [0, 1] (outside the image: nothing).
fn blend(image: &mut Raster, x: i64, y: i64, color: [u8; 3], coverage: f32) {
    if x < 0 || y < 0 || x as usize >= image.width || y as usize >= image.height || image.channels < 3 {
        return;
    }
    let alpha = (coverage.clamp(0.0, 1.0) * 255.0).round() as u32;
    let at = (y as usize * image.width + x as usize) * image.channels;
    for (c, ink) in color.iter().enumerate() {
        let old = u32::from(image.data[at + c]);
        image.data[at + c] = ((old * (255 - alpha) + u32::from(*ink) * alpha + 127) / 255) as u8;
    }
}

/// Pillow's `line((x0, y, x1, y), fill, width=4)` for a horizontal line: the polygon from one row
/// above `y` to two below, `x0..=x1`.
pub fn horizontal_line(image: &mut Raster, x0: i64, x1: i64, y: i64, color: [u8; 3]) {
    for row in y - 1..=y + 2 {
        for x in x0.min(x1)..=x0.max(x1) {
            blend(image, x, row, color, 1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_font_is_a1111s_roboto() {
        // The glyph set and metrics of Roboto Regular (2048 units per em).
        let font = Font::roboto();
        assert_eq!(font.font.units_per_em(), Some(2048.0));
        assert!(font.font.glyph_id('A').0 != 0 && font.font.glyph_id('ß').0 != 0);
        // Pillow's size is the em square: an advance of u font units is u·size/2048 pixels.
        let units = font.font.h_advance_unscaled(font.font.glyph_id('0'));
        assert!((font.text_length("0", 20.0) - units * 20.0 / 2048.0).abs() < 1e-3);
        assert!(font.text_length("a cat", 20.0) > font.text_length("a", 20.0));
    }

    #[test]
    fn boxes_follow_the_ink() {
        let font = Font::roboto();
        let tall = font.text_box("Ag", 40.0);
        let short = font.text_box("ace", 40.0);
        assert!(tall.height() > short.height(), "descender and capital: {tall:?} vs {short:?}");
        assert!(short.top > tall.top, "x-height letters start lower");
        assert!((tall.right - font.text_length("Ag", 40.0)).abs() < 3.0);
    }

    #[test]
    fn centred_text_lands_around_its_anchor() {
        let mut image = Raster { width: 200, height: 80, channels: 3, data: vec![255; 200 * 80 * 3] };
        Font::roboto().draw_centered(&mut image, "HH", 40.0, (100.0, 40.0), [0, 0, 0]);
        let dark: Vec<(usize, usize)> = (0..80)
            .flat_map(|y| (0..200).map(move |x| (x, y)))
            .filter(|&(x, y)| image.data[(y * 200 + x) * 3] < 128)
            .collect();
        let (xs, ys): (Vec<usize>, Vec<usize>) = dark.iter().copied().unzip();
        let mid = |v: &[usize]| (v.iter().min().unwrap() + v.iter().max().unwrap()) as f32 / 2.0;
        assert!((mid(&xs) - 100.0).abs() < 3.0, "horizontal centre {}", mid(&xs));
        // Capitals sit above the ascender/descender midline's centre by design; within a few px.
        assert!((mid(&ys) - 40.0).abs() < 8.0, "vertical centre {}", mid(&ys));
    }
}
