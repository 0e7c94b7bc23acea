//! The "NV" random source: A1111's `rng_philox.Generator`, a numpy re-implementation of
//! `torch.randn` on CUDA (Philox4x32-10 + one Box–Muller value per element), §4.4.

/// Philox4x32 round multipliers and Weyl key increments (Random123 constants).
const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// float32(2.3283064e-10) == 2^-32, the uint32 -> (0,1) scale.
const UINT_TO_UNIT: f64 = 2.328_306_436_538_696_3e-10;
/// float32(2.3283064e-10 * 6.2831855): the uint32 -> (0, 2pi) scale, rounded to float32 as numpy does.
const UINT_TO_ANGLE: f64 = 1.462_918_119_976_564e-9;

/// Standard Philox4x32-10 block function.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = counter;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k[0] = k[0].wrapping_add(W0);
            k[1] = k[1].wrapping_add(W1);
        }
        let p0 = u64::from(c[0]) * u64::from(M0);
        let p1 = u64::from(c[2]) * u64::from(M1);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// One NV generator: a seed and a call counter (each `randn` call advances the offset by one).
#[derive(Debug, Clone)]
pub struct PhiloxGenerator {
    key: [u32; 2],
    offset: u32,
}

impl PhiloxGenerator {
    /// The seed is used as a uint64 (negative seeds wrap, as numpy's uint64 conversion of torch seeds does).
    pub fn new(seed: i64) -> Self {
        let s = seed as u64;
        Self { key: [s as u32, (s >> 32) as u32], offset: 0 }
    }

    /// `n` standard normal float32 values; element i uses counter (offset, 0, i, 0).
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        let out = (0..n)
            .map(|i| {
                let r = philox4x32_10([self.offset, 0, i as u32, 0], self.key);
                // numpy promotes uint32 * float32 to float64, so Box–Muller runs in float64.
                let u = f64::from(r[0]) * UINT_TO_UNIT + UINT_TO_UNIT / 2.0;
                let v = f64::from(r[1]) * UINT_TO_ANGLE + UINT_TO_ANGLE / 2.0;
                ((-2.0 * u.ln()).sqrt() * v.sin()) as f32
            })
            .collect();
        self.offset = self.offset.wrapping_add(1);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn philox_known_answer() {
        // Random123 known-answer test: key 0, counter 0.
        assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    }

    #[test]
    fn spec_vectors_seed0() {
        // Values from docs/a1111-behaviour.md §4.4 (= torch.randn on CUDA after manual_seed(0)).
        let mut g = PhiloxGenerator::new(0);
        assert_close(
            &g.randn(12),
            &[
                -0.9246624,
                -0.42534396,
                -2.6438458,
                0.14518388,
                -0.12086651,
                -0.5797257,
                -0.6228513,
                -0.32838714,
                -1.074542,
                -0.3631441,
                -1.6710504,
                2.265505,
            ],
        );
        assert_close(&g.randn(2), &[0.18082589, -0.5522627]);
    }

    #[test]
    fn spec_vectors_large_seeds() {
        let mut g = PhiloxGenerator::new((1i64 << 32) + 5);
        assert_close(&g.randn(3), &[-2.8427474, 1.3404924, 0.27223086]);
        let mut g = PhiloxGenerator::new(1234567890);
        assert_close(&g.randn(4), &[0.23617812, 1.2633902, -0.54222375, -0.6837679]);
        assert_close(&g.randn(2), &[1.5304672, -0.26408622]);
    }

    #[test]
    fn readme_vector_seed1234() {
        let mut g = PhiloxGenerator::new(1234);
        let v = g.randn(256);
        assert_close(&v[..2], &[-1.6164904, 0.5684552]);
    }
}
