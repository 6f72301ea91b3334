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
    let last = acc.len() as f64 - 1.0;
    for &v in c {
        if v.is_finite() {
            let b = ((v as f64 - lo) * scale).clamp(0.0, last);
            acc[b as usize] += 1;
        }
    }
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
