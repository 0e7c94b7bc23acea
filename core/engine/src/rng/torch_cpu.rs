//! The "CPU" random source: `torch.randn` on a CPU `torch.Generator` (PyTorch's mt19937 and its
//! CPU normal sampler), so A1111's `randn_source = "CPU"` noise can be reproduced.
//!
//! PyTorch's CPU normal kernel has two paths (aten/src/ATen/native/cpu/DistributionTemplates.h):
//! * numel >= 16 (float32, contiguous): `normal_fill` — one 24-bit float uniform per element, then
//!   Box–Muller in blocks of 16 (first 8 uniforms give radii, last 8 angles); when numel % 16 != 0
//!   the last 16 outputs are recomputed from 16 fresh uniforms.
//! * numel < 16: a scalar `normal_distribution<double>` per element: two 53-bit double uniforms
//!   (u1 for the angle, u2 for the radius), returns r·cos and caches r·sin in the generator for the
//!   next scalar draw.
//!
//! PyTorch evaluates the float32 log/sin/cos of `normal_fill` with its own vectorised
//! approximations, so values may differ from ours by about 1e-6.

/// The 32-bit Mersenne Twister (std::mt19937), as PyTorch's `at::mt19937`.
#[derive(Debug, Clone)]
pub struct Mt19937 {
    state: Box<[u32; 624]>,
    index: usize,
}

impl Mt19937 {
    /// Seeded like `at::mt19937(seed)`: only the low 32 bits are used.
    pub fn new(seed: u64) -> Self {
        let mut state = Box::new([0u32; 624]);
        state[0] = seed as u32;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        Self { state, index: 624 }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        for i in 0..624 {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % 624] & LOWER);
            let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
            if y & 1 != 0 {
                v ^= 0x9908_b0df;
            }
            self.state[i] = v;
        }
        self.index = 0;
    }

    pub fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

/// A CPU `torch.Generator` after `manual_seed(seed)`.
#[derive(Debug, Clone)]
pub struct TorchCpuGenerator {
    engine: Mt19937,
    /// `next_double_normal_sample`: the cached second Box–Muller value of the scalar path.
    cached_normal: Option<f64>,
}

impl TorchCpuGenerator {
    /// Negative seeds wrap to uint64 as torch does; mt19937 then keeps the low 32 bits.
    pub fn new(seed: i64) -> Self {
        Self { engine: Mt19937::new(seed as u64), cached_normal: None }
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits.
    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 bits of `random64()` (first word = high half).
    fn uniform_f64(&mut self) -> f64 {
        let hi = u64::from(self.engine.next_u32());
        let lo = u64::from(self.engine.next_u32());
        (((hi << 32) | lo) & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// One scalar `normal_distribution<double>` draw (the numel < 16 path).
    fn scalar_normal(&mut self) -> f64 {
        if let Some(v) = self.cached_normal.take() {
            return v;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.cached_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n elements, generator=self)` in float32.
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.scalar_normal() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        let mut start = 0;
        while start + 16 <= n {
            box_muller_16(&mut data[start..start + 16]);
            start += 16;
        }
        if !n.is_multiple_of(16) {
            let tail = n - 16;
            for v in &mut data[tail..] {
                *v = self.uniform_f32();
            }
            box_muller_16(&mut data[tail..]);
        }
        data
    }
}

/// PyTorch's `normal_fill_16`: uniforms in, 16 normals out (float32 arithmetic).
fn box_muller_16(block: &mut [f32]) {
    const TWO_PI: f32 = 2.0 * std::f32::consts::PI;
    for j in 0..8 {
        let u1 = 1.0 - block[j];
        let u2 = block[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        let theta = TWO_PI * u2;
        block[j] = radius * theta.cos();
        block[j + 8] = radius * theta.sin();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_reference_output() {
        // The C++ standard requires the 10000th output of default-seeded (5489) mt19937 to be 4123659995.
        let mut mt = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn readme_vector_seed1234() {
        // Fixture README: torch.randn((4, 8, 8), generator=manual_seed(1234)), flattened.
        let v = TorchCpuGenerator::new(1234).randn(256);
        for (g, w) in v.iter().zip([-0.11171857f32, -0.4965901, 0.1630737]) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }

    #[test]
    fn scalar_path_caches_second_value() {
        // n < 16 takes the scalar path: values come in (cos, sin) pairs from one pair of uniforms, so
        // drawing 1 then 1 equals drawing 2 at once (the cached sin value is returned second).
        let a = TorchCpuGenerator::new(7).randn(2);
        let mut g = TorchCpuGenerator::new(7);
        let b = [g.randn(1)[0], g.randn(1)[0]];
        assert_eq!(a, b);
        assert!(a[0] != a[1]);
    }

    #[test]
    fn scalar_path_matches_torch_seed0() {
        // Widely published PyTorch output: torch.manual_seed(0); torch.randn(2, 3) ->
        // [[1.5410, -0.2934, -2.1788], [0.5684, -1.0845, -1.3986]] (printed to 4 decimals).
        let v = TorchCpuGenerator::new(0).randn(6);
        for (g, w) in v.iter().zip([1.5410f32, -0.2934, -2.1788, 0.5684, -1.0845, -1.3986]) {
            assert!((g - w).abs() < 6e-5, "{v:?}");
        }
    }

    #[test]
    fn seed_uses_low_32_bits() {
        assert_eq!(TorchCpuGenerator::new(1234).randn(32), TorchCpuGenerator::new((1 << 32) + 1234).randn(32));
    }
}
