//! Rebuild only some tensors of a residual file into one safetensors file
//! (`resid unpack --tensors`, like `resid.open(...).get_tensor` in Python):
//! one layer of a 70B fine-tune without decoding the rest.

use std::path::Path;

use resid_codec::{decode_tensor, CodecError, ResidFile};
use resid_io::write::{SafetensorsWriter, TensorSpec};
use resid_io::Checkpoint;

/// What [`unpack_subset`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SubsetReport {
    /// The selected tensor names, in the trained checkpoint's order.
    pub tensors: Vec<String>,
    /// Tensor bytes written.
    pub bytes: u64,
}

/// Decodes the tensors of `file` whose names `keep` accepts, one at a time
/// (memory: the largest selected tensor), into the safetensors file `out`,
/// written atomically. Refuses when nothing matches, and, unless `force`,
/// when `out` exists.
pub fn unpack_subset(
    base: &Checkpoint,
    file: &Path,
    out: &Path,
    keep: &dyn Fn(&str) -> bool,
    force: bool,
    progress: &dyn Fn(u64),
) -> Result<SubsetReport, CodecError> {
    let rf = ResidFile::open(file)?;
    let chosen: Vec<usize> = (0..rf.header.tensors.len())
        .filter(|&i| keep(&rf.header.tensors[i].name))
        .collect();
    if chosen.is_empty() {
        return Err(CodecError::NoTensorSelected {
            path: file.to_path_buf(),
        });
    }
    if !force && out.exists() {
        return Err(CodecError::OutputExists {
            path: out.to_path_buf(),
        });
    }
    let specs: Vec<TensorSpec> = chosen
        .iter()
        .map(|&i| {
            let t = &rf.header.tensors[i];
            TensorSpec {
                name: t.name.clone(),
                dtype_name: t.dtype.name().to_string(),
                shape: t.shape.iter().map(|&d| d as usize).collect(),
            }
        })
        .collect();
    let mut w = SafetensorsWriter::create(out, specs.clone(), &Default::default())?;
    if !force {
        w = w.no_replace();
    }
    let mut bytes = 0u64;
    for (&i, spec) in chosen.iter().zip(&specs) {
        let data = decode_tensor(&rf, base, i)?;
        w.write_tensor(&spec.name, &data)?;
        bytes += data.len() as u64;
        progress(data.len() as u64);
    }
    w.finish()?;
    Ok(SubsetReport {
        tensors: specs.into_iter().map(|s| s.name).collect(),
        bytes,
    })
}
