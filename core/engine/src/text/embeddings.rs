//! Textual-inversion embeddings on the conditioning path (docs/a1111-behaviour.md §7.7): the
//! table the tokenizer matches names against, and the vectors that replace the placeholder
//! tokens in each text encoder.

use std::cell::RefCell;

use candle_core::Tensor;

use super::encoders::EmbeddingFix;
use super::tokenize::{ClipTokenizer, EmbeddingVocab, PromptChunk};

/// One usable embedding: its name, short hash (`TI hashes`) and vectors per text encoder
/// (SD 1.x / 2.x: one (k, C) tensor; SDXL: CLIP-L then bigG).
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub name: String,
    pub short_hash: String,
    pub vectors: Vec<Tensor>,
}

/// The embeddings registered for the loaded model (those whose width fits it).
#[derive(Debug, Clone, Default)]
pub struct EmbeddingTable {
    pub vocab: EmbeddingVocab,
    pub entries: Vec<TableEntry>,
}

impl EmbeddingTable {
    /// Registers `entries` (a later entry with the same name replaces an earlier one).
    pub fn new(tokenizer: &ClipTokenizer, entries: Vec<TableEntry>) -> Self {
        let mut vocab = EmbeddingVocab::default();
        for (index, entry) in entries.iter().enumerate() {
            let count = entry.vectors.first().and_then(|v| v.dim(0).ok()).unwrap_or(0);
            vocab.register(tokenizer, &entry.name, index, count);
        }
        Self { vocab, entries }
    }

    /// The fixes of one chunk position of a batch (`column[row]` is text `row`'s chunk).
    pub fn fixes(&self, column: &[PromptChunk]) -> Vec<EmbeddingFix> {
        let mut out = Vec::new();
        for (row, chunk) in column.iter().enumerate() {
            for fix in &chunk.fixes {
                if let Some(entry) = self.entries.get(fix.embedding) {
                    out.push(EmbeddingFix { row, position: fix.offset + 1, vectors: entry.vectors.clone() });
                }
            }
        }
        out
    }
}

/// A1111's `TI hashes` as the encoder calls of one request build it: each call that used
/// embeddings puts `name: shorthash` of those (first use order, each once) before the value so
/// far; SDXL's two encoders each do so.
#[derive(Debug, Default)]
pub struct TiHashes {
    value: RefCell<Option<String>>,
}

impl TiHashes {
    /// Records one encoder call over `chunks` (all chunk positions of all texts).
    pub fn record<'a>(&self, table: &EmbeddingTable, chunks: impl Iterator<Item = &'a PromptChunk>, encoders: usize) {
        let mut used: Vec<usize> = Vec::new();
        for chunk in chunks {
            for fix in &chunk.fixes {
                if !used.contains(&fix.embedding) {
                    used.push(fix.embedding);
                }
            }
        }
        let hashes: Vec<String> = used
            .iter()
            .filter_map(|&i| table.entries.get(i))
            .filter(|e| !e.short_hash.is_empty())
            .map(|e| format!("{}: {}", e.name.replace([':', ','], ""), e.short_hash))
            .collect();
        if hashes.is_empty() {
            return;
        }
        for _ in 0..encoders {
            let mut value = self.value.borrow_mut();
            let mut parts = hashes.clone();
            parts.extend(value.take());
            *value = Some(parts.join(", "));
        }
    }

    pub fn value(&self) -> Option<String> {
        self.value.borrow().clone()
    }
}
