//! Bounds on the work one request may ask for. A request over a bound gets an A1111-shaped 422
//! naming it, before anything is queued; the defaults are far above what A1111 clients send (a
//! 150-token prompt is 2 chunks and a few hundred characters).

/// Configured by `SDAPI_MAX_PROMPT_CHARS` / `SDAPI_MAX_PROMPT_CHUNKS` (README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Characters in one prompt or negative prompt.
    pub max_prompt_chars: usize,
    /// 75-token chunks one prompt text may encode to; the engine checks it when it tokenizes,
    /// before the text encoder runs (the tokenizer lives with the model).
    pub max_prompt_chunks: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self { max_prompt_chars: 32 * 1024, max_prompt_chunks: 64 }
    }
}
