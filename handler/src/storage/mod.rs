//! Where generated images are stored, and how a generation response reports it.
//!
//! One store per process: S3 when `SDAPI_OUTPUT_BUCKET` is set, the local `SDAPI_OUTPUT_DIR`
//! otherwise (docs/storage.md). [`save_and_encode`] is the one place images are encoded: the same
//! bytes go to the store and (base64) into the response, so stored objects equal returned images.

pub mod models_sync;
pub mod network_fetch;
pub mod s3;

use std::sync::Arc;

use sdapi_core::processing::Processed;
use sdapi_core::store::naming::today;
use sdapi_core::store::{LocalStore, OutputStore, PutOptions, SampleNamer, StoredObject, sample_folder};
use sdapi_protocol::api::errors::ApiError;
use sdapi_protocol::api::options::Options;
use sdapi_protocol::images::{SampleFormat, encode_sample, to_base64};
use tokio::sync::mpsc;

use crate::config::Config;
use s3::S3Store;

/// The configured output store and the policy for when to use it.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub store: Arc<dyn OutputStore>,
    /// Set when the store is S3 (the batch path also reads request files with it).
    pub s3: Option<Arc<S3Store>>,
    pub namer: Arc<SampleNamer>,
    /// Store every image, whatever the request's `save_images` says.
    pub save_all: bool,
    pub max_response_bytes: Option<usize>,
}

impl Outputs {
    /// The local folder store (what `AppState` starts with; no AWS calls needed).
    pub fn local(config: &Config) -> Self {
        Self {
            store: Arc::new(LocalStore::new(&config.output_dir)),
            s3: None,
            namer: Arc::new(SampleNamer::new()),
            save_all: config.storage.saves_everything(false),
            max_response_bytes: config.storage.max_response_bytes,
        }
    }

    /// S3 when a bucket is configured (loads the AWS environment), else the local folder.
    pub async fn from_config(config: &Config) -> Self {
        match &config.output_bucket {
            Some(bucket) => {
                let store = S3Store::from_env(bucket.clone(), config.output_prefix.clone(), &config.storage.s3).await;
                Self::with_s3(config, store)
            }
            None => Self::local(config),
        }
    }

    /// An S3 store built elsewhere (tests point it at a local server).
    pub fn with_s3(config: &Config, store: S3Store) -> Self {
        let store = Arc::new(store);
        Self {
            store: store.clone(),
            s3: Some(store),
            namer: Arc::new(SampleNamer::new()),
            save_all: config.storage.saves_everything(true),
            max_response_bytes: config.storage.max_response_bytes,
        }
    }

    /// A1111 saves API images only with `save_images: true` and the `samples_save` option on;
    /// `SDAPI_SAVE_ALL` (the operator's choice) stores them all.
    pub fn should_save(&self, save_images: bool, samples_save: bool) -> bool {
        self.save_all || (save_images && samples_save)
    }
}

/// Encoded outputs of one request and what happened to their storage.
#[derive(Debug, Default)]
pub struct SavedOutputs {
    /// Base64 images for the response (empty when `send_images` is false).
    pub base64: Vec<String>,
    pub stored: Vec<StoredObject>,
    /// One message per image that could not be stored (the response still carries it).
    pub failures: Vec<String>,
}

/// A generated image in the options' format, as bytes (the store needs them unencoded).
pub fn encode_image(img: &sdapi_core::runner::RgbImage, infotext: &str, opts: &Options) -> Result<Vec<u8>, ApiError> {
    let buf = img.to_image().ok_or_else(|| ApiError::runtime("generated image has an invalid size"))?;
    encode_sample(&buf, Some(infotext), opts)
}

/// One encoded image on its way to the store.
struct ToStore {
    seed: i64,
    infotext: String,
    bytes: Vec<u8>,
}

/// Metadata written next to each stored image (S3 encodes it to fit; docs/storage.md).
pub fn image_metadata(mode: &str, seed: i64, infotext: &str) -> Vec<(String, String)> {
    vec![("mode".into(), mode.into()), ("seed".into(), seed.to_string()), ("parameters".into(), infotext.into())]
}

/// Encodes every image once; stores them (when `save`) while later images are still encoding, and
/// returns base64 copies (when `send`). Storage failures are collected, never raised: the images
/// are in the response either way.
pub async fn save_and_encode(
    outputs: &Outputs,
    processed: &Processed,
    send: bool,
    save: bool,
) -> Result<SavedOutputs, ApiError> {
    if !send && !save {
        return Ok(SavedOutputs::default());
    }
    let format = SampleFormat::from_options(&processed.options)?;
    let (content_type, ext) = (format.mime_type(), format.extension());
    // Bounded: the encoder waits rather than piling up every PNG in memory when the store is slow.
    let (tx, rx) = mpsc::channel::<ToStore>(2);
    let writer = save.then(|| {
        let folder = sample_folder(processed.mode, &processed.options, &today());
        tokio::spawn(write_samples(outputs.clone(), folder, processed.mode, content_type, ext, rx))
    });
    let p = processed.clone();
    let encoded = tokio::task::spawn_blocking(move || -> Result<Vec<String>, ApiError> {
        let mut out = Vec::new();
        for (i, (img, info)) in p.images.iter().zip(&p.infotexts).enumerate() {
            let bytes = encode_image(img, info, &p.options)?;
            if send {
                out.push(to_base64(&bytes));
            }
            if save {
                // A script's grid comes first and carries the first seed.
                let seed = p.all_seeds.get(i.saturating_sub(p.index_of_first_image)).copied().unwrap_or(-1);
                // A closed channel means the writer task died; its join error is reported below.
                let _ = tx.blocking_send(ToStore { seed, infotext: info.clone(), bytes });
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::runtime(e.to_string()))?;
    let mut result = SavedOutputs::default();
    if let Some(w) = writer {
        match w.await {
            Ok((stored, failures)) => (result.stored, result.failures) = (stored, failures),
            Err(e) => result.failures.push(format!("output writer failed: {e}")),
        }
    }
    result.base64 = encoded?;
    Ok(result)
}

/// Writes samples in arrival order, so running numbers follow the image order as in A1111.
async fn write_samples(
    outputs: Outputs,
    folder: String,
    mode: &'static str,
    content_type: &'static str,
    ext: &'static str,
    mut rx: mpsc::Receiver<ToStore>,
) -> (Vec<StoredObject>, Vec<String>) {
    let (mut stored, mut failures) = (Vec::new(), Vec::new());
    // After a transient failure (endpoint down, timeouts) the rest would each burn the whole retry
    // budget too; report them as not attempted instead, so the response is not held up.
    let mut broken: Option<String> = None;
    while let Some(item) = rx.recv().await {
        if let Some(first) = &broken {
            failures.push(format!("not attempted after an earlier failure: {first}"));
            continue;
        }
        let options = PutOptions {
            content_type: content_type.into(),
            metadata: image_metadata(mode, item.seed, &item.infotext),
            if_absent: true,
        };
        match outputs.namer.save(outputs.store.as_ref(), &folder, item.seed, ext, item.bytes, options).await {
            Ok(obj) => stored.push(obj),
            Err(e) => {
                tracing::error!(store = %outputs.store.describe(), error = %e, "storing a generated image failed");
                if e.is_transient() {
                    broken = Some(e.to_string());
                }
                failures.push(e.to_string());
            }
        }
    }
    (stored, failures)
}

/// Stores extras results in A1111's extras folder as `NNNNN.png` (A1111 names them without a
/// seed); failures are collected, never raised.
pub async fn store_extras(outputs: &Outputs, folder: &str, images: Vec<(Vec<u8>, String)>) -> SavedOutputs {
    let mut saved = SavedOutputs::default();
    let mut broken: Option<String> = None;
    for (bytes, infotext) in images {
        if let Some(first) = &broken {
            saved.failures.push(format!("not attempted after an earlier failure: {first}"));
            continue;
        }
        let options = PutOptions {
            content_type: "image/png".into(),
            metadata: vec![("mode".into(), "extras".into()), ("postprocessing".into(), infotext)],
            if_absent: true,
        };
        let name = |n: u64| format!("{n:05}.png");
        match outputs.namer.save_numbered(outputs.store.as_ref(), folder, name, bytes, options).await {
            Ok(obj) => saved.stored.push(obj),
            Err(e) => {
                tracing::error!(store = %outputs.store.describe(), error = %e, "storing an extras image failed");
                if e.is_transient() {
                    broken = Some(e.to_string());
                }
                saved.failures.push(e.to_string());
            }
        }
    }
    saved
}

/// Stores already-encoded images (the over-limit path stores what it could not return).
pub async fn store_encoded(outputs: &Outputs, processed: &Processed, images: Vec<Vec<u8>>) -> SavedOutputs {
    let format = match SampleFormat::from_options(&processed.options) {
        Ok(format) => format,
        Err(e) => return SavedOutputs { failures: vec![e.to_string()], ..SavedOutputs::default() },
    };
    let (content_type, ext) = (format.mime_type(), format.extension());
    let folder = sample_folder(processed.mode, &processed.options, &today());
    let (tx, rx) = mpsc::channel::<ToStore>(images.len().max(1));
    for (i, bytes) in images.into_iter().enumerate() {
        let seed = processed.all_seeds.get(i).copied().unwrap_or(-1);
        let infotext = processed.infotexts.get(i).cloned().unwrap_or_default();
        let _ = tx.try_send(ToStore { seed, infotext, bytes });
    }
    drop(tx);
    let (stored, failures) = write_samples(outputs.clone(), folder, processed.mode, content_type, ext, rx).await;
    SavedOutputs { base64: Vec::new(), stored, failures }
}
