//! The one pass over R that follows its moments: both entropy histograms,
//! the count beyond 3 std and the |r| buckets sparsity reads, gathered
//! together so a large tensor is walked once here instead of four times.

use rayon::prelude::*;

use crate::entropy::{self, STUDY_BINS};
use crate::moments::Moments;
use crate::sparsity::{self, Magnitudes, Sparsity};

/// What the pass gathers.
pub struct Scan {
    study: Vec<u64>,
    step: Vec<u64>,
    above: u64,
    mags: Magnitudes,
}

/// A histogram's range as the per-element loop uses it.
#[derive(Clone, Copy)]
struct Bins {
    lo: f64,
    scale: f64,
    step: f64,
    bins: usize,
}

impl Bins {
    fn new(lo: f64, hi: f64, bins: usize) -> Bins {
        let w = hi - lo;
        Bins {
            lo,
            scale: if w > 0.0 { bins as f64 / w } else { 0.0 },
            step: if w > 0.0 { w / bins as f64 } else { 0.0 },
            bins,
        }
    }

    /// The same binning as [`entropy::add_chunk`] (v finite).
    #[inline]
    fn bin(self, v: f64) -> usize {
        entropy::bin(v, self.lo, self.scale, self.step, self.bins)
    }
}

impl Scan {
    /// Scans the finite entries of `x`, whose moments are `m`.
    pub fn of(x: &[f32], m: &Moments) -> Scan {
        let (mean, std) = (m.mean, m.std());
        let study = Bins::new(m.min, m.max, STUDY_BINS);
        let (slo, shi, sbins) = entropy::step_bins(mean, std);
        let step = Bins::new(slo, shi, sbins);
        let thr = 3.0 * std;
        // A few contiguous parts, one |r| table each (a table is ~1 MB).
        let parts = (x.len() / (1 << 18)).clamp(1, 2 * rayon::current_num_threads());
        let len = x.len().div_ceil(parts).max(1);
        x.par_chunks(len)
            .map(|part| {
                // Two copies of each small histogram, for even and odd
                // entries, so runs of one bin do not wait on their own
                // stores; exact zeros (unchanged entries, often most of a
                // sparse residual) are only counted, their bins added once.
                let mut study_h = [[0u64; STUDY_BINS]; 2];
                let mut step_h = vec![[0u64; 2]; sbins];
                let mut mags = Magnitudes::new();
                let (mut above, mut zeros) = (0u64, 0u64);
                let mut add = |v: f32, lane: usize| {
                    if v == 0.0 {
                        zeros += 1;
                    } else if v.is_finite() {
                        let d = v as f64;
                        study_h[lane][study.bin(d)] += 1;
                        step_h[step.bin(d)][lane] += 1;
                        above += ((d - mean).abs() > thr) as u64;
                        mags.add(v.abs());
                    }
                };
                let mut pairs = part.chunks_exact(2);
                for p in &mut pairs {
                    add(p[0], 0);
                    add(p[1], 1);
                }
                for &v in pairs.remainder() {
                    add(v, 0);
                }
                let mut s = Scan {
                    study: (0..STUDY_BINS)
                        .map(|i| study_h[0][i] + study_h[1][i])
                        .collect(),
                    step: step_h.iter().map(|c| c[0] + c[1]).collect(),
                    above,
                    mags,
                };
                if zeros > 0 {
                    s.study[study.bin(0.0)] += zeros;
                    s.step[step.bin(0.0)] += zeros;
                    s.above += zeros * (mean.abs() > thr) as u64;
                    s.mags.add_zeros(zeros);
                }
                s
            })
            .reduce_with(|mut a, b| {
                a.study.iter_mut().zip(&b.study).for_each(|(x, y)| *x += y);
                a.step.iter_mut().zip(&b.step).for_each(|(x, y)| *x += y);
                a.above += b.above;
                a.mags.merge(&b.mags);
                a
            })
            .unwrap_or_else(|| Scan {
                study: vec![0; STUDY_BINS],
                step: vec![0; sbins],
                above: 0,
                mags: Magnitudes::new(),
            })
    }

    /// Study-compatible entropy (100 bins over [min, max]), bits.
    pub fn study_entropy(&self) -> f64 {
        entropy::entropy_bits(&self.study)
    }

    /// Scale-free entropy (bins of std/16), bits; 0 when std is 0.
    pub fn step_entropy(&self, std: f64) -> f64 {
        if std == 0.0 {
            0.0
        } else {
            entropy::entropy_bits(&self.step)
        }
    }

    /// Sparsity figures (reads `x` again only for the top-k buckets).
    pub fn sparsity(&self, x: &[f32], scratch: &mut Vec<f32>) -> Sparsity {
        sparsity::from_magnitudes(x, &self.mags, self.above, scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_separate_measures() {
        let mut x = crate::null::gaussian_vec(700_001, 0.5, 4);
        x[10] = f32::NAN;
        x[11] = 40.0;
        let m = Moments::of(&x);
        let s = Scan::of(&x, &m);
        assert_eq!(s.study_entropy(), entropy::study_entropy(&x, m.min, m.max));
        assert_eq!(
            s.step_entropy(m.std()),
            entropy::step_entropy(&x, m.mean, m.std())
        );
        // Sparsity is over the finite entries: the same as without the NaN.
        let finite: Vec<f32> = x.iter().copied().filter(|v| v.is_finite()).collect();
        let mut scratch = Vec::new();
        assert_eq!(
            s.sparsity(&x, &mut scratch),
            Scan::of(&finite, &m).sparsity(&finite, &mut scratch)
        );
    }
}
