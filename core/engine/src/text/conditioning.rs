//! Conditioning tensors from prompts: A1111's `get_learned_conditioning`,
//! `get_multicond_learned_conditioning` and the per-step `reconstruct_*` lookups, on top of a
//! [`Conditioner`] (the model, or a stand-in in tests).
//!
//! Planning (which texts go to the encoder together) is kept apart from encoding, so the token
//! batches of every encoder call can be checked without running CLIP.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::Tensor;
use sdapi_protocol::prompt::{ScheduleEntry, ScheduleParams, get_multicond_prompt_list, prompt_schedule};

use super::TextError;
use super::embeddings::{EmbeddingTable, TiHashes};
use super::encoders::{ChunkColumn, Conditioning, EmbeddingFix, TextSide};
use super::tokenize::{ChunkingOptions, ClipTokenizer, PromptChunk};

/// The model side of the path: one chunked batch of texts → its conditioning. The engine's
/// `ModelConditioner` is the real one (every family); tests use stand-ins.
pub trait Conditioner {
    /// `side`: prompts or negative prompts (an all-empty negative batch SDXL zeroes; the SDXL
    /// refiner embeds a different aesthetic score for each side).
    fn condition(&self, batch: &ChunkedBatch, side: TextSide) -> Result<Conditioning, TextError>;
}

/// The chunks of a batch of texts laid out as A1111 feeds CLIP: `chunks[i][t]` is chunk `i` of
/// text `t`; texts with fewer chunks get empty chunks. Shape (chunks, texts, 77).
#[derive(Debug, Clone)]
pub struct ChunkedBatch {
    pub chunks: Vec<Vec<PromptChunk>>,
    /// Per chunk position, the embedding vectors that replace placeholder tokens.
    pub embeddings: Vec<Vec<EmbeddingFix>>,
}

impl ChunkedBatch {
    /// Tokenizes every text and pads to the longest (A1111's `process_texts` + `forward`).
    pub fn new(tokenizer: &ClipTokenizer, texts: &[String], options: &ChunkingOptions) -> Result<Self, TextError> {
        Self::with_embeddings(tokenizer, texts, options, None)
    }

    /// [`Self::new`] with textual-inversion embeddings matched in the texts.
    pub fn with_embeddings(
        tokenizer: &ClipTokenizer,
        texts: &[String],
        options: &ChunkingOptions,
        table: Option<&EmbeddingTable>,
    ) -> Result<Self, TextError> {
        let mut cache: HashMap<&str, Vec<PromptChunk>> = HashMap::new();
        let mut per_text = Vec::with_capacity(texts.len());
        for text in texts {
            let chunks = match cache.get(text.as_str()) {
                Some(chunks) => chunks.clone(),
                None => {
                    let chunks = tokenizer.tokenize_line_with(text, options, table.map(|t| &t.vocab))?.chunks;
                    cache.insert(text, chunks.clone());
                    chunks
                }
            };
            per_text.push(chunks);
        }
        let chunk_count = per_text.iter().map(Vec::len).max().unwrap_or(0);
        let chunks: Vec<Vec<PromptChunk>> = (0..chunk_count)
            .map(|i| per_text.iter().map(|c| c.get(i).cloned().unwrap_or_else(PromptChunk::empty)).collect())
            .collect();
        let embeddings = chunks.iter().map(|column| table.map(|t| t.fixes(column)).unwrap_or_default()).collect();
        Ok(Self { chunks, embeddings })
    }

    /// The encoder inputs, one column per chunk position.
    pub fn columns(&self) -> Vec<ChunkColumn> {
        self.chunks
            .iter()
            .zip(&self.embeddings)
            .map(|(column, embeddings)| ChunkColumn {
                tokens: column.iter().map(|c| c.tokens).collect(),
                multipliers: column.iter().map(|c| c.multipliers).collect(),
                embeddings: embeddings.clone(),
            })
            .collect()
    }
}

/// A1111's `ScheduledPromptConditioning`: use `cond` (77k, C) while step <= `end_at_step`.
#[derive(Debug, Clone)]
pub struct ScheduledPromptConditioning {
    pub end_at_step: usize,
    pub cond: Tensor,
    /// SDXL's pooled/size vector for this entry (None for SD 1.x / 2.x).
    pub vector: Option<Tensor>,
}

/// The schedule of one prompt, shared between identical prompts of a batch.
pub type PromptSchedule = Arc<Vec<ScheduledPromptConditioning>>;

/// One AND sub-prompt of one image: its schedule and weight.
#[derive(Debug, Clone)]
pub struct ComposableScheduledPromptConditioning {
    pub schedules: PromptSchedule,
    pub weight: f64,
}

/// Per image of the batch, its AND sub-prompts.
#[derive(Debug, Clone)]
pub struct MulticondLearnedConditioning {
    pub batch: Vec<Vec<ComposableScheduledPromptConditioning>>,
}

/// Which texts each encoder call gets: one call per distinct prompt, with all texts of that
/// prompt's schedule in one batch (A1111's `get_learned_conditioning`).
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedConditioningPlan {
    /// Schedules of the distinct prompts, in order of first appearance (= encoder call order).
    pub distinct: Vec<Vec<ScheduleEntry>>,
    /// For each input prompt, its index in `distinct`.
    pub prompt_to_distinct: Vec<usize>,
}

impl LearnedConditioningPlan {
    pub fn new(prompts: &[String], params: &ScheduleParams) -> Self {
        let mut index_of: HashMap<&str, usize> = HashMap::new();
        let mut distinct = Vec::new();
        let prompt_to_distinct = prompts
            .iter()
            .map(|p| {
                *index_of.entry(p.as_str()).or_insert_with(|| {
                    distinct.push(prompt_schedule(p, params));
                    distinct.len() - 1
                })
            })
            .collect();
        Self { distinct, prompt_to_distinct }
    }

    /// The texts of encoder call `j`.
    pub fn call_texts(&self, j: usize) -> Vec<String> {
        self.distinct.get(j).map(|s| s.iter().map(|(_, t)| t.clone()).collect()).unwrap_or_default()
    }
}

/// Turns prompts into conditioning with a [`Conditioner`] and the shared tokenizer.
pub struct TextConditioner<'a> {
    pub conditioner: &'a dyn Conditioner,
    pub tokenizer: &'a ClipTokenizer,
    pub chunking: ChunkingOptions,
    /// Most chunks one text may tokenize to; more is [`TextError::TooManyChunks`], found before
    /// the text encoder runs.
    pub max_chunks: usize,
    /// Textual-inversion embeddings to match in the texts.
    pub embeddings: Option<&'a EmbeddingTable>,
    /// How many text encoders see each text (SDXL: 2), for `TI hashes`.
    pub encoders: usize,
    /// `TI hashes` of the calls made so far.
    pub ti_hashes: TiHashes,
}

impl<'a> TextConditioner<'a> {
    pub fn new(conditioner: &'a dyn Conditioner, chunking: ChunkingOptions) -> Self {
        Self {
            conditioner,
            tokenizer: ClipTokenizer::shared(),
            chunking,
            max_chunks: usize::MAX,
            embeddings: None,
            encoders: 1,
            ti_hashes: TiHashes::default(),
        }
    }

    /// The same conditioner matching `table`'s embeddings, for a model with `encoders` text encoders.
    pub fn with_embeddings(self, table: &'a EmbeddingTable, encoders: usize) -> Self {
        Self { embeddings: Some(table), encoders, ..self }
    }

    /// The same conditioner with a bound on chunks per text.
    pub fn with_max_chunks(self, max_chunks: usize) -> Self {
        Self { max_chunks, ..self }
    }

    /// Tokens and multipliers of a batch of texts, as the encoder will get them.
    pub fn tokenize(&self, texts: &[String]) -> Result<ChunkedBatch, TextError> {
        let batch = ChunkedBatch::with_embeddings(self.tokenizer, texts, &self.chunking, self.embeddings)?;
        if batch.chunks.len() > self.max_chunks {
            return Err(TextError::TooManyChunks { chunks: batch.chunks.len(), limit: self.max_chunks });
        }
        Ok(batch)
    }

    /// A1111's `cond_stage_model(texts)`: (texts, 77·k, C), each chunk position encoded as one
    /// batch, emphasis applied per chunk, chunks concatenated on the token axis.
    pub fn encode_texts(&self, texts: &[String]) -> Result<Tensor, TextError> {
        self.encode_texts_with_vector(texts, TextSide::Positive).map(|(t, _)| t)
    }

    /// Like [`Self::encode_texts`], plus the per-text vector of pooled-conditioning models.
    pub fn encode_texts_with_vector(
        &self,
        texts: &[String],
        side: TextSide,
    ) -> Result<(Tensor, Option<Tensor>), TextError> {
        if texts.is_empty() {
            return Err(TextError::Empty);
        }
        let batch = self.tokenize(texts)?;
        if let Some(table) = self.embeddings {
            self.ti_hashes.record(table, batch.chunks.iter().flatten(), self.encoders);
        }
        let cond = self.conditioner.condition(&batch, side)?;
        Ok((cond.crossattn, cond.vector))
    }

    /// `get_learned_conditioning` for negative prompts: SDXL zeroes an all-empty negative batch.
    pub fn learned_conditioning_negative(
        &self,
        prompts: &[String],
        params: &ScheduleParams,
    ) -> Result<Vec<PromptSchedule>, TextError> {
        self.learned_conditioning_inner(prompts, params, true)
    }

    /// A1111's `get_learned_conditioning`: one schedule per prompt (shared between duplicates).
    pub fn learned_conditioning(
        &self,
        prompts: &[String],
        params: &ScheduleParams,
    ) -> Result<Vec<PromptSchedule>, TextError> {
        self.learned_conditioning_inner(prompts, params, false)
    }

    fn learned_conditioning_inner(
        &self,
        prompts: &[String],
        params: &ScheduleParams,
        is_negative: bool,
    ) -> Result<Vec<PromptSchedule>, TextError> {
        let plan = LearnedConditioningPlan::new(prompts, params);
        let mut schedules = Vec::with_capacity(plan.distinct.len());
        for (j, schedule) in plan.distinct.iter().enumerate() {
            let texts = plan.call_texts(j);
            // A1111 (SDXL): force_zero_negative_prompt = is_negative and all texts empty.
            let side = match is_negative {
                true => TextSide::Negative { all_empty: texts.iter().all(String::is_empty) },
                false => TextSide::Positive,
            };
            let (conds, vectors) = self.encode_texts_with_vector(&texts, side)?;
            let entries = schedule
                .iter()
                .enumerate()
                .map(|(i, (end_at_step, _))| {
                    Ok(ScheduledPromptConditioning {
                        end_at_step: *end_at_step,
                        cond: conds.get(i)?,
                        vector: vectors.as_ref().map(|v| v.get(i)).transpose()?,
                    })
                })
                .collect::<Result<Vec<_>, TextError>>()?;
            schedules.push(Arc::new(entries));
        }
        Ok(plan.prompt_to_distinct.iter().map(|&j| schedules[j].clone()).collect())
    }

    /// A1111's `get_multicond_learned_conditioning`: AND sub-prompts, deduplicated over the
    /// batch, each with its own schedule.
    pub fn multicond_learned_conditioning(
        &self,
        prompts: &[String],
        params: &ScheduleParams,
    ) -> Result<MulticondLearnedConditioning, TextError> {
        let list = get_multicond_prompt_list(prompts);
        let learned = self.learned_conditioning(&list.flat, params)?;
        let batch = list
            .per_prompt
            .iter()
            .map(|subs| {
                subs.iter()
                    .map(|&(index, weight)| ComposableScheduledPromptConditioning {
                        schedules: learned[index].clone(),
                        weight,
                    })
                    .collect()
            })
            .collect();
        Ok(MulticondLearnedConditioning { batch })
    }
}

/// The plan of the encoder calls made by [`TextConditioner::multicond_learned_conditioning`].
pub fn multicond_plan(prompts: &[String], params: &ScheduleParams) -> LearnedConditioningPlan {
    LearnedConditioningPlan::new(&get_multicond_prompt_list(prompts).flat, params)
}

/// Index of the schedule entry in use at `step`: the first with `step <= end_at_step`, else 0.
fn entry_at(schedule: &[ScheduledPromptConditioning], step: usize) -> Option<&ScheduledPromptConditioning> {
    schedule.iter().find(|e| step <= e.end_at_step).or_else(|| schedule.first())
}

/// A1111's `reconstruct_cond_batch`: (B, 77k, C) for the denoiser call `step`.
/// All prompts must have the same token length (A1111 fails there too).
pub fn reconstruct_cond_batch(c: &[PromptSchedule], step: usize) -> Result<Tensor, TextError> {
    let mut tensors = Vec::with_capacity(c.len());
    for schedule in c {
        let entry = entry_at(schedule, step).ok_or(TextError::Empty)?;
        tensors.push(entry.cond.clone());
    }
    let first = tensors.first().ok_or(TextError::Empty)?;
    if let Some(other) = tensors.iter().find(|t| t.dims() != first.dims()) {
        return Err(TextError::ShapeMismatch(first.dims().to_vec(), other.dims().to_vec()));
    }
    Ok(Tensor::stack(&tensors, 0)?)
}

/// Per image, the (row in the cond tensor, AND weight) pairs `CFGDenoiser` combines.
pub type CondsList = Vec<Vec<(usize, f64)>>;

/// A1111's `reconstruct_multicond_batch`: the conds list and the stacked cond tensor
/// (Σ sub-prompts, 77k, C); shorter conds are padded by repeating their last token vector.
pub fn reconstruct_multicond_batch(
    c: &MulticondLearnedConditioning,
    step: usize,
) -> Result<(CondsList, Tensor), TextError> {
    let mut tensors = Vec::new();
    let mut conds_list = Vec::with_capacity(c.batch.len());
    for composable in &c.batch {
        let mut for_image = Vec::with_capacity(composable.len());
        for sub in composable {
            let entry = entry_at(&sub.schedules, step).ok_or(TextError::Empty)?;
            for_image.push((tensors.len(), sub.weight));
            tensors.push(entry.cond.clone());
        }
        conds_list.push(for_image);
    }
    Ok((conds_list, stack_conds(&tensors)?))
}

/// A1111's `stack_conds`.
fn stack_conds(tensors: &[Tensor]) -> Result<Tensor, TextError> {
    let token_count = tensors.iter().map(|t| t.dim(0)).collect::<Result<Vec<_>, _>>()?;
    let longest = token_count.iter().copied().max().ok_or(TextError::Empty)?;
    let padded = tensors
        .iter()
        .zip(&token_count)
        .map(|(t, &n)| {
            if n == longest {
                return Ok(t.clone());
            }
            let last = t.narrow(0, n - 1, 1)?;
            let repeated = last.repeat((longest - n, 1))?;
            Tensor::cat(&[t, &repeated], 0)
        })
        .collect::<candle_core::Result<Vec<_>>>()?;
    Ok(Tensor::stack(&padded, 0)?)
}

/// The vectors matching [`reconstruct_cond_batch`]'s rows (SDXL), or None.
pub fn reconstruct_cond_vectors(c: &[PromptSchedule], step: usize) -> Result<Option<Tensor>, TextError> {
    let mut vectors = Vec::with_capacity(c.len());
    for schedule in c {
        match entry_at(schedule, step).and_then(|e| e.vector.clone()) {
            Some(v) => vectors.push(v),
            None => return Ok(None),
        }
    }
    Ok(Some(Tensor::stack(&vectors, 0)?))
}

/// The vectors matching [`reconstruct_multicond_batch`]'s rows (SDXL), or None.
pub fn reconstruct_multicond_vectors(
    c: &MulticondLearnedConditioning,
    step: usize,
) -> Result<Option<Tensor>, TextError> {
    let mut vectors = Vec::new();
    for composable in &c.batch {
        for sub in composable {
            match entry_at(&sub.schedules, step).and_then(|e| e.vector.clone()) {
                Some(v) => vectors.push(v),
                None => return Ok(None),
            }
        }
    }
    Ok(Some(Tensor::stack(&vectors, 0)?))
}
