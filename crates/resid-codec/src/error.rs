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
    /// A tensor holds NaN or Inf and storing them was not allowed.
    #[error("{path}: tensor '{tensor}': holds NaN or Inf values (in trained or base); pass --allow-nonfinite to store them losslessly")]
    NonFinite { path: PathBuf, tensor: String },
    #[error("{0}")]
    Usage(String),
}

/// Damage and another base are told apart only in the message today: both
/// are a residual file that does not rebuild against the given base.
impl resid_io::Classify for CodecError {
    fn class(&self) -> resid_io::ErrorClass {
        use resid_io::ErrorClass;
        match self {
            CodecError::Io(e) => e.class(),
            CodecError::Os { .. } => ErrorClass::Io,
            CodecError::File { .. } | CodecError::Tensor { .. } => ErrorClass::Mismatch,
            CodecError::NonFinite { .. } => ErrorClass::BadInput,
            CodecError::Usage(_) => ErrorClass::Usage,
        }
    }
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
