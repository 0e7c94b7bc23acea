//! Checkpoint hashes as A1111 shows them: sha256 of the whole file, short form = 10 hex digits.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::runner::engine::EngineError;

/// Full sha256 of a file as lowercase hex, streamed in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<String, EngineError> {
    let io_err = |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A1111's short hash (`sd_model_hash`): the first 10 hex digits of the sha256.
pub fn short_hash(sha256: &str) -> &str {
    sha256.get(..10).unwrap_or(sha256)
}
