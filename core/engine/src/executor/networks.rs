//! The executor's extra-network state: LoRA and embedding files read once per file version, the
//! model loaded with a LoRA set merged, and the embedding table of the loaded model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use sdapi_core::runner::{EmbeddingFile, LoraActivation, ModelSelection, RunnerError};

use super::LoadedKey;
use crate::loader::tensor_store::ResidentWeights;
use crate::model::{LoadedModel, LoraApplication};
use crate::networks::{EmbeddingData, FileStamp, LoraFile, file_stamp};
use crate::text::{ClipTokenizer, EmbeddingTable, TableEntry};

/// LoRA files kept read between requests (switching back and forth between a few sets is common).
const LORA_FILES_KEPT: usize = 8;

#[derive(Default)]
pub(super) struct NetworkCache {
    /// The loaded checkpoint's unpatched weights, shared by every LoRA set's model of it.
    resident: Option<(ModelSelection, ResidentWeights)>,
    /// Most recently used last.
    loras: Vec<(PathBuf, FileStamp, Arc<LoraFile>)>,
    embeddings: HashMap<PathBuf, (FileStamp, Option<Arc<EmbeddingData>>)>,
    /// The table of the loaded model, rebuilt when the list or the model's widths change.
    table: Option<TableFor>,
}

/// An embedding table and what it was built for.
struct TableFor {
    files: Arc<Vec<EmbeddingFile>>,
    widths: Vec<usize>,
    table: Arc<EmbeddingTable>,
}

impl NetworkCache {
    /// The files of `loras`, read (or taken from the cache when unchanged on disk). A file that
    /// cannot be read fails the job with the reason: generating without it would silently give
    /// a different image.
    pub(super) fn lora_files(&mut self, loras: &[LoraActivation]) -> Result<Vec<Arc<LoraFile>>, RunnerError> {
        let mut out = Vec::with_capacity(loras.len());
        for lora in loras {
            let now = file_stamp(&lora.path);
            let cached = self.loras.iter().position(|(p, s, _)| *p == lora.path && *s == now);
            let file = match cached {
                Some(i) => self.loras.remove(i).2,
                None => {
                    let file = LoraFile::read(&lora.path).map_err(|e| RunnerError::Model(format!("LoRA {e}")))?;
                    Arc::new(file)
                }
            };
            self.loras.retain(|(p, _, _)| *p != lora.path);
            self.loras.push((lora.path.clone(), now, Arc::clone(&file)));
            if self.loras.len() > LORA_FILES_KEPT {
                self.loras.remove(0);
            }
            out.push(file);
        }
        Ok(out)
    }

    /// Builds (or keeps) the embedding table for `files` on a model with text `widths`.
    /// Unreadable files and ones whose width does not fit are left out (A1111 logs them).
    pub(super) fn prepare_embeddings(&mut self, files: &Arc<Vec<EmbeddingFile>>, widths: &[usize]) {
        if let Some(current) = &self.table
            && Arc::ptr_eq(&current.files, files)
            && current.widths == widths
        {
            return;
        }
        let mut entries = Vec::new();
        for file in files.iter() {
            let Some(data) = self.embedding(&file.path) else { continue };
            match data.vectors_for(widths) {
                Some(vectors) => entries.push(TableEntry {
                    name: file.name.clone(),
                    short_hash: data.sha256.get(..12).unwrap_or_default().to_string(),
                    vectors,
                }),
                None => {
                    tracing::debug!(embedding = %file.name, width = data.width(), "skipped: does not fit the model")
                }
            }
        }
        let table = EmbeddingTable::new(ClipTokenizer::shared(), entries);
        self.table = Some(TableFor { files: Arc::clone(files), widths: widths.to_vec(), table: Arc::new(table) });
    }

    fn embedding(&mut self, path: &Path) -> Option<Arc<EmbeddingData>> {
        let now = file_stamp(path);
        if let Some((s, data)) = self.embeddings.get(path)
            && *s == now
        {
            return data.clone();
        }
        let data = match EmbeddingData::read(path) {
            Ok(d) => Some(Arc::new(d)),
            Err(e) => {
                tracing::warn!("embedding not loaded: {e}");
                None
            }
        };
        self.embeddings.insert(path.to_path_buf(), (now, data.clone()));
        data
    }

    /// The current table (empty before [`Self::prepare_embeddings`]).
    pub(super) fn embedding_table(&self) -> Arc<EmbeddingTable> {
        self.table.as_ref().map(|t| Arc::clone(&t.table)).unwrap_or_default()
    }
}

impl NetworkCache {
    /// The resident weights of `model` (new ones when the checkpoint or VAE changed).
    pub(super) fn resident_for(&mut self, model: &ModelSelection) -> ResidentWeights {
        match &self.resident {
            Some((selection, weights)) if selection == model => weights.clone(),
            _ => {
                let weights = ResidentWeights::new();
                self.resident = Some((model.clone(), weights.clone()));
                weights
            }
        }
    }

    /// Drops the resident weights (model unload).
    pub(super) fn forget_resident(&mut self) {
        self.resident = None;
    }
}

/// Loads the model of `key` with its LoRAs merged; weights the LoRAs leave alone come from
/// `resident` when an earlier load of the checkpoint filled it.
pub(super) fn load_model(
    key: &LoadedKey,
    files: &[Arc<LoraFile>],
    resident: ResidentWeights,
    device: &Device,
    dtype: DType,
) -> Result<LoadedModel, RunnerError> {
    let applications: Vec<LoraApplication<'_>> = key
        .loras
        .iter()
        .zip(files)
        .map(|(lora, file)| LoraApplication {
            file,
            te_multiplier: lora.te_multiplier,
            unet_multiplier: lora.unet_multiplier,
            dyn_dim: lora.dyn_dim,
        })
        .collect();
    let vae = key.model.vae.as_deref();
    let (model, reports) =
        LoadedModel::load_with_loras(&key.model.checkpoint, vae, &applications, Some(resident), device, dtype)
            .map_err(|e| RunnerError::Model(e.to_string()))?;
    for (lora, report) in key.loras.iter().zip(reports) {
        tracing::info!(lora = %lora.path.display(), matched = report.matched, unmatched = report.unmatched.len(), "LoRA merged");
        if !report.unmatched.is_empty() {
            tracing::debug!(lora = %lora.path.display(), keys = ?report.unmatched, "LoRA keys matching no layer");
        }
        if !report.incomplete_attention.is_empty() {
            tracing::warn!(lora = %lora.path.display(), layers = ?report.incomplete_attention,
                "OpenCLIP attentions left unchanged: the LoRA lacks one of q, k, v, out (as A1111)");
        }
    }
    Ok(model)
}
