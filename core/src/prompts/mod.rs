//! Prompt syntax of A1111 (§7): emphasis, prompt editing / alternation schedules, AND, and the
//! 75-token chunking of `sd_hijack_clip`.

use candle_core::Tensor;

/// What the conditioning code needs from a text encoder: run CLIP over chunks of exactly 77 token ids.
/// Returns (n, 77, C). `clip_skip` is A1111's `CLIP_stop_at_last_layers` (1 = last layer).
pub trait TextEncoder {
    fn encode_chunks(&self, tokens: &[[u32; 77]], clip_skip: usize) -> candle_core::Result<Tensor>;
}
