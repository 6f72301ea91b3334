//! resid-codec: the residual file, specified in the repository's `FORMAT.md`.
//!
//! Lossless: XOR of same-dtype bit patterns of trained and base, split into
//! byte planes, each rANS-coded. Lossy: per tensor a low-rank part plus a
//! sparse, dead-zone-quantized remainder, chosen by rate-distortion at one
//! global quantizer step.
//!
//! - [`container`]: the file's layout and header types, and the writer;
//! - [`decode`]: the reader, one function per FORMAT.md section;
//! - [`encode`]: the lossless and lossy tensor coders, behind one interface;
//! - [`rate`]: the rate model and the step search of lossy packs;
//! - [`pipeline`]: [`pack`] and [`unpack`] — batching, read-ahead, progress;
//! - [`inspect`](mod@inspect): what a file holds;
//! - [`baselines`]: the published delta methods, measured in the same harness.

pub mod baselines;
pub mod container;
pub mod decode;
pub mod encode;
pub mod error;
pub mod inspect;
pub mod pipeline;
pub mod rans;
pub mod rate;

pub use container::Header;
pub use decode::tensor::{decode_named, decode_tensor};
pub use decode::ResidFile;
pub use error::{CodecError, Result};
pub use inspect::{inspect, shard_metadata, InspectReport, InspectTensor};
pub use pipeline::{
    pack, pack_with_progress, unpack, unpack_with, unpack_with_progress, verify, AgainstReport,
    Mode, PackOptions, PackReport, TensorReport, UnpackOptions, UnpackReport, VerifyReport,
};

/// The former module path of [`pack`] and [`unpack`], kept for callers.
pub mod pack {
    pub use crate::pipeline::{
        pack, pack_with_progress, unpack, unpack_with_progress, Mode, PackOptions, PackReport,
        UnpackReport,
    };
}
