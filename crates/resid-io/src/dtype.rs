//! The floating-point dtypes resid reads, and their conversion to f32.

use serde::{Deserialize, Serialize};

/// A safetensors floating-point dtype that resid reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    F64,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F64 => 8,
        }
    }

    /// The safetensors spelling.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F64 => "F64",
        }
    }

    /// Parses the safetensors spelling; `None` for dtypes resid does not read.
    pub fn parse(s: &str) -> Option<Dtype> {
        match s {
            "F32" => Some(Dtype::F32),
            "F16" => Some(Dtype::F16),
            "BF16" => Some(Dtype::BF16),
            "F64" => Some(Dtype::F64),
            _ => None,
        }
    }

    /// Decodes little-endian `bytes` of this dtype into `out` (resized).
    /// Bulk slice conversion: several GB/s, unlike per-element loops.
    pub fn to_f32(self, bytes: &[u8], out: &mut Vec<f32>) {
        let n = bytes.len() / self.size();
        out.clear();
        out.resize(n, 0.0);
        self.decode_into(&bytes[..n * self.size()], out);
    }

    /// Decodes `out.len()` elements from the front of `bytes` into `out`
    /// (no allocation when `bytes` is aligned for the dtype), so callers can
    /// convert a tensor chunk by chunk while each chunk is in cache.
    pub fn decode_into(self, bytes: &[u8], out: &mut [f32]) {
        let n = out.len();
        let bytes = &bytes[..n * self.size()];
        match self {
            Dtype::F32 => {
                bytemuck::cast_slice_mut::<f32, u8>(out).copy_from_slice(bytes);
            }
            Dtype::F16 => match bytemuck::try_cast_slice::<u8, half::f16>(bytes) {
                Ok(s) => half::slice::HalfFloatSliceExt::convert_to_f32_slice(s, out),
                Err(_) => {
                    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                        *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                    }
                }
            },
            Dtype::BF16 => match bytemuck::try_cast_slice::<u8, half::bf16>(bytes) {
                Ok(s) => half::slice::HalfFloatSliceExt::convert_to_f32_slice(s, out),
                Err(_) => {
                    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                        *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
                    }
                }
            },
            Dtype::F64 => {
                for (o, c) in out.iter_mut().zip(bytes.chunks_exact(8)) {
                    *o = f64::from_le_bytes(c.try_into().unwrap()) as f32;
                }
            }
        }
    }

    /// Encodes f32 values as little-endian bytes of this dtype (round to nearest).
    pub fn from_f32(self, values: &[f32], out: &mut Vec<u8>) {
        out.clear();
        match self {
            Dtype::F32 => out.extend_from_slice(bytemuck::cast_slice(values)),
            Dtype::F16 => {
                out.reserve(values.len() * 2);
                for v in values {
                    out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes());
                }
            }
            Dtype::BF16 => {
                out.reserve(values.len() * 2);
                for v in values {
                    out.extend_from_slice(&half::bf16::from_f32(*v).to_le_bytes());
                }
            }
            Dtype::F64 => {
                out.reserve(values.len() * 8);
                for v in values {
                    out.extend_from_slice(&(*v as f64).to_le_bytes());
                }
            }
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exact_values_in_every_dtype() {
        let v = [0.0f32, 1.0, -2.5, 0.125, 1024.0];
        for d in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::F64] {
            let mut b = Vec::new();
            d.from_f32(&v, &mut b);
            assert_eq!(b.len(), v.len() * d.size());
            let mut back = Vec::new();
            d.to_f32(&b, &mut back);
            assert_eq!(back, v, "{d}");
            // Chunked decoding from an unaligned slice gives the same values.
            let mut shifted = vec![0u8];
            shifted.extend_from_slice(&b);
            let mut part = vec![0.0f32; 3];
            d.decode_into(&shifted[1 + d.size()..], &mut part);
            assert_eq!(part, v[1..4], "{d} unaligned");
        }
    }
}
