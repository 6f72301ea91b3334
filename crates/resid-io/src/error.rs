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
    /// A PyTorch pickle checkpoint (`pytorch_model.bin`, `.pt`): loading one
    /// runs arbitrary code, so resid refuses it and names the conversion.
    #[error("{path}: a PyTorch pickle checkpoint, which resid does not read (unpickling runs code from the file); convert it to safetensors first, e.g. in Python: transformers.AutoModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)")]
    PickleCheckpoint { path: PathBuf },
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

/// What kind of failure an error is. The CLI's exit code and the Python
/// package's exception class follow from it, so every library error type
/// implements [`Classify`] instead of the CLI guessing from message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request itself is invalid (conflicting or out-of-range settings).
    Usage,
    /// An input is not what it claims to be: malformed checkpoint, NaN where
    /// refused, shapes that do not pair.
    BadInput,
    /// A residual file is damaged, or was made against another base.
    Mismatch,
    /// The operating system failed a read or a write (missing file, full disk).
    Io,
}

impl ErrorClass {
    /// Process exit code (documented in README.md): 2 usage, 3 bad input,
    /// 4 wrong base or damaged file, 5 I/O. 1 stays for anything unclassified.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorClass::Usage => 2,
            ErrorClass::BadInput => 3,
            ErrorClass::Mismatch => 4,
            ErrorClass::Io => 5,
        }
    }
}

/// An error that knows its [`ErrorClass`].
pub trait Classify {
    fn class(&self) -> ErrorClass;
}

impl Classify for IoError {
    fn class(&self) -> ErrorClass {
        match self {
            IoError::Io { .. } => ErrorClass::Io,
            IoError::BadHeader { .. }
            | IoError::BadTensor { .. }
            | IoError::UnsupportedDtype { .. }
            | IoError::NoCheckpoint { .. }
            | IoError::PickleCheckpoint { .. }
            | IoError::BadIndex { .. }
            | IoError::ShapeMismatch { .. }
            | IoError::BadLayout { .. } => ErrorClass::BadInput,
        }
    }
}
