//! Typed errors of the diffusion engine (checkpoint loading and model execution).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: pickle checkpoints (.ckpt/.pt/.pth/.bin) are not supported; use a .safetensors file")]
    PickleNotSupported(PathBuf),
    #[error("{path}: not a valid safetensors file: {message}")]
    InvalidSafetensors { path: PathBuf, message: String },
    #[error("unrecognised checkpoint layout: {0}")]
    UnknownLayout(String),
    #[error("checkpoint is missing tensor `{0}`")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, actual: Vec<usize> },
    #[error("unsupported architecture: {0}")]
    Unsupported(String),
    #[error("invalid model config {path}: {message}")]
    ModelConfig { path: PathBuf, message: String },
    #[error("invalid scheduler config {path}: {message}")]
    SchedulerConfig { path: PathBuf, message: String },
    #[error("tensor error: {0}")]
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for EngineError {
    /// Lift "tensor not found" out of candle's error wrappers so callers get `MissingTensor`.
    fn from(e: candle_core::Error) -> Self {
        if let Some(name) = missing_tensor_name(&e) {
            return EngineError::MissingTensor(name);
        }
        if let Some((name, expected, actual)) = shape_mismatch(&e) {
            return EngineError::ShapeMismatch { name, expected, actual };
        }
        EngineError::Candle(e)
    }
}

/// Prefix of the message the tensor store puts on a weight with an unexpected shape.
pub(crate) const SHAPE_MISMATCH_PREFIX: &str = "shape mismatch for ";

fn shape_mismatch(e: &candle_core::Error) -> Option<(String, Vec<usize>, Vec<usize>)> {
    use candle_core::Error as E;
    match e {
        E::UnexpectedShape { msg, expected, got } => {
            let name = msg.strip_prefix(SHAPE_MISMATCH_PREFIX)?;
            Some((name.to_string(), expected.dims().to_vec(), got.dims().to_vec()))
        }
        E::WithBacktrace { inner, .. } | E::Context { inner, .. } | E::WithPath { inner, .. } => shape_mismatch(inner),
        _ => None,
    }
}

fn missing_tensor_name(e: &candle_core::Error) -> Option<String> {
    use candle_core::Error as E;
    match e {
        E::CannotFindTensor { path } => Some(path.clone()),
        E::WithBacktrace { inner, .. } | E::Context { inner, .. } | E::WithPath { inner, .. } => {
            missing_tensor_name(inner)
        }
        _ => None,
    }
}
