//! Text conditioning, one path for every family (SD 1.x, SD 2.x, SDXL):
//!
//! 1. [`tokenize`]: a prompt's text → 77-token chunks of ids and emphasis multipliers (A1111's
//!    `tokenize_line`, comma back-off, BREAK), with the prompt syntax parsed by `sdapi-protocol`.
//! 2. [`encoders`]: one chunk position of a batch of texts through the model's text encoder(s):
//!    CLIP skip, OpenCLIP padding and penultimate layer, emphasis (the one implementation), and
//!    SDXL's pooled output.
//! 3. [`conditioning`]: prompt schedules and `AND` sub-prompts → the per-step conditioning the
//!    CFG denoiser reads (`get_learned_conditioning`, `reconstruct_*`), over any [`Conditioner`].
//!
//! Textual inversion rides on the same path: [`embeddings`] holds the table the tokenizer matches
//! names against (placeholder runs, [`ChunkFix`]) and [`EmbeddingFix`] puts the vectors in place of
//! those tokens in each text encoder. LoRAs change the weights instead (`crate::networks`).

pub mod conditioning;
pub mod embeddings;
pub mod encoders;
pub mod tokenize;

#[cfg(test)]
mod tests;

pub use conditioning::{
    ChunkedBatch, ComposableScheduledPromptConditioning, Conditioner, CondsList, LearnedConditioningPlan,
    MulticondLearnedConditioning, PromptSchedule, ScheduledPromptConditioning, TextConditioner, multicond_plan,
    reconstruct_cond_batch, reconstruct_cond_vectors, reconstruct_multicond_batch, reconstruct_multicond_vectors,
};
pub use embeddings::{EmbeddingTable, TableEntry, TiHashes};
pub use encoders::{
    ChunkColumn, Conditioning, DEFAULT_AESTHETIC_SCORES, EmbeddingFix, OpenClipG, SdxlSizes, TextEncoders, TextSide,
    VectorKind, apply_emphasis, sdxl_vector,
};
pub use tokenize::{
    BOS_ID, CHUNK_LENGTH, CHUNK_TOKENS, ChunkFix, ChunkingOptions, ClipTokenizer, EMBEDDING_PLACEHOLDER, EOS_ID,
    EmbeddingVocab, PromptChunk, TokenizedLine,
};

/// Errors of turning prompts into conditioning.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The prompt syntax is invalid where A1111 fails too (an emphasis weight Python rejects).
    #[error(transparent)]
    Syntax(#[from] sdapi_protocol::prompt::PromptError),
    #[error("no prompt to condition on")]
    Empty,
    /// A prompt text longer than the configured bound (`SDAPI_MAX_PROMPT_CHUNKS`).
    #[error(
        "a prompt tokenizes to {chunks} chunks of 75 tokens, more than this server accepts ({limit}, SDAPI_MAX_PROMPT_CHUNKS)"
    )]
    TooManyChunks { chunks: usize, limit: usize },
    /// Conds of different token lengths where A1111 cannot batch them either.
    #[error("conditioning shapes differ within a batch: {0:?} vs {1:?}")]
    ShapeMismatch(Vec<usize>, Vec<usize>),
    #[error("text encoder: {0}")]
    Encoder(String),
    #[error("text encoder: {0}")]
    Tensor(#[from] candle_core::Error),
}
