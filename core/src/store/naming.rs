//! A1111's sample naming (`modules/images.py` `save_image` with default options):
//! `<outdir_<mode>_samples>/<YYYY-MM-DD>/<NNNNN>-<seed>.<ext>`.
//!
//! * folder: `outdir_samples` when set, else `outdir_txt2img_samples` / `outdir_img2img_samples`
//!   (`outputs/txt2img-images`); the leading `outputs/` is the store root, so it is dropped.
//!   `save_to_dirs` with `directories_filename_pattern = [date]` adds the local date.
//! * file: `samples_filename_pattern` `[seed]` prefixed with a 5-digit running number,
//!   `get_next_sequence_number`: one more than the largest leading number of any file in the folder.
//!
//! Other filename patterns are not supported: the name is always `<NNNNN>-<seed>`.

use std::collections::HashMap;
use std::sync::Mutex;

use sdapi_protocol::api::options::Options;

use super::{OutputStore, PutOptions, StoreError, StoredObject, validate_key};

/// A1111 gives up after 500 taken numbers; so do we.
const MAX_ATTEMPTS: u64 = 500;

/// An A1111 output folder option (`outputs/txt2img-images`, `./outputs/extras-images`, …) as a
/// folder relative to the store root; an absolute or odd one cannot be mapped into a bucket and
/// becomes `fallback` (A1111's default name).
fn store_folder(configured: &str, fallback: &str) -> String {
    let rel = configured.trim().trim_start_matches("./");
    let rel = rel.strip_prefix("outputs/").unwrap_or(rel).trim_end_matches('/');
    if validate_key(rel).is_ok() { rel.to_string() } else { fallback.to_string() }
}

/// The folder (relative to the store root) A1111 would save a `mode` sample in today.
pub fn sample_folder(mode: &str, opts: &Options, date: &str) -> String {
    let configured = match opts.outdir_samples() {
        s if !s.trim().is_empty() => s,
        _ if mode == "img2img" => opts.outdir_img2img_samples(),
        _ => opts.outdir_txt2img_samples(),
    };
    format!("{}/{date}", store_folder(&configured, &format!("{mode}-images")))
}

/// The extras' output folder: `outdir_samples`, else `outdir_extras_samples` (A1111 saves extras
/// without date subfolders).
pub fn extras_folder(opts: &Options) -> String {
    let configured = match opts.outdir_samples() {
        s if !s.trim().is_empty() => s,
        _ => opts.get("outdir_extras_samples").and_then(|v| v.as_str()).unwrap_or("outputs/extras-images").to_string(),
    };
    store_folder(&configured, "extras-images")
}

/// Today's date as A1111's `[date]` (`%Y-%m-%d`, local time; Lambda runs in UTC).
pub fn today() -> String {
    chrono::Local::now().format("%Y-%m-%d").to_string()
}

/// `get_next_sequence_number(path, "")`: the first `-`-separated part of each file stem, as an int.
pub fn next_sequence_number<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    names
        .into_iter()
        .filter_map(|name| {
            let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
            stem.split('-').next()?.trim().parse::<u64>().ok()
        })
        .max()
        .map_or(0, |n| n + 1)
}

/// The sample file name: `00012-1234.png`.
pub fn sample_file_name(number: u64, seed: i64, ext: &str) -> String {
    format!("{number:05}-{seed}.{ext}")
}

/// Hands out running numbers per folder. The folder is listed once per process; after that the
/// counter lives in memory, and conditional writes (`if_absent`) catch numbers another process
/// (another Lambda instance, an earlier run) took meanwhile.
#[derive(Debug, Default)]
pub struct SampleNamer {
    next: Mutex<HashMap<String, u64>>,
}

impl SampleNamer {
    pub fn new() -> Self {
        Self::default()
    }

    async fn reserve(&self, store: &dyn OutputStore, folder: &str) -> Result<u64, StoreError> {
        if let Some(n) = self.take_cached(folder) {
            return Ok(n);
        }
        let names = store.list_names(folder).await?;
        let listed = next_sequence_number(names.iter().map(String::as_str));
        let mut map = self.next.lock().unwrap_or_else(|e| e.into_inner());
        // Another task may have listed meanwhile: keep whichever is further along.
        let n = map.get(folder).copied().unwrap_or(0).max(listed);
        map.insert(folder.to_string(), n + 1);
        Ok(n)
    }

    fn take_cached(&self, folder: &str) -> Option<u64> {
        let mut map = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.get_mut(folder)?;
        let taken = *n;
        *n += 1;
        Some(taken)
    }

    /// Saves one sample under the next free number in `folder`.
    pub async fn save(
        &self,
        store: &dyn OutputStore,
        folder: &str,
        seed: i64,
        ext: &str,
        body: Vec<u8>,
        options: PutOptions,
    ) -> Result<StoredObject, StoreError> {
        self.save_numbered(store, folder, |number| sample_file_name(number, seed, ext), body, options).await
    }

    /// Stores `body` under the folder's next running number, named by `file_name(number)`.
    pub async fn save_numbered(
        &self,
        store: &dyn OutputStore,
        folder: &str,
        file_name: impl Fn(u64) -> String,
        body: Vec<u8>,
        mut options: PutOptions,
    ) -> Result<StoredObject, StoreError> {
        options.if_absent = true;
        let mut last = None;
        for _ in 0..MAX_ATTEMPTS {
            let number = self.reserve(store, folder).await?;
            let key = format!("{folder}/{}", file_name(number));
            match store.put(&key, body.clone(), options.clone()).await {
                Err(StoreError::AlreadyExists { key }) => last = Some(key),
                other => return other,
            }
        }
        Err(StoreError::AlreadyExists { key: last.unwrap_or_else(|| folder.to_string()) })
    }
}
