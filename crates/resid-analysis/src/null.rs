//! Gaussian nulls: i.i.d. N(0, std^2) tensors of a residual's shape, drawn
//! from a fixed seed in the same run. Values are generated in fixed 64K-entry
//! chunks, each from its own seed, so the null is the same whatever the
//! thread count, and can be streamed (regenerated) instead of stored.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// Entries per independently seeded chunk.
pub const CHUNK: usize = 1 << 16;

/// Mixes a seed with a value (splitmix64 finaliser).
pub fn mix(seed: u64, v: u64) -> u64 {
    let mut z = seed
        ^ v.wrapping_add(0x9E37_79B9_7F4A_7C15)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A stable 64-bit hash of a string (FNV-1a), to derive per-tensor seeds.
pub fn hash_str(s: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Fills one chunk `c` of the null stream for `seed`.
pub fn fill_chunk(out: &mut [f32], std: f64, seed: u64, c: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, c));
    for v in out.iter_mut() {
        let z: f64 = StandardNormal.sample(&mut rng);
        *v = (z * std) as f32;
    }
}

/// Fills `out` with the null stream (parallel, deterministic).
pub fn gaussian_fill(out: &mut [f32], std: f64, seed: u64) {
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, ch)| fill_chunk(ch, std, seed, c as u64));
}

/// A new vector of `n` null values.
pub fn gaussian_vec(n: usize, std: f64, seed: u64) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    gaussian_fill(&mut v, std, seed);
    v
}

/// Folds over the null stream of `n` values chunk by chunk, without storing
/// it: `f(acc, chunk)` per chunk, `merge` to combine (parallel).
pub fn fold_stream<A, F, M>(n: usize, std: f64, seed: u64, init: A, f: F, merge: M) -> A
where
    A: Clone + Send + Sync,
    F: Fn(A, &[f32]) -> A + Sync + Send,
    M: Fn(A, A) -> A + Sync + Send,
{
    let chunks = n.div_ceil(CHUNK);
    (0..chunks)
        .into_par_iter()
        .fold(
            || (init.clone(), Vec::<f32>::new()),
            |(acc, mut buf), c| {
                let len = CHUNK.min(n - c * CHUNK);
                buf.resize(len, 0.0);
                fill_chunk(&mut buf, std, seed, c as u64);
                (f(acc, &buf), buf)
            },
        )
        .map(|(a, _)| a)
        .reduce(|| init.clone(), &merge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_matches_vector_and_is_deterministic() {
        let n = 3 * CHUNK + 17;
        let v = gaussian_vec(n, 2.0, 9);
        assert_eq!(v, gaussian_vec(n, 2.0, 9));
        assert_ne!(v, gaussian_vec(n, 2.0, 10));
        let s: f64 = v.iter().map(|&x| x as f64).sum();
        let s2 = fold_stream(
            n,
            2.0,
            9,
            0.0f64,
            |a, c| a + c.iter().map(|&x| x as f64).sum::<f64>(),
            |a, b| a + b,
        );
        assert!((s - s2).abs() < 1e-6 * (1.0 + s.abs()));
        let var = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / n as f64;
        assert!((var - 4.0).abs() < 0.05, "{var}");
    }
}
