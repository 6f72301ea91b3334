//! An adapter as a checkpoint pair the analysis reads: the adapted base
//! tensors, and the same tensors with ΔW added, both in f32 (exact for the
//! base; base + ΔW rounds once to f32, about 6e-8 of |W| per entry).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use resid_io::write::{SafetensorsWriter, TensorSpec};
use resid_io::Checkpoint;

use crate::adapter::Adapter;
use crate::error::Result;

/// The two files [`write_pair`] wrote.
pub struct AppliedPair {
    pub base: PathBuf,
    pub trained: PathBuf,
}

/// Writes `dir/base.safetensors` (the base tensors the adapter changes) and
/// `dir/trained.safetensors` (those tensors plus ΔW), streamed one module at
/// a time. Disk use: 8 bytes per adapted parameter.
pub fn write_pair(
    adapter: &Adapter,
    base: &Checkpoint,
    dir: &Path,
    progress: &dyn Fn(usize, &str),
) -> Result<AppliedPair> {
    let mut specs = Vec::new();
    for m in adapter.modules() {
        // Shapes are checked by `delta`; a missing tensor fails there too.
        let shape = base.get(&m.tensor).map(|e| e.shape.clone());
        let Some(shape) = shape else {
            adapter.delta(m, base)?;
            unreachable!("delta fails for a tensor the base lacks");
        };
        specs.push(TensorSpec {
            name: m.tensor.clone(),
            dtype_name: "F32".into(),
            shape,
        });
    }
    let out = AppliedPair {
        base: dir.join("base.safetensors"),
        trained: dir.join("trained.safetensors"),
    };
    let mut meta = BTreeMap::new();
    meta.insert(
        "resid.adapter".to_string(),
        adapter.dir().display().to_string(),
    );
    let mut wb = SafetensorsWriter::create(&out.base, specs.clone(), &meta)?;
    let mut wt = SafetensorsWriter::create(&out.trained, specs, &meta)?;
    let mut w = Vec::new();
    for (i, m) in adapter.modules().iter().enumerate() {
        progress(i, &m.tensor);
        let (_, mut d) = adapter.delta(m, base)?;
        base.read_f32(base.get(&m.tensor).expect("checked"), &mut w)?;
        wb.write_tensor(&m.tensor, bytemuck::cast_slice(&w))?;
        d.iter_mut().zip(&w).for_each(|(d, w)| *d += w);
        wt.write_tensor(&m.tensor, bytemuck::cast_slice(&d))?;
    }
    wb.finish()?;
    wt.finish()?;
    Ok(out)
}
