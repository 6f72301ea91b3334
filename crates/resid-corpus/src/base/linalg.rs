//! The few dense linear-algebra pieces the base needs, on top of faer:
//! row-major f32 products for the forward pass, and f64 SVD (dense or
//! randomised), ridge solves and spectral norms for the derivation.
//! Kept in one place so the faer API (which changes between versions) is
//! touched here only.

use faer::linalg::solvers::Solve;
use faer::{Accum, Mat, MatMut, MatRef, Par, Side};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// `a[m,k] @ w[n,k]^T -> [m,n]`, all row-major (torch `Linear` layout for `w`).
pub fn mm_bt(a: &[f32], m: usize, k: usize, w: &[f32], n: usize, par: Par) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    mm_bt_into(&mut out, a, m, k, w, n, par);
    out
}

/// `out[m,n] = a[m,k] @ w[n,k]^T`, row-major.
pub fn mm_bt_into(out: &mut [f32], a: &[f32], m: usize, k: usize, w: &[f32], n: usize, par: Par) {
    let dst = MatMut::from_row_major_slice_mut(out, m, n);
    let lhs = MatRef::from_row_major_slice(a, m, k);
    let rhs = MatRef::from_row_major_slice(w, n, k).transpose();
    faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, par);
}

/// `a[m,k] @ b[k,n] -> [m,n]`, row-major.
pub fn mm(a: &[f32], m: usize, k: usize, b: &[f32], n: usize, par: Par) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    let dst = MatMut::from_row_major_slice_mut(&mut out, m, n);
    let lhs = MatRef::from_row_major_slice(a, m, k);
    let rhs = MatRef::from_row_major_slice(b, k, n);
    faer::linalg::matmul::matmul(dst, Accum::Replace, lhs, rhs, 1.0f32, par);
    out
}

/// A row-major f32 buffer as an f64 matrix.
pub fn to_mat(data: &[f32], rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |i, j| data[i * cols + j] as f64)
}

/// An f64 matrix as a row-major f32 buffer.
pub fn from_mat(m: MatRef<'_, f64>) -> Vec<f32> {
    let mut out = Vec::with_capacity(m.nrows() * m.ncols());
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            out.push(m[(i, j)] as f32);
        }
    }
    out
}

/// A seeded matrix of i.i.d. N(0, std^2) entries.
pub fn gaussian(rows: usize, cols: usize, std: f64, rng: &mut ChaCha8Rng) -> Mat<f64> {
    Mat::from_fn(rows, cols, |_, _| {
        let z: f64 = StandardNormal.sample(rng);
        z * std
    })
}

/// Thin SVD `(U [m,r], s [r], V [n,r])` of a dense matrix, singular values
/// non-increasing, truncated to `rank`.
pub fn svd_dense(a: MatRef<'_, f64>, rank: usize) -> (Mat<f64>, Vec<f64>, Mat<f64>) {
    let svd = a.thin_svd().expect("SVD converges");
    let r = rank.min(a.nrows()).min(a.ncols());
    // Sorted here, not trusted: with pulp's AVX-512 paths faer 0.24 returned
    // a correct but unsorted SVD (zeros first) for the rank-deficient log-ratio.
    let sv = svd.S().column_vector();
    let mut order: Vec<usize> = (0..sv.nrows()).collect();
    order.sort_by(|&i, &j| sv[j].total_cmp(&sv[i]));
    order.truncate(r);
    let u = Mat::from_fn(a.nrows(), r, |i, j| svd.U()[(i, order[j])]);
    let v = Mat::from_fn(a.ncols(), r, |i, j| svd.V()[(i, order[j])]);
    let s: Vec<f64> = order.iter().map(|&i| sv[i]).collect();
    (u, s, v)
}

/// Randomised truncated SVD (Halko, Martinsson & Tropp 2011) of an
/// `m x n` operator given only by its products: `op(X) = A X` and
/// `op_t(Y) = A^T Y`. Oversampling 10, `power` subspace iterations.
pub fn svd_randomized(
    m: usize,
    n: usize,
    rank: usize,
    power: usize,
    seed: u64,
    op: &dyn Fn(MatRef<'_, f64>) -> Mat<f64>,
    op_t: &dyn Fn(MatRef<'_, f64>) -> Mat<f64>,
) -> (Mat<f64>, Vec<f64>, Mat<f64>) {
    let l = (rank + 10).min(m).min(n);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let omega = gaussian(n, l, 1.0, &mut rng);
    let mut q = op(omega.as_ref()).qr().compute_thin_Q();
    for _ in 0..power {
        let z = op_t(q.as_ref()).qr().compute_thin_Q();
        q = op(z.as_ref()).qr().compute_thin_Q();
    }
    // B = Q^T A, held as B^T = A^T Q [n, l].
    let bt = op_t(q.as_ref());
    let (ub, s, vb) = svd_dense(bt.as_ref(), rank);
    // A ~ Q B = Q (ub s vb^T)^T = (Q vb) s ub^T.
    let u = &q * &vb;
    (u, s, ub)
}

/// Ridge least squares: `W [p, q]` minimising `|X W - Y|^2 + lambda |W|^2`,
/// from the normal equations (`X [n, p]` with p small).
pub fn ridge(x: MatRef<'_, f64>, y: MatRef<'_, f64>, lambda: f64) -> Mat<f64> {
    let xtx = x.transpose() * x;
    let xty = x.transpose() * y;
    ridge_normal(xtx, xty, lambda)
}

/// Solves `(G + lambda I) W = R` for symmetric positive semi-definite `G`.
pub fn ridge_normal(mut g: Mat<f64>, mut r: Mat<f64>, lambda: f64) -> Mat<f64> {
    for i in 0..g.nrows() {
        g[(i, i)] += lambda;
    }
    let llt = g
        .llt(Side::Lower)
        .expect("ridge system is positive definite");
    llt.solve_in_place(r.as_mut());
    r
}

/// Root mean square of a buffer.
pub fn rms(x: &[f32]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Largest singular value of a row-major `[rows, cols]` matrix, from the
/// eigenvalues of its smaller Gram matrix.
pub fn spectral_norm(x: &[f32], rows: usize, cols: usize) -> f64 {
    let a = to_mat(x, rows, cols);
    let g = if rows >= cols {
        a.transpose() * &a
    } else {
        &a * a.transpose()
    };
    let ev = g
        .self_adjoint_eigenvalues(Side::Lower)
        .expect("eigenvalues converge");
    ev.iter().cloned().fold(0.0, f64::max).max(0.0).sqrt()
}

/// `d` orthonormal vectors of length `n` (as columns), each summing to zero:
/// DCT-II basis functions 1..=d. LayerNorm removes the mean, so features kept
/// in these directions pass through it untouched. Needs `d < n`.
pub fn zero_mean_basis(n: usize, d: usize) -> Mat<f64> {
    assert!(
        d < n,
        "a zero-mean basis of {n}-vectors has at most {} vectors",
        n - 1
    );
    Mat::from_fn(n, d, |i, k| {
        let k = k + 1;
        (2.0 / n as f64).sqrt()
            * (std::f64::consts::PI * k as f64 * (i as f64 + 0.5) / n as f64).cos()
    })
}

/// Use all cores for faer calls made from the derivation (not from inside rayon tasks).
pub fn par() -> Par {
    Par::rayon(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_naive_loops() {
        let a: Vec<f32> = (0..6).map(|i| i as f32).collect(); // [2,3]
        let w: Vec<f32> = (0..12).map(|i| (i as f32) * 0.5 - 2.0).collect(); // [4,3]
        let out = mm_bt(&a, 2, 3, &w, 4, Par::Seq);
        for i in 0..2 {
            for j in 0..4 {
                let want: f32 = (0..3).map(|k| a[i * 3 + k] * w[j * 3 + k]).sum();
                assert!((out[i * 4 + j] - want).abs() < 1e-5);
            }
        }
        let b: Vec<f32> = (0..12).map(|i| i as f32).collect(); // [3,4]
        let out = mm(&a, 2, 3, &b, 4, Par::Seq);
        let want: f32 = (0..3).map(|k| a[3 + k] * b[k * 4 + 2]).sum();
        assert!((out[4 + 2] - want).abs() < 1e-5);
    }

    #[test]
    fn randomized_svd_recovers_a_low_rank_matrix() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let a = gaussian(60, 5, 1.0, &mut rng) * gaussian(5, 40, 1.0, &mut rng);
        let (u, s, v) = svd_randomized(60, 40, 5, 1, 7, &|x| &a * x, &|y| a.transpose() * y);
        let (_, sd, _) = svd_dense(a.as_ref(), 5);
        for (x, y) in s.iter().zip(&sd) {
            assert!((x - y).abs() < 1e-8 * sd[0], "{x} vs {y}");
        }
        let rec = &u * Mat::from_fn(5, 5, |i, j| if i == j { s[i] } else { 0.0 }) * v.transpose();
        assert!((&rec - &a).norm_l2() < 1e-8 * a.norm_l2());
    }

    #[test]
    fn ridge_solves_an_exact_system() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let x = gaussian(50, 4, 1.0, &mut rng);
        let w = gaussian(4, 3, 1.0, &mut rng);
        let y = &x * &w;
        let got = ridge(x.as_ref(), y.as_ref(), 1e-12);
        assert!((&got - &w).norm_l2() < 1e-8);
    }

    #[test]
    fn spectral_norm_of_a_diagonal() {
        let x = [3.0f32, 0.0, 0.0, -5.0, 0.0, 0.0]; // [3,2]: diag(3, -5)
        assert!((spectral_norm(&x, 3, 2) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn zero_mean_basis_is_orthonormal_and_centred() {
        let b = zero_mean_basis(10, 9);
        let g = b.transpose() * &b;
        for i in 0..9 {
            let s: f64 = (0..10).map(|r| b[(r, i)]).sum();
            assert!(s.abs() < 1e-12);
            for j in 0..9 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((g[(i, j)] - want).abs() < 1e-12);
            }
        }
    }
}
