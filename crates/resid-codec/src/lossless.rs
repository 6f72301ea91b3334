//! Lossless coding: XOR of same-dtype bit patterns, split into byte planes,
//! each plane of each chunk rANS-coded with its own static model.

use crate::rans;

/// One coded block before it is placed in the file.
#[derive(Clone, Debug)]
pub struct CodedBlock {
    pub bytes: Vec<u8>,
    pub n: u64,
    pub bits: f64,
}

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

/// Decodes one chunk's plane blocks into `out` (the chunk's bytes), XORing
/// with the base chunk when given. `planes` is a scratch buffer.
pub fn decode_chunk(
    blocks: &[&[u8]],
    base: Option<&[u8]>,
    size: usize,
    out: &mut [u8],
    planes: &mut Vec<u8>,
) -> Result<(), (usize, String)> {
    let n = out.len() / size;
    planes.clear();
    planes.resize(n * size, 0);
    for (p, b) in blocks.iter().enumerate() {
        rans::decode_block(b, &mut planes[p * n..(p + 1) * n]).map_err(|e| (p, e))?;
    }
    match (base, size) {
        (Some(b), 2) => {
            let (p0, p1) = planes.split_at(n);
            for i in 0..n {
                out[2 * i] = p0[i] ^ b[2 * i];
                out[2 * i + 1] = p1[i] ^ b[2 * i + 1];
            }
        }
        (None, 2) => {
            let (p0, p1) = planes.split_at(n);
            for i in 0..n {
                out[2 * i] = p0[i];
                out[2 * i + 1] = p1[i];
            }
        }
        (Some(b), 4) => {
            let (p0, rest) = planes.split_at(n);
            let (p1, rest) = rest.split_at(n);
            let (p2, p3) = rest.split_at(n);
            for i in 0..n {
                out[4 * i] = p0[i] ^ b[4 * i];
                out[4 * i + 1] = p1[i] ^ b[4 * i + 1];
                out[4 * i + 2] = p2[i] ^ b[4 * i + 2];
                out[4 * i + 3] = p3[i] ^ b[4 * i + 3];
            }
        }
        _ => {
            for i in 0..n {
                for p in 0..size {
                    out[i * size + p] = planes[p * n + i] ^ base.map_or(0, |b| b[i * size + p]);
                }
            }
        }
    }
    Ok(())
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
