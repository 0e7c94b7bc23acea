//! The header of a `.safetensors` file, read without the tensor data: names, dtypes, shapes and
//! the `__metadata__` strings (kohya's `ss_*` keys). Also the "addnet" hash A1111 shows for LoRA
//! files: sha256 of everything after the header.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

use super::NetworkError;

/// The safetensors format caps its JSON header at 100 MB; ours is stricter because a network
/// header of more than a few MiB is not a LoRA or an embedding.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// One tensor entry of the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// A parsed header.
#[derive(Debug, Clone, Default)]
pub struct SafetensorsHeader {
    /// `__metadata__` (string → string by the format; other JSON values are kept as text).
    pub metadata: BTreeMap<String, String>,
    pub tensors: Vec<TensorEntry>,
    /// Bytes before the tensor data: 8 + the header length.
    pub data_offset: u64,
}

impl SafetensorsHeader {
    pub fn read(path: &Path) -> Result<Self, NetworkError> {
        let invalid = |message: String| NetworkError::Invalid { path: path.to_path_buf(), message };
        let io = |source| NetworkError::Io { path: path.to_path_buf(), source };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes).map_err(|_| invalid("shorter than a safetensors header".into()))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > MAX_HEADER_BYTES || header_len > file_len.saturating_sub(8) {
            return Err(invalid(format!("header length {header_len} does not fit the file ({file_len} bytes)")));
        }
        let mut text = vec![0u8; header_len as usize];
        file.read_exact(&mut text).map_err(io)?;
        let json: Value = serde_json::from_slice(&text).map_err(|e| invalid(format!("header is not JSON: {e}")))?;
        let Value::Object(entries) = json else {
            return Err(invalid("header is not a JSON object".into()));
        };
        let data_len = file_len - 8 - header_len;
        let mut header = Self { data_offset: 8 + header_len, ..Self::default() };
        for (name, entry) in entries {
            if name == "__metadata__" {
                if let Value::Object(meta) = entry {
                    header.metadata = meta
                        .into_iter()
                        .map(|(k, v)| (k, v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())))
                        .collect();
                }
                continue;
            }
            let dtype = entry.get("dtype").and_then(Value::as_str).unwrap_or_default().to_string();
            let shape: Option<Vec<usize>> = entry
                .get("shape")
                .and_then(Value::as_array)
                .map(|dims| dims.iter().map(|d| d.as_u64().map(|d| d as usize)).collect::<Option<Vec<_>>>())
                .unwrap_or(None);
            let offsets = entry.get("data_offsets").and_then(Value::as_array);
            let end = offsets.and_then(|o| o.get(1)).and_then(Value::as_u64);
            let (Some(shape), Some(end)) = (shape, end) else {
                return Err(invalid(format!("tensor `{name}` has no valid shape or offsets")));
            };
            if end > data_len {
                return Err(invalid(format!("tensor `{name}` ends at {end}, past the data ({data_len} bytes)")));
            }
            header.tensors.push(TensorEntry { name, dtype, shape });
        }
        header.tensors.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(header)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// A1111's LoRA hash for `.safetensors` (kohya's "addnet" hash): sha256 of the bytes after the
/// header, so editing metadata does not change it.
pub fn addnet_hash(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)?;
    let header_len = u64::from_le_bytes(len_bytes);
    file.seek(SeekFrom::Start(8u64.saturating_add(header_len)))?;
    crate::models_dir::sha256_reader(file)
}
