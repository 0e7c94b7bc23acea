//! Bounds on the work one request may ask for. A request over a bound gets an A1111-shaped 422
//! naming it, before anything is queued; the defaults are far above what A1111 clients send (a
//! 150-token prompt is 2 chunks and a few hundred characters; SDXL 1024² batch 4 at 50 steps is
//! 4.2 megapixels per batch and 210 megapixel-steps).

/// Configured by the `SDAPI_MAX_*` variables of the README's configuration table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Characters in one prompt or negative prompt.
    pub max_prompt_chars: usize,
    /// 75-token chunks one prompt text may encode to; the engine checks it when it tokenizes,
    /// before the text encoder runs (the tokenizer lives with the model).
    pub max_prompt_chunks: usize,
    /// Pixels one batch holds at once (width × height × batch_size), in millions: what the
    /// latents, the VAE and the decoded images of one runner job cost in memory.
    pub max_batch_megapixels: usize,
    /// Pixels × steps of the whole request (every batch of `n_iter`), in millions: how long the
    /// request holds the device.
    pub max_request_megapixel_steps: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_prompt_chars: 32 * 1024,
            max_prompt_chunks: 64,
            max_batch_megapixels: 64,
            max_request_megapixel_steps: 100_000,
        }
    }
}

/// What one request asks of the device, from its sizes alone (no model needed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkCost {
    /// width × height × batch_size, in millions of pixels.
    pub batch_megapixels: f64,
    /// batch pixels × steps × n_iter, in millions.
    pub megapixel_steps: f64,
}

impl WorkCost {
    /// Computed in f64 so that no product of (already range-checked) fields can overflow.
    pub fn of(width: i64, height: i64, batch_size: i64, n_iter: i64, steps: i64) -> Self {
        let batch_megapixels = width as f64 * height as f64 * batch_size as f64 / 1e6;
        Self { batch_megapixels, megapixel_steps: batch_megapixels * steps as f64 * n_iter as f64 }
    }

    /// The first limit this work exceeds, as the message of the 422.
    pub fn over(&self, limits: &RequestLimits) -> Option<String> {
        if self.batch_megapixels > limits.max_batch_megapixels as f64 {
            return Some(format!(
                "width × height × batch_size is {:.1} megapixels, more than this server generates in one batch ({}, SDAPI_MAX_BATCH_MEGAPIXELS)",
                self.batch_megapixels, limits.max_batch_megapixels
            ));
        }
        if self.megapixel_steps > limits.max_request_megapixel_steps as f64 {
            return Some(format!(
                "width × height × batch_size × n_iter × steps is {:.0} megapixel-steps, more than this server runs for one request ({}, SDAPI_MAX_MEGAPIXEL_STEPS)",
                self.megapixel_steps, limits.max_request_megapixel_steps
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usual_client_sizes_fit_the_default_limits() {
        let limits = RequestLimits::default();
        // (width, height, batch_size, n_iter, steps): SDXL 1024² batch 4; its hires 2× pass;
        // SD 1.5 512² batch 8 with 150 steps; a long batch job of 100 × 4 SDXL images.
        for (w, h, b, n, s) in
            [(1024, 1024, 4, 1, 50), (2048, 2048, 4, 1, 50), (512, 512, 8, 1, 150), (1024, 1024, 4, 100, 40)]
        {
            assert_eq!(WorkCost::of(w, h, b, n, s).over(&limits), None, "{w}x{h} b{b} n{n} s{s}");
        }
    }

    #[test]
    fn each_limit_is_named_when_crossed() {
        let limits = RequestLimits::default();
        let wide = WorkCost::of(8192, 8192, 64, 1, 20).over(&limits).unwrap();
        assert!(wide.contains("SDAPI_MAX_BATCH_MEGAPIXELS"), "{wide}");
        let long = WorkCost::of(2048, 2048, 8, 1000, 1000).over(&limits).unwrap();
        assert!(long.contains("SDAPI_MAX_BATCH_MEGAPIXELS") || long.contains("SDAPI_MAX_MEGAPIXEL_STEPS"), "{long}");
        let long = WorkCost::of(512, 512, 1, 1000, 1000).over(&limits).unwrap();
        assert!(long.contains("SDAPI_MAX_MEGAPIXEL_STEPS"), "{long}");
        // The largest request the per-field bounds let through cannot overflow the arithmetic.
        assert!(WorkCost::of(8192, 8192, 64, 1000, 1000).megapixel_steps.is_finite());
    }
}
