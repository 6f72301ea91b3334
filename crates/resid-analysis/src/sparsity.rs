//! Sparsity: the share of entries beyond 3 std (Gaussian: 0.27%), the share
//! of energy `sum r^2` held by the largest 1% and 10% of entries by |r|,
//! Hoyer sparsity and the Gini index.
//!
//! No sort: |r| is counted into 2^15 buckets keyed by the top bits of its
//! f32 pattern (exponent and 7 mantissa bits, so a bucket spans a relative
//! width of 2^-7), with each bucket's mantissa sums kept as integers, which
//! makes L1, L2 and every bucket's sums exact and independent of the thread
//! count. The top-k energies are exact: only the bucket holding the k-th
//! largest |r| is gathered and partially selected. Gini needs ranks inside a
//! bucket; it takes each bucket's values as spread evenly over its ranks
//! (rank-value covariance `n_b sd(rank) sd(value)`), which is exact for
//! evenly spaced values and within 1e-7 of the sorted figure on
//! Gaussian, Laplace and sparse data (tests). A full sort was 11-15% of
//! analyze's time at 1B-7B parameters.

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

/// Buckets of [`Magnitudes`]: the f32 pattern of |r| shifted right by 16.
const BUCKETS: usize = 1 << 15;

/// Bucket of a finite |v| (its f32 bits without the sign, top 15 of them).
#[inline]
fn key(v: f32) -> usize {
    ((v.to_bits() & 0x7fff_ffff) >> 16) as usize
}

/// Integer mantissa of |v|: |v| = mantissa * 2^(exponent - 150).
#[inline]
fn mantissa(v: f32) -> u64 {
    let b = v.to_bits() & 0x7fff_ffff;
    let m = (b & 0x007f_ffff) as u64;
    if b >> 23 == 0 {
        m
    } else {
        m | 0x0080_0000
    }
}

/// The value of one mantissa unit in a bucket (subnormals share 2^-149).
fn unit(key: usize) -> f64 {
    let e = (key >> 7) as i32;
    2f64.powi(e.max(1) - 150)
}

/// One bucket's count and exact mantissa sums, kept together so an entry
/// touches one cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Bucket {
    count: u64,
    msum: u64,
    msq: u128,
}

/// Counts and exact mantissa sums of |r| by bucket.
#[derive(Clone)]
pub struct Magnitudes {
    b: Vec<Bucket>,
}

impl Default for Magnitudes {
    fn default() -> Self {
        Magnitudes::new()
    }
}

impl Magnitudes {
    pub fn new() -> Magnitudes {
        Magnitudes {
            b: vec![Bucket::default(); BUCKETS],
        }
    }

    /// Adds a finite, non-negative value.
    #[inline]
    pub fn add(&mut self, v: f32) {
        let m = mantissa(v);
        let b = &mut self.b[key(v)];
        b.count += 1;
        b.msum += m;
        b.msq += (m * m) as u128;
    }

    /// Adds `n` zeros (they land in bucket 0 with nothing to sum).
    pub fn add_zeros(&mut self, n: u64) {
        self.b[0].count += n;
    }

    /// Adds another histogram (exact, so the order of merges does not matter).
    pub fn merge(&mut self, o: &Magnitudes) {
        for (a, b) in self.b.iter_mut().zip(&o.b) {
            a.count += b.count;
            a.msum += b.msum;
            a.msq += b.msq;
        }
    }

    fn count(&self, k: usize) -> u64 {
        self.b[k].count
    }

    fn total(&self) -> u64 {
        self.b.iter().map(|b| b.count).sum()
    }

    fn sum(&self, k: usize) -> f64 {
        self.b[k].msum as f64 * unit(k)
    }

    fn sumsq(&self, k: usize) -> f64 {
        let u = unit(k);
        self.b[k].msq as f64 * u * u
    }

    /// Whether every value in bucket k is the same (exact, from integers).
    fn equal(&self, k: usize) -> bool {
        let b = &self.b[k];
        b.count as u128 * b.msq == (b.msum as u128).pow(2)
    }

    /// Standard deviation of the values in bucket k, from exact integers.
    fn sd(&self, k: usize) -> f64 {
        let b = &self.b[k];
        let n = b.count as u128;
        if n < 2 {
            return 0.0;
        }
        let s = b.msum as u128;
        let var_n2 = (n * b.msq).saturating_sub(s * s);
        (var_n2 as f64).sqrt() / n as f64 * unit(k)
    }
}

/// Sparsity from a pass's [`Magnitudes`] of the finite |x| and its count of
/// entries beyond 3 std; `x` is read again only for the top-k buckets.
pub fn from_magnitudes(
    x: &[f32],
    mags: &Magnitudes,
    above: u64,
    scratch: &mut Vec<f32>,
) -> Sparsity {
    let n: u64 = mags.total();
    if n == 0 {
        return Sparsity::default();
    }
    let nf = n as f64;
    let (mut l1, mut l2sq) = (0.0f64, 0.0f64);
    for k in 0..BUCKETS {
        if mags.count(k) > 0 {
            l1 += mags.sum(k);
            l2sq += mags.sumsq(k);
        }
    }
    let top = top_energies(x, mags, &[0.01, 0.10], scratch);
    let share = |e: f64| if l2sq > 0.0 { e / l2sq } else { 0.0 };
    let hoyer = if n > 1 && l2sq > 0.0 {
        (nf.sqrt() - l1 / l2sq.sqrt()) / (nf.sqrt() - 1.0)
    } else {
        0.0
    };
    // Gini = 1 - 2 sum_k (c_k / L1) (n - k + 1/2) / n, k = 1..n ascending,
    // = 1 - 2 ((n + 1/2) L1 - sum_k k c_k) / (L1 n).
    let gini = if l1 > 0.0 {
        let mut before = 0.0f64;
        let mut rank_sum = 0.0f64;
        for k in 0..BUCKETS {
            let c = mags.count(k);
            if c == 0 {
                continue;
            }
            let cf = c as f64;
            let spread = cf * ((cf * cf - 1.0) / 12.0).sqrt() * mags.sd(k);
            rank_sum += (before + (cf + 1.0) / 2.0) * mags.sum(k) + spread;
            before += cf;
        }
        1.0 - 2.0 * ((nf + 0.5) * l1 - rank_sum) / (l1 * nf)
    } else {
        0.0
    };
    Sparsity {
        share_above_3std: above as f64 / nf,
        top1pct_energy: share(top[0]),
        top10pct_energy: share(top[1]),
        hoyer,
        gini: gini.clamp(0.0, 1.0),
    }
}

/// Exact `sum r^2` of the largest `ceil(n share)` |r| for each share: whole
/// buckets above the k-th largest, plus the top of the bucket holding it.
/// A bucket of equal values (zeros, say) is counted, not gathered; the
/// others are gathered from `x` in one pass for all shares.
fn top_energies(x: &[f32], mags: &Magnitudes, shares: &[f64], scratch: &mut Vec<f32>) -> Vec<f64> {
    let n: u64 = mags.total();
    // (energy of whole buckets above, boundary bucket, values needed from it)
    let cuts: Vec<(f64, usize, usize)> = shares
        .iter()
        .map(|&share| {
            let k = ((n as f64 * share).ceil() as u64).clamp(1, n);
            let mut above = 0u64;
            let mut e = 0.0f64;
            for b in (0..BUCKETS).rev() {
                let c = mags.count(b);
                if above + c < k {
                    above += c;
                    e += mags.sumsq(b);
                } else if c > 0 {
                    return (e, b, (k - above) as usize);
                }
            }
            (e, 0, 0)
        })
        .collect();
    let mut gather: Vec<usize> = cuts
        .iter()
        .filter(|&&(_, b, need)| need > 0 && need < mags.count(b) as usize && !mags.equal(b))
        .map(|c| c.1)
        .collect();
    gather.sort_unstable();
    gather.dedup();
    let mut found: Vec<(usize, Vec<f32>)> = Vec::new();
    if !gather.is_empty() {
        scratch.clear();
        let (g0, g1) = (gather[0], gather[gather.len() - 1]);
        scratch.extend(x.iter().map(|v| v.abs()).filter(|v| {
            let k = key(*v);
            (k == g0 || k == g1) && v.is_finite()
        }));
        for &b in &gather {
            let mut vals: Vec<f32> = scratch.iter().copied().filter(|&v| key(v) == b).collect();
            vals.sort_unstable_by(|p, q| q.total_cmp(p));
            found.push((b, vals));
        }
    }
    cuts.iter()
        .map(|&(e, b, need)| {
            let c = mags.count(b) as usize;
            if need == 0 {
                e
            } else if need == c {
                e + mags.sumsq(b)
            } else if mags.equal(b) {
                let v = mags.sum(b) / c as f64;
                e + need as f64 * v * v
            } else {
                let vals = &found.iter().find(|f| f.0 == b).expect("gathered").1;
                e + vals[..need]
                    .iter()
                    .map(|&v| (v as f64).powi(2))
                    .sum::<f64>()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moments::Moments;

    /// Through the analysis pass that gathers the buckets.
    fn sp(x: &[f32]) -> Sparsity {
        crate::scan::Scan::of(x, &Moments::of(x)).sparsity(x, &mut Vec::new())
    }

    /// The definitions computed the obvious way, over sorted |x| (f64).
    fn sorted(x: &[f32]) -> (f64, f64, f64, f64) {
        let mut a: Vec<f64> = x.iter().map(|v| v.abs() as f64).collect();
        a.sort_by(|p, q| p.total_cmp(q));
        let n = a.len();
        let nf = n as f64;
        let l1: f64 = a.iter().sum();
        let l2: f64 = a.iter().map(|v| v * v).sum();
        let top = |s: f64| {
            let k = ((nf * s).ceil() as usize).clamp(1, n);
            a[n - k..].iter().map(|v| v * v).sum::<f64>() / l2
        };
        let hoyer = (nf.sqrt() - l1 / l2.sqrt()) / (nf.sqrt() - 1.0);
        let s: f64 = a
            .iter()
            .enumerate()
            .map(|(i, v)| v * (nf - (i + 1) as f64 + 0.5))
            .sum();
        (top(0.01), top(0.10), hoyer, 1.0 - 2.0 * s / (l1 * nf))
    }

    #[test]
    fn matches_the_sorted_definitions() {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Exp};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let gauss = crate::null::gaussian_vec(300_001, 0.02, 9);
        let laplace: Vec<f32> = (0..200_000)
            .map(|i| {
                let e: f64 = Exp::new(1.0).unwrap().sample(&mut rng);
                (if i % 2 == 0 { e } else { -e } * 1e-3) as f32
            })
            .collect();
        // 95% exact zeros (a sparse residual), ties and all.
        let sparse: Vec<f32> = gauss
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 20 == 0 { v } else { 0.0 })
            .collect();
        // Few distinct values: the top-k boundary falls inside a tied bucket.
        let steps: Vec<f32> = (0..10_000).map(|i| (i % 7) as f32 * 0.25).collect();
        for (what, x) in [
            ("gaussian", &gauss),
            ("laplace", &laplace),
            ("sparse", &sparse),
            ("steps", &steps),
        ] {
            let got = sp(x);
            let (t1, t10, hoyer, gini) = sorted(x);
            let close = |a: f64, b: f64, tol: f64| (a - b).abs() < tol;
            assert!(close(got.top1pct_energy, t1, 1e-12), "{what} {got:?} {t1}");
            assert!(
                close(got.top10pct_energy, t10, 1e-12),
                "{what} {got:?} {t10}"
            );
            assert!(close(got.hoyer, hoyer, 1e-12), "{what} {got:?} {hoyer}");
            assert!(
                close(got.gini, gini, 1e-7),
                "{what} gini {} vs sorted {gini}",
                got.gini
            );
        }
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
