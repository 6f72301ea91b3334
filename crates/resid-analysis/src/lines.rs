//! Rows and columns of a residual matrix, and what weight decay explains
//! (docs/MEASURES.md, "Row and column sparsity", "Decay"). Row-sparse: a
//! few rows (tokens of an embedding, say) carry most of the energy; the
//! null is an i.i.d. Gaussian of the same shape, whose row energies are
//! `sigma^2 chi^2(cols)`, drawn here directly. Decay-like: `R ~ -lambda
//! W_base`, the shrinkage of decoupled weight decay, measured by the cosine
//! of R with the base; the rows "changed beyond decay" are the fewest that
//! hold 99% of the energy of `R + lambda W_base`.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{ChiSquared, Distribution};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Share of the energy held by the top 1% / 10% of lines (rows or columns),
/// beside the same for the Gaussian null.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LineShares {
    /// Lines of this kind (rows or columns).
    pub lines: usize,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub top1pct: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub top10pct: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub top1pct_null: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub top10pct_null: f64,
}

/// Lines counted as the top `frac` of `n` lines: at least one.
pub fn top_count(n: usize, frac: f64) -> usize {
    ((n as f64 * frac).ceil() as usize).clamp(1, n.max(1))
}

/// Shares of the total held by the top 1% and 10% of `e` (sorted in place,
/// largest first).
pub fn top_shares(e: &mut [f64]) -> (f64, f64) {
    e.sort_unstable_by(|a, b| b.total_cmp(a));
    let total: f64 = e.iter().sum();
    if total <= 0.0 || e.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let share = |f: f64| e[..top_count(e.len(), f)].iter().sum::<f64>() / total;
    (share(0.01), share(0.10))
}

/// Fewest of `e` (sorted in place, largest first) holding `frac` of the total.
pub fn lines_holding(e: &mut [f64], frac: f64) -> usize {
    e.sort_unstable_by(|a, b| b.total_cmp(a));
    let total: f64 = e.iter().sum();
    if total <= 0.0 {
        return 0;
    }
    let mut acc = 0.0;
    for (i, v) in e.iter().enumerate() {
        acc += v;
        if acc >= frac * total {
            return i + 1;
        }
    }
    e.len()
}

/// Fewest of `e` (sorted in place, largest first) whose removal leaves at
/// most `rest` of the sum.
pub fn lines_leaving(e: &mut [f64], rest: f64) -> usize {
    e.sort_unstable_by(|a, b| b.total_cmp(a));
    let mut left: f64 = e.iter().sum();
    let mut k = 0;
    while k < e.len() && left > rest {
        left -= e[k];
        k += 1;
    }
    k
}

/// `lines` energies of an i.i.d. Gaussian matrix whose lines have `len`
/// entries: chi-square(len) draws (the scale cancels in every share).
pub fn null_energies(lines: usize, len: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let chi = ChiSquared::new(len.max(1) as f64).expect("positive degrees of freedom");
    (0..lines).map(|_| chi.sample(&mut rng)).collect()
}

/// [`LineShares`] of `e` (consumed) against the Gaussian null for lines of
/// `len` entries.
pub fn shares(mut e: Vec<f64>, len: usize, seed: u64) -> LineShares {
    let lines = e.len();
    let (top1pct, top10pct) = top_shares(&mut e);
    let (top1pct_null, top10pct_null) = top_shares(&mut null_energies(lines, len, seed));
    LineShares {
        lines,
        top1pct,
        top10pct,
        top1pct_null,
        top10pct_null,
    }
}

/// Squared norms of the columns of row-major `x` (rows x cols), in f64,
/// summed over fixed row blocks in order (thread-count independent).
pub fn col_energies(x: &[f32], cols: usize) -> Vec<f64> {
    let parts: Vec<Vec<f64>> = x
        .par_chunks(64 * cols)
        .map(|blk| {
            let mut acc = vec![0.0f64; cols];
            for r in blk.chunks(cols) {
                acc.iter_mut()
                    .zip(r)
                    .for_each(|(a, &v)| *a += (v as f64) * (v as f64));
            }
            acc
        })
        .collect();
    let mut out = vec![0.0f64; cols];
    for p in &parts {
        out.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    out
}

/// Per row of R and W (same shape): `(|R_i|^2, R_i . W_i, |W_i|^2)` in f64.
pub fn row_products(r: &[f32], w: &[f32], cols: usize) -> Vec<(f64, f64, f64)> {
    r.par_chunks(cols)
        .zip(w.par_chunks(cols))
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .fold((0.0, 0.0, 0.0), |(rr, rw, ww), (&x, &y)| {
                    let (x, y) = (x as f64, y as f64);
                    (rr + x * x, rw + x * y, ww + y * y)
                })
        })
        .collect()
}

/// What decay explains of one tensor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Decay {
    /// Cosine of R with W_base (-1: R = -lambda W, pure shrinkage).
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub cos_base: f64,
    /// The fitted shrinkage `lambda = max(0, -<R, W> / |W|^2)`.
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub lambda: f64,
    /// Share of `|R|^2` along -W_base: `cos^2` when the cosine is negative, else 0.
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub share: f64,
    /// Matrices: fewest rows whose non-decay part (`R_i + lambda W_i`),
    /// added to pure decay, accounts for all but 1% of `|R|^2` (the rows
    /// that changed by more than decay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_beyond_decay: Option<usize>,
    /// The same count for an i.i.d. Gaussian R of the shape (no decay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_beyond_decay_null: Option<usize>,
}

/// [`Decay`] from the per-row products of [`row_products`] (one row for a
/// 1-D tensor); `rows` counts are given for matrices (`cols` > 0).
pub fn decay(rows: &[(f64, f64, f64)], cols: Option<usize>, seed: u64) -> Decay {
    let (rr, rw, ww) = rows
        .iter()
        .fold((0.0, 0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
    let cos_base = if rr > 0.0 && ww > 0.0 {
        rw / (rr * ww).sqrt()
    } else {
        f64::NAN
    };
    let lambda = if ww > 0.0 { (-rw / ww).max(0.0) } else { 0.0 };
    let share = if cos_base.is_finite() && cos_base < 0.0 {
        cos_base * cos_base
    } else if cos_base.is_finite() {
        0.0
    } else {
        f64::NAN
    };
    let (beyond, null) = match cols {
        Some(c) if rows.len() > 1 => {
            let mut e: Vec<f64> = rows
                .iter()
                .map(|&(a, b, w)| (a + 2.0 * lambda * b + lambda * lambda * w).max(0.0))
                .collect();
            let mut n = null_energies(rows.len(), c, seed);
            let n_total: f64 = n.iter().sum();
            (
                Some(lines_leaving(&mut e, 0.01 * rr)),
                Some(lines_leaving(&mut n, 0.01 * n_total)),
            )
        }
        _ => (None, None),
    };
    Decay {
        cos_base,
        lambda,
        share,
        rows_beyond_decay: beyond,
        rows_beyond_decay_null: null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_known_energies() {
        // 200 lines: 2 hold 10 each, the rest 0.1: top 1% = 2 lines.
        let mut e: Vec<f64> = (0..200).map(|i| if i < 2 { 10.0 } else { 0.1 }).collect();
        let (t1, t10) = top_shares(&mut e);
        let total = 20.0 + 198.0 * 0.1;
        assert!((t1 - 20.0 / total).abs() < 1e-12);
        assert!((t10 - (20.0 + 18.0 * 0.1) / total).abs() < 1e-12);
        assert_eq!(lines_holding(&mut e, 0.5), 2);
        assert_eq!(top_count(50, 0.01), 1);
        // The chi-square null of long lines is nearly flat: top 10% of
        // rows hold a little over 10%.
        let mut n = null_energies(1000, 512, 3);
        let (n1, n10) = top_shares(&mut n);
        assert!(
            n10 > 0.1 && n10 < 0.12 && n1 > 0.01 && n1 < 0.013,
            "{n1} {n10}"
        );
    }

    #[test]
    fn pure_decay_and_changed_rows() {
        let (rows, cols) = (100, 32);
        let w = crate::null::gaussian_vec(rows * cols, 1.0, 1);
        // R = -0.01 W: cosine -1, lambda 0.01, no row beyond decay.
        let r: Vec<f32> = w.iter().map(|v| -0.01 * v).collect();
        let d = decay(&row_products(&r, &w, cols), Some(cols), 2);
        assert!(
            (d.cos_base + 1.0).abs() < 1e-6 && (d.lambda - 0.01).abs() < 1e-6,
            "{d:?}"
        );
        assert!((d.share - 1.0).abs() < 1e-6);
        assert_eq!(d.rows_beyond_decay, Some(0), "{d:?}");
        assert!(d.rows_beyond_decay_null.unwrap() > 90);
        // Decay everywhere plus 5 rows trained: those 5 rows are beyond decay.
        let g = crate::null::gaussian_vec(rows * cols, 0.05, 4);
        let r2: Vec<f32> = (0..rows * cols)
            .map(|i| r[i] + if i / cols < 5 { g[i] } else { 0.0 })
            .collect();
        let d = decay(&row_products(&r2, &w, cols), Some(cols), 2);
        assert_eq!(d.rows_beyond_decay, Some(5), "{d:?}");
        // Independent R: cosine near 0 (within 4/sqrt(n)).
        let d = decay(&row_products(&g, &w, cols), Some(cols), 2);
        assert!(
            d.cos_base.abs() < 4.0 / ((rows * cols) as f64).sqrt(),
            "{d:?}"
        );
    }
}
