//! Brownian-tree step noise for the SDE samplers (DPM++ SDE, 2M SDE, 3M SDE).
//!
//! A1111 uses torchsde's `BrownianTree` (one per image seed, entropy = the seed). Reproducing
//! torchsde bit for bit would mean re-implementing its internal seed splitting and interval cache;
//! this is instead a documented deterministic Brownian tree with the same semantics: for each image
//! a Brownian motion W on [sigma_min, sigma_max] is fixed by the seed, any query W(b) - W(a) is
//! consistent across calls, and the noise for a step is (W(sigma_next) - W(sigma)) / sqrt(|Δsigma|)
//! (a standard normal tensor). Results are deterministic and batch-size independent, but they are
//! NOT equal to A1111's torchsde noise.
//!
//! Construction: W(t0) = 0, W(t1) = sqrt(t1 - t0) z_root; the midpoint of a node [a, b] is the
//! Brownian bridge sample (W(a) + W(b)) / 2 + sqrt((b - a) / 4) z_node. Each z is one draw of the
//! configured random source seeded with splitmix64(seed, node id). Queries bisect until the interval
//! is shorter than 1e-6 of the range, then interpolate linearly.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::{SamplingError, SamplingPlan};
use sdapi_protocol::choices::RandnSource;

/// splitmix64 finaliser, used to derive independent seeds per tree node.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Debug)]
struct Tree {
    seed: i64,
    nodes: HashMap<u64, Vec<f32>>,
    w1: Vec<f32>,
}

/// Memory the cached tree nodes of one batch may hold. Nodes are regenerated deterministically
/// from their seeds, so dropping the cache changes no result, only time.
pub const DEFAULT_CACHE_BYTES: usize = 256 << 20;

/// One Brownian tree per image of the batch.
#[derive(Debug)]
pub struct BrownianTreeNoise {
    trees: Vec<Tree>,
    source: RandnSource,
    numel: usize,
    t0: f64,
    t1: f64,
    cache_bytes: usize,
    cached_nodes: usize,
}

impl BrownianTreeNoise {
    /// Trees over [sigma_min, sigma_max] for images with `seeds`, each of `numel` elements.
    pub fn new(seeds: &[i64], source: RandnSource, numel: usize, sigma_min: f64, sigma_max: f64) -> Self {
        let (t0, t1) = if sigma_min < sigma_max { (sigma_min, sigma_max) } else { (sigma_max, sigma_min) };
        let trees = seeds
            .iter()
            .map(|&seed| {
                let scale = (t1 - t0).sqrt() as f32;
                let w1 = crate::rng::generator(source, mix(seed as u64) as i64)
                    .randn(numel)
                    .into_iter()
                    .map(|v| v * scale)
                    .collect();
                Tree { seed, nodes: HashMap::new(), w1 }
            })
            .collect();
        Self { trees, source, numel, t0, t1, cache_bytes: DEFAULT_CACHE_BYTES, cached_nodes: 0 }
    }

    /// The same trees with another bound on the node cache.
    pub fn with_cache_bytes(self, cache_bytes: usize) -> Self {
        Self { cache_bytes, ..self }
    }

    /// Trees spanning the plan's full schedule (smallest non-zero sigma to the largest), as A1111's
    /// `create_noise_sampler` does.
    pub fn for_plan(plan: &SamplingPlan, seeds: &[i64], source: RandnSource, numel: usize) -> Self {
        let positive = plan.full_sigmas.iter().copied().filter(|&s| s > 0.0);
        let min = positive.clone().fold(f64::INFINITY, f64::min);
        let max = positive.fold(0.0, f64::max);
        Self::new(seeds, source, numel, min, max)
    }

    /// W(t) of tree `k` (t clamped to the tree's interval).
    fn w_at(&mut self, k: usize, t: f64) -> Vec<f32> {
        let (source, numel) = (self.source, self.numel);
        // Bounded cache: a query adds at most ~20 nodes; start over when the bound is reached.
        if self.cached_nodes.saturating_mul(numel * 4) > self.cache_bytes {
            self.trees.iter_mut().for_each(|tree| tree.nodes.clear());
            self.cached_nodes = 0;
        }
        let before: usize = self.trees[k].nodes.len();
        let tree = &mut self.trees[k];
        let t = t.clamp(self.t0, self.t1);
        let (mut a, mut b) = (self.t0, self.t1);
        let mut wa = vec![0f32; numel];
        let mut wb = tree.w1.clone();
        let tol = (self.t1 - self.t0) * 1e-6;
        let mut node = 1u64;
        while b - a > tol && node < (1u64 << 62) {
            if t == a || t == b {
                self.cached_nodes += tree.nodes.len() - before;
                return if t == a { wa } else { wb };
            }
            let m = 0.5 * (a + b);
            let seed = tree.seed;
            let z = tree
                .nodes
                .entry(node)
                .or_insert_with(|| crate::rng::generator(source, mix(mix(seed as u64) ^ node) as i64).randn(numel));
            let scale = ((b - a) / 4.0).sqrt() as f32;
            let wm: Vec<f32> = wa.iter().zip(&wb).zip(z.iter()).map(|((x, y), z)| 0.5 * (x + y) + scale * z).collect();
            if t < m {
                b = m;
                wb = wm;
                node *= 2;
            } else {
                a = m;
                wa = wm;
                node = node * 2 + 1;
            }
        }
        self.cached_nodes += tree.nodes.len() - before;
        let w = if b > a { ((t - a) / (b - a)) as f32 } else { 0.0 };
        wa.iter().zip(&wb).map(|(x, y)| x + w * (y - x)).collect()
    }

    /// Step noise between `sigma` and `sigma_next`, shaped like `like` (B images).
    pub fn noise(&mut self, sigma: f64, sigma_next: f64, like: &Tensor) -> Result<Tensor, SamplingError> {
        let batch = self.trees.len();
        if like.elem_count() != batch * self.numel {
            return Err(SamplingError::Other(format!(
                "Brownian noise for {} elements, trees hold {batch} x {}",
                like.elem_count(),
                self.numel
            )));
        }
        let scale = 1.0 / ((sigma_next - sigma).abs().sqrt() as f32);
        let mut out = Vec::with_capacity(batch * self.numel);
        for k in 0..batch {
            let (w0, w1) = (self.w_at(k, sigma), self.w_at(k, sigma_next));
            out.extend(w0.iter().zip(&w1).map(|(a, b)| (b - a) * scale));
        }
        Ok(Tensor::from_vec(out, like.dims(), &Device::Cpu)?.to_dtype(like.dtype())?.to_device(like.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache bound changes no value: a tree that drops its cache at every query gives the same
    /// noise as one that keeps everything.
    #[test]
    fn the_cache_bound_changes_no_result() {
        let x = Tensor::zeros((2, 500), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut keep = BrownianTreeNoise::new(&[7, 8], RandnSource::Nv, 500, 0.03, 14.6).with_cache_bytes(usize::MAX);
        let mut drop = BrownianTreeNoise::new(&[7, 8], RandnSource::Nv, 500, 0.03, 14.6).with_cache_bytes(0);
        for (s, n) in [(14.6, 9.0), (9.0, 3.1), (3.1, 0.5), (0.5, 0.03)] {
            let a = keep.noise(s, n, &x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = drop.noise(s, n, &x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(a, b);
        }
        assert!(drop.cached_nodes <= 2 * 64, "{}", drop.cached_nodes);
        assert!(keep.cached_nodes > drop.cached_nodes);
    }

    #[test]
    fn increments_are_consistent_and_standard_normal() {
        let like = Tensor::zeros((1, 4000), candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut tree = BrownianTreeNoise::new(&[42], RandnSource::Nv, 4000, 0.03, 14.6);
        // Additivity: the increments over [5, 3] and [3, 1] sum to the increment over [5, 1].
        let n1 = tree.noise(5.0, 3.0, &like).unwrap();
        let n2 = tree.noise(3.0, 1.0, &like).unwrap();
        let n12 = tree.noise(5.0, 1.0, &like).unwrap();
        let lhs = ((n1 * 2f64.sqrt()).unwrap() + (n2 * 2f64.sqrt()).unwrap()).unwrap();
        let rhs = (n12 * 4f64.sqrt()).unwrap();
        let err: f32 = (lhs - &rhs).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
        assert!(err < 1e-4, "{err}");
        // Normalised increments have unit variance (4000 samples: within ~10%).
        let var: f32 = rhs.sqr().unwrap().mean_all().unwrap().to_scalar::<f32>().unwrap() / 4.0;
        assert!((var - 1.0).abs() < 0.1, "{var}");
        // Same seed, fresh tree: identical noise; another seed differs.
        let again = BrownianTreeNoise::new(&[42], RandnSource::Nv, 4000, 0.03, 14.6).noise(3.0, 1.0, &like).unwrap();
        let n2b = tree.noise(3.0, 1.0, &like).unwrap();
        assert_eq!((again - n2b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
    }
}
