//! The output store: where generated images (and batch manifests) are written.
//!
//! [`OutputStore`] is the one seam: the local-folder implementation lives here ([`LocalStore`]), the
//! S3 one in the handler crate (it needs the AWS SDK, which core must not depend on). Callers name
//! objects with keys relative to the store root (`txt2img-images/2026-11-25/00000-1234.png`); each
//! store maps them to its own location (a path under the output dir, `s3://bucket/<prefix><key>`).
//!
//! [`naming`] reproduces A1111's `save_image` folder and file naming on top of any store, and
//! [`report`] adds where images went to the A1111 `info` string without disturbing its keys.

mod local;
pub mod naming;
pub mod report;

use std::future::Future;
use std::pin::Pin;

pub use local::LocalStore;
pub use naming::{SampleNamer, sample_folder};

/// Boxed future so the trait stays object-safe (`Arc<dyn OutputStore>`).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What can go wrong writing or reading an output.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write ([`PutOptions::if_absent`]) found the key taken.
    #[error("{key} already exists")]
    AlreadyExists { key: String },
    /// Keys are relative, `/`-separated, without `..` or empty segments.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The remote store failed (after its own retries). `transient` errors are worth retrying later
    /// (network, throttling, 5xx); the others (access denied, no such bucket) are configuration.
    #[error("{operation} {location}: {message}")]
    Backend { operation: &'static str, location: String, message: String, transient: bool },
}

impl StoreError {
    /// Whether a later attempt can succeed (batch jobs report these to the platform for a retry).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Backend { transient, .. } => *transient,
            Self::Io { .. } => true,
            Self::AlreadyExists { .. } | Self::InvalidKey { .. } => false,
        }
    }
}

/// How an object is written.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// MIME type (`image/png`, `application/json`).
    pub content_type: String,
    /// Free-form metadata (S3 user metadata). Stores that cannot keep it (a local folder; the PNG
    /// already carries the infotext) ignore it; S3 encodes it to fit its limits.
    pub metadata: Vec<(String, String)>,
    /// Fail with [`StoreError::AlreadyExists`] instead of overwriting (A1111's numbering never
    /// overwrites an existing sample; with several writers this is what keeps numbers unique).
    pub if_absent: bool,
}

/// Where an object went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoredObject {
    /// Human/tool-usable location: a file path, or `s3://bucket/key`.
    pub location: String,
    /// The key inside the store's namespace as clients address it: the full S3 object key
    /// (prefix included), or the path relative to the output dir.
    pub key: String,
}

/// An output store. Implementations must be cheap to share (`Arc<dyn OutputStore>`).
pub trait OutputStore: Send + Sync + std::fmt::Debug {
    /// Writes `body` at `key` (relative to the store root).
    fn put<'a>(&'a self, key: &'a str, body: Vec<u8>, options: PutOptions) -> StoreFuture<'a, StoredObject>;
    /// Names (last path segment) of the objects directly under `folder`; empty when none.
    fn list_names<'a>(&'a self, folder: &'a str) -> StoreFuture<'a, Vec<String>>;
    /// Reads an object; `None` when it does not exist.
    fn get<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Vec<u8>>>;
    /// `s3://bucket/prefix` or the output directory, for logs and docs.
    fn describe(&self) -> String;
}

/// Rejects keys that could escape the store root or produce odd object names.
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    let bad = |reason| Err(StoreError::InvalidKey { key: key.to_string(), reason });
    if key.is_empty() {
        return bad("empty");
    }
    if key.starts_with('/') || key.contains('\\') {
        return bad("must be relative and use '/'");
    }
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return bad("empty, '.' or '..' segment");
    }
    if key.chars().any(|c| c.is_control()) {
        return bad("control character");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
