//! Configuration from the environment (the README's configuration table is the contract).

use std::net::SocketAddr;
use std::path::PathBuf;

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
    pub listen: SocketAddr,
    /// `user:pass` pairs for HTTP Basic on `/sdapi/*`.
    pub api_auth: Vec<(String, String)>,
    pub output_dir: PathBuf,
    pub output_bucket: Option<String>,
    pub output_prefix: String,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
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
            pair.split_once(':').map(|(u, p)| (u.to_string(), p.to_string())).ok_or_else(|| {
                ConfigError::Invalid { name: "SDAPI_API_AUTH", message: format!("expected user:pass, got {pair:?}") }
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
            Some(s) => s.parse::<usize>().map_err(|e| ConfigError::Invalid {
                name: "SDAPI_MAX_BODY_MB",
                message: format!("{s:?}: {e}"),
            })?,
            None => 64,
        };
        Ok(Self {
            models_dir,
            checkpoint: var("SDAPI_CHECKPOINT"),
            device: var("SDAPI_DEVICE").unwrap_or_else(|| "cpu".into()),
            listen,
            api_auth,
            output_dir: var("SDAPI_OUTPUT_DIR").map(PathBuf::from).unwrap_or_else(|| "outputs".into()),
            output_bucket: var("SDAPI_OUTPUT_BUCKET"),
            output_prefix: var("SDAPI_OUTPUT_PREFIX").unwrap_or_default(),
            max_body_bytes: max_body_mb * 1024 * 1024,
        })
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
