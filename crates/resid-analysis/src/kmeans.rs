//! Clustering of rows: k-means++ (seeded) then Lloyd iterations, best of a few
//! seeded restarts, variance explained `VE = 1 - SSW/SST`. Distances come from
//! one faer matmul per iteration (`|x|^2 - 2 x.c + |c|^2`), assignments and
//! centroid sums as a second matmul; SSW is the f64 sum of the last
//! iteration's distances.
//!
//! Cost is bounded per matrix: at most [`BUDGET`] floats are clustered (rows
//! sampled with a seed, at least [`MIN_ROWS`], at most [`MAX_ROWS`]), and
//! samples over [`FULL_RESTARTS_FLOATS`] get one restart instead of
//! [`RESTARTS`]. Both depend only on the shape, so the Gaussian and shuffled
//! nulls are fitted on the same sampled shape with the same restarts.
//!
//! Nulls (docs/MEASURES.md, "Clustering"): the entry-shuffled rows keep the
//! values (heavy tails) but destroy low rank; [`same_covariance_gaussian`]
//! keeps the rows' covariance (the spectrum, so low rank) but has no types.
//! A residual is clustered only when it beats both.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::moments::ordered_sum;

/// Rows sampled at most.
pub const MAX_ROWS: usize = 4096;
/// Rows sampled at least (when the matrix has them), whatever the width.
pub const MIN_ROWS: usize = 256;
/// Floats (rows x cols) clustered at most, unless [`MIN_ROWS`] needs more:
/// 2 MiB of f32, so k-means costs about the same on every large matrix.
pub const BUDGET: usize = 1 << 19;
/// Samples up to this many floats keep all [`RESTARTS`]; larger ones get one
/// (every matrix of the small test models is below it, so they are unchanged).
pub const FULL_RESTARTS_FLOATS: usize = 1 << 18;
/// The K values reported.
pub const KS: [usize; 4] = [2, 4, 8, 16];
/// Seeded restarts; the lowest SSW wins.
pub const RESTARTS: usize = 3;
/// Lloyd iterations at most per restart.
pub const MAX_ITERS: usize = 25;

/// Rows to cluster for a rows x cols matrix: all if they fit, else as many
/// as [`BUDGET`] allows, clamped to [`MIN_ROWS`, `MAX_ROWS`].
pub fn rows_for(rows: usize, cols: usize) -> usize {
    rows.min((BUDGET / cols.max(1)).clamp(MIN_ROWS, MAX_ROWS))
}

/// Restarts for clustering m rows of d columns.
pub fn restarts_for(m: usize, d: usize) -> usize {
    if m * d <= FULL_RESTARTS_FLOATS {
        RESTARTS
    } else {
        1
    }
}

/// Up to `max` distinct row indices out of `rows`, sorted, from `seed`
/// (all rows when there are no more than `max`).
pub fn sample_rows(rows: usize, max: usize, seed: u64) -> Vec<usize> {
    if rows <= max {
        return (0..rows).collect();
    }
    let mut idx: Vec<usize> = (0..rows).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in 0..max {
        let j = rng.random_range(i..rows);
        idx.swap(i, j);
    }
    idx.truncate(max);
    idx.sort_unstable();
    idx
}

/// Fisher-Yates shuffle of all entries from a seed.
pub fn shuffle(x: &mut [f32], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..x.len()).rev() {
        let j = rng.random_range(0..=i);
        x.swap(i, j);
    }
}

/// Total sum of squares about the mean row.
pub fn sst(x: &[f32], m: usize, d: usize) -> f64 {
    let mut mean = vec![0.0f64; d];
    for r in 0..m {
        for (a, &v) in mean.iter_mut().zip(&x[r * d..(r + 1) * d]) {
            *a += v as f64;
        }
    }
    mean.iter_mut().for_each(|a| *a /= m as f64);
    ordered_sum((0..m).into_par_iter().map(|r| {
        x[r * d..(r + 1) * d]
            .iter()
            .zip(&mean)
            .map(|(&v, &mu)| (v as f64 - mu).powi(2))
            .sum::<f64>()
    }))
}

/// Within-cluster sum of squares of the best of `restarts` k-means runs.
pub fn kmeans_ssw(x: &[f32], m: usize, d: usize, k: usize, seed: u64, restarts: usize) -> f64 {
    (0..restarts)
        .map(|t| one_run(x, m, d, k, crate::null::mix(seed, t as u64)))
        .fold(f64::INFINITY, f64::min)
}

/// VE = 1 - SSW/SST for each K in `ks` (NaN where K >= rows or SST = 0),
/// with [`restarts_for`] restarts.
pub fn variance_explained(x: &[f32], m: usize, d: usize, ks: &[usize], seed: u64) -> Vec<f64> {
    let total = sst(x, m, d);
    let restarts = restarts_for(m, d);
    ks.iter()
        .map(|&k| {
            if k >= m || total <= 0.0 {
                f64::NAN
            } else {
                1.0 - kmeans_ssw(x, m, d, k, crate::null::mix(seed, k as u64), restarts) / total
            }
        })
        .collect()
}

/// `m` Gaussian rows with the sample covariance of the rows of `x` (m x d,
/// row-major): the same spectrum as the residual's rows, and no discrete
/// types. With `X_c` the centred rows, `C = X_c^T X_c / m`; for d <= m the
/// rows are `z V diag(sqrt(lambda))` from C's eigendecomposition (cost
/// m d^2 + d^3), else `Z X_c / sqrt(m)` with Z an m x m Gaussian (m^2 d),
/// whose rows have covariance exactly C in expectation.
pub fn same_covariance_gaussian(x: &[f32], m: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut mean = vec![0.0f64; d];
    for r in x.chunks(d) {
        mean.iter_mut().zip(r).for_each(|(a, &v)| *a += v as f64);
    }
    mean.iter_mut().for_each(|a| *a /= m.max(1) as f64);
    let xc = Mat::<f32>::from_fn(m, d, |i, j| (x[i * d + j] as f64 - mean[j]) as f32);
    let par = crate::participation::par();
    let (z, f) = if d <= m {
        let mut c = Mat::<f32>::zeros(d, d);
        matmul(
            c.as_mut(),
            Accum::Replace,
            xc.transpose(),
            xc.as_ref(),
            1.0 / m as f32,
            par,
        );
        let Ok(e) = c.self_adjoint_eigen(faer::Side::Lower) else {
            return crate::null::gaussian_vec(m * d, 0.0, seed);
        };
        let (u, s) = (e.U(), e.S().column_vector());
        // F = diag(sqrt(lambda)) V^T (d x d), rows z F.
        let f = Mat::<f32>::from_fn(d, d, |i, j| s[i].max(0.0).sqrt() * u[(j, i)]);
        let g = crate::null::gaussian_vec(m * d, 1.0, seed);
        (Mat::<f32>::from_fn(m, d, |i, j| g[i * d + j]), f)
    } else {
        let g = crate::null::gaussian_vec(m * m, 1.0 / (m as f64).sqrt(), seed);
        (Mat::<f32>::from_fn(m, m, |i, j| g[i * m + j]), xc)
    };
    let mut y = Mat::<f32>::zeros(m, d);
    matmul(
        y.as_mut(),
        Accum::Replace,
        z.as_ref(),
        f.as_ref(),
        1.0f32,
        par,
    );
    let mut out = vec![0.0f32; m * d];
    for (i, row) in out.chunks_mut(d).enumerate() {
        row.iter_mut().enumerate().for_each(|(j, o)| *o = y[(i, j)]);
    }
    out
}

fn one_run(x: &[f32], m: usize, d: usize, k: usize, seed: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let xm = MatRef::from_row_major_slice(x, m, d);
    let xnorm: Vec<f32> = (0..m)
        .into_par_iter()
        .map(|r| x[r * d..(r + 1) * d].iter().map(|v| v * v).sum())
        .collect();
    // Squared distances of every row to one centre: |x|^2 - 2 x.c + |c|^2
    // with x.c from one matrix-vector product.
    let mut dotc = Mat::<f32>::zeros(m, 1);
    let mut dist_to = |c: &[f32], out: &mut Vec<f64>, first: bool| {
        let cm = MatRef::from_column_major_slice(c, d, 1);
        matmul(
            dotc.as_mut(),
            Accum::Replace,
            xm,
            cm,
            1.0f32,
            crate::participation::par(),
        );
        let cn: f32 = c.iter().map(|v| v * v).sum();
        let col = dotc.col_as_slice(0);
        for r in 0..m {
            let v = ((xnorm[r] - 2.0 * col[r] + cn).max(0.0)) as f64;
            if first || v < out[r] {
                out[r] = v;
            }
        }
    };
    // k-means++ seeding.
    let mut centers = vec![0.0f32; k * d];
    let first = rng.random_range(0..m);
    centers[..d].copy_from_slice(&x[first * d..(first + 1) * d]);
    let mut dmin = vec![0.0f64; m];
    dist_to(&centers[..d], &mut dmin, true);
    for c in 1..k {
        let tot: f64 = dmin.iter().sum();
        let pick = if tot > 0.0 {
            let mut u = rng.random::<f64>() * tot;
            let mut p = m - 1;
            for (i, &w) in dmin.iter().enumerate() {
                if u < w {
                    p = i;
                    break;
                }
                u -= w;
            }
            p
        } else {
            rng.random_range(0..m)
        };
        centers[c * d..(c + 1) * d].copy_from_slice(&x[pick * d..(pick + 1) * d]);
        let cen = centers[c * d..(c + 1) * d].to_vec();
        dist_to(&cen, &mut dmin, false);
    }
    // Lloyd iterations; the objective of the last assignment is the SSW.
    let mut assign = vec![usize::MAX; m];
    let mut dots = Mat::<f32>::zeros(m, k);
    let mut prev_obj = f64::INFINITY;
    let mut iter = 0;
    loop {
        let cm = MatRef::from_row_major_slice(&centers, k, d);
        matmul(
            dots.as_mut(),
            Accum::Replace,
            xm,
            cm.transpose(),
            1.0f32,
            crate::participation::par(),
        );
        let cnorm: Vec<f32> = (0..k)
            .map(|c| centers[c * d..(c + 1) * d].iter().map(|v| v * v).sum())
            .collect();
        let dref = dots.as_ref();
        let best: Vec<(f32, usize)> = (0..m)
            .into_par_iter()
            .map(|r| {
                let mut best = (f32::INFINITY, 0);
                for c in 0..k {
                    let dist = xnorm[r] - 2.0 * dref[(r, c)] + cnorm[c];
                    if dist < best.0 {
                        best = (dist, c);
                    }
                }
                best
            })
            .collect();
        let new: Vec<usize> = best.iter().map(|b| b.1).collect();
        let obj: f64 = best.iter().map(|b| b.0.max(0.0) as f64).sum();
        iter += 1;
        // Stop when nothing moves, the objective has stalled (relative
        // change below 1e-5: on noise-like rows Lloyd otherwise shuffles a
        // few boundary rows for many iterations without changing VE), or
        // at the iteration cap.
        if new == assign
            || (prev_obj.is_finite() && (prev_obj - obj).abs() <= 1e-5 * prev_obj)
            || iter >= MAX_ITERS
        {
            return obj;
        }
        prev_obj = obj;
        assign = new;
        // Centroid sums as one matmul: onehot^T (k x m) times X (m x d).
        let mut onehot = Mat::<f32>::zeros(m, k);
        let mut counts = vec![0usize; k];
        for (r, &c) in assign.iter().enumerate() {
            onehot[(r, c)] = 1.0;
            counts[c] += 1;
        }
        let mut sums = Mat::<f32>::zeros(k, d);
        matmul(
            sums.as_mut(),
            Accum::Replace,
            onehot.as_ref().transpose(),
            xm,
            1.0f32,
            crate::participation::par(),
        );
        for c in 0..k {
            if counts[c] > 0 {
                let inv = 1.0 / counts[c] as f32;
                for (j, ce) in centers[c * d..(c + 1) * d].iter_mut().enumerate() {
                    *ce = sums[(c, j)] * inv;
                }
            }
            // An empty cluster keeps its old centre.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planted_clusters_explained_noise_not() {
        let (m, d) = (600, 32);
        let noise = crate::null::gaussian_vec(m * d, 0.1, 8);
        let centres = crate::null::gaussian_vec(4 * d, 1.0, 9);
        let x: Vec<f32> = (0..m * d)
            .map(|i| centres[(i / d % 4) * d + i % d] + noise[i])
            .collect();
        let ve = variance_explained(&x, m, d, &KS, 1);
        assert!(ve[0] > 0.2 && ve[0] < ve[1], "{ve:?}");
        assert!(ve[1] > 0.95, "{ve:?}");
        assert!(ve.windows(2).all(|w| w[1] >= w[0] - 1e-9), "{ve:?}");
        let g = crate::null::gaussian_vec(m * d, 1.0, 10);
        let vn = variance_explained(&g, m, d, &KS, 1);
        assert!(vn[1] < 0.15, "{vn:?}");
    }

    /// The same-covariance null keeps the spectrum: a rank-3 set of rows
    /// gives rank-3 Gaussian rows (k-means VE as high as the rows' own), and
    /// planted types are beaten by far. Both branches (d <= m, d > m).
    #[test]
    fn same_covariance_null_keeps_low_rank_not_types() {
        for (m, d) in [(400, 24), (60, 200)] {
            let coef = crate::null::gaussian_vec(m * 3, 1.0, 1);
            let dirs = crate::null::gaussian_vec(3 * d, 1.0, 2);
            let x: Vec<f32> = (0..m * d)
                .map(|i| {
                    (0..3)
                        .map(|k| coef[i / d * 3 + k] * dirs[k * d + i % d])
                        .sum()
                })
                .collect();
            let y = same_covariance_gaussian(&x, m, d, 7);
            // Rank 3: the 4th eigenvalue of y's covariance vanishes.
            let g = crate::participation::spectral(
                &y,
                m,
                d,
                y.iter().map(|v| (*v as f64).powi(2)).sum(),
                1,
            );
            assert!(g.pr < 3.05 && g.pr > 1.5, "{m}x{d}: PR {}", g.pr);
            let (vx, vy) = (
                variance_explained(&x, m, d, &[8], 3)[0],
                variance_explained(&y, m, d, &[8], 3)[0],
            );
            assert!((vx - vy).abs() < 0.1, "{m}x{d}: {vx} vs {vy}");
        }
        let (m, d) = (400, 24);
        let centres = crate::null::gaussian_vec(4 * d, 1.0, 9);
        let noise = crate::null::gaussian_vec(m * d, 0.1, 8);
        let x: Vec<f32> = (0..m * d)
            .map(|i| centres[(i / d % 4) * d + i % d] + noise[i])
            .collect();
        let y = same_covariance_gaussian(&x, m, d, 7);
        let (vx, vy) = (
            variance_explained(&x, m, d, &[4], 3)[0],
            variance_explained(&y, m, d, &[4], 3)[0],
        );
        assert!(vx > 0.95 && vx - vy > 0.2, "{vx} vs {vy}");
    }

    #[test]
    fn budget_bounds_the_rows_and_keeps_small_matrices_whole() {
        // Small (test-model) shapes: every row, all restarts, as before.
        for (r, c) in [(16, 48), (256, 64), (600, 32), (512, 128)] {
            assert_eq!(rows_for(r, c), r);
            assert_eq!(restarts_for(r, c), RESTARTS);
        }
        // Narrow and tall: the old cap of 4096 rows.
        assert_eq!(rows_for(50_000, 64), MAX_ROWS);
        assert_eq!(restarts_for(MAX_ROWS, 64), RESTARTS);
        // Large: within the float budget, one restart.
        for (r, c) in [(2048, 768), (32_000, 768), (5632, 2048), (32_000, 4096)] {
            let m = rows_for(r, c);
            let cap = BUDGET.max(MIN_ROWS * c);
            assert!(m * c <= cap && m * c > cap / 2, "{r}x{c}: {m}");
            assert!(m >= MIN_ROWS && m < r, "{r}x{c}: {m}");
            assert_eq!(restarts_for(m, c), 1);
        }
        // Very wide: the floor of MIN_ROWS wins over the budget.
        assert_eq!(rows_for(11_008, 8192), MIN_ROWS);
        assert_eq!(rows_for(100, 8192), 100);
    }

    #[test]
    fn samples_are_distinct_and_seeded() {
        let a = sample_rows(10_000, 4096, 3);
        assert_eq!(a.len(), 4096);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, sample_rows(10_000, 4096, 3));
        assert_eq!(sample_rows(10, 4096, 3), (0..10).collect::<Vec<_>>());
    }
}
