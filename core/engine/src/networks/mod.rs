//! Extra networks on the engine side (docs/a1111-behaviour.md §7.6–7.7): reading LoRA-family and
//! textual-inversion files (safetensors, or PyTorch archives through a checked, code-free pickle
//! reader), mapping LoRA keys onto the model's layers, the weight patch that merges them, and the
//! embedding table the executor keeps per loaded model.

pub mod embedding;
pub mod inspector;
pub mod lora;
pub mod lora_names;
pub mod pickle_guard;
pub mod tensor_file;

pub use embedding::{EmbeddingData, EmbeddingVectors, MAX_EMBEDDING_VECTORS};
pub use inspector::EngineInspector;
pub use lora::{LoraFile, LoraPatch, LoraResolution, ModuleUpdate};
pub use lora_names::{LayerIndex, convert_diffusers_name_to_compvis};
/// Errors of reading a network file (the core's type: one definition for both sides).
pub use sdapi_core::networks::NetworkError;
pub use tensor_file::{FileStamp, file_stamp};
