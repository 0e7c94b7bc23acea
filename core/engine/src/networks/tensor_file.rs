//! Reading every tensor of a small network file (LoRA, embedding) onto the CPU: `.safetensors`,
//! or a PyTorch zip archive (`.pt`, `.ckpt`, `.bin`) through candle's pickle reader after
//! [`super::pickle_guard`] has checked it. Nothing here runs a general unpickler.

use std::io::Read;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::NetworkError;
use super::pickle_guard::check_pickle;

/// A pickle larger than this is not a network's state dict.
const MAX_PICKLE_BYTES: u64 = 64 << 20;

/// The tensors of a file, name → tensor, plus its text and number entries: the safetensors
/// metadata, or a pickle's top-level strings and integers (an embedding's `step`, …).
pub struct TensorFile {
    pub tensors: Vec<(String, Tensor)>,
    pub metadata: std::collections::HashMap<String, String>,
}

pub use sdapi_core::networks::is_safetensors;

/// A file version: modification time and size (what the caches of read network files key on).
pub type FileStamp = (Option<std::time::SystemTime>, u64);

pub fn file_stamp(path: &Path) -> FileStamp {
    let meta = std::fs::metadata(path).ok();
    (meta.as_ref().and_then(|m| m.modified().ok()), meta.map(|m| m.len()).unwrap_or(0))
}

/// Reads every tensor of `path`, refusing files over `max_bytes`. `pickle_key`: the dict of a
/// PyTorch archive that holds the tensors (`string_to_param` for A1111 embeddings), else the
/// top level.
pub fn read_tensor_file(path: &Path, max_bytes: u64, pickle_key: Option<&str>) -> Result<TensorFile, NetworkError> {
    let invalid = |message: String| NetworkError::Invalid { path: path.to_path_buf(), message };
    let len = std::fs::metadata(path).map_err(|source| NetworkError::Io { path: path.to_path_buf(), source })?.len();
    if len > max_bytes {
        return Err(invalid(format!("{len} bytes, more than the {max_bytes} this server reads for a network file")));
    }
    // candle's readers are not written for hostile input; a panic in them is this file's error.
    let read = std::panic::catch_unwind(|| {
        if is_safetensors(path) { read_safetensors(path) } else { read_pytorch(path, len, pickle_key) }
    });
    match read {
        Ok(result) => result.map_err(invalid),
        Err(_) => Err(invalid("the reader failed on this file".into())),
    }
}

fn read_safetensors(path: &Path) -> Result<TensorFile, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| e.to_string())?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let mut tensors: Vec<(String, Tensor)> =
        candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| e.to_string())?.into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(TensorFile { tensors, metadata })
}

fn read_pytorch(path: &Path, file_len: u64, key: Option<&str>) -> Result<TensorFile, String> {
    let pickles = check_archive(path)?;
    let metadata = pickles.iter().flat_map(|p| top_level_scalars(p)).collect();
    let pth = candle_core::pickle::PthTensors::new(path, key).map_err(|e| e.to_string())?;
    let mut names: Vec<&String> = pth.tensor_infos().keys().collect();
    names.sort();
    // Each tensor's bytes must lie in the file (torch stores archives uncompressed), so a forged
    // shape cannot make the reader allocate more than the file holds.
    for name in &names {
        let info = &pth.tensor_infos()[*name];
        let bytes = (info.layout.shape().elem_count() as u64).saturating_mul(info.dtype.size_in_bytes() as u64);
        if bytes > file_len {
            return Err(format!("tensor `{name}` claims {bytes} bytes, more than the file has"));
        }
    }
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        if let Some(t) = pth.get(name).map_err(|e| format!("{name}: {e}"))? {
            tensors.push((name.clone(), t));
        }
    }
    Ok(TensorFile { tensors, metadata })
}

/// The string and integer values of a pickle's top-level dict (already checked).
fn top_level_scalars(pickle: &[u8]) -> Vec<(String, String)> {
    use candle_core::pickle::{Object, Stack};
    let mut stack = Stack::empty();
    let mut reader = std::io::BufReader::new(pickle);
    if stack.read_loop(&mut reader).is_err() {
        return Vec::new();
    }
    let Ok(Object::Dict(entries)) = stack.finalize() else { return Vec::new() };
    entries
        .into_iter()
        .filter_map(|(k, v)| {
            let Object::Unicode(key) = k else { return None };
            let value = match v {
                Object::Unicode(s) => s,
                Object::Int(i) => i.to_string(),
                Object::Long(i) => i.to_string(),
                _ => return None,
            };
            Some((key, value))
        })
        .collect()
}

/// Opens the archive and checks every pickle in it before candle parses them; returns them.
fn check_archive(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("not a PyTorch zip archive ({e}); legacy pickles are not read"))?;
    let mut pickles = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| e.to_string())?;
        let name = entry.name().map_err(|e| e.to_string())?.into_owned();
        if !name.ends_with(".pkl") {
            continue;
        }
        if entry.size() > MAX_PICKLE_BYTES {
            return Err(format!("pickle `{name}` is {} bytes", entry.size()));
        }
        let mut data = Vec::with_capacity(entry.size() as usize);
        entry.by_ref().take(MAX_PICKLE_BYTES).read_to_end(&mut data).map_err(|e| e.to_string())?;
        check_pickle(&data).map_err(|e| format!("{name}: {e}"))?;
        pickles.push(data);
    }
    Ok(pickles)
}
