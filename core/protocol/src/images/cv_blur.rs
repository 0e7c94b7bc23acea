//! OpenCV's `cv2.GaussianBlur` on one 8-bit channel, bit for bit, and A1111's inpainting mask blur
//! built on it. A1111 blurs the mask with two calls, horizontal then vertical:
//!
//! ```python
//! kernel_size = 2 * int(2.5 * blur_x + 0.5) + 1
//! np_mask = cv2.GaussianBlur(np_mask, (kernel_size, 1), blur_x)
//! kernel_size = 2 * int(2.5 * blur_y + 0.5) + 1
//! np_mask = cv2.GaussianBlur(np_mask, (1, kernel_size), blur_y)
//! ```
//!
//! For 8-bit images OpenCV (since 4.2) takes a fixed-point path (`smooth.dispatch.cpp`,
//! `smooth.simd.hpp`, `fixedpoint.inl.hpp`), reproduced here:
//!
//! * Kernel: `getGaussianKernelBitExact` computes the normalised Gaussian in `softdouble`. Its
//!   arithmetic is plain IEEE-754 binary64, which `f64` matches exactly, except `exp`, which is
//!   OpenCV's own table-and-polynomial routine whose last bits differ from libm's, so it is ported
//!   ([`soft_exp`]). The taps are then quantised to 8 fraction bits by error diffusion
//!   (`getGaussianKernelFixedPoint_ED`), outermost tap first, the centre taking whatever makes the
//!   sum exactly 256.
//! * Horizontal pass: `Σ tap·pixel` per pixel, kept in 16 bits with 8 fraction bits (at most
//!   255·256, so it never saturates).
//! * Vertical pass: `Σ tap·row` in 32 bits with 16 fraction bits, then `(sum + 2^15) >> 16`.
//! * Borders: `BORDER_REFLECT_101` through `borderInterpolate`, which keeps reflecting when the
//!   kernel radius exceeds the image (period `2·(len − 1)`); a line of length 1 repeats its pixel.
//!
//! All sums are exact integers, so the order of accumulation (SIMD, threads, OpenCV's special
//! 3- and 5-tap routines) does not matter. Two consequences used below: a direction whose kernel is
//! `[256]` is the identity, and a one-direction blur is `(Σ tap·pixel + 128) >> 8`. Error
//! diffusion leaves at most 256 non-zero taps however long the kernel is, and zero taps add
//! nothing, so only the non-zero taps are visited.

/// Largest kernel size accepted; larger (or even) sizes return the input unchanged. OpenCV takes
/// any odd `int`, but building a kernel costs one `exp` per tap, and A1111's blur slider stops at 64
/// (kernel 321). This admits mask blur values up to 419 430.
pub const MAX_KERNEL_SIZE: usize = (1 << 21) + 1;

/// Columns per strip in the vertical pass, so a kernel's worth of rows stays in cache.
const STRIP: usize = 512;

/// A1111's kernel size for a blur value: `2 * int(2.5 * blur + 0.5) + 1`.
pub fn mask_kernel_size(blur: u32) -> usize {
    // 2.5·blur + 0.5 is exact in f64, and truncating it is rounding 5·blur / 2 up.
    let half = (5 * u64::from(blur)).div_ceil(2);
    usize::try_from(2 * half + 1).unwrap_or(usize::MAX)
}

/// A1111's mask blur: OpenCV `GaussianBlur` with ksize `(k, 1)` and sigma `blur_x`, then
/// `(1, k)` and sigma `blur_y`, each rounded to 8 bits; a blur of 0 skips that direction.
/// `mask` is row-major, `width × height`; a length mismatch returns it unchanged.
pub fn mask_blur(mask: &[u8], width: usize, height: usize, blur_x: u32, blur_y: u32) -> Vec<u8> {
    let horizontal =
        (blur_x > 0).then(|| gaussian_blur_u8(mask, width, height, mask_kernel_size(blur_x), 1, f64::from(blur_x)));
    if blur_y == 0 {
        return horizontal.unwrap_or_else(|| mask.to_vec());
    }
    let source = horizontal.as_deref().unwrap_or(mask);
    gaussian_blur_u8(source, width, height, 1, mask_kernel_size(blur_y), f64::from(blur_y))
}

/// `cv2.GaussianBlur(img, (ksize_x, ksize_y), sigma)` on one 8-bit channel (sigmaY = sigmaX,
/// `BORDER_REFLECT_101`), bit-exact. `img` is row-major, `width × height`.
///
/// As in OpenCV, a ksize of 0 is derived from sigma (`round(6·sigma + 1) | 1`), and sigma ≤ 0 is
/// derived from the ksize (the fixed binomial kernels for sizes 3 to 9). Inputs OpenCV rejects
/// (even ksize, ksize 0 with sigma ≤ 0) or sizes above [`MAX_KERNEL_SIZE`], and an `img` whose
/// length is not `width · height`, return `img` unchanged.
pub fn gaussian_blur_u8(
    img: &[u8],
    width: usize,
    height: usize,
    ksize_x: usize,
    ksize_y: usize,
    sigma: f64,
) -> Vec<u8> {
    if img.is_empty() || width.checked_mul(height) != Some(img.len()) {
        return img.to_vec();
    }
    let (Some(ksize_x), Some(ksize_y)) = (resolve_ksize(ksize_x, sigma), resolve_ksize(ksize_y, sigma)) else {
        return img.to_vec();
    };
    // OpenCV drops the kernel along a one-pixel extent; reflection would fold it to the identity anyway.
    let ksize_x = if width == 1 { 1 } else { ksize_x };
    let ksize_y = if height == 1 { 1 } else { ksize_y };
    let taps_x = Taps::gaussian(ksize_x, sigma);
    let taps_y = Taps::gaussian(ksize_y, sigma);
    match (taps_x.is_identity(), taps_y.is_identity()) {
        (true, true) => img.to_vec(),
        // Vertical kernel [256]: OpenCV rounds the Q8 row sums straight to 8 bits.
        (false, true) => {
            let mut out = vec![0_u8; img.len()];
            horizontal_pass(img, width, &taps_x, |y, sums| {
                for (d, &sum) in out[y * width..(y + 1) * width].iter_mut().zip(sums) {
                    *d = <u8 as Sample>::round(sum);
                }
            });
            out
        }
        // Horizontal kernel [256]: its Q8 rows would be `pixel << 8`; reading the pixels and
        // rounding away 8 instead of 16 fraction bits gives the same bytes.
        (true, false) => vertical_pass(img, width, height, &taps_y),
        (false, false) => {
            let mut rows = vec![0_u16; img.len()];
            horizontal_pass(img, width, &taps_x, |y, sums| rows[y * width..(y + 1) * width].copy_from_slice(sums));
            vertical_pass(&rows, width, height, &taps_y)
        }
    }
}

/// OpenCV's kernel size for one direction: 0 means "from sigma", as in `createGaussianKernels` for
/// 8-bit images. `None` where OpenCV would fail its assertion or the size exceeds the limit.
fn resolve_ksize(ksize: usize, sigma: f64) -> Option<usize> {
    let ksize = match ksize {
        0 if sigma > 0.0 => {
            // cvRound(sigma * 3 * 2 + 1) | 1, in that order of operations.
            let rounded = (sigma * 3.0 * 2.0 + 1.0).round_ties_even();
            (rounded <= MAX_KERNEL_SIZE as f64).then_some(rounded as usize | 1)?
        }
        0 => return None,
        ksize => ksize,
    };
    (ksize % 2 == 1 && ksize <= MAX_KERNEL_SIZE).then_some(ksize)
}

/// A symmetric Q8 kernel whose taps sum to 256, kept as its centre and its non-zero tap pairs.
#[derive(Debug)]
struct Taps {
    center: u16,
    /// `(distance from the centre, tap)` of each non-zero pair, nearest first.
    pairs: Vec<(usize, u16)>,
}

impl Taps {
    /// The taps of OpenCV's `createGaussianKernels<ufixedpoint16>` for an odd size `n`.
    fn gaussian(n: usize, sigma: f64) -> Taps {
        Taps::error_diffused(&bit_exact_outer_half(n, sigma))
    }

    /// `getGaussianKernelFixedPoint_ED` with 8 fraction bits: from the outermost tap inwards,
    /// round `value·256 + carried error` half to even and carry the rounding error on; the centre
    /// gets `256 − Σ others`. `outer` is one side of the kernel, outermost first.
    ///
    /// Every tap lands in 0..=256: a side tap rounds a value ≥ −0.5, and the centre equals its own
    /// value·256 plus twice the last carried error (≥ −1), an integer above −1.
    fn error_diffused(outer: &[f64]) -> Taps {
        let mut carried = 0.0;
        let mut side_sum = 0_i64;
        let mut pairs = Vec::new();
        for (i, &value) in outer.iter().enumerate() {
            let adjusted = value * 256.0 + carried;
            let rounded = adjusted.round_ties_even();
            carried = adjusted - rounded;
            let tap = rounded as i64;
            side_sum += tap;
            if tap != 0 {
                pairs.push((outer.len() - i, tap.clamp(0, 256) as u16));
            }
        }
        pairs.reverse();
        Taps { center: (256 - 2 * side_sum).clamp(0, 256) as u16, pairs }
    }

    /// Reach of the furthest non-zero tap.
    fn radius(&self) -> usize {
        self.pairs.last().map_or(0, |&(distance, _)| distance)
    }

    /// The kernel `[…, 0, 256, 0, …]`, which leaves every pixel as it is.
    fn is_identity(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// `getGaussianKernelBitExact`: one side of the normalised kernel of odd size `n`, outermost value
/// first (the centre is implied by the sum). Operation order follows OpenCV so every `f64` matches.
fn bit_exact_outer_half(n: usize, sigma: f64) -> Vec<f64> {
    let half = n / 2;
    if let Some(table) = binomial_outer_half(n).filter(|_| sigma <= 0.0) {
        return table.iter().map(|&v| f64::from(v) / 256.0).collect();
    }
    let sigma = if sigma > 0.0 {
        sigma
    } else {
        // ((n − 1)·0.5 − 1)·0.3 + 0.8, as OpenCV's fused n·0.15 + 0.35.
        (n as f64).mul_add(f64::from_bits(0x3fc3_3333_3333_3333), f64::from_bits(0x3fd6_6666_6666_6666))
    };
    let scale = -0.125 / (sigma * sigma);
    // Offsets are in half-pixel steps (x = 1 − n + 2i), hence −0.125 rather than −0.5.
    let values: Vec<f64> = (0..half)
        .map(|i| {
            let x = (n - 1 - 2 * i) as f64;
            soft_exp(x * x * scale)
        })
        .collect();
    let mut sum = 0.0;
    for &v in &values {
        sum += v;
    }
    sum *= 2.0;
    sum += 1.0;
    let normalise = 1.0 / sum;
    values.into_iter().map(|v| v * normalise).collect()
}

/// OpenCV's fixed kernels for sigma ≤ 0 and sizes up to 9, one side in 256ths (all exact).
fn binomial_outer_half(n: usize) -> Option<&'static [u16]> {
    match n {
        1 => Some(&[]),
        3 => Some(&[64]),
        5 => Some(&[16, 64]),
        7 => Some(&[8, 28, 56]),
        9 => Some(&[4, 13, 30, 51]),
        _ => None,
    }
}

/// `2^(i/64)` for i in 0..64, the table of OpenCV's `exp`.
#[rustfmt::skip]
const EXP_TABLE: [u64; 64] = [
    0x3ff0000000000000, 0x3ff02c9a3e778061, 0x3ff059b0d3158574, 0x3ff0874518759bc8, 0x3ff0b5586cf9890f,
    0x3ff0e3ec32d3d1a2, 0x3ff11301d0125b51, 0x3ff1429aaea92de0, 0x3ff172b83c7d517b, 0x3ff1a35beb6fcb75,
    0x3ff1d4873168b9aa, 0x3ff2063b88628cd6, 0x3ff2387a6e756238, 0x3ff26b4565e27cdd, 0x3ff29e9df51fdee1,
    0x3ff2d285a6e4030b, 0x3ff306fe0a31b715, 0x3ff33c08b26416ff, 0x3ff371a7373aa9cb, 0x3ff3a7db34e59ff7,
    0x3ff3dea64c123422, 0x3ff4160a21f72e2a, 0x3ff44e086061892d, 0x3ff486a2b5c13cd0, 0x3ff4bfdad5362a27,
    0x3ff4f9b2769d2ca7, 0x3ff5342b569d4f82, 0x3ff56f4736b527da, 0x3ff5ab07dd485429, 0x3ff5e76f15ad2148,
    0x3ff6247eb03a5585, 0x3ff6623882552225, 0x3ff6a09e667f3bcd, 0x3ff6dfb23c651a2f, 0x3ff71f75e8ec5f74,
    0x3ff75feb564267c9, 0x3ff7a11473eb0187, 0x3ff7e2f336cf4e62, 0x3ff82589994cce13, 0x3ff868d99b4492ed,
    0x3ff8ace5422aa0db, 0x3ff8f1ae99157736, 0x3ff93737b0cdc5e5, 0x3ff97d829fde4e50, 0x3ff9c49182a3f090,
    0x3ffa0c667b5de565, 0x3ffa5503b23e255d, 0x3ffa9e6b5579fdbf, 0x3ffae89f995ad3ad, 0x3ffb33a2b84f15fb,
    0x3ffb7f76f2fb5e47, 0x3ffbcc1e904bc1d2, 0x3ffc199bdd85529c, 0x3ffc67f12e57d14b, 0x3ffcb720dcef9069,
    0x3ffd072d4a07897c, 0x3ffd5818dcfba487, 0x3ffda9e603db3285, 0x3ffdfc97337b9b5f, 0x3ffe502ee78b3ff6,
    0x3ffea4afa2a490da, 0x3ffefa1bee615a27, 0x3fff50765b6e4540, 0x3fffa7c1819e90d8,
];

/// `exp` of `cv::softdouble` (`f64_exp` in OpenCV's `core/src/softfloat.cpp`): `x·64/ln 2` is
/// split into an integer `k` and a fraction `f`; the result is `2^(k>>6) · 2^((k&63)/64)` times a
/// degree-5 polynomial in `f/64`. Its last bits often differ from libm's `exp`, and they can decide
/// a tap's rounding: for ksize 3 and sigma 0.7600894749967105 libm's `exp` would give the taps
/// `[58, 140, 58]`, OpenCV gives `[59, 138, 59]`.
fn soft_exp(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x.is_infinite() {
        return if x > 0.0 { x } else { 0.0 };
    }
    let poly_scale = f64::from_bits(0x3f83ce0f3e46f431);
    let a5 = 1.0 / poly_scale;
    let a4 = f64::from_bits(0x3fe62e42fefa39f1) / poly_scale;
    let a3 = f64::from_bits(0x3fcebfbdff82a45a) / poly_scale;
    let a2 = f64::from_bits(0x3fac6b08d81fec75) / poly_scale;
    let a1 = f64::from_bits(0x3f83b2a72b4f3cd3) / poly_scale;
    let a0 = f64::from_bits(0x3f55e7aa1566c2a4) / poly_scale;
    let prescale = f64::from_bits(0x3ff71547652b82fe) * 64.0;
    let limit = 3000.0 * 64.0;

    // |x| ≥ 2048 saturates (OpenCV tests the biased exponent).
    let scaled = if (x.to_bits() >> 52) & 0x7ff > 1023 + 10 {
        if x.is_sign_negative() { -limit } else { limit }
    } else {
        x * prescale
    };
    let k = scaled.round_ties_even();
    let k_int = k as i32;
    let biased = ((k_int >> 6) + 1023).clamp(0, 2047);
    let power_of_two = f64::from_bits((biased as u64) << 52);
    let f = (scaled - k) * (1.0 / 64.0);
    let poly = ((((a0 * f + a1) * f + a2) * f + a3) * f + a4) * f + a5;
    power_of_two * poly_scale * f64::from_bits(EXP_TABLE[(k_int & 63) as usize]) * poly
}

/// `borderInterpolate(i, len, BORDER_REFLECT_101)`: `…cb|abcd|cb…`, reflecting again and again
/// while the index is outside (the reflections repeat with period `2·(len − 1)`).
fn reflect101(i: isize, len: usize) -> usize {
    if len <= 1 {
        return 0;
    }
    let period = 2 * (len as isize - 1);
    let folded = i.rem_euclid(period) as usize;
    if folded < len { folded } else { period as usize - folded }
}

/// For positions `-radius..len + radius` of a line, the index each one reads.
fn reflected_indices(len: usize, radius: usize) -> Vec<usize> {
    (0..len + 2 * radius).map(|i| reflect101(i as isize - radius as isize, len)).collect()
}

/// What a pass accumulates, and how OpenCV rounds the sum back to 8 bits.
///
/// * `u8`: plain pixels. `Σ tap·pixel` ≤ 255·256 fits `u16` (the horizontal pass's Q8 value);
///   rounding drops its 8 fraction bits.
/// * `u16`: those Q8 sums, read by the vertical pass. `Σ tap·sum` ≤ 255·256·256 fits `u32`
///   (Q16); rounding drops 16 bits.
///
/// Taps are non-negative and sum to 256, so every partial sum is at most the full one: the
/// wrapping operations never wrap, they only keep overflow checks out of the hot loops.
trait Sample: Copy {
    type Sum: Copy + Default;
    fn weighted(tap: u16, v: Self) -> Self::Sum;
    fn add_pair(sum: Self::Sum, tap: u16, a: Self, b: Self) -> Self::Sum;
    fn round(sum: Self::Sum) -> u8;
}

impl Sample for u8 {
    type Sum = u16;
    fn weighted(tap: u16, v: u8) -> u16 {
        tap.wrapping_mul(u16::from(v))
    }
    fn add_pair(sum: u16, tap: u16, a: u8, b: u8) -> u16 {
        sum.wrapping_add(tap.wrapping_mul(u16::from(a) + u16::from(b)))
    }
    fn round(sum: u16) -> u8 {
        ((u32::from(sum) + (1 << 7)) >> 8).min(255) as u8
    }
}

impl Sample for u16 {
    type Sum = u32;
    fn weighted(tap: u16, v: u16) -> u32 {
        u32::from(tap).wrapping_mul(u32::from(v))
    }
    fn add_pair(sum: u32, tap: u16, a: u16, b: u16) -> u32 {
        sum.wrapping_add(u32::from(tap).wrapping_mul(u32::from(a) + u32::from(b)))
    }
    fn round(sum: u32) -> u8 {
        (sum.wrapping_add(1 << 15) >> 16).min(255) as u8
    }
}

/// The inner loop of both passes: `sums = center·mid + Σ tap·(before + after)` over whole
/// slices, one tap pair at a time, so each step is a straight run over memory that vectorises.
/// `line(offset)` is the slice `offset` positions from `mid`.
fn accumulate<'a, S: Sample + 'a>(sums: &mut [S::Sum], taps: &Taps, line: impl Fn(isize) -> &'a [S]) {
    for (sum, &v) in sums.iter_mut().zip(line(0)) {
        *sum = S::weighted(taps.center, v);
    }
    for &(distance, tap) in &taps.pairs {
        let (before, after) = (line(-(distance as isize)), line(distance as isize));
        for ((sum, &a), &b) in sums.iter_mut().zip(before).zip(after) {
            *sum = S::add_pair(*sum, tap, a, b);
        }
    }
}

/// The horizontal pass, row by row: each row is copied into a buffer extended by reflection on
/// both sides, so every tap reads a plain slice; `emit` receives the row's Q8 sums.
fn horizontal_pass(img: &[u8], width: usize, taps: &Taps, mut emit: impl FnMut(usize, &[u16])) {
    let radius = taps.radius();
    let source = reflected_indices(width, radius);
    let mut padded = vec![0_u8; width + 2 * radius];
    let mut sums = vec![0_u16; width];
    let (pad_left, pad_right) = (0..radius, radius + width..width + 2 * radius);
    for (y, row) in img.chunks_exact(width).enumerate() {
        padded[radius..radius + width].copy_from_slice(row);
        for i in pad_left.clone().chain(pad_right.clone()) {
            padded[i] = row[source[i]];
        }
        accumulate(&mut sums, taps, |offset| {
            let start = (radius as isize + offset) as usize;
            &padded[start..start + width]
        });
        emit(y, &sums);
    }
}

/// The vertical pass over `rows` (the horizontal pass's Q8 sums, or the pixels when there was
/// none): rows are accumulated whole (no column walks), one strip of columns at a time so the rows
/// a kernel reaches stay in cache, then rounded to 8 bits.
fn vertical_pass<S: Sample>(rows: &[S], width: usize, height: usize, taps: &Taps) -> Vec<u8> {
    let radius = taps.radius();
    let source_row = reflected_indices(height, radius);
    let mut out = vec![0_u8; rows.len()];
    let mut sums = vec![S::Sum::default(); width.min(STRIP)];
    for x0 in (0..width).step_by(STRIP) {
        let x1 = (x0 + STRIP).min(width);
        let sums = &mut sums[..x1 - x0];
        for y in 0..height {
            accumulate(sums, taps, |offset| {
                let start = source_row[(y + radius).wrapping_add_signed(offset)] * width;
                &rows[start + x0..start + x1]
            });
            for (d, &sum) in out[y * width + x0..y * width + x1].iter_mut().zip(sums.iter()) {
                *d = S::round(sum);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every tap list OpenCV can build is non-negative and sums to 256.
    #[test]
    fn taps_sum_to_256() {
        let mut cases: Vec<(usize, f64)> = (1..=256).map(|b| (mask_kernel_size(b), f64::from(b))).collect();
        cases.extend([(3, 0.0), (5, 0.0), (7, 0.0), (9, 0.0), (11, 0.0), (41, 0.0), (3, 0.3), (15, 1.7), (41, 100.0)]);
        for (n, sigma) in cases {
            let taps = Taps::gaussian(n, sigma);
            let total: u32 = u32::from(taps.center) + taps.pairs.iter().map(|&(_, t)| 2 * u32::from(t)).sum::<u32>();
            assert_eq!(total, 256, "n={n} sigma={sigma}");
            assert!(taps.pairs.iter().all(|&(d, t)| t > 0 && d <= n / 2));
            assert!(taps.pairs.len() <= 128);
        }
    }

    /// Q8 taps of cv2's kernel for A1111's blur 4 (ksize 21), and blur 1 (ksize 7).
    #[test]
    fn known_taps() {
        let full = |taps: &Taps, n: usize| {
            let mut k = vec![0_u16; n];
            k[n / 2] = taps.center;
            for &(d, t) in &taps.pairs {
                k[n / 2 - d] = t;
                k[n / 2 + d] = t;
            }
            k
        };
        assert_eq!(full(&Taps::gaussian(7, 1.0), 7), [1, 14, 62, 102, 62, 14, 1]);
        assert_eq!(
            full(&Taps::gaussian(21, 4.0), 21),
            [1, 2, 4, 5, 9, 11, 16, 19, 23, 25, 26, 25, 23, 19, 16, 11, 9, 5, 4, 2, 1]
        );
        assert_eq!(full(&Taps::gaussian(5, 0.0), 5), [16, 64, 96, 64, 16]);
        // A value·256 at a rounding tie, where only OpenCV's own exp gives OpenCV's taps.
        assert_eq!(full(&Taps::gaussian(3, 0.7600894749967105), 3), [59, 138, 59]);
    }

    /// OpenCV's kernel values (cv2.getGaussianKernel(7, 1.0, cv2.CV_64F)) to the last bit, which
    /// needs OpenCV's exp rather than libm's.
    #[test]
    fn kernel_values_match_opencv_bits() {
        let outer = bit_exact_outer_half(7, 1.0);
        let bits: Vec<u64> = outer.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, [0x3f7228634ef2bf2f, 0x3faba69ea654530e, 0x3fcefb0b0ccf0c64]);
    }

    #[test]
    fn soft_exp_is_close_to_exp() {
        // OpenCV reduces the argument in plain f64, so its relative error grows with |x|.
        for i in 0..1900 {
            let x = -f64::from(i) * 0.37;
            let (a, b) = (soft_exp(x), x.exp());
            assert!((a - b).abs() <= b * 1e-15 * (1.0 - x), "x={x}: {a} vs {b}");
        }
        assert_eq!(soft_exp(0.0), 1.0);
        assert_eq!(soft_exp(f64::NEG_INFINITY), 0.0);
        assert_eq!(soft_exp(-1e6), 0.0);
    }

    #[test]
    fn kernel_sizes() {
        assert_eq!(mask_kernel_size(1), 7);
        assert_eq!(mask_kernel_size(4), 21);
        assert_eq!(mask_kernel_size(64), 321);
        assert_eq!(mask_kernel_size(0), 1);
        assert_eq!(resolve_ksize(0, 1.0), Some(7));
        assert_eq!(resolve_ksize(0, 0.0), None);
        assert_eq!(resolve_ksize(4, 1.0), None);
        assert_eq!(resolve_ksize(MAX_KERNEL_SIZE + 2, 1.0), None);
    }

    #[test]
    fn reflect_101_repeats() {
        let got: Vec<usize> = (-7..12).map(|i| reflect101(i, 4)).collect();
        assert_eq!(got, [1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]);
        assert_eq!(reflect101(-5, 1), 0);
    }

    #[test]
    fn constant_images_stay_constant() {
        for &(w, h) in &[(1, 1), (3, 5), (17, 2), (64, 64), (600, 3)] {
            for value in [0_u8, 1, 128, 254, 255] {
                let img = vec![value; w * h];
                for blur in [1, 4, 20, 64] {
                    assert_eq!(mask_blur(&img, w, h, blur, blur), img, "{w}x{h} blur {blur}");
                }
                assert_eq!(gaussian_blur_u8(&img, w, h, 41, 9, 3.3), img);
            }
        }
    }

    #[test]
    fn degenerate_inputs() {
        assert!(mask_blur(&[], 0, 0, 4, 4).is_empty());
        assert!(mask_blur(&[], 0, 7, 4, 4).is_empty());
        assert!(gaussian_blur_u8(&[], 5, 0, 3, 3, 1.0).is_empty());
        assert_eq!(mask_blur(&[7], 1, 1, 64, 64), [7]);
        assert_eq!(mask_blur(&[1, 2, 3], 2, 2, 4, 4), [1, 2, 3]); // length mismatch
        assert_eq!(mask_blur(&[1, 2, 3, 4], 2, 2, 0, 0), [1, 2, 3, 4]);
        assert_eq!(gaussian_blur_u8(&[1, 2, 3, 4], 2, 2, 4, 3, 1.0), [1, 2, 3, 4]); // even ksize
        // A NaN sigma takes the size-derived sigma (1.1 for 5) but not the binomial table, as in cv2.
        let row = [10, 200, 30, 40, 250, 0, 7];
        assert_eq!(gaussian_blur_u8(&row, 7, 1, 5, 1, f64::NAN), [106, 100, 88, 98, 104, 66, 38]);
        assert_eq!(gaussian_blur_u8(&row, 7, 1, 5, 1, 1.1), [106, 100, 88, 98, 104, 66, 38]);
        assert_eq!(gaussian_blur_u8(&row, 7, 1, 5, 1, 0.0), [108, 100, 88, 98, 106, 67, 34]);
        let huge = mask_blur(&[9, 200, 3], 3, 1, u32::MAX, u32::MAX);
        assert_eq!(huge, [9, 200, 3]);
    }

    /// Hand-checkable against cv2 (OpenCV 5.1): a 5×3 ramp, blur 1 both ways; and a 3×5 image
    /// with a kernel far wider than it (k = 41), where the border reflects many times.
    #[test]
    fn matches_cv2_small_cases() {
        let img: Vec<u8> = vec![0, 40, 80, 120, 160, 10, 60, 250, 30, 0, 255, 255, 0, 0, 7];
        assert_eq!(mask_blur(&img, 5, 3, 1, 1), [66, 83, 100, 86, 73, 93, 102, 101, 72, 55, 123, 121, 99, 58, 37]);
        let tall: Vec<u8> = vec![0, 255, 9, 30, 200, 77, 5, 5, 250, 100, 0, 60, 255, 255, 1];
        assert_eq!(
            gaussian_blur_u8(&tall, 3, 5, 41, 41, 8.0),
            [99, 98, 99, 99, 98, 98, 99, 98, 99, 99, 99, 99, 98, 97, 97]
        );
    }
}
