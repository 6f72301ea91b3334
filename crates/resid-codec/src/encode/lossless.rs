//! Lossless coding (FORMAT.md 3.2): XOR of same-dtype bit patterns, split
//! into byte planes, each plane of each chunk rANS-coded with its own static
//! model.

use rayon::prelude::*;

use resid_io::Checkpoint;

use super::{Coded, CodedBlock, CodedTensor, Pairing, TensorCoder};
use crate::error::Result;
use crate::rans;

/// Codes chunk `ci` of a tensor (`size`-byte elements): one block per plane.
pub fn encode_chunk(
    trained: &[u8],
    base: Option<&[u8]>,
    size: usize,
    chunk: usize,
    ci: usize,
) -> Vec<CodedBlock> {
    let numel = trained.len() / size;
    let s0 = ci * chunk;
    let n = (numel - s0).min(chunk);
    let t = &trained[s0 * size..(s0 + n) * size];
    let mut planes = vec![0u8; n * size];
    match (base, size) {
        (Some(b), 2) => {
            let b = &b[s0 * 2..(s0 + n) * 2];
            let (p0, p1) = planes.split_at_mut(n);
            for i in 0..n {
                p0[i] = t[2 * i] ^ b[2 * i];
                p1[i] = t[2 * i + 1] ^ b[2 * i + 1];
            }
        }
        (Some(b), 4) => {
            let b = &b[s0 * 4..(s0 + n) * 4];
            let (p0, rest) = planes.split_at_mut(n);
            let (p1, rest) = rest.split_at_mut(n);
            let (p2, p3) = rest.split_at_mut(n);
            for i in 0..n {
                p0[i] = t[4 * i] ^ b[4 * i];
                p1[i] = t[4 * i + 1] ^ b[4 * i + 1];
                p2[i] = t[4 * i + 2] ^ b[4 * i + 2];
                p3[i] = t[4 * i + 3] ^ b[4 * i + 3];
            }
        }
        _ => {
            let b = base.map(|b| &b[s0 * size..(s0 + n) * size]);
            for i in 0..n {
                for p in 0..size {
                    let x = t[i * size + p] ^ b.map_or(0, |b| b[i * size + p]);
                    planes[p * n + i] = x;
                }
            }
        }
    }
    (0..size)
        .map(|p| {
            let mut bytes = Vec::new();
            let bits = rans::encode_block(&planes[p * n..(p + 1) * n], &mut bytes);
            CodedBlock {
                bytes,
                n: n as u64,
                bits,
            }
        })
        .collect()
}

/// Whether raw bytes of a float dtype hold a NaN or an infinity. Blocks of
/// 256 elements are OR-reduced without an early exit, which vectorises; the
/// answer is checked once per block.
pub fn has_nonfinite(dtype: &str, bytes: &[u8]) -> bool {
    fn any_all_ones<const N: usize>(bytes: &[u8], mask: u64) -> bool {
        let word = |c: &[u8]| {
            let mut b = [0u8; 8];
            b[..N].copy_from_slice(c);
            u64::from_le_bytes(b)
        };
        bytes.chunks(256 * N).any(|blk| {
            blk.chunks_exact(N)
                .fold(false, |a, c| a | (word(c) & mask == mask))
        })
    }
    match dtype {
        "BF16" => any_all_ones::<2>(bytes, 0x7f80),
        "F16" => any_all_ones::<2>(bytes, 0x7c00),
        "F32" => any_all_ones::<4>(bytes, 0x7f80_0000),
        "F64" => any_all_ones::<8>(bytes, 0x7ff0_0000_0000_0000),
        _ => false,
    }
}

/// The base bytes to XOR with: the paired base tensor's (shared rows) when
/// it has the same dtype.
fn xor_base<'a>(base: &'a Checkpoint, trained: &Checkpoint, it: &Pairing) -> Option<&'a [u8]> {
    let t = &trained.tensors()[it.ti];
    let b = &base.tensors()[it.bi?];
    if b.dtype_name != t.dtype_name {
        return None;
    }
    it.base_shared(base, trained)
}

/// Plain byte planes of raw bytes (FORMAT.md 3.2 without XOR): the added
/// rows of a resized tensor (2.6), chunks in parallel.
pub fn code_plain(bytes: &[u8], dtype: &str, chunk: usize) -> Vec<CodedBlock> {
    let size = super::elem_size(dtype);
    let chunks = (bytes.len() / size).div_ceil(chunk);
    (0..chunks)
        .into_par_iter()
        .flat_map_iter(|c| encode_chunk(bytes, None, size, chunk, c))
        .collect()
}

/// Codes tensors losslessly, chunks of the whole batch in parallel. A tensor
/// whose XOR with its same-dtype base is zero in every plane is stored as
/// "same" (read off the coded blocks: comparing the bytes first would cost
/// another pass over both sides).
pub fn code_lossless(
    base: &Checkpoint,
    trained: &Checkpoint,
    items: &[Pairing],
    chunk: usize,
) -> Vec<Coded> {
    let tt = trained.tensors();
    let mut jobs: Vec<(usize, usize)> = Vec::new();
    for (k, it) in items.iter().enumerate() {
        for c in 0..it.shared_numel(trained).div_ceil(chunk) {
            jobs.push((k, c));
        }
    }
    let coded: Vec<Vec<CodedBlock>> = jobs
        .par_iter()
        .map(|&(k, c)| {
            let it = &items[k];
            let t = &tt[it.ti];
            let size = resid_io::header::dtype_size(&t.dtype_name).unwrap_or(1) as usize;
            encode_chunk(
                it.trained_shared(trained),
                xor_base(base, trained, it),
                size,
                chunk,
                c,
            )
        })
        .collect();
    let mut out: Vec<Coded> = items
        .iter()
        .map(|it| Coded::Planes {
            xor: xor_base(base, trained, it).is_some(),
            blocks: Vec::new(),
        })
        .collect();
    for ((k, _), blocks) in jobs.into_iter().zip(coded) {
        if let Coded::Planes { blocks: b, .. } = &mut out[k] {
            b.extend(blocks);
        }
    }
    for c in out.iter_mut() {
        if let Coded::Planes { xor: true, blocks } = c {
            if blocks.iter().all(|b| b.bytes == [rans::KIND_CONST, 0]) {
                *c = Coded::Same;
            }
        }
    }
    out
}

/// The lossless coder of a lossless pack.
pub struct Lossless {
    pub chunk: usize,
}

impl TensorCoder for Lossless {
    fn code_batch(
        &self,
        base: &Checkpoint,
        trained: &Checkpoint,
        items: &[Pairing],
    ) -> Vec<Result<CodedTensor>> {
        code_lossless(base, trained, items, self.chunk)
            .into_iter()
            .map(|coded| {
                Ok(CodedTensor {
                    coded,
                    err_sumsq: 0.0,
                    weight_sumsq: 0.0,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resid_io::Dtype;

    #[test]
    fn finds_one_nan_or_inf_anywhere_in_every_dtype() {
        for d in [Dtype::BF16, Dtype::F16, Dtype::F32, Dtype::F64] {
            // Large finite values (the dtype's max) are not flagged.
            let big = match d {
                Dtype::F16 => 65504.0,
                Dtype::BF16 => 3.0e38,
                _ => f32::MAX,
            };
            let mut v = vec![big; 1000];
            v[3] = -big;
            let mut b = Vec::new();
            d.from_f32(&v, &mut b);
            assert!(!has_nonfinite(d.name(), &b), "{d}");
            for pos in [0, 255, 256, 511, 999] {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut w = v.clone();
                    w[pos] = bad;
                    d.from_f32(&w, &mut b);
                    assert!(has_nonfinite(d.name(), &b), "{d} {bad} at {pos}");
                }
            }
        }
        assert!(!has_nonfinite("I64", &[0xff; 64]));
    }
}
