//! Scanning an A1111 models directory (`Stable-diffusion/`, `VAE/`) into `SDModelItem` /
//! `SDVaeItem`, with sha256 hashes cached in a sidecar JSON keyed by path + mtime + size
//! (like A1111's `cache.json`), and checkpoint lookup by A1111's aliases.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use sdapi_protocol::api::items::{SDModelItem, SDVaeItem};

use crate::networks::{LoraEntry, NetworkCatalog};

#[derive(Debug, thiserror::Error)]
pub enum ModelsDirError {
    #[error("io error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// When to compute sha256 of checkpoints. A1111 lists `hash: null` until a model is loaded;
/// we default to hashing at scan time (cached, so only once per file version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashPolicy {
    AtScan,
    /// Only use cached hashes (`--no-hashing`-like listing).
    CachedOnly,
}

/// What a cached digest covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    /// sha256 of the whole file (checkpoints, VAEs, embeddings, pickled LoRAs).
    Whole,
    /// sha256 of a `.safetensors` file after its header: kohya's "addnet" hash, which A1111 uses
    /// for LoRA files so that editing their metadata keeps the hash.
    SafetensorsBody,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct CacheEntry {
    mtime: u64,
    size: u64,
    sha256: String,
}

/// The sidecar hash cache (`{"<abs path>": {"mtime", "size", "sha256"}}`).
#[derive(Debug, Default)]
pub struct HashCache {
    path: Option<PathBuf>,
    entries: BTreeMap<String, CacheEntry>,
    dirty: bool,
}

impl HashCache {
    /// Loads the cache file (missing or unreadable → empty).
    pub fn load(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let entries =
            std::fs::read_to_string(&path).ok().and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        Self { path: Some(path), entries, dirty: false }
    }

    /// In-memory only.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Writes the cache back if it changed.
    pub fn save(&mut self) -> Result<(), ModelsDirError> {
        if let (Some(path), true) = (&self.path, self.dirty) {
            let text = serde_json::to_string_pretty(&self.entries).unwrap_or_default();
            std::fs::write(path, text).map_err(|source| ModelsDirError::Io { path: path.clone(), source })?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Records a digest computed elsewhere (the models sync hashes while downloading), so the
    /// file is not read again to hash it.
    pub fn record(&mut self, file: &Path, sha256: &str) -> Result<(), ModelsDirError> {
        let meta = std::fs::metadata(file).map_err(|source| ModelsDirError::Io { path: file.to_path_buf(), source })?;
        let key = file.to_string_lossy().into_owned();
        self.entries.insert(
            key,
            CacheEntry { mtime: mtime_secs(&meta), size: meta.len(), sha256: sha256.to_ascii_lowercase() },
        );
        self.dirty = true;
        Ok(())
    }

    /// Where the cache of a models root lives, and whether that root is writable: `cache.json` in
    /// the root when it is (as A1111 keeps it), else a file in the temp dir (a read-only image,
    /// e.g. `/opt` on Lambda). `SDAPI_HASH_CACHE` overrides the path.
    pub fn location(root: &Path) -> (PathBuf, bool) {
        let at_root = root.join("cache.json");
        let writable = std::fs::OpenOptions::new().create(true).append(true).open(&at_root).is_ok();
        let path = match std::env::var_os("SDAPI_HASH_CACHE") {
            Some(p) => PathBuf::from(p),
            None if writable => at_root,
            None => std::env::temp_dir().join("sdapi-hash-cache.json"),
        };
        (path, writable)
    }

    /// sha256 (lower-case hex) of a file, from the cache when path, mtime and size match.
    pub fn sha256(&mut self, file: &Path, policy: HashPolicy) -> Result<Option<String>, ModelsDirError> {
        self.digest(file, DigestKind::Whole, policy)
    }

    /// A digest of `kind` of a file, cached like [`Self::sha256`] (each kind under its own key).
    pub fn digest(
        &mut self,
        file: &Path,
        kind: DigestKind,
        policy: HashPolicy,
    ) -> Result<Option<String>, ModelsDirError> {
        let io = |source| ModelsDirError::Io { path: file.to_path_buf(), source };
        let meta = std::fs::metadata(file).map_err(io)?;
        let mtime = mtime_secs(&meta);
        let key = match kind {
            DigestKind::Whole => file.to_string_lossy().into_owned(),
            DigestKind::SafetensorsBody => format!("{}#addnet", file.to_string_lossy()),
        };
        if let Some(e) = self.entries.get(&key)
            && e.mtime == mtime
            && e.size == meta.len()
        {
            return Ok(Some(e.sha256.clone()));
        }
        if policy == HashPolicy::CachedOnly {
            return Ok(None);
        }
        let digest = match kind {
            DigestKind::Whole => sha256_file(file).map_err(io)?,
            DigestKind::SafetensorsBody => crate::networks::safetensors_header::addnet_hash(file).map_err(io)?,
        };
        self.entries.insert(key, CacheEntry { mtime, size: meta.len(), sha256: digest.clone() });
        self.dirty = true;
        Ok(Some(digest))
    }
}

fn mtime_secs(meta: &std::fs::Metadata) -> u64 {
    meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0)
}

/// Streams a file through sha256 (the one implementation; the engine never hashes).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_reader(std::fs::File::open(path)?)
}

/// sha256 (lower-case hex) of everything `reader` yields.
pub fn sha256_reader(mut reader: impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A checkpoint found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointInfo {
    pub item: SDModelItem,
    /// Relative name with extension ("sub/model.safetensors"), A1111's `name`.
    pub name: String,
    /// Relative name without extension, A1111's `name_for_extra`-like short name.
    pub name_no_ext: String,
    pub is_diffusers_folder: bool,
}

impl CheckpointInfo {
    /// A1111's `checkpoint_aliases` keys for this checkpoint.
    pub fn aliases(&self) -> Vec<String> {
        let mut a =
            vec![self.item.title.clone(), self.name.clone(), self.name_no_ext.clone(), self.item.model_name.clone()];
        if let Some(h) = &self.item.hash {
            a.push(h.clone());
        }
        if let Some(s) = &self.item.sha256 {
            a.push(s.clone());
            a.push(format!("{} [{}]", self.name, short_hash(s)));
        }
        a
    }

    /// Records the file's sha256 in the listing as A1111 shows it: `hash` (the short hash),
    /// `sha256`, and the title `name [short hash]`.
    fn set_sha256(&mut self, sha256: String) {
        let short = short_hash(&sha256).to_string();
        self.item.title = format!("{} [{short}]", self.name);
        self.item.hash = Some(short);
        self.item.sha256 = Some(sha256);
    }
}

/// A1111's short hash: the first 10 hex digits of the sha256 (a cached value that is shorter,
/// e.g. an edited cache file, is used whole rather than panicking).
fn short_hash(sha256: &str) -> &str {
    sha256.get(..10).unwrap_or(sha256)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if p.join("model_index.json").is_file() {
                out.push(p); // a diffusers pipeline folder is one checkpoint
            } else {
                walk(&p, out);
            }
        } else {
            out.push(p);
        }
    }
}

/// A1111's `os.path.abspath`: absolute, but symlinks are not resolved (the bundled models are
/// links into the fixtures, and users expect to see the path they configured).
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn rel_name(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).to_string_lossy().replace('\\', "/")
}

/// Scans `<models>/Stable-diffusion` for `.safetensors`/`.ckpt` files and diffusers folders.
/// Sorted by relative name (case-insensitive), as A1111 lists them.
pub fn scan_checkpoints(
    sd_dir: &Path,
    cache: &mut HashCache,
    policy: HashPolicy,
) -> Result<Vec<CheckpointInfo>, ModelsDirError> {
    let mut files = Vec::new();
    walk(sd_dir, &mut files);
    let mut out = Vec::new();
    for path in files {
        let is_folder = path.is_dir();
        let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
        if !is_folder && !matches!(ext.as_deref(), Some("safetensors" | "ckpt")) {
            continue;
        }
        let name = rel_name(sd_dir, &path);
        let name_no_ext = if is_folder {
            name.clone()
        } else {
            name.rsplit_once('.').map(|(a, _)| a.to_string()).unwrap_or(name.clone())
        };
        let sha256 = if is_folder { None } else { cache.sha256(&path, policy)? };
        let abs = absolute(&path);
        let yaml = path.with_extension("yaml");
        let config = yaml.is_file().then(|| absolute(&yaml).to_string_lossy().into_owned());
        let mut info = CheckpointInfo {
            item: SDModelItem {
                title: name.clone(),
                model_name: name_no_ext.replace(['/', '\\'], "_"),
                hash: None,
                sha256: None,
                filename: abs.to_string_lossy().into_owned(),
                config,
            },
            name,
            name_no_ext,
            is_diffusers_folder: is_folder,
        };
        if let Some(sha256) = sha256 {
            info.set_sha256(sha256);
        }
        out.push(info);
    }
    out.sort_by_key(|c| c.name.to_lowercase());
    Ok(out)
}

/// Finds a checkpoint by any of A1111's aliases (title, name with/without extension,
/// model_name, short or full hash).
pub fn find_checkpoint<'a>(checkpoints: &'a [CheckpointInfo], alias: &str) -> Option<&'a CheckpointInfo> {
    checkpoints.iter().find(|c| c.aliases().iter().any(|a| a == alias))
}

/// Scans `<models>/VAE` for `.pt`/`.ckpt`/`.safetensors` → `SDVaeItem` (model_name = file name).
pub fn scan_vaes(vae_dir: &Path) -> Vec<SDVaeItem> {
    let mut files = Vec::new();
    walk(vae_dir, &mut files);
    let mut out: Vec<SDVaeItem> = files
        .into_iter()
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("pt" | "ckpt" | "safetensors"))
        })
        .map(|p| SDVaeItem {
            model_name: p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            filename: absolute(&p).to_string_lossy().into_owned(),
        })
        .collect();
    out.sort_by_key(|v| v.model_name.to_lowercase());
    out
}

/// A model upscaler file as A1111 lists it (`/sdapi/v1/upscalers`).
#[derive(Debug, Clone, PartialEq)]
pub struct UpscalerFile {
    pub name: String,
    /// `Upscaler.model_name`: "ESRGAN_4x" for the ESRGAN folder, none for Real-ESRGAN.
    pub model_name: Option<String>,
    pub path: PathBuf,
    /// The scale A1111 records for it (ESRGAN files are always listed as 4).
    pub scale: f64,
}

/// Real-ESRGAN's published files and the names A1111 gives them (`get_realesrgan_models`).
pub const REALESRGAN_NAMES: [(&str, &str, f64); 6] = [
    ("realesr-general-x4v3", "R-ESRGAN General 4xV3", 4.0),
    ("realesr-general-wdn-x4v3", "R-ESRGAN General WDN 4xV3", 4.0),
    ("realesr-animevideov3", "R-ESRGAN AnimeVideo", 4.0),
    ("RealESRGAN_x4plus", "R-ESRGAN 4x+", 4.0),
    ("RealESRGAN_x4plus_anime_6B", "R-ESRGAN 4x+ Anime6B", 4.0),
    ("RealESRGAN_x2plus", "R-ESRGAN 2x+", 2.0),
];

/// Scans `<models>/ESRGAN` (`.pt`, `.pth`, `.safetensors`, named by file stem) and
/// `<models>/RealESRGAN` (the published files under A1111's names, others by file stem), sorted by
/// lower-cased name as A1111 sorts them after its built-in upscalers; a name seen twice keeps the
/// first file.
pub fn scan_upscalers(root: &Path) -> Vec<UpscalerFile> {
    let mut out: Vec<UpscalerFile> = Vec::new();
    for folder in ["ESRGAN", "RealESRGAN"] {
        let mut files = Vec::new();
        walk(&root.join(folder), &mut files);
        for p in files {
            let known = matches!(p.extension().and_then(|e| e.to_str()), Some("pt" | "pth" | "safetensors"));
            let Some(stem) = p.file_stem().map(|n| n.to_string_lossy().into_owned()) else { continue };
            if !p.is_file() || !known {
                continue;
            }
            let entry = if folder == "ESRGAN" {
                UpscalerFile { name: stem, model_name: Some("ESRGAN_4x".into()), path: absolute(&p), scale: 4.0 }
            } else {
                let (name, scale) = REALESRGAN_NAMES
                    .iter()
                    .find(|(file, _, _)| *file == stem)
                    .map(|(_, name, scale)| (name.to_string(), *scale))
                    .unwrap_or((stem, 4.0));
                UpscalerFile { name, model_name: None, path: absolute(&p), scale }
            };
            if !out.iter().any(|u| u.name == entry.name) {
                out.push(entry);
            }
        }
    }
    out.sort_by_key(|u| u.name.to_lowercase());
    out
}

/// The scanned models directory: checkpoints and VAEs, with A1111's alias lookup.
#[derive(Debug, Clone, Default)]
pub struct ModelIndex {
    pub root: PathBuf,
    pub checkpoints: Vec<CheckpointInfo>,
    pub vaes: Vec<SDVaeItem>,
    /// Model upscalers (`ESRGAN/`, `RealESRGAN/`).
    pub upscalers: Vec<UpscalerFile>,
    /// Where this index's hash cache lives ([`HashCache::location`], decided at scan).
    pub hash_cache: PathBuf,
    /// LoRA and embedding files (`<root>/Lora`, `LyCORIS`, `embeddings`, and the fetch cache).
    pub networks: NetworkCatalog,
    /// Where LoRAs and embeddings fetched on demand are kept (scanned with the root's folders).
    pub network_cache: Option<PathBuf>,
}

impl ModelIndex {
    /// Scans `<root>/Stable-diffusion` and `<root>/VAE`. Each file is hashed once per version:
    /// hashes are cached ([`HashCache::location`]). A writable root is hashed at scan; a
    /// read-only root (a model baked into a Lambda image) lists cached hashes only and hashes a
    /// checkpoint when it is first used ([`ModelIndex::ensure_hash`]), as A1111 does, so a cold
    /// start does not read every checkpoint.
    pub fn scan(root: &Path) -> Result<Self, ModelsDirError> {
        let (hash_cache, writable) = HashCache::location(root);
        let mut cache = HashCache::load(&hash_cache);
        let policy = if writable { HashPolicy::AtScan } else { HashPolicy::CachedOnly };
        let checkpoints = scan_checkpoints(&root.join("Stable-diffusion"), &mut cache, policy)?;
        if let Err(e) = cache.save() {
            tracing::debug!("hash cache not saved: {e}");
        }
        let vaes = scan_vaes(&root.join("VAE"));
        let networks = NetworkCatalog::scan(root, None);
        let upscalers = scan_upscalers(root);
        Ok(Self { root: root.to_path_buf(), checkpoints, vaes, upscalers, hash_cache, networks, network_cache: None })
    }

    /// Also lists the networks fetched into `cache` (rescans).
    pub fn with_network_cache(mut self, cache: PathBuf) -> Self {
        self.network_cache = Some(cache);
        self.rescan_networks();
        self
    }

    /// Rescans the LoRA and embedding folders (`/refresh-loras`, `/refresh-embeddings`).
    pub fn rescan_networks(&mut self) {
        self.networks = NetworkCatalog::scan(&self.root, self.network_cache.as_deref());
    }

    /// A LoRA's hash as A1111 reports it: kohya's `sshs_model_hash` metadata, else the addnet hash
    /// of a `.safetensors` file or the sha256 of another file, computed once per file version
    /// (hash cache) and kept on the entry. `None` when the file cannot be read.
    pub fn lora_hash(&self, entry: &LoraEntry) -> Option<String> {
        if let Some(hash) = entry.hash.get() {
            return Some(hash.clone());
        }
        let hash = match entry.metadata_hash() {
            Some(hash) => hash.to_ascii_lowercase(),
            None => {
                let kind = if entry.is_safetensors { DigestKind::SafetensorsBody } else { DigestKind::Whole };
                let mut cache = HashCache::load(&self.hash_cache);
                let digest = cache.digest(&entry.path, kind, HashPolicy::AtScan);
                if let Err(e) = cache.save() {
                    tracing::debug!("hash cache not saved: {e}");
                }
                digest.map_err(|e| tracing::warn!(lora = %entry.path.display(), "cannot hash: {e}")).ok().flatten()?
            }
        };
        Some(entry.hash.get_or_init(|| hash).clone())
    }

    /// Hashes a checkpoint listed without one (read-only roots) and updates its listing (`hash`,
    /// `sha256`, the title with the short hash), as A1111 does when it loads a model. Returns
    /// the updated entry; diffusers folders have no hash.
    pub fn ensure_hash(&mut self, name: &str) -> Result<Option<CheckpointInfo>, ModelsDirError> {
        let Some(info) = self.checkpoints.iter_mut().find(|c| c.name == name) else {
            return Ok(None);
        };
        if info.item.sha256.is_none() && !info.is_diffusers_folder {
            let mut cache = HashCache::load(&self.hash_cache);
            if let Some(sha) = cache.sha256(Path::new(&info.item.filename), HashPolicy::AtScan)? {
                info.set_sha256(sha);
            }
            if let Err(e) = cache.save() {
                tracing::debug!("hash cache not saved: {e}");
            }
        }
        Ok(Some(info.clone()))
    }

    /// A1111's `checkpoint_aliases` lookup.
    pub fn find_checkpoint(&self, alias: &str) -> Option<&CheckpointInfo> {
        find_checkpoint(&self.checkpoints, alias)
    }

    /// The checkpoint used when none is configured: the first in A1111's listing order.
    pub fn default_checkpoint(&self) -> Option<&CheckpointInfo> {
        self.checkpoints.first()
    }

    pub fn sd_model_items(&self) -> Vec<SDModelItem> {
        self.checkpoints.iter().map(|c| c.item.clone()).collect()
    }

    pub fn sd_vae_items(&self) -> Vec<SDVaeItem> {
        self.vaes.clone()
    }

    /// A VAE file by its listed name (`sd_vae` option); "Automatic"/"None" mean the checkpoint's own.
    pub fn find_vae(&self, name: &str) -> Option<&SDVaeItem> {
        self.vaes.iter().find(|v| v.model_name == name || v.filename == name)
    }
}

impl CheckpointInfo {
    /// Checkpoint file name without extension (`sd_model_name`, the infotext's `Model:`).
    pub fn model_name(&self) -> String {
        let base = self.name_no_ext.rsplit('/').next().unwrap_or(&self.name_no_ext);
        base.to_string()
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(&self.item.filename)
    }

    /// A1111's `short_title`: `name [shorthash]`, the name alone while unhashed (the infotext's
    /// `Hires checkpoint` and `Refiner`).
    pub fn short_title(&self) -> String {
        match &self.item.hash {
            Some(hash) => format!("{} [{hash}]", self.name_no_ext),
            None => self.name_no_ext.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_models() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/a1111-parity/models")
    }

    #[test]
    fn scans_fixture_models_with_hashes() {
        let tmp = std::env::temp_dir().join(format!("sdapi-models-test-{}", std::process::id()));
        let sd = tmp.join("Stable-diffusion");
        std::fs::create_dir_all(sd.join("sub")).unwrap();
        std::fs::copy(fixture_models().join("tiny-sd15.safetensors"), sd.join("tiny-sd15.safetensors")).unwrap();
        std::fs::write(sd.join("sub/other.ckpt"), b"not really a checkpoint").unwrap();
        std::fs::write(sd.join("sub/other.yaml"), b"model: {}").unwrap();
        std::fs::write(sd.join("readme.txt"), b"ignored").unwrap();
        let mut cache = HashCache::load(tmp.join("cache.json"));
        let cks = scan_checkpoints(&sd, &mut cache, HashPolicy::AtScan).unwrap();
        cache.save().unwrap();
        assert_eq!(cks.len(), 2);
        let sub = &cks[0];
        assert_eq!(sub.name, "sub/other.ckpt");
        assert_eq!(sub.item.model_name, "sub_other");
        assert!(sub.item.config.as_deref().unwrap().ends_with("sub/other.yaml"));
        let tiny = &cks[1];
        // sha256 of the fixture checkpoint, as recorded in its case.json files
        assert_eq!(
            tiny.item.sha256.as_deref(),
            Some("7037055cdc2efc1c7d3397bd638c19bf2bdab17a999a002cc00e2a63c3cb5cfd")
        );
        assert_eq!(tiny.item.title, "tiny-sd15.safetensors [7037055cdc]");
        assert_eq!(tiny.item.model_name, "tiny-sd15");
        for alias in ["tiny-sd15", "tiny-sd15.safetensors", "tiny-sd15.safetensors [7037055cdc]", "7037055cdc"] {
            assert_eq!(find_checkpoint(&cks, alias).map(|c| c.name.as_str()), Some("tiny-sd15.safetensors"), "{alias}");
        }
        assert!(find_checkpoint(&cks, "nope").is_none());
        // the cache answers without rehashing
        let mut cache2 = HashCache::load(tmp.join("cache.json"));
        let again = scan_checkpoints(&sd, &mut cache2, HashPolicy::CachedOnly).unwrap();
        assert_eq!(again[1].item.hash.as_deref(), Some("7037055cdc"));
        std::fs::remove_dir_all(&tmp).ok();
    }

    /// A read-only root lists unhashed checkpoints; the first use hashes one and fixes its listing.
    #[test]
    fn unhashed_checkpoints_are_hashed_on_first_use() {
        let tmp = std::env::temp_dir().join(format!("sdapi-models-lazy-{}", std::process::id()));
        let sd = tmp.join("Stable-diffusion");
        std::fs::create_dir_all(&sd).unwrap();
        std::fs::copy(fixture_models().join("tiny-sd15.safetensors"), sd.join("tiny-sd15.safetensors")).unwrap();
        let checkpoints = scan_checkpoints(&sd, &mut HashCache::in_memory(), HashPolicy::CachedOnly).unwrap();
        assert_eq!(
            (checkpoints[0].item.hash.as_deref(), checkpoints[0].item.title.as_str()),
            (None, "tiny-sd15.safetensors")
        );
        let mut index = ModelIndex {
            root: tmp.clone(),
            checkpoints,
            vaes: vec![],
            upscalers: vec![],
            hash_cache: tmp.join("cache.json"),
            networks: NetworkCatalog::default(),
            network_cache: None,
        };
        let hashed = index.ensure_hash("tiny-sd15.safetensors").unwrap().unwrap();
        assert_eq!(hashed.item.hash.as_deref(), Some("7037055cdc"));
        assert_eq!(hashed.item.title, "tiny-sd15.safetensors [7037055cdc]");
        assert_eq!(index.checkpoints[0].item, hashed.item, "the listing is updated too");
        assert!(index.ensure_hash("missing.safetensors").unwrap().is_none());
        std::fs::remove_dir_all(&tmp).ok();
    }

    /// A cache file edited to hold a short digest lists it as is instead of panicking at start.
    #[test]
    fn a_short_cached_digest_does_not_panic() {
        let tmp = std::env::temp_dir().join(format!("sdapi-models-short-{}", std::process::id()));
        let sd = tmp.join("Stable-diffusion");
        std::fs::create_dir_all(&sd).unwrap();
        let file = sd.join("m.safetensors");
        std::fs::write(&file, b"x").unwrap();
        let mut cache = HashCache::in_memory();
        cache.record(&file, "abc").unwrap();
        let listed = scan_checkpoints(&sd, &mut cache, HashPolicy::CachedOnly).unwrap();
        assert_eq!(listed[0].item.hash.as_deref(), Some("abc"));
        assert_eq!(listed[0].item.title, "m.safetensors [abc]");
        std::fs::remove_dir_all(&tmp).ok();
    }

    #[test]
    fn diffusers_folder_is_one_checkpoint() {
        let tmp = std::env::temp_dir().join(format!("sdapi-models-diff-{}", std::process::id()));
        let sd = tmp.join("Stable-diffusion");
        std::fs::create_dir_all(sd.join("pipe/unet")).unwrap();
        std::fs::write(sd.join("pipe/model_index.json"), b"{}").unwrap();
        std::fs::write(sd.join("pipe/unet/diffusion_pytorch_model.safetensors"), b"x").unwrap();
        let cks = scan_checkpoints(&sd, &mut HashCache::in_memory(), HashPolicy::AtScan).unwrap();
        assert_eq!(cks.len(), 1);
        assert!(cks[0].is_diffusers_folder);
        assert_eq!(cks[0].item.title, "pipe");
        assert_eq!(cks[0].item.hash, None);
        std::fs::remove_dir_all(&tmp).ok();
    }
}
