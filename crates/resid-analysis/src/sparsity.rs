//! Sparsity: the share of entries beyond 3 std (Gaussian: 0.27%), the share
//! of energy `sum r^2` held by the largest 1% and 10% of entries by |r|,
//! Hoyer sparsity and the Gini index. Exact: |r| is sorted in a scratch
//! buffer the caller reuses (the base tensor's buffer once R is formed).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Share of a Gaussian's mass beyond 3 std, `erfc(3/sqrt 2)`.
pub const GAUSSIAN_ABOVE_3STD: f64 = 0.002_699_796;

/// Share of a Gaussian's `sum r^2` held by its top 1% by |r|:
/// `2 (z phi(z) + 0.005)` with z = 2.5758 the 99.5% quantile.
pub const GAUSSIAN_TOP1PCT_ENERGY: f64 = 0.084_49;

/// Sparsity figures of one tensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sparsity {
    /// Share of entries with |r - mean| > 3 std.
    pub share_above_3std: f64,
    /// Share of `sum r^2` in the top 1% of entries by |r|.
    pub top1pct_energy: f64,
    /// Share of `sum r^2` in the top 10% of entries by |r|.
    pub top10pct_energy: f64,
    /// `(sqrt n - L1/L2) / (sqrt n - 1)`: 0 for a flat vector, 1 for one spike.
    pub hoyer: f64,
    /// Gini index of |r| (Hurley & Rickard): 0 flat, towards 1 sparse.
    pub gini: f64,
}

/// Sparsity of the finite values of `x`, given their mean and std.
/// `scratch` is overwritten with the sorted |x|.
pub fn sparsity(x: &[f32], mean: f64, std: f64, scratch: &mut Vec<f32>) -> Sparsity {
    scratch.clear();
    scratch.extend(x.iter().filter(|v| v.is_finite()).map(|v| v.abs()));
    let n = scratch.len();
    if n == 0 {
        return Sparsity::default();
    }
    let thr = 3.0 * std;
    let above: usize = x
        .par_chunks(1 << 16)
        .map(|c| {
            c.iter()
                .filter(|v| v.is_finite() && (**v as f64 - mean).abs() > thr)
                .count()
        })
        .sum();
    scratch.par_sort_unstable_by(|a, b| a.total_cmp(b));
    // Sums in f64 over the ascending |r|.
    let (l1, l2sq) = scratch
        .par_chunks(1 << 16)
        .map(|c| {
            c.iter().fold((0.0f64, 0.0f64), |(a, b), &v| {
                let v = v as f64;
                (a + v, b + v * v)
            })
        })
        .collect::<Vec<_>>()
        .iter()
        .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let top_energy = |share: f64| {
        let k = ((n as f64 * share).ceil() as usize).clamp(1, n);
        let e: f64 = scratch[n - k..].iter().map(|&v| (v as f64).powi(2)).sum();
        if l2sq > 0.0 {
            e / l2sq
        } else {
            0.0
        }
    };
    let nf = n as f64;
    let hoyer = if n > 1 && l2sq > 0.0 {
        (nf.sqrt() - l1 / l2sq.sqrt()) / (nf.sqrt() - 1.0)
    } else {
        0.0
    };
    // Gini = 1 - 2 sum_k (c_k / L1) (n - k + 1/2) / n, k = 1..n ascending.
    let gini = if l1 > 0.0 {
        let s: f64 = scratch
            .par_chunks(1 << 16)
            .enumerate()
            .map(|(ci, c)| {
                let base = ci * (1 << 16);
                c.iter()
                    .enumerate()
                    .map(|(j, &v)| v as f64 * (nf - (base + j + 1) as f64 + 0.5))
                    .sum::<f64>()
            })
            .collect::<Vec<f64>>()
            .iter()
            .sum();
        1.0 - 2.0 * s / (l1 * nf)
    } else {
        0.0
    };
    Sparsity {
        share_above_3std: above as f64 / nf,
        top1pct_energy: top_energy(0.01),
        top10pct_energy: top_energy(0.10),
        hoyer,
        gini,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moments::Moments;

    fn sp(x: &[f32]) -> Sparsity {
        let m = Moments::of(x);
        sparsity(x, m.mean, m.std(), &mut Vec::new())
    }

    #[test]
    fn gaussian_figures() {
        let x = crate::null::gaussian_vec(1_000_000, 1.0, 5);
        let s = sp(&x);
        assert!(
            (s.share_above_3std - GAUSSIAN_ABOVE_3STD).abs() < 3e-4,
            "{s:?}"
        );
        // Gini of |N(0,1)| (half-normal) is sqrt(2) - 1; Hoyer of a Gaussian
        // vector tends to (1 - sqrt(2/pi)) = 0.2021.
        assert!((s.gini - (2f64.sqrt() - 1.0)).abs() < 0.005, "{s:?}");
        assert!((s.hoyer - (1.0 - (2.0 / std::f64::consts::PI).sqrt())).abs() < 0.005);
        assert!(
            (s.top1pct_energy - GAUSSIAN_TOP1PCT_ENERGY).abs() < 0.002,
            "{s:?}"
        );
        assert!(s.top10pct_energy > 0.3 && s.top10pct_energy < 0.5, "{s:?}");
    }

    #[test]
    fn one_spike_and_flat() {
        let mut x = vec![0.0f32; 1000];
        x[17] = 5.0;
        let s = sp(&x);
        assert!((s.hoyer - 1.0).abs() < 1e-12);
        assert!((s.top1pct_energy - 1.0).abs() < 1e-12);
        assert!(s.gini > 0.99);
        let flat = vec![-2.0f32; 1000];
        let s = sp(&flat);
        assert!(s.hoyer.abs() < 1e-12 && s.gini.abs() < 1e-9);
        assert!((s.top10pct_energy - 0.1).abs() < 1e-12);
        assert_eq!(s.share_above_3std, 0.0);
    }
}
