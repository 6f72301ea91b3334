//! The header rules of FORMAT.md sections 2-4 (everything but block bodies),
//! checked before any block is read, so that every later allocation and
//! slice is bounded by what was checked here (section 5).

use std::collections::HashSet;
use std::path::Path;

use super::files;
use crate::container::*;
use crate::error::{CodecError, EntryRule, HeaderRule, Result};

fn is_hex16(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

/// Elements per chunk `c` from the start of a stream of `n` symbols.
fn chunk_lens(n: u64, c: u64) -> impl Iterator<Item = u64> {
    (0..n.div_ceil(c)).map(move |i| (n - i * c).min(c))
}

/// FORMAT.md 2: "`version` equals the preamble version"; 2.1: "`chunk` a
/// power of two in `[2^12, 2^24]`"; "`rate` ... lossy only" (a lossy file
/// must carry it: it holds the dead zone); 2.2: "`shards` at least 1; `file`
/// a plain file name (no `/`, `\`, `.`, `..`), unique ignoring ASCII case and
/// not the shard index's name"; an unsharded file lists one shard;
/// 2: "at most 1,000,000 tensors"; then each entry ([`validate_entry`]) and
/// 4: "blocks of the whole file do not overlap".
pub fn validate(path: &Path, h: &Header, version: u32, header_offset: u64) -> Result<()> {
    let bad = |rule: HeaderRule| CodecError::InvalidHeader {
        path: path.into(),
        rule,
    };
    if h.version != version {
        return Err(bad(HeaderRule::VersionMismatch {
            header: h.version,
            preamble: version,
        }));
    }
    let c = h.settings.chunk;
    if !c.is_power_of_two() || !(MIN_CHUNK..=MAX_CHUNK).contains(&c) {
        return Err(bad(HeaderRule::Chunk(c)));
    }
    if h.mode == FileMode::Lossy && h.settings.rate.is_none() {
        return Err(bad(HeaderRule::LossyWithoutRate));
    }
    if h.trained.shards.is_empty() {
        return Err(bad(HeaderRule::NoShards));
    }
    if !h.trained.sharded && h.trained.shards.len() > 1 {
        return Err(bad(HeaderRule::ShardsInUnsharded));
    }
    let mut shard_names = HashSet::from([INDEX_FILE.to_string()]);
    for s in &h.trained.shards {
        if s.file.is_empty()
            || s.file.contains('/')
            || s.file.contains('\\')
            || s.file == ".."
            || s.file == "."
        {
            return Err(bad(HeaderRule::ShardName(s.file.clone())));
        }
        if !shard_names.insert(s.file.to_ascii_lowercase()) {
            return Err(bad(HeaderRule::ShardCollision(s.file.clone())));
        }
    }
    if h.tensors.len() > MAX_TENSORS {
        return Err(bad(HeaderRule::TooManyTensors(h.tensors.len())));
    }
    if version < VERSION_FILES {
        let v2 = [
            ("provenance", h.provenance.is_some()),
            ("files", !h.files.is_empty()),
            ("trained.folder", h.trained.folder),
            (
                "trained.shards.original",
                h.trained.shards.iter().any(|s| s.original.is_some()),
            ),
            (
                "tensors.resize",
                h.tensors.iter().any(|t| t.resize.is_some()),
            ),
        ];
        if let Some((field, _)) = v2.iter().find(|x| x.1) {
            return Err(bad(HeaderRule::NotInVersion1(field)));
        }
    }
    files::validate_paths(h).map_err(bad)?;
    let mut names = HashSet::new();
    let mut ranges: Vec<(u64, u64, usize)> = Vec::new();
    for (ti, t) in h.tensors.iter().enumerate() {
        let entry = |rule: EntryRule| CodecError::InvalidEntry {
            path: path.into(),
            tensor: t.name.clone(),
            rule,
        };
        if t.name.is_empty() || !names.insert(t.name.as_str()) {
            return Err(entry(EntryRule::DuplicateName));
        }
        validate_entry(h, t).map_err(entry)?;
        for b in t.blocks() {
            validate_block(b, header_offset).map_err(entry)?;
            ranges.push((b.offset, b.offset + b.len, ti));
        }
    }
    for si in 0..h.trained.shards.len() {
        files::validate_original(h, si).map_err(bad)?;
    }
    for f in &h.files {
        validate_block(&f.block, header_offset).map_err(|rule| CodecError::InvalidEntry {
            path: path.into(),
            tensor: format!("(stored file {})", f.path),
            rule,
        })?;
        ranges.push((f.block.offset, f.block.offset + f.block.len, usize::MAX));
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            let i = if w[1].2 == usize::MAX { w[0].2 } else { w[1].2 };
            return Err(CodecError::InvalidEntry {
                path: path.into(),
                tensor: h
                    .tensors
                    .get(i)
                    .map_or_else(|| "(stored files)".into(), |t| t.name.clone()),
                rule: EntryRule::BlockOverlap,
            });
        }
    }
    Ok(())
}

/// FORMAT.md 4: "`16 <= offset`, `offset + len <= header_offset`", `len >= 1`
/// (every block body has a kind byte), "`xxh3` 16 lower-case hex digits".
fn validate_block(b: &Block, header_offset: u64) -> std::result::Result<(), EntryRule> {
    if b.offset < PREAMBLE
        || b.len == 0
        || b.offset
            .checked_add(b.len)
            .is_none_or(|end| end > header_offset)
    {
        return Err(EntryRule::BlockOutside {
            offset: b.offset,
            len: b.len,
        });
    }
    if !is_hex16(&b.xxh3) {
        return Err(EntryRule::ChecksumText(b.xxh3.clone()));
    }
    Ok(())
}

/// FORMAT.md 2.3: "`shape`: product (numel) fits u64, `numel * size < 2^48`;
/// `shard < trained.shards.len()`; checksums are 16 hex digits", then the
/// rules of the tensor's encoding (3.1-3.3).
fn validate_entry(h: &Header, t: &TensorHeader) -> std::result::Result<(), EntryRule> {
    let size = t.dtype.size();
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n.checked_mul(size).is_some_and(|b| b < 1 << 48))
        .ok_or_else(|| EntryRule::ShapeTooLarge(t.shape.clone()))?;
    if t.shard >= h.trained.shards.len() as u64 {
        return Err(EntryRule::ShardNotListed(t.shard));
    }
    for x in [
        t.base.as_ref().map(|b| b.xxh3.as_str()),
        t.trained_xxh3.as_deref(),
    ]
    .into_iter()
    .flatten()
    {
        if !is_hex16(x) {
            return Err(EntryRule::ChecksumText(x.into()));
        }
    }
    let c = h.settings.chunk;
    // The shape the base must have: the trained one, or with the base's
    // row count when resized (2.6); the encoding codes the shared rows.
    let mut base_shape = t.shape.clone();
    if let Some(r) = &t.resize {
        validate_resize(t, r, numel, c)?;
        base_shape[0] = r.base_rows;
    }
    let shared = t.shared_numel();
    let same_base = t
        .base
        .as_ref()
        .is_some_and(|b| b.dtype == t.dtype && b.shape == base_shape);
    match &t.encoding {
        Encoding::Same => validate_same(t, same_base),
        Encoding::Planes { xor, blocks } => validate_planes(t, same_base, *xor, blocks, shared, c),
        Encoding::Lossy { .. } => validate_lossy(h, t, shared, &base_shape, c),
    }
}

/// FORMAT.md 2.6: "`shape` has at least one dimension; `base` is non-null
/// with `base.shape = [K] + shape[1..]`; `1 <= K` and `K != R`"; "when `R >
/// K`, `added` holds `ceil((R-K)*row / chunk) * s` blocks, chunk-major, each
/// `n` its chunk's length; when `R < K`, `added` is empty".
fn validate_resize(
    t: &TensorHeader,
    r: &Resize,
    numel: u64,
    c: u64,
) -> std::result::Result<(), EntryRule> {
    let bad = |why: &str| Err(EntryRule::Resize(why.into()));
    let Some(&rows) = t.shape.first() else {
        return bad("a 0-D tensor has no rows");
    };
    let Some(b) = &t.base else {
        return bad("no base tensor");
    };
    if r.base_rows == 0 || r.base_rows == rows {
        return bad("base_rows must be at least 1 and differ from the tensor's rows");
    }
    if b.shape.first() != Some(&r.base_rows) || b.shape[1..] != t.shape[1..] {
        return bad("the base's shape is not base_rows rows of the tensor's row shape");
    }
    let row = numel.checked_div(rows).unwrap_or(0);
    let added = rows.saturating_sub(r.base_rows) * row;
    let size = t.dtype.size();
    let lens: Vec<u64> = chunk_lens(added, c).collect();
    if r.added.len() as u64 != lens.len() as u64 * size {
        return bad("added blocks do not match the added rows");
    }
    if let Some(i) = (0..r.added.len()).find(|&i| r.added[i].n != lens[i / size as usize]) {
        return Err(EntryRule::BlockSymbols {
            block: t.encoding.blocks().len() + i,
            got: r.added[i].n,
            want: lens[i / size as usize],
        });
    }
    Ok(())
}

/// FORMAT.md 3.1: "Requires `base` with the same dtype and shape" and a
/// trained checksum. No blocks.
fn validate_same(t: &TensorHeader, same_base: bool) -> std::result::Result<(), EntryRule> {
    if !same_base {
        return Err(EntryRule::SameWithoutBase);
    }
    if t.trained_xxh3.is_none() {
        return Err(EntryRule::SameWithoutChecksum);
    }
    Ok(())
}

/// FORMAT.md 3.2: "`xor` requires `base` with the same dtype and shape;
/// blocks: their count must equal `ceil(numel/chunk) * s` and each block's
/// `n` must equal the chunk's element count"; a trained checksum is required.
fn validate_planes(
    t: &TensorHeader,
    same_base: bool,
    xor: bool,
    blocks: &[Block],
    numel: u64,
    c: u64,
) -> std::result::Result<(), EntryRule> {
    if xor && !same_base {
        return Err(EntryRule::XorWithoutBase);
    }
    if t.trained_xxh3.is_none() {
        return Err(EntryRule::WithoutChecksum);
    }
    let size = t.dtype.size();
    let chunks = numel.div_ceil(c);
    if blocks.len() as u64 != chunks * size {
        return Err(EntryRule::PlaneBlockCount {
            got: blocks.len(),
            chunks,
            planes: size,
        });
    }
    let lens: Vec<u64> = chunk_lens(numel, c).collect();
    for (i, b) in blocks.iter().enumerate() {
        let want = lens[i / size as usize];
        if b.n != want {
            return Err(EntryRule::BlockSymbols {
                block: i,
                got: b.n,
                want,
            });
        }
    }
    Ok(())
}

/// FORMAT.md 3.3: "only in a lossy file; a float `dtype`; `base` with the
/// same shape; `rows * cols == numel`; `0 <= rank <= min(rows, cols, 4096)`;
/// `step > 0` and finite; `factor_step > 0` and finite when `rank > 0`;
/// `recon`: at most 16, finite; factor blocks: the chunks of A (rows x rank)
/// then of B (rank x cols); remainder: empty, or the chunks of rows x cols;
/// escapes: at most as many as symbols".
fn validate_lossy(
    h: &Header,
    t: &TensorHeader,
    numel: u64,
    base_shape: &[u64],
    c: u64,
) -> std::result::Result<(), EntryRule> {
    let Encoding::Lossy {
        rows,
        cols,
        rank,
        factor_step,
        step,
        recon,
        factors,
        remainder,
        escapes,
    } = &t.encoding
    else {
        unreachable!("called for lossy entries")
    };
    if h.mode == FileMode::Lossless {
        return Err(EntryRule::LossyInLosslessFile);
    }
    if t.dtype.float().is_none() {
        return Err(EntryRule::LossyNonFloat(t.dtype.name().into()));
    }
    // Decode never needs a base that is absent, and `numel` is tied to the
    // base file's size even when no remainder blocks are stored (section 5).
    let Some(base) = t.base.as_ref().filter(|b| b.shape == base_shape) else {
        return Err(EntryRule::LossyWithoutBase);
    };
    if base.dtype.float().is_none() {
        return Err(EntryRule::LossyBaseNotFloat(base.dtype.name().into()));
    }
    if rows.checked_mul(*cols) != Some(numel) {
        return Err(EntryRule::RowsCols {
            rows: *rows,
            cols: *cols,
            numel,
        });
    }
    if *rank > (*rows).min(*cols).min(MAX_RANK) {
        return Err(EntryRule::Rank(*rank));
    }
    if !(step.is_finite() && *step > 0.0) {
        return Err(EntryRule::Step(*step));
    }
    if *rank > 0 && !(factor_step.is_finite() && *factor_step > 0.0) {
        return Err(EntryRule::FactorStep(*factor_step));
    }
    if recon.len() > MAX_RECON || recon.iter().any(|r| !r.is_finite()) {
        return Err(EntryRule::ReconLevels);
    }
    let (fa, fb) = (rows * rank, rank * cols);
    let want: Vec<u64> = chunk_lens(fa, c).chain(chunk_lens(fb, c)).collect();
    if factors.len() != want.len() || factors.iter().zip(&want).any(|(b, &w)| b.n != w) {
        return Err(EntryRule::FactorBlocks);
    }
    let rem_ok = remainder.is_empty()
        || (remainder.len() as u64 == numel.div_ceil(c)
            && remainder
                .iter()
                .zip(chunk_lens(numel, c))
                .all(|(b, w)| b.n == w));
    if !rem_ok {
        return Err(EntryRule::RemainderBlocks);
    }
    if let Some(b) = escapes {
        if b.n > fa + fb + numel {
            return Err(EntryRule::TooManyEscapes);
        }
    }
    Ok(())
}
