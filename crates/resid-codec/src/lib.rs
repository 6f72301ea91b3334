//! resid-codec: the residual file.
//!
//! Lossless: XOR of same-dtype bit patterns of trained and base, split into
//! byte planes, each rANS-coded ([`lossless`], [`rans`]). Lossy: per tensor a
//! low-rank part plus a sparse, dead-zone-quantized remainder, chosen by
//! rate-distortion at one global quantizer step ([`lossy`]). The container
//! ([`format`]) is specified in the repository's `FORMAT.md`.
//!
//! Entry points: [`pack`], [`unpack`], [`inspect`]; [`baselines`] for the
//! published delta methods measured in the same harness.

pub mod baselines;
pub mod error;
pub mod format;
pub mod lossless;
pub mod lossy;
pub mod pack;
pub mod rans;

pub use error::{CodecError, Result};
pub use format::{Header, ResidFile};
pub use pack::{
    decode_tensor, inspect, pack, pack_with_progress, unpack, unpack_with_progress, InspectReport,
    Mode, PackOptions, PackReport, UnpackReport,
};
