//! FORMAT.md 2.2 and 2.4 (version 2): the trained shards' original headers
//! and the model folder's stored files.

use std::collections::HashSet;

use resid_io::header::RawHeader;

use super::ResidFile;
use crate::container::*;
use crate::error::{BlockProblem, CodecError, HeaderRule, PathProblem, Result};

/// sha256 of bytes as 64 lower-case hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex_bytes(&sha2::Sha256::digest(bytes))
}

pub fn hex_bytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn is_sha256(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// FORMAT.md 2.4: "`path` is a relative, `/`-separated path: not empty, not
/// starting with `/`, no empty, `.` or `..` component, no `\`, `:`, NUL or
/// other control character; unique among the files ignoring ASCII case;
/// not a shard's file name, and no file's path is a folder of another's."
pub fn validate_paths(h: &Header) -> std::result::Result<(), HeaderRule> {
    if h.files.len() > MAX_FILES {
        return Err(HeaderRule::TooManyFiles(h.files.len()));
    }
    if !h.files.is_empty() && !h.trained.folder {
        return Err(HeaderRule::FilesWithoutFolder);
    }
    let mut seen: HashSet<String> = HashSet::new();
    let shards: HashSet<String> = h
        .trained
        .shards
        .iter()
        .map(|s| s.file.to_ascii_lowercase())
        .collect();
    let bad = |path: &str, problem: PathProblem| HeaderRule::FilePath {
        path: path.into(),
        problem,
    };
    for f in &h.files {
        let p = f.path.as_str();
        if p.is_empty() {
            return Err(bad(p, PathProblem::Empty));
        }
        if p.starts_with('/') {
            return Err(bad(p, PathProblem::Absolute));
        }
        if p.chars().any(|c| c == '\\' || c == ':' || c.is_control()) {
            return Err(bad(p, PathProblem::BadCharacter));
        }
        for c in p.split('/') {
            if c.is_empty() {
                return Err(bad(p, PathProblem::EmptyComponent));
            }
            if c == "." || c == ".." {
                return Err(bad(p, PathProblem::DotComponent));
            }
        }
        if f.size >= 1 << 48 {
            return Err(bad(p, PathProblem::Size(f.size)));
        }
        if !is_sha256(&f.sha256) {
            return Err(HeaderRule::Sha256Text(f.sha256.clone()));
        }
        let key = p.to_ascii_lowercase();
        if shards.contains(&key) {
            return Err(bad(p, PathProblem::Collision));
        }
        if !seen.insert(key) {
            return Err(bad(p, PathProblem::Duplicate));
        }
    }
    // No stored path may be a folder of another ("a/b" and "a/b/c").
    for f in &h.files {
        let key = f.path.to_ascii_lowercase();
        let mut at = 0;
        while let Some(i) = key[at..].find('/') {
            let dir = &key[..at + i];
            if seen.contains(dir) || shards.contains(dir) {
                return Err(bad(&f.path, PathProblem::Collision));
            }
            at += i + 1;
        }
    }
    Ok(())
}

/// FORMAT.md 2.2: "`original.header` parses as a safetensors header whose
/// tensors are exactly the shard's entries, in the residual header's order
/// sorted by data offset, laid out back to back from offset 0."
pub fn validate_original(h: &Header, shard: usize) -> std::result::Result<(), HeaderRule> {
    let s = &h.trained.shards[shard];
    let Some(o) = &s.original else { return Ok(()) };
    let bad = |reason: String| HeaderRule::OriginalHeader {
        shard: s.file.clone(),
        reason,
    };
    if let Some(sum) = &o.sha256 {
        if !is_sha256(sum) {
            return Err(HeaderRule::Sha256Text(sum.clone()));
        }
    }
    let raw: RawHeader = serde_json::from_str(&o.header).map_err(|e| bad(e.to_string()))?;
    let mut entries: Vec<_> = raw.tensors.iter().collect();
    entries.sort_by_key(|(_, e)| e.data_offsets.0);
    let ours: Vec<&TensorHeader> = h
        .tensors
        .iter()
        .filter(|t| t.shard == shard as u64)
        .collect();
    if ours.len() != entries.len() {
        return Err(bad(format!(
            "{} tensors, the shard has {}",
            entries.len(),
            ours.len()
        )));
    }
    let mut end = 0u64;
    for (t, (name, e)) in ours.iter().zip(entries) {
        if &t.name != name || e.dtype != t.dtype.name() || e.shape != t.shape {
            return Err(bad(format!(
                "tensor '{name}' where the shard has '{}' {} {:?} next",
                t.name, t.dtype, t.shape
            )));
        }
        if e.data_offsets != (end, end + t.nbytes()) {
            return Err(bad(format!("tensor '{name}' is not laid out back to back")));
        }
        end += t.nbytes();
    }
    Ok(())
}

/// FORMAT.md 2.4: a stored file's bytes: its block (a zstd block, 4.4)
/// must decode to exactly `size` bytes whose sha256 is `sha256`. They are
/// streamed into `sink` (`out` names it in I/O errors), so memory stays
/// bounded whatever the file declares; a caller keeps what it wrote only
/// when this returns `Ok`.
pub fn decode_file_into(
    rf: &ResidFile,
    f: &StoredFile,
    sink: &mut dyn std::io::Write,
    out: &std::path::Path,
) -> Result<()> {
    use sha2::Digest;
    use std::io::Read;
    let body = rf.file_block(&f.path, &f.block)?;
    let corrupt = |problem: BlockProblem| CodecError::CorruptFile {
        path: rf.path.clone(),
        file: f.path.clone(),
        problem,
    };
    if body.first() != Some(&crate::rans::KIND_ZSTD) {
        return Err(corrupt(BlockProblem::NotZstd));
    }
    super::block::one_zstd_frame(&body[1..]).map_err(|e| corrupt(BlockProblem::Zstd(e)))?;
    let mut dec = zstd::stream::read::Decoder::new(&body[1..])
        .map_err(|e| corrupt(BlockProblem::Zstd(e.to_string())))?
        .take(f.size + 1);
    let mut sha = sha2::Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = dec
            .read(&mut buf)
            .map_err(|e| corrupt(BlockProblem::Zstd(e.to_string())))?;
        if k == 0 {
            break;
        }
        n += k as u64;
        if n > f.size {
            break;
        }
        sha.update(&buf[..k]);
        sink.write_all(&buf[..k])
            .map_err(|e| CodecError::io(out, e))?;
    }
    if n != f.size {
        return Err(corrupt(BlockProblem::DecodedSize {
            got: n,
            want: f.size,
        }));
    }
    if hex_bytes(&sha.finalize()) != f.sha256 {
        return Err(CodecError::FileChecksum {
            path: rf.path.clone(),
            file: f.path.clone(),
        });
    }
    Ok(())
}

/// sha256 of a file on disk, streamed.
pub fn sha256_of_file(p: &std::path::Path) -> Result<String> {
    use sha2::Digest;
    let mut f = std::fs::File::open(p).map_err(|e| CodecError::io(p, e))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| CodecError::io(p, e))?;
    Ok(hex_bytes(&h.finalize()))
}
