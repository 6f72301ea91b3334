//! Writing safetensors, streamed and atomic: the header is laid out from the
//! tensors' names, dtypes and shapes first, then each tensor's bytes follow in
//! order, so a 14 GB checkpoint is written without holding it in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::atomic::AtomicFile;
use crate::error::{IoError, Result};
use crate::header::dtype_size;

/// What a tensor will be: its name, dtype spelling and shape.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype_name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// Bytes the tensor will occupy.
    pub fn nbytes(&self) -> Result<usize> {
        let size = dtype_size(&self.dtype_name).ok_or_else(|| IoError::BadTensor {
            path: PathBuf::new(),
            tensor: self.name.clone(),
            reason: format!("unknown dtype '{}'", self.dtype_name),
        })?;
        Ok(self.shape.iter().product::<usize>() * size as usize)
    }
}

/// A safetensors file being written, tensor by tensor, in spec order; a
/// tensor may come in parts ([`write_part`](Self::write_part)) so that no
/// caller has to hold a large tensor whole.
pub struct SafetensorsWriter {
    file: AtomicFile,
    specs: Vec<TensorSpec>,
    next: usize,
    /// Bytes of tensor `next` written so far.
    written: usize,
}

impl SafetensorsWriter {
    /// Makes [`finish`](Self::finish) fail rather than replace a file that
    /// exists at the path by then ([`AtomicFile::no_replace`]).
    pub fn no_replace(mut self) -> Self {
        self.file = self.file.no_replace();
        self
    }

    /// Creates `path` (atomically, on [`finish`](Self::finish)) for tensors
    /// written in the order of `specs`.
    pub fn create(
        path: &Path,
        specs: Vec<TensorSpec>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Self> {
        let mut header = Map::new();
        if !metadata.is_empty() {
            header.insert(
                "__metadata__".into(),
                serde_json::to_value(metadata).expect("string map"),
            );
        }
        let mut offset = 0usize;
        for s in &specs {
            let n = s.nbytes()?;
            header.insert(
                s.name.clone(),
                serde_json::json!({
                    "dtype": s.dtype_name,
                    "shape": s.shape,
                    "data_offsets": [offset, offset + n],
                }),
            );
            offset += n;
        }
        let mut text = serde_json::to_string(&Value::Object(header)).expect("json");
        // Pad so the data section starts 8-byte aligned, as safetensors does.
        while !(text.len() + 8).is_multiple_of(8) {
            text.push(' ');
        }
        let mut file = AtomicFile::create(path)?;
        file.write_all(&(text.len() as u64).to_le_bytes())?;
        file.write_all(text.as_bytes())?;
        Ok(SafetensorsWriter {
            file,
            specs,
            next: 0,
            written: 0,
        })
    }

    /// Writes the next tensor's bytes, whole; they must be the next spec's,
    /// in size.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        if let Some(spec) = self.specs.get(self.next) {
            if self.written != 0 || (spec.name == name && spec.nbytes()? != bytes.len()) {
                return Err(self.unexpected(name, format!("{} bytes", bytes.len())));
            }
        }
        self.write_part(name, bytes)
    }

    /// Appends bytes of the tensor being written (the next spec's, `name`):
    /// once its declared size is reached the next tensor begins. More bytes
    /// than the spec's size, or another name, are refused.
    pub fn write_part(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let Some(spec) = self.specs.get(self.next) else {
            return Err(IoError::BadTensor {
                path: self.file.path().to_path_buf(),
                tensor: name.into(),
                reason: "more tensors written than declared".into(),
            });
        };
        let want = spec.nbytes()?;
        if spec.name != name || self.written + bytes.len() > want {
            let got = format!("{} more bytes after {}", bytes.len(), self.written);
            return Err(self.unexpected(name, got));
        }
        self.file.write_all(bytes)?;
        self.written += bytes.len();
        if self.written == want {
            self.next += 1;
            self.written = 0;
        }
        Ok(())
    }

    fn unexpected(&self, name: &str, got: String) -> IoError {
        let spec = &self.specs[self.next.min(self.specs.len() - 1)];
        IoError::BadTensor {
            path: self.file.path().to_path_buf(),
            tensor: name.into(),
            reason: format!(
                "expected '{}' of {} bytes next, got '{name}' with {got}",
                spec.name,
                spec.nbytes().unwrap_or(0),
            ),
        }
    }

    /// Checks every tensor was written whole, then renames the file into
    /// place.
    pub fn finish(self) -> Result<()> {
        if self.next != self.specs.len() {
            let reason = if self.written == 0 {
                "never written".into()
            } else {
                format!("only {} bytes written", self.written)
            };
            return Err(IoError::BadTensor {
                path: self.file.path().to_path_buf(),
                tensor: self.specs[self.next].name.clone(),
                reason,
            });
        }
        self.file.commit()
    }
}

/// A tensor as raw bytes: name, dtype spelling, shape, bytes.
pub type RawTensor<'a> = (&'a str, &'a str, Vec<usize>, Vec<u8>);

/// Writes raw tensors as one safetensors file, atomically; each one's bytes
/// must fill its dtype and shape.
pub fn write_raw_checkpoint(
    path: &Path,
    tensors: &[RawTensor],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let specs = tensors
        .iter()
        .map(|(n, d, s, _)| TensorSpec {
            name: n.to_string(),
            dtype_name: d.to_string(),
            shape: s.clone(),
        })
        .collect();
    let mut w = SafetensorsWriter::create(path, specs, metadata)?;
    for (n, _, _, b) in tensors {
        w.write_tensor(n, b)?;
    }
    w.finish()
}

/// Writes f32 tensors `(name, shape, values)` as one safetensors file, atomically.
pub fn write_f32_checkpoint(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let specs = tensors
        .iter()
        .map(|(n, s, v)| {
            if s.iter().product::<usize>() != v.len() {
                return Err(IoError::BadTensor {
                    path: path.to_path_buf(),
                    tensor: n.clone(),
                    reason: format!("shape {s:?} but {} values", v.len()),
                });
            }
            Ok(TensorSpec {
                name: n.clone(),
                dtype_name: "F32".into(),
                shape: s.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut w = SafetensorsWriter::create(path, specs, metadata)?;
    for (n, _, v) in tensors {
        w.write_tensor(n, bytemuck::cast_slice(v))?;
    }
    w.finish()
}

/// Writes a Hugging Face shard index (`model.safetensors.index.json`) atomically.
pub fn write_index(path: &Path, weight_map: &[(String, String)], total_size: usize) -> Result<()> {
    let mut map = Map::new();
    for (t, f) in weight_map {
        map.insert(t.clone(), Value::String(f.clone()));
    }
    let v = serde_json::json!({"metadata": {"total_size": total_size}, "weight_map": map});
    let text = serde_json::to_string_pretty(&v).expect("json");
    crate::atomic::write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs() -> Vec<TensorSpec> {
        let spec = |name: &str, shape: Vec<usize>| TensorSpec {
            name: name.into(),
            dtype_name: "U16".into(),
            shape,
        };
        vec![
            spec("a", vec![3, 5]),
            spec("empty", vec![0]),
            spec("b", vec![7]),
        ]
    }

    #[test]
    fn a_tensor_written_in_parts_gives_the_same_file_as_written_whole() {
        let d = tempfile::tempdir().unwrap();
        let a: Vec<u8> = (0..30).collect();
        let b: Vec<u8> = (100..114).collect();
        let whole = d.path().join("whole.safetensors");
        let mut w = SafetensorsWriter::create(&whole, specs(), &BTreeMap::new()).unwrap();
        w.write_tensor("a", &a).unwrap();
        w.write_tensor("empty", &[]).unwrap();
        w.write_tensor("b", &b).unwrap();
        w.finish().unwrap();
        let parts = d.path().join("parts.safetensors");
        let mut w = SafetensorsWriter::create(&parts, specs(), &BTreeMap::new()).unwrap();
        for piece in [&a[..1], &a[1..17], &a[17..]] {
            w.write_part("a", piece).unwrap();
        }
        w.write_part("empty", &[]).unwrap();
        w.write_part("b", &b[..4]).unwrap();
        w.write_part("b", &b[4..]).unwrap();
        w.finish().unwrap();
        assert_eq!(
            std::fs::read(&whole).unwrap(),
            std::fs::read(&parts).unwrap()
        );
    }

    #[test]
    fn parts_beyond_the_declared_size_or_of_another_tensor_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.safetensors");
        let mut w = SafetensorsWriter::create(&p, specs(), &BTreeMap::new()).unwrap();
        w.write_part("a", &[0; 20]).unwrap();
        let e = w.write_part("a", &[0; 11]).unwrap_err().to_string();
        assert!(e.contains("11 more bytes after 20"), "{e}");
        // A whole tensor cannot follow a part of one.
        assert!(w.write_tensor("a", &[0; 10]).is_err());
        assert!(w.write_part("b", &[0; 2]).is_err());
        w.write_part("a", &[0; 10]).unwrap();
        w.write_part("empty", &[]).unwrap();
        w.write_part("b", &[0; 6]).unwrap();
        let e = w.finish().unwrap_err().to_string();
        assert!(e.contains("only 6 bytes written"), "{e}");
        assert!(!p.exists(), "an unfinished file is never put in place");
    }
}
