//! The container of FORMAT.md section 1-2: preamble, blocks, header, footer;
//! the header's types (mode, encoding, element type and rate kind as typed
//! enums) and [`ResidWriter`], which streams blocks to an atomic file. The
//! reader is in [`crate::decode`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use resid_io::atomic::AtomicFile;

use crate::error::Result;

/// Preamble magic, `"RESID\0\r\n"` (FORMAT.md 1.1).
pub const MAGIC: [u8; 8] = *b"RESID\0\r\n";
/// Footer end magic (FORMAT.md 1.2).
pub const END_MAGIC: [u8; 8] = *b"RESIDEND";
/// The newest format version this build reads and writes.
pub const VERSION: u32 = 2;
/// The first version with a compressed header, files, original headers and provenance.
pub const VERSION_FILES: u32 = 2;
/// The shard index a sharded rebuild writes (FORMAT.md 6).
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Most stored files a header may list.
pub const MAX_FILES: usize = 100_000;
pub const PREAMBLE: u64 = 16;
pub const FOOTER: u64 = 32;
/// Largest header accepted: a lying footer cannot make the reader allocate more.
pub const MAX_HEADER: u64 = 256 << 20;
pub const MAX_TENSORS: usize = 1_000_000;
/// Chunk sizes allowed (elements; powers of two).
pub const MIN_CHUNK: u64 = 1 << 12;
pub const MAX_CHUNK: u64 = 1 << 24;
/// zstd level of the version-2 header: it is small, and read once.
const HEADER_ZSTD_LEVEL: i32 = 19;
/// Largest rank of a lossy tensor's low-rank part.
pub const MAX_RANK: u64 = 4096;
/// Reconstruction levels a lossy tensor may store.
pub const MAX_RECON: usize = 16;

/// xxh3-64 (seed 0) of bytes: every checksum of the format.
pub fn xxh3(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// A checksum as the header writes it: 16 lower-case hex digits.
pub fn hex(h: u64) -> String {
    format!("{h:016x}")
}

/// The 16-byte preamble.
pub fn preamble(version: u32) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&MAGIC);
    p[8..12].copy_from_slice(&version.to_le_bytes());
    p
}

/// The 32-byte footer.
pub fn footer(header_offset: u64, header: &[u8]) -> [u8; 32] {
    let mut f = [0u8; 32];
    f[0..8].copy_from_slice(&header_offset.to_le_bytes());
    f[8..16].copy_from_slice(&(header.len() as u64).to_le_bytes());
    f[16..24].copy_from_slice(&xxh3(header).to_le_bytes());
    f[24..32].copy_from_slice(&END_MAGIC);
    f
}

/// The stored header bytes of a version: JSON, zstd-compressed from version 2
/// (FORMAT.md 1.3).
pub fn encode_header(version: u32, json: &[u8]) -> Vec<u8> {
    if version >= VERSION_FILES {
        zstd::bulk::compress(json, HEADER_ZSTD_LEVEL).expect("zstd in memory")
    } else {
        json.to_vec()
    }
}

/// The header JSON of a residual file's bytes, unchecked: for tools and
/// tests that craft files. `None` when the footer or the frame is unreadable.
pub fn header_json(file: &[u8]) -> Option<Vec<u8>> {
    let n = file.len();
    if n < (PREAMBLE + FOOTER) as usize {
        return None;
    }
    let version = u32::from_le_bytes(file[8..12].try_into().ok()?);
    let f = &file[n - FOOTER as usize..];
    let hoff = u64::from_le_bytes(f[0..8].try_into().ok()?) as usize;
    let hlen = u64::from_le_bytes(f[8..16].try_into().ok()?) as usize;
    let stored = file.get(hoff..hoff.checked_add(hlen)?)?;
    if version >= VERSION_FILES {
        zstd::stream::decode_all(stored).ok()
    } else {
        Some(stored.to_vec())
    }
}

/// A residual file's bytes with its header replaced by `json` (stored as its
/// version requires), the footer and its checksum recomputed.
pub fn replace_header(file: &[u8], json: &[u8]) -> Vec<u8> {
    let n = file.len();
    let version = u32::from_le_bytes(file[8..12].try_into().unwrap());
    let hoff = u64::from_le_bytes(file[n - 32..n - 24].try_into().unwrap()) as usize;
    let text = encode_header(version, json);
    let mut out = file[..hoff].to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(&footer(hoff as u64, &text));
    out
}

/// For tools and tests that craft files: a residual file's preamble and
/// blocks with `bodies` appended as new blocks (its old header dropped, a
/// footer placeholder left for [`replace_header`]), and the new blocks'
/// header entries (`n` and `bits` 0, for the caller to fill in).
pub fn append_blocks(file: &[u8], bodies: &[&[u8]]) -> (Vec<u8>, Vec<Block>) {
    let n = file.len();
    let hoff = u64::from_le_bytes(file[n - 32..n - 24].try_into().unwrap()) as usize;
    let mut out = file[..hoff].to_vec();
    let blocks = bodies
        .iter()
        .map(|b| {
            let offset = out.len() as u64;
            out.extend_from_slice(b);
            Block {
                offset,
                len: b.len() as u64,
                xxh3: hex(xxh3(b)),
                n: 0,
                bits: 0.0,
            }
        })
        .collect();
    let end = out.len() as u64;
    out.extend_from_slice(&footer(end, &[]));
    (out, blocks)
}

/// A safetensors element type (the spelling is the safetensors one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(non_camel_case_types, clippy::upper_case_acronyms)]
pub enum ElementType {
    BOOL,
    U8,
    I8,
    F8_E5M2,
    F8_E4M3,
    F8_E8M0,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    I64,
    U64,
    F64,
}

impl ElementType {
    pub const ALL: [ElementType; 16] = [
        ElementType::BOOL,
        ElementType::U8,
        ElementType::I8,
        ElementType::F8_E5M2,
        ElementType::F8_E4M3,
        ElementType::F8_E8M0,
        ElementType::I16,
        ElementType::U16,
        ElementType::F16,
        ElementType::BF16,
        ElementType::I32,
        ElementType::U32,
        ElementType::F32,
        ElementType::I64,
        ElementType::U64,
        ElementType::F64,
    ];

    /// Bytes per element.
    pub fn size(self) -> u64 {
        resid_io::header::dtype_size(self.name()).expect("every element type has a size")
    }

    /// The safetensors spelling.
    pub fn name(self) -> &'static str {
        use ElementType::*;
        match self {
            BOOL => "BOOL",
            U8 => "U8",
            I8 => "I8",
            F8_E5M2 => "F8_E5M2",
            F8_E4M3 => "F8_E4M3",
            F8_E8M0 => "F8_E8M0",
            I16 => "I16",
            U16 => "U16",
            F16 => "F16",
            BF16 => "BF16",
            I32 => "I32",
            U32 => "U32",
            F32 => "F32",
            I64 => "I64",
            U64 => "U64",
            F64 => "F64",
        }
    }

    pub fn parse(s: &str) -> Option<ElementType> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The float type resid converts to f32 (lossy coding), if this is one.
    pub fn float(self) -> Option<resid_io::Dtype> {
        resid_io::Dtype::parse(self.name())
    }
}

impl std::fmt::Display for ElementType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The header's `format` field: always `"resid"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FormatName {
    #[serde(rename = "resid")]
    Resid,
}

/// Bit-exact or approximate rebuild (header `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileMode {
    Lossless,
    Lossy,
}

impl FileMode {
    pub fn name(self) -> &'static str {
        match self {
            FileMode::Lossless => "lossless",
            FileMode::Lossy => "lossy",
        }
    }
}

impl std::fmt::Display for FileMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// What a lossy file's rate target measured (FORMAT.md 2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateKind {
    BitsPerParam,
    Keep,
    MaxError,
}

impl RateKind {
    pub fn name(self) -> &'static str {
        match self {
            RateKind::BitsPerParam => "bits_per_param",
            RateKind::Keep => "keep",
            RateKind::MaxError => "max_error",
        }
    }
}

impl std::fmt::Display for RateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// A coded block as the header records it (FORMAT.md 4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    pub offset: u64,
    pub len: u64,
    pub xxh3: String,
    /// Symbols it codes.
    pub n: u64,
    /// Shannon entropy of those symbols (bits), informational.
    pub bits: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSettings {
    pub kind: RateKind,
    pub target: f64,
    pub step: f64,
    pub dead_zone: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub chunk: u64,
    pub seed: u64,
    pub threads_independent: bool,
    pub rate: Option<RateSettings>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardInfo {
    pub file: String,
    pub metadata: BTreeMap<String, String>,
    /// Version 2: the trained shard's own safetensors header, kept so that the
    /// rebuilt file is byte-identical (FORMAT.md 2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalHeader>,
}

/// A trained shard's safetensors header, verbatim (FORMAT.md 2.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalHeader {
    /// The header text as stored in the file (padding included).
    pub header: String,
    /// sha256 of the whole original file (lossless files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainedInfo {
    pub sharded: bool,
    pub shards: Vec<ShardInfo>,
    /// Version 2: packed from a model folder, rebuilt as one.
    #[serde(default, skip_serializing_if = "is_false")]
    pub folder: bool,
}

/// A non-tensor file of the trained model folder (FORMAT.md 2.4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredFile {
    /// Relative path inside the folder, `/`-separated.
    pub path: String,
    /// Bytes of the file.
    pub size: u64,
    /// sha256 of the file, 64 lower-case hex digits.
    pub sha256: String,
    /// The file's bytes as a zstd block (FORMAT.md 4.4).
    pub block: Block,
}

/// Where a file came from and what made it (FORMAT.md 2.5).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub resid_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_revision: Option<String>,
}

/// The base tensor a residual tensor was made against (FORMAT.md 2.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseFingerprint {
    pub dtype: ElementType,
    pub shape: Vec<u64>,
    pub xxh3: String,
}

/// How a tensor is coded (FORMAT.md section 3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Encoding {
    Same,
    Planes {
        xor: bool,
        blocks: Vec<Block>,
    },
    Lossy {
        rows: u64,
        cols: u64,
        rank: u64,
        factor_step: f64,
        step: f64,
        recon: Vec<f64>,
        factors: Vec<Block>,
        remainder: Vec<Block>,
        escapes: Option<Block>,
    },
}

impl Encoding {
    /// A short name for reports.
    pub fn label(&self) -> String {
        match self {
            Encoding::Same => "same".into(),
            Encoding::Planes { xor: true, .. } => "xor-planes".into(),
            Encoding::Planes { xor: false, .. } => "planes".into(),
            Encoding::Lossy {
                rank, remainder, ..
            } => {
                let sparse = !remainder.is_empty();
                match (*rank > 0, sparse) {
                    (true, true) => format!("lowrank{rank}+sparse"),
                    (true, false) => format!("lowrank{rank}"),
                    _ => "sparse".into(),
                }
            }
        }
    }

    /// Every block, in the tensor's block numbering (FORMAT.md 3).
    pub fn blocks(&self) -> Vec<&Block> {
        match self {
            Encoding::Same => vec![],
            Encoding::Planes { blocks, .. } => blocks.iter().collect(),
            Encoding::Lossy {
                factors,
                remainder,
                escapes,
                ..
            } => factors
                .iter()
                .chain(remainder.iter())
                .chain(escapes.iter())
                .collect(),
        }
    }
}

/// Version 2: a tensor whose first dimension differs from its base's
/// (FORMAT.md 2.6): the encoding codes the shared rows, `added` the rows
/// beyond the base's as plain byte planes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    /// Rows of the base tensor.
    pub base_rows: u64,
    /// Byte-plane blocks of the added rows (FORMAT.md 3.2 without XOR).
    pub added: Vec<Block>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorHeader {
    pub name: String,
    pub dtype: ElementType,
    pub shape: Vec<u64>,
    pub shard: u64,
    pub base: Option<BaseFingerprint>,
    pub trained_xxh3: Option<String>,
    pub encoding: Encoding,
    /// Version 2: rows shared with a base of another first dimension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<Resize>,
}

impl TensorHeader {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
    /// Bytes of the rebuilt tensor.
    pub fn nbytes(&self) -> u64 {
        self.numel() * self.dtype.size()
    }
    /// The shape the encoding codes: the rows shared with the base when
    /// resized (FORMAT.md 2.6), else the whole shape.
    pub fn shared_shape(&self) -> Vec<u64> {
        let mut s = self.shape.clone();
        if let (Some(r), Some(first)) = (&self.resize, s.first_mut()) {
            *first = (*first).min(r.base_rows);
        }
        s
    }
    /// Elements the encoding codes.
    pub fn shared_numel(&self) -> u64 {
        self.shared_shape().iter().product()
    }
    /// Every block, in the tensor's numbering: the encoding's, then the
    /// added rows' (FORMAT.md 2.3).
    pub fn blocks(&self) -> Vec<&Block> {
        let mut b = self.encoding.blocks();
        if let Some(r) = &self.resize {
            b.extend(&r.added);
        }
        b
    }
}

/// Figures reached, recorded for `inspect` (not used to rebuild).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub params: u64,
    pub trained_bytes: u64,
    pub coded_bytes: u64,
    pub entropy_bytes: f64,
    pub residual_rel_error: f64,
    pub weight_rel_error: f64,
}

/// The header (FORMAT.md section 2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: FormatName,
    pub version: u32,
    pub mode: FileMode,
    pub settings: Settings,
    pub trained: TrainedInfo,
    pub tensors: Vec<TensorHeader>,
    pub stats: Stats,
    /// Version 2: what made the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// Version 2: the model folder's non-tensor files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<StoredFile>,
}

/// A residual file being written: blocks first, header and footer on finish.
pub struct ResidWriter {
    file: AtomicFile,
    pos: u64,
}

impl ResidWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let mut file = AtomicFile::create(path)?;
        file.write_all(&preamble(VERSION))?;
        Ok(ResidWriter {
            file,
            pos: PREAMBLE,
        })
    }

    /// Appends one coded block.
    pub fn write_block(&mut self, bytes: &[u8], n: u64, bits: f64) -> Result<Block> {
        let b = Block {
            offset: self.pos,
            len: bytes.len() as u64,
            xxh3: hex(xxh3(bytes)),
            n,
            // Whole bits: the header stays short, the figure informational.
            bits: bits.round(),
        };
        self.file.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(b)
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Writes header and footer and renames the file into place. From
    /// version 2 the header is zstd-compressed (FORMAT.md 1.3).
    pub fn finish(mut self, header: &Header) -> Result<u64> {
        let json = serde_json::to_vec(header).expect("header serialises");
        let text = encode_header(header.version, &json);
        self.file.write_all(&text)?;
        self.file.write_all(&footer(self.pos, &text))?;
        let total = self.pos + text.len() as u64 + FOOTER;
        self.file.commit()?;
        Ok(total)
    }
}
