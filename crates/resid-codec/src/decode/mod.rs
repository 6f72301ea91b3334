//! The reader, section by section of FORMAT.md: each function's doc comment
//! quotes the rule it implements, so the two can be read side by side.
//!
//! [`ResidFile::open`] reads the preamble (1.1), the footer (1.2) and the
//! header (2), and checks every header rule ([`header`]) before anything is
//! decoded; [`block`] decodes one block body (4); [`tensor`] rebuilds one
//! tensor from its blocks (3).

pub mod block;
pub mod files;
pub mod header;
pub mod tensor;

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::container::*;
use crate::error::{CodecError, Result};

/// An opened, validated residual file.
pub struct ResidFile {
    pub path: PathBuf,
    map: Mmap,
    pub header: Header,
    pub file_len: u64,
}

/// The footer's fields (FORMAT.md 1.2).
struct Footer {
    header_offset: u64,
    header_len: u64,
    header_xxh3: u64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// FORMAT.md 1.1: "magic `52 45 53 49 44 00 0D 0A`; anything else: not a
/// residual file. version u32: a larger value than this reader's is refused;
/// 0 is refused as corrupt. flags u32: must be 0." Also 1.2: "`file_len >= 48`
/// is checked first (else truncated)", after the magic when 8 bytes exist.
/// Returns the version.
pub fn read_preamble(path: &Path, bytes: &[u8]) -> Result<u32> {
    let len = bytes.len() as u64;
    if len < 8 || bytes[..8] != MAGIC {
        return Err(CodecError::NotResidual { path: path.into() });
    }
    if len < PREAMBLE + FOOTER {
        return Err(CodecError::Truncated {
            path: path.into(),
            len,
        });
    }
    let version = u32_at(bytes, 8);
    if version > VERSION {
        return Err(CodecError::FutureVersion {
            path: path.into(),
            version,
            supported: VERSION,
        });
    }
    if version == 0 {
        return Err(CodecError::InvalidVersion { path: path.into() });
    }
    let flags = u32_at(bytes, 12);
    if flags != 0 {
        return Err(CodecError::ReservedFlags {
            path: path.into(),
            flags,
        });
    }
    Ok(version)
}

/// FORMAT.md 1.2: "end magic `RESIDEND`; a file without it is reported as
/// truncated. `1 <= header_len <= 256 MiB` and `header_offset + header_len +
/// 32 == file_len`, `16 <= header_offset`."
fn read_footer(path: &Path, bytes: &[u8]) -> Result<Footer> {
    let len = bytes.len() as u64;
    let f = &bytes[(len - FOOTER) as usize..];
    if f[24..32] != END_MAGIC {
        return Err(CodecError::NoEndMarker { path: path.into() });
    }
    let foot = Footer {
        header_offset: u64_at(f, 0),
        header_len: u64_at(f, 8),
        header_xxh3: u64_at(f, 16),
    };
    if foot.header_len == 0 || foot.header_len > MAX_HEADER {
        return Err(CodecError::HeaderLength {
            path: path.into(),
            len: foot.header_len,
            max: MAX_HEADER,
        });
    }
    let end = foot
        .header_offset
        .checked_add(foot.header_len)
        .and_then(|x| x.checked_add(FOOTER));
    if foot.header_offset < PREAMBLE || end != Some(len) {
        return Err(CodecError::HeaderPlacement {
            path: path.into(),
            offset: foot.header_offset,
            len: foot.header_len,
            file_len: len,
        });
    }
    Ok(foot)
}

/// FORMAT.md 1.3: "From version 2 the header bytes are exactly one zstd
/// frame (4.4) whose content is the JSON header, at most 256 MiB."
fn decompress_header(path: &Path, stored: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let bad = |reason: String| CodecError::HeaderDecompress {
        path: path.into(),
        reason,
    };
    block::one_zstd_frame(stored).map_err(bad)?;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(stored)
        .map_err(|e| bad(e.to_string()))?
        .take(MAX_HEADER + 1)
        .read_to_end(&mut out)
        .map_err(|e| bad(e.to_string()))?;
    if out.len() as u64 > MAX_HEADER {
        return Err(bad(format!("expands beyond {MAX_HEADER} bytes")));
    }
    Ok(out)
}

/// FORMAT.md 1.2 and 2: "`header_xxh3`: xxh3 of the header bytes; must
/// match. One JSON object; unknown fields anywhere are refused", then every
/// rule of sections 2-4 ([`header::validate`]).
fn read_header(path: &Path, bytes: &[u8], foot: &Footer, version: u32) -> Result<Header> {
    let start = foot.header_offset as usize;
    let stored = &bytes[start..start + foot.header_len as usize];
    if xxh3(stored) != foot.header_xxh3 {
        return Err(CodecError::HeaderChecksum { path: path.into() });
    }
    let json;
    let text = if version >= VERSION_FILES {
        json = decompress_header(path, stored)?;
        &json[..]
    } else {
        stored
    };
    let h: Header = serde_json::from_slice(text).map_err(|e| CodecError::HeaderSyntax {
        path: path.into(),
        reason: e.to_string(),
    })?;
    header::validate(path, &h, version, foot.header_offset)?;
    Ok(h)
}

impl ResidFile {
    /// Opens and validates a residual file (FORMAT.md sections 1-5).
    pub fn open(path: &Path) -> Result<ResidFile> {
        let file = File::open(path).map_err(|e| CodecError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| CodecError::io(path, e))?.len();
        // SAFETY: read-only map; resid does not modify the file while open.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| CodecError::io(path, e))?;
        let version = read_preamble(path, &map)?;
        let foot = read_footer(path, &map)?;
        let header = read_header(path, &map, &foot, version)?;
        Ok(ResidFile {
            path: path.to_path_buf(),
            map,
            header,
            file_len,
        })
    }

    /// FORMAT.md 4: "`xxh3` is the checksum of the `len` bytes at `offset`
    /// (checked before decoding; a mismatch names the tensor and block index)".
    /// `index` is the block's number within its tensor.
    pub fn block(&self, tensor: &str, index: usize, b: &Block) -> Result<&[u8]> {
        let bytes = &self.map[b.offset as usize..(b.offset + b.len) as usize];
        if hex(xxh3(bytes)) != b.xxh3 {
            return Err(CodecError::BlockChecksum {
                path: self.path.clone(),
                tensor: tensor.into(),
                block: index,
                offset: b.offset,
            });
        }
        Ok(bytes)
    }

    /// The raw bytes of a block that is not a tensor's (a stored file's),
    /// checksum verified.
    pub fn file_block(&self, file: &str, b: &Block) -> Result<&[u8]> {
        let bytes = &self.map[b.offset as usize..(b.offset + b.len) as usize];
        if hex(xxh3(bytes)) != b.xxh3 {
            return Err(CodecError::BlockChecksum {
                path: self.path.clone(),
                tensor: format!("(stored file {file})"),
                block: 0,
                offset: b.offset,
            });
        }
        Ok(bytes)
    }

    /// The index of the tensor called `name`.
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.header.tensors.iter().position(|t| t.name == name)
    }
}
