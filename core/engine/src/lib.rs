//! sdapi-engine: the diffusion engine on candle. No HTTP, no A1111 JSON, no storage: checkpoints
//! and their configs in, tensors and pixels out.
//!
//! * Models: [`checkpoint`] (single files, diffusers folders, VAE overrides) over [`loader`]
//!   (mmap'd safetensors under LDM names), [`config`] (architecture from the shipped configs, else
//!   tensor shapes and the family's published defaults), [`clip`], [`unet`], [`vae`], and
//!   [`model::LoadedModel`], which ties them together.
//! * [`text`]: the one conditioning path for every family (tokens and multipliers in,
//!   conditioning out).
//! * [`sampling`]: the 20 A1111 samplers and 12 schedulers; [`rng`]: A1111's random sources.
//! * [`preview`]: A1111's "Approx cheap" latent-to-RGB previews.
//! * [`executor`]: [`executor::DiffusionExecutor`], the runner's `BatchExecutor` on this engine
//!   (`sdapi-core` defines the runner and the typed jobs; this crate implements the device side).
//! * [`bench`]: benchmarks of the engine and the request path (the `bench` binary).
//!
//! Names of samplers, schedulers, random sources and emphasis modes are the enums of
//! `sdapi_protocol::choices`: the engine runs exactly what the API lists.

pub mod attention;
pub mod bench;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod conv;
mod cpu_storage;
mod error;
pub mod executor;
mod fused;
pub mod latent_upscale;
mod linear;
pub mod loader;
mod matmul;
pub mod model;
pub mod networks;
mod norm;
pub mod preview;
pub mod rng;
pub mod sampling;
pub mod schedule;
pub mod shipped_config;
pub mod text;
pub mod unet;
pub mod upscaler;
pub mod vae;
pub mod vae_precision;

#[cfg(test)]
mod tests;

pub use checkpoint::{ModelFamily, PredictionType};
pub use clip::ClipTextModel;
pub use config::{ClipActivation, ClipConfig, UnetConfig, UnetHeads, VaeConfig};
pub use error::EngineError;
pub use model::{LoadedModel, ModelConditioner};
pub use text::{ChunkColumn, Conditioning, SdxlSizes};
pub use unet::UNetModel;
pub use vae::{AutoencoderKl, to_rgb8};
