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

/// A safetensors file being written, tensor by tensor, in spec order.
pub struct SafetensorsWriter {
    file: AtomicFile,
    specs: Vec<TensorSpec>,
    next: usize,
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
        })
    }

    /// Writes the next tensor's bytes; they must be the next spec's, in size.
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.file.path().to_path_buf();
        let Some(spec) = self.specs.get(self.next) else {
            return Err(IoError::BadTensor {
                path,
                tensor: name.into(),
                reason: "more tensors written than declared".into(),
            });
        };
        if spec.name != name || spec.nbytes()? != bytes.len() {
            return Err(IoError::BadTensor {
                path,
                tensor: name.into(),
                reason: format!(
                    "expected '{}' of {} bytes next, got '{name}' of {} bytes",
                    spec.name,
                    spec.nbytes()?,
                    bytes.len()
                ),
            });
        }
        self.next += 1;
        self.file.write_all(bytes)
    }

    /// Checks every tensor was written, then renames the file into place.
    pub fn finish(self) -> Result<()> {
        if self.next != self.specs.len() {
            return Err(IoError::BadTensor {
                path: self.file.path().to_path_buf(),
                tensor: self.specs[self.next].name.clone(),
                reason: "never written".into(),
            });
        }
        self.file.commit()
    }
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
