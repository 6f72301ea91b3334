//! `resid.open`: a residual file and its base, read one tensor at a time
//! (like safetensors' `safe_open`), so one layer of a large fine-tune is
//! rebuilt without the rest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::PyByteArray;
use resid::codec::ResidFile;
use resid::io::Checkpoint;

use crate::blocking::run;

/// An opened residual file with the base it was made against.
#[pyclass(frozen, module = "resid._resid")]
pub struct Reader {
    file: ResidFile,
    base: Checkpoint,
}

#[pymethods]
impl Reader {
    /// Opens the residual `file` and the `base` checkpoint (headers only).
    #[new]
    fn new(py: Python<'_>, base: PathBuf, file: PathBuf) -> PyResult<Self> {
        run(py, None, move |_| {
            let base = crate::api::open_checkpoint(&base)?;
            let file = ResidFile::open(&file)?;
            Ok(Reader { file, base })
        })
    }

    /// Tensor names, in the trained checkpoint's order.
    fn keys(&self) -> Vec<String> {
        self.file
            .header
            .tensors
            .iter()
            .map(|t| t.name.clone())
            .collect()
    }

    /// The trained checkpoint's `__metadata__` (shards' merged, first wins).
    fn metadata(&self) -> BTreeMap<String, String> {
        let mut all = BTreeMap::new();
        for m in resid::codec::shard_metadata(&self.file) {
            for (k, v) in m {
                all.entry(k).or_insert(v);
            }
        }
        all
    }

    /// (dtype, shape) of tensor `name`, as the safetensors header spells them.
    fn info(&self, name: &str) -> PyResult<(String, Vec<u64>)> {
        let t = &self.file.header.tensors[self.index(name)?];
        Ok((t.dtype.name().to_string(), t.shape.clone()))
    }

    /// The rebuilt bytes of tensor `name` (checked against the base's
    /// fingerprint and, when lossless, the trained checksum).
    fn read<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyByteArray>> {
        let ti = self.index(name)?;
        let bytes = run(py, None, move |_| {
            Ok(resid::codec::decode_tensor(&self.file, &self.base, ti)?)
        })?;
        Ok(PyByteArray::new(py, &bytes))
    }

    /// The residual file's path.
    #[getter]
    fn path(&self) -> PathBuf {
        self.file.path.clone()
    }
}

impl Reader {
    fn index(&self, name: &str) -> PyResult<usize> {
        self.file.tensor_index(name).ok_or_else(|| {
            PyKeyError::new_err(format!(
                "{}: no tensor named '{name}'",
                self.file.path.display()
            ))
        })
    }
}
