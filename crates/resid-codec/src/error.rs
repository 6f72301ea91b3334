//! Errors that name the file, the tensor or block, and the problem.

use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, CodecError>;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error(transparent)]
    Io(#[from] resid_io::IoError),
    #[error("{path}: {source}")]
    Os {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    File { path: PathBuf, what: String },
    #[error("{path}: tensor '{tensor}': {what}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        what: String,
    },
    #[error("{0}")]
    Usage(String),
}

impl CodecError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CodecError::Os {
            path: path.into(),
            source,
        }
    }
    pub fn file(path: &Path, what: impl Into<String>) -> Self {
        CodecError::File {
            path: path.into(),
            what: what.into(),
        }
    }
    pub fn tensor(path: &Path, tensor: &str, what: impl Into<String>) -> Self {
        CodecError::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            what: what.into(),
        }
    }
}
