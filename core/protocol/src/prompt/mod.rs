//! A1111's prompt syntax, as text in and structured text out (no tokenizer, no tensors).
//!
//! * [`attention`]: `(x)`, `[x]`, `(x:w)`, escapes, BREAK → weighted fragments.
//! * [`schedules`]: `[a:b:when]`, `[a|b]` → per-step texts.
//! * [`multicond`]: `AND` and `:weight` → deduplicated sub-prompts.
//! * [`extra_networks`]: `<lora:…>` tags and `#` comments.

pub mod attention;
pub mod extra_networks;
pub mod multicond;
pub mod schedules;
mod text;

#[cfg(test)]
mod tests;

pub use attention::{WeightedText, parse_attention, parse_prompt_attention};
pub use extra_networks::{ExtraNetworkTag, parse_extra_networks, strip_comments};
pub use multicond::{MulticondPromptList, get_multicond_prompt_list};
pub use schedules::{ScheduleEntry, ScheduleParams, get_learned_conditioning_prompt_schedules, prompt_schedule};

/// Errors of prompt parsing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromptError {
    /// `(text:w)` with a weight Python's `float` rejects (A1111 fails the request too).
    #[error("invalid emphasis weight {0:?}")]
    InvalidEmphasisWeight(String),
}
