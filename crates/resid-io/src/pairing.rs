//! Pairs base and trained tensors by name. Names present on one side only are
//! listed, not fatal; a shape mismatch is an error naming both shapes.

use crate::checkpoint::Checkpoint;
use crate::error::{IoError, Result};

/// The tensors two checkpoints share, and those they don't.
#[derive(Clone, Debug, Default)]
pub struct Pairing {
    /// (index in base.tensors(), index in trained.tensors()), in trained order.
    pub pairs: Vec<(usize, usize)>,
    pub only_base: Vec<String>,
    pub only_trained: Vec<String>,
}

/// Matches tensors by name.
pub fn pair(base: &Checkpoint, trained: &Checkpoint) -> Result<Pairing> {
    let mut out = Pairing::default();
    for (ti, t) in trained.tensors().iter().enumerate() {
        match base.get(&t.name) {
            Some(b) => {
                if b.shape != t.shape {
                    return Err(IoError::ShapeMismatch {
                        tensor: t.name.clone(),
                        base: base.file_of(b).to_path_buf(),
                        base_shape: b.shape.clone(),
                        trained: trained.file_of(t).to_path_buf(),
                        trained_shape: t.shape.clone(),
                    });
                }
                let bi = base.index_of(&t.name).expect("present");
                out.pairs.push((bi, ti));
            }
            None => out.only_trained.push(t.name.clone()),
        }
    }
    for b in base.tensors() {
        if trained.get(&b.name).is_none() {
            out.only_base.push(b.name.clone());
        }
    }
    Ok(out)
}
