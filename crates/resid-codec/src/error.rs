//! Typed errors. Each names the file (and tensor, block) and says what failed,
//! in words a user can act on; none names a command-line flag (the CLI adds
//! such hints). [`Classify`] maps each to the exit code / exception class.

use std::path::PathBuf;

use resid_io::{Classify, ErrorClass};

pub type Result<T> = std::result::Result<T, CodecError>;

/// Everything that can go wrong packing, opening, decoding or rebuilding.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A checkpoint (base, trained or rebuilt) could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] resid_io::IoError),
    /// The operating system failed a read or a write of `path`.
    #[error("{path}: {source}")]
    Os {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file does not start with the residual-file magic (FORMAT.md 1.1).
    #[error("{path}: not a residual file (bad magic)")]
    NotResidual { path: PathBuf },
    /// Shorter than a preamble and a footer (FORMAT.md 1.2).
    #[error("{path}: truncated: {len} bytes, shorter than preamble and footer")]
    Truncated { path: PathBuf, len: u64 },
    /// The footer lacks its end magic: cut short or overwritten.
    #[error("{path}: truncated or damaged: no end marker in the footer")]
    NoEndMarker { path: PathBuf },
    /// Written by a newer resid.
    #[error("{path}: format version {version} is newer than this resid reads ({supported})")]
    FutureVersion {
        path: PathBuf,
        version: u32,
        supported: u32,
    },
    /// Version 0 is never written.
    #[error("{path}: format version 0 is invalid (corrupt preamble)")]
    InvalidVersion { path: PathBuf },
    /// Reserved preamble flags are set.
    #[error("{path}: reserved flags {flags:#x} are not 0")]
    ReservedFlags { path: PathBuf, flags: u32 },
    /// The footer's header length is 0 or above the limit.
    #[error("{path}: header length {len} outside 1..={max}")]
    HeaderLength { path: PathBuf, len: u64, max: u64 },
    /// The header does not end where the footer begins.
    #[error("{path}: header at {offset} of {len} bytes does not end at the footer of the {file_len}-byte file (truncated?)")]
    HeaderPlacement {
        path: PathBuf,
        offset: u64,
        len: u64,
        file_len: u64,
    },
    /// The header's bytes fail the footer's checksum.
    #[error("{path}: header checksum mismatch (file altered)")]
    HeaderChecksum { path: PathBuf },
    /// A version-2 header is not a valid zstd frame, or expands beyond the limit.
    #[error("{path}: compressed header does not decode: {reason}")]
    HeaderDecompress { path: PathBuf, reason: String },
    /// The header is not JSON of the specified shape (unknown field, wrong type...).
    #[error("{path}: header is not a valid residual header: {reason}")]
    HeaderSyntax { path: PathBuf, reason: String },
    /// The header breaks a rule of FORMAT.md section 2 that concerns the whole file.
    #[error("{path}: {rule}")]
    InvalidHeader { path: PathBuf, rule: HeaderRule },
    /// A tensor's header entry breaks a rule of FORMAT.md sections 2.3-4.
    #[error("{path}: tensor '{tensor}': {rule}")]
    InvalidEntry {
        path: PathBuf,
        tensor: String,
        rule: EntryRule,
    },
    /// A block's bytes fail their checksum.
    #[error("{path}: tensor '{tensor}': block {block} at offset {offset} fails its checksum (file altered or damaged)")]
    BlockChecksum {
        path: PathBuf,
        tensor: String,
        block: usize,
        offset: u64,
    },
    /// A block passed its checksum but its body breaks FORMAT.md section 3.4 or 4.
    #[error("{path}: tensor '{tensor}': block {block}: {problem}")]
    CorruptBlock {
        path: PathBuf,
        tensor: String,
        block: usize,
        problem: BlockProblem,
    },
    /// A stored file's block passed its checksum but does not decode to its size.
    #[error("{path}: stored file '{file}': {problem}")]
    CorruptFile {
        path: PathBuf,
        file: String,
        problem: BlockProblem,
    },
    /// A stored file decodes to bytes whose sha256 differs from the recorded one.
    #[error("{path}: stored file '{file}' fails its sha256 (file altered or damaged)")]
    FileChecksum { path: PathBuf, file: String },
    /// A rebuilt shard kept with its original header fails the original's sha256.
    #[error("{path}: rebuilt {shard} differs from the original file (sha256 mismatch: file altered, or another base)")]
    OriginalChecksum { path: PathBuf, shard: String },
    /// The rebuild would not fit the output's file system (checked before
    /// anything is written).
    #[error("{path}: the rebuild needs {need} bytes but the file system of {fs} has {free} bytes free; nothing was written")]
    NoSpace {
        path: PathBuf,
        need: u64,
        free: u64,
        fs: PathBuf,
    },
    /// The output folder already holds a file unpack would have to replace.
    #[error("{path}: already exists; unpack does not overwrite files it did not create")]
    OutputExists { path: PathBuf },
    /// Something that is not a regular file or folder lies on a path inside
    /// the output folder: writing there would leave the folder (a symlink)
    /// or feed a device, pipe or socket, so it is refused whatever the
    /// caller allows.
    #[error("{path}: a {kind} is in the way; unpack never writes through a symlink or into a device, pipe or socket inside its output folder")]
    OutputInTheWay { path: PathBuf, kind: SpecialFile },
    /// A selection of tensors to rebuild matched none of the file's.
    #[error("{path}: no tensor of this residual file matches the selection")]
    NoTensorSelected { path: PathBuf },
    /// The base lacks a tensor the residual was made against.
    #[error("{path}: tensor '{tensor}': the base {base} has no such tensor; this residual was made against another base")]
    BaseLacksTensor {
        path: PathBuf,
        tensor: String,
        base: PathBuf,
    },
    /// The base's tensor has another dtype or shape than the one recorded.
    #[error("{path}: tensor '{tensor}': base tensor is {got} but the residual was made against {want} (another base)")]
    BaseTensorDiffers {
        path: PathBuf,
        tensor: String,
        got: Box<TensorLayout>,
        want: Box<TensorLayout>,
    },
    /// The base's tensor bytes differ from the recorded fingerprint.
    #[error("{path}: tensor '{tensor}': fingerprint mismatch: the base tensor in {base_file} differs from the one this residual was made against (another base?)")]
    BaseFingerprint {
        path: PathBuf,
        tensor: String,
        base_file: PathBuf,
    },
    /// A lossy tensor's rebuilt value is NaN or infinite (FORMAT.md 3.5):
    /// IEEE 754 does not fix such a result's bits, so it is refused.
    #[error("{path}: tensor '{tensor}': lossy rebuild of element {index} is not finite (file damaged or crafted)")]
    NonFiniteRebuild {
        path: PathBuf,
        tensor: String,
        index: u64,
    },
    /// A part of a tensor that has to be held whole (a tensor asked for
    /// alone, or a lossy tensor's rows) needs more memory than the machine
    /// has available: refused before allocating, rather than aborting.
    #[error("{path}: tensor '{tensor}': holding {bytes} bytes of it whole needs more than the {available} bytes of memory available")]
    TensorTooLarge {
        path: PathBuf,
        tensor: String,
        bytes: u64,
        available: u64,
    },
    /// The rebuilt tensor fails the trained checksum.
    #[error("{path}: tensor '{tensor}': rebuilt bytes fail the trained checksum (file altered, or another base)")]
    TrainedChecksum { path: PathBuf, tensor: String },
    /// Verification: the original checkpoint lacks a tensor the file rebuilds.
    #[error("{path}: tensor '{tensor}': the checkpoint {against} has no such tensor")]
    AgainstLacksTensor {
        path: PathBuf,
        tensor: String,
        against: PathBuf,
    },
    /// Verification: a bit-exact tensor differs from the original checkpoint's.
    #[error("{path}: tensor '{tensor}': rebuilt bytes differ from those in {against}")]
    AgainstDiffers {
        path: PathBuf,
        tensor: String,
        against: PathBuf,
    },
    /// A tensor holds NaN or Inf (in the trained or the base checkpoint) and
    /// non-finite values were not allowed.
    #[error("{path}: tensor '{tensor}': holds NaN or Inf values (in trained or base), refused unless non-finite values are allowed (they are then stored losslessly)")]
    NonFinite { path: PathBuf, tensor: String },
    /// A pack setting is out of range.
    #[error("{0}")]
    Settings(SettingsProblem),
}

/// A tensor's dtype and shape, as errors show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorLayout {
    pub dtype: String,
    pub shape: Vec<u64>,
}

impl std::fmt::Display for TensorLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.dtype, self.shape)
    }
}

/// Whole-file header rules (FORMAT.md 2, 2.1, 2.2).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HeaderRule {
    #[error("header version {header} differs from preamble version {preamble}")]
    VersionMismatch { header: u32, preamble: u32 },
    #[error("chunk {0} is not a power of two in [2^12, 2^24]")]
    Chunk(u64),
    #[error("lossy file without rate settings")]
    LossyWithoutRate,
    #[error("no trained shards listed")]
    NoShards,
    #[error("shard name '{0}' is not a plain file name")]
    ShardName(String),
    #[error("several shards in an unsharded file")]
    ShardsInUnsharded,
    #[error("shard '{0}' names the same file as another shard or the shard index (names compared ignoring ASCII case)")]
    ShardCollision(String),
    #[error("{0} tensors (limit {max})", max = crate::container::MAX_TENSORS)]
    TooManyTensors(usize),
    #[error("field '{0}' is not part of format version 1")]
    NotInVersion1(&'static str),
    #[error("shard '{shard}': original header: {reason}")]
    OriginalHeader { shard: String, reason: String },
    #[error("stored file '{path}': {problem}")]
    FilePath { path: String, problem: PathProblem },
    #[error("stored files in a file not packed from a folder")]
    FilesWithoutFolder,
    #[error("{0} stored files (limit {max})", max = crate::container::MAX_FILES)]
    TooManyFiles(usize),
    #[error("sha256 '{0}' is not 64 lower-case hex digits")]
    Sha256Text(String),
}

/// Why a stored file's name is refused (FORMAT.md 2.4): it must stay inside
/// the output folder and name one file only.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PathProblem {
    #[error("empty name")]
    Empty,
    #[error("absolute path")]
    Absolute,
    #[error("'..' or '.' component")]
    DotComponent,
    #[error("empty component")]
    EmptyComponent,
    #[error("backslash, NUL, ':' or control character in the name")]
    BadCharacter,
    #[error("names the same file as another entry (names compared ignoring ASCII case)")]
    Duplicate,
    #[error("names a checkpoint shard or a folder holding a stored file")]
    Collision,
    #[error("size {0} too large")]
    Size(u64),
}

/// What lies in the way of a path unpack writes inside its output folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpecialFile {
    #[error("symlink")]
    Symlink,
    #[error("device, pipe or socket")]
    Device,
}

/// Rules of one tensor's entry (FORMAT.md 2.3, 3, 4).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntryRule {
    #[error("empty or duplicate name")]
    DuplicateName,
    #[error("shape {0:?} too large")]
    ShapeTooLarge(Vec<u64>),
    #[error("shard {0} not listed")]
    ShardNotListed(u64),
    #[error("checksum '{0}' is not 16 hex digits")]
    ChecksumText(String),
    #[error("'same' without a base tensor of the same dtype and shape")]
    SameWithoutBase,
    #[error("'same' without trained checksum")]
    SameWithoutChecksum,
    #[error("xor planes without a base tensor of the same dtype and shape")]
    XorWithoutBase,
    #[error("lossless tensor without trained checksum")]
    WithoutChecksum,
    #[error("{got} blocks, but {chunks} chunks x {planes} planes")]
    PlaneBlockCount {
        got: usize,
        chunks: u64,
        planes: u64,
    },
    #[error("block {block} codes {got} symbols, expected {want}")]
    BlockSymbols { block: usize, got: u64, want: u64 },
    #[error("lossy tensor in a lossless file")]
    LossyInLosslessFile,
    #[error("lossy coding of non-float dtype {0}")]
    LossyNonFloat(String),
    #[error("lossy coding without a base tensor of the same shape")]
    LossyWithoutBase,
    #[error("lossy coding against a base of non-float dtype {0}")]
    LossyBaseNotFloat(String),
    #[error("rows {rows} x cols {cols} != {numel} elements")]
    RowsCols { rows: u64, cols: u64, numel: u64 },
    #[error("rank {0} too large")]
    Rank(u64),
    #[error("step {0} not positive")]
    Step(f64),
    #[error("factor step {0} not positive")]
    FactorStep(f64),
    #[error("bad reconstruction levels")]
    ReconLevels,
    #[error("factor blocks do not match rank x shape")]
    FactorBlocks,
    #[error("remainder blocks do not match the shape")]
    RemainderBlocks,
    #[error("more escapes than symbols")]
    TooManyEscapes,
    #[error("block at offset {offset} of {len} bytes lies outside the data section")]
    BlockOutside { offset: u64, len: u64 },
    #[error("a block overlaps another block")]
    BlockOverlap,
    #[error("resize: {0}")]
    Resize(String),
}

/// What is wrong inside a block whose checksum matched (FORMAT.md 3.4, 4).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BlockProblem {
    #[error("empty block")]
    Empty,
    #[error("constant block of {0} bytes (must be 2)")]
    ConstantLength(usize),
    #[error("unknown block kind {0}")]
    UnknownKind(u8),
    #[error("rANS block shorter than its table")]
    ShortTable,
    #[error("rANS table of {0} symbols (must be 2..=256)")]
    TableSymbols(usize),
    #[error("rANS data is not whole 16-bit words or lacks the states")]
    Words,
    #[error("rANS stream does not end where its states say (corrupt block)")]
    StreamEnd,
    #[error("escape block is not a zstd block")]
    EscapesNotZstd,
    #[error("escape block: {0}")]
    EscapesZstd(String),
    #[error("escape varint longer than 64 bits")]
    EscapeVarint,
    #[error("escape block holds {got} values, header says {want}")]
    EscapeCount { got: usize, want: u64 },
    #[error("more escape symbols than escaped values")]
    MissingEscape,
    #[error("escaped level out of range")]
    EscapeRange,
    #[error("unused escaped values (corrupt)")]
    UnusedEscapes,
    #[error("not a zstd block")]
    NotZstd,
    #[error("zstd frame: {0}")]
    Zstd(String),
    #[error("decodes to {got} bytes, the header says {want}")]
    DecodedSize { got: u64, want: u64 },
}

/// A pack setting out of its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsProblem {
    #[error("chunk {0} is not a power of two in [2^12, 2^24]")]
    Chunk(usize),
    #[error("bits per parameter {0} must be > 0")]
    BitsPerParam(f64),
    #[error("kept fraction {0} must be in (0, 1]")]
    Keep(f64),
    #[error("maximum error {0} must be in (0, 1)")]
    MaxError(f64),
}

impl CodecError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        CodecError::Os {
            path: path.into(),
            source,
        }
    }
}

impl Classify for CodecError {
    fn class(&self) -> ErrorClass {
        use CodecError::*;
        match self {
            Checkpoint(e) => e.class(),
            Os { .. } => ErrorClass::Io,
            OutputExists { .. } | OutputInTheWay { .. } | NoTensorSelected { .. } => {
                ErrorClass::Usage
            }
            NoSpace { .. } | TensorTooLarge { .. } => ErrorClass::Io,
            NotResidual { .. } | NonFinite { .. } => ErrorClass::BadInput,
            Settings(_) => ErrorClass::Usage,
            Truncated { .. }
            | NoEndMarker { .. }
            | FutureVersion { .. }
            | InvalidVersion { .. }
            | ReservedFlags { .. }
            | HeaderLength { .. }
            | HeaderPlacement { .. }
            | HeaderChecksum { .. }
            | HeaderSyntax { .. }
            | HeaderDecompress { .. }
            | CorruptFile { .. }
            | FileChecksum { .. }
            | OriginalChecksum { .. }
            | InvalidHeader { .. }
            | InvalidEntry { .. }
            | BlockChecksum { .. }
            | CorruptBlock { .. }
            | BaseLacksTensor { .. }
            | BaseTensorDiffers { .. }
            | BaseFingerprint { .. }
            | TrainedChecksum { .. }
            | NonFiniteRebuild { .. }
            | AgainstLacksTensor { .. }
            | AgainstDiffers { .. } => ErrorClass::Mismatch,
        }
    }
}
