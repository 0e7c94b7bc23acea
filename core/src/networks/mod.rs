//! Extra networks as the request side sees them (docs/a1111-behaviour.md §7.5–7.7): which LoRA and
//! embedding files exist, what a batch's prompts activate, and their hashes for the infotext. The
//! tensors themselves are read and merged by the engine.

pub mod activation;
pub mod catalog;
pub mod fetch;
pub mod safetensors_header;

#[cfg(test)]
mod fuzz_tests;

use std::path::PathBuf;

pub use activation::{BatchNetworks, MAX_LORAS_PER_BATCH, batch_networks, is_lora_tag};
pub use catalog::{
    EMBEDDING_EXTENSIONS, LORA_EXTENSIONS, LoraEntry, MAX_EMBEDDING_BYTES, NetworkCatalog, has_extension,
    is_safetensors,
};
pub use fetch::{BoxFuture, NetworkFetcher, check_network_name};
pub use safetensors_header::{SafetensorsHeader, addnet_hash};

/// Errors of reading network files or tags.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid network file: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A tag whose arguments are not numbers where A1111 expects numbers.
    #[error("invalid extra network tag {0}")]
    BadTag(String),
    #[error("a prompt activates {count} LoRAs, more than this server merges at once ({limit})")]
    TooMany { count: usize, limit: usize },
}

/// An embedding file as `/sdapi/v1/embeddings` lists it (A1111's `EmbeddingItem`).
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingInfo {
    pub step: Option<i64>,
    pub sd_checkpoint: Option<String>,
    pub sd_checkpoint_name: Option<String>,
    /// Vector width (SDXL: CLIP-L + bigG, 2048).
    pub shape: usize,
    pub vectors: usize,
}

/// What only the engine can read: tensor files, and how wide a checkpoint's token vectors are.
/// The binaries plug the engine's implementation into the service.
pub trait NetworkInspector: Send + Sync {
    fn embedding_info(&self, path: &std::path::Path) -> Result<EmbeddingInfo, String>;
    /// The embedding width `checkpoint` takes (768 SD 1.x, 1024 SD 2.x, 768 + 1280 SDXL).
    fn embedding_width(&self, checkpoint: &std::path::Path) -> Result<usize, String>;
}
