//! `SDAPI_MODELS_S3_URI`: copy an A1111-layout models tree (`Stable-diffusion/`, `VAE/`, …) from S3
//! into the models directory at start. Files already present with the object's size are skipped;
//! downloads go to a `.part` file renamed into place, so a crash never leaves a truncated model; an
//! object carrying `sha256` metadata is verified after download.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use sdapi_core::models_dir::HashCache;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("SDAPI_MODELS_S3_URI {0:?} is not s3://bucket[/prefix]")]
    BadUri(String),
    #[error("S3 key {0:?} would be written outside the models directory")]
    UnsafeKey(String),
    #[error("S3 {operation} failed for {location}: {message}")]
    S3 { operation: &'static str, location: String, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{key}: downloaded {got} bytes, expected {want}")]
    SizeMismatch { key: String, got: u64, want: u64 },
    #[error("{key}: sha256 {got} does not match the object's metadata {want}")]
    HashMismatch { key: String, got: String, want: String },
}

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub downloaded: usize,
    pub skipped: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// `s3://bucket/some/prefix` → (`bucket`, `some/prefix/`); the prefix is empty or ends with `/`.
pub fn parse_s3_uri(uri: &str) -> Result<(String, String), SyncError> {
    let rest = uri.strip_prefix("s3://").ok_or_else(|| SyncError::BadUri(uri.into()))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(SyncError::BadUri(uri.into()));
    }
    let prefix = prefix.trim_matches('/');
    Ok((bucket.to_string(), if prefix.is_empty() { String::new() } else { format!("{prefix}/") }))
}

/// The local path of a key, refusing anything that could escape `dest` (`..`, absolute parts).
fn local_path(dest: &Path, rel: &str) -> Result<PathBuf, SyncError> {
    let rel_path = Path::new(rel);
    if rel.is_empty() || !rel_path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(SyncError::UnsafeKey(rel.into()));
    }
    Ok(dest.join(rel_path))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SyncError + '_ {
    move |source| SyncError::Io { path: path.to_path_buf(), source }
}

fn s3_err(operation: &'static str, location: String) -> impl FnOnce(String) -> SyncError {
    move |message| SyncError::S3 { operation, location, message }
}

/// Folders of a models tree fetched on demand rather than at start (unless
/// `SDAPI_SYNC_NETWORKS_AT_START`): a bucket may hold many LoRAs a single instance never uses.
pub const ON_DEMAND_FOLDERS: [&str; 3] = ["Lora/", "LyCORIS/", "embeddings/"];

/// Copies every object under the URI's prefix into `dest`, skipping files already there.
pub async fn sync_models(client: &Client, uri: &str, dest: &Path) -> Result<SyncReport, SyncError> {
    sync_models_except(client, uri, dest, &[]).await
}

/// [`sync_models`] without the objects under the `skip` folders (relative to the prefix).
pub async fn sync_models_except(
    client: &Client,
    uri: &str,
    dest: &Path,
    skip: &[&str],
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    let (bucket, prefix) = parse_s3_uri(uri)?;
    let mut report = SyncReport::default();
    let mut hashed = Vec::new();
    let mut pages = client.list_objects_v2().bucket(&bucket).prefix(&prefix).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| s3_err("list", uri.to_string())(format!("{e:?}")))?;
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            let rel = &key[prefix.len()..];
            if rel.is_empty() || rel.ends_with('/') {
                continue; // folder markers
            }
            if skip.iter().any(|folder| rel.starts_with(folder)) {
                continue;
            }
            let want = object.size().unwrap_or(0).max(0) as u64;
            let path = local_path(dest, rel)?;
            if tokio::fs::metadata(&path).await.map(|m| m.len() == want).unwrap_or(false) {
                report.skipped += 1;
                continue;
            }
            let (bytes, sha256) = download(client, &bucket, key, &path, want).await?;
            report.bytes += bytes;
            report.downloaded += 1;
            hashed.push((path, sha256));
        }
    }
    // The digests computed while downloading go into the models index's hash cache: the scan
    // that follows does not read the files again.
    let (cache_path, _) = HashCache::location(dest);
    let mut cache = HashCache::load(cache_path);
    for (path, sha256) in &hashed {
        if let Err(e) = cache.record(path, sha256) {
            tracing::debug!("hash of {} not cached: {e}", path.display());
        }
    }
    if let Err(e) = cache.save() {
        tracing::debug!("hash cache not saved: {e}");
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Downloads one object; returns its size and sha256 (always computed while streaming).
pub(crate) async fn download(
    client: &Client,
    bucket: &str,
    key: &str,
    path: &Path,
    want: u64,
) -> Result<(u64, String), SyncError> {
    let location = format!("s3://{bucket}/{key}");
    let resp = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| s3_err("get", location.clone())(format!("{e:?}")))?;
    let expected_sha = resp.metadata().and_then(|m| m.get("sha256")).map(|s| s.to_ascii_lowercase());
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io(parent))?;
    }
    let part = path.with_extension("part");
    let mut file = tokio::fs::File::create(&part).await.map_err(io(&part))?;
    let mut hasher = Sha256::new();
    let mut body = resp.body;
    let mut got = 0u64;
    while let Some(chunk) = body.try_next().await.map_err(|e| s3_err("read", location.clone())(e.to_string()))? {
        hasher.update(&chunk);
        got += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io(&part))?;
    }
    file.flush().await.map_err(io(&part))?;
    drop(file);
    if got != want {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(SyncError::SizeMismatch { key: key.into(), got, want });
    }
    let got_sha: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if let Some(want_sha) = expected_sha
        && got_sha != want_sha
    {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(SyncError::HashMismatch { key: key.into(), got: got_sha, want: want_sha });
    }
    tokio::fs::rename(&part, path).await.map_err(io(path))?;
    Ok((got, got_sha))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        assert_eq!(parse_s3_uri("s3://b").unwrap(), ("b".into(), "".into()));
        assert_eq!(parse_s3_uri("s3://b/models/").unwrap(), ("b".into(), "models/".into()));
        assert_eq!(parse_s3_uri("s3://b/a/b").unwrap(), ("b".into(), "a/b/".into()));
        assert!(parse_s3_uri("http://b/x").is_err());
        assert!(parse_s3_uri("s3:///x").is_err());
    }

    #[test]
    fn refuses_keys_that_escape() {
        let d = Path::new("/m");
        assert_eq!(local_path(d, "Stable-diffusion/a.safetensors").unwrap(), d.join("Stable-diffusion/a.safetensors"));
        assert!(local_path(d, "../etc/passwd").is_err());
        assert!(local_path(d, "a/../../b").is_err());
    }
}
