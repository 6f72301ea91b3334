//! Coordination that a permutation of hidden units cannot hide
//! (docs/MEASURES.md, "Coordination", subspace overlap): the top-k right (or
//! left) singular subspace of R on the residual-stream side, the side every
//! layer shares, and the overlap of two such subspaces, `||V_a^T V_b||_F^2 /
//! k`, the mean squared cosine of their principal angles. Reordering the
//! hidden units of one layer (the other side) changes Pearson r of the
//! flattened residuals but not this. Null: two random k-dimensional
//! subspaces of R^dim, overlap k/dim on average.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use serde::{Deserialize, Serialize};

/// Directions compared per matrix (at most; a quarter of the smaller side
/// for small matrices).
pub const TOP_K: usize = 8;
/// Extra directions of the randomized range finder, and its power passes.
const OVERSAMPLE: usize = 8;
const POWER_PASSES: usize = 3;

/// Which side of a `[rows, cols]` matrix is the residual stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamSide {
    Rows,
    Cols,
}

/// The residual-stream side of a matrix: the side of length `d_model`; a
/// square matrix is read as torch `Linear` (`[out, in]`): the output
/// projections (`o`, `down`) write the stream (rows), the rest read it.
pub fn stream_side(rows: usize, cols: usize, d_model: usize, role: &str) -> Option<StreamSide> {
    match (rows == d_model, cols == d_model) {
        (true, false) => Some(StreamSide::Rows),
        (false, true) => Some(StreamSide::Cols),
        (true, true) if matches!(role, "o" | "down") => Some(StreamSide::Rows),
        (true, true) => Some(StreamSide::Cols),
        _ => None,
    }
}

/// The model width: the most common length of the layered norm weights,
/// else the most common side length of the layered matrices.
pub fn model_width(
    norms: impl IntoIterator<Item = usize>,
    matrices: impl IntoIterator<Item = (usize, usize)>,
) -> Option<usize> {
    let mode = |it: &mut dyn Iterator<Item = usize>| {
        let mut count: std::collections::BTreeMap<usize, usize> = Default::default();
        for v in it {
            *count.entry(v).or_default() += 1;
        }
        count
            .into_iter()
            .max_by_key(|&(len, n)| (n, len))
            .map(|x| x.0)
    };
    mode(&mut norms.into_iter())
        .or_else(|| mode(&mut matrices.into_iter().flat_map(|(r, c)| [r, c])))
}

/// An orthonormal basis of k directions in R^dim, k x dim row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Basis {
    pub dim: usize,
    pub k: usize,
    pub v: Vec<f32>,
}

/// Directions kept for a matrix of this shape.
pub fn k_for(rows: usize, cols: usize) -> usize {
    TOP_K.min(rows.min(cols) / 4).max(1)
}

/// The top-k singular directions of row-major `x` on `side`, by a seeded
/// randomized range finder (k + 8 directions, 3 power passes) and a small
/// eigenproblem. Its random start comes from `seed` and the shape; give each
/// matrix its own seed (test `independent_flat_matrices_overlap_at_the_random_level`).
pub fn top_basis(x: &[f32], rows: usize, cols: usize, side: StreamSide, seed: u64) -> Basis {
    let k = k_for(rows, cols);
    // Work with A (n x dim) whose right singular vectors are wanted.
    let r = MatRef::from_row_major_slice(x, rows, cols);
    let a = match side {
        StreamSide::Cols => r,
        StreamSide::Rows => r.transpose(),
    };
    let (n, dim) = (a.nrows(), a.ncols());
    let l = (k + OVERSAMPLE).min(dim).min(n);
    let par = crate::participation::par();
    let g = crate::null::gaussian_vec(dim * l, 1.0, crate::null::mix(seed, (dim * l) as u64));
    let mut z = Mat::<f32>::from_fn(dim, l, |i, j| g[i * l + j]);
    let mut y = Mat::<f32>::zeros(n, l);
    for _ in 0..POWER_PASSES {
        z = orthonormal(z.as_ref());
        matmul(y.as_mut(), Accum::Replace, a, z.as_ref(), 1.0f32, par);
        matmul(
            z.as_mut(),
            Accum::Replace,
            a.transpose(),
            y.as_ref(),
            1.0f32,
            par,
        );
    }
    let q = orthonormal(z.as_ref()); // dim x l
                                     // B = A Q (n x l); the top eigenvectors W of B^T B give V = Q W.
    matmul(y.as_mut(), Accum::Replace, a, q.as_ref(), 1.0f32, par);
    let mut btb = Mat::<f32>::zeros(l, l);
    matmul(
        btb.as_mut(),
        Accum::Replace,
        y.transpose(),
        y.as_ref(),
        1.0f32,
        par,
    );
    let mut v = vec![0.0f32; k * dim];
    if let Ok(e) = btb.self_adjoint_eigen(faer::Side::Lower) {
        // Eigenvalues ascending: the last k columns, largest first.
        let w = e.U();
        for (row, out) in v.chunks_mut(dim).enumerate() {
            let c = l - 1 - row;
            for (i, o) in out.iter_mut().enumerate() {
                *o = (0..l).map(|j| q[(i, j)] * w[(j, c)]).sum();
            }
        }
    }
    Basis { dim, k, v }
}

/// Gram-Schmidt (twice) of the columns of `m`.
fn orthonormal(m: MatRef<'_, f32>) -> Mat<f32> {
    let (n, l) = (m.nrows(), m.ncols());
    let mut q = m.to_owned();
    for j in 0..l {
        for _ in 0..2 {
            for p in 0..j {
                let d: f64 = (0..n).map(|i| q[(i, p)] as f64 * q[(i, j)] as f64).sum();
                for i in 0..n {
                    q[(i, j)] -= (d as f32) * q[(i, p)];
                }
            }
        }
        let norm = (0..n)
            .map(|i| (q[(i, j)] as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let inv = if norm > 0.0 { 1.0 / norm } else { 0.0 };
        for i in 0..n {
            q[(i, j)] = (q[(i, j)] as f64 * inv) as f32;
        }
    }
    q
}

/// `||V_a^T V_b||_F^2 / k`: 1 for the same subspace, k/dim on average for
/// random ones. NaN when the bases do not match in size.
pub fn overlap(a: &Basis, b: &Basis) -> f64 {
    if a.dim != b.dim || a.k != b.k || a.k == 0 {
        return f64::NAN;
    }
    let mut s = 0.0f64;
    for ra in a.v.chunks(a.dim) {
        for rb in b.v.chunks(b.dim) {
            let d: f64 = ra.iter().zip(rb).map(|(&x, &y)| x as f64 * y as f64).sum();
            s += d * d;
        }
    }
    s / a.k as f64
}

/// Mean and standard deviation of the overlap of two independent uniformly
/// random k-dimensional subspaces of R^n: `tr(P_a P_b)` has mean `k^2 / n`
/// and variance `2 k^2 (n - k)^2 / (n^2 (n - 1) (n + 2))`.
pub fn overlap_null(k: usize, n: usize) -> (f64, f64) {
    let (k, n) = (k as f64, n as f64);
    let var = 2.0 * k * k * (n - k).powi(2) / (n * n * (n - 1.0) * (n + 2.0));
    (k / n, var.sqrt() / k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian_basis(n: usize, k: usize, seed: u64) -> Basis {
        let g = crate::null::gaussian_vec(n * k, 1.0, seed);
        let q = orthonormal(Mat::<f32>::from_fn(n, k, |i, j| g[i * k + j]).as_ref());
        let mut v = vec![0.0f32; k * n];
        for r in 0..k {
            for i in 0..n {
                v[r * n + i] = q[(i, r)];
            }
        }
        Basis { dim: n, k, v }
    }

    #[test]
    fn random_subspaces_match_the_closed_form_null() {
        let (n, k, draws) = (48, 6, 400);
        let o: Vec<f64> = (0..draws)
            .map(|t| {
                overlap(
                    &gaussian_basis(n, k, 2 * t),
                    &gaussian_basis(n, k, 2 * t + 1),
                )
            })
            .collect();
        let mean = o.iter().sum::<f64>() / draws as f64;
        let sd = (o.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (draws - 1) as f64).sqrt();
        let (m0, s0) = overlap_null(k, n);
        assert!(
            (mean - m0).abs() < 3.0 * s0 / (draws as f64).sqrt() + 1e-3,
            "{mean} vs {m0}"
        );
        assert!((sd / s0 - 1.0).abs() < 0.15, "{sd} vs {s0}");
    }

    /// On a flat spectrum the range finder keeps a trace of its random
    /// start, so two independent matrices sketched from one start overlap
    /// above the random level; each matrix gets its own start, and then
    /// their overlap matches the null.
    #[test]
    fn independent_flat_matrices_overlap_at_the_random_level() {
        let (rows, cols, pairs) = (256, 64, 40);
        let (m0, s0) = overlap_null(k_for(rows, cols), cols);
        let mean = |same_start: bool| -> f64 {
            (0..pairs)
                .map(|t| {
                    let a = crate::null::gaussian_vec(rows * cols, 1.0, 100 + 2 * t);
                    let b = crate::null::gaussian_vec(rows * cols, 1.0, 101 + 2 * t);
                    let (sa, sb) = if same_start {
                        (7, 7)
                    } else {
                        (2 * t, 2 * t + 1)
                    };
                    overlap(
                        &top_basis(&a, rows, cols, StreamSide::Cols, sa),
                        &top_basis(&b, rows, cols, StreamSide::Cols, sb),
                    )
                })
                .sum::<f64>()
                / pairs as f64
        };
        let band = 3.0 * s0 / (pairs as f64).sqrt();
        let own = mean(false);
        assert!(
            (own - m0).abs() < band,
            "own starts: {own} vs null {m0} +- {band}"
        );
        let shared = mean(true);
        assert!(
            shared > m0 + band,
            "one start: {shared} vs null {m0} +- {band}"
        );
    }

    #[test]
    fn top_basis_finds_a_planted_subspace_on_either_side() {
        let (rows, cols, k) = (96, 40, 4);
        let basis = gaussian_basis(cols, k, 3);
        let coef = crate::null::gaussian_vec(rows * k, 3.0, 4);
        let noise = crate::null::gaussian_vec(rows * cols, 0.05, 5);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| {
                let (r, c) = (i / cols, i % cols);
                (0..k)
                    .map(|j| coef[r * k + j] * basis.v[j * cols + c])
                    .sum::<f32>()
                    + noise[i]
            })
            .collect();
        let b = top_basis(&x, rows, cols, StreamSide::Cols, 1);
        assert_eq!((b.dim, b.k), (cols, 8));
        // The top 4 found span the planted 4.
        let top4 = Basis {
            dim: cols,
            k,
            v: b.v[..k * cols].to_vec(),
        };
        assert!(overlap(&top4, &basis) > 0.99, "{}", overlap(&top4, &basis));
        let xt: Vec<f32> = (0..rows * cols)
            .map(|i| x[(i % rows) * cols + i / rows])
            .collect();
        let bt = top_basis(&xt, cols, rows, StreamSide::Rows, 1);
        let top4t = Basis {
            dim: cols,
            k,
            v: bt.v[..k * cols].to_vec(),
        };
        assert!(overlap(&top4t, &basis) > 0.99);
    }

    #[test]
    fn sides_follow_the_model_width() {
        let m = [(64, 64), (16, 64), (256, 64), (64, 256)];
        assert_eq!(model_width([], m), Some(64));
        assert_eq!(model_width([32, 32], m), Some(32));
        assert_eq!(stream_side(256, 64, 64, "up"), Some(StreamSide::Cols));
        assert_eq!(stream_side(64, 256, 64, "down"), Some(StreamSide::Rows));
        assert_eq!(stream_side(64, 64, 64, "o"), Some(StreamSide::Rows));
        assert_eq!(stream_side(64, 64, 64, "q"), Some(StreamSide::Cols));
        assert_eq!(stream_side(32, 16, 64, "q"), None);
    }
}
