//! Textual-inversion embedding files (docs/a1111-behaviour.md §7.7): A1111's layouts — a
//! `string_to_param` dict with one tensor (classic `.pt`), SDXL's `clip_l` + `clip_g`, or any file
//! with exactly one tensor (diffusers `.bin`, kohya's `emb_params`).

use std::path::Path;

use candle_core::{DType, Tensor};

use super::NetworkError;
use super::tensor_file::{TensorFile, is_safetensors, read_tensor_file};
use sdapi_core::networks::{EmbeddingInfo, MAX_EMBEDDING_BYTES};

/// A1111 places an embedding's vectors inside one 75-token chunk; longer ones cannot be used.
pub const MAX_EMBEDDING_VECTORS: usize = 75;

/// The vectors of an embedding file.
#[derive(Debug, Clone)]
pub enum EmbeddingVectors {
    /// (k, C) for a single text encoder.
    Single(Tensor),
    /// SDXL: CLIP-L (k, 768) and bigG (k, 1280).
    Sdxl { clip_l: Tensor, clip_g: Tensor },
}

/// An embedding file, read.
#[derive(Debug, Clone)]
pub struct EmbeddingData {
    pub vectors: EmbeddingVectors,
    /// sha256 of the whole file (A1111's `TI hashes` use its first 12 digits).
    pub sha256: String,
    /// Training facts A1111's classic `.pt` files carry (`step`, `sd_checkpoint`, `sd_checkpoint_name`).
    pub step: Option<i64>,
    pub sd_checkpoint: Option<String>,
    pub sd_checkpoint_name: Option<String>,
}

impl EmbeddingData {
    pub fn read(path: &Path) -> Result<Self, NetworkError> {
        let invalid = |message: String| NetworkError::Invalid { path: path.to_path_buf(), message };
        // A1111's classic `.pt` keeps the tensor under `string_to_param`; other pickles and all
        // safetensors hold the tensors at the top level.
        let top = read_tensor_file(path, MAX_EMBEDDING_BYTES, None)?;
        let file = if top.tensors.is_empty() && !is_safetensors(path) {
            read_tensor_file(path, MAX_EMBEDDING_BYTES, Some("string_to_param"))?
        } else {
            TensorFile { tensors: top.tensors.clone(), metadata: Default::default() }
        };
        let meta = |key: &str| top.metadata.get(key).cloned();
        let (step, sd_checkpoint, sd_checkpoint_name) =
            (meta("step").and_then(|s| s.parse().ok()), meta("sd_checkpoint"), meta("sd_checkpoint_name"));
        let mut tensors = file.tensors;
        let take = |tensors: &mut Vec<(String, Tensor)>, name: &str| {
            tensors.iter().position(|(n, _)| n == name).map(|i| tensors.remove(i).1)
        };
        let as_rows = |t: Tensor| -> Result<Tensor, NetworkError> {
            let t = t.to_dtype(DType::F32).map_err(|e| invalid(e.to_string()))?;
            match t.rank() {
                1 => t.unsqueeze(0).map_err(|e| invalid(e.to_string())),
                2 => Ok(t),
                r => Err(invalid(format!("an embedding tensor has rank {r}, expected 1 or 2"))),
            }
        };
        let vectors = match (take(&mut tensors, "clip_l"), take(&mut tensors, "clip_g")) {
            (Some(l), Some(g)) => {
                let (clip_l, clip_g) = (as_rows(l)?, as_rows(g)?);
                if clip_l.dim(0).ok() != clip_g.dim(0).ok() {
                    return Err(invalid("clip_l and clip_g have different vector counts".into()));
                }
                EmbeddingVectors::Sdxl { clip_l, clip_g }
            }
            (l, g) => {
                tensors.extend(l.map(|t| ("clip_l".to_string(), t)));
                tensors.extend(g.map(|t| ("clip_g".to_string(), t)));
                if tensors.len() != 1 {
                    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(invalid(format!(
                        "expected one embedding tensor (or clip_l and clip_g), found {names:?}"
                    )));
                }
                EmbeddingVectors::Single(as_rows(tensors.remove(0).1)?)
            }
        };
        let count = vectors.count();
        if count == 0 || count > MAX_EMBEDDING_VECTORS {
            return Err(invalid(format!("{count} vectors; an embedding has 1 to {MAX_EMBEDDING_VECTORS}")));
        }
        let sha256 = sdapi_core::models_dir::sha256_file(path)
            .map_err(|source| NetworkError::Io { path: path.to_path_buf(), source })?;
        Ok(Self { vectors, sha256, step, sd_checkpoint, sd_checkpoint_name })
    }

    /// Number of vectors (token positions it takes).
    pub fn count(&self) -> usize {
        self.vectors.count()
    }

    /// A1111's `shape`: the vector width, CLIP-L + bigG for SDXL.
    pub fn width(&self) -> usize {
        self.vectors.width()
    }

    /// The vectors per text encoder of a model whose encoders have `widths`, or None when the
    /// embedding does not fit it (A1111 lists those as skipped).
    pub fn vectors_for(&self, widths: &[usize]) -> Option<Vec<Tensor>> {
        match (&self.vectors, widths) {
            (EmbeddingVectors::Single(v), [w]) if v.dim(1).ok() == Some(*w) => Some(vec![v.clone()]),
            (EmbeddingVectors::Sdxl { clip_l, clip_g }, [wl, wg])
                if clip_l.dim(1).ok() == Some(*wl) && clip_g.dim(1).ok() == Some(*wg) =>
            {
                Some(vec![clip_l.clone(), clip_g.clone()])
            }
            _ => None,
        }
    }

    pub fn info(&self) -> EmbeddingInfo {
        EmbeddingInfo {
            step: self.step,
            sd_checkpoint: self.sd_checkpoint.clone(),
            sd_checkpoint_name: self.sd_checkpoint_name.clone(),
            shape: self.width(),
            vectors: self.count(),
        }
    }
}

impl EmbeddingVectors {
    fn count(&self) -> usize {
        match self {
            EmbeddingVectors::Single(v) => v.dim(0).unwrap_or(0),
            EmbeddingVectors::Sdxl { clip_g, .. } => clip_g.dim(0).unwrap_or(0),
        }
    }

    fn width(&self) -> usize {
        match self {
            EmbeddingVectors::Single(v) => v.dim(1).unwrap_or(0),
            EmbeddingVectors::Sdxl { clip_l, clip_g } => clip_l.dim(1).unwrap_or(0) + clip_g.dim(1).unwrap_or(0),
        }
    }
}
