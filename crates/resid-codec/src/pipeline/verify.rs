//! `verify`: every check a rebuild makes — header rules, every block
//! checksum, the base fingerprints, each bit-exact tensor's trained checksum —
//! and, given the original checkpoint, that each bit-exact tensor equals it;
//! writing nothing.

use std::path::Path;

use serde::Serialize;

use resid_io::Checkpoint;

use super::batches;
use crate::container::FileMode;
use crate::decode::tensor::decode_batch;
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
    let sizes: Vec<usize> = h.tensors.iter().map(|t| t.nbytes() as usize).collect();
    let mut bytes = 0u64;
    let mut bit_exact = 0;
    let mut identical = 0;
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    let (mut got, mut want) = (Vec::new(), Vec::new());
    for r in batches(&sizes, batch_bytes) {
        for (ti, out) in r.clone().zip(decode_batch(&rf, base, r)) {
            let out = out?;
            let t = &h.tensors[ti];
            bytes += out.len() as u64;
            progress(out.len() as u64);
            let exact = t.trained_xxh3.is_some();
            bit_exact += exact as usize;
            let Some(ck) = against else { continue };
            let Some(orig) = ck.get(&t.name) else {
                return Err(CodecError::AgainstLacksTensor {
                    path: rf.path.clone(),
                    tensor: t.name.clone(),
                    against: ck.path().into(),
                });
            };
            if exact {
                if ck.bytes(orig) != out.as_slice() || orig.dtype_name != t.dtype.name() {
                    return Err(CodecError::AgainstDiffers {
                        path: rf.path.clone(),
                        tensor: t.name.clone(),
                        against: ck.file_of(orig).into(),
                    });
                }
                identical += 1;
            } else if let Some(d) = t.dtype.float().filter(|_| orig.dtype.is_some()) {
                d.to_f32(&out, &mut got);
                ck.read_f32(orig, &mut want)?;
                if got.len() != want.len() {
                    return Err(CodecError::AgainstDiffers {
                        path: rf.path.clone(),
                        tensor: t.name.clone(),
                        against: ck.file_of(orig).into(),
                    });
                }
                for (a, b) in got.iter().zip(&want) {
                    err += ((a - b) as f64).powi(2);
                    norm += (*b as f64).powi(2);
                }
            }
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
        against: against.map(|ck| AgainstReport {
            checkpoint: ck.path().display().to_string(),
            identical,
            lossy_rel_error: if norm > 0.0 { (err / norm).sqrt() } else { 0.0 },
        }),
    })
}
