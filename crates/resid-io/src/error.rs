//! Typed errors whose messages name the file (and tensor) and the problem.

use std::path::PathBuf;

/// Result with [`IoError`].
pub type Result<T> = std::result::Result<T, IoError>;

/// Everything that can go wrong reading or writing a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {reason}")]
    BadHeader { path: PathBuf, reason: String },
    #[error("{path}: tensor '{tensor}': {reason}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("{path}: tensor '{tensor}' has dtype {dtype}, which resid does not read (supported: F32, F16, BF16, F64)")]
    UnsupportedDtype {
        path: PathBuf,
        tensor: String,
        dtype: String,
    },
    #[error("{path}: no model.safetensors or model.safetensors.index.json in this folder")]
    NoCheckpoint { path: PathBuf },
    #[error("{path}: shard index: {reason}")]
    BadIndex { path: PathBuf, reason: String },
    #[error("tensor '{tensor}': shape {base_shape:?} in base {base} but {trained_shape:?} in trained {trained}")]
    ShapeMismatch {
        tensor: String,
        base: PathBuf,
        base_shape: Vec<usize>,
        trained: PathBuf,
        trained_shape: Vec<usize>,
    },
    #[error("{path}: layout file: {reason}")]
    BadLayout { path: PathBuf, reason: String },
}

impl IoError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IoError::Io {
            path: path.into(),
            source,
        }
    }
}
