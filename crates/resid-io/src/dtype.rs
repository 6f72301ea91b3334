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
        match self {
            Dtype::F32 => {
                bytemuck::cast_slice_mut::<f32, u8>(out).copy_from_slice(&bytes[..n * 4]);
            }
            Dtype::F16 => {
                let src: Vec<half::f16>;
                let s: &[half::f16] = match bytemuck::try_cast_slice(bytes) {
                    Ok(s) => s,
                    Err(_) => {
                        src = bytes
                            .chunks_exact(2)
                            .map(|c| half::f16::from_le_bytes([c[0], c[1]]))
                            .collect();
                        &src
                    }
                };
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(s, out);
            }
            Dtype::BF16 => {
                let src: Vec<half::bf16>;
                let s: &[half::bf16] = match bytemuck::try_cast_slice(bytes) {
                    Ok(s) => s,
                    Err(_) => {
                        src = bytes
                            .chunks_exact(2)
                            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]))
                            .collect();
                        &src
                    }
                };
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(s, out);
            }
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
        }
    }
}
