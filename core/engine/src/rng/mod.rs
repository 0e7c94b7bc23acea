//! Random sources and A1111's per-image noise (docs/parity.md): the NV (Philox) and CPU (torch mt19937)
//! generators, seed resolution, and [`ImageRng`], which hands samplers their noise.

mod image_rng;
pub mod philox;
pub mod torch_cpu;

pub use image_rng::{ImageRng, ImageRngOptions, slerp};
pub use philox::PhiloxGenerator;
pub use torch_cpu::TorchCpuGenerator;

pub use sdapi_protocol::choices::RandnSource;

use candle_core::Tensor;

/// Source of the per-step noise (`torch.randn_like` inside k-diffusion): one draw per image
/// generator, stacked to the latent batch shape. Samplers draw through it; this module does not
/// depend on the samplers.
pub trait NoiseSource {
    fn randn_like(&mut self, like: &Tensor) -> candle_core::Result<Tensor>;
}

/// A fresh generator for `source` seeded with `seed` (A1111 `create_generator`). `Gpu` (CUDA's
/// Philox, A1111's default) is reproduced with the NV emulation on every device.
pub fn generator(source: RandnSource, seed: i64) -> NormalGenerator {
    match source {
        RandnSource::Gpu | RandnSource::Nv => NormalGenerator::Philox(PhiloxGenerator::new(seed)),
        RandnSource::Cpu => NormalGenerator::TorchCpu(TorchCpuGenerator::new(seed)),
    }
}

/// One seeded stream of standard normal float32 values.
#[derive(Debug, Clone)]
pub enum NormalGenerator {
    Philox(PhiloxGenerator),
    TorchCpu(TorchCpuGenerator),
}

impl NormalGenerator {
    /// The next draw of `n` elements (one `torch.randn(shape)` call).
    pub fn randn(&mut self, n: usize) -> Vec<f32> {
        match self {
            Self::Philox(g) => g.randn(n),
            Self::TorchCpu(g) => g.randn(n),
        }
    }
}
