//! The subspace residual: each weight matrix of one checkpoint with the
//! top-K directions of a token embedding's (mean-removed) covariance
//! projected out, so what is left is what the embedding's dominant
//! subspace does not explain (`resid analyze --subspace-of`).
//!
//! `U` (d x K) holds the top-K eigenvectors of `E_c^T E_c`, `E_c` the token
//! embedding minus its mean token vector. As DESIGN.md defines it,
//! `R = (W - mean) (I - U U^T)`: a matrix whose rows have length d
//! (cols == d) loses its mean row, then span(U) from each row ("rows"); one
//! whose columns have length d (rows == d, cols != d) loses its mean column,
//! then span(U) from each column ("cols"); any other tensor is analysed as
//! it is ("none"). The mean goes first so a shared offset of every row
//! (a bias-like shift) is not counted as structure the subspace missed.

use std::collections::BTreeMap;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use resid_io::{Checkpoint, Component, Layout};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::driver::AnalysisError;

/// Which side of a tensor the projection acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProjSide {
    /// cols == d: each row loses its component in span(U).
    Rows,
    /// rows == d (cols != d): each column loses its component in span(U).
    Cols,
    /// Not a 2-D tensor with a side of length d: unchanged.
    None,
}

/// The top-K eigenvectors of a token embedding's covariance.
#[derive(Clone, Debug)]
pub struct Subspace {
    /// The checkpoint the embedding came from.
    pub source: String,
    /// The embedding tensor's name and shape.
    pub embedding: String,
    pub embedding_shape: Vec<usize>,
    pub k: usize,
    pub d: usize,
    /// `U`, d x K, columns in descending eigenvalue order.
    pub u: Mat<f32>,
    /// The top-K eigenvalues, descending.
    pub eigenvalues: Vec<f64>,
    /// Their share of the trace of `E_c^T E_c`.
    pub share: f64,
}

/// What the JSON report says about a subspace run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubspaceRecord {
    pub source: String,
    pub embedding: String,
    pub embedding_shape: Vec<usize>,
    pub k: usize,
    pub d: usize,
    /// Share of the mean-removed embedding's variance the K directions capture.
    pub eigenvalue_share: f64,
    pub eigenvalues: Vec<f64>,
    /// Per analysed tensor: "rows", "cols" or "none".
    pub projection: BTreeMap<String, ProjSide>,
}

impl Subspace {
    /// Finds the token embedding of `ck` by the layout's roles (component
    /// embedding, role `tok`: GPT-2 `wte`, Llama `embed_tokens`, resid's
    /// `tok_emb`, ...) and takes the top `k` eigenvectors of its covariance.
    pub fn from_checkpoint(
        ck: &Checkpoint,
        layout: &Layout,
        k: usize,
    ) -> Result<Self, AnalysisError> {
        let path = ck.path().display().to_string();
        // The largest 2-D tensor the layout calls the token embedding.
        let entry = ck
            .tensors()
            .iter()
            .filter(|t| t.shape.len() == 2 && t.dtype.is_some())
            .filter(|t| {
                let m = layout.classify(&t.name, &t.shape);
                m.component == Component::Embedding && m.role == "tok"
            })
            .max_by_key(|t| (t.numel(), std::cmp::Reverse(t.name.clone())))
            .ok_or_else(|| AnalysisError::NoEmbedding { path: path.clone() })?;
        let (v, d) = (entry.shape[0], entry.shape[1]);
        let mut e = Vec::new();
        ck.read_f32(entry, &mut e)?;
        ck.release(entry);
        if let Some(i) = e.iter().position(|x| !x.is_finite()) {
            return Err(AnalysisError::Subspace(format!(
                "{path}: embedding '{}' holds a non-finite value at index {i}",
                entry.name
            )));
        }
        let mut s = Self::from_embedding_owned(e, v, d, k).map_err(|m| {
            AnalysisError::Subspace(format!(
                "{path}: embedding '{}' {:?}: {m}",
                entry.name, entry.shape
            ))
        })?;
        s.source = path;
        s.embedding = entry.name.clone();
        s.embedding_shape = entry.shape.clone();
        Ok(s)
    }

    /// The top `k` eigenvectors of `E_c^T E_c` for a row-major `v x d`
    /// embedding (`E_c`: each row minus the mean row, so the shared offset
    /// of all tokens does not take the first direction).
    pub fn from_embedding(e: &[f32], v: usize, d: usize, k: usize) -> Result<Self, String> {
        Self::from_embedding_owned(e.to_vec(), v, d, k)
    }

    /// As [`Subspace::from_embedding`], centring `e` in place (no second copy).
    fn from_embedding_owned(mut e: Vec<f32>, v: usize, d: usize, k: usize) -> Result<Self, String> {
        if k == 0 {
            return Err("k must be at least 1".into());
        }
        if k > d {
            return Err(format!("k = {k} exceeds the embedding width d = {d}"));
        }
        if v < 2 {
            return Err(format!("needs at least 2 token rows, has {v}"));
        }
        assert_eq!(e.len(), v * d, "embedding size");
        // Centre in place in f32; the mean is accumulated in f64.
        let mut mean = vec![0.0f64; d];
        for row in e.chunks_exact(d) {
            mean.iter_mut().zip(row).for_each(|(m, &x)| *m += x as f64);
        }
        let mean: Vec<f32> = mean.iter().map(|m| (m / v as f64) as f32).collect();
        for row in e.chunks_exact_mut(d) {
            row.iter_mut().zip(&mean).for_each(|(x, m)| *x -= m);
        }
        let em = MatRef::from_row_major_slice(&e, v, d);
        let mut c32 = Mat::<f32>::zeros(d, d);
        matmul(
            c32.as_mut(),
            Accum::Replace,
            em.transpose(),
            em,
            1.0f32,
            Par::rayon(0),
        );
        drop(e);
        // Symmetrised in f64 for the eigendecomposition.
        let c = Mat::<f64>::from_fn(d, d, |i, j| 0.5 * (c32[(i, j)] as f64 + c32[(j, i)] as f64));
        let trace: f64 = (0..d).map(|i| c[(i, i)]).sum();
        let eig = c
            .self_adjoint_eigen(faer::Side::Lower)
            .map_err(|e| format!("eigendecomposition failed: {e:?}"))?;
        // The top K by value (faer's ascending order is not relied on).
        let (s, uu) = (eig.S().column_vector(), eig.U());
        let mut idx: Vec<usize> = (0..d).collect();
        idx.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
        idx.truncate(k);
        let eigenvalues: Vec<f64> = idx.iter().map(|&i| s[i].max(0.0)).collect();
        let u = Mat::<f32>::from_fn(d, k, |r, j| uu[(r, idx[j])] as f32);
        let share = if trace > 0.0 {
            eigenvalues.iter().sum::<f64>() / trace
        } else {
            0.0
        };
        Ok(Subspace {
            source: String::new(),
            embedding: String::new(),
            embedding_shape: vec![v, d],
            k,
            d,
            u,
            eigenvalues,
            share,
        })
    }

    /// The side a tensor of this shape is projected on.
    pub fn side(&self, shape: &[usize]) -> ProjSide {
        match shape {
            [_, c] if *c == self.d => ProjSide::Rows,
            [r, _] if *r == self.d => ProjSide::Cols,
            _ => ProjSide::None,
        }
    }

    /// `(W - mean)(I - U U^T)` on row-major `w` (`shape`) in place, on the
    /// side its shape calls for; returns the side used.
    pub fn project(&self, w: &mut [f32], shape: &[usize]) -> ProjSide {
        let side = self.side(shape);
        let u = self.u.as_ref();
        match side {
            ProjSide::Rows => {
                let (rows, cols) = (shape[0], shape[1]);
                // The mean row (per column, over rows), in f64.
                let mut mean = vec![0f64; cols];
                for r in w.chunks_exact(cols) {
                    mean.iter_mut().zip(r).for_each(|(m, x)| *m += *x as f64);
                }
                for r in w.chunks_exact_mut(cols) {
                    r.iter_mut()
                        .zip(&mean)
                        .for_each(|(x, m)| *x -= (*m / rows as f64) as f32);
                }
                // P = W U (rows x K), then W -= P U^T.
                let mut p = Mat::<f32>::zeros(rows, self.k);
                let wm = MatRef::from_row_major_slice(w, rows, cols);
                matmul(p.as_mut(), Accum::Replace, wm, u, 1.0f32, Par::rayon(0));
                let wm = faer::MatMut::from_row_major_slice_mut(w, rows, cols);
                matmul(
                    wm,
                    Accum::Add,
                    p.as_ref(),
                    u.transpose(),
                    -1.0f32,
                    Par::rayon(0),
                );
            }
            ProjSide::Cols => {
                let (rows, cols) = (shape[0], shape[1]);
                // The mean column (per row, over columns), in f64.
                for r in w.chunks_exact_mut(cols) {
                    let m = (r.iter().map(|x| *x as f64).sum::<f64>() / cols as f64) as f32;
                    r.iter_mut().for_each(|x| *x -= m);
                }
                // Q = U^T W (K x cols), then W -= U Q.
                let mut q = Mat::<f32>::zeros(self.k, cols);
                let wm = MatRef::from_row_major_slice(w, rows, cols);
                matmul(
                    q.as_mut(),
                    Accum::Replace,
                    u.transpose(),
                    wm,
                    1.0f32,
                    Par::rayon(0),
                );
                let wm = faer::MatMut::from_row_major_slice_mut(w, rows, cols);
                matmul(wm, Accum::Add, u, q.as_ref(), -1.0f32, Par::rayon(0));
            }
            ProjSide::None => {}
        }
        side
    }

    /// Extra working memory of projecting a tensor of this shape, in bytes.
    pub fn working_bytes(&self, shape: &[usize]) -> usize {
        match self.side(shape) {
            ProjSide::Rows => shape[0] * self.k * 4,
            ProjSide::Cols => shape[1] * self.k * 4,
            ProjSide::None => 0,
        }
    }

    /// The JSON record, given the side of each analysed tensor.
    pub fn record(&self, projection: BTreeMap<String, ProjSide>) -> SubspaceRecord {
        SubspaceRecord {
            source: self.source.clone(),
            embedding: self.embedding.clone(),
            embedding_shape: self.embedding_shape.clone(),
            k: self.k,
            d: self.d,
            eigenvalue_share: self.share,
            eigenvalues: self.eigenvalues.clone(),
            projection,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, StandardNormal};

    fn gauss(n: usize, std: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let z: f32 = StandardNormal.sample(rng);
                z * std
            })
            .collect()
    }

    /// `k` orthonormal columns of length `d` (Gram-Schmidt of Gaussians).
    fn orthonormal(d: usize, k: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<f64>> {
        let mut out: Vec<Vec<f64>> = Vec::new();
        while out.len() < k {
            let mut v: Vec<f64> = gauss(d, 1.0, rng).into_iter().map(f64::from).collect();
            for q in &out {
                let dot: f64 = v.iter().zip(q).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(q).for_each(|(a, b)| *a -= dot * b);
            }
            let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            v.iter_mut().for_each(|a| *a /= n);
            out.push(v);
        }
        out
    }

    /// An embedding whose covariance has `dirs` as its dominant directions
    /// (std 3, 2.5, 2, ... along them), isotropic noise of std 0.1, and a
    /// large shared offset that mean removal must take out.
    fn embedding(v: usize, d: usize, dirs: &[Vec<f64>], rng: &mut ChaCha8Rng) -> Vec<f32> {
        let offset = gauss(d, 5.0, rng);
        let mut e = gauss(v * d, 0.1, rng);
        for row in e.chunks_exact_mut(d) {
            for (j, q) in dirs.iter().enumerate() {
                let a: f32 = StandardNormal.sample(rng);
                let a = a as f64 * (3.0 - 0.5 * j as f64);
                row.iter_mut()
                    .zip(q)
                    .for_each(|(x, &u)| *x += (a * u) as f32);
            }
            row.iter_mut().zip(&offset).for_each(|(x, o)| *x += o);
        }
        e
    }

    fn energy(x: &[f32]) -> f64 {
        x.iter().map(|&v| (v as f64) * (v as f64)).sum()
    }

    #[test]
    fn eigenvectors_match_the_dominant_directions() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (v, d, k) = (600, 24, 4);
        let dirs = orthonormal(d, k, &mut rng);
        let e = embedding(v, d, &dirs, &mut rng);
        let s = Subspace::from_embedding(&e, v, d, k).unwrap();
        assert_eq!((s.u.nrows(), s.u.ncols()), (d, k));
        for (j, q) in dirs.iter().enumerate() {
            // Distinct stds: the j-th eigenvector is the j-th direction.
            let cos: f64 = (0..d).map(|r| s.u[(r, j)] as f64 * q[r]).sum();
            assert!(cos.abs() > 0.99, "direction {j}: |cos| = {}", cos.abs());
        }
        assert!(
            s.eigenvalues.windows(2).all(|w| w[0] >= w[1]),
            "{:?}",
            s.eigenvalues
        );
        assert!(s.share > 0.9 && s.share <= 1.0, "share {}", s.share);
    }

    #[test]
    fn projection_removes_rows_in_the_span_and_is_idempotent() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (v, d, k, rows) = (400, 16, 3, 40);
        let dirs = orthonormal(d, k, &mut rng);
        let s = Subspace::from_embedding(&embedding(v, d, &dirs, &mut rng), v, d, k).unwrap();
        // W = A U^T + N: rows in span(U) plus small noise.
        let a = gauss(rows * k, 1.0, &mut rng);
        let mut w = gauss(rows * d, 0.01, &mut rng);
        for (i, row) in w.chunks_exact_mut(d).enumerate() {
            for (j, q) in dirs.iter().enumerate() {
                let c = a[i * k + j] as f64;
                row.iter_mut()
                    .zip(q)
                    .for_each(|(x, &u)| *x += (c * u) as f32);
            }
        }
        let before = energy(&w);
        assert_eq!(s.project(&mut w, &[rows, d]), ProjSide::Rows);
        let after = energy(&w);
        assert!(after < 1e-3 * before, "energy {before} -> {after}");
        let once = w.clone();
        s.project(&mut w, &[rows, d]);
        let diff: f64 = once
            .iter()
            .zip(&w)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        assert!(
            diff < 1e-6 * energy(&once).max(1e-30),
            "not idempotent: {diff}"
        );

        // The transposed matrix (d x rows) is projected on its columns.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut wt = gauss(d * rows, 0.01, &mut rng);
        for (j, q) in dirs.iter().enumerate() {
            for (r, &u) in q.iter().enumerate() {
                for i in 0..rows {
                    wt[r * rows + i] += (a[i * k + j] as f64 * u) as f32;
                }
            }
        }
        let before = energy(&wt);
        assert_eq!(s.project(&mut wt, &[d, rows]), ProjSide::Cols);
        assert!(energy(&wt) < 1e-3 * before);

        // A matrix orthogonal to span(U) keeps its energy; others are untouched.
        let mut g = gauss(rows * d, 1.0, &mut rng);
        s.project(&mut g, &[rows, d]);
        let mut h = g.clone();
        s.project(&mut h, &[rows, d]);
        let kept = energy(&h) / energy(&g);
        assert!((kept - 1.0).abs() < 1e-4, "{kept}");
        let mut b = gauss(d, 1.0, &mut rng);
        let b0 = b.clone();
        assert_eq!(s.project(&mut b, &[d]), ProjSide::None);
        assert_eq!(b, b0);
    }

    #[test]
    fn a_shared_offset_is_removed_with_the_mean() {
        // DESIGN.md: R = (W - mean)(I - U U^T). Every row equal to one
        // vector c outside span(U) leaves nothing; so does every column.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (v, d, k, rows) = (300, 12, 2, 30);
        let dirs = orthonormal(d, k, &mut rng);
        let s = Subspace::from_embedding(&embedding(v, d, &dirs, &mut rng), v, d, k).unwrap();
        let c = gauss(d, 1.0, &mut rng);
        let mut w: Vec<f32> = (0..rows).flat_map(|_| c.iter().copied()).collect();
        s.project(&mut w, &[rows, d]);
        assert!(energy(&w) < 1e-8, "{}", energy(&w));
        let mut wt: Vec<f32> = c
            .iter()
            .flat_map(|&x| std::iter::repeat_n(x, rows))
            .collect();
        assert_eq!(s.project(&mut wt, &[d, rows]), ProjSide::Cols);
        assert!(energy(&wt) < 1e-8, "{}", energy(&wt));
        // Centred rows outside span(U) keep all their energy.
        let mut g = gauss(rows * d, 1.0, &mut rng);
        s.project(&mut g, &[rows, d]);
        let before = energy(&g);
        let mut h = g.clone();
        s.project(&mut h, &[rows, d]);
        assert!((energy(&h) / before - 1.0).abs() < 1e-4);
    }

    #[test]
    fn k_above_d_and_zero_are_refused() {
        let e = vec![0.5f32; 10 * 4];
        assert!(Subspace::from_embedding(&e, 10, 4, 5)
            .unwrap_err()
            .contains("exceeds"));
        assert!(Subspace::from_embedding(&e, 10, 4, 0).is_err());
    }
}
