//! The engine's [`NetworkInspector`]: what the service lists about embeddings without loading a
//! model (widths come from the checkpoint's tensor shapes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sdapi_core::networks::{EmbeddingInfo, NetworkInspector};

use super::embedding::EmbeddingData;
use super::tensor_file::{FileStamp, file_stamp};
use crate::checkpoint::{self, ModelFamily};
use crate::loader::diffusers_names::CLIP_PREFIX;
use crate::loader::text_names::{SD2_TEXT_PREFIX, SDXL_CLIP_G_PREFIX, SDXL_CLIP_L_PREFIX};

const TOKEN_EMBEDDING: &str = "embeddings.token_embedding.weight";

/// Reads embedding files and checkpoint widths; widths are cached per checkpoint path, what an
/// embedding file holds per file version (a listing does not read every file again).
#[derive(Default)]
pub struct EngineInspector {
    widths: Mutex<HashMap<PathBuf, usize>>,
    embeddings: Mutex<HashMap<PathBuf, ListedEmbedding>>,
}

/// What a file version of an embedding gave.
type ListedEmbedding = (FileStamp, Result<EmbeddingInfo, String>);

impl EngineInspector {
    pub fn new() -> Self {
        Self::default()
    }
}

/// The text-encoder tower prefixes of a family, in encoder order.
pub fn text_tower_prefixes(family: ModelFamily) -> &'static [&'static str] {
    match family {
        ModelFamily::Sd1 => &[CLIP_PREFIX],
        ModelFamily::Sd2 => &[SD2_TEXT_PREFIX],
        ModelFamily::Sdxl => &[SDXL_CLIP_L_PREFIX, SDXL_CLIP_G_PREFIX],
    }
}

impl NetworkInspector for EngineInspector {
    fn embedding_info(&self, path: &Path) -> Result<EmbeddingInfo, String> {
        let stamp = file_stamp(path);
        if let Some((cached, info)) = self.embeddings.lock().unwrap_or_else(|e| e.into_inner()).get(path)
            && *cached == stamp
        {
            return info.clone();
        }
        let info = EmbeddingData::read(path).map(|e| e.info()).map_err(|e| e.to_string());
        self.embeddings.lock().unwrap_or_else(|e| e.into_inner()).insert(path.to_path_buf(), (stamp, info.clone()));
        info
    }

    fn embedding_width(&self, checkpoint_path: &Path) -> Result<usize, String> {
        if let Some(w) = self.widths.lock().unwrap_or_else(|e| e.into_inner()).get(checkpoint_path) {
            return Ok(*w);
        }
        let ckpt = checkpoint::open_checkpoint(checkpoint_path).map_err(|e| e.to_string())?;
        let mut width = 0;
        for prefix in text_tower_prefixes(ckpt.family) {
            let name = format!("{prefix}{TOKEN_EMBEDDING}");
            let shape = ckpt.store.require_shape(&name).map_err(|e| e.to_string())?;
            width += shape.get(1).copied().unwrap_or(0);
        }
        self.widths.lock().unwrap_or_else(|e| e.into_inner()).insert(checkpoint_path.to_path_buf(), width);
        Ok(width)
    }
}
