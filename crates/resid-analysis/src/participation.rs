//! Participation ratio `PR = (sum s^2)^2 / sum s^4 = ||R||_F^4 / ||G||_F^2`
//! with G the Gram matrix of R's smaller side (one faer matmul, no SVD), and
//! stable rank `||R||_F^2 / s_max^2` with `s_max^2` the top eigenvalue of G by
//! power iteration. Null: Marchenko-Pastur, `p / (1 + p/q)`.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// Spectral figures of a matrix.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spectral {
    pub pr: f64,
    pub stable_rank: f64,
    /// Largest squared singular value.
    pub s_max2: f64,
}

/// Parallelism for faer on the current rayon pool.
pub fn par() -> Par {
    let n = rayon::current_num_threads();
    if n > 1 {
        Par::rayon(n)
    } else {
        Par::Seq
    }
}

/// The Gram matrix of the smaller side of row-major `x` (rows x cols), in f32.
pub fn gram(x: &[f32], rows: usize, cols: usize) -> Mat<f32> {
    let r = MatRef::from_row_major_slice(x, rows, cols);
    if cols <= rows {
        let mut g = Mat::<f32>::zeros(cols, cols);
        matmul(g.as_mut(), Accum::Replace, r.transpose(), r, 1.0f32, par());
        g
    } else {
        let mut g = Mat::<f32>::zeros(rows, rows);
        matmul(g.as_mut(), Accum::Replace, r, r.transpose(), 1.0f32, par());
        g
    }
}

/// PR and stable rank of row-major `x` (finite values). `fro2` is `sum x^2`.
pub fn spectral(x: &[f32], rows: usize, cols: usize, fro2: f64, seed: u64) -> Spectral {
    let g = gram(x, rows, cols);
    let p = g.nrows();
    let mut g2 = 0.0f64;
    for j in 0..p {
        g2 += g
            .col_as_slice(j)
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>();
    }
    let pr = if g2 > 0.0 { fro2 * fro2 / g2 } else { 0.0 };
    let s_max2 = top_eigenvalue(g.as_ref(), seed);
    let stable_rank = if s_max2 > 0.0 { fro2 / s_max2 } else { 0.0 };
    Spectral {
        pr,
        stable_rank,
        s_max2,
    }
}

/// Largest eigenvalue of a symmetric PSD matrix by power iteration with the
/// Rayleigh quotient (at most 500 steps, stops at relative change 1e-9).
pub fn top_eigenvalue(g: MatRef<'_, f32>, seed: u64) -> f64 {
    let p = g.nrows();
    if p == 0 {
        return 0.0;
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = Mat::<f32>::from_fn(p, 1, |_, _| {
        let z: f64 = StandardNormal.sample(&mut rng);
        z as f32
    });
    let mut w = Mat::<f32>::zeros(p, 1);
    let mut lambda = 0.0f64;
    for _ in 0..500 {
        let norm = v
            .col_as_slice(0)
            .iter()
            .map(|&a| (a as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        v.col_as_slice_mut(0)
            .iter_mut()
            .for_each(|a| *a = (*a as f64 / norm) as f32);
        matmul(w.as_mut(), Accum::Replace, g, v.as_ref(), 1.0f32, Par::Seq);
        let rq: f64 = v
            .col_as_slice(0)
            .iter()
            .zip(w.col_as_slice(0))
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        std::mem::swap(&mut v, &mut w);
        let done = (rq - lambda).abs() <= 1e-9 * rq.abs();
        lambda = rq;
        if done {
            break;
        }
    }
    lambda
}

/// Marchenko-Pastur expectation of the PR of an i.i.d. p x q matrix (p <= q).
pub fn mp_null(rows: usize, cols: usize) -> f64 {
    let p = rows.min(cols) as f64;
    let q = rows.max(cols) as f64;
    p / (1.0 + p / q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fro2(x: &[f32]) -> f64 {
        x.iter().map(|&v| (v as f64).powi(2)).sum()
    }

    fn pr_svd(x: &[f32], rows: usize, cols: usize) -> (f64, f64) {
        let m = Mat::<f64>::from_fn(rows, cols, |i, j| x[i * cols + j] as f64);
        let s = m.as_ref().singular_values().unwrap();
        let s2: f64 = s.iter().map(|v| v * v).sum();
        let s4: f64 = s.iter().map(|v| v.powi(4)).sum();
        (s2 * s2 / s4, s2 / (s[0] * s[0]))
    }

    #[test]
    fn identity_and_rank_one() {
        let n = 64;
        let mut eye = vec![0.0f32; n * n];
        for i in 0..n {
            eye[i * n + i] = 1.0;
        }
        let s = spectral(&eye, n, n, fro2(&eye), 1);
        assert!((s.pr - n as f64).abs() < 1e-6, "{s:?}");
        // Identity-like: a 64 x 100 matrix with orthonormal rows.
        let mut wide = vec![0.0f32; n * 100];
        for i in 0..n {
            wide[i * 100 + i + 10] = 3.0;
        }
        let s = spectral(&wide, n, 100, fro2(&wide), 1);
        assert!((s.pr - n as f64).abs() < 1e-6, "{s:?}");
        assert!((s.stable_rank - n as f64).abs() < 1e-3, "{s:?}");
        let u: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let v: Vec<f32> = (0..30).map(|j| (j as f32 * 0.11).cos() + 0.2).collect();
        let r1: Vec<f32> = (0..50 * 30).map(|k| u[k / 30] * v[k % 30]).collect();
        let s = spectral(&r1, 50, 30, fro2(&r1), 1);
        assert!((s.pr - 1.0).abs() < 1e-4, "{s:?}");
        assert!((s.stable_rank - 1.0).abs() < 1e-4, "{s:?}");
    }

    #[test]
    fn equals_svd_on_random_matrices() {
        for (i, &(rows, cols)) in [(40usize, 70usize), (90, 33), (128, 128), (7, 300)]
            .iter()
            .enumerate()
        {
            let mut x = crate::null::gaussian_vec(rows * cols, 1.0, 100 + i as u64);
            // Give it some structure so PR is not just the MP value.
            for (k, v) in x.iter_mut().enumerate() {
                *v += ((k / cols) as f32 * 0.05).sin() * 2.0;
            }
            let s = spectral(&x, rows, cols, fro2(&x), 2);
            let (pr, sr) = pr_svd(&x, rows, cols);
            assert!(
                (s.pr / pr - 1.0).abs() < 1e-4,
                "{rows}x{cols}: {} vs {pr}",
                s.pr
            );
            assert!(
                (s.stable_rank / sr - 1.0).abs() < 1e-3,
                "{rows}x{cols}: {} vs {sr}",
                s.stable_rank
            );
        }
    }

    #[test]
    fn gaussian_near_marchenko_pastur() {
        let (rows, cols) = (200, 400);
        let x = crate::null::gaussian_vec(rows * cols, 0.1, 3);
        let s = spectral(&x, rows, cols, fro2(&x), 4);
        let null = mp_null(rows, cols);
        assert!((s.pr / null - 1.0).abs() < 0.03, "{} vs {null}", s.pr);
    }
}
