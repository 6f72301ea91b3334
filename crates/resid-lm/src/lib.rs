//! resid-lm: the small GPT of resid's reproduction, trained with burn.
//!
//! This is the only crate in the workspace that depends on the ML framework;
//! everything framework-free (corpus, tokenizers, shapes, tensor names) lives
//! in `resid-corpus`. Weights cross the boundary as plain `f32` vectors in
//! torch layout (`[out, in]`), named as `GptConfig::param_specs()` says, so
//! resid's analysis and codec never see a burn type.

pub mod amplitude;
pub mod backend;
pub mod checkpoint;
pub mod cpu;
pub mod data;
pub mod engine;
pub mod eval;
pub mod fused;
pub mod init;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod train;

pub use checkpoint::{load_checkpoint, save_checkpoint, Checkpoint, CheckpointMeta};
pub use engine::EngineKind;
pub use eval::{eval_weights, EvalReport};
pub use init::{initial_weights, mimetic_weights, random_weights, InitKind};
pub use model::Gpt;
pub use train::{train, Progress, TrainOptions, TrainSummary};

/// A set of named weights in torch layout, in `param_specs()` order:
/// `(name, shape, values)`.
pub type NamedTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Errors of the small-LM side.
#[derive(Debug, thiserror::Error)]
pub enum LmError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("{0}")]
    Shape(String),
    #[error("{0}")]
    Config(String),
}

/// `File` wraps a failed read or write of a checkpoint file (its cause is
/// kept as text only, so it counts as I/O).
impl resid_io::Classify for LmError {
    fn class(&self) -> resid_io::ErrorClass {
        match self {
            LmError::File { .. } => resid_io::ErrorClass::Io,
            LmError::Shape(_) => resid_io::ErrorClass::BadInput,
            LmError::Config(_) => resid_io::ErrorClass::Usage,
        }
    }
}

pub type Result<T> = std::result::Result<T, LmError>;
