//! The two row passes of a softmax over a tile of scores — the row maximum, and exp(x - max)
//! with its sum — in AVX2 where the CPU has it, else in plain Rust that computes the same values
//! operation for operation (results do not depend on the CPU). exp is Cephes' single-precision
//! polynomial (about 1 ulp), because libm's scalar expf was a third of the attention's time.

const LANES: usize = 8;
/// Cephes' expf coefficients of exp(r) ≈ 1 + r + r²·P(r) on |r| ≤ ln2/2, highest degree first.
const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];
/// Below this, exp gives 0 (e^-87 ≈ 1.6e-38, near the smallest normal f32).
const EXP_FLOOR: f32 = -87.0;
/// 1.5 · 2^23: adding it rounds an f32 to an integer (kept in the low mantissa bits).
const ROUND: f32 = 12_582_912.0;
/// ln 2 split in a part exact in f32 and the rest (Cody–Waite range reduction).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// exp(x) for x <= 0 (scores minus their row maximum), to about 1 ulp: Cephes' expf polynomial
/// after a round-to-nearest range reduction (adding 1.5·2^23), with plain multiplies and adds
/// that the AVX2 version repeats exactly. -inf and anything below -87 (e^-87 ≈ 1.6e-38) give 0.
#[inline(always)]
pub(super) fn exp_nonpositive(x: f32) -> f32 {
    let xc = x.max(EXP_FLOOR);
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut y = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        y = y * r + c;
    }
    y = y * r * r + r + 1.0;
    let scale = f32::from_bits(((t.to_bits() as i32 - ROUND.to_bits() as i32 + 127) << 23) as u32);
    if x < EXP_FLOOR { 0.0 } else { y * scale }
}

/// Row maximum of `row` (NEG_INFINITY when empty).
pub(super) fn row_max(row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { simd::row_max(row) };
    }
    row_max_scalar(row)
}

fn row_max_scalar(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            lanes[l] = if c[l] > lanes[l] { c[l] } else { lanes[l] };
        }
    }
    chunks.remainder().iter().chain(&lanes).fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

/// `row[j] = exp(row[j] - max)`, returning their sum (in 8 lanes, then lane by lane, then the
/// tail: the same order with or without AVX2).
pub(super) fn exp_shift_sum(row: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { simd::exp_shift_sum(row, max) };
    }
    exp_shift_sum_scalar(row, max)
}

fn exp_shift_sum_scalar(row: &mut [f32], max: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            c[l] = exp_nonpositive(c[l] - max);
            lanes[l] += c[l];
        }
    }
    let mut tail = 0f32;
    for x in chunks.into_remainder() {
        *x = exp_nonpositive(*x - max);
        tail += *x;
    }
    tail + lanes.iter().sum::<f32>()
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row_max(row: &[f32]) -> f32 {
        let mut i = 0;
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        while i + 8 <= row.len() {
            // SAFETY: i + 8 <= row.len().
            m = _mm256_max_ps(m, unsafe { _mm256_loadu_ps(row.as_ptr().add(i)) });
            i += 8;
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
        row[i..].iter().chain(&lanes).fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
    }

    /// [`super::exp_nonpositive`] on 8 lanes, operation for operation.
    #[target_feature(enable = "avx2")]
    fn exp8(x: __m256) -> __m256 {
        use super::{EXP_FLOOR, LN2_HI, LN2_LO, ROUND};
        let set = _mm256_set1_ps;
        let xc = _mm256_max_ps(x, set(EXP_FLOOR));
        let t = _mm256_add_ps(_mm256_mul_ps(xc, set(std::f32::consts::LOG2_E)), set(ROUND));
        let n = _mm256_sub_ps(t, set(ROUND));
        let r = _mm256_sub_ps(_mm256_sub_ps(xc, _mm256_mul_ps(n, set(LN2_HI))), _mm256_mul_ps(n, set(LN2_LO)));
        let mut y = set(super::EXP_POLY[0]);
        for c in &super::EXP_POLY[1..] {
            y = _mm256_add_ps(_mm256_mul_ps(y, r), set(*c));
        }
        y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(y, r), r), r), set(1.0));
        let bits = _mm256_slli_epi32(
            _mm256_add_epi32(
                _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_set1_epi32(ROUND.to_bits() as i32)),
                _mm256_set1_epi32(127),
            ),
            23,
        );
        let e = _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
        _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_cmp_ps(x, set(EXP_FLOOR), _CMP_LT_OQ))
    }

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn exp_shift_sum(row: &mut [f32], max: f32) -> f32 {
        let mut i = 0;
        let shift = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_ps();
        while i + 8 <= row.len() {
            // SAFETY: i + 8 <= row.len() for the load and the store.
            let e = exp8(_mm256_sub_ps(unsafe { _mm256_loadu_ps(row.as_ptr().add(i)) }, shift));
            unsafe { _mm256_storeu_ps(row.as_mut_ptr().add(i), e) };
            sum = _mm256_add_ps(sum, e);
            i += 8;
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        let mut tail = 0f32;
        for x in &mut row[i..] {
            *x = super::exp_nonpositive(*x - max);
            tail += *x;
        }
        tail + lanes.iter().sum::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_to_about_one_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let (a, b) = (exp_nonpositive(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.000_37;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    #[test]
    fn the_simd_path_gives_the_plain_paths_bits() {
        // Lengths with and without a tail; a masked (-inf) score must come out exactly 0.
        for len in [7, 8, 1003] {
            let mut row: Vec<f32> = (0..len).map(|i| ((i * 7919 % 1000) as f32 / 10.0) - 80.0).collect();
            row[5] = f32::NEG_INFINITY;
            let max = row_max(&row);
            assert_eq!(max.to_bits(), row_max_scalar(&row).to_bits());
            let (mut a, mut b) = (row.clone(), row.clone());
            let (sa, sb) = (exp_shift_sum(&mut a, max), exp_shift_sum_scalar(&mut b, max));
            assert_eq!(a, b);
            assert_eq!(sa.to_bits(), sb.to_bits());
            assert_eq!(a[5], 0.0);
        }
    }
}
