//! Configuration from the environment (the README's configuration table is the contract).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sdapi_core::processing::RequestLimits;

use crate::storage::network_fetch::FetchLimits;
use crate::storage::s3::S3Settings;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// Everything the service reads from `SDAPI_*` variables.
#[derive(Debug, Clone)]
pub struct Config {
    /// A1111-layout models root (`Stable-diffusion/`, `VAE/`, `Lora/`, `embeddings/`).
    pub models_dir: PathBuf,
    /// Default checkpoint (title, file name or model name); first found when unset.
    pub checkpoint: Option<String>,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `SDAPI_DTYPE`: `auto` (f32 on the CPU, f16 on CUDA), `f32` or `f16`.
    pub dtype: Option<String>,
    pub listen: SocketAddr,
    /// `user:pass` pairs for HTTP Basic on `/sdapi/*`.
    pub api_auth: Vec<(String, String)>,
    pub output_dir: PathBuf,
    pub output_bucket: Option<String>,
    pub output_prefix: String,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Most runner jobs waiting or running before generation requests get 503 with `Retry-After`
    /// (`SDAPI_MAX_QUEUE`, 256; each queued job holds its request in memory).
    pub max_queue: usize,
    /// Most images the runner puts in one run of several requests (`SDAPI_BATCH_MAX_IMAGES`;
    /// 1, the default, runs each request alone as A1111 does).
    pub batch_max_images: usize,
    /// Largest accepted request line + headers in bytes (`SDAPI_MAX_HEADER_KB`, 64): over it is a
    /// 431 in A1111's error shape.
    pub max_header_bytes: usize,
    /// Output store behaviour (docs/storage.md).
    pub storage: StorageSettings,
    /// Bounds on one request's work (`SDAPI_MAX_PROMPT_CHARS`, `SDAPI_MAX_PROMPT_CHUNKS`).
    pub limits: RequestLimits,
    /// A1111's `styles.csv` (`SDAPI_STYLES_FILE`, default `<models_dir>/styles.csv`).
    pub styles_file: PathBuf,
    /// Server mode: time a client has to send its request headers (`SDAPI_HEADER_TIMEOUT_S`, 30).
    pub header_read_timeout: Duration,
    /// Server mode: time in-flight requests get after SIGTERM/Ctrl-C (`SDAPI_SHUTDOWN_GRACE_S`, 30).
    pub shutdown_grace: Duration,
    /// Asynchronous jobs and webhooks (`SDAPI_JOBS_KEEP`, `SDAPI_WEBHOOK_*`, docs/jobs.md).
    pub jobs: crate::jobs::JobSettings,
    /// `SDAPI_PRELOAD`: load the default checkpoint at start; `/ready` answers 503 until a model
    /// is loaded.
    pub preload: bool,
}

/// Lambda's buffered response limit is 6 MB (6,291,456 bytes) for the whole invocation response;
/// lambda_http wraps the body in a JSON envelope (headers, escaped quotes), so keep 256 KiB spare.
pub const LAMBDA_RESPONSE_LIMIT_DEFAULT: usize = 6 * 1024 * 1024 - 256 * 1024;

/// `SDAPI_SAVE_ALL`, `SDAPI_S3_*`, `SDAPI_LAMBDA_MAX_RESPONSE_BYTES`.
#[derive(Debug, Clone, Default)]
pub struct StorageSettings {
    /// Store every generated image, not only requests with `save_images: true`.
    /// `None`: yes when a bucket is configured, no for the local folder (A1111's behaviour).
    pub save_all: Option<bool>,
    pub s3: S3Settings,
    /// Largest JSON body a generation response may have; bigger ones become a 413 naming the stored
    /// keys. Set on Lambda (default [`LAMBDA_RESPONSE_LIMIT_DEFAULT`]) or explicitly.
    pub max_response_bytes: Option<usize>,
    /// `SDAPI_MODELS_S3_URI`: `s3://bucket/prefix` of an A1111-layout models tree synced into the
    /// models directory at start.
    pub models_s3_uri: Option<String>,
    /// With a models bucket: LoRAs and embeddings are fetched on demand into this folder
    /// (`SDAPI_NETWORK_CACHE_DIR`), bounded by `network_limits`, unless `sync_networks_at_start`.
    pub network_cache_dir: PathBuf,
    pub network_limits: crate::storage::network_fetch::FetchLimits,
    /// `SDAPI_SYNC_NETWORKS_AT_START`: copy `Lora/` and `embeddings/` at start like the rest.
    pub sync_networks_at_start: bool,
}

impl StorageSettings {
    pub fn saves_everything(&self, has_bucket: bool) -> bool {
        self.save_all.unwrap_or(has_bucket)
    }
}

fn parse_var<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    var(name)
        .map(|s| s.trim().parse::<T>().map_err(|e| ConfigError::Invalid { name, message: format!("{s:?}: {e}") }))
        .transpose()
}

fn parse_bool(name: &'static str) -> Result<Option<bool>, ConfigError> {
    var(name)
        .map(|s| match s.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(ConfigError::Invalid { name, message: format!("{s:?} is not true/false") }),
        })
        .transpose()
}

impl StorageSettings {
    fn from_env(on_lambda: bool) -> Result<Self, ConfigError> {
        let defaults = S3Settings::default();
        let max_response_bytes = match parse_var::<usize>("SDAPI_LAMBDA_MAX_RESPONSE_BYTES")? {
            Some(n) => Some(n),
            None if on_lambda => Some(LAMBDA_RESPONSE_LIMIT_DEFAULT),
            None => None,
        };
        Ok(Self {
            save_all: parse_bool("SDAPI_SAVE_ALL")?,
            s3: S3Settings {
                force_path_style: parse_bool("SDAPI_S3_FORCE_PATH_STYLE")?.unwrap_or(false),
                max_attempts: parse_var("SDAPI_S3_MAX_ATTEMPTS")?.unwrap_or(defaults.max_attempts),
                operation_timeout: parse_var::<f64>("SDAPI_S3_TIMEOUT_S")?
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(Duration::from_secs_f64)
                    .unwrap_or(defaults.operation_timeout),
            },
            max_response_bytes,
            models_s3_uri: var("SDAPI_MODELS_S3_URI"),
            network_cache_dir: var("SDAPI_NETWORK_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("sdapi-networks")),
            network_limits: FetchLimits {
                max_lora_bytes: positive_env(
                    "SDAPI_NETWORK_MAX_MB",
                    (FetchLimits::default().max_lora_bytes >> 20) as usize,
                )? as u64
                    * 1024
                    * 1024,
                cache_bytes: positive_env(
                    "SDAPI_NETWORK_CACHE_MB",
                    (FetchLimits::default().cache_bytes >> 20) as usize,
                )? as u64
                    * 1024
                    * 1024,
            },
            sync_networks_at_start: parse_bool("SDAPI_SYNC_NETWORKS_AT_START")?.unwrap_or(false),
        })
    }
}

fn jobs_from_env(async_enabled: bool) -> Result<crate::jobs::JobSettings, ConfigError> {
    use crate::jobs::{JobSettings, webhook::WebhookSettings};
    let defaults = JobSettings::default();
    let hooks = WebhookSettings::default();
    let secret = match var("SDAPI_WEBHOOK_SECRET") {
        Some(text) => Some(WebhookSettings::parse_secret(&text).ok_or(ConfigError::Invalid {
            name: "SDAPI_WEBHOOK_SECRET",
            message: "not a whsec_<base64> secret".into(),
        })?),
        None => None,
    };
    Ok(JobSettings {
        async_enabled,
        queue_url: var("SDAPI_JOBS_QUEUE_URL"),
        keep: positive_env("SDAPI_JOBS_KEEP", defaults.keep)?,
        max_webhook_bytes: positive_env("SDAPI_WEBHOOK_MAX_KB", defaults.max_webhook_bytes / 1024)? * 1024,
        webhooks: WebhookSettings {
            secret,
            allow_private: parse_bool("SDAPI_WEBHOOK_ALLOW_PRIVATE")?.unwrap_or(false),
            attempts: positive_env("SDAPI_WEBHOOK_ATTEMPTS", hooks.attempts as usize)? as u32,
            backoff: parse_var::<f64>("SDAPI_WEBHOOK_BACKOFF_S")?
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .unwrap_or(hooks.backoff),
            timeout: parse_var::<f64>("SDAPI_WEBHOOK_TIMEOUT_S")?
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64)
                .unwrap_or(hooks.timeout),
        },
    })
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `user:pass,user2:pass2` as A1111's `--api-auth` (split on `,` then on the first `:`).
pub fn parse_api_auth(spec: &str) -> Result<Vec<(String, String)>, ConfigError> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            pair.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())).ok_or_else(|| ConfigError::Invalid {
                name: "SDAPI_API_AUTH",
                message: format!("expected user:pass, got {pair:?}"),
            })
        })
        .collect()
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let models_dir = match var("SDAPI_MODELS_DIR") {
            Some(d) => PathBuf::from(d),
            // Fall back to the bundled tiny model so `cargo run` works in a fresh clone.
            None if PathBuf::from("models").is_dir() => PathBuf::from("models"),
            None => PathBuf::from("samples/models"),
        };
        let listen_s = var("SDAPI_LISTEN").unwrap_or_else(|| "127.0.0.1:7860".into());
        let listen = listen_s.parse().map_err(|e| ConfigError::Invalid {
            name: "SDAPI_LISTEN",
            message: format!("{listen_s:?} is not host:port ({e})"),
        })?;
        let api_auth = match var("SDAPI_API_AUTH") {
            Some(s) => parse_api_auth(&s)?,
            None => Vec::new(),
        };
        let max_body_mb = match var("SDAPI_MAX_BODY_MB") {
            Some(s) => s
                .parse::<usize>()
                .map_err(|e| ConfigError::Invalid { name: "SDAPI_MAX_BODY_MB", message: format!("{s:?}: {e}") })?,
            None => 64,
        };
        let styles_file = var("SDAPI_STYLES_FILE").map(PathBuf::from).unwrap_or_else(|| models_dir.join("styles.csv"));
        Ok(Self {
            header_read_timeout: Duration::from_secs(positive_env("SDAPI_HEADER_TIMEOUT_S", 30)? as u64),
            shutdown_grace: Duration::from_secs(positive_env("SDAPI_SHUTDOWN_GRACE_S", 30)? as u64),
            jobs: jobs_from_env(std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none())?,
            preload: parse_bool("SDAPI_PRELOAD")?.unwrap_or(false),
            styles_file,
            models_dir,
            checkpoint: var("SDAPI_CHECKPOINT"),
            device: var("SDAPI_DEVICE").unwrap_or_else(|| "cpu".into()),
            dtype: var("SDAPI_DTYPE"),
            listen,
            api_auth,
            output_dir: var("SDAPI_OUTPUT_DIR").map(PathBuf::from).unwrap_or_else(|| "outputs".into()),
            output_bucket: var("SDAPI_OUTPUT_BUCKET"),
            output_prefix: var("SDAPI_OUTPUT_PREFIX").unwrap_or_default(),
            max_body_bytes: max_body_mb * 1024 * 1024,
            max_header_bytes: positive_env("SDAPI_MAX_HEADER_KB", DEFAULT_MAX_HEADER_KB)? * 1024,
            max_queue: positive_env("SDAPI_MAX_QUEUE", DEFAULT_MAX_QUEUE)?,
            batch_max_images: positive_env("SDAPI_BATCH_MAX_IMAGES", 1)?,
            storage: StorageSettings::from_env(std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some())?,
            limits: RequestLimits {
                max_prompt_chars: positive_env("SDAPI_MAX_PROMPT_CHARS", RequestLimits::default().max_prompt_chars)?,
                max_prompt_chunks: positive_env("SDAPI_MAX_PROMPT_CHUNKS", RequestLimits::default().max_prompt_chunks)?,
                max_batch_megapixels: positive_env(
                    "SDAPI_MAX_BATCH_MEGAPIXELS",
                    RequestLimits::default().max_batch_megapixels,
                )?,
                max_request_megapixel_steps: positive_env(
                    "SDAPI_MAX_MEGAPIXEL_STEPS",
                    RequestLimits::default().max_request_megapixel_steps,
                )?,
            },
        })
    }
}

/// `SDAPI_MAX_QUEUE` when unset.
pub const DEFAULT_MAX_QUEUE: usize = 256;

/// `SDAPI_MAX_HEADER_KB` when unset: far above what browsers and A1111 clients send (a few kB).
pub const DEFAULT_MAX_HEADER_KB: usize = 64;

/// A positive integer from the environment, or `default` when unset.
fn positive_env(name: &'static str, default: usize) -> Result<usize, ConfigError> {
    match std::env::var(name) {
        Err(_) => Ok(default),
        Ok(s) => s
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| ConfigError::Invalid { name, message: format!("{s:?} is not a positive integer") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_auth_splits_like_a1111() {
        let v = parse_api_auth("a:b, c:d:e").unwrap();
        assert_eq!(v, vec![("a".into(), "b".into()), ("c".into(), "d:e".into())]);
        assert!(parse_api_auth("nocolon").is_err());
    }
}
