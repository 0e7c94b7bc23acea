//! Adapts a loaded model to the prompts layer's [`TextEncoder`]: SD 1.x goes through the chunk
//! encoder (emphasis applied by the prompts layer), SD 2.x and SDXL through the engine's own
//! per-encoder conditioning (OpenCLIP padding, per-encoder emphasis, SDXL's pooled vector).

use candle_core::Tensor;

use super::engine::{ChunkColumn, Emphasis, LoadedModel, ModelFamily, SdxlSizes};
use crate::prompts::conditioning::{ChunkedBatch, ConditioningOptions, encode_batch_with_chunks};
use crate::prompts::tokenize::EmphasisMode;
use crate::prompts::{PromptError, TextEncoder};

pub struct ModelTextEncoder<'a> {
    pub model: &'a LoadedModel,
    /// SDXL size conditioning of this request.
    pub sizes: SdxlSizes,
}

fn engine_emphasis(mode: EmphasisMode) -> Emphasis {
    match mode {
        EmphasisMode::Original => Emphasis::Original,
        EmphasisMode::NoNorm => Emphasis::NoNorm,
        EmphasisMode::Ignore | EmphasisMode::None => Emphasis::Off,
    }
}

impl TextEncoder for ModelTextEncoder<'_> {
    fn encode_chunks(&self, tokens: &[[u32; 77]], clip_skip: usize) -> candle_core::Result<Tensor> {
        self.model.encode_chunks(tokens, clip_skip)
    }

    fn encode_batch(
        &self,
        batch: &ChunkedBatch,
        options: &ConditioningOptions,
        zero_text: bool,
    ) -> Result<(Tensor, Option<Tensor>), PromptError> {
        if self.model.family == ModelFamily::Sd1 {
            return encode_batch_with_chunks(self, batch, options).map(|t| (t, None));
        }
        let pad_id = options.chunking.pad_id;
        let columns: Vec<ChunkColumn> = batch
            .chunks
            .iter()
            .map(|column| ChunkColumn {
                tokens: column.iter().map(|c| c.encoder_ids(pad_id)).collect(),
                multipliers: column.iter().map(|c| c.multipliers).collect(),
            })
            .collect();
        let cond = self
            .model
            .condition(&columns, engine_emphasis(options.chunking.emphasis), options.clip_skip, &self.sizes, zero_text)
            .map_err(|e| PromptError::Tensor(candle_core::Error::Msg(e.to_string())))?;
        Ok((cond.crossattn, cond.vector))
    }
}
