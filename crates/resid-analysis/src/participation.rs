//! Participation ratio `PR = (sum s^2)^2 / sum s^4 = ||R||_F^4 / ||G||_F^2`
//! with G the Gram matrix of R's smaller side (one faer matmul, no SVD), and
//! stable rank `||R||_F^2 / s_max^2` with `s_max^2` the top eigenvalue of G by
//! power iteration. Null: Marchenko-Pastur, `p / (1 + p/q)`.
//!
//! Large matrices (exact Gram over [`GRAM_BUDGET`] multiply-adds) are
//! sampled. With the q vectors of the long side `v_i` (length p) and
//! `P(i) = |v_i|^2 / ||R||_F^2`, `||G||_F^2 = sum_ij (v_i . v_j)^2` gives
//! `1 / PR = E[cos^2(v_i, v_j)]` over i, j drawn independently from P. So s
//! vectors are drawn from P with a seed (length-squared sampling; norms from
//! one exact pass) and normalised; `1/PR` is the exact `sum_i P(i)^2` (i = j)
//! plus the mean `cos^2` over pairs of draws of distinct vectors (unbiased;
//! the terms are bounded, so heavy-tailed rows do not blow up its variance). It estimates the full
//! matrix's PR and is compared with the Marchenko-Pastur null of the full
//! shape. `s_max^2` starts from
//! the sample Gram's top eigenvector and is refined by a few Lanczos passes
//! over the whole matrix ([`REFINE_PASSES`]); its Ritz value never exceeds
//! the true value, so the sampled stable rank is an upper estimate (close
//! when one direction dominates, a few % high on noise).

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Multiply-adds allowed for one exact Gram matrix (`p^2 q`); beyond it the
/// Gram is taken over a sample ([`SAMPLE_BUDGET`]). 2^33 (8.6e9, well under
/// a second for faer on a few cores) keeps a 30522 x 384 embedding (4.5e9)
/// exact; 7B-sized matrices (6.9e10 and up) are sampled.
pub const GRAM_BUDGET: usize = 1 << 33;

/// Multiply-adds for the Gram of a sample, once the exact one is out of
/// reach: 2^29 (s = 362 vectors of a 4096-wide matrix), whose PR was within
/// -1.2%..+1.0% of the exact value on the 38 sampled matrices of a 0.1B
/// pair (bench/results/scale.md). At the exact budget the sample was 1448
/// vectors, and the Gram and eigenvalues of 224 such samples took 133 s of
/// phase time (summed over workers) in a 7B analysis of 220 s wall.
pub const SAMPLE_BUDGET: usize = 1 << 29;

/// The long side of a matrix, whose vectors a sampled Gram draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LongSide {
    Rows,
    Cols,
}

/// How the PR of a large matrix was sampled (recorded in the JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PrSample {
    /// The long side sampled.
    pub side: LongSide,
    /// Vectors of the long side in the Gram.
    pub used: usize,
    /// Vectors of the long side in the matrix.
    pub of: usize,
}

/// Vectors of the long side used for a rows x cols matrix under `budget`
/// multiply-adds (None: the exact Gram fits), the sample itself within the
/// smaller of `budget` and [`SAMPLE_BUDGET`]. The sample's Gram is formed on
/// its smaller side, costing `min(s, p)^2 max(s, p)`.
pub fn sample_size(rows: usize, cols: usize, budget: usize) -> Option<usize> {
    let (p, q) = (rows.min(cols) as u128, rows.max(cols) as u128);
    if p * p * q <= budget as u128 {
        return None;
    }
    let budget = budget.min(SAMPLE_BUDGET) as u128;
    let s = if p * p * p <= budget {
        budget / (p * p)
    } else {
        (budget as f64 / p as f64).sqrt() as u128
    };
    Some((s as usize).clamp(2, q as usize - 1))
}

/// Floats of working memory for the Gram of a rows x cols matrix.
pub fn gram_floats(rows: usize, cols: usize) -> usize {
    let (p, q) = (rows.min(cols), rows.max(cols));
    match sample_size(rows, cols, GRAM_BUDGET) {
        None => p * p,
        Some(s) => s.min(p).pow(2) + s * p + 4 * q + 2 * p,
    }
}

/// Spectral figures of a matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spectral {
    pub pr: f64,
    pub stable_rank: f64,
    /// Largest squared singular value.
    pub s_max2: f64,
    /// Fewest singular directions holding 90% / 99% of `sum s^2` (from the
    /// Gram's eigenvalues; from the sample's when the Gram is sampled).
    pub energy_rank_90: usize,
    pub energy_rank_99: usize,
    /// The exact Gram's eigenvalues (the squared singular values), any
    /// order; None when the Gram was sampled.
    pub eigenvalues: Option<Vec<f64>>,
}

/// Fewest of the largest `eigs` (any order, >= 0) whose sum reaches
/// `frac` of the total; 0 for an all-zero spectrum.
pub fn energy_rank(eigs: &[f64], frac: f64) -> usize {
    let mut e: Vec<f64> = eigs.iter().map(|v| v.max(0.0)).collect();
    e.sort_by(|a, b| b.total_cmp(a));
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

/// Eigenvalues of a symmetric matrix (empty if faer fails).
pub fn eigenvalues(g: MatRef<'_, f32>) -> Vec<f64> {
    g.self_adjoint_eigenvalues(faer::Side::Lower)
        .map(|e| e.into_iter().map(f64::from).collect())
        .unwrap_or_default()
}

/// Parallelism for faer on the current rayon pool.
pub fn par() -> Par {
    let n = rayon::current_num_threads();
    if n > 1 {
        Par::rayon(n)
    } else {
        Par::Seq
    }
}

/// The Gram matrix of the smaller side of row-major `x` (rows x cols), in f32.
pub fn gram(x: &[f32], rows: usize, cols: usize) -> Mat<f32> {
    let r = MatRef::from_row_major_slice(x, rows, cols);
    if cols <= rows {
        let mut g = Mat::<f32>::zeros(cols, cols);
        matmul(g.as_mut(), Accum::Replace, r.transpose(), r, 1.0f32, par());
        g
    } else {
        let mut g = Mat::<f32>::zeros(rows, rows);
        matmul(g.as_mut(), Accum::Replace, r, r.transpose(), 1.0f32, par());
        g
    }
}

/// PR and stable rank of row-major `x` (finite values). `fro2` is `sum x^2`.
pub fn spectral(x: &[f32], rows: usize, cols: usize, fro2: f64, seed: u64) -> Spectral {
    let g = gram(x, rows, cols);
    let p = g.nrows();
    let mut g2 = 0.0f64;
    for j in 0..p {
        g2 += g
            .col_as_slice(j)
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>();
    }
    let pr = if g2 > 0.0 { fro2 * fro2 / g2 } else { 0.0 };
    let s_max2 = top_eigenvalue(g.as_ref(), seed);
    let stable_rank = if s_max2 > 0.0 { fro2 / s_max2 } else { 0.0 };
    let eigs = eigenvalues(g.as_ref());
    Spectral {
        pr,
        stable_rank,
        s_max2,
        energy_rank_90: energy_rank(&eigs, 0.9),
        energy_rank_99: energy_rank(&eigs, 0.99),
        eigenvalues: Some(eigs),
    }
}

/// Passes over the whole matrix (Lanczos steps from the sample's top
/// direction) that refine `s_max^2`; each pass reads the matrix once.
pub const REFINE_PASSES: usize = 6;

/// Largest Ritz value of the symmetric PSD operator `apply` after `steps`
/// Lanczos steps from `v` (full reorthogonalisation, in f64). It never
/// exceeds the true top eigenvalue and, for the same number of passes,
/// converges far faster than power iteration when the top of the spectrum
/// is crowded (noise-like residuals): on a 3000 x 200 Gaussian matrix, 6
/// passes reach 97-98% of s_max^2 where 8 power steps reached 91-94%.
fn lanczos_top(apply: impl Fn(&[f32]) -> Vec<f32>, v: Vec<f32>, steps: usize) -> f64 {
    let norm = |a: &[f64]| a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let mut q: Vec<f64> = v.iter().map(|&a| a as f64).collect();
    let n0 = norm(&q);
    if n0 == 0.0 || steps == 0 {
        return 0.0;
    }
    q.iter_mut().for_each(|a| *a /= n0);
    let mut basis: Vec<Vec<f64>> = Vec::new();
    let (mut alpha, mut beta) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let qf: Vec<f32> = q.iter().map(|&a| a as f32).collect();
        let mut w: Vec<f64> = apply(&qf).into_iter().map(f64::from).collect();
        let a: f64 = w.iter().zip(&q).map(|(x, y)| x * y).sum();
        alpha.push(a);
        basis.push(q);
        // w -= sum_j (w . q_j) q_j, twice (classical Gram-Schmidt, repeated).
        for _ in 0..2 {
            for b in &basis {
                let c: f64 = w.iter().zip(b).map(|(x, y)| x * y).sum();
                w.iter_mut().zip(b).for_each(|(x, y)| *x -= c * y);
            }
        }
        let nb = norm(&w);
        if nb <= 1e-12 * a.abs().max(f64::MIN_POSITIVE) {
            break; // an invariant subspace: its Ritz values are exact
        }
        beta.push(nb);
        q = w.into_iter().map(|x| x / nb).collect();
    }
    // Top eigenvalue of the k x k tridiagonal T (alpha on the diagonal,
    // beta beside it).
    let k = alpha.len();
    let t = Mat::<f64>::from_fn(k, k, |i, j| {
        if i == j {
            alpha[i]
        } else if i + 1 == j {
            beta[i]
        } else if j + 1 == i {
            beta[j]
        } else {
            0.0
        }
    });
    t.self_adjoint_eigenvalues(faer::Side::Lower)
        .map_or(0.0, |e| e.into_iter().fold(0.0f64, f64::max))
}

/// Dot product in eight f32 lanes (which the compiler vectorises; a plain
/// iterator sum must add in order and runs one element at a time), the
/// lanes summed in f64.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(&x, &y)| x as f64 * y as f64).sum();
    (acc.iter().map(|&v| v as f64).sum::<f64>() + tail) as f32
}

/// `X^T X v` for row-major q x p `x` (vectors = rows), or `X X^T v` for
/// row-major p x q `x` (vectors = columns); the result has length p.
/// Fixed blocks summed in order, so the result does not depend on threads.
fn gram_times(x: &[f32], rows: usize, cols: usize, v: &[f32]) -> Vec<f32> {
    const BLOCK: usize = 256;
    if rows >= cols {
        let parts: Vec<Vec<f64>> = x
            .par_chunks(BLOCK * cols)
            .map(|blk| {
                // f32 within a block of rows (vectorised), f64 across blocks.
                let mut acc = vec![0.0f32; cols];
                for r in blk.chunks(cols) {
                    let t = dot(r, v);
                    acc.iter_mut().zip(r).for_each(|(a, &b)| *a += t * b);
                }
                acc.into_iter().map(f64::from).collect::<Vec<f64>>()
            })
            .collect();
        let mut w = vec![0.0f64; cols];
        for part in &parts {
            w.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        w.into_iter().map(|a| a as f32).collect()
    } else {
        // u = X^T v over column blocks, then w_r = x_r . u.
        let mut u = vec![0.0f32; cols];
        u.par_chunks_mut(BLOCK * 16)
            .enumerate()
            .for_each(|(b, out)| {
                let j0 = b * BLOCK * 16;
                for (r, &vr) in v.iter().enumerate() {
                    let row = &x[r * cols + j0..r * cols + j0 + out.len()];
                    out.iter_mut().zip(row).for_each(|(o, &a)| *o += vr * a);
                }
            });
        x.par_chunks(cols).map(|r| dot(r, &u)).collect()
    }
}

/// [`spectral`] within `budget` multiply-adds: exact when the Gram fits,
/// else the sampled estimate described in the module notes, with its record.
pub fn spectral_budget(
    x: &[f32],
    rows: usize,
    cols: usize,
    fro2: f64,
    seed: u64,
    budget: usize,
) -> (Spectral, Option<PrSample>) {
    let Some(s) = sample_size(rows, cols, budget) else {
        return (spectral(x, rows, cols, fro2, seed), None);
    };
    let by_rows = rows >= cols;
    let (p, q) = (rows.min(cols), rows.max(cols));
    // Squared norms of all q vectors, in f64, in a fixed order whatever the
    // thread count.
    let n2: Vec<f64> = if by_rows {
        x.par_chunks(cols)
            .map(|r| r.iter().map(|&v| (v as f64) * (v as f64)).sum())
            .collect()
    } else {
        let parts: Vec<Vec<f64>> = x
            .par_chunks(64 * cols)
            .map(|blk| {
                let mut acc = vec![0.0f64; cols];
                for r in blk.chunks(cols) {
                    for (a, &v) in acc.iter_mut().zip(r) {
                        *a += (v as f64) * (v as f64);
                    }
                }
                acc
            })
            .collect();
        let mut n2 = vec![0.0f64; cols];
        for part in &parts {
            n2.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        n2
    };
    // s draws with replacement, P(i) = |v_i|^2 / ||R||_F^2 (length-squared).
    let mut cum = Vec::with_capacity(q);
    let mut acc = 0.0f64;
    for &v in &n2 {
        acc += v;
        cum.push(acc);
    }
    if acc <= 0.0 {
        return (spectral(x, rows, cols, fro2, seed), None);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(crate::null::mix(seed, 0x5a));
    let idx: Vec<usize> = (0..s)
        .map(|_| {
            let u = rand::Rng::random::<f64>(&mut rng) * acc;
            cum.partition_point(|&c| c <= u).min(q - 1)
        })
        .collect();
    // The drawn vectors, normalised, as an s x p row-major matrix.
    let mut y = vec![0.0f32; s * p];
    y.par_chunks_mut(p).zip(&idx).for_each(|(out, &i)| {
        if by_rows {
            out.copy_from_slice(&x[i * cols..(i + 1) * cols]);
        } else {
            for (r, o) in out.iter_mut().enumerate() {
                *o = x[r * cols + i];
            }
        }
        let inv = 1.0 / n2[i].sqrt();
        out.iter_mut().for_each(|v| *v = (*v as f64 * inv) as f32);
    });
    // ||Y Y^T||_F = ||Y^T Y||_F: form whichever Gram is smaller. Its squared
    // norm is s (the unit diagonal) plus the sum of cos^2 over ordered pairs.
    let g = gram(&y, s, p);
    let mut g2s = 0.0f64;
    for j in 0..g.ncols() {
        g2s += g
            .col_as_slice(j)
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>();
    }
    // E[cos^2] = sum_i P(i)^2 (i = j, exact) + sum_{i != j} P(i) P(j) cos^2,
    // the latter from the pairs of draws of distinct vectors: repeated
    // draws (cos^2 = 1) are taken out rather than left to chance.
    let same: f64 = n2.iter().map(|&v| (v / acc).powi(2)).sum();
    let mut sorted = idx.clone();
    sorted.sort_unstable();
    let mut repeats = 0.0f64;
    for run in sorted.chunk_by(|a, b| a == b) {
        let c = run.len() as f64;
        repeats += c * (c - 1.0);
    }
    let sf = s as f64;
    let mean_cos2 = same + ((g2s - sf - repeats) / (sf * (sf - 1.0))).max(0.0);
    let pr = if mean_cos2 > 0.0 {
        1.0 / mean_cos2
    } else {
        0.0
    };
    let (_, top) = top_eigen(g.as_ref(), seed, WARM_ITERS);
    let v: Vec<f32> = if s <= p {
        // top is in sample space: map it to the p-space, Y^T u.
        let mut w = vec![0.0f32; p];
        for (r, &u) in y.chunks(p).zip(&top) {
            w.iter_mut().zip(r).for_each(|(a, &b)| *a += u * b);
        }
        w
    } else {
        top
    };
    let s_max2 = lanczos_top(|v| gram_times(x, rows, cols, v), v, REFINE_PASSES);
    let stable_rank = if s_max2 > 0.0 { fro2 / s_max2 } else { 0.0 };
    // The drawn vectors, each rescaled by sqrt(||R||^2 / s), form the
    // length-squared estimate of the Gram; its spectrum (that of the sample
    // Gram up to the common factor) estimates the energy ranks.
    let eigs = eigenvalues(g.as_ref());
    (
        Spectral {
            pr,
            stable_rank,
            s_max2,
            energy_rank_90: energy_rank(&eigs, 0.9),
            energy_rank_99: energy_rank(&eigs, 0.99),
            eigenvalues: None,
        },
        Some(PrSample {
            side: if by_rows {
                LongSide::Rows
            } else {
                LongSide::Cols
            },
            used: s,
            of: q,
        }),
    )
}

/// Largest eigenvalue of a symmetric PSD matrix by power iteration with the
/// Rayleigh quotient (at most 500 steps, stops at relative change 1e-9).
pub fn top_eigenvalue(g: MatRef<'_, f32>, seed: u64) -> f64 {
    top_eigen(g, seed, 500).0
}

/// Power-iteration steps on a sample's Gram: its top vector only seeds the
/// passes over the whole matrix, so it need not converge.
pub const WARM_ITERS: usize = 60;

/// [`top_eigenvalue`] within `iters` steps, with its (unit) eigenvector.
pub fn top_eigen(g: MatRef<'_, f32>, seed: u64, iters: usize) -> (f64, Vec<f32>) {
    let p = g.nrows();
    if p == 0 {
        return (0.0, Vec::new());
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v = Mat::<f32>::from_fn(p, 1, |_, _| {
        let z: f64 = StandardNormal.sample(&mut rng);
        z as f32
    });
    let mut w = Mat::<f32>::zeros(p, 1);
    let mut lambda = 0.0f64;
    for _ in 0..iters {
        let norm = v
            .col_as_slice(0)
            .iter()
            .map(|&a| (a as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm == 0.0 {
            return (0.0, vec![0.0; p]);
        }
        v.col_as_slice_mut(0)
            .iter_mut()
            .for_each(|a| *a = (*a as f64 / norm) as f32);
        matmul(w.as_mut(), Accum::Replace, g, v.as_ref(), 1.0f32, Par::Seq);
        let rq: f64 = v
            .col_as_slice(0)
            .iter()
            .zip(w.col_as_slice(0))
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        let done = (rq - lambda).abs() <= 1e-9 * rq.abs();
        lambda = rq;
        if done {
            break;
        }
        std::mem::swap(&mut v, &mut w);
    }
    (lambda, v.col_as_slice(0).to_vec())
}

/// Marchenko-Pastur expectation of the PR of an i.i.d. p x q matrix (p <= q).
pub fn mp_null(rows: usize, cols: usize) -> f64 {
    let p = rows.min(cols) as f64;
    let q = rows.max(cols) as f64;
    p / (1.0 + p / q)
}

/// Stable rank of an i.i.d. p x q matrix: `||R||_F^2 = pq sigma^2` over the
/// top of the Marchenko-Pastur edge, `s_max^2 = (sqrt p + sqrt q)^2 sigma^2`.
pub fn stable_rank_null(rows: usize, cols: usize) -> f64 {
    let (p, q) = (rows as f64, cols as f64);
    p * q / (p.sqrt() + q.sqrt()).powi(2)
}

/// The spectrum figure's null (docs/MEASURES.md, "Figures"): the expected sorted singular values (largest first, `min(rows, cols)`
/// of them) of a `rows x cols` matrix of i.i.d. entries with std `std`:
/// the quantiles `(k + 1/2) / p` of the Marchenko-Pastur law.
pub fn mp_singular_values(rows: usize, cols: usize, std: f64) -> Vec<f64> {
    let p = rows.min(cols);
    let q = rows.max(cols);
    if p == 0 {
        return Vec::new();
    }
    let c = p as f64 / q as f64;
    // Eigenvalues of X X^T / q (sigma = 1) lie in [a, b]. Substituting
    // lambda = a + (b - a)(1 - cos t)/2 makes the density smooth in t.
    let a = (1.0 - c.sqrt()).powi(2);
    let b = (1.0 + c.sqrt()).powi(2);
    let n = 20_000;
    let h = std::f64::consts::PI / n as f64;
    let lam = |t: f64| a + (b - a) * (1.0 - t.cos()) / 2.0;
    let dens = |t: f64| {
        let l = lam(t);
        let r = (b - a) / 2.0 * t.sin();
        if l <= 0.0 {
            // Only when c = 1 (a = 0) at t = 0, where r^2 / l -> b.
            return b / (2.0 * std::f64::consts::PI * c);
        }
        r * r / (2.0 * std::f64::consts::PI * c * l)
    };
    let mut cdf = vec![0.0f64; n + 1];
    let mut prev = dens(0.0);
    for k in 1..=n {
        let d = dens(k as f64 * h);
        cdf[k] = cdf[k - 1] + 0.5 * (prev + d) * h;
        prev = d;
    }
    let total = cdf[n];
    let mut out = Vec::with_capacity(p);
    let mut j = 0usize;
    // Ascending quantiles, then reversed.
    for k in 0..p {
        let target = (k as f64 + 0.5) / p as f64 * total;
        while j < n && cdf[j + 1] < target {
            j += 1;
        }
        let (c0, c1) = (cdf[j], cdf[(j + 1).min(n)]);
        let f = if c1 > c0 {
            (target - c0) / (c1 - c0)
        } else {
            0.0
        };
        let t = (j as f64 + f) * h;
        out.push(std * (q as f64 * lam(t)).sqrt());
    }
    out.reverse();
    out
}

/// Marchenko-Pastur energy rank: how many of the p = min(rows, cols)
/// eigenvalues of an i.i.d. matrix's Gram, largest first, hold `frac` of
/// their sum. Integrates the MP density (ratio y = p/q, support
/// [(1-sqrt y)^2, (1+sqrt y)^2], mean 1) from the top edge down until
/// the energy above reaches `frac`, on a fine grid in the sqrt-substituted
/// variable (the density has square-root edges).
pub fn mp_energy_rank(rows: usize, cols: usize, frac: f64) -> f64 {
    let p = rows.min(cols) as f64;
    let q = rows.max(cols) as f64;
    if p < 1.0 {
        return 0.0;
    }
    let y = p / q;
    let (a, b) = ((1.0 - y.sqrt()).powi(2), (1.0 + y.sqrt()).powi(2));
    let density = |x: f64| {
        if x <= a || x >= b {
            0.0
        } else {
            ((b - x) * (x - a)).sqrt() / (2.0 * std::f64::consts::PI * y * x)
        }
    };
    // x = a + (b - a) sin^2(theta): dx = (b - a) sin(2 theta) dtheta.
    const STEPS: usize = 20_000;
    let h = std::f64::consts::FRAC_PI_2 / STEPS as f64;
    let cells: Vec<(f64, f64)> = (0..STEPS)
        .map(|i| {
            let t = (i as f64 + 0.5) * h;
            let x = a + (b - a) * t.sin().powi(2);
            (x, density(x) * (b - a) * (2.0 * t).sin() * h)
        })
        .collect();
    // Normalised by the grid's own totals, so the quadrature error cancels.
    let total_e: f64 = cells.iter().map(|(x, w)| x * w).sum();
    let total_n: f64 = cells.iter().map(|(_, w)| w).sum();
    let (mut energy, mut count) = (0.0f64, 0.0f64);
    for &(x, w) in cells.iter().rev() {
        if energy + x * w >= frac * total_e {
            let part = (frac * total_e - energy) / (x * w);
            return (p * (count + part * w) / total_n).clamp(1.0, p);
        }
        energy += x * w;
        count += w;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fro2(x: &[f32]) -> f64 {
        x.iter().map(|&v| (v as f64).powi(2)).sum()
    }

    fn pr_svd(x: &[f32], rows: usize, cols: usize) -> (f64, f64) {
        let m = Mat::<f64>::from_fn(rows, cols, |i, j| x[i * cols + j] as f64);
        let s = m.as_ref().singular_values().unwrap();
        let s2: f64 = s.iter().map(|v| v * v).sum();
        let s4: f64 = s.iter().map(|v| v.powi(4)).sum();
        (s2 * s2 / s4, s2 / (s[0] * s[0]))
    }

    #[test]
    fn identity_and_rank_one() {
        let n = 64;
        let mut eye = vec![0.0f32; n * n];
        for i in 0..n {
            eye[i * n + i] = 1.0;
        }
        let s = spectral(&eye, n, n, fro2(&eye), 1);
        assert!((s.pr - n as f64).abs() < 1e-6, "{s:?}");
        // Identity-like: a 64 x 100 matrix with orthonormal rows.
        let mut wide = vec![0.0f32; n * 100];
        for i in 0..n {
            wide[i * 100 + i + 10] = 3.0;
        }
        let s = spectral(&wide, n, 100, fro2(&wide), 1);
        assert!((s.pr - n as f64).abs() < 1e-6, "{s:?}");
        assert!((s.stable_rank - n as f64).abs() < 1e-3, "{s:?}");
        let u: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let v: Vec<f32> = (0..30).map(|j| (j as f32 * 0.11).cos() + 0.2).collect();
        let r1: Vec<f32> = (0..50 * 30).map(|k| u[k / 30] * v[k % 30]).collect();
        let s = spectral(&r1, 50, 30, fro2(&r1), 1);
        assert!((s.pr - 1.0).abs() < 1e-4, "{s:?}");
        assert!((s.stable_rank - 1.0).abs() < 1e-4, "{s:?}");
    }

    #[test]
    fn equals_svd_on_random_matrices() {
        for (i, &(rows, cols)) in [(40usize, 70usize), (90, 33), (128, 128), (7, 300)]
            .iter()
            .enumerate()
        {
            let mut x = crate::null::gaussian_vec(rows * cols, 1.0, 100 + i as u64);
            // Give it some structure so PR is not just the MP value.
            for (k, v) in x.iter_mut().enumerate() {
                *v += ((k / cols) as f32 * 0.05).sin() * 2.0;
            }
            let s = spectral(&x, rows, cols, fro2(&x), 2);
            let (pr, sr) = pr_svd(&x, rows, cols);
            assert!(
                (s.pr / pr - 1.0).abs() < 1e-4,
                "{rows}x{cols}: {} vs {pr}",
                s.pr
            );
            assert!(
                (s.stable_rank / sr - 1.0).abs() < 1e-3,
                "{rows}x{cols}: {} vs {sr}",
                s.stable_rank
            );
        }
    }

    /// Transposed copy of a row-major rows x cols matrix.
    fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|k| x[(k % rows) * cols + k / rows])
            .collect()
    }

    #[test]
    fn sampled_pr_of_a_gaussian_matrix_matches_exact_and_marchenko_pastur() {
        let (rows, cols) = (3000, 200);
        let x = crate::null::gaussian_vec(rows * cols, 0.5, 21);
        let f = fro2(&x);
        let exact = spectral(&x, rows, cols, f, 1);
        // 200^2 * 3000 = 1.2e8 multiply-adds. A budget of 2^25 samples
        // 2^25 / 200^2 = 838 of the 3000 rows (Gram on the 200 side); 2^22
        // samples sqrt(2^22 / 200) = 144 (Gram on the sample side).
        let mp = mp_null(rows, cols);
        for (budget, used) in [(1usize << 25, 838usize), (1 << 22, 144)] {
            let (est, rec) = spectral_budget(&x, rows, cols, f, 1, budget);
            let rec = rec.expect("sampled");
            assert_eq!((rec.side, rec.used, rec.of), (LongSide::Rows, used, 3000));
            assert!(used.min(cols).pow(2) * used.max(cols) <= budget);
            assert!(
                (est.pr / exact.pr - 1.0).abs() < 0.02,
                "{est:?} vs {exact:?}"
            );
            assert!((est.pr / mp - 1.0).abs() < 0.03, "{} vs MP {mp}", est.pr);
            // Refined s_max^2: a lower bound, within 3% of the exact one
            // (6 Lanczos passes: 97.3% and 98.1% of it; 8 power-iteration
            // passes from the same start reached 93.8% and 91.3%).
            assert!(
                est.s_max2 <= exact.s_max2 * (1.0 + 1e-4),
                "{est:?} vs {exact:?}"
            );
            assert!(est.s_max2 > 0.97 * exact.s_max2, "{est:?} vs {exact:?}");
        }
        let budget = 1 << 25;
        // The same matrix stored wide: columns sampled, same figures.
        let xt = transpose(&x, rows, cols);
        let (wide, rec) = spectral_budget(&xt, cols, rows, f, 1, budget);
        assert_eq!(rec.expect("sampled").side, LongSide::Cols);
        assert!(
            (wide.pr / exact.pr - 1.0).abs() < 0.02,
            "{wide:?} vs {exact:?}"
        );
        assert!(wide.s_max2 > 0.9 * exact.s_max2, "{wide:?} vs {exact:?}");
        // Within budget: exact, no record.
        let (same, rec) = spectral_budget(&x, rows, cols, f, 1, 1 << 27);
        assert!(rec.is_none());
        assert_eq!(same, exact);
    }

    #[test]
    fn sampled_pr_of_a_low_rank_matrix_matches_exact() {
        // Rank 6 with singular values 6..1, plus noise at 2% of its scale.
        let (rows, cols, r) = (4000, 128, 6);
        let u = crate::null::gaussian_vec(rows * r, 1.0, 31);
        let v = crate::null::gaussian_vec(r * cols, 1.0, 32);
        let noise = crate::null::gaussian_vec(rows * cols, 0.02, 33);
        let x: Vec<f32> = (0..rows * cols)
            .map(|k| {
                let (i, j) = (k / cols, k % cols);
                (0..r)
                    .map(|t| (r - t) as f32 * u[i * r + t] * v[t * cols + j])
                    .sum::<f32>()
                    + noise[k]
            })
            .collect();
        let f = fro2(&x);
        let exact = spectral(&x, rows, cols, f, 1);
        assert!(exact.pr > 2.0 && exact.pr < 6.0, "{exact:?}");
        // 2^22 / 128^2 = 256 draws from the 4000 rows.
        let (est, rec) = spectral_budget(&x, rows, cols, f, 1, 1 << 22);
        assert_eq!(rec.expect("sampled").used, 256);
        assert!(
            (est.pr / exact.pr - 1.0).abs() < 0.05,
            "{est:?} vs {exact:?}"
        );
        assert!(
            (est.stable_rank / exact.stable_rank - 1.0).abs() < 0.01,
            "{est:?} vs {exact:?}"
        );
    }

    #[test]
    fn sample_size_follows_the_budget() {
        assert_eq!(sample_size(768, 768, GRAM_BUDGET), None);
        assert_eq!(sample_size(2048, 768, GRAM_BUDGET), None);
        // A BERT-sized embedding is exact (4.5e9 multiply-adds).
        assert_eq!(sample_size(30_522, 384, GRAM_BUDGET), None);
        assert_eq!(sample_size(5632, 2048, 1 << 29), Some(512));
        assert_eq!(sample_size(2048, 768, 1 << 29), Some(910));
        // Sampled under the sample budget, whatever the exact one.
        assert_eq!(sample_size(2048, 5632, GRAM_BUDGET), Some(512));
        assert_eq!(sample_size(11_008, 4096, GRAM_BUDGET), Some(362));
        for (r, c) in [(32_000, 4096), (11_008, 4096), (4096, 4096), (128_256, 768)] {
            let s = sample_size(r, c, GRAM_BUDGET).unwrap();
            let p = r.min(c);
            assert!(s.min(p).pow(2) * s.max(p) <= GRAM_BUDGET, "{r}x{c}: {s}");
            assert!(s < r.max(c), "{r}x{c}: {s}");
        }
    }

    #[test]
    fn gaussian_near_marchenko_pastur() {
        let (rows, cols) = (200, 400);
        let x = crate::null::gaussian_vec(rows * cols, 0.1, 3);
        let s = spectral(&x, rows, cols, fro2(&x), 4);
        let null = mp_null(rows, cols);
        assert!((s.pr / null - 1.0).abs() < 0.03, "{} vs {null}", s.pr);
    }
    #[test]
    fn mp_quantiles_have_the_right_energy_and_edge() {
        for (p, q) in [(100, 400), (300, 300), (64, 1000)] {
            let s = mp_singular_values(p, q, 0.5);
            assert_eq!(s.len(), p);
            assert!(s.windows(2).all(|w| w[0] >= w[1]));
            // E ||X||_F^2 = p q std^2.
            let e: f64 = s.iter().map(|v| v * v).sum();
            let want = (p * q) as f64 * 0.25;
            assert!((e / want - 1.0).abs() < 0.01, "{p}x{q}: {e} vs {want}");
            // Largest near std (sqrt p + sqrt q).
            let edge = 0.5 * ((p as f64).sqrt() + (q as f64).sqrt());
            assert!(
                s[0] < edge * 1.001 && s[0] > edge * 0.93,
                "{} vs {edge}",
                s[0]
            );
        }
    }

    #[test]
    fn mp_quantiles_match_a_gaussian_matrix_svd() {
        let (p, q) = (120usize, 300usize);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let d = rand_distr::Normal::new(0.0f64, 1.0).unwrap();
        let m =
            faer::Mat::<f64>::from_fn(p, q, |_, _| rand_distr::Distribution::sample(&d, &mut rng));
        let mut sv: Vec<f64> = m.singular_values().unwrap();
        sv.sort_by(|a, b| b.total_cmp(a));
        let mp = mp_singular_values(p, q, 1.0);
        // Bulk quantiles agree within a few percent.
        for k in (5..p - 5).step_by(10) {
            let rel = (sv[k] - mp[k]).abs() / mp[k];
            assert!(rel < 0.05, "k={k}: svd {} vs mp {}", sv[k], mp[k]);
        }
    }
}
