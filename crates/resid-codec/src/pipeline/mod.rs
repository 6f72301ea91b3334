//! Checkpoints in, residual files out, and back: batching (tensors go
//! through in batches of about `batch_bytes` of trained data, or one larger
//! tensor), read-ahead of the next batch while one is coded, and progress.
//! Within a batch, chunks (lossless) or tensors (lossy) are coded in parallel
//! and written in order, so memory stays bounded and the bytes do not depend
//! on the thread count.

mod folder;
mod pack;
mod unpack;
mod verify;

pub use pack::{pack, pack_with_progress, PackReport, TensorReport};
pub use unpack::{
    output_bytes, unpack, unpack_with, unpack_with_progress, UnpackOptions, UnpackReport,
};
pub use verify::{verify, AgainstReport, VerifyReport};

use resid_io::Checkpoint;

use crate::encode::Pairing;

/// What to keep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Lossless,
    BitsPerParam(f64),
    Keep(f64),
    MaxError(f64),
}

impl Mode {
    /// The rate target of a lossy mode.
    pub fn target(self) -> Option<crate::rate::Target> {
        use crate::rate::Target;
        match self {
            Mode::Lossless => None,
            Mode::BitsPerParam(x) => Some(Target::BitsPerParam(x)),
            Mode::Keep(x) => Some(Target::Keep(x)),
            Mode::MaxError(x) => Some(Target::MaxError(x)),
        }
    }
}

#[derive(Clone, Debug)]
pub struct PackOptions {
    pub mode: Mode,
    pub seed: u64,
    /// Elements per chunk (power of two in [2^12, 2^24]).
    pub chunk: usize,
    /// Store tensors holding NaN/Inf (losslessly) instead of refusing them.
    pub allow_nonfinite: bool,
    /// Trained bytes per batch of tensors coded together.
    pub batch_bytes: usize,
    pub dead_zone: f64,
    /// Store the trained model folder's non-tensor files (config, tokenizer,
    /// module folders...) when the trained checkpoint is a folder.
    pub files: bool,
    /// Where base and trained came from, when known (recorded as given; the
    /// resid version is filled in).
    pub provenance: crate::container::Provenance,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            mode: Mode::Lossless,
            seed: 0,
            chunk: 1 << 18,
            allow_nonfinite: false,
            batch_bytes: 64 << 20,
            dead_zone: crate::encode::lossy::DEAD_ZONE,
            files: true,
            provenance: crate::container::Provenance::default(),
        }
    }
}

/// Consecutive ranges of items whose sizes sum to at most `limit` (or one
/// larger item).
pub(crate) fn batches(sizes: &[usize], limit: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut s = 0;
    let mut acc = 0;
    for (i, &b) in sizes.iter().enumerate() {
        if i > s && acc + b > limit {
            out.push(s..i);
            s = i;
            acc = 0;
        }
        acc += b;
    }
    if s < sizes.len() {
        out.push(s..sizes.len());
    }
    out
}

/// Drops a pairing's mapped pages on both sides once read, so resident
/// memory follows the batch in flight rather than the bytes read so far.
pub(crate) fn release(base: &Checkpoint, trained: &Checkpoint, it: &Pairing) {
    trained.release(&trained.tensors()[it.ti]);
    if let Some(bi) = it.bi {
        base.release(&base.tensors()[bi]);
    }
}

#[cfg(test)]
mod tests {
    use super::batches;

    #[test]
    fn batches_cover_every_item_once_within_the_limit() {
        let sizes = [5, 5, 20, 1, 1, 1, 9];
        let b = batches(&sizes, 10);
        assert_eq!(b, vec![0..2, 2..3, 3..6, 6..7]);
        assert!(batches(&[], 10).is_empty());
    }
}
