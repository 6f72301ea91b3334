//! The container of FORMAT.md: preamble, blocks, JSON header, footer.
//! [`ResidWriter`] streams blocks to an atomic file; [`ResidFile`] opens one
//! and checks every length, offset and checksum before anything is used.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use resid_io::atomic::AtomicFile;

use crate::error::{CodecError, Result};

pub const MAGIC: [u8; 8] = *b"RESID\0\r\n";
pub const END_MAGIC: [u8; 8] = *b"RESIDEND";
pub const VERSION: u32 = 1;
pub const PREAMBLE: u64 = 16;
pub const FOOTER: u64 = 32;
pub const MAX_HEADER: u64 = 256 << 20;
pub const MAX_TENSORS: usize = 1_000_000;

/// xxh3-64 of bytes.
pub fn xxh3(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

/// Formats a checksum as 16 hex digits.
pub fn hex(h: u64) -> String {
    format!("{h:016x}")
}

/// A coded block as the header records it.
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
    pub kind: String,
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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainedInfo {
    pub sharded: bool,
    pub shards: Vec<ShardInfo>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseFingerprint {
    pub dtype: String,
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

    /// Every block, in file order of the tensor.
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorHeader {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    pub shard: u64,
    pub base: Option<BaseFingerprint>,
    pub trained_xxh3: Option<String>,
    pub encoding: Encoding,
}

impl TensorHeader {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub mode: String,
    pub settings: Settings,
    pub trained: TrainedInfo,
    pub tensors: Vec<TensorHeader>,
    pub stats: Stats,
}

/// A residual file being written: blocks first, header and footer on finish.
pub struct ResidWriter {
    file: AtomicFile,
    pos: u64,
}

impl ResidWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let mut file = AtomicFile::create(path)?;
        let mut pre = Vec::with_capacity(16);
        pre.extend_from_slice(&MAGIC);
        pre.extend_from_slice(&VERSION.to_le_bytes());
        pre.extend_from_slice(&0u32.to_le_bytes());
        file.write_all(&pre)?;
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
            bits,
        };
        self.file.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(b)
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Writes header and footer and renames the file into place.
    pub fn finish(mut self, header: &Header) -> Result<u64> {
        let text = serde_json::to_vec(header).expect("header serialises");
        let mut foot = Vec::with_capacity(32);
        foot.extend_from_slice(&self.pos.to_le_bytes());
        foot.extend_from_slice(&(text.len() as u64).to_le_bytes());
        foot.extend_from_slice(&xxh3(&text).to_le_bytes());
        foot.extend_from_slice(&END_MAGIC);
        self.file.write_all(&text)?;
        self.file.write_all(&foot)?;
        let total = self.pos + text.len() as u64 + FOOTER;
        self.file.commit()?;
        Ok(total)
    }
}

/// An opened, validated residual file.
pub struct ResidFile {
    pub path: PathBuf,
    map: Mmap,
    pub header: Header,
    pub file_len: u64,
}

pub(crate) fn element_size(dtype: &str) -> Option<u64> {
    resid_io::header::dtype_size(dtype)
}

impl ResidFile {
    /// Opens and validates a residual file (FORMAT.md sections 1-5).
    pub fn open(path: &Path) -> Result<ResidFile> {
        let bad = |what: String| CodecError::file(path, what);
        let file = File::open(path).map_err(|e| CodecError::io(path, e))?;
        let len = file.metadata().map_err(|e| CodecError::io(path, e))?.len();
        // SAFETY: read-only map; the file is not modified by resid while open.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| CodecError::io(path, e))?;
        if len < PREAMBLE.min(8) || (len >= 8 && map[..8] != MAGIC) {
            return Err(bad("not a residual file (bad magic)".into()));
        }
        if len < PREAMBLE + FOOTER {
            return Err(bad(format!(
                "truncated: {len} bytes, shorter than preamble and footer"
            )));
        }
        let version = u32::from_le_bytes(map[8..12].try_into().unwrap());
        if version > VERSION {
            return Err(bad(format!(
                "format version {version} is newer than this resid reads ({VERSION})"
            )));
        }
        if version == 0 {
            return Err(bad("format version 0 is invalid (corrupt preamble)".into()));
        }
        let flags = u32::from_le_bytes(map[12..16].try_into().unwrap());
        if flags != 0 {
            return Err(bad(format!("reserved flags {flags:#x} are not 0")));
        }
        let f = &map[(len - FOOTER) as usize..];
        if f[24..32] != END_MAGIC {
            return Err(bad(
                "truncated or damaged: no end marker in the footer".into()
            ));
        }
        let hoff = u64::from_le_bytes(f[0..8].try_into().unwrap());
        let hlen = u64::from_le_bytes(f[8..16].try_into().unwrap());
        let hsum = u64::from_le_bytes(f[16..24].try_into().unwrap());
        if hlen == 0 || hlen > MAX_HEADER {
            return Err(bad(format!(
                "header length {hlen} outside 1..={MAX_HEADER}"
            )));
        }
        if hoff < PREAMBLE
            || hoff.checked_add(hlen).and_then(|x| x.checked_add(FOOTER)) != Some(len)
        {
            return Err(bad(format!(
                "header at {hoff} of {hlen} bytes does not end at the footer of the {len}-byte file (truncated?)"
            )));
        }
        let htext = &map[hoff as usize..(hoff + hlen) as usize];
        if xxh3(htext) != hsum {
            return Err(bad("header checksum mismatch (file altered)".into()));
        }
        let header: Header = serde_json::from_slice(htext)
            .map_err(|e| bad(format!("header is not a valid residual header: {e}")))?;
        validate(&header, version, hoff).map_err(bad)?;
        Ok(ResidFile {
            path: path.to_path_buf(),
            map,
            header,
            file_len: len,
        })
    }

    /// A block's bytes, checksum verified. `what` names it in errors.
    pub fn block(&self, tensor: &str, what: &str, b: &Block) -> Result<&[u8]> {
        let bytes = &self.map[b.offset as usize..(b.offset + b.len) as usize];
        if hex(xxh3(bytes)) != b.xxh3 {
            return Err(CodecError::tensor(
                &self.path,
                tensor,
                format!(
                    "{what} at offset {} fails its checksum (file altered or damaged)",
                    b.offset
                ),
            ));
        }
        Ok(bytes)
    }
}

fn is_hex16(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// The header checks of FORMAT.md (everything but block contents).
fn validate(h: &Header, version: u32, hoff: u64) -> std::result::Result<(), String> {
    if h.format != "resid" {
        return Err(format!("header format '{}' is not 'resid'", h.format));
    }
    if h.version != version {
        return Err(format!(
            "header version {} differs from preamble version {version}",
            h.version
        ));
    }
    let lossless = match h.mode.as_str() {
        "lossless" => true,
        "lossy" => false,
        m => return Err(format!("unknown mode '{m}'")),
    };
    let c = h.settings.chunk;
    if !c.is_power_of_two() || !(1 << 12..=1 << 24).contains(&c) {
        return Err(format!("chunk {c} is not a power of two in [2^12, 2^24]"));
    }
    if h.trained.shards.is_empty() {
        return Err("no trained shards listed".into());
    }
    for s in &h.trained.shards {
        if s.file.is_empty() || s.file.contains('/') || s.file.contains('\\') || s.file == ".." {
            return Err(format!("shard name '{}' is not a plain file name", s.file));
        }
    }
    if h.tensors.len() > MAX_TENSORS {
        return Err(format!("{} tensors (limit {MAX_TENSORS})", h.tensors.len()));
    }
    let mut names = std::collections::HashSet::new();
    let mut ranges: Vec<(u64, u64, usize)> = Vec::new();
    for (ti, t) in h.tensors.iter().enumerate() {
        let e = |m: String| format!("tensor '{}': {m}", t.name);
        if t.name.is_empty() || !names.insert(t.name.as_str()) {
            return Err(e("empty or duplicate name".into()));
        }
        let size =
            element_size(&t.dtype).ok_or_else(|| e(format!("unknown dtype '{}'", t.dtype)))?;
        let numel = t
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n.checked_mul(size).is_some_and(|b| b < 1 << 48))
            .ok_or_else(|| e(format!("shape {:?} too large", t.shape)))?;
        if t.shard >= h.trained.shards.len() as u64 {
            return Err(e(format!("shard {} not listed", t.shard)));
        }
        for x in [
            t.base.as_ref().map(|b| b.xxh3.as_str()),
            t.trained_xxh3.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            if !is_hex16(x) {
                return Err(e(format!("checksum '{x}' is not 16 hex digits")));
            }
        }
        if let Some(b) = &t.base {
            if element_size(&b.dtype).is_none() {
                return Err(e(format!("unknown base dtype '{}'", b.dtype)));
            }
        }
        let chunks = numel.div_ceil(c);
        let chunk_n = |i: u64| (numel - i * c).min(c);
        match &t.encoding {
            Encoding::Same => {
                let ok = t
                    .base
                    .as_ref()
                    .is_some_and(|b| b.dtype == t.dtype && b.shape == t.shape);
                if !ok {
                    return Err(e(
                        "'same' without a base tensor of the same dtype and shape".into(),
                    ));
                }
                if t.trained_xxh3.is_none() {
                    return Err(e("'same' without trained checksum".into()));
                }
            }
            Encoding::Planes { xor, blocks } => {
                if *xor
                    && !t
                        .base
                        .as_ref()
                        .is_some_and(|b| b.dtype == t.dtype && b.shape == t.shape)
                {
                    return Err(e(
                        "xor planes without a base tensor of the same dtype and shape".into(),
                    ));
                }
                if t.trained_xxh3.is_none() {
                    return Err(e("lossless tensor without trained checksum".into()));
                }
                if blocks.len() as u64 != chunks * size {
                    return Err(e(format!(
                        "{} blocks, but {chunks} chunks x {size} planes",
                        blocks.len()
                    )));
                }
                for (i, b) in blocks.iter().enumerate() {
                    if b.n != chunk_n(i as u64 / size) {
                        return Err(e(format!(
                            "block {i} codes {} symbols, expected {}",
                            b.n,
                            chunk_n(i as u64 / size)
                        )));
                    }
                }
            }
            Encoding::Lossy {
                rows,
                cols,
                rank,
                factor_step,
                step,
                recon,
                factors,
                remainder,
                escapes,
            } => {
                if lossless {
                    return Err(e("lossy tensor in a lossless file".into()));
                }
                if resid_io::Dtype::parse(&t.dtype).is_none() {
                    return Err(e(format!("lossy coding of non-float dtype {}", t.dtype)));
                }
                // Pack codes a tensor lossily only against a base tensor of
                // the same shape; requiring it here keeps decode from
                // needing one that is absent, and ties `numel` to the base
                // file's size when no remainder blocks are stored (section 5).
                if t.base.as_ref().is_none_or(|b| b.shape != t.shape) {
                    return Err(e(
                        "lossy coding without a base tensor of the same shape".into()
                    ));
                }
                if rows.checked_mul(*cols) != Some(numel) {
                    return Err(e(format!("rows {rows} x cols {cols} != {numel} elements")));
                }
                if *rank > (*rows).min(*cols).min(4096) {
                    return Err(e(format!("rank {rank} too large")));
                }
                if !(step.is_finite() && *step > 0.0) {
                    return Err(e(format!("step {step} not positive")));
                }
                if *rank > 0 && !(factor_step.is_finite() && *factor_step > 0.0) {
                    return Err(e(format!("factor step {factor_step} not positive")));
                }
                if recon.len() > 16 || recon.iter().any(|r| !r.is_finite()) {
                    return Err(e("bad reconstruction levels".into()));
                }
                let fa = rows * rank;
                let fb = rank * cols;
                let want: Vec<u64> = (0..fa.div_ceil(c))
                    .map(|i| (fa - i * c).min(c))
                    .chain((0..fb.div_ceil(c)).map(|i| (fb - i * c).min(c)))
                    .collect();
                if factors.len() != want.len() || factors.iter().zip(&want).any(|(b, &w)| b.n != w)
                {
                    return Err(e("factor blocks do not match rank x shape".into()));
                }
                let rem_ok = remainder.is_empty()
                    || (remainder.len() as u64 == chunks
                        && remainder
                            .iter()
                            .enumerate()
                            .all(|(i, b)| b.n == chunk_n(i as u64)));
                if !rem_ok {
                    return Err(e("remainder blocks do not match the shape".into()));
                }
                if let Some(b) = escapes {
                    if b.n > fa + fb + numel {
                        return Err(e("more escapes than symbols".into()));
                    }
                }
            }
        }
        for b in t.encoding.blocks() {
            if b.offset < PREAMBLE
                || b.offset.checked_add(b.len).is_none_or(|end| end > hoff)
                || b.len == 0
            {
                return Err(e(format!(
                    "block at offset {} of {} bytes lies outside the data section",
                    b.offset, b.len
                )));
            }
            if !is_hex16(&b.xxh3) {
                return Err(e("bad block checksum field".into()));
            }
            ranges.push((b.offset, b.offset + b.len, ti));
        }
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!(
                "tensor '{}': a block overlaps another block",
                h.tensors[w[1].2].name
            ));
        }
    }
    Ok(())
}
