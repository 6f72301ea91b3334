//! Typed errors: each names the adapter file (or the checkpoint) and the problem.

use std::path::PathBuf;

use resid_io::{Classify, ErrorClass, IoError};

/// Result with [`LoraError`].
pub type Result<T> = std::result::Result<T, LoraError>;

/// Everything that can go wrong reading, applying or writing an adapter.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    /// Reading a checkpoint (the base, the trained model, the adapter's tensors).
    #[error(transparent)]
    Io(#[from] IoError),
    /// The operating system failed a read or write of an adapter file.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `adapter_config.json` is not JSON or not a LoRA config resid can read.
    #[error("{path}: adapter config: {reason}")]
    BadConfig { path: PathBuf, reason: String },
    /// An adapter feature resid does not apply, refused by name so that it is
    /// never silently misread (DoRA, LoRA biases, other PEFT methods, ...).
    #[error("{path}: {feature} is not supported: {detail}")]
    Unsupported {
        path: PathBuf,
        feature: &'static str,
        detail: String,
    },
    /// A tensor of the adapter is malformed or has no partner.
    #[error("{path}: tensor '{tensor}': {reason}")]
    BadTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    /// The adapter adapts a module the base does not have, or one of another shape.
    #[error(
        "{adapter}: module '{module}' {reason} in the base {base} (an adapter for another model?)"
    )]
    WrongBase {
        adapter: PathBuf,
        module: String,
        base: PathBuf,
        reason: String,
    },
    /// A request that cannot be met (rank 0).
    #[error("{0}")]
    Usage(String),
}

impl Classify for LoraError {
    fn class(&self) -> ErrorClass {
        match self {
            LoraError::Io(e) => e.class(),
            LoraError::File { .. } => ErrorClass::Io,
            LoraError::BadConfig { .. }
            | LoraError::Unsupported { .. }
            | LoraError::BadTensor { .. } => ErrorClass::BadInput,
            LoraError::WrongBase { .. } => ErrorClass::Mismatch,
            LoraError::Usage(_) => ErrorClass::Usage,
        }
    }
}
