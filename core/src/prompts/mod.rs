//! Prompt syntax of A1111 (§7): emphasis, prompt editing / alternation schedules, AND, and the
//! 75-token chunking of `sd_hijack_clip`.
//!
//! * [`attention`]: `(x)`, `[x]`, `(x:w)`, escapes, BREAK → weighted fragments.
//! * [`schedules`]: `[a:b:when]`, `[a|b]` → per-step texts.
//! * [`multicond`]: `AND` and `:weight` → deduplicated sub-prompts.
//! * [`tokenize`]: CLIP BPE and the 75-token chunks with their multipliers.
//! * [`conditioning`]: chunks → tensors through a [`TextEncoder`], emphasis, schedules and the
//!   per-step lookups the CFG denoiser uses.
//! * [`extra_networks`]: `<lora:…>` tags and `#` comments.

use candle_core::Tensor;

pub mod attention;
pub mod conditioning;
pub mod extra_networks;
pub mod multicond;
pub mod schedules;
mod text;
pub mod tokenize;

#[cfg(test)]
mod tests;

pub use attention::{WeightedText, parse_attention, parse_prompt_attention};
pub use conditioning::{
    ChunkedBatch, ComposableScheduledPromptConditioning, ConditioningOptions, CondsList, LearnedConditioningPlan,
    MulticondLearnedConditioning, PromptSchedule, ScheduledPromptConditioning, TextConditioner, apply_emphasis,
    multicond_plan, reconstruct_cond_batch, reconstruct_multicond_batch,
};
pub use extra_networks::{ExtraNetworkTag, parse_extra_networks, strip_comments};
pub use multicond::{MulticondPromptList, get_multicond_prompt_list};
pub use schedules::{ScheduleEntry, ScheduleParams, get_learned_conditioning_prompt_schedules, prompt_schedule};
pub use tokenize::{ChunkingOptions, ClipTokenizer, EmphasisMode, PromptChunk, TokenizedLine, emphasis_infotext};

/// What the conditioning code needs from a text encoder: run CLIP over chunks of exactly 77 token ids.
/// Returns (n, 77, C). `clip_skip` is A1111's `CLIP_stop_at_last_layers` (1 = last layer).
pub trait TextEncoder {
    fn encode_chunks(&self, tokens: &[[u32; 77]], clip_skip: usize) -> candle_core::Result<Tensor>;

    /// Conditioning of a whole chunked batch: (texts, 77·k, C) and, for models with pooled
    /// conditioning (SDXL), a per-text vector. The default is the SD-1.x path: each chunk position
    /// encoded as one batch, emphasis applied per chunk, chunks concatenated on the token axis.
    /// `zero_text`: the batch is an all-empty negative prompt (SDXL zeroes it).
    fn encode_batch(
        &self,
        batch: &conditioning::ChunkedBatch,
        options: &conditioning::ConditioningOptions,
        zero_text: bool,
    ) -> Result<(Tensor, Option<Tensor>), PromptError> {
        let _ = zero_text;
        conditioning::encode_batch_with_chunks(self, batch, options).map(|t| (t, None))
    }
}

/// Errors of prompt handling.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// `(text:w)` with a weight Python's `float` rejects (A1111 fails the request too).
    #[error("invalid emphasis weight {0:?}")]
    InvalidEmphasisWeight(String),
    #[error("no prompt to condition on")]
    Empty,
    /// Conds of different token lengths where A1111 cannot batch them either.
    #[error("conditioning shapes differ within a batch: {0:?} vs {1:?}")]
    ShapeMismatch(Vec<usize>, Vec<usize>),
    #[error("text encoder: {0}")]
    Tensor(#[from] candle_core::Error),
}
