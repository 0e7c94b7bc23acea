//! The extra-network files on disk: LoRAs under `<models>/Lora` (and `LyCORIS`), textual-inversion
//! embeddings under `<models>/embeddings`, found recursively as A1111 lists them
//! (docs/a1111-behaviour.md §7.6). Only names, paths and safetensors metadata are read here; the
//! tensors are the engine's business.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::safetensors_header::SafetensorsHeader;
use crate::runner::EmbeddingFile;

/// Extensions A1111 lists as LoRA files (case-insensitive), in the order a name is looked for.
pub const LORA_EXTENSIONS: [&str; 3] = ["safetensors", "pt", "ckpt"];
/// Extensions A1111 loads as embeddings (images with embedded data are not supported).
pub const EMBEDDING_EXTENSIONS: [&str; 3] = ["safetensors", "pt", "bin"];
/// Files above this size are not embeddings (a real one is a few KiB).
pub const MAX_EMBEDDING_BYTES: u64 = 64 << 20;

/// One LoRA file.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraEntry {
    /// The file stem, without subfolder (A1111's `name`).
    pub name: String,
    /// `ss_output_name` from the metadata, else the name.
    pub alias: String,
    pub path: PathBuf,
    /// The safetensors `__metadata__` (values that are JSON objects decoded, as A1111 shows them).
    pub metadata: serde_json::Map<String, Value>,
    pub is_safetensors: bool,
    /// The hash once known (`ModelIndex::lora_hash`): a request does not read the hash cache
    /// file again for a LoRA already used; a failure is tried again; a rescan starts afresh.
    pub hash: std::sync::OnceLock<String>,
}

impl LoraEntry {
    fn read(path: &Path) -> Self {
        let name = stem(path);
        let is_safetensors = is_safetensors(path);
        let mut metadata = serde_json::Map::new();
        if is_safetensors {
            match SafetensorsHeader::read(path) {
                Ok(header) => metadata = decode_metadata(header.metadata),
                Err(e) => tracing::warn!(lora = %path.display(), "cannot read metadata: {e}"),
            }
        }
        let alias = metadata.get("ss_output_name").and_then(Value::as_str).unwrap_or(&name).to_string();
        Self { name, alias, path: path.to_path_buf(), metadata, is_safetensors, hash: Default::default() }
    }

    /// A hash kohya put into the metadata (`sshs_model_hash`), which A1111 prefers to its own.
    pub fn metadata_hash(&self) -> Option<&str> {
        self.metadata.get("sshs_model_hash").and_then(Value::as_str).filter(|h| !h.is_empty())
    }
}

/// A1111 decodes metadata values that look like JSON objects (kohya's `ss_tag_frequency`, …).
fn decode_metadata(raw: BTreeMap<String, String>) -> serde_json::Map<String, Value> {
    raw.into_iter()
        .map(|(k, v)| {
            let value = if v.starts_with('{') {
                serde_json::from_str(&v).unwrap_or(Value::String(v))
            } else {
                Value::String(v)
            };
            (k, value)
        })
        .collect()
}

/// The LoRA and embedding files of a models tree.
#[derive(Debug, Clone, Default)]
pub struct NetworkCatalog {
    pub lora_dirs: Vec<PathBuf>,
    pub embeddings_dirs: Vec<PathBuf>,
    /// Sorted by name (case-insensitive); a later file with the same name replaces an earlier one.
    pub loras: Vec<LoraEntry>,
    pub embeddings: Arc<Vec<EmbeddingFile>>,
}

impl NetworkCatalog {
    /// Scans `<root>/Lora`, `<root>/LyCORIS` and `<root>/embeddings`, then the same folders of
    /// `cache` (files fetched on demand; the models root wins for a name in both).
    pub fn scan(root: &Path, cache: Option<&Path>) -> Self {
        let mut lora_dirs = vec![root.join("Lora"), root.join("LyCORIS")];
        let mut embeddings_dirs = vec![root.join("embeddings")];
        if let Some(cache) = cache {
            let (lora, embeddings) = super::fetch::cache_folders(cache);
            lora_dirs.insert(0, lora);
            embeddings_dirs.insert(0, embeddings);
        }
        Self::scan_dirs(lora_dirs, embeddings_dirs)
    }

    /// Scans the folders in order; a later folder's file replaces an earlier one of the same name.
    pub fn scan_dirs(lora_dirs: Vec<PathBuf>, embeddings_dirs: Vec<PathBuf>) -> Self {
        let mut by_name: BTreeMap<String, LoraEntry> = BTreeMap::new();
        for dir in &lora_dirs {
            for path in files_with(dir, &LORA_EXTENSIONS) {
                let entry = LoraEntry::read(&path);
                by_name.insert(entry.name.clone(), entry);
            }
        }
        let mut loras: Vec<LoraEntry> = by_name.into_values().collect();
        loras.sort_by_key(|l| l.name.to_lowercase());

        let mut embeddings_by_name: BTreeMap<String, EmbeddingFile> = BTreeMap::new();
        let embedding_files = embeddings_dirs.iter().flat_map(|dir| files_with(dir, &EMBEDDING_EXTENSIONS));
        for path in embedding_files {
            // A1111 skips empty files; we also skip files too large to be an embedding.
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if size == 0 || size > MAX_EMBEDDING_BYTES {
                if size > 0 {
                    tracing::warn!(file = %path.display(), size, "not loaded as an embedding: larger than {MAX_EMBEDDING_BYTES} bytes");
                }
                continue;
            }
            let name = stem(&path);
            embeddings_by_name.insert(name.clone(), EmbeddingFile { name, path });
        }
        let mut embeddings: Vec<EmbeddingFile> = embeddings_by_name.into_values().collect();
        embeddings.sort_by_key(|e| e.name.to_lowercase());
        Self { lora_dirs, embeddings_dirs, loras, embeddings: Arc::new(embeddings) }
    }

    /// A1111's lookup of a name written in `<lora:NAME:…>`: the file stem or the alias, exactly.
    /// An alias shared by several files is ambiguous and then only the stem finds a file.
    pub fn find_lora(&self, name: &str) -> Option<&LoraEntry> {
        self.loras.iter().find(|l| l.name == name).or_else(|| {
            let mut by_alias = self.loras.iter().filter(|l| l.alias == name);
            match (by_alias.next(), by_alias.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        })
    }
}

fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Whether `path` is read as safetensors (by extension; anything else is a PyTorch archive).
pub fn is_safetensors(path: &Path) -> bool {
    has_extension(path, &["safetensors"])
}

/// Whether `path`'s extension is one of `extensions` (case-insensitive).
pub fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Files under `dir` (recursively, following links, sorted) with one of `extensions`. The depth
/// and count are bounded so a symlink loop or a huge tree cannot stall a scan.
fn files_with(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    const MAX_DEPTH: usize = 16;
    const MAX_FILES: usize = 100_000;
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else { continue };
        let mut entries: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for path in entries.into_iter().rev() {
            if path.is_dir() {
                if depth < MAX_DEPTH {
                    stack.push((path, depth + 1));
                }
            } else if path.is_file() && has_extension(&path, extensions) && out.len() < MAX_FILES {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}
