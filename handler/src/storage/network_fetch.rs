//! LoRAs and embeddings from the models bucket on demand (`SDAPI_MODELS_S3_URI`): a request that
//! names a LoRA, or mentions an embedding, the local folders lack gets it from the bucket's
//! `Lora/` or `embeddings/` prefix. Files are size-checked before download, verified after
//! (`sha256` object metadata when present; a readable safetensors header or PyTorch archive), and
//! kept in a local cache folder whose total size is bounded (least recently used files go first).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::Client;
use sdapi_core::networks::fetch::cache_folders;
use sdapi_core::networks::{
    BoxFuture, EMBEDDING_EXTENSIONS, LORA_EXTENSIONS, MAX_EMBEDDING_BYTES, NetworkFetcher, SafetensorsHeader,
    check_network_name, has_extension, is_safetensors,
};

use super::models_sync::{download, parse_s3_uri};

/// How long a listing of the bucket's embeddings is reused.
const LISTING_TTL: Duration = Duration::from_secs(60);
/// Most embeddings one request may bring in.
const MAX_EMBEDDINGS_PER_REQUEST: usize = 16;

/// Bounds of the fetch cache.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// Largest LoRA file fetched (`SDAPI_NETWORK_MAX_MB`).
    pub max_lora_bytes: u64,
    /// Total size the cache folder may keep (`SDAPI_NETWORK_CACHE_MB`).
    pub cache_bytes: u64,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self { max_lora_bytes: 2048 << 20, cache_bytes: 4096 << 20 }
    }
}

/// One embedding object of the bucket.
#[derive(Debug, Clone)]
struct RemoteFile {
    name: String,
    file_name: String,
    key: String,
    size: u64,
}

pub struct S3NetworkFetcher {
    client: Client,
    bucket: String,
    prefix: String,
    cache: PathBuf,
    limits: FetchLimits,
    /// One fetch at a time: two requests for the same file must not write the same `.part`.
    fetching: tokio::sync::Mutex<()>,
    listing: Mutex<Option<(Instant, Vec<RemoteFile>)>>,
}

impl S3NetworkFetcher {
    /// `uri`: `s3://bucket[/prefix]` of the models tree.
    pub fn new(client: Client, uri: &str, cache: PathBuf, limits: FetchLimits) -> Result<Self, String> {
        let (bucket, prefix) = parse_s3_uri(uri).map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            bucket,
            prefix,
            cache,
            limits,
            fetching: tokio::sync::Mutex::new(()),
            listing: Mutex::new(None),
        })
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// The object's size, or None when it does not exist.
    async fn object_size(&self, key: &str) -> Result<Option<u64>, String> {
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) => {
                let e = e.into_service_error();
                if e.is_not_found() { Ok(None) } else { Err(format!("HEAD {}: {e}", self.location(key))) }
            }
        }
    }

    /// Downloads `key` to `path` and checks it is a tensor file; a bad file is removed.
    async fn fetch_to(&self, key: &str, path: &Path, size: u64) -> Result<(), String> {
        download(&self.client, &self.bucket, key, path, size).await.map_err(|e| e.to_string())?;
        let check = path.to_path_buf();
        let verified = tokio::task::spawn_blocking(move || verify_tensor_file(&check))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        if let Err(e) = verified {
            let _ = tokio::fs::remove_file(path).await;
            return Err(format!("{} is not a usable network file: {e}", self.location(key)));
        }
        tracing::info!(key = %self.location(key), bytes = size, "network fetched on demand");
        Ok(())
    }

    async fn embedding_listing(&self) -> Result<Vec<RemoteFile>, String> {
        if let Some((at, files)) = &*self.listing.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < LISTING_TTL
        {
            return Ok(files.clone());
        }
        let prefix = format!("{}embeddings/", self.prefix);
        let mut files = Vec::new();
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| format!("list {}: {}", self.location(&prefix), e.into_service_error()))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let file_name = &key[prefix.len()..];
                let Some((name, _)) = file_name.rsplit_once('.') else { continue };
                if !has_extension(Path::new(file_name), &EMBEDDING_EXTENSIONS) || check_network_name(name).is_err() {
                    continue;
                }
                let size = object.size().unwrap_or(0).max(0) as u64;
                files.push(RemoteFile { name: name.into(), file_name: file_name.into(), key: key.into(), size });
            }
        }
        *self.listing.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), files.clone()));
        Ok(files)
    }

    /// Removes the least recently used cached files until the cache fits its bound; `keep` stays.
    fn evict(&self, keep: &[PathBuf]) {
        let (lora, embeddings) = cache_folders(&self.cache);
        let mut files: Vec<(SystemTime, u64, PathBuf)> = [lora, embeddings]
            .iter()
            .filter_map(|dir| std::fs::read_dir(dir).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                meta.is_file().then(|| (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
        files.sort();
        for (_, size, path) in files {
            if total <= self.limits.cache_bytes {
                break;
            }
            if keep.contains(&path) {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::info!(file = %path.display(), "evicted from the network cache");
                total -= size;
            }
        }
    }
}

/// A fetched file must be a readable safetensors header or a zip archive (PyTorch's format; its
/// pickle is checked when the engine reads it).
fn verify_tensor_file(path: &Path) -> Result<(), String> {
    if is_safetensors(path) {
        return SafetensorsHeader::read(path).map(drop).map_err(|e| e.to_string());
    }
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open(path).map_err(|e| e.to_string())?, &mut magic)
        .map_err(|e| e.to_string())?;
    if &magic == b"PK\x03\x04" { Ok(()) } else { Err("not a safetensors file or a PyTorch zip archive".into()) }
}

impl NetworkFetcher for S3NetworkFetcher {
    fn cache_dir(&self) -> &Path {
        &self.cache
    }

    fn fetch_lora<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, String>> {
        Box::pin(async move {
            check_network_name(name).map_err(|e| e.to_string())?;
            let _one_at_a_time = self.fetching.lock().await;
            let (dir, _) = cache_folders(&self.cache);
            // Another request may have brought it while this one waited.
            if LORA_EXTENSIONS.iter().any(|ext| dir.join(format!("{name}.{ext}")).is_file()) {
                return Ok(true);
            }
            for ext in LORA_EXTENSIONS {
                let key = format!("{}Lora/{name}.{ext}", self.prefix);
                let Some(size) = self.object_size(&key).await? else { continue };
                if size > self.limits.max_lora_bytes {
                    return Err(format!(
                        "{} is {size} bytes, more than this server fetches ({}, SDAPI_NETWORK_MAX_MB)",
                        self.location(&key),
                        self.limits.max_lora_bytes
                    ));
                }
                let path = dir.join(format!("{name}.{ext}"));
                self.fetch_to(&key, &path, size).await?;
                self.evict(std::slice::from_ref(&path));
                return Ok(true);
            }
            Ok(false)
        })
    }

    fn fetch_embeddings<'a>(
        &'a self,
        texts: &'a [String],
        known: &'a HashSet<String>,
    ) -> BoxFuture<'a, Result<usize, String>> {
        Box::pin(async move {
            let lowered: Vec<String> = texts.iter().map(|t| t.to_lowercase()).collect();
            let wanted: Vec<RemoteFile> = self
                .embedding_listing()
                .await?
                .into_iter()
                .filter(|f| !known.contains(&f.name) && f.size <= MAX_EMBEDDING_BYTES && f.size > 0)
                .filter(|f| {
                    let name = f.name.to_lowercase();
                    lowered.iter().any(|t| t.contains(&name))
                })
                .take(MAX_EMBEDDINGS_PER_REQUEST)
                .collect();
            if wanted.is_empty() {
                return Ok(0);
            }
            let _one_at_a_time = self.fetching.lock().await;
            let (_, dir) = cache_folders(&self.cache);
            let mut fetched = Vec::new();
            for file in wanted {
                let path = dir.join(&file.file_name);
                if !path.is_file() {
                    self.fetch_to(&file.key, &path, file.size).await?;
                }
                fetched.push(path);
            }
            self.evict(&fetched);
            Ok(fetched.len())
        })
    }

    fn touch(&self, path: &Path) {
        let now = std::fs::File::options().write(true).open(path).and_then(|f| f.set_modified(SystemTime::now()));
        if let Err(e) = now {
            tracing::debug!(file = %path.display(), "cache entry not touched: {e}");
        }
    }
}
