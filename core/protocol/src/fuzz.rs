//! The deterministic generator of the fixed-budget fuzz tests (every crate's `fuzz_tests`): the
//! same seed gives the same inputs, so a failure reproduces and CI time does not drift.

/// xorshift64: small, fast, good enough to pick mutations.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// One of `options` (which must not be empty).
    pub fn pick<'a, T>(&mut self, options: &'a [T]) -> &'a T {
        &options[self.below(options.len())]
    }
}
