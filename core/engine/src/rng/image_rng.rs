//! A1111's `ImageRNG` (docs/a1111-behaviour.md §4.3): one generator per image seed; the first draw is the initial noise
//! (with variation seeds and seed-resize pasting), later draws are the samplers' step noise.

use candle_core::{Device, Tensor};

use super::NoiseSource;
use super::{NormalGenerator, RandnSource};

/// Everything besides the seeds that shapes the noise of one batch.
#[derive(Debug, Clone, Default)]
pub struct ImageRngOptions {
    pub source: RandnSource,
    /// Variation seeds of this batch (image i uses `subseeds[i]`, 0 beyond the list).
    pub subseeds: Option<Vec<i64>>,
    pub subseed_strength: f64,
    /// "Resize seed from" size in pixels; used only when both are > 0.
    pub seed_resize_from_h: i64,
    pub seed_resize_from_w: i64,
    /// `eta_noise_seed_delta` (ENSD): after the initial noise the generators restart at seed + ENSD.
    pub eta_noise_seed_delta: i64,
}

/// Per-image noise streams of one batch; yields (B, C, H, W) float32 tensors on `device`.
#[derive(Debug)]
pub struct ImageRng {
    shape: [usize; 3],
    seeds: Vec<i64>,
    options: ImageRngOptions,
    generators: Vec<NormalGenerator>,
    is_first: bool,
    draws: usize,
    device: Device,
}

impl ImageRng {
    /// `shape` is one image's latent shape (C, H, W), e.g. (4, height/8, width/8).
    pub fn new(shape: [usize; 3], seeds: Vec<i64>, options: ImageRngOptions, device: Device) -> Self {
        let generators = seeds.iter().map(|&s| super::generator(options.source, s)).collect();
        Self { shape, seeds, options, generators, is_first: true, draws: 0, device }
    }

    /// Number of `next()` calls so far (the fixtures' `rng_draws`).
    pub fn draws(&self) -> usize {
        self.draws
    }

    /// The next (B, C, H, W) noise tensor: the initial noise on the first call, then one more
    /// draw from every image's own generator.
    #[allow(clippy::should_implement_trait)] // A1111 name; not an iterator (fallible, never ends)
    pub fn next(&mut self) -> candle_core::Result<Tensor> {
        let numel: usize = self.shape.iter().product();
        let data: Vec<f32> = if self.is_first {
            self.is_first = false;
            self.first()
        } else {
            self.generators.iter_mut().flat_map(|g| g.randn(numel)).collect()
        };
        self.draws += 1;
        let [c, h, w] = self.shape;
        Tensor::from_vec(data, (self.seeds.len(), c, h, w), &Device::Cpu)?.to_device(&self.device)
    }

    fn first(&mut self) -> Vec<f32> {
        let [c, h, w] = self.shape;
        let o = &self.options;
        let resized = o.seed_resize_from_h > 0 && o.seed_resize_from_w > 0;
        let noise_shape = if resized {
            [c, (o.seed_resize_from_h / 8) as usize, (o.seed_resize_from_w / 8) as usize]
        } else {
            self.shape
        };
        let noise_numel: usize = noise_shape.iter().product();
        let mut out = Vec::with_capacity(self.seeds.len() * c * h * w);
        for (i, (&seed, generator)) in self.seeds.iter().zip(self.generators.iter_mut()).enumerate() {
            let subnoise = match &o.subseeds {
                Some(subseeds) if o.subseed_strength != 0.0 => {
                    let subseed = subseeds.get(i).copied().unwrap_or(0);
                    Some(super::generator(o.source, subseed).randn(noise_numel))
                }
                _ => None,
            };
            // With seed resize the small noise comes from a fresh generator; the image generator's
            // first draw then supplies the full-size canvas it is pasted onto.
            let mut noise = if resized {
                super::generator(o.source, seed).randn(noise_numel)
            } else {
                generator.randn(noise_numel)
            };
            if let Some(sub) = subnoise {
                noise = slerp(o.subseed_strength as f32, &noise, &sub, noise_shape);
            }
            if resized {
                let mut canvas = generator.randn(c * h * w);
                paste_centered(&mut canvas, self.shape, &noise, noise_shape);
                noise = canvas;
            }
            out.extend_from_slice(&noise);
        }
        if o.eta_noise_seed_delta != 0 {
            let delta = o.eta_noise_seed_delta;
            self.generators = self.seeds.iter().map(|&s| super::generator(o.source, s + delta)).collect();
        }
        out
    }
}

impl NoiseSource for ImageRng {
    fn randn_like(&mut self, like: &Tensor) -> candle_core::Result<Tensor> {
        let [c, h, w] = self.shape;
        let want = [self.seeds.len(), c, h, w];
        if like.dims() != want {
            candle_core::bail!("noise requested for shape {:?}, image generators produce {want:?}", like.dims());
        }
        self.next()?.to_dtype(like.dtype())?.to_device(like.device())
    }
}

/// A1111 `slerp(val, low, high)` on (C, H, W) tensors with norms over dim 1 (H), in float32.
/// Falls back to `low*val + high*(1-val)` (weights as A1111 writes them) when nearly parallel.
pub fn slerp(val: f32, low: &[f32], high: &[f32], shape: [usize; 3]) -> Vec<f32> {
    let [c, h, w] = shape;
    let idx = |ci: usize, hi: usize, wi: usize| (ci * h + hi) * w + wi;
    let column_norm = |t: &[f32], ci: usize, wi: usize| (0..h).map(|hi| t[idx(ci, hi, wi)].powi(2)).sum::<f32>().sqrt();
    // dot[c][w] = sum over H of the normalised products.
    let mut dot = vec![0f32; c * w];
    for ci in 0..c {
        for wi in 0..w {
            let (nl, nh) = (column_norm(low, ci, wi), column_norm(high, ci, wi));
            dot[ci * w + wi] = (0..h).map(|hi| (low[idx(ci, hi, wi)] / nl) * (high[idx(ci, hi, wi)] / nh)).sum();
        }
    }
    let mean_dot = dot.iter().sum::<f32>() / dot.len().max(1) as f32;
    if mean_dot > 0.9995 {
        return low.iter().zip(high).map(|(l, hv)| l * val + hv * (1.0 - val)).collect();
    }
    let mut out = vec![0f32; low.len()];
    for ci in 0..c {
        for wi in 0..w {
            let omega = dot[ci * w + wi].acos();
            let so = omega.sin();
            let (a, b) = (((1.0 - val) * omega).sin() / so, (val * omega).sin() / so);
            for hi in 0..h {
                let k = idx(ci, hi, wi);
                out[k] = a * low[k] + b * high[k];
            }
        }
    }
    out
}

/// Pastes `small` (C, h, w) centred onto `canvas` (C, H, W); a larger source is cropped centred.
fn paste_centered(canvas: &mut [f32], shape: [usize; 3], small: &[f32], small_shape: [usize; 3]) {
    let [c, big_h, big_w] = shape;
    let [_, sh, sw] = small_shape;
    let dx = (big_w as i64 - sw as i64).div_euclid(2);
    let dy = (big_h as i64 - sh as i64).div_euclid(2);
    let w = if dx >= 0 { sw as i64 } else { sw as i64 + 2 * dx };
    let h = if dy >= 0 { sh as i64 } else { sh as i64 + 2 * dy };
    let (tx, ty) = (dx.max(0), dy.max(0));
    let (sx, sy) = ((-dx).max(0), (-dy).max(0));
    for ci in 0..c {
        for y in 0..h.max(0) {
            for x in 0..w.max(0) {
                let dst = (ci * big_h + (ty + y) as usize) * big_w + (tx + x) as usize;
                let src = (ci * sh + (sy + y) as usize) * sw + (sx + x) as usize;
                canvas[dst] = small[src];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::PhiloxGenerator;
    use std::collections::HashMap;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/a1111-parity")
    }

    fn load(case: &str) -> HashMap<String, Tensor> {
        candle_core::safetensors::load(
            fixtures().join("cases").join(case).join("intermediates.safetensors"),
            &Device::Cpu,
        )
        .unwrap()
    }

    fn case_json(case: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(fixtures().join("cases").join(case).join("case.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn request_json(case: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(fixtures().join("cases").join(case).join("request.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Every fixture case's initial noise (`iter{n}.noise`) from its seeds and random source.
    #[test]
    fn fixture_initial_noise_all_cases() {
        let mut checked = 0;
        for entry in std::fs::read_dir(fixtures().join("cases")).unwrap() {
            let case = entry.unwrap().file_name().into_string().unwrap();
            let tensors = load(&case);
            let seeds: Vec<i64> =
                case_json(&case)["seeds"].as_array().unwrap().iter().map(|s| s.as_i64().unwrap()).collect();
            let request = request_json(&case);
            let source =
                RandnSource::from_option(request["override_settings"]["randn_source"].as_str().unwrap()).unwrap();
            let batch = request["batch_size"].as_u64().unwrap_or(1) as usize;
            let (h, w) =
                (request["height"].as_u64().unwrap() as usize / 8, request["width"].as_u64().unwrap() as usize / 8);
            for (n, chunk) in seeds.chunks(batch).enumerate() {
                let want = &tensors[&format!("iter{n}.noise")];
                let options = ImageRngOptions { source, ..Default::default() };
                let got = ImageRng::new([4, h, w], chunk.to_vec(), options, Device::Cpu).next().unwrap();
                let err = max_abs_diff(&got, want);
                let tol = if source == RandnSource::Cpu { 1e-5 } else { 0.0 };
                assert!(err <= tol, "{case} iter{n}: max abs error {err}");
                eprintln!("{case} iter{n} ({source:?}): max abs noise error {err:.2e}");
                checked += 1;
            }
        }
        assert!(checked >= 17, "only {checked} batches checked");
    }

    #[test]
    fn later_draws_continue_each_image_stream() {
        let mut rng = ImageRng::new([4, 2, 2], vec![10, 11], ImageRngOptions::default(), Device::Cpu);
        rng.next().unwrap();
        let second = rng.next().unwrap();
        let mut g = PhiloxGenerator::new(11);
        g.randn(16);
        let want = Tensor::from_vec(g.randn(16), (4, 2, 2), &Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&second.get(1).unwrap(), &want), 0.0);
        assert_eq!(rng.draws(), 2);
    }

    #[test]
    fn ensd_restarts_generators_after_first_draw() {
        let options = ImageRngOptions { eta_noise_seed_delta: 31337, ..Default::default() };
        let mut rng = ImageRng::new([4, 2, 2], vec![5], options, Device::Cpu);
        let first = rng.next().unwrap();
        let second = rng.next().unwrap();
        let want_first = Tensor::from_vec(PhiloxGenerator::new(5).randn(16), (1, 4, 2, 2), &Device::Cpu).unwrap();
        let want_second =
            Tensor::from_vec(PhiloxGenerator::new(5 + 31337).randn(16), (1, 4, 2, 2), &Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&first, &want_first), 0.0);
        assert_eq!(max_abs_diff(&second, &want_second), 0.0);
    }

    #[test]
    fn slerp_endpoints_and_lerp_branch() {
        let shape = [1, 3, 2];
        let low = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let high = [0.0, 1.0, 1.0, 0.0, 0.0, 0.0];
        // Layout (H=3, W=2): column w holds elements w, w+2, w+4. Each column of low and high is a pair
        // of orthogonal unit vectors (omega = pi/2), so strength 0 gives `low` and 1 gives `high`.
        let at0 = slerp(0.0, &low, &high, shape);
        let at1 = slerp(1.0, &low, &high, shape);
        for k in 0..6 {
            assert!((at0[k] - low[k]).abs() < 1e-6 && (at1[k] - high[k]).abs() < 1e-6, "{at0:?} {at1:?}");
        }
        // Midpoint of two orthogonal unit columns lies on the unit circle: both weights sin(pi/4).
        let mid = slerp(0.5, &low, &high, shape);
        assert!((mid[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        // Identical inputs take the lerp branch with A1111's reversed weights: low*v + high*(1-v).
        let same = slerp(0.25, &low, &low, shape);
        assert!((same[0] - 1.0).abs() < 1e-6);
        let scaled: Vec<f32> = low.iter().map(|v| v * 2.0).collect();
        let lerp = slerp(0.25, &low, &scaled, shape);
        assert!((lerp[0] - (0.25 + 2.0 * 0.75)).abs() < 1e-6);
    }

    #[test]
    fn variation_seed_mixes_fresh_subseed_noise() {
        let options = ImageRngOptions { subseeds: Some(vec![99]), subseed_strength: 0.3, ..Default::default() };
        let got = ImageRng::new([4, 4, 4], vec![7], options, Device::Cpu).next().unwrap();
        let want = slerp(0.3, &PhiloxGenerator::new(7).randn(64), &PhiloxGenerator::new(99).randn(64), [4, 4, 4]);
        let want = Tensor::from_vec(want, (1, 4, 4, 4), &Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&got, &want), 0.0);
    }

    #[test]
    fn seed_resize_pastes_centered() {
        // 16x16 latent from a 64x64-pixel (8x8 latent) seed: the 8x8 noise lands at offset (4, 4).
        let options = ImageRngOptions { seed_resize_from_h: 64, seed_resize_from_w: 64, ..Default::default() };
        let got = ImageRng::new([4, 16, 16], vec![3], options, Device::Cpu).next().unwrap();
        let small = PhiloxGenerator::new(3).randn(4 * 8 * 8);
        let canvas = PhiloxGenerator::new(3).randn(4 * 16 * 16);
        let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got[(2 * 16 + 4) * 16 + 4], small[(2 * 8) * 8]);
        assert_eq!(got[(2 * 16 + 11) * 16 + 11], small[(2 * 8 + 7) * 8 + 7]);
        assert_eq!(got[0], canvas[0]);
        assert_eq!(got[(16 + 3) * 16 + 3], canvas[(16 + 3) * 16 + 3]);
        // A larger seed size is cropped centred: 16x16 noise onto an 8x8 latent takes rows/cols 4..12.
        let options = ImageRngOptions { seed_resize_from_h: 128, seed_resize_from_w: 128, ..Default::default() };
        let got: Vec<f32> = ImageRng::new([4, 8, 8], vec![3], options, Device::Cpu)
            .next()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(got[0], canvas[4 * 16 + 4]);
    }
}
