//! The writer's coders, behind one interface: [`TensorCoder`] codes a batch
//! of tensors; [`lossless::Lossless`] (XOR byte planes, FORMAT.md 3.2) and
//! [`lossy::Lossy`] (low rank + sparse remainder, 3.3) implement it, so the
//! pipeline does not branch on the mode.

pub mod lossless;
pub mod lossy;

use resid_io::Checkpoint;

use crate::error::Result;

/// One coded block before it is placed in the file.
#[derive(Clone, Debug)]
pub struct CodedBlock {
    pub bytes: Vec<u8>,
    pub n: u64,
    pub bits: f64,
}

/// A trained tensor and the base tensor it is coded against.
#[derive(Clone, Debug)]
pub struct Pairing {
    /// Index in the trained checkpoint.
    pub ti: usize,
    /// Index in the base checkpoint of the tensor of the same name and shape.
    pub bi: Option<usize>,
    /// Whether it is coded lossily (a float pair without NaN/Inf, in a lossy pack).
    pub lossy: bool,
}

/// How one tensor was coded.
pub enum Coded {
    Same,
    Planes { xor: bool, blocks: Vec<CodedBlock> },
    Lossy(Box<lossy::LossyCoded>),
}

impl Coded {
    /// Every block, in the tensor's block numbering.
    pub fn blocks(&self) -> Vec<&CodedBlock> {
        match self {
            Coded::Same => vec![],
            Coded::Planes { blocks, .. } => blocks.iter().collect(),
            Coded::Lossy(lc) => lc
                .factors
                .iter()
                .chain(&lc.remainder)
                .chain(&lc.escapes)
                .collect(),
        }
    }
}

/// A coded tensor and what it reached, for the file's stats.
pub struct CodedTensor {
    pub coded: Coded,
    /// Squared error of the rebuilt weights (0 when bit-exact).
    pub err_sumsq: f64,
    /// Squared norm of the trained weights (measured in lossy packs only).
    pub weight_sumsq: f64,
}

/// Codes a batch of tensors (in order; the bytes do not depend on threads).
pub trait TensorCoder: Sync {
    fn code_batch(
        &self,
        base: &Checkpoint,
        trained: &Checkpoint,
        items: &[Pairing],
    ) -> Vec<Result<CodedTensor>>;
}
