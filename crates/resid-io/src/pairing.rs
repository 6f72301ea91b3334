//! Pairs base and trained tensors by name. Names present on one side only
//! are listed, not fatal. A tensor whose first dimension changed (a resized
//! vocabulary: embedding, head, a head bias) pairs as shared rows plus rows
//! only one side has; any other change of shape is listed apart.

use crate::checkpoint::Checkpoint;
use crate::error::{IoError, Result};

/// The tensors two checkpoints share, and those they don't.
#[derive(Clone, Debug, Default)]
pub struct Pairing {
    /// (index in base.tensors(), index in trained.tensors()), same shape, in trained order.
    pub pairs: Vec<(usize, usize)>,
    /// Same name, same trailing dimensions, another first dimension; in trained order.
    pub resized: Vec<Resized>,
    /// Same name, shapes that do not pair row by row (rank or a trailing dimension differs).
    pub mismatched: Vec<Mismatched>,
    pub only_base: Vec<String>,
    pub only_trained: Vec<String>,
}

/// A tensor whose first dimension differs: rows `0..shared_rows` pair up
/// (row-major, so they are the first `shared_rows * row_len` elements of
/// each side); the rest exist on one side only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resized {
    pub base: usize,
    pub trained: usize,
    pub base_rows: usize,
    pub trained_rows: usize,
    /// Elements per row (the product of the trailing dimensions; 1 for a 1-D tensor).
    pub row_len: usize,
}

impl Resized {
    /// Rows both sides have.
    pub fn shared_rows(&self) -> usize {
        self.base_rows.min(self.trained_rows)
    }
    /// Rows the trained side added (0 when it shrank).
    pub fn added_rows(&self) -> usize {
        self.trained_rows.saturating_sub(self.base_rows)
    }
    /// Rows the trained side dropped (0 when it grew).
    pub fn removed_rows(&self) -> usize {
        self.base_rows.saturating_sub(self.trained_rows)
    }
    /// Elements of the shared rows, on either side.
    pub fn shared_len(&self) -> usize {
        self.shared_rows() * self.row_len
    }
}

/// A name on both sides whose shapes do not pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatched {
    pub base: usize,
    pub trained: usize,
}

/// Matches tensors by name and sorts each name into one of [`Pairing`]'s lists.
pub fn pair_all(base: &Checkpoint, trained: &Checkpoint) -> Pairing {
    let mut out = Pairing::default();
    for (ti, t) in trained.tensors().iter().enumerate() {
        let Some(bi) = base.index_of(&t.name) else {
            out.only_trained.push(t.name.clone());
            continue;
        };
        let b = &base.tensors()[bi];
        if b.shape == t.shape {
            out.pairs.push((bi, ti));
        } else if b.shape.len() == t.shape.len()
            && !t.shape.is_empty()
            && b.shape[1..] == t.shape[1..]
        {
            out.resized.push(Resized {
                base: bi,
                trained: ti,
                base_rows: b.shape[0],
                trained_rows: t.shape[0],
                row_len: t.shape[1..].iter().product(),
            });
        } else {
            out.mismatched.push(Mismatched {
                base: bi,
                trained: ti,
            });
        }
    }
    for b in base.tensors() {
        if trained.get(&b.name).is_none() {
            out.only_base.push(b.name.clone());
        }
    }
    out
}

/// [`pair_all`] for callers that need every shared name to have one shape:
/// the first resized or mismatched tensor (in trained order) is an error
/// naming both shapes.
pub fn pair(base: &Checkpoint, trained: &Checkpoint) -> Result<Pairing> {
    let p = pair_all(base, trained);
    let first = p
        .resized
        .iter()
        .map(|r| (r.base, r.trained))
        .chain(p.mismatched.iter().map(|m| (m.base, m.trained)))
        .min_by_key(|&(_, ti)| ti);
    if let Some((bi, ti)) = first {
        let (b, t) = (&base.tensors()[bi], &trained.tensors()[ti]);
        return Err(IoError::ShapeMismatch {
            tensor: t.name.clone(),
            base: base.file_of(b).to_path_buf(),
            base_shape: b.shape.clone(),
            trained: trained.file_of(t).to_path_buf(),
            trained_shape: t.shape.clone(),
        });
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A vocabulary grown the way transformers' `resize_token_embeddings`
    /// does it: 8 added tokens (50 -> 58) padded to a multiple of 64, so 14
    /// new rows, set to the mean of the old ones; the tied head grows too.
    #[test]
    fn a_resized_vocabulary_pairs_as_shared_plus_added_rows() {
        let (v, d, v_new) = (50usize, 8usize, 64usize);
        let emb: Vec<f32> = (0..v * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let mean: Vec<f32> = (0..d)
            .map(|j| (0..v).map(|r| emb[r * d + j]).sum::<f32>() / v as f32)
            .collect();
        let mut grown = emb.clone();
        for _ in v..v_new {
            grown.extend_from_slice(&mean);
        }
        let w: Vec<f32> = (0..d * d).map(|i| i as f32).collect();
        let base = vec![
            ("wte.weight".to_string(), vec![v, d], emb.clone()),
            ("lm_head.weight".to_string(), vec![v, d], emb.clone()),
            ("lm_head.bias".to_string(), vec![v], vec![0.0; v]),
            ("h.0.w".to_string(), vec![d, d], w.clone()),
            ("conv".to_string(), vec![d, 4], vec![0.0; d * 4]),
            ("gone".to_string(), vec![2], vec![0.0; 2]),
        ];
        let trained = vec![
            ("wte.weight".to_string(), vec![v_new, d], grown.clone()),
            ("lm_head.weight".to_string(), vec![v_new, d], grown),
            ("lm_head.bias".to_string(), vec![v_new], vec![0.0; v_new]),
            ("h.0.w".to_string(), vec![d, d], w),
            ("conv".to_string(), vec![d, 5], vec![0.0; d * 5]),
            ("new".to_string(), vec![3], vec![0.0; 3]),
        ];
        let dir = tempfile::tempdir().unwrap();
        let (bp, tp) = (
            dir.path().join("b.safetensors"),
            dir.path().join("t.safetensors"),
        );
        crate::write::write_f32_checkpoint(&bp, &base, &BTreeMap::new()).unwrap();
        crate::write::write_f32_checkpoint(&tp, &trained, &BTreeMap::new()).unwrap();
        let (b, t) = (
            Checkpoint::open(&bp).unwrap(),
            Checkpoint::open(&tp).unwrap(),
        );
        let p = pair_all(&b, &t);
        let name = |i: usize| t.tensors()[i].name.as_str();
        assert_eq!(p.pairs.len(), 1);
        assert_eq!(name(p.pairs[0].1), "h.0.w");
        let resized: Vec<&str> = p.resized.iter().map(|r| name(r.trained)).collect();
        assert_eq!(resized, ["wte.weight", "lm_head.weight", "lm_head.bias"]);
        let e = &p.resized[0];
        assert_eq!(
            (e.shared_rows(), e.added_rows(), e.removed_rows()),
            (v, v_new - v, 0)
        );
        assert_eq!((e.row_len, e.shared_len()), (d, v * d));
        assert_eq!(p.resized[2].row_len, 1);
        // The shared rows are the leading elements: unchanged here, so equal.
        let (mut x, mut y) = (Vec::new(), Vec::new());
        b.read_f32(&b.tensors()[e.base], &mut x).unwrap();
        t.read_f32(&t.tensors()[e.trained], &mut y).unwrap();
        assert_eq!(x[..e.shared_len()], y[..e.shared_len()]);
        assert_eq!(y[e.shared_len()..e.shared_len() + d], mean[..]);
        assert_eq!(p.mismatched.len(), 1);
        assert_eq!(name(p.mismatched[0].trained), "conv");
        assert_eq!(p.only_base, ["gone"]);
        assert_eq!(p.only_trained, ["new"]);
        // The strict form names the first tensor that does not pair.
        let err = pair(&b, &t).unwrap_err().to_string();
        assert!(
            err.contains("wte.weight") && err.contains("[64, 8]"),
            "{err}"
        );
        // The same vocabulary shrunk back: removed rows, nothing added.
        let back = pair_all(&t, &b);
        let r = &back.resized[0];
        assert_eq!(
            (r.shared_rows(), r.added_rows(), r.removed_rows()),
            (v, 0, v_new - v)
        );
    }
}
