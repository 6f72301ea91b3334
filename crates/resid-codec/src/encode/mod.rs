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
    /// Index in the base checkpoint of the tensor of the same name and
    /// shape, or of a shape with another first dimension (`rows`).
    pub bi: Option<usize>,
    /// Whether it is coded lossily (a float pair without NaN/Inf, in a lossy pack).
    pub lossy: bool,
    /// Set when the base has another number of rows (FORMAT.md 2.6).
    pub rows: Option<RowSplit>,
}

/// A resized tensor's rows (FORMAT.md 2.6): the first `shared` are coded
/// against the base's first rows, the rest are stored as they are.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowSplit {
    pub base_rows: usize,
    pub shared: usize,
    /// Elements per row.
    pub row: usize,
}

impl Pairing {
    /// Elements the encoding codes: the shared rows, or the whole tensor.
    pub fn shared_numel(&self, trained: &Checkpoint) -> usize {
        match self.rows {
            Some(r) => r.shared * r.row,
            None => trained.tensors()[self.ti].numel(),
        }
    }

    /// The shape the encoding codes.
    pub fn shared_shape(&self, trained: &Checkpoint) -> Vec<usize> {
        let mut s = trained.tensors()[self.ti].shape.clone();
        if let Some(r) = self.rows {
            s[0] = r.shared;
        }
        s
    }

    /// The trained bytes the encoding codes.
    pub fn trained_shared<'a>(&self, trained: &'a Checkpoint) -> &'a [u8] {
        let t = &trained.tensors()[self.ti];
        &trained.bytes(t)[..self.shared_numel(trained) * elem_size(&t.dtype_name)]
    }

    /// The base bytes the shared part is coded against.
    pub fn base_shared<'a>(&self, base: &'a Checkpoint, trained: &Checkpoint) -> Option<&'a [u8]> {
        let b = &base.tensors()[self.bi?];
        let n = self.shared_numel(trained) * elem_size(&b.dtype_name);
        Some(&base.bytes(b)[..n])
    }

    /// The added rows' bytes (empty unless the trained tensor has more rows).
    pub fn added<'a>(&self, trained: &'a Checkpoint) -> &'a [u8] {
        let t = &trained.tensors()[self.ti];
        &trained.bytes(t)[self.trained_shared(trained).len()..]
    }
}

/// Bytes per element of a checkpoint dtype.
pub fn elem_size(dtype: &str) -> usize {
    resid_io::header::dtype_size(dtype).unwrap_or(1) as usize
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
