//! Checkpoints in, checkpoints out: safetensors files (single or sharded),
//! read memory-mapped as f32 into reused buffers; tensor names mapped to
//! layer, component and role; base and trained tensors paired by name; and
//! atomic writes, so a failed run never leaves a half-written file; repo ids
//! found offline in the local Hugging Face cache.

pub mod atomic;
pub mod checkpoint;
pub mod dtype;
pub mod error;
pub mod header;
pub mod hub;
pub mod layout;
pub mod memory;
pub mod pairing;
pub mod readahead;
pub mod synth;
pub mod write;

pub use checkpoint::{Checkpoint, TensorEntry};
pub use dtype::Dtype;
pub use error::{Classify, ErrorClass, IoError, Result};
pub use layout::{Component, Layout, TensorMeta};
pub use pairing::{pair, pair_all, Mismatched, Pairing, Resized};
pub use readahead::{with_readahead, Ahead, ReadAhead};
