//! Bit-exact ports of the Pillow operations used by AUTOMATIC1111's inpainting path
//! (`modules/masking.py::fill`, mask bounding box, cropping and pasting).
//!
//! Every function reproduces Pillow's integer arithmetic (its `MULDIV255`/`DIV255` shortcuts,
//! the fixed-point box blur, truncating divisions), so results match the web UI byte for byte
//! rather than "within one level".
//!
//! Inputs are expected to be well formed (`data.len() == width * height * channels`). Nothing
//! here panics on bad input: where Pillow would raise (malformed raster, mode or size mismatch)
//! producing functions return an empty 0×0 raster and mutating functions leave their
//! destination untouched.

use super::pil_resize::Raster;

/// `x * y / 255` rounded, computed the way Pillow's `MULDIV255` macro does.
fn muldiv255(a: u32, b: u32) -> u32 {
    div255(a * b)
}

/// `x / 255` rounded, Pillow's `DIV255` (add 128, then the `(t >> 8 + t) >> 8` trick).
fn div255(a: u32) -> u32 {
    shift_div255(a + 128)
}

/// Pillow's `SHIFTFORDIV255`: approximates `/ 255` for values that already include rounding.
fn shift_div255(t: u32) -> u32 {
    ((t >> 8) + t) >> 8
}

/// Byte length a raster of these dimensions must have, `None` on overflow.
fn byte_len(width: usize, height: usize, channels: usize) -> Option<usize> {
    width.checked_mul(height)?.checked_mul(channels)
}

fn is_well_formed(img: &Raster) -> bool {
    byte_len(img.width, img.height, img.channels) == Some(img.data.len())
}

/// The 0×0 result returned where Pillow would raise.
fn empty(channels: usize) -> Raster {
    Raster { width: 0, height: 0, channels, data: Vec::new() }
}

/// A zero-filled raster, like Pillow's `Image.new(mode, size)` (black, alpha 0).
fn zeroed(width: usize, height: usize, channels: usize) -> Raster {
    let len = byte_len(width, height, channels).unwrap_or(0);
    Raster { width, height, channels, data: vec![0; len] }
}

/// Applies `f` to every pixel of a well-formed `img`, producing an image with `out_channels`.
fn map_pixels(img: &Raster, out_channels: usize, f: impl Fn(&[u8], &mut [u8])) -> Raster {
    let mut out = zeroed(img.width, img.height, out_channels);
    if img.channels == 0 || out_channels == 0 {
        return out;
    }
    for (src, dst) in img.data.chunks_exact(img.channels).zip(out.data.chunks_exact_mut(out_channels)) {
        f(src, dst);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Mode conversions
// ---------------------------------------------------------------------------------------------

/// ITU-R 601-2 luma in Pillow's 16-bit fixed point (`L24` in Convert.c), rounded by `+0x8000`.
fn luma(r: u8, g: u8, b: u8) -> u8 {
    let sum = u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000;
    (sum >> 16) as u8
}

/// Pillow `convert("L")`: RGB/RGBA use the fixed-point 601-2 luma (alpha ignored), LA keeps its
/// L channel, and L is returned as is. The fixed-point weights differ from a float formula by
/// one level on many colours, which is why they are reproduced exactly.
pub fn to_luma(img: &Raster) -> Raster {
    if !is_well_formed(img) {
        return empty(1);
    }
    match img.channels {
        1 => img.clone(),
        2 => map_pixels(img, 1, |p, o| o[0] = p[0]),
        3 | 4 => map_pixels(img, 1, |p, o| o[0] = luma(p[0], p[1], p[2])),
        _ => empty(1),
    }
}

/// Pillow `convert("RGBa")` from RGBA: colour channels multiplied by alpha with `MULDIV255`
/// rounding. Inputs that are not 4-channel are returned unchanged.
pub fn premultiply(rgba: &Raster) -> Raster {
    if !is_well_formed(rgba) {
        return empty(4);
    }
    if rgba.channels != 4 {
        return rgba.clone();
    }
    map_pixels(rgba, 4, |p, o| {
        let alpha = u32::from(p[3]);
        for c in 0..3 {
            o[c] = muldiv255(u32::from(p[c]), alpha) as u8;
        }
        o[3] = p[3];
    })
}

/// Pillow `convert("RGBA")` from RGBa: colour is `255 * c / alpha` truncated and clipped to 255,
/// left untouched when alpha is 0 or 255. Inputs that are not 4-channel are returned unchanged.
pub fn unpremultiply(rgba_pre: &Raster) -> Raster {
    if !is_well_formed(rgba_pre) {
        return empty(4);
    }
    if rgba_pre.channels != 4 {
        return rgba_pre.clone();
    }
    map_pixels(rgba_pre, 4, |p, o| {
        let alpha = u32::from(p[3]);
        for c in 0..3 {
            o[c] = if alpha == 0 || alpha == 255 { p[c] } else { (255 * u32::from(p[c]) / alpha).min(255) as u8 };
        }
        o[3] = p[3];
    })
}

/// Pillow `convert("RGBA")` from L, LA, RGB or RGBA (`l2rgb`, `la2rgb`, `rgb2rgba`, copy).
fn to_rgba(img: &Raster) -> Option<Raster> {
    if !is_well_formed(img) {
        return None;
    }
    let out = match img.channels {
        1 => map_pixels(img, 4, |p, o| o.copy_from_slice(&[p[0], p[0], p[0], 255])),
        2 => map_pixels(img, 4, |p, o| o.copy_from_slice(&[p[0], p[0], p[0], p[1]])),
        3 => map_pixels(img, 4, |p, o| o.copy_from_slice(&[p[0], p[1], p[2], 255])),
        4 => img.clone(),
        _ => return None,
    };
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Paste, composite, bbox, crop
// ---------------------------------------------------------------------------------------------

/// One axis of a paste after clipping: destination start, source start, length.
struct Span {
    dst: usize,
    src: usize,
    len: usize,
}

/// Clips a source run of `src_len` placed at `offset` against a destination of `dst_len`,
/// the way `ImagingPaste` does; `None` when nothing overlaps.
fn clip_span(offset: i64, src_len: usize, dst_len: usize) -> Option<Span> {
    let offset = i128::from(offset);
    let (src_len, dst_len) = (src_len as i128, dst_len as i128);
    let src_start = (-offset).max(0);
    let dst_start = offset.max(0);
    let len = (src_len - src_start).min(dst_len - dst_start);
    if len <= 0 {
        return None;
    }
    Some(Span { dst: usize::try_from(dst_start).ok()?, src: usize::try_from(src_start).ok()?, len: len as usize })
}

/// Runs `f(dst_row, src_row, src_y, src_x)` over the overlapping rows of a paste at (x, y);
/// does nothing when the rasters are malformed, differ in channels, or don't overlap.
fn for_each_paste_row(
    dst: &mut Raster,
    src: &Raster,
    x: i64,
    y: i64,
    mut f: impl FnMut(&mut [u8], &[u8], usize, usize),
) {
    if !is_well_formed(dst) || !is_well_formed(src) || dst.channels != src.channels || dst.channels == 0 {
        return;
    }
    let (Some(xs), Some(ys)) = (clip_span(x, src.width, dst.width), clip_span(y, src.height, dst.height)) else {
        return;
    };
    let c = dst.channels;
    for row in 0..ys.len {
        let d = ((ys.dst + row) * dst.width + xs.dst) * c;
        let s = ((ys.src + row) * src.width + xs.src) * c;
        let (Some(d_row), Some(s_row)) = (dst.data.get_mut(d..d + xs.len * c), src.data.get(s..s + xs.len * c)) else {
            return;
        };
        f(d_row, s_row, ys.src + row, xs.src);
    }
}

/// Pillow `dst.paste(src, (x, y))` without mask: a plain copy of the overlapping region
/// (no blending, alpha included). Source and destination must have the same channel count.
pub fn paste(dst: &mut Raster, src: &Raster, x: i64, y: i64) {
    for_each_paste_row(dst, src, x, y, |d, s, _, _| d.copy_from_slice(s));
}

/// Pillow `dst.paste(src, (x, y), mask)`: every channel, alpha included, becomes
/// `DIV255(dst * (255 - m) + src * m)` (Pillow's `BLEND`), so RGBA and RGBa behave alike.
/// `mask` has src's size; 1 channel is an "L" mask, 2 or 4 channels use their last channel
/// like Pillow's "LA"/"RGBA" masks. Mismatched inputs leave `dst` unchanged.
pub fn paste_with_mask(dst: &mut Raster, src: &Raster, mask: &Raster, x: i64, y: i64) {
    let mask_ok = is_well_formed(mask)
        && mask.width == src.width
        && mask.height == src.height
        && matches!(mask.channels, 1 | 2 | 4);
    if !mask_ok {
        return;
    }
    let (c, mc) = (src.channels, mask.channels);
    for_each_paste_row(dst, src, x, y, |d_row, s_row, src_y, src_x| {
        let start = (src_y * mask.width + src_x) * mc;
        let Some(m_row) = mask.data.get(start..start + d_row.len() / c * mc) else {
            return;
        };
        for ((d, s), m) in d_row.chunks_exact_mut(c).zip(s_row.chunks_exact(c)).zip(m_row.chunks_exact(mc)) {
            let a = u32::from(m[mc - 1]);
            for (dv, &sv) in d.iter_mut().zip(s) {
                *dv = div255(u32::from(*dv) * (255 - a) + u32::from(sv) * a) as u8;
            }
        }
    });
}

/// Extra fixed-point bits `ImagingAlphaComposite` keeps in its blend coefficients.
const COMPOSITE_PRECISION_BITS: u32 = 7;

/// Pillow's "over" operator for one straight-alpha pixel, with its 7-bit fixed-point
/// coefficients and `SHIFTFORDIV255` rounding.
fn composite_pixel(dst: &mut [u8], src: &[u8]) {
    let src_a = u32::from(src[3]);
    if src_a == 0 {
        return;
    }
    let blend = u32::from(dst[3]) * (255 - src_a);
    let out_a255 = src_a * 255 + blend;
    let coef1 = src_a * 255 * 255 * (1 << COMPOSITE_PRECISION_BITS) / out_a255;
    let coef2 = 255 * (1 << COMPOSITE_PRECISION_BITS) - coef1;
    for c in 0..3 {
        let tmp = u32::from(src[c]) * coef1 + u32::from(dst[c]) * coef2;
        dst[c] = (shift_div255(tmp + (0x80 << COMPOSITE_PRECISION_BITS)) >> COMPOSITE_PRECISION_BITS) as u8;
    }
    dst[3] = shift_div255(out_a255 + 0x80) as u8;
}

/// Pillow `dst.alpha_composite(src)` for two RGBA images of the same size
/// (`ImagingAlphaComposite`'s integer math, which differs from float "over" by a level).
/// Mismatched inputs leave `dst` unchanged.
pub fn alpha_composite(dst: &mut Raster, src: &Raster) {
    let ok = is_well_formed(dst)
        && is_well_formed(src)
        && dst.channels == 4
        && src.channels == 4
        && (dst.width, dst.height) == (src.width, src.height);
    if !ok {
        return;
    }
    for (d, s) in dst.data.chunks_exact_mut(4).zip(src.data.chunks_exact(4)) {
        composite_pixel(d, s);
    }
}

/// Pillow `getbbox()`: `(x1, y1, x2, y2)` of the non-zero pixels, exclusive end, `None` when
/// there are none. 1 and 3 channels test every byte; 2 and 4 channels (LA/RGBA) test only
/// alpha, as Pillow's default `alpha_only=True` does.
pub fn bbox(mask: &Raster) -> Option<(usize, usize, usize, usize)> {
    if !is_well_formed(mask) || mask.channels == 0 || mask.width == 0 {
        return None;
    }
    let c = mask.channels;
    let alpha_only = matches!(c, 2 | 4);
    let set = |p: &[u8]| if alpha_only { p[c - 1] != 0 } else { p.iter().any(|&v| v != 0) };
    let (mut x1, mut y1, mut x2, mut y2) = (usize::MAX, usize::MAX, 0, 0);
    for (y, row) in mask.data.chunks_exact(mask.width * c).enumerate() {
        let Some(first) = row.chunks_exact(c).position(set) else { continue };
        let last = row.chunks_exact(c).rposition(set).unwrap_or(first);
        x1 = x1.min(first);
        x2 = x2.max(last + 1);
        y1 = y1.min(y);
        y2 = y + 1;
    }
    (y1 != usize::MAX).then_some((x1, y1, x2, y2))
}

/// Pillow `crop((x1, y1, x2, y2))`: a `(x2 - x1) × (y2 - y1)` image where areas outside the
/// source are zero (alpha 0 too). A reversed box gives an empty side instead of an error.
pub fn crop(img: &Raster, x1: i64, y1: i64, x2: i64, y2: i64) -> Raster {
    if !is_well_formed(img) {
        return empty(img.channels);
    }
    let side = |a: i64, b: i64| usize::try_from(i128::from(b) - i128::from(a)).unwrap_or(0);
    let (width, height) = (side(x1, x2), side(y1, y2));
    // Pillow's coordinates are C ints; larger boxes fail there and would not fit in memory here.
    let too_big = width > i32::MAX as usize || height > i32::MAX as usize;
    if too_big || byte_len(width, height, img.channels).is_none_or(|len| len > isize::MAX as usize) {
        return empty(img.channels);
    }
    let mut out = zeroed(width, height, img.channels);
    // Pasting the source at the negated origin copies exactly the overlap.
    paste(&mut out, img, x1.saturating_neg(), y1.saturating_neg());
    out
}

// ---------------------------------------------------------------------------------------------
// Gaussian blur (BoxBlur.c)
// ---------------------------------------------------------------------------------------------

/// Number of box-blur passes Pillow's `GaussianBlur` uses per direction.
const BLUR_PASSES: i32 = 3;

/// Radius of the extended box whose `passes`-fold repetition has the Gaussian's variance
/// (Gwosdek et al.), computed with the same float/double mix as Pillow's C code.
fn gaussian_box_radius(radius: f32, passes: i32) -> f32 {
    let sigma2 = radius * radius / passes as f32;
    let box_len = (12.0 * f64::from(sigma2) + 1.0).sqrt() as f32;
    let l = ((f64::from(box_len) - 1.0) / 2.0).floor() as f32;
    let a = (2.0 * l + 1.0) * (l * (l + 1.0) - 3.0 * sigma2);
    let a = a / (6.0 * (sigma2 - (l + 1.0) * (l + 1.0)));
    l + a
}

/// Fixed-point weights of one extended box pass: the `2r+1` inner taps weigh `inner`, the two
/// fractional outer taps weigh `outer`, all in units of 2^-24.
struct BoxKernel {
    radius: i64,
    inner: u32,
    outer: u32,
}

impl BoxKernel {
    /// Mirrors `ImagingHorizontalBoxBlur`: float division truncated to an integer weight, and
    /// unsigned (wrapping) C arithmetic for the outer weight.
    fn new(float_radius: f32) -> Self {
        // C `(int)` truncation (saturating here where C is undefined; never negative here).
        let radius = (float_radius as i32).max(0);
        let inner = (16_777_216.0f32 / (float_radius * 2.0 + 1.0)) as u32;
        let taps = (radius as u32).wrapping_mul(2).wrapping_add(1);
        let outer = (1u32 << 24).wrapping_sub(taps.wrapping_mul(inner)) / 2;
        Self { radius: i64::from(radius), inner, outer }
    }
}

/// One extended box pass along a line of `n = src.len() / lanes` elements, each `lanes`
/// contiguous bytes blurred independently: a pixel's channels for a horizontal pass, a whole
/// row for a vertical one (equal to Pillow's transpose + horizontal pass, without the copies).
/// Elements beyond either end repeat the edge element; sums wrap like Pillow's `UINT32`s.
fn box_pass(src: &[u8], dst: &mut [u8], lanes: usize, k: &BoxKernel, acc: &mut Vec<u32>) {
    // Constant lane counts let the compiler unroll the per-pixel loops of horizontal passes.
    match lanes {
        1 => box_pass_lanes(src, dst, 1, k, acc),
        3 => box_pass_lanes(src, dst, 3, k, acc),
        4 => box_pass_lanes(src, dst, 4, k, acc),
        _ => box_pass_lanes(src, dst, lanes, k, acc),
    }
}

#[inline(always)]
fn box_pass_lanes(src: &[u8], dst: &mut [u8], lanes: usize, k: &BoxKernel, acc: &mut Vec<u32>) {
    let n = src.len() / lanes;
    if lanes == 0 || n == 0 || dst.len() != src.len() {
        return;
    }
    let last = n as i64 - 1;
    let elem = |i: i64| {
        let start = i.clamp(0, last) as usize * lanes;
        &src[start..start + lanes]
    };
    let r = k.radius;
    // Window sum centred on element -1, built like Pillow's (at most `n` reads for huge radii).
    let edge_a = (r + 1).min(n as i64);
    acc.clear();
    acc.extend(elem(0).iter().map(|&v| u32::from(v).wrapping_mul((r + 1) as u32)));
    for x in 0..edge_a - 1 {
        add_to(acc, elem(x), 1);
    }
    add_to(acc, elem(last), (r + 1 - edge_a) as u32);

    for (x, out) in dst.chunks_exact_mut(lanes).enumerate() {
        let x = x as i64;
        let (left, entering, right) = (elem(x - r - 1), elem(x + r), elem(x + r + 1));
        let lanes_iter = acc.iter_mut().zip(out).zip(left).zip(entering).zip(right);
        for ((((sum, o), &l), &e), &rt) in lanes_iter {
            *sum = sum.wrapping_add(u32::from(e)).wrapping_sub(u32::from(l));
            let far = u32::from(l) + u32::from(rt);
            let bulk = sum.wrapping_mul(k.inner).wrapping_add(far.wrapping_mul(k.outer));
            *o = (bulk.wrapping_add(1 << 23) >> 24) as u8;
        }
    }
}

/// `acc += weight * values`, lane by lane, with C's unsigned wrap-around.
fn add_to(acc: &mut [u32], values: &[u8], weight: u32) {
    for (sum, &v) in acc.iter_mut().zip(values) {
        *sum = sum.wrapping_add(u32::from(v).wrapping_mul(weight));
    }
}

/// Pillow `img.filter(ImageFilter.GaussianBlur(radius))` for any channel count, RGBa included
/// (Pillow blurs the stored bytes as they are, so blur premultiplied data for correct edges).
/// Three extended box passes horizontally, then three vertically, with 24-bit fixed-point
/// weights and rounding after every pass; radius 0 returns a copy. O(pixels) for any radius.
pub fn gaussian_blur(img: &Raster, radius: f64) -> Raster {
    if !is_well_formed(img) {
        return empty(img.channels);
    }
    // Pillow receives the radius as a C float.
    let box_radius = gaussian_box_radius(radius as f32, BLUR_PASSES);
    let (w, c) = (img.width, img.channels);
    let mut out = img.clone();
    // Pillow skips a zero-radius blur (older versions ran it, which is also an identity) and
    // rejects negative ones, which the Gaussian conversion never produces.
    if box_radius <= 0.0 || out.data.is_empty() {
        return out;
    }
    let kernel = BoxKernel::new(box_radius);
    let mut acc = Vec::new();
    // Horizontal passes, row by row (rows are independent), ping-ponging with a scratch row.
    let mut scratch = vec![0u8; w * c];
    for row in out.data.chunks_exact_mut(w * c) {
        for _ in 0..BLUR_PASSES {
            box_pass(row, &mut scratch, c, &kernel, &mut acc);
            row.copy_from_slice(&scratch);
        }
    }
    // Vertical passes: each element of the line is a whole row.
    let mut other = vec![0u8; out.data.len()];
    for _ in 0..BLUR_PASSES {
        box_pass(&out.data, &mut other, w * c, &kernel, &mut acc);
        std::mem::swap(&mut out.data, &mut other);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// AUTOMATIC1111 masking.fill
// ---------------------------------------------------------------------------------------------

/// Blur radii and repeat counts of `modules/masking.py::fill`, coarse to fine.
const FILL_STEPS: [(f64, usize); 6] = [(256.0, 1), (64.0, 1), (16.0, 2), (4.0, 4), (2.0, 2), (0.0, 1)];

/// AUTOMATIC1111 `masking.fill(image, mask)` ("latent nothing"/fill inpainting pre-fill):
/// the unmasked colours are smeared into the masked area by compositing ever-sharper
/// premultiplied blurs. `image` is L, LA, RGB or RGBA (converted to RGBA like
/// `image.convert("RGBA")`), `mask` is of the same size (converted with `convert("L")` when not
/// 1-channel). Returns RGB; a 0×0 raster when the sizes or modes don't fit (Pillow raises).
pub fn masking_fill(image: &Raster, mask: &Raster) -> Raster {
    let Some(rgba) = to_rgba(image) else {
        return empty(3);
    };
    let mask_l = to_luma(mask);
    if (mask_l.width, mask_l.height) != (image.width, image.height) || !is_well_formed(&mask_l) {
        return empty(3);
    }
    // Keep the unmasked part: paste with the inverted mask onto a blank RGBa image.
    let keep = Raster { data: mask_l.data.iter().map(|&v| 255 - v).collect(), ..mask_l };
    let mut masked = zeroed(image.width, image.height, 4);
    paste_with_mask(&mut masked, &premultiply(&rgba), &keep, 0, 0);

    let mut filled = zeroed(image.width, image.height, 4);
    for (radius, repeats) in FILL_STEPS {
        let blurred = unpremultiply(&gaussian_blur(&masked, radius));
        for _ in 0..repeats {
            alpha_composite(&mut filled, &blurred);
        }
    }
    // `convert("RGB")` from RGBA simply drops alpha.
    map_pixels(&filled, 3, |p, o| o.copy_from_slice(&p[..3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raster(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Raster {
        Raster { width, height, channels, data }
    }

    #[test]
    fn luma_matches_pillow_fixed_point() {
        // Pillow: Image.new("RGB", (1, 1), (10, 200, 30)).convert("L") -> 124
        let out = to_luma(&raster(1, 1, 3, vec![10, 200, 30]));
        assert_eq!(out.data, vec![124]);
        assert_eq!(to_luma(&raster(1, 1, 4, vec![255, 255, 255, 0])).data, vec![255]);
    }

    #[test]
    fn premultiply_roundtrip_matches_pillow() {
        // Pillow: RGBA (200, 100, 50, 128) -> RGBa (100, 50, 25, 128) -> RGBA (199, 99, 49, 128)
        let pre = premultiply(&raster(1, 1, 4, vec![200, 100, 50, 128]));
        assert_eq!(pre.data, vec![100, 50, 25, 128]);
        assert_eq!(unpremultiply(&pre).data, vec![199, 99, 49, 128]);
        // Invalid premultiplied data clips at 255: 255 * 200 / 100 -> 255.
        assert_eq!(unpremultiply(&raster(1, 1, 4, vec![200, 0, 0, 100])).data, vec![255, 0, 0, 100]);
    }

    #[test]
    fn bbox_of_small_mask() {
        let mut mask = raster(5, 4, 1, vec![0; 20]);
        assert_eq!(bbox(&mask), None);
        mask.data[5 + 3] = 7; // (3, 1)
        mask.data[10 + 1] = 255; // (1, 2)
        assert_eq!(bbox(&mask), Some((1, 1, 4, 3)));
    }

    #[test]
    fn paste_clips_to_destination() {
        let mut dst = raster(3, 3, 1, vec![0; 9]);
        let src = raster(2, 2, 1, vec![1, 2, 3, 4]);
        paste(&mut dst, &src, 2, -1);
        assert_eq!(dst.data, vec![0, 0, 3, 0, 0, 0, 0, 0, 0]);
        paste(&mut dst, &src, 5, 5); // no overlap: untouched
        assert_eq!(dst.data, vec![0, 0, 3, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn masked_paste_blends_all_channels() {
        // BLEND(128, 0, 255) = DIV255(255 * 128) = 128, alpha included.
        let mut dst = raster(1, 1, 4, vec![0; 4]);
        paste_with_mask(&mut dst, &raster(1, 1, 4, vec![255; 4]), &raster(1, 1, 1, vec![128]), 0, 0);
        assert_eq!(dst.data, vec![128; 4]);
    }

    #[test]
    fn crop_fills_outside_with_zero() {
        let img = raster(2, 1, 1, vec![9, 8]);
        assert_eq!(crop(&img, -1, 0, 2, 2).data, vec![0, 9, 8, 0, 0, 0]);
        assert_eq!(crop(&img, 1, 0, 0, 1).width, 0);
    }

    #[test]
    fn blur_keeps_flat_images_and_tiny_sizes() {
        let flat = raster(3, 2, 4, vec![77; 24]);
        for radius in [0.0, 0.5, 2.0, 256.0] {
            assert_eq!(gaussian_blur(&flat, radius), flat);
        }
        let one = raster(1, 1, 1, vec![200]);
        assert_eq!(gaussian_blur(&one, 256.0), one);
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let zero = raster(0, 0, 4, vec![]);
        let thin = raster(0, 5, 4, vec![]);
        let bad = raster(3, 3, 4, vec![1, 2, 3]);
        for img in [&zero, &thin, &bad] {
            for radius in [0.0, 2.0, 1e30, -3.0, f64::NAN] {
                let _ = gaussian_blur(img, radius);
            }
            let _ = (to_luma(img), premultiply(img), unpremultiply(img), bbox(img), masking_fill(img, img));
            let _ = crop(img, i64::MIN, -1, i64::MAX, 2);
            let mut dst = raster(2, 2, 4, vec![9; 16]);
            paste(&mut dst, img, i64::MAX, i64::MIN);
            paste_with_mask(&mut dst, img, img, -1, -1);
            alpha_composite(&mut dst, img);
            assert_eq!(dst.data, vec![9; 16]);
        }
        let one = raster(1, 1, 4, vec![1, 2, 3, 4]);
        assert_eq!(gaussian_blur(&one, 1e30).data.len(), 4);
        assert_eq!(bbox(&one), Some((0, 0, 1, 1)));
    }

    #[test]
    fn fill_without_mask_keeps_image() {
        let img = raster(2, 2, 3, vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]);
        let out = masking_fill(&img, &raster(2, 2, 1, vec![0; 4]));
        assert_eq!(out, img);
    }
}
