//! Histogram entropy in bits. The study-compatible figure uses 100 equal bins
//! over [min, max] (its ceiling is log2(100) = 6.64). The scale-free figure
//! uses bins of width std/16 over mean +- 8 std, outliers clipped into the
//! edge bins: it estimates bits per entry at that quantisation step, the
//! figure that matters for storage, and does not move with one outlier.

use rayon::prelude::*;

/// Bins of the study-compatible entropy.
pub const STUDY_BINS: usize = 100;
/// Bins per std of the scale-free entropy.
pub const STEP_PER_STD: f64 = 16.0;
/// Half-width, in std, of the scale-free entropy's range.
pub const STEP_RANGE_STD: f64 = 8.0;

/// Counts of finite values in `bins` equal bins over [lo, hi] (values outside clipped).
pub fn histogram(x: &[f32], lo: f64, hi: f64, bins: usize) -> Vec<u64> {
    let mut h = vec![0u64; bins];
    histogram_into(x, lo, hi, &mut h);
    h
}

/// Adds the histogram of `x` into `h` (parallel over chunks).
pub fn histogram_into(x: &[f32], lo: f64, hi: f64, h: &mut [u64]) {
    let bins = h.len();
    let width = hi - lo;
    let scale = if width > 0.0 {
        bins as f64 / width
    } else {
        0.0
    };
    let part = x
        .par_chunks(1 << 16)
        .fold(
            || vec![0u64; bins],
            |mut acc, c| {
                add_chunk(c, lo, scale, &mut acc);
                acc
            },
        )
        .reduce(
            || vec![0u64; bins],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    h.iter_mut().zip(&part).for_each(|(x, y)| *x += y);
}

/// Adds one chunk to a histogram (serial).
pub fn add_chunk(c: &[f32], lo: f64, scale: f64, acc: &mut [u64]) {
    let bins = acc.len();
    let step = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for &v in c {
        if v.is_finite() {
            acc[bin(v as f64, lo, scale, step, bins)] += 1;
        }
    }
}

/// The bin of `v` among `bins` equal bins from `lo` (width `step`,
/// `scale = 1/step`), as numpy's `histogram` defines it in f64: bin k holds
/// `edge_k <= v < edge_{k+1}` with `edge_k = k * step + lo` (numpy's
/// `linspace`), the last bin closed; values outside are clipped into the
/// edge bins. The scaled index is corrected against the edges, since
/// `(v - lo) * scale` can round across an edge (on discrete bf16 values it
/// does, and moved the entropy by up to 0.02 bits).
#[inline]
pub fn bin(v: f64, lo: f64, scale: f64, step: f64, bins: usize) -> usize {
    let last = bins - 1;
    let mut i = ((v - lo) * scale).clamp(0.0, last as f64) as usize;
    if i > 0 && v < i as f64 * step + lo {
        i -= 1;
    } else if i < last && v >= (i + 1) as f64 * step + lo {
        i += 1;
    }
    i
}

/// Shannon entropy `-sum p log2 p` of counts, in bits.
pub fn entropy_bits(h: &[u64]) -> f64 {
    let n: u64 = h.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    -h.iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            p * p.log2()
        })
        .sum::<f64>()
}

/// Study-compatible entropy: 100 bins over [min, max].
pub fn study_entropy(x: &[f32], min: f64, max: f64) -> f64 {
    entropy_bits(&histogram(x, min, max, STUDY_BINS))
}

/// Range and bin count of the scale-free entropy for a given mean and std.
pub fn step_bins(mean: f64, std: f64) -> (f64, f64, usize) {
    let bins = (2.0 * STEP_RANGE_STD * STEP_PER_STD) as usize;
    (
        mean - STEP_RANGE_STD * std,
        mean + STEP_RANGE_STD * std,
        bins,
    )
}

/// Scale-free entropy: bins of std/16 over mean +- 8 std, clipped.
pub fn step_entropy(x: &[f32], mean: f64, std: f64) -> f64 {
    if std == 0.0 {
        return 0.0;
    }
    let (lo, hi, bins) = step_bins(mean, std);
    entropy_bits(&histogram(x, lo, hi, bins))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Discrete bf16 values (every pattern from 0x3b00 to 0x3d4f, as a
    /// bf16 residual holds): the study histogram follows numpy's edge
    /// definition, counted here directly from the edges; the plain scaled
    /// index `(v - lo) * 100 / w` puts 2 of the 592 values in the wrong bin.
    #[test]
    fn study_bins_follow_numpys_edges_on_bf16_values() {
        let x: Vec<f32> = (0x3b00u32..0x3d50)
            .map(|i| f32::from_bits(i << 16))
            .collect();
        let m = crate::moments::Moments::of(&x);
        let (lo, hi) = (m.min, m.max);
        let step = (hi - lo) / 100.0;
        let edges: Vec<f64> = (0..100).map(|k| k as f64 * step + lo).chain([hi]).collect();
        let mut want = vec![0u64; 100];
        let mut naive = vec![0u64; 100];
        for &v in &x {
            let v = v as f64;
            let k = if v == hi {
                99
            } else {
                edges.partition_point(|&e| e <= v) - 1
            };
            want[k] += 1;
            naive[((v - lo) * (100.0 / (hi - lo))).min(99.0) as usize] += 1;
        }
        let got = crate::scan::Scan::of(&x, &m);
        assert_eq!(got.study_entropy(), entropy_bits(&want));
        let moved: u64 = want.iter().zip(&naive).map(|(a, b)| a.abs_diff(*b)).sum();
        assert_eq!(moved, 4, "two values cross an edge under the naive index");
    }
    use rand::{Rng, SeedableRng};

    #[test]
    fn uniform_sample_near_ceiling() {
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let x: Vec<f32> = (0..1_000_000)
            .map(|_| r.random::<f32>() * 6.0 - 3.0)
            .collect();
        let (lo, hi) = x.iter().fold((f64::MAX, f64::MIN), |(a, b), &v| {
            (a.min(v as f64), b.max(v as f64))
        });
        let h = study_entropy(&x, lo, hi);
        assert!((h - 100f64.log2()).abs() < 0.01, "{h}");
        assert!(h <= 100f64.log2() + 1e-12);
    }

    #[test]
    fn constant_and_two_point() {
        assert_eq!(study_entropy(&[1.0; 10], 1.0, 1.0), 0.0);
        let x = [0.0f32, 1.0, 0.0, 1.0];
        assert!((study_entropy(&x, 0.0, 1.0) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn gaussian_step_entropy_matches_differential_entropy() {
        // Bits at step std/16 of a Gaussian: h(N(0,1)) - log2(1/16) = 2.047 + 4.
        let x = crate::null::gaussian_vec(2_000_000, 3.0, 4);
        let h = step_entropy(&x, 0.0, 3.0);
        let want = 0.5 * (2.0 * std::f64::consts::PI * std::f64::consts::E).log2() + 4.0;
        assert!((h - want).abs() < 0.01, "{h} vs {want}");
    }
}
