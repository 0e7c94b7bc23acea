//! Random sources and A1111's per-image noise (§4): the NV (Philox) and CPU (torch mt19937)
//! generators, seed resolution, and [`ImageRng`], which hands samplers their noise.

mod image_rng;
pub mod philox;
mod seeds;
pub mod torch_cpu;

pub use image_rng::{ImageRng, ImageRngOptions, slerp};
pub use philox::PhiloxGenerator;
pub use seeds::{all_seeds, all_subseeds, fixed_seed, fixed_seed_with};
pub use torch_cpu::TorchCpuGenerator;

/// A1111's `randn_source` option. `Gpu` (A1111's default, CUDA's Philox) is reproduced with the NV
/// emulation, which is what A1111 produces on NVIDIA hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RandnSource {
    #[default]
    Gpu,
    Cpu,
    Nv,
}

impl RandnSource {
    /// Parses the option value ("GPU", "CPU", "NV"); `None` for anything else.
    pub fn from_option(value: &str) -> Option<Self> {
        match value {
            "GPU" => Some(Self::Gpu),
            "CPU" => Some(Self::Cpu),
            "NV" => Some(Self::Nv),
            _ => None,
        }
    }

    /// A fresh generator seeded with `seed` (A1111 `create_generator`).
    pub fn generator(self, seed: i64) -> NormalGenerator {
        match self {
            Self::Gpu | Self::Nv => NormalGenerator::Philox(PhiloxGenerator::new(seed)),
            Self::Cpu => NormalGenerator::TorchCpu(TorchCpuGenerator::new(seed)),
        }
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
