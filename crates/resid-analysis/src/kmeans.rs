//! Clustering of rows: k-means++ (seeded) then Lloyd iterations, best of a few
//! seeded restarts, variance explained `VE = 1 - SSW/SST`. Distances come from
//! one faer matmul per iteration (`|x|^2 - 2 x.c + |c|^2`), assignments and
//! centroid sums in parallel; SSW is recomputed exactly in f64 at the end.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::moments::ordered_sum;

/// Rows sampled at most.
pub const MAX_ROWS: usize = 4096;
/// The K values reported.
pub const KS: [usize; 4] = [2, 4, 8, 16];
/// Seeded restarts; the lowest SSW wins.
pub const RESTARTS: usize = 3;
/// Lloyd iterations at most per restart.
pub const MAX_ITERS: usize = 25;

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

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as f64 - y as f64;
            d * d
        })
        .sum()
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

/// VE = 1 - SSW/SST for each K in `ks` (NaN where K >= rows or SST = 0).
pub fn variance_explained(x: &[f32], m: usize, d: usize, ks: &[usize], seed: u64) -> Vec<f64> {
    let total = sst(x, m, d);
    ks.iter()
        .map(|&k| {
            if k >= m || total <= 0.0 {
                f64::NAN
            } else {
                1.0 - kmeans_ssw(x, m, d, k, crate::null::mix(seed, k as u64), RESTARTS) / total
            }
        })
        .collect()
}

fn one_run(x: &[f32], m: usize, d: usize, k: usize, seed: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // k-means++ seeding.
    let mut centers = vec![0.0f32; k * d];
    let first = rng.random_range(0..m);
    centers[..d].copy_from_slice(&x[first * d..(first + 1) * d]);
    let mut dmin: Vec<f64> = (0..m)
        .into_par_iter()
        .map(|r| sq_dist(&x[r * d..(r + 1) * d], &centers[..d]))
        .collect();
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
        let cen = &centers[c * d..(c + 1) * d];
        dmin.par_iter_mut().enumerate().for_each(|(r, dm)| {
            *dm = dm.min(sq_dist(&x[r * d..(r + 1) * d], cen));
        });
    }
    // Lloyd iterations.
    let xm = MatRef::from_row_major_slice(x, m, d);
    let xnorm: Vec<f32> = (0..m)
        .into_par_iter()
        .map(|r| x[r * d..(r + 1) * d].iter().map(|v| v * v).sum())
        .collect();
    let mut assign = vec![usize::MAX; m];
    let mut dots = Mat::<f32>::zeros(m, k);
    for _ in 0..MAX_ITERS {
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
        let new: Vec<usize> = (0..m)
            .into_par_iter()
            .map(|r| {
                let mut best = (f32::INFINITY, 0);
                for c in 0..k {
                    let dist = xnorm[r] - 2.0 * dref[(r, c)] + cnorm[c];
                    if dist < best.0 {
                        best = (dist, c);
                    }
                }
                best.1
            })
            .collect();
        if new == assign {
            break;
        }
        assign = new;
        let mut sums = vec![0.0f64; k * d];
        let mut counts = vec![0usize; k];
        for (r, &c) in assign.iter().enumerate() {
            counts[c] += 1;
            for (s, &v) in sums[c * d..(c + 1) * d]
                .iter_mut()
                .zip(&x[r * d..(r + 1) * d])
            {
                *s += v as f64;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for (ce, s) in centers[c * d..(c + 1) * d]
                    .iter_mut()
                    .zip(&sums[c * d..(c + 1) * d])
                {
                    *ce = (*s / counts[c] as f64) as f32;
                }
            }
            // An empty cluster keeps its old centre.
        }
    }
    ordered_sum((0..m).into_par_iter().map(|r| {
        let xr = &x[r * d..(r + 1) * d];
        (0..k)
            .map(|c| sq_dist(xr, &centers[c * d..(c + 1) * d]))
            .fold(f64::INFINITY, f64::min)
    }))
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

    #[test]
    fn samples_are_distinct_and_seeded() {
        let a = sample_rows(10_000, 4096, 3);
        assert_eq!(a.len(), 4096);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, sample_rows(10_000, 4096, 3));
        assert_eq!(sample_rows(10, 4096, 3), (0..10).collect::<Vec<_>>());
    }
}
