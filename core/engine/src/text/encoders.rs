//! Text conditioning per model family, from 77-token chunks to the UNet's inputs.
//!
//! * SD 1.x: CLIP-L with A1111's CLIP skip (final layer norm applied).
//! * SD 2.x: OpenCLIP-H "penultimate": `ln_final(hidden_states[-2])`, ids after the first EOS = 0.
//! * SDXL: CLIP-L `hidden_states[-2]` and OpenCLIP-bigG `hidden_states[-2]`, both without final
//!   norm, concatenated on channels; emphasis applied to each encoder separately; pooled =
//!   `ln_final(last)[first EOS] @ text_projection` (no emphasis), feeding the `y` vector.
//! * SDXL refiner: the bigG part alone (its conditioner has no CLIP-L), and a `y` vector of
//!   pooled, original size, crop and an aesthetic score (high for prompts, low for negatives).
//!
//! CLIP skip has no effect on SD 2.x / SDXL in A1111 v1.10.1.

use candle_core::{D, DType, Device, Tensor};

use sdapi_protocol::choices::EmphasisMode;

use super::tokenize::{CHUNK_TOKENS as CHUNK_LEN, EOS_ID};
use crate::checkpoint::ModelFamily;
use crate::clip::{ClipTextModel, TokenVectors};
use crate::error::EngineError;
use crate::unet::timestep_embedding;

/// What OpenCLIP sees after the first EOS of a chunk (A1111's `id_pad = 0`).
pub const OPEN_CLIP_PAD_ID: u32 = 0;

/// One chunk position of a batch of texts: per text, its 77 token ids (EOS padded, as A1111's
/// tokenizer makes them) and emphasis multipliers, plus any embedding vectors that replace
/// placeholder tokens. This is the whole input of the text encoders.
#[derive(Debug, Clone)]
pub struct ChunkColumn {
    pub tokens: Vec<[u32; CHUNK_LEN]>,
    pub multipliers: Vec<[f32; CHUNK_LEN]>,
    pub embeddings: Vec<EmbeddingFix>,
}

/// A textual-inversion embedding placed in one text of a column: `vectors[i]` (k, C_i) is for
/// text encoder i (SDXL: CLIP-L then bigG), placed from `position` of text `row` on.
#[derive(Debug, Clone)]
pub struct EmbeddingFix {
    pub row: usize,
    pub position: usize,
    pub vectors: Vec<Tensor>,
}

/// The fixes of encoder `encoder` (0: the first text encoder, 1: SDXL's bigG).
fn fixes_for(embeddings: &[EmbeddingFix], encoder: usize) -> Result<Vec<TokenVectors>, EngineError> {
    embeddings
        .iter()
        .map(|e| {
            let vectors = e.vectors.get(encoder).cloned().ok_or_else(|| {
                EngineError::Unsupported(format!(
                    "embedding at text {} has no vectors for text encoder {encoder}",
                    e.row
                ))
            })?;
            Ok(TokenVectors { row: e.row, position: e.position, vectors })
        })
        .collect()
}

/// The conditioning of a batch of texts as the UNet takes it.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// (texts, 77·chunks, context_dim): the UNet's cross-attention context.
    pub crossattn: Tensor,
    /// SDXL's `y`: (texts, adm_in_channels); `None` for SD 1.x / 2.x.
    pub vector: Option<Tensor>,
}

/// SDXL's second text encoder: OpenCLIP-bigG and its pooled-output projection.
pub struct OpenClipG {
    pub model: ClipTextModel,
    /// (width, projection_dim), used as `pooled = x @ text_projection`.
    pub text_projection: Tensor,
}

/// The text encoders of a checkpoint, by family.
pub enum TextEncoders {
    Sd1(ClipTextModel),
    /// `last_layer_dropped`: false when the tower still holds all layers (single files; the
    /// penultimate state is read), true for diffusers exports that dropped OpenCLIP-H's last layer
    /// (23 of 24 layers; their last state already is the penultimate one).
    Sd2 {
        open_clip: ClipTextModel,
        last_layer_dropped: bool,
    },
    Sdxl {
        clip_l: ClipTextModel,
        clip_g: OpenClipG,
    },
    /// The SDXL refiner's conditioner: OpenCLIP-bigG only.
    SdxlRefiner {
        clip_g: OpenClipG,
    },
}

/// One chunk position of a batch of texts, encoded.
#[derive(Debug, Clone)]
pub struct EncodedChunks {
    /// (texts, 77, context_dim), emphasis applied.
    pub crossattn: Tensor,
    /// SDXL: (texts, projection_dim), from the unweighted last layer.
    pub pooled: Option<Tensor>,
}

impl TextEncoders {
    pub fn family(&self) -> ModelFamily {
        match self {
            TextEncoders::Sd1(_) => ModelFamily::Sd1,
            TextEncoders::Sd2 { .. } => ModelFamily::Sd2,
            TextEncoders::Sdxl { .. } | TextEncoders::SdxlRefiner { .. } => ModelFamily::Sdxl,
        }
    }

    fn device(&self) -> &Device {
        match self {
            TextEncoders::Sd1(m) | TextEncoders::Sd2 { open_clip: m, .. } => m.device(),
            TextEncoders::Sdxl { clip_l, .. } => clip_l.device(),
            TextEncoders::SdxlRefiner { clip_g } => clip_g.model.device(),
        }
    }

    /// Encodes one chunk position for every text: `tokens[i]` is text i's chunk as A1111's
    /// tokenizer builds it (BOS, tokens, EOS padding; OpenCLIP's 0-padding is applied here), and
    /// `multipliers[i]` its emphasis weights. `clip_skip` only matters for SD 1.x.
    pub fn encode(
        &self,
        tokens: &[[u32; CHUNK_LEN]],
        multipliers: &[[f32; CHUNK_LEN]],
        emphasis: EmphasisMode,
        clip_skip: usize,
    ) -> Result<EncodedChunks, EngineError> {
        self.encode_with(tokens, multipliers, &[], emphasis, clip_skip)
    }

    /// [`Self::encode`] with textual-inversion vectors in place of their placeholder tokens.
    pub fn encode_with(
        &self,
        tokens: &[[u32; CHUNK_LEN]],
        multipliers: &[[f32; CHUNK_LEN]],
        embeddings: &[EmbeddingFix],
        emphasis: EmphasisMode,
        clip_skip: usize,
    ) -> Result<EncodedChunks, EngineError> {
        if tokens.is_empty() || tokens.len() != multipliers.len() {
            return Err(EngineError::Unsupported(format!(
                "{} token rows with {} multiplier rows",
                tokens.len(),
                multipliers.len()
            )));
        }
        let device = self.device();
        let weights = Tensor::from_vec(
            multipliers.iter().flatten().copied().collect::<Vec<f32>>(),
            (multipliers.len(), CHUNK_LEN),
            device,
        )?;
        let encoded = match self {
            TextEncoders::Sd1(clip) => EncodedChunks {
                crossattn: apply_emphasis(
                    &clip.forward_with(&ids(tokens, false, device)?, &fixes_for(embeddings, 0)?, clip_skip)?,
                    &weights,
                    emphasis,
                )?,
                pooled: None,
            },
            TextEncoders::Sd2 { open_clip, last_layer_dropped } => {
                let ids = ids(tokens, true, device)?;
                let (penultimate, last) = open_clip.penultimate_and_last(&ids, &fixes_for(embeddings, 0)?)?;
                let state = if *last_layer_dropped { last } else { penultimate };
                let z = open_clip.final_layer_norm(&state)?;
                EncodedChunks { crossattn: apply_emphasis(&z, &weights, emphasis)?, pooled: None }
            }
            TextEncoders::Sdxl { clip_l, clip_g } => {
                let (z_l, _) = clip_l.penultimate_and_last(&ids(tokens, false, device)?, &fixes_for(embeddings, 0)?)?;
                let z_l = apply_emphasis(&z_l, &weights, emphasis)?;
                let g = encode_open_clip_g(clip_g, tokens, &fixes_for(embeddings, 1)?, &weights, emphasis)?;
                EncodedChunks { crossattn: Tensor::cat(&[z_l, g.crossattn], D::Minus1)?, pooled: g.pooled }
            }
            TextEncoders::SdxlRefiner { clip_g } => {
                encode_open_clip_g(clip_g, tokens, &fixes_for(embeddings, 0)?, &weights, emphasis)?
            }
        };
        Ok(encoded)
    }
}

/// SDXL's bigG part of one chunk position: `hidden_states[-2]` without final norm, emphasis
/// applied, and the pooled output.
fn encode_open_clip_g(
    clip_g: &OpenClipG,
    tokens: &[[u32; CHUNK_LEN]],
    fixes: &[TokenVectors],
    weights: &Tensor,
    emphasis: EmphasisMode,
) -> Result<EncodedChunks, EngineError> {
    let g_ids = ids(tokens, true, weights.device())?;
    let (z_g, last_g) = clip_g.model.penultimate_and_last(&g_ids, fixes)?;
    let pooled = pooled_output(clip_g, &last_g, tokens)?;
    Ok(EncodedChunks { crossattn: apply_emphasis(&z_g, weights, emphasis)?, pooled: Some(pooled) })
}

/// The ids OpenCLIP gets for a chunk: everything after the first EOS replaced by 0.
pub fn open_clip_ids(row: &[u32; CHUNK_LEN]) -> [u32; CHUNK_LEN] {
    let mut row = *row;
    if let Some(eos) = row.iter().position(|&t| t == EOS_ID) {
        row[eos + 1..].fill(OPEN_CLIP_PAD_ID);
    }
    row
}

/// (n, 77) u32 ids, OpenCLIP-padded when `open_clip`.
fn ids(tokens: &[[u32; CHUNK_LEN]], open_clip: bool, device: &Device) -> candle_core::Result<Tensor> {
    let mut flat = Vec::with_capacity(tokens.len() * CHUNK_LEN);
    for row in tokens {
        flat.extend_from_slice(&if open_clip { open_clip_ids(row) } else { *row });
    }
    Tensor::from_vec(flat, (tokens.len(), CHUNK_LEN), device)
}

/// `ln_final(last)` at each row's first EOS (OpenCLIP's `argmax` of the 0-padded ids), `@ P`.
fn pooled_output(clip_g: &OpenClipG, last: &Tensor, tokens: &[[u32; CHUNK_LEN]]) -> Result<Tensor, EngineError> {
    let mut rows = Vec::with_capacity(tokens.len());
    for (i, row) in tokens.iter().enumerate() {
        let eos = row.iter().position(|&t| t == EOS_ID).unwrap_or(CHUNK_LEN - 1);
        rows.push(last.get(i)?.get(eos)?.unsqueeze(0)?);
    }
    let at_eos = clip_g.model.final_layer_norm(&Tensor::cat(&rows, 0)?)?;
    let projection = clip_g.text_projection.to_dtype(at_eos.dtype())?;
    Ok(at_eos.matmul(&projection)?)
}

/// `sd_emphasis` after the transformer, on one chunk position `z` (n, 77, C) with `weights`
/// (n, 77) — the only implementation. Original: `z·m`, then rescaled by `mean(z) / mean(z·m)`
/// where both means run over the whole tensor, accumulated in f64 (torch sums f32 with a cascade
/// at least as accurate) with the ratio formed in f32 as torch does. "No norm": `z·m`. "Ignore"
/// and "None": `z` unchanged.
pub fn apply_emphasis(z: &Tensor, weights: &Tensor, emphasis: EmphasisMode) -> candle_core::Result<Tensor> {
    let weighted = || z.broadcast_mul(&weights.to_dtype(z.dtype())?.unsqueeze(2)?);
    match emphasis {
        EmphasisMode::Ignore | EmphasisMode::None => Ok(z.clone()),
        EmphasisMode::NoNorm => weighted(),
        EmphasisMode::Original => {
            let original_mean = mean_f32(z)?;
            let weighted = weighted()?;
            let new_mean = mean_f32(&weighted)?;
            let ratio = Tensor::new(original_mean / new_mean, z.device())?.to_dtype(z.dtype())?;
            weighted.broadcast_mul(&ratio)
        }
    }
}

fn mean_f32(t: &Tensor) -> candle_core::Result<f32> {
    Ok(t.to_dtype(DType::F64)?.mean_all()?.to_scalar::<f64>()? as f32)
}

/// SDXL's size conditioning (A1111: original = target = (height, width) of the request, crop =
/// (`sdxl_crop_top`, `sdxl_crop_left`), default (0, 0)) and the refiner's aesthetic scores
/// (`sdxl_refiner_high_aesthetic_score` for prompts, `…_low_…` for negative prompts).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SdxlSizes {
    pub original_size: (f64, f64),
    pub crop_top_left: (f64, f64),
    pub target_size: (f64, f64),
    /// (positive, negative).
    pub aesthetic_scores: (f64, f64),
}

/// A1111's defaults of `sdxl_refiner_high_aesthetic_score` and `sdxl_refiner_low_aesthetic_score`.
pub const DEFAULT_AESTHETIC_SCORES: (f64, f64) = (6.0, 2.5);

impl SdxlSizes {
    /// What A1111 v1.10.1 passes for a txt2img/img2img request of `width` x `height` with the
    /// default options.
    pub fn for_request(width: usize, height: usize) -> Self {
        let size = (height as f64, width as f64);
        Self {
            original_size: size,
            crop_top_left: (0.0, 0.0),
            target_size: size,
            aesthetic_scores: DEFAULT_AESTHETIC_SCORES,
        }
    }

    /// The numbers in sgm's embedder order (each pair h/top first): the base model's original
    /// size, crop and target size; the refiner's original size, crop and aesthetic score.
    fn numbers(&self, kind: VectorKind, side: TextSide) -> Vec<f64> {
        let (a, b, c) = (self.original_size, self.crop_top_left, self.target_size);
        match kind {
            VectorKind::Base => vec![a.0, a.1, b.0, b.1, c.0, c.1],
            VectorKind::Refiner => {
                let score = if side.is_negative() { self.aesthetic_scores.1 } else { self.aesthetic_scores.0 };
                vec![a.0, a.1, b.0, b.1, score]
            }
        }
    }
}

/// Which `y` vector a model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorKind {
    /// SDXL base: pooled + 6 numbers.
    Base,
    /// SDXL refiner: pooled + 5 numbers.
    Refiner,
}

impl VectorKind {
    /// How many numbers are embedded after the pooled text.
    pub fn numbers(self) -> usize {
        match self {
            VectorKind::Base => 6,
            VectorKind::Refiner => 5,
        }
    }
}

/// Which side of classifier-free guidance a batch of texts conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextSide {
    Positive,
    /// `all_empty`: every text of the batch is empty (A1111 then zeroes SDXL's text parts).
    Negative {
        all_empty: bool,
    },
}

impl TextSide {
    pub fn is_negative(self) -> bool {
        matches!(self, TextSide::Negative { .. })
    }

    /// SDXL's `force_zero_negative_prompt`.
    pub fn zeroes_text(self) -> bool {
        matches!(self, TextSide::Negative { all_empty: true })
    }
}

/// SDXL's `y`: `[pooled | E(n₁) | … | E(n_k)]` per row, the numbers of `kind` (see
/// [`SdxlSizes`]) each embedded with the sinusoidal timestep embedding of width `embed_dim`
/// (sgm's `ConcatTimestepEmbedderND`). `pooled`: (n, P) → (n, P + k·embed_dim).
pub fn sdxl_vector(
    pooled: &Tensor,
    sizes: &SdxlSizes,
    kind: VectorKind,
    side: TextSide,
    embed_dim: usize,
) -> candle_core::Result<Tensor> {
    let n = pooled.dim(0)?;
    let numbers: Vec<f32> = sizes.numbers(kind, side).iter().map(|&v| v as f32).collect();
    let count = numbers.len();
    let numbers = Tensor::from_vec(numbers, count, pooled.device())?;
    let embedded = timestep_embedding(&numbers, embed_dim, 10000.0, pooled.device())?
        .reshape((1, count * embed_dim))?
        .to_dtype(pooled.dtype())?
        .repeat((n, 1))?;
    Tensor::cat(&[pooled, &embedded], 1)
}
