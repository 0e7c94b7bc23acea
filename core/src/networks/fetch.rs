//! Network files fetched on demand (a serverless deployment does not bake every LoRA into its
//! image): the service asks a [`NetworkFetcher`] for LoRAs a prompt names and embeddings its text
//! mentions when the models folder lacks them. The handler implements it over the models bucket.

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use super::NetworkError;

/// A boxed future (the trait is used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Brings network files from elsewhere into a local cache folder the catalog also scans.
pub trait NetworkFetcher: Send + Sync {
    /// The cache folder; LoRAs go to `<dir>/Lora`, embeddings to `<dir>/embeddings`.
    fn cache_dir(&self) -> &Path;

    /// Fetches the LoRA `name` (already checked by [`check_network_name`]). `Ok(false)`: there is
    /// no such LoRA; `Err`: it could not be fetched (the request fails with the reason).
    fn fetch_lora<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, String>>;

    /// Fetches the embeddings whose names occur in `texts` (case-insensitive) and are not in
    /// `known`; returns how many arrived.
    fn fetch_embeddings<'a>(
        &'a self,
        texts: &'a [String],
        known: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<usize, String>>;

    /// A cached file was used (keeps the cache's eviction least-recently-used).
    fn touch(&self, _path: &Path) {}
}

/// Longest network name accepted from a prompt.
pub const MAX_NETWORK_NAME_CHARS: usize = 200;

/// A name from a prompt that may become part of a path or an object key: a plain file stem — no
/// folders, no `..`, no drive or URL prefix, no control characters.
pub fn check_network_name(name: &str) -> Result<(), NetworkError> {
    let bad = |why: &str| Err(NetworkError::BadTag(format!("network name {name:?}: {why}")));
    if name.is_empty() || name.chars().count() > MAX_NETWORK_NAME_CHARS {
        return bad(&format!("must have 1 to {MAX_NETWORK_NAME_CHARS} characters"));
    }
    if name.contains(['/', '\\', ':']) || name.starts_with('.') {
        return bad("must be a file name without folders, drive or URL parts");
    }
    if name.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    Ok(())
}

/// The sub-folders of a fetch cache, as the catalog scans them.
pub fn cache_folders(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("Lora"), dir.join("embeddings"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_folder() {
        for ok in ["tiny-lora", "My LoRA v2", "a.b", "名前"] {
            assert!(check_network_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../x", "a/b", "a\\b", "/etc/passwd", "s3://b/k", "C:x", ".hidden", "a\nb", &"x".repeat(201)] {
            assert!(check_network_name(bad).is_err(), "{bad:?}");
        }
    }
}
