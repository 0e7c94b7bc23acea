//! Seed resolution : `-1` means random, and the per-image seed lists of a job.

use std::hash::{BuildHasher, Hasher};

/// A1111 `get_fixed_seed` for an already-parsed seed: -1 becomes a random value in
/// 0..4294967294 (`random.randrange(4294967294)`), anything else is kept as-is.
pub fn fixed_seed(seed: i64) -> i64 {
    fixed_seed_with(seed, || {
        // RandomState is seeded from OS entropy per instance: enough for picking a seed.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        h.finish()
    })
}

/// [`fixed_seed`] with an injected source of random 64-bit values (for tests).
pub fn fixed_seed_with(seed: i64, mut random_u64: impl FnMut() -> u64) -> i64 {
    if seed == -1 { (random_u64() % 4_294_967_294) as i64 } else { seed }
}

/// `all_seeds`: image k gets `seed + k`, or `seed` for every image when variation seeds are on.
pub fn all_seeds(seed: i64, subseed_strength: f64, count: usize) -> Vec<i64> {
    (0..count as i64).map(|k| if subseed_strength == 0.0 { seed + k } else { seed }).collect()
}

/// `all_subseeds`: image k gets `subseed + k`.
pub fn all_subseeds(subseed: i64, count: usize) -> Vec<i64> {
    (0..count as i64).map(|k| subseed + k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_one_is_random_in_range_and_others_kept() {
        assert_eq!(fixed_seed_with(-1, || 4_294_967_294 + 7), 7);
        assert_eq!(fixed_seed_with(-1, || u64::MAX), (u64::MAX % 4_294_967_294) as i64);
        assert_eq!(fixed_seed_with(-5, || 3), -5);
        assert_eq!(fixed_seed_with(1234, || 3), 1234);
        for _ in 0..20 {
            let s = fixed_seed(-1);
            assert!((0..4_294_967_294).contains(&s));
        }
    }

    #[test]
    fn seed_lists() {
        // Fixture t2i_batch2_iter2 (case.json): seed 1234, 4 images -> 1234..1237.
        assert_eq!(all_seeds(1234, 0.0, 4), vec![1234, 1235, 1236, 1237]);
        assert_eq!(all_seeds(1234, 0.5, 3), vec![1234, 1234, 1234]);
        assert_eq!(all_subseeds(10, 3), vec![10, 11, 12]);
    }
}
