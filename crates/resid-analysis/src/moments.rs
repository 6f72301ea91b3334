//! Moments in f64: mean, population std, excess kurtosis (Fisher). Central
//! moments of chunks are merged exactly (Chan et al.), so component and model
//! kurtosis is *pooled* over all entries rather than an average of kurtoses.

use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Count, mean and central moment sums M2..M4 of a set of values, with min/max.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Moments {
    pub n: u64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub mean: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub m2: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub m3: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub m4: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub min: f64,
    #[serde(deserialize_with = "crate::json::nan")]
    #[schemars(with = "Option<f64>")]
    pub max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            n: 0,
            mean: 0.0,
            m2: 0.0,
            m3: 0.0,
            m4: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

/// Elements per chunk of the parallel passes (moments are merged chunk by
/// chunk in order, so results do not depend on the thread count).
pub const CHUNK: usize = 1 << 16;

impl Moments {
    /// Moments of the finite values of `x` (non-finite entries are skipped;
    /// count them with [`count_nonfinite`]). Two passes per chunk in f64,
    /// chunks merged in parallel.
    pub fn of(x: &[f32]) -> Moments {
        x.par_chunks(CHUNK)
            .map(Moments::of_chunk)
            .collect::<Vec<_>>()
            .iter()
            .fold(Moments::default(), |a, b| a.merge(b))
    }

    /// Moments of one chunk (two passes while it is in cache). An all-finite
    /// chunk, the common case, takes a branch-free path with four partial
    /// sums per pass, which the CPU overlaps.
    pub fn of_chunk(x: &[f32]) -> Moments {
        if x.iter().any(|v| !v.is_finite()) {
            return Moments::of_chunk_filtered(x);
        }
        if x.is_empty() {
            return Moments::default();
        }
        let mut s = [0.0f64; 4];
        let mut lo = [f32::INFINITY; 4];
        let mut hi = [f32::NEG_INFINITY; 4];
        let mut it = x.chunks_exact(4);
        for c in &mut it {
            for l in 0..4 {
                s[l] += c[l] as f64;
                lo[l] = lo[l].min(c[l]);
                hi[l] = hi[l].max(c[l]);
            }
        }
        for &v in it.remainder() {
            s[0] += v as f64;
            lo[0] = lo[0].min(v);
            hi[0] = hi[0].max(v);
        }
        let n = x.len() as u64;
        let mean = (s[0] + s[1] + s[2] + s[3]) / n as f64;
        let (mut m2, mut m3, mut m4) = ([0.0f64; 4], [0.0f64; 4], [0.0f64; 4]);
        let mut it = x.chunks_exact(4);
        for c in &mut it {
            for l in 0..4 {
                let d = c[l] as f64 - mean;
                let d2 = d * d;
                m2[l] += d2;
                m3[l] += d2 * d;
                m4[l] += d2 * d2;
            }
        }
        for &v in it.remainder() {
            let d = v as f64 - mean;
            let d2 = d * d;
            m2[0] += d2;
            m3[0] += d2 * d;
            m4[0] += d2 * d2;
        }
        let sum4 = |a: [f64; 4]| (a[0] + a[1]) + (a[2] + a[3]);
        Moments {
            n,
            mean,
            m2: sum4(m2),
            m3: sum4(m3),
            m4: sum4(m4),
            min: lo.iter().fold(f32::INFINITY, |a, &b| a.min(b)) as f64,
            max: hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64,
        }
    }

    fn of_chunk_filtered(x: &[f32]) -> Moments {
        let mut n = 0u64;
        let mut s = 0.0f64;
        let mut lo = f64::INFINITY;
        let mut hi = f64::NEG_INFINITY;
        for &v in x {
            if v.is_finite() {
                let v = v as f64;
                n += 1;
                s += v;
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if n == 0 {
            return Moments::default();
        }
        let mean = s / n as f64;
        let (mut m2, mut m3, mut m4) = (0.0f64, 0.0f64, 0.0f64);
        for &v in x {
            if v.is_finite() {
                let d = v as f64 - mean;
                let d2 = d * d;
                m2 += d2;
                m3 += d2 * d;
                m4 += d2 * d2;
            }
        }
        Moments {
            n,
            mean,
            m2,
            m3,
            m4,
            min: lo,
            max: hi,
        }
    }

    /// Exact merge of two sets' central moments (Chan, Golub, LeVeque; Pébay).
    pub fn merge(&self, o: &Moments) -> Moments {
        if self.n == 0 {
            return *o;
        }
        if o.n == 0 {
            return *self;
        }
        let (na, nb) = (self.n as f64, o.n as f64);
        let n = na + nb;
        let d = o.mean - self.mean;
        let d2 = d * d;
        let mean = self.mean + d * nb / n;
        let m2 = self.m2 + o.m2 + d2 * na * nb / n;
        let m3 = self.m3
            + o.m3
            + d * d2 * na * nb * (na - nb) / (n * n)
            + 3.0 * d * (na * o.m2 - nb * self.m2) / n;
        let m4 = self.m4
            + o.m4
            + d2 * d2 * na * nb * (na * na - na * nb + nb * nb) / (n * n * n)
            + 6.0 * d2 * (na * na * o.m2 + nb * nb * self.m2) / (n * n)
            + 4.0 * d * (na * o.m3 - nb * self.m3) / n;
        Moments {
            n: self.n + o.n,
            mean,
            m2,
            m3,
            m4,
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }

    /// Population variance.
    pub fn variance(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.m2 / self.n as f64
        }
    }

    /// Population standard deviation.
    pub fn std(&self) -> f64 {
        self.variance().sqrt()
    }

    /// Excess kurtosis `m4/m2^2 - 3` (Gaussian 0, uniform -1.2, Laplace 3);
    /// NaN when the variance is zero.
    pub fn kurtosis(&self) -> f64 {
        if self.n == 0 || self.m2 == 0.0 {
            return f64::NAN;
        }
        let n = self.n as f64;
        n * self.m4 / (self.m2 * self.m2) - 3.0
    }

    /// Sum of squares about zero, `sum r^2` (the energy).
    pub fn energy(&self) -> f64 {
        self.m2 + self.n as f64 * self.mean * self.mean
    }
}

/// Sum of a parallel iterator in index order, so results do not depend on
/// the thread count or on work stealing.
pub fn ordered_sum<I: IndexedParallelIterator<Item = f64>>(it: I) -> f64 {
    it.collect::<Vec<f64>>().iter().sum()
}

/// Number of NaN and of infinite entries.
pub fn count_nonfinite(x: &[f32]) -> (u64, u64) {
    x.par_chunks(CHUNK)
        .map(|c| {
            let mut nan = 0u64;
            let mut inf = 0u64;
            for v in c {
                if v.is_nan() {
                    nan += 1;
                } else if v.is_infinite() {
                    inf += 1;
                }
            }
            (nan, inf)
        })
        .reduce(|| (0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::null::gaussian_vec;
    use rand::{Rng, SeedableRng};

    fn rng() -> rand_chacha::ChaCha8Rng {
        rand_chacha::ChaCha8Rng::seed_from_u64(7)
    }

    #[test]
    fn gaussian_uniform_laplace_kurtosis() {
        let n = 400_000;
        let g = gaussian_vec(n, 1.0, 1);
        let k = Moments::of(&g).kurtosis();
        assert!(k.abs() < 0.05, "gaussian {k}");
        let mut r = rng();
        let u: Vec<f32> = (0..n).map(|_| r.random::<f32>() * 2.0 - 1.0).collect();
        let k = Moments::of(&u).kurtosis();
        assert!((k + 1.2).abs() < 0.02, "uniform {k}");
        // Laplace by inverse CDF.
        let l: Vec<f32> = (0..n)
            .map(|_| {
                let p: f64 = r.random::<f64>() - 0.5;
                (-p.signum() * (1.0 - 2.0 * p.abs()).ln()) as f32
            })
            .collect();
        let k = Moments::of(&l).kurtosis();
        assert!((k - 3.0).abs() < 0.25, "laplace {k}");
    }

    #[test]
    fn merge_equals_whole() {
        let mut r = rng();
        let x: Vec<f32> = (0..300_001)
            .map(|i| r.random::<f32>().powi(3) * if i % 3 == 0 { 5.0 } else { 1.0 } + 2.0)
            .collect();
        let whole = Moments::of_chunk(&x);
        let (a, b) = x.split_at(12345);
        let merged = Moments::of_chunk(a).merge(&Moments::of_chunk(b));
        let par = Moments::of(&x);
        for m in [merged, par] {
            assert_eq!(m.n, whole.n);
            assert!((m.mean - whole.mean).abs() < 1e-12);
            assert!((m.variance() / whole.variance() - 1.0).abs() < 1e-10);
            assert!((m.kurtosis() - whole.kurtosis()).abs() < 1e-9);
            assert!((m.m3 - whole.m3).abs() < 1e-6 * whole.m3.abs().max(1.0));
        }
    }

    #[test]
    fn nonfinite_skipped_and_counted() {
        let x = [1.0f32, f32::NAN, 3.0, f32::INFINITY, f32::NEG_INFINITY];
        let m = Moments::of(&x);
        assert_eq!(m.n, 2);
        assert_eq!(m.mean, 2.0);
        assert_eq!(count_nonfinite(&x), (1, 2));
    }
}
