//! `verify`: every check a rebuild makes — header rules, every block
//! checksum, the base fingerprints, each bit-exact tensor's trained checksum —
//! and, given the original checkpoint, that each bit-exact tensor equals it;
//! writing nothing.

use std::path::Path;

use serde::Serialize;

use resid_io::Checkpoint;

use crate::container::FileMode;
use crate::decode::tensor::{span_batches, SpanDecoder};
use crate::decode::ResidFile;
use crate::error::{CodecError, Result};

/// What a verification checked.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    pub file: String,
    pub version: u32,
    pub mode: FileMode,
    pub tensors: usize,
    /// Bytes rebuilt (and dropped).
    pub bytes: u64,
    /// Tensors rebuilt bit-exact, each matching its recorded trained checksum.
    pub bit_exact: usize,
    /// Tensors rebuilt approximately (lossy).
    pub lossy: usize,
    /// Shards rebuilt byte-identical to the original file (sha256 checked; v2 lossless).
    pub original_files: usize,
    /// Stored non-tensor files decoded and checked (v2).
    pub stored_files: usize,
    /// The comparison with the original checkpoint, when given.
    pub against: Option<AgainstReport>,
}

/// A rebuild compared with the original trained checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct AgainstReport {
    pub checkpoint: String,
    /// Bit-exact tensors found byte-identical in it.
    pub identical: usize,
    /// Relative Frobenius error of the lossy tensors against it (0 when none).
    pub lossy_rel_error: f64,
}

/// Verifies the residual file at `resid` against `base` (and the original
/// trained checkpoint `against`), decoding every tensor in batches of about
/// `batch_bytes`; `progress(bytes)` as tensors are checked.
pub fn verify(
    base: &Checkpoint,
    resid: &Path,
    against: Option<&Checkpoint>,
    batch_bytes: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<VerifyReport> {
    let rf = ResidFile::open(resid)?;
    let h = &rf.header;
    let mut bytes = 0u64;
    let mut bit_exact = 0;
    let mut identical = 0;
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    let (mut got, mut want) = (Vec::new(), Vec::new());
    let against_folder = against.and_then(super::folder::model_folder);
    for f in &h.files {
        // Streamed and hash-checked, never held whole.
        crate::decode::files::decode_file_into(&rf, f, &mut std::io::sink(), resid)?;
        progress(f.size);
        if let Some(dir) = &against_folder {
            let p = dir.join(&f.path);
            // The stored bytes' sha256 was checked above: equal hashes, equal files.
            if crate::decode::files::sha256_of_file(&p)? != f.sha256 {
                return Err(CodecError::AgainstDiffers {
                    path: rf.path.clone(),
                    tensor: format!("(stored file {})", f.path),
                    against: p,
                });
            }
        }
    }
    // FORMAT.md 6: a lossless shard with its original header rebuilds to the
    // original file, whose sha256 the header records.
    let mut hashers: Vec<Option<(sha2::Sha256, String)>> = h
        .trained
        .shards
        .iter()
        .map(|s| {
            let o = s.original.as_ref()?;
            let want = o.sha256.clone().filter(|_| h.mode == FileMode::Lossless)?;
            let mut d = <sha2::Sha256 as sha2::Digest>::new();
            sha2::Digest::update(&mut d, (o.header.len() as u64).to_le_bytes());
            sha2::Digest::update(&mut d, o.header.as_bytes());
            Some((d, want))
        })
        .collect();
    // Spans of at most a batch, as unpack rebuilds them: memory follows the
    // budget whatever the header declares.
    let mut dec = SpanDecoder::default();
    for spans in span_batches(h, batch_bytes as u64) {
        for (sp, out) in spans.iter().zip(dec.decode(&rf, base, &spans)) {
            let out = out?;
            let t = &h.tensors[sp.ti];
            let last = sp.end == t.nbytes();
            if let Some((d, _)) = &mut hashers[t.shard as usize] {
                sha2::Digest::update(d, &out);
            }
            bytes += out.len() as u64;
            progress(out.len() as u64);
            let exact = t.trained_xxh3.is_some();
            bit_exact += (exact && last) as usize;
            let Some(ck) = against else { continue };
            let Some(orig) = ck.get(&t.name) else {
                return Err(CodecError::AgainstLacksTensor {
                    path: rf.path.clone(),
                    tensor: t.name.clone(),
                    against: ck.path().into(),
                });
            };
            let differs = || CodecError::AgainstDiffers {
                path: rf.path.clone(),
                tensor: t.name.clone(),
                against: ck.file_of(orig).into(),
            };
            let theirs = ck.bytes(orig);
            if exact {
                if orig.dtype_name != t.dtype.name()
                    || theirs.len() as u64 != t.nbytes()
                    || theirs[sp.start as usize..sp.end as usize] != out[..]
                {
                    return Err(differs());
                }
                identical += last as usize;
            } else if let (Some(d), Some(od)) = (t.dtype.float(), orig.dtype) {
                let numel: usize = orig.shape.iter().product();
                if numel as u64 != t.numel() {
                    return Err(differs());
                }
                // The span's elements, in the original's own dtype.
                let (size, osize) = (t.dtype.size() as usize, od.size());
                let (e0, e1) = (sp.start as usize / size, sp.end as usize / size);
                d.to_f32(&out, &mut got);
                od.to_f32(&theirs[e0 * osize..e1 * osize], &mut want);
                for (a, b) in got.iter().zip(&want) {
                    err += ((a - b) as f64).powi(2);
                    norm += (*b as f64).powi(2);
                }
            }
        }
    }
    let mut original_files = 0;
    for (s, hs) in h.trained.shards.iter().zip(hashers) {
        if let Some((d, want)) = hs {
            if crate::decode::files::hex_bytes(&sha2::Digest::finalize(d)) != want {
                return Err(CodecError::OriginalChecksum {
                    path: rf.path.clone(),
                    shard: s.file.clone(),
                });
            }
            original_files += 1;
        }
    }
    Ok(VerifyReport {
        file: resid.display().to_string(),
        version: h.version,
        mode: h.mode,
        tensors: h.tensors.len(),
        bytes,
        bit_exact,
        lossy: h.tensors.len() - bit_exact,
        original_files,
        stored_files: h.files.len(),
        against: against.map(|ck| AgainstReport {
            checkpoint: ck.path().display().to_string(),
            identical,
            lossy_rel_error: if norm > 0.0 { (err / norm).sqrt() } else { 0.0 },
        }),
    })
}
